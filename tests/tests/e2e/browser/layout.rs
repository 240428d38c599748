//! Layout and accessibility of every console view, checked in a real headless
//! Chromium at 1,280 px: nothing wider than the window (the page never scrolls
//! sideways), every element the Tab key reaches shows a focus indicator and every
//! visible control is reached by it, and the text passes WCAG AA contrast
//! (relative luminance per WCAG 2.x of each visible text's colour against its
//! effective background: at least 4.5:1, 3:1 for large text). [`check_view`] is
//! called on each view here and by the other browser tests on theirs; it fails
//! naming the offending elements.

use std::time::Duration;

use serde_json::json;
use ward_collector::store::AlertSource;
use ward_protocol::{Entity, Severity};
use ward_tests::browser::{Browser, chromium_path};
use ward_tests::*;

use crate::browser::console::sign_in;
use crate::incidents::{feed, import, rule, user};

const SECS: fn(u64) -> Duration = Duration::from_secs;
/// SHA-256 of the EICAR test file: a file's hash for the file page.
const EICAR_SHA256: &str = "275a021bbfb6489e54d471899f7db9d1663fc695ec2fe2a2c4538aabf651fd0f";

/// Elements wider than the window, as `tag#id.class (right edge)`; empty when the
/// page does not scroll sideways.
const OVERFLOW_JS: &str = r##"(() => {
  const name = (el) => el.tagName.toLowerCase() + (el.id ? "#" + el.id : "") +
    (typeof el.className === "string" && el.className.trim() ? "." + el.className.trim().split(/\s+/).join(".") : "");
  const doc = document.scrollingElement;
  if (doc.scrollWidth <= innerWidth) return [];
  const wide = [];
  for (const el of document.querySelectorAll("body *")) {
    const r = el.getBoundingClientRect();
    if (r.width > 0 && r.right > innerWidth + 0.5) wide.push(el);
  }
  // The innermost offenders: those with no offending child.
  const inner = wide.filter((el) => !wide.some((o) => o !== el && el.contains(o)));
  return [`page is ${doc.scrollWidth}px wide in a ${innerWidth}px window`]
    .concat(inner.slice(0, 10).map((el) => `${name(el)} reaches ${Math.round(el.getBoundingClientRect().right)}px`));
})()"##;

/// Text below WCAG AA contrast, one line per element with its ratio and colours.
const CONTRAST_JS: &str = r##"(() => {
  const parse = (s) => {
    const m = /^rgba?\(([\d.]+)[, ]+([\d.]+)[, ]+([\d.]+)(?:[,/ ]+([\d.]+%?))?\)$/.exec(s.trim());
    if (!m) return null;
    let a = m[4] === undefined ? 1 : m[4].endsWith("%") ? parseFloat(m[4]) / 100 : parseFloat(m[4]);
    return [parseFloat(m[1]), parseFloat(m[2]), parseFloat(m[3]), a];
  };
  const over = (top, under) => {
    const a = top[3];
    return [0, 1, 2].map((i) => top[i] * a + under[i] * (1 - a)).concat([1]);
  };
  const lum = (c) => {
    const [r, g, b] = c.slice(0, 3).map((v) => {
      v /= 255;
      return v <= 0.04045 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4);
    });
    return 0.2126 * r + 0.7152 * g + 0.0722 * b;
  };
  const ratio = (a, b) => {
    const [x, y] = [lum(a), lum(b)].sort((p, q) => q - p);
    return (x + 0.05) / (y + 0.05);
  };
  const name = (el) => el.tagName.toLowerCase() + (el.id ? "#" + el.id : "") +
    (typeof el.className === "string" && el.className.trim() ? "." + el.className.trim().split(/\s+/).join(".") : "") +
    (el.className && el.className.baseVal ? "." + el.className.baseVal.trim().split(/\s+/).join(".") : "");
  // The background the element's text is drawn on: its own and its ancestors'
  // background colours composited over the page's white canvas.
  const background = (el) => {
    const layers = [];
    for (let e = el; e && e.nodeType === 1; e = e.parentElement) {
      const c = parse(getComputedStyle(e).backgroundColor);
      if (c && c[3] > 0) layers.push(c);
      if (c && c[3] >= 1) break;
    }
    let bg = [255, 255, 255, 1];
    for (const c of layers.reverse()) bg = over(c, bg);
    return bg;
  };
  const opacity = (el) => {
    let o = 1;
    for (let e = el; e && e.nodeType === 1; e = e.parentElement) o *= parseFloat(getComputedStyle(e).opacity);
    return o;
  };
  const bad = [];
  for (const el of document.querySelectorAll("body *")) {
    if (el.closest("script, style, title, option, [hidden], [aria-hidden=true]")) continue;
    const own = [...el.childNodes].some((n) => n.nodeType === 3 && n.textContent.trim());
    if (!own) continue;
    const rects = el.getClientRects();
    const s = getComputedStyle(el);
    if (!rects.length || s.visibility === "hidden" || s.display === "none") continue;
    // WCAG exempts inactive controls.
    if (el.closest(":disabled")) continue;
    const svg = el instanceof SVGElement;
    const fg0 = parse(svg ? s.fill : s.color);
    if (!fg0) { bad.push(`${name(el)}: colour ${svg ? s.fill : s.color} not understood`); continue; }
    const bg = background(svg ? el.closest("div, section, body") : el);
    const fg = over([fg0[0], fg0[1], fg0[2], fg0[3] * opacity(el)], bg);
    const px = parseFloat(s.fontSize);
    const large = px >= 24 || (px >= 18.66 && parseInt(s.fontWeight, 10) >= 700);
    const need = large ? 3 : 4.5;
    const r = ratio(fg, bg);
    if (r + 1e-9 < need) {
      const text = el.textContent.trim().replace(/\s+/g, " ").slice(0, 40);
      bad.push(`${name(el)} "${text}": ${r.toFixed(2)}:1 < ${need}:1 (rgb(${fg.slice(0, 3).map(Math.round)}) on rgb(${bg.slice(0, 3).map(Math.round)}), ${px}px)`);
    }
  }
  return [...new Set(bad)].slice(0, 25);
})()"##;

/// Visible controls a keyboard user must be able to reach, as keys: a name and
/// its rank among controls of that name, so that a control redrawn by a poll
/// (a new element in the same place) keeps its key.
const CONTROLS_JS: &str = r##"(() => {
  const name = (el) => el.tagName.toLowerCase() + (el.id ? "#" + el.id : "") +
    (typeof el.className === "string" && el.className.trim() ? "." + el.className.trim().split(/\s+/).join(".") : "") +
    (el.dataset && Object.keys(el.dataset).length ? "[" + Object.entries(el.dataset).map(([k, v]) => k + "=" + v).join(",") + "]" : "");
  const controls = () => [...document.querySelectorAll("a[href], button, input, select, textarea, [tabindex], svg .node")]
    .filter((el) => !el.disabled && el.getClientRects().length && getComputedStyle(el).visibility !== "hidden"
      && !el.closest("[hidden]") && el.type !== "hidden");
  window.__wardKey = (el) => {
    const n = name(el);
    const same = controls().filter((c) => name(c) === n);
    return n + " #" + (same.indexOf(el) + 1);
  };
  return controls().map(window.__wardKey);
})()"##;

/// Where focus is after a Tab: its key (as [`CONTROLS_JS`] names controls), and
/// whether it shows a focus indicator; null when no element of the page has focus.
const FOCUS_JS: &str = r##"(() => {
  const el = document.activeElement;
  if (!el || el === document.body || el === document.documentElement) return null;
  const s = getComputedStyle(el);
  const outline = s.outlineStyle !== "none" && parseFloat(s.outlineWidth) > 0;
  const ring = outline || (s.boxShadow && s.boxShadow !== "none");
  const key = window.__wardKey(el);
  const what = key + (el.type ? `[type=${el.type}]` : "") + ` (outline ${s.outlineStyle} ${s.outlineWidth})`;
  return { key, ring: !!ring, what };
})()"##;

/// The most Tab presses one view gets: enough for every view the tests draw.
const MAX_TABS: usize = 400;

/// Checks the view on screen (named `view` in failures): no sideways scrolling at
/// 1,280 px, a focus indicator on everything Tab reaches and every control
/// reached, and AA contrast for all visible text.
pub(crate) fn check_view(b: &mut Browser, view: &str) {
    let width = b.eval("innerWidth").unwrap();
    assert_eq!(width, json!(1280), "the layout check runs at 1,280 px");
    let overflow = b.eval(OVERFLOW_JS).unwrap();
    assert_eq!(overflow, json!([]), "{view}: the page scrolls sideways: {overflow:#}");

    let contrast = b.eval(CONTRAST_JS).unwrap();
    assert_eq!(contrast, json!([]), "{view}: text below WCAG AA contrast: {contrast:#}");

    // Tab from the top of the page through every control.
    let controls: Vec<String> = serde_json::from_value(b.eval(CONTROLS_JS).unwrap()).unwrap();
    b.eval("document.activeElement && document.activeElement.blur(); window.scrollTo(0, 0); true")
        .unwrap();
    let mut reached = std::collections::HashSet::new();
    let mut no_ring = Vec::new();
    let mut off_page = 0;
    // Where focus went, for the failure message.
    let mut walk: Vec<String> = Vec::new();
    let mut last: Option<String> = None;
    for _ in 0..MAX_TABS.min(controls.len() * 2 + 10) {
        b.key("Tab").unwrap();
        let f = b.eval(FOCUS_JS).unwrap();
        let Some(key) = f["key"].as_str().map(str::to_string) else {
            walk.push("(none)".into());
            // Focus left the page (the browser's own UI): past the last control.
            off_page += 1;
            if !reached.is_empty() || off_page > 3 {
                break;
            }
            continue;
        };
        walk.push(key.clone());
        if f["ring"] != json!(true) {
            no_ring.push(f["what"].as_str().unwrap_or("?").to_string());
        }
        // Tab walks the parts of a date input one by one: the same element again.
        if reached.contains(&key) && last.as_ref() != Some(&key) {
            break; // came round again
        }
        reached.insert(key.clone());
        last = Some(key);
    }
    no_ring.dedup();
    assert!(
        no_ring.is_empty(),
        "{view}: focused by Tab without a visible focus indicator: {no_ring:?}"
    );
    let missed: Vec<&String> = controls.iter().filter(|c| !reached.contains(*c)).collect();
    assert!(
        missed.is_empty(),
        "{view}: controls Tab never reaches: {missed:?}\n(Tab went to: {})",
        walk.join(" → ")
    );
}

#[test]
fn every_view_fits_is_keyboard_navigable_and_readable() {
    // Fails (never skips) with the reason when Chromium is missing.
    chromium_path().unwrap();
    in_own_namespace(
        &test_path(module_path!(), "every_view_fits_is_keyboard_navigable_and_readable"),
        scenario,
    );
}

async fn scenario() {
    let lo = std::process::Command::new("ip")
        .args(["link", "set", "lo", "up"])
        .status()
        .expect("ip runs");
    assert!(lo.success(), "cannot bring up loopback in the namespace");
    let collector = Collector::start().unwrap();
    let ann = collector.user("ann", "analyst").unwrap();
    let bob = collector.user("bob", "approver").unwrap();
    // A device with alerts that name a long path and command line (long text must wrap).
    let token = collector.join_token(1, "1h").unwrap();
    let mut dev = TestDevice::enroll(&token, "web-01").await.unwrap();
    dev.connect().await.unwrap();
    let now = now_ms();
    let long = format!("/srv/{}/payload.sh", "very-long-directory-name-".repeat(8));
    let mut signed = Vec::new();
    for i in 0..4u64 {
        let mut a = dev.next_alert();
        a.observed_at_ms = now - 60_000 + i * 1000;
        a.last_observed_at_ms = a.observed_at_ms;
        a.rule = rule(
            "susp",
            "Suspicious shell from web server",
            Severity::High,
            "T1059.004",
            &["TA0002"],
        );
        a.entities = vec![
            Entity::File {
                path: long.clone(),
                sha256: None,
            },
            Entity::User {
                name: "www-data".into(),
                uid: Some(33),
            },
        ];
        signed.push(dev.sign(&a));
    }
    // One file (by its hash) at two paths: two copies, each with its own status.
    let mut sha = [0u8; 32];
    hex::decode_to_slice(EICAR_SHA256, &mut sha).unwrap();
    for (i, path) in ["/tmp/dropper.bin", "/var/tmp/dropper.bin"].iter().enumerate() {
        let mut a = dev.next_alert();
        a.observed_at_ms = now - 30_000 + i as u64;
        a.last_observed_at_ms = a.observed_at_ms;
        a.rule = rule("bad", "Known-bad file", Severity::Critical, "T1105", &["TA0011"]);
        a.entities = vec![Entity::File {
            path: path.to_string(),
            sha256: Some(sha),
        }];
        signed.push(dev.sign(&a));
    }
    dev.send_batch(signed).await.unwrap();
    import(
        &collector,
        &[feed(
            AlertSource::Identity,
            now - 30_000,
            rule("travel", "Impossible travel", Severity::Medium, "T1078", &["TA0001"]),
            vec![user("alice@contoso.com", None)],
        )],
    );
    let alert_id = loop {
        let (_, v) = collector.get("/api/v1/alerts?rule=susp").await.unwrap();
        if let Some(id) = v["alerts"][0]["id"].as_str() {
            break id.to_string();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let (incident, _) = collector.incident_of(&alert_id).await;
    let device = dev.id().to_string();
    let (status, body) = collector
        .post_as(
            "/api/v1/actions",
            &ann,
            json!({"device_id": device, "action": {"kind": "collect_package"}, "reason": "triage"}),
        )
        .await
        .unwrap();
    assert_eq!(status, 201, "{body}");
    let (status, body) = collector
        .post_as(
            "/api/v1/actions",
            &ann,
            json!({"device_id": device, "reason": "known bad",
                "action": {"kind": "quarantine_file", "path": "/tmp/dropper.bin", "sha256": EICAR_SHA256}}),
        )
        .await
        .unwrap();
    assert_eq!(status, 201, "{body}");

    let base = format!("http://{}", collector.http);
    let mut b = Browser::launch().unwrap();
    sign_in(&mut b, &base, &bob, "bob · approver");
    for (view, hash, ready) in [
        (
            "queue",
            "#/incidents".to_string(),
            "document.querySelectorAll('#queue tr.row').length >= 2",
        ),
        (
            "incident",
            format!("#/incident/{incident}"),
            "!!document.querySelector('svg .node') && !!document.querySelector('.tabs')",
        ),
        (
            "alert",
            format!("#/alert/{alert_id}"),
            "!!document.querySelector('#alert-entities')",
        ),
        (
            "device",
            format!("#/device/{device}"),
            "!!document.querySelector('#device-alerts-showing')",
        ),
        (
            "actions",
            "#/actions".to_string(),
            "!!document.querySelector('[data-action]')",
        ),
        (
            "devices",
            "#/devices".to_string(),
            "!!document.querySelector('#devices tr.row')",
        ),
        (
            "hunting",
            "#/hunt?source=alerts&range=all".to_string(),
            "!!document.querySelector('#view').dataset.hunted",
        ),
    ]
    .into_iter()
    .chain([
        (
            "file page",
            format!("#/entity/file?value={EICAR_SHA256}"),
            "document.querySelectorAll('#entity-copies tr.copy').length === 2",
        ),
        (
            "user page",
            "#/entity/user?value=www-data".to_string(),
            // Not the file page's alerts, still on screen while this one loads.
            "document.querySelector('#entity-value')?.innerText === 'www-data' && !!document.querySelector('#entity-alerts')",
        ),
    ])
    .chain(["assets", "evidence", "tree", "activity"].map(|tab| {
        (
            tab,
            format!("#/incident/{incident}?tab={tab}"),
            // After the whole incident's evidence replaced the first draw's tab (a
            // device's own Isolate button becomes its entity's buttons).
            "document.querySelector('.tabs button.active')?.dataset.tab === location.hash.split('tab=')[1]
             && document.querySelector('#tab').innerText.trim().length > 0 && !!document.body.dataset.evidenceLoaded",
        )
    })) {
        b.eval(&format!(
            "delete document.body.dataset.evidenceLoaded; location.hash = {}; true",
            serde_json::to_string(&hash).unwrap()
        ))
        .unwrap();
        b.wait_for(&format!("the {view} view"), ready, SECS(30)).unwrap();
        check_view(&mut b, view);
    }

    // The file's page: each copy with its own remediation (only one was quarantined).
    b.eval(&format!("location.hash = '#/entity/file?value={EICAR_SHA256}'; true"))
        .unwrap();
    let copies = b
        .wait_for(
            "the file's copies",
            "document.querySelectorAll('#entity-copies tr.copy').length === 2
             && [...document.querySelectorAll('#entity-copies tr.copy')].map((r) => r.innerText.replace(/\\s+/g, ' ')).join('\\n')",
            SECS(30),
        )
        .unwrap();
    let copies = copies.as_str().unwrap();
    let line = |path: &str| {
        copies
            .lines()
            .find(|l| l.contains(path))
            .unwrap_or_else(|| panic!("no copy at {path}: {copies}"))
    };
    assert!(
        line("/tmp/dropper.bin").contains("pending approval") && line("/tmp/dropper.bin").contains("web-01"),
        "{copies}"
    );
    assert!(line("/var/tmp/dropper.bin").contains("not remediated"), "{copies}");
    // From a hunt's results to the user's page.
    b.eval("location.hash = '#/hunt?source=alerts&range=all&q=user%20%3D%20www-data'; true")
        .unwrap();
    let link = "document.querySelector('#hunt-results a[href^=\"#/entity/user\"]')";
    b.wait_for("a user link in the results", &format!("!!{link}"), SECS(30))
        .unwrap();
    b.eval(&format!("{link}.click(); true")).unwrap();
    b.wait_for(
        "the user's page",
        "location.hash.startsWith('#/entity/user') && document.querySelector('#entity-value').innerText === 'www-data'
         && document.querySelectorAll('#entity-alerts tbody tr').length > 0",
        SECS(30),
    )
    .unwrap();

    // A poll that redraws the incident's alert list keeps a keyboard user's place:
    // focus on an alert's link, a new alert arrives, focus is on a link again.
    b.eval(&format!("location.hash = '#/incident/{incident}?tab=alerts'; true"))
        .unwrap();
    let links = "document.querySelectorAll('#tab a[href^=\"#/alert/\"]')";
    let before = b
        .wait_for("the alerts tab", &format!("{links}.length"), SECS(30))
        .unwrap();
    let focused = b
        .eval(&format!("{links}[0].focus(); document.activeElement === {links}[0]"))
        .unwrap();
    assert_eq!(focused, json!(true), "the first alert's link took no focus");
    let mut a = dev.next_alert();
    a.observed_at_ms = now_ms();
    a.last_observed_at_ms = a.observed_at_ms;
    a.rule = rule(
        "susp",
        "Suspicious shell from web server",
        Severity::High,
        "T1059.004",
        &["TA0002"],
    );
    a.entities = vec![Entity::User {
        name: "www-data".into(),
        uid: Some(33),
    }];
    dev.send_batch(vec![dev.sign(&a)]).await.unwrap();
    b.wait_for("the new alert drawn", &format!("{links}.length > {before}"), SECS(30))
        .unwrap();
    let still = b
        .eval(&format!(
            "[...{links}].includes(document.activeElement) || String(document.activeElement && document.activeElement.outerHTML).slice(0, 80)"
        ))
        .unwrap();
    assert_eq!(still, json!(true), "the redraw took focus away to {still}");
}
