//! `POST /v1/orders`: a terminal rings up an order.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::super::{PricedLineBody, TaxLineBody};
use crate::app::AppState;
use crate::commands::{Success, run_order_command};
use crate::commit::{Build, NewOrder, Respond, Work};
use crate::domain::{Order, pricing};
use crate::http::ApiError;
use crate::http::error::Problem;
use crate::http::extract::{ApiJson, DeviceCaller, IdempotencyKey};
use events::domain::OrderCreated;
use std::sync::Arc;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateOrder {
    /// Client-generated id (offline terminals); the server makes one if absent.
    pub order_id: Option<Uuid>,
    /// ISO 4217 code; must be the store's currency.
    #[schema(example = "JPY")]
    pub currency: String,
    pub lines: Vec<LineBody>,
    pub customer: Option<Customer>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LineBody {
    pub sku: String,
    pub name: String,
    pub quantity: i64,
    /// Minor units, tax excluded.
    pub unit_price: i64,
    #[schema(example = "standard")]
    pub tax_category: String,
}

/// Where to send the receipt; never logged.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Customer {
    pub email: Option<String>,
    pub phone: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct OrderBody {
    pub order_id: Uuid,
    #[schema(example = "open")]
    pub status: &'static str,
    pub currency: String,
    pub lines: Vec<PricedLineBody>,
    pub taxes: Vec<TaxLineBody>,
    pub subtotal: i64,
    pub tax: i64,
    pub total: i64,
    pub business_date: chrono::NaiveDate,
    pub version: i64,
}

impl OrderBody {
    pub fn of(order: &Order) -> Self {
        Self {
            order_id: order.id,
            status: order.status.as_str(),
            currency: order.currency.code().to_owned(),
            lines: order
                .lines
                .iter()
                .map(|l| PricedLineBody {
                    sku: l.sku.clone(),
                    name: l.name.clone(),
                    quantity: l.quantity,
                    unit_price: l.unit_price,
                    tax_category: l.tax_category.clone(),
                    tax_rate_bp: l.tax_rate_bp,
                    line_total: l.line_total,
                })
                .collect(),
            taxes: order
                .taxes
                .iter()
                .map(|t| TaxLineBody {
                    tax_category: t.tax_category.clone(),
                    tax_rate_bp: t.tax_rate_bp,
                    taxable: t.taxable,
                    tax: t.tax,
                })
                .collect(),
            subtotal: order.subtotal,
            tax: order.tax,
            total: order.total,
            business_date: order.business_date,
            version: order.version,
        }
    }
}

fn validate_customer(customer: &Customer) -> Vec<pricing::FieldError> {
    let mut errors = Vec::new();
    if let Some(email) = &customer.email {
        let ok = email.len() <= 254
            && email.split_once('@').is_some_and(|(l, d)| !l.is_empty() && d.contains('.'))
            && !email.contains(char::is_whitespace);
        if !ok {
            errors.push(pricing::FieldError::new("/customer/email", "must be an e-mail address"));
        }
    }
    if let Some(phone) = &customer.phone {
        let digits = phone.strip_prefix('+').unwrap_or("");
        if !(8..=15).contains(&digits.len()) || !digits.bytes().all(|b| b.is_ascii_digit()) {
            errors.push(pricing::FieldError::new("/customer/phone", "must be E.164, e.g. +81312345678"));
        }
    }
    errors
}

#[utoipa::path(
    post, path = "/v1/orders", tag = "orders",
    request_body = CreateOrder,
    params(("Idempotency-Key" = String, Header, description = "Unique per attempt of this command")),
    responses(
        (status = 201, description = "Order created", body = OrderBody),
        (status = 400, description = "Malformed body or missing Idempotency-Key", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid device token", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Order id exists, or the key is in flight", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body over the size limit", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid fields, or key reused with another body", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "A dependency is down; retry after Retry-After", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn create_order(
    State(state): State<AppState>,
    caller: DeviceCaller,
    key: IdempotencyKey,
    body: ApiJson<CreateOrder>,
) -> Result<Response, ApiError> {
    let ApiJson { value: req, fingerprint } = body;
    let (work, answer) = plan(req);
    run_order_command(&state, &caller, key, fingerprint, work, answer).await
}

/// What creating `req` does and answers, as data for a lane (see [`crate::commit`]).
/// Field errors are found here and when pricing against the store's settings,
/// which come with the key's claim; either way they record nothing, so a
/// corrected retry may reuse the key.
pub fn plan(req: CreateOrder) -> (Work, Respond) {
    let mut errors = Vec::new();
    if let Some(customer) = &req.customer {
        errors.extend(validate_customer(customer));
    }
    let currency = events::Currency::parse(&req.currency);
    if let Err(e) = &currency {
        errors.push(pricing::FieldError::new("/currency", e.to_string()));
    }
    let lines: Vec<pricing::LineInput> = req
        .lines
        .into_iter()
        .map(|l| pricing::LineInput {
            sku: l.sku,
            name: l.name,
            quantity: l.quantity,
            unit_price: l.unit_price,
            tax_category: l.tax_category,
        })
        .collect();
    let customer = req.customer.map(|c| serde_json::to_value(c).unwrap_or_default());
    let order_id = req.order_id.unwrap_or_else(Uuid::now_v7);
    let build: Build = Arc::new(move |store, at| {
        let mut errors = errors.clone();
        if let Ok(c) = &currency
            && *c != store.currency
        {
            errors.push(pricing::FieldError::new(
                "/currency",
                format!("this store sells in {}", store.currency),
            ));
        }
        let priced = match pricing::price(&lines, &store.taxes) {
            Ok(p) if errors.is_empty() => p,
            Ok(_) => return Err(ApiError::validation(errors)),
            Err(mut e) => {
                errors.append(&mut e);
                return Err(ApiError::validation(errors));
            }
        };
        let (order, events) = Order::create(OrderCreated {
            order_id,
            currency: store.currency,
            lines: priced.lines,
            taxes: priced.taxes,
            subtotal: priced.subtotal,
            tax: priced.tax,
            total: priced.total,
            business_date: at.business_date,
            created_at: at.now,
        });
        Ok(NewOrder { order, events, customer: customer.clone() })
    });
    let answer: Respond = Arc::new(|c| Success::json(StatusCode::CREATED, &OrderBody::of(&c.after)));
    (Work::Create(build), answer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn customer_contacts_are_checked() {
        let ok = Customer { email: Some("a@b.jp".into()), phone: Some("+81312345678".into()) };
        assert!(validate_customer(&ok).is_empty());
        let bad = Customer { email: Some("nope".into()), phone: Some("0312345678".into()) };
        let pointers: Vec<String> = validate_customer(&bad).into_iter().map(|e| e.pointer).collect();
        assert_eq!(pointers, ["/customer/email", "/customer/phone"]);
    }
}
