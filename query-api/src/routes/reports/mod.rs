//! `GET /v1/reports/{id}` and `GET /v1/reports/{id}/download`.

pub mod download;
pub mod get;

use uuid::Uuid;

use crate::app::AppState;
use crate::error::ApiError;
use crate::extract::Reader;

/// The report row, if it is this reader's merchant's.
pub async fn load(state: &AppState, reader: &Reader, id: Uuid) -> Result<get::Report, ApiError> {
    let report = sqlx::query_as::<_, get::Report>(
        "SELECT id AS report_id, merchant_id, store_id, kind, date_from, date_to, status, rows, error, file_path,
                created_at, completed_at
           FROM reports WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(&state.pg)
    .await?;
    report
        .filter(|r| r.merchant_id == reader.merchant_id && reader.store_id.is_none())
        .ok_or(ApiError::NotFound("report"))
}
