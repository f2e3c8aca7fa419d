//! `POST /v1/reports`: the portal asks for a report; a worker produces it.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use chrono::NaiveDate;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::app::AppState;
use crate::commands::{Success, run_idempotent};
use crate::http::ApiError;
use crate::http::error::Problem;
use crate::http::extract::{ApiJson, IdempotencyKey, PortalCaller};
use crate::store::outbox;
use events::subjects::{WorkKind, work_subject};
use events::work::ReportJob;

pub const MAX_DAYS: i64 = 366;

#[derive(Debug, Clone, Copy, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ReportKind {
    /// Per store, business date and payment method: counts, gross, tips, refunds, net.
    DailySales,
    /// Every sale and refund, one row each.
    Transactions,
}

impl ReportKind {
    fn as_str(self) -> &'static str {
        match self {
            Self::DailySales => "daily_sales",
            Self::Transactions => "transactions",
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateReport {
    pub kind: ReportKind,
    /// One store, or the whole merchant when absent.
    pub store_id: Option<Uuid>,
    /// First business date, inclusive.
    pub from: NaiveDate,
    /// Last business date, inclusive.
    pub to: NaiveDate,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ReportAccepted {
    pub report_id: Uuid,
    #[schema(example = "queued")]
    pub status: &'static str,
    /// Where to follow it (query API).
    pub status_url: String,
}

#[utoipa::path(
    post, path = "/v1/reports", tag = "reports",
    request_body = CreateReport,
    params(("Idempotency-Key" = String, Header)),
    responses(
        (status = 202, description = "Accepted; follow status_url on the query API", body = ReportAccepted),
        (status = 404, description = "No such store for this merchant", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid kind or dates", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn create_report(
    State(state): State<AppState>,
    caller: PortalCaller,
    key: IdempotencyKey,
    body: ApiJson<CreateReport>,
) -> Result<Response, ApiError> {
    let ApiJson { value: req, fingerprint } = body;
    if req.to < req.from {
        return Err(ApiError::field("/to", "must not be before `from`"));
    }
    if (req.to - req.from).num_days() >= MAX_DAYS {
        return Err(ApiError::field("/to", &format!("a report covers at most {MAX_DAYS} days")));
    }
    let prefix = state.subject_prefix.clone();
    let merchant_id = caller.merchant_id;
    let requested_by = caller.subject.clone();
    run_idempotent(&state, &caller, key, fingerprint, move |conn| {
        Box::pin(async move {
            if let Some(store) = req.store_id {
                let owned: bool =
                    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM stores WHERE id = $1 AND merchant_id = $2)")
                        .bind(store)
                        .bind(merchant_id)
                        .fetch_one(&mut *conn)
                        .await?;
                if !owned {
                    return Err(ApiError::NotFound("store"));
                }
            }
            let report_id = Uuid::now_v7();
            sqlx::query(
                "INSERT INTO reports (id, merchant_id, store_id, kind, date_from, date_to, status, requested_by)
                 VALUES ($1, $2, $3, $4, $5, $6, 'queued', $7)",
            )
            .bind(report_id)
            .bind(merchant_id)
            .bind(req.store_id)
            .bind(req.kind.as_str())
            .bind(req.from)
            .bind(req.to)
            .bind(&requested_by)
            .execute(&mut *conn)
            .await?;
            let job = ReportJob { job_id: Uuid::now_v7(), report_id, merchant_id };
            let payload = serde_json::to_vec(&job).map_err(|e| ApiError::Internal(e.into()))?;
            let subject = work_subject(&prefix, WorkKind::Report, merchant_id);
            outbox::append_work(conn, &subject, job.job_id, events::work::headers(WorkKind::Report, job.job_id), payload)
                .await?;
            Success::json(
                StatusCode::ACCEPTED,
                &ReportAccepted { report_id, status: "queued", status_url: format!("/v1/reports/{report_id}") },
            )
        })
    })
    .await
}
