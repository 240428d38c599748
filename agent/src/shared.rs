//! What the agent's tasks share: the outbox and its new-alerts signal (detection and
//! the isolation guard write, the link reads), the status (written to `status.json`),
//! the recent file changes (the file sensor's events, read by investigation
//! packages) and the sensors' readiness board. Plain data; the tasks that use it sit above it.

use std::sync::Mutex;

use tokio::sync::Notify;

use crate::outbox::Outbox;
use crate::status::Status;

/// What detection shares with the link, the executor and the status writer.
pub struct Shared {
    pub outbox: Mutex<Outbox>,
    pub new_alerts: Notify,
    pub status: Mutex<Status>,
    /// Recent file changes, for investigation packages.
    pub recent: crate::respond::package::RecentChanges,
    /// What each sensor sees (status, the collector).
    pub sensors: crate::sensor::SensorBoard,
}
