//! Incidents on disk: the correlation engine's state (incidents, their keys, key
//! prevalence, the tail watermark), analyst changes with their activity log, and
//! the queries behind the incident API.

use serde::Serialize;
use ward_protocol::{Entity, Severity};

use super::{AlertView, StoreError};
use crate::model::correlation::{Changes, Incident, IncidentRow, KnownDevice};
use crate::model::incident::{Classification, Status};

/// An alert as the correlator reads it from the store.
#[derive(Debug, Clone)]
pub struct StoredAlert {
    pub rowid: i64,
    pub id: String,
    pub device_id: Option<String>,
    pub at_ms: u64,
    /// When the collector stored it (for the alert-to-incident time).
    pub received_ms: u64,
    pub severity: Severity,
    pub tactics: Vec<String>,
    pub source: String,
    pub title: String,
    pub entities: Vec<Entity>,
}

/// The saved counters of the correlator.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CorrelationCounters {
    /// The last alert rowid correlated.
    pub watermark: i64,
    pub next_seq: u64,
    pub high_ms: u64,
}

/// A tactic as the API shows it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct TacticView {
    pub id: String,
    pub name: String,
}

/// An incident in lists and at the head of its page.
#[derive(Debug, Clone, Serialize)]
pub struct IncidentSummary {
    pub id: String,
    pub title: String,
    pub severity: &'static str,
    pub status: String,
    pub redirected_to: Option<String>,
    pub assignee: Option<String>,
    pub classification: Option<String>,
    pub determination: Option<String>,
    pub tags: Vec<String>,
    pub sources: Vec<String>,
    pub tactics: Vec<TacticView>,
    pub first_activity_ms: i64,
    pub last_activity_ms: i64,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
    pub alert_count: i64,
    pub device_count: i64,
    pub user_count: i64,
    pub mailbox_count: i64,
    #[serde(skip)]
    pub severity_num: i64,
}

/// How to sort incident lists (newest or most severe first).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IncidentSort {
    #[default]
    LastActivity,
    Severity,
}

/// Filters for listing incidents.
#[derive(Debug, Clone, Default)]
pub struct IncidentFilter {
    pub statuses: Vec<Status>,
    pub min_severity: Option<Severity>,
    pub assignee: Option<String>,
    pub tag: Option<String>,
    pub source: Option<String>,
    /// Correlation keys of the device asked for (`device:<id>`...).
    pub device_keys: Vec<String>,
    pub user_keys: Vec<String>,
    pub tactic: Option<String>,
    /// Free text found in the title or in a key or label of the incident's
    /// entities (case-insensitive for ASCII).
    pub text: Option<String>,
    pub since_ms: i64,
    pub until_ms: Option<i64>,
    pub sort: IncidentSort,
    /// Position after which to continue: (severity, last activity, id).
    pub after: Option<(i64, i64, String)>,
    pub limit: u32,
}

/// One alert of an incident with why it is there.
#[derive(Debug, Clone, Serialize)]
pub struct IncidentAlert {
    pub alert: AlertView,
    pub reason: String,
    pub linked_at_ms: i64,
    pub linked_by: String,
    /// The time correlation placed it at: its observed time, or its arrival when the
    /// device's clock was ahead (`clock_note` says so). Alerts are sorted by it.
    pub correlated_at_ms: i64,
    pub clock_note: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ActivityEntry {
    pub at_ms: i64,
    pub actor: String,
    pub kind: String,
    pub detail: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct CommentView {
    pub id: String,
    pub at_ms: i64,
    pub author: String,
    pub text: String,
}

/// What an analyst changes (PATCH); `None` leaves a field alone.
#[derive(Debug, Clone, Default)]
pub struct IncidentPatch {
    pub status: Option<Status>,
    /// `Some(None)` clears.
    pub assignee: Option<Option<String>>,
    pub classification: Option<Option<Classification>>,
    pub determination: Option<Option<String>>,
    pub tags: Option<Vec<String>>,
    pub title: Option<String>,
    pub severity: Option<Severity>,
}

/// Why an analyst's change was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IncidentRefusal {
    #[error("incident not found")]
    NotFound,
    #[error("incident {0} was merged into {1}; change that one")]
    Redirected(String, String),
    #[error("{0}")]
    Invalid(String),
}

/// Incidents: the correlator's saved state and steps, and the analyst's triage
/// (patches, comments, merges and moves), each change with its activity entry.
pub trait IncidentStore {
    // ---- correlator state ----

    fn correlation_counters(&self) -> Result<CorrelationCounters, StoreError>;

    /// Open incidents whose last activity is at or after `horizon_ms`, with their keys.
    fn open_incidents(&self, horizon_ms: u64) -> Result<Vec<Incident>, StoreError>;

    /// One incident's correlation state.
    fn load_incident(&self, id: &str) -> Result<Option<Incident>, StoreError>;

    /// Open incidents holding any of `keys` whose activity reaches from `from_ms` to
    /// `to_ms` (the incidents an old alert may join), oldest first.
    fn incidents_holding(&self, keys: &[String], from_ms: u64, to_ms: u64) -> Result<Vec<Incident>, StoreError>;

    /// Distinct devices each key was seen on.
    fn key_prevalence(&self) -> Result<Vec<(String, Vec<String>)>, StoreError>;

    /// Enrolled devices with their hostnames and addresses.
    fn known_devices(&self) -> Result<Vec<KnownDevice>, StoreError>;

    /// Changes when a device is enrolled or removed or its hostname or addresses
    /// change (a counter the `devices` triggers bump).
    fn devices_fingerprint(&self) -> Result<i64, StoreError>;

    /// Alerts after `rowid`, in rowid order.
    fn alerts_after(&self, rowid: i64, limit: u32) -> Result<Vec<StoredAlert>, StoreError>;

    /// The newest alert's rowid (0 without alerts): how far correlation has to go.
    fn last_alert_rowid(&self) -> Result<i64, StoreError>;

    /// An incident's alerts, in rowid order.
    fn incident_stored_alerts(&self, id: &str) -> Result<Vec<StoredAlert>, StoreError>;

    /// Writes what correlating alerts up to `counters.watermark` changed, in one
    /// transaction. Returns how long it waited for the write lock (another process's
    /// transaction: a feed import, the CLI).
    fn apply_correlation(
        &mut self,
        changes: &Changes,
        counters: CorrelationCounters,
        now_ms: u64,
    ) -> Result<std::time::Duration, StoreError>;

    /// Writes a rebuilt incident: its summary and all its keys (the old ones go).
    fn replace_incident_state(&mut self, row: &IncidentRow, now_ms: u64) -> Result<(), StoreError>;

    fn save_next_seq(&self, next_seq: u64) -> Result<(), StoreError>;

    /// Applies an analyst's change; every changed field is logged and audited.
    fn patch_incident(
        &mut self,
        id: &str,
        patch: &IncidentPatch,
        actor: &str,
        now_ms: u64,
    ) -> Result<Result<(), IncidentRefusal>, StoreError>;

    fn add_incident_comment(
        &mut self,
        id: &str,
        comment_id: &str,
        text: &str,
        author: &str,
        now_ms: u64,
    ) -> Result<Result<CommentView, IncidentRefusal>, StoreError>;

    /// Merges `from` into `into` by hand (checks first). The caller rebuilds `into`'s summary.
    fn merge_incidents_by_hand(
        &mut self,
        into: &str,
        from: &[String],
        actor: &str,
        now_ms: u64,
    ) -> Result<Result<(), IncidentRefusal>, StoreError>;

    /// Moves an alert of incident `from` to `to` (an existing open incident, or a new
    /// one with `new_id`/`new_seq`). The caller rebuilds both summaries.
    #[allow(clippy::too_many_arguments)]
    fn move_incident_alert(
        &mut self,
        from: &str,
        alert_id: &str,
        to: Option<&str>,
        new: (&str, u64),
        reason: &str,
        actor: &str,
        now_ms: u64,
    ) -> Result<Result<String, IncidentRefusal>, StoreError>;

    // ---- reading ----

    fn list_incidents(&self, f: &IncidentFilter) -> Result<Vec<IncidentSummary>, StoreError>;

    fn incident_summary(&self, id: &str) -> Result<Option<IncidentSummary>, StoreError>;

    /// The correlation keys a device filter stands for: its id or hostname.
    fn device_filter_keys(&self, device: &str) -> Result<Vec<String>, StoreError>;

    /// The incident an alert is in and why (tests and tools).
    fn incident_alerts_of(&self, alert_id: &str) -> Result<(String, String), StoreError>;

    /// The devices an incident's keys name.
    fn incident_device_ids(&self, id: &str) -> Result<Vec<String>, StoreError>;

    fn incident_activity(&self, id: &str) -> Result<Vec<ActivityEntry>, StoreError>;

    fn incident_comments(&self, id: &str) -> Result<Vec<CommentView>, StoreError>;

    /// Ids of actions proposed for the incident itself (`actions.incident_id`).
    fn incident_action_ids(&self, id: &str) -> Result<Vec<String>, StoreError>;
}
