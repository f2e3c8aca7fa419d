//! The command API's routes, one file per command.

pub mod config;
pub mod devices;
pub mod orders;
pub mod payments;
pub mod reports;

use serde::Serialize;
use utoipa::ToSchema;

/// An order line as priced by the server.
#[derive(Debug, Serialize, ToSchema)]
pub struct PricedLineBody {
    pub sku: String,
    pub name: String,
    pub quantity: i64,
    /// Minor units of the order's currency, tax excluded.
    pub unit_price: i64,
    pub tax_category: String,
    /// Basis points: 1000 is 10%.
    pub tax_rate_bp: i32,
    pub line_total: i64,
}

/// Tax of one rate, rounded once per order.
#[derive(Debug, Serialize, ToSchema)]
pub struct TaxLineBody {
    pub tax_category: String,
    pub tax_rate_bp: i32,
    pub taxable: i64,
    pub tax: i64,
}

/// Reads a path id, or 404s: a malformed id names nothing that exists.
pub fn path_id(raw: &str, what: &'static str) -> Result<uuid::Uuid, crate::http::ApiError> {
    uuid::Uuid::parse_str(raw).map_err(|_| crate::http::ApiError::NotFound(what))
}
