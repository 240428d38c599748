//! Imports through the real store: public samples as they are, each detection
//! with a case that raises and one that does not, and re-imports.

use serde_json::{Value, json};

use super::*;
use crate::store::AlertFilter;

pub(super) fn store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("ward.db")).unwrap();
    (dir, store)
}

pub(super) fn fixture(path: &str) -> Vec<u8> {
    let full = format!("{}/../tests/fixtures/feeds/{path}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&full).unwrap_or_else(|e| panic!("fixture {full}: {e}"))
}

fn import_as(store: &mut Store, feed: Feed, bytes: &[u8], cfg: &FeedsConfig) -> ImportReport {
    import(store, feed, bytes, cfg, "test", 1).unwrap()
}

pub(super) fn run(store: &mut Store, feed: Feed, bytes: &[u8]) -> ImportReport {
    import_as(store, feed, bytes, &FeedsConfig::default())
}

pub(super) fn ndjson(records: &[Value]) -> Vec<u8> {
    records
        .iter()
        .map(|r| format!("{r}\n"))
        .collect::<String>()
        .into_bytes()
}

/// Alerts of a rule: (severity, entities, matched).
pub(super) fn alerts(store: &Store, rule: &str) -> Vec<crate::store::AlertView> {
    store
        .list_alerts(&AlertFilter {
            rule_id: Some(rule.into()),
            limit: 100,
            ..AlertFilter::default()
        })
        .unwrap()
}

const T0: u64 = 1_795_000_000_000;

/// An Entra diagnostic sign-in record.
fn entra(id: &str, user: &str, ip: &str, t_ms: u64, code: &str, coords: Option<(f64, f64)>) -> Value {
    let time = chrono::DateTime::from_timestamp_millis(t_ms as i64)
        .unwrap()
        .to_rfc3339();
    let mut location = json!({"city": "Somewhere", "countryOrRegion": "XX"});
    if let Some((lat, lon)) = coords {
        location["geoCoordinates"] = json!({"latitude": lat, "longitude": lon});
    }
    json!({"category": "SignInLogs", "resultType": code, "time": time,
        "properties": {"id": id, "userPrincipalName": user, "createdDateTime": time, "ipAddress": ip,
            "appDisplayName": "Office 365", "clientAppUsed": "Browser", "status": {"errorCode": code.parse::<i64>().unwrap()},
            "location": location}})
}

/// An Okta MFA push denial.
fn okta_deny(uuid: &str, user: &str, t_ms: u64) -> Value {
    let time = chrono::DateTime::from_timestamp_millis(t_ms as i64)
        .unwrap()
        .to_rfc3339();
    json!({"uuid": uuid, "published": time, "eventType": "user.mfa.okta_verify.deny_push",
        "actor": {"alternateId": user, "type": "User"}, "outcome": {"result": "FAILURE", "reason": "User rejected Okta push verify"},
        "client": {"ipAddress": "198.51.100.9"}})
}

#[test]
fn the_sentinel_csv_export_imports_with_its_json_cells() {
    let (_d, mut store) = store();
    let r = run(
        &mut store,
        Feed::Identity,
        &fixture("sentinel/sign-in_adelete.first7rows.csv"),
    );
    assert_eq!(r.format, "entra-signinlogs-csv");
    assert_eq!((r.records, r.imported, r.skipped_count), (7, 7, 0), "{r:?}");
    let parsed = parse_identity(
        &fixture("sentinel/sign-in_adelete.first7rows.csv"),
        &FeedsConfig::default(),
    )
    .unwrap();
    let s = &parsed.items[0];
    assert_eq!(s.key, "entra:cfb68155-70f5-4e28-b046-0a3a7086c401");
    assert_eq!(s.user, "adelev@m365x816222.onmicrosoft.com");
    assert_eq!(s.ip, Some("175.45.176.99".parse().unwrap()));
    assert_eq!(s.time_ms, 1_619_618_925_221);
    assert_eq!(s.app.as_deref(), Some("Azure Portal"));
    assert_eq!(s.outcome, SignInOutcome::Success);
    assert!(
        s.location.as_deref().is_some_and(|l| l.ends_with("IL")),
        "{:?}",
        s.location
    );
    assert!(
        s.coords
            .is_some_and(|(lat, lon)| (lat - 32.0).abs() < 1.0 && (lon - 34.8).abs() < 0.1)
    );
    assert!(
        s.device.as_deref().is_some_and(|d| d.contains("Windows 10")),
        "{:?}",
        s.device
    );
    assert_eq!(s.mfa.as_deref(), Some("singleFactorAuthentication"));
    // Same file again: nothing new.
    let again = run(
        &mut store,
        Feed::Identity,
        &fixture("sentinel/sign-in_adelete.first7rows.csv"),
    );
    assert_eq!((again.imported, again.duplicates, again.alerts_raised), (0, 7, 0));
}

#[test]
fn a_summary_query_over_signinlogs_is_recognised_and_ignored() {
    let (_d, mut store) = store();
    let r = run(&mut store, Feed::Identity, &fixture("sentinel/signinLogs.csv"));
    assert_eq!(
        (r.format.as_str(), r.records, r.imported, r.ignored, r.skipped_count),
        ("entra-signinlogs-summary-csv", 1, 0, 1, 0)
    );
}

#[test]
fn the_panther_entra_records_import_and_risky_sign_ins_alert() {
    let (_d, mut store) = store();
    let r = run(
        &mut store,
        Feed::Identity,
        &fixture("panther/entra_diagnostic_records.json"),
    );
    assert_eq!(r.format, "entra-auditlogs+entra-diagnostic-records");
    assert_eq!(r.records, 47);
    // 26 sign-ins and 8 audit records Ward reads (roles, a credential, policy
    // changes); the other audit operations are ignored; nothing is unreadable.
    assert_eq!((r.skipped_count, r.ignored), (0, 13), "{r:?}");
    assert_eq!(r.imported + r.duplicates, 34);
    let risky = alerts(&store, "ward-identity-risky-sign-in");
    let users: Vec<String> = risky
        .iter()
        .map(|a| a.matched["user"].as_str().unwrap().to_string())
        .collect();
    // "High Risk During Sign-In" alerts, "High Risk Dismissed" (cross@lotr.com) does not.
    assert!(users.contains(&"john@justice.org".to_string()), "{users:?}");
    assert!(!users.contains(&"cross@lotr.com".to_string()), "{users:?}");
    let john = risky.iter().find(|a| a.matched["user"] == "john@justice.org").unwrap();
    assert_eq!(
        (john.severity, john.source.as_str(), john.device_id.as_deref()),
        ("high", "identity", None)
    );
    assert_eq!(john.rule.techniques, json!(["T1078"]));
    assert_eq!(john.rule.author, "Ward");
    assert_eq!(john.matched["location"], "Moscow, Moscow, RU");
    assert!(
        john.entities
            .as_array()
            .unwrap()
            .contains(&json!({"kind": "ip", "addr": "4.4.4.4"}))
    );
    let again = run(
        &mut store,
        Feed::Identity,
        &fixture("panther/entra_diagnostic_records.json"),
    );
    assert_eq!((again.imported, again.alerts_raised), (0, 0));
    assert_eq!(alerts(&store, "ward-identity-risky-sign-in").len(), risky.len());
}

#[test]
fn the_panther_okta_events_import_and_bad_ones_are_reported_by_line() {
    let (_d, mut store) = store();
    let r = run(&mut store, Feed::Identity, &fixture("panther/okta_systemlog.ndjson"));
    assert_eq!(r.format, "okta-systemlog-ndjson");
    assert_eq!(r.records, 100);
    assert!(r.imported >= 3, "{r:?}");
    // Test events of Panther's own anomaly rules are not Okta events; "redacted" times are unreadable.
    assert!(
        r.skipped
            .iter()
            .any(|s| s.line == Some(3) && s.reason.contains("not an Entra ID sign-in"))
    );
    assert!(r.skipped.iter().any(|s| s.reason.contains("published")));
    // Okta events (uuid, actor or outcome with an eventType) that lack `published` are
    // named as Okta events; Panther's anomaly rows only borrow Okta's event types.
    let untimed: Vec<Option<u64>> = r
        .skipped
        .iter()
        .filter(|s| s.reason == "Okta event without a published time")
        .map(|s| s.line)
        .collect();
    assert_eq!(untimed, [Some(70), Some(71), Some(73), Some(95)]);
    assert!(
        r.skipped
            .iter()
            .filter(|s| (9..=16).contains(&s.line.unwrap()))
            .all(|s| s.reason.contains("not an Entra ID sign-in")),
        "{:?}",
        r.skipped
    );
    // 3 sign-ins and 5 directory events (admin grants, MFA factors removed); Panther's
    // cases reuse uuids and times, so the rest of them are duplicates.
    assert_eq!((r.imported, r.duplicates, r.ignored, r.skipped_count), (8, 15, 35, 42));
    assert_eq!(r.records, r.imported + r.duplicates + r.ignored + r.skipped_count);
}

#[test]
fn password_spray_needs_enough_users_from_one_ip() {
    let (_d, mut store) = store();
    let failures = |n: usize, ip: &str, prefix: &str| -> Vec<Value> {
        (0..n)
            .map(|i| {
                entra(
                    &format!("{prefix}{i}"),
                    &format!("user{i}@contoso.com"),
                    ip,
                    T0 + i as u64 * 60_000,
                    "50126",
                    None,
                )
            })
            .collect()
    };
    let r = run(&mut store, Feed::Identity, &ndjson(&failures(9, "203.0.113.50", "a")));
    assert_eq!((r.imported, r.alerts_raised), (9, 0));
    let r = run(&mut store, Feed::Identity, &ndjson(&failures(10, "203.0.113.51", "b")));
    assert_eq!(r.alerts_raised, 1);
    let spray = alerts(&store, "ward-identity-password-spray");
    assert_eq!(spray.len(), 1);
    let a = &spray[0];
    assert_eq!((a.count, a.rule.techniques.clone()), (10, json!(["T1110.003"])));
    assert_eq!(a.matched["ip"], "203.0.113.51");
    let ents = a.entities.as_array().unwrap();
    assert!(ents.contains(&json!({"kind": "ip", "addr": "203.0.113.51"})));
    assert!(ents.contains(&json!({"kind": "user", "name": "user9@contoso.com", "uid": null})));
    // The burst again, in another order: no new alert.
    let mut again = failures(10, "203.0.113.51", "b");
    again.reverse();
    assert_eq!(run(&mut store, Feed::Identity, &ndjson(&again)).alerts_raised, 0);
}

#[test]
fn brute_force_needs_the_failures_within_the_window() {
    let (_d, mut store) = store();
    let spread: Vec<Value> = (0..10)
        .map(|i| {
            entra(
                &format!("s{i}"),
                "meganb@contoso.com",
                "198.51.100.1",
                T0 + i * 15 * 60_000,
                "50126",
                None,
            )
        })
        .collect();
    assert_eq!(run(&mut store, Feed::Identity, &ndjson(&spread)).alerts_raised, 0);
    let burst: Vec<Value> = (0..10)
        .map(|i| {
            entra(
                &format!("b{i}"),
                "AlexW@contoso.com",
                "198.51.100.2",
                T0 + i * 30_000,
                "50126",
                None,
            )
        })
        .collect();
    assert_eq!(run(&mut store, Feed::Identity, &ndjson(&burst)).alerts_raised, 1);
    let a = &alerts(&store, "ward-identity-brute-force")[0];
    assert_eq!((a.count, a.severity), (10, "medium"));
    assert_eq!(a.matched["user"], "alexw@contoso.com");
    assert_eq!(a.rule.techniques, json!(["T1110.001"]));
    assert_eq!(a.rule.tactics, json!(["TA0006"]));
}

#[test]
fn impossible_travel_needs_distance_and_speed() {
    let (_d, mut store) = store();
    let london = Some((51.5074, -0.1278));
    let sydney = Some((-33.8688, 151.2093));
    let paris = Some((48.8566, 2.3522));
    let new_york = Some((40.7128, -74.0060));
    let h = 3_600_000;
    let records = [
        // London then Paris 10 minutes later: 343 km, under the minimum distance.
        entra("p1", "near@contoso.com", "192.0.2.1", T0, "0", london),
        entra("p2", "near@contoso.com", "192.0.2.2", T0 + 600_000, "0", paris),
        // London then New York 10 hours later: 557 km/h, a plane could.
        entra("n1", "slow@contoso.com", "192.0.2.1", T0, "0", london),
        entra("n2", "slow@contoso.com", "192.0.2.3", T0 + 10 * h, "0", new_york),
        // No coordinates: nothing to compare.
        entra("x1", "blind@contoso.com", "192.0.2.1", T0, "0", london),
        entra("x2", "blind@contoso.com", "192.0.2.4", T0 + 60_000, "0", None),
        // A failed sign-in does not count.
        entra("f1", "failed@contoso.com", "192.0.2.1", T0, "0", london),
        entra("f2", "failed@contoso.com", "192.0.2.5", T0 + h, "50126", sydney),
    ];
    assert_eq!(run(&mut store, Feed::Identity, &ndjson(&records)).alerts_raised, 0);
    // Sydney one hour after London (17,000 km); imported later, in reverse order.
    let trip = [
        entra("t2", "adelev@contoso.com", "192.0.2.9", T0 + h, "0", sydney),
        entra("t1", "adelev@contoso.com", "192.0.2.8", T0, "0", london),
    ];
    assert_eq!(run(&mut store, Feed::Identity, &ndjson(&trip)).alerts_raised, 1);
    let a = &alerts(&store, "ward-identity-impossible-travel")[0];
    let km: f64 = a.matched["distance_km"].as_str().unwrap().parse().unwrap();
    assert!((16_900.0..17_100.0).contains(&km), "{km}");
    let ents = a.entities.as_array().unwrap();
    assert!(ents.contains(&json!({"kind": "ip", "addr": "192.0.2.8"})));
    assert!(ents.contains(&json!({"kind": "ip", "addr": "192.0.2.9"})));
    assert_eq!(run(&mut store, Feed::Identity, &ndjson(&trip)).alerts_raised, 0);
}

#[test]
fn mfa_fatigue_needs_repeated_denials() {
    let (_d, mut store) = store();
    let two = [
        okta_deny("d1", "lee@contoso.com", T0),
        okta_deny("d2", "lee@contoso.com", T0 + 60_000),
    ];
    let r = run(&mut store, Feed::Identity, &ndjson(&two));
    assert_eq!(
        (r.format.as_str(), r.imported, r.alerts_raised),
        ("okta-systemlog-ndjson", 2, 0)
    );
    let third = [okta_deny("d3", "lee@contoso.com", T0 + 120_000)];
    assert_eq!(run(&mut store, Feed::Identity, &ndjson(&third)).alerts_raised, 1);
    let a = &alerts(&store, "ward-identity-mfa-fatigue")[0];
    assert_eq!((a.count, a.rule.techniques.clone()), (3, json!(["T1621"])));
    // Entra's denial code counts as well.
    let entra_denials: Vec<Value> = (0..3)
        .map(|i| {
            entra(
                &format!("m{i}"),
                "diego@contoso.com",
                "192.0.2.7",
                T0 + i * 60_000,
                "500121",
                None,
            )
        })
        .collect();
    assert_eq!(
        run(&mut store, Feed::Identity, &ndjson(&entra_denials)).alerts_raised,
        1
    );
}

#[test]
fn risk_levels_below_medium_or_handled_do_not_alert() {
    let (_d, mut store) = store();
    let with_risk = |id: &str, level: &str, state: &str| {
        let mut r = entra(id, "risk@contoso.com", "192.0.2.1", T0, "0", None);
        r["properties"]["riskLevelDuringSignIn"] = json!(level);
        r["properties"]["riskState"] = json!(state);
        r
    };
    let quiet = [
        with_risk("r1", "low", "atRisk"),
        with_risk("r2", "high", "remediated"),
        with_risk("r3", "none", "none"),
    ];
    assert_eq!(run(&mut store, Feed::Identity, &ndjson(&quiet)).alerts_raised, 0);
    assert_eq!(
        run(
            &mut store,
            Feed::Identity,
            &ndjson(&[with_risk("r4", "medium", "atRisk")])
        )
        .alerts_raised,
        1
    );
    assert_eq!(alerts(&store, "ward-identity-risky-sign-in")[0].severity, "medium");
}

#[test]
fn thresholds_come_from_the_config() {
    let (_d, mut store) = store();
    let cfg = FeedsConfig {
        brute_force_min_failures: 3,
        ..FeedsConfig::default()
    };
    let burst: Vec<Value> = (0..3)
        .map(|i| {
            entra(
                &format!("c{i}"),
                "x@contoso.com",
                "198.51.100.3",
                T0 + i * 1000,
                "50126",
                None,
            )
        })
        .collect();
    assert_eq!(
        import_as(&mut store, Feed::Identity, &ndjson(&burst), &cfg).alerts_raised,
        1
    );
}

#[test]
fn bad_lines_are_skipped_and_the_rest_imported() {
    let (_d, mut store) = store();
    let mut body = ndjson(&[entra("g1", "a@contoso.com", "192.0.2.1", T0, "0", None)]);
    body.extend_from_slice(b"{\"category\": \"SignInLogs\", \"properties\": \n");
    body.extend_from_slice(b"[1,2]\n");
    body.extend(ndjson(&[
        json!({"category": "SignInLogs", "properties": {"userPrincipalName": "b@contoso.com"}}),
    ]));
    body.extend(ndjson(&[entra("g2", "c@contoso.com", "192.0.2.1", T0, "0", None)]));
    let r = run(&mut store, Feed::Identity, &body);
    // The array on line 3 holds two records that are not objects.
    assert_eq!((r.records, r.imported, r.skipped_count), (6, 2, 4), "{r:?}");
    let lines: Vec<Option<u64>> = r.skipped.iter().map(|s| s.line).collect();
    assert_eq!(lines, [Some(2), Some(3), Some(3), Some(4)]);
    assert!(r.skipped[3].reason.contains("createdDateTime"), "{:?}", r.skipped[3]);
}

#[test]
fn bad_records_of_a_json_document_are_skipped_by_line_and_the_rest_imported() {
    let (_d, mut store) = store();
    let one = |id: &str| serde_json::to_string_pretty(&entra(id, "a@contoso.com", "192.0.2.1", T0, "0", None)).unwrap();
    let deep = format!("{{\"a\":{}1{}}}", "[".repeat(5000), "]".repeat(5000));
    let big = format!("{{\"a\":\"{}\"}}", "x".repeat(3 << 20));
    // The too-deep record comes first: before, it refused the whole file.
    let parts = [deep, one("j1"), big, "{\"a\": tru}".into(), one("j2")];
    let body = format!("{{\"records\": [\n{}\n]}}\n", parts.join(",\n"));
    let r = run(&mut store, Feed::Identity, body.as_bytes());
    assert_eq!((r.records, r.imported, r.skipped_count), (5, 2, 3), "{r:?}");
    let j1_lines = one("j1").lines().count() as u64;
    let lines: Vec<Option<u64>> = r.skipped.iter().map(|s| s.line).collect();
    assert_eq!(lines, [Some(2), Some(3 + j1_lines), Some(4 + j1_lines)]);
    assert!(r.skipped[1].reason.contains("limit"), "{:?}", r.skipped[1]);
    // A document broken after some records keeps them.
    let cut = format!("[{},\n{{\"a\": [1}}\n", one("j3"));
    let r = run(&mut store, Feed::Identity, cut.as_bytes());
    assert_eq!((r.records, r.imported, r.skipped_count), (2, 1, 1), "{r:?}");
    let j3_lines = one("j3").lines().count() as u64;
    assert_eq!(r.skipped[0].line, Some(1 + j3_lines));
    assert!(r.skipped[0].reason.contains("breaks off"), "{:?}", r.skipped[0]);
}

#[test]
fn many_bad_lines_are_all_counted_and_the_first_listed() {
    let (_d, mut store) = store();
    let mut body = ndjson(&[entra("ok1", "a@contoso.com", "192.0.2.1", T0, "0", None)]);
    for _ in 0..1000 {
        body.extend_from_slice(b"{broken\n");
    }
    body.extend(ndjson(&[entra("ok2", "b@contoso.com", "192.0.2.1", T0, "0", None)]));
    let r = run(&mut store, Feed::Identity, &body);
    assert_eq!((r.records, r.imported, r.skipped_count), (1002, 2, 1000));
    assert_eq!(r.skipped.len(), MAX_SKIPPED_LISTED);
    assert_eq!((r.skipped[0].line, r.skipped[99].line), (Some(2), Some(101)));
}

#[test]
fn files_with_nothing_readable_or_too_large_are_refused() {
    let (_d, mut store) = store();
    let cfg = FeedsConfig::default();
    for bad in [
        &b""[..],
        b"[not json",
        b"hello there\n",
        b"{\"foo\": 1}",
        b"\xff\xfe\x00",
    ] {
        let err = import(&mut store, Feed::Identity, bad, &cfg, "t", 1).unwrap_err();
        assert!(matches!(err, FeedError::Unreadable(_)), "{err}");
    }
    let small = FeedsConfig {
        max_import_bytes: 10,
        max_record_bytes: 10,
        ..FeedsConfig::default()
    };
    // An export of a quiet hour is not an error.
    let empty = import(&mut store, Feed::Mailbox, b"{\"records\": []}", &cfg, "t", 1).unwrap();
    assert_eq!((empty.format.as_str(), empty.records), ("empty-records", 0));
    let err = import(&mut store, Feed::Mailbox, &[b' '; 11], &small, "t", 1).unwrap_err();
    assert!(matches!(err, FeedError::TooLarge { size: 11, limit: 10 }));
    assert_eq!(store.count_alerts().unwrap(), 0);
}

#[test]
fn defender_mail_rows_and_streaming_records_raise_mailbox_alerts_once() {
    let (_d, mut store) = store();
    let csv = run(&mut store, Feed::Mailbox, &fixture("defender/email_events.csv"));
    assert_eq!(csv.format, "defender-emailevents-csv");
    assert_eq!(
        (csv.records, csv.imported, csv.skipped_count, csv.alerts_raised),
        (4, 3, 1, 1),
        "{csv:?}"
    );
    assert_eq!(csv.skipped[0].line, Some(5));
    assert!(csv.skipped[0].reason.contains("NetworkMessageId"), "{:?}", csv.skipped);
    let streamed = run(&mut store, Feed::Mailbox, &fixture("defender/defender_streaming.json"));
    assert_eq!(
        (
            streamed.records,
            streamed.imported,
            streamed.ignored,
            streamed.skipped_count
        ),
        (8, 6, 1, 1)
    );
    // The malware mail, the follow-up naming the phish's late URL row, the click, the report.
    assert_eq!(streamed.alerts_raised, 4, "{streamed:?}");

    let delivered = alerts(&store, "ward-mailbox-malicious-delivered");
    assert_eq!(delivered.len(), 3);
    // The phish (and its follow-up: the URL row came later) and the malware attachment, not the blocked one.
    let malware = delivered
        .iter()
        .find(|a| a.matched["threat_types"] == "Malware")
        .unwrap();
    assert_eq!((malware.severity, malware.source.as_str()), ("high", "mailbox"));
    assert_eq!(malware.rule.techniques, json!(["T1566.001"]));
    let ents = malware.entities.as_array().unwrap();
    assert!(ents.contains(&json!({"kind": "file", "path": "customs_form.docm",
        "sha256": "3f4a9c0d1e2b5a6978c0d1e2f3a4b5c6d7e8f9a0b1c2d3e4f5a6b7c8d9e0f1a2"})));
    assert!(ents.contains(&json!({"kind": "user", "name": "meganb@contoso.com", "uid": null})));
    assert!(ents.contains(&json!({"kind": "mailbox", "address": "meganb@contoso.com"})));
    assert!(ents.contains(&json!({"kind": "domain", "name": "shipping-notice.example"})));

    let click = &alerts(&store, "ward-mailbox-malicious-url-click")[0];
    assert_eq!(
        (click.severity, click.rule.techniques.clone()),
        ("high", json!(["T1204.001"]))
    );
    assert_eq!(click.matched["message_threat_types"], "Phish");
    let ents = click.entities.as_array().unwrap();
    assert!(ents.contains(&json!({"kind": "url", "url": "https://login.evil-invoices.example/o365/signin?id=adelev"})));
    assert!(ents.contains(&json!({"kind": "domain", "name": "login.evil-invoices.example"})));
    assert!(ents.contains(&json!({"kind": "ip", "addr": "175.45.176.99"})));

    let reported = &alerts(&store, "ward-mailbox-user-reported-phish")[0];
    assert_eq!(reported.matched["subject"], "Your invoice is overdue");

    let again = run(&mut store, Feed::Mailbox, &fixture("defender/defender_streaming.json"));
    assert_eq!((again.imported, again.duplicates, again.alerts_raised), (0, 6, 0));
    assert_eq!(store.count_alerts().unwrap(), 5);
}

/// What the alerts about one message say, whatever the order its rows came in:
/// rule ids, techniques and entities, each as a sorted set.
fn message_view(store: &Store, message_id: &str) -> (Vec<String>, Vec<String>, Vec<String>) {
    let all = store
        .list_alerts(&AlertFilter {
            limit: 100,
            ..AlertFilter::default()
        })
        .unwrap();
    let (mut rules, mut techniques, mut entities) = (Vec::new(), Vec::new(), Vec::new());
    for a in all.iter().filter(|a| a.matched["network_message_id"] == message_id) {
        rules.push(a.rule.id.clone());
        techniques.extend(a.rule.techniques.as_array().unwrap().iter().map(|t| t.to_string()));
        entities.extend(a.entities.as_array().unwrap().iter().map(|e| e.to_string()));
    }
    for v in [&mut rules, &mut techniques, &mut entities] {
        v.sort();
        v.dedup();
    }
    (rules, techniques, entities)
}

#[test]
fn a_message_alerted_before_its_parts_came_gets_a_follow_up_naming_them() {
    let phish = "8e5b1c2a-7d4f-4c1e-9a53-0b6f1e2d3c4a";
    let (_a, mut message_first) = store();
    run(&mut message_first, Feed::Mailbox, &fixture("defender/email_events.csv"));
    run(
        &mut message_first,
        Feed::Mailbox,
        &fixture("defender/defender_streaming.json"),
    );
    let (_b, mut parts_first) = store();
    run(
        &mut parts_first,
        Feed::Mailbox,
        &fixture("defender/defender_streaming.json"),
    );
    run(&mut parts_first, Feed::Mailbox, &fixture("defender/email_events.csv"));

    let view = message_view(&message_first, phish);
    assert_eq!(view, message_view(&parts_first, phish));
    assert_eq!(view.1, [r#""T1204.001""#, r#""T1566""#, r#""T1566.002""#], "{view:?}");
    for e in [
        json!({"kind": "url", "url": "https://login.evil-invoices.example/o365/signin?id=adelev"}),
        json!({"kind": "domain", "name": "login.evil-invoices.example"}),
        json!({"kind": "user", "name": "adelev@contoso.com", "uid": null}),
    ] {
        assert!(view.2.contains(&e.to_string()), "{e} not in {:?}", view.2);
    }

    // Message first: its alert (T1566, nothing to name yet), then the follow-up.
    let delivered: Vec<_> = alerts(&message_first, "ward-mailbox-malicious-delivered")
        .into_iter()
        .filter(|a| a.matched["network_message_id"] == phish)
        .collect();
    assert_eq!(delivered.len(), 2);
    let (first, follow_up) = if delivered[0].matched.get("follow_up_of").is_some() {
        (&delivered[1], &delivered[0])
    } else {
        (&delivered[0], &delivered[1])
    };
    assert_eq!(first.rule.techniques, json!(["T1566"]));
    assert_eq!(follow_up.rule.techniques, json!(["T1566.002"]));
    assert_eq!(follow_up.matched["follow_up_of"], first.id.as_str());
    assert_eq!(
        (follow_up.severity, follow_up.matched["subject"].as_str()),
        ("high", Some("Your invoice is overdue"))
    );
    let ents = follow_up.entities.as_array().unwrap();
    assert!(ents.contains(&json!({"kind": "mailbox", "address": "adelev@contoso.com"})));
    assert!(ents.contains(&json!({"kind": "domain", "name": "evil-invoices.example"})));
    // Parts first: one alert that names the URL.
    let one: Vec<_> = alerts(&parts_first, "ward-mailbox-malicious-delivered")
        .into_iter()
        .filter(|a| a.matched["network_message_id"] == phish)
        .collect();
    assert_eq!(one.len(), 1);
    assert_eq!(one[0].rule.techniques, json!(["T1566.002"]));

    // Nothing is raised twice, in either store.
    for store in [&mut message_first, &mut parts_first] {
        for f in ["defender/email_events.csv", "defender/defender_streaming.json"] {
            assert_eq!(run(store, Feed::Mailbox, &fixture(f)).alerts_raised, 0, "{f}");
        }
    }
}

const SHA: &str = "9b0c1d2e3f405162738495a6b7c8d9e0f1a2b3c4d5e6f708192a3b4c5d6e7f80";

/// A Defender EmailEvents row.
fn email_row(id: &str, to: &str, verdict: &str, action: &str) -> Value {
    json!({"Type": "EmailEvents", "Timestamp": "2026-11-21T08:00:00Z", "NetworkMessageId": id,
        "SenderFromAddress": "hr@payroll-update.example", "RecipientEmailAddress": to, "Subject": "Payslip",
        "SenderIPv4": "192.0.2.77", "ThreatTypes": verdict, "DeliveryAction": action,
        "DeliveryLocation": if action == "Delivered" { "Inbox/folder" } else { "Quarantine" }})
}

/// A Defender EmailAttachmentInfo row.
fn attachment_row(id: &str, to: &str, verdict: &str) -> Value {
    json!({"Type": "EmailAttachmentInfo", "Timestamp": "2026-11-21T08:00:00Z", "NetworkMessageId": id,
        "SenderFromAddress": "hr@payroll-update.example", "RecipientEmailAddress": to, "FileName": "payslip.xlsm",
        "SHA256": SHA, "ThreatTypes": verdict})
}

fn mail(store: &mut Store, rows: &[Value]) -> ImportReport {
    run(store, Feed::Mailbox, &ndjson(rows))
}

#[test]
fn a_late_attachment_of_an_alerted_message_is_a_follow_up_with_its_hash() {
    let (_d, mut store) = store();
    assert_eq!(
        mail(
            &mut store,
            &[email_row("m1", "diego@contoso.com", "Phish", "Delivered")]
        )
        .alerts_raised,
        1
    );
    // A copy for someone else is not the alerted one: nothing to follow up.
    assert_eq!(
        mail(&mut store, &[attachment_row("m1", "lynne@contoso.com", "")]).alerts_raised,
        0
    );
    let r = mail(&mut store, &[attachment_row("m1", "diego@contoso.com", "")]);
    assert_eq!(r.alerts_raised, 1);
    let follow_up = alerts(&store, "ward-mailbox-malicious-delivered")
        .into_iter()
        .find(|a| a.matched.get("follow_up_of").is_some())
        .unwrap();
    assert_eq!(follow_up.rule.techniques, json!(["T1566.001"]));
    let ents = follow_up.entities.as_array().unwrap();
    assert!(ents.contains(&json!({"kind": "file", "path": "payslip.xlsm", "sha256": SHA})));
    assert!(ents.contains(&json!({"kind": "user", "name": "diego@contoso.com", "uid": null})));
    assert!(!ents.contains(&json!({"kind": "user", "name": "lynne@contoso.com", "uid": null})));
    assert_eq!(
        mail(&mut store, &[attachment_row("m1", "diego@contoso.com", "")]).alerts_raised,
        0
    );
}

#[test]
fn a_malicious_part_on_a_clean_or_unseen_message_alerts_once() {
    let (_d, mut store) = store();
    let delivered = |store: &Store| alerts(store, "ward-mailbox-malicious-delivered");

    // Clean verdict, delivered, the attachment is malware: alert, high.
    let r = mail(
        &mut store,
        &[
            email_row("c1", "diego@contoso.com", "", "Delivered"),
            attachment_row("c1", "diego@contoso.com", "Malware"),
        ],
    );
    assert_eq!(r.alerts_raised, 1);
    let a = delivered(&store).pop().unwrap();
    assert_eq!((a.severity, a.rule.techniques.clone()), ("high", json!(["T1566.001"])));
    assert_eq!(
        (a.matched["threat_types"].as_str(), a.matched["delivery"].as_str()),
        (Some("Malware"), Some("delivered"))
    );
    let ents = a.entities.as_array().unwrap();
    assert!(ents.contains(&json!({"kind": "file", "path": "payslip.xlsm", "sha256": SHA})));
    assert!(ents.contains(&json!({"kind": "mailbox", "address": "diego@contoso.com"})));
    assert!(ents.contains(&json!({"kind": "ip", "addr": "192.0.2.77"})));

    // No email row yet: alert as delivery unknown (medium); the clean delivered row later adds nothing.
    assert_eq!(
        mail(&mut store, &[attachment_row("u1", "lee@contoso.com", "Malware")]).alerts_raised,
        1
    );
    let unknown = delivered(&store)
        .into_iter()
        .find(|a| a.matched["network_message_id"] == "u1")
        .unwrap();
    assert_eq!(unknown.severity, "medium");
    assert!(unknown.matched["delivery"].as_str().unwrap().starts_with("unknown"));
    assert!(
        unknown
            .entities
            .as_array()
            .unwrap()
            .contains(&json!({"kind": "user", "name": "lee@contoso.com", "uid": null}))
    );
    assert_eq!(
        mail(&mut store, &[email_row("u1", "lee@contoso.com", "", "Delivered")]).alerts_raised,
        0
    );

    // Message and part both malicious: one alert, the message's, in one import or in two.
    let r = mail(
        &mut store,
        &[
            email_row("b1", "alex@contoso.com", "Phish, Malware", "Delivered"),
            attachment_row("b1", "alex@contoso.com", "Malware"),
        ],
    );
    assert_eq!(r.alerts_raised, 1);
    mail(
        &mut store,
        &[email_row("b2", "alex@contoso.com", "Malware", "Delivered")],
    );
    assert_eq!(
        mail(&mut store, &[attachment_row("b2", "alex@contoso.com", "Malware")]).alerts_raised,
        1,
        "a follow-up, not a follow-up and a part alert"
    );

    // Blocked, or the part clean: nothing.
    let r = mail(
        &mut store,
        &[
            email_row("q1", "megan@contoso.com", "", "Blocked"),
            attachment_row("q1", "megan@contoso.com", "Malware"),
            email_row("n1", "megan@contoso.com", "", "Delivered"),
            attachment_row("n1", "megan@contoso.com", ""),
        ],
    );
    assert_eq!(r.alerts_raised, 0);

    // A URL judged malicious itself (Proofpoint names URL threats; a Defender export may carry it too).
    let url = json!({"Type": "EmailUrlInfo", "Timestamp": "2026-11-21T08:00:00Z", "NetworkMessageId": "c1",
        "Url": "https://payroll-update.example/view", "UrlLocation": "Body", "ThreatTypes": "Phish"});
    assert_eq!(mail(&mut store, std::slice::from_ref(&url)).alerts_raised, 1);
    let link = delivered(&store)
        .into_iter()
        .find(|a| a.rule.techniques == json!(["T1566.002"]))
        .unwrap();
    assert!(
        link.entities
            .as_array()
            .unwrap()
            .contains(&json!({"kind": "domain", "name": "payroll-update.example"}))
    );
    assert_eq!(link.matched["recipient"], "diego@contoso.com");

    let total = store.count_alerts().unwrap();
    assert_eq!(mail(&mut store, &[url]).alerts_raised, 0);
    assert_eq!(store.count_alerts().unwrap(), total);
}

#[test]
fn a_benign_click_or_blocked_mail_raises_nothing() {
    let (_d, mut store) = store();
    let rows = [
        json!({"Type": "EmailEvents", "Timestamp": "2026-11-20T10:00:00Z", "NetworkMessageId": "m1",
            "RecipientEmailAddress": "a@contoso.com", "SenderFromAddress": "x@evil.example", "ThreatTypes": "Phish",
            "DeliveryAction": "Junked", "DeliveryLocation": "Junk folder"}),
        json!({"Type": "UrlClickEvents", "Timestamp": "2026-11-20T10:05:00Z", "NetworkMessageId": "m2",
            "AccountUpn": "a@contoso.com", "Url": "https://contoso.com/", "ActionType": "ClickAllowed"}),
    ];
    let r = run(&mut store, Feed::Mailbox, &serde_json::to_vec(&rows).unwrap());
    assert_eq!(
        (r.format.as_str(), r.imported, r.alerts_raised),
        ("defender-emailevents+defender-urlclickevents-json", 2, 0)
    );
}

#[test]
fn the_panther_proofpoint_events_import_and_delivered_threats_alert() {
    let (_d, mut store) = store();
    let r = run(&mut store, Feed::Mailbox, &fixture("panther/proofpoint_tap.ndjson"));
    assert_eq!(r.format, "proofpoint-message-ndjson");
    // 35 messages: one row per recipient, plus the URL threats they list.
    assert_eq!((r.records, r.skipped_count, r.imported), (35, 0, 52), "{r:?}");
    let mut subjects: Vec<String> = alerts(&store, "ward-mailbox-malicious-delivered")
        .iter()
        .map(|a| {
            format!(
                "{} {}",
                a.matched["threat_types"].as_str().unwrap(),
                a.matched["subject"].as_str().unwrap()
            )
        })
        .collect();
    subjects.sort();
    // Delivered and judged malicious; the quarantined ones (Panther alerts on those too)
    // were blocked, and the low scores and cleared threats are no verdict.
    assert_eq!(
        subjects,
        [
            "Impostor Password Reset Required",
            "Impostor Update Your Benefits",
            "Impostor Urgent Wire Transfer Request",
            "Malware Suspicious Attachment",
            "Phish Action Required: Confirm Your Payment",
            "Phish Password Reset Required",
        ]
    );
    assert_eq!(r.alerts_raised, 6);
    let again = run(&mut store, Feed::Mailbox, &fixture("panther/proofpoint_tap.ndjson"));
    assert_eq!((again.imported, again.duplicates, again.alerts_raised), (0, 52, 0));
}

#[test]
fn a_proofpoint_batch_links_a_permitted_click_to_its_delivered_message() {
    let (_d, mut store) = store();
    let message = json!({"messageTime": "2026-11-20T09:00:00Z", "GUID": "pp-1", "messageID": "<a@evil.example>",
        "fromAddress": ["billing@evil.example"], "recipient": ["adele@contoso.com"], "subject": "Invoice",
        "senderIP": "192.0.2.9", "phishScore": 10, "malwareScore": 0, "impostorScore": 0,
        "messageParts": [{"disposition": "attached", "filename": "invoice.docm", "sha256": "cd".repeat(32)}],
        "threatsInfoMap": [{"threatType": "url", "classification": "phish", "threatStatus": "active",
            "threat": "https://login.evil.example/"}]});
    let click = json!({"clickTime": "2026-11-20T09:05:00Z", "GUID": "pp-1", "url": "https://login.evil.example/",
        "recipient": "adele@contoso.com", "clickIP": "198.51.100.7", "classification": "phish", "threatStatus": "active"});
    let batch = json!({"queryEndTime": "2026-11-20T10:00:00Z", "messagesDelivered": [message],
        "messagesBlocked": [], "clicksPermitted": [click], "clicksBlocked": []});
    let r = run(&mut store, Feed::Mailbox, &serde_json::to_vec(&batch).unwrap());
    assert_eq!(
        (r.format.as_str(), r.records, r.imported),
        ("proofpoint-siem-json", 1, 4),
        "{r:?}"
    );
    let delivered = &alerts(&store, "ward-mailbox-malicious-delivered")[0];
    assert_eq!(delivered.rule.techniques, json!(["T1566.001"]));
    let ents = delivered.entities.as_array().unwrap();
    assert!(ents.contains(&json!({"kind": "file", "path": "invoice.docm", "sha256": "cd".repeat(32)})));
    assert!(ents.contains(&json!({"kind": "url", "url": "https://login.evil.example/"})));
    let clicked = &alerts(&store, "ward-mailbox-malicious-url-click")[0];
    assert_eq!(
        (clicked.severity, clicked.matched["subject"].as_str()),
        ("high", Some("Invoice"))
    );
}

#[test]
fn exchange_audit_samples_import_and_hiding_or_forwarding_rules_alert() {
    let (_d, mut store) = store();
    let sentinel = run(
        &mut store,
        Feed::Mailbox,
        &fixture("sentinel/office_activity_inbox_rule.csv"),
    );
    assert_eq!(
        (sentinel.format.as_str(), sentinel.imported, sentinel.alerts_raised),
        ("m365-audit-inbox-rule-csv", 2, 2)
    );
    let hiding = alerts(&store, "ward-mailbox-hiding-inbox-rule");
    let mut what: Vec<&str> = hiding
        .iter()
        .map(|a| a.matched["what_it_does"].as_str().unwrap())
        .collect();
    what.sort();
    assert_eq!(what, ["deletes it", "moves it to Junk Email"]);
    let a = &hiding[0];
    assert_eq!(
        (a.severity, a.rule.techniques.clone()),
        ("medium", json!(["T1564.008"]))
    );
    let ents = a.entities.as_array().unwrap();
    assert!(ents.contains(&json!({"kind": "user", "name": "adelev@contoso.onmicrosoft.com", "uid": null})));
    assert!(ents.contains(&json!({"kind": "ip", "addr": "2a01:110:8068:7:9bf8:aa87:e00a:5f1f"})));

    // Panther's M365 events all share one Id: the first (forwarding to another
    // organisation) is stored, the other Exchange ones are duplicates; logins and
    // sharing are audit records of no mailbox meaning; records without a workload are
    // not audit records Ward knows.
    let panther = run(&mut store, Feed::Mailbox, &fixture("panther/m365_audit.ndjson"));
    assert_eq!(
        (
            panther.records,
            panther.imported,
            panther.duplicates,
            panther.ignored,
            panther.skipped_count
        ),
        (25, 4, 6, 8, 7),
        "{panther:?}"
    );
    let forwarding = alerts(&store, "ward-mailbox-external-forwarding");
    assert_eq!(forwarding.len(), 1);
    let f = &forwarding[0];
    assert_eq!((f.severity, f.rule.tactics.clone()), ("high", json!(["TA0009"])));
    assert_eq!(f.matched["forwards_outside"], "peter.griffin@familyguy.com");
    assert!(
        f.entities
            .as_array()
            .unwrap()
            .contains(&json!({"kind": "domain", "name": "familyguy.com"}))
    );
    let again = run(
        &mut store,
        Feed::Mailbox,
        &fixture("sentinel/office_activity_inbox_rule.csv"),
    );
    assert_eq!((again.duplicates, again.alerts_raised), (2, 0));
}

#[test]
fn every_import_is_audited() {
    let (_d, mut store) = store();
    run(&mut store, Feed::Mailbox, &fixture("defender/email_events.csv"));
    let audit = store.list_audit(None, 10).unwrap();
    let entry = audit.iter().find(|e| e.action == "feed.import").unwrap();
    assert_eq!((entry.actor.as_str(), entry.target.as_str()), ("test", "mailbox"));
    assert!(entry.detail.contains("3 imported"), "{}", entry.detail);
}

mod never_panics {
    use proptest::prelude::*;

    use super::*;

    fn samples() -> Vec<Vec<u8>> {
        [
            "sentinel/sign-in_adelete.first7rows.csv",
            "panther/okta_systemlog.ndjson",
            "panther/entra_diagnostic_records.json",
            "defender/email_events.csv",
            "defender/defender_streaming.json",
            "panther/proofpoint_tap.ndjson",
            "panther/m365_audit.ndjson",
            "sentinel/office_activity_inbox_rule.csv",
            "sentinel/signinLogs.csv",
        ]
        .iter()
        .map(|f| fixture(f))
        .collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

        /// Random bytes, and real files cut short or with a byte changed, are read
        /// or refused with a reason; the readable part is imported.
        #[test]
        fn malformed_files_are_refused_or_partly_read(
            raw in proptest::collection::vec(any::<u8>(), 0..512),
            which in 0usize..5,
            cut in any::<prop::sample::Index>(),
            flip in any::<prop::sample::Index>(),
            byte in any::<u8>(),
        ) {
            let cfg = FeedsConfig { max_record_bytes: 4096, ..FeedsConfig::default() };
            let _ = parse_identity(&raw, &cfg);
            let _ = parse_mailbox(&raw, &cfg);
            let mut file = samples().swap_remove(which);
            file.truncate(cut.index(file.len() + 1));
            if !file.is_empty() {
                let at = flip.index(file.len());
                file[at] = byte;
            }
            for feed in [Feed::Identity, Feed::Mailbox] {
                if let Ok(p) = parse(feed, &file, &cfg) {
                    let r = match &p {
                        ParsedFeed::Identity(p) => &p.report,
                        ParsedFeed::Mailbox(p) => &p.report,
                        ParsedFeed::Endpoint(p) => &p.report,
                    };
                    prop_assert!(r.skipped.len() <= MAX_SKIPPED_LISTED);
                    prop_assert!(r.skipped_count + r.ignored <= r.records);
                }
            }
        }
    }
}

/// A SigninLogs export whose query projected columns (no `Type`) is still a sign-in.
#[test]
fn signinlogs_rows_without_a_type_column_are_recognised() {
    let (_dir, mut store) = store();
    let row = json!({"TimeGenerated": "2026-11-20T09:00:00Z", "Id": "row-1", "UserPrincipalName": "bob@contoso.com",
        "IPAddress": "203.0.113.9", "ResultType": "0", "RiskLevelDuringSignIn": "high", "RiskState": "atRisk",
        "LocationDetails": {"city": "Lima", "countryOrRegion": "PE"}});
    let report = run(&mut store, Feed::Identity, &ndjson(&[row]));
    assert_eq!((report.imported, report.skipped_count), (1, 0), "{report:?}");
    assert_eq!(alerts(&store, "ward-identity-risky-sign-in").len(), 1);
}

/// Every alert of a store as (rule, entities): what an import raised, whatever its ids.
fn raised(store: &Store) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = store
        .list_alerts(&AlertFilter {
            limit: 10_000,
            ..AlertFilter::default()
        })
        .unwrap()
        .into_iter()
        .map(|a| (a.rule.id.clone(), format!("{:?}", a.entities)))
        .collect();
    out.sort();
    out
}

/// Stores a file one chunk of `max` records at a time, as the API does.
fn import_in_chunks(store: &mut Store, feed: Feed, bytes: &[u8], max: usize) -> (ImportReport, usize) {
    let cfg = FeedsConfig::default();
    let mut import = Import::new(parse(feed, bytes, &cfg).unwrap(), "test");
    for steps in 1.. {
        if let Some(report) = import.step(store, &cfg, max, 1).unwrap() {
            return (report, steps);
        }
    }
    unreachable!()
}

#[test]
fn a_file_stored_in_small_chunks_raises_what_it_raises_whole() {
    for (feed, file) in [
        (Feed::Mailbox, "defender/email_events.csv"),
        (Feed::Mailbox, "defender/defender_streaming.json"),
        (Feed::Mailbox, "panther/proofpoint_tap.ndjson"),
        (Feed::Mailbox, "panther/m365_audit.ndjson"),
        (Feed::Mailbox, "sentinel/office_activity_inbox_rule.csv"),
        (Feed::Identity, "panther/entra_diagnostic_records.json"),
        (Feed::Identity, "sentinel/signinLogs.csv"),
        (Feed::Identity, "panther/okta_systemlog.ndjson"),
    ] {
        let bytes = fixture(file);
        let (_w, mut whole) = store();
        let expected = run(&mut whole, feed, &bytes);
        let (_c, mut chunked) = store();
        let (report, steps) = import_in_chunks(&mut chunked, feed, &bytes, 1);
        assert!(steps > 1 || expected.records <= 1, "{file}: {steps} chunks");
        assert_eq!(
            (report.imported, report.duplicates, report.alerts_raised),
            (expected.imported, expected.duplicates, expected.alerts_raised),
            "{file}"
        );
        assert_eq!(raised(&chunked), raised(&whole), "{file}");
        // One audit entry per import, from its last chunk.
        let audits = chunked.list_audit(None, 100).unwrap();
        assert_eq!(audits.iter().filter(|e| e.action == "feed.import").count(), 1, "{file}");
    }
}

#[test]
fn a_spray_split_over_chunks_raises_once() {
    let records: Vec<Value> = (0..40)
        .map(|i| {
            entra(
                &format!("c{i}"),
                &format!("user{i}@contoso.com"),
                "203.0.113.9",
                T0 + i as u64 * 10_000,
                "50126",
                None,
            )
        })
        .collect();
    let (_d, mut store) = store();
    let (report, steps) = import_in_chunks(&mut store, Feed::Identity, &ndjson(&records), 7);
    assert_eq!((report.imported, steps), (40, 6));
    assert_eq!(alerts(&store, "ward-identity-password-spray").len(), 1);
}

/// Issue 22 item 6: a click row with an empty `AccountUpn` is kept and takes its
/// account from the message's recipient, whether the message came in the same file
/// (after the click) or only later.
#[test]
fn a_click_without_its_account_is_kept_and_named_by_its_message() {
    let (_d, mut store) = store();
    let email = |id: &str| {
        json!({"Type": "EmailEvents", "Timestamp": "2026-11-20T10:00:00Z", "NetworkMessageId": id,
            "RecipientEmailAddress": "Dana@Contoso.com", "SenderFromAddress": "x@evil.example", "ThreatTypes": "Phish",
            "DeliveryAction": "Delivered", "DeliveryLocation": "Inbox"})
    };
    let click = |id: &str| {
        json!({"Type": "UrlClickEvents", "Timestamp": "2026-11-20T10:05:00Z", "NetworkMessageId": id,
            "AccountUpn": "", "Url": "https://evil.example/login", "ActionType": "ClickAllowed"})
    };
    // The click first in the file, its message after it.
    let r = mail(&mut store, &[click("m1"), email("m1")]);
    assert_eq!((r.imported, r.skipped_count), (2, 0), "{r:?}");
    // The click alone; its message in a later import.
    assert_eq!(mail(&mut store, &[click("m2")]).imported, 1);
    assert_eq!(mail(&mut store, &[email("m2")]).imported, 1);
    let clicks = alerts(&store, "ward-mailbox-malicious-url-click");
    assert_eq!(clicks.len(), 2, "{clicks:?}");
    for a in &clicks {
        assert_eq!(a.matched["account"], "dana@contoso.com", "{:?}", a.matched);
        assert!(
            a.entities
                .as_array()
                .unwrap()
                .contains(&json!({"kind": "mailbox", "address": "dana@contoso.com"})),
            "{}",
            a.entities
        );
    }
    // The same click again is a duplicate, not a second click.
    let again = mail(&mut store, &[click("m1")]);
    assert_eq!((again.imported, again.duplicates), (0, 1));
}

/// docs/feeds.md's example imports as the page says.
#[test]
fn the_feeds_page_example_imports_as_documented() {
    let page = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/feeds.md")).unwrap();
    let start = page.find("cat > mail.ndjson <<'EOF'\n").unwrap() + "cat > mail.ndjson <<'EOF'\n".len();
    let body = &page[start..start + page[start..].find("\nEOF").unwrap()];
    let (_d, mut store) = store();
    let r = run(&mut store, Feed::Mailbox, body.as_bytes());
    assert_eq!(
        (r.format.as_str(), r.imported, r.alerts_raised),
        ("defender-emailevents+defender-urlclickevents-ndjson", 2, 2),
        "{r:?}"
    );
    let again = run(&mut store, Feed::Mailbox, body.as_bytes());
    assert_eq!((again.duplicates, again.alerts_raised), (2, 0));
}

/// Issue 22 item 4: Defender for Identity logons (`IdentityLogonEvents`) go in as
/// sign-ins, so a spray against the domain controllers is the same alert as one
/// against Entra ID.
#[test]
fn a_password_spray_on_domain_controllers_is_seen_in_identity_logon_events() {
    let (_d, mut store) = store();
    let rows: Vec<Value> = (0..10)
        .map(|i| {
            json!({"Timestamp": format!("2026-11-20T08:{i:02}:00Z"), "ActionType": "LogonFailed",
                "Application": "Active Directory", "LogonType": "Resource access", "Protocol": "Ntlm",
                "FailureReason": "WrongPassword", "AccountName": format!("user{i}"), "AccountDomain": "CONTOSO",
                "AccountUpn": format!("user{i}@contoso.com"), "DeviceName": "kiosk-3", "IPAddress": "10.0.9.9",
                "DestinationDeviceName": "dc1.contoso.local", "ReportId": format!("{}", 100 + i)})
        })
        .collect();
    let r = run(&mut store, Feed::Identity, &ndjson(&rows));
    assert_eq!(
        (r.format.as_str(), r.imported, r.skipped_count, r.alerts_raised),
        ("defender-identitylogonevents-ndjson", 10, 0, 1),
        "{r:?}"
    );
    let spray = alerts(&store, "ward-identity-password-spray");
    assert_eq!(spray.len(), 1);
    assert_eq!(spray[0].matched["ip"], "10.0.9.9");
    assert_eq!(run(&mut store, Feed::Identity, &ndjson(&rows)).duplicates, 10);
}
