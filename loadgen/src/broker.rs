//! The broker's ceiling on this machine: pipelined JetStream publishes (every
//! PubAck awaited, a bounded window of unacknowledged ones) into a file-backed
//! stream like the event stream, then a durable pull consumer acknowledging
//! each message explicitly. A scratch stream, deleted afterwards.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use anyhow::Context;
use async_nats::jetstream::{self, consumer, stream};
use bytes::Bytes;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BrokerCeiling {
    pub messages: u64,
    pub message_bytes: usize,
    pub window: usize,
    pub publish_per_sec: f64,
    pub consume_per_sec: f64,
}

pub async fn measure(
    nats_url: &str,
    messages: u64,
    size: usize,
    window: usize,
) -> anyhow::Result<BrokerCeiling> {
    let client = async_nats::connect(nats_url).await.with_context(|| format!("connecting to {nats_url}"))?;
    let js = jetstream::new(client);
    let name = format!("BENCH_CEILING_{}", std::process::id());
    let subject = format!("bench.ceiling.{}", std::process::id());
    let _ = js.delete_stream(&name).await;
    let stream = js
        .create_stream(stream::Config {
            name: name.clone(),
            subjects: vec![format!("{subject}.>")],
            storage: stream::StorageType::File,
            duplicate_window: Duration::from_secs(120),
            ..Default::default()
        })
        .await
        .context("creating the scratch stream")?;
    let result = run(&js, &stream, &subject, messages, size, window).await;
    js.delete_stream(&name).await.context("deleting the scratch stream")?;
    result
}

async fn run(
    js: &jetstream::Context,
    stream: &stream::Stream,
    subject: &str,
    messages: u64,
    size: usize,
    window: usize,
) -> anyhow::Result<BrokerCeiling> {
    let payload = Bytes::from(vec![b'x'; size]);
    let subjects: Vec<String> = (0..16).map(|i| format!("{subject}.m{i}")).collect();
    let started = Instant::now();
    let mut pending = VecDeque::with_capacity(window);
    for i in 0..messages {
        if pending.len() >= window {
            let ack: async_nats::jetstream::context::PublishAckFuture =
                pending.pop_front().context("window")?;
            ack.await.context("awaiting a PubAck")?;
        }
        pending.push_back(
            js.publish(subjects[(i % 16) as usize].clone(), payload.clone()).await.context("publishing")?,
        );
        if i % 50_000 == 0 && i > 0 {
            eprintln!("[broker] published {i}/{messages}");
        }
    }
    for ack in pending {
        ack.await.context("awaiting a PubAck")?;
    }
    let publish_secs = started.elapsed().as_secs_f64();

    let consumer = stream
        .create_consumer(consumer::pull::Config {
            durable_name: Some("ceiling".into()),
            ack_policy: consumer::AckPolicy::Explicit,
            ..Default::default()
        })
        .await
        .context("creating the scratch consumer")?;
    let started = Instant::now();
    let mut received = 0u64;
    let mut delivery = consumer.stream().max_messages_per_batch(1_000).messages().await?;
    while received < messages {
        let message = delivery.next().await.context("consumer ended")?.map_err(|e| anyhow::anyhow!(e))?;
        message.ack().await.map_err(|e| anyhow::anyhow!(e))?;
        received += 1;
        if received.is_multiple_of(50_000) {
            eprintln!("[broker] consumed {received}/{messages}");
        }
    }
    let consume_secs = started.elapsed().as_secs_f64();
    Ok(BrokerCeiling {
        messages,
        message_bytes: size,
        window,
        publish_per_sec: messages as f64 / publish_secs,
        consume_per_sec: messages as f64 / consume_secs,
    })
}

/// Deletes every stream whose name starts with `<prefix>_`.
pub async fn delete_streams(nats_url: &str, prefix: &str) -> anyhow::Result<()> {
    let client = async_nats::connect(nats_url).await.with_context(|| format!("connecting to {nats_url}"))?;
    let js = jetstream::new(client);
    let mut names = js.stream_names();
    let mut doomed = Vec::new();
    while let Some(name) = names.next().await {
        let name = name.map_err(|e| anyhow::anyhow!(e))?;
        if name.starts_with(&format!("{prefix}_")) {
            doomed.push(name);
        }
    }
    for name in doomed {
        js.delete_stream(&name).await.with_context(|| format!("deleting stream {name}"))?;
        eprintln!("[reset] deleted stream {name}");
    }
    Ok(())
}
