//! `GET /v1/devices/{id}` and the terminals' configuration long poll.

pub mod config;
pub mod get;
