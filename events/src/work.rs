//! Work items: jobs for the workers, on work-queue streams.
//!
//! Domain events feed projections; work items feed workers. A work item is
//! committed through the outbox with the change that causes it, published
//! with `Nats-Msg-Id` = its job id, and consumed once by its worker. The job
//! id is also the idempotency key the worker hands to providers, so a retried
//! delivery is not delivered twice. Replaying domain events never creates
//! work items.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::subjects::WorkKind;

/// Header naming the job kind (`receipts`, ...).
pub const JOB_KIND: &str = "job-kind";
/// Header carrying the job id.
pub const JOB_ID: &str = "job-id";

/// Send the customer a receipt for a completed order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReceiptJob {
    pub job_id: Uuid,
    pub order_id: Uuid,
    pub merchant_id: Uuid,
    pub store_id: Uuid,
    /// Customer contact: personal data, never logged.
    pub email: Option<String>,
    pub phone: Option<String>,
}

/// Headers every work item carries.
pub fn headers(kind: WorkKind, job_id: Uuid) -> Vec<(String, String)> {
    vec![(JOB_KIND.to_owned(), kind.token().to_owned()), (JOB_ID.to_owned(), job_id.to_string())]
}

/// Resolve the effective configuration of the devices a change affects.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceSyncJob {
    pub job_id: Uuid,
    pub merchant_id: Uuid,
    /// Set for a store-level change.
    pub store_id: Option<Uuid>,
    /// Set for a device-level change.
    pub device_id: Option<Uuid>,
}

/// Produce a report's CSV.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportJob {
    pub job_id: Uuid,
    pub report_id: Uuid,
    pub merchant_id: Uuid,
}
