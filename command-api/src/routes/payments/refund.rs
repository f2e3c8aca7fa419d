//! `POST /v1/payments/{id}/refunds`: refund part or all of a captured payment.
//!
//! Concurrent refunds of one payment race on the order's version: one wins,
//! the others get 409 and re-decide against the new refunded total on retry,
//! so the sum never exceeds the captured amount (a CHECK constraint on the
//! payments table backs that up).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
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
use crate::routes::path_id;
use crate::store::orders::Find;
use std::sync::Arc;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefundPayment {
    /// Client-generated id; the server makes one if absent.
    pub refund_id: Option<Uuid>,
    /// Minor units; at most what is captured (amount plus tip) and not yet refunded.
    pub amount: i64,
    pub reason: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RefundBody {
    pub refund_id: Uuid,
    pub payment_id: Uuid,
    pub order_id: Uuid,
    #[schema(example = "succeeded")]
    pub status: &'static str,
    pub amount: i64,
    pub currency: String,
    /// Everything refunded on this payment so far, this refund included.
    pub refunded_total: i64,
    pub version: i64,
}

#[utoipa::path(
    post, path = "/v1/payments/{id}/refunds", tag = "payments",
    request_body = RefundPayment,
    params(("id" = Uuid, Path), ("Idempotency-Key" = String, Header)),
    responses(
        (status = 201, description = "Refund recorded", body = RefundBody),
        (status = 404, description = "No such payment in the caller's store", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Payment not captured, or a concurrent change", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Amount invalid or over the refundable balance", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn refund_payment(
    State(state): State<AppState>,
    Path(id): Path<String>,
    caller: DeviceCaller,
    key: IdempotencyKey,
    body: ApiJson<RefundPayment>,
) -> Result<Response, ApiError> {
    let payment_id = path_id(&id, "payment")?;
    let ApiJson { value: req, fingerprint } = body;
    if req.amount <= 0 {
        return Err(ApiError::field("/amount", "must be a positive number of minor units"));
    }
    if req.reason.as_ref().is_some_and(|r| r.chars().count() > 500) {
        return Err(ApiError::field("/reason", "must be at most 500 characters"));
    }
    let refund_id = req.refund_id.unwrap_or_else(Uuid::now_v7);
    let amount = req.amount;
    let answer: Respond = Arc::new(move |c| {
        let order = &c.after;
        Success::json(
            StatusCode::CREATED,
            &RefundBody {
                refund_id,
                payment_id,
                order_id: order.id,
                status: "succeeded",
                amount,
                currency: order.currency.code().to_owned(),
                refunded_total: order.payment(payment_id).map_or(0, |p| p.refunded),
                version: order.version,
            },
        )
    });
    let command = Command::Refund { refund_id, payment_id, amount, reason: req.reason };
    let work = Work::Change { find: Find::Payment(payment_id), command };
    run_order_command(&state, &caller, key, fingerprint, work, answer).await
}
