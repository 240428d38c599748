//! Rule context kept at the collector: one row per rule version (rule id + a hash of
//! its context) with what an analyst reads beside an alert of that rule. Rows are
//! added when the collector starts (the shipped rules) and when a rule pack is
//! pushed, and never changed or deleted, so an old alert still finds the version it
//! was raised by. Alerts name their rule by id only; which version an alert belongs
//! to is decided above the store (`crate::rule_context`).
//!
//! Also the reads of the alert page that no other view needs: the incident an alert
//! is in, the records folded into it, and its signed encoding.

use serde::Serialize;

use super::StoreError;

/// One rule version to keep. Every text is already bounded (`ward_detect::context`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NewRuleContext {
    pub rule_id: String,
    /// Hex SHA-256 of the context's fields: the version's identity.
    pub content_sha256: String,
    /// `builtin`, `sigmahq` or `pushed`.
    pub origin: String,
    /// The pushed pack that first carried this version.
    pub pack_version: Option<u64>,
    pub file: String,
    pub title: String,
    pub level: String,
    pub description: String,
    pub references: Vec<String>,
    pub false_positives: Vec<String>,
    pub author: String,
    pub license: String,
    pub source_url: Option<String>,
    pub techniques: Vec<String>,
    pub tactics: Vec<String>,
    /// What was cut or dropped to fit the limits.
    pub notes: Vec<String>,
}

/// A stored rule version: what was kept, and when the collector first recorded it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RuleContextView {
    #[serde(flatten)]
    pub rule: NewRuleContext,
    pub first_seen_ms: i64,
}

/// The incident an alert is in, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AlertIncidentLink {
    pub id: String,
    pub title: String,
    pub status: String,
    pub severity: &'static str,
    /// The incident it was merged into, when it was.
    pub redirected_to: Option<String>,
    pub reason: String,
    pub linked_by: String,
    pub linked_at_ms: i64,
}

/// One agent delivery folded into a stored alert.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FoldedRecord {
    pub alert_id: String,
    pub seq: i64,
    pub observed_at_ms: i64,
    pub last_observed_at_ms: i64,
    pub count: i64,
    pub received_at_ms: i64,
}

/// An alert's signed encoding as the device sent it, with the device's key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedAlertRecord {
    pub payload: Vec<u8>,
    pub signature: Vec<u8>,
    /// The signing key of the device that sent it (None for collector-raised alerts).
    pub device_key: Option<Vec<u8>>,
}

/// Rule versions, and the alert page's own reads.
pub trait RuleContextStore {
    /// Keeps the versions not kept yet, in one transaction; returns how many were new.
    fn record_rule_contexts(&self, rows: &[NewRuleContext], now_ms: u64) -> Result<usize, StoreError>;

    /// The stored versions of a rule, newest first (at most `limit`).
    fn rule_contexts_of(&self, rule_id: &str, limit: u32) -> Result<Vec<RuleContextView>, StoreError>;

    /// How many rule versions are kept.
    fn rule_context_count(&self) -> Result<i64, StoreError>;

    /// The incident holding the stored alert `alert_rowid`, if any.
    fn alert_incident(&self, alert_rowid: i64) -> Result<Option<AlertIncidentLink>, StoreError>;

    /// The deliveries folded into the stored alert `alert_rowid`, oldest first (at
    /// most `limit`), and how many there are.
    fn folded_records(&self, alert_rowid: i64, limit: u32) -> Result<(Vec<FoldedRecord>, i64), StoreError>;

    /// The signed encoding of the alert with this id: its own row's, or its record
    /// among the folded ones.
    fn signed_alert(&self, alert_id: &str) -> Result<Option<SignedAlertRecord>, StoreError>;
}
