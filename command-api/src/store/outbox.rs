//! Appending events and work items to the transactional outbox.
//!
//! Rows carry everything the relay needs to publish without decoding: the
//! subject, the binary-mode CloudEvents headers and the raw JSON payload.
//! A command collects its rows in an [`Rows`] and writes them with the same
//! statement that changes its aggregate (see [`super::orders`]), so the
//! outbox costs no round trip of its own.

use chrono::{DateTime, Utc};
use events::{DomainEvent, Envelope, subjects};
use sqlx::PgConnection;
use sqlx::types::Json;
use uuid::Uuid;

use super::orders::Scope;
use crate::http::ApiError;

/// The request an outbox row was caused by: carried in its headers so logs
/// and traces follow a command through the stream to projectors and workers.
#[derive(Debug, Clone, Default)]
pub struct Context {
    pub correlation_id: Option<String>,
    pub traceparent: Option<String>,
}

impl Context {
    /// The context of the request this task is serving.
    pub fn current() -> Self {
        Self { correlation_id: platform::correlation::current(), traceparent: platform::trace::traceparent() }
    }
}

/// Outbox rows of one command, as the columns a multi-row insert binds.
#[derive(Debug, Default)]
pub struct Rows {
    pub ids: Vec<Uuid>,
    pub subjects: Vec<String>,
    pub headers: Vec<Json<Vec<(String, String)>>>,
    pub payloads: Vec<Vec<u8>>,
}

/// The insert every outbox write ends with; `$1..$4` are a [`Rows`]' columns.
/// Rows are numbered in the order given, so outbox ids follow event order.
pub const INSERT_SQL: &str = "INSERT INTO outbox (event_id, subject, headers, payload)
     SELECT x.id, x.subject, x.headers, x.payload
       FROM UNNEST($1::uuid[], $2::text[], $3::jsonb[], $4::bytea[]) WITH ORDINALITY
            AS x(id, subject, headers, payload, n)
      ORDER BY x.n";

impl Rows {
    /// `events`, the versions after `before` of the aggregate they belong to,
    /// caused by the request with context `cx`.
    pub fn events(
        prefix: &str,
        scope: Scope,
        before: i64,
        events: &[DomainEvent],
        now: DateTime<Utc>,
        cx: &Context,
    ) -> Self {
        let mut rows = Self::default();
        rows.push_events(prefix, scope, before, events, now, cx);
        rows
    }

    /// Adds `events` (see [`Rows::events`]).
    pub fn push_events(
        &mut self,
        prefix: &str,
        scope: Scope,
        before: i64,
        events: &[DomainEvent],
        now: DateTime<Utc>,
        cx: &Context,
    ) {
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
                correlation_id: cx.correlation_id.clone(),
                traceparent: cx.traceparent.clone(),
            };
            self.ids.push(envelope.id);
            self.subjects.push(subjects::event_subject(prefix, scope.merchant_id, event.kind()));
            self.headers.push(Json(envelope.to_headers()));
            self.payloads.push(event.to_data());
        }
    }

    /// Adds one work item for a worker (published like events, consumed once).
    pub fn push_work(
        &mut self,
        subject: String,
        job_id: Uuid,
        mut headers: Vec<(String, String)>,
        payload: Vec<u8>,
        cx: &Context,
    ) {
        if let Some(id) = &cx.correlation_id {
            headers.push((platform::correlation::WORK_HEADER.to_owned(), id.clone()));
        }
        if let Some(tp) = &cx.traceparent {
            headers.push(("traceparent".to_owned(), tp.clone()));
        }
        self.ids.push(job_id);
        self.subjects.push(subject);
        self.headers.push(Json(headers));
        self.payloads.push(payload);
    }

    /// Binds the four columns next (ids, subjects, headers, payloads), as the
    /// outbox part of a statement expects them.
    pub fn bind<'q>(
        &'q self,
        query: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
    ) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
        query.bind(&self.ids).bind(&self.subjects).bind(&self.headers).bind(&self.payloads)
    }
}

/// Appends `rows` on their own (commands whose state change is not an order's).
pub async fn insert(conn: &mut PgConnection, rows: &Rows) -> Result<(), ApiError> {
    rows.bind(sqlx::query(INSERT_SQL)).execute(&mut *conn).await?;
    Ok(())
}

/// Appends `events` on their own (token and device commands, which change no order).
pub async fn append(
    conn: &mut PgConnection,
    prefix: &str,
    scope: Scope,
    before: i64,
    events: &[DomainEvent],
    now: DateTime<Utc>,
) -> Result<(), ApiError> {
    insert(conn, &Rows::events(prefix, scope, before, events, now, &Context::current())).await
}

/// Appends one work item on its own.
pub async fn append_work(
    conn: &mut PgConnection,
    subject: &str,
    job_id: Uuid,
    headers: Vec<(String, String)>,
    payload: Vec<u8>,
) -> Result<(), ApiError> {
    let mut rows = Rows::default();
    rows.push_work(subject.to_owned(), job_id, headers, payload, &Context::current());
    insert(conn, &rows).await
}
