//! `GET /v1/bills/{order_id}`: the order with lines, tenders, refunds, totals and status.
//!
//! Read-your-writes: `?min_version=N` (the `version` a command answered)
//! waits up to `wait_ms` (bounded by `READ_MAX_WAIT_MS`) for the bill to
//! reach N, then answers either way; `consistency.behind` says which.

use axum::Json;
use axum::extract::{Path, State};
use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use std::time::{Duration, Instant};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::app::AppState;
use crate::error::ApiError;
use crate::extract::{ApiQuery, Reader};
use crate::routes::path_id;
use platform::problem::Problem;

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct BillQuery {
    /// Wait until the bill reflects at least this order version.
    pub min_version: Option<i64>,
    /// How long to wait for `min_version`, in milliseconds (capped by the server).
    pub wait_ms: Option<u64>,
}

#[derive(Debug, Serialize, ToSchema, sqlx::FromRow)]
pub struct BillPayment {
    pub payment_id: Uuid,
    pub method: String,
    pub status: String,
    pub capture: String,
    pub amount: i64,
    pub tip: i64,
    pub refunded: i64,
    pub auth_code: Option<String>,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Serialize, ToSchema, sqlx::FromRow)]
pub struct BillRefund {
    pub refund_id: Uuid,
    pub payment_id: Uuid,
    pub amount: i64,
    pub reason: Option<String>,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Consistency {
    pub requested_version: Option<i64>,
    /// True when the projection had not reached `requested_version` in time.
    pub behind: bool,
}

#[derive(Debug, Serialize, ToSchema, sqlx::FromRow)]
pub struct BillRow {
    pub order_id: Uuid,
    pub merchant_id: Uuid,
    pub store_id: Uuid,
    pub device_id: Option<Uuid>,
    pub status: String,
    pub currency: String,
    #[schema(value_type = Vec<Object>)]
    pub lines: sqlx::types::Json<serde_json::Value>,
    #[schema(value_type = Vec<Object>)]
    pub taxes: sqlx::types::Json<serde_json::Value>,
    pub subtotal: i64,
    pub tax: i64,
    pub total: i64,
    /// Captured tenders, tips excluded.
    pub paid: i64,
    pub tips: i64,
    pub refunded: i64,
    pub business_date: NaiveDate,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub version: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Bill {
    #[serde(flatten)]
    pub bill: BillRow,
    /// Total minus captured tenders.
    pub balance: i64,
    pub payments: Vec<BillPayment>,
    pub refunds: Vec<BillRefund>,
    pub consistency: Consistency,
}

#[utoipa::path(
    get, path = "/v1/bills/{id}", tag = "bills",
    params(("id" = Uuid, Path, description = "Order id"), BillQuery),
    responses(
        (status = 200, description = "The bill", body = Bill),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such bill for this reader (yet)", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid query parameters", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn get_bill(
    State(state): State<AppState>,
    Path(id): Path<String>,
    reader: Reader,
    ApiQuery(query): ApiQuery<BillQuery>,
) -> Result<Json<Bill>, ApiError> {
    let order_id = path_id(&id, "bill")?;
    if query.min_version.is_some_and(|v| v < 1) {
        return Err(ApiError::param("min_version", "must be at least 1"));
    }
    let wait = query.wait_ms.map_or(state.max_wait, Duration::from_millis).min(state.max_wait);
    let deadline = Instant::now() + wait;
    let mut delay = Duration::from_millis(5);
    let row = loop {
        let row = load(&state.pg, order_id).await?.filter(|b| reader.sees(b.merchant_id, b.store_id));
        let reached = match (query.min_version, &row) {
            (None, _) => true,
            (Some(min), Some(b)) => b.version >= min,
            (Some(_), None) => false,
        };
        if reached || Instant::now() >= deadline {
            break row;
        }
        tokio::time::sleep(delay.min(deadline.saturating_duration_since(Instant::now()))).await;
        delay = (delay * 2).min(Duration::from_millis(100));
    };
    let bill = row.ok_or(ApiError::NotFound("bill"))?;
    let behind = query.min_version.is_some_and(|min| bill.version < min);
    let payments = sqlx::query_as::<_, BillPayment>(
        "SELECT payment_id, method, status, capture, amount, tip, refunded, auth_code, created_at
           FROM rm_bills.bill_payments WHERE order_id = $1 ORDER BY created_at, payment_id",
    )
    .bind(order_id)
    .fetch_all(&state.pg)
    .await?;
    let refunds = sqlx::query_as::<_, BillRefund>(
        "SELECT refund_id, payment_id, amount, reason, created_at
           FROM rm_bills.bill_refunds WHERE order_id = $1 ORDER BY created_at, refund_id",
    )
    .bind(order_id)
    .fetch_all(&state.pg)
    .await?;
    Ok(Json(Bill {
        balance: bill.total - bill.paid,
        bill,
        payments,
        refunds,
        consistency: Consistency { requested_version: query.min_version, behind },
    }))
}

async fn load(pg: &PgPool, order_id: Uuid) -> Result<Option<BillRow>, ApiError> {
    Ok(sqlx::query_as::<_, BillRow>(
        "SELECT order_id, merchant_id, store_id, device_id, status, currency, lines, taxes, subtotal, tax, total,
                paid, tips, refunded, business_date, created_at, updated_at, version
           FROM rm_bills.bills WHERE order_id = $1",
    )
    .bind(order_id)
    .fetch_optional(pg)
    .await?)
}
