//! A compromised (enrolled) device flooding every message kind (issue 15 item
//! 10), with the real collector on loopback. In a file of its own: the latency
//! it measures must not share the machine with another test's flood.

use std::time::{Duration, Instant};

use ward_tests::*;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v.get(v.len() / 2).copied().unwrap_or_default()
}

/// Sends `n` batches of 10 alerts one after another; returns each ack latency.
async fn ack_latencies(dev: &mut TestDevice, n: usize) -> Vec<Duration> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        dev.send_new(10).await.unwrap();
        out.push(t.elapsed());
    }
    out
}

fn audit_rows(collector: &Collector) -> i64 {
    collector
        .db()
        .unwrap()
        .query_row("SELECT COUNT(*) FROM audit_log", [], |r| r.get(0))
        .unwrap()
}

/// Issue 15 item 10: four compromised (enrolled) devices flood every message
/// kind that was not rate-limited: drop reports naming 10,000 sequence numbers
/// with 10 KB reasons, signed results for commands that do not exist with 10 KB
/// texts, heartbeats and empty alert batches, for 8 s. A good agent's ack
/// latency does not move materially (before: median 1.7 ms to 344 ms), and the
/// audit log gains a bounded number of rows with clipped text (before: 2,422
/// rows of attacker text).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rogue_devices_flooding_every_kind_do_not_slow_a_good_agent() {
    use ward_protocol::message::{AlertBatch, DropReport, Heartbeat};
    use ward_protocol::*;

    let collector = Collector::start().unwrap();
    let token = collector.join_token(5, "1h").unwrap();
    let mut good = TestDevice::enroll(&token, "good").await.unwrap();
    good.connect().await.unwrap();
    let mut rogues = Vec::new();
    for i in 0..4 {
        let mut d = TestDevice::enroll(&token, &format!("rogue-{i}")).await.unwrap();
        d.connect().await.unwrap();
        rogues.push(d);
    }
    ack_latencies(&mut good, 10).await;
    let baseline = median(ack_latencies(&mut good, 60).await);
    let audit_before = audit_rows(&collector);

    let stop = Instant::now() + Duration::from_secs(8);
    let mut flood = tokio::task::JoinSet::new();
    for mut d in rogues {
        flood.spawn(async move {
            let text = "A".repeat(10_000);
            let mut sent = 0u64;
            let mut batch_id = 1_000_000u64;
            while Instant::now() < stop {
                let result = CommandResult {
                    command_id: CommandId::generate(now_ms(), &ring::rand::SystemRandom::new()).unwrap(),
                    device_id: d.id(),
                    seq: 99,
                    finished_at_ms: now_ms(),
                    outcome: CommandOutcome::Failed { reason: text.clone() },
                    detail: text.clone(),
                    attachment: None,
                };
                let signed = d
                    .identity
                    .signing_key
                    .sign_value(SignatureKind::CommandResult, &result)
                    .unwrap();
                batch_id += 1;
                let msgs = [
                    AgentMessage::Dropped(DropReport {
                        dropped: 10_000,
                        seqs: (1..=10_000).collect(),
                        reason: text.clone(),
                    }),
                    AgentMessage::CommandResult(signed),
                    AgentMessage::Heartbeat(Heartbeat {
                        sent_at_ms: now_ms(),
                        inventory: None,
                        isolation: IsolationState::None,
                        outbox_depth: 0,
                        rule_pack_version: 0,
                    }),
                    AgentMessage::Alerts(AlertBatch {
                        batch_id,
                        alerts: vec![],
                    }),
                ];
                let session = d.session.as_mut().unwrap();
                for m in &msgs {
                    let left = stop.saturating_duration_since(Instant::now());
                    match tokio::time::timeout(left, session.send(m)).await {
                        Ok(Ok(())) => sent += 1,
                        _ => return sent,
                    }
                }
            }
            sent
        });
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut during = Vec::new();
    while Instant::now() + Duration::from_millis(500) < stop {
        during.extend(ack_latencies(&mut good, 5).await);
    }
    let mut sent = 0;
    while let Some(n) = flood.join_next().await {
        sent += n.unwrap();
    }
    let flooded = median(during.clone());
    println!(
        "good agent median ack: {baseline:?} alone, {flooded:?} during the flood ({} batches); rogues sent {sent} messages",
        during.len()
    );
    assert!(
        flooded < baseline * 2 + Duration::from_millis(25),
        "the flood moved the good agent's ack latency: {baseline:?} -> {flooded:?}"
    );

    // Bounded audit rows, bounded text.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let added = audit_rows(&collector) - audit_before;
    let longest: i64 = collector
        .db()
        .unwrap()
        .query_row("SELECT COALESCE(MAX(LENGTH(detail)), 0) FROM audit_log", [], |r| {
            r.get(0)
        })
        .unwrap();
    println!("audit rows added: {added}, longest detail {longest} bytes");
    assert!(added <= 200, "{added} audit rows from four devices in 8 s");
    assert!(longest <= 1_000, "attacker text reached the audit log: {longest} bytes");
    let m = collector.metrics().await.unwrap();
    assert!(
        metric(&m, "ward_throttled_messages_total{kind=\"drop_report\"}") > 0,
        "{m}"
    );
}
