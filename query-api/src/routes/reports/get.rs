//! `GET /v1/reports/{id}`: a report's status.

use axum::Json;
use axum::extract::{Path, State};
use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::app::AppState;
use crate::error::ApiError;
use crate::extract::Reader;
use crate::routes::path_id;
use platform::problem::Problem;

#[derive(Debug, Serialize, ToSchema, sqlx::FromRow)]
pub struct Report {
    pub report_id: Uuid,
    #[serde(skip)]
    pub merchant_id: Uuid,
    pub store_id: Option<Uuid>,
    pub kind: String,
    pub date_from: NaiveDate,
    pub date_to: NaiveDate,
    /// `queued`, `running`, `done` or `failed`.
    pub status: String,
    pub rows: Option<i64>,
    pub error: Option<String>,
    #[serde(skip)]
    pub file_path: Option<String>,
    pub created_at: DateTime<Utc>,
    pub completed_at: Option<DateTime<Utc>>,
}

#[utoipa::path(
    get, path = "/v1/reports/{id}", tag = "reports",
    params(("id" = Uuid, Path)),
    responses(
        (status = 200, description = "The report's status", body = Report),
        (status = 404, description = "No such report for this merchant", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn get_report(
    State(state): State<AppState>,
    Path(id): Path<String>,
    reader: Reader,
) -> Result<Json<Report>, ApiError> {
    let id = path_id(&id, "report")?;
    super::load(&state, &reader, id).await.map(Json)
}
