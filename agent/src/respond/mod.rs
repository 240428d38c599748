//! Response actions carried out on the device.

pub mod isolate;
