//! `POST /v1/payments/{id}/confirm`: the terminal reports the authorization result.

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

/// `{"result": "approved", "auth_code"?}` or `{"result": "declined", "reason"?}`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(tag = "result", rename_all = "lowercase", deny_unknown_fields)]
pub enum ConfirmPayment {
    Approved { auth_code: Option<String> },
    Declined { reason: Option<String> },
}

fn bounded(field: &str, value: &Option<String>, max: usize) -> Result<(), ApiError> {
    match value {
        Some(v) if v.chars().count() > max || v.chars().any(char::is_control) => {
            Err(ApiError::field(field, &format!("must be at most {max} printable characters")))
        }
        _ => Ok(()),
    }
}

#[utoipa::path(
    post, path = "/v1/payments/{id}/confirm", tag = "payments",
    request_body = ConfirmPayment,
    params(("id" = uuid::Uuid, Path), ("Idempotency-Key" = String, Header)),
    responses(
        (status = 200, description = "Result recorded", body = PaymentStateBody),
        (status = 404, description = "No such payment in the caller's store", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The payment is not pending", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn confirm_payment(
    State(state): State<AppState>,
    Path(id): Path<String>,
    caller: DeviceCaller,
    key: IdempotencyKey,
    body: ApiJson<ConfirmPayment>,
) -> Result<Response, ApiError> {
    let payment_id = path_id(&id, "payment")?;
    let ApiJson { value: req, fingerprint } = body;
    let command = match req {
        ConfirmPayment::Approved { auth_code } => {
            bounded("/auth_code", &auth_code, 64)?;
            Command::Approve { payment_id, auth_code }
        }
        ConfirmPayment::Declined { reason } => {
            bounded("/reason", &reason, 500)?;
            Command::Decline { payment_id, reason }
        }
    };
    super::transition(&state, &caller, key, fingerprint, payment_id, command).await
}
