//! `POST /v1/config`: the portal sets configuration for its merchant, a store or a device.
//!
//! Settings are a JSON object; a device runs the merge of its merchant's,
//! its store's and its own settings (the narrower scope wins per key). Each
//! change raises that scope's version and, in the same transaction, enqueues
//! device-sync work that resolves every affected device.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde::{Deserialize, Serialize};
use sqlx::types::Json;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::app::AppState;
use crate::commands::{Success, run_idempotent};
use crate::http::ApiError;
use crate::http::error::Problem;
use crate::http::extract::{ApiJson, IdempotencyKey, PortalCaller};
use crate::store::outbox;
use events::subjects::{WorkKind, work_subject};
use events::work::DeviceSyncJob;

pub const MAX_KEYS: usize = 100;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetConfig {
    /// Only this store's devices (else the whole merchant).
    pub store_id: Option<Uuid>,
    /// Only this device.
    pub device_id: Option<Uuid>,
    /// Keys and values the terminals understand; replaces this scope's previous settings.
    #[schema(value_type = Object)]
    pub settings: serde_json::Map<String, serde_json::Value>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ConfigBody {
    #[schema(example = "store")]
    pub scope: &'static str,
    pub scope_id: Uuid,
    /// This scope's version after the change.
    pub version: i64,
}

#[utoipa::path(
    post, path = "/v1/config", tag = "devices",
    request_body = SetConfig,
    params(("Idempotency-Key" = String, Header)),
    responses(
        (status = 200, description = "Configuration stored; devices are being synced", body = ConfigBody),
        (status = 403, description = "Not a portal token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such store or device for this merchant", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid settings", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn set_config(
    State(state): State<AppState>,
    caller: PortalCaller,
    key: IdempotencyKey,
    body: ApiJson<SetConfig>,
) -> Result<Response, ApiError> {
    let ApiJson { value: req, fingerprint } = body;
    if req.settings.len() > MAX_KEYS {
        return Err(ApiError::field("/settings", &format!("at most {MAX_KEYS} keys")));
    }
    if req.store_id.is_some() && req.device_id.is_some() {
        return Err(ApiError::field("/device_id", "give a store or a device, not both"));
    }
    let merchant_id = caller.merchant_id;
    let prefix = state.subject_prefix.clone();
    run_idempotent(&state, &caller, key, fingerprint, move |conn| {
        Box::pin(async move {
            let (scope, scope_id) = match (req.store_id, req.device_id) {
                (Some(store), _) => ("store", store),
                (_, Some(device)) => ("device", device),
                (None, None) => ("merchant", merchant_id),
            };
            let owned: bool = match scope {
                "store" => sqlx::query_scalar(
                    "SELECT EXISTS (SELECT 1 FROM stores WHERE id = $1 AND merchant_id = $2)",
                ),
                "device" => sqlx::query_scalar(
                    "SELECT EXISTS (SELECT 1 FROM devices WHERE id = $1 AND merchant_id = $2)",
                ),
                _ => sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM merchants WHERE id = $1 AND id = $2)"),
            }
            .bind(scope_id)
            .bind(merchant_id)
            .fetch_one(&mut *conn)
            .await?;
            if !owned {
                return Err(ApiError::NotFound(scope));
            }
            let version: i64 = sqlx::query_scalar(
                "INSERT INTO device_configs (scope_type, scope_id, merchant_id, version, settings)
                 VALUES ($1, $2, $3, 1, $4)
                 ON CONFLICT (scope_type, scope_id) DO UPDATE
                   SET version = device_configs.version + 1, settings = EXCLUDED.settings, updated_at = now()
                 RETURNING version",
            )
            .bind(scope)
            .bind(scope_id)
            .bind(merchant_id)
            .bind(Json(&req.settings))
            .fetch_one(&mut *conn)
            .await?;
            let job = DeviceSyncJob {
                job_id: Uuid::now_v7(),
                merchant_id,
                store_id: req.store_id,
                device_id: req.device_id,
            };
            let payload = serde_json::to_vec(&job).map_err(|e| ApiError::Internal(e.into()))?;
            let subject = work_subject(&prefix, WorkKind::DeviceSync, merchant_id);
            outbox::append_work(
                conn,
                &subject,
                job.job_id,
                events::work::headers(WorkKind::DeviceSync, job.job_id),
                payload,
            )
            .await?;
            Success::json(StatusCode::OK, &ConfigBody { scope, scope_id, version })
        })
    })
    .await
}
