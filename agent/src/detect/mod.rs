//! Detection: Sigma rules (rsigma) evaluated over sensor events. Pure: no IO at
//! match time and no clock (`now` is a parameter); reading rule files is the
//! separate [`load_dir`] / [`rulestest`] edge.

pub mod aggregate;
pub mod builtin;
pub mod correlate;
pub mod engine;
pub mod entities;
pub mod mapping;
pub mod rulestest;

pub use aggregate::{AggregatedDetection, Aggregator, AggregatorConfig};
pub use builtin::{BUILTIN_RULES, builtin_rule_files};
pub use correlate::Correlator;
pub use engine::{
    Detection, Detector, DetectorStats, LoadDirError, MAX_RULE_FILE_BYTES, MAX_RULES, RuleError, RuleErrorKind,
    load_dir,
};
pub use rulestest::{RulesTestError, RulesTestReport};
