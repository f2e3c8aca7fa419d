//! The workers' settings.

use anyhow::Context;
use platform::settings;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Config {
    pub addr: SocketAddr,
    pub infra: platform::InfraSettings,
    pub retry: RetryPolicy,
    pub receipts: ReceiptsConfig,
    pub settlements: SettlementsConfig,
    /// Where report files are written (the query API serves them from here).
    pub reports_dir: PathBuf,
}

#[derive(Debug, Clone)]
pub struct SettlementsConfig {
    /// Where settlement CSV files are written.
    pub dir: PathBuf,
    /// How long after a store's close-of-day its day is settled (late in-flight sales land first).
    pub grace: Duration,
    /// How often the scheduler looks for closed days; zero disables it.
    pub every: Duration,
}

/// Bounded exponential backoff with jitter, shared by every job kind.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Attempts in all, the first included; then the job is dead-lettered.
    pub max_attempts: u32,
    pub first_delay: Duration,
    pub max_delay: Duration,
}

#[derive(Debug, Clone)]
pub struct ReceiptsConfig {
    /// `smtp://host:port` of the mail relay (`smtps://` for TLS); unset: e-mail receipts fail permanently.
    pub smtp_url: Option<String>,
    pub from: String,
    /// The SMS gateway's webhook; unset: SMS receipts fail permanently.
    pub webhook_url: Option<String>,
    /// Where rendered receipts are stored (unless an object store is configured).
    pub dir: PathBuf,
    /// An S3-compatible store for rendered receipts (`RECEIPT_STORE_URL`).
    pub object_store: Option<crate::receipts::storage::ObjectStoreConfig>,
    /// Timeout of every outbound delivery call.
    pub timeout: Duration,
}

impl Config {
    pub fn from_env() -> anyhow::Result<Self> {
        let addr = settings::string("WORKERS_ADDR", "127.0.0.1:9102");
        let optional = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        Ok(Self {
            addr: addr.parse().with_context(|| format!("WORKERS_ADDR={addr:?} is not an address"))?,
            infra: platform::InfraSettings::from_env()?,
            retry: RetryPolicy {
                max_attempts: settings::parse("JOB_MAX_ATTEMPTS", 6)?,
                first_delay: settings::millis("JOB_RETRY_FIRST_MS", 1_000)?,
                max_delay: settings::millis("JOB_RETRY_MAX_MS", 60_000)?,
            },
            receipts: ReceiptsConfig {
                smtp_url: optional("SMTP_URL"),
                from: settings::string("RECEIPT_FROM", "SmartPOS receipts <receipts@smartpos.example>"),
                webhook_url: optional("RECEIPT_WEBHOOK_URL"),
                dir: PathBuf::from(settings::string("RECEIPT_DIR", "var/receipts")),
                object_store: optional("RECEIPT_STORE_URL").map(|url| {
                    crate::receipts::storage::ObjectStoreConfig {
                        url,
                        endpoint: optional("AWS_ENDPOINT_URL"),
                        region: optional("AWS_REGION"),
                        access_key_id: optional("AWS_ACCESS_KEY_ID"),
                        secret_access_key: optional("AWS_SECRET_ACCESS_KEY"),
                        allow_http: std::env::var("RECEIPT_STORE_ALLOW_HTTP").is_ok_and(|v| v == "true"),
                    }
                }),
                timeout: settings::millis("DELIVERY_TIMEOUT_MS", 5_000)?,
            },
            settlements: SettlementsConfig {
                dir: PathBuf::from(settings::string("SETTLEMENT_DIR", "var/settlements")),
                grace: Duration::from_secs(60 * settings::parse("SETTLEMENT_GRACE_MINUTES", 30)?),
                every: Duration::from_secs(settings::parse("SETTLEMENT_SCHEDULE_SECS", 60)?),
            },
            reports_dir: PathBuf::from(settings::string("REPORT_DIR", "var/reports")),
        })
    }
}
