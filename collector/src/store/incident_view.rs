//! Reading whole incidents and devices for the API: alert pages in time order with a
//! stable cursor, totals, evidence aggregated over every alert with SQL (never over a
//! cut of the alerts), and the processes behind the process tree. Reads only.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;
use serde_json::Value;

use super::{AlertView, IncidentAlert, StoreError};

/// Which end of the time axis a page starts from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AlertOrder {
    #[default]
    Newest,
    Oldest,
}

/// A page of alerts: a time range (`since_ms` inclusive, `until_ms` exclusive, on
/// `observed_at_ms`), the position to continue after, and its size.
#[derive(Debug, Clone, Default)]
pub struct AlertPageQuery {
    pub order: AlertOrder,
    pub since_ms: Option<i64>,
    pub until_ms: Option<i64>,
    /// (observed_at_ms, rowid) of the last alert of the previous page.
    pub after: Option<(i64, i64)>,
    pub limit: u32,
}

/// One page and how many alerts the range holds in all.
#[derive(Debug, Clone)]
pub struct AlertPage<T> {
    pub items: Vec<T>,
    /// Alerts in the time range (every page of it).
    pub total: i64,
    /// Where the next page starts, when there is one.
    pub next: Option<(i64, i64)>,
}

/// Counts over every alert of an incident or device.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct AlertTotals {
    pub alerts: i64,
    /// Detections in all: a folded alert stands for `count` of them.
    pub events: i64,
    pub folded_alerts: i64,
    pub by_severity: BTreeMap<&'static str, i64>,
    pub first_observed_ms: Option<i64>,
    pub last_observed_ms: Option<i64>,
}

/// One entity of a whole incident (kind and lookup key as `entity::key` gives them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntityAggregate {
    pub kind: String,
    pub key: String,
    pub alert_count: i64,
    pub first_ms: i64,
    pub last_ms: i64,
    pub max_severity: i64,
    /// An alert naming it (the first stored), to show the entity in full.
    pub sample_rowid: i64,
    pub sources: Vec<String>,
    /// A mailbox some alert of the mail feed also names as a user: a recipient.
    pub recipient: bool,
    pub device_ids: Vec<String>,
}

/// An alerted process of an incident: its device, the alerts naming it, and the
/// stored entities of one of them (where its lineage is).
#[derive(Debug, Clone)]
pub struct ProcessAlerts {
    pub device_id: Option<String>,
    pub key: String,
    pub alert_count: i64,
    pub entities: Value,
    /// The first few alerts: (id, rule title, severity, observed_at_ms).
    pub sample: Vec<(String, String, &'static str, i64)>,
}

/// Whole-incident and whole-device reads for the API: pages of alerts, totals,
/// evidence, devices and processes, counted over everything stored.
pub trait IncidentViews {
    /// A page of an incident's alerts with their link reasons (`known_total`: the
    /// incident's alert count when the caller has it, used when no range is given).
    fn incident_alert_page(
        &self,
        id: &str,
        q: &AlertPageQuery,
        known_total: Option<i64>,
    ) -> Result<AlertPage<IncidentAlert>, StoreError>;

    /// A page of a device's alerts.
    fn device_alert_page(&self, device_id: &str, q: &AlertPageQuery) -> Result<AlertPage<AlertView>, StoreError>;

    /// Counts over every alert of an incident.
    fn incident_alert_totals(&self, id: &str) -> Result<AlertTotals, StoreError>;

    /// Counts over every alert of a device.
    fn device_alert_totals(&self, device_id: &str) -> Result<AlertTotals, StoreError>;

    /// Every entity of an incident with its counts, over all its alerts. An alert's
    /// device counts as a device entity of it (by hostname), as the correlator sees it.
    /// Two streamed reads (the alerts, then their entity keys, both in alert order)
    /// aggregated here in one pass: a hash map beats SQLite's sorter for GROUP BY
    /// over the few hundred thousand rows of a 100,000-alert incident.
    fn incident_evidence(&self, id: &str) -> Result<(AlertTotals, Vec<EntityAggregate>), StoreError>;

    /// The stored entity lists (JSON) of the given alerts, by rowid.
    fn alert_entity_lists(&self, rowids: &[i64]) -> Result<HashMap<i64, Value>, StoreError>;

    /// Every device an incident's alerts came from (at most `limit`) and how many there are.
    fn incident_alert_devices(&self, id: &str, limit: u32) -> Result<(Vec<String>, i64), StoreError>;

    /// The alerted processes of an incident (entities of kind `lineage` or `process`,
    /// one per device and pid@start), the first `limit` by first alert, and how many
    /// there are in all.
    fn incident_processes(&self, id: &str, limit: u32) -> Result<(Vec<ProcessAlerts>, i64), StoreError>;
}
