//! W3C trace context across HTTP, the outbox and NATS.
//!
//! A request's span continues the caller's `traceparent` (or starts a
//! trace); the outbox stamps the current `traceparent` on the events and
//! work items a command commits; projectors and workers continue it. So one
//! command and everything it caused downstream form one trace, and every
//! log line in it carries the same `trace_id`. Without an OTLP endpoint no
//! OpenTelemetry layer exists and these are no-ops.

use opentelemetry::propagation::{Extractor, Injector};
use opentelemetry::trace::TraceContextExt;
use std::collections::HashMap;
use tracing_opentelemetry::OpenTelemetrySpanExt;

struct Headers<'a>(&'a axum::http::HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

struct One<'a>(Option<&'a str>);

impl Extractor for One<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        if key == "traceparent" { self.0 } else { None }
    }

    fn keys(&self) -> Vec<&str> {
        vec!["traceparent"]
    }
}

struct Map(HashMap<String, String>);

impl Injector for Map {
    fn set(&mut self, key: &str, value: String) {
        self.0.insert(key.to_owned(), value);
    }
}

/// Makes `span` continue the trace in `headers`, and records its trace id on it.
pub fn continue_from_headers(span: &tracing::Span, headers: &axum::http::HeaderMap) {
    let parent = opentelemetry::global::get_text_map_propagator(|p| p.extract(&Headers(headers)));
    let _ = span.set_parent(parent);
    record_ids(span);
}

/// Makes `span` continue the trace of a `traceparent` value, and records its trace id on it.
pub fn continue_from(span: &tracing::Span, traceparent: Option<&str>) {
    if traceparent.is_some() {
        let parent = opentelemetry::global::get_text_map_propagator(|p| p.extract(&One(traceparent)));
        let _ = span.set_parent(parent);
    }
    record_ids(span);
}

/// Records `trace_id` and `span_id` on `span` (declared as empty fields) when it is traced.
pub fn record_ids(span: &tracing::Span) {
    let context = span.context();
    let sc = context.span().span_context().clone();
    if sc.is_valid() {
        span.record("trace_id", tracing::field::display(sc.trace_id()));
        span.record("span_id", tracing::field::display(sc.span_id()));
    }
}

/// The current span's `traceparent`, to stamp on what it commits.
pub fn traceparent() -> Option<String> {
    let context = tracing::Span::current().context();
    if !context.span().span_context().is_valid() {
        return None;
    }
    let mut map = Map(HashMap::new());
    opentelemetry::global::get_text_map_propagator(|p| p.inject_context(&context, &mut map));
    map.0.remove("traceparent")
}
