//! Alerts that do not come signed from an agent: those the identity and mailbox
//! feeds raise, and those the collector raises itself. They carry no signature
//! (empty `signed_payload` and `signature`), sequence number 0 and their `source`;
//! they never go through a device's sequence tracking, so they open no gap.
//!
//! Their ids are chosen by the caller; a feed derives them from the records that
//! raised them, so importing the same file twice stores each alert once.

use ward_protocol::{Entity, RuleRef};

use super::{InsertOutcome, StoreError};

/// Where an alert came from, as stored in `alerts.source`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlertSource {
    /// Signed by an agent.
    Agent,
    /// Raised by the collector itself.
    Collector,
    /// Raised from the identity (sign-in) feed.
    Identity,
    /// Raised from the mailbox (email) feed.
    Mailbox,
    /// Raised by Sigma rules over other sensors' logs (the endpoint feed).
    Endpoint,
}

impl AlertSource {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertSource::Agent => "agent",
            AlertSource::Collector => "collector",
            AlertSource::Identity => "identity",
            AlertSource::Mailbox => "mailbox",
            AlertSource::Endpoint => "endpoint",
        }
    }
}

/// An unsigned alert to store.
#[derive(Debug, Clone)]
pub struct SourcedAlert {
    /// Unique; a repeat of an id already stored is counted as a duplicate.
    pub id: String,
    pub source: AlertSource,
    /// The device it concerns, when it concerns an enrolled one.
    pub device_id: Option<String>,
    pub observed_at_ms: u64,
    pub last_observed_at_ms: u64,
    pub rule: RuleRef,
    pub entities: Vec<Entity>,
    pub count: u32,
    /// What matched, as a JSON object of strings.
    pub matched: serde_json::Map<String, serde_json::Value>,
}

/// Alerts the collector raises itself (feeds, silence) and stores beside agent alerts.
pub trait SourcedStore {
    /// Stores unsigned alerts in one transaction; alerts whose id is already
    /// stored are skipped and counted as duplicates. Nothing folds here (imports,
    /// and tests that stand in for devices with `collector` alerts).
    fn insert_sourced_alerts(&mut self, alerts: &[SourcedAlert], now_ms: u64) -> Result<InsertOutcome, StoreError>;
}
