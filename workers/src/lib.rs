//! The workers: side effects of sales, from work items.
//!
//! Each job kind is its own durable consumer on its work-queue stream, run by
//! one shared [`runtime`]: decode, skip if already done (`job_runs`), run the
//! handler while keeping the message alive, then record and acknowledge. A
//! failure is classified: transient ones are retried with exponential backoff
//! and jitter (a NAK with a delay) up to a bounded number of attempts;
//! permanent ones, and exhausted retries, are copied to the dead-letter
//! stream with the original subject, sequence, attempt count and error, and
//! only then terminated. Operators list, inspect and redrive dead letters
//! with `posctl dlq`.

pub mod app;
pub mod config;
pub mod dead_letters;
pub mod jobs;
pub mod receipts;
pub mod runtime;
pub mod settlements;
