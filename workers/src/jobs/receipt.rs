//! The receipt job: render, store, deliver by e-mail and/or SMS, once per channel.
//!
//! Each successful channel is recorded in `receipts` before the job is
//! acknowledged; a retry (after a failure on the other channel, or a worker
//! killed mid-job) skips the channels already delivered.

use crate::receipts::delivery::{Mailer, Webhook};
use crate::receipts::render;
use crate::receipts::storage::Store;
use crate::runtime::{Handler, Job, JobError};
use anyhow::anyhow;
use events::subjects::WorkKind;
use events::work::ReceiptJob;
use futures_util::future::BoxFuture;
use sqlx::PgPool;

pub struct ReceiptHandler {
    pub pg: PgPool,
    pub store: Store,
    pub mailer: Option<Mailer>,
    pub webhook: Option<Webhook>,
}

impl Handler for ReceiptHandler {
    fn kind(&self) -> WorkKind {
        WorkKind::Receipt
    }

    fn handle<'a>(&'a self, job: &'a Job) -> BoxFuture<'a, Result<(), JobError>> {
        Box::pin(self.run(job))
    }
}

fn transient<E: Into<anyhow::Error>>(e: E) -> JobError {
    JobError::Transient(e.into())
}

impl ReceiptHandler {
    async fn run(&self, job: &Job) -> Result<(), JobError> {
        let item: ReceiptJob = serde_json::from_slice(&job.payload)
            .map_err(|e| JobError::Permanent(anyhow!("the receipt job does not parse: {e}")))?;
        let receipt = render::render(&self.pg, item.order_id)
            .await
            .map_err(transient)?
            .ok_or_else(|| JobError::Permanent(anyhow!("order {} does not exist", item.order_id)))?;
        let stored = self.store.store(item.merchant_id, item.order_id, &receipt).await.map_err(transient)?;
        let subject = format!("Your receipt ({})", &item.order_id.to_string()[..8]);
        if let Some(email) = &item.email
            && !self.delivered(job, "email").await?
        {
            let mailer =
                self.mailer.as_ref().ok_or_else(|| JobError::Permanent(anyhow!("no SMTP_URL configured")))?;
            mailer.send(item.job_id, email, &subject, &receipt).await?;
            self.record(job, &item, "email", &stored).await?;
        }
        if let Some(phone) = &item.phone
            && !self.delivered(job, "sms").await?
        {
            let webhook = self
                .webhook
                .as_ref()
                .ok_or_else(|| JobError::Permanent(anyhow!("no RECEIPT_WEBHOOK_URL configured")))?;
            webhook.send(item.job_id, phone, &receipt).await?;
            self.record(job, &item, "sms", &stored).await?;
        }
        Ok(())
    }

    async fn delivered(&self, job: &Job, channel: &str) -> Result<bool, JobError> {
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM receipts WHERE job_id = $1 AND channel = $2)")
            .bind(job.job_id)
            .bind(channel)
            .fetch_one(&self.pg)
            .await
            .map_err(transient)
    }

    async fn record(
        &self,
        job: &Job,
        item: &ReceiptJob,
        channel: &str,
        stored: &str,
    ) -> Result<(), JobError> {
        sqlx::query(
            "INSERT INTO receipts (job_id, order_id, merchant_id, channel, stored_at) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT DO NOTHING",
        )
        .bind(job.job_id)
        .bind(item.order_id)
        .bind(item.merchant_id)
        .bind(channel)
        .bind(stored)
        .execute(&self.pg)
        .await
        .map_err(transient)?;
        metrics::counter!("receipts_delivered_total", "channel" => channel.to_owned()).increment(1);
        Ok(())
    }
}
