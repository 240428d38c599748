//! Recording what detection judges (`[detection] record_events_path`): every event
//! as one JSON line, the shape `ward-agent rules test EVENTS` reads, so a rule can be
//! tried, and its cost measured, on what this very machine does (the noise
//! benchmark times the default pack this way). Bounded by
//! `record_events_max_bytes`: past it recording stops, once, with a warning; the
//! agent goes on. A write error stops recording the same way. Off by default: it
//! costs a JSON encoding and a buffered write per event.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use tracing::warn;
use ward_detect::event::Event;

/// Appends judged events to a JSON-lines file until its byte budget is spent.
pub struct EventRecorder {
    out: Option<BufWriter<File>>,
    written: u64,
    max_bytes: u64,
}

impl EventRecorder {
    /// Creates (truncates) `path`.
    pub fn create(path: &Path, max_bytes: u64) -> std::io::Result<EventRecorder> {
        Ok(EventRecorder {
            out: Some(BufWriter::with_capacity(64 * 1024, File::create(path)?)),
            written: 0,
            max_bytes,
        })
    }

    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Appends `event` as one line; stops recording past the budget or on an error.
    pub fn record(&mut self, event: &Event) {
        let Some(out) = self.out.as_mut() else { return };
        let mut line = match serde_json::to_vec(event) {
            Ok(line) => line,
            Err(e) => {
                warn!(error = %e, "an event could not be encoded for the event record; skipped");
                return;
            }
        };
        line.push(b'\n');
        let len = line.len() as u64;
        if self.written + len > self.max_bytes {
            warn!(
                written = self.written,
                "the event record reached record_events_max_bytes: recording stopped"
            );
            self.stop();
            return;
        }
        if let Err(e) = out.write_all(&line) {
            warn!(error = %e, "the event record could not be written: recording stopped");
            self.out = None;
            return;
        }
        self.written += len;
    }

    /// Writes what is buffered (after each judged group, and at shutdown).
    pub fn flush(&mut self) {
        if let Some(out) = self.out.as_mut()
            && let Err(e) = out.flush()
        {
            warn!(error = %e, "the event record could not be written: recording stopped");
            self.out = None;
        }
    }

    fn stop(&mut self) {
        self.flush();
        self.out = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ward_detect::event::{EventData, ProcessEvent};
    use ward_detect::rulestest::{EventLine, parse_event_line};

    fn exec(pid: u32) -> Event {
        Event {
            observed_at_ms: 1_000 + u64::from(pid),
            data: EventData::Process(ProcessEvent {
                pid,
                ppid: 1,
                exe: "/usr/bin/uname".into(),
                cmdline: "uname -a".into(),
                ..ProcessEvent::default()
            }),
        }
    }

    #[test]
    fn recorded_lines_are_what_rules_test_reads() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.jsonl");
        let mut r = EventRecorder::create(&path, 1 << 20).unwrap();
        r.record(&exec(7));
        r.record(&exec(8));
        r.flush();
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<_> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        match parse_event_line(lines[1]).unwrap() {
            EventLine::Ward(e) => assert_eq!(*e, exec(8)),
            other => panic!("not a Ward event: {other:?}"),
        }
        assert_eq!(r.written(), text.len() as u64);
    }

    #[test]
    fn recording_stops_at_its_budget_with_whole_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.jsonl");
        let one = serde_json::to_vec(&exec(1)).unwrap().len() as u64 + 1;
        let mut r = EventRecorder::create(&path, one * 2 + one / 2).unwrap();
        for pid in 1..10 {
            r.record(&exec(pid));
        }
        r.flush();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 2, "{text}");
        assert!(text.ends_with('\n'));
        assert_eq!(r.written(), one * 2);
    }
}
