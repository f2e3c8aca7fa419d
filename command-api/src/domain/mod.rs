//! The pure write-side domain: pricing, tax and the order state machine.
//!
//! No I/O here. The order is the aggregate: it owns its payments and their
//! refunds, because the rules that matter for money (never collect more than
//! the total, complete when captured tenders equal it, never refund more than
//! captured) span them. `decide(order, command)` returns the events a command
//! produces or a [`DomainError`]; `apply(order, event)` folds an event in.

/// Business dates come from the shared calendar in `events`.
pub mod business_date {
    pub use events::calendar::business_date;
}
pub mod order;
pub mod pricing;

pub use order::{At, Command, DomainError, Order, OrderStatus, Payment, PaymentStatus};
pub use pricing::{FieldError, LineInput, Priced, Rounding, TaxTable};
