//! `GET /v1/bills/{order_id}`.

pub mod get;
