//! Every SmartPOS domain event and work item, and the types they carry.
//!
//! This crate is the single owner of the event vocabulary: the payload of each
//! event type, its versioned CloudEvents `type`, the NATS subject it travels
//! on and the mapping to binary-mode CloudEvents headers. It is pure data (no
//! I/O), so the command API, projectors, workers and tests all agree on one
//! definition and a change to an event is a change in one place.

pub mod calendar;
pub mod cloudevent;
pub mod domain;
pub mod money;
pub mod notices;
pub mod subjects;
pub mod work;

pub use cloudevent::{Envelope, EnvelopeError};
pub use domain::{DomainEvent, EventKind};
pub use money::{Currency, CurrencyError, Money};
