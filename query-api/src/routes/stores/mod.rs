//! `GET /v1/stores/{id}/sales`.

pub mod sales;
