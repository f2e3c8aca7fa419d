//! The command API: the terminals' write side, and the outbox relay.
//!
//! A command is validated, decided by the pure domain ([`domain`]), and
//! committed in one PostgreSQL transaction together with its events (in the
//! outbox) and its idempotency record ([`commands`]). The [`relay`] moves
//! committed outbox rows to JetStream in order, with `Nats-Msg-Id` = event
//! id, so nothing accepted is lost and nothing is published twice.

pub mod app;
/// Tokens live in `platform`, shared with the query API.
pub use platform::auth;
pub mod commands;
pub mod commit;
pub mod config;
pub mod domain;
pub mod http;
pub mod janitor;
pub mod openapi;
pub mod relay;
pub mod routes;
pub mod store;
pub mod wake;

pub use app::{AppState, run};
pub use config::Config;
