//! The endpoint feed against the real collector: a Sysmon for Linux syslog file, a
//! real EVTX recording and evtx-JSON lines of the same Windows host are POSTed; the
//! alerts (SigmaHQ rules, their authors) and the hosts, not enrolled, are read back
//! through the API; the Linux host's alerts land in one incident; the same files
//! again (through the CLI too) add nothing; broken records are skipped with reasons.

use std::path::PathBuf;

use serde_json::Value;
use ward_tests::Collector;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/endpoint")
        .join(name)
}

fn read(name: &str) -> Vec<u8> {
    let path = fixture(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("fixture {}: {e}", path.display()))
}

async fn endpoint_alerts(c: &Collector) -> Vec<Value> {
    let (status, body) = c.get("/api/v1/alerts?limit=500").await.unwrap();
    assert_eq!(status, 200, "{body}");
    body["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["source"] == "endpoint")
        .cloned()
        .collect()
}

fn on_host<'a>(alerts: &'a [Value], host: &str) -> Vec<&'a Value> {
    alerts
        .iter()
        .filter(|a| {
            a["entities"]
                .as_array()
                .is_some_and(|es| es.iter().any(|e| e["kind"] == "device" && e["hostname"] == host))
        })
        .collect()
}

#[tokio::test]
async fn endpoint_logs_raise_alerts_for_hosts_without_an_agent_once() {
    let c = Collector::start().unwrap();
    let analyst = c.user("alice", "analyst").unwrap();
    let viewer = c.user("victor", "viewer").unwrap();
    let post = |file: &'static str, token: String| {
        let c = &c;
        async move {
            c.post_bytes_as("/api/v1/feeds/endpoint", &token, read(file))
                .await
                .unwrap()
        }
    };

    let (status, _) = post("sysmon-linux.log", viewer.clone()).await;
    assert_eq!(status, 403, "viewers do not import");

    // Sysmon for Linux over syslog: a cron line ignored, a line cut short skipped.
    let (status, linux) = post("sysmon-linux.log", analyst.clone()).await;
    assert_eq!(status, 200, "{linux}");
    assert_eq!(linux["format"], "sysmon-syslog");
    assert_eq!(
        (
            linux["records"].as_u64(),
            linux["imported"].as_u64(),
            linux["ignored"].as_u64()
        ),
        (Some(6), Some(4), Some(1)),
        "{linux}"
    );
    assert_eq!(linux["skipped"][0]["line"], 6, "{linux}");
    assert!(
        linux["skipped"][0]["reason"].as_str().unwrap().contains("cut short"),
        "{linux}"
    );
    assert!(linux["alerts_raised"].as_u64().unwrap() >= 1, "{linux}");

    // A real EVTX recording, and JSON lines of the same host with a broken line.
    let (status, evtx) = post("findstr-lsass.evtx", analyst.clone()).await;
    assert_eq!(status, 200, "{evtx}");
    assert_eq!(
        (evtx["format"].as_str(), evtx["imported"].as_u64()),
        (Some("evtx"), Some(1)),
        "{evtx}"
    );
    assert_eq!(evtx["alerts_raised"], 1, "{evtx}");
    let (status, json) = post("ar-win-dc.ndjson", analyst.clone()).await;
    assert_eq!(status, 200, "{json}");
    assert_eq!(json["imported"], 2, "{json}");
    assert_eq!(json["skipped"][0]["line"], 2, "{json}");
    assert!(json["alerts_raised"].as_u64().unwrap() >= 2, "{json}");

    let alerts = endpoint_alerts(&c).await;
    let dc = on_host(&alerts, "ar-win-dc.attackrange.local");
    let web = on_host(&alerts, "web-07");
    assert_eq!(dc.len() + web.len(), alerts.len());
    assert!(alerts.iter().all(|a| a["device_id"].is_null()), "no enrolled device");
    let findstr = dc
        .iter()
        .find(|a| a["rule"]["id"] == "fe63010f-8823-4864-a96b-a7b4a0f7b929")
        .expect("the findstr lsass rule");
    assert_eq!(findstr["rule"]["title"], "LSASS Process Reconnaissance Via Findstr.EXE");
    assert_eq!(findstr["severity"], "high", "{findstr}");
    assert!(
        !findstr["rule"]["author"].as_str().unwrap().is_empty(),
        "DRL attribution"
    );
    assert!(
        findstr["rule"]["techniques"].as_array().is_some_and(|t| !t.is_empty()),
        "{findstr}"
    );
    let entities = findstr["entities"].as_array().unwrap();
    assert!(
        entities
            .iter()
            .any(|e| e["kind"] == "process" && e["exe"].as_str().unwrap().ends_with("findstr.exe")),
        "{entities:?}"
    );
    assert!(entities.iter().any(|e| e["kind"] == "user"), "{entities:?}");

    // The Linux host's alerts (seconds apart) correlate into one incident by its hostname.
    assert!(web.len() >= 2, "{web:?}");
    let mut incidents = Vec::new();
    for a in &web {
        incidents.push(c.incident_of(a["id"].as_str().unwrap()).await.0);
    }
    incidents.dedup();
    assert_eq!(incidents.len(), 1, "{incidents:?}");

    // Both hosts are listed as not enrolled, and neither is a device.
    let (status, hosts) = c.get("/api/v1/feeds/endpoint/hosts").await.unwrap();
    assert_eq!(status, 200, "{hosts}");
    let hosts = hosts["hosts"].as_array().unwrap();
    assert_eq!(hosts.len(), 2, "{hosts:?}");
    for h in hosts {
        assert_eq!(
            (h["enrolled"].as_bool(), h["device_id"].is_null()),
            (Some(false), true),
            "{h}"
        );
        assert!(h["alerts"].as_u64().unwrap() >= 1, "{h}");
    }
    let web_host = hosts.iter().find(|h| h["hostname"] == "web-07").unwrap();
    assert_eq!(
        (web_host["product"].as_str(), web_host["events"].as_u64()),
        (Some("linux"), Some(4))
    );
    let (_, devices) = c.get("/api/v1/devices").await.unwrap();
    assert!(!devices.to_string().contains("web-07"), "{devices}");

    // Again, through the API and the CLI: nothing new.
    let (_, again) = post("findstr-lsass.evtx", analyst.clone()).await;
    assert_eq!(
        (
            again["imported"].as_u64(),
            again["duplicates"].as_u64(),
            again["alerts_raised"].as_u64()
        ),
        (Some(0), Some(1), Some(0)),
        "{again}"
    );
    let out = c
        .cli(&["import", "endpoint", fixture("sysmon-linux.log").to_str().unwrap()])
        .unwrap();
    let report: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (
            report["imported"].as_u64(),
            report["duplicates"].as_u64(),
            report["alerts_raised"].as_u64()
        ),
        (Some(0), Some(4), Some(0)),
        "{report}"
    );
    assert_eq!(endpoint_alerts(&c).await.len(), alerts.len());

    // A truncated EVTX keeps what its whole chunks hold; one cut inside its first
    // chunk has nothing readable and is refused with the reason.
    let whole = read("findstr-lsass.evtx");
    let (status, body) = c
        .post_bytes_as("/api/v1/feeds/endpoint", &analyst, whole[..6000].to_vec())
        .await
        .unwrap();
    assert_eq!(status, 400, "{body}");
    assert!(body["error"].as_str().unwrap().contains("EVTX"), "{body}");
    let (status, body) = c
        .post_bytes_as("/api/v1/feeds/endpoint", &analyst, b"no events here\n".to_vec())
        .await
        .unwrap();
    assert_eq!(status, 400, "{body}");
}
