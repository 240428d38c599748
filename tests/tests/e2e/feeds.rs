//! Identity and mailbox feeds against the real collector: the fixture files as
//! they were exported are POSTed (and imported with the CLI), the reports say what
//! happened, the alerts are visible through the alerts API with their source, and
//! importing the same files again adds nothing.

use std::path::PathBuf;

use serde_json::{Value, json};
use ward_tests::{Collector, metric, now_ms, rfc3339_ms};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/feeds")
        .join(name)
}

fn read(name: &str) -> Vec<u8> {
    let path = fixture(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("fixture {}: {e}", path.display()))
}

async fn alerts(c: &Collector) -> Vec<Value> {
    let (status, body) = c.get("/api/v1/alerts?limit=500").await.unwrap();
    assert_eq!(status, 200, "{body}");
    body["alerts"].as_array().unwrap().clone()
}

fn count(alerts: &[Value], rule: &str) -> usize {
    alerts.iter().filter(|a| a["rule"]["id"] == rule).count()
}

/// Ten users failing from one IP within minutes (a spray), padded with Okta
/// events that are not sign-ins so the body is larger than other API bodies may be.
fn spray_file(base_ms: u64) -> Vec<u8> {
    let mut out = String::new();
    for i in 0..10u64 {
        let t = base_ms + i * 30_000;
        out.push_str(
            &json!({"uuid": format!("spray-{i}"), "published": rfc3339_ms(t), "eventType": "user.session.start",
                "actor": {"alternateId": format!("user{i}@contoso.com"), "type": "User"},
                "outcome": {"result": "FAILURE", "reason": "INVALID_CREDENTIALS"},
                "client": {"ipAddress": "203.0.113.66", "userAgent": {"rawUserAgent": "python-requests/2.31"}}})
            .to_string(),
        );
        out.push('\n');
    }
    let mut i = 0;
    while out.len() < 1_300_000 {
        out.push_str(
            &json!({"uuid": format!("pad-{i}"), "published": rfc3339_ms(base_ms), "eventType": "system.org.rate_limit.warning",
                "actor": {"alternateId": "system@okta.com"}, "displayMessage": "x".repeat(300)})
            .to_string(),
        );
        out.push('\n');
        i += 1;
    }
    out.into_bytes()
}

#[tokio::test]
async fn feed_files_import_raise_alerts_once_and_are_audited() {
    let c = Collector::start().unwrap();
    let analyst = c.user("alice", "analyst").unwrap();
    let viewer = c.user("victor", "viewer").unwrap();

    // Viewers read, they do not import.
    let (status, _) = c
        .post_bytes_as(
            "/api/v1/feeds/identity",
            &viewer,
            read("sentinel/sign-in_adelete.first7rows.csv"),
        )
        .await
        .unwrap();
    assert_eq!(status, 403);

    let post = |path: &'static str, file: &'static str| {
        let c = &c;
        let analyst = analyst.clone();
        async move {
            let (status, report) = c.post_bytes_as(path, &analyst, read(file)).await.unwrap();
            assert_eq!(status, 200, "{file}: {report}");
            report
        }
    };
    let sentinel = post("/api/v1/feeds/identity", "sentinel/sign-in_adelete.first7rows.csv").await;
    assert_eq!(sentinel["format"], "entra-signinlogs-csv");
    assert_eq!(
        (sentinel["records"].as_u64(), sentinel["imported"].as_u64()),
        (Some(7), Some(7))
    );
    let entra = post("/api/v1/feeds/identity", "panther/entra_diagnostic_records.json").await;
    assert_eq!(entra["format"], "entra-auditlogs+entra-diagnostic-records");
    assert!(entra["alerts_raised"].as_u64().unwrap() >= 1, "{entra}");
    let okta = post("/api/v1/feeds/identity", "panther/okta_systemlog.ndjson").await;
    assert_eq!(okta["format"], "okta-systemlog-ndjson");
    assert!(okta["skipped_count"].as_u64().unwrap() > 0);
    assert!(okta["skipped"][0]["line"].as_u64().is_some(), "{okta}");
    let mail_csv = post("/api/v1/feeds/mailbox", "defender/email_events.csv").await;
    assert_eq!(
        (mail_csv["imported"].as_u64(), mail_csv["skipped"][0]["line"].as_u64()),
        (Some(3), Some(5))
    );
    // With the phish's follow-up: its URL row came after its EmailEvents row.
    let streamed = post("/api/v1/feeds/mailbox", "defender/defender_streaming.json").await;
    assert_eq!(streamed["alerts_raised"], 4, "{streamed}");

    // A spray file larger than the 1 MiB other bodies may be.
    let spray = spray_file(now_ms() - 3_600_000);
    assert!(spray.len() > 1 << 20);
    let (status, report) = c
        .post_bytes_as("/api/v1/feeds/identity", &analyst, spray.clone())
        .await
        .unwrap();
    assert_eq!(status, 200, "{report}");
    assert_eq!(
        (report["imported"].as_u64(), report["alerts_raised"].as_u64()),
        (Some(10), Some(1))
    );

    let all = alerts(&c).await;
    let identity: Vec<&Value> = all.iter().filter(|a| a["source"] == "identity").collect();
    let mailbox: Vec<&Value> = all.iter().filter(|a| a["source"] == "mailbox").collect();
    assert!(
        identity
            .iter()
            .all(|a| a["device_id"].is_null() && a["rule"]["author"] == "Ward")
    );
    assert_eq!(count(&all, "ward-identity-password-spray"), 1);
    assert!(count(&all, "ward-identity-risky-sign-in") >= 1);
    assert_eq!(count(&all, "ward-mailbox-malicious-delivered"), 3);
    assert_eq!(count(&all, "ward-mailbox-malicious-url-click"), 1);
    assert_eq!(count(&all, "ward-mailbox-user-reported-phish"), 1);
    assert_eq!(mailbox.len(), 5);
    let spray_alert = all
        .iter()
        .find(|a| a["rule"]["id"] == "ward-identity-password-spray")
        .unwrap();
    assert_eq!(spray_alert["rule"]["techniques"], json!(["T1110.003"]));
    assert!(
        spray_alert["entities"]
            .as_array()
            .unwrap()
            .contains(&json!({"kind": "ip", "addr": "203.0.113.66"}))
    );
    let click = all
        .iter()
        .find(|a| a["rule"]["id"] == "ward-mailbox-malicious-url-click")
        .unwrap();
    let (status, one) = c
        .get(&format!("/api/v1/alerts/{}", click["id"].as_str().unwrap()))
        .await
        .unwrap();
    assert_eq!((status, one["source"].as_str()), (200, Some("mailbox")));

    // Everything again: nothing new is stored, no alert is raised twice.
    for (path, file) in [
        ("/api/v1/feeds/identity", "sentinel/sign-in_adelete.first7rows.csv"),
        ("/api/v1/feeds/identity", "panther/entra_diagnostic_records.json"),
        ("/api/v1/feeds/mailbox", "defender/defender_streaming.json"),
    ] {
        let again = post(path, file).await;
        assert_eq!(
            (again["imported"].as_u64(), again["alerts_raised"].as_u64()),
            (Some(0), Some(0)),
            "{file}"
        );
    }
    let (_, again) = c
        .post_bytes_as("/api/v1/feeds/identity", &analyst, spray)
        .await
        .unwrap();
    assert_eq!(
        (again["imported"].as_u64(), again["duplicates"].as_u64()),
        (Some(0), Some(10))
    );
    assert_eq!(alerts(&c).await.len(), all.len());

    // Nothing readable: refused with the reason; the wrong feed's file is nothing readable too.
    let (status, body) = c
        .post_bytes_as("/api/v1/feeds/identity", &analyst, b"this is not an export".to_vec())
        .await
        .unwrap();
    assert_eq!(status, 400, "{body}");
    let (status, body) = c
        .post_bytes_as(
            "/api/v1/feeds/mailbox",
            &analyst,
            read("sentinel/sign-in_adelete.first7rows.csv"),
        )
        .await
        .unwrap();
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("nothing could be read"),
        "{body}"
    );

    let (_, audit) = c.get("/api/v1/audit?limit=100").await.unwrap();
    let imports: Vec<&Value> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "feed.import")
        .collect();
    assert_eq!(imports.len(), 10);
    assert!(imports.iter().all(|e| e["actor"] == "alice"));

    let m = c.metrics().await.unwrap();
    assert!(metric(&m, "ward_feed_records_imported_total") > 30);
    assert!(metric(&m, "ward_feed_records_duplicate_total") >= 10);
    assert_eq!(metric(&m, "ward_feed_imports_refused_total"), 2);
    assert_eq!(
        metric(&m, "ward_feed_alerts_raised_total") as usize,
        identity.len() + mailbox.len()
    );
}

#[tokio::test]
async fn bodies_over_the_import_limit_are_refused_as_json_and_counted() {
    let c = Collector::start_with(|cfg| {
        *cfg = cfg
            .replace("max_import_bytes = 67108864", "max_import_bytes = 100000")
            .replace("max_record_bytes = 1048576", "max_record_bytes = 100000");
    })
    .unwrap();
    let analyst = c.user("alice", "analyst").unwrap();
    let too_large = json!({"error": "request body is larger than the 100000 bytes this route accepts"});
    // Declared too large (Content-Length): refused before it is read.
    let (status, body) = c
        .post_bytes_as("/api/v1/feeds/identity", &analyst, vec![b' '; 100_001])
        .await
        .unwrap();
    assert_eq!((status, &body), (413, &too_large));
    // Chunked, no length: refused once it passes the limit.
    let (status, body) = c
        .raw_request(
            "POST",
            "/api/v1/feeds/mailbox",
            &analyst,
            Some((&vec![b' '; 150_000], 16_384)),
        )
        .await
        .unwrap();
    assert_eq!((status, &body), (413, &too_large));
    // The limit is not the other routes' 1 MiB: a file within it is imported.
    let (status, body) = c
        .post_bytes_as("/api/v1/feeds/mailbox", &analyst, read("defender/email_events.csv"))
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    let m = c.metrics().await.unwrap();
    assert_eq!(metric(&m, "ward_feed_imports_refused_total"), 2, "{m}");
}

#[tokio::test]
async fn the_cli_imports_into_the_data_dir() {
    let c = Collector::start().unwrap();
    let streaming = fixture("defender/defender_streaming.json");
    let out = c.cli(&["import", "mailbox", streaming.to_str().unwrap()]).unwrap();
    let report: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (report["imported"].as_u64(), report["skipped_count"].as_u64()),
        (Some(6), Some(1))
    );
    let csv = fixture("defender/email_events.csv");
    let report: Value = serde_json::from_str(&c.cli(&["import", "mailbox", csv.to_str().unwrap()]).unwrap()).unwrap();
    // The click on the phish's URL came first; with the message's verdict now, the click is judged too.
    assert_eq!(report["alerts_raised"], 2, "{report}");
    let again = c.cli(&["import", "mailbox", streaming.to_str().unwrap()]).unwrap();
    let again: Value = serde_json::from_str(&again).unwrap();
    assert_eq!(
        (again["imported"].as_u64(), again["duplicates"].as_u64()),
        (Some(0), Some(6))
    );
    let all = alerts(&c).await;
    assert!(all.iter().all(|a| a["source"] == "mailbox"));
    assert_eq!(count(&all, "ward-mailbox-malicious-delivered"), 2);
    assert_eq!(count(&all, "ward-mailbox-malicious-url-click"), 1);
    // A file with nothing readable exits non-zero.
    let err = c
        .cli(&["import", "identity", csv.to_str().unwrap()])
        .unwrap_err()
        .to_string();
    assert!(err.contains("nothing could be read"), "{err}");
    let (_, audit) = c.get("/api/v1/audit?limit=100").await.unwrap();
    assert!(
        audit["entries"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["action"] == "feed.import" && e["actor"] == "cli")
    );
}

/// The alerts about one message, as sorted sets of rule ids, techniques and entities.
fn message_view(alerts: &[Value], message_id: &str) -> [Vec<String>; 3] {
    let mut view: [Vec<String>; 3] = Default::default();
    for a in alerts
        .iter()
        .filter(|a| a["matched"]["network_message_id"] == message_id)
    {
        view[0].push(a["rule"]["id"].to_string());
        view[1].extend(a["rule"]["techniques"].as_array().unwrap().iter().map(Value::to_string));
        view[2].extend(a["entities"].as_array().unwrap().iter().map(Value::to_string));
    }
    for v in &mut view {
        v.sort();
        v.dedup();
    }
    view
}

#[tokio::test]
async fn a_message_reads_the_same_whichever_of_its_rows_came_first() {
    let phish = "8e5b1c2a-7d4f-4c1e-9a53-0b6f1e2d3c4a";
    let mut views = Vec::new();
    for order in [
        ["defender/email_events.csv", "defender/defender_streaming.json"],
        ["defender/defender_streaming.json", "defender/email_events.csv"],
    ] {
        let c = Collector::start().unwrap();
        let analyst = c.user("alice", "analyst").unwrap();
        for file in order {
            let (status, report) = c
                .post_bytes_as("/api/v1/feeds/mailbox", &analyst, read(file))
                .await
                .unwrap();
            assert_eq!(status, 200, "{file}: {report}");
        }
        let all = alerts(&c).await;
        // Every alert about the message, the follow-up too, is in one incident.
        let mut incidents = Vec::new();
        for a in all.iter().filter(|a| a["matched"]["network_message_id"] == phish) {
            incidents.push(c.incident_of(a["id"].as_str().unwrap()).await.0);
        }
        incidents.dedup();
        assert_eq!(incidents.len(), 1, "{order:?}: {incidents:?}");
        views.push(message_view(&all, phish));
    }
    assert_eq!(views[0], views[1]);
    let [rules, techniques, entities] = &views[0];
    assert_eq!(rules.len(), 3, "{rules:?}");
    assert!(techniques.contains(&json!("T1566.002").to_string()), "{techniques:?}");
    assert!(entities.contains(
        &json!({"kind": "url", "url": "https://login.evil-invoices.example/o365/signin?id=adelev"}).to_string()
    ));
    assert!(entities.contains(&json!({"kind": "domain", "name": "login.evil-invoices.example"}).to_string()));
}

/// Entra sign-in rows (JSON lines), each a failure or success of one of 300 users
/// from one of 50 addresses, padded to about `bytes`.
fn sign_ins_file(base_ms: u64, bytes: usize) -> Vec<u8> {
    let mut out = String::with_capacity(bytes + 4096);
    let mut i = 0u64;
    while out.len() < bytes {
        let t = base_ms + i * 1_000;
        out.push_str(
            &json!({"category": "SignInLogs", "time": rfc3339_ms(t), "resultType": if i.is_multiple_of(3) { "50126" } else { "0" },
                "properties": {"id": format!("bulk-{i}"), "userPrincipalName": format!("user{}@contoso.com", i % 300),
                    "createdDateTime": rfc3339_ms(t), "ipAddress": format!("198.51.100.{}", i % 50),
                    "appDisplayName": "Office 365", "clientAppUsed": "Browser",
                    "status": {"errorCode": if i.is_multiple_of(3) { 50126 } else { 0 }}, "userAgent": "x".repeat(400)}})
            .to_string(),
        );
        out.push('\n');
        i += 1;
    }
    out.into_bytes()
}

/// A file of the largest size the collector takes (here 8 MiB, to keep the test
/// short) is stored chunk by chunk, each chunk one turn of the writer: an agent's
/// alert batches sent meanwhile are acknowledged between chunks, not after the
/// whole file (a 60 MB CSV held every agent's acknowledgements for 50 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_maximum_size_import_does_not_hold_agents_alert_batches() {
    // WARD_IMPORT_TEST_MIB=64 runs it at the default limit (BENCHMARKS.md).
    let mib: usize = std::env::var("WARD_IMPORT_TEST_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(8);
    let max = mib << 20;
    let collector = Collector::start_with(|c| {
        *c = c.replace("max_import_bytes = 67108864", &format!("max_import_bytes = {max}"));
    })
    .unwrap();
    let token = collector.join_token(1, "1h").unwrap();
    let mut dev = ward_tests::TestDevice::enroll(&token, "busy-host").await.unwrap();
    dev.connect().await.unwrap();
    let file = sign_ins_file(now_ms() - 86_400_000, max - 4096);
    assert!(file.len() <= max);
    // The same batches before the import, to compare.
    let mut quiet = Vec::new();
    for _ in 0..20 {
        let sent = std::time::Instant::now();
        dev.send_new(10).await.unwrap();
        quiet.push(sent.elapsed());
    }
    quiet.sort();
    // An agent's batches, one every 10 ms, while the file is stored.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let batches = {
        let stop = std::sync::Arc::clone(&stop);
        tokio::spawn(async move {
            let mut acks = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let sent = std::time::Instant::now();
                dev.send_new(10).await.unwrap();
                acks.push(sent.elapsed());
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
            acks
        })
    };
    let started = std::time::Instant::now();
    let (status, report) = collector
        .post_bytes_as("/api/v1/feeds/identity", &collector.admin_token, file)
        .await
        .unwrap();
    let took = started.elapsed();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut acks = batches.await.unwrap();
    assert_eq!(status, 200, "{report}");
    assert!(report["imported"].as_u64().unwrap() > 10_000, "{report}");
    acks.sort();
    let p99 = acks[(acks.len() * 99 / 100).min(acks.len() - 1)];
    eprintln!(
        "acks before the import: p50 {:?}, max {:?}; import of {} records took {took:?}; {} batches meanwhile, ack p50 {:?}, p99 {p99:?}, max {:?}",
        quiet[10],
        quiet[19],
        report["imported"],
        acks.len(),
        acks[acks.len() / 2],
        acks[acks.len() - 1]
    );
    assert!(
        acks.len() >= 10,
        "the import ended before the agent could measure ({took:?})"
    );
    // Stored in one transaction, batches waited for the whole file (p99 ~ `took`).
    // Chunk by chunk a batch waits at most about one chunk (IMPORT_CHUNK_BUDGET) more
    // than on a quiet collector; the margin is for a debug build on a busy machine
    // (the release figure is in BENCHMARKS.md).
    let bound = (quiet[19] * 3).max(std::time::Duration::from_millis(300));
    assert!(p99 < bound, "ack p99 {p99:?} during the import (bound {bound:?})");
    assert!(p99 * 5 < took, "ack p99 {p99:?} against an import of {took:?}");
}

/// Directory and mailbox audit events through the real collector (issue 22 item 4):
/// Entra audit rows imported with the CLI, M365 mailbox operations POSTed to the
/// mailbox feed; the credential-then-mail-access, bulk access, risky consent and
/// privileged role alerts are in the alerts API, and the app's attack (the admin
/// who added its credential, the mailbox it read) is one incident.
#[tokio::test]
async fn directory_and_mailbox_audit_events_raise_alerts_and_one_incident() {
    let c = Collector::start().unwrap();
    let analyst = c.user("alice", "analyst").unwrap();
    let entra = fixture("ward/entra_auditlogs.json");
    let report: Value =
        serde_json::from_str(&c.cli(&["import", "identity", entra.to_str().unwrap()]).unwrap()).unwrap();
    assert_eq!(report["format"], "entra-auditlogs-json", "{report}");
    assert_eq!(
        (
            report["imported"].as_u64(),
            report["ignored"].as_u64(),
            report["alerts_raised"].as_u64()
        ),
        (Some(5), Some(1), Some(2)),
        "{report}"
    );
    let (status, report) = c
        .post_bytes_as(
            "/api/v1/feeds/mailbox",
            &analyst,
            read("ward/office_activity_mailbox.json"),
        )
        .await
        .unwrap();
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["format"], "m365-audit-mailbox-json", "{report}");
    // The credential's sequence and the bulk read.
    assert_eq!(report["alerts_raised"], 2, "{report}");
    let all = alerts(&c).await;
    for rule in [
        "ward-identity-app-credential-then-mail-access",
        "ward-mailbox-bulk-mail-access",
        "ward-identity-risky-consent",
        "ward-identity-privileged-role-added",
    ] {
        assert_eq!(count(&all, rule), 1, "{rule}");
    }
    let by_rule = |rule: &str| all.iter().find(|a| a["rule"]["id"] == rule).unwrap().clone();
    let seq = by_rule("ward-identity-app-credential-then-mail-access");
    assert_eq!(seq["source"], "identity");
    assert_eq!(seq["rule"]["techniques"], json!(["T1098.001", "T1114.002"]));
    let bulk = by_rule("ward-mailbox-bulk-mail-access");
    let (incident, _) = c.incident_of(seq["id"].as_str().unwrap()).await;
    let (bulk_incident, _) = c.incident_of(bulk["id"].as_str().unwrap()).await;
    assert_eq!(
        incident, bulk_incident,
        "the app's credential and its bulk read are one incident"
    );
    let (status, detail) = c.get(&format!("/api/v1/incidents/{incident}")).await.unwrap();
    assert_eq!(status, 200, "{detail}");
    let text = detail.to_string();
    for name in ["contoso mail sync", "ceo@contoso.com", "admin@contoso.com"] {
        assert!(text.contains(name), "{name} not in the incident: {text}");
    }
    // The entity pages list the stored events: what was given to mallory, the
    // operations on the CEO's mailbox.
    let (status, page) = c
        .get("/api/v1/entities/user?value=mallory%40contoso.com")
        .await
        .unwrap();
    assert_eq!(status, 200, "{page}");
    let kinds = |list: &Value| -> Vec<String> {
        let at = list["columns"]
            .as_array()
            .unwrap()
            .iter()
            .position(|c| c == "kind")
            .unwrap();
        list["rows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r[at].as_str().unwrap().to_string())
            .collect()
    };
    // Newest first: FullAccess to the CEO's mailbox, then Global Administrator.
    assert_eq!(
        kinds(&page["directory_about"]),
        ["mailbox_permission", "role_assigned"],
        "{page}"
    );
    let (_, page) = c.get("/api/v1/entities/mailbox?value=ceo%40contoso.com").await.unwrap();
    let mut on_mailbox = kinds(&page["directory"]);
    on_mailbox.sort();
    assert_eq!(
        on_mailbox,
        ["mail_access", "mail_delete", "mail_send", "mailbox_permission"],
        "{page}"
    );
    // Both again: nothing new.
    let again: Value = serde_json::from_str(&c.cli(&["import", "identity", entra.to_str().unwrap()]).unwrap()).unwrap();
    assert_eq!(
        (again["imported"].as_u64(), again["alerts_raised"].as_u64()),
        (Some(0), Some(0))
    );
    let (_, again) = c
        .post_bytes_as(
            "/api/v1/feeds/mailbox",
            &analyst,
            read("ward/office_activity_mailbox.json"),
        )
        .await
        .unwrap();
    assert_eq!(
        (again["duplicates"].as_u64(), again["alerts_raised"].as_u64()),
        (Some(5), Some(0))
    );
}
