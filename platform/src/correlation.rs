//! Correlation ids: one id per request, carried by everything it causes.
//!
//! The HTTP middleware takes `X-Correlation-ID` from the request (1 to 128
//! visible ASCII characters) or makes one, echoes it on the response, opens
//! the request's span with it (so every log line of the request carries it)
//! and keeps it in a task-local, where the outbox reads it to stamp the
//! events (`ce-correlationid`) and work items (`correlation-id` header) the
//! request commits. Projectors and workers log it for what they process.

use axum::extract::{MatchedPath, Request};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;

pub const HEADER: &str = "x-correlation-id";
/// Header carrying the id on work items.
pub const WORK_HEADER: &str = "correlation-id";

tokio::task_local! {
    static CURRENT: String;
}

/// The correlation id of the request being served, if any.
pub fn current() -> Option<String> {
    CURRENT.try_with(Clone::clone).ok()
}

fn valid(id: &str) -> bool {
    !id.is_empty() && id.len() <= 128 && id.bytes().all(|b| b.is_ascii_graphic())
}

/// Axum middleware: correlation id, request span, echo.
pub async fn layer(req: Request, next: Next) -> Response {
    let id = req
        .headers()
        .get(HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| valid(v))
        .map_or_else(|| uuid::Uuid::now_v7().to_string(), str::to_owned);
    let route = req.extensions().get::<MatchedPath>().map_or("unmatched", |p| p.as_str()).to_owned();
    let span = tracing::info_span!(
        "request",
        correlation_id = %id,
        method = %req.method(),
        route = %route,
        caller_type = tracing::field::Empty,
        caller_id = tracing::field::Empty,
        merchant_id = tracing::field::Empty,
        store_id = tracing::field::Empty,
        trace_id = tracing::field::Empty,
        span_id = tracing::field::Empty,
    );
    crate::trace::continue_from_headers(&span, req.headers());
    let mut response = CURRENT.scope(id.clone(), next.run(req).instrument(span.clone())).await;
    span.in_scope(|| {
        tracing::info!(status = response.status().as_u16(), "request served");
    });
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(HEADER, value);
    }
    response
}

/// Records who is calling on the current request span.
pub fn record_caller(kind: &str, id: &str, merchant: Option<uuid::Uuid>, store: Option<uuid::Uuid>) {
    let span = tracing::Span::current();
    span.record("caller_type", kind);
    span.record("caller_id", id);
    if let Some(m) = merchant {
        span.record("merchant_id", tracing::field::display(m));
    }
    if let Some(s) = store {
        span.record("store_id", tracing::field::display(s));
    }
}
