#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The `ward` binary's usage: every command of the issue is there, and a missing
//! URL is a clear error, not a crash. (Also makes `cargo test` build the binary the
//! end-to-end tests in `tests/tests/e2e/cli.rs` run.)

use std::process::Command;

fn ward(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_ward"))
        .args(args)
        .env_clear()
        .env("HOME", std::env::temp_dir().join("ward-cli-usage-no-home"))
        .output()
        .unwrap()
}

#[test]
fn every_command_is_offered() {
    for (group, commands) in [
        ("incidents", &["list", "show", "update", "comment", "merge"][..]),
        ("actions", &["list", "propose", "approve", "reject"][..]),
        ("devices", &["list", "show"][..]),
        ("hunt", &["run", "saved", "save", "delete"][..]),
    ] {
        let out = ward(&[group, "--help"]);
        assert!(out.status.success());
        let help = String::from_utf8_lossy(&out.stdout);
        for c in commands {
            assert!(
                help.lines().any(|l| l.trim_start().starts_with(c)),
                "ward {group} lacks {c}:\n{help}"
            );
        }
    }
}

#[test]
fn without_a_url_it_says_where_to_put_one() {
    let out = ward(&["devices", "list"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no collector URL") && err.contains("WARD_URL"), "{err}");
}
