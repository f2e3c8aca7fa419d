//! `projectors`: builds the read models from the domain-event stream.

use anyhow::Context;
use platform::Shutdown;
use projectors::config::Config;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _telemetry = platform::telemetry::init("projectors");
    let config = Config::from_env()?;
    let listener = tokio::net::TcpListener::bind(config.addr)
        .await
        .with_context(|| format!("binding {}", config.addr))?;
    projectors::app::run(config, listener, Shutdown::on_signal()).await
}
