//! `GET /v1/devices/{id}`.

pub mod get;
