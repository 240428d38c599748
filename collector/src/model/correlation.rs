//! What correlation reads and writes, as the store keeps it: key kinds, the devices
//! keys name, incidents with the keys they hold, and the changes one step makes
//! (links with reasons, merges, incident rows, prevalence). The engine makes these;
//! the store saves and loads them.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::Arc;

use ward_protocol::Severity;

use super::incident::{Classification, Status};

/// What a key names; its order is the order reasons prefer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum KeyKind {
    /// A process tree on one device: the strongest device-local link.
    Process,
    Device,
    File,
    /// A recipient's mailbox (the organisation's own).
    Mailbox,
    /// A mail address that is not a recipient: a sender, a forwarding target.
    Sender,
    User,
    Url,
    Domain,
    Ip,
}

impl KeyKind {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyKind::Process => "process",
            KeyKind::Device => "device",
            KeyKind::File => "file",
            KeyKind::Mailbox => "mailbox",
            KeyKind::Sender => "sender",
            KeyKind::User => "user",
            KeyKind::Url => "url",
            KeyKind::Domain => "domain",
            KeyKind::Ip => "ip",
        }
    }
    pub const ALL: [KeyKind; 9] = [
        KeyKind::Process,
        KeyKind::Device,
        KeyKind::File,
        KeyKind::Mailbox,
        KeyKind::Sender,
        KeyKind::User,
        KeyKind::Url,
        KeyKind::Domain,
        KeyKind::Ip,
    ];

    pub fn parse(s: &str) -> Option<KeyKind> {
        KeyKind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// An enrolled device as correlation sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnownDevice {
    pub id: String,
    pub hostname: String,
    pub addresses: Vec<IpAddr>,
}

/// A key as one incident holds it: what the store keeps per incident and key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRow {
    /// `kind:value`, the key's identity in indexes and the store.
    pub key: Arc<str>,
    pub kind: KeyKind,
    /// How a person reads it when that is not its value (a device's hostname).
    pub label: Option<Arc<str>>,
    pub via: Option<Arc<str>>,
    pub first_ms: u64,
    pub last_ms: u64,
    /// The latest alert (by time) that carried it.
    pub last_alert: Arc<str>,
    /// For device keys: the times of the incident's alerts on the device, as runs
    /// whose gaps are at most the proximity window (the nearest alert is then within
    /// the window of a time exactly when the time is within it of a run).
    pub runs: Vec<(u64, u64)>,
    /// Only alerts that came in on a weak tie (the device alone) carried it: it ties
    /// the next alert no more strongly than the device does.
    pub weakly_held: bool,
    /// A device's alert named it (an address the device itself talked to).
    pub on_device: bool,
}

impl KeyRow {
    /// The normalized value: the key without its `kind:` prefix.
    pub fn value(&self) -> &str {
        self.key.get(self.kind.as_str().len() + 1..).unwrap_or_default()
    }

    pub fn label(&self) -> &str {
        self.label.as_deref().unwrap_or_else(|| self.value())
    }
}

/// An incident as the store keeps it, for [`Engine::load`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Incident {
    pub id: String,
    /// Creation order: lower is older.
    pub seq: u64,
    pub status: Status,
    pub assignee: Option<String>,
    pub classification: Option<Classification>,
    pub first_ms: u64,
    pub last_ms: u64,
    pub alert_severity: Severity,
    /// Kill-chain ranks of its tactics.
    pub tactics: BTreeSet<usize>,
    pub sources: BTreeSet<String>,
    pub alert_count: u64,
    pub first_title: String,
    pub several_titles: bool,
    pub keys: Vec<KeyRow>,
}

/// What the store keeps of an incident: its summary and the keys to save.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IncidentRow {
    pub id: Arc<str>,
    pub seq: u64,
    pub title: String,
    pub severity: Severity,
    pub alert_severity: Severity,
    pub sources: Vec<Arc<str>>,
    pub tactics: Vec<&'static str>,
    pub first_title: Arc<str>,
    pub several_titles: bool,
    pub first_ms: u64,
    pub last_ms: u64,
    pub alert_count: u64,
    pub devices: usize,
    pub users: usize,
    pub mailboxes: usize,
    pub keys: Vec<KeyRow>,
}

/// Why an alert went where it went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub alert_rowid: i64,
    pub alert_id: Arc<str>,
    pub incident_id: Arc<str>,
    pub reason: Arc<str>,
    /// True when the alert opened the incident.
    pub created: bool,
    /// The time it was correlated at (see [`AlertIn::at_ms`]).
    pub at_ms: u64,
    pub clock_note: Option<Arc<str>>,
    /// The incident a new incident continues (the older one reached its maximum span).
    pub continues: Option<Arc<str>>,
}

/// An incident merged into an older one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Merge {
    pub from: Arc<str>,
    pub into: Arc<str>,
    pub reason: String,
}

/// What the store must write after some alerts were correlated.
#[derive(Debug, Default)]
pub struct Changes {
    pub links: Vec<Link>,
    pub merges: Vec<Merge>,
    /// Incidents merged away, as they were just before (their rows must exist).
    pub merged_away: Vec<IncidentRow>,
    /// Incidents whose summary or keys changed (current state).
    pub incidents: Vec<IncidentRow>,
    /// Keys whose distinct contexts changed: key id → `d:<device id>` / `user:<name>`.
    pub prevalence: Vec<(Arc<str>, Vec<Arc<str>>)>,
}
