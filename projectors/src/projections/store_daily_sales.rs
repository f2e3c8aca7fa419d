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

/// Applies one event: a batch of one.
pub async fn apply(conn: &mut PgConnection, e: &Event) -> Result<(), ApplyError> {
    apply_many(conn, &[e]).await
}

/// Applies a batch: every capture in one multi-row insert, every refund in
/// another, each `ON CONFLICT DO NOTHING`.
pub async fn apply_many(conn: &mut PgConnection, batch: &[&Event]) -> Result<(), ApplyError> {
    let mut captures = Columns::default();
    let mut refunds = Columns::default();
    for e in batch {
        let env = &e.envelope;
        let store_id = env.store_id.unwrap_or_default();
        match &e.event {
            DomainEvent::PaymentCaptured(p) => {
                captures.push(
                    p.payment_id,
                    p.payment_id,
                    env.merchant_id,
                    store_id,
                    p.method.as_str(),
                    p.currency.code(),
                );
                captures.day(p.business_date, p.amount, p.tip, p.captured_at);
            }
            DomainEvent::PaymentRefunded(r) => {
                refunds.push(
                    r.refund_id,
                    r.payment_id,
                    env.merchant_id,
                    store_id,
                    r.method.as_str(),
                    r.currency.code(),
                );
                refunds.day(r.business_date, r.amount, 0, r.refunded_at);
            }
            _ => {}
        }
    }
    if !captures.id.is_empty() {
        sqlx::query(
            "INSERT INTO captures (payment_id, merchant_id, store_id, method, currency, business_date, amount, tip, captured_at)
             SELECT id, merchant_id, store_id, method, currency, business_date, amount, tip, at
               FROM UNNEST($1::uuid[], $2::uuid[], $3::uuid[], $4::text[], $5::text[], $6::date[], $7::bigint[],
                           $8::bigint[], $9::timestamptz[])
                    AS c(id, merchant_id, store_id, method, currency, business_date, amount, tip, at)
             ON CONFLICT (payment_id) DO NOTHING",
        )
        .bind(&captures.id)
        .bind(&captures.merchant_id)
        .bind(&captures.store_id)
        .bind(&captures.method)
        .bind(&captures.currency)
        .bind(&captures.business_date)
        .bind(&captures.amount)
        .bind(&captures.tip)
        .bind(&captures.at)
        .execute(&mut *conn)
        .await?;
    }
    if !refunds.id.is_empty() {
        sqlx::query(
            "INSERT INTO refunds (refund_id, payment_id, merchant_id, store_id, method, currency, business_date, amount, refunded_at)
             SELECT id, payment_id, merchant_id, store_id, method, currency, business_date, amount, at
               FROM UNNEST($1::uuid[], $2::uuid[], $3::uuid[], $4::uuid[], $5::text[], $6::text[], $7::date[],
                           $8::bigint[], $9::timestamptz[])
                    AS r(id, payment_id, merchant_id, store_id, method, currency, business_date, amount, at)
             ON CONFLICT (refund_id) DO NOTHING",
        )
        .bind(&refunds.id)
        .bind(&refunds.payment_id)
        .bind(&refunds.merchant_id)
        .bind(&refunds.store_id)
        .bind(&refunds.method)
        .bind(&refunds.currency)
        .bind(&refunds.business_date)
        .bind(&refunds.amount)
        .bind(&refunds.at)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// One fact table's rows, as columns.
#[derive(Default)]
struct Columns {
    id: Vec<uuid::Uuid>,
    payment_id: Vec<uuid::Uuid>,
    merchant_id: Vec<uuid::Uuid>,
    store_id: Vec<uuid::Uuid>,
    method: Vec<&'static str>,
    currency: Vec<&'static str>,
    business_date: Vec<chrono::NaiveDate>,
    amount: Vec<i64>,
    tip: Vec<i64>,
    at: Vec<chrono::DateTime<chrono::Utc>>,
}

impl Columns {
    fn push(
        &mut self,
        id: uuid::Uuid,
        payment_id: uuid::Uuid,
        merchant_id: uuid::Uuid,
        store_id: uuid::Uuid,
        method: &'static str,
        currency: &'static str,
    ) {
        self.id.push(id);
        self.payment_id.push(payment_id);
        self.merchant_id.push(merchant_id);
        self.store_id.push(store_id);
        self.method.push(method);
        self.currency.push(currency);
    }

    fn day(
        &mut self,
        business_date: chrono::NaiveDate,
        amount: i64,
        tip: i64,
        at: chrono::DateTime<chrono::Utc>,
    ) {
        self.business_date.push(business_date);
        self.amount.push(amount);
        self.tip.push(tip);
        self.at.push(at);
    }
}
