//! The end-to-end test harness: real PostgreSQL, NATS and Redis, real processes.
//!
//! Each test builds a [`TestEnv`]: its own database (created, migrated, and
//! dropped by [`TestEnv::cleanup`]), its own subject and stream prefixes on
//! the shared NATS server, and its own merchants. Tests therefore run in
//! parallel without seeing each other. A test that stops or kills a server
//! starts its own ([`nats_server::NatsServer`]) and never touches the shared
//! ones.

pub mod app;
pub mod env;
pub mod nats_server;
pub mod pg_server;
pub mod process;
pub mod read_side;
pub mod redis_server;
pub mod sinks;
pub mod stream;

pub use app::{Reply, TestApp};
pub use env::{Merchant, TestEnv};
pub use read_side::ReadSide;

use std::future::Future;
use std::time::{Duration, Instant};

/// The value of the counter or gauge line `name` (with its labels, if any)
/// in a Prometheus text exposition; 0 when absent.
pub fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

/// Waits (at most `deadline`) until the relay has published every outbox row.
pub async fn outbox_drained(pg: &sqlx::PgPool, deadline: Duration) {
    eventually(deadline, "the outbox to drain", || async {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox").fetch_one(pg).await.ok()?;
        (n == 0).then_some(())
    })
    .await;
}

/// Polls `check` until it returns `Some` or `deadline` passes.
pub async fn eventually<T, F, Fut>(deadline: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let started = Instant::now();
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(started.elapsed() < deadline, "timed out after {deadline:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
