//! Loading and saving the order aggregate.
//!
//! Saving is optimistic: the order row is updated only if its version is
//! still the one the command was decided on; otherwise the command is a 409
//! and the transaction rolls back. The order row update comes first, so it
//! takes the row lock before anything is appended to the outbox: per order,
//! outbox ids then follow commit order, which the relay relies on.

use chrono::{DateTime, NaiveDate, Utc};
use events::Currency;
use events::DomainEvent;
use events::domain::{CaptureMode, PaymentMethod, PricedLine, TaxLine};
use sqlx::PgConnection;
use sqlx::types::Json;
use std::collections::BTreeSet;
use uuid::Uuid;

use crate::domain::{Order, OrderStatus, Payment, PaymentStatus};
use crate::http::ApiError;

/// Who acts: the scope every read and write is confined to.
#[derive(Debug, Clone, Copy)]
pub struct Scope {
    pub merchant_id: Uuid,
    pub store_id: Uuid,
    pub device_id: Uuid,
}

type OrderRow = (
    Uuid,
    String,
    String,
    Json<Vec<PricedLine>>,
    Json<Vec<TaxLine>>,
    i64,
    i64,
    i64,
    NaiveDate,
    i64,
    DateTime<Utc>,
);

type PaymentRow =
    (Uuid, String, String, String, i64, i64, i64, Option<String>, Option<String>, NaiveDate, DateTime<Utc>);

fn corrupt(what: &str) -> ApiError {
    ApiError::Internal(anyhow::anyhow!("stored order has an invalid {what}"))
}

/// The order with its payments, if it exists within `scope`.
pub async fn load(conn: &mut PgConnection, scope: Scope, order_id: Uuid) -> Result<Option<Order>, ApiError> {
    let row: Option<OrderRow> = sqlx::query_as(
        "SELECT id, currency, status, lines, taxes, subtotal, tax, total, business_date, version, created_at
           FROM orders WHERE id = $1 AND merchant_id = $2 AND store_id = $3",
    )
    .bind(order_id)
    .bind(scope.merchant_id)
    .bind(scope.store_id)
    .fetch_optional(&mut *conn)
    .await?;
    let Some((id, currency, status, lines, taxes, subtotal, tax, total, business_date, version, created_at)) =
        row
    else {
        return Ok(None);
    };
    let payments: Vec<PaymentRow> = sqlx::query_as(
        "SELECT id, method, status, capture_mode, amount, tip, refunded, auth_code, failure_reason,
                business_date, created_at
           FROM payments WHERE order_id = $1 ORDER BY created_at, id",
    )
    .bind(order_id)
    .fetch_all(&mut *conn)
    .await?;
    Ok(Some(Order {
        id,
        currency: Currency::parse(currency.trim()).map_err(|_| corrupt("currency"))?,
        status: OrderStatus::parse(&status).ok_or_else(|| corrupt("status"))?,
        lines: lines.0,
        taxes: taxes.0,
        subtotal,
        tax,
        total,
        business_date,
        version,
        created_at,
        payments: payments.into_iter().map(payment_from_row).collect::<Result<_, _>>()?,
    }))
}

fn payment_from_row(row: PaymentRow) -> Result<Payment, ApiError> {
    let (
        id,
        method,
        status,
        capture,
        amount,
        tip,
        refunded,
        auth_code,
        failure_reason,
        business_date,
        created_at,
    ) = row;
    Ok(Payment {
        id,
        method: serde_json::from_value(serde_json::Value::String(method)).map_err(|_| corrupt("method"))?,
        status: PaymentStatus::parse(&status).ok_or_else(|| corrupt("payment status"))?,
        capture: serde_json::from_value(serde_json::Value::String(capture))
            .map_err(|_| corrupt("capture mode"))?,
        amount,
        tip,
        refunded,
        auth_code,
        failure_reason,
        business_date,
        created_at,
    })
}

/// The order a payment belongs to, if the payment exists within `scope`.
pub async fn order_of_payment(
    conn: &mut PgConnection,
    scope: Scope,
    payment_id: Uuid,
) -> Result<Option<Uuid>, ApiError> {
    Ok(sqlx::query_scalar(
        "SELECT order_id FROM payments WHERE id = $1 AND merchant_id = $2 AND store_id = $3",
    )
    .bind(payment_id)
    .bind(scope.merchant_id)
    .bind(scope.store_id)
    .fetch_optional(&mut *conn)
    .await?)
}

/// Inserts a new order; an existing id (an offline terminal's retry) is a 409.
pub async fn insert(
    conn: &mut PgConnection,
    scope: Scope,
    order: &Order,
    customer: Option<&serde_json::Value>,
) -> Result<(), ApiError> {
    sqlx::query(
        "INSERT INTO orders (id, merchant_id, store_id, device_id, currency, status, lines, taxes,
                             subtotal, tax, total, customer, business_date, version, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $15)",
    )
    .bind(order.id)
    .bind(scope.merchant_id)
    .bind(scope.store_id)
    .bind(scope.device_id)
    .bind(order.currency.code())
    .bind(order.status.as_str())
    .bind(Json(&order.lines))
    .bind(Json(&order.taxes))
    .bind(order.subtotal)
    .bind(order.tax)
    .bind(order.total)
    .bind(customer)
    .bind(order.business_date)
    .bind(order.version)
    .bind(order.created_at)
    .execute(&mut *conn)
    .await
    .map_err(|e| match e.as_database_error() {
        Some(db) if db.is_unique_violation() => ApiError::AlreadyExists("order"),
        _ => e.into(),
    })?;
    Ok(())
}

/// Saves `after`, decided on version `before`, and the rows its `events` create.
pub async fn save(
    conn: &mut PgConnection,
    scope: Scope,
    before: i64,
    after: &Order,
    events: &[DomainEvent],
    now: DateTime<Utc>,
) -> Result<(), ApiError> {
    let updated = sqlx::query(
        "UPDATE orders SET status = $1, version = $2, updated_at = $3 WHERE id = $4 AND version = $5",
    )
    .bind(after.status.as_str())
    .bind(after.version)
    .bind(now)
    .bind(after.id)
    .bind(before)
    .execute(&mut *conn)
    .await?;
    if updated.rows_affected() != 1 {
        return Err(ApiError::ConcurrentChange("order"));
    }
    let mut touched = BTreeSet::new();
    for event in events {
        match event {
            DomainEvent::PaymentCreated(e) => insert_payment(conn, scope, after, e.payment_id, now).await?,
            DomainEvent::PaymentRefunded(e) => {
                sqlx::query(
                    "INSERT INTO refunds (id, payment_id, order_id, amount, reason, status, created_at, business_date)
                     VALUES ($1, $2, $3, $4, $5, 'succeeded', $6, $7)",
                )
                .bind(e.refund_id)
                .bind(e.payment_id)
                .bind(e.order_id)
                .bind(e.amount)
                .bind(&e.reason)
                .bind(now)
                .bind(e.business_date)
                .execute(&mut *conn)
                .await
                .map_err(|err| match err.as_database_error() {
                    Some(db) if db.is_unique_violation() => ApiError::AlreadyExists("refund"),
                    _ => err.into(),
                })?;
                touched.insert(e.payment_id);
            }
            DomainEvent::PaymentAuthorized(e) => drop(touched.insert(e.payment_id)),
            DomainEvent::PaymentCaptured(e) => {
                touched.insert(e.payment_id);
                day_of(conn, e.payment_id, "captured_on", e.business_date).await?;
            }
            DomainEvent::PaymentFailed(e) => drop(touched.insert(e.payment_id)),
            DomainEvent::PaymentVoided(e) => {
                touched.insert(e.payment_id);
                day_of(conn, e.payment_id, "voided_on", e.business_date).await?;
            }
            DomainEvent::OrderCreated(_)
            | DomainEvent::OrderCanceled(_)
            | DomainEvent::OrderCompleted(_)
            | DomainEvent::DeviceTokenIssued(_)
            | DomainEvent::DeviceConfigApplied(_)
            | DomainEvent::SettlementCompleted(_) => {}
        }
    }
    for payment_id in touched {
        let Some(p) = after.payment(payment_id) else { continue };
        sqlx::query(
            "UPDATE payments SET status = $1, refunded = $2, auth_code = $3, failure_reason = $4, updated_at = $5
              WHERE id = $6",
        )
        .bind(p.status.as_str())
        .bind(p.refunded)
        .bind(&p.auth_code)
        .bind(&p.failure_reason)
        .bind(now)
        .bind(p.id)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// Records the sales day a capture or void happened on (settlements count by it).
async fn day_of(
    conn: &mut PgConnection,
    payment_id: Uuid,
    column: &str,
    day: NaiveDate,
) -> Result<(), ApiError> {
    sqlx::query(&format!("UPDATE payments SET {column} = $2 WHERE id = $1"))
        .bind(payment_id)
        .bind(day)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

async fn insert_payment(
    conn: &mut PgConnection,
    scope: Scope,
    order: &Order,
    payment_id: Uuid,
    now: DateTime<Utc>,
) -> Result<(), ApiError> {
    let Some(p) = order.payment(payment_id) else { return Ok(()) };
    sqlx::query(
        "INSERT INTO payments (id, order_id, merchant_id, store_id, device_id, method, status, capture_mode,
                               currency, amount, tip, business_date, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $13)",
    )
    .bind(p.id)
    .bind(order.id)
    .bind(scope.merchant_id)
    .bind(scope.store_id)
    .bind(scope.device_id)
    .bind(method_str(p.method))
    .bind(p.status.as_str())
    .bind(capture_str(p.capture))
    .bind(order.currency.code())
    .bind(p.amount)
    .bind(p.tip)
    .bind(p.business_date)
    .bind(now)
    .execute(&mut *conn)
    .await
    .map_err(|e| match e.as_database_error() {
        Some(db) if db.is_unique_violation() => ApiError::AlreadyExists("payment"),
        _ => e.into(),
    })?;
    Ok(())
}

fn method_str(m: PaymentMethod) -> &'static str {
    m.as_str()
}

pub fn capture_str(c: CaptureMode) -> &'static str {
    match c {
        CaptureMode::Automatic => "automatic",
        CaptureMode::Manual => "manual",
    }
}
