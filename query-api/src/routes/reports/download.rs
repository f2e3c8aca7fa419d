//! `GET /v1/reports/{id}/download`: the CSV, streamed from disk.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use tokio_util::io::ReaderStream;

use crate::app::AppState;
use crate::error::ApiError;
use crate::extract::Reader;
use crate::routes::path_id;
use platform::problem::Problem;

#[utoipa::path(
    get, path = "/v1/reports/{id}/download", tag = "reports",
    params(("id" = uuid::Uuid, Path)),
    responses(
        (status = 200, description = "The report as CSV", content_type = "text/csv"),
        (status = 404, description = "No such report for this merchant", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Not ready yet (or failed)", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn download_report(
    State(state): State<AppState>,
    Path(id): Path<String>,
    reader: Reader,
) -> Result<Response, ApiError> {
    let id = path_id(&id, "report")?;
    let report = super::load(&state, &reader, id).await?;
    let path = match (report.status.as_str(), report.file_path) {
        ("done", Some(path)) => path,
        (status, _) => {
            return Err(ApiError::NotReady(if status == "failed" {
                "the report failed"
            } else {
                "the report is not ready yet"
            }));
        }
    };
    let file = tokio::fs::File::open(&path)
        .await
        .map_err(|e| ApiError::Internal(anyhow::anyhow!("report file {path}: {e}")))?;
    let disposition = format!("attachment; filename=\"report-{id}.csv\"");
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_owned()),
            (header::CONTENT_DISPOSITION, disposition),
        ],
        Body::from_stream(ReaderStream::new(file)),
    )
        .into_response())
}
