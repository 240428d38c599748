//! Storage for automation rules ([`crate::actions::automation`]): the alerts
//! table read by rowid from a persisted watermark, the incidents that alerts
//! joined (read from `incident_alerts` by alert rowid, from a second
//! watermark), and proposals recorded once per rule and subject (an alert, or
//! an incident and target), in the same transaction as the action they create
//! ([`super::ActionTx`]).

use ward_protocol::{Entity, Severity};

use super::StoreError;

/// Most alerts of one incident read for its targets.
pub const MAX_INCIDENT_ALERTS: u32 = 2_000;

/// What automation needs to know about an alert.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AutomationAlert {
    pub rowid: i64,
    pub id: String,
    pub device_id: Option<String>,
    pub hostname: Option<String>,
    pub source: String,
    pub rule_id: String,
    pub severity: Severity,
    pub techniques: Vec<String>,
    pub tactics: Vec<String>,
    /// The entities an action can target (processes, files); others are left out.
    pub entities: Vec<Entity>,
}

/// What automation needs to know about an incident that alerts joined.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AutomationIncident {
    pub id: String,
    /// `active`, `in_progress`, `resolved` or `redirected`.
    pub status: String,
    pub severity: Severity,
    pub tactics: Vec<String>,
    pub sources: Vec<String>,
    /// Its severity was set by an analyst (not derived from its alerts).
    pub severity_manual: bool,
    /// Its alerts (at most [`MAX_INCIDENT_ALERTS`], oldest first), with and
    /// without a device: automation judges each device on its own evidence.
    pub alerts: Vec<EvidenceAlert>,
}

/// One alert of an incident, as far as automation judges it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EvidenceAlert {
    /// The device it came from or is about; none for identity and mailbox alerts.
    pub device_id: Option<String>,
    pub source: String,
    pub severity: Severity,
    pub tactics: Vec<String>,
    /// Its targetable entities (processes, files).
    pub entities: Vec<Entity>,
}

/// One read of the incident stream.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IncidentBatch {
    /// The incidents the links name, each once.
    pub incidents: Vec<AutomationIncident>,
    /// How many links were read, and the newest (the watermark to advance to).
    pub links: usize,
    pub last: Option<i64>,
    /// How many activity entries were read, and the newest (the analyst-change
    /// watermark to advance to).
    pub changes: usize,
    pub last_change: Option<i64>,
}

/// What automation tails: new alerts, incident links and incident changes after
/// its watermarks, and the watermarks themselves.
pub trait AutomationStore {
    /// The newest alert's rowid (0 when there is none).
    fn newest_alert_rowid(&self) -> Result<i64, StoreError>;

    /// Up to `limit` alerts above the automation watermark, oldest first. The
    /// first call on a database sets the watermark to the newest alert, so
    /// rules act only on alerts that arrive after automation was enabled.
    fn automation_alerts(&mut self, limit: u32) -> Result<Vec<AutomationAlert>, StoreError>;

    /// Moves the automation watermark to `rowid` (never backwards).
    fn automation_advance(&self, rowid: i64) -> Result<(), StoreError>;

    /// Moves the incident stream's watermark to alert `rowid` (never backwards).
    fn automation_advance_incidents(&self, rowid: i64) -> Result<(), StoreError>;

    /// The newest alert rowid linked to an incident (0 when none is).
    fn newest_incident_link(&self) -> Result<i64, StoreError>;

    /// The incidents joined by up to `limit` alerts linked above the incident
    /// watermark (in their current state: a merge moves links to the survivor),
    /// and the newest link read, to advance to. The correlator links alerts in
    /// rowid order on the writer, so links never appear below the watermark.
    /// The first call on a database sets the watermark to the newest link.
    fn automation_incidents(&mut self, limit: u32) -> Result<IncidentBatch, StoreError>;

    /// The newest incident activity entry (0 when none).
    fn newest_incident_change(&self) -> Result<i64, StoreError>;

    /// Moves the analyst-change watermark to activity entry `id` (never backwards).
    fn automation_advance_changes(&self, id: i64) -> Result<(), StoreError>;
}
