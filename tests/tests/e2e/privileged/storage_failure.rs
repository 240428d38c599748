//! A collector whose disk fills up: `/healthz` says so (503 with the storage error)
//! while commits fail, agents' sessions stay open with their batches held (back-
//! pressure, not a reconnect storm), and when space comes back the held batch is
//! stored and acknowledged, nothing lost. The collector's data dir is on a small
//! tmpfs in a mount namespace of the test's own.

use std::process::Command;
use std::time::{Duration, Instant};

use ward_protocol::message::{AgentMessage, AlertBatch, CollectorMessage};
use ward_tests::*;

#[test]
fn a_full_disk_is_reported_and_batches_wait_instead_of_failing() {
    in_own_namespace(
        &test_path(
            module_path!(),
            "a_full_disk_is_reported_and_batches_wait_instead_of_failing",
        ),
        scenario,
    );
}

/// Alerts per batch sent once the disk is full.
const BATCH: usize = 500;

async fn health(collector: &Collector) -> (u16, serde_json::Value) {
    collector.get("/healthz").await.unwrap()
}

async fn scenario() {
    // A 24 MiB tmpfs over /tmp: the collector's temporary data dir lives in it.
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=24m", "tmpfs", "/tmp"])
        .status()
        .expect("mount runs");
    assert!(mounted.success(), "cannot mount a tmpfs in the test's mount namespace");
    let lo = Command::new("ip")
        .args(["link", "set", "lo", "up"])
        .status()
        .expect("ip runs");
    assert!(lo.success(), "cannot bring up loopback in the namespace");

    let collector = Collector::start().unwrap();
    let token = collector.join_token(1, "1h").unwrap();
    let mut dev = TestDevice::enroll(&token, "busy-host").await.unwrap();
    dev.connect().await.unwrap();
    assert_eq!(health(&collector).await.0, 200);

    // Fill the disk, keeping a file to delete later.
    let spare = collector.data_dir().join("spare");
    std::fs::write(&spare, vec![0u8; 4 << 20]).unwrap();
    // Down to the last 4 KiB page: a batch written with fewer B-trees fits into
    // what a coarser fill leaves.
    let mut filler = 0;
    for size in [1 << 20, 64 << 10, 4 << 10] {
        loop {
            let path = collector.data_dir().join(format!("filler-{filler}"));
            filler += 1;
            if std::fs::write(&path, vec![0u8; size]).is_err() {
                break;
            }
        }
    }
    // Batches until one cannot be committed (the log file keeps the space of
    // earlier commits, so the first may still fit): that one gets no
    // acknowledgement, health says why, and the session stays.
    let mut held = None;
    let mut failing = serde_json::Value::Null;
    for n in 0..20u64 {
        let alerts: Vec<_> = (0..BATCH)
            .map(|_| {
                let a = dev.next_alert();
                dev.sign(&a)
            })
            .collect();
        let batch_id = 900 + n;
        dev.session
            .as_mut()
            .unwrap()
            .send(&AgentMessage::Alerts(AlertBatch { batch_id, alerts }))
            .await
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline && failing.is_null() {
            let (status, body) = health(&collector).await;
            if status == 503 {
                failing = body;
            } else {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        if !failing.is_null() {
            held = Some(batch_id);
            break;
        }
    }
    let held = held.expect("every batch was stored on a full disk: healthz stayed 200");
    let session = dev.session.as_mut().unwrap();
    assert_eq!(failing["status"], "failing", "{failing}");
    let why = failing["storage"].as_str().unwrap_or_default().to_lowercase();
    assert!(why.contains("full"), "{failing}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        session.conn.close_reason().is_none(),
        "the collector closed the session on a failed commit: {:?}",
        session.conn.close_reason()
    );

    // Space again: the held batch is stored and acknowledged on the same session.
    std::fs::remove_file(&spare).unwrap();
    let ack = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            match session.recv().await.unwrap() {
                Some(CollectorMessage::Ack(ack)) if ack.batch_id == held => return ack,
                Some(_) => continue,
                None => panic!("session ended"),
            }
        }
    })
    .await
    .expect("the held batch was acknowledged once space came back");
    assert_eq!(ack.stored, BATCH as u32, "{ack:?}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while health(&collector).await.0 != 200 {
        assert!(Instant::now() < deadline, "healthz did not recover");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for f in 0..filler {
        let _ = std::fs::remove_file(collector.data_dir().join(format!("filler-{f}")));
    }
}
