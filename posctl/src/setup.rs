//! `posctl setup`: database, migrations and streams, idempotently.

use anyhow::Context;
use sqlx::{ConnectOptions, Connection, PgPool};
use std::path::Path;

use crate::nats_config::{self, Vars};

pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");

/// Creates the database named in `url` if it does not exist.
pub async fn create_database(url: &str) -> anyhow::Result<bool> {
    let options = crate::db::options(url)?;
    let name = options.get_database().unwrap_or("smartpos").to_owned();
    let mut admin = options.clone().database("postgres").connect().await.with_context(|| {
        format!("connecting to PostgreSQL at {}:{}", options.get_host(), options.get_port())
    })?;
    let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
        .bind(&name)
        .fetch_one(&mut admin)
        .await?;
    if !exists {
        let quoted = format!("\"{}\"", name.replace('"', "\"\""));
        sqlx::query(&format!("CREATE DATABASE {quoted}"))
            .execute(&mut admin)
            .await
            .with_context(|| format!("creating database {name}"))?;
    }
    admin.close().await.ok();
    Ok(!exists)
}

/// Applies every pending migration.
pub async fn migrate(pg: &PgPool) -> anyhow::Result<()> {
    MIGRATOR.run(pg).await.context("running migrations")
}

/// The whole set-up: database, migrations, streams. Returns a line per step.
pub async fn run(
    infra: &platform::InfraSettings,
    nats_dir: &Path,
    replicas: usize,
) -> anyhow::Result<Vec<String>> {
    let mut report = Vec::new();
    let created = create_database(&infra.database_url).await?;
    report.push(format!("database: {}", if created { "created" } else { "exists" }));
    let pg = crate::db::connect(&infra.database_url).await?;
    let before = applied(&pg).await;
    migrate(&pg).await?;
    let after = applied(&pg).await;
    pg.close().await;
    report.push(format!("migrations: {} applied now, {} in total", after - before, after));
    let nats = async_nats::connect(&infra.nats_url)
        .await
        .with_context(|| format!("connecting to NATS at {}", infra.nats_url))?;
    let js = async_nats::jetstream::new(nats);
    let vars = Vars {
        subject_prefix: infra.subject_prefix.clone(),
        stream_prefix: infra.stream_prefix.clone(),
        replicas,
    };
    for (stream, action) in nats_config::apply(&js, nats_dir, &vars).await? {
        report.push(format!("{stream}: {action}"));
    }
    Ok(report)
}

async fn applied(pg: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations WHERE success").fetch_one(pg).await.unwrap_or(0)
}
