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
    let pg = sqlx::PgPool::connect(&infra.database_url).await.context("connecting to the database")?;
    let nats = async_nats::connect(&infra.nats_url).await.context("connecting to NATS")?;
    Ok(Source {
        pg,
        js: async_nats::jetstream::new(nats),
        stream: format!("{}_EVENTS", infra.stream_prefix),
        subject_prefix: infra.subject_prefix.clone(),
        batch: 1000,
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
