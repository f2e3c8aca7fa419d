//! The operator commands' connection to the database.

use anyhow::Context;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, PgPool};
use std::str::FromStr;
use std::time::Duration;

/// The pool every `posctl` command uses, named `posctl` in `pg_stat_activity`.
///
/// An operator's statements read or rewrite whole tables (a check compares
/// every order with its bill, a rebuild fills and swaps in a shadow table),
/// so one that runs longer than a second is the command doing its job, not a
/// fault. sqlx's default prints each such statement, its whole SQL text, as a
/// warning on the operator's terminal; here they are logged at debug level
/// (`RUST_LOG=debug` shows them). Errors still reach the operator as errors.
pub async fn connect(url: &str) -> anyhow::Result<PgPool> {
    PgPoolOptions::new().connect_with(options(url)?).await.context("connecting to the database")
}

/// The options of [`connect`], for a single connection of its own (`setup`'s
/// to the `postgres` database, to create the project's).
pub fn options(url: &str) -> anyhow::Result<PgConnectOptions> {
    Ok(PgConnectOptions::from_str(url)
        .context("DATABASE_URL is not a valid PostgreSQL URL")?
        .application_name("posctl")
        .log_slow_statements(tracing::log::LevelFilter::Debug, Duration::from_secs(1)))
}
