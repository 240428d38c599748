//! Response actions carried out on the device.

pub mod file;
pub mod isolate;
pub mod package;
pub mod policy;
pub mod process;
