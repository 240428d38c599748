//! A rule pack: Sigma rules the collector distributes, signed as one unit.

use serde::{Deserialize, Serialize};

/// One Sigma rule file as the detection engineer wrote it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleFile {
    pub name: String,
    pub yaml: String,
}

/// A versioned set of rules; agents run the highest version they have verified.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RulePack {
    pub version: u64,
    pub created_at_ms: u64,
    pub rules: Vec<RuleFile>,
}
