//! `GET /v1/devices/{id}`: a terminal's status as the device-status projection sees it.

use axum::Json;
use axum::extract::{Path, State};
use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::app::AppState;
use crate::error::ApiError;
use crate::extract::Reader;
use crate::routes::path_id;
use platform::problem::Problem;

#[derive(Debug, Serialize, ToSchema, sqlx::FromRow)]
pub struct DeviceStatus {
    pub device_id: Uuid,
    #[serde(skip)]
    pub merchant_id: Uuid,
    pub store_id: Uuid,
    pub last_seen_at: DateTime<Utc>,
    pub last_order_id: Option<Uuid>,
    pub last_order_at: Option<DateTime<Utc>>,
    pub tokens_issued: i64,
    pub last_token_at: Option<DateTime<Utc>>,
    /// Configuration version the terminal reported applying.
    pub config_version: Option<i64>,
    pub config_applied_at: Option<DateTime<Utc>>,
}

#[utoipa::path(
    get, path = "/v1/devices/{id}", tag = "devices",
    params(("id" = Uuid, Path)),
    responses(
        (status = 200, description = "The device's status", body = DeviceStatus),
        (status = 404, description = "No such device for this reader", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn get_device(
    State(state): State<AppState>,
    Path(id): Path<String>,
    reader: Reader,
) -> Result<Json<DeviceStatus>, ApiError> {
    let device_id = path_id(&id, "device")?;
    let row = sqlx::query_as::<_, DeviceStatus>(
        "SELECT device_id, merchant_id, store_id, last_seen_at, last_order_id, last_order_at, tokens_issued, last_token_at,
                config_version, config_applied_at
           FROM rm_devices.device_status WHERE device_id = $1",
    )
    .bind(device_id)
    .fetch_optional(&state.pg)
    .await?;
    row.filter(|d| reader.sees(d.merchant_id, d.store_id)).map(Json).ok_or(ApiError::NotFound("device"))
}
