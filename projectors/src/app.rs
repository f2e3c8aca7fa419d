//! The projectors process: one runner per projection, lag metrics, health.

use async_nats::jetstream;
use std::time::Duration;
use tokio::net::TcpListener;

use crate::checkpoint;
use crate::config::Config;
use crate::projections::Projection;
use crate::runner::{BillsNotices, Runner};
use platform::Shutdown;
use platform::health::{self, Dependencies};

/// Runs every projection and serves `/health`, `/ready`, `/metrics` until shutdown.
pub async fn run(config: Config, listener: TcpListener, shutdown: Shutdown) -> anyhow::Result<()> {
    let _ = platform::metrics::handle();
    let infra = &config.infra;
    let pg = platform::connect::postgres(
        &infra.database_url,
        infra.db_max_connections,
        platform::connect::Plans::KeyedLookups,
    )
    .await?;
    let nats = platform::connect::nats(&infra.nats_url, "projectors").await?;
    let redis = platform::connect::redis(&infra.redis_url)?;
    let js = jetstream::new(nats.clone());
    let stream = format!("{}_EVENTS", infra.stream_prefix);
    let mut tasks = tokio::task::JoinSet::new();
    for projection in Projection::ALL {
        let runner = Runner {
            pg: pg.clone(),
            js: js.clone(),
            projection,
            stream: stream.clone(),
            consumer: projection.consumer(&infra.stream_prefix),
            batch: config.batch,
            fetch_wait: config.fetch_wait,
            linger: config.linger,
            first_available: Default::default(),
            notices: (projection == Projection::Bills).then(|| BillsNotices {
                nats: nats.clone(),
                subject: events::notices::bills_applied_subject(&infra.subject_prefix),
            }),
        };
        let stop = shutdown.clone();
        tasks.spawn(async move {
            // A stalled projection stops alone; the others keep running.
            let _ = runner.run(stop).await;
        });
    }
    // The read models are young tables too. The command API keeps them as
    // well; an advisory lock lets one process at a time do the work.
    let (stats_pg, stop) = (pg.clone(), shutdown.clone());
    tasks.spawn(platform::statistics::keep(stats_pg, stop));
    let (lag_pg, lag_js, lag_stream, stop) = (pg.clone(), js.clone(), stream.clone(), shutdown.clone());
    tasks.spawn(async move { report_lag(lag_pg, lag_js, lag_stream, stop).await });
    let deps = Dependencies { pg: pg.clone(), nats: nats.clone(), redis, critical: vec!["postgres", "nats"] };
    tracing::info!(addr = %listener.local_addr()?, "projectors serving health and metrics");
    let stop = shutdown.clone();
    axum::serve(listener, health::router(deps))
        .with_graceful_shutdown(async move { stop.wait().await })
        .await?;
    shutdown.trigger();
    while tasks.join_next().await.is_some() {}
    pg.close().await;
    tracing::info!("projectors stopped");
    Ok(())
}

/// Every 2 seconds: `projection_lag_events` and `projection_lag_seconds` per projection.
async fn report_lag(pg: sqlx::PgPool, js: jetstream::Context, stream: String, shutdown: Shutdown) {
    loop {
        if let Ok(lags) = lag(&pg, &js, &stream).await {
            for l in lags {
                metrics::gauge!("projection_lag_events", "projection" => l.projection.clone())
                    .set(l.events as f64);
                metrics::gauge!("projection_lag_seconds", "projection" => l.projection).set(l.seconds);
            }
        }
        tokio::select! {
            _ = shutdown.wait() => return,
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
        }
    }
}

/// How far one projection is behind the stream.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Lag {
    pub projection: String,
    pub checkpoint: i64,
    pub stream_last: i64,
    pub events: i64,
    /// Age of the oldest unapplied event (0 when caught up).
    pub seconds: f64,
    pub stalled: Option<String>,
}

pub async fn lag(pg: &sqlx::PgPool, js: &jetstream::Context, stream: &str) -> anyhow::Result<Vec<Lag>> {
    let mut s = js.get_stream(stream).await?;
    let state = s.info().await?.state.clone();
    let last = state.last_sequence as i64;
    let known = checkpoint::all(pg).await?;
    let mut out = Vec::new();
    for projection in Projection::ALL {
        let cp = known.iter().find(|c| c.projection == projection.name());
        let checkpoint = cp.map_or(0, |c| c.stream_seq);
        let events = (last - checkpoint).max(0);
        let seconds = if events == 0 {
            0.0
        } else {
            match s.get_raw_message((checkpoint + 1).max(state.first_sequence as i64) as u64).await {
                Ok(msg) => {
                    let published =
                        chrono::DateTime::from_timestamp(msg.time.unix_timestamp(), 0).unwrap_or_default();
                    (chrono::Utc::now() - published).num_milliseconds().max(0) as f64 / 1000.0
                }
                Err(_) => 0.0,
            }
        };
        out.push(Lag {
            projection: projection.name().to_owned(),
            checkpoint,
            stream_last: last,
            events,
            seconds,
            stalled: cp.and_then(|c| c.stalled_reason.clone()),
        });
    }
    Ok(out)
}
