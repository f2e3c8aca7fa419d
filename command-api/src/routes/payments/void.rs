//! `POST /v1/payments/{id}/void`: void a pending or authorized payment.

use axum::extract::{Path, State};
use axum::response::Response;
use serde::Deserialize;
use utoipa::ToSchema;

use super::PaymentStateBody;
use crate::app::AppState;
use crate::domain::Command;
use crate::http::ApiError;
use crate::http::error::Problem;
use crate::http::extract::{ApiJson, DeviceCaller, IdempotencyKey};
use crate::routes::path_id;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VoidPayment {}

#[utoipa::path(
    post, path = "/v1/payments/{id}/void", tag = "payments",
    request_body = VoidPayment,
    params(("id" = uuid::Uuid, Path), ("Idempotency-Key" = String, Header)),
    responses(
        (status = 200, description = "Done", body = PaymentStateBody),
        (status = 404, description = "No such payment in the caller's store", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The payment is captured, failed or already voided", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn void_payment(
    State(state): State<AppState>,
    Path(id): Path<String>,
    caller: DeviceCaller,
    key: IdempotencyKey,
    body: ApiJson<VoidPayment>,
) -> Result<Response, ApiError> {
    let payment_id = path_id(&id, "payment")?;
    super::transition(&state, &caller, key, body.fingerprint, payment_id, Command::Void { payment_id }).await
}
