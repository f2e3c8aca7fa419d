//! Projection checkpoints: the last stream sequence applied, per projection.
//!
//! The checkpoint row is locked and advanced in the same transaction as the
//! read-model writes, so "applied" and "checkpointed" are one fact.

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};

/// Locks the checkpoint of `name` for this transaction and returns it (0 if
/// new): one statement, which creates the row if missing and otherwise
/// locks it (a no-op update), returning the committed sequence either way.
pub async fn lock(conn: &mut PgConnection, name: &str) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(&own_statement(
        name,
        "INSERT INTO public.projection_checkpoints AS c (projection) VALUES ($1)
         ON CONFLICT (projection) DO UPDATE SET projection = c.projection
         RETURNING c.stream_seq",
    ))
    .bind(name)
    .fetch_one(&mut *conn)
    .await
}

pub async fn advance(
    conn: &mut PgConnection,
    name: &str,
    seq: i64,
    last_event_at: Option<DateTime<Utc>>,
) -> Result<(), sqlx::Error> {
    sqlx::query(&own_statement(
        name,
        "UPDATE public.projection_checkpoints
            SET stream_seq = $2, last_event_at = COALESCE($3, last_event_at), updated_at = now()
          WHERE projection = $1",
    ))
    .bind(name)
    .bind(seq)
    .bind(last_event_at)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// `sql` as `name`'s own prepared statement: the text names the projection,
/// and connections cache statements by text. Each projection's batches run
/// under its own `search_path`, and PostgreSQL re-plans a cached statement
/// whenever the path differs from the one it was planned under: shared by
/// the three projections, these two statements were re-planned at 83% of
/// their calls (`bench/NOTES.md`, step 47).
fn own_statement(name: &str, sql: &str) -> String {
    format!("/* {name} */ {sql}")
}

/// Keeps the definition of `name`'s durable consumer beside its checkpoint,
/// so a runner can recreate a consumer that a crash left deleted (see
/// `Runner::position`).
pub async fn stash_consumer(pg: &PgPool, name: &str, config: &serde_json::Value) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE public.projection_checkpoints SET consumer_config = $2 WHERE projection = $1")
        .bind(name)
        .bind(sqlx::types::Json(config))
        .execute(pg)
        .await?;
    Ok(())
}

/// The stashed definition of `name`'s durable consumer, if any.
pub async fn stashed_consumer(pg: &PgPool, name: &str) -> Result<Option<serde_json::Value>, sqlx::Error> {
    let stashed: Option<Option<sqlx::types::Json<serde_json::Value>>> =
        sqlx::query_scalar("SELECT consumer_config FROM public.projection_checkpoints WHERE projection = $1")
            .bind(name)
            .fetch_optional(pg)
            .await?;
    Ok(stashed.flatten().map(|j| j.0))
}

/// Records that `name` stopped at `seq` for `reason` (shown by `posctl status`).
pub async fn stall(pg: &PgPool, name: &str, seq: u64, reason: &str) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO public.projection_checkpoints (projection, stalled_seq, stalled_reason) VALUES ($1, $2, $3)
         ON CONFLICT (projection) DO UPDATE SET stalled_seq = $2, stalled_reason = $3, updated_at = now()",
    )
    .bind(name)
    .bind(seq as i64)
    .bind(reason)
    .execute(pg)
    .await?;
    Ok(())
}

/// Clears a recorded stall (a restarted projector tries again).
pub async fn clear_stall(pg: &PgPool, name: &str) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE public.projection_checkpoints SET stalled_seq = NULL, stalled_reason = NULL WHERE projection = $1",
    )
    .bind(name)
    .execute(pg)
    .await?;
    Ok(())
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Checkpoint {
    pub projection: String,
    pub stream_seq: i64,
    pub last_event_at: Option<DateTime<Utc>>,
    pub stalled_seq: Option<i64>,
    pub stalled_reason: Option<String>,
}

pub async fn all(pg: &PgPool) -> Result<Vec<Checkpoint>, sqlx::Error> {
    sqlx::query_as(
        "SELECT projection, stream_seq, last_event_at, stalled_seq, stalled_reason
           FROM public.projection_checkpoints ORDER BY projection",
    )
    .fetch_all(pg)
    .await
}
