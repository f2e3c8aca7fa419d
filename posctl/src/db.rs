//! The operator commands' connection to the database.

use anyhow::Context;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, PgPool};
use std::str::FromStr;
use std::time::Duration;

/// The pool every `posctl` command uses, named `posctl` in `pg_stat_activity`
/// unless `DATABASE_URL` names it.
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
    let options = PgConnectOptions::from_str(url)
        .context("DATABASE_URL is not a valid PostgreSQL URL")?
        .log_slow_statements(tracing::log::LevelFilter::Debug, Duration::from_secs(1));
    Ok(platform::connect::named(options, "posctl"))
}

#[cfg(test)]
mod tests {
    use super::options;

    #[test]
    fn sessions_are_named_posctl_unless_the_url_names_them() {
        let plain = options("postgres://u@127.0.0.1:5432/db").expect("url");
        assert_eq!(plain.get_application_name(), Some("posctl"));
        let named = options("postgres://u@127.0.0.1:5432/db?application_name=night-check").expect("url");
        assert_eq!(named.get_application_name(), Some("night-check"));
        assert!(options("not a url").is_err());
    }
}
