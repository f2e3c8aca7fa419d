//! One telemetry set-up for every process.
//!
//! - Logs: JSON lines on stdout when `LOG_FORMAT=json` (production),
//!   readable text otherwise; the level filter comes from `RUST_LOG`
//!   (default `info`). Every line carries the fields of the span it is in
//!   (correlation id, trace id, caller...).
//! - Traces: when `OTEL_EXPORTER_OTLP_ENDPOINT` is set, spans are exported
//!   over OTLP (HTTP/protobuf, batched on a background thread). When it is
//!   not set no OpenTelemetry layer is installed at all, so tracing costs
//!   what logging costs. W3C trace context is propagated either way it can be
//!   ([`crate::trace`]).

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::{EnvFilter, fmt, prelude::*};

/// Flushes exported spans when dropped (at the end of `main`).
pub struct Guard(Option<SdkTracerProvider>);

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(provider) = self.0.take()
            && let Err(e) = provider.shutdown()
        {
            eprintln!("flushing traces failed: {e}");
        }
    }
}

fn otlp(service: &'static str) -> Option<SdkTracerProvider> {
    let endpoint = std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT").ok().filter(|v| !v.trim().is_empty())?;
    match opentelemetry_otlp::SpanExporter::builder().with_http().build() {
        Ok(exporter) => {
            let resource = opentelemetry_sdk::Resource::builder().with_service_name(service).build();
            Some(SdkTracerProvider::builder().with_batch_exporter(exporter).with_resource(resource).build())
        }
        Err(e) => {
            eprintln!("OTEL_EXPORTER_OTLP_ENDPOINT={endpoint:?}: cannot export traces: {e}");
            None
        }
    }
}

/// Installs the global subscriber; a second call (tests) is a no-op.
pub fn init(service: &'static str) -> Guard {
    opentelemetry::global::set_text_map_propagator(
        opentelemetry_sdk::propagation::TraceContextPropagator::new(),
    );
    let provider = otlp(service);
    let otel = provider.as_ref().map(|p| tracing_opentelemetry::layer().with_tracer(p.tracer(service)));
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let json = std::env::var("LOG_FORMAT").is_ok_and(|v| v.eq_ignore_ascii_case("json"));
    let registry = tracing_subscriber::registry().with(filter).with(otel);
    let result = if json {
        registry
            .with(
                fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(true)
                    .with_span_list(false)
                    .with_writer(ServiceStamp(service)),
            )
            .try_init()
    } else {
        // Colours only for a terminal: in a file or a pipe they are bytes to skip.
        let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
        registry.with(fmt::layer().with_target(false).with_ansi(ansi)).try_init()
    };
    if result.is_ok() {
        tracing::info!(service, tracing = provider.is_some(), "telemetry initialised");
    }
    Guard(provider)
}

/// Stdout that stamps `"service"` on each JSON line (the formatter has no constant fields).
struct ServiceStamp(&'static str);

struct Stamped(&'static str, std::io::Stdout);

impl std::io::Write for Stamped {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        // The JSON formatter writes one whole event per call.
        match buf.split_first() {
            Some((b'{', rest)) => {
                let mut line = Vec::with_capacity(buf.len() + 32);
                line.extend_from_slice(b"{\"service\":\"");
                line.extend_from_slice(self.0.as_bytes());
                line.extend_from_slice(b"\",");
                line.extend_from_slice(rest);
                self.1.lock().write_all(&line)?;
                Ok(buf.len())
            }
            _ => self.1.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.1.flush()
    }
}

impl<'a> fmt::MakeWriter<'a> for ServiceStamp {
    type Writer = Stamped;

    fn make_writer(&'a self) -> Self::Writer {
        Stamped(self.0, std::io::stdout())
    }
}

/// Text logs on stderr, for command-line tools whose stdout is their output.
pub fn init_stderr(service: &'static str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn"));
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(fmt::layer().with_target(false).with_writer(std::io::stderr))
        .try_init();
    tracing::debug!(service, "telemetry initialised");
}
