//! One batch of jobs: five statements, however many jobs.
//!
//! BEGIN; claim every key and read every store's settings; load every order
//! the changes name; decide each job in memory, in arrival order, on the
//! batch's own view of each order (so two jobs on one order see each other);
//! write every row in one statement; COMMIT. Refusals decided in memory are
//! answered without touching the others; anything the write or the commit
//! refuses fails the batch ([`Failed`]), which the lane runs again job by job.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use events::DomainEvent;
use sqlx::{Connection, PgConnection};
use uuid::Uuid;

use super::{Job, Reply, Work};
use crate::domain::Order;
use crate::http::ApiError;
use crate::http::idempotency::{Claim, ClaimRequest, Recorded, claim_many};
use crate::store::orders::{self, Find, KeyRow, Scope, Touched, WriteError};
use crate::store::outbox::{Context, Rows};

/// What a command did to its order: what its answer is built from.
pub struct Changed {
    /// `None` for a new order.
    pub before: Option<Order>,
    pub after: Order,
}

/// Why a batch rolled back. Run alone, this is the job's own answer.
#[derive(Debug, thiserror::Error)]
pub enum Failed {
    #[error("an order changed concurrently")]
    Conflict,
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    #[error("{0}")]
    Api(ApiError),
}

impl Failed {
    /// The answer for a job that failed in a transaction of its own.
    pub fn into_api_error(self) -> ApiError {
        match self {
            Self::Conflict => ApiError::ConcurrentChange("order"),
            Self::Database(e) => match e.as_database_error().and_then(|db| db.constraint()) {
                Some("orders_pkey") => ApiError::AlreadyExists("order"),
                Some("payments_pkey") => ApiError::AlreadyExists("payment"),
                Some("refunds_pkey") => ApiError::AlreadyExists("refund"),
                // A twin with the same key committed while this one ran.
                Some("idempotency_keys_pkey") => ApiError::IdempotencyKeyInFlight,
                _ => e.into(),
            },
            Self::Api(e) => e,
        }
    }
}

impl From<WriteError> for Failed {
    fn from(e: WriteError) -> Self {
        match e {
            WriteError::Conflict => Self::Conflict,
            WriteError::Database(db) => Self::Database(db),
        }
    }
}

/// The batch's state while it decides: every order it touched, every row it will write.
#[derive(Default)]
struct Draft {
    touched: Vec<Touched>,
    by_order: HashMap<Uuid, usize>,
    outbox: Rows,
    keys: Vec<KeyRow>,
}

/// Runs `jobs` as one transaction at `now`: an answer per job, or why the
/// whole batch rolled back.
///
/// The rollback is awaited, not left to the dropped transaction: until it
/// has happened the batch's advisory locks are held, and the jobs run again
/// alone would find their own keys "in flight".
pub async fn run(
    conn: &mut PgConnection,
    prefix: &str,
    jobs: &[Job],
    now: DateTime<Utc>,
) -> Result<Vec<Result<Reply, ApiError>>, Failed> {
    let mut tx = conn.begin().await?;
    match decide_and_write(&mut tx, prefix, jobs, now).await {
        Ok((answers, true)) => {
            tx.commit().await?;
            Ok(answers)
        }
        Ok((answers, false)) => {
            tx.rollback().await?;
            Ok(answers)
        }
        Err(e) => {
            if let Err(rollback) = tx.rollback().await {
                tracing::warn!(error = %rollback, "rolling back a failed batch");
            }
            Err(e)
        }
    }
}

/// Everything but the transaction's end: the answers, and whether anything was written.
async fn decide_and_write(
    tx: &mut sqlx::PgConnection,
    prefix: &str,
    jobs: &[Job],
    now: DateTime<Utc>,
) -> Result<(Vec<Result<Reply, ApiError>>, bool), Failed> {
    let mut answers: Vec<Option<Result<Reply, ApiError>>> = jobs.iter().map(|_| None).collect();

    // Claim every key. The same key twice in one batch: the later one is in flight.
    let requests: Vec<ClaimRequest> = jobs
        .iter()
        .map(|j| ClaimRequest {
            scope: &j.caller,
            key: &j.key,
            store: Some((j.scope.merchant_id, j.scope.store_id)),
        })
        .collect();
    let claimed = claim_many(&mut *tx, &requests).await.map_err(Failed::Api)?;
    let mut seen = HashSet::new();
    let mut fresh = Vec::with_capacity(jobs.len());
    for (i, (job, c)) in jobs.iter().zip(claimed).enumerate() {
        answers[i] = match (seen.insert((&job.caller, &job.key)) && !c.in_flight, c.claim, c.store) {
            (false, _, _) => Some(Err(ApiError::IdempotencyKeyInFlight)),
            (true, Claim::Done(recorded), _) => Some(Ok(Reply::Replay(recorded))),
            (true, Claim::Fresh, None) => Some(Err(ApiError::Forbidden)),
            (true, Claim::Fresh, Some(store)) => {
                fresh.push((i, store));
                None
            }
        };
    }

    // Load every order the changes name, in one query.
    let finds: Vec<(Scope, Find)> = fresh
        .iter()
        .filter_map(|(i, _)| match &jobs[*i].work {
            Work::Change { find, .. } => Some((jobs[*i].scope, *find)),
            Work::Create(_) => None,
        })
        .collect();
    let mut loaded =
        orders::load_many(&mut *tx, &finds).await.map_err(|e| Failed::Api(e.into()))?.into_iter();

    // Decide each job in arrival order.
    let mut draft = Draft::default();
    for (i, store) in fresh {
        let job = &jobs[i];
        let at = store.at(now);
        let changed = match &job.work {
            Work::Create(build) => match build(&store, at) {
                Ok(new) => draft.create(prefix, job, new, now),
                Err(e) => Err(e),
            },
            Work::Change { find, command } => {
                let row = loaded.next().flatten();
                draft.change(prefix, job, *find, row, command, at)
            }
        };
        let (status, body) = match changed {
            Ok(changed) => {
                let success = (job.respond)(&changed).map_err(Failed::Api)?;
                (success.status, success.body)
            }
            // A rule violation is this command's answer: recorded, so a retry gets it too.
            Err(rule @ ApiError::Rule(_)) => (rule.status(), rule.body()),
            // Something broke half-way: the batch's draft cannot be trusted.
            Err(broken @ ApiError::Internal(_)) => return Err(Failed::Api(broken)),
            // Anything else refused it before it started: not recorded.
            Err(refused) => {
                answers[i] = Some(Err(refused));
                continue;
            }
        };
        let recorded = Recorded { request_hash: job.fingerprint.to_vec(), status: status.as_u16(), body };
        draft.keys.push(KeyRow {
            caller: job.caller.clone(),
            key: job.key.clone(),
            request_hash: recorded.request_hash.clone(),
            status: i16::try_from(recorded.status).unwrap_or(500),
            body: recorded.body.clone(),
        });
        answers[i] = Some(Ok(Reply::Ran(recorded)));
    }

    let wrote = !draft.keys.is_empty();
    if wrote {
        orders::write(&mut *tx, &draft.touched, &draft.outbox, &draft.keys).await?;
    }
    let answers = answers
        .into_iter()
        .map(|a| a.unwrap_or(Err(ApiError::Internal(anyhow::anyhow!("a job of the batch got no answer")))))
        .collect();
    Ok((answers, wrote))
}

impl Draft {
    fn create(
        &mut self,
        prefix: &str,
        job: &Job,
        new: super::NewOrder,
        now: DateTime<Utc>,
    ) -> Result<Changed, ApiError> {
        let id = new.order.id;
        if self.by_order.contains_key(&id) {
            return Err(ApiError::AlreadyExists("order"));
        }
        let mut t = Touched {
            scope: job.scope,
            stored_version: None,
            order: new.order,
            customer: new.customer,
            updated_at: now,
            payments: Default::default(),
            refunds: Vec::new(),
        };
        t.record(&new.events, now, job.scope.device_id);
        self.outbox.push_events(prefix, job.scope, 0, &new.events, now, &job.context);
        if completes(&new.events) {
            receipt_job(&mut self.outbox, prefix, job.scope, id, t.customer.as_ref(), &job.context)?;
        }
        let changed = Changed { before: None, after: t.order.clone() };
        self.by_order.insert(id, self.touched.len());
        self.touched.push(t);
        Ok(changed)
    }

    /// Decides `command` on the batch's view of the order `find` names: the
    /// state an earlier job of this batch left, else the loaded `row`.
    fn change(
        &mut self,
        prefix: &str,
        job: &Job,
        find: Find,
        row: Option<orders::Loaded>,
        command: &crate::domain::Command,
        at: crate::domain::At,
    ) -> Result<Changed, ApiError> {
        let not_found = match find {
            Find::Order(_) => ApiError::NotFound("order"),
            Find::Payment(_) => ApiError::NotFound("payment"),
        };
        let in_batch = match find {
            Find::Order(id) => self.by_order.get(&id).copied(),
            Find::Payment(id) => self.touched.iter().position(|t| t.order.payment(id).is_some()),
        };
        let slot = match (in_batch, row) {
            (Some(slot), _) => slot,
            (None, Some(loaded)) => match self.by_order.get(&loaded.order.id) {
                Some(slot) => *slot,
                None => {
                    self.by_order.insert(loaded.order.id, self.touched.len());
                    self.touched.push(Touched {
                        scope: job.scope,
                        stored_version: Some(loaded.order.version),
                        updated_at: at.now,
                        order: loaded.order,
                        customer: loaded.customer,
                        payments: Default::default(),
                        refunds: Vec::new(),
                    });
                    self.touched.len() - 1
                }
            },
            (None, None) => return Err(not_found),
        };
        let t = &mut self.touched[slot];
        if (t.scope.merchant_id, t.scope.store_id) != (job.scope.merchant_id, job.scope.store_id) {
            return Err(not_found);
        }
        let before = t.order.clone();
        let events = before.decide(command, at)?;
        for e in &events {
            t.order.apply(e);
        }
        t.record(&events, at.now, job.scope.device_id);
        self.outbox.push_events(prefix, job.scope, before.version, &events, at.now, &job.context);
        if completes(&events) {
            receipt_job(&mut self.outbox, prefix, job.scope, t.order.id, t.customer.as_ref(), &job.context)?;
        }
        Ok(Changed { before: Some(before), after: t.order.clone() })
    }
}

fn completes(events: &[DomainEvent]) -> bool {
    events.iter().any(|e| matches!(e, DomainEvent::OrderCompleted(_)))
}

/// Adds a receipt job to `rows` when the terminal gave contacts for the
/// order: committed with the order's completion, sent by the workers.
fn receipt_job(
    rows: &mut Rows,
    prefix: &str,
    scope: Scope,
    order_id: Uuid,
    customer: Option<&serde_json::Value>,
    cx: &Context,
) -> Result<(), ApiError> {
    let contact =
        |field: &str| customer.and_then(|c| c.get(field)).and_then(|v| v.as_str()).map(str::to_owned);
    let (email, phone) = (contact("email"), contact("phone"));
    if email.is_none() && phone.is_none() {
        return Ok(());
    }
    let job = events::work::ReceiptJob {
        job_id: Uuid::now_v7(),
        order_id,
        merchant_id: scope.merchant_id,
        store_id: scope.store_id,
        email,
        phone,
    };
    let kind = events::subjects::WorkKind::Receipt;
    let payload = serde_json::to_vec(&job).map_err(|e| ApiError::Internal(e.into()))?;
    rows.push_work(
        events::subjects::work_subject(prefix, kind, scope.merchant_id),
        job.job_id,
        events::work::headers(kind, job.job_id),
        payload,
        cx,
    );
    Ok(())
}
