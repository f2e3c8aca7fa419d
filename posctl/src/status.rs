//! `posctl status`: projections, outbox and streams at a glance.

use anyhow::Context;
use serde::Serialize;
use std::fmt::Write;

#[derive(Debug, Serialize)]
pub struct Report {
    pub projections: Vec<projectors::app::Lag>,
    pub outbox_backlog: i64,
    pub outbox_oldest_seconds: f64,
    pub streams: Vec<StreamLine>,
}

#[derive(Debug, Serialize)]
pub struct StreamLine {
    pub name: String,
    pub messages: u64,
    pub last_seq: u64,
    pub consumers: Vec<ConsumerLine>,
}

#[derive(Debug, Serialize)]
pub struct ConsumerLine {
    pub name: String,
    /// Messages not yet delivered to it.
    pub pending: u64,
    /// Delivered and not yet acknowledged.
    pub ack_pending: usize,
    /// Delivered more than once and still unacknowledged.
    pub redelivered: usize,
}

pub async fn collect(infra: &platform::InfraSettings) -> anyhow::Result<Report> {
    let pg = crate::db::connect(&infra.database_url).await?;
    let nats = async_nats::connect(&infra.nats_url).await.context("connecting to NATS")?;
    let js = async_nats::jetstream::new(nats);
    let events = format!("{}_EVENTS", infra.stream_prefix);
    let projections = projectors::app::lag(&pg, &js, &events).await?;
    let (outbox_backlog, oldest) = command_api::relay::backlog(&pg).await?;
    let mut streams = Vec::new();
    for suffix in ["EVENTS", "WORK_RECEIPTS", "WORK_SETTLEMENTS", "WORK_REPORTS", "WORK_DEVICE_SYNC", "DLQ"] {
        let name = format!("{}_{suffix}", infra.stream_prefix);
        if let Ok(mut s) = js.get_stream(&name).await
            && let Ok(info) = s.info().await
        {
            let (messages, last_seq) = (info.state.messages, info.state.last_sequence);
            let mut consumers = Vec::new();
            let mut names = s.consumer_names();
            while let Some(Ok(consumer)) = futures_util::StreamExt::next(&mut names).await {
                if let Ok(mut c) =
                    s.get_consumer::<async_nats::jetstream::consumer::pull::Config>(&consumer).await
                    && let Ok(ci) = c.info().await
                {
                    consumers.push(ConsumerLine {
                        name: consumer,
                        pending: ci.num_pending,
                        ack_pending: ci.num_ack_pending,
                        redelivered: ci.num_redelivered,
                    });
                }
            }
            streams.push(StreamLine { name, messages, last_seq, consumers });
        }
    }
    pg.close().await;
    Ok(Report { projections, outbox_backlog, outbox_oldest_seconds: oldest.unwrap_or(0.0), streams })
}

impl Report {
    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{:<20} {:>12} {:>12} {:>10}  state",
            "projection", "position", "behind", "seconds"
        );
        for p in &self.projections {
            let state = p.stalled.as_deref().map_or("running".to_owned(), |r| format!("STALLED: {r}"));
            let _ = writeln!(
                out,
                "{:<20} {:>12} {:>12} {:>10.1}  {state}",
                p.projection, p.checkpoint, p.events, p.seconds
            );
        }
        let _ = writeln!(
            out,
            "\noutbox: {} unpublished, oldest {:.1}s",
            self.outbox_backlog, self.outbox_oldest_seconds
        );
        let _ = writeln!(out, "\n{:<28} {:>12} {:>12}", "stream", "messages", "last seq");
        for s in &self.streams {
            let _ = writeln!(out, "{:<28} {:>12} {:>12}", s.name, s.messages, s.last_seq);
            for c in &s.consumers {
                let _ = writeln!(
                    out,
                    "  consumer {:<30} pending {:>8}  unacked {:>6}  redelivered {:>6}",
                    c.name, c.pending, c.ack_pending, c.redelivered
                );
            }
        }
        out
    }
}
