//! Device endpoints.

pub mod config_ack;
pub mod token;
