//! `POST /v1/payments`: a tender for an order (one of several for split bills).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use events::domain::{CaptureMode, PaymentMethod};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::app::AppState;
use crate::commands::{Success, run_order_command};
use crate::commit::{Respond, Work};
use crate::domain::Command;
use crate::http::ApiError;
use crate::http::error::Problem;
use crate::http::extract::{ApiJson, DeviceCaller, IdempotencyKey};
use crate::store::orders::Find;
use std::sync::Arc;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreatePayment {
    /// Client-generated id (offline terminals); the server makes one if absent.
    pub payment_id: Option<Uuid>,
    pub order_id: Uuid,
    #[schema(value_type = String, example = "card")]
    pub method: PaymentMethod,
    /// Minor units of the order's currency; at most the order's open balance.
    pub amount: i64,
    /// Minor units; not part of the order total.
    pub tip: Option<i64>,
    #[schema(value_type = Option<String>, example = "automatic")]
    pub capture: Option<CaptureMode>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PaymentBody {
    pub payment_id: Uuid,
    pub order_id: Uuid,
    #[schema(example = "pending")]
    pub status: &'static str,
    pub method: &'static str,
    pub amount: i64,
    pub tip: i64,
    pub currency: String,
    pub capture: &'static str,
    /// The order's version after this command.
    pub version: i64,
}

#[utoipa::path(
    post, path = "/v1/payments", tag = "payments",
    request_body = CreatePayment,
    params(("Idempotency-Key" = String, Header)),
    responses(
        (status = 201, description = "Payment created, pending the terminal's result", body = PaymentBody),
        (status = 404, description = "No such order in the caller's store", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Order not open, payment id exists, or concurrent change", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid fields or amount over the open balance", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn create_payment(
    State(state): State<AppState>,
    caller: DeviceCaller,
    key: IdempotencyKey,
    body: ApiJson<CreatePayment>,
) -> Result<Response, ApiError> {
    let ApiJson { value: req, fingerprint } = body;
    let mut errors = Vec::new();
    if req.amount <= 0 {
        errors.push(crate::domain::FieldError::new("/amount", "must be a positive number of minor units"));
    }
    if req.tip.is_some_and(|t| t < 0) {
        errors.push(crate::domain::FieldError::new("/tip", "must not be negative"));
    }
    if !errors.is_empty() {
        return Err(ApiError::validation(errors));
    }
    let payment_id = req.payment_id.unwrap_or_else(Uuid::now_v7);
    let command = Command::CreatePayment {
        payment_id,
        method: req.method,
        amount: req.amount,
        tip: req.tip.unwrap_or(0),
        capture: req.capture.unwrap_or(CaptureMode::Automatic),
    };
    let answer: Respond = Arc::new(move |c| {
        let order = &c.after;
        let p = order.payment(payment_id).ok_or(ApiError::NotFound("payment"))?;
        Success::json(
            StatusCode::CREATED,
            &PaymentBody {
                payment_id,
                order_id: order.id,
                status: p.status.as_str(),
                method: p.method.as_str(),
                amount: p.amount,
                tip: p.tip,
                currency: order.currency.code().to_owned(),
                capture: crate::store::orders::capture_str(p.capture),
                version: order.version,
            },
        )
    });
    let work = Work::Change { find: Find::Order(req.order_id), command };
    run_order_command(&state, &caller, key, fingerprint, work, answer).await
}
