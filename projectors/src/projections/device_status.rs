//! Device status: when each terminal was last seen, its last order, its
//! tokens, and the configuration version it reported applying.
//!
//! One upsert per device per batch; every column only moves forward
//! (`GREATEST`), so re-applying an event changes nothing.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use events::DomainEvent;
use sqlx::PgConnection;
use uuid::Uuid;

use super::ApplyError;
use crate::event::Event;

/// Applies one event: a batch of one, so the upsert's forward-only rules do
/// the work that [`apply_many`]'s fold does for a longer batch (the rebuild
/// tests hold the two to the same rows).
pub async fn apply(conn: &mut PgConnection, e: &Event) -> Result<(), ApplyError> {
    apply_many(conn, &[e]).await
}

/// One device's changes in a batch, folded with the same forward-only rules.
struct Fold {
    merchant_id: Uuid,
    store_id: Uuid,
    last_seen_at: DateTime<Utc>,
    last_order: Option<(Uuid, DateTime<Utc>)>,
    tokens_issued: i64,
    last_token_at: Option<DateTime<Utc>>,
    config_version: Option<i64>,
    config_applied_at: Option<DateTime<Utc>>,
}

/// Applies a batch: the events folded per device in memory, then one
/// multi-row upsert with the same forward-only rules as [`apply`] (a device
/// appears once per statement, as `ON CONFLICT DO UPDATE` requires).
pub async fn apply_many(conn: &mut PgConnection, batch: &[&Event]) -> Result<(), ApplyError> {
    let mut devices: HashMap<Uuid, Fold> = HashMap::new();
    let mut order: Vec<Uuid> = Vec::new();
    for e in batch {
        let env = &e.envelope;
        let (Some(device_id), Some(store_id)) = (env.device_id, env.store_id) else { continue };
        let fold = devices.entry(device_id).or_insert_with(|| {
            order.push(device_id);
            Fold {
                merchant_id: env.merchant_id,
                store_id,
                last_seen_at: env.time,
                last_order: None,
                tokens_issued: 0,
                last_token_at: None,
                config_version: None,
                config_applied_at: None,
            }
        });
        fold.last_seen_at = fold.last_seen_at.max(env.time);
        match &e.event {
            // Strictly later replaces, as the upsert's CASE does.
            DomainEvent::OrderCreated(c) if fold.last_order.is_none_or(|(_, at)| c.created_at > at) => {
                fold.last_order = Some((c.order_id, c.created_at));
            }
            DomainEvent::DeviceTokenIssued(t) => {
                fold.tokens_issued = fold.tokens_issued.max(t.tokens_issued);
                fold.last_token_at = fold.last_token_at.max(Some(t.issued_at));
            }
            DomainEvent::DeviceConfigApplied(c) => {
                fold.config_version = fold.config_version.max(Some(c.version));
                fold.config_applied_at = fold.config_applied_at.max(Some(c.applied_at));
            }
            _ => {}
        }
    }
    if order.is_empty() {
        return Ok(());
    }
    let folds: Vec<&Fold> = order.iter().filter_map(|id| devices.get(id)).collect();
    sqlx::query(
        "INSERT INTO device_status (device_id, merchant_id, store_id, last_seen_at, last_order_id, last_order_at,
                                    tokens_issued, last_token_at, config_version, config_applied_at)
         SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::uuid[], $4::timestamptz[], $5::uuid[],
                              $6::timestamptz[], $7::bigint[], $8::timestamptz[], $9::bigint[], $10::timestamptz[])
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
    .bind(&order)
    .bind(folds.iter().map(|f| f.merchant_id).collect::<Vec<_>>())
    .bind(folds.iter().map(|f| f.store_id).collect::<Vec<_>>())
    .bind(folds.iter().map(|f| f.last_seen_at).collect::<Vec<_>>())
    .bind(folds.iter().map(|f| f.last_order.map(|o| o.0)).collect::<Vec<_>>())
    .bind(folds.iter().map(|f| f.last_order.map(|o| o.1)).collect::<Vec<_>>())
    .bind(folds.iter().map(|f| f.tokens_issued).collect::<Vec<_>>())
    .bind(folds.iter().map(|f| f.last_token_at).collect::<Vec<_>>())
    .bind(folds.iter().map(|f| f.config_version).collect::<Vec<_>>())
    .bind(folds.iter().map(|f| f.config_applied_at).collect::<Vec<_>>())
    .execute(&mut *conn)
    .await?;
    Ok(())
}
