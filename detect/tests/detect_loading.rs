//! Bad rule content is reported per file and skipped; it never panics, never stops
//! the good rules from loading, and never grows past the size guards.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use ward_detect::{Detector, MAX_RULE_FILE_BYTES, MAX_RULES, RuleErrorKind, builtin_rule_files, load_dir};
use ward_protocol::RuleFile;

fn file(name: &str, yaml: impl Into<String>) -> RuleFile {
    RuleFile {
        name: name.into(),
        yaml: yaml.into(),
    }
}

fn rule(id: &str, field: &str) -> String {
    format!(
        "title: T {id}\nid: {id}\nauthor: x\nlogsource: {{product: linux, category: process_creation}}\n\
         detection:\n  sel:\n    {field}: x\n  condition: sel\nlevel: low\n"
    )
}

#[test]
fn bad_rules_are_reported_with_their_file_and_skipped() {
    let hostile = [
        file("empty.yml", ""),
        file("not-yaml.yml", "title: [unclosed"),
        file("binary.yml", "\u{0}\u{1}\u{2}"),
        file("no-detection.yml", "title: x\nlogsource: {product: linux}\n"),
        file(
            "bad-condition.yml",
            rule("a", "CommandLine").replace("condition: sel", "condition: sel and and ("),
        ),
        file(
            "bad-regex.yml",
            rule("b", "CommandLine|re").replace(": x", ": '(unclosed'"),
        ),
        file("unknown-modifier.yml", rule("c", "CommandLine|frobnicate")),
        file(
            "undefined-selection.yml",
            rule("d", "CommandLine").replace("condition: sel", "condition: nope"),
        ),
        file(
            "deep.yml",
            format!("title: {}x{}", "[".repeat(10_000), "]".repeat(10_000)),
        ),
        file(
            "aliases.yml",
            "a: &a [1,1,1,1,1,1,1,1,1]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\nc: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\nd: [*c,*c,*c,*c,*c,*c,*c,*c,*c]\n",
        ),
        file("huge.yml", "#".repeat(MAX_RULE_FILE_BYTES + 1)),
        file(
            "good.yml",
            rule("11111111-0000-0000-0000-000000000001", "CommandLine|contains"),
        ),
        file("dup.yml", rule("11111111-0000-0000-0000-000000000001", "Image")),
        file(
            "correlation.yml",
            "title: c\ncorrelation:\n  type: event_count\n  rules: [x]\n  group-by: [User]\n  timespan: 1m\n  condition: {gte: 3}\n",
        ),
    ];
    let (det, errors) = Detector::load(&hostile);
    assert_eq!(det.stats().loaded, 1, "{errors:#?}");
    let files: Vec<&str> = errors.iter().map(|e| e.file.as_str()).collect();
    for name in [
        "empty.yml",
        "not-yaml.yml",
        "binary.yml",
        "no-detection.yml",
        "bad-condition.yml",
        "bad-regex.yml",
        "unknown-modifier.yml",
        "undefined-selection.yml",
        "deep.yml",
        "aliases.yml",
        "huge.yml",
        "dup.yml",
        "correlation.yml",
    ] {
        assert!(files.contains(&name), "{name} not reported: {errors:#?}");
    }
    assert!(
        errors
            .iter()
            .any(|e| matches!(e.kind, RuleErrorKind::FileTooLarge { .. }))
    );
    assert!(errors.iter().any(|e| matches!(e.kind, RuleErrorKind::DuplicateId(_))));
    // every error prints as "file (rule): reason"
    assert!(errors.iter().all(|e| e.to_string().starts_with(&e.file)));
    assert_eq!(Detector::validate(&hostile).len(), errors.len());
}

#[test]
fn a_pack_over_the_rule_limit_is_cut_and_reported() {
    let files: Vec<RuleFile> = (0..MAX_RULES + 3)
        .map(|i| {
            file(
                &format!("r{i}.yml"),
                rule(&format!("00000000-0000-0000-0000-{i:012}"), "CommandLine"),
            )
        })
        .collect();
    let (det, errors) = Detector::load(&files);
    assert_eq!(det.stats().loaded, MAX_RULES);
    assert_eq!(errors.len(), 3);
    assert!(
        errors
            .iter()
            .all(|e| matches!(e.kind, RuleErrorKind::TooManyRules { .. }))
    );
}

#[test]
fn builtin_and_extra_rules_load_together() {
    let mut files = builtin_rule_files();
    let n = files.len();
    files.push(file(
        "extra.yml",
        rule("22222222-0000-0000-0000-000000000001", "CommandLine"),
    ));
    let (det, errors) = Detector::load(&files);
    assert!(errors.is_empty());
    assert_eq!(det.stats().loaded, n + 1);
}

#[test]
fn load_dir_reads_yaml_files_recursively_and_reports_unreadable_dirs() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("sub")).unwrap();
    std::fs::write(
        dir.path().join("a.yml"),
        rule("33333333-0000-0000-0000-000000000001", "Image"),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("sub/b.yaml"),
        rule("33333333-0000-0000-0000-000000000002", "Image"),
    )
    .unwrap();
    std::fs::write(dir.path().join("README.md"), "not a rule").unwrap();
    let (files, errors) = load_dir(dir.path()).unwrap();
    assert!(errors.is_empty());
    let names: Vec<&str> = files.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(names, vec!["a.yml", "sub/b.yaml"]);
    assert!(load_dir(&dir.path().join("missing")).is_err());
}

#[test]
fn detection_state_can_move_across_threads() {
    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send>() {}
    send_sync::<Detector>();
    send::<ward_detect::Aggregator>();
    send::<ward_detect::Correlator>();
}

#[test]
fn a_rule_for_linux_alone_judges_every_primary_event_once() {
    use serde_json::{Value, json};
    use ward_detect::rulestest::event_from_partial;
    // No category and no service: the rule belongs to every primary bucket, and is
    // compiled once for all of them.
    let keyword = "title: K\nid: k-1\nauthor: x\nlogsource: {product: linux}\n\
                   detection:\n  keywords:\n    - 'evil-needle'\n  condition: keywords\nlevel: high\n";
    let (det, errors) = Detector::load(&[file("k.yml", keyword), file("p.yml", rule("p-1", "Image"))]);
    assert!(errors.is_empty(), "{errors:?}");
    let fired = |v: Value| {
        let Value::Object(m) = v else { panic!("not a map") };
        let ev = event_from_partial(1_700_000_000_000, m).unwrap();
        det.evaluate(&ev).into_iter().map(|d| d.rule.id).collect::<Vec<_>>()
    };
    // Keywords search the text each kind carries: a command line (the opener's for
    // a file access), an auth message, audit fields.
    let primary = [
        json!({"kind": "process", "exe": "/usr/bin/x", "cmdline": "x --evil-needle"}),
        json!({"kind": "file_access", "path": "/etc/shadow", "process": {"exe": "/usr/bin/cat", "cmdline": "cat evil-needle"}}),
        json!({"kind": "auth", "service": "sshd", "message": "evil-needle here"}),
        json!({"kind": "audit", "serial": 1, "record_type": "EXECVE", "record_types": ["EXECVE"],
               "fields": {"a0": "evil-needle"}}),
    ];
    for v in primary {
        assert_eq!(fired(v.clone()), ["k-1"], "{v}");
    }
    // Not primary: a connection is judged by network rules only.
    let conn = json!({"kind": "network", "op": "connect", "destination_ip": "10.0.0.1", "destination_port": 443,
                      "process": {"exe": "/usr/bin/x", "cmdline": "x --evil-needle"}});
    assert!(fired(conn).is_empty());
    // The bucket's own rules run beside it.
    assert_eq!(
        fired(json!({"kind": "process", "exe": "x", "cmdline": "evil-needle x"})),
        ["p-1", "k-1"]
    );
}
