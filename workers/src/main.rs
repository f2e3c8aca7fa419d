//! `workers`: receipts (and, as they arrive, settlements, reports, device sync).

use anyhow::Context;
use platform::Shutdown;
use workers::config::Config;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _telemetry = platform::telemetry::init("workers");
    let config = Config::from_env()?;
    let listener = tokio::net::TcpListener::bind(config.addr)
        .await
        .with_context(|| format!("binding {}", config.addr))?;
    workers::app::run(config, listener, Shutdown::on_signal()).await
}
