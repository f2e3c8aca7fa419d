//! `GET /v1/orders`.

pub mod list;
