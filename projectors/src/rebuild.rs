//! Rebuild and replay: operators' tools over the domain-event stream.
//!
//! *Rebuild* fills a shadow copy of a projection's schema from the start of
//! the stream while the live projection keeps serving and applying, then
//! swaps it in within one transaction that holds the live checkpoint (which
//! pauses the live runner for the moment of the swap):
//! - whole projection: the shadow schema is renamed into place and the
//!   checkpoint moves to the shadow's position;
//! - one merchant (`merchant`): only that tenant's events are read, and its
//!   rows are replaced in the live tables; the checkpoint stays.
//!
//! *Replay* re-applies a range of the stream to the live projection, up to
//! its checkpoint, to repair rows. Every projection's writes are guarded
//! (aggregate version, fact ids, monotonic columns), so re-applying an event
//! that is already reflected changes nothing.
//!
//! Neither reads work items, so neither ever re-sends a receipt or re-runs a
//! settlement.

use anyhow::{Context, anyhow};
use async_nats::jetstream::{self, consumer::DeliverPolicy, consumer::pull};
use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use sqlx::PgPool;
use std::time::{Duration, Instant};
use uuid::Uuid;

use crate::checkpoint;
use crate::event::{self, Event};
use crate::projections::Projection;
use crate::runner::{BatchError, apply_batch_mode};

/// Where a long run is, for progress output.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    pub applied: u64,
    /// Stream sequence reached.
    pub position: u64,
    /// Stream sequence to reach.
    pub target: u64,
    pub elapsed: Duration,
}

impl Progress {
    pub fn rate(&self) -> f64 {
        self.applied as f64 / self.elapsed.as_secs_f64().max(1e-3)
    }

    /// `applied 12000 events, at 48213/50000 (96.4%), 41000 ev/s, ETA 0s`
    pub fn line(&self) -> String {
        let pct = if self.target == 0 { 100.0 } else { 100.0 * self.position as f64 / self.target as f64 };
        let left = self.target.saturating_sub(self.position) as f64;
        let eta = if self.rate() > 0.0 { left / self.rate() } else { 0.0 };
        format!(
            "applied {} events, at {}/{} ({pct:.1}%), {:.0} ev/s, ETA {eta:.0}s",
            self.applied,
            self.position,
            self.target,
            self.rate()
        )
    }
}

#[derive(Clone)]
pub struct Source {
    pub pg: PgPool,
    pub js: jetstream::Context,
    /// The domain-event stream.
    pub stream: String,
    pub subject_prefix: String,
    pub batch: usize,
}

#[derive(Debug, Clone, Copy)]
pub enum From {
    Seq(u64),
    Time(DateTime<Utc>),
}

type Messages = jetstream::consumer::pull::Ordered;

impl Source {
    async fn read(&self, merchant: Option<Uuid>, from: DeliverPolicy) -> anyhow::Result<Messages> {
        let filter = match merchant {
            Some(m) => events::subjects::merchant_events(&self.subject_prefix, m),
            None => events::subjects::all_events(&self.subject_prefix),
        };
        let stream = self.js.get_stream(&self.stream).await?;
        let consumer = stream
            .create_consumer(pull::OrderedConfig {
                filter_subject: filter,
                deliver_policy: from,
                ..Default::default()
            })
            .await?;
        Ok(consumer.messages().await?)
    }

    async fn bounds(&self) -> anyhow::Result<(u64, u64)> {
        let mut stream = self.js.get_stream(&self.stream).await?;
        let state = stream.info().await?.state.clone();
        Ok((state.first_sequence, state.last_sequence))
    }

    /// Up to `batch` events; `true` once nothing more is pending.
    async fn next_batch(
        &self,
        messages: &mut Messages,
        last_seen: &mut u64,
    ) -> anyhow::Result<(Vec<Event>, bool)> {
        let mut out = Vec::with_capacity(self.batch);
        loop {
            let next = tokio::time::timeout(Duration::from_millis(300), messages.next()).await;
            let msg = match next {
                Err(_) | Ok(None) => return Ok((out, true)),
                Ok(Some(msg)) => msg.map_err(|e| anyhow!("reading the stream: {e}"))?,
            };
            let info = msg.info().map_err(|e| anyhow!("message info: {e}"))?;
            let (seq, pending) = (info.stream_sequence, info.pending);
            *last_seen = seq;
            out.push(event::decode(seq, msg.headers.as_ref(), &msg.payload)?);
            if pending == 0 || out.len() >= self.batch {
                return Ok((out, pending == 0));
            }
        }
    }
}

/// Reads and decodes the stream in its own task, a couple of batches ahead,
/// so decoding overlaps the database writes of the batch before.
struct ReadAhead {
    rx: tokio::sync::mpsc::Receiver<anyhow::Result<(Vec<Event>, bool, u64)>>,
    task: tokio::task::JoinHandle<()>,
}

impl ReadAhead {
    fn start(source: &Source, mut messages: Messages) -> Self {
        let (tx, rx) = tokio::sync::mpsc::channel(2);
        let source = source.clone();
        let task = tokio::spawn(async move {
            let mut last_seen = 0;
            loop {
                let next = source.next_batch(&mut messages, &mut last_seen).await;
                let failed = next.is_err();
                if tx.send(next.map(|(batch, caught_up)| (batch, caught_up, last_seen))).await.is_err()
                    || failed
                {
                    return;
                }
            }
        });
        Self { rx, task }
    }

    /// The next batch, whether the stream was caught up, and the last sequence read.
    async fn next(&mut self, last_seen: &mut u64) -> anyhow::Result<(Vec<Event>, bool)> {
        let (batch, caught_up, seen) =
            self.rx.recv().await.ok_or_else(|| anyhow!("the stream reader stopped"))??;
        *last_seen = seen;
        Ok((batch, caught_up))
    }
}

impl Drop for ReadAhead {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Rebuilds `projection` (or one merchant of it) into a shadow schema and swaps it in.
pub async fn rebuild(
    source: &Source,
    projection: Projection,
    merchant: Option<Uuid>,
    mut progress: impl FnMut(&Progress),
) -> anyhow::Result<Progress> {
    let pg = &source.pg;
    let live = projection.schema();
    let shadow = format!("{live}__shadow");
    let shadow_cp = format!("{}@rebuild", projection.name());
    let tables = prepare_shadow(pg, projection, &shadow, &shadow_cp).await?;
    let (first, target) = source.bounds().await?;
    let strict = merchant.is_none().then_some(first as i64);
    let mut ahead = ReadAhead::start(source, source.read(merchant, DeliverPolicy::All).await?);
    let started = Instant::now();
    let mut state = Progress { applied: 0, position: 0, target, elapsed: Duration::ZERO };
    let mut last_seen = 0;
    // Fill the shadow up to the stream's head, as it moves.
    loop {
        let (batch, caught_up) = ahead.next(&mut last_seen).await?;
        apply_shadow(pg, projection, &shadow, &shadow_cp, &batch, strict, &mut state).await?;
        state.position = last_seen.max(state.position);
        state.elapsed = started.elapsed();
        progress(&state);
        if caught_up {
            break;
        }
    }
    // Swap: hold the live checkpoint, catch the shadow up to it, replace.
    let mut tx = pg.begin().await?;
    let live_checkpoint = checkpoint::lock(&mut tx, projection.name()).await?;
    while (last_seen as i64) < live_checkpoint {
        let (batch, caught_up) = ahead.next(&mut last_seen).await?;
        apply_shadow(pg, projection, &shadow, &shadow_cp, &batch, strict, &mut state).await?;
        if caught_up && batch.is_empty() {
            break;
        }
    }
    match merchant {
        None => {
            let shadow_at: i64 =
                sqlx::query_scalar("SELECT stream_seq FROM projection_checkpoints WHERE projection = $1")
                    .bind(&shadow_cp)
                    .fetch_optional(&mut *tx)
                    .await?
                    .unwrap_or(0);
            for sql in [
                format!("ALTER SCHEMA {live} RENAME TO {live}__old"),
                format!("ALTER SCHEMA {shadow} RENAME TO {live}"),
                format!("DROP SCHEMA {live}__old CASCADE"),
            ] {
                sqlx::query(&sql).execute(&mut *tx).await?;
            }
            checkpoint::advance(&mut tx, projection.name(), shadow_at.max(live_checkpoint), None).await?;
        }
        Some(m) => {
            for t in &tables {
                sqlx::query(&format!("DELETE FROM {live}.{t} WHERE merchant_id = $1"))
                    .bind(m)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query(&format!("INSERT INTO {live}.{t} SELECT * FROM {shadow}.{t}"))
                    .execute(&mut *tx)
                    .await?;
            }
            sqlx::query(&format!("DROP SCHEMA {shadow} CASCADE")).execute(&mut *tx).await?;
        }
    }
    sqlx::query("DELETE FROM projection_checkpoints WHERE projection = $1")
        .bind(&shadow_cp)
        .execute(&mut *tx)
        .await?;
    tx.commit().await.context("swapping the rebuilt read model in")?;
    state.elapsed = started.elapsed();
    state.position = state.position.max(target);
    progress(&state);
    Ok(state)
}

async fn apply_shadow(
    pg: &PgPool,
    projection: Projection,
    shadow: &str,
    shadow_cp: &str,
    batch: &[Event],
    strict: Option<i64>,
    state: &mut Progress,
) -> anyhow::Result<()> {
    if batch.is_empty() {
        return Ok(());
    }
    match apply_batch_mode(pg, projection, shadow, shadow_cp, batch, strict, true).await {
        Ok(applied) => {
            state.applied += applied.applied;
            Ok(())
        }
        Err(BatchError::Database(e)) => Err(e.into()),
        Err(other) => Err(anyhow!("rebuilding {}: {other}", projection.name())),
    }
}

/// A fresh, empty copy of every table of the projection's schema in schema
/// `shadow`, with the live tables' constraints and indexes under their live
/// names, so that the swap renames nothing a migration may refer to.
/// Returns the table names.
async fn prepare_shadow(
    pg: &PgPool,
    projection: Projection,
    shadow: &str,
    shadow_cp: &str,
) -> anyhow::Result<Vec<String>> {
    let live = projection.schema();
    // Each table with its storage parameters (a fill factor), which LIKE does not copy.
    let tables: Vec<(String, Option<String>)> = sqlx::query_as(
        "SELECT c.relname::text, array_to_string(c.reloptions, ', ')
           FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
          WHERE n.nspname = $1 AND c.relkind = 'r' ORDER BY 1",
    )
    .bind(live)
    .fetch_all(pg)
    .await?;
    // Primary keys and unique constraints, then the other indexes.
    let constraints: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT t.relname::text, c.conname::text, pg_get_constraintdef(c.oid)
           FROM pg_constraint c JOIN pg_class t ON t.oid = c.conrelid
           JOIN pg_namespace n ON n.oid = t.relnamespace
          WHERE n.nspname = $1 AND c.contype IN ('p', 'u') ORDER BY 1, 2",
    )
    .bind(live)
    .fetch_all(pg)
    .await?;
    let indexes: Vec<String> = sqlx::query_scalar(
        "SELECT i.indexdef FROM pg_indexes i
          WHERE i.schemaname = $1
            AND NOT EXISTS (SELECT 1 FROM pg_constraint c JOIN pg_class x ON x.oid = c.conindid
                             JOIN pg_namespace n ON n.oid = x.relnamespace
                            WHERE n.nspname = $1 AND x.relname = i.indexname)
          ORDER BY i.indexname",
    )
    .bind(live)
    .fetch_all(pg)
    .await?;
    let mut tx = pg.begin().await?;
    sqlx::query(&format!("DROP SCHEMA IF EXISTS {shadow} CASCADE")).execute(&mut *tx).await?;
    sqlx::query(&format!("CREATE SCHEMA {shadow}")).execute(&mut *tx).await?;
    for (t, options) in &tables {
        let with = options.as_ref().map(|o| format!(" WITH ({o})")).unwrap_or_default();
        sqlx::query(&format!(
            "CREATE TABLE {shadow}.{t} (LIKE {live}.{t} INCLUDING ALL EXCLUDING INDEXES){with}"
        ))
        .execute(&mut *tx)
        .await?;
    }
    for (table, name, definition) in &constraints {
        sqlx::query(&format!("ALTER TABLE {shadow}.{table} ADD CONSTRAINT \"{name}\" {definition}"))
            .execute(&mut *tx)
            .await?;
    }
    for definition in &indexes {
        sqlx::query(&on_schema(definition, live, shadow)?).execute(&mut *tx).await?;
    }
    sqlx::query("DELETE FROM projection_checkpoints WHERE projection = $1")
        .bind(shadow_cp)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(tables.into_iter().map(|(t, _)| t).collect())
}

/// A live index's definition (`CREATE INDEX name ON live.table ...`) moved to `shadow`.
fn on_schema(definition: &str, live: &str, shadow: &str) -> anyhow::Result<String> {
    let from = format!(" ON {live}.");
    anyhow::ensure!(definition.contains(&from), "unexpected index definition: {definition}");
    Ok(definition.replacen(&from, &format!(" ON {shadow}."), 1))
}

/// Re-applies the stream from `from` up to the live checkpoint, to repair rows.
pub async fn replay(
    source: &Source,
    projection: Projection,
    from: From,
    mut progress: impl FnMut(&Progress),
) -> anyhow::Result<Progress> {
    let policy = match from {
        From::Seq(seq) => DeliverPolicy::ByStartSequence { start_sequence: seq.max(1) },
        From::Time(t) => DeliverPolicy::ByStartTime {
            start_time: time::OffsetDateTime::from_unix_timestamp(t.timestamp())
                .map_err(|e| anyhow!("--from-time: {e}"))?,
        },
    };
    let mut messages = source.read(None, policy).await?;
    let started = Instant::now();
    let mut conn = source.pg.acquire().await?;
    let target = checkpoint::lock(&mut conn, projection.name()).await? as u64;
    drop(conn);
    let mut state = Progress { applied: 0, position: 0, target, elapsed: Duration::ZERO };
    let mut last_seen = 0;
    while state.position < target {
        let (batch, caught_up) = source.next_batch(&mut messages, &mut last_seen).await?;
        let mut tx = source.pg.begin().await?;
        let live = checkpoint::lock(&mut tx, projection.name()).await? as u64;
        sqlx::query(&format!("SET LOCAL search_path TO {}, public", projection.schema()))
            .execute(&mut *tx)
            .await?;
        for e in batch.iter().filter(|e| e.seq <= live) {
            projection
                .apply(&mut tx, e)
                .await
                .map_err(|e| anyhow!("replaying {}: {e}", projection.name()))?;
            state.applied += 1;
        }
        tx.commit().await?;
        state.position = last_seen;
        state.elapsed = started.elapsed();
        progress(&state);
        if caught_up || last_seen >= live {
            break;
        }
    }
    Ok(state)
}
