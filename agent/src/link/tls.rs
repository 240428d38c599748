//! TLS for the link. Enrollment trusts exactly the CA whose SHA-256 the join
//! token pins; an enrolled session trusts only the stored CA and presents the
//! device's client certificate. TLS 1.3 only, ring provider, no 0-RTT.

use std::sync::Arc;

use ring::digest;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};

use super::LinkError;

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Accepts a server whose chain contains the pinned CA and verifies against it.
#[derive(Debug)]
struct PinnedCa {
    pin: [u8; 32],
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PinnedCa {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let ca = intermediates
            .iter()
            .find(|c| digest::digest(&digest::SHA256, c.as_ref()).as_ref() == self.pin)
            .ok_or_else(|| rustls::Error::General("collector CA does not match the join token's pin".into()))?;
        let mut roots = RootCertStore::empty();
        roots.add(ca.clone().into_owned())?;
        let inner = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), Arc::clone(&self.provider))
            .build()
            .map_err(|e| rustls::Error::General(e.to_string()))?;
        inner.verify_server_cert(end_entity, &[], server_name, ocsp, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

fn quic(mut tls: rustls::ClientConfig, alpn: &[u8]) -> Result<quinn::ClientConfig, LinkError> {
    tls.alpn_protocols = vec![alpn.to_vec()];
    tls.enable_early_data = false;
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls).map_err(|e| LinkError::Tls(e.to_string()))?;
    let mut config = quinn::ClientConfig::new(Arc::new(crypto));
    let mut transport = quinn::TransportConfig::default();
    transport.keep_alive_interval(Some(std::time::Duration::from_secs(15)));
    transport.max_idle_timeout(Some(quinn::IdleTimeout::from(quinn::VarInt::from_u32(60_000))));
    config.transport_config(Arc::new(transport));
    Ok(config)
}

/// Client config for enrollment: no client certificate, CA pinned by hash.
pub fn enroll_config(ca_pin: [u8; 32]) -> Result<quinn::ClientConfig, LinkError> {
    let provider = provider();
    let tls = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| LinkError::Tls(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(PinnedCa { pin: ca_pin, provider }))
        .with_no_client_auth();
    quic(tls, ward_protocol::version::ALPN_ENROLL)
}

/// Client config for a session: the stored CA only, and the device's certificate.
///
/// Built once per certificate for the life of the process: rustls keeps the
/// collector's session tickets in it, so a reconnect (after a cut, or the
/// collector's restart) resumes the TLS session instead of signing and checking
/// certificates again. A process holds one entry per device it runs as: the agent
/// one, a load generator one per simulated device.
pub fn session_config(
    ca_der: &[u8],
    client_cert_der: &[u8],
    tls_key_pkcs8: &[u8],
) -> Result<quinn::ClientConfig, LinkError> {
    static BUILT: std::sync::LazyLock<std::sync::Mutex<std::collections::HashMap<[u8; 32], quinn::ClientConfig>>> =
        std::sync::LazyLock::new(Default::default);
    let mut id = digest::Context::new(&digest::SHA256);
    for part in [ca_der, client_cert_der] {
        id.update(&(part.len() as u64).to_be_bytes());
        id.update(part);
    }
    let mut key = [0u8; 32];
    key.copy_from_slice(id.finish().as_ref());
    let mut built = BUILT.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(config) = built.get(&key) {
        return Ok(config.clone());
    }
    let config = build_session_config(ca_der, client_cert_der, tls_key_pkcs8)?;
    built.insert(key, config.clone());
    Ok(config)
}

fn build_session_config(
    ca_der: &[u8],
    client_cert_der: &[u8],
    tls_key_pkcs8: &[u8],
) -> Result<quinn::ClientConfig, LinkError> {
    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from(ca_der.to_vec()))
        .map_err(|e| LinkError::Tls(e.to_string()))?;
    let tls = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| LinkError::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_client_auth_cert(
            vec![CertificateDer::from(client_cert_der.to_vec())],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(tls_key_pkcs8.to_vec())),
        )
        .map_err(|e| LinkError::Tls(e.to_string()))?;
    quic(tls, ward_protocol::version::ALPN_SESSION)
}
