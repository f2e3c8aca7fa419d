//! Device configuration, set by the portal.

pub mod set;
