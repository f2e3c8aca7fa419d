//! The workers process: one consumer per job kind, health and metrics.

use std::sync::Arc;
use tokio::net::TcpListener;

use crate::config::Config;
use crate::jobs::receipt::ReceiptHandler;
use crate::receipts::delivery::{Mailer, Webhook};
use crate::runtime::{Handler, Runtime};
use platform::Shutdown;
use platform::health::{self, Dependencies};

pub async fn run(config: Config, listener: TcpListener, shutdown: Shutdown) -> anyhow::Result<()> {
    let _ = platform::metrics::handle();
    let infra = &config.infra;
    let pg = platform::connect::postgres(&infra.database_url, infra.db_max_connections).await?;
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
        dir: r.dir.clone(),
        mailer: r.smtp_url.as_deref().map(|url| Mailer::new(url, &r.from, r.timeout)).transpose()?,
        webhook: r.webhook_url.as_deref().map(|url| Webhook::new(url, r.timeout)).transpose()?,
    };
    let handlers: Vec<Arc<dyn Handler>> = vec![Arc::new(receipts)];
    let mut tasks = tokio::task::JoinSet::new();
    for handler in handlers {
        tasks.spawn(runtime.clone().run(handler, shutdown.clone()));
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
