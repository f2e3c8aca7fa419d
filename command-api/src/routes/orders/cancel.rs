//! `POST /v1/orders/{id}/cancel`: cancel an order nothing was captured for.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use chrono::Utc;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::app::AppState;
use crate::commands::{Success, caller_store, change_order, run_idempotent};
use crate::domain::{Command, PaymentStatus};
use crate::http::ApiError;
use crate::http::error::Problem;
use crate::http::extract::{ApiJson, DeviceCaller, IdempotencyKey};
use crate::routes::path_id;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CancelOrder {}

#[derive(Debug, Serialize, ToSchema)]
pub struct CanceledBody {
    pub order_id: Uuid,
    #[schema(example = "canceled")]
    pub status: &'static str,
    /// Pending or authorized tenders voided with the order.
    pub voided_payments: Vec<Uuid>,
    pub version: i64,
}

#[utoipa::path(
    post, path = "/v1/orders/{id}/cancel", tag = "orders",
    request_body = CancelOrder,
    params(("id" = Uuid, Path), ("Idempotency-Key" = String, Header)),
    responses(
        (status = 200, description = "Order canceled", body = CanceledBody),
        (status = 404, description = "No such order in the caller's store", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Not open, has captured payments, or changed concurrently", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn cancel_order(
    State(state): State<AppState>,
    Path(id): Path<String>,
    caller: DeviceCaller,
    key: IdempotencyKey,
    body: ApiJson<CancelOrder>,
) -> Result<Response, ApiError> {
    let order_id = path_id(&id, "order")?;
    let store = caller_store(&state, &caller).await?;
    let prefix = state.subject_prefix.clone();
    let scope = caller.store_scope();
    run_idempotent(&state, &caller, key, body.fingerprint, move |conn| {
        Box::pin(async move {
            let before = crate::store::orders::load(conn, scope, order_id).await?;
            let at = store.at(Utc::now());
            let order = change_order(conn, &prefix, scope, order_id, Command::Cancel, at).await?;
            let was_open: Vec<Uuid> = before
                .map(|o| {
                    o.payments
                        .iter()
                        .filter(|p| matches!(p.status, PaymentStatus::Pending | PaymentStatus::Authorized))
                        .map(|p| p.id)
                        .collect()
                })
                .unwrap_or_default();
            Success::json(
                StatusCode::OK,
                &CanceledBody {
                    order_id,
                    status: order.status.as_str(),
                    voided_payments: was_open,
                    version: order.version,
                },
            )
        })
    })
    .await
}
