//! The labelled correlation corpus on disk: `devices.json` (the enrolled devices)
//! and `alerts.ndjson` (one alert a line, in arrival order, with its label, its
//! arrival time and the device it came from). Entities are in the collector's
//! stored JSON form (`ward_collector::entity::to_json`), so hashes read as hex.

use std::path::Path;

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use ward_collector::store::{AlertSource, SourcedAlert};
use ward_protocol::RuleRef;

/// The label of benign alerts.
pub const NOISE: &str = "noise";

/// An enrolled device of the corpus.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceSpec {
    pub hostname: String,
    pub addresses: Vec<String>,
    pub os: String,
    /// What the device is, for people reading the corpus.
    pub role: String,
}

/// One alert of the corpus.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// The attack it belongs to, or `noise`.
    pub label: String,
    /// What produced it (an attack step, a CI job, a cron run, an admin's session),
    /// for reading the corpus and the report; scoring uses only `label`.
    pub episode: String,
    /// Set on the alerts of a time case: `skewed-clock`, `replay-2022`, `backlog`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_case: Option<String>,
    /// The hostname of the device that sent it; none for feed alerts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    /// When the collector received it (its arrival), Unix ms.
    pub received_ms: u64,
    pub alert: AlertJson,
}

/// The alert as the collector stores it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertJson {
    pub id: String,
    /// `agent`, `identity` or `mailbox`.
    pub source: String,
    pub observed_at_ms: u64,
    pub last_observed_at_ms: u64,
    pub rule: RuleRef,
    pub entities: Vec<Value>,
    pub count: u32,
    pub matched: Map<String, Value>,
}

/// A loaded corpus.
#[derive(Debug, Clone, PartialEq)]
pub struct Corpus {
    pub devices: Vec<DeviceSpec>,
    pub records: Vec<Record>,
}

impl Record {
    /// The alert to store, with the device id the collector gave `device`.
    pub fn sourced(&self, device_id: Option<String>) -> Result<SourcedAlert> {
        let source = match self.alert.source.as_str() {
            "agent" => AlertSource::Agent,
            "identity" => AlertSource::Identity,
            "mailbox" => AlertSource::Mailbox,
            "collector" => AlertSource::Collector,
            other => bail!("alert {}: unknown source {other}", self.alert.id),
        };
        let entities = self
            .alert
            .entities
            .iter()
            .map(|e| {
                ward_collector::entity::from_json(e).with_context(|| format!("alert {}: bad entity {e}", self.alert.id))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(SourcedAlert {
            id: self.alert.id.clone(),
            source,
            device_id,
            observed_at_ms: self.alert.observed_at_ms,
            last_observed_at_ms: self.alert.last_observed_at_ms,
            rule: self.alert.rule.clone(),
            entities,
            count: self.alert.count,
            matched: self.alert.matched.clone(),
        })
    }

    pub fn is_attack(&self) -> bool {
        self.label != NOISE
    }
}

impl Corpus {
    /// Reads `devices.json` and `alerts.ndjson` from a directory.
    pub fn load(dir: &Path) -> Result<Corpus> {
        let devices: Vec<DeviceSpec> = serde_json::from_str(
            &std::fs::read_to_string(dir.join("devices.json"))
                .with_context(|| format!("reading {}", dir.join("devices.json").display()))?,
        )
        .context("devices.json")?;
        let text = std::fs::read_to_string(dir.join("alerts.ndjson"))
            .with_context(|| format!("reading {}", dir.join("alerts.ndjson").display()))?;
        let records = text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
            .map(|(n, l)| serde_json::from_str(l).with_context(|| format!("alerts.ndjson line {}", n + 1)))
            .collect::<Result<Vec<Record>>>()?;
        for r in &records {
            if let Some(d) = &r.device
                && !devices.iter().any(|s| &s.hostname == d)
            {
                bail!(
                    "alert {} names device {d}, which devices.json does not list",
                    r.alert.id
                );
            }
        }
        Ok(Corpus { devices, records })
    }

    /// The two files' contents, byte for byte as committed.
    pub fn to_files(&self) -> Result<(String, String)> {
        let mut devices = serde_json::to_string_pretty(&self.devices)?;
        devices.push('\n');
        let mut alerts = String::new();
        for r in &self.records {
            alerts.push_str(&serde_json::to_string(r)?);
            alerts.push('\n');
        }
        Ok((devices, alerts))
    }

    /// Writes both files into a directory.
    pub fn write(&self, dir: &Path) -> Result<()> {
        let (devices, alerts) = self.to_files()?;
        std::fs::create_dir_all(dir)?;
        std::fs::write(dir.join("devices.json"), devices)?;
        std::fs::write(dir.join("alerts.ndjson"), alerts)?;
        Ok(())
    }
}
