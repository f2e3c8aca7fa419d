//! The command API's settings, from the environment.

use anyhow::Context;
use platform::settings;
use std::net::SocketAddr;
use std::time::Duration;

use crate::auth::JwtKeys;

#[derive(Clone)]
pub struct Config {
    pub addr: SocketAddr,
    pub infra: platform::InfraSettings,
    pub jwt: JwtKeys,
    /// Largest accepted request body.
    pub body_limit: usize,
    pub relay: RelayConfig,
    /// How long idempotency records are kept (never less than 24 h).
    pub idempotency_ttl: Duration,
    pub limits: crate::http::rate_limit::Limits,
    pub commit: crate::commit::CommitConfig,
}

#[derive(Debug, Clone)]
pub struct RelayConfig {
    pub enabled: bool,
    /// Rows fetched and published per round; also the publish window.
    pub batch: i64,
    /// Poll interval when no NOTIFY arrives (missed notifications, replicas).
    pub poll_interval: Duration,
    /// After a wake-up, wait this long so one round publishes the commits of
    /// several commands (fewer round trips under load; that much more latency).
    pub linger: Duration,
}

impl Config {
    pub fn from_env() -> anyhow::Result<Self> {
        let addr = settings::string("COMMAND_API_ADDR", "127.0.0.1:8080");
        let ttl_hours: u64 = settings::parse("IDEMPOTENCY_TTL_HOURS", 48)?;
        anyhow::ensure!(ttl_hours >= 24, "IDEMPOTENCY_TTL_HOURS={ttl_hours} must be at least 24");
        Ok(Self {
            addr: addr.parse().with_context(|| format!("COMMAND_API_ADDR={addr:?} is not an address"))?,
            infra: platform::InfraSettings::from_env()?,
            jwt: JwtKeys::from_env()?,
            body_limit: settings::parse("BODY_LIMIT_BYTES", 64 * 1024)?,
            relay: RelayConfig {
                enabled: settings::parse("RELAY_ENABLED", true)?,
                batch: settings::parse("RELAY_BATCH", 512)?,
                poll_interval: settings::millis("RELAY_POLL_MS", 1_000)?,
                linger: settings::millis("RELAY_LINGER_MS", 5)?,
            },
            idempotency_ttl: Duration::from_secs(ttl_hours * 3_600),
            limits: crate::http::rate_limit::Limits {
                per_device: settings::parse("RATE_LIMIT_DEVICE_PER_MIN", 600)?,
                per_merchant: settings::parse("RATE_LIMIT_MERCHANT_PER_MIN", 60_000)?,
            },
            commit: crate::commit::CommitConfig {
                lanes: settings::parse("COMMIT_LANES", crate::commit::CommitConfig::default().lanes)?,
                batch_max: settings::parse(
                    "COMMIT_BATCH_MAX",
                    crate::commit::CommitConfig::default().batch_max,
                )?,
            },
        })
    }
}
