//! The Ward endpoint agent: sensors feed detection, detection raises alerts, alerts
//! are signed and kept in a durable outbox until the collector acknowledges them.

pub mod detect;
pub mod event;
pub mod identity;
pub mod link;
pub mod outbox;
pub mod sensor;
