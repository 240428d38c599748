//! The incident queue as an analyst works it, in a real headless Chromium: the
//! columns an analyst expects (classification, alert count, first activity), the
//! free-text search kept in the URL, and ticking incidents to assign, set status,
//! classify, tag and merge them at once; each change checked through the API.

use std::time::Duration;

use serde_json::Value;
use ward_collector::store::AlertSource;
use ward_protocol::Severity;
use ward_tests::browser::{Browser, chromium_path};
use ward_tests::{Collector, now_ms};

use crate::browser::console::sign_in;
use crate::incidents::{feed, import, rule, user};

const SECS: fn(u64) -> Duration = Duration::from_secs;
const MIN: u64 = 60_000;

fn js(s: &str) -> String {
    serde_json::to_string(s).unwrap()
}

/// Ticks the queue rows of `ids` (their checkboxes, as a click does).
fn tick(b: &mut Browser, ids: &[&str]) {
    for id in ids {
        b.eval(&format!(
            "document.querySelector('#queue tr[data-id={}] input.pick').click(); true",
            js(id)
        ))
        .unwrap();
    }
    b.wait_for(
        "the bulk bar",
        &format!(
            "!document.querySelector('#bulk').hidden && document.querySelector('#bulk-count').textContent === '{} selected'",
            ids.len()
        ),
        SECS(10),
    )
    .unwrap();
}

async fn incident(collector: &Collector, id: &str) -> Value {
    let (s, b) = collector.get(&format!("/api/v1/incidents/{id}")).await.unwrap();
    assert_eq!(s, 200, "{b}");
    b
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_analyst_searches_and_changes_incidents_in_bulk_in_a_real_browser() {
    // Fails (never skips) with the reason when Chromium is missing.
    chromium_path().unwrap();
    let collector = Collector::start().unwrap();
    let ann = collector.user("ann", "analyst").unwrap();
    let now = now_ms();
    // Four people, one incident each; the first with three alerts over an hour.
    let mut alerts = Vec::new();
    for (i, title) in ["Impossible travel", "Password spray", "Phish delivered", "Mailbox rule"]
        .iter()
        .enumerate()
    {
        let source = if i < 2 {
            AlertSource::Identity
        } else {
            AlertSource::Mailbox
        };
        let repeats = if i == 0 { 3 } else { 1 };
        for k in 0..repeats {
            alerts.push(feed(
                source,
                now - (60 - 20 * k) * MIN + i as u64,
                rule("r", title, Severity::High, "T1078", &["TA0001"]),
                vec![user(&format!("worker{i}@contoso.com"), None)],
            ));
        }
    }
    import(&collector, &alerts);
    let mut ids = Vec::new();
    for a in [&alerts[0], &alerts[3], &alerts[4], &alerts[5]] {
        ids.push(collector.incident_of(&a.id).await.0);
    }
    let base = format!("http://{}", collector.http);
    let mut b = Browser::launch().unwrap();
    sign_in(&mut b, &base, &ann, "ann · analyst");
    b.eval("location.hash = '#/incidents'; true").unwrap();
    b.wait_for(
        "four incidents in the queue",
        "document.querySelectorAll('#queue tr.row').length === 4",
        SECS(10),
    )
    .unwrap();
    // The columns: alert count and first activity of the travel incident.
    let row = format!("#queue tr[data-id={}]", js(&ids[0]));
    let count = b
        .eval(&format!(
            "document.querySelector({}).innerText",
            js(&format!("{row} .alert-count"))
        ))
        .unwrap();
    assert_eq!(count, "3");
    let heads = b
        .eval("[...document.querySelectorAll('#queue th')].map((t) => t.innerText).join('|')")
        .unwrap();
    for h in ["Classification", "Alerts", "First activity", "Last activity"] {
        assert!(heads.as_str().unwrap().contains(h), "{heads}");
    }

    // Free text, kept in the URL (a saved filter is a bookmark).
    b.eval(
        "const q = document.querySelector('input[data-filter=q]'); q.value = 'spray';
         q.dispatchEvent(new KeyboardEvent('keydown', {key: 'Enter'})); true",
    )
    .unwrap();
    b.wait_for(
        "only the spray incident",
        &format!(
            "location.hash.includes('q=spray') && document.querySelectorAll('#queue tr.row').length === 1
             && !!document.querySelector('#queue tr[data-id={}]')",
            js(&ids[1])
        ),
        SECS(10),
    )
    .unwrap();
    b.eval("location.hash = '#/incidents'; true").unwrap();
    b.wait_for(
        "the whole queue again",
        "document.querySelectorAll('#queue tr.row').length === 4",
        SECS(10),
    )
    .unwrap();

    // Assign, set status, classify and tag two incidents at once.
    tick(&mut b, &[&ids[0], &ids[1]]);
    b.eval(
        "document.querySelector('#bulk-assignee').value = 'ann';
         document.querySelector('#bulk-assign').click(); true",
    )
    .unwrap();
    b.wait_for(
        "the queue redrawn without ticks",
        &format!(
            "document.querySelector('#bulk').hidden && document.querySelector({}).innerText.includes('ann')",
            js(&row)
        ),
        SECS(10),
    )
    .unwrap();
    for (control, value, button) in [
        ("#bulk-status", "in_progress", "#bulk-set-status"),
        ("#bulk-classification", "true_positive", "#bulk-classify"),
        ("#bulk-tag", "campaign-7", "#bulk-add-tag"),
    ] {
        tick(&mut b, &[&ids[0], &ids[1]]);
        b.eval(&format!(
            "document.querySelector({}).value = {}; document.querySelector({}).click(); true",
            js(control),
            js(value),
            js(button)
        ))
        .unwrap();
        b.wait_for(
            &format!("{button} applied"),
            "document.querySelector('#bulk').hidden",
            SECS(10),
        )
        .unwrap();
    }
    for id in &ids[..2] {
        let d = incident(&collector, id).await;
        let i = &d["incident"];
        assert_eq!(i["assignee"], "ann", "{i}");
        assert_eq!(i["status"], "in_progress", "{i}");
        assert_eq!(i["classification"], "true_positive", "{i}");
        assert_eq!(i["tags"], serde_json::json!(["campaign-7"]), "{i}");
    }
    for id in &ids[2..] {
        let d = incident(&collector, id).await;
        assert!(d["incident"]["assignee"].is_null(), "untouched: {d}");
    }
    b.wait_for(
        "the classification column",
        &format!(
            "document.querySelector({}).innerText === 'true positive'",
            js(&format!("{row} .classification"))
        ),
        SECS(10),
    )
    .unwrap();

    // Merge the two mailbox incidents into the first ticked.
    tick(&mut b, &[&ids[2], &ids[3]]);
    b.eval("document.querySelector('#bulk-merge').click(); true").unwrap();
    b.wait_for(
        "three incidents after the merge",
        "document.querySelectorAll('#queue tr.row').length === 3",
        SECS(10),
    )
    .unwrap();
    let merged = incident(&collector, &ids[3]).await;
    assert_eq!(merged["incident"]["status"], "redirected", "{merged}");
    assert_eq!(merged["incident"]["redirected_to"], ids[2].as_str(), "{merged}");
}
