//! Housekeeping that keeps the write side's cost flat as data grows.
//!
//! Every 30 seconds: delete idempotency records past their lifetime (in
//! bounded batches, so no long locks), and export the outbox backlog, the
//! age of its oldest row and the devices online. (The outbox needs no
//! sweeping: the relay deletes each row once JetStream has stored it.)

use sqlx::PgPool;
use std::time::Duration;

use platform::Shutdown;

const INTERVAL: Duration = Duration::from_secs(30);
const BATCH: i64 = 10_000;

pub async fn run(pg: PgPool, idempotency_ttl: Duration, shutdown: Shutdown) {
    loop {
        if let Err(e) = sweep(&pg, idempotency_ttl).await {
            tracing::warn!(error = format!("{e:#}"), "janitor sweep failed");
        }
        tokio::select! {
            _ = shutdown.wait() => return,
            _ = tokio::time::sleep(INTERVAL) => {}
        }
    }
}

/// One pass; returns how many idempotency keys it deleted.
pub async fn sweep(pg: &PgPool, idempotency_ttl: Duration) -> anyhow::Result<u64> {
    let mut keys = 0;
    loop {
        let n = sqlx::query(
            "DELETE FROM idempotency_keys WHERE ctid IN (
                SELECT ctid FROM idempotency_keys WHERE created_at < now() - make_interval(secs => $1) LIMIT $2)",
        )
        .bind(idempotency_ttl.as_secs_f64())
        .bind(BATCH)
        .execute(pg)
        .await?
        .rows_affected();
        keys += n;
        if n < BATCH as u64 {
            break;
        }
    }
    let (backlog, oldest) = crate::relay::backlog(pg).await?;
    metrics::gauge!("outbox_backlog").set(backlog as f64);
    metrics::gauge!("outbox_oldest_age_seconds").set(oldest.unwrap_or(0.0));
    // A terminal renews its 90-second token while it works: two missed renewals mean offline.
    let online: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM devices WHERE last_token_at > now() - interval '180 seconds'",
    )
    .fetch_one(pg)
    .await?;
    metrics::gauge!("devices_online").set(online as f64);
    Ok(keys)
}
