//! Device status: when each terminal was last seen, its last order, its
//! tokens, and the configuration version it reported applying.
//!
//! One upsert per event from a device; every column only moves forward
//! (`GREATEST`), so re-applying an event changes nothing.

use events::DomainEvent;
use sqlx::PgConnection;

use super::ApplyError;
use crate::event::Event;

pub async fn apply(conn: &mut PgConnection, e: &Event) -> Result<(), ApplyError> {
    let env = &e.envelope;
    let (Some(device_id), Some(store_id)) = (env.device_id, env.store_id) else {
        return Ok(());
    };
    let (order_id, order_at) = match &e.event {
        DomainEvent::OrderCreated(c) => (Some(c.order_id), Some(c.created_at)),
        _ => (None, None),
    };
    let (tokens, token_at) = match &e.event {
        DomainEvent::DeviceTokenIssued(t) => (t.tokens_issued, Some(t.issued_at)),
        _ => (0, None),
    };
    let (config_version, applied_at) = match &e.event {
        DomainEvent::DeviceConfigApplied(c) => (Some(c.version), Some(c.applied_at)),
        _ => (None, None),
    };
    sqlx::query(
        "INSERT INTO device_status (device_id, merchant_id, store_id, last_seen_at, last_order_id, last_order_at,
                                    tokens_issued, last_token_at, config_version, config_applied_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
         ON CONFLICT (device_id) DO UPDATE SET
           last_seen_at = GREATEST(device_status.last_seen_at, EXCLUDED.last_seen_at),
           last_order_id = CASE WHEN EXCLUDED.last_order_at IS NOT NULL
                                 AND (device_status.last_order_at IS NULL OR EXCLUDED.last_order_at > device_status.last_order_at)
                            THEN EXCLUDED.last_order_id ELSE device_status.last_order_id END,
           last_order_at = GREATEST(device_status.last_order_at, EXCLUDED.last_order_at),
           tokens_issued = GREATEST(device_status.tokens_issued, EXCLUDED.tokens_issued),
           last_token_at = GREATEST(device_status.last_token_at, EXCLUDED.last_token_at),
           config_version = GREATEST(device_status.config_version, EXCLUDED.config_version),
           config_applied_at = GREATEST(device_status.config_applied_at, EXCLUDED.config_applied_at)",
    )
    .bind(device_id)
    .bind(env.merchant_id)
    .bind(store_id)
    .bind(env.time)
    .bind(order_id)
    .bind(order_at)
    .bind(tokens)
    .bind(token_at)
    .bind(config_version)
    .bind(applied_at)
    .execute(&mut *conn)
    .await?;
    Ok(())
}
