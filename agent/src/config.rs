//! The agent's TOML configuration: parsed and validated without side effects.
//! Without a config file the defaults apply; `packaging/agent.toml` documents
//! every setting with its default.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use thiserror::Error;

use crate::sensor::SensorConfig;

#[derive(Debug, Clone, PartialEq, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub agent: AgentConfig,
    pub sensors: SensorConfig,
    pub detection: DetectionConfig,
    pub outbox: OutboxConfig,
    pub link: LinkConfig,
    pub response: ResponseConfig,
}

/// The device's own veto over commands, enforced whatever the collector says.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ResponseConfig {
    /// Allowed difference between the collector's clock and this device's.
    pub clock_skew_ms: u64,
    /// Independent approvals (besides the requester) each action needs.
    pub min_approvals: u8,
    /// Per action kind, overriding `min_approvals` (e.g. `isolate = 2` for a
    /// two-person rule; `0` accepts automation-approved commands of that kind).
    pub min_approvals_by_kind: std::collections::BTreeMap<String, u8>,
    /// Action kinds this device refuses: isolate, release, quarantine_file,
    /// restore_file, delete_file, kill_process, collect_package.
    pub disabled_actions: Vec<String>,
}

impl Default for ResponseConfig {
    fn default() -> Self {
        ResponseConfig {
            clock_skew_ms: ward_protocol::auth::DEFAULT_CLOCK_SKEW_MS,
            min_approvals: 1,
            min_approvals_by_kind: std::collections::BTreeMap::new(),
            disabled_actions: Vec::new(),
        }
    }
}

impl ResponseConfig {
    pub fn policy(&self) -> ward_protocol::CommandPolicy {
        let kinds = ward_protocol::ActionKind::ALL;
        ward_protocol::CommandPolicy {
            clock_skew_ms: self.clock_skew_ms,
            min_approvals: kinds
                .iter()
                .map(|k| {
                    let n = self.min_approvals_by_kind.get(k.as_str()).copied();
                    (*k, n.unwrap_or(self.min_approvals))
                })
                .collect(),
            disabled: kinds
                .iter()
                .filter(|k| self.disabled_actions.iter().any(|d| d == k.as_str()))
                .copied()
                .collect(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AgentConfig {
    /// Heartbeat period, milliseconds.
    pub heartbeat_interval_ms: u64,
    /// How often the inventory is collected and sent if it changed, milliseconds.
    pub inventory_interval_ms: u64,
    /// How often `status.json` in the state dir is refreshed, milliseconds.
    pub status_interval_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DetectionConfig {
    /// Extra Sigma rules loaded at start, besides the built-in pack (missing dir: none).
    pub rules_dir: PathBuf,
    /// Repeats of one rule with the same key entity (the file's folder and writing
    /// process, the process image and tree, the source IP) within this window
    /// become one alert with a count; 0 turns folding off.
    pub aggregate_window_ms: u64,
    /// At most this many alerts of one rule for new entities per aggregation window;
    /// the rest of that window fold into one alert with a count. 0: no limit.
    pub rule_max_new_alerts_per_window: u32,
    /// Run the vetted SigmaHQ Linux rules shipped with the agent (the default pack's
    /// upstream part, docs/detection-content.md).
    pub sigmahq_enabled: bool,
    /// Shipped rule ids to run although they are off by default (low-level SigmaHQ
    /// rules, excluded ones).
    pub enabled_rules: Vec<String>,
    /// Shipped rule ids (built-in or SigmaHQ) this device does not run.
    pub disabled_rules: Vec<String>,
    /// Every event detection judges, appended as JSON lines to this file (truncated at
    /// start) for `ward-agent rules test`; unset: nothing is recorded.
    pub record_events_path: Option<PathBuf>,
    /// Recording stops once the file holds this many bytes.
    pub record_events_max_bytes: u64,
}

impl DetectionConfig {
    /// Which shipped rules this device runs.
    pub fn pack_choice(&self) -> ward_detect::PackChoice {
        ward_detect::PackChoice {
            sigmahq: self.sigmahq_enabled,
            enabled: self.enabled_rules.clone(),
            disabled: self.disabled_rules.clone(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OutboxConfig {
    /// Disk the outbox may use; when full the oldest low-severity alerts go first.
    pub max_bytes: u64,
    /// Alerts per batch sent to the collector.
    pub batch_max_alerts: usize,
    /// Alerts held in memory while the outbox cannot store them (disk full, I/O
    /// errors), retried with back-off; past this the lowest-severity, oldest are
    /// dropped, counted and reported to the collector once storage works.
    pub memory_queue_max_alerts: usize,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LinkConfig {
    /// First reconnect delay; doubles up to `reconnect_max_ms`, with jitter.
    pub reconnect_min_ms: u64,
    pub reconnect_max_ms: u64,
    /// A batch not acknowledged within this time makes the agent check the connection:
    /// if the collector still answers at the QUIC level it is waited for (a busy
    /// collector), checking again every this long, up to 12 times; otherwise, or
    /// then, the connection is dropped and the batch sent again on a new one.
    pub ack_timeout_ms: u64,
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig {
            heartbeat_interval_ms: 30_000,
            inventory_interval_ms: 60_000,
            status_interval_ms: 2_000,
        }
    }
}

impl Default for DetectionConfig {
    fn default() -> Self {
        DetectionConfig {
            rules_dir: PathBuf::from("/etc/ward/rules.d"),
            aggregate_window_ms: 60_000,
            rule_max_new_alerts_per_window: 20,
            sigmahq_enabled: true,
            enabled_rules: Vec::new(),
            disabled_rules: Vec::new(),
            record_events_path: None,
            record_events_max_bytes: 256 * 1024 * 1024,
        }
    }
}

impl Default for OutboxConfig {
    fn default() -> Self {
        OutboxConfig {
            max_bytes: 64 * 1024 * 1024,
            batch_max_alerts: 256,
            memory_queue_max_alerts: 10_000,
        }
    }
}

impl Default for LinkConfig {
    fn default() -> Self {
        LinkConfig {
            reconnect_min_ms: 500,
            reconnect_max_ms: 30_000,
            ack_timeout_ms: 10_000,
        }
    }
}

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

impl Config {
    /// Loads `path`, or the defaults when no path is given.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let Some(path) = path else { return Ok(Config::default()) };
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Config::parse(&text).map_err(|message| ConfigError::Invalid {
            path: path.to_path_buf(),
            message,
        })
    }

    pub fn parse(text: &str) -> Result<Config, String> {
        let config: Config = toml::from_str(text).map_err(|e| e.to_string())?;
        if config.outbox.batch_max_alerts == 0 || config.outbox.max_bytes < 64 * 1024 {
            return Err("outbox.batch_max_alerts must be > 0 and outbox.max_bytes at least 65536".into());
        }
        if config.outbox.memory_queue_max_alerts == 0 {
            return Err("outbox.memory_queue_max_alerts must be > 0".into());
        }
        if config.link.reconnect_min_ms == 0 || config.link.reconnect_max_ms < config.link.reconnect_min_ms {
            return Err("link.reconnect_min_ms must be > 0 and not above link.reconnect_max_ms".into());
        }
        let kinds: Vec<&str> = ward_protocol::ActionKind::ALL.iter().map(|k| k.as_str()).collect();
        if let Some(bad) = config
            .response
            .disabled_actions
            .iter()
            .find(|d| !kinds.contains(&d.as_str()))
        {
            return Err(format!(
                "response.disabled_actions: unknown action {bad:?} (known: {})",
                kinds.join(", ")
            ));
        }
        if let Some(bad) = config
            .response
            .min_approvals_by_kind
            .keys()
            .find(|k| !kinds.contains(&k.as_str()))
        {
            return Err(format!(
                "response.min_approvals_by_kind: unknown action {bad:?} (known: {})",
                kinds.join(", ")
            ));
        }
        let d = &config.detection;
        let unknown: Vec<&str> = [&d.enabled_rules, &d.disabled_rules]
            .into_iter()
            .flat_map(|ids| ward_detect::defaultpack::unknown_ids(ids))
            .collect();
        if !unknown.is_empty() {
            return Err(format!(
                "detection.enabled_rules / disabled_rules: no shipped rule has the id {} (see docs/detection-content.md)",
                unknown.join(", ")
            ));
        }
        if config.agent.heartbeat_interval_ms < 1_000 {
            return Err("agent.heartbeat_interval_ms must be at least 1000".into());
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_example_is_the_defaults() {
        let shipped = include_str!("../../packaging/agent.toml");
        assert_eq!(Config::parse(shipped).unwrap(), Config::default());
        assert_eq!(Config::parse("").unwrap(), Config::default());
    }

    #[test]
    fn approvals_per_kind_override_the_default() {
        let c =
            Config::parse("[response]\nmin_approvals = 1\n[response.min_approvals_by_kind]\nisolate = 2\n").unwrap();
        let p = c.response.policy();
        assert_eq!(p.approvals_needed(ward_protocol::ActionKind::Isolate), 2);
        assert_eq!(p.approvals_needed(ward_protocol::ActionKind::Release), 1);
        let err = Config::parse("[response.min_approvals_by_kind]\nisolat = 2\n").unwrap_err();
        assert!(err.contains("unknown action \"isolat\""), "{err}");
    }

    #[test]
    fn shipped_rules_are_chosen_by_id() {
        let c = Config::parse("[detection]\ndisabled_rules = [\"f6a75cc7-b2be-5da6-b02b-1b770784aa68\"]\n").unwrap();
        assert!(c.detection.pack_choice().sigmahq);
        assert_eq!(c.detection.pack_choice().disabled.len(), 1);
        let err = Config::parse("[detection]\nenabled_rules = [\"no-such-rule\"]\n").unwrap_err();
        assert!(err.contains("no-such-rule"), "{err}");
    }

    #[test]
    fn bad_settings_are_refused() {
        assert!(Config::parse("[outbox]\nbatch_max_alerts = 0").is_err());
        assert!(Config::parse("[outbox]\nmemory_queue_max_alerts = 0").is_err());
        assert!(
            Config::parse("[agent]\nwhat = 1")
                .unwrap_err()
                .contains("unknown field")
        );
    }
}
