//! Appending events to the transactional outbox.
//!
//! Rows carry everything the relay needs to publish without decoding: the
//! subject, the binary-mode CloudEvents headers and the raw JSON payload.
//! One multi-row insert per command.

use chrono::{DateTime, Utc};
use events::{DomainEvent, Envelope, subjects};
use sqlx::PgConnection;
use sqlx::types::Json;
use uuid::Uuid;

use super::orders::Scope;
use crate::http::ApiError;

/// Appends `events`, the versions after `before`, for the aggregate `subject`.
pub async fn append(
    conn: &mut PgConnection,
    prefix: &str,
    scope: Scope,
    before: i64,
    events: &[DomainEvent],
    now: DateTime<Utc>,
) -> Result<Vec<Uuid>, ApiError> {
    let mut ids = Vec::with_capacity(events.len());
    let mut subjects_ = Vec::with_capacity(events.len());
    let mut headers = Vec::with_capacity(events.len());
    let mut payloads = Vec::with_capacity(events.len());
    for (i, event) in events.iter().enumerate() {
        let envelope = Envelope {
            id: Uuid::now_v7(),
            kind: event.kind(),
            merchant_id: scope.merchant_id,
            store_id: Some(scope.store_id),
            device_id: Some(scope.device_id),
            subject: event.aggregate_id(),
            sequence: before + i as i64 + 1,
            time: now,
            correlation_id: platform::correlation::current(),
            traceparent: platform::trace::traceparent(),
        };
        ids.push(envelope.id);
        subjects_.push(subjects::event_subject(prefix, scope.merchant_id, event.kind()));
        headers.push(Json(envelope.to_headers()));
        payloads.push(event.to_data());
    }
    sqlx::query(
        "INSERT INTO outbox (event_id, subject, headers, payload)
         SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::jsonb[], $4::bytea[])",
    )
    .bind(&ids)
    .bind(&subjects_)
    .bind(&headers)
    .bind(&payloads)
    .execute(&mut *conn)
    .await?;
    Ok(ids)
}

/// Appends one work item for a worker (published like events, consumed once).
pub async fn append_work(
    conn: &mut PgConnection,
    subject: &str,
    job_id: Uuid,
    mut headers: Vec<(String, String)>,
    payload: Vec<u8>,
) -> Result<(), ApiError> {
    if let Some(id) = platform::correlation::current() {
        headers.push((platform::correlation::WORK_HEADER.to_owned(), id));
    }
    if let Some(tp) = platform::trace::traceparent() {
        headers.push(("traceparent".to_owned(), tp));
    }
    sqlx::query("INSERT INTO outbox (event_id, subject, headers, payload) VALUES ($1, $2, $3, $4)")
        .bind(job_id)
        .bind(subject)
        .bind(Json(headers))
        .bind(payload)
        .execute(&mut *conn)
        .await?;
    Ok(())
}
