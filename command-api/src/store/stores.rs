//! What a command needs to know about the caller's store and merchant.

use chrono::NaiveTime;
use chrono_tz::Tz;
use events::Currency;
use sqlx::PgPool;
use std::collections::HashMap;
use uuid::Uuid;

use crate::domain::{Rounding, TaxTable};
use crate::http::ApiError;

#[derive(Debug, Clone)]
pub struct StoreContext {
    pub time_zone: Tz,
    pub close_of_day: NaiveTime,
    pub currency: Currency,
    pub taxes: TaxTable,
}

/// Time zone, close of day, currency, tax rounding and tax rates (category → basis points).
type StoreRow = (String, NaiveTime, String, String, sqlx::types::Json<HashMap<String, i32>>);

/// The settings of `store_id` within `merchant_id`; `None` when it is not theirs.
pub async fn load(pg: &PgPool, merchant_id: Uuid, store_id: Uuid) -> Result<Option<StoreContext>, ApiError> {
    // One round trip: the store, its merchant's rounding and its tax rates.
    let row: Option<StoreRow> = sqlx::query_as(
        "SELECT s.time_zone, s.close_of_day, s.currency, m.tax_rounding,
                    COALESCE((SELECT jsonb_object_agg(category, rate_bp) FROM tax_rates t
                               WHERE t.merchant_id = m.id), '{}'::jsonb)
               FROM stores s JOIN merchants m ON m.id = s.merchant_id
              WHERE s.id = $1 AND s.merchant_id = $2",
    )
    .bind(store_id)
    .bind(merchant_id)
    .fetch_optional(pg)
    .await?;
    let Some((tz, close_of_day, currency, rounding, rates)) = row else {
        return Ok(None);
    };
    let corrupt = |what: &str| ApiError::Internal(anyhow::anyhow!("store {store_id} has an invalid {what}"));
    Ok(Some(StoreContext {
        time_zone: tz.parse().map_err(|_| corrupt("time zone"))?,
        close_of_day,
        currency: Currency::parse(currency.trim()).map_err(|_| corrupt("currency"))?,
        taxes: TaxTable {
            rates_bp: rates.0,
            rounding: Rounding::parse(&rounding).ok_or_else(|| corrupt("tax rounding"))?,
        },
    }))
}
