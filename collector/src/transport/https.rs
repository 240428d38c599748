//! HTTPS for the API: loads the operator's PEM certificate chain and key into a
//! rustls (ring, TLS 1.2/1.3) server config and offers an [`axum::serve::Listener`]
//! that hands axum only connections whose handshake finished.
//!
//! Handshakes run in their own tasks with a timeout, at most [`MAX_HANDSHAKES`] at
//! once, so a slow or silent client never holds up the others; a failed handshake is
//! logged at debug and counted, never fatal. This module knows nothing of routes or
//! of the agent-facing QUIC endpoint.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use thiserror::Error;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tracing::{debug, warn};

use crate::metrics::Metrics;

/// Longest a client may take to finish its TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes in progress at once; further connections wait in the kernel's backlog.
pub const MAX_HANDSHAKES: usize = 256;
/// Finished handshakes waiting for axum to take them.
const READY_QUEUE: usize = 64;

#[derive(Debug, Error)]
pub enum HttpsError {
    #[error("TLS certificate {path}: {source}")]
    Cert {
        path: PathBuf,
        source: rustls_pki_types::pem::Error,
    },
    #[error("TLS certificate {path}: no certificate found in the PEM file")]
    NoCert { path: PathBuf },
    #[error("TLS private key {path}: {source}")]
    Key {
        path: PathBuf,
        source: rustls_pki_types::pem::Error,
    },
    #[error("TLS certificate {cert} with key {key}: {source}")]
    Config {
        cert: PathBuf,
        key: PathBuf,
        source: rustls::Error,
    },
}

/// Reads the PEM chain (leaf first) and the PEM private key (PKCS#8, PKCS#1 or SEC1)
/// and builds the server config. Every error names the file at fault.
pub fn server_config(cert_pem: &Path, key_pem: &Path) -> Result<Arc<rustls::ServerConfig>, HttpsError> {
    let cert_err = |source| HttpsError::Cert {
        path: cert_pem.to_path_buf(),
        source,
    };
    let chain = CertificateDer::pem_file_iter(cert_pem)
        .map_err(cert_err)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(cert_err)?;
    if chain.is_empty() {
        return Err(HttpsError::NoCert {
            path: cert_pem.to_path_buf(),
        });
    }
    let key = PrivateKeyDer::from_pem_file(key_pem).map_err(|source| HttpsError::Key {
        path: key_pem.to_path_buf(),
        source,
    })?;
    let config_err = |source| HttpsError::Config {
        cert: cert_pem.to_path_buf(),
        key: key_pem.to_path_buf(),
        source,
    };
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(config_err)?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(config_err)?;
    // The API speaks HTTP/1.1 only.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A TCP listener whose `accept` yields connections that completed the TLS handshake.
/// Dropping it (axum does on graceful shutdown) stops accepting; handshakes still in
/// flight end at their timeout or when they find nobody to hand their stream to.
pub struct TlsListener {
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
    acceptor: JoinHandle<()>,
}

impl TlsListener {
    /// Takes over `tcp`, bound to `local`; must be called inside a tokio runtime.
    pub fn new(tcp: TcpListener, local: SocketAddr, config: Arc<rustls::ServerConfig>, metrics: Arc<Metrics>) -> Self {
        let (tx, ready) = mpsc::channel(READY_QUEUE);
        let acceptor = tokio::spawn(accept_loop(tcp, TlsAcceptor::from(config), tx, metrics));
        TlsListener { ready, local, acceptor }
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.acceptor.abort();
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(conn) => conn,
            // The accept loop only ends when the TCP listener is gone for good; axum
            // has no way to hear "no more connections", so wait for the shutdown.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}

async fn accept_loop(
    tcp: TcpListener,
    tls: TlsAcceptor,
    ready: mpsc::Sender<(TlsStream<TcpStream>, SocketAddr)>,
    metrics: Arc<Metrics>,
) {
    let slots = Arc::new(Semaphore::new(MAX_HANDSHAKES));
    loop {
        let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
            return;
        };
        let (stream, peer) = tokio::select! {
            accepted = tcp.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    accept_error(e).await;
                    continue;
                }
            },
            () = ready.closed() => return,
        };
        let tls = tls.clone();
        let ready = ready.clone();
        let metrics = Arc::clone(&metrics);
        tokio::spawn(async move {
            let result = tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.accept(stream)).await;
            drop(slot);
            match result {
                Ok(Ok(stream)) => {
                    let _ = ready.send((stream, peer)).await;
                }
                Ok(Err(e)) => {
                    metrics.https_handshake_failures.inc();
                    debug!(%peer, error = %e, "TLS handshake failed");
                }
                Err(_) => {
                    metrics.https_handshake_failures.inc();
                    debug!(%peer, "TLS handshake timed out");
                }
            }
        });
    }
}

/// Per-connection errors are the client's business; anything else (out of file
/// descriptors) is worth a warning and a pause instead of a busy loop.
async fn accept_error(e: std::io::Error) {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(e.kind(), ConnectionAborted | ConnectionRefused | ConnectionReset) {
        return;
    }
    warn!(error = %e, "HTTPS accept failed");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn write_pair(dir: &Path) -> (PathBuf, PathBuf) {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let (c, k) = (dir.join("api.crt"), dir.join("api.key"));
        std::fs::write(&c, cert.pem()).unwrap();
        std::fs::write(&k, key.serialize_pem()).unwrap();
        (c, k)
    }

    fn err(cert: &Path, key: &Path) -> String {
        server_config(cert, key).expect_err("must fail").to_string()
    }

    #[test]
    fn loads_a_good_pair() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = write_pair(dir.path());
        let config = server_config(&cert, &key).unwrap();
        assert_eq!(config.alpn_protocols, vec![b"http/1.1".to_vec()]);
    }

    #[test]
    fn bad_files_are_named_in_the_error() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = write_pair(dir.path());
        let missing = dir.path().join("missing.key");
        let garbage = dir.path().join("garbage.key");
        std::fs::write(&garbage, "not a key\n").unwrap();
        let empty_cert = dir.path().join("empty.crt");
        std::fs::write(&empty_cert, "").unwrap();
        let other_key = dir.path().join("other.key");
        std::fs::write(&other_key, rcgen::KeyPair::generate().unwrap().serialize_pem()).unwrap();

        let e = err(&cert, &missing);
        assert!(
            e.starts_with(&format!("TLS private key {}: I/O error", missing.display())),
            "{e}"
        );
        let e = err(&cert, &garbage);
        assert!(e.contains(&format!("TLS private key {}", garbage.display())), "{e}");
        assert!(e.contains("no items found"), "{e}");
        // A key where the certificate should be: no certificate in it.
        let e = err(&key, &key);
        assert!(
            e.contains(&format!("TLS certificate {}: no certificate", key.display())),
            "{e}"
        );
        let e = err(&empty_cert, &key);
        assert!(e.contains(&format!("TLS certificate {}", empty_cert.display())), "{e}");
        let e = err(&cert, &other_key);
        assert!(e.contains(&other_key.display().to_string()), "{e}");
    }
}
