//! `GET /v1/devices/me/config?after=<version>`: a terminal's configuration, by long poll.
//!
//! Answers at once when the device's effective configuration is newer than
//! `after`; otherwise waits until it is (woken by the device-sync worker's
//! notice, with a periodic re-check in case a notice is lost) or until the
//! wait ends (30 s, or `timeout_ms` if shorter), then answers 204.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use std::time::Duration;
use utoipa::{IntoParams, ToSchema};

use crate::app::AppState;
use crate::error::ApiError;
use crate::extract::{ApiQuery, Reader};
use platform::problem::Problem;

pub const MAX_WAIT: Duration = Duration::from_secs(30);
const RECHECK: Duration = Duration::from_secs(2);

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ConfigQuery {
    /// The version the terminal runs (0 or absent: none yet).
    pub after: Option<i64>,
    /// Wait at most this long, in milliseconds (capped at 30 000).
    pub timeout_ms: Option<u64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DeviceConfig {
    pub version: i64,
    #[schema(value_type = Object)]
    pub config: serde_json::Value,
}

#[utoipa::path(
    get, path = "/v1/devices/me/config", tag = "devices",
    params(ConfigQuery),
    responses(
        (status = 200, description = "A configuration newer than `after`", body = DeviceConfig),
        (status = 204, description = "Nothing newer within the wait"),
        (status = 403, description = "Not a device token", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn device_config(
    State(state): State<AppState>,
    reader: Reader,
    ApiQuery(q): ApiQuery<ConfigQuery>,
) -> Result<Response, ApiError> {
    let device = reader.device_id.ok_or(ApiError::Forbidden)?;
    let after = q.after.unwrap_or(0);
    if after < 0 {
        return Err(ApiError::param("after", "must not be negative"));
    }
    let wait = q.timeout_ms.map_or(MAX_WAIT, Duration::from_millis).min(MAX_WAIT);
    // Listen before looking, so a change between the two is not missed.
    let mut notices = state.config_changes.subscribe();
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let row: Option<(i64, serde_json::Value)> =
            sqlx::query_as("SELECT version, config FROM device_effective_config WHERE device_id = $1")
                .bind(device)
                .fetch_optional(&state.pg)
                .await?;
        if let Some((version, config)) = row.filter(|(v, _)| *v > after) {
            return Ok(Json(DeviceConfig { version, config }).into_response());
        }
        let recheck = tokio::time::sleep(RECHECK);
        tokio::pin!(recheck);
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => return Ok(StatusCode::NO_CONTENT.into_response()),
                _ = &mut recheck => break,
                notice = notices.recv() => match notice {
                    Ok((d, v)) if d == device && v > after => break,
                    Ok(_) => {}
                    Err(_) => break,
                },
            }
        }
    }
}
