//! Bills: an order with its lines, tenders, refunds, totals and status.
//!
//! Every change of an order after its creation first advances the bill's
//! `version` from `sequence - 1` to `sequence`: an event already applied
//! (version ≥ sequence) is skipped, and a hole (version < sequence - 1)
//! stops the projection. Totals (paid, tips, refunded) are recomputed from
//! the bill's own payment and refund rows rather than incremented, so
//! re-applying events (a replay repairing a deleted row) cannot double them.

use events::DomainEvent;
use sqlx::PgConnection;
use sqlx::types::Json;
use uuid::Uuid;

use super::ApplyError;
use crate::event::Event;

pub async fn apply(conn: &mut PgConnection, e: &Event) -> Result<(), ApplyError> {
    let env = &e.envelope;
    match &e.event {
        DomainEvent::OrderCreated(c) => {
            sqlx::query(
                "INSERT INTO bills (order_id, merchant_id, store_id, device_id, currency, status, lines, taxes,
                                    subtotal, tax, total, business_date, created_at, updated_at, version)
                 VALUES ($1, $2, $3, $4, $5, 'open', $6, $7, $8, $9, $10, $11, $12, $12, $13)
                 ON CONFLICT (order_id) DO NOTHING",
            )
            .bind(c.order_id)
            .bind(env.merchant_id)
            .bind(env.store_id.unwrap_or_default())
            .bind(env.device_id)
            .bind(c.currency.code())
            .bind(Json(&c.lines))
            .bind(Json(&c.taxes))
            .bind(c.subtotal)
            .bind(c.tax)
            .bind(c.total)
            .bind(c.business_date)
            .bind(c.created_at)
            .bind(env.sequence)
            .execute(&mut *conn)
            .await?;
            Ok(())
        }
        DomainEvent::DeviceTokenIssued(_)
        | DomainEvent::DeviceConfigApplied(_)
        | DomainEvent::SettlementCompleted(_) => Ok(()),
        other => {
            if !advance(conn, e, env.subject).await? {
                return Ok(());
            }
            change(conn, other, env.merchant_id).await
        }
    }
}

/// Moves the bill to this event's version; false if the event was applied before.
async fn advance(conn: &mut PgConnection, e: &Event, order_id: Uuid) -> Result<bool, ApplyError> {
    let seq = e.envelope.sequence;
    let moved = sqlx::query(
        "UPDATE bills SET version = $2, updated_at = $3 WHERE order_id = $1 AND version = $2 - 1",
    )
    .bind(order_id)
    .bind(seq)
    .bind(e.envelope.time)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    if moved == 1 {
        return Ok(true);
    }
    let current: Option<i64> = sqlx::query_scalar("SELECT version FROM bills WHERE order_id = $1")
        .bind(order_id)
        .fetch_optional(&mut *conn)
        .await?;
    match current {
        Some(v) if v >= seq => Ok(false),
        v => Err(ApplyError::Gap { aggregate: order_id, expected: v.unwrap_or(0) + 1, got: seq, seq: e.seq }),
    }
}

async fn change(conn: &mut PgConnection, event: &DomainEvent, merchant_id: Uuid) -> Result<(), ApplyError> {
    match event {
        DomainEvent::OrderCanceled(c) => set_status(conn, c.order_id, "canceled").await,
        DomainEvent::OrderCompleted(c) => set_status(conn, c.order_id, "completed").await,
        DomainEvent::PaymentCreated(p) => {
            sqlx::query(
                "INSERT INTO bill_payments (payment_id, order_id, merchant_id, method, status, capture, amount, tip,
                                            created_at, updated_at)
                 VALUES ($1, $2, $8, $3, 'pending', $4, $5, $6, $7, $7) ON CONFLICT (payment_id) DO NOTHING",
            )
            .bind(p.payment_id)
            .bind(p.order_id)
            .bind(p.method.as_str())
            .bind(match p.capture {
                events::domain::CaptureMode::Automatic => "automatic",
                events::domain::CaptureMode::Manual => "manual",
            })
            .bind(p.amount)
            .bind(p.tip)
            .bind(p.created_at)
            .bind(merchant_id)
            .execute(&mut *conn)
            .await?;
            Ok(())
        }
        DomainEvent::PaymentAuthorized(p) => {
            sqlx::query("UPDATE bill_payments SET status = 'authorized', auth_code = $2, updated_at = $3 WHERE payment_id = $1")
                .bind(p.payment_id)
                .bind(&p.auth_code)
                .bind(p.authorized_at)
                .execute(&mut *conn)
                .await?;
            Ok(())
        }
        DomainEvent::PaymentCaptured(p) => {
            payment_status(conn, p.payment_id, "captured", p.captured_at).await?;
            recompute_totals(conn, p.order_id).await
        }
        DomainEvent::PaymentFailed(p) => {
            sqlx::query("UPDATE bill_payments SET status = 'failed', failure_reason = $2, updated_at = $3 WHERE payment_id = $1")
                .bind(p.payment_id)
                .bind(&p.reason)
                .bind(p.failed_at)
                .execute(&mut *conn)
                .await?;
            Ok(())
        }
        DomainEvent::PaymentVoided(p) => payment_status(conn, p.payment_id, "voided", p.voided_at).await,
        DomainEvent::PaymentRefunded(r) => {
            sqlx::query(
                "INSERT INTO bill_refunds (refund_id, payment_id, order_id, merchant_id, amount, reason, created_at)
                 VALUES ($1, $2, $3, $7, $4, $5, $6) ON CONFLICT (refund_id) DO NOTHING",
            )
            .bind(r.refund_id)
            .bind(r.payment_id)
            .bind(r.order_id)
            .bind(r.amount)
            .bind(&r.reason)
            .bind(r.refunded_at)
            .bind(merchant_id)
            .execute(&mut *conn)
            .await?;
            sqlx::query(
                "UPDATE bill_payments SET updated_at = $2,
                        refunded = (SELECT COALESCE(sum(amount), 0) FROM bill_refunds WHERE payment_id = $1)
                  WHERE payment_id = $1",
            )
            .bind(r.payment_id)
            .bind(r.refunded_at)
            .execute(&mut *conn)
            .await?;
            recompute_totals(conn, r.order_id).await
        }
        DomainEvent::OrderCreated(_)
        | DomainEvent::DeviceTokenIssued(_)
        | DomainEvent::DeviceConfigApplied(_)
        | DomainEvent::SettlementCompleted(_) => Ok(()),
    }
}

/// paid, tips and refunded of a bill, from its payment and refund rows.
async fn recompute_totals(conn: &mut PgConnection, order_id: Uuid) -> Result<(), ApplyError> {
    sqlx::query(
        "UPDATE bills SET
            paid = (SELECT COALESCE(sum(amount), 0) FROM bill_payments WHERE order_id = $1 AND status = 'captured'),
            tips = (SELECT COALESCE(sum(tip), 0) FROM bill_payments WHERE order_id = $1 AND status = 'captured'),
            refunded = (SELECT COALESCE(sum(amount), 0) FROM bill_refunds WHERE order_id = $1)
          WHERE order_id = $1",
    )
    .bind(order_id)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

async fn set_status(conn: &mut PgConnection, order_id: Uuid, status: &str) -> Result<(), ApplyError> {
    sqlx::query("UPDATE bills SET status = $2 WHERE order_id = $1")
        .bind(order_id)
        .bind(status)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

async fn payment_status(
    conn: &mut PgConnection,
    payment_id: Uuid,
    status: &str,
    at: chrono::DateTime<chrono::Utc>,
) -> Result<(), ApplyError> {
    sqlx::query("UPDATE bill_payments SET status = $2, updated_at = $3 WHERE payment_id = $1")
        .bind(payment_id)
        .bind(status)
        .bind(at)
        .execute(&mut *conn)
        .await?;
    Ok(())
}
