//! A sink as configured (`[[export]]`), checked at start: its filter, how its
//! records are written, where they go, its spool's bound and its retry pacing.
//! Checking reads the CA file a TLS sink names; nothing connects.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use ward_protocol::Severity;

use super::format::{ecs, ocsf, ward_json};
use super::http::{WebhookSecret, hec_event};
use super::record::{Filter, Record};
use super::syslog::{rfc5424_cef, rfc5424_json};
use crate::config::ExportConfig;

/// Where the system's CA bundle is (Debian's ca-certificates), for TLS sinks that
/// name no `ca_pem`.
const SYSTEM_ROOTS: &str = "/etc/ssl/certs/ca-certificates.crt";

/// How a record becomes the bytes spooled for a sink.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// RFC 5424 with Ward's JSON as the message.
    SyslogJson {
        facility: u8,
    },
    /// RFC 5424 carrying CEF.
    SyslogCef {
        facility: u8,
    },
    WardJson,
    Ocsf,
    HecWard,
    HecOcsf,
    Ecs,
}

impl Encoding {
    /// Its name as the console shows it.
    pub fn label(&self) -> &'static str {
        match self {
            Encoding::SyslogJson { .. } => "rfc5424",
            Encoding::SyslogCef { .. } => "cef",
            Encoding::WardJson | Encoding::HecWard => "ward",
            Encoding::Ocsf | Encoding::HecOcsf => "ocsf",
            Encoding::Ecs => "ecs",
        }
    }

    pub fn encode(&self, r: &Record, hostname: &str) -> Vec<u8> {
        let hec = |event: serde_json::Value| {
            let (at, sourcetype) = match r {
                Record::Alert(a) => (a.alert.observed_at_ms, "ward:alert"),
                Record::Incident(i) => (i.at_ms(), "ward:incident"),
            };
            let sourcetype = if matches!(self, Encoding::HecOcsf) {
                "ocsf"
            } else {
                sourcetype
            };
            hec_event(at, hostname, sourcetype, &event)
        };
        match *self {
            Encoding::SyslogJson { facility } => rfc5424_json(r, facility, hostname).into_bytes(),
            Encoding::SyslogCef { facility } => rfc5424_cef(r, facility, hostname).into_bytes(),
            Encoding::WardJson => ward_json(r).to_string().into_bytes(),
            Encoding::Ocsf => ocsf(r).to_string().into_bytes(),
            Encoding::HecWard => hec(ward_json(r)),
            Encoding::HecOcsf => hec(ocsf(r)),
            Encoding::Ecs => ecs(r).to_string().into_bytes(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyslogTransport {
    Tls,
    Tcp,
    Udp,
}

/// TLS settings of a sink: whom to trust and the name to check.
#[derive(Clone)]
pub struct Tls {
    pub config: Arc<rustls::ClientConfig>,
    pub server_name: ServerName<'static>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls").field("server_name", &self.server_name).finish()
    }
}

#[derive(Debug, Clone)]
pub enum Destination {
    Syslog {
        address: String,
        transport: SyslogTransport,
        tls: Option<Tls>,
    },
    Webhook {
        url: String,
        secrets: Vec<WebhookSecret>,
        tls: Option<Tls>,
    },
    SplunkHec {
        url: String,
        token: String,
        tls: Option<Tls>,
    },
    Elasticsearch {
        /// The `_bulk` endpoint.
        url: String,
        index: String,
        api_key: Option<String>,
        tls: Option<Tls>,
    },
}

impl Destination {
    /// What kind of receiver it is, as the console shows it (no address or secret).
    pub fn label(&self) -> &'static str {
        match self {
            Destination::Syslog { transport, .. } => match transport {
                SyslogTransport::Tls => "syslog-tls",
                SyslogTransport::Tcp => "syslog-tcp",
                SyslogTransport::Udp => "syslog-udp",
            },
            Destination::Webhook { .. } => "webhook",
            Destination::SplunkHec { .. } => "splunk-hec",
            Destination::Elasticsearch { .. } => "elasticsearch",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Sink {
    pub name: String,
    pub filter: Filter,
    pub encoding: Encoding,
    pub destination: Destination,
    pub spool_max_records: u64,
    pub retry_initial: Duration,
    pub retry_max: Duration,
    pub batch_records: u32,
    pub timeout: Duration,
}

/// The wait before the next attempt after `failures` failures in a row: the
/// initial wait doubled each time up to the maximum, then a random point in
/// its upper half (`random` is any number), so sinks that failed together do
/// not retry together.
pub fn backoff(initial: Duration, max: Duration, failures: u32, random: u64) -> Duration {
    let base = initial
        .as_millis()
        .saturating_mul(1u128 << failures.saturating_sub(1).min(40))
        .min(max.as_millis())
        .max(1);
    let base = u64::try_from(base).unwrap_or(u64::MAX);
    let half = base / 2;
    Duration::from_millis(base - half + random % (half + 1))
}

fn tls_for(c: &ExportConfig, data_dir: &Path, host: &str) -> Result<Tls, String> {
    let (file, named): (PathBuf, bool) = match &c.ca_pem {
        Some(p) => (data_dir.join(p), true),
        None => (PathBuf::from(SYSTEM_ROOTS), false),
    };
    let mut roots = rustls::RootCertStore::empty();
    match CertificateDer::pem_file_iter(&file) {
        Ok(certs) => {
            for cert in certs {
                let cert = cert.map_err(|e| format!("ca_pem {}: {e}", file.display()))?;
                roots.add(cert).map_err(|e| format!("ca_pem {}: {e}", file.display()))?;
            }
        }
        Err(e) if named => return Err(format!("ca_pem {}: {e}", file.display())),
        Err(_) => {}
    }
    if roots.is_empty() {
        return Err(format!(
            "no CA certificates to check the receiver with: set ca_pem ({} holds none)",
            file.display()
        ));
    }
    let name = c.server_name.clone().unwrap_or_else(|| host.to_string());
    let server_name = ServerName::try_from(name.clone())
        .map_err(|_| format!("server_name {name:?} is not a DNS name or IP address"))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS versions: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Tls {
        config: Arc::new(config),
        server_name,
    })
}

/// The host of `host:port` (`[v6]:port` too).
fn host_of(address: &str) -> Result<&str, String> {
    let (host, port) = address
        .rsplit_once(':')
        .ok_or_else(|| format!("address {address:?} is not host:port"))?;
    port.parse::<u16>()
        .map_err(|_| format!("address {address:?}: bad port"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err(format!("address {address:?} names no host"));
    }
    Ok(host)
}

/// An http(s) URL's host; whether it is https.
fn url_host(url: &str) -> Result<(String, bool), String> {
    let (https, rest) = if let Some(r) = url.strip_prefix("https://") {
        (true, r)
    } else if let Some(r) = url.strip_prefix("http://") {
        (false, r)
    } else {
        return Err(format!("url {url:?} must start with http:// or https://"));
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => authority.split(':').next().unwrap_or_default(),
    };
    if host.is_empty() {
        return Err(format!("url {url:?} names no host"));
    }
    Ok((host.to_string(), https))
}

fn require<'a>(v: &'a Option<String>, key: &str, kind: &str) -> Result<&'a str, String> {
    v.as_deref()
        .filter(|s| !s.is_empty())
        .ok_or_else(|| format!("a {kind} sink needs {key}"))
}

/// Settings that belong to other kinds are refused, so a typo does not pass silently.
fn refuse_others(c: &ExportConfig, allowed: &[&str]) -> Result<(), String> {
    let set = [
        ("address", c.address.is_some()),
        ("transport", c.transport.is_some()),
        ("facility", c.facility.is_some()),
        ("url", c.url.is_some()),
        ("secrets", !c.secrets.is_empty()),
        ("token", c.token.is_some()),
        ("index", c.index.is_some()),
        ("ca_pem", c.ca_pem.is_some()),
        ("server_name", c.server_name.is_some()),
    ];
    for (key, present) in set {
        if present && !allowed.contains(&key) {
            return Err(format!("{key} is not a setting of a {} sink", c.kind));
        }
    }
    Ok(())
}

/// Checks one `[[export]]` entry.
pub fn check(c: &ExportConfig, data_dir: &Path) -> Result<Sink, String> {
    let named = |e: String| format!("[[export]] {:?}: {e}", c.name);
    check_inner(c, data_dir).map_err(named)
}

fn check_inner(c: &ExportConfig, data_dir: &Path) -> Result<Sink, String> {
    if c.name.is_empty()
        || !c
            .name
            .chars()
            .all(|ch| ch.is_ascii_alphanumeric() || ch == '-' || ch == '_')
    {
        return Err("name must be letters, digits, - and _".into());
    }
    let mut filter = Filter {
        alerts: false,
        incidents: false,
        min_severity: None,
        sources: c.sources.clone(),
    };
    for r in &c.records {
        match r.as_str() {
            "alerts" => filter.alerts = true,
            "incidents" => filter.incidents = true,
            other => return Err(format!("records: {other:?} is not alerts or incidents")),
        }
    }
    if !filter.alerts && !filter.incidents {
        return Err("records is empty: name alerts, incidents or both".into());
    }
    if let Some(s) = &c.min_severity {
        filter.min_severity = Some(Severity::parse(s).ok_or_else(|| format!("min_severity {s:?} is not a severity"))?);
    }
    for s in &c.sources {
        if !["agent", "identity", "mailbox", "collector", "endpoint"].contains(&s.as_str()) {
            return Err(format!(
                "sources: {s:?} is not agent, identity, mailbox, collector or endpoint"
            ));
        }
    }
    if c.spool_max_records == 0 {
        return Err("spool_max_records must be at least 1".into());
    }
    if c.retry_initial_ms == 0 || c.retry_max_ms < c.retry_initial_ms {
        return Err("retry_initial_ms must be at least 1 and at most retry_max_ms".into());
    }
    if c.batch_records == 0 || c.batch_records > 10_000 {
        return Err("batch_records must be 1 to 10000".into());
    }
    if c.timeout_ms == 0 {
        return Err("timeout_ms must be at least 1".into());
    }
    let format = c.format.as_deref();
    let (encoding, destination) = match c.kind.as_str() {
        "syslog" => {
            refuse_others(c, &["address", "transport", "facility", "ca_pem", "server_name"])?;
            let address = require(&c.address, "address (host:port)", "syslog")?;
            let host = host_of(address)?;
            let facility = c.facility.unwrap_or(13);
            if facility > 23 {
                return Err("facility must be 0 to 23".into());
            }
            let encoding = match format.unwrap_or("rfc5424") {
                "rfc5424" => Encoding::SyslogJson { facility },
                "cef" => Encoding::SyslogCef { facility },
                f => return Err(format!("format {f:?}: a syslog sink writes rfc5424 or cef")),
            };
            let transport = match c.transport.as_deref().unwrap_or("tls") {
                "tls" => SyslogTransport::Tls,
                "tcp" => SyslogTransport::Tcp,
                "udp" => SyslogTransport::Udp,
                t => return Err(format!("transport {t:?} is not tls, tcp or udp")),
            };
            if transport != SyslogTransport::Tls && (c.ca_pem.is_some() || c.server_name.is_some()) {
                return Err("ca_pem and server_name are settings of transport = \"tls\"".into());
            }
            let tls = match transport {
                SyslogTransport::Tls => Some(tls_for(c, data_dir, host)?),
                _ => None,
            };
            (
                encoding,
                Destination::Syslog {
                    address: address.to_string(),
                    transport,
                    tls,
                },
            )
        }
        "webhook" | "splunk_hec" | "elasticsearch" => {
            let url = require(&c.url, "url", &c.kind)?.to_string();
            let (host, https) = url_host(&url)?;
            if !https && (c.ca_pem.is_some() || c.server_name.is_some()) {
                return Err("ca_pem and server_name are settings of an https url".into());
            }
            let tls = if https {
                Some(tls_for(c, data_dir, &host)?)
            } else {
                None
            };
            match c.kind.as_str() {
                "webhook" => {
                    refuse_others(c, &["url", "secrets", "ca_pem", "server_name"])?;
                    if c.secrets.is_empty() {
                        return Err("a webhook sink needs secrets (whsec_...)".into());
                    }
                    let secrets = c
                        .secrets
                        .iter()
                        .map(|s| WebhookSecret::parse(s).map_err(|e| e.to_string()))
                        .collect::<Result<Vec<_>, _>>()?;
                    let encoding = match format.unwrap_or("ward") {
                        "ward" => Encoding::WardJson,
                        "ocsf" => Encoding::Ocsf,
                        f => return Err(format!("format {f:?}: a webhook sink writes ward or ocsf")),
                    };
                    (encoding, Destination::Webhook { url, secrets, tls })
                }
                "splunk_hec" => {
                    refuse_others(c, &["url", "token", "ca_pem", "server_name"])?;
                    let token = require(&c.token, "token", "splunk_hec")?.to_string();
                    let encoding = match format.unwrap_or("ward") {
                        "ward" => Encoding::HecWard,
                        "ocsf" => Encoding::HecOcsf,
                        f => return Err(format!("format {f:?}: a splunk_hec sink writes ward or ocsf")),
                    };
                    (encoding, Destination::SplunkHec { url, token, tls })
                }
                _ => {
                    refuse_others(c, &["url", "token", "index", "ca_pem", "server_name"])?;
                    let index = require(&c.index, "index", "elasticsearch")?.to_string();
                    match format.unwrap_or("ecs") {
                        "ecs" => {}
                        f => return Err(format!("format {f:?}: an elasticsearch sink writes ecs")),
                    }
                    (
                        Encoding::Ecs,
                        Destination::Elasticsearch {
                            url,
                            index,
                            api_key: c.token.clone(),
                            tls,
                        },
                    )
                }
            }
        }
        k => {
            return Err(format!(
                "kind {k:?} is not syslog, webhook, splunk_hec or elasticsearch"
            ));
        }
    };
    Ok(Sink {
        name: c.name.clone(),
        filter,
        encoding,
        destination,
        spool_max_records: c.spool_max_records,
        retry_initial: Duration::from_millis(c.retry_initial_ms),
        retry_max: Duration::from_millis(c.retry_max_ms),
        batch_records: c.batch_records,
        timeout: Duration::from_millis(c.timeout_ms),
    })
}

/// Checks every `[[export]]` entry; names must be unique.
pub fn check_all(configs: &[ExportConfig], data_dir: &Path) -> Result<Vec<Sink>, String> {
    let mut sinks: Vec<Sink> = Vec::with_capacity(configs.len());
    for c in configs {
        if sinks.iter().any(|s| s.name == c.name) {
            return Err(format!("[[export]] {:?}: two sinks have this name", c.name));
        }
        sinks.push(check(c, data_dir)?);
    }
    Ok(sinks)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn parse(toml_text: &str) -> Result<Vec<Sink>, String> {
        let config = crate::config::Config::parse(toml_text).map_err(|e| e.to_string())?;
        check_all(&config.export, Path::new("/nonexistent"))
    }

    #[test]
    fn backoff_doubles_up_to_its_maximum_with_jitter_in_the_upper_half() {
        let (i, m) = (Duration::from_millis(1000), Duration::from_millis(30_000));
        assert_eq!(backoff(i, m, 1, 0), Duration::from_millis(500));
        assert_eq!(backoff(i, m, 1, 500), Duration::from_millis(1000));
        assert_eq!(backoff(i, m, 3, 0), Duration::from_millis(2000));
        assert_eq!(backoff(i, m, 3, 2000), Duration::from_millis(4000));
        assert_eq!(backoff(i, m, 60, u64::MAX), backoff(i, m, 10, u64::MAX));
        for r in 0..1000u64 {
            let b = backoff(i, m, 20, r * 7919);
            assert!(b >= Duration::from_millis(15_000) && b <= m, "{b:?}");
        }
    }

    #[test]
    fn sinks_are_checked() {
        let ok = parse(
            r#"
            [[export]]
            name = "siem"
            kind = "syslog"
            transport = "udp"
            address = "127.0.0.1:514"
            format = "cef"
            min_severity = "high"
            [[export]]
            name = "hook"
            kind = "webhook"
            url = "http://127.0.0.1:9000/ward"
            secrets = ["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"]
            records = ["incidents"]
            sources = ["agent", "endpoint"]
            "#,
        )
        .unwrap();
        assert_eq!(ok.len(), 2);
        assert_eq!(ok[1].filter.sources, ["agent", "endpoint"]);
        assert_eq!(ok[0].encoding, Encoding::SyslogCef { facility: 13 });
        assert_eq!(ok[0].filter.min_severity, Some(Severity::High));
        assert!(!ok[1].filter.alerts && ok[1].filter.incidents);

        let refused = |text: &str, needle: &str| {
            let e = parse(text).unwrap_err();
            assert!(e.contains(needle), "{e} should say {needle}");
        };
        let base = "[[export]]\nname = \"s\"\n";
        refused(&format!("{base}kind = \"kafka\""), "kind \"kafka\"");
        refused(&format!("{base}kind = \"syslog\""), "needs address");
        refused(
            &format!("{base}kind = \"syslog\"\naddress = \"h:514\"\ntransport = \"udp\"\nurl = \"http://x\""),
            "url is not a setting",
        );
        refused(
            &format!("{base}kind = \"syslog\"\naddress = \"h:514\"\ntransport = \"tls\"\nca_pem = \"nope.pem\""),
            "ca_pem",
        );
        refused(
            &format!("{base}kind = \"webhook\"\nurl = \"http://h/x\""),
            "needs secrets",
        );
        refused(
            &format!("{base}kind = \"webhook\"\nurl = \"http://h/x\"\nsecrets = [\"abc\"]"),
            "whsec_",
        );
        refused(
            &format!("{base}kind = \"webhook\"\nurl = \"ftp://h/x\"\nsecrets = [\"abc\"]"),
            "http://",
        );
        refused(
            &format!("{base}kind = \"splunk_hec\"\nurl = \"http://h/x\""),
            "needs token",
        );
        refused(
            &format!("{base}kind = \"elasticsearch\"\nurl = \"http://h/_bulk\""),
            "needs index",
        );
        refused(
            &format!("{base}kind = \"syslog\"\naddress = \"h:514\"\ntransport = \"udp\"\nrecords = [\"logs\"]"),
            "records",
        );
        refused(
            &format!("{base}kind = \"syslog\"\naddress = \"h:514\"\ntransport = \"udp\"\nmin_severity = \"huge\""),
            "min_severity",
        );
        refused(
            &format!("{base}kind = \"syslog\"\naddress = \"h:514\"\ntransport = \"udp\"\nspool_max_records = 0"),
            "spool_max_records",
        );
        refused(
            &format!(
                "{base}kind = \"syslog\"\naddress = \"h:514\"\ntransport = \"udp\"\n{base}kind = \"syslog\"\naddress = \"h:514\"\ntransport = \"udp\""
            ),
            "two sinks",
        );
        refused("[[export]]\nname = \"a b\"\nkind = \"syslog\"", "name must be");
    }

    /// docs/export.md's example configs are accepted as they are (with CA files where
    /// they name them).
    #[test]
    fn the_documented_examples_are_valid() {
        let docs = include_str!("../../../docs/export.md");
        let mut text = String::new();
        let mut inside = false;
        for line in docs.lines() {
            match (inside, line.trim()) {
                (false, "```toml") => inside = true,
                (true, "```") => inside = false,
                (true, l) => {
                    text.push_str(l);
                    text.push('\n');
                }
                _ => {}
            }
        }
        let dir = tempfile::tempdir().unwrap();
        let ca = rcgen::generate_simple_self_signed(vec!["ca".into()]).unwrap();
        for f in ["export-ca.pem", "splunk-ca.pem"] {
            std::fs::write(dir.path().join(f), ca.cert.pem()).unwrap();
        }
        let config = crate::config::Config::parse(&text).unwrap();
        let sinks = check_all(&config.export, dir.path()).unwrap();
        let kinds: Vec<&str> = config.export.iter().map(|c| c.kind.as_str()).collect();
        assert_eq!(kinds, ["syslog", "syslog", "webhook", "splunk_hec", "elasticsearch"]);
        assert_eq!(sinks.len(), 5);
    }

    #[test]
    fn url_hosts() {
        assert_eq!(
            url_host("https://siem.example:8088/services/collector/event").unwrap(),
            ("siem.example".into(), true)
        );
        assert_eq!(url_host("http://127.0.0.1/x").unwrap(), ("127.0.0.1".into(), false));
        assert_eq!(url_host("https://[::1]:9200/_bulk").unwrap(), ("::1".into(), true));
        assert!(url_host("https:///x").is_err());
        assert_eq!(host_of("[::1]:6514").unwrap(), "::1");
        assert!(host_of("nohost").is_err());
    }
}
