//! Checks the audit parser against go-libaudit's golden files and the reassembler against
//! its normal / out-of-order / lost-messages / rollover streams.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::PathBuf;

use ward_agent::sensor::audit::{Reassembler, parse_record};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/go-libaudit")
}

/// Keys go-libaudit adds or rewrites by enrichment (names for numbers, split SELinux
/// contexts, `unset` for -1 ids, `result` from `res`/`success`, decoded sockaddr): Ward's
/// parser keeps raw values and leaves naming to detection's mapping.
const ENRICHED: &[&str] = &[
    "arch", "syscall", "exit", "auid", "ses", "result", "seresult", "seperms", "addr", "family", "port", "path", "sig",
    "tty", "old-auid", "old-ses", "old_auid", "new_auid",
];

fn is_enriched(key: &str) -> bool {
    ENRICHED.contains(&key)
        || ["subj_", "obj_", "scontext_", "tcontext_", "old_", "new_", "socket"]
            .iter()
            .any(|p| key.starts_with(p))
}

#[test]
fn parser_matches_go_libaudit_golden_files() {
    let dir = fixtures().join("auparse/testdata");
    let mut checked_values = 0;
    let mut files = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("golden") {
            continue;
        }
        files += 1;
        let golden: Vec<serde_json::Value> = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        for g in golden {
            // Lines go-libaudit could not parse are null in the golden file.
            let (Some(ty), Some(raw)) = (g["record_type"].as_str(), g["raw_msg"].as_str()) else {
                continue;
            };
            let ty = ty.to_uppercase();
            let line = format!("type={ty} msg={raw}");
            let rec = parse_record(&line).unwrap_or_else(|e| panic!("{}: {e}: {line}", path.display()));
            assert_eq!(u64::from(rec.serial), g["sequence"].as_u64().unwrap(), "{line}");
            let want: BTreeMap<String, String> = g["data"]
                .as_object()
                .map(|o| {
                    o.iter()
                        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                        .collect()
                })
                .unwrap_or_default();
            for (k, v) in &want {
                if is_enriched(k) {
                    continue;
                }
                let got = rec
                    .fields
                    .get(k)
                    .unwrap_or_else(|| panic!("{}: missing {k} in {line}\n{:?}", path.display(), rec.fields));
                assert_eq!(got, v, "{}: field {k} of {line}", path.display());
                checked_values += 1;
            }
        }
    }
    assert!(files >= 6, "golden files not found in {}", dir.display());
    assert!(checked_values > 400, "only {checked_values} values checked");
}

fn reassemble(name: &str, timeout_ms: u64, max_in_flight: usize) -> (Vec<ward_detect::event::AuditEvent>, u64) {
    let text = std::fs::read_to_string(fixtures().join("testdata").join(name)).unwrap();
    let mut r = Reassembler::new(timeout_ms, max_in_flight);
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        // One record every 10 ms.
        out.extend(r.push(parse_record(line).unwrap(), i as u64 * 10));
    }
    out.extend(r.flush_expired(10_000));
    out.extend(r.flush_all());
    let lost = r.take_lost();
    (out, lost)
}

fn summary(events: &[ward_detect::event::AuditEvent]) -> Vec<(u64, Vec<String>)> {
    events.iter().map(|e| (e.serial, e.record_types.clone())).collect()
}

fn types(t: &[&str]) -> Vec<String> {
    t.iter().map(|s| s.to_string()).collect()
}

#[test]
fn reassembles_normal_stream() {
    let (events, lost) = reassemble("normal.log", 1000, 64);
    assert_eq!(
        summary(&events),
        vec![
            (58, types(&["SYSCALL", "SOCKADDR"])),
            (59, types(&["SYSCALL", "EXECVE", "CWD", "PATH", "PATH"])),
            (60, types(&["SYSCALL", "EXECVE", "CWD", "PATH", "PATH"])),
            (61, types(&["SYSCALL", "SOCKADDR", "CWD", "PATH"])),
            (62, types(&["SYSCALL"])),
        ]
    );
    assert_eq!(lost, 0);
    let grep = events.get(1).unwrap();
    assert_eq!(grep.fields.get("a0").unwrap(), "grep");
    assert_eq!(grep.fields.get("a1").unwrap(), "--color=auto");
    assert_eq!(grep.fields.get("exe").unwrap(), "/usr/bin/grep");
    assert_eq!(grep.fields.get("cwd").unwrap(), "/home/andrew_kroh");
    assert_eq!(grep.fields.get("key").unwrap(), "user_commands");
    let first = events.first().unwrap();
    assert_eq!(
        first.fields.get("exe").unwrap(),
        "/usr/bin/python2.7;58d1ccfb (deleted)"
    );
}

#[test]
fn reassembles_out_of_order_stream() {
    let (events, lost) = reassemble("out_of_order.log", 1000, 64);
    let s = summary(&events);
    assert_eq!(s.len(), 5, "{s:?}");
    let by_serial: BTreeMap<u64, Vec<String>> = s.into_iter().collect();
    assert_eq!(
        by_serial.get(&60).unwrap(),
        &types(&["SYSCALL", "EXECVE", "CWD", "PATH", "PATH"])
    );
    assert_eq!(
        by_serial.get(&61).unwrap(),
        &types(&["SYSCALL", "SOCKADDR", "CWD", "PATH"])
    );
    assert_eq!(lost, 0);
}

#[test]
fn reassembles_lost_messages_stream_and_counts_the_loss() {
    let (events, lost) = reassemble("lost_messages.log", 1000, 64);
    let serials: Vec<u64> = events.iter().map(|e| e.serial).collect();
    assert_eq!(serials, vec![49, 59, 60, 61, 62]);
    assert_eq!(lost, 9);
}

#[test]
fn reassembles_rollover_stream() {
    let (events, lost) = reassemble("rollover.log", 1000, 64);
    let serials: Vec<u64> = events.iter().map(|e| e.serial).collect();
    assert_eq!(serials, vec![4294967294, 4294967295, 0, 1, 2]);
    assert_eq!(lost, 0);
}

#[test]
fn a_full_buffer_completes_the_oldest_event() {
    let (events, _) = reassemble("normal.log", 1_000_000, 1);
    assert_eq!(events.len(), 5);
    assert_eq!(events.first().unwrap().serial, 58);
}
