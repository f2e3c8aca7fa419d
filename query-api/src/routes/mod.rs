//! The query API's routes, one file per read.

pub mod bills;
pub mod devices;
pub mod orders;
pub mod reports;
pub mod stores;

/// Reads a path id; a malformed id names nothing that exists.
pub fn path_id(raw: &str, what: &'static str) -> Result<uuid::Uuid, crate::error::ApiError> {
    uuid::Uuid::parse_str(raw).map_err(|_| crate::error::ApiError::NotFound(what))
}
