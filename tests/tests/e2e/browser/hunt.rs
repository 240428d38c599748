//! The hunting page in a real headless Chromium against a real collector (in a
//! network namespace of its own): an analyst runs a query over stored alerts and
//! reads its rows, pages through a larger result, sees a refused query's reason,
//! exports CSV (the file Chromium downloads is read back), saves a hunt, runs it
//! again from the saved list and deletes it. The page passes the layout and
//! accessibility checks (`browser::layout`).

use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use ward_collector::store::AlertSource;
use ward_protocol::Severity;
use ward_tests::browser::{Browser, chromium_path};
use ward_tests::*;

use crate::browser::console::{screenshot, sign_in};
use crate::browser::layout::check_view;
use crate::incidents::{feed, import, rule, user};

const SECS: fn(u64) -> Duration = Duration::from_secs;
const MIN: u64 = 60_000;
/// Alerts of the password-spray rule: more than one page of results.
const SPRAY: usize = 130;

fn js(s: &str) -> String {
    serde_json::to_string(s).unwrap()
}

#[test]
fn an_analyst_hunts_exports_and_saves_in_a_real_browser() {
    // Fails (never skips) with the reason when Chromium is missing.
    chromium_path().unwrap();
    in_own_namespace(
        &test_path(module_path!(), "an_analyst_hunts_exports_and_saves_in_a_real_browser"),
        scenario,
    );
}

/// Types `query` (source and range as given) and presses Run; waits for the
/// answer to be drawn.
fn hunt(b: &mut Browser, source: &str, range: &str, query: &str) {
    let before = b.eval("document.querySelector('#view').dataset.hunted || ''").unwrap();
    b.eval(&format!(
        "document.querySelector('#hunt-source').value = {}; document.querySelector('#hunt-range').value = {};
         document.querySelector('#hunt-q').value = {}; document.querySelector('#hunt-run').click(); true",
        js(source),
        js(range),
        js(query)
    ))
    .unwrap();
    b.wait_for(
        &format!("the hunt {query:?} answered"),
        &format!(
            "(() => {{ const v = document.querySelector('#view'); return !!v.dataset.hunted && v.dataset.hunted !== {}
               && document.querySelector('#hunt-q').value === {}; }})()",
            js(before.as_str().unwrap_or("")),
            js(query)
        ),
        SECS(30),
    )
    .unwrap();
}

/// The cells of the results table, row by row, as shown.
fn rows(b: &mut Browser) -> Vec<Vec<String>> {
    let v = b
        .eval("[...document.querySelectorAll('#hunt-results tbody tr')].map((tr) => [...tr.cells].map((c) => c.innerText))")
        .unwrap();
    serde_json::from_value(v).unwrap()
}

/// The column of the results table named `name`.
fn column(b: &mut Browser, name: &str) -> usize {
    let heads: Vec<String> = serde_json::from_value(
        b.eval("[...document.querySelectorAll('#hunt-results thead th')].map((t) => t.innerText.toLowerCase())")
            .unwrap(),
    )
    .unwrap();
    heads
        .iter()
        .position(|h| h == name)
        .unwrap_or_else(|| panic!("no column {name} in {heads:?}"))
}

fn text(b: &mut Browser, selector: &str) -> String {
    b.eval(&format!(
        "(document.querySelector({}) || {{}}).innerText || ''",
        js(selector)
    ))
    .unwrap()
    .as_str()
    .unwrap_or_default()
    .to_string()
}

/// Waits for `name` to be downloaded completely into `dir`; its text.
fn downloaded(dir: &Path, name: &str) -> String {
    let path = dir.join(name);
    for _ in 0..300 {
        if !dir.join(format!("{name}.crdownload")).exists()
            && let Ok(t) = std::fs::read_to_string(&path)
            && t.ends_with('\n')
        {
            return t;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("{name} was not downloaded into {}", dir.display());
}

async fn scenario() {
    let lo = std::process::Command::new("ip")
        .args(["link", "set", "lo", "up"])
        .status()
        .expect("ip runs");
    assert!(lo.success(), "cannot bring up loopback in the namespace");
    let collector = Collector::start().unwrap();
    let ann = collector.user("ann", "analyst").unwrap();
    let now = now_ms();
    let mut alerts = Vec::new();
    for i in 0..SPRAY {
        alerts.push(feed(
            AlertSource::Identity,
            now - 50 * MIN + i as u64 * 1000,
            rule("spray", "Password spray", Severity::Medium, "T1110.003", &["TA0006"]),
            vec![user(&format!("user{i}@contoso.com"), None)],
        ));
    }
    for i in 0..3u64 {
        alerts.push(feed(
            AlertSource::Collector,
            now - 10 * MIN + i * 1000,
            rule("ssh", "New SSH key for root", Severity::High, "T1098.004", &["TA0003"]),
            vec![user("root", Some(0))],
        ));
    }
    // An old one, outside the default range of the last 24 hours.
    alerts.push(feed(
        AlertSource::Collector,
        now - 3 * 86_400_000,
        rule("ssh", "New SSH key for root", Severity::High, "T1098.004", &["TA0003"]),
        vec![user("root", Some(0))],
    ));
    import(&collector, &alerts);

    let downloads = tempfile::tempdir().unwrap();
    let base = format!("http://{}", collector.http);
    let mut b = Browser::launch().unwrap();
    b.allow_downloads(downloads.path()).unwrap();
    sign_in(&mut b, &base, &ann, "ann · analyst");
    b.eval("document.querySelector('#nav [data-nav=hunt]').click(); true")
        .unwrap();
    b.wait_for(
        "the hunting page's first answer",
        "location.hash.startsWith('#/hunt') && !!document.querySelector('#view').dataset.hunted",
        SECS(30),
    )
    .unwrap();

    // A query, its rows: the three recent SSH-key alerts for root, newest first.
    hunt(&mut b, "alerts", "24h", "rule ~ ssh and user = root");
    assert!(
        b.eval("location.hash").unwrap().as_str().unwrap().contains("q=rule"),
        "the query is in the URL"
    );
    let shown = rows(&mut b);
    assert_eq!(shown.len(), 3, "{shown:?}");
    let (rule_col, sev_col, ent_col, technique_col) = (
        column(&mut b, "rule"),
        column(&mut b, "severity"),
        column(&mut b, "entities"),
        column(&mut b, "techniques"),
    );
    for r in &shown {
        assert_eq!(r[rule_col], "New SSH key for root", "{r:?}");
        // ATT&CK names beside the ids.
        assert_eq!(r[technique_col], "T1098.004 SSH Authorized Keys", "{r:?}");
        assert_eq!(r[sev_col].trim(), "high", "{r:?}");
        assert!(r[ent_col].contains("user=root"), "{r:?}");
    }
    assert_eq!(text(&mut b, "#hunt-count"), "(3 matching)");
    // All time finds the old one too.
    hunt(&mut b, "alerts", "all", "rule ~ ssh and user = root");
    assert_eq!(rows(&mut b).len(), 4);

    // Paging: 130 spray alerts, 100 to a page.
    hunt(&mut b, "alerts", "24h", "rule = \"password spray\"");
    assert_eq!(rows(&mut b).len(), 100);
    assert_eq!(text(&mut b, "#hunt-showing"), "showing 1–100 of 130, newest first");
    b.eval("document.querySelector('#hunt-older').click(); true").unwrap();
    b.wait_for(
        "the second page",
        "document.querySelector('#hunt-showing').innerText === 'showing 101–130 of 130, newest first'
         && document.querySelectorAll('#hunt-results tbody tr').length === 30",
        SECS(30),
    )
    .unwrap();
    let last = rows(&mut b).pop().unwrap();
    assert!(
        last[ent_col].contains("user=user0@contoso.com"),
        "the oldest last: {last:?}"
    );
    b.eval("document.querySelector('#hunt-newer').click(); true").unwrap();
    b.wait_for(
        "the first page again",
        "document.querySelector('#hunt-showing').innerText.startsWith('showing 1–100')",
        SECS(30),
    )
    .unwrap();
    check_view(&mut b, "hunting");
    screenshot(&mut b, "hunting.png");

    // A refused query says why, and shows no stale rows.
    hunt(&mut b, "alerts", "24h", "rule ~ ssh or user = root");
    let err = text(&mut b, "#hunt-error");
    assert!(err.contains("expected \"and\" at position 11"), "{err}");
    assert_eq!(rows(&mut b).len(), 0);

    // Export: the CSV file Chromium saved holds the hunt's rows.
    hunt(&mut b, "alerts", "24h", "rule ~ ssh");
    b.eval("document.querySelector('#hunt-export').click(); true").unwrap();
    let csv = downloaded(downloads.path(), "ward-hunt-alerts.csv");
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(
        lines[0],
        "time,id,host,severity,rule,rule_id,source,count,techniques,entities"
    );
    assert_eq!(lines.len(), 4, "{csv}");
    assert!(
        lines[1..]
            .iter()
            .all(|l| l.contains(",high,New SSH key for root,ssh,collector,1,T1098.004,user=root")),
        "{csv}"
    );

    // Save, hunt something else, and run the saved hunt from the list.
    b.eval(&format!(
        "document.querySelector('#hunt-name').value = {}; document.querySelector('#hunt-save').click(); true",
        js("root ssh keys")
    ))
    .unwrap();
    b.wait_for(
        "the saved hunt in the list",
        "[...document.querySelectorAll('#hunt-saved .run-saved')].some((x) => x.innerText === 'root ssh keys')",
        SECS(10),
    )
    .unwrap();
    let saved_row = text(&mut b, "#hunt-saved tbody tr");
    assert!(
        saved_row.contains("rule ~ ssh") && saved_row.contains("Last 24 hours"),
        "{saved_row}"
    );
    hunt(&mut b, "alerts", "24h", "severity = medium");
    assert_eq!(rows(&mut b).len(), 100);
    b.eval("document.querySelector('#hunt-saved .run-saved').click(); true")
        .unwrap();
    b.wait_for(
        "the saved hunt run again",
        "document.querySelector('#hunt-q').value === 'rule ~ ssh' && document.querySelectorAll('#hunt-results tbody tr').length === 3
         && document.querySelector('#hunt-count').innerText === '(3 matching)'",
        SECS(30),
    )
    .unwrap();
    let (status, saved) = collector.get_as("/api/v1/hunt/saved", &ann).await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(saved["saved"][0]["window_ms"], Value::from(86_400_000));
    b.eval("document.querySelector('#hunt-saved .delete-saved').click(); true")
        .unwrap();
    b.wait_for(
        "the saved list emptied",
        "document.querySelector('#hunt-saved tbody').innerText.includes('None yet')",
        SECS(10),
    )
    .unwrap();
}
