//! `GET /v1/orders`: the order list, newest first, with cursor pagination.
//!
//! Filters: `store_id` (portal tokens; a device sees its own store only),
//! `status`, `business_date`, `from`/`to` (creation time, `to` exclusive).
//! `limit` is 1 to 200 (default 50). `next_cursor` is opaque; pass it back as
//! `cursor` for the next page, with the same filters.

use axum::Json;
use axum::extract::State;
use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{Postgres, QueryBuilder};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::app::AppState;
use crate::error::ApiError;
use crate::extract::{ApiQuery, Reader};
use platform::problem::Problem;

pub const MAX_LIMIT: i64 = 200;

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    pub store_id: Option<Uuid>,
    /// `open`, `completed` or `canceled`.
    pub status: Option<String>,
    pub business_date: Option<NaiveDate>,
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
    pub limit: Option<i64>,
    pub cursor: Option<String>,
}

#[derive(Debug, Serialize, ToSchema, sqlx::FromRow)]
pub struct OrderItem {
    pub order_id: Uuid,
    pub store_id: Uuid,
    pub device_id: Option<Uuid>,
    pub status: String,
    pub currency: String,
    pub total: i64,
    pub paid: i64,
    pub refunded: i64,
    pub business_date: NaiveDate,
    pub created_at: DateTime<Utc>,
    pub version: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct OrderPage {
    pub items: Vec<OrderItem>,
    /// Present when more orders match.
    pub next_cursor: Option<String>,
}

/// `<micros since epoch>.<order id>` of the last item: where the next page starts.
fn encode_cursor(item: &OrderItem) -> String {
    format!("{}.{}", item.created_at.timestamp_micros(), item.order_id.simple())
}

fn decode_cursor(raw: &str) -> Result<(DateTime<Utc>, Uuid), ApiError> {
    let bad = ApiError::BadCursor("the cursor is not one this API issued");
    let (micros, id) =
        raw.split_once('.').ok_or(ApiError::BadCursor("the cursor is not one this API issued"))?;
    let micros: i64 =
        micros.parse().map_err(|_| ApiError::BadCursor("the cursor is not one this API issued"))?;
    let at =
        DateTime::from_timestamp_micros(micros).ok_or(ApiError::BadCursor("the cursor is out of range"))?;
    let id = Uuid::parse_str(id).map_err(|_| bad)?;
    Ok((at, id))
}

#[utoipa::path(
    get, path = "/v1/orders", tag = "orders",
    params(ListQuery),
    responses(
        (status = 200, description = "A page of orders, newest first", body = OrderPage),
        (status = 400, description = "Invalid cursor", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid filters or limit", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn list_orders(
    State(state): State<AppState>,
    reader: Reader,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Json<OrderPage>, ApiError> {
    let limit = q.limit.unwrap_or(50);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiError::param("limit", format!("must be 1 to {MAX_LIMIT}")));
    }
    if let Some(status) = &q.status
        && !["open", "completed", "canceled"].contains(&status.as_str())
    {
        return Err(ApiError::param("status", "must be open, completed or canceled"));
    }
    if let (Some(from), Some(to)) = (q.from, q.to)
        && from >= to
    {
        return Err(ApiError::param("to", "must be after `from`"));
    }
    let cursor = q.cursor.as_deref().map(decode_cursor).transpose()?;
    let store = match (reader.store_id, q.store_id) {
        (Some(own), Some(asked)) if own != asked => {
            return Ok(Json(OrderPage { items: vec![], next_cursor: None }));
        }
        (Some(own), _) => Some(own),
        (None, asked) => asked,
    };
    let mut sql: QueryBuilder<Postgres> = QueryBuilder::new(
        "SELECT order_id, store_id, device_id, status, currency, total, paid, refunded, business_date, created_at, version
           FROM rm_bills.bills WHERE merchant_id = ",
    );
    sql.push_bind(reader.merchant_id);
    if let Some(store) = store {
        sql.push(" AND store_id = ").push_bind(store);
    }
    if let Some(status) = q.status {
        sql.push(" AND status = ").push_bind(status);
    }
    if let Some(date) = q.business_date {
        sql.push(" AND business_date = ").push_bind(date);
    }
    if let Some(from) = q.from {
        sql.push(" AND created_at >= ").push_bind(from);
    }
    if let Some(to) = q.to {
        sql.push(" AND created_at < ").push_bind(to);
    }
    if let Some((at, id)) = cursor {
        sql.push(" AND (created_at, order_id) < (").push_bind(at).push(", ").push_bind(id).push(")");
    }
    sql.push(" ORDER BY created_at DESC, order_id DESC LIMIT ").push_bind(limit + 1);
    let mut items: Vec<OrderItem> = sql.build_query_as().fetch_all(&state.pg).await?;
    let next_cursor = if items.len() as i64 > limit {
        items.truncate(limit as usize);
        items.last().map(encode_cursor)
    } else {
        None
    };
    Ok(Json(OrderPage { items, next_cursor }))
}
