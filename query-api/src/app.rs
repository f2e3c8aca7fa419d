//! Building and running the query API.

use axum::http::StatusCode;
use axum::{Json, Router, middleware};
use std::time::Duration;
use tokio::net::TcpListener;
use tower_http::timeout::TimeoutLayer;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::bill_cache::BillCache;
use crate::config::Config;
use crate::error::ApiError;
use crate::read_your_writes;
use crate::routes::bills::get::Loaded;
use crate::routes::{bills, devices, orders, reports, stores};
use platform::Shutdown;
use platform::auth::JwtKeys;
use platform::health::{self, Dependencies};

/// Longest a request may take before it is answered 503; a read's wait for a
/// version must end before it ([`crate::config::Config`] checks).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Clone)]
pub struct AppState {
    pub pg: sqlx::PgPool,
    pub jwt: JwtKeys,
    pub max_wait: Duration,
    /// A waiting read's fallback poll ([`Config::poll`]).
    pub poll: Duration,
    /// The bills projection's announcements, for reads waiting on a version.
    pub bills_applied: read_your_writes::Notices,
    /// Bills read recently, kept while the announcements say they have not moved.
    pub bills: std::sync::Arc<BillCache<Loaded>>,
    /// `(device, version)` notices from the device-sync worker, for long polls.
    pub config_changes: tokio::sync::broadcast::Sender<(uuid::Uuid, i64)>,
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "SmartPOS query API",
        description = "The merchant portal's reads, served from read models. Portal tokens see their merchant; device tokens their store. Amounts are integer minor units. Errors are RFC 9457 problem+json.",
        version = "1"
    ),
    components(schemas(platform::problem::Problem, platform::problem::FieldProblem)),
    modifiers(&BearerAuth)
)]
struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new().scheme(HttpAuthScheme::Bearer).bearer_format("JWT").build(),
            ),
        );
    }
}

pub fn router(state: AppState, deps: Dependencies) -> Router {
    let (api, spec) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(bills::get::get_bill))
        .routes(routes!(orders::list::list_orders))
        .routes(routes!(stores::sales::store_sales))
        .routes(routes!(devices::get::get_device))
        .routes(routes!(devices::config::device_config))
        .routes(routes!(reports::get::get_report))
        .routes(routes!(reports::download::download_report))
        .with_state(state)
        .split_for_parts();
    let spec = std::sync::Arc::new(spec);
    api.route("/openapi.json", axum::routing::get(move || async move { Json((*spec).clone()) }))
        .merge(health::router(deps))
        .fallback(|| async { ApiError::NotFound("route") })
        .method_not_allowed_fallback(|| async { platform::problem::method_not_allowed() })
        .layer(middleware::from_fn(platform::correlation::layer))
        .layer(middleware::from_fn(platform::http_metrics::record))
        .layer(TimeoutLayer::with_status_code(StatusCode::SERVICE_UNAVAILABLE, REQUEST_TIMEOUT))
}

/// Core-NATS config notices to the long polls waiting in this process.
async fn forward_notices(
    mut notices: async_nats::Subscriber,
    to: tokio::sync::broadcast::Sender<(uuid::Uuid, i64)>,
) {
    use futures_util::StreamExt;
    while let Some(msg) = notices.next().await {
        let device = msg.subject.rsplit('.').next().and_then(|d| uuid::Uuid::parse_str(d).ok());
        let version = std::str::from_utf8(&msg.payload).ok().and_then(|v| v.parse().ok());
        if let (Some(d), Some(v)) = (device, version) {
            let _ = to.send((d, v));
        }
    }
}

pub async fn run(config: Config, listener: TcpListener, shutdown: Shutdown) -> anyhow::Result<()> {
    let _ = platform::metrics::handle();
    let infra = &config.infra;
    let pg = platform::connect::postgres(
        &infra.database_url,
        infra.db_max_connections,
        platform::connect::Plans::KeyedLookups,
    )
    .await?;
    let nats = platform::connect::nats(&infra.nats_url, "query-api").await?;
    let redis = platform::connect::redis(&infra.redis_url)?;
    let (config_changes, _) = tokio::sync::broadcast::channel(1024);
    let state = AppState {
        pg: pg.clone(),
        jwt: config.jwt.clone(),
        max_wait: config.max_wait,
        poll: config.poll,
        bills_applied: read_your_writes::channel(),
        bills: std::sync::Arc::new(BillCache::new(config.bill_cache_entries, config.bill_cache_max_age)),
        config_changes,
    };
    let notices = nats.subscribe(format!("{}.device_config.*", infra.subject_prefix)).await?;
    tokio::spawn(forward_notices(notices, state.config_changes.clone()));
    let applied = nats.subscribe(events::notices::bills_applied_subject(&infra.subject_prefix)).await?;
    tokio::spawn(read_your_writes::forward(applied, state.bills_applied.clone(), state.bills.clone()));
    let deps = Dependencies { pg: pg.clone(), nats, redis, critical: vec!["postgres"] };
    tracing::info!(addr = %listener.local_addr()?, "query-api listening");
    let stop = shutdown.clone();
    axum::serve(listener, router(state, deps))
        .with_graceful_shutdown(async move { stop.wait().await })
        .await?;
    pg.close().await;
    tracing::info!("query-api stopped");
    Ok(())
}
