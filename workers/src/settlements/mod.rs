//! Settlements: closing each store's business day.
//!
//! - [`schedule`]: finds days whose close (store time zone, close-of-day,
//!   grace period) has passed and enqueues one job per store and date.
//! - [`compute`]: settles a day from the write model: by payment method,
//!   counts and amounts of sales, tips, refunds and voids, and net; writes the
//!   settlement record and a CSV and publishes `settlement.completed`, all in
//!   one transaction with the booking marks, so a day is settled once.

pub mod compute;
pub mod schedule;

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Why a settlement runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Reason {
    /// The day closed; settles once.
    Scheduled,
    /// An operator asked again; produces a new version from the same rows.
    Rerun,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Scheduled => "scheduled",
            Self::Rerun => "rerun",
        }
    }
}

/// The work item of a settlement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SettlementJob {
    pub job_id: Uuid,
    pub merchant_id: Uuid,
    pub store_id: Uuid,
    pub business_date: NaiveDate,
    pub reason: Reason,
}

/// Commits `job` to the outbox in the caller's transaction (the relay publishes it).
pub async fn enqueue(
    conn: &mut sqlx::PgConnection,
    subject_prefix: &str,
    job: &SettlementJob,
) -> Result<(), sqlx::Error> {
    let kind = events::subjects::WorkKind::Settlement;
    sqlx::query("INSERT INTO outbox (event_id, subject, headers, payload) VALUES ($1, $2, $3, $4)")
        .bind(job.job_id)
        .bind(events::subjects::work_subject(subject_prefix, kind, job.merchant_id))
        .bind(sqlx::types::Json(events::work::headers(kind, job.job_id)))
        .bind(serde_json::to_vec(job).unwrap_or_default())
        .execute(&mut *conn)
        .await?;
    // Wakes the relay at commit (rare writes: no trigger on the hot path).
    sqlx::query("SELECT pg_notify('outbox', '')").execute(&mut *conn).await?;
    Ok(())
}
