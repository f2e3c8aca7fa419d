//! What a command needs to know about the caller's store and merchant.

use chrono::NaiveTime;
use chrono_tz::Tz;
use events::Currency;
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

/// The settings query for the store in SQL expression `store` of the merchant
/// in `merchant`: one row, or none when the store is not the merchant's (or
/// either is null). Used as a lateral join of the key's claim.
pub fn settings_sql(store: &str, merchant: &str) -> String {
    format!(
        "SELECT s.time_zone, s.close_of_day, s.currency::text AS currency, m.tax_rounding,
                COALESCE((SELECT jsonb_object_agg(category, rate_bp) FROM tax_rates t
                           WHERE t.merchant_id = m.id), '{{}}'::jsonb) AS tax_rates
           FROM stores s JOIN merchants m ON m.id = s.merchant_id
          WHERE s.id = {store} AND s.merchant_id = {merchant}"
    )
}

/// Time zone, close of day, currency, tax rounding and tax rates (category → basis points);
/// all absent when the settings query found no store.
#[derive(Debug, sqlx::FromRow)]
pub struct StoreRow {
    time_zone: Option<String>,
    close_of_day: Option<NaiveTime>,
    currency: Option<String>,
    tax_rounding: Option<String>,
    tax_rates: Option<sqlx::types::Json<HashMap<String, i32>>>,
}

impl StoreRow {
    /// The settings of `store_id`, `None` when the row is empty.
    pub fn into_context(self, store_id: Uuid) -> Result<Option<StoreContext>, ApiError> {
        let (Some(tz), Some(close_of_day), Some(currency), Some(rounding), Some(rates)) =
            (self.time_zone, self.close_of_day, self.currency, self.tax_rounding, self.tax_rates)
        else {
            return Ok(None);
        };
        let corrupt =
            |what: &str| ApiError::Internal(anyhow::anyhow!("store {store_id} has an invalid {what}"));
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
}
