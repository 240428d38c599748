//! The analyst console in a real headless Chromium against the real collector and
//! a real agent, inside a network namespace of its own (the isolation it approves
//! touches nftables): an analyst signs in, walks the queue with the keyboard,
//! opens the incident of a scripted attack story, plays its graph and proposes an
//! isolate; an approver approves it in the action centre and watches it succeed.
//! Takes screenshots of the queue and the incident (into docs/screenshots/ with
//! `WARD_UPDATE_SCREENSHOTS=1`, else into a temporary file, so a test run leaves the
//! checkout clean) and reports how long an incident of 500 alerts takes from
//! navigation to its graph on screen; on that incident it checks that repeats are
//! grouped (one node with a count per rule on the device), that playing takes under
//! 5 s, and that the keys, buttons and wheel zoom and pan the graph. Last, from the
//! story's evidence to alice's mailbox page: the mail with its verdict, her click
//! and the forwarding inbox rule set on her mailbox.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use ward_protocol::*;
use ward_tests::browser::{Browser, chromium_path};
use ward_tests::*;

const SECS: fn(u64) -> Duration = Duration::from_secs;
const MIN: u64 = 60_000;
const EICAR: &str = "X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*";
/// SHA-256 of the EICAR test file (the agent's built-in known-bad hash rule).
const EICAR_SHA256: &str = "275a021bbfb6489e54d471899f7db9d1663fc695ec2fe2a2c4538aabf651fd0f";
/// Alerts in the large incident whose rendering time is measured.
const LARGE: usize = 500;
/// Alerts in one page of the incident page (the graph draws that page).
const PAGE: usize = 200;

#[test]
fn console_story_in_a_real_browser() {
    // Fails (never skips) with the reason when Chromium is missing.
    chromium_path().unwrap();
    in_own_namespace(&test_path(module_path!(), "console_story_in_a_real_browser"), scenario);
}

/// Captures the page as `name` and checks the capture is a PNG image (into
/// docs/screenshots/ with WARD_UPDATE_SCREENSHOTS=1, else a temporary file).
pub(crate) fn screenshot(b: &mut Browser, name: &str) {
    let update = std::env::var_os("WARD_UPDATE_SCREENSHOTS").is_some_and(|v| v == "1");
    let path = if update {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../docs/screenshots")
            .join(name)
    } else {
        std::env::temp_dir().join(format!("ward-console-{}-{name}", std::process::id()))
    };
    b.screenshot(&path).unwrap();
    let png = std::fs::read(&path).unwrap();
    assert!(
        png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 10_000,
        "{name} is not a screenshot"
    );
    if !update {
        std::fs::remove_file(&path).unwrap();
    }
}

fn nft_table() -> Option<String> {
    let out = Command::new("nft")
        .args(["list", "table", "inet", "ward_isolation"])
        .output()
        .expect("nft runs");
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Signs in through the form with `token` and waits for the role to show.
pub(crate) fn sign_in(b: &mut Browser, base: &str, token: &str, expect: &str) {
    b.navigate(&format!("{base}/")).unwrap();
    b.wait_for(
        "the sign-in form",
        "!document.querySelector('#signin').hidden",
        SECS(10),
    )
    .unwrap();
    b.eval(&format!(
        "document.querySelector('#token').value = {}; document.querySelector('#signin-button').click(); true",
        serde_json::to_string(token).unwrap()
    ))
    .unwrap();
    b.wait_for(
        "the signed-in user and role",
        &format!(
            "document.querySelector('#who').textContent === {}",
            serde_json::to_string(expect).unwrap()
        ),
        SECS(10),
    )
    .unwrap();
}

pub(crate) fn sign_out(b: &mut Browser) {
    b.eval("document.querySelector('#signout').click(); true").unwrap();
    b.wait_for(
        "the sign-in form again",
        "!document.querySelector('#signin').hidden",
        SECS(10),
    )
    .unwrap();
}

fn rule(id: &str, title: &str, severity: Severity, technique: &str, tactics: &[&str]) -> RuleRef {
    RuleRef {
        id: id.into(),
        title: title.into(),
        author: "Ward tests".into(),
        severity,
        techniques: vec![technique.into()],
        tactics: tactics.iter().map(|t| t.to_string()).collect(),
    }
}

/// Posts a feed export (NDJSON records) through the real feed route as an analyst.
async fn feed(collector: &Collector, token: &str, kind: &str, records: &[Value]) {
    let body: String = records.iter().map(|r| r.to_string() + "\n").collect();
    let (status, report) = collector
        .post_bytes_as(&format!("/api/v1/feeds/{kind}"), token, body.into_bytes())
        .await
        .unwrap();
    assert_eq!(status, 200, "{kind} feed: {report}");
}

/// Sends alerts with chosen rules and entities from a test device, in batches.
async fn send(dev: &mut TestDevice, alerts: Vec<(u64, RuleRef, Vec<Entity>)>) {
    for chunk in alerts.chunks(100) {
        let signed = chunk
            .iter()
            .map(|(at, rule, entities)| {
                let mut a = dev.next_alert();
                a.observed_at_ms = *at;
                a.last_observed_at_ms = *at;
                a.rule = rule.clone();
                a.entities = entities.clone();
                dev.sign(&a)
            })
            .collect();
        dev.send_batch(signed).await.unwrap();
    }
}

/// Waits for an incident (any status) satisfying `pred` in the API's list.
async fn wait_incident(collector: &Collector, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + SECS(20);
    loop {
        let (_, body) = collector.get("/api/v1/incidents?limit=500").await.unwrap();
        if let Some(i) = body["incidents"].as_array().and_then(|l| l.iter().find(|i| pred(i))) {
            return i.clone();
        }
        if Instant::now() >= deadline {
            // Say why alerts were linked: a surprise here is a correlation change.
            let mut reasons = Vec::new();
            for i in body["incidents"].as_array().into_iter().flatten() {
                let (_, d) = collector
                    .get(&format!("/api/v1/incidents/{}", i["id"].as_str().unwrap_or("")))
                    .await
                    .unwrap();
                for a in d["alerts"].as_array().into_iter().flatten() {
                    let r = a["reason"].to_string();
                    if !r.contains("same device") {
                        reasons.push(r);
                    }
                }
            }
            reasons.sort();
            reasons.dedup();
            panic!("{what}: no such incident within 20 s: {body}; reasons alerts were linked: {reasons:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn scenario() {
    let lo = Command::new("ip")
        .args(["link", "set", "lo", "up"])
        .status()
        .expect("ip runs");
    assert!(lo.success(), "cannot bring up loopback in the namespace");

    // The synthetic build noise repeats rules and folders; it stands for 500 distinct alerts.
    let collector = Collector::start_with(without_folding).unwrap();
    // The agent sees the host's processes (as root through eBPF, every exec in full),
    // and other tests run discovery commands and attack simulations meanwhile: it
    // runs only the rule the story needs (a known-bad file), so nothing of theirs
    // joins the story.
    let agent = Agent::start_with(&collector, |watch| {
        let others: Vec<&str> = ward_detect::builtin::BUILTIN_RULES
            .iter()
            .filter(|(name, _)| *name != "lnx_ward_known_bad_file_hash.yml")
            .map(|(_, yaml)| ward_detect::defaultpack::rule_file_id(yaml))
            .collect();
        format!(
            "{}\n[detection]\nsigmahq_enabled = false\ndisabled_rules = {others:?}\n",
            Agent::test_config(watch).replace("[sensors]\n", "[sensors]\nnetwork_enabled = false\n")
        )
    })
    .unwrap();
    agent.wait_connected(SECS(15)).unwrap();
    let device = agent.device_id.clone();
    let ann = collector.user("ann", "analyst").unwrap();
    let bob = collector.user("bob", "approver").unwrap();
    let base = format!("http://{}", collector.http);
    let token = collector.join_token(2, "1h").unwrap();
    let mut server = TestDevice::enroll(&token, "srv-db").await.unwrap();
    // The build server's own user and address: it shares nothing with the story.
    let mut build = TestDevice::enroll_with(
        &token,
        Inventory {
            hostname: "build-07".into(),
            os: "Test OS".into(),
            kernel: "6.1".into(),
            addresses: vec!["10.20.0.40".into()],
            logged_on_users: vec!["ci".into()],
            agent_version: "test".into(),
        },
    )
    .await
    .unwrap();
    server.connect().await.unwrap();
    build.connect().await.unwrap();

    // The scripted attack story: a phishing mail to alice carrying the EICAR file,
    // her risky sign-in, the file written on the real agent's device (the agent's
    // own known-bad-hash rule), and a new SSH key for alice on a server.
    let t0 = now_ms() - 20 * MIN;
    feed(
        &collector,
        &ann,
        "mailbox",
        &[
            json!({"Timestamp": rfc3339_ms(t0), "NetworkMessageId": "7d1c0f3e-5b2a-4e8f-9c61-2a9e3b4c5d6e",
                "SenderFromAddress": "billing@invoices.example", "SenderIPv4": "203.0.113.25",
                "RecipientEmailAddress": "alice@contoso.com", "Subject": "Invoice overdue", "EmailDirection": "Inbound",
                "DeliveryAction": "Delivered", "DeliveryLocation": "Inbox/folder", "ThreatTypes": "Malware", "AttachmentCount": 1}),
            json!({"Timestamp": rfc3339_ms(t0), "NetworkMessageId": "7d1c0f3e-5b2a-4e8f-9c61-2a9e3b4c5d6e",
                "SenderFromAddress": "billing@invoices.example", "RecipientEmailAddress": "alice@contoso.com",
                "FileName": "invoice.docm", "FileType": "docm", "SHA256": EICAR_SHA256, "ThreatTypes": "Malware"}),
        ],
    )
    .await;
    feed(
        &collector,
        &ann,
        "identity",
        &[
            json!({"category": "SignInLogs", "resultType": "0", "time": rfc3339_ms(t0 + 5 * MIN), "properties": {
            "id": "5f0c2b7e-1d3a-4b9c-8e2f-6a7b8c9d0e1f", "userPrincipalName": "alice@contoso.com",
            "createdDateTime": rfc3339_ms(t0 + 5 * MIN), "ipAddress": "198.51.100.23", "appDisplayName": "Office 365",
            "clientAppUsed": "Browser", "location": {"city": "Lagos", "countryOrRegion": "NG"},
            "riskLevelDuringSignIn": "high", "riskState": "atRisk", "status": {"errorCode": 0}}}),
        ],
    )
    .await;
    std::fs::write(agent.watch.join("invoice.docm"), EICAR).unwrap();
    collector
        .wait_alert(&device, SECS(15), |a| a["entities"].to_string().contains(EICAR_SHA256))
        .await
        .unwrap();
    send(
        &mut server,
        vec![(
            now_ms(),
            rule(
                "ward-ssh-key-added",
                "New SSH authorized key",
                Severity::Medium,
                "T1098.004",
                &["TA0003"],
            ),
            vec![
                Entity::User {
                    name: "alice".into(),
                    uid: Some(1000),
                },
                Entity::File {
                    path: "/home/alice/.ssh/authorized_keys".into(),
                    sha256: Some([0x42; 32]),
                },
            ],
        )],
    )
    .await;
    let story = wait_incident(&collector, "the attack story", |i| {
        i["sources"].to_string().contains("mailbox")
            && i["sources"].to_string().contains("identity")
            && i["device_count"] == 2
            && i["alert_count"].as_u64() >= Some(4)
    })
    .await;
    let story_id = story["id"].as_str().unwrap().to_string();

    // A noisy build server: 500 alerts, one incident, to measure rendering.
    let t1 = now_ms() - 10 * MIN;
    let node = |pid: u32, ppid: u32, exe: &str| ward_protocol::ProcessNode {
        pid,
        ppid,
        start_time_ms: t1 - 60_000,
        exe: exe.into(),
        cmdline: exe.into(),
        user: Some("ci".into()),
        login_user: None,
    };
    let tactics = [
        ("TA0002", "T1059.004"),
        ("TA0007", "T1082"),
        ("TA0011", "T1071"),
        ("TA0005", "T1070"),
    ];
    let large: Vec<(u64, RuleRef, Vec<Entity>)> = (0..LARGE)
        .map(|k| {
            let (tactic, technique) = tactics[k % tactics.len()];
            let entities = vec![
                Entity::User {
                    name: format!("ci{}", k % 7),
                    uid: Some(2000 + (k % 7) as u32),
                },
                Entity::Process {
                    pid: 10_000 + k as u32,
                    ppid: 1,
                    start_time_ms: t1,
                    exe: format!("/opt/build/tool-{}", k % 40),
                    cmdline: "tool --run".into(),
                    sha256: None,
                },
                Entity::File {
                    path: format!("/var/build/out-{}", k % 60),
                    sha256: Some([(k % 60) as u8; 32]),
                },
                Entity::Ip {
                    addr: format!("203.0.113.{}", 100 + k % 30).parse().unwrap(),
                },
                // One long CI job: every tool runs under its `make`, so the process
                // tree ties them into one incident.
                Entity::Lineage {
                    process: node(10_000 + k as u32, 9_000, &format!("/opt/build/tool-{}", k % 40)),
                    ancestors: vec![
                        node(9_000, 900, "/usr/bin/make"),
                        node(900, 1, "/usr/bin/gitlab-runner"),
                    ],
                    rooted: true,
                },
            ];
            let r = rule(
                &format!("ward-build-{}", k % 12),
                &format!("Build noise {}", k % 12),
                Severity::Low,
                technique,
                &[tactic],
            );
            (t1 + k as u64 * 1000, r, entities)
        })
        .collect();
    send(&mut build, large).await;
    let big = wait_incident(&collector, "the 500-alert incident", |i| {
        i["alert_count"] == LARGE as u64
    })
    .await;
    let big_id = big["id"].as_str().unwrap().to_string();

    // The analyst signs in; the queue shows the story; j/k and Enter open it.
    let mut b = Browser::launch().unwrap();
    sign_in(&mut b, &base, &ann, "ann · analyst");
    b.eval("location.hash = '#/incidents?status=active,in_progress&sort=last_activity'; true")
        .unwrap();
    b.wait_for(
        "the story in the queue",
        &format!("!!document.querySelector('#queue tr[data-id=\"{story_id}\"]')"),
        SECS(10),
    )
    .unwrap();
    let mut on_story = false;
    for _ in 0..20 {
        b.key("j").unwrap();
        let cursor = b
            .eval("(document.querySelector('#queue tr.cursor') || {dataset: {}}).dataset.id")
            .unwrap();
        if cursor == story_id {
            on_story = true;
            break;
        }
    }
    assert!(on_story, "j never reached the story's row");
    screenshot(&mut b, "queue.png");
    b.key("Enter").unwrap();
    b.wait_for(
        "the story's page drawn",
        &format!("document.body.dataset.incidentRendered === '{story_id}'"),
        SECS(10),
    )
    .unwrap();
    assert!(b.eval("location.hash").unwrap().as_str().unwrap().contains(&story_id));
    let summary = b.eval("document.querySelector('#incident-summary').innerText").unwrap();
    let summary = summary.as_str().unwrap().to_string();
    assert!(
        summary.contains("Initial Access") && summary.contains("Execution"),
        "{summary}"
    );
    let kill_chain = b
        .eval("[...document.querySelectorAll('.killchain span.on')].map(s => s.textContent)")
        .unwrap();
    assert_eq!(
        kill_chain,
        serde_json::json!(["Initial Access", "Execution", "Persistence"]),
        "kill-chain order"
    );

    // The graph: one node per alert, entities in lanes; play reveals them in time order.
    let alerts = story["alert_count"].as_u64().unwrap();
    assert_eq!(
        b.eval("document.querySelectorAll('#graph circle.alert').length")
            .unwrap(),
        alerts
    );
    b.eval("document.querySelector('#play').click(); true").unwrap();
    let hidden = b
        .eval("document.querySelectorAll('#graph .node.hidden').length")
        .unwrap();
    assert!(hidden.as_u64().unwrap() > 0, "playing starts from an empty graph");
    b.wait_for(
        "the play control revealing every node",
        "document.querySelector('#play').textContent.includes('Play') && document.querySelectorAll('#graph .node.hidden').length === 0",
        SECS(15),
    )
    .unwrap();
    // Selecting the agent's device highlights its alerts and offers isolation.
    let host = b
        .eval(&format!(
            "fetch('/api/v1/devices/{device}', {{headers: {{Authorization: 'Bearer ' + sessionStorage.getItem('ward-token')}}}}).then(r => r.json()).then(d => d.hostname)"
        ))
        .unwrap();
    let host = host.as_str().unwrap().to_string();
    let picked = b
        .eval(&format!(
            "(() => {{ const g = document.querySelector('#graph rect.entity[data-kind=device][data-label=\"{host}\"]');
              g.dispatchEvent(new MouseEvent('click', {{bubbles: true}})); return document.querySelectorAll('#graph circle.alert.hl').length; }})()"
        ))
        .unwrap();
    assert!(picked.as_u64().unwrap() >= 1, "the device's alerts are highlighted");
    let dimmed = b
        .eval("document.querySelectorAll('#graph circle.alert.dim').length")
        .unwrap();
    assert_eq!(
        picked.as_u64().unwrap() + dimmed.as_u64().unwrap(),
        alerts,
        "the rest is dimmed"
    );
    b.wait_for(
        "the entity panel",
        "!!document.querySelector('#entity-panel button.propose')",
        SECS(5),
    )
    .unwrap();
    screenshot(&mut b, "incident.png");

    // Propose the isolation from the entity.
    b.eval("document.querySelector('#entity-panel button.propose').click(); true")
        .unwrap();
    b.wait_for(
        "the propose panel",
        "!!document.querySelector('#propose-submit')",
        SECS(5),
    )
    .unwrap();
    let panel = b.eval("document.querySelector('#propose').innerText").unwrap();
    assert!(
        panel.as_str().unwrap().contains(&device),
        "the panel names the device: {panel}"
    );
    b.eval("document.querySelector('#propose-reason').value = 'phishing payload ran on this device'; document.querySelector('#propose-submit').click(); true")
        .unwrap();
    b.wait_for("the proposal", "document.querySelector('#propose').hidden", SECS(10))
        .unwrap();

    // The analyst is not offered a decision.
    b.eval("location.hash = '#/actions'; true").unwrap();
    b.wait_for(
        "the pending isolate",
        "document.querySelectorAll('#pending [data-action]').length === 1",
        SECS(10),
    )
    .unwrap();
    assert_eq!(
        b.eval("document.querySelectorAll('#pending .approve').length").unwrap(),
        0
    );

    // Rendering an incident of 500 alerts: from the route's start to the graph on screen.
    let mut times = Vec::new();
    for _ in 0..3 {
        b.eval("location.hash = '#/incidents'; true").unwrap();
        b.wait_for("the queue", "!!document.querySelector('#queue')", SECS(10))
            .unwrap();
        b.eval(&format!(
            "delete document.body.dataset.incidentRendered; location.hash = '#/incident/{big_id}'; true"
        ))
        .unwrap();
        b.wait_for(
            "the 500-alert incident drawn",
            &format!("document.body.dataset.incidentRendered === '{big_id}'"),
            SECS(20),
        )
        .unwrap();
        let perf = b.eval("window.wardPerf").unwrap();
        assert_eq!(perf["alerts"], PAGE as u64, "{perf}");
        assert_eq!(perf["totalAlerts"], LARGE as u64, "{perf}");
        times.push(perf["totalMs"].as_f64().unwrap());
        println!(
            "incident of {LARGE} alerts and {} entities: fetch {:.0} ms, render {:.0} ms ({}), total {:.0} ms",
            perf["entities"],
            perf["fetchMs"].as_f64().unwrap(),
            perf["renderMs"].as_f64().unwrap(),
            perf["phases"],
            perf["totalMs"].as_f64().unwrap()
        );
    }
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    // Reported, not asserted: a timed assertion fails on a loaded CI machine; the
    // figure against its target is ward-consolebench's (BENCHMARKS.md).
    println!("incident of {LARGE} alerts, navigation to graph drawn: median {median:.0} ms of {times:?}");

    // Repeats are grouped: the page's 200 alerts of 12 rules, all on one device, are
    // 12 nodes, each with its count; the entities are capped per lane.
    let groups = b
        .eval(
            "[...document.querySelectorAll('#graph circle.alert')].map(c => [Number(c.dataset.count),
               (document.querySelector(`#graph text.gcount[data-group=\"${c.dataset.group}\"]`) || {}).textContent || ''])",
        )
        .unwrap();
    let groups: Vec<(u64, String)> = serde_json::from_value(groups).unwrap();
    assert_eq!(groups.len(), 12, "one node per rule on the device: {groups:?}");
    assert_eq!(
        groups.iter().map(|(n, _)| n).sum::<u64>(),
        PAGE as u64,
        "the groups hold the page's alerts: {groups:?}"
    );
    assert!(
        groups.iter().all(|(n, label)| *n < 2 || *label == format!("×{n}")),
        "a grouped node shows its count: {groups:?}"
    );
    assert!(groups.iter().any(|(n, _)| *n > 1), "{groups:?}");
    let nodes = b.eval("document.querySelectorAll('#graph .node').length").unwrap();
    assert!(
        nodes.as_u64().unwrap() <= 12 + 60 * 9,
        "{nodes} nodes for a page of {PAGE} alerts"
    );
    // Playing it takes under 5 s (4 s by design), whatever the number of nodes.
    b.eval("window.wardPerf.playMs = 0; document.querySelector('#play').click(); true")
        .unwrap();
    b.wait_for(
        "the play of the large incident over",
        "document.querySelector('#play').textContent.includes('Play') && window.wardPerf.playMs > 0",
        SECS(8),
    )
    .unwrap();
    let play = b.eval("window.wardPerf.playMs").unwrap();
    println!(
        "incident of {LARGE} alerts: {} graph nodes ({} alert groups), played in {:.0} ms",
        nodes,
        groups.len(),
        play.as_f64().unwrap()
    );
    // Zoom and pan: keys on the focused graph, the buttons and the wheel move the view; 0 resets it.
    let view = "[document.querySelector('#graph g.viewport').getAttribute('transform'), Number(document.querySelector('#graph').dataset.zoom)]";
    let fitted = b.eval(view).unwrap();
    b.eval("document.querySelector('#graph').focus(); true").unwrap();
    b.key("+").unwrap();
    let zoomed = b.eval(view).unwrap();
    assert!(
        zoomed[1].as_f64().unwrap() > fitted[1].as_f64().unwrap(),
        "+ zooms in: {fitted} then {zoomed}"
    );
    b.key("ArrowLeft").unwrap();
    let panned = b.eval(view).unwrap();
    assert!(
        panned[0] != zoomed[0] && panned[1] == zoomed[1],
        "an arrow pans: {zoomed} then {panned}"
    );
    b.eval("document.querySelector('#zoom-out').click(); document.querySelector('#zoom-out').click(); true")
        .unwrap();
    let out = b.eval(view).unwrap();
    assert!(
        out[1].as_f64().unwrap() < zoomed[1].as_f64().unwrap(),
        "the zoom-out button: {zoomed} then {out}"
    );
    let wheeled = b
        .eval(&format!(
            "(() => {{ const g = document.querySelector('#graph'); const r = g.getBoundingClientRect();
              g.dispatchEvent(new WheelEvent('wheel', {{deltaY: -120, clientX: r.left + 200, clientY: r.top + 60, bubbles: true, cancelable: true}}));
              return {view}; }})()"
        ))
        .unwrap();
    assert!(
        wheeled[1].as_f64().unwrap() > out[1].as_f64().unwrap(),
        "the wheel zooms in: {out} then {wheeled}"
    );
    b.eval("document.querySelector('#graph').focus(); true").unwrap();
    b.key("0").unwrap();
    // Fitted to the graph's width again (which a scrollbar coming or going may have changed).
    let reset = b.eval(view).unwrap();
    let (s0, s1) = (fitted[1].as_f64().unwrap(), reset[1].as_f64().unwrap());
    assert!(
        reset[0].as_str().unwrap().contains(" 0.0) scale(") && (s1 - s0).abs() < s0 * 0.05,
        "0 resets the view: {fitted} at first, {reset} after"
    );
    screenshot(&mut b, "incident-large.png");

    // The alerts tab pages through the whole incident: the totals, then the next page.
    b.wait_for(
        "the page of the first 200",
        "(document.querySelector('#alerts-showing') || {}).textContent === 'showing 1–200 of 500, newest first'",
        SECS(5),
    )
    .unwrap();
    assert!(
        b.eval("document.querySelector('#incident-totals').innerText")
            .unwrap()
            .as_str()
            .unwrap()
            .contains("500"),
    );
    b.eval("document.querySelector('#alerts-next').click(); true").unwrap();
    b.wait_for(
        "the second page",
        "(document.querySelector('#alerts-showing') || {}).textContent === 'showing 201–400 of 500, newest first' \
         && document.querySelectorAll('#incident-alerts tbody tr').length === 200",
        SECS(5),
    )
    .unwrap();
    b.eval("document.querySelector('#alerts-prev').click(); true").unwrap();
    b.wait_for(
        "the first page again",
        "(document.querySelector('#alerts-showing') || {}).textContent.startsWith('showing 1–200')",
        SECS(5),
    )
    .unwrap();

    // Move one of its alerts out to a new incident from the alert's panel, then
    // merge that incident back from the triage card.
    let moved = b
        .eval(
            "(() => { const c = document.querySelector('#graph circle.alert');
              c.dispatchEvent(new MouseEvent('click', {bubbles: true})); return c.dataset.alert; })()",
        )
        .unwrap();
    let moved = moved.as_str().unwrap().to_string();
    b.wait_for(
        "the move form",
        "!!document.querySelector('#side form.move-alert')",
        SECS(5),
    )
    .unwrap();
    b.eval("document.querySelector('#side form.move-alert [name=reason]').value = 'not part of it'; document.querySelector('#side form.move-alert button').click(); true")
        .unwrap();
    b.wait_for(
        "the incident redrawn without the moved alert",
        &format!(
            "(document.querySelector('#alerts-showing') || {{}}).textContent === 'showing 1–200 of {}, newest first' \
             && !document.querySelector('#graph circle.alert[data-alert=\"{moved}\"]')",
            LARGE - 1
        ),
        SECS(10),
    )
    .unwrap();
    let new_id: String = collector
        .db()
        .unwrap()
        .query_row(
            "SELECT i.id FROM incident_alerts ia JOIN alerts a ON a.rowid = ia.alert_rowid
             JOIN incidents i ON i.seq = ia.incident WHERE a.id = ?1",
            [ward_collector::store::sqlite::alert_id::AlertKey::of(&moved)],
            |r| r.get(0),
        )
        .unwrap();
    assert_ne!(new_id, big_id, "the alert is in a new incident");
    b.eval(&format!(
        "document.querySelector('#incident-merge [name=from]').value = '{new_id}'; document.querySelector('#incident-merge button').click(); true"
    ))
    .unwrap();
    b.wait_for(
        "the incident whole again",
        &format!("(document.querySelector('#alerts-showing') || {{}}).textContent === 'showing 1–200 of {LARGE}, newest first'"),
        SECS(10),
    )
    .unwrap();
    let (_, merged) = collector.get(&format!("/api/v1/incidents/{new_id}")).await.unwrap();
    assert_eq!(merged["incident"]["status"], "redirected", "{merged}");
    assert_eq!(merged["incident"]["redirected_to"], big_id.as_str(), "{merged}");
    // The move and the merge in the activity log, in words: the alert by its rule's
    // title, the other incident by its title, no id left bare.
    b.eval(&format!("location.hash = '#/incident/{big_id}?tab=activity'; true"))
        .unwrap();
    let log = b
        .wait_for(
            "the move and merge in the activity log",
            "(t => t.includes('merged') && t.includes('moved') && t)((document.querySelector('#activity-log') || {innerText: ''}).innerText)",
            SECS(10),
        )
        .unwrap();
    let log = log.as_str().unwrap().to_string();
    println!("activity log of the large incident:\n{log}");
    assert!(
        log.contains("alert Build noise") && log.contains("this incident"),
        "{log}"
    );
    let bare = b
        .eval("(document.querySelector('#activity-log').innerText.match(/\\b[0-7][0-9A-HJKMNP-TV-Z]{25}\\b/) || [null])[0]")
        .unwrap();
    assert_eq!(bare, Value::Null, "an id left bare in the activity log: {log}");
    // The evidence pages through each kind: the 500 processes, 100 at a time.
    b.eval(&format!(
        "delete document.body.dataset.evidenceLoaded; location.hash = '#/incident/{big_id}?tab=evidence'; true"
    ))
    .unwrap();
    let pager = ".ev-pager[data-kind=process]";
    let processes = "[...document.querySelectorAll('#incident-entities tbody tr')].filter(r => r.cells[0].innerText === 'process').map(r => r.cells[1].innerText)";
    b.wait_for(
        "the first 100 processes of the evidence",
        &format!(
            "!!document.body.dataset.evidenceLoaded && (document.querySelector('{pager} .ev-showing') || {{}}).textContent === 'process: 1–100 of 500, most alerted first'"
        ),
        SECS(15),
    )
    .unwrap();
    let first: Vec<String> = serde_json::from_value(b.eval(processes).unwrap()).unwrap();
    assert_eq!(first.len(), 100, "{first:?}");
    b.eval(&format!("document.querySelector('{pager} .ev-next').click(); true"))
        .unwrap();
    b.wait_for(
        "the next 100 processes",
        &format!(
            "(document.querySelector('{pager} .ev-showing') || {{}}).textContent === 'process: 101–200 of 500, most alerted first'"
        ),
        SECS(15),
    )
    .unwrap();
    let second: Vec<String> = serde_json::from_value(b.eval(processes).unwrap()).unwrap();
    assert_eq!(second.len(), 100, "{second:?}");
    assert!(
        second.iter().all(|p| !first.contains(p)),
        "the second page repeats the first: {second:?}"
    );
    sign_out(&mut b);

    // The approver approves with a comment and watches the result arrive live.
    sign_in(&mut b, &base, &bob, "bob · approver");
    b.eval("location.hash = '#/actions'; true").unwrap();
    b.wait_for(
        "the approve button",
        "!!document.querySelector('#pending .approve')",
        SECS(10),
    )
    .unwrap();
    let shown = b.eval("document.querySelector('#pending').innerText").unwrap();
    let shown = shown.as_str().unwrap();
    assert!(
        shown.contains("\"kind\": \"isolate\"") && shown.contains(&device),
        "{shown}"
    );
    b.eval(
        "const c = document.querySelector('#pending .decision-comment'); c.value = 'approved in the console';
         c.dispatchEvent(new Event('input')); document.querySelector('#pending .approve').click(); true",
    )
    .unwrap();
    // An isolate is confirmed first: the panel restates the device, the command, the
    // incident (linked, by its title) and who approved so far; nothing is sent before.
    b.wait_for(
        "the approval confirmation",
        "!!document.querySelector('#confirm-approval:not([hidden]) .confirm')",
        SECS(10),
    )
    .unwrap();
    let panel = b.eval("document.querySelector('#confirm-approval').innerText").unwrap();
    let panel = panel.as_str().unwrap().to_string();
    assert!(
        panel.contains("\"kind\": \"isolate\"") && panel.contains(&device) && panel.contains("nobody yet"),
        "{panel}"
    );
    let link = b
        .eval("document.querySelector('#confirm-incident').getAttribute('href')")
        .unwrap();
    assert_eq!(link.as_str().unwrap(), format!("#/incident/{story_id}"), "{panel}");
    let (_, pending) = collector.get("/api/v1/actions?status=pending_approval").await.unwrap();
    assert_eq!(
        pending["actions"].as_array().map(Vec::len),
        Some(1),
        "still pending: {pending}"
    );
    b.eval("document.querySelector('#confirm-approval .confirm').click(); true")
        .unwrap();
    b.wait_for(
        "the isolate succeeding in the history",
        "[...document.querySelectorAll('#action-history tr')].some(r => r.innerText.includes('succeeded') && r.innerText.includes('isolat'))",
        SECS(30),
    )
    .unwrap();
    assert!(nft_table().is_some(), "the agent applied the isolation");
    b.eval(&format!("location.hash = '#/device/{device}'; true")).unwrap();
    b.wait_for(
        "the device page showing isolation",
        "(document.querySelector('#dev-isolation') || {}).textContent === 'isolated'",
        SECS(15),
    )
    .unwrap();
    // The incident's page shows the device isolated too.
    b.eval(&format!("location.hash = '#/incident/{story_id}?tab=assets'; true"))
        .unwrap();
    b.wait_for(
        "the incident's assets tab showing the isolated device",
        "(document.querySelector('#incident-devices') || {innerText: ''}).innerText.includes('isolated')",
        SECS(15),
    )
    .unwrap();
    // A quarantine of the story's file on the isolated device (which still reaches the
    // collector), proposed and approved through the API for the incident.
    let (status, body) = collector
        .post_as(
            "/api/v1/actions",
            &ann,
            json!({"device_id": device, "incident_id": story_id, "reason": "the phishing attachment",
                "action": {"kind": "quarantine_file", "path": agent.watch.join("invoice.docm"), "sha256": EICAR_SHA256}}),
        )
        .await
        .unwrap();
    assert_eq!(status, 201, "{body}");
    let quarantine = body["id"].as_str().unwrap().to_string();
    let (status, body) = collector
        .post_as(
            &format!("/api/v1/actions/{quarantine}/approve"),
            &bob,
            json!({"comment": "remove it"}),
        )
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    // Its activity log says it in words: who opened it with which alert (by title),
    // and the response actions proposed, approved and carried out (the quarantine as
    // where the file went), with no raw id in sight.
    b.eval(&format!("location.hash = '#/incident/{story_id}?tab=activity'; true"))
        .unwrap();
    b.wait_for(
        "the activity log with the response action",
        "(document.querySelector('#activity-log') || {innerText: ''}).innerText.includes('action proposed')",
        SECS(15),
    )
    .unwrap();
    let log = b
        .wait_for(
            "the quarantine carried out in the activity log",
            "(t => t.includes('moved to quarantine id') && t)(document.querySelector('#activity-log').innerText)",
            SECS(30),
        )
        .unwrap();
    let log = log.as_str().unwrap();
    println!("activity log of the story:\n{log}");
    assert!(
        log.contains("action succeeded")
            && log.contains("phishing payload ran on this device")
            && log.contains("action approved")
            && log.contains("approved in the console")
            && log.contains("invoice.docm moved to quarantine id"),
        "{log}"
    );
    assert!(!log.contains("alert 01"), "an alert named by its id: {log}");

    // Alice's mailbox: she clicked the mail's link and a forwarding inbox rule was set
    // on her mailbox. From the incident's evidence, her mailbox's page shows the
    // message with its verdict, the click and the rule.
    feed(
        &collector,
        &ann,
        "mailbox",
        &[
            json!({"Type": "UrlClickEvents", "Timestamp": rfc3339_ms(t0 + 2 * MIN),
                "NetworkMessageId": "7d1c0f3e-5b2a-4e8f-9c61-2a9e3b4c5d6e", "AccountUpn": "alice@contoso.com",
                "Url": "https://invoices.example/pay", "ActionType": "ClickAllowed", "IPAddress": "198.51.100.23"}),
            json!({"Type": "OfficeActivity", "Operation": "New-InboxRule", "OfficeWorkload": "Exchange",
                "UserId": "alice@contoso.com", "ClientIP": "198.51.100.23:50432", "OfficeId": "4b1e0c9a",
                "CreationTime": rfc3339_ms(t0 + 6 * MIN),
                "Parameters": [{"Name": "Name", "Value": "invoices"}, {"Name": "SubjectContainsWords", "Value": "invoice"},
                    {"Name": "ForwardTo", "Value": "drop@collector.example"}]}),
        ],
    )
    .await;
    b.eval(&format!("location.hash = '#/incident/{story_id}?tab=evidence'; true"))
        .unwrap();
    let mailbox_link = "document.querySelector('#incident-entities a.entity-link[href=\"#/entity/mailbox?value=alice%40contoso.com\"]')";
    b.wait_for(
        "the mailbox linked from the evidence",
        &format!("!!{mailbox_link}"),
        SECS(15),
    )
    .unwrap();
    // Files and addresses of the evidence have their pages too.
    for kind in ["file", "ip", "user"] {
        assert_eq!(
            b.eval(&format!(
                "!!document.querySelector('#incident-entities a.entity-link[href^=\"#/entity/{kind}?value=\"]')"
            ))
            .unwrap(),
            json!(true),
            "no {kind} page linked from the evidence"
        );
    }
    b.eval(&format!("{mailbox_link}.click(); true")).unwrap();
    let text = |id: &str| format!("(document.querySelector('#{id}') || {{innerText: ''}}).innerText");
    b.wait_for(
        "the mailbox page",
        &format!(
            "location.hash.startsWith('#/entity/mailbox') && {}.includes('Invoice overdue') && {}.includes('Malware')
             && {}.includes('invoices.example/pay') && {}.includes('New-InboxRule')",
            text("mailbox-messages"),
            text("mailbox-messages"),
            text("mailbox-clicks"),
            text("mailbox-rules")
        ),
        SECS(15),
    )
    .unwrap();
    let rules = b.eval(&text("mailbox-rules")).unwrap();
    assert!(
        rules
            .as_str()
            .unwrap()
            .contains("forwards it to drop@collector.example"),
        "{rules}"
    );
    // Its incidents include the story.
    assert_eq!(
        b.eval(&format!(
            "!!document.querySelector('#view a[href=\"#/incident/{story_id}\"]')"
        ))
        .unwrap(),
        json!(true)
    );
    screenshot(&mut b, "mailbox.png");
}
