//! The one job mechanism every kind shares: fetch, run once, retry or dead-letter.
//!
//! Per message:
//! 1. a job whose id is in `job_runs` already happened: acknowledge, done;
//! 2. a job delivered more often than the policy allows (the worker kept
//!    dying on it) goes straight to the dead letters;
//! 3. otherwise the handler runs while a ticker sends in-progress acks, so a
//!    slow job is not redelivered to another worker meanwhile;
//! 4. success is recorded in `job_runs`, then acknowledged. A worker killed
//!    before that leaves the message to be redelivered: handlers make their
//!    effects idempotent (per-channel delivery records, provider idempotency
//!    keys), so the effect still happens once;
//! 5. a transient failure is NAKed with an exponential, jittered delay; a
//!    permanent one, or the last attempt's, is copied to the dead-letter
//!    stream (PubAck awaited) and only then terminated.

use async_nats::jetstream::{self, AckKind, consumer::PullConsumer};
use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use sqlx::PgPool;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::Instrument;
use uuid::Uuid;

use crate::config::RetryPolicy;
use crate::dead_letters;
use events::subjects::WorkKind;
use platform::Shutdown;

/// How a job failed, which decides what happens next.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// Worth retrying: a provider or dependency is briefly unavailable.
    #[error("transient: {0:#}")]
    Transient(anyhow::Error),
    /// Retrying cannot help: bad payload, rejected recipient, missing data.
    #[error("permanent: {0:#}")]
    Permanent(anyhow::Error),
}

/// One delivery of a work item.
#[derive(Debug, Clone)]
pub struct Job {
    pub kind: WorkKind,
    pub job_id: Uuid,
    pub subject: String,
    pub stream_seq: u64,
    /// 1 for the first delivery.
    pub attempt: u32,
    pub payload: bytes::Bytes,
}

/// What a job kind does.
pub trait Handler: Send + Sync + 'static {
    fn kind(&self) -> WorkKind;
    fn handle<'a>(&'a self, job: &'a Job) -> BoxFuture<'a, Result<(), JobError>>;
}

#[derive(Clone)]
pub struct Runtime {
    pub pg: PgPool,
    pub js: jetstream::Context,
    pub retry: RetryPolicy,
    pub stream_prefix: String,
    pub subject_prefix: String,
}

/// The delay before attempt `attempt + 1`: doubling from `first_delay`,
/// capped at `max_delay`, with up to 25% random jitter.
pub fn backoff(policy: &RetryPolicy, attempt: u32) -> Duration {
    let exp = policy.first_delay.saturating_mul(1u32 << attempt.saturating_sub(1).min(16));
    let capped = exp.min(policy.max_delay);
    let jitter = capped.mul_f64(0.25 * (Uuid::new_v4().as_u128() % 1000) as f64 / 1000.0);
    capped + jitter
}

impl Runtime {
    pub fn stream(&self, kind: WorkKind) -> String {
        format!("{}_WORK_{}", self.stream_prefix, kind.token().to_uppercase())
    }

    pub fn consumer(&self, kind: WorkKind) -> String {
        format!("{}_WORKER_{}", self.stream_prefix, kind.token().to_uppercase())
    }

    /// Runs `handler`'s consumer until shutdown.
    pub async fn run(self, handler: Arc<dyn Handler>, shutdown: Shutdown) {
        let kind = handler.kind();
        while !shutdown.is_triggered() {
            if let Err(e) = self.consume(handler.as_ref(), &shutdown).await {
                tracing::warn!(kind = kind.token(), error = format!("{e:#}"), "worker consumer restarting");
                tokio::select! {
                    _ = shutdown.wait() => {}
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        }
    }

    async fn consume(&self, handler: &dyn Handler, shutdown: &Shutdown) -> anyhow::Result<()> {
        let kind = handler.kind();
        let consumer: PullConsumer = self
            .js
            .get_stream(self.stream(kind))
            .await?
            .get_consumer(&self.consumer(kind))
            .await
            .map_err(|e| anyhow::anyhow!("consumer {} (run `posctl setup`): {e}", self.consumer(kind)))?;
        let ack_wait = consumer.cached_info().config.ack_wait;
        tracing::info!(kind = kind.token(), "worker consuming");
        while !shutdown.is_triggered() {
            // Small batches: each message's ack wait starts when it is fetched.
            let mut batch =
                consumer.fetch().max_messages(4).expires(Duration::from_millis(500)).messages().await?;
            while let Some(msg) = batch.next().await {
                let msg = msg.map_err(|e| anyhow::anyhow!("fetching: {e}"))?;
                self.process(handler, &msg, ack_wait).await?;
            }
        }
        Ok(())
    }

    async fn process(
        &self,
        handler: &dyn Handler,
        msg: &jetstream::Message,
        ack_wait: Duration,
    ) -> anyhow::Result<()> {
        let kind = handler.kind();
        let info = msg.info().map_err(|e| anyhow::anyhow!("message info: {e}"))?;
        let attempt = u32::try_from(info.delivered).unwrap_or(u32::MAX);
        let stream_seq = info.stream_sequence;
        let job_id = msg
            .headers
            .as_ref()
            .and_then(|h| h.get(events::work::JOB_ID))
            .and_then(|v| Uuid::parse_str(v.as_str()).ok());
        let Some(job_id) = job_id else {
            return self.dead_letter(kind, msg, attempt, "the work item has no valid job-id header").await;
        };
        if self.done(job_id).await? {
            msg.ack().await.map_err(|e| anyhow::anyhow!("ack: {e}"))?;
            metrics::counter!("job_duplicates_skipped_total", "kind" => kind.token()).increment(1);
            return Ok(());
        }
        if attempt > self.retry.max_attempts {
            let reason = format!("delivered {attempt} times without completing (the worker kept stopping)");
            return self.dead_letter(kind, msg, attempt, &reason).await;
        }
        if attempt > 1 {
            metrics::counter!("job_redeliveries_total", "kind" => kind.token()).increment(1);
        }
        let job = Job {
            kind,
            job_id,
            subject: msg.subject.to_string(),
            stream_seq,
            attempt,
            payload: msg.payload.clone(),
        };
        let correlation = msg
            .headers
            .as_ref()
            .and_then(|h| h.get(platform::correlation::WORK_HEADER))
            .map(|v| v.as_str().to_owned())
            .unwrap_or_default();
        let span = tracing::info_span!("job", kind = kind.token(), job_id = %job_id, attempt, correlation_id = %correlation,
            trace_id = tracing::field::Empty, span_id = tracing::field::Empty);
        let traceparent =
            msg.headers.as_ref().and_then(|h| h.get("traceparent")).map(|v| v.as_str().to_owned());
        platform::trace::continue_from(&span, traceparent.as_deref());
        let started = Instant::now();
        let result = keep_alive(msg, ack_wait, handler.handle(&job)).instrument(span.clone()).await;
        metrics::histogram!("job_duration_seconds", "kind" => kind.token())
            .record(started.elapsed().as_secs_f64());
        match result {
            Ok(()) => {
                self.record(&job).await?;
                msg.ack().await.map_err(|e| anyhow::anyhow!("ack: {e}"))?;
                metrics::counter!("job_outcomes_total", "kind" => kind.token(), "outcome" => "succeeded")
                    .increment(1);
                tracing::info!(parent: &span, "job succeeded");
                Ok(())
            }
            Err(JobError::Transient(e)) if attempt < self.retry.max_attempts => {
                let delay = backoff(&self.retry, attempt);
                metrics::counter!("job_outcomes_total", "kind" => kind.token(), "outcome" => "retried")
                    .increment(1);
                tracing::warn!(parent: &span, retry_in_ms = delay.as_millis() as u64,
                    error = format!("{e:#}"), "job failed; will retry");
                msg.ack_with(AckKind::Nak(Some(delay))).await.map_err(|e| anyhow::anyhow!("nak: {e}"))?;
                Ok(())
            }
            Err(e) => self.dead_letter(kind, msg, attempt, &e.to_string()).await,
        }
    }

    async fn dead_letter(
        &self,
        kind: WorkKind,
        msg: &jetstream::Message,
        attempt: u32,
        error: &str,
    ) -> anyhow::Result<()> {
        dead_letters::park(&self.js, &self.subject_prefix, &self.stream(kind), kind, msg, attempt, error)
            .await?;
        // Only once the copy is stored: in a work queue a Term removes the message.
        msg.ack_with(AckKind::Term).await.map_err(|e| anyhow::anyhow!("term: {e}"))?;
        metrics::counter!("job_outcomes_total", "kind" => kind.token(), "outcome" => "dead_lettered")
            .increment(1);
        metrics::counter!("dead_letters_total", "kind" => kind.token()).increment(1);
        tracing::error!(kind = kind.token(), attempt, error, "job dead-lettered");
        Ok(())
    }

    async fn done(&self, job_id: Uuid) -> anyhow::Result<bool> {
        Ok(sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM job_runs WHERE job_id = $1)")
            .bind(job_id)
            .fetch_one(&self.pg)
            .await?)
    }

    async fn record(&self, job: &Job) -> anyhow::Result<()> {
        sqlx::query(
            "INSERT INTO job_runs (job_id, kind, attempts) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
        )
        .bind(job.job_id)
        .bind(job.kind.token())
        .bind(job.attempt as i32)
        .execute(&self.pg)
        .await?;
        Ok(())
    }
}

/// Runs `work`, telling JetStream every third of the ack wait that it is still in progress.
async fn keep_alive<T>(msg: &jetstream::Message, ack_wait: Duration, work: BoxFuture<'_, T>) -> T {
    let every = (ack_wait / 3).max(Duration::from_millis(100));
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    tokio::pin!(work);
    loop {
        tokio::select! {
            result = &mut work => return result,
            _ = tick.tick() => {
                if let Err(e) = msg.ack_with(AckKind::Progress).await {
                    tracing::warn!(error = %e, "in-progress ack failed");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_is_capped_and_jittered_upwards_only() {
        let p = RetryPolicy {
            max_attempts: 6,
            first_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(1_000),
        };
        for (attempt, base) in [(1, 100), (2, 200), (3, 400), (4, 800), (5, 1_000), (9, 1_000)] {
            let d = backoff(&p, attempt).as_millis();
            assert!((base..=base * 5 / 4).contains(&d), "attempt {attempt}: {d} ms");
        }
    }
}
