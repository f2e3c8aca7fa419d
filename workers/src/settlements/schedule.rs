//! Which store days are due for settlement, enqueued once each.
//!
//! A store's open day at instant `t` is its business date at `t − grace`;
//! the day before it has closed. Each run enqueues, for every store, that
//! closed day if it was never enqueued (`settlement_schedule` holds one row
//! per store and date, so concurrent schedulers enqueue it once). A store
//! seen for the first time starts with its last closed day; earlier days are
//! not back-filled.

use chrono::{DateTime, Days, NaiveDate, NaiveTime, Utc};
use chrono_tz::Tz;
use sqlx::PgPool;
use std::time::Duration;
use uuid::Uuid;

use super::{Reason, SettlementJob, enqueue};

/// Enqueues every store day closed at `now`; returns what it enqueued.
pub async fn enqueue_due(
    pg: &PgPool,
    subject_prefix: &str,
    now: DateTime<Utc>,
    grace: Duration,
) -> anyhow::Result<Vec<(Uuid, NaiveDate)>> {
    let stores: Vec<(Uuid, Uuid, String, NaiveTime)> =
        sqlx::query_as("SELECT id, merchant_id, time_zone, close_of_day FROM stores").fetch_all(pg).await?;
    let at = now - chrono::Duration::from_std(grace).unwrap_or_default();
    let mut enqueued = Vec::new();
    for (store_id, merchant_id, tz, close) in stores {
        let Ok(tz) = tz.parse::<Tz>() else {
            tracing::warn!(store = %store_id, "store has an invalid time zone; not settling it");
            continue;
        };
        let open = events::calendar::business_date(at, tz, close);
        let Some(closed) = open.checked_sub_days(Days::new(1)) else { continue };
        let mut tx = pg.begin().await?;
        let fresh = sqlx::query(
            "INSERT INTO settlement_schedule (store_id, business_date) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        )
        .bind(store_id)
        .bind(closed)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        if fresh {
            let job = SettlementJob {
                job_id: Uuid::now_v7(),
                merchant_id,
                store_id,
                business_date: closed,
                reason: Reason::Scheduled,
            };
            enqueue(&mut tx, subject_prefix, &job).await?;
            enqueued.push((store_id, closed));
        }
        tx.commit().await?;
    }
    Ok(enqueued)
}
