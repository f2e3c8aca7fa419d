//! Reports, requested by the portal.

pub mod create;
