//! The database's ceiling on this machine: `pgbench` running, as one
//! transaction, the writes one order creation makes (`bench/create-order.sql`)
//! against a scratch database with the system's schema, over the same TCP
//! connection string the services use (and, like them, without TLS), at
//! several client counts.

use std::process::Command;
use std::str::FromStr;
use std::time::Duration;

use anyhow::Context;
use serde::{Deserialize, Serialize};
use sqlx::ConnectOptions;
use sqlx::postgres::PgConnectOptions;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PgbenchRun {
    pub clients: u32,
    pub tps: f64,
    pub latency_ms: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PgbenchCeiling {
    pub script: String,
    pub seconds: u64,
    pub runs: Vec<PgbenchRun>,
    /// The best run's transactions per second.
    pub best_tps: f64,
    pub best_clients: u32,
}

/// Recreates `<database>_pgbench`, migrates it, runs the script at each client count, drops it.
pub async fn measure(
    database_url: &str,
    script: &str,
    clients: &[u32],
    seconds: u64,
) -> anyhow::Result<PgbenchCeiling> {
    let options = PgConnectOptions::from_str(database_url).context("DATABASE_URL")?;
    let scratch = format!("{}_pgbench", options.get_database().unwrap_or("smartpos"));
    let scratch_url = scratch_url(database_url, &scratch)?;
    let mut admin = options.clone().database("postgres").connect().await.context("connecting as admin")?;
    drop_named(&mut admin, &scratch).await?;
    sqlx::query(&format!("CREATE DATABASE \"{scratch}\"")).execute(&mut admin).await?;
    {
        let pg = sqlx::PgPool::connect(&scratch_url).await?;
        posctl::setup::migrate(&pg).await?;
        pg.close().await;
    }
    let mut runs = Vec::new();
    for &c in clients {
        eprintln!("[pgbench] {c} clients for {seconds}s ...");
        let output = Command::new("pgbench")
            .args(["-n", "-M", "prepared", "-f", script])
            .args(["-c", &c.to_string(), "-j", &c.min(2).to_string(), "-T", &seconds.to_string()])
            .arg(&scratch_url)
            .output()
            .context("running pgbench (Debian package postgresql; scripts/services.sh installs it)")?;
        let text = String::from_utf8_lossy(&output.stdout);
        anyhow::ensure!(
            output.status.success(),
            "pgbench failed: {}{}",
            text,
            String::from_utf8_lossy(&output.stderr)
        );
        let tps = field(&text, "tps = ").context("pgbench printed no tps")?;
        let latency_ms = field(&text, "latency average = ").unwrap_or(0.0);
        eprintln!("[pgbench] {c} clients: {tps:.0} tps, latency {latency_ms:.2} ms");
        runs.push(PgbenchRun { clients: c, tps, latency_ms });
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    drop_named(&mut admin, &scratch).await?;
    let best = runs.iter().max_by(|a, b| a.tps.total_cmp(&b.tps)).cloned().context("no pgbench runs")?;
    Ok(PgbenchCeiling {
        script: script.to_owned(),
        seconds,
        runs,
        best_tps: best.tps,
        best_clients: best.clients,
    })
}

/// `database_url` naming database `scratch`, for pgbench.
///
/// The services' sqlx is built without TLS, so they talk to PostgreSQL in
/// plain TCP. libpq's default (`sslmode=prefer`) would negotiate TLS with a
/// server that offers it (Debian's does) and pay for it in every
/// transaction: on this machine that cost pgbench about a fifth of its rate,
/// a ceiling lower than the one the services face. So TLS is off unless the
/// URL asks for a mode.
fn scratch_url(database_url: &str, scratch: &str) -> anyhow::Result<String> {
    let mut url = reqwest::Url::parse(database_url).context("DATABASE_URL is not a URL")?;
    url.set_path(scratch);
    if !url.query_pairs().any(|(k, _)| k == "sslmode") {
        url.query_pairs_mut().append_pair("sslmode", "disable");
    }
    Ok(url.to_string())
}

/// The number after `prefix` on pgbench's report line.
fn field(text: &str, prefix: &str) -> Option<f64> {
    let line = text.lines().find(|l| l.starts_with(prefix))?;
    line[prefix.len()..].split_whitespace().next()?.parse().ok()
}

/// Drops database `name`, closing its sessions. An autovacuum worker busy in
/// it (a superuser's process, which this role may not terminate) refuses
/// the drop until it finishes: that refusal is retried for a while.
async fn drop_named(admin: &mut sqlx::PgConnection, name: &str) -> anyhow::Result<()> {
    use backon::BackoffBuilder;
    let mut delays = backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(200))
        .with_max_delay(Duration::from_secs(2))
        .with_max_times(12)
        .build();
    loop {
        let result = sqlx::query(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
            .execute(&mut *admin)
            .await;
        match result {
            Ok(_) => return Ok(()),
            Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42501") => match delays.next() {
                Some(delay) => {
                    eprintln!("[pgbench] database {name} is busy ({e}); retrying in {delay:?}");
                    tokio::time::sleep(delay).await;
                }
                None => return Err(anyhow::Error::new(e).context(format!("dropping database {name}"))),
            },
            Err(e) => return Err(anyhow::Error::new(e).context(format!("dropping database {name}"))),
        }
    }
}

/// Drops the database `database_url` names (closing its sessions).
pub async fn drop_database(database_url: &str) -> anyhow::Result<()> {
    let options = PgConnectOptions::from_str(database_url).context("DATABASE_URL")?;
    let name = options.get_database().context("DATABASE_URL names no database")?.to_owned();
    let mut admin = options.clone().database("postgres").connect().await.context("connecting as admin")?;
    drop_named(&mut admin, &name).await?;
    eprintln!("[reset] dropped database {name}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{field, scratch_url};

    #[test]
    fn pgbench_talks_plain_tcp_like_the_services_unless_told_otherwise() {
        assert_eq!(
            scratch_url("postgres://u:p@127.0.0.1:5432/smartpos", "smartpos_pgbench").expect("url"),
            "postgres://u:p@127.0.0.1:5432/smartpos_pgbench?sslmode=disable"
        );
        assert_eq!(
            scratch_url("postgres://u:p@db:5432/x?sslmode=require", "x_pgbench").expect("url"),
            "postgres://u:p@db:5432/x_pgbench?sslmode=require"
        );
    }

    #[test]
    fn reads_pgbench_report_lines() {
        let text = "number of failed transactions: 0 (0.000%)\nlatency average = 1.047 ms\ninitial connection time = 12.1 ms\ntps = 7641.337151 (without initial connection time)\n";
        assert_eq!(field(text, "tps = "), Some(7641.337151));
        assert_eq!(field(text, "latency average = "), Some(1.047));
        assert_eq!(field(text, "nope = "), None);
    }
}
