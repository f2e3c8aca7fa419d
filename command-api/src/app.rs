//! Building and running the command API: state, routes, middleware, background tasks.

use axum::http::StatusCode;
use axum::middleware;
use axum::response::IntoResponse;
use axum::{Json, Router, extract::DefaultBodyLimit};
use std::time::Duration;
use tokio::net::TcpListener;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::timeout::TimeoutLayer;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::JwtKeys;
use crate::config::Config;
use crate::http::ApiError;
use crate::routes::{config, devices, orders, payments, reports};
use crate::{janitor, openapi, relay};
use platform::Shutdown;
use platform::health::{self, Dependencies};

/// What every handler can reach. Cheap to clone: all handles are shared.
#[derive(Clone)]
pub struct AppState {
    pub pg: sqlx::PgPool,
    pub redis: redis::aio::ConnectionManager,
    pub jwt: JwtKeys,
    pub subject_prefix: String,
    pub idempotency_ttl: Duration,
    pub limits: crate::http::rate_limit::Limits,
    /// Wakes the outbox relay when a command commits.
    pub wake: crate::wake::OutboxWake,
    /// The lanes that group-commit order and payment commands.
    pub committer: crate::commit::Committer,
}

/// The API router: every route is registered with its OpenAPI description.
pub fn router(state: AppState, deps: Dependencies, body_limit: usize) -> Router {
    let (api, spec) = OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .routes(routes!(devices::token::issue_token))
        .routes(routes!(orders::create::create_order))
        .routes(routes!(orders::cancel::cancel_order))
        .routes(routes!(payments::create::create_payment))
        .routes(routes!(payments::confirm::confirm_payment))
        .routes(routes!(payments::capture::capture_payment))
        .routes(routes!(payments::void::void_payment))
        .routes(routes!(payments::refund::refund_payment))
        .routes(routes!(config::set::set_config))
        .routes(routes!(devices::config_ack::ack_config))
        .routes(routes!(reports::create::create_report))
        .with_state(state)
        .split_for_parts();
    let spec = std::sync::Arc::new(spec);
    api.route("/openapi.json", axum::routing::get(move || async move { Json((*spec).clone()) }))
        .merge(health::router(deps))
        .fallback(|| async { ApiError::BadPath("no such route".into()) })
        .method_not_allowed_fallback(|| async { platform::problem::method_not_allowed() })
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(middleware::from_fn(platform::correlation::layer))
        .layer(middleware::from_fn(platform::http_metrics::record))
        .layer(TimeoutLayer::with_status_code(StatusCode::SERVICE_UNAVAILABLE, Duration::from_secs(10)))
        .layer(CatchPanicLayer::custom(|_| {
            ApiError::Internal(anyhow::anyhow!("handler panicked")).into_response()
        }))
}

/// Connects, starts the relay, the janitor and the planner statistics'
/// keeper, and serves until `shutdown`.
pub async fn run(config: Config, listener: TcpListener, shutdown: Shutdown) -> anyhow::Result<()> {
    let _ = platform::metrics::handle();
    let infra = &config.infra;
    let pg = platform::connect::postgres(
        &infra.database_url,
        infra.db_max_connections,
        platform::connect::Plans::KeyedLookups,
    )
    .await?;
    let nats = platform::connect::nats(&infra.nats_url, "command-api").await?;
    let redis = platform::connect::redis(&infra.redis_url)?;
    let wake = crate::wake::OutboxWake::default();
    let committer = crate::commit::Committer::start(
        pg.clone(),
        infra.subject_prefix.clone(),
        wake.clone(),
        &config.commit,
    );
    let state = AppState {
        pg: pg.clone(),
        redis: redis.clone(),
        jwt: config.jwt.clone(),
        subject_prefix: infra.subject_prefix.clone(),
        idempotency_ttl: config.idempotency_ttl,
        limits: config.limits,
        wake,
        committer,
    };
    let deps = Dependencies { pg: pg.clone(), nats: nats.clone(), redis, critical: vec!["postgres"] };
    let mut tasks = tokio::task::JoinSet::new();
    let (stats_pg, stop) = (pg.clone(), shutdown.clone());
    tasks.spawn(platform::statistics::keep(stats_pg, stop));
    if config.relay.enabled {
        let relay =
            relay::Relay::new(pg.clone(), async_nats::jetstream::new(nats.clone()), config.relay.clone())
                .with_wake(state.wake.clone());
        let stop = shutdown.clone();
        tasks.spawn(async move { relay.run(stop).await });
        let (wake, stop) = (state.wake.clone(), shutdown.clone());
        tasks.spawn(wake.notify_remote(pg.clone(), stop));
        let stop = shutdown.clone();
        let (pg, ttl) = (pg.clone(), config.idempotency_ttl);
        tasks.spawn(async move { janitor::run(pg, ttl, stop).await });
    }
    if !config.relay.enabled {
        // Relays live in other processes: they must hear of our commits.
        let (wake, stop) = (state.wake.clone(), shutdown.clone());
        tasks.spawn(wake.notify_remote(pg.clone(), stop));
    }
    let app = router(state, deps, config.body_limit);
    tracing::info!(addr = %listener.local_addr()?, "command-api listening");
    let stop = shutdown.clone();
    axum::serve(listener, app).with_graceful_shutdown(async move { stop.wait().await }).await?;
    shutdown.trigger();
    while tasks.join_next().await.is_some() {}
    nats.flush().await.ok();
    pg.close().await;
    tracing::info!("command-api stopped");
    Ok(())
}
