//! Typed settings read from environment variables, with local defaults.
//!
//! A value that is set but cannot be parsed fails start-up with an error that
//! names the variable; an unset value takes the documented default.

use anyhow::{Context, anyhow};
use std::str::FromStr;

/// Reads `name`, or `default` when it is unset or empty.
pub fn string(name: &str, default: &str) -> String {
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => v,
        _ => default.to_owned(),
    }
}

/// Reads and parses `name`, or `default` when unset; a bad value names the variable.
pub fn parse<T>(name: &str, default: T) -> anyhow::Result<T>
where
    T: FromStr,
    T::Err: std::fmt::Display,
{
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => {
            v.trim().parse().map_err(|e| anyhow!("{name}={v:?} is not valid: {e}"))
        }
        _ => Ok(default),
    }
}

/// Reads a duration given in milliseconds.
pub fn millis(name: &str, default_ms: u64) -> anyhow::Result<std::time::Duration> {
    parse(name, default_ms).map(std::time::Duration::from_millis)
}

/// Where the shared infrastructure is, and how this deployment names its subjects and streams.
#[derive(Debug, Clone)]
pub struct InfraSettings {
    pub database_url: String,
    pub nats_url: String,
    pub redis_url: String,
    /// First token(s) of every NATS subject (`pos`).
    pub subject_prefix: String,
    /// Prefix of every JetStream stream name (`POS`).
    pub stream_prefix: String,
    pub db_max_connections: u32,
}

pub const DEFAULT_DATABASE_URL: &str = "postgres://smartpos:smartpos@127.0.0.1:5432/smartpos";

impl InfraSettings {
    pub fn from_env() -> anyhow::Result<Self> {
        let subject_prefix = string("NATS_SUBJECT_PREFIX", "pos");
        let stream_prefix = string("NATS_STREAM_PREFIX", "POS");
        if !valid_tokens(&subject_prefix) {
            return Err(anyhow!(
                "NATS_SUBJECT_PREFIX={subject_prefix:?} must be dot-separated tokens of [A-Za-z0-9_-]"
            ));
        }
        if !stream_prefix.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') {
            return Err(anyhow!("NATS_STREAM_PREFIX={stream_prefix:?} must be [A-Za-z0-9_-]"));
        }
        Ok(Self {
            database_url: string("DATABASE_URL", DEFAULT_DATABASE_URL),
            nats_url: string("NATS_URL", "nats://127.0.0.1:4222"),
            redis_url: string("REDIS_URL", "redis://127.0.0.1:6379"),
            subject_prefix,
            stream_prefix,
            db_max_connections: parse("DB_MAX_CONNECTIONS", 16).context("database pool size")?,
        })
    }
}

fn valid_tokens(prefix: &str) -> bool {
    !prefix.is_empty()
        && prefix
            .split('.')
            .all(|t| !t.is_empty() && t.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'))
}
