//! Store daily sales: one row per capture and per refund, keyed by its own id.
//!
//! Facts are inserted with `ON CONFLICT DO NOTHING`, so applying an event
//! twice changes nothing. The business date travels in the event (fixed when
//! the capture or refund happened, in the store's time zone and
//! close-of-day), so a late refund is booked on the day it happens, never on
//! the sale's day. The query API sums one store's day by method.

use events::DomainEvent;
use sqlx::PgConnection;

use super::ApplyError;
use crate::event::Event;

pub async fn apply(conn: &mut PgConnection, e: &Event) -> Result<(), ApplyError> {
    let env = &e.envelope;
    let store_id = env.store_id.unwrap_or_default();
    match &e.event {
        DomainEvent::PaymentCaptured(p) => {
            sqlx::query(
                "INSERT INTO captures (payment_id, merchant_id, store_id, method, currency, business_date, amount, tip, captured_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (payment_id) DO NOTHING",
            )
            .bind(p.payment_id)
            .bind(env.merchant_id)
            .bind(store_id)
            .bind(p.method.as_str())
            .bind(p.currency.code())
            .bind(p.business_date)
            .bind(p.amount)
            .bind(p.tip)
            .bind(p.captured_at)
            .execute(&mut *conn)
            .await?;
        }
        DomainEvent::PaymentRefunded(r) => {
            sqlx::query(
                "INSERT INTO refunds (refund_id, payment_id, merchant_id, store_id, method, currency, business_date, amount, refunded_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (refund_id) DO NOTHING",
            )
            .bind(r.refund_id)
            .bind(r.payment_id)
            .bind(env.merchant_id)
            .bind(store_id)
            .bind(r.method.as_str())
            .bind(r.currency.code())
            .bind(r.business_date)
            .bind(r.amount)
            .bind(r.refunded_at)
            .execute(&mut *conn)
            .await?;
        }
        _ => {}
    }
    Ok(())
}
