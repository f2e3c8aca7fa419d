//! Group commit: terminals' order and payment commands, many per transaction.
//!
//! On this machine a command's cost is its round trips to PostgreSQL, not
//! its rows: a transaction per command (BEGIN, claim, load, write, record,
//! COMMIT) is what caps throughput at the database's per-transaction ceiling.
//! So handlers do no I/O of their own here: they describe the command as
//! data ([`Job`]) and hand it to a lane. A lane takes whatever jobs are
//! waiting (at most `batch_max`), and runs them as one transaction of five
//! statements whatever their number ([`batch`]): claim every key (and read
//! the stores' settings), load every order, decide each command in memory
//! in arrival order, write every row, commit. Under light load a batch holds
//! one job and costs what a lone transaction did; under heavy load batches
//! grow, and the cost per command falls with them.
//!
//! One bad command never fails the others: refusals (invalid fields, rule
//! violations, unknown orders, keys in flight) are decided in memory and
//! answered alone. A batch whose write fails (a duplicate id, an order
//! changed by another process, a twin's key) rolls back whole, and its jobs
//! run again one per transaction, in arrival order, where the failure is the
//! failing job's own answer. Nothing is answered before its transaction
//! committed. A panic in a command's code fails its batch (500), not its lane.
//!
//! Lanes are chosen by device, so one terminal's commands stay in order in
//! one lane; lanes run in parallel on their own connections.

mod batch;

use std::sync::Arc;

use chrono::Utc;
use futures_util::FutureExt;
use sqlx::PgPool;
use std::panic::AssertUnwindSafe;
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use crate::domain::{At, Command, Order};
use crate::http::ApiError;
use crate::http::idempotency::Recorded;
use crate::store::orders::{Find, Scope};
use crate::store::outbox;
use crate::store::stores::StoreContext;
use crate::wake::OutboxWake;
use platform::connect::HeldConnection;

pub use batch::Changed;

/// Builds a new order from the store's settings at an instant: pricing and
/// validation, pure. An `Err` is answered as is and records nothing.
pub type Build = Arc<dyn Fn(&StoreContext, At) -> Result<NewOrder, ApiError> + Send + Sync>;

/// Builds the answer from what the command did: pure.
pub type Respond = Arc<dyn Fn(&Changed) -> Result<crate::commands::Success, ApiError> + Send + Sync>;

/// A new order and its contacts, before it is stored.
pub struct NewOrder {
    pub order: Order,
    pub events: Vec<events::DomainEvent>,
    pub customer: Option<serde_json::Value>,
}

/// What a command does, as data, so that a lane can decide it (and decide it
/// again, alone, when its batch rolls back).
#[derive(Clone)]
pub enum Work {
    Create(Build),
    Change { find: Find, command: Command },
}

/// A terminal's command waiting for its lane.
#[derive(Clone)]
pub struct Job {
    pub scope: Scope,
    /// The idempotency scope and key, and the request's fingerprint.
    pub caller: String,
    pub key: String,
    pub fingerprint: [u8; 32],
    pub work: Work,
    pub respond: Respond,
    /// Carried into the command's outbox rows.
    pub context: outbox::Context,
}

/// How a job ended, once its transaction committed (or it was refused).
#[derive(Debug)]
pub enum Reply {
    /// This request ran: its recorded answer (a success or a rule violation).
    Ran(Recorded),
    /// The key was completed earlier: that answer, for the caller to replay
    /// (or refuse, if the body differs).
    Replay(Recorded),
}

struct Pending {
    job: Job,
    reply: oneshot::Sender<Result<Reply, ApiError>>,
}

#[derive(Debug, Clone)]
pub struct CommitConfig {
    /// Lanes: transactions in flight at once (`COMMIT_LANES`).
    pub lanes: usize,
    /// Most jobs in one transaction (`COMMIT_BATCH_MAX`).
    pub batch_max: usize,
}

impl Default for CommitConfig {
    /// A lane per core (at least two): on two cores, two lanes carried 1,400
    /// ops/s with p99 120 ms where four gave 690 ms and eight missed the SLO
    /// (more transactions in flight only contend); one lane serializes too much.
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        Self { lanes: cores.max(2), batch_max: 64 }
    }
}

/// The lanes' entrance. Cheap to clone.
#[derive(Clone)]
pub struct Committer {
    lanes: Arc<Vec<mpsc::Sender<Pending>>>,
}

impl Committer {
    /// Starts `cfg.lanes` lanes on `pg`; they end when every clone is dropped,
    /// after finishing what they hold.
    pub fn start(pg: PgPool, subject_prefix: String, wake: OutboxWake, cfg: &CommitConfig) -> Self {
        let lanes = (0..cfg.lanes.max(1))
            .map(|_| {
                let (tx, rx) = mpsc::channel(cfg.batch_max.max(1) * 4);
                let lane = Lane {
                    pg: HeldConnection::new(pg.clone()),
                    prefix: subject_prefix.clone(),
                    wake: wake.clone(),
                };
                tokio::spawn(lane.run(cfg.batch_max.max(1), rx));
                tx
            })
            .collect();
        Self { lanes: Arc::new(lanes) }
    }

    /// Runs `job` in its device's lane and waits for its committed answer.
    pub async fn submit(&self, job: Job) -> Result<Reply, ApiError> {
        let lane = &self.lanes[lane_of(job.scope.device_id, self.lanes.len())];
        let (reply, answer) = oneshot::channel();
        lane.send(Pending { job, reply }).await.map_err(|_| ApiError::Unavailable("command lanes"))?;
        answer.await.map_err(|_| ApiError::Unavailable("command lanes"))?
    }
}

fn lane_of(device: Uuid, lanes: usize) -> usize {
    (device.as_u64_pair().1 % lanes as u64) as usize
}

/// One lane: its batches run one after another, on one connection at a time.
struct Lane {
    /// The lane's own connection, kept from batch to batch.
    pg: HeldConnection,
    prefix: String,
    wake: OutboxWake,
}

impl Lane {
    async fn run(mut self, batch_max: usize, mut rx: mpsc::Receiver<Pending>) {
        let mut pending: Vec<Pending> = Vec::with_capacity(batch_max);
        while rx.recv_many(&mut pending, batch_max).await > 0 {
            // A caller that gave up (timed out, disconnected) is not waited for:
            // its command never starts, and a retry under its key runs it.
            let (jobs, replies): (Vec<Job>, Vec<_>) = std::mem::take(&mut pending)
                .into_iter()
                .filter(|p| !p.reply.is_closed())
                .map(|p| (p.job, p.reply))
                .unzip();
            if jobs.is_empty() {
                continue;
            }
            let n = jobs.len();
            metrics::histogram!("command_batch_size").record(n as f64);
            // A panic in a command's code fails its batch, not the lane.
            let answers = AssertUnwindSafe(run_on(&mut self.pg, &self.prefix, &self.wake, jobs))
                .catch_unwind()
                .await
                .unwrap_or_else(|_| {
                    tracing::error!(jobs = n, "a command panicked; its batch is answered 500");
                    // Its transaction was dropped, not ended: start again on a fresh session.
                    self.pg.release();
                    (0..n).map(|_| Err(ApiError::Internal(anyhow::anyhow!("a command panicked")))).collect()
                });
            for (reply, answer) in replies.into_iter().zip(answers) {
                let _ = reply.send(answer);
            }
        }
    }
}

/// Runs `jobs` as one transaction; if it rolls back, each job in a
/// transaction of its own, one after another in arrival order (so two jobs
/// on one order still see each other), where whatever fails is that job's
/// own answer. The answers are in the order of `jobs`.
pub async fn run(
    pg: &PgPool,
    prefix: &str,
    wake: &OutboxWake,
    jobs: Vec<Job>,
) -> Vec<Result<Reply, ApiError>> {
    run_on(&mut HeldConnection::new(pg.clone()), prefix, wake, jobs).await
}

/// As [`run`], on a lane's connection.
async fn run_on(
    pg: &mut HeldConnection,
    prefix: &str,
    wake: &OutboxWake,
    jobs: Vec<Job>,
) -> Vec<Result<Reply, ApiError>> {
    let started = std::time::Instant::now();
    let outcome = run_batch(pg, prefix, &jobs).await;
    metrics::histogram!("db_query_duration_seconds", "operation" => "command_transaction")
        .record(started.elapsed().as_secs_f64());
    let answers = match outcome {
        Ok(answers) => answers,
        Err(e) if jobs.len() > 1 => {
            metrics::counter!("command_batch_fallbacks_total").increment(1);
            tracing::debug!(error = %e, jobs = jobs.len(), "batch rolled back; running its jobs one by one");
            let mut answers = Vec::with_capacity(jobs.len());
            for job in jobs {
                answers.push(match run_batch(pg, prefix, std::slice::from_ref(&job)).await {
                    Ok(mut one) => one.pop().unwrap_or(Err(ApiError::Unavailable("command lanes"))),
                    Err(e) => Err(e.into_api_error()),
                });
            }
            answers
        }
        Err(e) => vec![Err(e.into_api_error())],
    };
    wake.committed();
    answers
}

/// One transaction of `jobs` on the lane's connection, which goes back to the
/// pool if the transaction failed (see [`HeldConnection::release`]).
async fn run_batch(
    pg: &mut HeldConnection,
    prefix: &str,
    jobs: &[Job],
) -> Result<Vec<Result<Reply, ApiError>>, batch::Failed> {
    let conn = pg.get().await?;
    let outcome = batch::run(conn, prefix, jobs, Utc::now()).await;
    if outcome.is_err() {
        pg.release();
    }
    outcome
}
