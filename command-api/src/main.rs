//! `command-api`: serves the terminals' write API and runs the outbox relay.

use anyhow::Context;
use command_api::Config;
use platform::Shutdown;

/// glibc malloc and free were about a quarter of a bills rebuild's CPU profile; with
/// mimalloc the same rebuild went from about 14,000 to 19,600 events/s (bench/NOTES.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _telemetry = platform::telemetry::init("command-api");
    let config = Config::from_env()?;
    let listener = tokio::net::TcpListener::bind(config.addr)
        .await
        .with_context(|| format!("binding {}", config.addr))?;
    command_api::run(config, listener, Shutdown::on_signal()).await
}
