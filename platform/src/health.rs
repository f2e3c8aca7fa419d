//! `/health`, `/ready` and `/metrics`, the same on every process.
//!
//! `/health` answers while the process runs. `/ready` checks each dependency
//! with a short timeout and reports them one by one; it answers 503 when any
//! is down so a load balancer stops routing to the instance.

use axum::{Json, Router, extract::State, http::StatusCode, response::IntoResponse, routing::get};
use serde_json::json;
use std::time::Duration;

#[derive(Clone)]
pub struct Dependencies {
    pub pg: sqlx::PgPool,
    pub nats: async_nats::Client,
    pub redis: redis::aio::ConnectionManager,
    /// Dependencies without which this process cannot do its job: `/ready`
    /// answers 503 only when one of these is down. The others are reported
    /// but only degrade service (the command API accepts commands while NATS
    /// is down; Redis only fronts PostgreSQL).
    pub critical: Vec<&'static str>,
}

pub fn router(deps: Dependencies) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .with_state(deps)
}

async fn health() -> impl IntoResponse {
    Json(json!({"status": "ok"}))
}

async fn metrics(State(deps): State<Dependencies>) -> impl IntoResponse {
    metrics::gauge!("db_connection_pool_size").set(f64::from(deps.pg.size()));
    metrics::gauge!("db_connection_pool_available").set(deps.pg.num_idle() as f64);
    ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], crate::metrics::handle().render())
}

async fn ready(State(deps): State<Dependencies>) -> impl IntoResponse {
    let timeout = Duration::from_secs(1);
    let pg = tokio::time::timeout(timeout, sqlx::query("SELECT 1").execute(&deps.pg))
        .await
        .is_ok_and(|r| r.is_ok());
    let nats = deps.nats.connection_state() == async_nats::connection::State::Connected;
    let mut redis = deps.redis.clone();
    let redis_ok = tokio::time::timeout(timeout, redis::cmd("PING").query_async::<String>(&mut redis))
        .await
        .is_ok_and(|r| r.is_ok());
    let word = |ok: bool| if ok { "up" } else { "down" };
    let all = pg && nats && redis_ok;
    let checks = [("postgres", pg), ("nats", nats), ("redis", redis_ok)];
    let ready = checks.iter().all(|(name, ok)| *ok || !deps.critical.contains(name));
    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (
        status,
        Json(json!({
            "status": if all { "ready" } else if ready { "degraded" } else { "not_ready" },
            "checks": {"postgres": word(pg), "nats": word(nats), "redis": word(redis_ok)},
        })),
    )
}
