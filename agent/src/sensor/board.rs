//! What each sensor sees right now: its readiness, its source and why it is not
//! ready. Sensors set their own state through [`super::SensorCtx`]; the supervisor
//! sets `Blind` when a sensor fails and `Starting` when it restarts. The status file,
//! `ward-agent status` and the collector (protocol 1.5) read the board, so a sensor
//! never goes blind without saying so.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use ward_protocol::{Readiness, SensorState};

use crate::clock::now_ms;

/// Shared between the sensors, the status writer and the link.
#[derive(Debug, Clone, Default)]
pub struct SensorBoard {
    inner: Arc<Mutex<Board>>,
}

#[derive(Debug, Default)]
struct Board {
    sensors: BTreeMap<&'static str, SensorState>,
    /// Bumped on every change, so readers send only what changed.
    version: u64,
}

impl SensorBoard {
    fn lock(&self) -> MutexGuard<'_, Board> {
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Sets a sensor's readiness and detail, and its source when `source` is given.
    /// `since_ms` moves only when the readiness changes.
    pub fn set(&self, name: &'static str, readiness: Readiness, source: Option<String>, detail: Option<String>) {
        let mut b = self.lock();
        let entry = b.sensors.entry(name).or_insert_with(|| SensorState {
            name: name.to_string(),
            readiness,
            source: String::new(),
            detail: None,
            since_ms: now_ms(),
            lost: 0,
        });
        let mut changed = false;
        if entry.readiness != readiness {
            entry.readiness = readiness;
            entry.since_ms = now_ms();
            changed = true;
        }
        if let Some(source) = source
            && entry.source != source
        {
            entry.source = source;
            changed = true;
        }
        if entry.detail != detail {
            entry.detail = detail;
            changed = true;
        }
        if changed || b.version == 0 {
            b.version += 1;
        }
    }

    /// Counts events a sensor knows it lost.
    pub fn add_lost(&self, name: &'static str, n: u64) {
        if n == 0 {
            return;
        }
        let mut b = self.lock();
        if let Some(s) = b.sensors.get_mut(name) {
            s.lost = s.lost.saturating_add(n);
            b.version += 1;
        }
    }

    /// The current version and every sensor's state, by name.
    pub fn snapshot(&self) -> (u64, Vec<SensorState>) {
        let b = self.lock();
        (b.version, b.sensors.values().cloned().collect())
    }

    /// Bumped on every change.
    pub fn version(&self) -> u64 {
        self.lock().version
    }

    /// One sensor's state.
    pub fn get(&self, name: &str) -> Option<SensorState> {
        self.lock().sensors.get(name).cloned()
    }
}

/// A sensor's line in `ward-agent status`.
pub fn describe(s: &SensorState) -> String {
    let mut line = format!("{}: {}", s.name, s.readiness.as_str());
    if !s.source.is_empty() {
        line.push_str(&format!(" ({})", s.source));
    }
    if let Some(d) = &s.detail {
        line.push_str(&format!(": {d}"));
    }
    if s.lost > 0 {
        line.push_str(&format!("; {} events lost", s.lost));
    }
    line
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn changes_bump_the_version_and_repeats_do_not() {
        let board = SensorBoard::default();
        board.set("file", Readiness::Starting, Some("inotify".into()), None);
        let (v1, states) = board.snapshot();
        assert_eq!(states.len(), 1);
        let since = states[0].since_ms;
        board.set("file", Readiness::Starting, None, None);
        assert_eq!(board.snapshot().0, v1, "nothing changed");
        board.set(
            "file",
            Readiness::Ready,
            Some("inotify: 1 roots, 3 watches".into()),
            None,
        );
        let (v2, states) = board.snapshot();
        assert!(v2 > v1);
        assert_eq!(states[0].readiness, Readiness::Ready);
        assert!(states[0].since_ms >= since);
        assert_eq!(states[0].source, "inotify: 1 roots, 3 watches", "kept when not given");
        board.add_lost("file", 2);
        board.add_lost("file", 0);
        let (v3, states) = board.snapshot();
        assert!(v3 > v2);
        assert_eq!(states[0].lost, 2);
        board.set("auth", Readiness::Blind, None, Some("no auth log".into()));
        assert_eq!(
            describe(&board.get("auth").unwrap()),
            "auth: blind: no auth log",
            "sorted by name, described for status"
        );
        assert_eq!(
            describe(&board.get("file").unwrap()),
            "file: ready (inotify: 1 roots, 3 watches); 2 events lost"
        );
    }
}
