//! HTTP plumbing of the command API: the error type, extractors and idempotency.

pub mod error;
pub mod extract;
pub mod idempotency;
pub mod rate_limit;

pub use error::ApiError;
