//! Agent durability with real processes: `kill -9` during a file burst loses nothing
//! (group commit, then the start-up rescan of what was in flight) and the unclean stop
//! reaches the collector as a reported gap; a full agent disk (a small tmpfs in a
//! mount namespace of the test's own) holds alerts in memory, says so in
//! `ward-agent status`, and delivers or reports every one once space returns.

use std::time::{Duration, Instant};

use ward_tests::*;

const EICAR: &[u8] = br"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*";

/// How many stored alerts name each `prefix-NNNN` file of a burst of `n`.
fn per_file(collector: &Collector, dev: &str, prefix: &str, n: usize) -> Vec<i64> {
    let db = collector.db().unwrap();
    let mut stmt = db
        .prepare("SELECT entities FROM alerts WHERE device_id = ?1 AND entities LIKE ?2")
        .unwrap();
    let mut counts = vec![0i64; n];
    let rows = stmt
        .query_map([dev, &format!("%{prefix}-%")], |r| r.get::<_, String>(0))
        .unwrap();
    for entities in rows {
        let entities = entities.unwrap();
        let Some(at) = entities.find(&format!("{prefix}-")) else {
            continue;
        };
        let digits: String = entities[at + prefix.len() + 1..].chars().take(4).collect();
        if let Ok(i) = digits.parse::<usize>()
            && i < n
        {
            counts[i] += 1;
        }
    }
    counts
}

/// The collector's record of the drop reports a device sent (audit detail).
fn drop_reports(collector: &Collector, dev: &str) -> Vec<String> {
    let db = collector.db().unwrap();
    let mut stmt = db
        .prepare("SELECT detail FROM audit_log WHERE action = 'device.dropped_alerts' AND target = ?1 ORDER BY id")
        .unwrap();
    stmt.query_map([dev], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_during_a_file_burst_loses_nothing_observed_and_reports_the_unclean_stop() {
    let collector = Collector::start_with(without_folding).unwrap();
    let mut agent = Agent::start_with(&collector, |w| {
        format!("{}\n[detection]\naggregate_window_ms = 0\n", Agent::test_config(w))
    })
    .unwrap();
    agent.wait_connected(Duration::from_secs(15)).unwrap();
    let dev = agent.device_id.clone();

    // A 3,000-file burst over about a second and a half; kill -9 one second in.
    let n = 3000;
    let started = Instant::now();
    let mut written_at = Vec::with_capacity(n);
    let mut killed_at = None;
    for i in 0..n {
        std::fs::write(agent.watch.join(format!("burst-{i:04}.bin")), EICAR).unwrap();
        written_at.push(Instant::now());
        if i % 2 == 1 {
            std::thread::sleep(Duration::from_millis(1));
        }
        if killed_at.is_none() && started.elapsed() >= Duration::from_millis(1000) {
            agent.kill9();
            killed_at = Some(Instant::now());
        }
    }
    let killed_at = killed_at.expect("the burst outlasted a second");
    let before_kill = written_at
        .iter()
        .filter(|t| killed_at.duration_since(**t) > Duration::from_millis(50))
        .count();
    assert!(
        before_kill > 100 && before_kill < n,
        "the kill fell inside the burst ({before_kill})"
    );

    agent.run().unwrap();
    // Everything written more than 50 ms before the kill must arrive; what came after
    // (written while the agent was down) too, through the start-up rescan.
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let counts = per_file(&collector, &dev, "burst", n);
        let missing: Vec<usize> = (0..n).filter(|&i| counts[i] == 0).collect();
        if missing.is_empty() {
            break;
        }
        let observed_missing = missing.iter().filter(|&&i| i < before_kill).count();
        assert!(
            Instant::now() < deadline,
            "{} files never arrived ({observed_missing} written > 50 ms before the kill), e.g. {:?}",
            missing.len(),
            &missing[..missing.len().min(10)]
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let counts = per_file(&collector, &dev, "burst", n);
    let doubled: Vec<usize> = (0..n).filter(|&i| counts[i] > 1).collect();
    assert!(
        doubled.is_empty(),
        "{} files alerted twice (the rescan must skip what the outbox held), e.g. {:?}",
        doubled.len(),
        &doubled[..doubled.len().min(10)]
    );
    let gaps: i64 = collector
        .db()
        .unwrap()
        .query_row("SELECT COUNT(*) FROM sequence_gaps", [], |r| r.get(0))
        .unwrap();
    assert_eq!(gaps, 0, "no sequence number was lost");

    // The unclean stop reached the collector as a report with its reason.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let reports = drop_reports(&collector, &dev);
        if reports.iter().any(|r| r.contains("unclean shutdown")) {
            break;
        }
        assert!(Instant::now() < deadline, "no unclean-shutdown report: {reports:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Writes into `dir` until the filesystem refuses: a full disk.
fn fill(dir: &std::path::Path) -> u64 {
    use std::io::Write;
    let mut f = std::fs::File::create(dir.join("filler")).unwrap();
    let chunk = vec![0x5au8; 16 * 1024];
    let mut written = 0u64;
    while f.write_all(&chunk).is_ok() {
        written += chunk.len() as u64;
    }
    // The last partial chunk, byte by byte in smaller pieces.
    while f.write_all(&chunk[..512]).is_ok() {
        written += 512;
    }
    written
}

fn run(program: &str, args: &[&str]) {
    let out = std::process::Command::new(program).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Needs a mount namespace of its own (root, or unprivileged user namespaces).
mod privileged {
    use super::*;

    /// A full agent disk: the agent's state dir on a small tmpfs (in a mount namespace of
    /// the test's own), filled up. Alerts wait in memory (bounded), `ward-agent status` and
    /// the collector's device view say the disk is full; once space returns the waiting
    /// alerts arrive and what the bound dropped reaches the collector as a report.
    #[test]
    fn a_full_agent_disk_holds_alerts_in_memory_says_so_and_reports_what_it_dropped() {
        in_own_namespace(
            &test_path(
                module_path!(),
                "a_full_agent_disk_holds_alerts_in_memory_says_so_and_reports_what_it_dropped",
            ),
            || async {
                run("ip", &["link", "set", "lo", "up"]);
                let collector = Collector::start_with(without_folding).unwrap();
                let mut agent = Agent::start_with(&collector, |w| {
                    format!(
                        "{}\n[detection]\naggregate_window_ms = 0\n\n[outbox]\nmemory_queue_max_alerts = 20\n",
                        Agent::test_config(w)
                    )
                })
                .unwrap();
                agent.wait_connected(Duration::from_secs(15)).unwrap();
                let dev = agent.device_id.clone();
                assert!(agent.stop().unwrap().success(), "the agent stops cleanly");

                // Move the state dir onto a 2 MiB tmpfs.
                let state = agent.state_dir();
                let saved = agent.dir.path().join("state.saved");
                run("cp", &["-a", state.to_str().unwrap(), saved.to_str().unwrap()]);
                run(
                    "mount",
                    &[
                        "-t",
                        "tmpfs",
                        "-o",
                        "size=2m",
                        "ward-test-full",
                        state.to_str().unwrap(),
                    ],
                );
                run(
                    "cp",
                    &["-a", &format!("{}/.", saved.display()), state.to_str().unwrap()],
                );
                agent.run().unwrap();
                agent.wait_connected(Duration::from_secs(15)).unwrap();

                // Fill the disk, then 50 distinct detections.
                fill(&state);
                for i in 0..50 {
                    std::fs::write(agent.watch.join(format!("full-{i:04}.bin")), EICAR).unwrap();
                }
                let deadline = Instant::now() + Duration::from_secs(20);
                loop {
                    let status = agent.status().unwrap();
                    if status.contains("agent: running")
                        && status.contains("storage: FAILING")
                        && status.contains("no space left")
                        && status.contains("20 alerts waiting in memory, 30 dropped")
                    {
                        break;
                    }
                    assert!(
                        Instant::now() < deadline,
                        "status never said the disk is full: {status}"
                    );
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                // The heartbeat told the collector too.
                let deadline = Instant::now() + Duration::from_secs(20);
                loop {
                    let (_, device) = collector.get(&format!("/api/v1/devices/{dev}")).await.unwrap();
                    if device["storage_error"]
                        .as_str()
                        .is_some_and(|e| e.contains("no space left"))
                    {
                        break;
                    }
                    assert!(
                        Instant::now() < deadline,
                        "the collector never heard of the full disk: {device}"
                    );
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                assert_eq!(
                    collector.alert_counts(&dev, "full-").unwrap().0,
                    0,
                    "nothing was stored yet"
                );

                // Space returns: the 20 waiting arrive, the 30 dropped are reported.
                std::fs::remove_file(state.join("filler")).unwrap();
                let deadline = Instant::now() + Duration::from_secs(30);
                loop {
                    let (_, device) = collector.get(&format!("/api/v1/devices/{dev}")).await.unwrap();
                    let stored = collector.alert_counts(&dev, "full-").unwrap().0;
                    let reported = device["drop_reports"].as_array().and_then(|r| {
                        r.iter()
                            .find(|r| r["reason"].as_str().is_some_and(|s| s.contains("memory queue")))
                            .cloned()
                    });
                    if stored == 20
                        && let Some(r) = reported
                        && device["storage_error"].is_null()
                    {
                        assert_eq!(r["dropped"], 30, "{r}");
                        assert!(r["reason"].as_str().unwrap().contains("no space left"), "{r}");
                        assert_eq!(device["dropped_total"], 30, "{device}");
                        break;
                    }
                    assert!(
                        Instant::now() < deadline,
                        "after space returned: {stored} of 20 stored; device {device}"
                    );
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                let status = agent.status().unwrap();
                assert!(status.contains("storage: ok"), "{status}");
                agent.kill9();
                let _ = std::process::Command::new("umount").arg(&state).status();
            },
        );
    }
}

/// Waits until `n` alerts naming `needle` are stored.
async fn wait_stored(collector: &Collector, dev: &str, needle: &str, n: i64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while collector.alert_counts(dev, needle).unwrap().0 < n {
        assert!(
            Instant::now() < deadline,
            "only {:?} of {n} {needle} alerts",
            collector.alert_counts(dev, needle).unwrap()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A zeroed outbox (the agent's file overwritten while it was stopped, with 4 alerts
/// undelivered): the agent quarantines it, starts a new epoch and reports the range
/// lost; the collector records the epoch change and the report as explained gaps of
/// the old epoch, while the new epoch numbers from 1 without a gap. The report is
/// kept by the agent until the collector has stored it: refused once (a trigger
/// makes the store fail) and across an agent restart, it still arrives, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zeroed_outbox_is_a_new_epoch_and_its_loss_is_reported_until_stored() {
    let mut collector = Collector::start_with(without_folding).unwrap();
    // Only the file sensor: the test counts alerts, and processes elsewhere on the
    // host (builds under /tmp) would raise their own.
    let mut agent = Agent::start_with(&collector, |w| {
        let config = Agent::test_config(w).replace("[sensors]\n", "[sensors]\nprocess_enabled = false\n");
        format!("{config}\n[detection]\naggregate_window_ms = 0\n")
    })
    .unwrap();
    agent.wait_connected(Duration::from_secs(15)).unwrap();
    let dev = agent.device_id.clone();
    for i in 0..3 {
        std::fs::write(agent.watch.join(format!("first-{i}.bin")), EICAR).unwrap();
    }
    wait_stored(&collector, &dev, "first-", 3).await;
    let old_epoch_rowid: i64 = collector
        .db()
        .unwrap()
        .query_row("SELECT MAX(rowid) FROM alerts WHERE device_id = ?1", [&dev], |r| {
            r.get(0)
        })
        .unwrap();
    let (_, device) = collector.get(&format!("/api/v1/devices/{dev}")).await.unwrap();
    let old_epoch = device["outbox_epoch"].as_str().unwrap().to_string();
    assert_eq!(old_epoch.len(), 16, "{device}");

    // Four more while the collector is away, then the agent stops with them queued.
    collector.stop().unwrap();
    for i in 0..4 {
        std::fs::write(agent.watch.join(format!("lost-{i}.bin")), EICAR).unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while !agent.status().unwrap().contains("outbox: 4 alerts") {
        assert!(Instant::now() < deadline, "{}", agent.status().unwrap());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(agent.stop().unwrap().success());
    let outbox = agent.state_dir().join("outbox.db");
    let len = std::fs::metadata(&outbox).unwrap().len() as usize;
    std::fs::write(&outbox, vec![0u8; len.max(4096)]).unwrap();
    for side in ["outbox.db-wal", "outbox.db-shm"] {
        let _ = std::fs::remove_file(agent.state_dir().join(side));
    }

    // The collector refuses to store drop reports for now.
    let db_path = collector.data_dir().join("ward.db");
    let writable = || {
        let db = rusqlite::Connection::open(&db_path).unwrap();
        db.busy_timeout(Duration::from_secs(10)).unwrap();
        db
    };
    writable()
        .execute_batch(
            "CREATE TABLE test_refuse_drops (x INTEGER);
             INSERT INTO test_refuse_drops VALUES (1);
             CREATE TRIGGER test_refuse_drop_reports BEFORE INSERT ON drop_reports
             WHEN NEW.report_id IS NOT NULL AND (SELECT COUNT(*) FROM test_refuse_drops) > 0
             BEGIN SELECT RAISE(ABORT, 'refused by the test'); END;",
        )
        .unwrap();
    collector.serve().unwrap();
    agent.run().unwrap();
    agent.wait_connected(Duration::from_secs(15)).unwrap();
    let corrupt_reports = |c: &Collector| -> Vec<(String, Option<i64>, Option<i64>, i64)> {
        let db = c.db().unwrap();
        let mut stmt = db
            .prepare(
                "SELECT printf('%016x', seqs_epoch), first_seq, last_seq, dropped FROM drop_reports
                 WHERE device_id = ?1 AND reason LIKE '%corrupt%'",
            )
            .unwrap();
        stmt.query_map([&dev], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    };
    // The epoch change is recorded at once; the report is refused (heartbeats resend it).
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, device) = collector.get(&format!("/api/v1/devices/{dev}")).await.unwrap();
        let epoch = device["outbox_epoch"].as_str().unwrap_or_default().to_string();
        if !epoch.is_empty() && epoch != old_epoch {
            let reports = device["drop_reports"].as_array().unwrap();
            assert!(
                reports
                    .iter()
                    .any(|r| r["reason"].as_str().unwrap().contains("epoch changed") && r["first_seq"] == 4),
                "{device}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "no epoch change: {device}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(corrupt_reports(&collector).is_empty(), "the refusal held");

    // A restart of the agent, then the collector accepts: the report still arrives, once.
    assert!(agent.stop().unwrap().success());
    agent.run().unwrap();
    agent.wait_connected(Duration::from_secs(15)).unwrap();
    writable().execute("DELETE FROM test_refuse_drops", []).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while corrupt_reports(&collector).is_empty() {
        assert!(Instant::now() < deadline, "the quarantine report never arrived");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        corrupt_reports(&collector),
        vec![(old_epoch.clone(), Some(1), Some(7), 0)],
        "one report, naming the old epoch's numbers"
    );

    // The new epoch numbers from 1: two new alerts, and no gap in it.
    for i in 0..2 {
        std::fs::write(agent.watch.join(format!("after-{i}.bin")), EICAR).unwrap();
    }
    wait_stored(&collector, &dev, "after-", 2).await;
    // Every alert of the new epoch (the two, and any the restarted sensors raised
    // before them) is numbered from 1 with no hole.
    let db = collector.db().unwrap();
    let new_epoch: Vec<(i64, String, String)> = db
        .prepare("SELECT seq, rule_id, entities FROM alerts WHERE device_id = ?1 AND rowid > ?2 ORDER BY seq")
        .unwrap()
        .query_map(rusqlite::params![&dev, old_epoch_rowid], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let seqs: Vec<i64> = new_epoch.iter().map(|a| a.0).collect();
    assert_eq!(seqs, (1..=seqs.len() as i64).collect::<Vec<_>>(), "{new_epoch:?}");
    assert_eq!(
        new_epoch.iter().filter(|a| a.2.contains("after-")).count(),
        2,
        "{new_epoch:?}"
    );
    let gaps: Vec<(String, i64, i64, String)> = db
        .prepare("SELECT printf('%016x', epoch), first_seq, last_seq, reason FROM sequence_gaps WHERE device_id = ?1 ORDER BY first_seq")
        .unwrap()
        .query_map([&dev], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(gaps.len(), 1, "{gaps:?}");
    let (epoch, first, last, reason) = &gaps[0];
    assert_eq!((epoch, *first, *last), (&old_epoch, 4, 7), "{reason}");
    assert!(reason.contains("dropped by agent: outbox file was corrupt"), "{reason}");
}

/// A collector slower to acknowledge than the agent's ack timeout (every batch takes
/// about 1.5 ack timeouts to commit: a trigger burns CPU in the writer's transaction,
/// duplicates included) must still get the outbox delivered. Before, the agent took
/// each slow ack for a dead connection, reconnected and sent the same batch again, so
/// nothing was ever acknowledged: the stall of `offline_alerts_arrive_once_and_survive_agent_kill`
/// when the machine was loaded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_but_live_collector_is_waited_for_not_abandoned() {
    let mut collector = Collector::start_with(without_folding).unwrap();
    let agent = Agent::start_with(&collector, |w| {
        format!("{}\n[detection]\naggregate_window_ms = 0\n", Agent::test_config(w))
    })
    .unwrap();
    agent.wait_connected(Duration::from_secs(15)).unwrap();
    let dev = agent.device_id.clone();
    collector.stop().unwrap();
    for i in 0..20 {
        std::fs::write(agent.watch.join(format!("slow-{i}.bin")), EICAR).unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while !agent.status().unwrap().contains("outbox: 20 alerts") {
        assert!(Instant::now() < deadline, "{}", agent.status().unwrap());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Calibrate a query that takes about 4.5 s here (the test config's ack timeout is
    // 3 s), and run it in every ingest commit (each batch updates the device's last_seq).
    let db = rusqlite::Connection::open(collector.data_dir().join("ward.db")).unwrap();
    let burn = |n: u64| {
        format!(
            "SELECT count(*) FROM (WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < {n}) SELECT x FROM c)"
        )
    };
    let started = Instant::now();
    db.query_row(&burn(200_000), [], |r| r.get::<_, i64>(0)).unwrap();
    let per = started.elapsed().as_secs_f64() / 200_000.0;
    let n = (4.5 / per) as u64;
    db.execute_batch(&format!(
        "CREATE TRIGGER test_slow_ingest AFTER UPDATE OF last_seq ON devices BEGIN {}; END;",
        burn(n)
    ))
    .unwrap();
    drop(db);

    collector.serve().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let status = agent.status().unwrap();
        if status.contains("outbox: 0 alerts") && collector.alert_counts(&dev, "slow-").unwrap().0 == 20 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the outbox never drained through a slow collector: {status}; stored {:?}",
            collector.alert_counts(&dev, "slow-").unwrap()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(collector.alert_counts(&dev, "slow-").unwrap(), (20, 20));
}
