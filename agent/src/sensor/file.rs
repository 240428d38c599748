//! placeholder
pub fn run(_: &super::SensorConfig, _: &super::SensorCtx) -> Result<(), super::SensorError> { Ok(()) }
