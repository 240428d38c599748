//! The collector's certificate authority: creates the CA and the QUIC server
//! certificate at `init`, and issues each enrolled device its client certificate
//! for the TLS key the device generated (the collector never sees its private key).

use std::path::Path;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PKCS_ED25519, PublicKeyData, SignatureAlgorithm,
};
use ring::digest;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use thiserror::Error;

pub const CA_CERT: &str = "ca.der";
pub const CA_KEY: &str = "ca.key";
pub const SERVER_CERT: &str = "server.der";
pub const SERVER_KEY: &str = "server.key";
const CA_NAME: &str = "Ward collector CA";

#[derive(Debug, Error)]
pub enum PkiError {
    #[error("certificate generation failed: {0}")]
    Rcgen(#[from] rcgen::Error),
    #[error("cannot read or write {path}: {source}")]
    Io { path: String, source: std::io::Error },
}

/// The CA's parameters. Rebuilt identically whenever the CA signs, so the issuer
/// name in device certificates always matches the CA certificate's subject.
fn ca_params() -> Result<CertificateParams, PkiError> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, CA_NAME);
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.not_before = rcgen::date_time_ymd(2024, 1, 1);
    params.not_after = rcgen::date_time_ymd(2124, 1, 1);
    Ok(params)
}

/// The CA's certificate and key, as files in the data dir.
pub struct Ca {
    pub cert_der: Vec<u8>,
    key: KeyPair,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca").finish_non_exhaustive()
    }
}

/// What `init` writes.
#[derive(Debug)]
pub struct Generated {
    pub ca_cert_der: Vec<u8>,
    pub ca_key_pkcs8: Vec<u8>,
    pub server_cert_der: Vec<u8>,
    pub server_key_pkcs8: Vec<u8>,
}

/// Creates a CA and a server certificate naming `server_name` (plus the host of
/// `public_addr` when it is an IP or a name, and localhost).
pub fn generate(server_name: &str, public_host: &str) -> Result<Generated, PkiError> {
    let ca_key = KeyPair::generate_for(&PKCS_ED25519)?;
    let params = ca_params()?;
    let ca_cert = params.self_signed(&ca_key)?;
    let issuer = Issuer::new(params, &ca_key);

    let mut names = vec![server_name.to_string(), "localhost".to_string()];
    if !public_host.is_empty() && !names.iter().any(|n| n == public_host) {
        names.push(public_host.to_string());
    }
    let mut server = CertificateParams::new(names)?;
    server.distinguished_name.push(DnType::CommonName, server_name);
    server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    server.not_before = rcgen::date_time_ymd(2024, 1, 1);
    server.not_after = rcgen::date_time_ymd(2124, 1, 1);
    let server_key = KeyPair::generate_for(&PKCS_ED25519)?;
    let server_cert = server.signed_by(&server_key, &issuer)?;
    Ok(Generated {
        ca_cert_der: ca_cert.der().to_vec(),
        ca_key_pkcs8: ca_key.serialize_der(),
        server_cert_der: server_cert.der().to_vec(),
        server_key_pkcs8: server_key.serialize_der(),
    })
}

/// A raw Ed25519 public key, as rcgen needs it to certify a key it does not hold.
struct RawEd25519<'a>(&'a [u8; 32]);

impl PublicKeyData for RawEd25519<'_> {
    fn der_bytes(&self) -> &[u8] {
        self.0
    }
    fn algorithm(&self) -> &'static SignatureAlgorithm {
        &PKCS_ED25519
    }
}

impl Ca {
    pub fn load(data_dir: &Path) -> Result<Ca, PkiError> {
        let cert_der = read(data_dir, CA_CERT)?;
        let key_der = read(data_dir, CA_KEY)?;
        let key = KeyPair::from_pkcs8_der_and_sign_algo(&PrivatePkcs8KeyDer::from(key_der), &PKCS_ED25519)?;
        Ok(Ca { cert_der, key })
    }

    /// A client certificate for a device's TLS key, naming the device.
    pub fn issue_device_cert(&self, device_id: &str, tls_key: &[u8; 32]) -> Result<Vec<u8>, PkiError> {
        let issuer = Issuer::new(ca_params()?, &self.key);
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params
            .distinguished_name
            .push(DnType::CommonName, format!("ward-device-{device_id}"));
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.not_before = rcgen::date_time_ymd(2024, 1, 1);
        params.not_after = rcgen::date_time_ymd(2124, 1, 1);
        Ok(params.signed_by(&RawEd25519(tls_key), &issuer)?.der().to_vec())
    }
}

/// The server's certificate chain and key for rustls.
pub fn server_identity(data_dir: &Path) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), PkiError> {
    let chain = vec![
        CertificateDer::from(read(data_dir, SERVER_CERT)?),
        CertificateDer::from(read(data_dir, CA_CERT)?),
    ];
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(read(data_dir, SERVER_KEY)?));
    Ok((chain, key))
}

/// SHA-256 of a DER certificate: the CA pin in join tokens, and how a device's
/// connection is matched to its registration.
pub fn fingerprint(der: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(digest::digest(&digest::SHA256, der).as_ref());
    out
}

fn read(dir: &Path, name: &str) -> Result<Vec<u8>, PkiError> {
    let path = dir.join(name);
    std::fs::read(&path).map_err(|source| PkiError::Io {
        path: path.display().to_string(),
        source,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn issued_device_certificates_chain_to_the_ca() {
        let generated = generate("ward-collector", "127.0.0.1").unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(CA_CERT), &generated.ca_cert_der).unwrap();
        std::fs::write(dir.path().join(CA_KEY), &generated.ca_key_pkcs8).unwrap();
        let ca = Ca::load(dir.path()).unwrap();
        let device_key = ring::signature::Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new()).unwrap();
        let pair = ring::signature::Ed25519KeyPair::from_pkcs8(device_key.as_ref()).unwrap();
        use ring::signature::KeyPair as _;
        let raw: [u8; 32] = pair.public_key().as_ref().try_into().unwrap();
        let cert = ca.issue_device_cert("01TEST", &raw).unwrap();

        let mut roots = rustls::RootCertStore::empty();
        roots.add(CertificateDer::from(generated.ca_cert_der.clone())).unwrap();
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(roots.into(), provider)
            .build()
            .unwrap();
        verifier
            .verify_client_cert(&CertificateDer::from(cert), &[], rustls_pki_types::UnixTime::now())
            .unwrap();
    }
}
