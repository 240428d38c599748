//! End to end: the alert page's API. A real agent raises a built-in rule (the EICAR
//! file), a shipped SigmaHQ rule (a base64 shebang on a command line) and a rule of
//! a pack pushed with a huge description and bad references; the collector's
//! `GET /api/v1/alerts/{id}` returns each rule's description, references, level,
//! author, license and source link (as recorded for the version the alert was
//! raised by), ATT&CK names, the incident, the ancestry and the signed record
//! verified again. The pushed pack's oversized fields come back bounded.

use std::time::{Duration, Instant};

use serde_json::Value;
use ward_tests::*;

pub(crate) const EICAR: &str = "X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*";
pub(crate) const BUILTIN_ID: &str = "39a5ce10-6434-5895-9602-83e385b7aa40";
pub(crate) const SIGMAHQ_ID: &str = "fe2f9663-41cb-47e2-b954-8a228f3b9dff";
pub(crate) const PUSHED_ID: &str = "6f1d2c1e-0000-4000-8000-0000a1e7da9e";

/// A collector and an agent with the three alerts raised: (collector, agent, ids of
/// the built-in, SigmaHQ and pushed rules' alerts).
pub(crate) async fn three_alerts() -> (Collector, Agent, [String; 3]) {
    let collector = Collector::start().unwrap();
    let rules = tempfile::tempdir().unwrap();
    let description = "An operator rule. ".repeat(1000);
    std::fs::write(
        rules.path().join("canary.yml"),
        format!(
            "title: Alert Page Canary\nid: {PUSHED_ID}\nauthor: Ops Team\ndescription: '{description}'\n\
             references:\n    - 'javascript:alert(1)'\n    - 'https://example.org/runbook'\n\
             logsource:\n    product: linux\n    category: file_event\n\
             detection:\n    selection:\n        TargetFilename|endswith: '/ward-alertpage-canary.txt'\n    condition: selection\n\
             falsepositives:\n    - 'The test itself'\nlevel: low\ntags:\n    - attack.collection\n    - attack.t1005\n"
        ),
    )
    .unwrap();
    let out = collector
        .cli(&["rules", "push", rules.path().to_str().unwrap()])
        .unwrap();
    assert!(out.contains("rule pack 1 with 1 rules"), "{out}");
    assert!(
        out.contains("1 field(s) cut") && out.contains("1 reference(s)"),
        "{out}"
    );

    let agent = Agent::start(&collector).unwrap();
    agent.wait_connected(Duration::from_secs(15)).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !agent.status().unwrap().contains("rule pack: version 1") {
        assert!(Instant::now() < deadline, "the pushed pack did not arrive");
        std::thread::sleep(Duration::from_millis(100));
    }
    let device = agent.device_id.clone();
    let wait = |rule: &'static str, needle: &'static str| {
        let collector = &collector;
        let device = device.clone();
        async move {
            collector
                .wait_alert(&device, Duration::from_secs(15), |a| {
                    a["rule"]["id"] == rule && a["entities"].to_string().contains(needle)
                })
                .await
                .unwrap_or_else(|e| panic!("{rule}: {e}"))["id"]
                .as_str()
                .unwrap()
                .to_string()
        }
    };
    std::fs::write(agent.watch.join("invoice.docm"), EICAR).unwrap();
    let builtin = wait(BUILTIN_ID, "invoice.docm").await;
    // Alive for a second, so the /proc poll sees it too when the connector is off.
    let out = std::process::Command::new("/bin/sh")
        .args(["-c", "sleep 1; true IyEvYmluL2Jhc2gK-ward-alert-page"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let sigmahq = wait(SIGMAHQ_ID, "IyEvYmluL2Jhc2gK-ward-alert-page").await;
    std::fs::write(agent.watch.join("ward-alertpage-canary.txt"), "x").unwrap();
    let pushed = wait(PUSHED_ID, "ward-alertpage-canary.txt").await;
    (collector, agent, [builtin, sigmahq, pushed])
}

/// The alert page of `id`, once it is in an incident (the correlator runs apart).
pub(crate) async fn page(collector: &Collector, id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body) = collector.get(&format!("/api/v1/alerts/{id}")).await.unwrap();
        assert_eq!(status, 200, "{body}");
        if body["incidents"].as_array().is_some_and(|l| !l.is_empty()) {
            return body;
        }
        assert!(Instant::now() < deadline, "alert {id} is in no incident: {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_alert_page_carries_each_rules_context() {
    let (collector, _agent, [builtin, sigmahq, pushed]) = three_alerts().await;

    let p = page(&collector, &builtin).await;
    let c = &p["rule_context"]["context"];
    assert_eq!(p["rule_context"]["match"], "exact", "{p:#}");
    assert_eq!(c["origin"], "builtin");
    assert!(
        c["description"]
            .as_str()
            .unwrap()
            .contains("EICAR anti-malware test file"),
        "{c}"
    );
    assert_eq!(
        c["references"],
        serde_json::json!(["https://www.eicar.org/download-anti-malware-testfile/"])
    );
    assert_eq!(c["false_positives"][0], "The EICAR test file used to test the agent");
    assert_eq!(
        (c["level"].as_str(), c["author"].as_str()),
        (Some("high"), Some("Ward"))
    );
    assert_eq!(c["license"], "Apache-2.0");
    assert!(
        c["source_url"]
            .as_str()
            .unwrap()
            .ends_with("/detect/rules/builtin/lnx_ward_known_bad_file_hash.yml")
    );
    assert_eq!(c["attack"]["techniques"][0]["name"], "Malicious File");
    assert_eq!(p["raw"]["signature"], "verified", "{}", p["raw"]);
    assert_eq!(p["raw"]["decoded"]["rule"]["id"], BUILTIN_ID);
    let inc = &p["incidents"][0];
    assert!(inc["reason"].is_string() && inc["id"].is_string(), "{inc}");

    let p = page(&collector, &sigmahq).await;
    let c = &p["rule_context"]["context"];
    assert_eq!(
        (p["rule_context"]["match"].as_str(), c["origin"].as_str()),
        (Some("exact"), Some("sigmahq"))
    );
    assert!(
        c["description"]
            .as_str()
            .unwrap()
            .starts_with("Detects the presence of a base64 version of the shebang")
    );
    assert_eq!(c["references"].as_array().unwrap().len(), 2, "{c}");
    assert_eq!(c["level"], "medium");
    assert_eq!(c["author"], "Nasreddine Bencherchali (Nextron Systems)");
    assert_eq!(c["license"], "Detection Rule License (DRL) 1.1");
    let url = c["source_url"].as_str().unwrap();
    assert!(
        url.starts_with("https://github.com/SigmaHQ/sigma/blob/")
            && url.ends_with("/proc_creation_lnx_base64_shebang_cli.yml"),
        "{url}"
    );
    assert_eq!(
        p["rule"]["attack"]["techniques"][0]["name"],
        "Deobfuscate/Decode Files or Information"
    );
    // The echo's process and what the agent knew of its parents.
    let ancestry = &p["ancestry"];
    assert!(
        ancestry["process"]["cmdline"]
            .as_str()
            .unwrap()
            .contains("IyEvYmluL2Jhc2gK-ward-alert-page"),
        "{ancestry}"
    );
    assert_eq!(ancestry["source"], "lineage", "{ancestry}");
    assert!(
        ancestry["ancestors"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["pid"] == std::process::id()),
        "{ancestry}"
    );

    // The pushed pack: what fits is kept; the oversized and unsafe parts are bounded.
    let p = page(&collector, &pushed).await;
    let c = &p["rule_context"]["context"];
    assert_eq!(
        (c["origin"].as_str(), c["pack_version"].as_i64()),
        (Some("pushed"), Some(1)),
        "{c}"
    );
    assert_eq!(
        c["description"].as_str().unwrap().chars().count(),
        ward_detect::context::MAX_DESCRIPTION_CHARS + 1
    );
    assert_eq!(c["references"], serde_json::json!(["https://example.org/runbook"]));
    assert_eq!(
        (c["level"].as_str(), c["license"].as_str()),
        (Some("low"), Some("not stated"))
    );
    assert!(c["source_url"].is_null());
    let notes = c["notes"].to_string();
    assert!(
        notes.contains("description cut") && notes.contains("not an http(s) URL"),
        "{notes}"
    );
    let metrics = collector.metrics().await.unwrap();
    assert!(
        metric(&metrics, "ward_rule_context_limited_total") >= 2,
        "the running collector counted them too"
    );

    // An alert id nothing has, and one that is not an id.
    let (status, _) = collector
        .get("/api/v1/alerts/01JX0000000000000000000000")
        .await
        .unwrap();
    assert_eq!(status, 404);
    let (status, _) = collector.get("/api/v1/alerts/nope").await.unwrap();
    assert_eq!(status, 400);
}
