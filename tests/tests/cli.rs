#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The `ward` command line against a running collector: devices, the action
//! workflow end to end with a real enrolled protocol client, roles, the config
//! file, and incidents.

use std::process::Command;
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use serde_json::Value;
use ward_protocol::CommandOutcome;
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
