//! The query API's settings.

use anyhow::Context;
use platform::auth::JwtKeys;
use platform::settings;
use std::net::SocketAddr;
use std::time::Duration;

#[derive(Clone)]
pub struct Config {
    pub addr: SocketAddr,
    pub infra: platform::InfraSettings,
    pub jwt: JwtKeys,
    /// Longest a read waits for a projection to reach a requested version.
    pub max_wait: Duration,
    /// While a read waits for a version, how soon it loads the bill again
    /// without a notice (doubling, up to a second or this, if longer).
    pub poll: Duration,
}

impl Config {
    pub fn from_env() -> anyhow::Result<Self> {
        let addr = settings::string("QUERY_API_ADDR", "127.0.0.1:8081");
        Ok(Self {
            addr: addr.parse().with_context(|| format!("QUERY_API_ADDR={addr:?} is not an address"))?,
            infra: platform::InfraSettings::from_env()?,
            jwt: JwtKeys::from_env()?,
            max_wait: settings::millis("READ_MAX_WAIT_MS", 2_000)?,
            poll: settings::millis("READ_POLL_MS", 100)?,
        })
    }
}
