//! Clean and unclean stops: a `running` marker in the state dir, written (and synced)
//! at start and removed only at a clean stop, so the next start knows whether the last
//! run was killed or crashed. From how far the last run got judging events (recorded
//! in the outbox with each group commit) it also says from when watched files must be
//! rescanned: what changed while the agent was down, or was observed but not yet in the
//! outbox at a crash (the outbox's judged files keep that from repeating alerts).
//! It does no detection and talks to no collector; `run` wires it.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::identity::write_atomic;

pub const RUNNING_FILE: &str = "running";
/// Rescans start this long before the last judged point, besides the file sensor's own
/// coalescing delay: a file is judged some time after it changed (hashing, a full
/// channel), and the judged files recorded with the alerts keep the wider window from
/// repeating alerts.
pub const RESCAN_MARGIN_MS: u64 = 5_000;

/// What the marker holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Marker {
    pub pid: u32,
    pub started_at_ms: u64,
}

/// What is known of the previous run at start.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PreviousRun {
    /// Set when the marker was found: that run ended without a clean stop.
    pub unclean: Option<Marker>,
    /// Everything that run observed up to this time was in its outbox.
    pub durable_through_ms: Option<u64>,
}

impl PreviousRun {
    /// Reads the marker; `judged_through_ms` is the outbox's (0: never recorded).
    /// An unreadable marker still means unclean.
    pub fn read(state_dir: &Path, judged_through_ms: u64) -> PreviousRun {
        let unclean = match std::fs::read(state_dir.join(RUNNING_FILE)) {
            Ok(bytes) => Some(serde_json::from_slice(&bytes).unwrap_or(Marker {
                pid: 0,
                started_at_ms: 0,
            })),
            Err(_) => None,
        };
        let durable_through_ms = Some(judged_through_ms)
            .filter(|&t| t > 0)
            .or_else(|| unclean.map(|m| m.started_at_ms).filter(|&t| t > 0));
        PreviousRun {
            unclean,
            durable_through_ms,
        }
    }

    /// Watched files whose change time is after this are looked at again at start.
    /// `None` on a first start (nothing known: everything there predates the agent).
    pub fn rescan_since_ms(&self, file_max_delay_ms: u64) -> Option<u64> {
        self.durable_through_ms
            .map(|t| t.saturating_sub(file_max_delay_ms.saturating_add(RESCAN_MARGIN_MS)))
    }

    /// The gap reported for an unclean stop, if there was one.
    pub fn unclean_reason(&self, file_max_delay_ms: u64) -> Option<String> {
        let m = self.unclean?;
        let rescan = match self.rescan_since_ms(file_max_delay_ms) {
            Some(t) => format!("watched files changed since {t} (Unix ms) were rescanned"),
            None => "no earlier state to rescan from".to_string(),
        };
        Some(format!(
            "unclean shutdown: the agent (pid {}, started at {} Unix ms) was killed or crashed; \
             alerts for events it had observed but not yet stored may be lost; {rescan}",
            m.pid, m.started_at_ms
        ))
    }
}

/// Writes the marker (durably) for this run.
pub fn mark_running(state_dir: &Path, marker: Marker) -> std::io::Result<()> {
    let json = serde_json::to_vec(&marker).map_err(std::io::Error::other)?;
    write_atomic(&state_dir.join(RUNNING_FILE), &json, 0o644).map_err(|e| std::io::Error::other(e.to_string()))
}

/// Removes the marker at a clean stop, after the final status was written.
pub fn mark_stopped(state_dir: &Path) -> std::io::Result<()> {
    std::fs::remove_file(state_dir.join(RUNNING_FILE))?;
    std::fs::File::open(state_dir)?.sync_all()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn a_marker_left_behind_means_unclean_and_rescans_from_the_last_durable_point() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(PreviousRun::read(dir.path(), 0), PreviousRun::default());
        assert_eq!(PreviousRun::default().rescan_since_ms(200), None);

        mark_running(
            dir.path(),
            Marker {
                pid: 7,
                started_at_ms: 1_000_000,
            },
        )
        .unwrap();
        let prev = PreviousRun::read(dir.path(), 0);
        assert_eq!(
            prev.durable_through_ms,
            Some(1_000_000),
            "nothing judged: from the start"
        );
        let prev = PreviousRun::read(dir.path(), 2_000_000);
        assert_eq!(prev.rescan_since_ms(200), Some(2_000_000 - 200 - RESCAN_MARGIN_MS));
        let reason = prev.unclean_reason(200).unwrap();
        assert!(
            reason.contains("unclean shutdown") && reason.contains("pid 7"),
            "{reason}"
        );

        mark_stopped(dir.path()).unwrap();
        let prev = PreviousRun::read(dir.path(), 2_000_000);
        assert!(prev.unclean.is_none() && prev.unclean_reason(200).is_none());
        assert_eq!(
            prev.rescan_since_ms(0),
            Some(2_000_000 - RESCAN_MARGIN_MS),
            "clean stops rescan too"
        );
    }
}
