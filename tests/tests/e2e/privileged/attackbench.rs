//! `ward-attackbench` end to end on three atomics (as root: eBPF and the lab's
//! mounts): reading /etc/shadow, a cron file in /etc/cron.d and OS discovery each
//! raise an alert of their own technique, tied to the right test (its shell in the
//! alert's process tree: for the cron file, the tree of the process that wrote it),
//! no alert is tied to two tests, and the host's protected paths are unchanged (the
//! binary fails otherwise).

use serde_json::Value;
use ward_tests::is_root;

#[test]
fn three_atomics_are_attributed_to_their_own_tests() {
    assert!(
        is_root(),
        "ward-attackbench needs root (the agent loads eBPF programs; the lab mounts overlays): run this suite as root (CI does)"
    );
    let out = tempfile::tempdir().unwrap();
    let run = std::process::Command::new(env!("CARGO_BIN_EXE_ward-attackbench"))
        .args(["--only", "3723ab77,078e69eb,cccb070c", "--out"])
        .arg(out.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "ward-attackbench failed: {stderr}");
    assert!(
        stderr.contains("host check: the protected paths are unchanged"),
        "{stderr}"
    );
    let report: Vec<Value> =
        serde_json::from_str(&std::fs::read_to_string(out.path().join("attackbench.json")).unwrap()).unwrap();
    assert_eq!(report.len(), 3, "{report:?}");
    let test = |prefix: &str| {
        report
            .iter()
            .find(|r| r["guid"].as_str().is_some_and(|g| g.starts_with(prefix)))
            .unwrap_or_else(|| panic!("no result for {prefix}: {report:?}"))
    };
    for (prefix, technique, how) in [
        ("3723ab77", "T1003.008", "process_tree"),
        // The file alert names its writer (fanotify), so its tree ties it to the test.
        ("078e69eb", "T1053.003", "process_tree"),
        ("cccb070c", "T1082", "process_tree"),
    ] {
        let r = test(prefix);
        assert_eq!(r["technique"], technique, "{r}");
        assert_eq!(r["outcome"]["status"], "matched", "{r}");
        let alerts = r["alerts"].as_array().unwrap();
        assert!(
            alerts.iter().any(|a| a["matched_technique"] == true && a["how"] == how),
            "{prefix}: no technique-matched alert attributed by {how}: {r}"
        );
        assert!(r["detect_latency_ms"].as_u64().is_some(), "{r}");
    }
    // An alert is one test's only.
    let mut keys: Vec<(String, u64)> = report
        .iter()
        .flat_map(|r| r["alerts"].as_array().unwrap().iter())
        .map(|a| {
            (
                a["rule_id"].as_str().unwrap().to_string(),
                a["observed_at_ms"].as_u64().unwrap(),
            )
        })
        .collect();
    let n = keys.len();
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), n, "an alert was attributed to two tests: {report:?}");
    // The report's table names every test.
    let md = std::fs::read_to_string(out.path().join("attackbench.md")).unwrap();
    assert!(md.contains("Live: 3 of 3 run tests technique-matched (100 %)"), "{md}");
}
