//! Durable storage behind one interface: the traits below, one per concern, are
//! every operation the rest of the collector performs on its data, and their
//! argument and result types are plain data. No SQL, no connection and no
//! backend type appears above this module: [`Store`] names the backend in use
//! (SQLite, in [`sqlite`]), and callers reach it only through the traits
//! (`use crate::store::prelude::*`). A second backend implements the same traits
//! and takes `Store`'s place here, with no change above the store.
//!
//! Each change the domain makes is one transaction: a method is one, and the
//! workflow's multi-step changes go through [`ActionOps`] and [`FeedOps`], an

//! open transaction that commits as a whole.

pub mod actions;
pub mod audit;
pub mod automation;
pub mod endpoint;
pub mod export;
pub mod feeds;
pub mod fold;
pub mod gaps;
pub mod hunt;
pub mod incident_view;
pub mod incidents;
pub mod rules;
pub mod silence;
pub mod sourced;
pub mod sqlite;

pub use actions::{ActionFilter, ActionOps, ActionRecord, ActionStore, ActionView, NewAction, TargetRefusal};
pub use audit::{AuditChainReport, AuditEntry, AuditStore};
pub use automation::{AutomationAlert, AutomationIncident, AutomationStore, EvidenceAlert, IncidentBatch};
pub use endpoint::{EndpointHost, EndpointOps, EndpointStore};
pub use export::{
    Appended, ExportActivity, ExportAlert, ExportBatch, ExportLink, ExportMarks, ExportStore, NewSpooled, SpoolStore,
    Spooled,
};
pub use feeds::{FeedOps, FeedStore, LocatedSignIn};
pub use fold::Fold;
pub use gaps::{DropReportView, GapStore};
pub use hunt::{FileSighting, HuntStore, NewSavedHunt, SavedHunt};
pub use incident_view::{
    AlertOrder, AlertPage, AlertPageQuery, AlertTotals, EntityAggregate, IncidentViews, ProcessAlerts,
};
pub use incidents::{
    ActivityEntry, CommentView, CorrelationCounters, IncidentAlert, IncidentFilter, IncidentPatch, IncidentRefusal,
    IncidentSort, IncidentStore, IncidentSummary, StoredAlert, TacticView,
};
pub use rules::{
    AlertIncidentLink, FoldedRecord, NewRuleContext, RuleContextStore, RuleContextView, SignedAlertRecord,
};
pub use silence::{RaisedAlert, SILENT_ISOLATED_RULE_ID, SilenceStore};
pub use sourced::{AlertSource, SourcedAlert, SourcedStore};

/// The backend in use.
pub type Store = sqlite::SqliteStore;
/// The export spool's backend (its own file; see [`export`]).
pub type Spool = sqlite::SqliteSpool;
#[cfg(test)]
pub(crate) use sqlite::test_support;
/// An open action transaction of [`Store`].
pub type ActionTx<'a> = <Store as ActionStore>::ActionTx<'a>;
/// An open feed-import transaction of [`Store`].
pub type FeedTx<'a> = <Store as FeedStore>::FeedTx<'a>;

/// The traits, for `use crate::store::prelude::*` where store methods are called.
pub mod prelude {
    pub use super::{
        ActionOps, ActionStore, AlertStore, AuditStore, AutomationStore, DeviceStore, ExportStore, FeedOps, FeedStore,
        GapStore, HuntStore, IncidentStore, IncidentViews, Maintenance, PublishedStore, RuleContextStore, SilenceStore,
        SourcedStore, SpoolStore, UserStore,
    };
    pub use super::{EndpointOps, EndpointStore};
}

use serde::Serialize;
use thiserror::Error;
use ward_protocol::{Alert, DeviceId, Inventory, IsolationState, PublicKey, Severity, Signed};

#[derive(Debug, Error)]
pub enum StoreError {
    /// The backend failed; its own error is kept as the source.
    #[error("database error: {0}")]
    Database(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("database holds an unexpected value: {0}")]
    Corrupt(String),
    #[error("database schema version {found} is newer than this collector ({known})")]
    TooNew { found: i64, known: i64 },
}

/// A device being registered at enrollment.
#[derive(Debug, Clone)]
pub struct NewDevice {
    pub id: DeviceId,
    pub signing_key: PublicKey,
    pub cert_sha256: [u8; 32],
    pub inventory: Inventory,
}

/// Why an enrollment token was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum TokenRefusal {
    #[error("unknown enrollment token")]
    Unknown,
    #[error("enrollment token expired")]
    Expired,
    #[error("enrollment token has no uses left")]
    UsedUp,
}

/// What a session needs to know about the device on the other end.
#[derive(Debug, Clone)]
pub struct DeviceAuth {
    pub id: DeviceId,
    pub signing_key: PublicKey,
    pub revoked: bool,
}

/// An alert whose signature has been verified against its device's key.
#[derive(Debug, Clone)]
pub struct VerifiedAlert {
    pub alert: Alert,
    pub signed: Signed,
}

/// What happened to one batch in a commit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct InsertOutcome {
    /// New rows.
    pub stored: u32,
    /// Alerts folded into a row stored before (see `store::fold`): durably kept, no new row.
    pub folded: u32,
    pub duplicates: u32,
}

/// A device's state from a heartbeat.
#[derive(Debug, Clone)]
pub struct DeviceState {
    pub seen_at_ms: u64,
    pub inventory: Option<Inventory>,
    pub isolation: IsolationState,
    pub outbox_depth: u64,
    pub rule_pack_version: u64,
    /// The device's clock minus the collector's when the heartbeat came.
    pub clock_skew_ms: i64,
}

/// A device as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct DeviceView {
    pub id: String,
    pub hostname: String,
    pub enrolled_at_ms: i64,
    pub revoked_at_ms: Option<i64>,
    pub last_seen_ms: Option<i64>,
    pub agent_version: String,
    pub os: String,
    pub kernel: String,
    pub addresses: serde_json::Value,
    pub logged_on_users: serde_json::Value,
    pub isolation: String,
    pub outbox_depth: i64,
    pub rule_pack_version: i64,
    pub last_seq: i64,
    pub dropped_total: i64,
    pub missing_alerts: i64,
    /// The device's clock minus the collector's at its last heartbeat (None before one).
    pub clock_skew_ms: Option<i64>,
    /// The device's current outbox epoch, hex (empty before protocol 1.4).
    pub outbox_epoch: String,
    /// Why the device's outbox cannot store alerts (e.g. its disk is full), as it said.
    pub storage_error: Option<String>,
    /// What each of its sensors sees, as the agent last said (protocol 1.5; empty before).
    pub sensors: Vec<SensorView>,
    /// When the agent last said it.
    pub sensors_at_ms: Option<i64>,
    /// Filled in by the caller from the live connection table.
    pub online: bool,
}

/// One sensor of a device, as its agent reported it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct SensorView {
    pub name: String,
    /// `starting`, `ready`, `degraded`, `blind` or `off`.
    pub readiness: String,
    /// What it reads.
    pub source: String,
    /// Why it is not ready, if it is not.
    pub detail: Option<String>,
    /// Since when (the agent's clock).
    pub since_ms: u64,
    /// Events it knows it lost since the agent started.
    pub lost: u64,
}

/// An alert as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct AlertView {
    pub id: String,
    /// None for alerts from the identity and mailbox feeds.
    pub device_id: Option<String>,
    pub seq: i64,
    pub observed_at_ms: i64,
    pub last_observed_at_ms: i64,
    pub received_at_ms: i64,
    pub rule: RuleView,
    pub severity: &'static str,
    /// `agent` (signed by the device) or `collector` (raised by the collector itself).
    pub source: String,
    /// How many matching events the alert stands for, with every repeat folded into
    /// it; `observed_at_ms` is the first of them and `last_observed_at_ms` the last.
    pub count: i64,
    /// How many alerts (agent deliveries) were folded into this one at ingest.
    pub folded_alerts: i64,
    pub entities: serde_json::Value,
    pub matched: serde_json::Value,
    /// Position for cursor pagination.
    #[serde(skip)]
    pub rowid: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct RuleView {
    pub id: String,
    pub title: String,
    /// Shown wherever a match is shown (Detection Rule License).
    pub author: String,
    pub techniques: serde_json::Value,
    pub tactics: serde_json::Value,
}

/// A range of sequence numbers a device never delivered.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct SequenceGap {
    /// The outbox epoch the numbers belong to (hex; empty before protocol 1.4).
    pub epoch: String,
    pub first_seq: i64,
    pub last_seq: i64,
    pub reason: String,
}

/// Filters for listing alerts, newest first.
#[derive(Debug, Clone, Default)]
pub struct AlertFilter {
    pub device_id: Option<String>,
    pub min_severity: Option<Severity>,
    pub rule_id: Option<String>,
    pub since_ms: Option<i64>,
    pub until_ms: Option<i64>,
    /// Only alerts older than this position (from the previous page).
    pub before_rowid: Option<i64>,
    pub limit: u32,
}

/// An API user.
#[derive(Debug, Clone)]
pub struct User {
    pub name: String,
    pub role: String,
}

/// How a connection is tuned and kept: what the writer sets at start, snapshots for
/// consistent reads, and copying the write-ahead log. A backend without a setting's
/// subject (no page cache, no log) accepts it and does nothing.
pub trait Maintenance {
    /// Makes this connection the collector's one writer: repeats fold as `fold` says
    /// (into the newest rows stored so far too), the cache holds up to `cache_mib`
    /// MiB, the write-ahead log is left to [`Maintenance::checkpoint`] on another
    /// thread, and another process's write lock (a feed import, the CLI) is waited
    /// for by polling every millisecond, for at most the busy timeout.
    fn become_writer(&mut self, fold: Fold, cache_mib: u32) -> Result<(), StoreError>;

    /// Copies what it can of the write-ahead log into the database, waiting for no
    /// one (PASSIVE); returns the frames in the log and how many are copied.
    fn checkpoint(&self) -> Result<(u64, u64), StoreError>;

    /// Copies the whole log into the database and empties the log file, if no one
    /// writes or reads an older snapshot right now (it waits for no one); true when
    /// the log is empty. A restart reads whatever log is left before it can open.
    fn truncate_log(&self) -> Result<bool, StoreError>;

    /// Runs `f` on one consistent snapshot of the database (a read transaction), so
    /// several queries see the same commit however other connections write meanwhile.
    fn read_snapshot<R>(&self, f: impl FnOnce(&Self) -> Result<R, StoreError>) -> Result<R, StoreError>;
}

/// Enrollment and the fleet: tokens, devices, their certificates, revocation and the
/// state their heartbeats report.
pub trait DeviceStore {
    // ---- enrollment tokens and devices ----

    fn create_enroll_token(
        &self,
        secret_sha256: &[u8; 32],
        max_uses: u32,
        now_ms: u64,
        expires_at_ms: u64,
    ) -> Result<(), StoreError>;

    /// Spends one use of the token and registers the device, in one transaction.
    fn enroll(
        &mut self,
        secret_sha256: &[u8; 32],
        device: &NewDevice,
        now_ms: u64,
    ) -> Result<Result<(), TokenRefusal>, StoreError>;

    /// The device a client certificate belongs to.
    fn device_by_cert(&self, cert_sha256: &[u8; 32]) -> Result<Option<DeviceAuth>, StoreError>;

    /// Revokes a device; returns false if there is no such device.
    fn revoke_device(&self, id: &str, actor: &str, now_ms: u64) -> Result<bool, StoreError>;

    fn revoked_devices(&self) -> Result<Vec<String>, StoreError>;

    /// Writes heartbeat states, all in one transaction. The last-seen time only
    /// moves forward (a session's end may have been recorded after the heartbeat).
    fn update_device_states(&self, states: &[(DeviceId, DeviceState)]) -> Result<(), StoreError>;

    fn touch_device(&self, id: DeviceId, now_ms: u64) -> Result<(), StoreError>;

    fn list_devices(&self) -> Result<Vec<DeviceView>, StoreError>;

    fn get_device(&self, id: &str) -> Result<Option<DeviceView>, StoreError>;

    /// Replaces what a device's sensors see with what its agent just reported.
    fn set_sensors(&self, id: DeviceId, sensors: &[SensorView], now_ms: u64) -> Result<(), StoreError>;
}

/// Agent alerts in, in acknowledged batches with their sequence accounting, and the
/// alert lists the API shows.
pub trait AlertStore {
    /// Records alerts an agent before protocol 1.4 says it dropped (an unacknowledged
    /// report, in the device's current epoch), so their gap is explained or created.
    fn record_drops(
        &self,
        id: DeviceId,
        dropped: u64,
        seqs: &[u64],
        reason: &str,
        now_ms: u64,
    ) -> Result<(), StoreError>;

    fn sequence_gaps(&self, device_id: &str) -> Result<Vec<SequenceGap>, StoreError>;

    /// Stores verified alerts of several batches in ONE transaction and returns
    /// each batch's outcome. Nothing is acknowledged before this returns `Ok`.
    /// Repeats fold into rows stored before as [`Store::set_fold`] says (see `store::fold`).
    fn insert_alert_batches(
        &mut self,
        batches: &[(DeviceId, &[VerifiedAlert])],
        now_ms: u64,
    ) -> Result<Vec<InsertOutcome>, StoreError>;

    fn list_alerts(&self, f: &AlertFilter) -> Result<Vec<AlertView>, StoreError>;

    /// The alert with this id, or the one it was folded into.
    fn get_alert(&self, id: &str) -> Result<Option<AlertView>, StoreError>;

    fn count_alerts(&self) -> Result<i64, StoreError>;
}

/// What the collector publishes to every agent: signed rule packs and key rollovers.
pub trait PublishedStore {
    /// The next rule-pack version to issue.
    fn next_rule_pack_version(&self) -> Result<u64, StoreError>;

    fn add_rule_pack(
        &self,
        version: u64,
        rule_count: usize,
        signed: &[u8],
        actor: &str,
        now_ms: u64,
    ) -> Result<(), StoreError>;

    /// The newest rule pack: its version and signed encoding.
    fn latest_rule_pack(&self) -> Result<Option<(u64, Vec<u8>)>, StoreError>;

    /// The next rollover serial (1 for the first).
    fn next_key_serial(&self) -> Result<u64, StoreError>;

    /// Stores a signed rollover and, when there is one, the rule pack signed again
    /// with the new key, in one transaction, audited.
    fn add_key_rollover(
        &self,
        rollover: &ward_protocol::KeyRollover,
        signed: &[u8],
        pack: Option<(u64, usize, &[u8])>,
    ) -> Result<(), StoreError>;

    /// Every rollover's signed encoding, oldest first.
    fn key_rollovers(&self) -> Result<Vec<Vec<u8>>, StoreError>;
}

/// API users and their token hashes.
pub trait UserStore {
    // ---- users ----

    fn add_user(&self, name: &str, role: &str, token_sha256: &[u8; 32], now_ms: u64) -> Result<(), StoreError>;

    /// Every user: (name, role, created at, Unix ms), by name. Tokens are stored only
    /// as hashes and are not listed.
    fn list_users(&self) -> Result<Vec<(String, String, i64)>, StoreError>;

    fn user_by_token(&self, token_sha256: &[u8; 32]) -> Result<Option<User>, StoreError>;
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    //! The store's boundary, read from the source: a second backend replaces
    //! `sqlite/` and the `Store` alias, and nothing above the store changes.

    use std::path::{Path, PathBuf};

    /// Every `.rs` file under `dir`, with its path relative to `src/`.
    fn sources(dir: &Path, out: &mut Vec<(String, String)>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                sources(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src");
                let rel = path.strip_prefix(&src).unwrap().to_string_lossy().into_owned();
                out.push((rel, std::fs::read_to_string(&path).unwrap()));
            }
        }
    }

    /// The file without its unit tests (tests may reach past the interface, for
    /// example to hold SQLite's write lock from a second connection).
    fn without_tests(text: &str) -> &str {
        text.find("\nmod tests {").map_or(text, |i| &text[..i])
    }

    fn collector_sources() -> Vec<(String, String)> {
        let mut out = Vec::new();
        sources(&PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src"), &mut out);
        assert!(out.len() > 50, "collector sources not found: {}", out.len());
        out
    }

    #[test]
    fn sql_and_sqlite_live_only_in_store_sqlite() {
        let sql = [
            "\"SELECT ",
            "\"INSERT ",
            "\"UPDATE ",
            "\"DELETE ",
            "\"CREATE ",
            "PRAGMA ",
        ];
        for (path, text) in collector_sources() {
            if path.starts_with("store/sqlite/") {
                continue;
            }
            let code = without_tests(&text);
            assert!(!code.contains("rusqlite"), "{path} uses rusqlite");
            for s in sql {
                assert!(!code.contains(s), "{path} holds SQL ({s})");
            }
            // Only the alias that names the backend in use may name it.
            if path != "store/mod.rs" {
                assert!(
                    !code.contains("sqlite::") && !code.contains("SqliteStore"),
                    "{path} names the SQLite backend"
                );
            }
        }
    }

    #[test]
    fn the_store_imports_no_domain_module_and_no_http() {
        let above = [
            "crate::actions",
            "crate::incidents",
            "crate::feeds",
            "crate::api",
            "crate::transport",
            "axum",
        ];
        for (path, text) in collector_sources() {
            if !path.starts_with("store/") {
                continue;
            }
            for a in above {
                let code = without_tests(&text)
                    .lines()
                    .filter(|l| !l.trim_start().starts_with("//"));
                assert!(!code.clone().any(|l| l.contains(a)), "{path} imports {a}");
            }
        }
    }
}
