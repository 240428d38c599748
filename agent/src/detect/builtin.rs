//! The built-in Linux Sigma rule pack, embedded in the binary so the agent detects
//! with no files on disk. Content only: the rules live in `agent/rules/builtin/`,
//! each with true- and false-positive events in `agent/rules/tests/`.

use ward_protocol::RuleFile;

macro_rules! builtin {
    ($($name:literal),* $(,)?) => {
        /// `(file name, YAML)` of every built-in rule.
        pub const BUILTIN_RULES: &[(&str, &str)] = &[
            $(($name, include_str!(concat!("../../rules/builtin/", $name))),)*
        ];
    };
}

builtin!();

/// The built-in pack as rule files, ready for [`super::Detector::load`].
pub fn builtin_rule_files() -> Vec<RuleFile> {
    BUILTIN_RULES
        .iter()
        .map(|(name, yaml)| RuleFile {
            name: format!("builtin/{name}"),
            yaml: (*yaml).to_string(),
        })
        .collect()
}
