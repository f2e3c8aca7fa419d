//! The settlement job: settle one store day (scheduled) or settle it again (re-run).

use anyhow::anyhow;
use futures_util::future::BoxFuture;
use sqlx::PgPool;
use std::path::PathBuf;

use crate::runtime::{Handler, Job, JobError};
use crate::settlements::{SettlementJob, compute};
use events::subjects::WorkKind;

pub struct SettlementHandler {
    pub pg: PgPool,
    pub subject_prefix: String,
    pub dir: PathBuf,
}

impl Handler for SettlementHandler {
    fn kind(&self) -> WorkKind {
        WorkKind::Settlement
    }

    fn handle<'a>(&'a self, job: &'a Job) -> BoxFuture<'a, Result<(), JobError>> {
        Box::pin(async move {
            let item: SettlementJob = serde_json::from_slice(&job.payload)
                .map_err(|e| JobError::Permanent(anyhow!("the settlement job does not parse: {e}")))?;
            let settled = compute::settle(
                &self.pg,
                &self.subject_prefix,
                &self.dir,
                item.store_id,
                item.business_date,
                item.reason,
            )
            .await
            .map_err(|e| match e.downcast_ref::<sqlx::Error>() {
                Some(_) => JobError::Transient(e),
                None if e.to_string().contains("never settled")
                    || e.to_string().contains("does not exist") =>
                {
                    JobError::Permanent(e)
                }
                None => JobError::Transient(e),
            })?;
            match settled {
                Some(s) => {
                    tracing::info!(store = %item.store_id, date = %item.business_date, version = s.version,
                    net = s.event.net, "settled")
                }
                None => tracing::info!(store = %item.store_id, date = %item.business_date, "already settled"),
            }
            Ok(())
        })
    }
}
