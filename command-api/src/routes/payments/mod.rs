//! Payment commands: create, confirm, capture, void, refund.

pub mod capture;
pub mod confirm;
pub mod create;
pub mod refund;
pub mod void;

use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::domain::{Order, OrderStatus};

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
