//! The Ward endpoint agent: sensors feed detection, detection raises alerts, alerts
//! are signed and kept in a durable outbox until the collector acknowledges them.

pub mod alert;
pub mod clock;
pub mod config;
pub mod delivery;
pub mod identity;
pub mod keys;
pub mod lifecycle;
pub mod link;
pub mod memory;
pub mod outbox;
pub mod pipeline;
pub mod procfs;
pub mod record;
pub mod respond;
pub mod rulepack;
pub mod run;
pub mod sensor;
pub mod shared;
pub mod status;
