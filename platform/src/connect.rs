//! Connections to PostgreSQL, NATS and Redis, configured for failing fast.
//!
//! A request must never queue behind a dead dependency: the pool's acquire
//! timeout and NATS' request timeout are short, and callers turn their
//! errors into 503 with `Retry-After`. NATS and Redis connect lazily, so a
//! process starts (and keeps accepting commands) while they are down.

use anyhow::Context;
use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, PgPool, Postgres};
use std::str::FromStr;
use std::time::{Duration, Instant};

use crate::settings;

/// How a process's sessions are planned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plans {
    /// PostgreSQL's defaults: for processes whose queries scan (reports, settlements).
    Default,
    /// For the request paths, whose every statement is a keyed lookup or a
    /// batch of them: plans made once per statement and connection (custom
    /// plans of the array-binding statements were re-planned on every call,
    /// 0.4-0.9 ms each), and no sequential scans, hash or merge joins.
    /// Both measured with pg_stat_statements and auto_explain (bench/NOTES.md).
    /// That alone does not make a plan made while a table was nearly empty
    /// (a fresh database) a lookup by key: it can walk the table's whole
    /// index, and PostgreSQL plans again only when the table's statistics
    /// change. [`crate::statistics`] refreshes them while tables are young
    /// (`bench/NOTES.md`, step 68).
    /// JIT is off: the scan a disabled plan type still needs (a count for a
    /// gauge) is costed ten billion higher, far past `jit_above_cost`, and
    /// was compiled, inlined and optimised at each call (120-133 ms of
    /// CPU for a count of a few hundred rows; `bench/NOTES.md`, step 47).
    KeyedLookups,
}

/// A connection idle this long is pinged before it is used again. sqlx pings
/// every connection it hands out by default, a round trip that does nothing
/// for a connection given back moments ago, when the pool pinged it on its
/// release (`bench/NOTES.md`, step 50).
pub const PING_IDLE_AFTER: Duration = Duration::from_secs(1);

/// The longest a held connection's ping may take ([`HeldConnection::get`]).
const PING_TIMEOUT: Duration = Duration::from_secs(2);

pub async fn postgres(url: &str, max_connections: u32, plans: Plans) -> anyhow::Result<PgPool> {
    let mut options = PgConnectOptions::from_str(url)
        .context("DATABASE_URL is not a valid PostgreSQL URL")?
        .log_statements(tracing::log::LevelFilter::Trace)
        .log_slow_statements(tracing::log::LevelFilter::Warn, Duration::from_millis(500));
    if plans == Plans::KeyedLookups {
        options = options.options([
            ("plan_cache_mode", "force_generic_plan"),
            ("enable_seqscan", "off"),
            ("enable_hashjoin", "off"),
            ("enable_mergejoin", "off"),
            ("jit", "off"),
        ]);
    }
    if let Some(program) = program_name() {
        options = named(options, &program);
    }
    let pool = PgPoolOptions::new()
        .max_connections(max_connections)
        .min_connections(1)
        .acquire_timeout(settings::millis("DB_ACQUIRE_TIMEOUT_MS", 2_000)?)
        .test_before_acquire(false)
        .before_acquire(|conn, meta| {
            Box::pin(async move {
                if meta.idle_for >= PING_IDLE_AFTER {
                    conn.ping().await?;
                }
                Ok(true)
            })
        })
        .connect_lazy_with(options);
    Ok(pool)
}

/// A connection that a loop keeps between its transactions (a command lane,
/// the outbox relay, a projection runner) instead of taking one from the pool
/// each time: sqlx tests each connection given back to the pool with a round
/// trip of its own, a wake-up of the server and of the loop for nothing when
/// the loop wants a connection again a millisecond later (`bench/NOTES.md`,
/// step 50).
///
/// Like the pool, it pings a connection idle for [`PING_IDLE_AFTER`] before
/// using it, and opens a new one if the ping fails. After an error, call
/// [`HeldConnection::release`]: the connection goes back to the pool, whose
/// test closes it if it is broken, and the next use takes one from the pool.
pub struct HeldConnection {
    pool: PgPool,
    conn: Option<PoolConnection<Postgres>>,
    last_used: Instant,
}

impl HeldConnection {
    pub fn new(pool: PgPool) -> Self {
        Self { pool, conn: None, last_used: Instant::now() }
    }

    /// The held connection, or a new one from the pool.
    pub async fn get(&mut self) -> sqlx::Result<&mut PgConnection> {
        // Bounded like the pool's acquire: a server that stopped answering
        // fails this fast instead of holding the loop.
        if let Some(conn) = &mut self.conn
            && self.last_used.elapsed() >= PING_IDLE_AFTER
            && !matches!(tokio::time::timeout(PING_TIMEOUT, conn.ping()).await, Ok(Ok(())))
        {
            self.conn = None;
        }
        let conn = match &mut self.conn {
            Some(conn) => conn,
            empty => empty.insert(self.pool.acquire().await?),
        };
        self.last_used = Instant::now();
        Ok(&mut **conn)
    }

    /// Gives the connection back to the pool, whose test closes it if it is
    /// broken: after any error, since a session the server ended answers
    /// with an error of its own (57P01) before it closes.
    pub fn release(&mut self) {
        self.conn = None;
    }
}

/// Sessions named `name`, who is who in `pg_stat_activity` and the server's
/// logs, unless the URL names them itself (`?application_name=...`).
pub fn named(options: PgConnectOptions, name: &str) -> PgConnectOptions {
    match options.get_application_name() {
        Some(_) => options,
        None => options.application_name(name),
    }
}

/// The running program's file name (`command-api`, `projectors`, ...).
fn program_name() -> Option<String> {
    let exe = std::env::current_exe().ok()?;
    Some(exe.file_stem()?.to_string_lossy().into_owned())
}

pub async fn nats(url: &str, name: &str) -> anyhow::Result<async_nats::Client> {
    async_nats::ConnectOptions::new()
        .name(name)
        .retry_on_initial_connect()
        .connection_timeout(Duration::from_secs(2))
        .request_timeout(Some(settings::millis("NATS_REQUEST_TIMEOUT_MS", 5_000)?))
        .max_reconnects(None)
        .connect(url)
        .await
        .with_context(|| format!("connecting to NATS at {url}"))
}

pub fn redis(url: &str) -> anyhow::Result<redis::aio::ConnectionManager> {
    let client = redis::Client::open(url).context("REDIS_URL is not a valid Redis URL")?;
    let config = redis::aio::ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_millis(500)))
        .set_response_timeout(Some(Duration::from_millis(500)))
        .set_number_of_retries(1)
        .set_max_delay(Duration::from_secs(2));
    redis::aio::ConnectionManager::new_lazy_with_config(client, config)
        .context("creating the Redis connection manager")
}
