//! Applying `nats-config/` to a JetStream server, idempotently.

use anyhow::{Context, anyhow};
use async_nats::jetstream::{self, consumer::pull, stream};
use std::path::{Path, PathBuf};

/// What fills the placeholders of the config files.
#[derive(Debug, Clone)]
pub struct Vars {
    pub subject_prefix: String,
    pub stream_prefix: String,
    pub replicas: usize,
}

/// The config directory: `NATS_CONFIG_DIR`, else `./nats-config`, else the
/// one beside this crate's sources (running from a checkout).
pub fn default_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("NATS_CONFIG_DIR") {
        return PathBuf::from(dir);
    }
    let local = PathBuf::from("nats-config");
    if local.is_dir() {
        return local;
    }
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../nats-config"))
}

/// A durable consumer definition: the stream it reads and its config.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct ConsumerFile {
    pub stream: String,
    pub config: pull::Config,
}

/// Reads every `<kind>/*.json` of `dir`, placeholders filled, in file-name order.
fn load<T: serde::de::DeserializeOwned>(dir: &Path, kind: &str, vars: &Vars) -> anyhow::Result<Vec<T>> {
    let sub = dir.join(kind);
    if !sub.is_dir() {
        return Ok(Vec::new());
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(&sub)
        .with_context(|| format!("reading {}", sub.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    files
        .iter()
        .map(|path| {
            let text =
                std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
            let text = text
                .replace("${SUBJECT_PREFIX}", &vars.subject_prefix)
                .replace("${STREAM_PREFIX}", &vars.stream_prefix)
                .replace("${REPLICAS}", &vars.replicas.to_string());
            serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
        })
        .collect()
}

/// Every `streams/*.json`.
pub fn load_streams(dir: &Path, vars: &Vars) -> anyhow::Result<Vec<stream::Config>> {
    load(dir, "streams", vars)
}

/// Every `consumers/*.json`.
pub fn load_consumers(dir: &Path, vars: &Vars) -> anyhow::Result<Vec<ConsumerFile>> {
    load(dir, "consumers", vars)
}

/// Creates missing streams and updates changed ones; returns what it did per stream.
pub async fn apply(
    js: &jetstream::Context,
    dir: &Path,
    vars: &Vars,
) -> anyhow::Result<Vec<(String, &'static str)>> {
    let mut report = Vec::new();
    for config in load_streams(dir, vars)? {
        let name = config.name.clone();
        let action = match js.get_stream(&name).await {
            Ok(mut existing) => {
                let current = existing.info().await.map(|i| i.config.clone()).ok();
                if current.as_ref().is_some_and(|c| same(c, &config)) {
                    "unchanged"
                } else {
                    js.update_stream(config).await.map_err(|e| anyhow!("updating stream {name}: {e}"))?;
                    "updated"
                }
            }
            Err(_) => {
                js.create_stream(config).await.map_err(|e| anyhow!("creating stream {name}: {e}"))?;
                "created"
            }
        };
        tracing::info!(stream = %name, action, "stream applied");
        report.push((name, action));
    }
    for file in load_consumers(dir, vars)? {
        let name = file.config.durable_name.clone().unwrap_or_default();
        let stream = js
            .get_stream(&file.stream)
            .await
            .map_err(|e| anyhow!("stream {} of consumer {name}: {e}", file.stream))?;
        let existing =
            stream.get_consumer::<pull::Config>(&name).await.ok().map(|c| c.cached_info().config.clone());
        let action = match existing {
            Some(current) if same_consumer(&current, &file.config) => "unchanged",
            Some(current) => {
                // Runners reposition their consumer at their checkpoint; keep that position.
                let mut config = file.config;
                config.deliver_policy = current.deliver_policy;
                stream.update_consumer(config).await.map_err(|e| anyhow!("updating consumer {name}: {e}"))?;
                "updated"
            }
            None => {
                stream
                    .create_consumer(file.config)
                    .await
                    .map_err(|e| anyhow!("creating consumer {name}: {e}"))?;
                "created"
            }
        };
        report.push((format!("{}/{name}", file.stream), action));
    }
    Ok(report)
}

fn same_consumer(server: &async_nats::jetstream::consumer::Config, file: &pull::Config) -> bool {
    server.description == file.description
        && server.ack_wait == file.ack_wait
        && server.max_deliver == file.max_deliver
        && server.filter_subject == file.filter_subject
        && server.max_ack_pending == file.max_ack_pending
        && server.ack_policy == file.ack_policy
}

/// Compares the fields our files set (the server fills in others).
fn same(a: &stream::Config, b: &stream::Config) -> bool {
    a.subjects == b.subjects
        && a.retention == b.retention
        && a.storage == b.storage
        && a.discard == b.discard
        && a.num_replicas == b.num_replicas
        && a.max_age == b.max_age
        && a.max_bytes == b.max_bytes
        && a.max_messages == b.max_messages
        && a.max_message_size == b.max_message_size
        && a.duplicate_window == b.duplicate_window
        && a.description == b.description
}
