//! Running one projection: fetch, apply with the checkpoint, acknowledge.
//!
//! Lifecycle: one runner per projection holds that projection's advisory
//! lock, so other projector instances stand by instead of competing (which
//! would break per-aggregate order). It fetches a batch from the durable
//! consumer and applies, in one transaction, every message above the
//! checkpoint, then advances the checkpoint, commits and acknowledges the
//! last message (ack policy `all`).
//!
//! Order is strict: the first unapplied message must be the checkpoint's
//! successor. On taking over, and whenever redelivery overtakes order, the
//! runner repositions the durable consumer at the checkpoint (see
//! [`Runner::position`]), so nothing is applied out of order and nothing is
//! skipped. Repositioning deletes and recreates the consumer; the consumer's
//! definition is stashed beside the checkpoint at every take-over, so a
//! runner that finds the consumer gone (its predecessor died in between)
//! recreates it at the checkpoint instead of waiting for an operator. A
//! database error retries the same batch; an undecodable event or a
//! sequence gap stalls the projection (logged, counted, recorded for
//! `posctl status`).

use async_nats::jetstream::consumer::{DeliverPolicy, FromConsumer, PullConsumer, pull};
use async_nats::jetstream::{self};
use futures_util::StreamExt;
use sqlx::{Connection, PgConnection, PgPool};
use std::time::{Duration, Instant};

use crate::checkpoint;
use crate::event::{self, Event};
use crate::projections::{ApplyError, Projection};
use platform::Shutdown;
use platform::connect::HeldConnection;

#[derive(Clone)]
pub struct Runner {
    pub pg: PgPool,
    pub js: jetstream::Context,
    pub projection: Projection,
    pub stream: String,
    pub consumer: String,
    pub batch: usize,
    pub fetch_wait: Duration,
    /// After a short batch, wait this long before fetching again: fewer,
    /// fuller transactions under load, at the price of that much lag.
    pub linger: Duration,
    /// The stream's first stored sequence as last seen (asked again only
    /// when a batch does not start at the checkpoint's successor).
    pub first_available: std::sync::Arc<std::sync::atomic::AtomicI64>,
    /// Where to announce each committed batch's orders (the bills runner
    /// only), for readers waiting on read-your-writes.
    pub notices: Option<BillsNotices>,
}

/// Core NATS, and the subject the bills projection's batches are announced on
/// ([`events::notices`]).
#[derive(Clone)]
pub struct BillsNotices {
    pub nats: async_nats::Client,
    pub subject: String,
}

impl BillsNotices {
    /// A new leadership term's announcer: a fresh epoch, numbered from 1.
    fn term(&self) -> Announcer {
        let epoch = uuid::Uuid::new_v4().as_u64_pair().0;
        Announcer { notices: self.clone(), epoch, seq: 0, last_sent: None }
    }
}

/// Makes the query APIs forget the bills they hold, after a rebuild or a
/// replay changed the bills read model without announcing what: one empty
/// notice of a new epoch. Best effort; a reader that misses it still drops
/// each cached bill at its maximum age (`BILL_CACHE_MAX_AGE_MS`).
pub async fn reset_bill_readers(nats: &async_nats::Client, subject_prefix: &str) {
    let notices =
        BillsNotices { nats: nats.clone(), subject: events::notices::bills_applied_subject(subject_prefix) };
    notices.term().send(Vec::new()).await;
    if let Err(e) = nats.flush().await {
        tracing::warn!(error = %e, "could not tell the query APIs to forget their cached bills");
    }
}

/// One leadership term's announcements, numbered ([`events::notices`]), so
/// that a reader can tell a lost one from silence.
struct Announcer {
    notices: BillsNotices,
    epoch: u64,
    /// The last number sent (0 before the first notice).
    seq: u64,
    /// None until the term's first notice, which goes out at once.
    last_sent: Option<Instant>,
}

impl Announcer {
    /// Announces the orders `applied` brought to a version: best effort, a
    /// lost notice slows a waiting reader down to its fallback poll and
    /// makes the query API's bill cache start again empty.
    async fn announce<'a>(&mut self, applied: impl Iterator<Item = &'a Event>) {
        let orders = applied
            .filter(|e| matches!(e.envelope.kind.entity(), "order" | "payment"))
            .map(|e| (e.envelope.subject, e.envelope.sequence))
            .collect();
        for payload in (events::notices::BillsApplied { orders }).encode() {
            // Numbered even if it fails to go out: the gap tells the readers.
            self.seq += 1;
            self.send(payload).await;
        }
    }

    /// An empty notice repeating the last number, when nothing was sent for a heartbeat.
    async fn heartbeat(&mut self) {
        if self.last_sent.is_none_or(|at| at.elapsed() >= events::notices::HEARTBEAT) {
            self.send(Vec::new()).await;
        }
    }

    async fn send(&mut self, payload: Vec<u8>) {
        use events::notices::{EPOCH_HEADER, SEQ_HEADER};
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(EPOCH_HEADER, self.epoch.to_string().as_str());
        headers.insert(SEQ_HEADER, self.seq.to_string().as_str());
        let subject = self.notices.subject.clone();
        if let Err(e) = self.notices.nats.publish_with_headers(subject, headers, payload.into()).await {
            metrics::counter!("projection_notices_failed_total").increment(1);
            tracing::debug!(error = %e, "announcing a bills batch failed");
        }
        self.last_sent = Some(Instant::now());
    }
}

/// Why a runner stopped before shutdown.
#[derive(Debug, thiserror::Error)]
pub enum Stop {
    #[error("stalled at stream sequence {seq}: {reason}")]
    Stalled { seq: u64, reason: String },
}

impl Runner {
    /// Runs until shutdown, or until the projection stalls.
    pub async fn run(self, shutdown: Shutdown) -> Result<(), Stop> {
        let name = self.projection.name();
        metrics::gauge!("projection_stalled", "projection" => name).set(0.0);
        while !shutdown.is_triggered() {
            match self.lead(&shutdown).await {
                Ok(()) => {}
                Err(Lead::Stalled(seq, reason)) => {
                    tracing::error!(projection = name, seq, reason = %reason, "projection stalled");
                    metrics::gauge!("projection_stalled", "projection" => name).set(1.0);
                    if let Err(e) = checkpoint::stall(&self.pg, name, seq, &reason).await {
                        tracing::error!(projection = name, error = %e, "could not record the stall");
                    }
                    return Err(Stop::Stalled { seq, reason });
                }
                Err(Lead::Retry(e)) => {
                    tracing::warn!(projection = name, error = format!("{e:#}"), "projection runner retrying");
                    pause(&shutdown, Duration::from_secs(1)).await;
                }
            }
        }
        Ok(())
    }

    async fn lead(&self, shutdown: &Shutdown) -> Result<(), Lead> {
        let name = self.projection.name();
        let mut lock_conn = self.pg.acquire().await.map_err(retry)?.detach();
        loop {
            let leader: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock(hashtextextended($1, 11))")
                .bind(format!("projection:{name}"))
                .fetch_one(&mut lock_conn)
                .await
                .map_err(retry)?;
            if leader {
                break;
            }
            if pause(shutdown, Duration::from_secs(2)).await {
                return Ok(());
            }
        }
        checkpoint::clear_stall(&self.pg, name).await.map_err(retry)?;
        let consumer = self.position().await.map_err(retry)?;
        tracing::info!(projection = name, consumer = %self.consumer, "projection running");
        let mut announcer = self.notices.as_ref().map(BillsNotices::term);
        // Batches run on a connection of their own, kept from batch to batch.
        let mut held = HeldConnection::new(self.pg.clone());
        while !shutdown.is_triggered() {
            let messages = self.fetch(&consumer).await.map_err(retry)?;
            if let Some(announcer) = &mut announcer {
                announcer.heartbeat().await;
            }
            if messages.is_empty() {
                continue;
            }
            let short = messages.len() < self.batch;
            self.apply_and_ack(&mut held, messages, &mut announcer, shutdown).await?;
            if short && !self.linger.is_zero() && pause(shutdown, self.linger).await {
                break;
            }
        }
        Ok(())
    }

    /// The durable consumer, made to deliver from the checkpoint's successor.
    ///
    /// The checkpoint in PostgreSQL is the truth. When the consumer has
    /// delivered beyond it (a previous runner died holding unacknowledged
    /// events), JetStream would redeliver those only after their ack wait,
    /// behind newer ones; so the consumer is recreated, same definition,
    /// starting at the checkpoint's successor.
    async fn position(&self) -> anyhow::Result<PullConsumer> {
        let mut conn = self.pg.acquire().await?;
        let checkpoint = checkpoint::lock(&mut conn, self.projection.name()).await?;
        drop(conn);
        let stream = self.js.get_stream(&self.stream).await?;
        let mut consumer: PullConsumer = match stream.get_consumer(&self.consumer).await {
            Ok(consumer) => consumer,
            Err(missing) => return self.restore(&stream, checkpoint, missing).await,
        };
        let info = consumer.info().await?.clone();
        checkpoint::stash_consumer(&self.pg, self.projection.name(), &serde_json::to_value(&info.config)?)
            .await?;
        if info.delivered.stream_sequence as i64 <= checkpoint {
            return Ok(consumer);
        }
        stream.delete_consumer(&self.consumer).await?;
        let consumer = self.create_at(&stream, info.config.clone(), checkpoint).await?;
        metrics::counter!("projection_consumer_repositioned_total", "projection" => self.projection.name())
            .increment(1);
        tracing::info!(
            projection = self.projection.name(),
            delivered = info.delivered.stream_sequence,
            checkpoint,
            "consumer repositioned at the checkpoint"
        );
        Ok(consumer)
    }

    /// Recreates a durable consumer that is gone (a runner died between
    /// deleting and recreating it in [`Runner::position`]) from the definition
    /// stashed at the last take-over, delivering from the checkpoint's
    /// successor. Without a stash, an operator's `posctl setup` is needed.
    async fn restore(
        &self,
        stream: &jetstream::stream::Stream,
        checkpoint: i64,
        missing: impl std::fmt::Display,
    ) -> anyhow::Result<PullConsumer> {
        let Some(stashed) = checkpoint::stashed_consumer(&self.pg, self.projection.name()).await? else {
            anyhow::bail!("consumer {} (run `posctl setup`): {missing}", self.consumer);
        };
        let consumer = self.create_at(stream, serde_json::from_value(stashed)?, checkpoint).await?;
        metrics::counter!("projection_consumer_restored_total", "projection" => self.projection.name())
            .increment(1);
        tracing::warn!(
            projection = self.projection.name(),
            checkpoint,
            error = %missing,
            "consumer was missing; recreated from its stashed definition at the checkpoint"
        );
        Ok(consumer)
    }

    /// Creates the durable consumer from `config`, delivering from the
    /// checkpoint's successor (for [`Runner::position`] and [`Runner::restore`]).
    async fn create_at(
        &self,
        stream: &jetstream::stream::Stream,
        config: async_nats::jetstream::consumer::Config,
        checkpoint: i64,
    ) -> anyhow::Result<PullConsumer> {
        let mut config = pull::Config::try_from_consumer_config(config)
            .map_err(|e| anyhow::anyhow!("consumer {} config: {e}", self.consumer))?;
        config.deliver_policy = DeliverPolicy::ByStartSequence { start_sequence: (checkpoint + 1) as u64 };
        Ok(stream.create_consumer(config).await?)
    }

    /// The stream's first sequence still stored.
    async fn first_available(&self) -> anyhow::Result<i64> {
        let mut stream = self.js.get_stream(&self.stream).await?;
        Ok(stream.info().await?.state.first_sequence as i64)
    }

    async fn fetch(&self, consumer: &PullConsumer) -> anyhow::Result<Vec<jetstream::Message>> {
        let wait = fetch_expiry(self.fetch_wait, self.notices.is_some());
        let mut batch = consumer.fetch().max_messages(self.batch).expires(wait).messages().await?;
        let mut out = Vec::with_capacity(self.batch);
        while let Some(msg) = batch.next().await {
            out.push(msg.map_err(|e| anyhow::anyhow!("fetching: {e}"))?);
        }
        Ok(out)
    }

    async fn apply_and_ack(
        &self,
        held: &mut HeldConnection,
        messages: Vec<jetstream::Message>,
        announcer: &mut Option<Announcer>,
        shutdown: &Shutdown,
    ) -> Result<(), Lead> {
        let name = self.projection.name();
        let mut decoded = Vec::with_capacity(messages.len());
        let mut poison = None;
        for msg in &messages {
            let seq =
                msg.info().map_err(|e| Lead::Retry(anyhow::anyhow!("message info: {e}")))?.stream_sequence;
            match event::decode(seq, msg.headers.as_ref(), &msg.payload) {
                Ok(e) => decoded.push(e),
                Err(e) => {
                    poison = Some(e);
                    break;
                }
            }
        }
        let started = Instant::now();
        use std::sync::atomic::Ordering::Relaxed;
        let mut first_available = self.first_available.load(Relaxed);
        let mut asked = false;
        let applied = loop {
            let outcome = match held.get().await {
                Ok(conn) => {
                    let (p, schema) = (self.projection, self.projection.schema());
                    apply_batch_mode(conn, p, schema, name, &decoded, Some(first_available), Mode::Bulk).await
                }
                Err(e) => Err(BatchError::Database(e)),
            };
            if outcome.is_err() {
                held.release();
            }
            match outcome {
                Ok(outcome) => break outcome,
                Err(BatchError::Gap(e)) => return Err(Lead::Stalled(gap_seq(&e), e.to_string())),
                Err(BatchError::OutOfOrder { .. }) if !asked => {
                    // Maybe older events aged out of the stream: ask where it starts now.
                    first_available = self.first_available().await.map_err(retry)?;
                    self.first_available.store(first_available, Relaxed);
                    asked = true;
                }
                Err(BatchError::OutOfOrder { expected, got }) => {
                    // Redelivery overtook order: start again from the checkpoint.
                    return Err(Lead::Retry(anyhow::anyhow!(
                        "expected stream sequence {expected}, got {got}"
                    )));
                }
                Err(BatchError::Database(e)) => {
                    tracing::warn!(projection = name, error = %e, "applying a batch failed; retrying it");
                    if pause(shutdown, Duration::from_millis(500)).await {
                        return Ok(());
                    }
                }
            }
        };
        // One short span per applied event, continuing the command's trace.
        for e in applied.events(&decoded) {
            let span = tracing::debug_span!(
                "projection.apply",
                projection = name,
                seq = e.seq,
                correlation_id = e.envelope.correlation_id.as_deref().unwrap_or(""),
                trace_id = tracing::field::Empty,
                span_id = tracing::field::Empty
            );
            platform::trace::continue_from(&span, e.envelope.traceparent.as_deref());
            tracing::debug!(parent: &span, event = %e.envelope.kind.ce_type(), "event applied");
        }
        // Announced before the acknowledgement: what is committed is said
        // even if the acknowledgement fails and ends this term.
        if let Some(announcer) = announcer {
            announcer.announce(applied.events(&decoded)).await;
        }
        if let Some(last) = applied.last_index.and_then(|i| messages.get(i)) {
            last.ack().await.map_err(|e| Lead::Retry(anyhow::anyhow!("ack: {e}")))?;
        }
        metrics::counter!("projection_events_applied_total", "projection" => name).increment(applied.applied);
        metrics::histogram!("projection_batch_seconds", "projection" => name)
            .record(started.elapsed().as_secs_f64());
        metrics::histogram!("db_query_duration_seconds", "operation" => "projection_batch")
            .record(started.elapsed().as_secs_f64());
        metrics::gauge!("projection_checkpoint", "projection" => name).set(applied.checkpoint as f64);
        if let Some(e) = poison {
            return Err(Lead::Stalled(e.seq(), e.to_string()));
        }
        Ok(())
    }
}

/// What a committed batch did.
#[derive(Debug, Clone, Copy, Default)]
pub struct Applied {
    /// Events applied (above the old checkpoint).
    pub applied: u64,
    /// The checkpoint after the batch.
    pub checkpoint: i64,
    /// Index of the last message covered by the checkpoint (to acknowledge).
    pub last_index: Option<usize>,
}

impl Applied {
    /// The events of `batch` this commit applied: those above the old checkpoint, up to the new one.
    pub fn events<'a>(&self, batch: &'a [Event]) -> impl Iterator<Item = &'a Event> + use<'a> {
        let (from, to) = (self.checkpoint - self.applied as i64, self.checkpoint);
        batch.iter().filter(move |e| (from + 1..=to).contains(&(e.seq as i64)))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    #[error(transparent)]
    Gap(ApplyError),
    #[error("expected stream sequence {expected}, got {got}")]
    OutOfOrder { expected: i64, got: i64 },
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// Applies `events` (stream order) to `schema` event by event, with the
/// reference rules, and advances checkpoint `name`, in one transaction. `first_available` is the stream's first sequence: a
/// checkpoint below it means older events aged out, the only allowed jump.
pub async fn apply_batch(
    pg: &PgPool,
    projection: Projection,
    schema: &str,
    name: &str,
    events: &[Event],
    first_available: i64,
) -> Result<Applied, BatchError> {
    apply_batch_with(pg, projection, schema, name, events, Some(first_available)).await
}

/// As [`apply_batch`]; with `first_available: None` sequences need only
/// increase (a subject-filtered read, such as one merchant's rebuild).
pub async fn apply_batch_with(
    pg: &PgPool,
    projection: Projection,
    schema: &str,
    name: &str,
    events: &[Event],
    first_available: Option<i64>,
) -> Result<Applied, BatchError> {
    let mut conn = pg.acquire().await?;
    apply_batch_mode(&mut conn, projection, schema, name, events, first_available, Mode::OneByOne).await
}

/// How [`apply_batch_mode`] applies a batch, and commits it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Event by event, by the reference rules.
    OneByOne,
    /// The batch's events together ([`Projection::apply_many`], a few
    /// multi-row statements): the live runner.
    Bulk,
    /// As `Bulk`, into a rebuild's shadow, and committed without waiting for
    /// the WAL to reach the disk: the swap's own (waiting) commit flushes
    /// everything written before it, and a crash before the swap loses only
    /// a shadow that a new rebuild starts again from empty. It spares each
    /// batch a wait on the disk; the gain measured was within this machine's
    /// noise (`bench/NOTES.md`, step 33).
    Shadow,
}

/// As [`apply_batch_with`], in `mode`. A hole in an aggregate's versions
/// fails the whole batch in every mode, naming the same event.
pub async fn apply_batch_mode(
    conn: &mut PgConnection,
    projection: Projection,
    schema: &str,
    name: &str,
    events: &[Event],
    first_available: Option<i64>,
    mode: Mode,
) -> Result<Applied, BatchError> {
    // Session settings ride with BEGIN (one simple query, no round trip of its own).
    let unflushed = if mode == Mode::Shadow { "; SET LOCAL synchronous_commit = off" } else { "" };
    let mut tx =
        conn.begin_with(format!("BEGIN; SET LOCAL search_path TO {schema}, public{unflushed}")).await?;
    let mut checkpoint = checkpoint::lock(&mut tx, name).await?;
    let mut outcome = Applied { checkpoint, ..Applied::default() };
    let mut last_time = None;
    let mut run: Vec<&Event> = Vec::with_capacity(events.len());
    for (i, e) in events.iter().enumerate() {
        let seq = e.seq as i64;
        if seq <= checkpoint {
            outcome.last_index = Some(i);
            continue;
        }
        if let Some(first) = first_available
            && seq != (checkpoint + 1).max(first)
        {
            if outcome.applied == 0 && outcome.last_index.is_none() {
                return Err(BatchError::OutOfOrder { expected: checkpoint + 1, got: seq });
            }
            break;
        }
        run.push(e);
        checkpoint = seq;
        last_time = Some(e.envelope.time);
        outcome.applied += 1;
        outcome.last_index = Some(i);
    }
    let result = if mode != Mode::OneByOne {
        projection.apply_many(&mut tx, &run).await
    } else {
        let mut result = Ok(());
        for e in &run {
            result = projection.apply(&mut tx, e).await;
            if result.is_err() {
                break;
            }
        }
        result
    };
    match result {
        Ok(()) => {}
        Err(ApplyError::Database(db)) => return Err(BatchError::Database(db)),
        Err(gap) => return Err(BatchError::Gap(gap)),
    }
    checkpoint::advance(&mut tx, name, checkpoint, last_time).await?;
    tx.commit().await?;
    outcome.checkpoint = checkpoint;
    Ok(outcome)
}

/// How long a fetch may wait for messages: an idle runner that announces
/// must come round to its heartbeat in time (the query API's bill cache
/// stops trusting three seconds of silence), whatever `PROJECTION_FETCH_WAIT_MS`.
fn fetch_expiry(fetch_wait: Duration, announcing: bool) -> Duration {
    if announcing { fetch_wait.min(events::notices::HEARTBEAT) } else { fetch_wait }
}

fn gap_seq(e: &ApplyError) -> u64 {
    match e {
        ApplyError::Gap { seq, .. } => *seq,
        ApplyError::Database(_) => 0,
    }
}

enum Lead {
    Stalled(u64, String),
    Retry(anyhow::Error),
}

fn retry<E: Into<anyhow::Error>>(e: E) -> Lead {
    Lead::Retry(e.into())
}

async fn pause(shutdown: &Shutdown, d: Duration) -> bool {
    tokio::select! {
        _ = shutdown.wait() => true,
        _ = tokio::time::sleep(d) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_announcing_runner_never_waits_past_its_heartbeat() {
        let long = Duration::from_secs(30);
        assert_eq!(fetch_expiry(long, true), events::notices::HEARTBEAT);
        assert_eq!(fetch_expiry(long, false), long);
        let short = Duration::from_millis(200);
        assert_eq!(fetch_expiry(short, true), short);
    }
}
