//! Device endpoints.

pub mod token;
