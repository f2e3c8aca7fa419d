//! Receipts: render an order as text and HTML, store it, deliver it.

pub mod delivery;
pub mod render;
pub mod storage;
