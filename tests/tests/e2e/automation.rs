//! Automation rules against a real collector: alerts that match a rule propose
//! an action by themselves (actor `automation:<rule>`, audited), once; a second
//! isolate of a device already being isolated is never proposed; an
//! auto-approving rule's command is signed and delivered at once, its approval
//! record naming the rule; alerts written by another process are picked up too;
//! on a real agent, a known-bad file is quarantined with no person involved; and
//! an incident crossing a rule's severity and tactic condition proposes one
//! isolate of its device, tied to the incident, however many alerts join later;
//! an analyst's change to an incident (severity raised) is checked like an alert.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use ward_protocol::*;
use ward_tests::*;

const RULES: &str = r#"
[[automation]]
name = "isolate-ransomware"
action = "isolate"
allow = ["10.9.9.9"]
[automation.alert]
min_severity = "high"
techniques = ["T1486"]

[[automation]]
name = "package-on-collection"
action = "collect_package"
auto_approve = true
[automation.alert]
rule_ids = ["ward-test-collect"]
sources = ["agent", "identity"]
"#;

fn alert(dev: &mut TestDevice, rule: &str, severity: Severity, techniques: &[&str]) -> Signed {
    let mut a = dev.next_alert();
    a.rule.id = rule.into();
    a.rule.severity = severity;
    a.rule.techniques = techniques.iter().map(|t| t.to_string()).collect();
    dev.sign(&a)
}

async fn actions_of(collector: &Collector, device: &str) -> Vec<Value> {
    let (status, body) = collector
        .get(&format!("/api/v1/actions?device={device}"))
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    body["actions"].as_array().cloned().unwrap_or_default()
}

async fn wait_actions(collector: &Collector, device: &str, n: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let actions = actions_of(collector, device).await;
        if actions.len() >= n {
            return actions;
        }
        assert!(
            Instant::now() < deadline,
            "{n} actions expected for {device}, have {actions:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_propose_actions_by_rule() {
    let collector = Collector::start_with(|c| c.push_str(RULES)).unwrap();
    let bob = collector.user("bob", "approver").unwrap();
    let token = collector.join_token(2, "1h").unwrap();
    let mut dev = TestDevice::enroll(&token, "web-1").await.unwrap();
    let other = TestDevice::enroll(&token, "db-1").await.unwrap();
    dev.connect().await.unwrap();
    let device = dev.id().to_string();

    // Not matching: medium severity, or high without the technique.
    let quiet = vec![
        alert(&mut dev, "ward-test-rule", Severity::Medium, &["T1486"]),
        alert(&mut dev, "ward-test-rule", Severity::Critical, &["T1059"]),
    ];
    dev.send_batch(quiet).await.unwrap();
    // Matching (a sub-technique of T1486), twice: one isolate only.
    let started = Instant::now();
    let first = alert(&mut dev, "ward-ransom", Severity::Critical, &["T1486.001"]);
    dev.send_batch(vec![first]).await.unwrap();
    let actions = wait_actions(&collector, &device, 1).await;
    println!("alert to proposal: {:?}", started.elapsed());
    let isolate = &actions[0];
    assert_eq!(isolate["kind"], "isolate", "{isolate}");
    assert_eq!(isolate["status"], "pending_approval", "it waits for a person");
    assert_eq!(isolate["requested_by"], "automation:isolate-ransomware");
    assert_eq!(isolate["action"]["allow"], json!(["10.9.9.9"]));
    assert!(isolate["reason"].as_str().unwrap().contains("ward-ransom"), "{isolate}");
    let isolate_id = isolate["id"].as_str().unwrap().to_string();
    let again = alert(&mut dev, "ward-ransom", Severity::High, &["T1486"]);
    dev.send_batch(vec![again]).await.unwrap();

    // An auto-approving rule: signed, dispatched and delivered without a person.
    let collect = alert(&mut dev, "ward-test-collect", Severity::Low, &[]);
    dev.send_batch(vec![collect]).await.unwrap();
    let signed = dev.recv_command(Duration::from_secs(3)).await.unwrap();
    // The approval record names the rule as requester and approver: an agent
    // counts no independent approval, and acts only where it allows 0.
    assert!(matches!(
        dev.authorize(&signed, 0),
        Err(Refusal::InsufficientApprovals { got: 0, .. })
    ));
    let mut lenient = CommandPolicy::default();
    lenient.min_approvals.insert(ActionKind::CollectPackage, 0);
    let command = dev.authorize_with(&signed, 0, &lenient).unwrap();
    assert_eq!(command.action, Action::CollectPackage);
    assert_eq!(command.approval.requested_by, "automation:package-on-collection");
    assert_eq!(
        command.approval.approved_by,
        vec!["automation:package-on-collection".to_string()]
    );
    let result = dev.command_result(&command, CommandOutcome::Succeeded, Some(b"pkg".to_vec()), None);
    dev.send_result(result).await.unwrap();
    collector
        .wait_action_status(&command.id.to_string(), "succeeded", Duration::from_secs(3))
        .await
        .unwrap();

    // Still one isolate; a person approves it; a later matching alert proposes none either.
    let (status, body) = collector
        .post_as(
            &format!("/api/v1/actions/{isolate_id}/approve"),
            &bob,
            json!({"comment": "confirmed"}),
        )
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "dispatched");
    let late = alert(&mut dev, "ward-ransom", Severity::High, &["T1486"]);
    dev.send_batch(vec![late]).await.unwrap();

    // An alert another process wrote (here straight into the database, as a feed
    // import would): found by the timer, and it concerns the other device.
    let db = rusqlite::Connection::open(collector.data_dir().join("ward.db")).unwrap();
    db.busy_timeout(Duration::from_secs(5)).unwrap();
    db.execute(
        "INSERT INTO alerts (id, device_id, seq, observed_at_ms, last_observed_at_ms, received_at_ms, rule_id,
             rule_title, rule_author, severity, techniques, tactics, count, entities, matched, signed_payload,
             signature, source)
         VALUES ('feed-1', ?1, 0, 1, 1, 1, 'ward-test-collect', 'Collect', 'feed', 1, '[]', '[]', 1, '[]', '{}',
                 x'', x'', 'identity')",
        [other.id().to_string()],
    )
    .unwrap();
    let theirs = wait_actions(&collector, &other.id().to_string(), 1).await;
    assert_eq!(theirs[0]["kind"], "collect_package");
    // The rule's own approval follows its proposal: auto-approved, it waits for the device.
    let id = theirs[0]["id"].as_str().unwrap().to_string();
    collector
        .wait_action_status(&id, "dispatched", Duration::from_secs(3))
        .await
        .unwrap();

    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let mine = actions_of(&collector, &device).await;
    let kinds: Vec<&str> = mine.iter().map(|a| a["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds.iter().filter(|k| **k == "isolate").count(), 1, "{mine:?}");
    assert_eq!(mine.len(), 2, "{kinds:?}");

    // Audited under the rule's name; the chain verifies.
    let (_, audit) = collector.get("/api/v1/audit?limit=1000").await.unwrap();
    let entries = audit["entries"].as_array().unwrap();
    let by = |actor: &str, action: &str| {
        entries
            .iter()
            .filter(|e| e["actor"] == actor && e["action"] == action)
            .count()
    };
    assert_eq!(by("automation:isolate-ransomware", "action.request"), 1, "{audit}");
    assert_eq!(by("automation:package-on-collection", "action.request"), 2, "{audit}");
    assert_eq!(
        by("automation:package-on-collection", "action.auto_approve"),
        2,
        "{audit}"
    );
    let (_, report) = collector.get("/api/v1/audit/verify").await.unwrap();
    assert_eq!(report["ok"], true, "{report}");

    // Every match is recorded once per rule and alert, proposals and skips alike.
    let skipped: i64 = db
        .query_row(
            "SELECT COUNT(*) FROM automation_proposals WHERE rule = 'isolate-ransomware' AND outcome LIKE 'skipped:%isolated%'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(skipped, 2, "the second and the late ransomware alert");
}

const EICAR: &[u8] = br"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*";
/// The built-in rule for known-bad file hashes (EICAR among them).
const KNOWN_BAD_FILE_RULE: &str = "39a5ce10-6434-5895-9602-83e385b7aa40";

/// From sensor to automated response on a real agent: a known-bad file is
/// written, the agent's alert matches an auto-approving quarantine rule, the
/// command is signed and delivered, and the agent (which accepts automation's
/// approval for quarantines only) moves the file away.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn known_bad_file_is_quarantined_automatically_on_a_real_agent() {
    let collector = Collector::start_with(|c| {
        c.push_str(&format!(
            "\n[[automation]]\nname = \"quarantine-known-bad\"\naction = \"quarantine_file\"\nauto_approve = true\n\
             [automation.alert]\nrule_ids = [\"{KNOWN_BAD_FILE_RULE}\"]\n"
        ));
    })
    .unwrap();
    let agent = Agent::start_with(&collector, |watch| {
        format!(
            "{}\n[response]\nmin_approvals_by_kind = {{ quarantine_file = 0 }}\n",
            Agent::test_config(watch)
        )
    })
    .unwrap();
    agent.wait_connected(Duration::from_secs(15)).unwrap();
    let device = agent.device_id.clone();
    let target = agent.watch.join("dropper.bin");
    let started = Instant::now();
    std::fs::write(&target, EICAR).unwrap();
    let action = wait_actions(&collector, &device, 1).await.remove(0);
    assert_eq!(action["requested_by"], "automation:quarantine-known-bad", "{action}");
    assert_eq!(action["kind"], "quarantine_file");
    assert_eq!(action["action"]["path"], target.display().to_string());
    let id = action["id"].as_str().unwrap().to_string();
    let done = collector
        .wait_action_status(&id, "succeeded", Duration::from_secs(10))
        .await
        .unwrap();
    println!("file written to quarantined: {:?}", started.elapsed());
    assert!(!target.exists(), "the file was moved to quarantine: {done}");
    assert_eq!(done["approvals"][0]["by"], "automation:quarantine-known-bad");
}

async fn incidents_of(collector: &Collector) -> Vec<Value> {
    let (status, body) = collector.get("/api/v1/incidents").await.unwrap();
    assert_eq!(status, 200, "{body}");
    body["incidents"].as_array().cloned().unwrap_or_default()
}

/// The one incident, once it holds `alerts` alerts.
async fn wait_incident(collector: &Collector, alerts: i64) -> Value {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let incidents = incidents_of(collector).await;
        if let Some(i) = incidents.iter().find(|i| i["alert_count"].as_i64() >= Some(alerts)) {
            assert_eq!(
                incidents.len(),
                1,
                "the alerts correlate into one incident: {incidents:?}"
            );
            return i.clone();
        }
        assert!(
            Instant::now() < deadline,
            "an incident with {alerts} alerts expected, have {incidents:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn tactic_alert(dev: &mut TestDevice, severity: Severity, tactic: &str) -> Signed {
    let mut a = dev.next_alert();
    a.rule.severity = severity;
    a.rule.tactics = vec![tactic.into()];
    dev.sign(&a)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_incident_crossing_a_condition_proposes_once() {
    let collector = Collector::start_with(|c| {
        c.push_str(
            "\n[[automation]]\nname = \"isolate-broad-incident\"\naction = \"isolate\"\n\
             [automation.incident]\nmin_severity = \"high\"\ntactics = [\"TA0040\"]\n\
             [[automation]]\nname = \"phish-to-host\"\naction = \"collect_package\"\n\
             [automation.incident]\nsources_all = [\"agent\", \"mailbox\"]\n",
        )
    })
    .unwrap();
    let token = collector.join_token(1, "1h").unwrap();
    let mut dev = TestDevice::enroll(&token, "web-1").await.unwrap();
    dev.connect().await.unwrap();
    let device = dev.id().to_string();

    // Medium alerts on two kill-chain stages, Impact among them: the incident is
    // medium, below the rule's severity; and no mailbox alert is in it.
    let early = vec![
        tactic_alert(&mut dev, Severity::Medium, "TA0002"),
        tactic_alert(&mut dev, Severity::Medium, "TA0040"),
    ];
    dev.send_batch(early).await.unwrap();
    let incident = wait_incident(&collector, 2).await;
    assert_eq!(incident["severity"], "medium", "{incident}");
    let id = incident["id"].as_str().unwrap().to_string();
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert_eq!(actions_of(&collector, &device).await, Vec::<Value>::new());

    // A third stage raises the incident to high: the rule matches.
    let started = Instant::now();
    let third = tactic_alert(&mut dev, Severity::Medium, "TA0008");
    dev.send_batch(vec![third]).await.unwrap();
    let actions = wait_actions(&collector, &device, 1).await;
    println!("third stage to proposal: {:?}", started.elapsed());
    let isolate = &actions[0];
    assert_eq!(isolate["kind"], "isolate", "{isolate}");
    assert_eq!(isolate["status"], "pending_approval", "it waits for a person");
    assert_eq!(isolate["requested_by"], "automation:isolate-broad-incident");
    assert_eq!(isolate["incident_id"], id.as_str(), "{isolate}");
    assert!(isolate["reason"].as_str().unwrap().contains(&id), "{isolate}");
    assert_eq!(wait_incident(&collector, 3).await["severity"], "high");

    // More alerts join (the incident matches again each time): still one.
    let later = vec![
        tactic_alert(&mut dev, Severity::High, "TA0040"),
        tactic_alert(&mut dev, Severity::Critical, "TA0040"),
    ];
    dev.send_batch(later).await.unwrap();
    wait_incident(&collector, 5).await;
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let (status, body) = collector
        .get(&format!("/api/v1/actions?incident_id={id}"))
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    let tied = body["actions"].as_array().unwrap();
    assert_eq!(tied.len(), 1, "{body}");
    assert_eq!(tied[0]["id"], isolate["id"]);
    assert_eq!(actions_of(&collector, &device).await.len(), 1, "nothing else proposed");

    let db = rusqlite::Connection::open(collector.data_dir().join("ward.db")).unwrap();
    db.busy_timeout(Duration::from_secs(5)).unwrap();
    let records: Vec<(String, String)> = db
        .prepare("SELECT rule, alert_id FROM automation_proposals")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(
        records,
        vec![("isolate-broad-incident".to_string(), format!("incident:{id}:{device}"))],
        "recorded once per rule, incident and device"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_analyst_change_is_evaluated_like_a_new_alert() {
    let collector = Collector::start_with(|c| {
        c.push_str(
            "\n[[automation]]\nname = \"package-critical\"\naction = \"collect_package\"\n\
             [automation.incident]\nmin_severity = \"critical\"\n",
        )
    })
    .unwrap();
    let ann = collector.user("ann", "analyst").unwrap();
    let token = collector.join_token(1, "1h").unwrap();
    let mut dev = TestDevice::enroll(&token, "db-1").await.unwrap();
    dev.connect().await.unwrap();
    let device = dev.id().to_string();
    let first = tactic_alert(&mut dev, Severity::Medium, "TA0002");
    dev.send_batch(vec![first]).await.unwrap();
    let incident = wait_incident(&collector, 1).await;
    let id = incident["id"].as_str().unwrap().to_string();
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert_eq!(
        actions_of(&collector, &device).await,
        Vec::<Value>::new(),
        "medium: no match"
    );

    // An analyst raises it to critical: no alert joins, yet the rule now matches.
    let (status, body) = collector
        .patch_as(
            &format!("/api/v1/incidents/{id}"),
            &ann,
            json!({"severity": "critical", "assignee": "ann"}),
        )
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    let actions = wait_actions(&collector, &device, 1).await;
    assert_eq!(actions[0]["kind"], "collect_package", "{:?}", actions[0]);
    assert_eq!(actions[0]["requested_by"], "automation:package-critical");
    assert_eq!(actions[0]["incident_id"], id.as_str());

    // A later change is checked again; the proposal is not repeated.
    let (status, _) = collector
        .patch_as(
            &format!("/api/v1/incidents/{id}"),
            &ann,
            json!({"status": "in_progress"}),
        )
        .await
        .unwrap();
    assert_eq!(status, 200);
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert_eq!(actions_of(&collector, &device).await.len(), 1);
}

/// Issue 15 item 11: a rogue device's alert naming a user joins (and raises) the
/// incident two other devices share through that user; an auto-approving
/// incident rule then acts on the rogue device only, whose evidence matched, and
/// never on the devices that merely share the user.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rogue_devices_alert_cannot_trigger_automation_on_other_devices() {
    let collector = Collector::start_with(|c| {
        c.push_str(
            "\n[[automation]]\nname = \"package-critical\"\naction = \"collect_package\"\nauto_approve = true\n\
             [automation.incident]\nmin_severity = \"critical\"\n",
        )
    })
    .unwrap();
    let token = collector.join_token(3, "1h").unwrap();
    let mut devices = Vec::new();
    for host in ["laptop-1", "laptop-2", "rogue"] {
        let mut dev = TestDevice::enroll(&token, host).await.unwrap();
        dev.connect().await.unwrap();
        devices.push(dev);
    }
    // Alice's activity on two laptops: one medium incident.
    for dev in &mut devices[..2] {
        let a = tactic_alert(dev, Severity::Medium, "TA0002");
        dev.send_batch(vec![a]).await.unwrap();
    }
    let incident = wait_incident(&collector, 2).await;
    assert_eq!(incident["severity"], "medium", "{incident}");
    // The rogue device claims a critical alert about alice, nothing else.
    let rogue = &mut devices[2];
    let mut a = rogue.next_alert();
    a.rule.severity = Severity::Critical;
    a.entities = vec![Entity::User {
        name: "alice".into(),
        uid: Some(1000),
    }];
    let signed = rogue.sign(&a);
    rogue.send_batch(vec![signed]).await.unwrap();
    let incident = wait_incident(&collector, 3).await;
    assert_eq!(incident["severity"], "critical", "{incident}");

    let rogue_id = devices[2].id().to_string();
    // The proposal and its auto-approval are two commits: wait for the second.
    let deadline = Instant::now() + Duration::from_secs(5);
    let acted = loop {
        let acted = wait_actions(&collector, &rogue_id, 1).await;
        if acted[0]["status"] != "pending_approval" || Instant::now() > deadline {
            break acted;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(acted[0]["requested_by"], "automation:package-critical");
    assert_ne!(acted[0]["status"], "pending_approval", "auto-approved: {:?}", acted[0]);
    // Give automation time for anything else it would have proposed.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    for dev in &devices[..2] {
        let id = dev.id().to_string();
        assert_eq!(
            actions_of(&collector, &id).await,
            Vec::<Value>::new(),
            "{id} was acted on because of another device's alert"
        );
    }
}
