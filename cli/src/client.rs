//! A thin client of the collector's JSON API: the bearer token on every request,
//! `{"error": ...}` bodies turned into readable errors, HTTPS through rustls.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result, anyhow, bail};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use serde_json::Value;

/// The system's CA bundle on Debian and its derivatives.
const SYSTEM_ROOTS: &str = "/etc/ssl/certs/ca-certificates.crt";
/// Largest response body read (an investigation package is fetched elsewhere).
const MAX_BODY_BYTES: usize = 32 << 20;

pub struct Client {
    base: String,
    token: String,
    http: reqwest::Client,
}

/// The TLS settings: rustls with ring and the given roots. reqwest is built without
/// a default provider, so even a plain-HTTP client gets one (with `https` false,
/// its roots are never used and may be empty).
fn tls_config(ca_cert: Option<&Path>, https: bool) -> Result<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    let (file, named) = match ca_cert {
        Some(p) => (p, true),
        None => (Path::new(SYSTEM_ROOTS), false),
    };
    match CertificateDer::pem_file_iter(file) {
        Ok(certs) => {
            for cert in certs {
                let cert = cert.with_context(|| format!("CA file {}", file.display()))?;
                roots.add(cert).with_context(|| format!("CA file {}", file.display()))?;
            }
        }
        Err(e) if named => return Err(anyhow!("CA file {}: {e}", file.display())),
        Err(_) => {} // no system bundle: only an https URL needs one, checked below
    }
    if https && roots.is_empty() {
        bail!(
            "no CA certificates to check the API's certificate with: pass --ca-cert (or WARD_CA_CERT, or ca_cert in the config file)"
        );
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS versions")?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

impl Client {
    pub fn new(url: &str, token: &str, ca_cert: Option<&Path>) -> Result<Client> {
        let base = url.trim_end_matches('/').to_string();
        let https = base.starts_with("https://");
        if !https && !base.starts_with("http://") {
            bail!("the collector URL must start with http:// or https:// (got {url:?})");
        }
        let builder = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(30))
            .use_preconfigured_tls(tls_config(ca_cert, https)?);
        Ok(Client {
            base,
            token: token.to_string(),
            http: builder.build().context("HTTP client")?,
        })
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> Result<Value> {
        let (_, bytes) = self.send_raw(req).await?;
        Ok(serde_json::from_slice(&bytes).unwrap_or(Value::Null))
    }

    /// Sends `req`; the body of a success, or the API's error as the error.
    async fn send_raw(&self, req: reqwest::RequestBuilder) -> Result<(reqwest::StatusCode, Vec<u8>)> {
        let resp = req.bearer_auth(&self.token).send().await.map_err(|e| {
            let mut msg = format!("cannot reach the collector at {}: {e}", self.base);
            let mut src = std::error::Error::source(&e);
            while let Some(s) = src {
                msg.push_str(&format!(": {s}"));
                src = s.source();
            }
            anyhow!(msg)
        })?;
        let status = resp.status();
        if resp.content_length().is_some_and(|n| n > MAX_BODY_BYTES as u64) {
            bail!("the collector's answer is larger than {MAX_BODY_BYTES} bytes");
        }
        let bytes = resp.bytes().await.context("reading the collector's answer")?;
        if bytes.len() > MAX_BODY_BYTES {
            bail!("the collector's answer is larger than {MAX_BODY_BYTES} bytes");
        }
        if !status.is_success() {
            let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            let msg = body["error"]
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| status.to_string());
            bail!("{msg} (HTTP {})", status.as_u16());
        }
        Ok((status, bytes.to_vec()))
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn get(&self, path: &str, query: &[(&str, String)]) -> Result<Value> {
        self.send(self.http.get(self.url(path)).query(query)).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> Result<Value> {
        self.send(self.http.post(self.url(path)).json(body)).await
    }

    pub async fn patch(&self, path: &str, body: &Value) -> Result<Value> {
        self.send(self.http.patch(self.url(path)).json(body)).await
    }

    pub async fn delete(&self, path: &str) -> Result<Value> {
        self.send(self.http.delete(self.url(path))).await
    }

    /// A GET whose answer is text (a CSV export), as it came.
    pub async fn get_text(&self, path: &str, query: &[(&str, String)]) -> Result<String> {
        let (_, bytes) = self.send_raw(self.http.get(self.url(path)).query(query)).await?;
        String::from_utf8(bytes).context("the collector's answer is not UTF-8")
    }
}
