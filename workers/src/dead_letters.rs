//! The dead-letter stream: parking failed work items, and listing, showing
//! and redriving them for operators.
//!
//! A dead letter is the original payload and headers plus `dlq-*` headers:
//! original subject, stream and sequence, attempts, error, kind, merchant
//! and time. Its `Nats-Msg-Id` is derived from the original stream and
//! sequence, so parking the same message twice stores it once. A redrive
//! republishes the original to its original subject under a new message id
//! and records who did it; the dead letter stays, marked redriven.

use anyhow::{Context, anyhow};
use async_nats::HeaderMap;
use async_nats::jetstream::{self, message::PublishMessage};
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

use events::subjects::WorkKind;

pub const ORIGINAL_SUBJECT: &str = "dlq-original-subject";
pub const ORIGINAL_STREAM: &str = "dlq-original-stream";
pub const ORIGINAL_SEQ: &str = "dlq-original-seq";
pub const ATTEMPTS: &str = "dlq-attempts";
pub const ERROR: &str = "dlq-error";
pub const KIND: &str = "dlq-kind";
pub const FAILED_AT: &str = "dlq-failed-at";

/// `{prefix}.dlq.{kind}.{merchant}`; the merchant is the original subject's last token.
fn dlq_subject(prefix: &str, kind: WorkKind, original_subject: &str) -> String {
    let merchant = original_subject.rsplit('.').next().unwrap_or("unknown");
    format!("{prefix}.dlq.{}.{merchant}", kind.token())
}

/// A header value without line breaks, bounded, so it can never break the protocol.
fn header_safe(value: &str) -> String {
    let flat: String = value.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    flat.chars().take(500).collect()
}

/// Copies `msg` to the dead-letter stream and waits for the PubAck.
pub async fn park(
    js: &jetstream::Context,
    prefix: &str,
    stream: &str,
    kind: WorkKind,
    msg: &jetstream::Message,
    attempts: u32,
    error: &str,
) -> anyhow::Result<()> {
    let info = msg.info().map_err(|e| anyhow!("message info: {e}"))?;
    let mut headers = HeaderMap::new();
    if let Some(original) = &msg.headers {
        for (name, values) in original.iter() {
            let name: &str = name.as_ref();
            if name != "Nats-Msg-Id" {
                for v in values {
                    headers.append(name, v.as_str());
                }
            }
        }
    }
    headers.insert(ORIGINAL_SUBJECT, msg.subject.as_str());
    headers.insert(ORIGINAL_STREAM, stream);
    headers.insert(ORIGINAL_SEQ, info.stream_sequence.to_string().as_str());
    headers.insert(ATTEMPTS, attempts.to_string().as_str());
    headers.insert(ERROR, header_safe(error).as_str());
    headers.insert(KIND, kind.token());
    headers.insert(FAILED_AT, Utc::now().to_rfc3339().as_str());
    let publish = PublishMessage::build()
        .headers(headers)
        .message_id(format!("dlq:{stream}:{}", info.stream_sequence))
        .payload(msg.payload.clone());
    js.send_publish(dlq_subject(prefix, kind, &msg.subject), publish)
        .await
        .context("publishing a dead letter")?
        .await
        .context("awaiting the dead letter's PubAck")?;
    Ok(())
}

/// One dead letter as operators see it.
#[derive(Debug, Clone, Serialize)]
pub struct DeadLetter {
    /// Sequence in the dead-letter stream: the id `show` and `redrive` take.
    pub seq: u64,
    pub kind: String,
    pub merchant: String,
    pub job_id: Option<Uuid>,
    pub original_subject: String,
    pub original_seq: u64,
    pub attempts: u32,
    pub error: String,
    pub failed_at: Option<DateTime<Utc>>,
    pub redriven_by: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload: Option<serde_json::Value>,
}

/// What to list.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub kind: Option<String>,
    pub merchant: Option<String>,
    pub error_contains: Option<String>,
    pub since: Option<DateTime<Utc>>,
}

impl Filter {
    fn matches(&self, d: &DeadLetter) -> bool {
        self.kind.as_ref().is_none_or(|k| &d.kind == k)
            && self.merchant.as_ref().is_none_or(|m| &d.merchant == m)
            && self.error_contains.as_ref().is_none_or(|e| d.error.to_lowercase().contains(&e.to_lowercase()))
            && self.since.is_none_or(|s| d.failed_at.is_some_and(|t| t >= s))
    }
}

pub struct DeadLetters {
    pub js: jetstream::Context,
    pub pg: PgPool,
    pub stream_prefix: String,
}

impl DeadLetters {
    fn stream(&self) -> String {
        format!("{}_DLQ", self.stream_prefix)
    }

    /// Every dead letter matching `filter`, oldest first.
    pub async fn list(&self, filter: &Filter) -> anyhow::Result<Vec<DeadLetter>> {
        let mut stream = self.js.get_stream(self.stream()).await?;
        let state = stream.info().await?.state.clone();
        let mut out = Vec::new();
        if state.messages == 0 {
            return Ok(out);
        }
        for seq in state.first_sequence..=state.last_sequence {
            if let Some(d) = self.load(&stream, seq, false).await?
                && filter.matches(&d)
            {
                out.push(d);
            }
        }
        Ok(out)
    }

    /// One dead letter with its payload.
    pub async fn show(&self, seq: u64) -> anyhow::Result<DeadLetter> {
        let stream = self.js.get_stream(self.stream()).await?;
        self.load(&stream, seq, true).await?.ok_or_else(|| anyhow!("no dead letter {seq}"))
    }

    async fn load(
        &self,
        stream: &jetstream::stream::Stream,
        seq: u64,
        payload: bool,
    ) -> anyhow::Result<Option<DeadLetter>> {
        let Ok(msg) = stream.get_raw_message(seq).await else { return Ok(None) };
        let h = |name: &str| msg.headers.get(name).map(|v| v.as_str().to_owned()).unwrap_or_default();
        let original_subject = h(ORIGINAL_SUBJECT);
        let redriven_by: Option<String> = sqlx::query_scalar(
            "SELECT redriven_by FROM dead_letter_redrives WHERE dlq_seq = $1 ORDER BY id DESC LIMIT 1",
        )
        .bind(seq as i64)
        .fetch_optional(&self.pg)
        .await?;
        Ok(Some(DeadLetter {
            seq,
            kind: h(KIND),
            merchant: original_subject.rsplit('.').next().unwrap_or_default().to_owned(),
            job_id: Uuid::parse_str(&h(events::work::JOB_ID)).ok(),
            original_subject,
            original_seq: h(ORIGINAL_SEQ).parse().unwrap_or(0),
            attempts: h(ATTEMPTS).parse().unwrap_or(0),
            error: h(ERROR),
            failed_at: DateTime::parse_from_rfc3339(&h(FAILED_AT)).ok().map(|t| t.with_timezone(&Utc)),
            redriven_by,
            payload: payload.then(|| {
                serde_json::from_slice(&msg.payload)
                    .unwrap_or_else(|_| serde_json::Value::String("<binary>".into()))
            }),
        }))
    }

    /// Republishes dead letter `seq` to its original subject (unless `dry_run`) and records who did it.
    pub async fn redrive(&self, seq: u64, operator: &str, dry_run: bool) -> anyhow::Result<DeadLetter> {
        let stream = self.js.get_stream(self.stream()).await?;
        let letter = self.load(&stream, seq, false).await?.ok_or_else(|| anyhow!("no dead letter {seq}"))?;
        if dry_run {
            return Ok(letter);
        }
        let msg = stream.get_raw_message(seq).await?;
        let mut headers = HeaderMap::new();
        for (name, values) in msg.headers.iter() {
            let name: &str = name.as_ref();
            if !name.starts_with("dlq-") && name != "Nats-Msg-Id" {
                for v in values {
                    headers.append(name, v.as_str());
                }
            }
        }
        let publish = PublishMessage::build()
            .headers(headers)
            .message_id(format!("redrive:{}:{seq}", self.stream()))
            .payload(msg.payload.clone());
        self.js
            .send_publish(letter.original_subject.clone(), publish)
            .await
            .context("republishing")?
            .await
            .context("awaiting the redrive's PubAck")?;
        sqlx::query(
            "INSERT INTO dead_letter_redrives (dlq_seq, job_id, kind, redriven_by) VALUES ($1, $2, $3, $4)",
        )
        .bind(seq as i64)
        .bind(letter.job_id)
        .bind(&letter.kind)
        .bind(operator)
        .execute(&self.pg)
        .await?;
        Ok(DeadLetter { redriven_by: Some(operator.to_owned()), ..letter })
    }
}
