//! `GET /v1/bills/{order_id}`: the order with lines, tenders, refunds, totals and status.
//!
//! Read-your-writes: `?min_version=N` (the `version` a command answered)
//! waits up to `wait_ms` (bounded by `READ_MAX_WAIT_MS`) for the bill to
//! reach N, then answers either way; `consistency.behind` says which. The
//! wait loads the bill again when the projectors announce the order at N
//! (see [`crate::read_your_writes`]), or at a fallback poll (`READ_POLL_MS`,
//! doubling), whichever comes first.
//!
//! Bills read recently are answered from memory while the projectors'
//! announcements say they have not moved ([`crate::bill_cache`]).

use axum::Json;
use axum::extract::{Path, State};
use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use std::sync::Arc;
use std::time::{Duration, Instant};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::app::AppState;
use crate::error::ApiError;
use crate::extract::{ApiQuery, Reader};
use crate::read_your_writes;
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

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
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

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
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

#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow)]
pub struct BillRow {
    pub order_id: Uuid,
    pub merchant_id: Uuid,
    pub store_id: Uuid,
    pub device_id: Option<Uuid>,
    pub status: String,
    pub currency: String,
    #[schema(value_type = Vec<Object>)]
    /// As stored, passed through unparsed.
    pub lines: sqlx::types::Json<Box<serde_json::value::RawValue>>,
    #[schema(value_type = Vec<Object>)]
    pub taxes: sqlx::types::Json<Box<serde_json::value::RawValue>>,
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
    // Subscribed before the first load: nothing announced after it is missed.
    let mut waiting_for = query.min_version.map(|min| (min, state.bills_applied.subscribe()));
    let mut poll = state.poll;
    let row = loop {
        let min = waiting_for.as_ref().map_or(0, |(min, _)| *min);
        let row = cached_load(&state, order_id, min)
            .await?
            .filter(|l| reader.sees(l.bill.merchant_id, l.bill.store_id));
        let Some((min, notices)) =
            waiting_for.as_mut().filter(|(min, _)| row.as_ref().is_none_or(|l| l.bill.version < *min))
        else {
            break row;
        };
        if Instant::now() >= deadline {
            break row;
        }
        let until = deadline.min(Instant::now() + poll);
        let waiting = read_your_writes::Waiting::start();
        let woken = read_your_writes::until_version(notices, order_id, *min, until.into()).await;
        drop(waiting);
        metrics::counter!("read_your_writes_wakeups_total", "by" => woken.label()).increment(1);
        poll = read_your_writes::next_poll(poll, state.poll);
    };
    let Loaded { bill, payments, refunds } = Arc::unwrap_or_clone(row.ok_or(ApiError::NotFound("bill"))?);
    let behind = query.min_version.is_some_and(|min| bill.version < min);
    let (payments, refunds) = (payments.0, refunds.0);
    Ok(Json(Bill {
        balance: bill.total - bill.paid,
        bill,
        payments,
        refunds,
        consistency: Consistency { requested_version: query.min_version, behind },
    }))
}

/// A bill with its tenders and refunds, as one row.
#[derive(Clone, sqlx::FromRow)]
pub struct Loaded {
    #[sqlx(flatten)]
    bill: BillRow,
    payments: sqlx::types::Json<Vec<BillPayment>>,
    refunds: sqlx::types::Json<Vec<BillRefund>>,
}

/// The bill from memory when the cache holds it at `min_version` or later
/// ([`crate::bill_cache`]), else from the read model, then kept.
async fn cached_load(
    state: &AppState,
    order_id: Uuid,
    min_version: i64,
) -> Result<Option<Arc<Loaded>>, ApiError> {
    let (hit, outcome) = state.bills.get(order_id, min_version);
    metrics::counter!("bill_cache_requests_total", "outcome" => outcome.label()).increment(1);
    if hit.is_some() {
        return Ok(hit);
    }
    let ticket = state.bills.ticket();
    let loaded = load(&state.pg, order_id).await?.map(Arc::new);
    if let (Some(loaded), Some(ticket)) = (&loaded, ticket) {
        state.bills.fill(order_id, loaded.clone(), loaded.bill.version, ticket);
    }
    Ok(loaded)
}

/// The bill, its tenders and its refunds in one round trip.
async fn load(pg: &PgPool, order_id: Uuid) -> Result<Option<Loaded>, ApiError> {
    Ok(sqlx::query_as::<_, Loaded>(
        "SELECT b.order_id, b.merchant_id, b.store_id, b.device_id, b.status, b.currency, b.lines, b.taxes,
                b.subtotal, b.tax, b.total, b.paid, b.tips, b.refunded, b.business_date, b.created_at,
                b.updated_at, b.version,
                COALESCE((SELECT jsonb_agg(jsonb_build_object(
                            'payment_id', p.payment_id, 'method', p.method, 'status', p.status,
                            'capture', p.capture, 'amount', p.amount, 'tip', p.tip, 'refunded', p.refunded,
                            'auth_code', p.auth_code, 'created_at', p.created_at)
                            ORDER BY p.created_at, p.payment_id)
                            FROM rm_bills.bill_payments p WHERE p.order_id = b.order_id), '[]'::jsonb) AS payments,
                COALESCE((SELECT jsonb_agg(jsonb_build_object(
                            'refund_id', r.refund_id, 'payment_id', r.payment_id, 'amount', r.amount,
                            'reason', r.reason, 'created_at', r.created_at)
                            ORDER BY r.created_at, r.refund_id)
                            FROM rm_bills.bill_refunds r WHERE r.order_id = b.order_id), '[]'::jsonb) AS refunds
           FROM rm_bills.bills b WHERE b.order_id = $1",
    )
    .bind(order_id)
    .fetch_optional(pg)
    .await?)
}
