//! What the endpoint feed keeps: the key of each event it took (so a re-import
//! stores nothing twice) and one row per host named by those events, a device
//! that runs no Ward agent. Such a host is never an enrolled device: it has no
//! key, no session and no commands; its alerts carry its hostname as an entity.

use serde::Serialize;

use super::StoreError;

/// A host the endpoint feed has seen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EndpointHost {
    /// As its events spell it (the first seen).
    pub hostname: String,
    /// `windows` or `linux`.
    pub product: String,
    /// Always false here; the API adds the enrolled device that carries the same name, if any.
    pub enrolled: bool,
    pub first_seen_ms: u64,
    pub last_seen_ms: u64,
    pub events: u64,
    pub alerts: u64,
}

/// Writes of one import chunk (inside its feed transaction).
pub trait EndpointOps {
    /// Records an event's key; false when an earlier import took it.
    fn insert_endpoint_event(&self, key: &str, host: &str, product: &str, time_ms: u64) -> Result<bool, StoreError>;
    /// Adds alerts stored now to a host's count.
    fn count_endpoint_alerts(&self, host: &str, alerts: u64) -> Result<(), StoreError>;
}

/// Reads.
pub trait EndpointStore {
    /// Hosts seen by the endpoint feed, most recently seen first, at most `limit`;
    /// `enrolled` is set when an enrolled, unrevoked device has the same hostname.
    fn endpoint_hosts(&self, limit: u32) -> Result<Vec<(EndpointHost, Option<String>)>, StoreError>;
}
