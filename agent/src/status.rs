//! The running agent's state as `status.json` in the state dir, refreshed
//! periodically, so `ward-agent status` can report on a running agent without
//! talking to it.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::identity::write_atomic;

/// Rewrites an existing file's bytes where they are, then trims it: needs no new
/// blocks as long as the content does not outgrow the ones it has.
fn overwrite_in_place(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::{Seek, Write};
    let mut f = std::fs::OpenOptions::new().write(true).open(path)?;
    f.seek(std::io::SeekFrom::Start(0))?;
    f.write_all(bytes)?;
    f.set_len(bytes.len() as u64)?;
    f.sync_data()
}

pub const STATUS_FILE: &str = "status.json";

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Status {
    pub pid: u32,
    pub updated_at_ms: u64,
    pub connected: bool,
    pub collector: String,
    pub last_error: Option<String>,
    pub outbox_depth: u64,
    pub outbox_bytes: u64,
    pub rule_pack_version: u64,
    pub rules_loaded: usize,
    pub rule_errors: usize,
    pub isolation: String,
    pub alerts_raised: u64,
    pub alerts_delivered: u64,
    /// This device's clock minus the collector's at the last session start.
    #[serde(default)]
    pub clock_skew_ms: Option<i64>,
    /// Why the outbox cannot store alerts right now (e.g. the disk is full); `None`
    /// while it works.
    pub storage_error: Option<String>,
    /// Alerts judged but waiting in memory for the outbox to store them.
    pub alerts_waiting: u64,
    /// Alerts dropped from that memory queue, not yet recorded for the collector.
    pub alerts_lost_in_memory: u64,
    /// Rule buckets answered from the verdict memo since start (`ward_detect::memo`).
    #[serde(default)]
    pub verdicts_remembered: u64,
    /// Rule buckets evaluated since start (remembered afterwards or not).
    #[serde(default)]
    pub verdicts_evaluated: u64,
    /// What each sensor sees.
    pub sensors: Vec<ward_protocol::SensorState>,
}

/// A clock skew as `status` shows it: "3.2 s ahead of the collector".
pub fn describe_skew(skew_ms: i64) -> String {
    let secs = skew_ms.unsigned_abs() as f64 / 1000.0;
    match skew_ms {
        0 => "in step with the collector".to_string(),
        s if s > 0 => format!("{secs:.1} s ahead of the collector"),
        _ => format!("{secs:.1} s behind the collector"),
    }
}

impl Status {
    pub fn write(&self, state_dir: &Path) {
        let Ok(json) = serde_json::to_vec_pretty(self) else {
            return;
        };
        let path = state_dir.join(STATUS_FILE);
        if write_atomic(&path, &json, 0o644).is_err() {
            // A full disk refuses the new file; the old one's blocks can still be
            // overwritten, so `ward-agent status` keeps telling the truth (disk full).
            let _ = overwrite_in_place(&path, &json);
        }
    }

    pub fn read(state_dir: &Path) -> Option<Status> {
        serde_json::from_slice(&std::fs::read(state_dir.join(STATUS_FILE)).ok()?).ok()
    }

    /// Whether the process that wrote this is still alive and writing.
    pub fn is_live(&self, now_ms: u64, interval_ms: u64) -> bool {
        let fresh = now_ms.saturating_sub(self.updated_at_ms) <= interval_ms.saturating_mul(3).max(5_000);
        fresh && Path::new(&format!("/proc/{}", self.pid)).exists()
    }
}
