//! The operator CLI's library: everything `posctl` does, callable from tests.
//!
//! - [`setup`]: create the database, run migrations, apply `nats-config/`.
//! - [`seed`]: demo and test merchants, stores, devices and tokens.
//! - [`status`]: what an on-call operator looks at first.
//! - [`operate`]: plumbing of `rebuild` and `replay`.
//! - [`dlq`]: listing, showing and redriving dead letters.
//! - [`check`]: the read models compared with the write model.
//! - [`db`]: the commands' connection to the database.

pub mod check;
pub mod db;
pub mod dlq;
pub mod nats_config;
pub mod operate;
pub mod seed;
pub mod setup;
pub mod status;
