//! End to end against a real collector process: enrollment, signed ingest, the
//! API, every refusal with its reason while a good client keeps being served,
//! and a kill -9 in the middle of a burst.

use std::time::Duration;

use ward_protocol::codec::MAX_AGENT_FRAME;
use ward_protocol::*;
use ward_tests::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enroll_send_and_read_back_through_the_api() {
    let collector = Collector::start().unwrap();
    let token = collector.join_token(1, "1h").unwrap();
    let mut dev = TestDevice::enroll(&token, "laptop-1").await.unwrap();
    dev.connect().await.unwrap();

    let first: Vec<Signed> = (0..10)
        .map(|_| {
            let a = dev.next_alert();
            dev.sign(&a)
        })
        .collect();
    let ack = dev.send_batch(first.clone()).await.unwrap();
    assert_eq!((ack.stored, ack.duplicates), (10, 0));
    // A resend after a lost acknowledgement is acknowledged and not stored twice.
    let ack = dev.send_batch(first).await.unwrap();
    assert_eq!((ack.stored, ack.duplicates), (0, 10));

    let id = dev.id().to_string();
    let (status, body) = collector
        .get(&format!("/api/v1/alerts?device={id}&limit=4"))
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    let page = body["alerts"].as_array().unwrap();
    assert_eq!(page.len(), 4);
    assert_eq!(page[0]["seq"], 10, "newest first");
    assert_eq!(page[0]["rule"]["author"], "Ward tests");
    assert_eq!(page[0]["entities"][0]["kind"], "user");
    let cursor = body["next_cursor"].as_str().unwrap().to_string();
    let (_, next) = collector
        .get(&format!("/api/v1/alerts?device={id}&limit=4&cursor={cursor}"))
        .await
        .unwrap();
    assert_eq!(next["alerts"][0]["seq"], 6);

    let alert_id = page[0]["id"].as_str().unwrap();
    let (status, one) = collector.get(&format!("/api/v1/alerts/{alert_id}")).await.unwrap();
    assert_eq!((status, one["id"].as_str()), (200, Some(alert_id)));
    let (status, _) = collector.get("/api/v1/alerts?severity=high").await.unwrap();
    assert_eq!(status, 200);
    let (status, body) = collector.get("/api/v1/alerts?severity=apocalyptic").await.unwrap();
    assert_eq!(status, 400, "{body}");
    let (status, _) = collector.get("/api/v1/alerts/not-an-id").await.unwrap();
    assert_eq!(status, 400);
    // Stored as 16 bytes: the id in lower case finds the same alert, an id never
    // stored finds nothing.
    let (status, lower) = collector
        .get(&format!("/api/v1/alerts/{}", alert_id.to_lowercase()))
        .await
        .unwrap();
    assert_eq!((status, lower["id"].as_str()), (200, Some(alert_id)));
    let (status, _) = collector
        .get("/api/v1/alerts/01ARZ3NDEKTSV4RRFFQ69G5FAV")
        .await
        .unwrap();
    assert_eq!(status, 404);

    let (status, device) = collector.get(&format!("/api/v1/devices/{id}")).await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(device["hostname"], "laptop-1");
    assert_eq!(device["online"], true);
    assert_eq!(device["last_seq"], 10);
    assert_eq!(device["sequence_gaps"].as_array().unwrap().len(), 0);

    // A gap in the sequence is recorded, and closed when the late alert arrives.
    dev.next_seq = 14;
    dev.send_new(1).await.unwrap();
    let (_, device) = collector.get(&format!("/api/v1/devices/{id}")).await.unwrap();
    assert_eq!(device["sequence_gaps"][0]["first_seq"], 11);
    assert_eq!(device["sequence_gaps"][0]["last_seq"], 13);
    assert_eq!(device["missing_alerts"], 3);
    let late = test_alert(dev.id(), 12);
    dev.send_batch(vec![dev.sign(&late)]).await.unwrap();
    let (_, device) = collector.get(&format!("/api/v1/devices/{id}")).await.unwrap();
    assert_eq!(device["missing_alerts"], 2);

    // Roles and authentication.
    let viewer = collector.cli(&["user", "add", "vera", "--role", "viewer"]).unwrap();
    let (status, _) = collector.get_as("/api/v1/devices", &viewer).await.unwrap();
    assert_eq!(status, 200);
    let (status, body) = collector
        .post_as(&format!("/api/v1/devices/{id}/revoke"), &viewer, serde_json::json!({}))
        .await
        .unwrap();
    assert_eq!(status, 403, "{body}");
    let (status, _) = collector.get_as("/api/v1/devices", "ward_wrong").await.unwrap();
    assert_eq!(status, 401);
    let metrics = collector.metrics().await.unwrap();
    assert_eq!(metric(&metrics, "ward_alerts_stored_total"), 12);
    assert_eq!(metric(&metrics, "ward_alerts_duplicate_total"), 10);
    assert_eq!(metric(&metrics, "ward_connected_agents"), 1);
}

/// Each bad input is refused with its reason; a good client keeps being served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_have_reasons_and_spare_other_agents() {
    let collector = Collector::start().unwrap();
    let mut good = TestDevice::enroll(&collector.join_token(1, "1h").unwrap(), "good")
        .await
        .unwrap();
    good.connect().await.unwrap();
    good.send_new(5).await.unwrap();

    // A used-up token.
    let single = collector.join_token(1, "1h").unwrap();
    let mut victim = TestDevice::enroll(&single, "victim").await.unwrap();
    let err = TestDevice::enroll(&single, "again")
        .await
        .err()
        .expect("second use refused");
    assert!(err.to_string().contains("no uses left"), "{err}");
    // An expired token.
    let expiring = collector.join_token(5, "1s").unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let err = TestDevice::enroll(&expiring, "late")
        .await
        .err()
        .expect("expired token refused");
    assert!(err.to_string().contains("expired"), "{err}");
    // A token with a secret the collector never issued.
    let mut forged = collector.join_token(1, "1h").unwrap();
    forged.secret = [0x42; 32];
    let err = TestDevice::enroll(&forged, "forged")
        .await
        .err()
        .expect("unknown token refused");
    assert!(err.to_string().contains("unknown enrollment token"), "{err}");
    // A token pinning another CA.
    let mut wrong_pin = collector.join_token(1, "1h").unwrap();
    wrong_pin.ca_sha256 = [0; 32];
    assert!(TestDevice::enroll(&wrong_pin, "mitm").await.is_err());
    good.send_new(1).await.unwrap();

    // A wrong signature.
    victim.connect().await.unwrap();
    let a = victim.next_alert();
    let mut tampered = victim.sign(&a);
    tampered.payload[3] ^= 0x55;
    let _ = victim.send_batch(vec![tampered]).await;
    assert!(victim.closed_reason().await.contains("signature does not verify"));
    good.send_new(1).await.unwrap();

    // Another device's id inside a correctly signed alert.
    victim.connect().await.unwrap();
    let foreign = test_alert(good.id(), 99);
    let _ = victim.send_batch(vec![victim.sign(&foreign)]).await;
    assert!(victim.closed_reason().await.contains("not the connection's own"));
    good.send_new(1).await.unwrap();

    // Good device A's alert replayed over B's connection (signed by A's key).
    victim.connect().await.unwrap();
    let a = good.next_alert();
    let stolen = good.sign(&a);
    let _ = victim.send_batch(vec![stolen]).await;
    assert!(victim.closed_reason().await.contains("signature does not verify"));

    // An oversized frame, refused from its header.
    victim.connect().await.unwrap();
    let mut header = (MAX_AGENT_FRAME + 1).to_be_bytes().to_vec();
    header.extend_from_slice(&[PROTOCOL_MAJOR, PROTOCOL_MINOR]);
    victim.session.as_mut().unwrap().send_raw(&header).await.unwrap();
    assert!(victim.closed_reason().await.contains("exceeds the limit"));
    good.send_new(1).await.unwrap();

    // Random garbage.
    victim.connect().await.unwrap();
    let garbage: Vec<u8> = (0..300u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
    victim.session.as_mut().unwrap().send_raw(&garbage).await.unwrap();
    let reason = victim.closed_reason().await;
    assert!(reason.contains("bad frame"), "{reason}");
    good.send_new(1).await.unwrap();

    // A revoked device: its open connection is closed and it cannot come back.
    victim.connect().await.unwrap();
    victim.send_new(1).await.unwrap();
    collector.cli(&["device", "revoke", &victim.id().to_string()]).unwrap();
    assert!(victim.closed_reason().await.contains("revoked"));
    let err = victim.connect().await;
    let refused = match err {
        Err(e) => e.to_string(),
        Ok(()) => victim.closed_reason().await,
    };
    assert!(refused.contains("revoked"), "{refused}");
    good.send_new(1).await.unwrap();

    let metrics = collector.metrics().await.unwrap();
    assert_eq!(metric(&metrics, "ward_rejected_total{reason=\"bad_signature\"}"), 2);
    assert_eq!(metric(&metrics, "ward_rejected_total{reason=\"wrong_device\"}"), 1);
    assert_eq!(metric(&metrics, "ward_rejected_total{reason=\"bad_frame\"}"), 2);
    assert!(metric(&metrics, "ward_rejected_total{reason=\"revoked\"}") >= 1);
    // The wrong pin fails in the TLS handshake, before enrollment.
    assert_eq!(metric(&metrics, "ward_enrollments_refused_total"), 3);
    let stored: i64 = collector
        .db()
        .unwrap()
        .query_row("SELECT COUNT(*) FROM alerts", [], |r| r.get(0))
        .unwrap();
    assert_eq!(stored, 5 + 6 + 1, "only good alerts are stored");
}

/// kill -9 the collector in the middle of 20,000 alerts from several clients;
/// after a restart the clients resend what was not acknowledged and every alert
/// is stored exactly once, with no sequence gap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_burst_loses_and_duplicates_nothing() {
    const CLIENTS: usize = 4;
    const PER_CLIENT: usize = 5_000;
    const BATCH: usize = 100;
    let mut collector = Collector::start().unwrap();
    let token = collector.join_token(CLIENTS as u32, "1h").unwrap();
    let mut devices = Vec::new();
    for i in 0..CLIENTS {
        let mut d = TestDevice::enroll(&token, &format!("burst-{i}")).await.unwrap();
        let signed: Vec<Signed> = (0..PER_CLIENT)
            .map(|_| {
                let a = d.next_alert();
                d.sign(&a)
            })
            .collect();
        devices.push((d, signed));
    }

    // Each client sends its alerts batch by batch and remembers what was acknowledged.
    let run = |mut d: TestDevice, signed: Vec<Signed>, mut acked: usize| async move {
        if d.connect().await.is_err() {
            return (d, signed, acked);
        }
        while acked < signed.len() {
            let end = (acked + BATCH).min(signed.len());
            match d.send_batch(signed[acked..end].to_vec()).await {
                Ok(_) => acked = end,
                Err(_) => break,
            }
        }
        (d, signed, acked)
    };
    let mut tasks = Vec::new();
    for (d, signed) in devices {
        tasks.push(tokio::spawn(run(d, signed, 0)));
    }
    // Kill once a good part of the burst is in.
    let t0 = std::time::Instant::now();
    let db = collector.data_dir().join("ward.db");
    loop {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let n: i64 = rusqlite::Connection::open(&db)
            .and_then(|c| c.query_row("SELECT COUNT(*) FROM alerts", [], |r| r.get(0)))
            .unwrap_or(0);
        if n >= 6_000 {
            break;
        }
    }
    eprintln!("kill at {:?}", t0.elapsed());
    collector.kill9();
    let mut states = Vec::new();
    for t in tasks {
        states.push(t.await.unwrap());
    }
    let acked_before: usize = states.iter().map(|s| s.2).sum();
    assert!(
        acked_before < CLIENTS * PER_CLIENT,
        "the kill came too late to test anything"
    );

    eprintln!("restart at {:?}", t0.elapsed());
    collector.serve().unwrap();
    let mut tasks = Vec::new();
    for (mut d, signed, acked) in states {
        d.session = None;
        tasks.push(tokio::spawn(run(d, signed, acked)));
    }
    for t in tasks {
        let (_, signed, acked) = t.await.unwrap();
        assert_eq!(acked, signed.len());
    }
    eprintln!("done at {:?}", t0.elapsed());
    // They came back on the tickets the killed process gave them: resumed, not a
    // full handshake each (the ticket keys are in the data dir).
    let metrics = collector.metrics().await.unwrap();
    assert!(
        metric(&metrics, "ward_tls_resumptions_total") >= CLIENTS as u64,
        "{metrics}"
    );
    let db = collector.db().unwrap();
    let (total, distinct): (i64, i64) = db
        .query_row("SELECT COUNT(*), COUNT(DISTINCT id) FROM alerts", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    assert_eq!(
        (total, distinct),
        ((CLIENTS * PER_CLIENT) as i64, (CLIENTS * PER_CLIENT) as i64)
    );
    let gaps: i64 = db
        .query_row("SELECT COUNT(*) FROM sequence_gaps", [], |r| r.get(0))
        .unwrap();
    assert_eq!(gaps, 0);
    let integrity: String = db.query_row("PRAGMA integrity_check", [], |r| r.get(0)).unwrap();
    assert_eq!(integrity, "ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_cleanly() {
    let mut collector = Collector::start().unwrap();
    let mut dev = TestDevice::enroll(&collector.join_token(1, "1h").unwrap(), "t")
        .await
        .unwrap();
    dev.connect().await.unwrap();
    dev.send_new(3).await.unwrap();
    let status = tokio::task::spawn_blocking(move || {
        let s = collector.stop();
        (s, collector)
    })
    .await
    .unwrap();
    assert!(status.0.unwrap().success());
}

/// A device's clock against the collector's: from each heartbeat into the devices
/// API and `ward-collector device list` (with last seen as a time, not milliseconds);
/// and a real agent's `status` says its own skew from its session's welcome.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_clock_skew_is_shown_where_operators_look() {
    let collector = Collector::start().unwrap();
    let token = collector.join_token(2, "1h").unwrap();
    let mut fast = TestDevice::enroll(&token, "fast-clock").await.unwrap();
    let mut good = TestDevice::enroll(&token, "good-clock").await.unwrap();
    for (dev, ahead) in [(&mut fast, 10 * 60_000), (&mut good, 0)] {
        dev.connect().await.unwrap();
        let hb = AgentMessage::Heartbeat(Heartbeat {
            sent_at_ms: now_ms() + ahead,
            inventory: None,
            isolation: IsolationState::None,
            outbox_depth: 0,
            rule_pack_version: 0,
        });
        dev.session.as_mut().unwrap().send(&hb).await.unwrap();
        dev.send_new(1).await.unwrap(); // the ack proves the heartbeat was handled
    }
    // Heartbeats are written once a second.
    let skew_of = async |dev: &TestDevice| -> Option<i64> {
        let (_, view) = collector.get(&format!("/api/v1/devices/{}", dev.id())).await.unwrap();
        view["clock_skew_ms"]
            .as_i64()
            .or_else(|| view["device"]["clock_skew_ms"].as_i64())
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let (fast_skew, good_skew) = loop {
        if let (Some(f), Some(g)) = (skew_of(&fast).await, skew_of(&good).await) {
            break (f, g);
        }
        assert!(std::time::Instant::now() < deadline, "no clock skew recorded");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!((590_000..=610_000).contains(&fast_skew), "{fast_skew}");
    assert!(good_skew.abs() < 10_000, "{good_skew}");

    let list = collector.cli(&["device", "list"]).unwrap();
    let line = list.lines().find(|l| l.contains("fast-clock")).unwrap();
    assert!(line.contains(" UTC"), "last seen as a time: {list}");
    let shown: i64 = line.split_whitespace().last().unwrap().parse().unwrap();
    assert!((590_000..=610_000).contains(&shown), "{list}");

    let agent = Agent::start(&collector).unwrap();
    agent.wait_connected(Duration::from_secs(15)).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let status = agent.status().unwrap();
        if let Some(clock) = status.lines().find(|l| l.starts_with("clock: ")) {
            // Same machine, same clock: within the round trip.
            assert!(
                clock.contains("in step") || clock.contains(" 0.") || clock.contains(" 1."),
                "{status}"
            );
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no clock line: {status}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A database damaged on disk (8 KiB of garbage mid-file) stops the collector at
/// start with the way out, and every start after that refuses before listening;
/// `serve --skip-integrity-check` runs on it anyway.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_database_is_refused_at_start_with_the_way_out() {
    let mut collector = Collector::start().unwrap();
    let token = collector.join_token(1, "1h").unwrap();
    let mut dev = TestDevice::enroll(&token, "laptop-1").await.unwrap();
    dev.connect().await.unwrap();
    for _ in 0..20 {
        dev.send_new(100).await.unwrap();
    }
    collector.stop().unwrap();
    let db = collector.data_dir().join("ward.db");
    let len = std::fs::metadata(&db).unwrap().len();
    assert!(len > 64 * 1024, "a database of {len} bytes");
    {
        use std::io::{Seek, SeekFrom, Write};
        let mut f = std::fs::OpenOptions::new().write(true).open(&db).unwrap();
        f.seek(SeekFrom::Start(len / 2 / 4096 * 4096)).unwrap();
        f.write_all(&[0xA5; 8192]).unwrap();
    }
    let out = std::process::Command::new(bin("ward-collector"))
        .arg("--data-dir")
        .arg(collector.data_dir())
        .arg("serve")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "started on a damaged database: {stderr}");
    assert!(
        stderr.contains("is damaged") && stderr.contains("--skip-integrity-check") && stderr.contains("backup"),
        "{stderr}"
    );
    // That check ran beside serving and left its flag: the next start checks before
    // it listens, and refuses again.
    let again = std::process::Command::new(bin("ward-collector"))
        .arg("--data-dir")
        .arg(collector.data_dir())
        .arg("serve")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&again.stdout);
    assert!(!again.status.success(), "started again on a damaged database: {stdout}");
    assert!(!stdout.contains("listening"), "listened before its check: {stdout}");
    assert!(String::from_utf8_lossy(&again.stderr).contains("is damaged"));
    // `--skip-integrity-check` goes past the check (what it can still open, it
    // serves; this damage also breaks opening the store, which it then says).
    let mut child = std::process::Command::new(bin("ward-collector"))
        .arg("--data-dir")
        .arg(collector.data_dir())
        .args(["serve", "--skip-integrity-check"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while child.try_wait().unwrap().is_none() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("running on it as asked"), "{stderr}");
}

/// `ward-agent status` as a script sees it: 4 not enrolled, 0 running and connected,
/// 1 running without its collector, 3 not running; `ward-collector user list` names
/// every user with role and time, never a token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_exit_codes_and_the_user_list_are_scriptable() {
    let code = |dir: &std::path::Path| {
        std::process::Command::new(bin("ward-agent"))
            .args(["status", "--state-dir"])
            .arg(dir)
            .output()
            .unwrap()
            .status
            .code()
    };
    let empty = tempfile::tempdir().unwrap();
    assert_eq!(code(empty.path()), Some(4), "not enrolled");

    let mut collector = Collector::start().unwrap();
    let mut agent = Agent::start(&collector).unwrap();
    agent.wait_connected(Duration::from_secs(15)).unwrap();
    assert_eq!(code(&agent.state_dir()), Some(0), "{}", agent.status().unwrap());
    collector.stop().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while code(&agent.state_dir()) != Some(1) {
        assert!(
            std::time::Instant::now() < deadline,
            "still {:?}: {}",
            code(&agent.state_dir()),
            agent.status().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    agent.kill9();
    assert_eq!(code(&agent.state_dir()), Some(3), "{}", agent.status().unwrap());

    let token = collector.user("vera", "viewer").unwrap();
    let list = collector.cli(&["user", "list"]).unwrap();
    let line = list
        .lines()
        .find(|l| l.starts_with("vera "))
        .unwrap_or_else(|| panic!("{list}"));
    assert!(line.contains("viewer") && line.contains(" UTC"), "{list}");
    assert!(!list.contains(&token), "a token in the user list");
}

/// With `retry_unvalidated_above = 0` every first connection gets a stateless QUIC
/// Retry: the real agent enrolls and connects through it (echoing the token), its
/// alerts arrive, and the collector counts the Retries it sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_get_through_a_stateless_retry() {
    let collector = Collector::start_with(|c| {
        *c = c.replace("retry_unvalidated_above = 128", "retry_unvalidated_above = 0");
    })
    .unwrap();
    let agent = Agent::start(&collector).unwrap();
    agent.wait_connected(Duration::from_secs(20)).unwrap();
    const EICAR: &[u8] = br"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*";
    std::fs::write(agent.watch.join("retry-eicar.bin"), EICAR).unwrap();
    collector
        .wait_alert(&agent.device_id, Duration::from_secs(15), |a| {
            a["entities"].to_string().contains("retry-eicar.bin")
        })
        .await
        .unwrap();
    let metrics = collector.metrics().await.unwrap();
    // The enrollment's connection and the session's each proved their address once.
    assert!(
        metric(&metrics, "ward_quic_retries_total") >= 2,
        "{}",
        metrics
            .lines()
            .filter(|l| l.contains("retr"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}
