//! `GET /v1/stores/{id}/sales?date=` or `?from=&to=`: daily sales by payment method.
//!
//! Per business date (the store's sales day, fixed when each capture or
//! refund happened) and method: sales count, gross, tips, refund count,
//! refunds and net (= gross + tips − refunds). At most 92 days per request.

use axum::Json;
use axum::extract::{Path, State};
use chrono::NaiveDate;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::app::AppState;
use crate::error::ApiError;
use crate::extract::{ApiQuery, Reader};
use crate::routes::path_id;
use platform::problem::Problem;

pub const MAX_DAYS: i64 = 92;

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct SalesQuery {
    /// One business date.
    pub date: Option<NaiveDate>,
    /// First business date of a range (with `to`, inclusive).
    pub from: Option<NaiveDate>,
    pub to: Option<NaiveDate>,
}

#[derive(Debug, Serialize, ToSchema, sqlx::FromRow)]
pub struct MethodSales {
    pub business_date: NaiveDate,
    pub method: String,
    pub currency: String,
    pub sales_count: i64,
    pub gross: i64,
    pub tips: i64,
    pub refund_count: i64,
    pub refunds: i64,
    pub net: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct StoreSales {
    pub store_id: Uuid,
    pub from: NaiveDate,
    pub to: NaiveDate,
    /// One row per business date, method and currency that had activity.
    pub rows: Vec<MethodSales>,
}

fn range(q: &SalesQuery) -> Result<(NaiveDate, NaiveDate), ApiError> {
    let (from, to) = match (q.date, q.from, q.to) {
        (Some(d), None, None) => (d, d),
        (None, Some(f), Some(t)) => (f, t),
        _ => return Err(ApiError::param("date", "give either `date`, or both `from` and `to`")),
    };
    if to < from {
        return Err(ApiError::param("to", "must not be before `from`"));
    }
    if (to - from).num_days() >= MAX_DAYS {
        return Err(ApiError::param("to", format!("a range covers at most {MAX_DAYS} days")));
    }
    Ok((from, to))
}

#[utoipa::path(
    get, path = "/v1/stores/{id}/sales", tag = "sales",
    params(("id" = Uuid, Path, description = "Store id"), SalesQuery),
    responses(
        (status = 200, description = "Sales by business date and method", body = StoreSales),
        (status = 404, description = "No such store for this reader", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid dates", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn store_sales(
    State(state): State<AppState>,
    Path(id): Path<String>,
    reader: Reader,
    ApiQuery(q): ApiQuery<SalesQuery>,
) -> Result<Json<StoreSales>, ApiError> {
    let store_id = path_id(&id, "store")?;
    let (from, to) = range(&q)?;
    if reader.store_id.is_some_and(|own| own != store_id)
        || !store_known(&state, reader.merchant_id, store_id).await?
    {
        return Err(ApiError::NotFound("store"));
    }
    let rows = sqlx::query_as::<_, MethodSales>(
        "WITH c AS (SELECT business_date, method, currency, count(*) AS n, sum(amount)::bigint AS gross,
                           sum(tip)::bigint AS tips
                      FROM rm_sales.captures
                     WHERE merchant_id = $1 AND store_id = $2 AND business_date BETWEEN $3 AND $4
                     GROUP BY 1, 2, 3),
              r AS (SELECT business_date, method, currency, count(*) AS n, sum(amount)::bigint AS refunds
                      FROM rm_sales.refunds
                     WHERE merchant_id = $1 AND store_id = $2 AND business_date BETWEEN $3 AND $4
                     GROUP BY 1, 2, 3)
         SELECT COALESCE(c.business_date, r.business_date) AS business_date,
                COALESCE(c.method, r.method) AS method,
                COALESCE(c.currency, r.currency)::text AS currency,
                COALESCE(c.n, 0) AS sales_count, COALESCE(c.gross, 0) AS gross, COALESCE(c.tips, 0) AS tips,
                COALESCE(r.n, 0) AS refund_count, COALESCE(r.refunds, 0) AS refunds,
                COALESCE(c.gross, 0) + COALESCE(c.tips, 0) - COALESCE(r.refunds, 0) AS net
           FROM c FULL JOIN r
             ON c.business_date = r.business_date AND c.method = r.method AND c.currency = r.currency
          ORDER BY 1, 2, 3",
    )
    .bind(reader.merchant_id)
    .bind(store_id)
    .bind(from)
    .bind(to)
    .fetch_all(&state.pg)
    .await?;
    Ok(Json(StoreSales { store_id, from, to, rows }))
}

/// A store is known to the read side once one of its devices has been seen.
async fn store_known(state: &AppState, merchant_id: Uuid, store_id: Uuid) -> Result<bool, ApiError> {
    Ok(sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM rm_devices.device_status WHERE merchant_id = $1 AND store_id = $2)",
    )
    .bind(merchant_id)
    .bind(store_id)
    .fetch_one(&state.pg)
    .await?)
}
