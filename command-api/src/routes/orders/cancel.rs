//! `POST /v1/orders/{id}/cancel`: cancel an order nothing was captured for.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::app::AppState;
use crate::commands::{Success, run_order_command};
use crate::commit::{Respond, Work};
use crate::domain::{Command, PaymentStatus};
use crate::http::ApiError;
use crate::http::error::Problem;
use crate::http::extract::{ApiJson, DeviceCaller, IdempotencyKey};
use crate::routes::path_id;
use crate::store::orders::Find;
use std::sync::Arc;

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
    let answer: Respond = Arc::new(move |c| {
        // The tenders still open before the cancel are the ones it voided.
        let was_open: Vec<Uuid> = c
            .before
            .iter()
            .flat_map(|o| o.payments.iter())
            .filter(|p| matches!(p.status, PaymentStatus::Pending | PaymentStatus::Authorized))
            .map(|p| p.id)
            .collect();
        Success::json(
            StatusCode::OK,
            &CanceledBody {
                order_id,
                status: c.after.status.as_str(),
                voided_payments: was_open,
                version: c.after.version,
            },
        )
    });
    let work = Work::Change { find: Find::Order(order_id), command: Command::Cancel };
    run_order_command(&state, &caller, key, body.fingerprint, work, answer).await
}
