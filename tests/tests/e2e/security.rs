//! Attacks on a running collector and agents (issue 15): what an unauthenticated
//! peer or a compromised device can do to everyone else, with the real
//! binaries on loopback.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use ward_tests::*;

/// Issue 15 item 12: 1,000 connections complete the enrollment handshake (which
/// anyone can) from ten loopback addresses and then say nothing, while 50 real
/// devices enroll from another. Before, 16 enrollment slots were each held 15 s
/// by a silent connection and the real enrollments queued behind them; now no
/// slot is held while waiting for the request, a silent connection is closed 5 s
/// after its handshake, and each address has at most 16 unauthenticated
/// connections (handshaking or enrolling): the rest are refused before any
/// handshake work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_connections_cannot_block_enrollment() {
    let collector = Collector::start().unwrap();
    let token = collector.join_token(50, "1h").unwrap();
    let remote: SocketAddr = token.collector_addr.parse().unwrap();
    let config = ward_agent::link::tls::enroll_config(token.ca_sha256).unwrap();

    let endpoints: Vec<quinn::Endpoint> = (0..10)
        .map(|i| quinn::Endpoint::client(format!("127.0.0.{}:0", i + 2).parse().unwrap()).unwrap())
        .collect();
    let started = Instant::now();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let mut flood = tokio::task::JoinSet::new();
    for i in 0..1_000 {
        let (endpoint, config, tx) = (endpoints[i % 10].clone(), config.clone(), tx.clone());
        let name = token.server_name.clone();
        flood.spawn(async move {
            if let Ok(c) = endpoint.connect_with(config, remote, &name) {
                // Held open, sending nothing.
                if let Ok(conn) = c.await {
                    let _ = tx.send(conn);
                }
            }
        });
    }
    drop(tx);
    // The devices come once hundreds of silent connections are open.
    let mut silent = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(20), async {
        while silent.len() < 150 {
            match rx.recv().await {
                Some(c) => silent.push(c),
                None => break,
            }
        }
    })
    .await;
    let open_now = silent.iter().filter(|c| c.close_reason().is_none()).count();
    println!("silent flood: {open_now} open after {:?}", started.elapsed());
    assert!(open_now >= 100, "the flood is there while the devices enroll");

    let mut real = tokio::task::JoinSet::new();
    for i in 0..50 {
        let token = token.clone();
        real.spawn(async move {
            let t = Instant::now();
            TestDevice::enroll(&token, &format!("host-{i}"))
                .await
                .map(|_| t.elapsed())
        });
    }
    let mut slowest = Duration::ZERO;
    let all = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(r) = real.join_next().await {
            let took = r.unwrap().expect("a real enrollment was refused");
            slowest = slowest.max(took);
        }
    })
    .await;
    assert!(
        all.is_ok(),
        "real enrollments did not finish within 30 s of a silent flood"
    );
    println!("50 enrollments during the silent flood: slowest {slowest:?}");

    // The collector closes every silent connection soon after its handshake.
    flood.abort_all();
    while let Ok(c) = rx.try_recv() {
        silent.push(c);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while silent.iter().any(|c| c.close_reason().is_none()) {
        assert!(Instant::now() < deadline, "silent connections left open");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let m = collector.metrics().await.unwrap();
    let busy = metric(&m, "ward_rejected_total{reason=\"busy_address\"}");
    let timed_out = metric(&m, "ward_rejected_total{reason=\"enroll_request_timeout\"}");
    assert!(busy > 0, "the per-address bound refused some: {m}");
    assert!(timed_out > 0, "silent ones were timed out");
    assert_eq!(metric(&m, "ward_enrollments_accepted_total"), 50, "{m}");
    let (status, devices) = collector.get("/api/v1/devices").await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(devices["devices"].as_array().unwrap().len(), 50);
}

/// Issue 15 item 14: `ward-agent enroll` takes the join token from a file (or
/// stdin, as the harness does for every agent), so it is never in the process
/// list; an empty file or both ways at once are refused with a reason.
#[test]
fn enroll_reads_the_join_token_from_a_file() {
    let collector = Collector::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("token");
    let token = collector.join_token(1, "1h").unwrap().to_string();
    std::fs::write(&file, "\n").unwrap();
    let run = |args: &[&str]| {
        std::process::Command::new(bin("ward-agent"))
            .args(args)
            .env_remove("WARD_JOIN_TOKEN")
            .output()
            .unwrap()
    };
    let state = dir.path().join("state");
    let state = state.to_str().unwrap();
    let file_arg = file.to_str().unwrap();
    let empty = run(&["enroll", "--token-file", file_arg, "--state-dir", state]);
    assert!(!empty.status.success());
    assert!(
        String::from_utf8_lossy(&empty.stderr).contains("no join token"),
        "{empty:?}"
    );
    let both = run(&[
        "enroll",
        "--token",
        &token,
        "--token-file",
        file_arg,
        "--state-dir",
        state,
    ]);
    assert!(!both.status.success(), "{both:?}");
    std::fs::write(&file, format!("{token}\n")).unwrap();
    let ok = run(&["enroll", "--token-file", file_arg, "--state-dir", state]);
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    assert!(String::from_utf8_lossy(&ok.stdout).contains("enrolled as device"));
}

/// Issue 15 item 14: a password inside a URL (`user:pass@host`) in an alert's URL,
/// command line or matched value is never stored in the alert's fields nor shown
/// by the API: a short hash stands in, the same for the same credentials.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_in_urls_are_redacted_on_ingest() {
    use ward_protocol::*;
    let collector = Collector::start().unwrap();
    let token = collector.join_token(1, "1h").unwrap();
    let mut dev = TestDevice::enroll(&token, "web-1").await.unwrap();
    dev.connect().await.unwrap();
    let mut a = dev.next_alert();
    a.entities.push(Entity::Url {
        url: "https://svc:hunter2@intranet.example/login".into(),
    });
    a.entities.push(Entity::Process {
        pid: 7,
        ppid: 1,
        start_time_ms: 1,
        exe: "/usr/bin/curl".into(),
        cmdline: "curl -u x https://svc:hunter2@intranet.example/x".into(),
        sha256: None,
    });
    a.matched.push(MatchedField {
        name: "CommandLine".into(),
        value: "curl https://svc:hunter2@intranet.example/x".into(),
    });
    let signed = dev.sign(&a);
    dev.send_batch(vec![signed]).await.unwrap();
    let (status, body) = collector
        .get(&format!("/api/v1/alerts?device={}", dev.id()))
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    let shown = body.to_string();
    assert!(shown.contains("intranet.example"), "{shown}");
    assert!(!shown.contains("hunter2"), "the password is shown: {shown}");
    assert!(shown.contains("redacted-"), "{shown}");
    let stored: String = collector
        .db()
        .unwrap()
        .query_row(
            "SELECT entities || matched FROM alerts WHERE id = ?1",
            [ward_collector::store::sqlite::alert_id::AlertKey::of(&a.id.to_string())],
            |r| r.get(0),
        )
        .unwrap();
    assert!(!stored.contains("hunter2"), "{stored}");
}

/// Issue 15 item 14: a frame whose header declares a length that never fully
/// arrives is not held forever: the collector closes the connection once the
/// frame is 10 s old (idle time between frames stays unlimited).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frame_never_finished_is_not_held_forever() {
    use ward_protocol::message::Heartbeat;
    use ward_protocol::*;
    let collector = Collector::start().unwrap();
    let token = collector.join_token(1, "1h").unwrap();
    let mut dev = TestDevice::enroll(&token, "slow").await.unwrap();
    dev.connect().await.unwrap();
    let frame = encode_frame(
        &AgentMessage::Heartbeat(Heartbeat {
            sent_at_ms: now_ms(),
            inventory: None,
            isolation: IsolationState::None,
            outbox_depth: 0,
            rule_pack_version: 0,
        }),
        codec::MAX_AGENT_FRAME,
    )
    .unwrap();
    let session = dev.session.as_mut().unwrap();
    let conn = session.conn.clone();
    let started = Instant::now();
    session.send_raw(&frame[..frame.len() - 1]).await.unwrap();
    let closed = tokio::time::timeout(Duration::from_secs(20), conn.closed()).await;
    assert!(closed.is_ok(), "the half-sent frame was held for 20 s");
    let reason = closed.unwrap().to_string();
    println!("closed after {:?}: {reason}", started.elapsed());
    assert!(reason.contains("not finished"), "{reason}");
    assert!(
        started.elapsed() >= Duration::from_secs(9),
        "closed before the deadline"
    );
}
