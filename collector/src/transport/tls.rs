//! QUIC + TLS 1.3 configuration of the agent endpoint. Client certificates are
//! optional at the TLS layer (an enrolling agent has none yet) and required by the
//! session ALPN. 0-RTT is off: replayed early data can never write or command.

use std::sync::Arc;
use std::time::Duration;

use rustls::RootCertStore;
use rustls::server::{ProducesTickets, WebPkiClientVerifier};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use thiserror::Error;
use ward_protocol::version::{ALPN_ENROLL, ALPN_SESSION};

#[derive(Debug, Error)]
pub enum TlsError {
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("client verifier: {0}")]
    Verifier(String),
    #[error("QUIC crypto: {0}")]
    Quic(String),
}

pub fn server_config(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    ca_der: &[u8],
    ticketer: Arc<dyn ProducesTickets>,
) -> Result<quinn::ServerConfig, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    roots.add(CertificateDer::from(ca_der.to_vec()))?;
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .allow_unauthenticated()
        .build()
        .map_err(|e| TlsError::Verifier(e.to_string()))?;
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)?;
    tls.alpn_protocols = vec![ALPN_SESSION.to_vec(), ALPN_ENROLL.to_vec()];
    // No 0-RTT: early data is replayable by design.
    tls.max_early_data_size = 0;
    // Stateless tickets (see `tickets`): a reconnecting agent resumes, also across a
    // restart; nothing per agent is held here for it.
    tls.ticketer = ticketer;
    // An agent spends a ticket on every attempt, also one refused before its
    // handshake (too many pending in a storm): four let it retry resumed.
    tls.send_tls13_tickets = 4;
    tls.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls).map_err(|e| TlsError::Quic(e.to_string()))?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    let mut transport = quinn::TransportConfig::default();
    // One long-lived stream per agent (plus one spare for a reconnect race).
    transport.max_concurrent_bidi_streams(2u32.into());
    transport.max_concurrent_uni_streams(0u32.into());
    transport.max_idle_timeout(Some(quinn::IdleTimeout::from(quinn::VarInt::from_u32(IDLE_TIMEOUT_MS))));
    transport.keep_alive_interval(None);
    config.transport_config(Arc::new(transport));
    // A client that got a Retry keeps resending its Initial with the token, backing
    // off 1, 2, 4, 8 s while a storm drops datagrams; quinn's 15 s default (14 after
    // it rounds the issue time down) then refused a real agent's fourth resend with
    // INVALID_TOKEN, which ends the attempt. The token is bound to the address, so
    // living as long as an idle connection costs nothing.
    config.retry_token_lifetime(Duration::from_millis(u64::from(IDLE_TIMEOUT_MS)));
    Ok(config)
}

/// Ensures the process-wide rustls provider is ring (quinn may ask for the default).
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A connection with nothing on it for this long is closed.
const IDLE_TIMEOUT_MS: u32 = 60_000;

/// A QUIC + TLS handshake takes a few round trips; one that has not finished by
/// then is dropped (it holds a place under `max_connections` meanwhile).
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_millis(ward_protocol::session::HANDSHAKE_TIMEOUT_MS);

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// A Retry token outlives a client's resends of its Initial (1 + 2 + 4 + 8 s of
    /// back-off while a storm drops datagrams): with quinn's 15 s a real enrollment
    /// under a silent flood was refused with INVALID_TOKEN in CI.
    #[test]
    fn a_retry_token_lives_as_long_as_an_idle_connection() {
        install_crypto_provider();
        let generated = crate::pki::generate("ward-collector", "127.0.0.1").unwrap();
        let config = server_config(
            vec![CertificateDer::from(generated.server_cert_der.clone())],
            PrivateKeyDer::try_from(generated.server_key_pkcs8.clone()).unwrap(),
            &generated.ca_cert_der,
            Arc::new(
                crate::transport::tickets::PersistentTicketer::open(
                    tempfile::tempdir().unwrap().path(),
                    Arc::default(),
                )
                .unwrap(),
            ),
        )
        .unwrap();
        let shown = format!("{config:?}");
        assert!(shown.contains("retry_token_lifetime: 60s"), "{shown}");
    }
}
