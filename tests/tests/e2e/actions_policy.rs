//! The response-action policy from the collector's `[actions]` config, end to
//! end: a two-person rule (the signed approval record names both approvers and a
//! real agent with its own per-kind minimum acts on it, and refuses a command
//! with fewer), self-approval where configured, commands that wait for an
//! offline device until their configured expiry, and actions linked to incidents.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use ward_protocol::*;
use ward_tests::*;

fn id_of(body: &Value) -> String {
    body["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no id in {body}"))
        .to_string()
}

async fn propose(collector: &Collector, token: &str, body: Value) -> String {
    let (status, resp) = collector.post_as("/api/v1/actions", token, body).await.unwrap();
    assert_eq!(status, 201, "{resp}");
    id_of(&resp)
}

async fn approve(collector: &Collector, id: &str, token: &str) -> (u16, Value) {
    collector
        .post_as(
            &format!("/api/v1/actions/{id}/approve"),
            token,
            json!({"comment": "ok"}),
        )
        .await
        .unwrap()
}

async fn wait_final(collector: &Collector, id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, a) = collector.get(&format!("/api/v1/actions/{id}")).await.unwrap();
        if ["succeeded", "failed", "refused", "expired"].contains(&a["status"].as_str().unwrap_or("")) {
            return a;
        }
        assert!(Instant::now() < deadline, "action never finished: {a}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Two-person rule configured on both sides: the collector waits for two
/// distinct approvers and signs both into the command; the agent, which wants
/// two for that kind, acts on it, and refuses a kind the collector let through
/// with one approval.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_person_rule_end_to_end_on_a_real_agent() {
    let collector = Collector::start_with(|c| {
        c.push_str("\n[actions.policy.collect_package]\napprovals = 2\nrequester_may_approve = false\n");
    })
    .unwrap();
    let agent = Agent::start_with(&collector, |watch| {
        format!(
            "{}\n[response]\nmin_approvals = 1\nmin_approvals_by_kind = {{ collect_package = 2, kill_process = 2 }}\n",
            Agent::test_config(watch)
        )
    })
    .unwrap();
    agent.wait_connected(Duration::from_secs(15)).unwrap();
    let device = agent.device_id.clone();
    let ann = collector.user("ann", "analyst").unwrap();
    let bob = collector.user("bob", "approver").unwrap();
    let cat = collector.user("cat", "approver").unwrap();

    let id = propose(
        &collector,
        &ann,
        json!({"device_id": device, "action": {"kind": "collect_package"}, "reason": "triage"}),
    )
    .await;
    // The first approval is recorded; the action still waits.
    let (status, body) = approve(&collector, &id, &bob).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "pending_approval", "{body}");
    assert_eq!(body["approvals"].as_array().unwrap().len(), 1);
    assert_eq!(body["delivered"], false);
    // The same person again does not count twice.
    let (status, body) = approve(&collector, &id, &bob).await;
    assert_eq!(status, 409, "{body}");
    // The requester cannot be the second person.
    let (status, _) = approve(&collector, &id, &ann).await;
    assert_eq!(status, 403);
    // A second, distinct approver: signed, dispatched, carried out by the agent.
    let (status, body) = approve(&collector, &id, &cat).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "dispatched", "{body}");
    let done = wait_final(&collector, &id).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert!(done["package_bytes"].as_u64().unwrap() > 0, "{done}");
    // The signed command's approval record names both approvers.
    let signed: Vec<u8> = collector
        .db()
        .unwrap()
        .query_row("SELECT signed_command FROM actions WHERE id = ?1", [&id], |r| r.get(0))
        .unwrap();
    let command = open_stored_command(&collector, &signed);
    assert_eq!(command.approval.requested_by, "ann");
    assert_eq!(command.approval.approved_by, vec!["bob".to_string(), "cat".to_string()]);
    assert_eq!(command.approval.independent_approvals(), 2);

    // kill_process needs one approval at the collector but two at the agent: refused before anything happens.
    let id = propose(
        &collector,
        &ann,
        json!({"device_id": device, "action": {"kind": "kill_process", "pid": 999_999, "start_time_ms": 1, "exe": "/bin/nothing"}, "reason": "r"}),
    )
    .await;
    let (status, body) = approve(&collector, &id, &bob).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "dispatched");
    let done = wait_final(&collector, &id).await;
    assert_eq!(done["status"], "refused", "{done}");
    let reason = done["result"]["reason"].as_str().unwrap();
    assert!(reason.contains("needs 2 approvals, command has 1"), "{done}");
}

/// A stored signed command, verified with the collector's command key.
fn open_stored_command(collector: &Collector, stored: &[u8]) -> Command {
    let signed: Signed = ward_protocol::codec::decode_body(stored).expect("stored command decodes");
    let pkcs8 = std::fs::read(collector.data_dir().join("command.key")).unwrap();
    let key = SigningKey::from_pkcs8(&pkcs8).unwrap().public_key();
    signed
        .open(SignatureKind::Command, &key)
        .expect("signed by the command key")
}

/// Approved commands for an offline device wait for it until their configured
/// expiry: a device that comes back in time gets its command; one that never
/// does sees its action expire, and nothing is delivered afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_wait_for_offline_devices_until_their_expiry() {
    const TTL_MS: u64 = 3_000;
    let collector = Collector::start_with(|c| {
        *c = c.replace("command_ttl_ms = 259200000", &format!("command_ttl_ms = {TTL_MS}"));
    })
    .unwrap();
    let ann = collector.user("ann", "analyst").unwrap();
    let bob = collector.user("bob", "approver").unwrap();
    let token = collector.join_token(2, "1h").unwrap();
    let mut back = TestDevice::enroll(&token, "laptop-back").await.unwrap();
    let mut gone = TestDevice::enroll(&token, "laptop-gone").await.unwrap();

    let mut ids = Vec::new();
    for dev in [&back, &gone] {
        let id = propose(
            &collector,
            &ann,
            json!({"device_id": dev.id().to_string(), "action": {"kind": "collect_package"}, "reason": "r"}),
        )
        .await;
        let (status, body) = approve(&collector, &id, &bob).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(
            (body["status"].as_str(), body["delivered"].as_bool()),
            (Some("dispatched"), Some(false))
        );
        let ttl = body["expires_at_ms"].as_u64().unwrap() - body["issued_at_ms"].as_u64().unwrap();
        assert_eq!(ttl, TTL_MS, "the configured command expiry: {body}");
        ids.push(id);
    }
    let approved = Instant::now();

    // Offline for a while, back before the expiry: the command is delivered on reconnect.
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    back.connect().await.unwrap();
    let signed = back.recv_command(Duration::from_secs(2)).await.unwrap();
    let command = back.authorize(&signed, 0).unwrap();
    assert_eq!(command.id.to_string(), ids[0]);
    assert!(
        approved.elapsed() < Duration::from_millis(TTL_MS),
        "delivered within its validity"
    );
    let result = back.command_result(&command, CommandOutcome::Succeeded, Some(b"pkg".to_vec()), None);
    back.send_result(result).await.unwrap();
    collector
        .wait_action_status(&ids[0], "succeeded", Duration::from_secs(3))
        .await
        .unwrap();

    // Never back in time: expired (by the collector's expiry sweep), audited, never delivered.
    let expired = collector
        .wait_action_status(&ids[1], "expired", Duration::from_millis(TTL_MS + 3_000))
        .await
        .unwrap();
    assert!(approved.elapsed() >= Duration::from_millis(TTL_MS - 200), "{expired}");
    gone.connect().await.unwrap();
    assert!(
        gone.recv_command(Duration::from_millis(1_500)).await.is_err(),
        "an expired command must not be delivered"
    );
    let (_, audit) = collector.get("/api/v1/audit?limit=1000").await.unwrap();
    assert!(
        audit["entries"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["action"] == "action.expire" && e["target"] == ids[1].as_str()),
        "{audit}"
    );
}

/// Where the config lets requesters approve their own requests, they can; the
/// agent still counts only approvers other than the requester, so a device
/// with the default minimum refuses such a command.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn self_approval_only_where_configured() {
    let collector = Collector::start_with(|c| {
        c.push_str("\n[actions.policy.release]\nrequester_may_approve = true\n");
    })
    .unwrap();
    let amy = collector.user("amy", "approver").unwrap();
    let mut dev = TestDevice::enroll(&collector.join_token(1, "1h").unwrap(), "h1")
        .await
        .unwrap();
    dev.connect().await.unwrap();
    let device = dev.id().to_string();
    let package = propose(
        &collector,
        &amy,
        json!({"device_id": device, "action": {"kind": "collect_package"}, "reason": "r"}),
    )
    .await;
    let (status, body) = approve(&collector, &package, &amy).await;
    assert_eq!(status, 403, "not for collect_package: {body}");
    let release = propose(
        &collector,
        &amy,
        json!({"device_id": device, "action": {"kind": "release"}, "reason": "r"}),
    )
    .await;
    let (status, body) = approve(&collector, &release, &amy).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "dispatched");
    let signed = dev.recv_command(Duration::from_secs(2)).await.unwrap();
    assert!(matches!(
        dev.authorize(&signed, 0),
        Err(Refusal::InsufficientApprovals { needed: 1, got: 0, .. })
    ));
    let mut lenient = CommandPolicy::default();
    lenient.min_approvals.insert(ActionKind::Release, 0);
    let command = dev.authorize_with(&signed, 0, &lenient).unwrap();
    assert_eq!(command.approval.approved_by, vec!["amy".to_string()]);
}

/// Actions can name the incident they belong to; the list filters by it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn actions_link_to_incidents() {
    let collector = Collector::start().unwrap();
    let ann = collector.user("ann", "analyst").unwrap();
    let dev = TestDevice::enroll(&collector.join_token(1, "1h").unwrap(), "h1")
        .await
        .unwrap();
    let device = dev.id().to_string();
    let linked = propose(
        &collector,
        &ann,
        json!({"device_id": device, "action": {"kind": "collect_package"}, "reason": "r", "incident_id": "inc-42"}),
    )
    .await;
    let loose = propose(
        &collector,
        &ann,
        json!({"device_id": device, "action": {"kind": "collect_package"}, "reason": "r"}),
    )
    .await;
    let (_, view) = collector.get(&format!("/api/v1/actions/{linked}")).await.unwrap();
    assert_eq!(view["incident_id"], "inc-42");
    let (_, view) = collector.get(&format!("/api/v1/actions/{loose}")).await.unwrap();
    assert!(view["incident_id"].is_null(), "{view}");
    let (status, list) = collector.get("/api/v1/actions?incident_id=inc-42").await.unwrap();
    assert_eq!(status, 200, "{list}");
    let ids: Vec<&str> = list["actions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec![linked.as_str()]);
    let (_, list) = collector.get("/api/v1/actions?incident_id=inc-7").await.unwrap();
    assert_eq!(list["actions"], json!([]));
    for bad in ["", "a b", "../x", &"x".repeat(65)] {
        let (status, body) = collector
            .post_as(
                "/api/v1/actions",
                &ann,
                json!({"device_id": device, "action": {"kind": "collect_package"}, "reason": "r", "incident_id": bad}),
            )
            .await
            .unwrap();
        assert_eq!(status, 400, "{bad:?}: {body}");
    }
    let (status, _) = collector.get("/api/v1/actions?incident_id=a%20b").await.unwrap();
    assert_eq!(status, 400);

    // The undo of an incident's action belongs to the same incident.
    let bob = collector.user("bob", "approver").unwrap();
    let mut dev = dev;
    dev.connect().await.unwrap();
    let isolate = propose(
        &collector,
        &ann,
        json!({"device_id": device, "action": {"kind": "isolate"}, "reason": "r", "incident_id": "inc-42"}),
    )
    .await;
    let (status, body) = approve(&collector, &isolate, &bob).await;
    assert_eq!(status, 200, "{body}");
    let signed = dev.recv_command(Duration::from_secs(2)).await.unwrap();
    let command = dev.authorize(&signed, 0).unwrap();
    dev.send_result(dev.command_result(&command, CommandOutcome::Succeeded, None, None))
        .await
        .unwrap();
    collector
        .wait_action_status(&isolate, "succeeded", Duration::from_secs(3))
        .await
        .unwrap();
    let (status, undo) = collector
        .post_as(&format!("/api/v1/actions/{isolate}/undo"), &ann, json!({}))
        .await
        .unwrap();
    assert_eq!(status, 201, "{undo}");
    assert_eq!(
        (undo["kind"].as_str(), undo["incident_id"].as_str()),
        (Some("release"), Some("inc-42"))
    );
}
