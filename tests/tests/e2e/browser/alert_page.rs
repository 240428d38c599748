//! The alert page in a real headless Chromium: alerts a real agent raised from a
//! built-in rule, a shipped SigmaHQ rule and a pushed rule, opened from the incident
//! page's alerts tab and the device page, show the rule's description, references
//! (only web links), level, author, license and source link, ATT&CK with names, the
//! incident, the ancestry and the signature check. Screenshot into docs/screenshots/
//! with `WARD_UPDATE_SCREENSHOTS=1`.

use std::time::Duration;

use ward_tests::browser::{Browser, chromium_path};

use crate::alert_page::{page, three_alerts};
use crate::browser::console::{screenshot, sign_in, sign_out};

const SECS: fn(u64) -> Duration = Duration::from_secs;

fn text(b: &mut Browser, selector: &str) -> String {
    b.eval(&format!(
        "(document.querySelector({}) || {{}}).innerText || ''",
        serde_json::to_string(selector).unwrap()
    ))
    .unwrap()
    .as_str()
    .unwrap_or_default()
    .to_string()
}

/// Opens `#/alert/{id}` by clicking its link on the page in view, and waits for it.
fn open_alert(b: &mut Browser, from: &str, id: &str) {
    let link = format!("{from} a[href=\"#/alert/{id}\"]");
    b.wait_for(
        &format!("a link to alert {id} in {from}"),
        &format!("!!document.querySelector({})", serde_json::to_string(&link).unwrap()),
        SECS(10),
    )
    .unwrap();
    b.eval(&format!(
        "document.querySelector({}).click(); true",
        serde_json::to_string(&link).unwrap()
    ))
    .unwrap();
    b.wait_for(
        &format!("the page of alert {id}"),
        &format!("document.body.dataset.alertRendered === {:?}", id),
        SECS(10),
    )
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_alert_page_shows_the_rules_context_in_a_real_browser() {
    // Fails (never skips) with the reason when Chromium is missing.
    chromium_path().unwrap();
    let (collector, agent, [builtin, sigmahq, pushed]) = three_alerts().await;
    let incident = page(&collector, &sigmahq).await["incidents"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    // An alert of a rule this collector never recorded (put on a device by hand).
    let join = collector.join_token(1, "1h").unwrap();
    let mut other = ward_tests::TestDevice::enroll(&join, "hand-ruled").await.unwrap();
    other.connect().await.unwrap();
    let mut a = other.next_alert();
    a.rule.id = "local-rule-0001".into();
    a.rule.title = "Rule Put On The Device By Hand".into();
    // Where its process ran (protocol 1.6), shown in its own card.
    a.entities.push(ward_protocol::Entity::ProcessContext {
        pid: 4242,
        start_time_ms: 1_760_000_000_000,
        cwd: "/var/www".into(),
        tty: "pts/7".into(),
        session_id: Some(12),
        login_uid: Some(1000),
        login_user: Some("alice".into()),
        cgroup: "/system.slice/docker-4f1c0de2a9b8e7d6.scope".into(),
        container_id: Some("4f1c0de2a9b8e7d6".into()),
        mnt_ns: Some(4_026_532_301),
        pid_ns: Some(4_026_532_304),
        host_namespaces: Some(false),
    });
    let unknown = a.id.to_string();
    let signed = other.sign(&a);
    other.send_batch(vec![signed]).await.unwrap();
    // A viewer may read the page.
    let vic = collector.user("vic", "viewer").unwrap();
    let base = format!("http://{}", collector.http);
    let mut b = Browser::launch().unwrap();
    sign_in(&mut b, &base, &vic, "vic · viewer");

    // From the incident's alerts tab, where ATT&CK shows with names.
    b.eval(&format!("location.hash = '#/incident/{incident}?tab=alerts'; true"))
        .unwrap();
    b.wait_for(
        "the incident's alerts tab",
        &format!("document.body.dataset.incidentRendered === {incident:?}"),
        SECS(10),
    )
    .unwrap();
    b.wait_for(
        "ATT&CK names in the alerts tab",
        "(document.querySelector('#incident-alerts') || {innerText: ''}).innerText.includes('T1140 Deobfuscate/Decode Files or Information')",
        SECS(10),
    )
    .unwrap();
    open_alert(&mut b, "#incident-alerts", &sigmahq);
    let description = text(&mut b, "#alert-description");
    assert!(
        description.starts_with("Detects the presence of a base64 version of the shebang"),
        "{description}"
    );
    assert!(text(&mut b, "#alert-level").contains("medium"));
    assert_eq!(
        text(&mut b, "#alert-author"),
        "Nasreddine Bencherchali (Nextron Systems)"
    );
    assert_eq!(text(&mut b, "#alert-license"), "Detection Rule License (DRL) 1.1");
    assert!(text(&mut b, "#alert-techniques").contains("T1140 Deobfuscate/Decode Files or Information"));
    assert!(text(&mut b, "#alert-incident").contains("Why linked"));
    assert!(text(&mut b, "#alert-ancestry").contains("IyEvYmluL2Jhc2gK-ward-alert-page"));
    assert_eq!(text(&mut b, "#alert-signature"), "verified");
    let links = b
        .eval("Array.from(document.querySelectorAll('#alert-rule a')).map((a) => a.href)")
        .unwrap();
    let links: Vec<String> = serde_json::from_value(links).unwrap();
    assert!(links.iter().any(|l| l.contains("trendmicro.com")), "{links:?}");
    assert!(
        links
            .iter()
            .any(|l| l.starts_with("https://github.com/SigmaHQ/sigma/blob/")
                && l.ends_with("proc_creation_lnx_base64_shebang_cli.yml")),
        "{links:?}"
    );
    no_sideways_scroll(&mut b);

    // From the device page: the built-in rule's alert.
    b.eval(&format!("location.hash = '#/device/{}'; true", agent.device_id))
        .unwrap();
    open_alert(&mut b, ".timeline", &builtin);
    assert!(text(&mut b, "#alert-description").contains("EICAR anti-malware test file"));
    assert!(text(&mut b, "#alert-references").contains("https://www.eicar.org/download-anti-malware-testfile/"));
    assert!(text(&mut b, "#alert-level").contains("high"));
    assert_eq!(text(&mut b, "#alert-license"), "Apache-2.0");
    assert!(text(&mut b, "#alert-source").contains("lnx_ward_known_bad_file_hash.yml"));
    no_sideways_scroll(&mut b);
    // A file alert: the screenshot shows no process tree of the machine running the test.
    screenshot(&mut b, "alert.png");

    // The pushed rule: its bad reference is no link, and the cut is said.
    b.eval(&format!("location.hash = '#/alert/{pushed}'; true")).unwrap();
    b.wait_for(
        "the pushed rule's alert page",
        &format!("document.body.dataset.alertRendered === {pushed:?}"),
        SECS(10),
    )
    .unwrap();
    let links = b
        .eval("Array.from(document.querySelectorAll('#alert-references a')).map((a) => a.getAttribute('href'))")
        .unwrap();
    assert_eq!(links, serde_json::json!(["https://example.org/runbook"]));
    assert!(!text(&mut b, "#alert-rule").contains("javascript:"));
    assert!(text(&mut b, "#alert-rule").contains("description cut to 4096 characters"));
    assert!(text(&mut b, "#alert-source").contains("pushed in rule pack 1"));
    no_sideways_scroll(&mut b);
    assert_eq!(
        b.eval("!!document.querySelector('#alert-move')").unwrap(),
        serde_json::json!(false),
        "a viewer cannot move alerts"
    );

    // The unknown rule: what the alert carries, and a note saying so.
    b.eval(&format!("location.hash = '#/alert/{unknown}'; true")).unwrap();
    b.wait_for(
        "the unknown rule's alert page",
        &format!("document.body.dataset.alertRendered === {unknown:?}"),
        SECS(10),
    )
    .unwrap();
    assert!(text(&mut b, "#alert-rule").contains("Rule Put On The Device By Hand"));
    assert!(
        text(&mut b, "#alert-rule-note").contains("knows no rule with this id"),
        "{}",
        text(&mut b, "#alert-rule")
    );
    assert_eq!(text(&mut b, "#alert-context-tty"), "pts/7");
    assert_eq!(text(&mut b, "#alert-context-cwd"), "/var/www");
    assert!(text(&mut b, "#alert-context-login").starts_with("alice"));
    assert_eq!(text(&mut b, "#alert-context-container"), "4f1c0de2a9b8e7d6");
    assert!(
        text(&mut b, "#alert-context-ns").contains("not the host's"),
        "{}",
        text(&mut b, "#alert-context")
    );
    assert!(text(&mut b, "#alert-entities").contains("tty pts/7"));

    // An analyst moves the alert out of its incident into a new one, from its page.
    let before = page(&collector, &pushed).await["incidents"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let ann = collector.user("ann", "analyst").unwrap();
    sign_out(&mut b);
    sign_in(&mut b, &base, &ann, "ann · analyst");
    b.eval(&format!("location.hash = '#/alert/{pushed}'; true")).unwrap();
    b.wait_for("the move form", "!!document.querySelector('#alert-move')", SECS(10))
        .unwrap();
    b.eval("document.querySelector('#alert-move-reason').value = 'not part of this story'; document.querySelector('#alert-move button').click(); true")
        .unwrap();
    b.wait_for(
        "the alert in a new incident",
        &format!("!!document.querySelector('#alert-incident a') && !document.querySelector('#alert-incident a').getAttribute('href').includes({before:?})"),
        SECS(10),
    )
    .unwrap();
    let after = page(&collector, &pushed).await;
    assert_ne!(after["incidents"][0]["id"].as_str(), Some(before.as_str()), "{after}");
}

/// Nothing runs under a card at 1,280 px: the page does not scroll sideways.
fn no_sideways_scroll(b: &mut Browser) {
    let wide = b
        .eval("document.documentElement.scrollWidth <= window.innerWidth")
        .unwrap();
    let over = b
        .eval("Array.from(document.querySelectorAll('#view *')).filter((e) => e.getBoundingClientRect().right > window.innerWidth).slice(0, 5).map((e) => e.tagName + '#' + e.id + '.' + e.className + ': ' + (e.innerText || '').slice(0, 60))")
        .unwrap();
    assert_eq!(wide, serde_json::json!(true), "the alert page scrolls sideways: {over}");
}
