//! Payment commands: create, confirm, capture, void, refund.

pub mod capture;
pub mod confirm;
pub mod create;
pub mod refund;
pub mod void;

use axum::http::StatusCode;
use axum::response::Response;
use chrono::Utc;
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::app::AppState;
use crate::commands::{Success, caller_store, change_order, order_of_payment, run_idempotent};
use crate::domain::{Command, Order, OrderStatus};
use crate::http::ApiError;
use crate::http::extract::{DeviceCaller, IdempotencyKey};

/// A payment's state after a transition, with its order's.
#[derive(Debug, Serialize, ToSchema)]
pub struct PaymentStateBody {
    pub payment_id: Uuid,
    pub order_id: Uuid,
    #[schema(example = "captured")]
    pub status: &'static str,
    #[schema(example = "completed")]
    pub order_status: &'static str,
    /// The order's version after this command.
    pub version: i64,
}

impl PaymentStateBody {
    pub fn of(order: &Order, payment_id: Uuid) -> Self {
        let status = order.payment(payment_id).map_or("unknown", |p| p.status.as_str());
        Self {
            payment_id,
            order_id: order.id,
            status,
            order_status: OrderStatus::as_str(order.status),
            version: order.version,
        }
    }
}

/// Applies `command` to the order that owns `payment_id` and answers with the
/// payment's new state: the shared body of confirm, capture and void.
pub async fn transition(
    state: &AppState,
    caller: &DeviceCaller,
    key: IdempotencyKey,
    fingerprint: [u8; 32],
    payment_id: Uuid,
    command: Command,
) -> Result<Response, ApiError> {
    let store = caller_store(state, caller).await?;
    let prefix = state.subject_prefix.clone();
    let scope = caller.store_scope();
    run_idempotent(state, caller, key, fingerprint, move |conn| {
        Box::pin(async move {
            let order_id = order_of_payment(conn, scope, payment_id).await?;
            let at = store.at(Utc::now());
            let order = change_order(conn, &prefix, scope, order_id, command, at).await?;
            Success::json(StatusCode::OK, &PaymentStateBody::of(&order, payment_id))
        })
    })
    .await
}
