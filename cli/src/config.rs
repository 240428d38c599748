//! Where the CLI finds the collector and its token: flags, then the environment
//! (`WARD_URL`, `WARD_TOKEN`, `WARD_CA_CERT`, handled by clap), then a config file
//! (`$WARD_CONFIG`, else `$XDG_CONFIG_HOME/ward/cli.toml` or `~/.config/ward/cli.toml`).

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use serde::Deserialize;

/// The config file. Every field is optional; flags and the environment win.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub url: Option<String>,
    pub token: Option<String>,
    /// PEM file of the CA (or certificate) that signed the API's HTTPS certificate.
    pub ca_cert: Option<PathBuf>,
}

/// Longest config file read; anything larger is not a config file.
const MAX_CONFIG_BYTES: u64 = 64 * 1024;

fn default_path() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("WARD_CONFIG") {
        return Some(PathBuf::from(p));
    }
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))?;
    Some(base.join("ward/cli.toml"))
}

/// Reads the config file if there is one; an explicitly named file must exist.
pub fn load() -> Result<FileConfig> {
    let Some(path) = default_path() else {
        return Ok(FileConfig::default());
    };
    let named = std::env::var_os("WARD_CONFIG").is_some();
    let meta = match std::fs::metadata(&path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !named => return Ok(FileConfig::default()),
        Err(e) => return Err(e).with_context(|| format!("config file {}", path.display())),
    };
    if meta.len() > MAX_CONFIG_BYTES {
        bail!("config file {} is larger than {MAX_CONFIG_BYTES} bytes", path.display());
    }
    let text = std::fs::read_to_string(&path).with_context(|| format!("config file {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("config file {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_format_is_strict() {
        let ok: FileConfig = toml::from_str("url = \"http://127.0.0.1:8080\"\ntoken = \"t\"").unwrap_or_default();
        assert_eq!(ok.url.as_deref(), Some("http://127.0.0.1:8080"));
        assert!(
            toml::from_str::<FileConfig>("urll = \"x\"").is_err(),
            "a misspelt key is an error"
        );
    }
}
