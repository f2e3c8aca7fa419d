//! Read-model builders.
//!
//! Each [`Projection`] is a durable pull consumer on the domain-event stream.
//! A [`runner`] fetches a batch, applies it inside one PostgreSQL transaction
//! together with the projection's checkpoint (the last stream sequence
//! applied), commits, then acknowledges. Delivery is at least once; the
//! checkpoint makes the effect exactly once: a redelivered message at or
//! below the checkpoint is skipped. On top of that every read-model write is
//! guarded (by the aggregate's version, or by the fact's own id), so a
//! replay of events already applied changes nothing.
//!
//! Events of one order are applied in stream order, which is their
//! aggregate order (`ce-sequence`); a gap in that sequence stalls the
//! projection instead of skipping. So does an event type or version this
//! build does not know: it is reported (log, metric, `posctl status`) and
//! never skipped silently.

pub mod app;
pub mod checkpoint;
pub mod config;
pub mod event;
pub mod projections;
pub mod rebuild;
pub mod runner;

pub use projections::Projection;
