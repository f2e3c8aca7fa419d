//! The device-sync job: resolve the effective configuration of every device a change affects.
//!
//! Effective configuration = merchant settings, overridden by store
//! settings, overridden by device settings (key by key). A device whose
//! effective configuration changed gets the next version; after the commit
//! a core-NATS notice wakes the terminals long-polling for it (they also
//! re-check periodically, so a lost notice only delays them).

use anyhow::anyhow;
use futures_util::future::BoxFuture;
use serde_json::{Map, Value};
use sqlx::PgPool;
use uuid::Uuid;

use crate::runtime::{Handler, Job, JobError};
use events::subjects::WorkKind;
use events::work::DeviceSyncJob;

pub struct DeviceSyncHandler {
    pub pg: PgPool,
    pub nats: async_nats::Client,
    pub subject_prefix: String,
}

/// `{prefix}.device_config.{device}`: where version changes are announced.
pub fn notice_subject(prefix: &str, device_id: Uuid) -> String {
    format!("{prefix}.device_config.{device_id}")
}

impl Handler for DeviceSyncHandler {
    fn kind(&self) -> WorkKind {
        WorkKind::DeviceSync
    }

    fn handle<'a>(&'a self, job: &'a Job) -> BoxFuture<'a, Result<(), JobError>> {
        Box::pin(async move {
            let item: DeviceSyncJob = serde_json::from_slice(&job.payload)
                .map_err(|e| JobError::Permanent(anyhow!("the device-sync job does not parse: {e}")))?;
            let changed = self.resolve(&item).await.map_err(|e| JobError::Transient(e.into()))?;
            for (device, version) in changed {
                if let Err(e) = self
                    .nats
                    .publish(notice_subject(&self.subject_prefix, device), version.to_string().into())
                    .await
                {
                    tracing::warn!(error = %e, "config notice not sent; pollers will notice on their own");
                }
            }
            Ok(())
        })
    }
}

fn merge(layers: &[Option<Value>]) -> Value {
    let mut out = Map::new();
    for layer in layers.iter().flatten() {
        if let Value::Object(map) = layer {
            for (k, v) in map {
                out.insert(k.clone(), v.clone());
            }
        }
    }
    Value::Object(out)
}

impl DeviceSyncHandler {
    /// Recomputes the affected devices; returns those whose version moved.
    async fn resolve(&self, job: &DeviceSyncJob) -> Result<Vec<(Uuid, i64)>, sqlx::Error> {
        let mut tx = self.pg.begin().await?;
        let devices: Vec<(Uuid, Uuid)> = sqlx::query_as(
            "SELECT id, store_id FROM devices
              WHERE merchant_id = $1 AND ($2::uuid IS NULL OR store_id = $2) AND ($3::uuid IS NULL OR id = $3)",
        )
        .bind(job.merchant_id)
        .bind(job.store_id)
        .bind(job.device_id)
        .fetch_all(&mut *tx)
        .await?;
        let settings = |scope: &'static str, id: Uuid| {
            sqlx::query_scalar::<_, Value>(
                "SELECT settings FROM device_configs WHERE scope_type = $1 AND scope_id = $2",
            )
            .bind(scope)
            .bind(id)
        };
        let merchant = settings("merchant", job.merchant_id).fetch_optional(&mut *tx).await?;
        let mut changed = Vec::new();
        for (device, store) in devices {
            let store_layer = settings("store", store).fetch_optional(&mut *tx).await?;
            let device_layer = settings("device", device).fetch_optional(&mut *tx).await?;
            let effective = merge(&[merchant.clone(), store_layer, device_layer]);
            let version: Option<i64> = sqlx::query_scalar(
                "INSERT INTO device_effective_config (device_id, merchant_id, store_id, version, config)
                 VALUES ($1, $2, $3, 1, $4)
                 ON CONFLICT (device_id) DO UPDATE
                   SET version = device_effective_config.version + 1, config = EXCLUDED.config, updated_at = now()
                   WHERE device_effective_config.config IS DISTINCT FROM EXCLUDED.config
                 RETURNING version",
            )
            .bind(device)
            .bind(job.merchant_id)
            .bind(store)
            .bind(&effective)
            .fetch_optional(&mut *tx)
            .await?;
            if let Some(v) = version {
                changed.push((device, v));
            }
        }
        tx.commit().await?;
        Ok(changed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn narrower_scopes_override_key_by_key() {
        let merged = merge(&[
            Some(json!({"footer": "Merchant", "tax_display": "inclusive"})),
            Some(json!({"footer": "Store"})),
            None,
        ]);
        assert_eq!(merged, json!({"footer": "Store", "tax_display": "inclusive"}));
    }
}
