//! Directory and audit events through the real store: each shape read from a
//! sample (public where one exists: Panther's Entra and Okta test events; else
//! built from the documented columns, tests/fixtures/feeds/ward), and each
//! detection raising on its attack sequence and staying quiet on the benign one,
//! whichever order the records are imported in.

use serde_json::{Value, json};

use super::tests::{alerts, fixture, ndjson, run, store};
use super::*;

fn audits(feed: Feed, bytes: &[u8]) -> (String, Vec<AuditEvent>) {
    let cfg = FeedsConfig::default();
    match parse(feed, bytes, &cfg).unwrap() {
        ParsedFeed::Identity(p) => (p.report.format, p.audits),
        ParsedFeed::Mailbox(p) => (p.report.format, p.audits),
        ParsedFeed::Endpoint(p) => (p.report.format, p.audits),
    }
}

fn has_entity(a: &crate::store::AlertView, e: Value) -> bool {
    a.entities.as_array().unwrap().contains(&e)
}

const APP: &str = "3f5c2a1e-8d4b-4c6a-9e7f-1a2b3c4d5e6f";

#[test]
fn entra_audit_rows_are_read_by_operation() {
    let (format, events) = audits(Feed::Identity, &fixture("ward/entra_auditlogs.json"));
    assert_eq!(format, "entra-auditlogs-json");
    let kinds: Vec<(&str, AuditKind)> = events.iter().map(|e| (e.operation.as_str(), e.kind)).collect();
    assert_eq!(
        kinds,
        [
            ("Add member to role", AuditKind::RoleAssigned),
            (
                "Update application – Certificates and secrets management",
                AuditKind::AppCredential
            ),
            ("Consent to application", AuditKind::Consent),
            ("Add member to role", AuditKind::RoleAssigned),
            ("Consent to application", AuditKind::Consent),
        ],
        "Update user is not read"
    );
    let role = &events[0];
    assert_eq!(
        (
            role.actor.as_deref(),
            role.target_user.as_deref(),
            role.detail.as_deref(),
            role.key.as_str()
        ),
        (
            Some("admin@contoso.com"),
            Some("mallory@contoso.com"),
            Some("Global Administrator"),
            "entra-audit:directory_0001abcd"
        )
    );
    assert_eq!(role.ip, Some("203.0.113.50".parse().unwrap()));
    let cred = &events[1];
    assert_eq!(
        (cred.app_id.as_deref(), cred.app_name.as_deref()),
        (Some(APP), Some("Contoso Mail Sync"))
    );
    assert!(cred.detail.as_deref().unwrap().contains("KeyType=Password"), "{cred:?}");
    let consent = &events[2];
    assert_eq!(consent.app_name.as_deref(), Some("Invoice Viewer"));
    assert_eq!(consent.app_id.as_deref(), Some("9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d"));
    assert_eq!(consent.publisher_verified, Some(false));
    assert!(
        consent.detail.as_deref().unwrap().contains("Mail.Read Mail.Send"),
        "{consent:?}"
    );
    // The same rows in the mailbox feed: either feed takes directory events.
    assert_eq!(audits(Feed::Mailbox, &fixture("ward/entra_auditlogs.json")).1.len(), 5);
}

#[test]
fn the_panther_entra_and_okta_samples_give_their_directory_events() {
    let (_, entra) = audits(Feed::Identity, &fixture("panther/entra_diagnostic_records.json"));
    let cred = entra.iter().find(|e| e.kind == AuditKind::AppCredential).unwrap();
    // The service principal credential of Panther's "Add Service Principal Credentials" case.
    assert_eq!(
        (cred.actor.as_deref(), cred.app_name.as_deref(), cred.app_id.as_deref()),
        (
            Some("frodo@lotr.com"),
            Some("Production API Service"),
            Some("sp-app-456")
        )
    );
    assert_eq!(cred.ip, Some("2.2.2.2".parse().unwrap()));
    // PIM's "requested" step is not a grant; "completed" and the plain add are.
    let roles: Vec<&str> = entra
        .iter()
        .filter(|e| e.kind == AuditKind::RoleAssigned)
        .map(|e| e.operation.as_str())
        .collect();
    assert_eq!(
        roles,
        ["Add member to role in PIM completed (permanent)", "Add member to role"]
    );
    let (_, okta) = audits(Feed::Identity, &fixture("panther/okta_systemlog.ndjson"));
    let grant = okta
        .iter()
        .find(|e| e.operation == "user.account.privilege.grant")
        .unwrap();
    assert_eq!(
        (
            grant.actor.as_deref(),
            grant.target_user.as_deref(),
            grant.detail.as_deref()
        ),
        (
            Some("jack@acme.io"),
            Some("alice@acme.io"),
            Some("Organization administrator, Application administrator (all)")
        )
    );
    let reset = okta
        .iter()
        .find(|e| e.operation == "user.mfa.factor.reset_all")
        .unwrap();
    assert_eq!(
        (reset.kind, reset.target_user.as_deref()),
        (AuditKind::MfaFactorRemoved, Some("peter.griffin@company.com"))
    );
    // Panther reuses one uuid and time for a suspend and a reset: two events.
    let suspend = okta.iter().find(|e| e.operation == "user.mfa.factor.suspend").unwrap();
    assert_ne!(suspend.key, reset.key);
}

#[test]
fn panther_privilege_grants_alert_as_privileged_roles() {
    let (_d, mut store) = store();
    run(&mut store, Feed::Identity, &fixture("panther/okta_systemlog.ndjson"));
    run(
        &mut store,
        Feed::Identity,
        &fixture("panther/entra_diagnostic_records.json"),
    );
    let roles = alerts(&store, "ward-identity-privileged-role-added");
    let okta = roles.iter().find(|a| a.matched["member"] == "alice@acme.io").unwrap();
    assert_eq!(okta.rule.techniques, json!(["T1098.003"]));
    assert_eq!(okta.rule.tactics, json!(["TA0003"]));
    assert!(has_entity(
        okta,
        json!({"kind": "user", "name": "alice@acme.io", "uid": null})
    ));
    assert!(has_entity(
        okta,
        json!({"kind": "user", "name": "jack@acme.io", "uid": null})
    ));
    // Entra's Application Administrator (PIM and direct) is an admin role.
    assert!(roles.iter().any(|a| a.matched["role"] == "Application Administrator"));
}

#[test]
fn mailbox_operations_are_read_from_office_activity_and_the_management_api() {
    let (format, events) = audits(Feed::Mailbox, &fixture("ward/office_activity_mailbox.json"));
    assert_eq!(format, "m365-audit-mailbox-json");
    let kinds: Vec<AuditKind> = events.iter().map(|e| e.kind).collect();
    assert_eq!(
        kinds,
        [
            AuditKind::MailAccess,
            AuditKind::MailSend,
            AuditKind::MailDelete,
            AuditKind::MailboxPermission,
            AuditKind::MailAccess
        ]
    );
    let access = &events[0];
    assert_eq!(
        (
            access.actor.as_deref(),
            access.mailbox.as_deref(),
            access.app_id.as_deref(),
            access.items
        ),
        (Some("contoso mail sync"), Some("ceo@contoso.com"), Some(APP), 1200)
    );
    assert_eq!(access.detail.as_deref(), Some("Bind: \\Inbox"));
    assert_eq!(
        events[1].detail.as_deref(),
        Some("as ceo@contoso.com: Urgent wire transfer")
    );
    let perm = &events[3];
    assert_eq!(
        (
            perm.mailbox.as_deref(),
            perm.target_user.as_deref(),
            perm.detail.as_deref()
        ),
        (Some("ceo@contoso.com"), Some("mallory@contoso.com"), Some("FullAccess"))
    );
    let (format, api) = audits(Feed::Mailbox, &fixture("ward/m365_management_api.ndjson"));
    assert_eq!(format, "m365-audit-mailbox-ndjson");
    assert_eq!(
        (api[0].kind, api[0].items, api[0].ip, api[0].key.as_str()),
        (
            AuditKind::MailAccess,
            2,
            Some("203.0.113.77".parse().unwrap()),
            "m365:7f1d2c3b-0000-4000-8000-00000000a001:ceo@contoso.com"
        )
    );
    assert_eq!(
        (api[1].kind, api[1].detail.as_deref()),
        (AuditKind::MailDelete, Some("\\Inbox"))
    );
    // Inbox rules still go to the inbox-rule reader.
    let rules = parse_mailbox(
        &fixture("sentinel/office_activity_inbox_rule.csv"),
        &FeedsConfig::default(),
    )
    .unwrap();
    assert_eq!((rules.items.len(), rules.audits.len()), (2, 0));
}

#[test]
fn defender_cloud_app_and_directory_rows_are_read() {
    let (format, cloud) = audits(Feed::Mailbox, &fixture("ward/cloud_app_events.json"));
    assert_eq!(format, "defender-cloudappevents-json");
    assert_eq!(
        (
            cloud[0].kind,
            cloud[0].actor.as_deref(),
            cloud[0].mailbox.as_deref(),
            cloud[0].app_id.as_deref(),
            cloud[0].items
        ),
        (
            AuditKind::MailAccess,
            Some("contoso mail sync"),
            Some("cfo@contoso.com"),
            Some(APP),
            300
        )
    );
    assert_eq!(
        (cloud[1].kind, cloud[1].actor.as_deref()),
        (AuditKind::Other, Some("frank@contoso.com"))
    );
    let (format, dir) = audits(Feed::Identity, &fixture("ward/identity_directory_events.csv"));
    assert_eq!(format, "defender-identitydirectoryevents-csv");
    assert_eq!(
        (dir[0].kind, dir[0].target_user.as_deref(), dir[0].detail.as_deref()),
        (
            AuditKind::RoleAssigned,
            Some("svc-backup@contoso.com"),
            Some("added to Domain Admins")
        )
    );
    assert_eq!(dir[1].kind, AuditKind::Other);
    // An IdentityLogonEvents row (shares many columns) is still a sign-in.
    let logon = json!({"Timestamp": "2026-11-20T08:00:00Z", "ActionType": "LogonFailed", "Application": "Active Directory",
        "LogonType": "Resource access", "Protocol": "Kerberos", "AccountUpn": "dana@contoso.com", "IPAddress": "10.0.4.17",
        "DestinationDeviceName": "dc1.contoso.local", "AdditionalFields": "{}", "ReportId": "1"});
    let p = parse_identity(&ndjson(&[logon]), &FeedsConfig::default()).unwrap();
    assert_eq!((p.items.len(), p.audits.len()), (1, 0));
}

#[test]
fn risky_users_alert_unless_dismissed() {
    let (_d, mut store) = store();
    let r = run(&mut store, Feed::Identity, &fixture("ward/risky_users.ndjson"));
    assert_eq!(r.format, "entra-riskyusers-ndjson");
    assert_eq!((r.imported, r.skipped_count), (3, 0), "{r:?}");
    let risky = alerts(&store, "ward-identity-risky-user");
    let mut levels: Vec<(&str, &str)> = risky
        .iter()
        .map(|a| (a.matched["user"].as_str().unwrap(), a.severity))
        .collect();
    levels.sort();
    // Dana high (AADRiskyUsers) and medium (a UserRiskEvents record); Erin dismissed.
    assert_eq!(levels, [("dana@contoso.com", "high"), ("dana@contoso.com", "medium")]);
}

#[test]
fn a_new_app_credential_then_mail_access_by_it_alerts_in_either_order() {
    for credential_first in [true, false] {
        let (_d, mut store) = store();
        let (first, second) = if credential_first {
            (
                (Feed::Identity, "ward/entra_auditlogs.json"),
                (Feed::Mailbox, "ward/office_activity_mailbox.json"),
            )
        } else {
            (
                (Feed::Mailbox, "ward/office_activity_mailbox.json"),
                (Feed::Identity, "ward/entra_auditlogs.json"),
            )
        };
        run(&mut store, first.0, &fixture(first.1));
        run(&mut store, second.0, &fixture(second.1));
        let seq = alerts(&store, "ward-identity-app-credential-then-mail-access");
        assert_eq!(seq.len(), 1, "credential first: {credential_first}");
        let a = &seq[0];
        assert_eq!(a.severity, "high");
        assert_eq!(a.rule.techniques, json!(["T1098.001", "T1114.002"]));
        assert_eq!(a.rule.tactics, json!(["TA0003", "TA0009"]));
        assert_eq!(a.matched["app_id"], APP);
        assert_eq!(a.matched["mailboxes"], "ceo@contoso.com");
        for e in [
            json!({"kind": "user", "name": "contoso mail sync", "uid": null}),
            json!({"kind": "user", "name": "admin@contoso.com", "uid": null}),
            json!({"kind": "mailbox", "address": "ceo@contoso.com"}),
            json!({"kind": "user", "name": "ceo@contoso.com", "uid": null}),
            json!({"kind": "ip", "addr": "203.0.113.50"}),
        ] {
            assert!(has_entity(a, e.clone()), "{e} missing from {}", a.entities);
        }
        // Importing both again raises nothing.
        assert_eq!(run(&mut store, first.0, &fixture(first.1)).alerts_raised, 0);
        assert_eq!(run(&mut store, second.0, &fixture(second.1)).alerts_raised, 0);
    }
}

/// A MailItemsAccessed record of the Management Activity API.
fn access(id: &str, actor: &str, mailbox: &str, app: &str, at: &str, count: u64) -> Value {
    json!({"CreationTime": at, "Id": id, "Operation": "MailItemsAccessed", "RecordType": 50, "ResultStatus": "Succeeded",
        "Workload": "Exchange", "UserId": actor, "MailboxOwnerUPN": mailbox, "AppId": app, "ClientAppId": "",
        "ClientIPAddress": "203.0.113.9", "OperationCount": count})
}

#[test]
fn mail_access_by_another_app_or_long_after_the_credential_does_not_alert() {
    let (_d, mut store) = store();
    run(&mut store, Feed::Identity, &fixture("ward/entra_auditlogs.json"));
    // The credential was added at 09:05 on 2026-11-20; a day and more later is out
    // of the window, and another app is another app.
    run(
        &mut store,
        Feed::Mailbox,
        &ndjson(&[
            access("x1", "sync", "ceo@contoso.com", APP, "2026-11-21T09:06:00", 5),
            access(
                "x2",
                "other",
                "ceo@contoso.com",
                "0b0b0b0b-0000-4000-8000-000000000000",
                "2026-11-20T09:30:00",
                5,
            ),
        ]),
    );
    assert!(alerts(&store, "ward-identity-app-credential-then-mail-access").is_empty());
    // Within the window, by the app: raised.
    run(
        &mut store,
        Feed::Mailbox,
        &ndjson(&[access("x3", "sync", "ceo@contoso.com", APP, "2026-11-21T09:04:00", 5)]),
    );
    assert_eq!(alerts(&store, "ward-identity-app-credential-then-mail-access").len(), 1);
}

#[test]
fn bulk_mailbox_access_over_the_threshold_alerts_once_per_window() {
    let (_d, mut store) = store();
    // Alice syncing her own mailbox (20 items), and the app reading others': 1,200
    // items (OfficeActivity) and 300 more (CloudAppEvents) within the hour.
    run(&mut store, Feed::Mailbox, &fixture("ward/office_activity_mailbox.json"));
    run(&mut store, Feed::Mailbox, &fixture("ward/cloud_app_events.json"));
    let bulk = alerts(&store, "ward-mailbox-bulk-mail-access");
    assert_eq!(bulk.len(), 1, "{bulk:?}");
    let a = &bulk[0];
    assert_eq!(
        (a.severity, a.matched["actor"].as_str(), a.source.as_str()),
        ("high", Some("contoso mail sync"), "mailbox")
    );
    assert_eq!(a.matched["items_accessed"], "1200");
    assert_eq!(a.rule.techniques, json!(["T1114.002"]));
    assert!(has_entity(a, json!({"kind": "mailbox", "address": "ceo@contoso.com"})));
    // Under the threshold: none for alice.
    assert!(bulk.iter().all(|a| a.matched["actor"] != "alice@contoso.com"));
    // A lower threshold from the config counts alice's 20.
    let (_d2, mut store) = self::store();
    let cfg = FeedsConfig {
        bulk_mail_access_min_items: 20,
        ..FeedsConfig::default()
    };
    import(
        &mut store,
        Feed::Mailbox,
        &fixture("ward/office_activity_mailbox.json"),
        &cfg,
        "test",
        1,
    )
    .unwrap();
    let alice: Vec<_> = alerts(&store, "ward-mailbox-bulk-mail-access")
        .into_iter()
        .filter(|a| a.matched["actor"] == "alice@contoso.com")
        .collect();
    assert_eq!(alice.len(), 1);
    assert_eq!(alice[0].severity, "medium", "her own mailbox");
}

#[test]
fn consent_to_an_unverified_app_for_mail_alerts_and_a_sign_in_consent_does_not() {
    let (_d, mut store) = store();
    run(&mut store, Feed::Identity, &fixture("ward/entra_auditlogs.json"));
    let consent = alerts(&store, "ward-identity-risky-consent");
    assert_eq!(consent.len(), 1, "{consent:?}");
    let a = &consent[0];
    assert_eq!(
        (
            a.severity,
            a.matched["app_name"].as_str(),
            a.matched["publisher"].as_str()
        ),
        ("high", Some("Invoice Viewer"), Some("unverified"))
    );
    assert_eq!(a.matched["risky_permissions"], "mail.read mail.send");
    assert_eq!(a.rule.techniques, json!(["T1528"]));
    assert!(has_entity(
        a,
        json!({"kind": "user", "name": "dana@contoso.com", "uid": null})
    ));
    assert!(has_entity(
        a,
        json!({"kind": "user", "name": "invoice viewer", "uid": null})
    ));
    // A verified publisher granted Mail.Read by an admin app role assignment: medium.
    let grant = json!({"Type": "AuditLogs", "Id": "Directory_9", "TimeGenerated": "2026-11-20T12:00:00Z",
        "OperationName": "Add app role assignment to service principal", "Result": "success",
        "InitiatedBy": {"user": {"userPrincipalName": "admin@contoso.com"}},
        "TargetResources": [{"type": "ServicePrincipal", "displayName": "Microsoft Graph", "id": "g1",
            "modifiedProperties": [{"displayName": "AppRole.Value", "newValue": "\"Mail.ReadWrite\""},
                {"displayName": "ServicePrincipal.AppId", "newValue": "\"0c0c0c0c-0000-4000-8000-000000000000\""},
                {"displayName": "ServicePrincipal.DisplayName", "newValue": "\"Backup Tool\""}]}]});
    run(&mut store, Feed::Identity, &ndjson(&[grant]));
    let tool = alerts(&store, "ward-identity-risky-consent")
        .into_iter()
        .find(|a| a.matched["app_name"] == "Backup Tool")
        .unwrap();
    assert_eq!(
        (tool.severity, tool.matched["app_id"].as_str()),
        ("medium", Some("0c0c0c0c-0000-4000-8000-000000000000"))
    );
}

#[test]
fn privileged_roles_alert_and_reader_roles_do_not() {
    let (_d, mut store) = store();
    run(&mut store, Feed::Identity, &fixture("ward/entra_auditlogs.json"));
    run(
        &mut store,
        Feed::Identity,
        &fixture("ward/identity_directory_events.csv"),
    );
    let roles = alerts(&store, "ward-identity-privileged-role-added");
    let mut named: Vec<(&str, &str, &str)> = roles
        .iter()
        .map(|a| {
            (
                a.matched["member"].as_str().unwrap(),
                a.matched["role"].as_str().unwrap(),
                a.severity,
            )
        })
        .collect();
    named.sort();
    assert_eq!(
        named,
        [
            ("mallory@contoso.com", "Global Administrator", "high"),
            ("svc-backup@contoso.com", "added to Domain Admins", "high"),
        ],
        "Directory Readers is not an admin role"
    );
}

fn okta_event(uuid: &str, event_type: &str, actor: &str, target: &str, at: &str) -> Value {
    json!({"uuid": uuid, "published": at, "eventType": event_type, "actor": {"alternateId": actor, "type": "User"},
        "outcome": {"result": "SUCCESS"}, "client": {"ipAddress": "198.51.100.7"},
        "target": [{"type": "User", "alternateId": target}]})
}

#[test]
fn mfa_removed_then_sign_in_alerts_in_either_order_and_removal_alone_does_not() {
    let removal = okta_event(
        "r1",
        "user.mfa.factor.deactivate",
        "helpdesk@contoso.com",
        "bob@contoso.com",
        "2026-11-20T10:00:00Z",
    );
    let quiet = okta_event(
        "r2",
        "user.mfa.factor.deactivate",
        "helpdesk@contoso.com",
        "carol@contoso.com",
        "2026-11-20T10:00:00Z",
    );
    let sign_in = okta_event(
        "s1",
        "user.session.start",
        "bob@contoso.com",
        "bob@contoso.com",
        "2026-11-20T10:20:00Z",
    );
    // Carol signed in before her factor was removed: not a sequence.
    let before = okta_event(
        "s2",
        "user.session.start",
        "carol@contoso.com",
        "carol@contoso.com",
        "2026-11-20T09:00:00Z",
    );
    for (name, files) in [
        (
            "one file",
            vec![vec![removal.clone(), quiet.clone(), sign_in.clone(), before.clone()]],
        ),
        (
            "removal first",
            vec![
                vec![removal.clone(), quiet.clone()],
                vec![sign_in.clone(), before.clone()],
            ],
        ),
        (
            "sign-in first",
            vec![
                vec![sign_in.clone(), before.clone()],
                vec![removal.clone(), quiet.clone()],
            ],
        ),
    ] {
        let (_d, mut store) = store();
        for f in files {
            run(&mut store, Feed::Identity, &ndjson(&f));
        }
        let seq = alerts(&store, "ward-identity-mfa-removed-then-sign-in");
        assert_eq!(seq.len(), 1, "{name}: {seq:?}");
        let a = &seq[0];
        assert_eq!(
            (a.matched["user"].as_str(), a.severity),
            (Some("bob@contoso.com"), "high"),
            "{name}"
        );
        assert_eq!(a.rule.techniques, json!(["T1556.006"]));
        assert!(has_entity(
            a,
            json!({"kind": "user", "name": "bob@contoso.com", "uid": null})
        ));
        assert!(has_entity(a, json!({"kind": "ip", "addr": "198.51.100.7"})));
    }
}

#[test]
fn failed_audit_records_raise_nothing() {
    let (_d, mut store) = store();
    let mut bytes: Vec<Value> = serde_json::from_slice(&fixture("ward/entra_auditlogs.json")).unwrap();
    for row in &mut bytes {
        row["Result"] = json!("failure");
    }
    let r = run(&mut store, Feed::Identity, &ndjson(&bytes));
    assert_eq!((r.imported, r.alerts_raised), (5, 0), "{r:?}");
}

#[test]
fn broken_audit_records_are_skipped_with_their_reason() {
    let (_d, mut store) = store();
    let r = run(
        &mut store,
        Feed::Mailbox,
        &ndjson(&[
            json!({"Type": "AuditLogs", "OperationName": "Add member to role", "TargetResources": "[]"}),
            json!({"Type": "OfficeActivity", "Operation": "MailItemsAccessed", "TimeGenerated": "soon"}),
            json!({"Type": "AuditLogs", "OperationName": "Update user", "TimeGenerated": "2026-11-20T12:00:00Z"}),
        ]),
    );
    let reasons: Vec<&str> = r.skipped.iter().map(|s| s.reason.as_str()).collect();
    assert_eq!(
        reasons,
        [
            "no readable activityDateTime / TimeGenerated",
            "no readable CreationTime or TimeGenerated"
        ]
    );
    assert_eq!(r.ignored, 1, "Update user is known and not read");
}

#[test]
fn the_feeds_page_directory_example_imports_as_documented() {
    let page = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/feeds.md")).unwrap();
    let open = "cat > okta.ndjson <<'EOF'\n";
    let start = page.find(open).unwrap() + open.len();
    let body = &page[start..start + page[start..].find("\nEOF").unwrap()];
    let (_d, mut store) = store();
    let r = run(&mut store, Feed::Identity, body.as_bytes());
    assert_eq!(
        (r.format.as_str(), r.imported, r.alerts_raised),
        ("okta-systemlog-ndjson", 2, 1),
        "{r:?}"
    );
    let a = &alerts(&store, "ward-identity-mfa-removed-then-sign-in")[0];
    assert_eq!(a.matched["user"], "bob@contoso.com");
    assert!(has_entity(a, json!({"kind": "ip", "addr": "203.0.113.9"})));
}

/// A CSV cell, quoted.
fn cell(v: &Value) -> String {
    let text = match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    };
    format!("\"{}\"", text.replace('"', "\"\""))
}

#[test]
fn entra_audit_rows_read_the_same_from_a_csv_export() {
    let rows: Vec<Value> = serde_json::from_slice(&fixture("ward/entra_auditlogs.json")).unwrap();
    let header: Vec<String> = rows[0].as_object().unwrap().keys().cloned().collect();
    let mut csv = header.join(",") + "\n";
    for r in &rows {
        csv += &header.iter().map(|h| cell(&r[h])).collect::<Vec<_>>().join(",");
        csv += "\n";
    }
    let (format, from_csv) = audits(Feed::Identity, csv.as_bytes());
    assert_eq!(format, "entra-auditlogs-csv");
    let (_, from_json) = audits(Feed::Identity, &fixture("ward/entra_auditlogs.json"));
    let strip = |v: Vec<AuditEvent>| -> Vec<AuditEvent> {
        v.into_iter()
            .map(|mut e| {
                e.raw.clear();
                e
            })
            .collect()
    };
    assert_eq!(strip(from_csv), strip(from_json));
}

#[test]
fn streaming_records_and_graph_objects_are_read_by_shape() {
    // Defender's streaming API wraps a row in `properties` under its table's category.
    let rows: Vec<Value> = serde_json::from_slice(&fixture("ward/cloud_app_events.json")).unwrap();
    let mut row = rows[0].clone();
    row.as_object_mut().unwrap().remove("Type");
    let streamed = json!({"time": "2026-11-20T09:35:01Z", "tenantId": "t", "operationName": "Publish",
        "category": "AdvancedHunting-CloudAppEvents", "properties": row});
    let (format, events) = audits(Feed::Mailbox, &ndjson(&[streamed]));
    assert_eq!(format, "defender-cloudappevents-json");
    assert_eq!(
        (events[0].kind, events[0].items, events[0].mailbox.as_deref()),
        (AuditKind::MailAccess, 300, Some("cfo@contoso.com"))
    );
    // A Graph directoryAudits object (no table, no category).
    let graph = json!({"id": "Directory_G1", "category": "RoleManagement", "activityDateTime": "2026-11-20T13:00:00Z",
        "activityDisplayName": "Add member to role", "loggedByService": "Core Directory", "result": "success",
        "initiatedBy": {"user": {"userPrincipalName": "admin@contoso.com", "ipAddress": "203.0.113.50"}},
        "targetResources": [{"type": "Role", "displayName": "Exchange Administrator"},
            {"type": "User", "userPrincipalName": "Zoe@Contoso.com"}]});
    let (format, events) = audits(Feed::Identity, &ndjson(&[graph]));
    assert_eq!(format, "entra-auditlogs-json");
    assert_eq!(
        (events[0].target_user.as_deref(), events[0].detail.as_deref()),
        (Some("zoe@contoso.com"), Some("Exchange Administrator"))
    );
    // A Graph riskyUsers object.
    let risky = json!({"id": "u1", "isDeleted": false, "isProcessing": false, "riskLastUpdatedDateTime": "2026-11-20T14:00:00Z",
        "riskLevel": "high", "riskState": "confirmedCompromised", "riskDetail": "adminConfirmedUserCompromised",
        "userDisplayName": "Zoe", "userPrincipalName": "zoe@contoso.com"});
    let (format, events) = audits(Feed::Identity, &ndjson(&[risky]));
    assert_eq!(format, "entra-riskyusers-json");
    assert_eq!(
        (events[0].risk_level.as_deref(), events[0].target_user.as_deref()),
        (Some("high"), Some("zoe@contoso.com"))
    );
}

#[test]
fn entra_events_of_the_m365_audit_log_are_read_like_the_entra_audit_log() {
    // Management Activity API records of the AzureActiveDirectory workload, as
    // Microsoft documents their schema (Actor/Target with ID types, ModifiedProperties).
    let credential = json!({"CreationTime": "2026-11-20T09:05:00", "Id": "aad-1", "Operation": "Add service principal credentials.",
        "OrganizationId": "o", "RecordType": 8, "ResultStatus": "Success", "UserKey": "k", "UserType": 0, "Version": 1,
        "Workload": "AzureActiveDirectory", "ObjectId": "sp-1", "UserId": "admin@contoso.com",
        "ActorIpAddress": "203.0.113.50", "AzureActiveDirectoryEventType": 1,
        "Actor": [{"ID": "admin@contoso.com", "Type": 5}, {"ID": "11111111-0000-0000-0000-00000000aaaa", "Type": 2}],
        "Target": [{"ID": "ServicePrincipal_7d1b9f3e-0000-4000-8000-0000000000a1", "Type": 2}, {"ID": "Contoso Mail Sync", "Type": 1}],
        "ModifiedProperties": [{"Name": "KeyDescription", "NewValue": "[KeyType=Password, DisplayName=backup]", "OldValue": ""}],
        "ExtendedProperties": [{"Name": "additionalDetails", "Value": format!("{{\"AppId\":\"{APP}\"}}")}]});
    let role = json!({"CreationTime": "2026-11-20T09:00:00", "Id": "aad-2", "Operation": "Add member to role.", "RecordType": 8,
        "ResultStatus": "Success", "Workload": "AzureActiveDirectory", "UserId": "admin@contoso.com",
        "Actor": [{"ID": "admin@contoso.com", "Type": 5}],
        "Target": [{"ID": "User_22222222", "Type": 2}, {"ID": "mallory@contoso.com", "Type": 5}],
        "ModifiedProperties": [{"Name": "Role.DisplayName", "NewValue": "Global Administrator", "OldValue": ""}]});
    let (format, events) = audits(Feed::Identity, &ndjson(&[credential, role]));
    assert_eq!(format, "m365-audit-directory-ndjson");
    assert_eq!(
        (
            events[0].kind,
            events[0].app_id.as_deref(),
            events[0].app_name.as_deref(),
            events[0].actor.as_deref()
        ),
        (
            AuditKind::AppCredential,
            Some(APP),
            Some("Contoso Mail Sync"),
            Some("admin@contoso.com")
        )
    );
    assert_eq!(
        (
            events[1].kind,
            events[1].target_user.as_deref(),
            events[1].detail.as_deref()
        ),
        (
            AuditKind::RoleAssigned,
            Some("mallory@contoso.com"),
            Some("Global Administrator")
        )
    );
    // The credential joins the mailbox access of the same app like the Entra row does.
    let (_d, mut store) = store();
    run(&mut store, Feed::Identity, &ndjson(&[events_source_credential()]));
    run(&mut store, Feed::Mailbox, &fixture("ward/office_activity_mailbox.json"));
    assert_eq!(alerts(&store, "ward-identity-app-credential-then-mail-access").len(), 1);
    // Panther's AzureActiveDirectory records (sign-ins, "Update user.") are not read.
    let (_, panther) = audits(Feed::Mailbox, &fixture("panther/m365_audit.ndjson"));
    assert!(panther.is_empty(), "{panther:?}");
}

fn events_source_credential() -> Value {
    json!({"CreationTime": "2026-11-20T09:05:00", "Id": "aad-1", "Operation": "Add service principal credentials.",
        "RecordType": 8, "ResultStatus": "Success", "Workload": "AzureActiveDirectory", "UserId": "admin@contoso.com",
        "Target": [{"ID": "Contoso Mail Sync", "Type": 1}],
        "ExtendedProperties": [{"Name": "additionalDetails", "Value": format!("{{\"AppId\":\"{APP}\"}}")}]})
}
