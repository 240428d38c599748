//! Response actions end to end against a real collector: an analyst proposes,
//! the wrong people cannot approve, an approver approves, and the connected
//! device has the signed command within a second; offline devices get theirs on
//! reconnect; results come back signed by the device (a forged one changes
//! nothing); rejections; every route's roles; the audit chain verifies, and
//! detects an edited entry.

use std::time::{Duration, Instant};

use ring::rand::SystemRandom;
use serde_json::{Value, json};
use ward_protocol::*;
use ward_tests::*;

fn id_of(body: &Value) -> String {
    body["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no id in {body}"))
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn propose_approve_dispatch_and_result() {
    let collector = Collector::start().unwrap();
    let ann = collector.user("ann", "analyst").unwrap();
    let amy = collector.user("amy", "approver").unwrap();
    let bob = collector.user("bob", "approver").unwrap();
    let vera = collector.user("vera", "viewer").unwrap();

    let mut dev = TestDevice::enroll(&collector.join_token(3, "1h").unwrap(), "web-1")
        .await
        .unwrap();
    dev.connect().await.unwrap();
    let device = dev.id().to_string();

    // The analyst proposes an isolation; the API says exactly what will happen where.
    let isolate = json!({
        "device_id": device,
        "action": {"kind": "isolate", "allow": ["10.1.2.3", "updates.example.com"]},
        "reason": "reverse shell to 203.0.113.9"
    });
    let (status, body) = collector
        .post_as("/api/v1/actions", &ann, isolate.clone())
        .await
        .unwrap();
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["status"], "pending_approval");
    assert_eq!(body["device_hostname"], "web-1");
    assert_eq!(body["kind"], "isolate");
    assert_eq!(body["action"]["allow"][1], "updates.example.com");
    assert!(body["summary"].as_str().unwrap().contains("isolate web-1"), "{body}");
    assert!(body["expires_at_ms"].as_u64().unwrap() > now_ms());
    let isolate_id = id_of(&body);

    // A viewer may read but not propose.
    let (status, _) = collector
        .post_as("/api/v1/actions", &vera, isolate.clone())
        .await
        .unwrap();
    assert_eq!(status, 403);
    let (status, _) = collector
        .get_as(&format!("/api/v1/actions/{isolate_id}"), &vera)
        .await
        .unwrap();
    assert_eq!(status, 200);

    // The analyst cannot approve.
    let approve = format!("/api/v1/actions/{isolate_id}/approve");
    let (status, body) = collector
        .post_as(&approve, &ann, json!({"comment": "mine"}))
        .await
        .unwrap();
    assert_eq!(status, 403, "{body}");

    // An approver cannot approve their own request.
    let (status, body) = collector
        .post_as(
            "/api/v1/actions",
            &amy,
            json!({"device_id": device, "action": {"kind": "collect_package"}, "reason": "triage"}),
        )
        .await
        .unwrap();
    assert_eq!(status, 201, "{body}");
    let own = id_of(&body);
    let (status, body) = collector
        .post_as(&format!("/api/v1/actions/{own}/approve"), &amy, json!({}))
        .await
        .unwrap();
    assert_eq!(status, 403, "{body}");
    assert!(body["error"].as_str().unwrap().contains("four eyes"), "{body}");
    let (status, _) = collector
        .post_as(&format!("/api/v1/actions/{own}/reject"), &amy, json!({"comment": "no"}))
        .await
        .unwrap();
    assert_eq!(status, 403);
    let (_, body) = collector.get(&format!("/api/v1/actions/{own}")).await.unwrap();
    assert_eq!(body["status"], "pending_approval", "refused decisions change nothing");

    // Another approver approves: the connected device has the signed command within a second.
    let started = Instant::now();
    let (status, body) = collector
        .post_as(&approve, &bob, json!({"comment": "confirmed C2"}))
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "dispatched");
    assert_eq!(body["delivered"], true);
    assert_eq!(body["seq"], 1);
    let signed = dev.recv_command(Duration::from_secs(1)).await.unwrap();
    let latency = started.elapsed();
    assert!(latency < Duration::from_secs(1), "approve to command took {latency:?}");
    let command = dev.authorize(&signed, 0).expect("signed by the pinned command key");
    assert_eq!(command.id.to_string(), isolate_id);
    assert_eq!(command.device_id, dev.id());
    assert_eq!(command.seq, 1);
    assert_eq!(
        command.action,
        Action::Isolate {
            allow: vec!["10.1.2.3".into(), "updates.example.com".into()]
        }
    );
    assert_eq!(command.approval.requested_by, "ann");
    assert_eq!(command.approval.approved_by, vec!["bob".to_string()]);
    assert_eq!(command.approval.reason, "reverse shell to 203.0.113.9");
    let ttl = command.expires_at_ms - command.issued_at_ms;
    assert_eq!(
        ttl,
        3 * 24 * 3_600_000,
        "commands wait 3 days for their device by default"
    );
    // The same command again is a replay for the agent.
    assert!(matches!(dev.authorize(&signed, 1), Err(Refusal::Replayed { .. })));
    // A second approval is a conflict.
    let (status, _) = collector.post_as(&approve, &amy, json!({})).await.unwrap();
    assert_eq!(status, 409);

    // The device reports success, signed with its own key.
    let result = dev.command_result(&command, CommandOutcome::Succeeded, None, None);
    dev.send_result(result).await.unwrap();
    let done = collector
        .wait_action_status(&isolate_id, "succeeded", Duration::from_secs(2))
        .await
        .unwrap();
    assert_eq!(done["result"]["outcome"], "succeeded");
    assert_eq!(done["decided_by"], "bob");
    assert_eq!(done["approvals"][0]["comment"], "confirmed C2");
    let (status, _) = collector
        .get(&format!("/api/v1/actions/{isolate_id}/package"))
        .await
        .unwrap();
    assert_eq!(status, 404, "no package for an isolation");

    // The connection is still good: alerts flow as before.
    dev.send_new(1).await.unwrap();

    // Reject path: a comment is required; a rejected action cannot be approved.
    let (_, body) = collector
        .post_as(
            "/api/v1/actions",
            &ann,
            json!({"device_id": device, "action": {"kind": "delete_file", "path": "/tmp/dropper",
                   "sha256": "ab".repeat(32)}, "reason": "dropper"}),
        )
        .await
        .unwrap();
    let del = id_of(&body);
    let (status, _) = collector
        .post_as(&format!("/api/v1/actions/{del}/reject"), &bob, json!({}))
        .await
        .unwrap();
    assert_eq!(status, 400, "rejecting needs a comment");
    let (status, body) = collector
        .post_as(
            &format!("/api/v1/actions/{del}/reject"),
            &bob,
            json!({"comment": "quarantine instead"}),
        )
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "rejected");
    assert_eq!(body["decision_comment"], "quarantine instead");
    let (status, _) = collector
        .post_as(&format!("/api/v1/actions/{del}/approve"), &amy, json!({}))
        .await
        .unwrap();
    assert_eq!(status, 409);
    // Filters.
    let (_, list) = collector.get("/api/v1/actions?status=rejected").await.unwrap();
    let ids: Vec<&str> = list["actions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec![del.as_str()]);
    let (_, list) = collector
        .get(&format!("/api/v1/actions?device={device}"))
        .await
        .unwrap();
    assert_eq!(list["actions"].as_array().unwrap().len(), 3);
    let (status, _) = collector.get("/api/v1/actions?status=pending").await.unwrap();
    assert_eq!(status, 400);

    // Parameters are validated; unknown and revoked devices are refused.
    let sha = "cd".repeat(32);
    let bad = [
        json!({"kind": "quarantine_file", "path": "relative/file", "sha256": sha}),
        json!({"kind": "quarantine_file", "path": "/tmp/x", "sha256": "1234"}),
        json!({"kind": "kill_process", "pid": 1, "start_time_ms": 5, "exe": "/sbin/init"}),
        json!({"kind": "run_script", "path": "/tmp/x.sh"}),
    ];
    for action in bad {
        let (status, body) = collector
            .post_as(
                "/api/v1/actions",
                &ann,
                json!({"device_id": device, "action": action, "reason": "r"}),
            )
            .await
            .unwrap();
        assert_eq!(status, 400, "{action} -> {body}");
    }
    let (status, _) = collector
        .post_as(
            "/api/v1/actions",
            &ann,
            json!({"device_id": device, "action": {"kind": "release"}, "reason": "  "}),
        )
        .await
        .unwrap();
    assert_eq!(status, 400, "a reason is required");
    let unknown = DeviceId::generate(now_ms(), &SystemRandom::new()).unwrap().to_string();
    let (status, _) = collector
        .post_as(
            "/api/v1/actions",
            &ann,
            json!({"device_id": unknown, "action": {"kind": "release"}, "reason": "r"}),
        )
        .await
        .unwrap();
    assert_eq!(status, 404);
    let gone = TestDevice::enroll(&collector.join_token(1, "1h").unwrap(), "gone")
        .await
        .unwrap();
    let (status, _) = collector
        .post_as(
            &format!("/api/v1/devices/{}/revoke", gone.id()),
            &collector.admin_token,
            json!({}),
        )
        .await
        .unwrap();
    assert_eq!(status, 200);
    let (status, _) = collector
        .post_as(
            "/api/v1/actions",
            &ann,
            json!({"device_id": gone.id().to_string(), "action": {"kind": "release"}, "reason": "r"}),
        )
        .await
        .unwrap();
    assert_eq!(status, 409);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_device_gets_commands_on_reconnect_and_forged_results_change_nothing() {
    let collector = Collector::start().unwrap();
    let ann = collector.user("ann", "analyst").unwrap();
    let bob = collector.user("bob", "approver").unwrap();
    let mut dev = TestDevice::enroll(&collector.join_token(1, "1h").unwrap(), "db-1")
        .await
        .unwrap();
    let device = dev.id().to_string();

    // Two actions approved while the device is offline.
    let mut ids = Vec::new();
    for action in [
        json!({"kind": "collect_package"}),
        json!({"kind": "quarantine_file", "path": "/var/tmp/.x", "sha256": "ef".repeat(32)}),
    ] {
        let (status, body) = collector
            .post_as(
                "/api/v1/actions",
                &ann,
                json!({"device_id": device, "action": action, "reason": "incident 7"}),
            )
            .await
            .unwrap();
        assert_eq!(status, 201, "{body}");
        let id = id_of(&body);
        let (status, body) = collector
            .post_as(&format!("/api/v1/actions/{id}/approve"), &bob, json!({"comment": "ok"}))
            .await
            .unwrap();
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["status"], "dispatched");
        assert_eq!(body["delivered"], false, "device is offline");
        ids.push(id);
    }

    // On connect both arrive, in sequence order, signed by the command key.
    dev.connect().await.unwrap();
    let signed = dev.recv_command(Duration::from_secs(2)).await.unwrap();
    let first = dev.authorize(&signed, 0).unwrap();
    let signed = dev.recv_command(Duration::from_secs(2)).await.unwrap();
    let second = dev.authorize(&signed, 1).unwrap();
    assert_eq!((first.seq, first.id.to_string()), (1, ids[0].clone()));
    assert_eq!((second.seq, second.id.to_string()), (2, ids[1].clone()));
    assert_eq!(first.action, Action::CollectPackage);
    assert_eq!(second.expires_at_ms - second.issued_at_ms, 3 * 24 * 3_600_000);

    // A result signed by another key is refused: the connection is closed, nothing changes.
    let (forger, _) = SigningKey::generate(&SystemRandom::new()).unwrap();
    let forged = dev.command_result(&first, CommandOutcome::Succeeded, Some(b"evil".to_vec()), Some(&forger));
    dev.send_result(forged).await.unwrap();
    let reason = dev.closed_reason().await;
    assert!(reason.contains("signature"), "{reason}");
    let (_, body) = collector.get(&format!("/api/v1/actions/{}", ids[0])).await.unwrap();
    assert_eq!(body["status"], "dispatched", "{body}");
    assert!(body["result"].is_null());

    // Reconnected after accepting seq 1: only seq 2 is delivered again.
    dev.connect_after(1).await.unwrap();
    let signed = dev.recv_command(Duration::from_secs(2)).await.unwrap();
    let again = dev.authorize(&signed, 1).unwrap();
    assert_eq!(again.seq, 2);

    // A result naming a command of nobody is ignored (audited); the session stays up.
    let mut stranger = first.clone();
    stranger.id = CommandId::generate(now_ms(), &SystemRandom::new()).unwrap();
    let unknown = dev.command_result(&stranger, CommandOutcome::Succeeded, None, None);
    dev.send_result(unknown).await.unwrap();

    // Genuine results: a package comes back and is downloadable; a refusal is recorded.
    let package = b"ward investigation package\nps: ...\n".to_vec();
    let ok = dev.command_result(&first, CommandOutcome::Succeeded, Some(package.clone()), None);
    dev.send_result(ok).await.unwrap();
    let refused = dev.command_result(
        &again,
        CommandOutcome::Refused {
            reason: Refusal::ActionDisabled(ActionKind::QuarantineFile),
        },
        None,
        None,
    );
    dev.send_result(refused).await.unwrap();
    let done = collector
        .wait_action_status(&ids[0], "succeeded", Duration::from_secs(2))
        .await
        .unwrap();
    assert_eq!(done["package_bytes"], package.len());
    let r = collector
        .wait_action_status(&ids[1], "refused", Duration::from_secs(2))
        .await
        .unwrap();
    assert!(r["result"]["reason"].as_str().unwrap().contains("disabled"), "{r}");
    let resp = ward_tests::http_client()
        .get(format!("http://{}/api/v1/actions/{}/package", collector.http, ids[0]))
        .bearer_auth(&ann)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 403, "an analyst may not download a package");
    let resp = ward_tests::http_client()
        .get(format!("http://{}/api/v1/actions/{}/package", collector.http, ids[0]))
        .bearer_auth(&bob)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(resp.bytes().await.unwrap().to_vec(), package);
    // A duplicate result for an ended action changes nothing.
    let late = dev.command_result(&first, CommandOutcome::Failed { reason: "x".into() }, None, None);
    dev.send_result(late).await.unwrap();
    dev.send_new(1).await.unwrap();
    let (_, body) = collector.get(&format!("/api/v1/actions/{}", ids[0])).await.unwrap();
    assert_eq!(body["status"], "succeeded");

    // The audit log has every transition and its chain verifies.
    let (status, audit) = collector.get("/api/v1/audit?limit=1000").await.unwrap();
    assert_eq!(status, 200, "{audit}");
    let entries = audit["entries"].as_array().unwrap();
    let count = |action: &str, target: &str| {
        entries
            .iter()
            .filter(|e| e["action"] == action && (target.is_empty() || e["target"] == target))
            .count()
    };
    for id in &ids {
        for step in ["action.request", "action.approve", "action.dispatch", "action.result"] {
            assert_eq!(count(step, id), 1, "{step} of {id}: {audit}");
        }
    }
    assert_eq!(
        count("action.result_refused", ""),
        2,
        "forged and unknown results: {audit}"
    );
    assert_eq!(count("action.result_ignored", ""), 1, "{audit}");
    let (status, report) = collector.get("/api/v1/audit/verify").await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(report["ok"], true, "{report}");
    assert!(report["verified"].as_u64().unwrap() >= 10, "{report}");

    // Editing one entry behind the collector's back breaks the chain there.
    let approve_entry = entries
        .iter()
        .find(|e| e["action"] == "action.approve" && e["target"] == ids[1].as_str())
        .unwrap()["id"]
        .as_i64()
        .unwrap();
    let db = rusqlite::Connection::open(collector.data_dir().join("ward.db")).unwrap();
    db.busy_timeout(Duration::from_secs(5)).unwrap();
    db.execute("UPDATE audit_log SET actor = 'mallory' WHERE id = ?1", [approve_entry])
        .unwrap();
    let (_, report) = collector.get("/api/v1/audit/verify").await.unwrap();
    assert_eq!(report["ok"], false, "{report}");
    assert_eq!(report["broken_at"], approve_entry);
}

/// Cancelling: the requester or an approver, before dispatch or while the
/// command waits for an offline device; never once it may have reached the device.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_before_delivery_only() {
    let collector = Collector::start().unwrap();
    let ann = collector.user("ann", "analyst").unwrap();
    let carl = collector.user("carl", "analyst").unwrap();
    let vera = collector.user("vera", "viewer").unwrap();
    let amy = collector.user("amy", "approver").unwrap();
    let bob = collector.user("bob", "approver").unwrap();
    let mut dev = TestDevice::enroll(&collector.join_token(1, "1h").unwrap(), "app-1")
        .await
        .unwrap();
    let device = dev.id().to_string();
    let propose = |kind: &str| json!({"device_id": device, "action": {"kind": kind}, "reason": "triage"});

    // A pending request: other analysts and viewers may not cancel it, its requester may.
    let (status, body) = collector
        .post_as("/api/v1/actions", &ann, propose("collect_package"))
        .await
        .unwrap();
    assert_eq!(status, 201, "{body}");
    let pending = id_of(&body);
    let cancel = format!("/api/v1/actions/{pending}/cancel");
    for token in [&carl, &vera] {
        let (status, body) = collector.post_as(&cancel, token, json!({})).await.unwrap();
        assert_eq!(status, 403, "{body}");
    }
    let (status, body) = collector
        .post_as(&cancel, &ann, json!({"comment": "wrong host"}))
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "cancelled");
    assert_eq!(body["cancelled_by"], "ann");
    assert_eq!(body["cancel_comment"], "wrong host");
    assert!(body["cancelled_at_ms"].as_u64().is_some(), "{body}");
    // Ended: neither cancelled again nor approved.
    let (status, _) = collector.post_as(&cancel, &ann, json!({})).await.unwrap();
    assert_eq!(status, 409);
    let (status, _) = collector
        .post_as(&format!("/api/v1/actions/{pending}/approve"), &bob, json!({}))
        .await
        .unwrap();
    assert_eq!(status, 409);

    // Approved for an offline device: an approver withdraws it, and it is never delivered.
    let (_, body) = collector
        .post_as("/api/v1/actions", &ann, propose("release"))
        .await
        .unwrap();
    let waiting = id_of(&body);
    let (status, body) = collector
        .post_as(&format!("/api/v1/actions/{waiting}/approve"), &bob, json!({}))
        .await
        .unwrap();
    assert_eq!((status, &body["status"]), (200, &json!("dispatched")), "{body}");
    assert_eq!(body["delivered"], false);
    let (status, body) = collector
        .post_as(
            &format!("/api/v1/actions/{waiting}/cancel"),
            &amy,
            json!({"comment": "resolved"}),
        )
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "cancelled");
    dev.connect().await.unwrap();
    assert!(
        dev.recv_command(Duration::from_millis(500)).await.is_err(),
        "a cancelled command is not delivered"
    );

    // Delivered to the connected device: too late to cancel.
    let (_, body) = collector
        .post_as("/api/v1/actions", &ann, propose("collect_package"))
        .await
        .unwrap();
    let sent = id_of(&body);
    let (_, body) = collector
        .post_as(&format!("/api/v1/actions/{sent}/approve"), &bob, json!({}))
        .await
        .unwrap();
    assert_eq!(body["delivered"], true, "{body}");
    let signed = dev.recv_command(Duration::from_secs(1)).await.unwrap();
    let command = dev.authorize(&signed, 0).unwrap();
    assert_eq!(command.id.to_string(), sent);
    let (status, body) = collector
        .post_as(&format!("/api/v1/actions/{sent}/cancel"), &ann, json!({}))
        .await
        .unwrap();
    assert_eq!(status, 409, "{body}");
    assert!(body["error"].as_str().unwrap().contains("reached the device"), "{body}");

    // Both cancellations are audited, and the chain holds.
    let (_, audit) = collector.get("/api/v1/audit?limit=1000").await.unwrap();
    let cancels: Vec<&Value> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "action.cancel")
        .collect();
    assert_eq!(cancels.len(), 2, "{audit}");
    assert!(
        cancels
            .iter()
            .any(|e| e["target"] == waiting.as_str() && e["actor"] == "amy")
    );
    let (_, report) = collector.get("/api/v1/audit/verify").await.unwrap();
    assert_eq!(report["ok"], true, "{report}");
}

/// Undo from the action: a succeeded isolation proposes a release, a succeeded
/// quarantine a restore of the record the device returned; both wait for approval
/// and link back to the original. Other kinds, and unfinished actions, have no undo.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undo_proposes_release_and_restore() {
    let collector = Collector::start().unwrap();
    let ann = collector.user("ann", "analyst").unwrap();
    let bob = collector.user("bob", "approver").unwrap();
    let vera = collector.user("vera", "viewer").unwrap();
    let mut dev = TestDevice::enroll(&collector.join_token(1, "1h").unwrap(), "ws-9")
        .await
        .unwrap();
    dev.connect().await.unwrap();
    let device = dev.id().to_string();

    // Proposes, approves and completes an action on the test device with `detail`.
    let mut last_seq = 0;
    let mut run = async |action: Value, detail: &str| -> String {
        let (status, body) = collector
            .post_as(
                "/api/v1/actions",
                &ann,
                json!({"device_id": device, "action": action, "reason": "incident 12"}),
            )
            .await
            .unwrap();
        assert_eq!(status, 201, "{body}");
        let id = id_of(&body);
        let (status, body) = collector
            .post_as(&format!("/api/v1/actions/{id}/approve"), &bob, json!({}))
            .await
            .unwrap();
        assert_eq!(status, 200, "{body}");
        let signed = dev.recv_command(Duration::from_secs(1)).await.unwrap();
        let command = dev.authorize(&signed, last_seq).unwrap();
        last_seq = command.seq;
        let result = CommandResult {
            command_id: command.id,
            device_id: dev.id(),
            seq: command.seq,
            finished_at_ms: now_ms(),
            outcome: CommandOutcome::Succeeded,
            detail: detail.into(),
            attachment: None,
        };
        let signed = dev
            .identity
            .signing_key
            .sign_value(SignatureKind::CommandResult, &result)
            .unwrap();
        dev.send_result(signed).await.unwrap();
        collector
            .wait_action_status(&id, "succeeded", Duration::from_secs(2))
            .await
            .unwrap();
        id
    };
    let isolated = run(json!({"kind": "isolate"}), "isolated").await;
    let record = json!({"id": "0f1e2d3c4b5a69788796a5b4c3d2e1f0", "original_path": "/tmp/evil", "sha256": "ab"});
    let quarantined = run(
        json!({"kind": "quarantine_file", "path": "/tmp/evil", "sha256": "ab".repeat(32)}),
        &record.to_string(),
    )
    .await;
    let collected = run(json!({"kind": "collect_package"}), "package").await;

    // A viewer may not undo.
    let (status, _) = collector
        .post_as(&format!("/api/v1/actions/{isolated}/undo"), &vera, json!({}))
        .await
        .unwrap();
    assert_eq!(status, 403);

    // Isolation -> release, waiting for approval, linked back.
    let (status, body) = collector
        .post_as(&format!("/api/v1/actions/{isolated}/undo"), &ann, json!({}))
        .await
        .unwrap();
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["kind"], "release");
    assert_eq!(body["status"], "pending_approval");
    assert_eq!(body["undo_of"], isolated.as_str());
    assert_eq!(body["device_id"], device.as_str());
    assert_eq!(body["requested_by"], "ann");
    let release = id_of(&body);

    // Quarantine -> restore of the device's record.
    let (status, body) = collector
        .post_as(
            &format!("/api/v1/actions/{quarantined}/undo"),
            &ann,
            json!({"reason": "false positive"}),
        )
        .await
        .unwrap();
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["kind"], "restore_file");
    assert_eq!(body["action"]["quarantine_id"], record["id"]);
    assert_eq!(body["reason"], "false positive");
    assert_eq!(body["undo_of"], quarantined.as_str());

    // The undo goes through approval as usual and reaches the device.
    let (status, body) = collector
        .post_as(&format!("/api/v1/actions/{release}/approve"), &bob, json!({}))
        .await
        .unwrap();
    assert_eq!((status, &body["delivered"]), (200, &json!(true)), "{body}");
    let signed = dev.recv_command(Duration::from_secs(1)).await.unwrap();
    let command = dev.authorize(&signed, last_seq).unwrap();
    assert_eq!(command.action, Action::Release);

    // No undo for other kinds, nor for an action that has not succeeded.
    for id in [collected.as_str(), release.as_str()] {
        let (status, body) = collector
            .post_as(&format!("/api/v1/actions/{id}/undo"), &ann, json!({}))
            .await
            .unwrap();
        assert_eq!(status, 409, "{body}");
    }
    let (_, audit) = collector.get("/api/v1/audit?limit=1000").await.unwrap();
    let linked = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "action.request" && e["detail"].as_str().unwrap().contains("undo_of"))
        .count();
    assert_eq!(linked, 2, "{audit}");
}

/// Every workflow route against every role: below the route's role is 403,
/// at or above it is anything but 403; no token is 401.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn role_matrix_over_all_routes() {
    let collector = Collector::start().unwrap();
    let dev = TestDevice::enroll(&collector.join_token(1, "1h").unwrap(), "h")
        .await
        .unwrap();
    let roles = ["viewer", "analyst", "approver", "admin"];
    let tokens: Vec<String> = roles
        .iter()
        .map(|r| collector.user(&format!("u-{r}"), r).unwrap())
        .collect();
    let missing = CommandId::generate(now_ms(), &SystemRandom::new()).unwrap().to_string();
    let propose = json!({"device_id": dev.id().to_string(), "action": {"kind": "release"}, "reason": "r"});
    // (method, path, least role index, body)
    let routes: Vec<(&str, String, usize, Value)> = vec![
        ("POST", "/api/v1/actions".into(), 1, propose),
        ("GET", "/api/v1/actions".into(), 0, Value::Null),
        ("GET", format!("/api/v1/actions/{missing}"), 0, Value::Null),
        ("POST", format!("/api/v1/actions/{missing}/approve"), 2, json!({})),
        (
            "POST",
            format!("/api/v1/actions/{missing}/reject"),
            2,
            json!({"comment": "c"}),
        ),
        (
            "POST",
            format!("/api/v1/actions/{missing}/cancel"),
            1,
            json!({"comment": "c"}),
        ),
        ("POST", format!("/api/v1/actions/{missing}/undo"), 1, json!({})),
        ("GET", format!("/api/v1/actions/{missing}/package"), 2, Value::Null),
        ("GET", "/api/v1/audit".into(), 3, Value::Null),
        ("GET", "/api/v1/audit/verify".into(), 3, Value::Null),
    ];
    for (method, path, least, body) in &routes {
        for (i, token) in tokens.iter().enumerate() {
            let (status, resp) = match *method {
                "GET" => collector.get_as(path, token).await.unwrap(),
                _ => collector.post_as(path, token, body.clone()).await.unwrap(),
            };
            if i < *least {
                assert_eq!(status, 403, "{method} {path} as {}: {resp}", roles[i]);
            } else {
                assert_ne!(status, 403, "{method} {path} as {}: {resp}", roles[i]);
                assert!(status < 500, "{method} {path} as {}: {status} {resp}", roles[i]);
            }
        }
        let (status, _) = match *method {
            "GET" => collector.get_as(path, "ward_nobody").await.unwrap(),
            _ => collector.post_as(path, "ward_nobody", body.clone()).await.unwrap(),
        };
        assert_eq!(status, 401, "{method} {path} without a valid token");
    }
    // Malformed input is a 400, never a 500.
    let analyst = &tokens[1];
    for raw in ["", "{", "[]", "{\"device_id\": 5}"] {
        let resp = ward_tests::http_client()
            .post(format!("http://{}/api/v1/actions", collector.http))
            .bearer_auth(analyst)
            .header("content-type", "application/json")
            .body(raw)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 400, "{raw:?}");
    }
    let (status, _) = collector.get_as("/api/v1/actions/not-an-id", analyst).await.unwrap();
    assert_eq!(status, 400);
}

/// An isolated device that goes silent: the collector raises ONE alert per
/// silence (unsigned, seq 0, source collector), which opens no sequence gap; a
/// device that comes back and falls silent again raises another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn isolated_device_going_silent_raises_one_alert() {
    let collector =
        Collector::start_with(|c| *c = c.replace("offline_after_ms = 90000", "offline_after_ms = 800")).unwrap();
    let token = collector.join_token(2, "1h").unwrap();
    let mut dev = TestDevice::enroll(&token, "iso-1").await.unwrap();
    let mut calm = TestDevice::enroll(&token, "calm-1").await.unwrap();
    let device = dev.id().to_string();
    let heartbeat = |isolation| {
        AgentMessage::Heartbeat(Heartbeat {
            sent_at_ms: now_ms(),
            inventory: None,
            isolation,
            outbox_depth: 0,
            rule_pack_version: 0,
        })
    };
    let alerts_of = async |device: &str| -> Vec<Value> {
        let (status, body) = collector
            .get(&format!(
                "/api/v1/alerts?device={device}&rule=ward-isolated-device-silent"
            ))
            .await
            .unwrap();
        assert_eq!(status, 200, "{body}");
        body["alerts"].as_array().cloned().unwrap_or_default()
    };
    // Goes quiet while isolated: reports it, then its connection ends.
    let go_silent = async |dev: &mut TestDevice, isolation| {
        dev.connect().await.unwrap();
        dev.session.as_mut().unwrap().send(&heartbeat(isolation)).await.unwrap();
        dev.send_new(1).await.unwrap(); // the ack proves the heartbeat was handled
        dev.session.take().unwrap().conn.close(0u32.into(), b"bye");
    };
    go_silent(&mut dev, IsolationState::Isolated).await;
    go_silent(&mut calm, IsolationState::None).await;

    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let alert = loop {
        if let Some(a) = alerts_of(&device).await.pop() {
            break a;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no alert for the silent isolated device"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(alert["rule"]["id"], "ward-isolated-device-silent");
    assert_eq!(alert["rule"]["author"], "Ward");
    assert_eq!(alert["rule"]["techniques"], json!(["T1685"]));
    assert_eq!(alert["rule"]["tactics"], json!(["TA0005"]));
    assert_eq!(alert["severity"], "high");
    assert_eq!(alert["source"], "collector");
    assert_eq!(alert["seq"], 0);
    assert_eq!(alert["entities"], json!([{"kind": "device", "hostname": "iso-1"}]));

    // One per silence: several more checks later there is still one; the device
    // that was not isolated has none; no sequence gap was opened.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(alerts_of(&device).await.len(), 1);
    assert!(alerts_of(&calm.id().to_string()).await.is_empty());
    let (_, view) = collector.get(&format!("/api/v1/devices/{device}")).await.unwrap();
    assert_eq!(view["missing_alerts"], 0, "{view}");
    assert_eq!(view["sequence_gaps"], json!([]), "{view}");

    // Back, then silent again: a new silence, a new alert.
    go_silent(&mut dev, IsolationState::Isolated).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while alerts_of(&device).await.len() < 2 {
        assert!(std::time::Instant::now() < deadline, "no alert for the second silence");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(alerts_of(&device).await.len(), 2);
    let (_, view) = collector.get(&format!("/api/v1/devices/{device}")).await.unwrap();
    assert_eq!(view["missing_alerts"], 0, "{view}");
}

/// A device that accepted commands the collector no longer remembers (its
/// database restored from an older backup) moves the collector's sequence ahead
/// when it connects, so the next command is not refused as a replay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_ahead_of_a_restored_database_moves_the_sequence_on() {
    let collector = Collector::start().unwrap();
    let ann = collector.user("ann", "analyst").unwrap();
    let bob = collector.user("bob", "approver").unwrap();
    let mut dev = TestDevice::enroll(&collector.join_token(1, "1h").unwrap(), "web-9")
        .await
        .unwrap();
    let device = dev.id().to_string();
    let package = |dev: &str| json!({"device_id": dev, "action": {"kind": "collect_package"}, "reason": "check"});
    let approve = |id: String| {
        let (collector, bob) = (&collector, &bob);
        async move {
            let (status, body) = collector
                .post_as(&format!("/api/v1/actions/{id}/approve"), bob, json!({}))
                .await
                .unwrap();
            assert_eq!(status, 200, "{body}");
        }
    };

    // The device has accepted up to 40; the collector's database knows none of it.
    dev.connect_after(40).await.unwrap();
    let (status, body) = collector
        .post_as("/api/v1/actions", &ann, package(&device))
        .await
        .unwrap();
    assert_eq!(status, 201, "{body}");
    approve(id_of(&body)).await;
    let signed = dev.recv_command(Duration::from_secs(5)).await.unwrap();
    let command = dev
        .authorize(&signed, 40)
        .expect("numbered above what the device accepted");
    assert_eq!(command.seq, 41);
    let db = collector.db().unwrap();
    let audited: i64 = db
        .query_row(
            "SELECT COUNT(*) FROM audit_log WHERE action = 'device.command_seq_caught_up' AND target = ?1",
            [&device],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(audited, 1);

    // A device behind the collector (it lost nothing) changes nothing.
    drop(dev.session.take());
    dev.connect_after(3).await.unwrap();
    let (_, body) = collector
        .post_as("/api/v1/actions", &ann, package(&device))
        .await
        .unwrap();
    approve(id_of(&body)).await;
    loop {
        let signed = dev.recv_command(Duration::from_secs(5)).await.unwrap();
        let seq = dev.authorize(&signed, 3).unwrap().seq;
        if seq > 41 {
            assert_eq!(seq, 42);
            break;
        }
    }
}
