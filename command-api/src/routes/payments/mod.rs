//! Payment commands: create, confirm, capture, void, refund.

pub mod capture;
pub mod confirm;
pub mod create;
pub mod refund;
pub mod void;

use axum::http::StatusCode;
use axum::response::Response;
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::app::AppState;
use crate::commands::{Success, run_order_command};
use crate::commit::{Respond, Work};
use crate::domain::{Command, Order, OrderStatus};
use crate::http::ApiError;
use crate::http::extract::{DeviceCaller, IdempotencyKey};
use crate::store::orders::Find;
use std::sync::Arc;

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
    let answer: Respond =
        Arc::new(move |c| Success::json(StatusCode::OK, &PaymentStateBody::of(&c.after, payment_id)));
    let work = Work::Change { find: Find::Payment(payment_id), command };
    run_order_command(state, caller, key, fingerprint, work, answer).await
}
