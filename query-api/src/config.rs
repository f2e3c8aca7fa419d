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
    /// Bills kept in memory, with the markers of orders announced since
    /// (`BILL_CACHE_ENTRIES`, 0 turns the cache off).
    pub bill_cache_entries: usize,
    /// Longest a bill is served from memory, for changes nobody announced
    /// (`BILL_CACHE_MAX_AGE_MS`).
    pub bill_cache_max_age: Duration,
}

impl Config {
    pub fn from_env() -> anyhow::Result<Self> {
        let addr = settings::string("QUERY_API_ADDR", "127.0.0.1:8081");
        Ok(Self {
            addr: addr.parse().with_context(|| format!("QUERY_API_ADDR={addr:?} is not an address"))?,
            infra: platform::InfraSettings::from_env()?,
            jwt: JwtKeys::from_env()?,
            max_wait: max_wait(settings::millis("READ_MAX_WAIT_MS", 2_000)?)?,
            poll: settings::millis("READ_POLL_MS", 100)?,
            bill_cache_entries: settings::parse("BILL_CACHE_ENTRIES", 50_000)?,
            bill_cache_max_age: settings::millis("BILL_CACHE_MAX_AGE_MS", 60_000)?,
        })
    }
}

/// A read's longest wait for a version, refused unless it ends a second
/// before the request timeout: a longer one would be answered 503 by the
/// timeout instead of with the bill and `consistency.behind`.
fn max_wait(wait: Duration) -> anyhow::Result<Duration> {
    let limit = crate::app::REQUEST_TIMEOUT - Duration::from_secs(1);
    anyhow::ensure!(
        wait <= limit,
        "READ_MAX_WAIT_MS={} is longer than {} ms (the request timeout, less a second)",
        wait.as_millis(),
        limit.as_millis()
    );
    Ok(wait)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wait_that_outlasts_the_request_timeout_is_refused() {
        assert_eq!(max_wait(Duration::from_secs(2)).ok(), Some(Duration::from_secs(2)));
        assert_eq!(max_wait(Duration::from_secs(9)).ok(), Some(Duration::from_secs(9)));
        let refused = max_wait(Duration::from_secs(60)).expect_err("refused");
        assert!(refused.to_string().contains("READ_MAX_WAIT_MS=60000"), "{refused}");
    }
}
