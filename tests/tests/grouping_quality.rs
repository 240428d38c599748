//! Grouping quality on the labelled corpus (tests/fixtures/correlation): the
//! committed files are what the generator writes, the alerts use the built-in
//! rules as they are, and correlation with the default settings meets the recall
//! target (>= 0.90) and the time cases; precision is held at what was measured
//! (its 0.95 target is not met yet).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::OnceLock;

use ward_tests::corpus::{self, Corpus, Report};

fn committed() -> &'static Corpus {
    static C: OnceLock<Corpus> = OnceLock::new();
    C.get_or_init(|| Corpus::load(&corpus::fixture_dir()).unwrap())
}

fn report() -> &'static Report {
    static R: OnceLock<Report> = OnceLock::new();
    R.get_or_init(|| {
        let r = corpus::evaluate(committed()).unwrap();
        eprintln!("{}", r.render(committed()));
        r
    })
}

#[test]
fn the_committed_corpus_is_what_the_generator_writes() {
    let (devices, alerts) = corpus::generate::generate().to_files().unwrap();
    let dir = corpus::fixture_dir();
    let on_disk = std::fs::read_to_string(dir.join("alerts.ndjson")).unwrap();
    assert!(
        devices == std::fs::read_to_string(dir.join("devices.json")).unwrap() && alerts == on_disk,
        "tests/fixtures/correlation is stale: run `cargo run -p ward-tests --bin ward-corpus`"
    );
    assert_eq!(
        corpus::generate::generate().to_files().unwrap().1,
        alerts,
        "not deterministic"
    );
}

#[test]
fn agent_alerts_carry_the_built_in_rules_as_they_are() {
    for r in &committed().records {
        if r.alert.source != "agent" {
            continue;
        }
        let rule = &r.alert.rule;
        let found = ward_agent::detect::builtin::BUILTIN_RULES.iter().any(|(_, text)| {
            text.contains(&format!("id: {}", rule.id)) && text.contains(&format!("title: '{}'", rule.title))
        });
        assert!(
            found,
            "alert {} names rule {} '{}', not in the built-in pack",
            r.alert.id, rule.id, rule.title
        );
        assert!(!rule.tactics.is_empty(), "rule {} without tactics", rule.id);
    }
}

/// Recall meets its target (0.90). Precision does NOT yet meet its target (0.95):
/// measured 0.310 on 2026-12-06 (BENCHMARKS.md, issue 14's note: two attacks bridged
/// by a shared miner build, one by an admin's session and a spray's targets, users'
/// own activity near their attacks). The floor only keeps it from falling further.
#[test]
fn grouping_recall_meets_its_target_and_precision_does_not_fall() {
    let s = &report().full.score;
    assert!(
        s.recall >= 0.90,
        "recall {:.3} (target 0.90); see the report above",
        s.recall
    );
    assert!(
        s.precision >= 0.30,
        "precision {:.3} fell below the measured 0.310 (target 0.95); see the report above",
        s.precision
    );
}

#[test]
fn a_chain_recorded_in_2022_is_one_incident() {
    let a = report()
        .full
        .score
        .attacks
        .iter()
        .find(|a| a.label == "log4shell-2022")
        .unwrap();
    assert_eq!(
        (a.incidents, a.noise_pulled + a.other_attacks_pulled),
        (1, 0),
        "the replayed 2022 chain: {a:?}"
    );
}

#[test]
fn a_two_day_backlog_is_one_incident() {
    let a = report()
        .full
        .score
        .attacks
        .iter()
        .find(|a| a.label == "npm-miner-backlog")
        .unwrap();
    assert_eq!(a.incidents, 1, "the backlog's miner chain: {a:?}");
}

#[test]
fn a_far_future_device_changes_no_other_devices_incidents() {
    let r = report();
    assert!(r.skewed_alerts > 0);
    assert_eq!(
        r.skew_changed_others, 0,
        "alerts of other devices grouped differently because {} is 3 years ahead",
        r.skewed_device
    );
}
