//! The Prometheus recorder, installed once per process.
//!
//! Several apps may run in one test process, so the recorder is global and
//! installed on first use; every app renders the same registry.

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use std::sync::OnceLock;

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// The process's Prometheus handle, installing the recorder on first call.
pub fn handle() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets(&[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0])
                .map(|b| b.build_recorder());
            match recorder {
                Ok(recorder) => {
                    let handle = recorder.handle();
                    // Fails only if another recorder was installed first; then ours
                    // still renders (empty), which the metrics tests would catch.
                    let _ = metrics::set_global_recorder(recorder);
                    describe();
                    handle
                }
                Err(_) => PrometheusBuilder::new().build_recorder().handle(),
            }
        })
        .clone()
}

/// Help text of every metric the system exports: the catalogue operators read.
fn describe() {
    use metrics::{describe_counter as c, describe_gauge as g, describe_histogram as h};
    c!("http_requests_total", "HTTP requests by method, route template and status");
    h!(
        "http_request_duration_seconds",
        metrics::Unit::Seconds,
        "HTTP request duration by method and route template"
    );
    h!("db_query_duration_seconds", metrics::Unit::Seconds, "Duration of database work by operation");
    h!("command_batch_size", "Order and payment commands committed together in one transaction");
    c!(
        "command_batch_fallbacks_total",
        "Group commits rolled back and run again one command per transaction"
    );
    g!("db_connection_pool_size", "Open connections in the database pool");
    g!("db_connection_pool_available", "Idle connections in the database pool");
    c!("redis_operations_total", "Redis operations by operation and outcome");
    c!("payments_total", "Payment events published, by payment method and status");
    c!("payment_amount_total", "Captured payment amounts in minor units, by currency");
    g!("devices_online", "Devices that renewed a token in the last three minutes");
    c!("rate_limited_total", "Requests refused by the rate limiter");
    c!("rate_limit_fail_open_total", "Requests let through because the rate limiter's Redis did not answer");
    c!("relay_published_total", "Outbox rows published to JetStream and acknowledged");
    h!("relay_publish_batch_seconds", metrics::Unit::Seconds, "Time to publish one outbox batch");
    c!("relay_publish_failures_total", "Relay rounds that failed and were retried");
    c!("relay_duplicates_suppressed_total", "Publishes JetStream recognised as duplicates by message id");
    g!("outbox_backlog", "Outbox rows not yet published");
    g!("outbox_oldest_age_seconds", "Age of the oldest unpublished outbox row");
    g!("projection_lag_events", "Events in the stream a projection has not applied");
    g!("projection_lag_seconds", "Age of the oldest event a projection has not applied");
    g!("projection_stalled", "1 when a projection stopped on an event it cannot apply");
    g!("projection_checkpoint", "Last stream sequence a projection applied");
    c!("projection_events_applied_total", "Events applied by a projection");
    h!("projection_batch_seconds", metrics::Unit::Seconds, "Time to apply one projection batch");
    c!(
        "projection_consumer_repositioned_total",
        "Times a projection recreated its consumer at its checkpoint"
    );
    c!("projection_notices_failed_total", "Bills notices the projectors could not publish");
    c!("bill_cache_requests_total", "Bill lookups of the query API by outcome: hit, miss, bypass");
    c!(
        "bill_cache_resets_total",
        "Times the bill cache forgot everything: a new announcer's epoch or a lost notice"
    );
    g!("bill_cache_entries", "Orders held by the bill cache, bills and markers");
    c!("read_your_writes_wakeups_total", "Reads waiting for a version woken, by notice or by poll");
    g!("read_your_writes_waiting", "Reads waiting for a version right now");
    c!("job_outcomes_total", "Jobs by kind and outcome (succeeded, retried, dead_lettered)");
    h!("job_duration_seconds", metrics::Unit::Seconds, "Job handler duration by kind");
    c!("job_redeliveries_total", "Jobs delivered more than once, by kind");
    c!("job_duplicates_skipped_total", "Deliveries of jobs that had already completed");
    c!("dead_letters_total", "Jobs copied to the dead-letter stream, by kind");
    c!("receipts_delivered_total", "Receipts delivered, by channel");
    c!("report_rows_total", "Rows written to reports");
}
