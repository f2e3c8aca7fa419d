//! The job kinds, one file each.

pub mod device_sync;
pub mod receipt;
pub mod report;
pub mod settlement;
