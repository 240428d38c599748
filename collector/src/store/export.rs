//! What the export sinks read (`crate::export`): stored alerts, the links that put
//! alerts into incidents and the incidents' activity entries, each tailed by its own
//! position (alert rowid, linked alert rowid, activity id); and the export spool, a
//! database of its own (`export.db` in the data dir) holding each sink's records
//! until the sink has taken them. The store knows nothing of sinks or formats:
//! a spooled record is a sink name, an id and bytes.

use super::{AlertView, IncidentSummary, StoreError};

/// How far each stream has been read. `None` before the first read on a spool.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExportMarks {
    /// The last alert rowid read.
    pub alert: i64,
    /// The last alert rowid whose incident link was read.
    pub link: i64,
    /// The last `incident_activity` id read.
    pub activity: i64,
}

/// A stored alert with its device's hostname.
#[derive(Debug, Clone)]
pub struct ExportAlert {
    pub alert: AlertView,
    pub hostname: Option<String>,
}

/// An alert placed into an incident (by correlation or by hand).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportLink {
    pub alert_rowid: i64,
    pub alert_id: String,
    pub incident_id: String,
    pub reason: String,
    pub at_ms: i64,
    /// The alert opened the incident.
    pub opened: bool,
}

/// One entry of an incident's activity log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportActivity {
    pub id: i64,
    pub incident_id: String,
    pub at_ms: i64,
    pub actor: String,
    pub kind: String,
    pub detail: String,
}

/// One read of the three streams, from one snapshot.
#[derive(Debug, Clone, Default)]
pub struct ExportBatch {
    pub alerts: Vec<ExportAlert>,
    pub links: Vec<ExportLink>,
    pub activity: Vec<ExportActivity>,
    /// The incidents the links and entries name, as they are now.
    pub incidents: Vec<IncidentSummary>,
    /// Where the next read starts.
    pub marks: ExportMarks,
}

/// The stored data's side: what has been stored after the given positions.
pub trait ExportStore {
    /// The newest position of each stream (where a new spool starts).
    fn export_newest(&self) -> Result<ExportMarks, StoreError>;

    /// Up to `limit` entries of each stream after `from`, oldest first, with the
    /// incidents they name, read in one snapshot.
    fn export_read(&self, from: ExportMarks, limit: u32) -> Result<ExportBatch, StoreError>;
}

/// A record for one sink, to be spooled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewSpooled {
    pub sink: String,
    /// Stable across redeliveries (the receiver's idempotency key).
    pub id: String,
    pub body: Vec<u8>,
}

/// A spooled record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spooled {
    /// Position in the spool: records of a sink are delivered in this order.
    pub seq: i64,
    pub id: String,
    pub enqueued_ms: u64,
    /// Failed delivery attempts so far.
    pub attempts: u32,
    pub body: Vec<u8>,
}

/// What one append did for each sink, in the order of the `caps` given.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Appended {
    /// (sink, records spooled, records refused because its spool was full).
    pub per_sink: Vec<(String, u64, u64)>,
}

/// The spool: records per sink, and the stream positions they were read up to.
pub trait SpoolStore {
    /// The positions saved with the last append; `None` on a new spool.
    fn spool_marks(&self) -> Result<Option<ExportMarks>, StoreError>;

    /// Spools `records` and saves `marks`, in one transaction. A sink holding
    /// `caps[sink]` records or more takes no more: its records are counted as
    /// refused and left out (a sink missing from `caps` takes nothing).
    fn spool_append(
        &mut self,
        records: &[NewSpooled],
        marks: ExportMarks,
        caps: &[(String, u64)],
        now_ms: u64,
    ) -> Result<Appended, StoreError>;

    /// A sink's oldest `limit` records.
    fn spool_peek(&self, sink: &str, limit: u32) -> Result<Vec<Spooled>, StoreError>;

    /// Removes a sink's records up to and including `seq` (delivered).
    fn spool_ack(&mut self, sink: &str, through_seq: i64) -> Result<(), StoreError>;

    /// Counts a failed attempt on a sink's oldest records up to `through_seq`.
    fn spool_failed(&mut self, sink: &str, through_seq: i64) -> Result<(), StoreError>;

    /// How many records a sink holds, and when the oldest was spooled.
    fn spool_depth(&self, sink: &str) -> Result<(u64, Option<u64>), StoreError>;

    /// Removes the records of sinks not in `keep` (removed from the config);
    /// returns how many went, per sink.
    fn spool_forget_others(&mut self, keep: &[String]) -> Result<Vec<(String, u64)>, StoreError>;
}
