//! The network side of the sinks: one [`Sender`] per sink, owned by its delivery
//! task, which keeps its connection (syslog over TCP or TLS) between deliveries.
//! A delivery either succeeds as a whole, fails as a whole (retried later), or is
//! refused by the receiver as malformed (the records are dropped and counted:
//! sending them again cannot help).

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

use super::http::{WebhookSecret, bulk_body, bulk_outcome, hec_batch, webhook_signature};
use super::sink::{Destination, SyslogTransport, Tls};
use super::syslog::{octet_counted, udp_datagram};
use crate::store::Spooled;

#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// Worth trying again: the receiver is down, slow, or said so (5xx, 429...).
    #[error("{0}")]
    Retry(String),
    /// The receiver refused the records themselves (HTTP 400, 413, 422).
    #[error("refused by the receiver: {0}")]
    Refused(String),
}

fn retry(e: impl std::fmt::Display) -> SendError {
    SendError::Retry(e.to_string())
}

/// An error with its causes (`error sending request: ...: Connection refused`), so
/// the log and the console say why, not only what failed.
fn with_causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let more = c.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        cause = c.source();
    }
    text
}

trait Stream: AsyncRead + AsyncWrite + Unpin + Send + Sync {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + Sync> Stream for T {}

pub struct Sender {
    destination: Destination,
    http: Option<reqwest::Client>,
    /// The open syslog connection (TCP or TLS).
    conn: Option<Box<dyn Stream>>,
    udp: Option<UdpSocket>,
    /// Records of the last `send` the receiver took before it failed (webhooks send
    /// one request per record: those before a failure need not go again).
    delivered: usize,
}

impl std::fmt::Debug for Sender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sender")
            .field("destination", &self.destination)
            .finish_non_exhaustive()
    }
}

fn http_client(tls: Option<&Tls>, timeout: Duration) -> Result<reqwest::Client, String> {
    let mut b = reqwest::Client::builder()
        .timeout(timeout)
        .redirect(reqwest::redirect::Policy::none());
    if let Some(tls) = tls {
        b = b.use_preconfigured_tls((*tls.config).clone());
    } else {
        // reqwest needs a TLS configuration even for plain http (no provider is
        // built in); one without roots never verifies anything.
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth();
        b = b.use_preconfigured_tls(config);
    }
    b.build().map_err(|e| format!("HTTP client: {e}"))
}

/// Status codes that mean "these records will never be accepted".
fn refused_status(code: u16) -> bool {
    matches!(code, 400 | 413 | 422)
}

impl Sender {
    pub fn new(destination: Destination, timeout: Duration) -> Result<Sender, String> {
        let http = match &destination {
            Destination::Syslog { .. } => None,
            Destination::Webhook { tls, .. }
            | Destination::SplunkHec { tls, .. }
            | Destination::Elasticsearch { tls, .. } => Some(http_client(tls.as_ref(), timeout)?),
        };
        Ok(Sender {
            destination,
            http,
            conn: None,
            udp: None,
            delivered: 0,
        })
    }

    /// Delivers `records` (a sink's oldest, in order). `now_s` is the sending time
    /// (webhook timestamps).
    pub async fn send(&mut self, records: &[Spooled], now_s: u64) -> Result<(), SendError> {
        self.delivered = 0;
        match self.destination.clone() {
            Destination::Syslog {
                address,
                transport: SyslogTransport::Udp,
                ..
            } => self.send_udp(&address, records).await,
            Destination::Syslog { address, tls, .. } => {
                let result = self.send_stream(&address, tls.as_ref(), records).await;
                if result.is_err() {
                    // Start again on a new connection; the records go again (at least once).
                    self.conn = None;
                }
                result
            }
            Destination::Webhook { url, secrets, .. } => {
                for r in records {
                    self.post_webhook(&url, &secrets, r, now_s).await?;
                    self.delivered += 1;
                }
                Ok(())
            }
            Destination::SplunkHec { url, token, .. } => {
                let body = hec_batch(records.iter().map(|r| r.body.as_slice()));
                let req = self
                    .client()?
                    .post(&url)
                    .header("Authorization", format!("Splunk {token}"));
                let resp = self
                    .post(req.header("Content-Type", "application/json").body(body))
                    .await?;
                // HEC answers {"text":"Success","code":0}.
                let v: serde_json::Value = serde_json::from_slice(&resp).unwrap_or_default();
                match v["code"].as_i64() {
                    Some(0) | None => Ok(()),
                    Some(c) => Err(retry(format!("HEC code {c}: {}", v["text"]))),
                }
            }
            Destination::Elasticsearch {
                url, index, api_key, ..
            } => {
                let body = bulk_body(&index, records.iter().map(|r| (r.id.as_str(), r.body.as_slice())));
                let mut req = self.client()?.post(&url).header("Content-Type", "application/x-ndjson");
                if let Some(k) = api_key {
                    req = req.header("Authorization", format!("ApiKey {k}"));
                }
                let resp = self.post(req.body(body)).await?;
                let v: serde_json::Value =
                    serde_json::from_slice(&resp).map_err(|e| retry(format!("_bulk answer is not JSON: {e}")))?;
                bulk_outcome(&v).map_err(SendError::Refused)
            }
        }
    }

    /// How many of the records of the last `send` were taken before it failed.
    pub fn delivered_before_failure(&self) -> usize {
        self.delivered
    }

    /// Whether a delivery sends one request per record (its time limit is per record).
    pub fn per_record(&self) -> bool {
        matches!(self.destination, Destination::Webhook { .. })
    }

    fn client(&self) -> Result<&reqwest::Client, SendError> {
        self.http.as_ref().ok_or_else(|| retry("no HTTP client"))
    }

    async fn post(&self, req: reqwest::RequestBuilder) -> Result<Vec<u8>, SendError> {
        let resp = req
            .send()
            .await
            .map_err(|e| retry(format!("POST: {}", with_causes(&e))))?;
        let status = resp.status();
        let body = resp.bytes().await.map_err(|e| retry(format!("answer: {e}")))?;
        if status.is_success() {
            return Ok(body.to_vec());
        }
        let text = String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
        if refused_status(status.as_u16()) {
            Err(SendError::Refused(format!("HTTP {status}: {text}")))
        } else {
            Err(retry(format!("HTTP {status}: {text}")))
        }
    }

    async fn post_webhook(
        &self,
        url: &str,
        secrets: &[WebhookSecret],
        r: &Spooled,
        now_s: u64,
    ) -> Result<(), SendError> {
        let req = self
            .client()?
            .post(url)
            .header("Content-Type", "application/json")
            .header("webhook-id", &r.id)
            .header("webhook-timestamp", now_s.to_string())
            .header("webhook-signature", webhook_signature(secrets, &r.id, now_s, &r.body))
            .body(r.body.clone());
        self.post(req).await.map(drop)
    }

    async fn send_udp(&mut self, address: &str, records: &[Spooled]) -> Result<(), SendError> {
        if self.udp.is_none() {
            let target = tokio::net::lookup_host(address)
                .await
                .map_err(retry)?
                .next()
                .ok_or_else(|| retry(format!("{address} resolves to nothing")))?;
            let bind = if target.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" };
            let socket = UdpSocket::bind(bind).await.map_err(retry)?;
            socket.connect(target).await.map_err(retry)?;
            self.udp = Some(socket);
        }
        let Some(socket) = &self.udp else {
            return Err(retry("no socket"));
        };
        for r in records {
            if let Err(e) = socket.send(udp_datagram(&r.body)).await {
                self.udp = None;
                return Err(retry(e));
            }
        }
        Ok(())
    }

    /// Whether the open connection was closed by the receiver: a receiver that
    /// restarted is noticed before records are written into a dead connection.
    async fn conn_closed(&mut self) -> bool {
        let Some(conn) = self.conn.as_mut() else {
            return true;
        };
        let mut byte = [0u8; 64];
        // A syslog receiver never writes: anything but "nothing to read yet" means
        // the connection is over (end of stream, reset, or a TLS alert).
        tokio::time::timeout(Duration::ZERO, conn.read(&mut byte)).await.is_ok()
    }

    async fn send_stream(&mut self, address: &str, tls: Option<&Tls>, records: &[Spooled]) -> Result<(), SendError> {
        if self.conn_closed().await {
            self.conn = None;
            let tcp = TcpStream::connect(address)
                .await
                .map_err(|e| retry(format!("connect {address}: {e}")))?;
            let _ = tcp.set_nodelay(true);
            self.conn = Some(match tls {
                Some(tls) => {
                    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::clone(&tls.config));
                    let stream = connector
                        .connect(tls.server_name.clone(), tcp)
                        .await
                        .map_err(|e| retry(format!("TLS handshake with {address}: {e}")))?;
                    Box::new(stream)
                }
                None => Box::new(tcp),
            });
        }
        let mut out = Vec::with_capacity(records.iter().map(|r| r.body.len() + 8).sum());
        for r in records {
            octet_counted(&r.body, &mut out);
        }
        let conn = self.conn.as_mut().ok_or_else(|| retry("no connection"))?;
        conn.write_all(&out)
            .await
            .map_err(|e| retry(format!("write to {address}: {e}")))?;
        conn.flush()
            .await
            .map_err(|e| retry(format!("write to {address}: {e}")))?;
        Ok(())
    }
}
