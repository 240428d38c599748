//! Detection, shared by the agent (which runs it on every event) and the collector
//! (which validates a rule pack with it before pushing it, so both sides agree).
//!
//! Sigma rules (rsigma) evaluated over [`event::Event`]s. Pure: no IO at match time
//! and no clock (`now_ms` is a parameter); reading rule files is the separate
//! [`load_dir`] / [`rulestest::run`] edge. No async runtime, socket or database crate
//! among its dependencies (`tests/tests/e2e/sans_io.rs` checks `cargo tree`).
//!
//! Flow: [`Detector::load`] (the default pack from [`default_rule_files`]: built-in
//! and vetted SigmaHQ rules, + local and pushed rules) → per event [`Detector::evaluate`], or [`Correlator::process`] when the
//! rules include Sigma correlations (the `_with` forms take a [`VerdictMemo`] that
//! remembers the rules' verdicts for events whose rule-visible fields repeat) → [`Aggregator::push`] / [`Aggregator::flush`]
//! folds repeats into one alert with a count. [`mapping`] is the only place that
//! knows both Ward's event fields and Sigma's field names.

pub mod aggregate;
pub mod attack;
pub mod builtin;
pub mod context;
pub mod correlate;
pub mod defaultpack;
pub mod engine;
pub mod entities;
pub mod event;
pub mod logsource;
pub mod mapping;
pub mod memo;
pub mod rulestest;
pub mod wildcard;

pub use aggregate::{AggregatedDetection, Aggregator, AggregatorConfig};
pub use builtin::{BUILTIN_RULES, builtin_rule_files};
pub use correlate::Correlator;
pub use defaultpack::{PackChoice, default_rule_files, shipped_rule_files};
pub use engine::{
    Detection, Detector, DetectorStats, LoadDirError, MAX_RULE_FILE_BYTES, MAX_RULES, RuleError, RuleErrorKind,
    load_dir,
};
pub use memo::{MemoStats, VerdictMemo};
pub use rulestest::{RulesTestError, RulesTestReport};
