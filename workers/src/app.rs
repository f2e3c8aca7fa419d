//! The workers process: one consumer per job kind, health and metrics.

use std::sync::Arc;
use tokio::net::TcpListener;

use crate::config::Config;
use crate::config::SettlementsConfig;
use crate::jobs::device_sync::DeviceSyncHandler;
use crate::jobs::receipt::ReceiptHandler;
use crate::jobs::report::ReportHandler;
use crate::jobs::settlement::SettlementHandler;
use crate::receipts::delivery::{Mailer, Webhook};
use crate::runtime::{Handler, Runtime};
use platform::Shutdown;
use platform::health::{self, Dependencies};

pub async fn run(config: Config, listener: TcpListener, shutdown: Shutdown) -> anyhow::Result<()> {
    let _ = platform::metrics::handle();
    let infra = &config.infra;
    let pg = platform::connect::postgres(
        &infra.database_url,
        infra.db_max_connections,
        platform::connect::Plans::Default,
    )
    .await?;
    let nats = platform::connect::nats(&infra.nats_url, "workers").await?;
    let redis = platform::connect::redis(&infra.redis_url)?;
    let runtime = Runtime {
        pg: pg.clone(),
        js: async_nats::jetstream::new(nats.clone()),
        retry: config.retry,
        stream_prefix: infra.stream_prefix.clone(),
        subject_prefix: infra.subject_prefix.clone(),
    };
    let r = &config.receipts;
    let receipts = ReceiptHandler {
        pg: pg.clone(),
        store: crate::receipts::storage::Store::new(&r.dir, r.object_store.as_ref())?,
        mailer: r.smtp_url.as_deref().map(|url| Mailer::new(url, &r.from, r.timeout)).transpose()?,
        webhook: r.webhook_url.as_deref().map(|url| Webhook::new(url, r.timeout)).transpose()?,
    };
    let settlements = SettlementHandler {
        pg: pg.clone(),
        subject_prefix: infra.subject_prefix.clone(),
        dir: config.settlements.dir.clone(),
    };
    let device_sync = DeviceSyncHandler {
        pg: pg.clone(),
        nats: nats.clone(),
        subject_prefix: infra.subject_prefix.clone(),
    };
    let reports = ReportHandler { pg: pg.clone(), dir: config.reports_dir.clone() };
    let handlers: Vec<Arc<dyn Handler>> =
        vec![Arc::new(receipts), Arc::new(settlements), Arc::new(device_sync), Arc::new(reports)];
    let mut tasks = tokio::task::JoinSet::new();
    for handler in handlers {
        tasks.spawn(runtime.clone().run(handler, shutdown.clone()));
    }
    if !config.settlements.every.is_zero() {
        let (pg, prefix, cfg, stop) =
            (pg.clone(), infra.subject_prefix.clone(), config.settlements.clone(), shutdown.clone());
        tasks.spawn(async move { schedule_loop(pg, prefix, cfg, stop).await });
    }
    let deps = Dependencies { pg: pg.clone(), nats, redis, critical: vec!["postgres", "nats"] };
    tracing::info!(addr = %listener.local_addr()?, "workers serving health and metrics");
    let stop = shutdown.clone();
    axum::serve(listener, health::router(deps))
        .with_graceful_shutdown(async move { stop.wait().await })
        .await?;
    shutdown.trigger();
    while tasks.join_next().await.is_some() {}
    pg.close().await;
    tracing::info!("workers stopped");
    Ok(())
}

/// Enqueues closed store days every `cfg.every`.
async fn schedule_loop(pg: sqlx::PgPool, prefix: String, cfg: SettlementsConfig, shutdown: Shutdown) {
    loop {
        match crate::settlements::schedule::enqueue_due(&pg, &prefix, chrono::Utc::now(), cfg.grace).await {
            Ok(days) if !days.is_empty() => tracing::info!(count = days.len(), "settlements enqueued"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = format!("{e:#}"), "settlement scheduling failed"),
        }
        tokio::select! {
            _ = shutdown.wait() => return,
            _ = tokio::time::sleep(cfg.every) => {}
        }
    }
}
