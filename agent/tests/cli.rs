//! The `ward-agent` binary as an operator and a detection engineer use it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

fn agent(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_ward-agent"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn rules_test_shows_which_rules_match_which_lines() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules");
    std::fs::create_dir(&rules).unwrap();
    std::fs::write(
        rules.join("whoami.yml"),
        "title: Whoami Run\nid: 0b1e4c2a-1111-4000-8000-000000000001\nauthor: Tester\nlogsource:\n    product: linux\n    category: process_creation\ndetection:\n    selection:\n        CommandLine|contains: whoami\n    condition: selection\nlevel: low\n",
    )
    .unwrap();
    std::fs::write(rules.join("broken.yml"), "title: [unclosed\n").unwrap();
    let events = dir.path().join("events.jsonl");
    std::fs::write(
        &events,
        "{\"kind\": \"process\", \"exe\": \"/usr/bin/whoami\", \"cmdline\": \"whoami\"}\n{\"kind\": \"process\", \"cmdline\": \"ls -l\"}\nnot json\n",
    )
    .unwrap();
    let out = agent(&["rules", "test", rules.to_str().unwrap(), events.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("Whoami Run"), "{text}");
    assert!(text.contains("broken.yml"), "the bad rule is reported: {text}");
    // The matches table (before the per-rule sections) names line 1 alone.
    let matches = text.split("matches per rule:").next().unwrap_or_default();
    let whoami_lines: Vec<&str> = matches.lines().filter(|l| l.contains("Whoami Run")).collect();
    assert_eq!(whoami_lines.len(), 1, "only line 1 matches: {text}");
    assert!(whoami_lines[0].trim_start().starts_with("1 "), "{text}");
    let per_rule = text.split("matches per rule:").nth(1).unwrap_or_default();
    assert!(
        per_rule
            .lines()
            .any(|l| l.trim_start().starts_with("1 ") && l.contains("Whoami Run")),
        "one match counted for the rule: {text}"
    );
    assert!(text.contains('3'), "line 3 is reported as unreadable: {text}");
}

#[test]
fn status_and_run_without_enrollment_say_so() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let out = agent(&["status", "--state-dir", state.to_str().unwrap()]);
    // Not enrolled is exit code 4, for scripts.
    assert_eq!(out.status.code(), Some(4));
    assert!(String::from_utf8_lossy(&out.stdout).contains("enrolled: no"));

    let out = agent(&["run", "--state-dir", state.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not enrolled"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let out = agent(&[
        "enroll",
        "--token",
        "not-a-token",
        "--state-dir",
        state.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("join token"));

    let config = dir.path().join("bad.toml");
    std::fs::write(&config, "[outbox]\nbatch_max_alerts = 0\n").unwrap();
    let out = agent(&[
        "run",
        "--config",
        config.to_str().unwrap(),
        "--state-dir",
        state.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("batch_max_alerts"));
}
