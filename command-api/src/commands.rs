//! The one path every state-changing command takes.
//!
//! 1. The Redis front may already hold the key's response: replay it.
//! 2. Otherwise, in one PostgreSQL transaction: claim the key (409 if in
//!    flight, replay or 422 if completed), run the command (write model +
//!    outbox), record the response under the key, commit.
//! 3. A rule violation (409/422 from the domain) is recorded too, so a retry
//!    gets the same answer; a concurrency conflict or an infrastructure error
//!    rolls back and records nothing, so a retry runs the command again.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use futures_util::future::BoxFuture;
use serde::Serialize;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::app::AppState;
use crate::domain::business_date::business_date;
use crate::domain::{At, Command, Order};
use crate::http::ApiError;
use crate::http::extract::{DeviceCaller, IdempotencyKey, IdempotencyScope};
use crate::http::idempotency::{self, Claim, Recorded};
use crate::store::orders::{self, Scope};
use crate::store::outbox;
use crate::store::stores::{self, StoreContext};

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

/// Runs `work` once per idempotency key, in a transaction with the key's record.
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

fn respond(recorded: &Recorded) -> Response {
    let status = StatusCode::from_u16(recorded.status).unwrap_or(StatusCode::OK);
    if !status.is_success() {
        return crate::http::error::problem_response(status, recorded.body.clone());
    }
    let mut response = (status, recorded.body.clone()).into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// Loads the caller's order, decides `command`, saves the result and appends its events.
pub async fn change_order(
    conn: &mut PgConnection,
    prefix: &str,
    scope: Scope,
    order_id: Uuid,
    command: Command,
    at: At,
) -> Result<Order, ApiError> {
    let now = at.now;
    let order = orders::load(conn, scope, order_id).await?.ok_or(ApiError::NotFound("order"))?;
    let events = order.decide(&command, at)?;
    let before = order.version;
    let mut after = order;
    for event in &events {
        after.apply(event);
    }
    orders::save(conn, scope, before, &after, &events, now).await?;
    outbox::append(conn, prefix, scope, before, &events, now).await?;
    if events.iter().any(|e| matches!(e, events::DomainEvent::OrderCompleted(_))) {
        enqueue_receipt(conn, prefix, scope, after.id).await?;
    }
    Ok(after)
}

/// Commits a receipt job with the order's completion, when the terminal gave a contact.
pub async fn enqueue_receipt(
    conn: &mut PgConnection,
    prefix: &str,
    scope: Scope,
    order_id: Uuid,
) -> Result<(), ApiError> {
    let customer: Option<serde_json::Value> = sqlx::query_scalar("SELECT customer FROM orders WHERE id = $1")
        .bind(order_id)
        .fetch_one(&mut *conn)
        .await?;
    let contact = |field: &str| {
        customer.as_ref().and_then(|c| c.get(field)).and_then(|v| v.as_str()).map(str::to_owned)
    };
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
    outbox::append_work(
        conn,
        &events::subjects::work_subject(prefix, kind, scope.merchant_id),
        job.job_id,
        events::work::headers(kind, job.job_id),
        payload,
    )
    .await
}

/// The order a payment belongs to, confined to the caller's store (404 otherwise).
pub async fn order_of_payment(
    conn: &mut PgConnection,
    scope: Scope,
    payment_id: Uuid,
) -> Result<Uuid, ApiError> {
    orders::order_of_payment(conn, scope, payment_id).await?.ok_or(ApiError::NotFound("payment"))
}

/// The caller's store settings; a token whose store is gone acts nowhere.
pub async fn caller_store(state: &AppState, caller: &DeviceCaller) -> Result<StoreContext, ApiError> {
    stores::load(&state.pg, caller.merchant_id, caller.store_id).await?.ok_or(ApiError::Forbidden)
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
