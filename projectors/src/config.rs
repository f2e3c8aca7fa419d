//! The projectors process's settings.

use anyhow::Context;
use platform::settings;
use std::net::SocketAddr;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Config {
    /// Where `/health`, `/ready` and `/metrics` are served.
    pub addr: SocketAddr,
    pub infra: platform::InfraSettings,
    /// Most events applied in one transaction.
    pub batch: usize,
    /// How long a fetch waits for events when the stream is quiet.
    pub fetch_wait: Duration,
    /// After a batch smaller than `batch`, wait this long so the next one is fuller.
    pub linger: Duration,
}

impl Config {
    pub fn from_env() -> anyhow::Result<Self> {
        let addr = settings::string("PROJECTORS_ADDR", "127.0.0.1:9101");
        Ok(Self {
            addr: addr.parse().with_context(|| format!("PROJECTORS_ADDR={addr:?} is not an address"))?,
            infra: platform::InfraSettings::from_env()?,
            batch: settings::parse("PROJECTION_BATCH", 500)?,
            fetch_wait: settings::millis("PROJECTION_FETCH_WAIT_MS", 500)?,
            linger: settings::millis("PROJECTION_LINGER_MS", 10)?,
        })
    }
}
