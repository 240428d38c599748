//! The `ward` command line against a running collector: devices, the action
//! workflow end to end with a real enrolled protocol client, roles, the config
//! file, and incidents.

use std::process::Command;
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use serde_json::Value;
use ward_protocol::{CommandOutcome, Entity};
use ward_tests::*;

fn json(out: &str) -> Value {
    serde_json::from_str(out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_and_actions_from_the_command_line() {
    let collector = Collector::start().unwrap();
    let token = collector.join_token(1, "1h").unwrap();
    let mut dev = TestDevice::enroll(&token, "web-01").await.unwrap();
    dev.connect().await.unwrap();
    dev.send_new(3).await.unwrap();
    let ann = collector.user("ann", "analyst").unwrap();
    let bob = collector.user("bob", "approver").unwrap();
    let id = dev.id().to_string();

    // devices list: a table by default, the API's JSON with --json.
    let table = ward_ok(&collector, &ann, &["devices", "list"]).unwrap();
    let mut lines = table.lines();
    assert!(lines.next().unwrap().starts_with("ID"), "{table}");
    let row = lines.next().unwrap();
    assert!(
        row.contains(&id) && row.contains("web-01") && row.contains("online"),
        "{table}"
    );
    let list = json(&ward_ok(&collector, &ann, &["devices", "list", "--json"]).unwrap());
    assert_eq!(list["devices"][0]["id"], id);

    // devices show by hostname, with its latest alerts.
    let shown = json(&ward_ok(&collector, &ann, &["devices", "show", "web-01", "--json"]).unwrap());
    assert_eq!(shown["id"], id);
    assert_eq!(shown["latest_alerts"].as_array().unwrap().len(), 3);
    let text = ward_ok(&collector, &ann, &["devices", "show", &id]).unwrap();
    assert!(
        text.contains("LATEST ALERTS (3)") && text.contains("Test rule"),
        "{text}"
    );

    // Propose as the analyst; the analyst may not approve.
    let proposed = json(
        &ward_ok(
            &collector,
            &ann,
            &[
                "actions",
                "propose",
                "--device",
                "web-01",
                "--reason",
                "triage",
                "collect-package",
                "--json",
            ],
        )
        .unwrap(),
    );
    assert_eq!(proposed["status"], "pending_approval");
    let action = proposed["id"].as_str().unwrap().to_string();
    let (ok, _, err) = ward(&collector, &ann, &["actions", "approve", &action]).unwrap();
    assert!(!ok && err.contains("approver") && err.contains("403"), "{err}");
    let pending = ward_ok(&collector, &bob, &["actions", "list", "--status", "pending_approval"]).unwrap();
    assert!(
        pending.contains(&action) && pending.contains("collect_package"),
        "{pending}"
    );

    // The approver approves from a config file instead of the environment.
    let cfg = tempfile::tempdir().unwrap();
    let cfg_path = cfg.path().join("cli.toml");
    std::fs::write(
        &cfg_path,
        format!("url = \"http://{}\"\ntoken = \"{bob}\"\n", collector.http),
    )
    .unwrap();
    let out = Command::new(bin("ward"))
        .args(["actions", "approve", &action, "--comment", "ok"])
        .env_clear()
        .env("HOME", cfg.path())
        .env("WARD_CONFIG", &cfg_path)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains(&action) && stdout.contains("dispatched"), "{stdout}");

    // The device gets the signed command and reports; the CLI shows the result.
    let signed = dev.recv_command(Duration::from_secs(5)).await.unwrap();
    let command = dev.authorize(&signed, 0).expect("signed by the pinned command key");
    let result = dev.command_result(&command, CommandOutcome::Succeeded, Some(b"pkg".to_vec()), None);
    dev.send_result(result).await.unwrap();
    collector
        .wait_action_status(&action, "succeeded", Duration::from_secs(5))
        .await
        .unwrap();
    let all = json(&ward_ok(&collector, &ann, &["actions", "list", "--device", "web-01", "--json"]).unwrap());
    assert_eq!(all["actions"][0]["status"], "succeeded");
    assert_eq!(all["actions"][0]["decided_by"], "bob");

    // Reject needs a comment; with one it is rejected.
    let second = ward_ok(
        &collector,
        &ann,
        &[
            "actions",
            "propose",
            "--device",
            &id,
            "--reason",
            "contain",
            "isolate",
            "--allow",
            "192.0.2.53",
        ],
    )
    .unwrap();
    let second_id = second.split_whitespace().next().unwrap().to_string();
    assert!(second.contains("pending_approval"), "{second}");
    let (ok, _, err) = ward(&collector, &bob, &["actions", "reject", &second_id]).unwrap();
    assert!(!ok && err.contains("--comment"), "clap asks for the comment: {err}");
    let rejected = ward_ok(
        &collector,
        &bob,
        &["actions", "reject", &second_id, "--comment", "not yet"],
    )
    .unwrap();
    assert!(rejected.contains("rejected"), "{rejected}");

    // Bad input is a clear error, not a crash.
    let (ok, _, err) = ward(&collector, "not-a-token", &["devices", "list"]).unwrap();
    assert!(!ok && err.contains("unknown token"), "{err}");
    let (ok, _, err) = ward(&collector, &ann, &["devices", "show", "nope"]).unwrap();
    assert!(!ok && err.contains("no device"), "{err}");
    let out = Command::new(bin("ward"))
        .args(["devices", "list"])
        .env_clear()
        .env("HOME", cfg.path().join("empty"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no collector URL"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_checks_an_https_api_against_the_given_ca() {
    let certs = tempfile::tempdir().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let server_key = KeyPair::generate().unwrap();
    let server = CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .signed_by(&server_key, &ca)
        .unwrap();
    let (cert, key, ca_file) = (
        certs.path().join("api.crt"),
        certs.path().join("api.key"),
        certs.path().join("ca.pem"),
    );
    std::fs::write(&cert, format!("{}{}", server.pem(), ca.pem())).unwrap();
    std::fs::write(&key, server_key.serialize_pem()).unwrap();
    std::fs::write(&ca_file, ca.pem()).unwrap();
    let collector = Collector::start_with(|config| {
        config.insert_str(
            0,
            &format!(
                "tls_cert_pem = \"{}\"\ntls_key_pem = \"{}\"\n",
                cert.display(),
                key.display()
            ),
        )
    })
    .unwrap();
    let url = format!("https://localhost:{}", collector.http.port());
    let run = |extra: &[&str]| {
        Command::new(bin("ward"))
            .args(["--url", &url, "--token", &collector.admin_token])
            .args(extra)
            .args(["devices", "list", "--json"])
            .env_clear()
            .env("HOME", certs.path())
            .output()
            .unwrap()
    };
    let ok = run(&["--ca-cert", ca_file.to_str().unwrap()]);
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    assert_eq!(
        json(&String::from_utf8_lossy(&ok.stdout))["devices"],
        serde_json::json!([])
    );
    // Without the CA the certificate is not trusted, and the CLI says why.
    let refused = run(&[]);
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(err.contains("certificate") || err.contains("CA"), "{err}");
}

/// A device of its own: its hostname, address and logged-on user shared with no other.
async fn device(token: &ward_protocol::JoinToken, host: &str, addr: &str, user: &str) -> TestDevice {
    let inventory = ward_protocol::Inventory {
        hostname: host.into(),
        os: "Test OS".into(),
        kernel: "6.1".into(),
        addresses: vec![addr.into()],
        logged_on_users: vec![user.into()],
        agent_version: "test".into(),
    };
    TestDevice::enroll_with(token, inventory).await.unwrap()
}

/// Sends `n` alerts from `dev` naming only `user` and files of its own (so devices share no entity).
async fn send_as(dev: &mut TestDevice, user: &str, salt: u8, n: usize) {
    let alerts = (0..n)
        .map(|k| {
            let mut a = dev.next_alert();
            a.entities = vec![
                Entity::User {
                    name: user.into(),
                    uid: Some(1500),
                },
                Entity::File {
                    // A folder each: distinct detections, not repeats to fold.
                    path: format!("/home/{user}/{k}/payload"),
                    sha256: Some([salt.wrapping_add(k as u8); 32]),
                },
            ];
            dev.sign(&a)
        })
        .collect();
    dev.send_batch(alerts).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incidents_from_the_command_line() {
    let collector = Collector::start().unwrap();
    let token = collector.join_token(2, "1h").unwrap();
    let mut one = device(&token, "web-01", "10.1.0.1", "dora").await;
    let mut two = device(&token, "web-02", "10.1.0.2", "eve").await;
    one.connect().await.unwrap();
    two.connect().await.unwrap();
    send_as(&mut one, "dora", 100, 3).await;
    send_as(&mut two, "eve", 200, 2).await;
    let ann = collector.user("ann", "analyst").unwrap();
    let vera = collector.user("vera", "viewer").unwrap();

    // Both incidents appear in the list (correlation runs beside ingest).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let list = loop {
        let list = json(&ward_ok(&collector, &vera, &["incidents", "list", "--json"]).unwrap());
        if list["incidents"].as_array().unwrap().len() == 2 {
            break list;
        }
        assert!(std::time::Instant::now() < deadline, "two incidents expected: {list}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let by_count = |n: u64| {
        list["incidents"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["alert_count"] == n)
            .unwrap()["id"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let (big, small) = (by_count(3), by_count(2));
    let table = ward_ok(&collector, &vera, &["incidents", "list"]).unwrap();
    assert!(
        table.starts_with("ID") && table.contains(&big) && table.contains("active"),
        "{table}"
    );
    let shown = ward_ok(&collector, &vera, &["incidents", "show", &big]).unwrap();
    assert!(shown.contains("ALERTS (3)") && shown.contains("Test rule"), "{shown}");

    // Triage: status, assignee, classification, tags; a viewer may not.
    let updated = json(
        &ward_ok(
            &collector,
            &ann,
            &[
                "incidents",
                "update",
                &big,
                "--status",
                "in_progress",
                "--assignee",
                "ann",
                "--classification",
                "true_positive",
                "--tags",
                "web,phishing",
                "--json",
            ],
        )
        .unwrap(),
    );
    assert_eq!(updated["incident"]["status"], "in_progress");
    assert_eq!(updated["incident"]["assignee"], "ann");
    assert_eq!(updated["incident"]["classification"], "true_positive");
    let tags: Vec<&str> = updated["incident"]["tags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    assert!(
        tags.contains(&"web") && tags.contains(&"phishing") && tags.len() == 2,
        "{tags:?}"
    );
    let (ok, _, err) = ward(
        &collector,
        &vera,
        &["incidents", "update", &big, "--status", "resolved"],
    )
    .unwrap();
    assert!(!ok && err.contains("403"), "{err}");
    let mine = json(&ward_ok(&collector, &vera, &["incidents", "list", "--assignee", "ann", "--json"]).unwrap());
    assert_eq!(mine["incidents"].as_array().unwrap().len(), 1);
    assert_eq!(mine["incidents"][0]["id"], big);
    let cleared = json(&ward_ok(&collector, &ann, &["incidents", "update", &big, "--unassign", "--json"]).unwrap());
    assert!(cleared["incident"]["assignee"].is_null());

    // Comments.
    let added = ward_ok(
        &collector,
        &ann,
        &["incidents", "comment", &big, "payload hashes sent to the sandbox"],
    )
    .unwrap();
    assert!(added.starts_with("comment "), "{added}");
    let shown = ward_ok(&collector, &vera, &["incidents", "show", &big]).unwrap();
    assert!(shown.contains("ann: payload hashes sent to the sandbox"), "{shown}");

    // Merge the small one into the big one: it redirects there.
    let merged = json(
        &ward_ok(
            &collector,
            &ann,
            &["incidents", "merge", &big, "--from", &small, "--json"],
        )
        .unwrap(),
    );
    assert_eq!(merged["incident"]["alert_count"], 5);
    let gone = json(&ward_ok(&collector, &vera, &["incidents", "show", &small, "--json"]).unwrap());
    assert_eq!(gone["incident"]["status"], "redirected");
    assert_eq!(gone["incident"]["redirected_to"], big);
    let (ok, _, err) = ward(&collector, &ann, &["incidents", "show", "../../metrics"]).unwrap();
    assert!(!ok && err.contains("26-character id"), "{err}");
}

/// Entra sign-ins: three failures of different users from one address, and a success.
fn spray_export(at: u64) -> Vec<u8> {
    let record = |id: &str, upn: &str, ip: &str, code: u32| {
        serde_json::json!({"category": "SignInLogs", "resultType": code.to_string(), "callerIpAddress": ip,
            "time": rfc3339_ms(at), "properties": {"id": id, "userPrincipalName": upn,
                "createdDateTime": rfc3339_ms(at), "ipAddress": ip, "appDisplayName": "Office 365",
                "clientAppUsed": "Browser", "status": {"errorCode": code}}})
    };
    serde_json::json!({"records": [
        record("s1", "ann@contoso.com", "203.0.113.9", 50126),
        record("s2", "bob@contoso.com", "203.0.113.9", 50126),
        record("s3", "cat@contoso.com", "203.0.113.9", 50126),
        record("s4", "dan@contoso.com", "198.51.100.4", 0),
    ]})
    .to_string()
    .into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hunting_from_the_command_line() {
    let collector = Collector::start().unwrap();
    let ann = collector.user("ann", "analyst").unwrap();
    let viewer = collector.user("vic", "viewer").unwrap();
    let token = collector.join_token(1, "1h").unwrap();
    let mut dev = TestDevice::enroll(&token, "web-01").await.unwrap();
    dev.connect().await.unwrap();
    dev.send_new(3).await.unwrap();
    let (status, report) = collector
        .post_bytes_as("/api/v1/feeds/identity", &ann, spray_export(now_ms() - 60_000))
        .await
        .unwrap();
    assert_eq!(status, 200, "{report}");

    // A table of the failed sign-ins from one address, newest first.
    let table = ward_ok(
        &collector,
        &ann,
        &[
            "hunt",
            "run",
            "sign_ins",
            "ip = 203.0.113.9 and outcome = failure",
            "--since",
            "1h",
        ],
    )
    .unwrap();
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[0].starts_with("TIME") && lines[0].contains("USER"), "{table}");
    assert_eq!(lines.len(), 5, "{table}");
    for user in ["ann@", "bob@", "cat@"] {
        assert!(table.contains(user), "{table}");
    }
    assert!(!table.contains("dan@"), "{table}");
    assert!(
        lines[4].starts_with("3 shown of 3 matching (ip = 203.0.113.9 and outcome = failure)"),
        "{table}"
    );

    // Paging with the printed cursor, and the device's alerts by host.
    let first = json(
        &ward_ok(
            &collector,
            &ann,
            &["hunt", "run", "alerts", "host = WEB-01", "--limit", "2", "--json"],
        )
        .unwrap(),
    );
    assert_eq!(first["total"], 3);
    let cursor = first["next_cursor"].as_str().unwrap();
    let rest = json(
        &ward_ok(
            &collector,
            &ann,
            &[
                "hunt",
                "run",
                "alerts",
                "host = web-01",
                "--limit",
                "2",
                "--cursor",
                cursor,
                "--json",
            ],
        )
        .unwrap(),
    );
    assert_eq!(rest["rows"].as_array().unwrap().len(), 1);
    assert!(rest["next_cursor"].is_null());

    // CSV, as the console exports it.
    let csv = ward_ok(
        &collector,
        &ann,
        &["hunt", "run", "sign_ins", "user ~ contoso", "--csv"],
    )
    .unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(
        lines[0],
        "time,user,ip,location,app,client,outcome,result,risk_level,mfa,device,provider"
    );
    assert_eq!(lines.len(), 5, "{csv}");
    assert!(lines[1].contains(",Office 365,Browser,"), "{csv}");

    // Saved hunts: save with a window, list, run by name, delete.
    let saved = ward_ok(
        &collector,
        &ann,
        &[
            "hunt",
            "save",
            "spray",
            "sign_ins",
            "outcome=failure",
            "--window",
            "24h",
        ],
    )
    .unwrap();
    assert!(saved.contains("saved \"spray\": sign_ins outcome = failure"), "{saved}");
    let list = ward_ok(&collector, &ann, &["hunt", "saved"]).unwrap();
    assert!(list.contains("spray") && list.contains("1d"), "{list}");
    let rerun = ward_ok(&collector, &ann, &["hunt", "run", "--saved", "spray"]).unwrap();
    assert!(rerun.contains("3 shown of 3 matching"), "{rerun}");
    ward_ok(&collector, &ann, &["hunt", "delete", "spray"]).unwrap();
    assert_eq!(
        ward_ok(&collector, &ann, &["hunt", "saved"]).unwrap().trim(),
        "no saved hunts"
    );

    // Refusals are the API's words, with a non-zero exit.
    let (ok, _, err) = ward(&collector, &ann, &["hunt", "run", "alerts", "rule ~ x or user = y"]).unwrap();
    assert!(!ok && err.contains("expected \"and\"") && err.contains("400"), "{err}");
    let (ok, _, err) = ward(&collector, &ann, &["hunt", "run", "alerts", "", "--limit", "501"]).unwrap();
    assert!(!ok && err.contains("limit must be 1..=500"), "{err}");
    let (ok, _, err) = ward(&collector, &viewer, &["hunt", "run", "alerts"]).unwrap();
    assert!(!ok && err.contains("403"), "{err}");
    let (ok, _, err) = ward(&collector, &ann, &["hunt", "run", "--saved", "nope"]).unwrap();
    assert!(!ok && err.contains("no saved hunt called \"nope\""), "{err}");
}
