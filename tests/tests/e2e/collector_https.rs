//! The collector's API over HTTPS: a throw-away CA and server certificate, `/healthz`
//! over TLS 1.3 and 1.2, plain HTTP refused, a silent client not blocking others,
//! a clean shutdown, and a clear startup error for a bad key file.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use ward_tests::{Collector, bin};

struct Pki {
    ca: CertificateDer<'static>,
    cert: PathBuf,
    key: PathBuf,
}

fn make_pki(dir: &Path) -> Pki {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let server_key = KeyPair::generate().unwrap();
    let server = CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .signed_by(&server_key, &ca)
        .unwrap();
    let (cert, key) = (dir.join("api.crt"), dir.join("api.key"));
    // Chain: leaf then CA.
    std::fs::write(&cert, format!("{}{}", server.pem(), ca.pem())).unwrap();
    std::fs::write(&key, server_key.serialize_pem()).unwrap();
    Pki {
        ca: ca.der().clone(),
        cert,
        key,
    }
}

/// A raw `GET path` over TLS with `ca` as the only root; returns the response text.
async fn https_get(
    addr: std::net::SocketAddr,
    ca: &CertificateDer<'static>,
    version: &'static rustls::SupportedProtocolVersion,
    path: &str,
) -> anyhow::Result<String> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.clone())?;
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_protocol_versions(&[version])?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(addr).await?;
    let mut tls = connector.connect(ServerName::try_from("localhost")?, tcp).await?;
    assert_eq!(tls.get_ref().1.protocol_version(), Some(version.version));
    tls.write_all(format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").as_bytes())
        .await?;
    let mut out = String::new();
    tls.read_to_string(&mut out).await?;
    Ok(out)
}

#[tokio::test]
async fn api_is_served_over_https() {
    let certs = tempfile::tempdir().unwrap();
    let pki = make_pki(certs.path());
    let (cert, key) = (pki.cert.clone(), pki.key.clone());
    let mut c = Collector::start_with(|config| {
        config.insert_str(
            0,
            &format!(
                "tls_cert_pem = \"{}\"\ntls_key_pem = \"{}\"\n",
                cert.display(),
                key.display()
            ),
        );
    })
    .unwrap();

    // A client that connects and says nothing must not hold up the handshakes of others.
    let _silent = TcpStream::connect(c.http).await.unwrap();

    for version in [&rustls::version::TLS13, &rustls::version::TLS12] {
        let resp = tokio::time::timeout(Duration::from_secs(5), https_get(c.http, &pki.ca, version, "/healthz"))
            .await
            .expect("a silent client blocked the handshake")
            .unwrap();
        assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    }

    // Plain HTTP on the same port gets no HTTP answer.
    assert!(c.get("/healthz").await.is_err(), "plain HTTP must not be answered");
    let mut plain = TcpStream::connect(c.http).await.unwrap();
    plain
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut reply = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), plain.read_to_end(&mut reply)).await;
    assert!(!reply.starts_with(b"HTTP/"), "{}", String::from_utf8_lossy(&reply));

    // Failed handshakes are counted (metrics need the admin token).
    let metrics = metrics_over_tls(&c, &pki.ca).await;
    let failures: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("ward_https_handshake_failures_total "))
        .expect("handshake failure counter")
        .trim()
        .parse()
        .unwrap();
    assert!(failures >= 2, "{failures}");

    assert!(c.stop().unwrap().success(), "graceful shutdown with HTTPS on");
}

async fn metrics_over_tls(c: &Collector, ca: &CertificateDer<'static>) -> String {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.clone()).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = TcpStream::connect(c.http).await.unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    let req = format!(
        "GET /metrics HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {}\r\nConnection: close\r\n\r\n",
        c.admin_token
    );
    tls.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    tls.read_to_string(&mut out).await.unwrap();
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    out
}

#[test]
fn a_bad_key_file_stops_startup_with_its_name() {
    let certs = tempfile::tempdir().unwrap();
    let pki = make_pki(certs.path());
    std::fs::write(&pki.key, "not a key\n").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let init = Command::new(bin("ward-collector"))
        .arg("--data-dir")
        .arg(&data)
        .args(["init", "--public-addr", "127.0.0.1:4433"])
        .output()
        .unwrap();
    assert!(init.status.success());
    let config_path = data.join("collector.toml");
    let config = std::fs::read_to_string(&config_path)
        .unwrap()
        .replace("quic_listen = \"0.0.0.0:4433\"", "quic_listen = \"127.0.0.1:0\"")
        .replace("http_listen = \"127.0.0.1:8080\"", "http_listen = \"127.0.0.1:0\"");
    let config = format!(
        "tls_cert_pem = \"{}\"\ntls_key_pem = \"{}\"\n{config}",
        pki.cert.display(),
        pki.key.display()
    );
    std::fs::write(&config_path, config).unwrap();
    let out = Command::new(bin("ward-collector"))
        .arg("--data-dir")
        .arg(&data)
        .arg("serve")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("TLS private key {}", pki.key.display())),
        "{stderr}"
    );
}
