//! The collector's TOML configuration: parsed and validated without side effects.
//! Every setting has a default; `init` writes this file with each one documented.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use thiserror::Error;

/// Settings file name inside the data dir.
pub const CONFIG_FILE: &str = "collector.toml";

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
    /// Connected agents at most; further connections are refused.
    pub max_connections: u32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DeviceConfig {
    /// A device not heard from for this long is shown offline.
    pub offline_after_ms: u64,
    /// How often revocations made by other processes (the CLI) are picked up.
    pub revocation_poll_ms: u64,
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
            max_connections: 20_000,
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

    /// Loads `collector.toml` in the data dir.
    pub fn load(data_dir: &Path) -> Result<Config, ConfigError> {
        Config::load_file(&data_dir.join(CONFIG_FILE))
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
        if self.tls_cert_pem.is_some() != self.tls_key_pem.is_some() {
            return Err("tls_cert_pem and tls_key_pem must be set together".into());
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
# Connected agents at most; further connections are refused.
max_connections = 20000

[devices]
# A device not heard from for this long is shown offline.
offline_after_ms = 90000
# How often revocations made from the command line are picked up.
revocation_poll_ms = 1000
"#;

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
        assert_eq!(parsed.devices.offline_after_ms, defaults.devices.offline_after_ms);
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
            Config::parse("[ingest]\nmax_frame_bytes = 99999999")
                .unwrap_err()
                .contains("max_frame_bytes")
        );
        assert!(Config::parse("tls_cert_pem = \"/x\"").unwrap_err().contains("together"));
    }
}
