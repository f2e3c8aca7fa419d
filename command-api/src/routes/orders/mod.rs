//! Order commands.

pub mod cancel;
pub mod create;
