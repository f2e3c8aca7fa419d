//! The query API: what the merchant portal (and terminals) read.
//!
//! It reads the projections' read models only, never the write model, and
//! is scoped by token: a portal token sees its merchant, a device token its
//! store; anything else is 404 so ids do not leak. A read may ask for at
//! least the version a command returned (`min_version`): the API waits a
//! bounded time for the projection to reach it, then answers and says
//! whether it is still behind.

pub mod app;
pub mod bill_cache;
pub mod config;
pub mod error;
pub mod extract;
pub mod read_your_writes;
pub mod routes;

pub use app::run;
pub use config::Config;
