//! The one path every state-changing command takes.
//!
//! 1. The Redis front may already hold the key's response: replay it.
//! 2. Otherwise, in one PostgreSQL transaction: claim the key (409 if in
//!    flight, replay or 422 if completed), run the command (write model +
//!    outbox), record the response under the key, commit.
//! 3. A rule violation (409/422 from the domain) is recorded too, so a retry
//!    gets the same answer; a concurrency conflict, invalid fields or an
//!    infrastructure error roll back and record nothing, so a retry runs the
//!    command again.
//!
//! Order and payment commands, the terminals' hot path, take the same steps
//! in a group commit: many commands in one transaction of five statements
//! ([`crate::commit`]). They skip the Redis front: a round trip before and
//! one after every command, to spare the database a replay that a batch
//! answers from the key's claim at almost no cost, was a net loss (see
//! `bench/NOTES.md`).

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use futures_util::future::BoxFuture;
use serde::Serialize;
use sqlx::PgConnection;

use crate::app::AppState;
use crate::commit::{Job, Reply, Respond, Work};
use crate::domain::At;
use crate::domain::business_date::business_date;
use crate::http::ApiError;
use crate::http::extract::{DeviceCaller, IdempotencyKey, IdempotencyScope};
use crate::http::idempotency::{self, Claim, Recorded};
use crate::store::orders::Scope;
use crate::store::outbox;
use crate::store::stores::StoreContext;

/// What a command answers on success.
pub struct Success {
    pub status: StatusCode,
    pub body: Vec<u8>,
}

impl Success {
    pub fn json<T: Serialize>(status: StatusCode, body: &T) -> Result<Self, ApiError> {
        let body = serde_json::to_vec(body).map_err(|e| ApiError::Internal(e.into()))?;
        Ok(Self { status, body })
    }
}

/// Runs `work` once per idempotency key, in a transaction with the key's
/// record: the path of commands that change no order (configuration,
/// reports, device acknowledgements).
pub async fn run_idempotent<F>(
    state: &AppState,
    caller: &impl IdempotencyScope,
    key: IdempotencyKey,
    fingerprint: [u8; 32],
    work: F,
) -> Result<Response, ApiError>
where
    F: for<'c> FnOnce(&'c mut PgConnection) -> BoxFuture<'c, Result<Success, ApiError>>,
{
    let scope = caller.scope();
    if let Some(recorded) = idempotency::cached(&state.redis, &scope, &key.0).await {
        return recorded.replay(&fingerprint);
    }
    let started = std::time::Instant::now();
    let mut tx = state.pg.begin().await?;
    if let Claim::Done(recorded) = idempotency::claim(&mut tx, &scope, &key.0).await? {
        drop(tx);
        idempotency::remember(&state.redis, &scope, &key.0, &recorded, state.idempotency_ttl).await;
        return recorded.replay(&fingerprint);
    }
    let (status, body) = match work(&mut tx).await {
        Ok(success) => (success.status, success.body),
        Err(rule @ ApiError::Rule(_)) => (rule.status(), rule.body()),
        Err(other) => return Err(other),
    };
    let recorded = Recorded { request_hash: fingerprint.to_vec(), status: status.as_u16(), body };
    idempotency::record(&mut tx, &scope, &key.0, &recorded).await?;
    tx.commit().await?;
    state.wake.committed();
    metrics::histogram!("db_query_duration_seconds", "operation" => "command_transaction")
        .record(started.elapsed().as_secs_f64());
    idempotency::remember(&state.redis, &scope, &key.0, &recorded, state.idempotency_ttl).await;
    Ok(respond(&recorded))
}

/// Runs a terminal's order or payment command once per idempotency key, in
/// its lane's next group commit (see [`crate::commit`]): `work` says what
/// to do, `answer` builds the answer from what it did.
pub async fn run_order_command(
    state: &AppState,
    caller: &DeviceCaller,
    key: IdempotencyKey,
    fingerprint: [u8; 32],
    work: Work,
    answer: Respond,
) -> Result<Response, ApiError> {
    let job = Job {
        scope: caller.store_scope(),
        caller: caller.scope(),
        key: key.0,
        fingerprint,
        work,
        respond: answer,
        context: outbox::Context::current(),
    };
    match state.committer.submit(job).await? {
        Reply::Ran(recorded) => Ok(respond(&recorded)),
        Reply::Replay(recorded) => recorded.replay(&fingerprint),
    }
}

fn respond(recorded: &Recorded) -> Response {
    let status = StatusCode::from_u16(recorded.status).unwrap_or(StatusCode::OK);
    if !status.is_success() {
        return crate::http::error::problem_response(status, recorded.body.clone());
    }
    let mut response = (status, recorded.body.clone()).into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

impl StoreContext {
    /// This instant in the store's sales day.
    pub fn at(&self, now: DateTime<Utc>) -> At {
        At { now, business_date: business_date(now, self.time_zone, self.close_of_day) }
    }
}

impl DeviceCaller {
    pub fn store_scope(&self) -> Scope {
        Scope { merchant_id: self.merchant_id, store_id: self.store_id, device_id: self.device_id }
    }
}
