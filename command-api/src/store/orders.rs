//! Loading and saving order aggregates for a batch of commands, one
//! statement each however many commands the batch holds (see
//! [`crate::commit`]).
//!
//! Loading reads each order with its payments (as one JSON array) and its
//! receipt contacts, found by the order's id or by a payment's, confined to
//! the caller's store. Saving is optimistic: a changed order is updated only
//! if its version is still the one the batch loaded, else the whole batch
//! rolls back.

use chrono::{DateTime, NaiveDate, Utc};
use events::Currency;
use events::DomainEvent;
use events::domain::{CaptureMode, PaymentMethod, PricedLine, TaxLine};
use sqlx::PgConnection;
use sqlx::types::Json;
use std::collections::BTreeMap;
use uuid::Uuid;

use super::outbox::Rows;
use crate::domain::{Order, OrderStatus, Payment, PaymentStatus};

/// Who acts: the scope every read and write is confined to.
#[derive(Debug, Clone, Copy)]
pub struct Scope {
    pub merchant_id: Uuid,
    pub store_id: Uuid,
    pub device_id: Uuid,
}

/// The order row with its payments (as one JSON array) and its customer contacts.
#[derive(sqlx::FromRow)]
struct OrderRow {
    /// Which of the finds this row answers (1-based).
    n: i64,
    id: Uuid,
    currency: String,
    status: String,
    lines: Json<Vec<PricedLine>>,
    taxes: Json<Vec<TaxLine>>,
    subtotal: i64,
    tax: i64,
    total: i64,
    business_date: NaiveDate,
    version: i64,
    created_at: DateTime<Utc>,
    customer: Option<serde_json::Value>,
    payments: Json<Vec<PaymentRow>>,
}

#[derive(serde::Deserialize)]
struct PaymentRow {
    id: Uuid,
    method: PaymentMethod,
    status: String,
    capture_mode: CaptureMode,
    amount: i64,
    tip: i64,
    refunded: i64,
    auth_code: Option<String>,
    failure_reason: Option<String>,
    business_date: NaiveDate,
    created_at: DateTime<Utc>,
}

fn corrupt(what: &str) -> anyhow::Error {
    anyhow::anyhow!("stored order has an invalid {what}")
}

/// Which order to load: by its own id, or by the id of one of its payments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Find {
    Order(Uuid),
    Payment(Uuid),
}

/// An order as a command sees it, with the receipt contacts its terminal gave.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub order: Order,
    pub customer: Option<serde_json::Value>,
}

/// Each find's order with its payments, if it exists within its scope: one
/// round trip for all of them. The answer is in the order of `finds`.
pub async fn load_many(
    conn: &mut PgConnection,
    finds: &[(Scope, Find)],
) -> anyhow::Result<Vec<Option<Loaded>>> {
    let mut out: Vec<Option<Loaded>> = vec![None; finds.len()];
    if finds.is_empty() {
        return Ok(out);
    }
    let by_order: Vec<Option<Uuid>> =
        finds.iter().map(|(_, f)| if let Find::Order(id) = f { Some(*id) } else { None }).collect();
    let by_payment: Vec<Option<Uuid>> =
        finds.iter().map(|(_, f)| if let Find::Payment(id) = f { Some(*id) } else { None }).collect();
    let merchants: Vec<Uuid> = finds.iter().map(|(s, _)| s.merchant_id).collect();
    let stores: Vec<Uuid> = finds.iter().map(|(s, _)| s.store_id).collect();
    let rows: Vec<OrderRow> = sqlx::query_as(
        "SELECT f.n, o.id, o.currency, o.status, o.lines, o.taxes, o.subtotal, o.tax, o.total, o.business_date,
                o.version, o.created_at, o.customer,
                COALESCE((SELECT jsonb_agg(jsonb_build_object(
                            'id', p.id, 'method', p.method, 'status', p.status, 'capture_mode', p.capture_mode,
                            'amount', p.amount, 'tip', p.tip, 'refunded', p.refunded, 'auth_code', p.auth_code,
                            'failure_reason', p.failure_reason, 'business_date', p.business_date,
                            'created_at', p.created_at) ORDER BY p.created_at, p.id)
                            FROM payments p WHERE p.order_id = o.id), '[]'::jsonb) AS payments
           FROM UNNEST($1::uuid[], $2::uuid[], $3::uuid[], $4::uuid[]) WITH ORDINALITY
                AS f(by_order, by_payment, merchant_id, store_id, n)
           JOIN orders o ON o.id = COALESCE(f.by_order, (SELECT order_id FROM payments WHERE id = f.by_payment))
                        AND o.merchant_id = f.merchant_id AND o.store_id = f.store_id",
    )
    .bind(&by_order)
    .bind(&by_payment)
    .bind(&merchants)
    .bind(&stores)
    .fetch_all(&mut *conn)
    .await?;
    for row in rows {
        let slot =
            usize::try_from(row.n - 1).ok().and_then(|i| out.get_mut(i)).ok_or_else(|| corrupt("find"))?;
        let payments = row.payments.0.into_iter().map(payment_from_row).collect::<Result<_, _>>()?;
        *slot = Some(Loaded {
            order: Order {
                id: row.id,
                currency: Currency::parse(row.currency.trim()).map_err(|_| corrupt("currency"))?,
                status: OrderStatus::parse(&row.status).ok_or_else(|| corrupt("status"))?,
                lines: row.lines.0,
                taxes: row.taxes.0,
                subtotal: row.subtotal,
                tax: row.tax,
                total: row.total,
                business_date: row.business_date,
                version: row.version,
                created_at: row.created_at,
                payments,
            },
            customer: row.customer,
        });
    }
    Ok(out)
}

fn payment_from_row(p: PaymentRow) -> anyhow::Result<Payment> {
    Ok(Payment {
        id: p.id,
        method: p.method,
        status: PaymentStatus::parse(&p.status).ok_or_else(|| corrupt("payment status"))?,
        capture: p.capture_mode,
        amount: p.amount,
        tip: p.tip,
        refunded: p.refunded,
        auth_code: p.auth_code,
        failure_reason: p.failure_reason,
        business_date: p.business_date,
        created_at: p.created_at,
    })
}

/// What a batch of commands did to one order, kept until the batch is written.
#[derive(Debug, Clone)]
pub struct Touched {
    pub scope: Scope,
    /// The version the order had in the database; `None` for an order this batch creates.
    pub stored_version: Option<i64>,
    pub order: Order,
    pub customer: Option<serde_json::Value>,
    pub updated_at: DateTime<Utc>,
    /// Payments the batch created or changed, with the sales days it gave them.
    pub payments: BTreeMap<Uuid, PaymentDays>,
    pub refunds: Vec<RefundRow>,
}

/// A payment the batch created or changed.
#[derive(Debug, Clone, Default)]
pub struct PaymentDays {
    /// Set for a payment this batch created: the terminal that took it.
    pub created_by: Option<Uuid>,
    pub captured_on: Option<NaiveDate>,
    pub voided_on: Option<NaiveDate>,
    pub updated_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone)]
pub struct RefundRow {
    pub id: Uuid,
    pub payment_id: Uuid,
    pub amount: i64,
    pub reason: Option<String>,
    pub business_date: NaiveDate,
    pub created_at: DateTime<Utc>,
}

impl Touched {
    /// Notes the rows `events` (just applied to `order` at `now`, for
    /// terminal `device`) create or change.
    pub fn record(&mut self, events: &[DomainEvent], now: DateTime<Utc>, device: Uuid) {
        self.updated_at = now;
        for event in events {
            let (id, day) = match event {
                DomainEvent::PaymentCreated(e) => {
                    self.payments.entry(e.payment_id).or_default().created_by = Some(device);
                    (e.payment_id, None)
                }
                DomainEvent::PaymentRefunded(e) => {
                    self.refunds.push(RefundRow {
                        id: e.refund_id,
                        payment_id: e.payment_id,
                        amount: e.amount,
                        reason: e.reason.clone(),
                        business_date: e.business_date,
                        created_at: now,
                    });
                    (e.payment_id, None)
                }
                DomainEvent::PaymentAuthorized(e) => (e.payment_id, None),
                DomainEvent::PaymentFailed(e) => (e.payment_id, None),
                DomainEvent::PaymentCaptured(e) => (e.payment_id, Some((true, e.business_date))),
                DomainEvent::PaymentVoided(e) => (e.payment_id, Some((false, e.business_date))),
                DomainEvent::OrderCreated(_)
                | DomainEvent::OrderCanceled(_)
                | DomainEvent::OrderCompleted(_)
                | DomainEvent::DeviceTokenIssued(_)
                | DomainEvent::DeviceConfigApplied(_)
                | DomainEvent::SettlementCompleted(_) => continue,
            };
            let days = self.payments.entry(id).or_default();
            days.updated_at = Some(now);
            match day {
                Some((true, d)) => days.captured_on = Some(d),
                Some((false, d)) => days.voided_on = Some(d),
                None => {}
            }
        }
    }
}

/// An idempotency record to insert with the batch.
#[derive(Debug, Clone)]
pub struct KeyRow {
    pub caller: String,
    pub key: String,
    pub request_hash: Vec<u8>,
    pub status: i16,
    pub body: Vec<u8>,
}

/// Why a batch's write failed; the batch rolls back and nothing of it stays.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// An order changed since the batch loaded it (another process's command).
    #[error("an order changed concurrently")]
    Conflict,
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// Writes everything a batch did in one statement: new orders, changed
/// orders (only where the version is still the one loaded), their payments
/// and refunds, the outbox rows and the idempotency records.
///
/// The order updates run first and the outbox rows are numbered only after
/// all of them (the outbox part reads their count), so each order's row lock
/// is held before its events get outbox ids: per order, outbox ids follow
/// commit order, which the relay relies on. A changed order whose version
/// moved is a [`WriteError::Conflict`]; a duplicate id, a violated check or
/// a twin's idempotency record is a database error; either way the caller
/// rolls the transaction back.
pub async fn write(
    conn: &mut PgConnection,
    touched: &[Touched],
    outbox: &Rows,
    keys: &[KeyRow],
) -> Result<(), WriteError> {
    let c = Columns::of(touched, keys);
    let query = sqlx::query(
        "WITH new_orders AS (
           INSERT INTO orders (id, merchant_id, store_id, device_id, currency, status, lines, taxes, subtotal, tax,
                               total, customer, business_date, version, created_at, updated_at)
           SELECT * FROM UNNEST($5::uuid[], $6::uuid[], $7::uuid[], $8::uuid[], $9::text[], $10::text[],
                                $11::jsonb[], $12::jsonb[], $13::bigint[], $14::bigint[], $15::bigint[],
                                $16::jsonb[], $17::date[], $18::bigint[], $19::timestamptz[], $20::timestamptz[])),
         changed_orders AS (
           UPDATE orders o SET status = u.status, version = u.version, updated_at = u.updated_at
             FROM UNNEST($21::uuid[], $22::text[], $23::bigint[], $24::bigint[], $25::timestamptz[])
                  AS u(id, status, version, stored, updated_at)
            WHERE o.id = u.id AND o.version = u.stored
           RETURNING o.id),
         new_payments AS (
           INSERT INTO payments (id, order_id, merchant_id, store_id, device_id, method, status, capture_mode,
                                 currency, amount, tip, business_date, created_at, updated_at, refunded,
                                 auth_code, failure_reason, captured_on, voided_on)
           SELECT * FROM UNNEST($26::uuid[], $27::uuid[], $28::uuid[], $29::uuid[], $30::uuid[], $31::text[],
                                $32::text[], $33::text[], $34::text[], $35::bigint[], $36::bigint[], $37::date[],
                                $38::timestamptz[], $39::timestamptz[], $40::bigint[], $41::text[], $42::text[],
                                $43::date[], $44::date[])),
         changed_payments AS (
           UPDATE payments p
              SET status = c.status, refunded = c.refunded, auth_code = c.auth_code,
                  failure_reason = c.failure_reason, updated_at = c.updated_at,
                  captured_on = COALESCE(c.captured_on, p.captured_on),
                  voided_on = COALESCE(c.voided_on, p.voided_on)
             FROM UNNEST($45::uuid[], $46::text[], $47::bigint[], $48::text[], $49::text[], $50::date[],
                         $51::date[], $52::timestamptz[])
                  AS c(id, status, refunded, auth_code, failure_reason, captured_on, voided_on, updated_at)
            WHERE p.id = c.id),
         new_refunds AS (
           INSERT INTO refunds (id, payment_id, order_id, amount, reason, status, created_at, business_date)
           SELECT r.id, r.payment_id, r.order_id, r.amount, r.reason, 'succeeded', r.created_at, r.day
             FROM UNNEST($53::uuid[], $54::uuid[], $55::uuid[], $56::bigint[], $57::text[], $58::timestamptz[],
                         $59::date[]) AS r(id, payment_id, order_id, amount, reason, created_at, day)),
         locked AS (SELECT count(*) AS n FROM changed_orders),
         events AS (
           INSERT INTO outbox (event_id, subject, headers, payload)
           SELECT x.id, x.subject, x.headers, x.payload
             FROM locked, UNNEST($1::uuid[], $2::text[], $3::jsonb[], $4::bytea[]) WITH ORDINALITY
                  AS x(id, subject, headers, payload, n)
            ORDER BY x.n),
         records AS (
           INSERT INTO idempotency_keys (caller, key, request_hash, status_code, response_body)
           SELECT * FROM UNNEST($60::text[], $61::text[], $62::bytea[], $63::smallint[], $64::bytea[]))
         SELECT n FROM locked",
    );
    let changed: i64 = c
        .bind(outbox.bind(query))
        .try_map(|row: sqlx::postgres::PgRow| sqlx::Row::try_get(&row, 0))
        .fetch_one(&mut *conn)
        .await?;
    if changed != c.changed_id.len() as i64 {
        return Err(WriteError::Conflict);
    }
    Ok(())
}

/// Everything [`write`] binds, as columns.
#[derive(Default)]
struct Columns {
    order_id: Vec<Uuid>,
    order_merchant: Vec<Uuid>,
    order_store: Vec<Uuid>,
    order_device: Vec<Uuid>,
    order_currency: Vec<&'static str>,
    order_status: Vec<&'static str>,
    order_lines: Vec<Json<Vec<PricedLine>>>,
    order_taxes: Vec<Json<Vec<TaxLine>>>,
    order_subtotal: Vec<i64>,
    order_tax: Vec<i64>,
    order_total: Vec<i64>,
    order_customer: Vec<Option<serde_json::Value>>,
    order_day: Vec<NaiveDate>,
    order_version: Vec<i64>,
    order_created: Vec<DateTime<Utc>>,
    order_updated: Vec<DateTime<Utc>>,
    changed_id: Vec<Uuid>,
    changed_status: Vec<&'static str>,
    changed_version: Vec<i64>,
    changed_stored: Vec<i64>,
    changed_updated: Vec<DateTime<Utc>>,
    new_payment: PaymentColumns,
    new_payment_order: Vec<Uuid>,
    new_payment_merchant: Vec<Uuid>,
    new_payment_store: Vec<Uuid>,
    new_payment_device: Vec<Uuid>,
    new_payment_method: Vec<&'static str>,
    new_payment_capture: Vec<&'static str>,
    new_payment_currency: Vec<&'static str>,
    new_payment_amount: Vec<i64>,
    new_payment_tip: Vec<i64>,
    new_payment_day: Vec<NaiveDate>,
    new_payment_created: Vec<DateTime<Utc>>,
    changed_payment: PaymentColumns,
    refund_id: Vec<Uuid>,
    refund_payment: Vec<Uuid>,
    refund_order: Vec<Uuid>,
    refund_amount: Vec<i64>,
    refund_reason: Vec<Option<String>>,
    refund_created: Vec<DateTime<Utc>>,
    refund_day: Vec<NaiveDate>,
    key_caller: Vec<String>,
    key_key: Vec<String>,
    key_hash: Vec<Vec<u8>>,
    key_status: Vec<i16>,
    key_body: Vec<Vec<u8>>,
}

/// A payment's state after the batch, as columns.
#[derive(Default)]
struct PaymentColumns {
    id: Vec<Uuid>,
    status: Vec<&'static str>,
    refunded: Vec<i64>,
    auth_code: Vec<Option<String>>,
    failure_reason: Vec<Option<String>>,
    captured_on: Vec<Option<NaiveDate>>,
    voided_on: Vec<Option<NaiveDate>>,
    updated_at: Vec<DateTime<Utc>>,
}

impl PaymentColumns {
    fn push(&mut self, p: &Payment, days: &PaymentDays, fallback: DateTime<Utc>) {
        self.id.push(p.id);
        self.status.push(p.status.as_str());
        self.refunded.push(p.refunded);
        self.auth_code.push(p.auth_code.clone());
        self.failure_reason.push(p.failure_reason.clone());
        self.captured_on.push(days.captured_on);
        self.voided_on.push(days.voided_on);
        self.updated_at.push(days.updated_at.unwrap_or(fallback));
    }
}

impl Columns {
    fn of(touched: &[Touched], keys: &[KeyRow]) -> Self {
        let mut c = Self::default();
        // Orders in id order, so two batches sharing orders usually lock them
        // in the same order and queue. The plan decides the real order; a
        // deadlock PostgreSQL detects fails one batch, whose jobs run again alone.
        let mut touched: Vec<&Touched> = touched.iter().collect();
        touched.sort_by_key(|t| t.order.id);
        for t in touched {
            let o = &t.order;
            match t.stored_version {
                None => {
                    c.order_id.push(o.id);
                    c.order_merchant.push(t.scope.merchant_id);
                    c.order_store.push(t.scope.store_id);
                    c.order_device.push(t.scope.device_id);
                    c.order_currency.push(o.currency.code());
                    c.order_status.push(o.status.as_str());
                    c.order_lines.push(Json(o.lines.clone()));
                    c.order_taxes.push(Json(o.taxes.clone()));
                    c.order_subtotal.push(o.subtotal);
                    c.order_tax.push(o.tax);
                    c.order_total.push(o.total);
                    c.order_customer.push(t.customer.clone());
                    c.order_day.push(o.business_date);
                    c.order_version.push(o.version);
                    c.order_created.push(o.created_at);
                    c.order_updated.push(t.updated_at);
                }
                // Loaded, but every command on it was refused: nothing to write.
                Some(stored) if stored == o.version => continue,
                Some(stored) => {
                    c.changed_id.push(o.id);
                    c.changed_status.push(o.status.as_str());
                    c.changed_version.push(o.version);
                    c.changed_stored.push(stored);
                    c.changed_updated.push(t.updated_at);
                }
            }
            for (id, days) in &t.payments {
                let Some(p) = o.payment(*id) else { continue };
                if let Some(device) = days.created_by {
                    c.new_payment.push(p, days, t.updated_at);
                    c.new_payment_order.push(o.id);
                    c.new_payment_merchant.push(t.scope.merchant_id);
                    c.new_payment_store.push(t.scope.store_id);
                    c.new_payment_device.push(device);
                    c.new_payment_method.push(p.method.as_str());
                    c.new_payment_capture.push(capture_str(p.capture));
                    c.new_payment_currency.push(o.currency.code());
                    c.new_payment_amount.push(p.amount);
                    c.new_payment_tip.push(p.tip);
                    c.new_payment_day.push(p.business_date);
                    c.new_payment_created.push(p.created_at);
                } else {
                    c.changed_payment.push(p, days, t.updated_at);
                }
            }
            for r in &t.refunds {
                c.refund_id.push(r.id);
                c.refund_payment.push(r.payment_id);
                c.refund_order.push(o.id);
                c.refund_amount.push(r.amount);
                c.refund_reason.push(r.reason.clone());
                c.refund_created.push(r.created_at);
                c.refund_day.push(r.business_date);
            }
        }
        for k in keys {
            c.key_caller.push(k.caller.clone());
            c.key_key.push(k.key.clone());
            c.key_hash.push(k.request_hash.clone());
            c.key_status.push(k.status);
            c.key_body.push(k.body.clone());
        }
        c
    }

    /// Binds `$5` onwards, in [`write`]'s order (the outbox's four come first).
    fn bind<'q>(
        &'q self,
        q: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
    ) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
        let (np, cp) = (&self.new_payment, &self.changed_payment);
        q.bind(&self.order_id)
            .bind(&self.order_merchant)
            .bind(&self.order_store)
            .bind(&self.order_device)
            .bind(&self.order_currency)
            .bind(&self.order_status)
            .bind(&self.order_lines)
            .bind(&self.order_taxes)
            .bind(&self.order_subtotal)
            .bind(&self.order_tax)
            .bind(&self.order_total)
            .bind(&self.order_customer)
            .bind(&self.order_day)
            .bind(&self.order_version)
            .bind(&self.order_created)
            .bind(&self.order_updated)
            .bind(&self.changed_id)
            .bind(&self.changed_status)
            .bind(&self.changed_version)
            .bind(&self.changed_stored)
            .bind(&self.changed_updated)
            .bind(&np.id)
            .bind(&self.new_payment_order)
            .bind(&self.new_payment_merchant)
            .bind(&self.new_payment_store)
            .bind(&self.new_payment_device)
            .bind(&self.new_payment_method)
            .bind(&np.status)
            .bind(&self.new_payment_capture)
            .bind(&self.new_payment_currency)
            .bind(&self.new_payment_amount)
            .bind(&self.new_payment_tip)
            .bind(&self.new_payment_day)
            .bind(&self.new_payment_created)
            .bind(&np.updated_at)
            .bind(&np.refunded)
            .bind(&np.auth_code)
            .bind(&np.failure_reason)
            .bind(&np.captured_on)
            .bind(&np.voided_on)
            .bind(&cp.id)
            .bind(&cp.status)
            .bind(&cp.refunded)
            .bind(&cp.auth_code)
            .bind(&cp.failure_reason)
            .bind(&cp.captured_on)
            .bind(&cp.voided_on)
            .bind(&cp.updated_at)
            .bind(&self.refund_id)
            .bind(&self.refund_payment)
            .bind(&self.refund_order)
            .bind(&self.refund_amount)
            .bind(&self.refund_reason)
            .bind(&self.refund_created)
            .bind(&self.refund_day)
            .bind(&self.key_caller)
            .bind(&self.key_key)
            .bind(&self.key_hash)
            .bind(&self.key_status)
            .bind(&self.key_body)
    }
}

pub fn capture_str(c: CaptureMode) -> &'static str {
    match c {
        CaptureMode::Automatic => "automatic",
        CaptureMode::Manual => "manual",
    }
}
