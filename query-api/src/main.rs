//! `query-api`: serves the merchant portal's reads from the read models.

use anyhow::Context;
use platform::Shutdown;
use query_api::Config;

/// glibc malloc and free were about a quarter of a bills rebuild's CPU profile; with
/// mimalloc the same rebuild went from about 14,000 to 19,600 events/s (bench/NOTES.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _telemetry = platform::telemetry::init("query-api");
    let config = Config::from_env()?;
    let listener = tokio::net::TcpListener::bind(config.addr)
        .await
        .with_context(|| format!("binding {}", config.addr))?;
    query_api::run(config, listener, Shutdown::on_signal()).await
}
