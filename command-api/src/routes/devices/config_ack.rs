//! `POST /v1/devices/me/config/ack`: a terminal reports the configuration version it applied.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use chrono::Utc;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::app::AppState;
use crate::commands::{Success, run_idempotent};
use crate::http::ApiError;
use crate::http::error::Problem;
use crate::http::extract::{ApiJson, DeviceCaller, IdempotencyKey};
use crate::store::outbox;
use events::DomainEvent;
use events::domain::DeviceConfigApplied;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConfigAck {
    /// The effective configuration version now running.
    pub version: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ConfigAckBody {
    pub device_id: uuid::Uuid,
    pub applied_version: i64,
}

#[utoipa::path(
    post, path = "/v1/devices/me/config/ack", tag = "devices",
    request_body = ConfigAck,
    params(("Idempotency-Key" = String, Header)),
    responses(
        (status = 200, description = "Recorded", body = ConfigAckBody),
        (status = 422, description = "Not a version this device was given", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn ack_config(
    State(state): State<AppState>,
    caller: DeviceCaller,
    key: IdempotencyKey,
    body: ApiJson<ConfigAck>,
) -> Result<Response, ApiError> {
    let ApiJson { value: req, fingerprint } = body;
    if req.version < 1 {
        return Err(ApiError::field("/version", "must be at least 1"));
    }
    let prefix = state.subject_prefix.clone();
    let scope = caller.store_scope();
    run_idempotent(&state, &caller, key, fingerprint, move |conn| {
        Box::pin(async move {
            let given: Option<i64> = sqlx::query_scalar("SELECT version FROM device_effective_config WHERE device_id = $1")
                .bind(scope.device_id)
                .fetch_optional(&mut *conn)
                .await?;
            if given.is_none_or(|v| req.version > v) {
                return Err(ApiError::field("/version", "this device was never given that version"));
            }
            let now = Utc::now();
            let seq: i64 = sqlx::query_scalar(
                "UPDATE devices SET applied_config_version = $2, event_seq = event_seq + 1 WHERE id = $1 RETURNING event_seq",
            )
            .bind(scope.device_id)
            .bind(req.version)
            .fetch_one(&mut *conn)
            .await?;
            let event = DomainEvent::DeviceConfigApplied(DeviceConfigApplied {
                device_id: scope.device_id,
                version: req.version,
                applied_at: now,
            });
            outbox::append(conn, &prefix, scope, seq - 1, &[event], now).await?;
            Success::json(StatusCode::OK, &ConfigAckBody { device_id: scope.device_id, applied_version: req.version })
        })
    })
    .await
}
