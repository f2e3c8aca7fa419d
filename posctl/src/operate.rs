//! Plumbing of `posctl rebuild` and `posctl replay`: connections and progress output.

use anyhow::{Context, anyhow};
use projectors::Projection;
use projectors::rebuild::{Progress, Source};
use std::time::{Duration, Instant};

pub fn projection(name: &str) -> anyhow::Result<Projection> {
    Projection::parse(name).ok_or_else(|| {
        let known: Vec<&str> = Projection::ALL.iter().map(|p| p.name()).collect();
        anyhow!("unknown projection `{name}`; known: {}", known.join(", "))
    })
}

pub async fn source(infra: &platform::InfraSettings) -> anyhow::Result<Source> {
    let pg = crate::db::connect(&infra.database_url).await?;
    let nats = async_nats::connect(&infra.nats_url).await.context("connecting to NATS")?;
    Ok(Source {
        pg,
        js: async_nats::jetstream::new(nats),
        stream: format!("{}_EVENTS", infra.stream_prefix),
        subject_prefix: infra.subject_prefix.clone(),
        batch: 5000,
        stall_limit: projectors::rebuild::STALL_LIMIT,
    })
}

/// Prints a progress line on stderr at most once a second.
pub fn printer(what: &'static str) -> impl FnMut(&Progress) {
    let mut last: Option<Instant> = None;
    move |p: &Progress| {
        if last.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
            eprintln!("{what}: {}", p.line());
            last = Some(Instant::now());
        }
    }
}

/// Enqueues a re-run of a settled day (the workers write the new version).
pub async fn resettle(
    infra: &platform::InfraSettings,
    store: uuid::Uuid,
    date: chrono::NaiveDate,
) -> anyhow::Result<uuid::Uuid> {
    let pg = crate::db::connect(&infra.database_url).await?;
    let merchant_id: uuid::Uuid = sqlx::query_scalar("SELECT merchant_id FROM stores WHERE id = $1")
        .bind(store)
        .fetch_optional(&pg)
        .await?
        .ok_or_else(|| anyhow!("no store {store}"))?;
    let settled: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM settlements WHERE store_id = $1 AND business_date = $2)",
    )
    .bind(store)
    .bind(date)
    .fetch_one(&pg)
    .await?;
    anyhow::ensure!(settled, "{date} of store {store} was never settled; nothing to re-run");
    let job = workers::settlements::SettlementJob {
        job_id: uuid::Uuid::now_v7(),
        merchant_id,
        store_id: store,
        business_date: date,
        reason: workers::settlements::Reason::Rerun,
    };
    let mut tx = pg.begin().await?;
    workers::settlements::enqueue(&mut tx, &infra.subject_prefix, &job).await?;
    tx.commit().await?;
    Ok(job.job_id)
}
