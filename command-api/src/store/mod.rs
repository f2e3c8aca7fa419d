//! Persistence of the write model: orders with their tenders, the outbox,
//! and the store settings a command needs (time zone, currency, tax table).
//!
//! Every function takes the open transaction of the command it serves.

pub mod orders;
pub mod outbox;
pub mod stores;
