//! The `ward-collector` binary's set-up commands, run as an operator would.

#![allow(clippy::unwrap_used)]

use std::process::Command;

fn collector(dir: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_ward-collector"))
        .arg("--data-dir")
        .arg(dir)
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn init_token_user_and_refusals() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("c");
    let out = collector(&dir, &["init", "--public-addr", "192.0.2.1:4433"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("admin API token"));

    let again = collector(&dir, &["init"]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("refusing to overwrite"));

    let token = collector(&dir, &["token", "create", "--uses", "5", "--ttl", "2h"]);
    assert!(token.status.success());
    let token: ward_protocol::JoinToken = String::from_utf8_lossy(&token.stdout).trim().parse().unwrap();
    assert_eq!(token.collector_addr, "192.0.2.1:4433");

    let bad_ttl = collector(&dir, &["token", "create", "--ttl", "3 weeks"]);
    assert!(!bad_ttl.status.success());
    let bad_role = collector(&dir, &["user", "add", "bob", "--role", "god"]);
    assert!(!bad_role.status.success());
    assert!(String::from_utf8_lossy(&bad_role.stderr).contains("unknown role"));
    let no_device = collector(&dir, &["device", "revoke", "01ARZ3NDEKTSV4RRFFQ69G5FAV"]);
    assert!(!no_device.status.success());
}

#[test]
fn audit_verify_detects_a_tampered_entry() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("c");
    assert!(collector(&dir, &["init"]).status.success());
    for (name, role) in [("ann", "analyst"), ("bob", "approver")] {
        assert!(collector(&dir, &["user", "add", name, "--role", role]).status.success());
    }
    let ok = collector(&dir, &["audit", "verify"]);
    let stdout = String::from_utf8_lossy(&ok.stdout);
    assert!(ok.status.success(), "{stdout}{}", String::from_utf8_lossy(&ok.stderr));
    assert!(stdout.contains("OK"), "{stdout}");
    let verified: u64 = stdout
        .lines()
        .find_map(|l| l.strip_prefix("verified entries: "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(verified >= 2, "{stdout}");

    // Change who added ann, behind the collector's back.
    let db = rusqlite::Connection::open(dir.join("ward.db")).unwrap();
    let changed = db
        .execute(
            "UPDATE audit_log SET actor = 'mallory' WHERE id = (SELECT MIN(id) FROM audit_log WHERE target = 'ann')",
            [],
        )
        .unwrap();
    assert_eq!(changed, 1);
    drop(db);
    let bad = collector(&dir, &["audit", "verify"]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stdout).contains("BROKEN"));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("broken"));
}
