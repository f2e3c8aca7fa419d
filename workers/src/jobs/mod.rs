//! The job kinds, one file each.

pub mod receipt;
pub mod settlement;
