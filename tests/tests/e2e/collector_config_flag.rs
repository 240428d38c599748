//! The Debian package's layout: settings in a file outside the data dir (`--config`,
//! or `WARD_CONFIG`), used by `init`, `serve`, `token create` and `import`, and a
//! real agent enrolling with the token that layout produces.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use ward_tests::bin;

fn collector(config: &Path, data: &Path, args: &[&str]) -> Output {
    Command::new(bin("ward-collector"))
        .arg("--config")
        .arg(config)
        .arg("--data-dir")
        .arg(data)
        .args(args)
        .output()
        .unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn the_packaged_config_outside_the_data_dir_serves_and_enrolls() {
    let dir = tempfile::tempdir().unwrap();
    let etc = dir.path().join("etc-collector.toml");
    let packaged = include_str!("../../../packaging/collector.toml");
    let config = packaged
        .replace("quic_listen = \"0.0.0.0:4433\"", "quic_listen = \"127.0.0.1:0\"")
        .replace("http_listen = \"127.0.0.1:8080\"", "http_listen = \"127.0.0.1:0\"");
    assert_ne!(
        config, packaged,
        "the packaged config names the default listen addresses"
    );
    std::fs::write(&etc, &config).unwrap();
    let data = dir.path().join("data");

    let refused = collector(
        &etc,
        &dir.path().join("other"),
        &["init", "--public-addr", "10.9.9.9:4433"],
    );
    assert!(!refused.status.success());
    assert!(text(&refused).contains("set public_addr there"), "{}", text(&refused));

    let init = collector(&etc, &data, &["init"]);
    assert!(init.status.success(), "{}", text(&init));
    assert!(text(&init).contains("admin API token"));
    assert!(!data.join("collector.toml").exists(), "init must not copy the config");
    assert_eq!(
        std::fs::read_to_string(&etc).unwrap(),
        config,
        "init must leave the config alone"
    );

    // serve takes the config from the environment too.
    let mut serve = Command::new(bin("ward-collector"))
        .env("WARD_CONFIG", &etc)
        .arg("--data-dir")
        .arg(&data)
        .arg("serve")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = serve.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let quic = loop {
        let line = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("serve did not report its QUIC address");
        if let Some(addr) = line.strip_prefix("QUIC listening on ") {
            break addr.trim().to_string();
        }
    };

    let token = collector(&etc, &data, &["token", "create", "--ttl", "10m", "--addr", &quic]);
    assert!(token.status.success(), "{}", text(&token));
    let token = String::from_utf8(token.stdout).unwrap();
    let enroll = Command::new(bin("ward-agent"))
        .args(["enroll", "--state-dir"])
        .arg(dir.path().join("agent"))
        .env("WARD_JOIN_TOKEN", token.trim())
        .output()
        .unwrap();
    let _ = serve.kill();
    let _ = serve.wait();
    assert!(enroll.status.success(), "{}", text(&enroll));
    assert!(text(&enroll).contains("enrolled as device"), "{}", text(&enroll));
}

#[test]
fn import_reads_the_config_outside_the_data_dir() {
    let dir = tempfile::tempdir().unwrap();
    let etc = dir.path().join("etc-collector.toml");
    let config = include_str!("../../../packaging/collector.toml")
        .replace("max_import_bytes = 67108864", "max_import_bytes = 2000")
        .replace("max_record_bytes = 1048576", "max_record_bytes = 2000");
    std::fs::write(&etc, &config).unwrap();
    let data = dir.path().join("data");
    let init = collector(&etc, &data, &["init"]);
    assert!(init.status.success(), "{}", text(&init));

    let file = dir.path().join("okta.json");
    let event = serde_json::json!({"uuid": "e1", "published": "2024-05-01T10:00:00.000Z",
        "eventType": "user.session.start", "actor": {"alternateId": "bob@contoso.com", "type": "User"},
        "outcome": {"result": "SUCCESS"}, "client": {"ipAddress": "203.0.113.7"}});
    std::fs::write(&file, event.to_string()).unwrap();
    // From the environment, as serve takes it; the outcome is logged as the API's import is.
    let import = Command::new(bin("ward-collector"))
        .env("WARD_CONFIG", &etc)
        .env_remove("RUST_LOG")
        .arg("--data-dir")
        .arg(&data)
        .args(["import", "identity"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(import.status.success(), "{}", text(&import));
    let report: serde_json::Value = serde_json::from_slice(&import.stdout).unwrap();
    assert_eq!(report["imported"], 1, "{report}");
    let log = String::from_utf8_lossy(&import.stderr);
    assert!(log.contains("feed imported") && log.contains("actor=\"cli\""), "{log}");

    // The limit is that file's, not the built-in 64 MiB.
    std::fs::write(&file, vec![b' '; 2001]).unwrap();
    let refused = collector(&etc, &data, &["import", "identity", file.to_str().unwrap()]);
    assert!(!refused.status.success());
    let out = text(&refused);
    assert!(out.contains("2001 bytes; at most 2000"), "{out}");
    assert!(
        out.contains(&format!("feeds.max_import_bytes in {}", etc.display())),
        "{out}"
    );
    assert!(out.contains("feed import refused"), "{out}");
}
