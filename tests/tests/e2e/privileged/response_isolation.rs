//! Isolation through the whole command path, in a network namespace of its own
//! (so the rule set never touches the machine's network): an approved isolate
//! lands on a real agent, the device keeps talking to the collector, a removed
//! rule set comes back with a tamper alert, and release removes exactly Ward's table.

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::json;
use ward_tests::*;

#[test]
fn isolate_and_release_through_the_command_path() {
    in_own_namespace(
        &test_path(module_path!(), "isolate_and_release_through_the_command_path"),
        scenario,
    );
}

fn nft_table() -> Option<String> {
    let out = Command::new("nft")
        .args(["list", "table", "inet", "ward_isolation"])
        .output()
        .expect("nft runs");
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

async fn wait_for(what: &str, within: Duration, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !check().await {
        assert!(Instant::now() < deadline, "{what} did not happen within {within:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn scenario() {
    let lo = Command::new("ip")
        .args(["link", "set", "lo", "up"])
        .status()
        .expect("ip runs");
    assert!(lo.success(), "cannot bring up loopback in the namespace");
    Command::new("nft")
        .args(["add", "table", "inet", "host_fw"])
        .status()
        .unwrap();

    let collector = Collector::start().unwrap();
    let agent = Agent::start(&collector).unwrap();
    agent.wait_connected(Duration::from_secs(15)).unwrap();
    let device = agent.device_id.clone();
    let ann = collector.user("ann", "analyst").unwrap();
    let bob = collector.user("bob", "approver").unwrap();

    let (status, body) = collector
        .post_as(
            "/api/v1/actions",
            &ann,
            json!({"device_id": device, "action": {"kind": "isolate", "allow": ["192.0.2.53"]}, "reason": "e2e"}),
        )
        .await
        .unwrap();
    assert_eq!(status, 201, "{body}");
    let id = body["id"].as_str().unwrap().to_string();
    let t = Instant::now();
    collector
        .post_as(&format!("/api/v1/actions/{id}/approve"), &bob, json!({"comment": "go"}))
        .await
        .unwrap();
    wait_for("the rule set landing", Duration::from_secs(5), async || {
        nft_table().is_some()
    })
    .await;
    println!("rule set in force {:?} after approval", t.elapsed());
    let done = collector
        .wait_action_status(&id, "succeeded", Duration::from_secs(20))
        .await
        .unwrap();
    println!("isolate result: {}", done["result"]["detail"]);
    let table = nft_table().unwrap();
    assert!(table.contains("192.0.2.53"), "{table}");
    assert!(
        !table.contains("related"),
        "no blanket established/related accept: {table}"
    );

    wait_for(
        "the heartbeat reporting isolation",
        Duration::from_secs(10),
        async || collector.get(&format!("/api/v1/devices/{device}")).await.unwrap().1["isolation"] == "isolated",
    )
    .await;
    assert!(agent.status().unwrap().contains("isolation: isolated"));

    // Still delivering alerts while isolated.
    std::fs::write(
        agent.watch.join("while-isolated.txt"),
        "X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*",
    )
    .unwrap();
    collector
        .wait_alert(&device, Duration::from_secs(5), |a| {
            a["entities"].to_string().contains("while-isolated")
        })
        .await
        .unwrap();

    // Removed behind the agent's back: put back within seconds, with an alert.
    // No check that the table is gone here: the agent's watch can put it
    // back before the next `nft list` runs. The tamper alert below proves
    // the deletion was seen.
    let deleted = Command::new("nft")
        .args(["delete", "table", "inet", "ward_isolation"])
        .status()
        .unwrap();
    assert!(deleted.success(), "nft delete table: {deleted}");
    wait_for("the rule set coming back", Duration::from_secs(8), async || {
        nft_table().is_some()
    })
    .await;
    collector
        .wait_alert(&device, Duration::from_secs(8), |a| {
            a["rule"]["id"] == "ward-isolation-tamper"
        })
        .await
        .unwrap();

    let (status, body) = collector
        .post_as(
            "/api/v1/actions",
            &ann,
            json!({"device_id": device, "action": {"kind": "release"}, "reason": "clean"}),
        )
        .await
        .unwrap();
    assert_eq!(status, 201, "{body}");
    let id = body["id"].as_str().unwrap().to_string();
    collector
        .post_as(&format!("/api/v1/actions/{id}/approve"), &bob, json!({"comment": "ok"}))
        .await
        .unwrap();
    collector
        .wait_action_status(&id, "succeeded", Duration::from_secs(10))
        .await
        .unwrap();
    assert!(nft_table().is_none(), "Ward's table is gone");
    let tables = Command::new("nft").args(["list", "tables"]).output().unwrap();
    assert!(
        String::from_utf8_lossy(&tables.stdout).contains("host_fw"),
        "the host's own table is untouched"
    );
    wait_for("the heartbeat reporting release", Duration::from_secs(10), async || {
        collector.get(&format!("/api/v1/devices/{device}")).await.unwrap().1["isolation"] == "none"
    })
    .await;
}
