//! The outbox relay: committed events to JetStream, in order, exactly once.
//!
//! Lifecycle: one relay per database publishes at a time (a session advisory
//! lock elects it; the others wait as hot standbys). The leader wakes when a
//! command of its own process commits, on an `outbox` NOTIFY (coalesced, from
//! other processes; see [`crate::wake`]), or every poll interval, reads unpublished
//! rows in id order, publishes them pipelined (all sent, then every PubAck
//! awaited in order), and deletes the acknowledged prefix: the outbox holds
//! only what is still to publish, the stream is the record of the rest.
//!
//! Guarantees:
//! - *No loss*: a row is deleted only after JetStream acknowledged storing it.
//!   While NATS is down rows wait; commands keep being accepted.
//! - *No duplicates*: `Nats-Msg-Id` is the event id, so a relay that dies
//!   between publish and delete republishes into the stream's duplicate window
//!   and JetStream drops the copy; consumers can also dedupe on `ce-id`.
//! - *Order per aggregate*: outbox ids follow commit order per order (the
//!   command locks its order row before appending), rows are published in id
//!   order over one connection, and on the first failed ack the rest of the
//!   batch is retried from that row.

use async_nats::HeaderMap;
use async_nats::jetstream::{self, message::PublishMessage};
use backon::{BackoffBuilder, ExponentialBuilder};
use bytes::Bytes;
use sqlx::postgres::PgListener;
use sqlx::types::Json;
use sqlx::{Connection, PgConnection, PgPool};
use std::time::{Duration, Instant};

use crate::config::RelayConfig;
use events::DomainEvent;
use platform::Shutdown;

/// Key of the advisory lock that elects the publishing relay.
const LEADER_LOCK: i64 = 0x534d_4152_5450_4f53; // "SMARTPOS"

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct OutboxRow {
    pub id: i64,
    pub event_id: uuid::Uuid,
    pub subject: String,
    /// Binary-mode CloudEvents headers, as `[name, value]` pairs.
    pub headers: Json<Vec<(String, String)>>,
    pub payload: Vec<u8>,
}

#[derive(Clone)]
pub struct Relay {
    pg: PgPool,
    js: jetstream::Context,
    cfg: RelayConfig,
    wake: crate::wake::OutboxWake,
}

impl Relay {
    pub fn new(pg: PgPool, js: jetstream::Context, cfg: RelayConfig) -> Self {
        Self { pg, js, cfg, wake: crate::wake::OutboxWake::default() }
    }

    /// Wakes on this process's commits (see [`crate::wake`]).
    pub fn with_wake(mut self, wake: crate::wake::OutboxWake) -> Self {
        self.wake = wake;
        self
    }

    /// Runs until `shutdown`: waits for leadership, then drains the outbox.
    pub async fn run(self, shutdown: Shutdown) {
        while !shutdown.is_triggered() {
            match self.lead(&shutdown).await {
                Ok(()) => {}
                Err(e) => {
                    tracing::warn!(error = format!("{e:#}"), "relay lost its footing; retrying");
                    pause(&shutdown, Duration::from_secs(1)).await;
                }
            }
        }
        tracing::info!("relay stopped");
    }

    async fn lead(&self, shutdown: &Shutdown) -> anyhow::Result<()> {
        let mut lock_conn = self.pg.acquire().await?.detach();
        loop {
            let leader: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
                .bind(LEADER_LOCK)
                .fetch_one(&mut lock_conn)
                .await?;
            if leader {
                break;
            }
            if pause(shutdown, Duration::from_secs(2)).await {
                return Ok(());
            }
        }
        tracing::info!("relay is the leader");
        let mut listener = PgListener::connect_with(&self.pg).await?;
        listener.listen("outbox").await?;
        self.wake.set_leading(true);
        let result = self.drain(shutdown, &mut lock_conn, &mut listener).await;
        self.wake.set_leading(false);
        result
    }

    /// Publishes until `shutdown`, woken by commits, NOTIFY or the poll interval.
    async fn drain(
        &self,
        shutdown: &Shutdown,
        lock_conn: &mut sqlx::PgConnection,
        listener: &mut PgListener,
    ) -> anyhow::Result<()> {
        let mut backoff = new_backoff();
        // Every round runs on the session that holds the lock, at least once
        // per poll interval: a broken session fails the round, which then
        // finds the lock lost (below) and leads again from a new session.
        while !shutdown.is_triggered() {
            match self.drain_once(lock_conn).await {
                Ok(n) => {
                    backoff = new_backoff();
                    if n as i64 >= self.cfg.batch {
                        continue;
                    }
                }
                Err(e) => {
                    let delay = backoff.next().unwrap_or(Duration::from_secs(5));
                    metrics::counter!("relay_publish_failures_total").increment(1);
                    tracing::warn!(
                        error = format!("{e:#}"),
                        retry_in_ms = delay.as_millis() as u64,
                        "relay round failed"
                    );
                    pause(shutdown, delay).await;
                    // A broken session has lost the lock: lead again from a new one.
                    keep_lock(lock_conn).await?;
                    continue;
                }
            }
            let woken = tokio::select! {
                _ = shutdown.wait() => false,
                _ = tokio::time::sleep(self.cfg.poll_interval) => false,
                _ = self.wake.local() => true,
                n = listener.recv() => { n?; true }
            };
            if woken && !self.cfg.linger.is_zero() {
                pause(shutdown, self.cfg.linger).await;
            }
        }
        Ok(())
    }

    /// Publishes one batch and deletes what was stored; returns how many rows it published.
    ///
    /// The leader runs its rounds on the session that holds its lock, rather
    /// than taking a connection from the pool for each statement: sqlx tests
    /// every connection given back with a round trip of its own
    /// (`bench/NOTES.md`, step 50).
    pub async fn drain_once(&self, conn: &mut PgConnection) -> anyhow::Result<usize> {
        let rows = self.fetch(conn).await?;
        if rows.is_empty() {
            return Ok(0);
        }
        let (acked, failure) = self.publish(&rows).await;
        self.delete_published(conn, &acked).await?;
        match failure {
            Some(e) => Err(e),
            None => Ok(acked.len()),
        }
    }

    /// The next unpublished rows, oldest first.
    pub async fn fetch(&self, conn: &mut PgConnection) -> anyhow::Result<Vec<OutboxRow>> {
        let started = Instant::now();
        let rows = sqlx::query_as::<_, OutboxRow>(
            "SELECT id, event_id, subject, headers, payload FROM outbox ORDER BY id LIMIT $1",
        )
        .bind(self.cfg.batch)
        .fetch_all(conn)
        .await?;
        metrics::histogram!("db_query_duration_seconds", "operation" => "outbox_fetch")
            .record(started.elapsed().as_secs_f64());
        Ok(rows)
    }

    /// Sends every row, then awaits every PubAck in order. Returns the ids of
    /// the acknowledged prefix and the first failure, if any.
    pub async fn publish(&self, rows: &[OutboxRow]) -> (Vec<i64>, Option<anyhow::Error>) {
        let started = Instant::now();
        let mut pending = Vec::with_capacity(rows.len());
        let mut failure = None;
        for row in rows {
            let message = PublishMessage::build()
                .headers(header_map(&row.headers.0))
                .message_id(row.event_id.to_string())
                .payload(Bytes::from(row.payload.clone()));
            match self.js.send_publish(row.subject.clone(), message).await {
                Ok(ack) => pending.push((row.id, ack)),
                Err(e) => {
                    failure = Some(anyhow::Error::new(e).context("sending to JetStream"));
                    break;
                }
            }
        }
        let mut acked = Vec::with_capacity(pending.len());
        for (id, ack) in pending {
            match ack.await {
                Ok(ack) => {
                    if ack.duplicate {
                        metrics::counter!("relay_duplicates_suppressed_total").increment(1);
                    }
                    acked.push(id);
                }
                Err(e) => {
                    failure = Some(anyhow::Error::new(e).context("awaiting a PubAck"));
                    break;
                }
            }
        }
        metrics::counter!("relay_published_total").increment(acked.len() as u64);
        // The acknowledged rows are a prefix of `rows`.
        count_payments(rows.iter().take(acked.len()));
        metrics::histogram!("relay_publish_batch_seconds").record(started.elapsed().as_secs_f64());
        (acked, failure)
    }

    /// Removes rows JetStream acknowledged storing.
    pub async fn delete_published(&self, conn: &mut PgConnection, ids: &[i64]) -> anyhow::Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        sqlx::query("DELETE FROM outbox WHERE id = ANY($1)").bind(ids).execute(conn).await?;
        Ok(())
    }
}

/// The rows still to publish and the age of the oldest, in seconds (the
/// relay deletes each row once it is stored, so the whole outbox is backlog).
pub async fn backlog(pg: &PgPool) -> sqlx::Result<(i64, Option<f64>)> {
    sqlx::query_as("SELECT count(*), extract(epoch FROM now() - min(created_at))::float8 FROM outbox")
        .fetch_one(pg)
        .await
}

/// `payments_total{payment_method,status}` and `payment_amount_total{currency}` from
/// the payment events just stored: counted once each, when they are published.
fn count_payments<'a>(rows: impl Iterator<Item = &'a OutboxRow>) {
    use events::DomainEvent as E;
    for row in rows {
        let Some((_, ty)) = row.headers.0.iter().find(|(k, _)| k == "ce-type") else { continue };
        if !ty.starts_with("com.smartpos.payment.") {
            continue;
        }
        let (method, status) = match DomainEvent::from_data(ty, &row.payload) {
            Ok(E::PaymentCreated(e)) => (e.method, "pending"),
            Ok(E::PaymentAuthorized(e)) => (e.method, "authorized"),
            Ok(E::PaymentCaptured(e)) => {
                metrics::counter!("payment_amount_total", "currency" => e.currency.code())
                    .increment(e.amount as u64);
                (e.method, "captured")
            }
            Ok(E::PaymentFailed(e)) => (e.method, "failed"),
            Ok(E::PaymentVoided(e)) => (e.method, "voided"),
            Ok(E::PaymentRefunded(e)) => (e.method, "refunded"),
            _ => continue,
        };
        metrics::counter!("payments_total", "payment_method" => method.as_str(), "status" => status)
            .increment(1);
    }
}

fn header_map(headers: &[(String, String)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in headers {
        // Values were percent-encoded when written; parse anyway, never panic.
        match value.parse::<async_nats::HeaderValue>() {
            Ok(v) => map.insert(name.as_str(), v),
            Err(_) => tracing::warn!(header = %name, "skipping an unencodable header"),
        }
    }
    map
}

fn new_backoff() -> impl Iterator<Item = Duration> {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(100))
        .with_max_delay(Duration::from_secs(5))
        .with_jitter()
        .without_max_times()
        .build()
}

/// Checks the leader's lock connection is alive (its loss releases the lock).
async fn keep_lock(conn: &mut PgConnection) -> anyhow::Result<()> {
    conn.ping().await?;
    Ok(())
}

/// Sleeps for `d` or until shutdown; true if shutdown came first.
async fn pause(shutdown: &Shutdown, d: Duration) -> bool {
    tokio::select! {
        _ = shutdown.wait() => true,
        _ = tokio::time::sleep(d) => false,
    }
}
