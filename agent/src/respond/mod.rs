//! Response actions carried out on the device.

pub mod executor;
pub mod file;
pub mod isolate;
pub mod isolation_control;
pub mod package;
pub mod policy;
pub mod process;
