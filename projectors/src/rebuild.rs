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
//!
//! Both read until the server says the stream holds nothing more of their
//! filter up to their target sequence (the head, the live checkpoint). A
//! pause in delivery is never taken for the end: a broker stalled by a slow
//! disk once made a rebuild swap in a read model of 47,000 of a million
//! events. A stream that stays quiet while it holds more fails the run after
//! the source's `stall_limit` ([`STALL_LIMIT`] for operators), and a rebuild
//! then swaps nothing in.

use anyhow::{Context, anyhow};
use async_nats::jetstream::stream::RawMessageErrorKind;
use async_nats::jetstream::{self, consumer::DeliverPolicy, consumer::pull};
use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use sqlx::PgPool;
use std::time::{Duration, Instant};
use uuid::Uuid;

use crate::checkpoint;
use crate::event::{self, Event};
use crate::projections::Projection;
use crate::runner::{BatchError, Mode, apply_batch_mode};

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
    /// How long the stream may deliver nothing while it still holds messages
    /// a run needs, before the run fails (a rebuild then swaps nothing in).
    pub stall_limit: Duration,
}

#[derive(Debug, Clone, Copy)]
pub enum From {
    Seq(u64),
    Time(DateTime<Utc>),
}

type Messages = jetstream::consumer::pull::Ordered;

/// How long a read waits for the next message before it asks the server
/// whether more is coming ([`Source::needs_more`]).
const QUIET: Duration = Duration::from_millis(300);

/// How long the server may take to say whether the stream holds more.
const ASK_TIMEOUT: Duration = Duration::from_secs(2);

/// The operators' [`Source::stall_limit`]: longer than a broker's restart.
pub const STALL_LIMIT: Duration = Duration::from_secs(120);

/// A subject-filtered read of the stream.
struct Reader {
    messages: Messages,
    at: Position,
}

/// Where a read is.
#[derive(Clone)]
struct Position {
    filter: String,
    /// Stream sequence of the last message read; 0 before the first.
    last_seen: u64,
    /// Messages of the filter the consumer had to deliver when it was made.
    pending_at_start: u64,
}

impl Source {
    async fn read(&self, merchant: Option<Uuid>, from: DeliverPolicy) -> anyhow::Result<Reader> {
        let filter = match merchant {
            Some(m) => events::subjects::merchant_events(&self.subject_prefix, m),
            None => events::subjects::all_events(&self.subject_prefix),
        };
        let stream = self.js.get_stream(&self.stream).await?;
        let consumer = stream
            .create_consumer(pull::OrderedConfig {
                filter_subject: filter.clone(),
                deliver_policy: from,
                ..Default::default()
            })
            .await?;
        let pending_at_start = consumer.cached_info().num_pending;
        let at = Position { filter, last_seen: 0, pending_at_start };
        Ok(Reader { messages: consumer.messages().await?, at })
    }

    async fn bounds(&self) -> anyhow::Result<(u64, u64)> {
        let mut stream = self.js.get_stream(&self.stream).await?;
        let state = stream.info().await?.state.clone();
        Ok((state.first_sequence, state.last_sequence))
    }

    /// Up to `batch` events: fewer once the consumer has nothing pending, and
    /// none when nothing arrives for [`QUIET`]. A short or empty batch says
    /// nothing about the end of the stream: a stalled broker or a busy
    /// machine looks the same. [`Source::needs_more`] decides that.
    async fn next_batch(&self, reader: &mut Reader) -> anyhow::Result<Vec<Event>> {
        let mut out = Vec::with_capacity(self.batch);
        loop {
            let msg = match tokio::time::timeout(QUIET, reader.messages.next()).await {
                Err(_) => return Ok(out),
                Ok(None) => anyhow::bail!("the stream reader ended"),
                Ok(Some(msg)) => msg.map_err(|e| anyhow!("reading the stream: {e}"))?,
            };
            let info = msg.info().map_err(|e| anyhow!("message info: {e}"))?;
            let (seq, pending) = (info.stream_sequence, info.pending);
            reader.at.last_seen = seq;
            out.push(event::decode(seq, msg.headers.as_ref(), &msg.payload)?);
            if pending == 0 || out.len() >= self.batch {
                return Ok(out);
            }
        }
    }

    /// Whether the stream holds a message of `filter` after `after` and at or
    /// below `upto`: asked of the server, so that the end of a read is a fact
    /// about the stream, not a pause in delivery.
    async fn holds(&self, filter: &str, after: u64, upto: u64) -> anyhow::Result<bool> {
        if after >= upto {
            return Ok(false);
        }
        let stream = self.js.get_stream_no_info(&self.stream).await?;
        match stream.raw_message_builder().sequence(after + 1).next_by_subject(filter.to_owned()).send().await
        {
            Ok(msg) => Ok(msg.sequence <= upto),
            Err(e) if e.kind() == RawMessageErrorKind::NoMessageFound => Ok(false),
            Err(e) => Err(anyhow!("asking the stream what follows sequence {after}: {e}")),
        }
    }

    /// Whether a read at `at` still has messages to take at or below `upto`.
    /// Before its first message, the consumer's own count at creation answers
    /// (a read from a time has no sequence to ask from); a first message
    /// beyond `upto` then ends it.
    async fn needs_more(&self, at: &Position, upto: u64) -> anyhow::Result<bool> {
        if at.last_seen == 0 {
            return Ok(at.pending_at_start > 0);
        }
        self.holds(&at.filter, at.last_seen, upto).await
    }
}

/// Notices a read that has gone quiet while the stream still holds what it
/// needs (or cannot say): warns after a while, fails once nothing has moved
/// for the source's `stall_limit`.
struct Stall {
    moved: Instant,
    warned: bool,
    /// Why the server could not be asked, last time it could not.
    unanswered: Option<String>,
}

impl Stall {
    fn new() -> Self {
        Self { moved: Instant::now(), warned: false, unanswered: None }
    }

    /// Whether the read at `at` needs more up to `upto`. A question the
    /// server does not answer in time (it may be the very stall being waited
    /// out) counts as a quiet moment and as "yes".
    async fn needs_more(&mut self, source: &Source, at: &Position, upto: u64) -> anyhow::Result<bool> {
        let asked = tokio::time::timeout(ASK_TIMEOUT, source.needs_more(at, upto)).await;
        match asked.unwrap_or_else(|_| Err(anyhow!("no answer within {}s", ASK_TIMEOUT.as_secs()))) {
            Ok(more) => Ok(more),
            Err(e) => {
                self.unanswered = Some(format!("{e:#}"));
                self.quiet(source, at.last_seen)?;
                Ok(true)
            }
        }
    }

    fn moved(&mut self) {
        *self = Self::new();
    }

    fn quiet(&mut self, source: &Source, last_seen: u64) -> anyhow::Result<()> {
        let quiet = self.moved.elapsed();
        let why = self.unanswered.as_deref().unwrap_or("nothing delivered");
        if quiet >= Duration::from_secs(5) && !self.warned {
            self.warned = true;
            tracing::warn!(
                last_seen,
                quiet_secs = quiet.as_secs(),
                why,
                "the stream is quiet but holds more; waiting"
            );
        }
        anyhow::ensure!(
            quiet < source.stall_limit,
            "the stream stalled for {}s after sequence {last_seen} ({why})",
            quiet.as_secs()
        );
        Ok(())
    }
}

/// Reads and decodes the stream in its own task, a couple of batches ahead,
/// so decoding overlaps the database writes of the batch before.
struct ReadAhead {
    rx: tokio::sync::mpsc::Receiver<anyhow::Result<(Vec<Event>, u64)>>,
    task: tokio::task::JoinHandle<()>,
    /// Where the batches handed out so far end.
    at: Position,
}

impl ReadAhead {
    fn start(source: &Source, mut reader: Reader) -> Self {
        let (tx, rx) = tokio::sync::mpsc::channel(2);
        let at = reader.at.clone();
        let source = source.clone();
        let task = tokio::spawn(async move {
            loop {
                let next = source.next_batch(&mut reader).await;
                let failed = next.is_err();
                if tx.send(next.map(|batch| (batch, reader.at.last_seen))).await.is_err() || failed {
                    return;
                }
            }
        });
        Self { rx, task, at }
    }

    /// The next batch (empty when the stream was quiet for a moment).
    async fn next(&mut self) -> anyhow::Result<Vec<Event>> {
        let (batch, seen) = self.rx.recv().await.ok_or_else(|| anyhow!("the stream reader stopped"))??;
        self.at.last_seen = seen;
        Ok(batch)
    }
}

impl Drop for ReadAhead {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The shadow being filled, and how far.
struct Fill<'a, P> {
    source: &'a Source,
    projection: Projection,
    shadow: &'a str,
    shadow_cp: &'a str,
    strict: Option<i64>,
    ahead: ReadAhead,
    state: Progress,
    started: Instant,
    progress: P,
}

impl<P: FnMut(&Progress)> Fill<'_, P> {
    /// Applies what the stream holds of the read's filter up to sequence
    /// `upto`. It ends when the server says nothing of it is left at or
    /// below `upto`, never because delivery paused: a rebuild that took a
    /// quiet moment for the end would swap in a partial read model.
    async fn to(&mut self, upto: u64) -> anyhow::Result<()> {
        let mut stall = Stall::new();
        while stall.needs_more(self.source, &self.ahead.at, upto).await? {
            let batch = self.ahead.next().await?;
            if batch.is_empty() {
                stall.quiet(self.source, self.ahead.at.last_seen)?;
                continue;
            }
            stall.moved();
            let (pg, p, shadow, cp) = (&self.source.pg, self.projection, self.shadow, self.shadow_cp);
            apply_shadow(pg, p, shadow, cp, &batch, self.strict, &mut self.state).await?;
            self.state.position = self.ahead.at.last_seen.max(self.state.position);
            self.state.elapsed = self.started.elapsed();
            (self.progress)(&self.state);
        }
        Ok(())
    }
}

/// Rebuilds `projection` (or one merchant of it) into a shadow schema and swaps it in.
pub async fn rebuild(
    source: &Source,
    projection: Projection,
    merchant: Option<Uuid>,
    progress: impl FnMut(&Progress),
) -> anyhow::Result<Progress> {
    let pg = &source.pg;
    let live = projection.schema();
    let shadow = format!("{live}__shadow");
    let shadow_cp = format!("{}@rebuild", projection.name());
    let prepared = prepare_shadow(pg, projection, &shadow, &shadow_cp).await?;
    let (first, target) = source.bounds().await?;
    let mut fill = Fill {
        source,
        projection,
        shadow: &shadow,
        shadow_cp: &shadow_cp,
        strict: merchant.is_none().then_some(first as i64),
        ahead: ReadAhead::start(source, source.read(merchant, DeliverPolicy::All).await?),
        state: Progress { applied: 0, position: 0, target, elapsed: Duration::ZERO },
        started: Instant::now(),
        progress,
    };
    // Fill the shadow up to the stream's head as the rebuild began, build the
    // query side's indexes, then fill up to where the head has moved
    // meanwhile, so that the catch-up under the live checkpoint's lock is short.
    const UNCHANGED: &str = "rebuild stopped; the live read model is unchanged";
    fill.to(target).await.context(UNCHANGED)?;
    build_query_indexes(pg, &prepared).await.context(UNCHANGED)?;
    fill.to(source.bounds().await?.1).await.context(UNCHANGED)?;
    // Swap: hold the live checkpoint, catch the shadow up to it, replace.
    let mut tx = pg.begin().await?;
    let live_checkpoint = checkpoint::lock(&mut tx, projection.name()).await?;
    fill.to(u64::try_from(live_checkpoint).unwrap_or(0)).await.context(UNCHANGED)?;
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
            for t in &prepared.tables {
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
    if projection == Projection::Bills {
        crate::runner::reset_bill_readers(&source.js.client(), &source.subject_prefix).await;
    }
    let mut state = fill.state;
    state.elapsed = fill.started.elapsed();
    state.position = state.position.max(target);
    (fill.progress)(&state);
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
    let mut conn = pg.acquire().await?;
    match apply_batch_mode(&mut conn, projection, shadow, shadow_cp, batch, strict, Mode::Shadow).await {
        Ok(applied) => {
            state.applied += applied.applied;
            Ok(())
        }
        Err(BatchError::Database(e)) => Err(e.into()),
        Err(other) => Err(anyhow!("rebuilding {}: {other}", projection.name())),
    }
}

/// A fresh, empty shadow of a projection's schema.
struct Shadow {
    tables: Vec<String>,
    /// `CREATE INDEX` statements on the shadow for the projection's
    /// [`Projection::query_indexes`], to run once it is filled.
    query_indexes: Vec<String>,
}

/// A fresh, empty copy of every table of the projection's schema in schema
/// `shadow`, with the live tables' constraints and indexes under their live
/// names, so that the swap renames nothing a migration may refer to. The
/// query side's indexes are left for [`build_query_indexes`].
async fn prepare_shadow(
    pg: &PgPool,
    projection: Projection,
    shadow: &str,
    shadow_cp: &str,
) -> anyhow::Result<Shadow> {
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
    let indexes: Vec<(String, String)> = sqlx::query_as(
        "SELECT i.indexname::text, i.indexdef FROM pg_indexes i
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
    let deferred = projection.query_indexes();
    for name in deferred {
        anyhow::ensure!(
            indexes.iter().any(|(n, _)| n == name),
            "{live} has no index {name}: Projection::query_indexes names it"
        );
    }
    let mut query_indexes = Vec::new();
    for (name, definition) in &indexes {
        let on_shadow = on_schema(definition, live, shadow)?;
        if deferred.contains(&name.as_str()) {
            query_indexes.push(on_shadow);
        } else {
            sqlx::query(&on_shadow).execute(&mut *tx).await?;
        }
    }
    sqlx::query("DELETE FROM projection_checkpoints WHERE projection = $1")
        .bind(shadow_cp)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(Shadow { tables: tables.into_iter().map(|(t, _)| t).collect(), query_indexes })
}

/// Builds the filled shadow's query-side indexes, each by one sort.
async fn build_query_indexes(pg: &PgPool, shadow: &Shadow) -> anyhow::Result<()> {
    let started = Instant::now();
    for definition in &shadow.query_indexes {
        let mut tx = pg.begin().await?;
        sqlx::query("SET LOCAL maintenance_work_mem = '256MB'").execute(&mut *tx).await?;
        sqlx::query(definition).execute(&mut *tx).await?;
        tx.commit().await?;
    }
    tracing::info!(
        indexes = shadow.query_indexes.len(),
        secs = started.elapsed().as_secs_f64(),
        "query indexes built"
    );
    Ok(())
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
    let mut reader = source.read(None, policy).await?;
    let started = Instant::now();
    let mut conn = source.pg.acquire().await?;
    let target = checkpoint::lock(&mut conn, projection.name()).await? as u64;
    drop(conn);
    let mut state = Progress { applied: 0, position: 0, target, elapsed: Duration::ZERO };
    let mut stall = Stall::new();
    // Like a rebuild's fill, it ends when the stream holds nothing more up to
    // the checkpoint, not when delivery pauses.
    while stall.needs_more(source, &reader.at, target).await? {
        let batch = source.next_batch(&mut reader).await?;
        if batch.is_empty() {
            stall.quiet(source, reader.at.last_seen)?;
            continue;
        }
        stall.moved();
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
        state.position = reader.at.last_seen;
        state.elapsed = started.elapsed();
        progress(&state);
    }
    if projection == Projection::Bills {
        crate::runner::reset_bill_readers(&source.js.client(), &source.subject_prefix).await;
    }
    Ok(state)
}
