//! Process plumbing shared by every SmartPOS binary.
//!
//! Settings from the environment, telemetry, connections to PostgreSQL, NATS
//! and Redis, shutdown signalling, and the `/health`, `/ready` and
//! `/metrics` endpoints every process serves. Plumbing only: no domain logic
//! lives here.

pub mod auth;
pub mod connect;
pub mod correlation;
pub mod health;
pub mod http_metrics;
pub mod metrics;
pub mod problem;
pub mod settings;
pub mod shutdown;
pub mod statistics;
pub mod telemetry;
pub mod trace;

pub use settings::InfraSettings;
pub use shutdown::Shutdown;
