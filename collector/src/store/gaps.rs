//! Gap accounting beyond what ingest sees: agent drop reports (kept once each, by the
//! outbox epoch and report id that sent them, so a resend is harmless), the gaps they
//! explain or create (a drop of the newest seqs arrives before any later alert could
//! reveal the jump), outbox epoch changes (a reset or rolled-back outbox numbers from
//! its own start; its numbers are never mixed with the old ones), and the agent's
//! storage state. Only SQL here; the session decides when to call.

use serde::Serialize;
use ward_protocol::{DeviceId, DropNotice};

use super::StoreError;

/// The most characters of an agent's drop reason kept (a device's text, bounded).
pub const MAX_DROP_REASON_CHARS: usize = 512;

/// The most sequence numbers of one report applied to gaps.
pub const MAX_REPORT_SEQS: usize = 10_000;

/// How many of a device's latest drop reports its API view lists.
pub const DROP_REPORTS_SHOWN: i64 = 50;

/// A drop report (or an epoch change) as the API shows it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct DropReportView {
    pub received_at_ms: i64,
    /// The outbox epoch whose sequence numbers it names (hex; empty: unknown).
    pub epoch: String,
    pub dropped: i64,
    pub first_seq: Option<i64>,
    pub last_seq: Option<i64>,
    pub reason: String,
}

/// An epoch as shown: 16 hex digits, or empty for none (0).
pub fn epoch_hex(epoch: i64) -> String {
    match epoch {
        0 => String::new(),
        e => format!("{:016x}", u64::from_ne_bytes(e.to_ne_bytes())),
    }
}

/// Per-device delivery accounting: outbox epochs, drop notices and the storage
/// errors agents report.
pub trait GapStore {
    /// Makes `epoch` the device's current outbox epoch. A change from a known epoch is
    /// a reset or rolled-back outbox: recorded as an explained report, and numbering
    /// starts again for the new epoch. Returns whether the epoch changed.
    fn switch_epoch(&self, device: DeviceId, epoch: u64, now_ms: u64) -> Result<bool, StoreError>;

    /// Stores an acknowledged drop report once (a resend with the same epoch and id is
    /// a no-op) and lets it explain, or create, the gaps it names. Returns whether it
    /// was new.
    fn record_drop_notice(&self, device: DeviceId, notice: &DropNotice, now_ms: u64) -> Result<bool, StoreError>;

    /// Records why the device's outbox cannot store alerts (`None`: it can again).
    fn set_storage_error(&self, device: DeviceId, error: Option<&str>, now_ms: u64) -> Result<(), StoreError>;

    /// The device's latest drop reports and epoch changes, newest first.
    fn drop_reports(&self, device_id: &str) -> Result<Vec<DropReportView>, StoreError>;
}
