//! The collector's TOML configuration: plain data, parsed and checked on its own
//! terms; the response settings are checked against the permission table and the
//! automation rules by their owner at load. Every setting has a default; `init`
//! writes this file with each one documented.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use thiserror::Error;

/// Settings file name inside the data dir.
pub const CONFIG_FILE: &str = "collector.toml";

const DAY_MS: u64 = 24 * 3_600_000;
/// How long an approved command waits for its device (to reconnect) by default.
pub const COMMAND_TTL_MS: u64 = 3 * DAY_MS;
/// How long a proposal waits for a decision before it expires, by default.
pub const PENDING_APPROVAL_TTL_MS: u64 = 7 * DAY_MS;

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// UDP address of the QUIC endpoint agents connect to.
    pub quic_listen: SocketAddr,
    /// `host:port` agents use to reach this collector; written into join tokens.
    pub public_addr: String,
    /// Name in the collector's server certificate; agents verify it.
    pub server_name: String,
    /// TCP address of the HTTP API and console.
    pub http_listen: SocketAddr,
    /// PEM certificate chain and key: when both are set the API is served over HTTPS.
    /// Relative paths are taken from the data dir.
    pub tls_cert_pem: Option<PathBuf>,
    pub tls_key_pem: Option<PathBuf>,
    pub ingest: IngestConfig,
    pub devices: DeviceConfig,
    pub actions: ActionsConfig,
    /// `[[automation]]` rules: alerts that propose response actions by themselves.
    pub automation: Vec<RuleConfig>,
    pub correlation: CorrelationConfig,
    pub feeds: FeedsConfig,
    /// `[[export]]` sinks: alerts and incident changes sent on to a SIEM, a case
    /// tool or a webhook (checked by `export::check_config` at start).
    pub export: Vec<ExportConfig>,
    /// Set by `serve --skip-integrity-check`, not by the file: run on a database that
    /// fails its quick check (to export what it still holds).
    #[serde(skip)]
    pub skip_integrity_check: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IngestConfig {
    /// Sustained alerts per second one agent may send; beyond it the collector
    /// stops reading from that agent and QUIC flow control slows it down.
    pub max_alerts_per_second_per_agent: u32,
    /// Alerts one agent may send in a burst above the sustained rate.
    pub burst_alerts_per_agent: u32,
    /// Largest frame an agent may send, in bytes (never above the protocol's 1 MiB).
    pub max_frame_bytes: u32,
    /// Threads verifying signatures; 0 means one per core.
    pub verify_threads: usize,
    /// Most alerts committed in one transaction.
    pub writer_max_batch_alerts: usize,
    /// Page cache of the writer's database connection, in MiB.
    pub writer_cache_mib: u32,
    /// Connected agents at most; further connections are refused.
    pub max_connections: u32,
    /// Receive and send buffers asked of the kernel for the QUIC endpoint's UDP
    /// socket (a reconnect storm's handshakes), in bytes.
    pub udp_recv_buffer_bytes: u32,
    pub udp_send_buffer_bytes: u32,
    /// With this many connections unauthenticated, a new one from an address not yet
    /// proven gets a stateless Retry first (0: always).
    pub retry_unvalidated_above: u32,
    /// An alert repeating a stored one (same device, rule and fold key) observed at
    /// most this long after its last (or before its first) observation folds into it:
    /// its count grows, no row is added. 0 turns folding off.
    pub fold_window_ms: u64,
    /// Longest span, first to last observation, one folded alert may cover; a flood
    /// lasting longer starts a new alert after it.
    pub fold_max_span_ms: u64,
}

impl IngestConfig {
    /// The store's fold settings.
    pub fn fold(&self) -> crate::store::Fold {
        crate::store::Fold {
            window_ms: self.fold_window_ms,
            max_span_ms: self.fold_max_span_ms,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DeviceConfig {
    /// A device not heard from for this long is shown offline.
    pub offline_after_ms: u64,
    /// How often revocations made by other processes (the CLI) are picked up.
    pub revocation_poll_ms: u64,
}

/// The response-action policy: defaults for every kind, then overrides per kind
/// (`[actions.policy.<kind>]`), laid over the permission table, which validates it.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ActionsConfig {
    /// How long a proposal waits for a decision before it expires.
    pub pending_ttl_ms: u64,
    /// How long an approved command waits for its device (to reconnect).
    pub command_ttl_ms: u64,
    /// Distinct approvers each action needs.
    pub approvals: u8,
    /// Whether a requester may approve (or reject) their own request.
    pub requester_may_approve: bool,
    /// Per action kind (isolate, release, quarantine_file, restore_file,
    /// delete_file, kill_process, collect_package).
    pub policy: BTreeMap<String, KindOverride>,
}

/// One kind's settings; what is left out comes from `[actions]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KindOverride {
    pub approvals: Option<u8>,
    pub requester_may_approve: Option<bool>,
    pub command_ttl_ms: Option<u64>,
}

impl Default for ActionsConfig {
    fn default() -> Self {
        ActionsConfig {
            pending_ttl_ms: PENDING_APPROVAL_TTL_MS,
            command_ttl_ms: COMMAND_TTL_MS,
            approvals: 1,
            requester_may_approve: false,
            policy: BTreeMap::new(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CorrelationConfig {
    /// An alert joins an incident that shares a strong entity with it when it is
    /// at most this long before the incident's first or after its last activity.
    pub window_ms: u64,
    /// An entity seen on more distinct devices than this, or shared by more open
    /// incidents than this, no longer links alerts (system binaries, resolvers).
    pub prevalence_threshold: usize,
    /// User principal name → the device-local account names it stands for.
    /// Names not listed map to the part before the "@".
    pub user_map: std::collections::HashMap<String, Vec<String>>,
    /// An alert observed further than this ahead of its arrival at the collector (a
    /// device clock running ahead) keeps that time for display but is correlated and
    /// sorted at its arrival.
    pub max_clock_skew_ms: u64,
    /// Alerts that share only their device (or only a system account on it) join an
    /// incident only within this long of that incident's nearest alert on the device.
    pub device_proximity_ms: u64,
    /// An incident spans at most this long from its first alert to its last; later
    /// alerts open a new incident that names the one it continues.
    pub max_span_ms: u64,
}

impl Default for CorrelationConfig {
    fn default() -> Self {
        CorrelationConfig {
            window_ms: 24 * 3_600_000,
            prevalence_threshold: 10,
            user_map: std::collections::HashMap::new(),
            max_clock_skew_ms: 5 * 60_000,
            device_proximity_ms: 30 * 60_000,
            max_span_ms: 72 * 3_600_000,
        }
    }
}

/// One `[[automation]]` entry as written in the config.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// Unique; the actor is `automation:<name>`.
    pub name: String,
    /// What to propose: isolate (the alert's device), kill_process (the alert's
    /// process), quarantine_file (the alert's file; needs its SHA-256),
    /// collect_package (from the alert's device).
    pub action: String,
    /// Approve (and dispatch) without waiting for a person.
    #[serde(default)]
    pub auto_approve: bool,
    /// For `isolate`: addresses, networks or names that stay reachable.
    #[serde(default)]
    pub allow: Vec<String>,
    /// Condition on alerts (exactly one of `alert` and `incident`).
    #[serde(default)]
    pub alert: Option<AlertCondition>,
    /// Condition on incidents.
    #[serde(default)]
    pub incident: Option<IncidentCondition>,
}

/// Every listed criterion must hold; an empty list (or no `min_severity`) does
/// not restrict. Only open incidents (active, in progress) match.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct IncidentCondition {
    /// The incident's severity at least this.
    pub min_severity: Option<String>,
    /// ATT&CK tactic ids (`TA0040`); any of them.
    pub tactics: Vec<String>,
    /// Alert sources (agent, identity, mailbox, collector, endpoint); all of them present.
    pub sources_all: Vec<String>,
}

/// Every listed criterion must hold; within a list, any entry may match; an
/// empty list (or no `min_severity`) does not restrict.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct AlertCondition {
    /// informational, low, medium, high or critical.
    pub min_severity: Option<String>,
    /// Rule ids, exactly.
    pub rule_ids: Vec<String>,
    /// ATT&CK technique ids; `T1059` also matches its sub-techniques (`T1059.001`).
    pub techniques: Vec<String>,
    /// ATT&CK tactic ids (`TA0002`).
    pub tactics: Vec<String>,
    /// agent, identity, mailbox, collector or endpoint.
    pub sources: Vec<String>,
    /// Device ids or hostnames.
    pub devices: Vec<String>,
}

/// Identity and mailbox feed imports: size limits and detection thresholds.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FeedsConfig {
    /// Largest file one import accepts (API body or CLI file), in bytes.
    pub max_import_bytes: usize,
    /// Largest single record (NDJSON line, CSV row, element of a JSON array), in bytes;
    /// larger ones are skipped.
    pub max_record_bytes: usize,
    /// Password spray: this many distinct users failing from one IP ...
    pub spray_min_users: u32,
    /// ... within this window.
    pub spray_window_ms: u64,
    /// Brute force: this many failed sign-ins of one user ...
    pub brute_force_min_failures: u32,
    /// ... within this window.
    pub brute_force_window_ms: u64,
    /// MFA fatigue: this many denied MFA prompts of one user ...
    pub mfa_fatigue_min_denials: u32,
    /// ... within this window.
    pub mfa_fatigue_window_ms: u64,
    /// Impossible travel: faster than this between two successful sign-ins ...
    pub impossible_travel_max_kmh: f64,
    /// ... and at least this far apart (nearby places are geolocation noise).
    pub impossible_travel_min_km: f64,
    /// Bulk mailbox access: this many mail items accessed by one actor (user or app) ...
    pub bulk_mail_access_min_items: u64,
    /// ... within this window.
    pub bulk_mail_access_window_ms: u64,
    /// An application's new credential followed by mailbox access by that application
    /// within this window; an MFA factor removed followed by a sign-in of its user, too.
    pub follow_up_window_ms: u64,
}

impl Default for FeedsConfig {
    fn default() -> Self {
        FeedsConfig {
            max_import_bytes: 64 << 20,
            max_record_bytes: 1 << 20,
            spray_min_users: 10,
            spray_window_ms: 3_600_000,
            brute_force_min_failures: 10,
            brute_force_window_ms: 600_000,
            mfa_fatigue_min_denials: 3,
            mfa_fatigue_window_ms: 600_000,
            impossible_travel_max_kmh: 900.0,
            impossible_travel_min_km: 500.0,
            bulk_mail_access_min_items: 1_000,
            bulk_mail_access_window_ms: 3_600_000,
            follow_up_window_ms: 86_400_000,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            quic_listen: SocketAddr::from(([0, 0, 0, 0], 4433)),
            public_addr: "127.0.0.1:4433".into(),
            server_name: "ward-collector".into(),
            http_listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            tls_cert_pem: None,
            tls_key_pem: None,
            ingest: IngestConfig::default(),
            devices: DeviceConfig::default(),
            actions: ActionsConfig::default(),
            automation: Vec::new(),
            correlation: CorrelationConfig::default(),
            feeds: FeedsConfig::default(),
            export: Vec::new(),
            skip_integrity_check: false,
        }
    }
}

impl Default for IngestConfig {
    fn default() -> Self {
        IngestConfig {
            max_alerts_per_second_per_agent: 5_000,
            burst_alerts_per_agent: 20_000,
            max_frame_bytes: ward_protocol::codec::MAX_AGENT_FRAME,
            verify_threads: 0,
            writer_max_batch_alerts: 8_192,
            writer_cache_mib: 256,
            max_connections: 20_000,
            udp_recv_buffer_bytes: 8 << 20,
            udp_send_buffer_bytes: 2 << 20,
            retry_unvalidated_above: 128,
            // Five agent aggregation windows (60 s): an agent's aggregate, delivered
            // when its window closes, and a backlog delivered in bursts still land
            // in the first alert; a pause longer than that shows as a new alert.
            fold_window_ms: 300_000,
            // A flood lasting all day shows as one alert per hour, so the alert list
            // and its incident keep moving while it lasts.
            fold_max_span_ms: 3_600_000,
        }
    }
}

impl Default for DeviceConfig {
    fn default() -> Self {
        DeviceConfig {
            offline_after_ms: 90_000,
            revocation_poll_ms: 1_000,
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
    /// Where the settings are: `explicit` (`--config`, as the Debian package's
    /// /etc/ward/collector.toml), else `collector.toml` in the data dir.
    pub fn path(data_dir: &Path, explicit: Option<&Path>) -> PathBuf {
        explicit.map_or_else(|| data_dir.join(CONFIG_FILE), Path::to_path_buf)
    }

    pub fn load_file(path: &Path) -> Result<Config, ConfigError> {
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
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), String> {
        let i = &self.ingest;
        if i.max_frame_bytes == 0 || i.max_frame_bytes > ward_protocol::codec::MAX_AGENT_FRAME {
            return Err(format!(
                "ingest.max_frame_bytes must be 1..={}",
                ward_protocol::codec::MAX_AGENT_FRAME
            ));
        }
        if i.max_alerts_per_second_per_agent == 0 || i.writer_max_batch_alerts == 0 || i.max_connections == 0 {
            return Err("ingest limits must be above zero".into());
        }
        if i.fold_window_ms > 0 && (i.fold_max_span_ms < i.fold_window_ms || i.fold_max_span_ms > 30 * 24 * 3_600_000) {
            return Err("ingest.fold_max_span_ms must be at least ingest.fold_window_ms and at most 30 days".into());
        }
        if !(2..=65_536).contains(&i.writer_cache_mib) {
            return Err("ingest.writer_cache_mib must be 2..=65536".into());
        }
        if self.tls_cert_pem.is_some() != self.tls_key_pem.is_some() {
            return Err("tls_cert_pem and tls_key_pem must be set together".into());
        }
        let c = &self.correlation;
        if c.window_ms == 0 || c.window_ms > 30 * 24 * 3_600_000 {
            return Err("correlation.window_ms must be 1..=2592000000 (30 days)".into());
        }
        if c.prevalence_threshold == 0 || c.prevalence_threshold > 10_000 {
            return Err("correlation.prevalence_threshold must be 1..=10000".into());
        }
        if c.device_proximity_ms == 0 || c.device_proximity_ms > c.window_ms {
            return Err("correlation.device_proximity_ms must be 1..=correlation.window_ms".into());
        }
        if c.max_span_ms < c.window_ms {
            return Err("correlation.max_span_ms must be at least correlation.window_ms".into());
        }
        if c.max_clock_skew_ms > 7 * 86_400_000 {
            return Err("correlation.max_clock_skew_ms must be at most 604800000 (7 days)".into());
        }
        if c.user_map.len() > 100_000 || c.user_map.values().any(|v| v.len() > 100) {
            return Err("correlation.user_map is too large".into());
        }
        let f = &self.feeds;
        if f.max_import_bytes == 0 || f.max_record_bytes == 0 || f.max_record_bytes > f.max_import_bytes {
            return Err("feeds.max_record_bytes must be above zero and at most feeds.max_import_bytes".into());
        }
        if f.spray_min_users < 2 || f.brute_force_min_failures < 2 || f.mfa_fatigue_min_denials < 2 {
            return Err("feeds thresholds (spray_min_users, brute_force_min_failures, mfa_fatigue_min_denials) must be at least 2".into());
        }
        if f.bulk_mail_access_min_items < 2 {
            return Err("feeds.bulk_mail_access_min_items must be at least 2".into());
        }
        if f.spray_window_ms == 0
            || f.brute_force_window_ms == 0
            || f.mfa_fatigue_window_ms == 0
            || f.bulk_mail_access_window_ms == 0
            || f.follow_up_window_ms == 0
        {
            return Err("feeds windows must be above zero".into());
        }
        let kmh_ok = f.impossible_travel_max_kmh.is_finite() && f.impossible_travel_max_kmh > 0.0;
        let km_ok = f.impossible_travel_min_km.is_finite() && f.impossible_travel_min_km >= 0.0;
        if !(kmh_ok && km_ok) {
            return Err(
                "feeds.impossible_travel_max_kmh must be above zero and impossible_travel_min_km not negative".into(),
            );
        }
        if !self.public_addr.contains(':') {
            return Err("public_addr must be host:port".into());
        }
        Ok(())
    }

    /// The documented config file `init` writes.
    pub fn template(public_addr: &str) -> String {
        DEFAULT_TOML.replace(
            "public_addr = \"127.0.0.1:4433\"",
            &format!("public_addr = \"{public_addr}\""),
        )
    }
}

const DEFAULT_TOML: &str = r#"# Ward collector configuration. Every setting is shown with its default.

# UDP address of the QUIC endpoint agents connect to.
quic_listen = "0.0.0.0:4433"
# host:port agents use to reach this collector; written into join tokens.
public_addr = "127.0.0.1:4433"
# Name in the collector's server certificate; agents verify it.
server_name = "ward-collector"
# TCP address of the HTTP API and console.
http_listen = "127.0.0.1:8080"
# Serve the API over HTTPS (TLS 1.2/1.3) with this PEM certificate chain (leaf first)
# and PEM private key (both or neither; relative paths are inside the data dir).
# tls_cert_pem = "/etc/ward/console.crt"
# tls_key_pem = "/etc/ward/console.key"

[ingest]
# Sustained alerts per second one agent may send; above it the collector stops
# reading from that agent and QUIC flow control slows it down (nothing is dropped).
max_alerts_per_second_per_agent = 5000
# Alerts one agent may send in a burst above the sustained rate.
burst_alerts_per_agent = 20000
# Largest frame an agent may send, in bytes (at most 1048576).
max_frame_bytes = 1048576
# Threads verifying signatures; 0 means one per core.
verify_threads = 0
# Most alerts committed in one transaction.
writer_max_batch_alerts = 8192
# Page cache of the database connection that writes alerts and incidents, in MiB
# (used as the database grows; correlation rewrites pages all over the incident tables).
writer_cache_mib = 256
# Connected agents at most; further connections are refused.
max_connections = 20000
# Kernel buffers of the QUIC endpoint's UDP socket, in bytes. A restarted collector
# meets every agent reconnecting at once: with Linux's default 208 KiB the socket
# drops their handshake packets and agents wait in retransmission back-off. The
# kernel caps the request at net.core.rmem_max / wmem_max (the Debian package raises
# them, /usr/lib/sysctl.d/60-ward-collector.conf); the collector logs what it got.
udp_recv_buffer_bytes = 8388608
udp_send_buffer_bytes = 2097152
# With this many connections still handshaking or enrolling, a new one from an
# address that has not proven itself gets a stateless QUIC Retry first: it echoes
# the token (one round trip) and only then costs a handshake, so a flood from spoofed
# addresses cannot take the handshake capacity; 0 retries every first connection.
retry_unvalidated_above = 128
# Repeats fold: an alert of the same device, rule and key entity (the file's folder
# and writing process, the process image and tree, the source IP) observed within
# this many milliseconds of a stored one is added to its count instead of stored
# as a new alert, so a flood opens one incident. 0 turns folding off.
fold_window_ms = 300000
# Longest span, in milliseconds, one folded alert covers; a longer flood starts a
# new alert after it.
fold_max_span_ms = 3600000

[devices]
# A device not heard from for this long is shown offline.
offline_after_ms = 90000
# How often revocations made from the command line are picked up.
revocation_poll_ms = 1000

[feeds]
# Identity (sign-in) and mailbox (email) imports: POST /api/v1/feeds/{identity,mailbox}
# or `ward-collector import identity|mailbox FILE`.
# Largest file one import accepts, in bytes (64 MiB).
max_import_bytes = 67108864
# Largest single record (NDJSON line, CSV row, element of a JSON array); larger ones are skipped and reported.
max_record_bytes = 1048576
# Password spray: this many distinct users failing from one IP within the window.
spray_min_users = 10
spray_window_ms = 3600000
# Brute force: this many failed sign-ins of one user within the window.
brute_force_min_failures = 10
brute_force_window_ms = 600000
# MFA fatigue: this many denied MFA prompts of one user within the window.
mfa_fatigue_min_denials = 3
mfa_fatigue_window_ms = 600000
# Impossible travel: two successful sign-ins of one user at least min_km apart
# and faster than max_kmh between them (an airliner flies about 900 km/h).
impossible_travel_max_kmh = 900.0
impossible_travel_min_km = 500.0
# Bulk mailbox access: this many mail items accessed (MailItemsAccessed) by one
# user or application within the window.
bulk_mail_access_min_items = 1000
bulk_mail_access_window_ms = 3600000
# A new credential on an application then mailbox access by it, or an MFA factor
# removed then a sign-in of its user, within this window (24 h).
follow_up_window_ms = 86400000

[actions]
# How long a proposed response action waits for approval before it expires (7 days).
pending_ttl_ms = 604800000
# How long an approved command waits for its device: an offline device gets it
# when it reconnects, until then (3 days).
command_ttl_ms = 259200000
# Distinct approvers every action needs (2 = two-person rule). Agents count only
# approvers other than the requester, against their own [response] min_approvals.
approvals = 1
# Whether whoever proposed an action may approve (or reject) it themselves.
requester_may_approve = false
# Per action kind (isolate, release, quarantine_file, restore_file, delete_file,
# kill_process, collect_package), any of the three settings above but pending_ttl_ms:
# [actions.policy.isolate]
# approvals = 2
# requester_may_approve = false
# command_ttl_ms = 86400000

# Automation rules: an alert (or an incident, below) matching a rule's condition
# proposes an action by itself, as actor "automation:<name>", once per rule and
# alert (and never a second isolate of a device already isolated or being isolated). It waits for approval
# unless auto_approve = true (refused for kinds needing more than one approver);
# agents count an automation approval as no one, so a device acts on auto-approved
# commands only for kinds its [response] min_approvals_by_kind sets to 0.
# Actions: isolate (the alert's device; allow = [...] stays reachable),
# kill_process (the alert's process), quarantine_file (the alert's file with its
# SHA-256), collect_package (from the alert's device). Every criterion listed must
# hold; within a list any entry may; rules see alerts stored after they were enabled.
# [[automation]]
# name = "isolate-on-ransomware"
# action = "isolate"
# auto_approve = false
# allow = []
# [automation.alert]
# min_severity = "high"              # informational, low, medium, high, critical
# rule_ids = []
# techniques = ["T1486"]             # also matches sub-techniques (T1486.001)
# tactics = []                       # e.g. "TA0040"
# sources = ["agent"]                # agent, identity, mailbox, collector, endpoint
# devices = []                       # device ids or hostnames
# A rule has exactly one condition: [automation.alert] above, or one on incidents,
# checked each time an alert joins an incident (in its state then; open incidents
# only). The action is proposed for each target among the incident's alerts (isolate
# and collect_package: each device; kill_process, quarantine_file: each alert's
# process or file on its device), tied to the incident, once per rule, incident and
# target; rules see alerts joining incidents after they were enabled. A device is a
# target only when the condition holds on its own alerts (severity by the incident's
# rule over them; plus feed alerts of a source named in sources_all; an analyst-set
# severity counts for all): another device's alert never triggers an action on it.
# [[automation]]
# name = "isolate-on-broad-incident"
# action = "isolate"
# [automation.incident]
# min_severity = "high"              # the incident's severity
# tactics = ["TA0040", "TA0008"]     # any of them in the incident
# sources_all = ["agent", "mailbox"] # all of them in the incident

[correlation]
# An alert joins an open incident that shares a strong entity with it (device, user,
# file hash, mailbox, URL, domain, uncommon IP) when it is at most this long before
# the incident's first or after its last activity (24 h).
window_ms = 86400000
# An entity seen on more distinct devices than this, or shared by more open
# incidents than this, stops linking alerts (system binaries, resolvers, admins).
prevalence_threshold = 10
# Alerts that share only their device (or only a system account on it) join an
# incident only within this long of its nearest alert on that device (30 min), so
# a busy host's unrelated alerts do not pile into one incident.
device_proximity_ms = 1800000
# An incident spans at most this long from its first alert to its last (72 h);
# later alerts open a new incident that names the one it continues.
max_span_ms = 259200000
# An alert observed more than this ahead of its arrival at the collector (a device
# clock running ahead) keeps that time for display but is correlated and sorted at
# its arrival (5 min; counted in ward_alerts_clock_skewed_total).
max_clock_skew_ms = 300000

# User principal names (sign-ins, mail recipients) → device-local account names. Names
# not listed map to the part before the "@" ("alice@contoso.com" → "alice").
[correlation.user_map]
# "a.smith@contoso.com" = ["asmith", "alice"]

# Export sinks: every stored alert and incident change sent on to a SIEM, a case tool
# or a webhook, each sink with its own filter, format and durable spool (export.db in
# the data dir). Kinds: syslog (RFC 5424 or CEF over tls, tcp or udp), webhook
# (Standard Webhooks signatures; ward or ocsf JSON), splunk_hec, elasticsearch (_bulk,
# ECS). All settings, formats and failure behaviour: docs/export.md.
# [[export]]
# name = "siem"
# kind = "syslog"
# transport = "tls"                  # tls, tcp, udp
# address = "siem.example.com:6514"
# ca_pem = "export-ca.pem"           # CAs to trust (data dir); default: the system's
# format = "rfc5424"                 # rfc5424 (Ward JSON message) or cef
# records = ["alerts", "incidents"]
# min_severity = "medium"
# sources = []                       # agent, identity, mailbox, collector, endpoint; [] = all
# spool_max_records = 1000000        # past it, new records for this sink are dropped
# batch_records = 500
# timeout_ms = 10000
# retry_initial_ms = 1000            # doubled each failure, jittered
# retry_max_ms = 300000
# [[export]]
# name = "soar"
# kind = "webhook"
# url = "https://soar.example.com/hooks/ward"
# format = "ocsf"                    # ward or ocsf
# secrets = ["whsec_..."]            # every secret signs: add the new, then drop the old
"#;

/// One `[[export]]` sink. Which settings a kind needs (and allows) is checked by
/// `export::check_config`; every one is documented in docs/export.md.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ExportConfig {
    /// Names the sink in logs, metrics and its spool; unique.
    pub name: String,
    /// `syslog`, `webhook`, `splunk_hec` or `elasticsearch`.
    pub kind: String,
    /// What it receives: `alerts`, `incidents` (incident changes), or both.
    #[serde(default = "default_export_records")]
    pub records: Vec<String>,
    /// Alerts (and incidents) of at least this severity; none = all.
    #[serde(default)]
    pub min_severity: Option<String>,
    /// Alert sources (agent, identity, mailbox, collector, endpoint); an incident passes when
    /// any of its sources is listed. Empty = all.
    #[serde(default)]
    pub sources: Vec<String>,
    /// syslog: `rfc5424` (Ward JSON as the message) or `cef`; webhook, splunk_hec:
    /// `ward` or `ocsf`; elasticsearch: `ecs`.
    #[serde(default)]
    pub format: Option<String>,
    /// Records the sink's spool holds at most; past it new records for this sink
    /// are dropped and counted (`ward_export_dropped_total`).
    #[serde(default = "default_spool_max_records")]
    pub spool_max_records: u64,
    /// First wait after a failed delivery, doubled each failure up to `retry_max_ms`
    /// (each wait jittered between half and all of it).
    #[serde(default = "default_retry_initial_ms")]
    pub retry_initial_ms: u64,
    #[serde(default = "default_retry_max_ms")]
    pub retry_max_ms: u64,
    /// syslog: `host:port` of the receiver.
    #[serde(default)]
    pub address: Option<String>,
    /// syslog: `tls` (RFC 5425), `tcp` (octet counting, RFC 6587) or `udp` (RFC 5426).
    #[serde(default)]
    pub transport: Option<String>,
    /// syslog: facility number, 0-23 (default 13, log audit).
    #[serde(default)]
    pub facility: Option<u8>,
    /// webhook, splunk_hec, elasticsearch: the URL to POST to (http or https).
    #[serde(default)]
    pub url: Option<String>,
    /// TLS (syslog over tls, https URLs): PEM file of the CA certificates to trust
    /// (relative paths from the data dir). Required for TLS.
    #[serde(default)]
    pub ca_pem: Option<PathBuf>,
    /// TLS: the name the receiver's certificate must carry (default: the host of
    /// `address` or `url`).
    #[serde(default)]
    pub server_name: Option<String>,
    /// webhook: signing secrets (`whsec_` + base64); every one signs, so a receiver
    /// can roll to a new secret while the old one still verifies.
    #[serde(default)]
    pub secrets: Vec<String>,
    /// splunk_hec: the HEC token; elasticsearch: an API key (`Authorization: ApiKey`).
    #[serde(default)]
    pub token: Option<String>,
    /// elasticsearch: the index (or data stream) documents go to.
    #[serde(default)]
    pub index: Option<String>,
    /// Records sent in one delivery (one HTTP request, one burst of syslog messages).
    #[serde(default = "default_export_batch")]
    pub batch_records: u32,
    /// How long one delivery may take before it counts as failed.
    #[serde(default = "default_export_timeout_ms")]
    pub timeout_ms: u64,
}

fn default_export_records() -> Vec<String> {
    vec!["alerts".into(), "incidents".into()]
}
fn default_spool_max_records() -> u64 {
    1_000_000
}
fn default_retry_initial_ms() -> u64 {
    1_000
}
fn default_retry_max_ms() -> u64 {
    300_000
}
fn default_export_batch() -> u32 {
    500
}
fn default_export_timeout_ms() -> u64 {
    10_000
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn template_parses_to_the_defaults() {
        let parsed = Config::parse(&Config::template("10.1.2.3:4433")).unwrap();
        let defaults = Config::default();
        assert_eq!(parsed.public_addr, "10.1.2.3:4433");
        assert_eq!(parsed.quic_listen, defaults.quic_listen);
        assert_eq!(parsed.http_listen, defaults.http_listen);
        assert_eq!(parsed.ingest.max_frame_bytes, defaults.ingest.max_frame_bytes);
        assert_eq!(parsed.ingest.fold(), defaults.ingest.fold());
        assert_eq!(parsed.ingest.writer_cache_mib, defaults.ingest.writer_cache_mib);
        assert_eq!(parsed.devices.offline_after_ms, defaults.devices.offline_after_ms);
        assert_eq!(parsed.correlation.window_ms, defaults.correlation.window_ms);
        assert_eq!(
            parsed.correlation.prevalence_threshold,
            defaults.correlation.prevalence_threshold
        );
        let mapped = Config::parse("[correlation.user_map]\n\"a.smith@contoso.com\" = [\"asmith\"]").unwrap();
        assert_eq!(mapped.correlation.user_map["a.smith@contoso.com"], ["asmith"]);
        assert!(
            Config::parse("[correlation]\nwindow = 5")
                .unwrap_err()
                .contains("unknown field")
        );
        let (f, d) = (&parsed.feeds, &defaults.feeds);
        assert_eq!(
            (
                f.max_import_bytes,
                f.max_record_bytes,
                f.spray_min_users,
                f.spray_window_ms
            ),
            (
                d.max_import_bytes,
                d.max_record_bytes,
                d.spray_min_users,
                d.spray_window_ms
            )
        );
        assert_eq!(
            (
                f.brute_force_min_failures,
                f.brute_force_window_ms,
                f.mfa_fatigue_min_denials,
                f.mfa_fatigue_window_ms
            ),
            (
                d.brute_force_min_failures,
                d.brute_force_window_ms,
                d.mfa_fatigue_min_denials,
                d.mfa_fatigue_window_ms
            )
        );
        assert_eq!(
            (f.impossible_travel_max_kmh, f.impossible_travel_min_km),
            (d.impossible_travel_max_kmh, d.impossible_travel_min_km)
        );
        assert_eq!(
            (
                f.bulk_mail_access_min_items,
                f.bulk_mail_access_window_ms,
                f.follow_up_window_ms
            ),
            (
                d.bulk_mail_access_min_items,
                d.bulk_mail_access_window_ms,
                d.follow_up_window_ms
            )
        );
    }

    #[test]
    fn directory_detection_settings_are_checked() {
        assert!(
            Config::parse("[feeds]\nbulk_mail_access_min_items = 1")
                .unwrap_err()
                .contains("bulk_mail_access_min_items")
        );
        assert!(
            Config::parse("[feeds]\nfollow_up_window_ms = 0")
                .unwrap_err()
                .contains("windows must be above zero")
        );
        let c = Config::parse("[feeds]\nbulk_mail_access_min_items = 500\nfollow_up_window_ms = 3600000").unwrap();
        assert_eq!(
            (c.feeds.bulk_mail_access_min_items, c.feeds.follow_up_window_ms),
            (500, 3_600_000)
        );
    }

    #[test]
    fn the_packaged_config_is_the_template() {
        let packaged = include_str!("../../packaging/collector.toml");
        assert_eq!(packaged, Config::template("127.0.0.1:4433"));
    }

    #[test]
    fn an_explicit_config_path_wins_over_the_data_dir() {
        let data = Path::new("/var/lib/ward/collector");
        assert_eq!(Config::path(data, None), data.join(CONFIG_FILE));
        let etc = Path::new("/etc/ward/collector.toml");
        assert_eq!(Config::path(data, Some(etc)), etc);
    }

    #[test]
    fn bad_settings_are_refused_with_a_reason() {
        assert!(Config::parse("nonsense = 1").unwrap_err().contains("unknown field"));
        assert!(
            Config::parse("[ingest]\nfold_window_ms = 600000\nfold_max_span_ms = 60000")
                .unwrap_err()
                .contains("fold_max_span_ms")
        );
        assert!(Config::parse("[ingest]\nfold_window_ms = 0\nfold_max_span_ms = 0").is_ok());
        assert!(
            Config::parse("[ingest]\nmax_frame_bytes = 99999999")
                .unwrap_err()
                .contains("max_frame_bytes")
        );
        assert!(Config::parse("tls_cert_pem = \"/x\"").unwrap_err().contains("together"));
        assert!(
            Config::parse("[ingest]\nwriter_cache_mib = 1")
                .unwrap_err()
                .contains("writer_cache_mib")
        );
        assert!(
            Config::parse("[feeds]\nspray_min_users = 1")
                .unwrap_err()
                .contains("at least 2")
        );
        assert!(
            Config::parse("[feeds]\nnope = 1")
                .unwrap_err()
                .contains("unknown field")
        );
    }
}
