//! Command-key rotation with the real binaries (SECURITY.md T5): the key is
//! rotated by a signed rollover while one agent in three is offline; the online
//! ones take the new key at their next connect and run commands signed with it;
//! the offline one comes back after the overlap, follows the rollover and is not
//! stranded; after the cut-over a command signed with the old key is refused,
//! and the action shows it.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use ward_tests::*;

/// The agent's pinned keys as saved in its identity: (serial, pinned, retiring).
fn pinned(agent: &Agent) -> (u64, Vec<Value>, Vec<Value>) {
    let text = std::fs::read_to_string(agent.state_dir().join("identity.json")).unwrap();
    let v: Value = serde_json::from_str(&text).unwrap();
    let list = |k: &str| v[k].as_array().cloned().unwrap_or_default();
    (
        v["key_serial"].as_u64().unwrap_or(0),
        list("command_keys"),
        list("retiring_keys"),
    )
}

fn wait_serial(agent: &Agent, serial: u64) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while pinned(agent).0 < serial {
        assert!(
            Instant::now() < deadline,
            "agent never applied rollover {serial}: {:?}",
            pinned(agent)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Proposes as `analyst`, approves as `approver`; returns the action id.
async fn approve(collector: &Collector, analyst: &str, approver: &str, device: &str) -> String {
    let (status, body) = collector
        .post_as(
            "/api/v1/actions",
            analyst,
            json!({"device_id": device, "action": {"kind": "collect_package"}, "reason": "rotation drill"}),
        )
        .await
        .unwrap();
    assert_eq!(status, 201, "{body}");
    let id = body["id"].as_str().unwrap().to_string();
    let (status, body) = collector
        .post_as(&format!("/api/v1/actions/{id}/approve"), approver, json!({}))
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    id
}

async fn succeeds(collector: &Collector, analyst: &str, approver: &str, device: &str) {
    let id = approve(collector, analyst, approver, device).await;
    collector
        .wait_action_status(&id, "succeeded", Duration::from_secs(20))
        .await
        .unwrap();
}

fn key_file(dir: &Path) -> Vec<u8> {
    std::fs::read(dir.join("command.key")).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_rollover_reaches_every_agent_and_retires_the_old_key() {
    let mut collector = Collector::start().unwrap();
    let ann = collector.user("ann", "analyst").unwrap();
    let bob = collector.user("bob", "approver").unwrap();
    // A rule pack, so the rotation has one to sign again.
    let rules = tempfile::tempdir().unwrap();
    std::fs::write(
        rules.path().join("drill.yml"),
        "title: Rotation drill marker\nid: 3f1d0c55-7d0e-4c1b-9a63-1f0e2b7c9d01\nlogsource:\n    product: linux\n    category: file_event\ndetection:\n    selection:\n        TargetFilename|endswith: '/rotation-drill.txt'\n    condition: selection\nlevel: low\n",
    )
    .unwrap();
    collector
        .cli(&["rules", "push", rules.path().to_str().unwrap()])
        .unwrap();
    let mut agents: Vec<Agent> = (0..3).map(|_| Agent::start(&collector).unwrap()).collect();
    for a in &agents {
        a.wait_connected(Duration::from_secs(15)).unwrap();
        assert_eq!(pinned(a).1.len(), 1);
    }
    succeeds(&collector, &ann, &bob, &agents[0].device_id).await;

    // One agent in three is offline during the rotation.
    agents[2].kill9();
    let old_key = key_file(&collector.data_dir());
    collector.stop().unwrap();
    let out = collector.cli(&["rotate-command-key", "--overlap", "8s"]).unwrap();
    let rotated_at = Instant::now();
    assert!(out.contains("rollover 1 to command key"), "{out}");
    assert!(
        out.contains("rule pack signed again with the new key as version 2"),
        "{out}"
    );
    assert_ne!(key_file(&collector.data_dir()), old_key);
    collector.serve().unwrap();

    // Online agents pin the new key beside the old one at their next connect, and
    // the re-signed pack and new-key commands work on them.
    for a in &agents[..2] {
        wait_serial(a, 1);
        let (_, keys, retiring) = pinned(a);
        assert_eq!((keys.len(), retiring.len()), (2, 1), "{keys:?} {retiring:?}");
        succeeds(&collector, &ann, &bob, &a.device_id).await;
    }
    let pack_deadline = Instant::now() + Duration::from_secs(20);
    for a in &agents[..2] {
        while !a.status().unwrap().contains("rule pack: version 2") {
            assert!(
                Instant::now() < pack_deadline,
                "re-signed pack not running: {}",
                a.status().unwrap()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    // The offline agent returns after the overlap: it follows the rollover (still
    // signed by the key it pinned), drops the old key at once, and takes commands.
    let overlap_left = Duration::from_secs(9).saturating_sub(rotated_at.elapsed());
    tokio::time::sleep(overlap_left).await;
    agents[2].run().unwrap();
    wait_serial(&agents[2], 1);
    let (_, keys, retiring) = pinned(&agents[2]);
    assert_eq!((keys.len(), retiring.len()), (1, 0), "{keys:?} {retiring:?}");
    succeeds(&collector, &ann, &bob, &agents[2].device_id).await;

    // After the cut-over the old key is refused: a collector signing with it again
    // (a stolen backup, say) gets nothing done, and the refusal is on record.
    collector.stop().unwrap();
    std::fs::write(collector.data_dir().join("command.key"), &old_key).unwrap();
    collector.serve().unwrap();
    agents[0].wait_connected(Duration::from_secs(15)).unwrap();
    let id = approve(&collector, &ann, &bob, &agents[0].device_id).await;
    let refused = collector
        .wait_action_status(&id, "refused", Duration::from_secs(20))
        .await
        .unwrap();
    assert!(
        refused
            .to_string()
            .contains("signed by a key this device has not pinned"),
        "{refused}"
    );
}

/// Issue 15 item 8: whoever holds the retiring key (a backup stolen before the
/// rotation) forges a rollover during the overlap that names their own key and
/// retires the new one at once, and gets it in front of the agent (here: into the
/// collector's rollover table, which every session replays). The agent refuses
/// it: only the newest pinned key introduces another. The real collector's
/// commands keep working and the attacker's key signs nothing the agent accepts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollover_signed_by_the_retiring_key_cannot_take_over_the_agents() {
    use ward_protocol::{KeyRollover, SignatureKind, SigningKey};

    let mut collector = Collector::start().unwrap();
    let ann = collector.user("ann", "analyst").unwrap();
    let bob = collector.user("bob", "approver").unwrap();
    let agent = Agent::start(&collector).unwrap();
    agent.wait_connected(Duration::from_secs(15)).unwrap();

    let stolen = key_file(&collector.data_dir());
    collector.stop().unwrap();
    collector.cli(&["rotate-command-key", "--overlap", "1h"]).unwrap();
    let real_key = key_file(&collector.data_dir());
    collector.serve().unwrap();
    wait_serial(&agent, 1);
    succeeds(&collector, &ann, &bob, &agent.device_id).await;

    // The attack: rollover 2, signed by the retiring key, pins the attacker's key
    // and retires everything else now.
    let old = SigningKey::from_pkcs8(&stolen).unwrap();
    let (attacker, attacker_pkcs8) = SigningKey::generate(&ring::rand::SystemRandom::new()).unwrap();
    let forged = KeyRollover {
        serial: 2,
        new_key: attacker.public_key(),
        retire_at_ms: now_ms(),
        created_at_ms: now_ms(),
    };
    let signed = old.sign_value(SignatureKind::KeyRollover, &forged).unwrap();
    let bytes = ward_protocol::encode_frame(&signed, u32::MAX).unwrap()[ward_protocol::codec::HEADER_LEN..].to_vec();
    collector.stop().unwrap();
    use ward_collector::store::PublishedStore;
    ward_collector::store::Store::open(&collector.data_dir().join("ward.db"))
        .unwrap()
        .add_key_rollover(&forged, &bytes, None)
        .unwrap();
    collector.serve().unwrap();

    // The session replays rollovers before any command: the command below, signed
    // with the real new key, runs only if the forged one was refused.
    succeeds(&collector, &ann, &bob, &agent.device_id).await;
    let (serial, keys, _) = pinned(&agent);
    assert_eq!(serial, 1, "the forged rollover was applied: {keys:?}");
    let attacker_json = serde_json::to_value(attacker.public_key()).unwrap();
    assert!(!keys.contains(&attacker_json), "attacker's key pinned: {keys:?}");

    // The attacker's key signs nothing the agent accepts.
    collector.stop().unwrap();
    std::fs::write(collector.data_dir().join("command.key"), &attacker_pkcs8).unwrap();
    collector.serve().unwrap();
    let id = approve(&collector, &ann, &bob, &agent.device_id).await;
    let refused = collector
        .wait_action_status(&id, "refused", Duration::from_secs(20))
        .await
        .unwrap();
    assert!(
        refused
            .to_string()
            .contains("signed by a key this device has not pinned"),
        "{refused}"
    );
    // And the real key still does.
    collector.stop().unwrap();
    std::fs::write(collector.data_dir().join("command.key"), &real_key).unwrap();
    collector.serve().unwrap();
    succeeds(&collector, &ann, &bob, &agent.device_id).await;
}
