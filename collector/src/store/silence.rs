//! Alerts the collector raises itself: an isolated device that went silent.
//!
//! A device whose last reported isolation state is `isolated` and that has not
//! been heard from for longer than `devices.offline_after_ms` gets ONE alert per
//! silence: the `last_seen_ms` it went silent at is remembered on the device, so
//! the next check does not raise it again, and a device that comes back and goes
//! silent again (a new `last_seen_ms`) raises a new one.
//!
//! Such alerts are stored as unsigned alerts of source `collector` (see `sourced`).

use ward_protocol::AlertId;

use super::StoreError;

/// Rule id of the alert for an isolated device that went silent.
pub const SILENT_ISOLATED_RULE_ID: &str = "ward-isolated-device-silent";
pub const SILENT_ISOLATED_TITLE: &str = "Isolated device went silent";
/// MITRE ATT&CK v19: Disable or Modify Tools (v18's T1562 Impair Defenses).
pub const SILENT_ISOLATED_TECHNIQUE: &str = "T1685";
/// MITRE ATT&CK: Defense Evasion (v19's defense-impairment has no tactic id yet).
pub const SILENT_ISOLATED_TACTIC: &str = "TA0005";

/// A collector-raised alert that was stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RaisedAlert {
    pub alert_id: String,
    pub device_id: String,
}

/// Isolated devices that stopped reporting, and the alerts raised about them.
pub trait SilenceStore {
    /// Whether some isolated device has been silent since before `silent_since_ms`
    /// without an alert yet (a cheap read for the periodic check).
    fn silent_isolated_due(&self, silent_since_ms: u64) -> Result<bool, StoreError>;

    /// Raises one alert for each isolated device silent since before
    /// `now_ms - offline_after_ms` that has none for this silence yet.
    fn raise_silent_isolated_alerts(
        &mut self,
        now_ms: u64,
        offline_after_ms: u64,
        new_id: &mut dyn FnMut() -> Option<AlertId>,
    ) -> Result<Vec<RaisedAlert>, StoreError>;
}
