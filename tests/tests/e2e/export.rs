//! Export sinks against real receivers: rsyslog (the Debian package, started
//! unprivileged in a temporary directory with its own config: imtcp over TLS with
//! the GnuTLS driver, imudp) receives RFC 5424 and CEF and writes what it parsed
//! to a file the test reads; a sink down for a while, and collectors killed with
//! SIGKILL mid-delivery, lose nothing and keep the order. HTTP sinks go to
//! receivers in the test that check the wire format as documented: Standard
//! Webhooks signatures verified by a verifier written here from the specification,
//! Splunk HEC and Elasticsearch `_bulk`.

use std::collections::HashMap;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use serde_json::Value;
use ward_tests::{Collector, TestDevice, metric};

/// A throw-away CA and a certificate for `localhost` and 127.0.0.1, as PEM files.
struct Pki {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

fn make_pki(dir: &Path) -> Pki {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    let pki = Pki {
        ca: dir.join("ca.pem"),
        cert: dir.join("server.pem"),
        key: dir.join("server.key"),
    };
    std::fs::write(&pki.ca, ca.pem()).unwrap();
    std::fs::write(&pki.cert, cert.pem()).unwrap();
    std::fs::write(&pki.key, key.serialize_pem()).unwrap();
    pki
}

/// A port free on loopback now (for receivers that cannot report the one they took).
fn free_port(udp: bool) -> u16 {
    if udp {
        std::net::UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    } else {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }
}

/// rsyslogd in a directory of its own, listening on loopback: TLS (RFC 5425) on
/// `tls_port`, UDP on `udp_port`; every message it receives is one JSON line in
/// `out` with the RFC 5424 fields it parsed.
struct Rsyslog {
    child: Child,
    out: PathBuf,
    tls_port: u16,
    udp_port: u16,
    _dir: tempfile::TempDir,
}

fn rsyslogd() -> PathBuf {
    for p in ["/usr/sbin/rsyslogd", "/sbin/rsyslogd"] {
        if Path::new(p).exists() {
            return p.into();
        }
    }
    panic!(
        "rsyslogd is not installed: these tests need the Debian packages rsyslog and rsyslog-gnutls \
         (apt-get install rsyslog rsyslog-gnutls; .ci/run installs them)"
    );
}

impl Rsyslog {
    fn start(pki: &Pki, tls_port: u16) -> Rsyslog {
        let bin = rsyslogd();
        let gtls = [
            "/usr/lib/x86_64-linux-gnu/rsyslog/lmnsd_gtls.so",
            "/usr/lib/aarch64-linux-gnu/rsyslog/lmnsd_gtls.so",
        ];
        assert!(
            gtls.iter().any(|p| Path::new(p).exists()),
            "rsyslog's GnuTLS driver is not installed: apt-get install rsyslog-gnutls"
        );
        let dir = tempfile::tempdir().unwrap();
        let udp_port = free_port(true);
        let out = dir.path().join("received.jsonl");
        let work = dir.path().join("work");
        std::fs::create_dir(&work).unwrap();
        let conf = format!(
            r#"
global(workDirectory="{work}"
       defaultNetstreamDriver="gtls"
       defaultNetstreamDriverCAFile="{ca}"
       defaultNetstreamDriverCertFile="{cert}"
       defaultNetstreamDriverKeyFile="{key}"
       maxMessageSize="256k")
module(load="imtcp" streamDriver.name="gtls" streamDriver.mode="1" streamDriver.authMode="anon")
input(type="imtcp" address="127.0.0.1" port="{tls_port}" name="tls")
module(load="imudp")
input(type="imudp" address="127.0.0.1" port="{udp_port}" name="udp")
template(name="parsed" type="list" option.jsonf="on") {{
  property(outname="input" name="inputname" format="jsonf")
  property(outname="pri" name="pri" format="jsonf")
  property(outname="version" name="protocol-version" format="jsonf")
  property(outname="timestamp" name="timereported" dateFormat="rfc3339" format="jsonf")
  property(outname="hostname" name="hostname" format="jsonf")
  property(outname="app" name="app-name" format="jsonf")
  property(outname="procid" name="procid" format="jsonf")
  property(outname="msgid" name="msgid" format="jsonf")
  property(outname="sd" name="structured-data" format="jsonf")
  property(outname="msg" name="msg" format="jsonf")
}}
action(type="omfile" file="{out}" template="parsed" flushOnTXEnd="on" asyncWriting="off")
"#,
            work = work.display(),
            ca = pki.ca.display(),
            cert = pki.cert.display(),
            key = pki.key.display(),
            out = out.display(),
        );
        let conf_path = dir.path().join("rsyslog.conf");
        std::fs::write(&conf_path, conf).unwrap();
        let mut cmd = Command::new(&bin);
        if ward_tests::is_root() {
            // Unprivileged: nobody, with the directory and key files readable to it.
            use std::os::unix::fs::PermissionsExt;
            for p in [dir.path(), &work] {
                std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o777)).unwrap();
            }
            for p in [&pki.ca, &pki.cert, &pki.key, &conf_path] {
                std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o644)).unwrap();
            }
            if let Some(parent) = pki.ca.parent() {
                std::fs::set_permissions(parent, std::fs::Permissions::from_mode(0o755)).unwrap();
            }
            cmd = Command::new("setpriv");
            cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
                .arg(&bin);
        }
        let child = cmd
            .arg("-n")
            .arg("-f")
            .arg(&conf_path)
            .arg("-i")
            .arg(dir.path().join("rsyslogd.pid"))
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", tls_port)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "rsyslogd did not listen on {tls_port}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Rsyslog {
            child,
            out,
            tls_port,
            udp_port,
            _dir: dir,
        }
    }

    /// Every message received so far.
    fn received(&self) -> Vec<Value> {
        let Ok(f) = std::fs::File::open(&self.out) else {
            return Vec::new();
        };
        std::io::BufReader::new(f)
            .lines()
            .map_while(Result::ok)
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(&l).unwrap_or_else(|e| panic!("rsyslog wrote {l:?}: {e}")))
            .collect()
    }

    async fn wait_for(&self, what: &str, within: Duration, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let started = Instant::now();
        loop {
            let got = self.received();
            if done(&got) {
                return got;
            }
            assert!(
                started.elapsed() < within,
                "{what}: rsyslog has {} messages after {within:?}",
                got.len()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Rsyslog {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A CEF event's seven header fields (unescaped) and its extension (unescaped),
/// parsed as the CEF specification writes them: `\|` and `\\` in the header; `\=`,
/// `\\`, `\n`, `\r` in values; a value runs to the space before the next `key=`.
fn parse_cef(s: &str) -> (Vec<String>, HashMap<String, String>) {
    let mut header = Vec::new();
    let mut field = String::new();
    let mut chars = s.chars();
    while header.len() < 7 {
        match chars.next() {
            Some('\\') => field.push(chars.next().expect("escape at end of header")),
            Some('|') => header.push(std::mem::take(&mut field)),
            Some(c) => field.push(c),
            None => panic!("CEF header has {} fields: {s}", header.len()),
        }
    }
    let ext: String = chars.collect();
    // Split at unescaped `=`: each key is the last word before it.
    let mut pairs: Vec<(String, String)> = Vec::new();
    let mut raw = String::new();
    let mut it = ext.chars().peekable();
    while let Some(c) = it.next() {
        if c == '\\' {
            raw.push(c);
            if let Some(n) = it.next() {
                raw.push(n);
            }
        } else if c == '=' {
            let (before, key) = match raw.rfind(' ') {
                Some(i) => (raw[..i].to_string(), raw[i + 1..].to_string()),
                None => (String::new(), raw.clone()),
            };
            if let Some(last) = pairs.last_mut() {
                last.1 = before;
            }
            pairs.push((key, String::new()));
            raw.clear();
        } else {
            raw.push(c);
        }
    }
    if let Some(last) = pairs.last_mut() {
        last.1 = raw;
    }
    let unescape = |v: &str| {
        let mut out = String::new();
        let mut it = v.chars();
        while let Some(c) = it.next() {
            if c == '\\' {
                match it.next() {
                    Some('n') => out.push('\n'),
                    Some('r') => out.push('\r'),
                    Some(o) => out.push(o),
                    None => out.push('\\'),
                }
            } else {
                out.push(c);
            }
        }
        out
    };
    (header, pairs.into_iter().map(|(k, v)| (k, unescape(&v))).collect())
}

#[test]
fn the_cef_parser_here_follows_the_spec() {
    let (h, e) = parse_cef(r"CEF:0|Ward|Ward EDR|1\|2|sig\\x|a name|8|msg=a\=b c\\d\n end=x dvc=host");
    assert_eq!(h, ["CEF:0", "Ward", "Ward EDR", "1|2", "sig\\x", "a name", "8"]);
    assert_eq!(e["msg"], "a=b c\\d\n");
    assert_eq!(e["end"], "x");
    assert_eq!(e["dvc"], "host");
}

/// A syslog sink's `[[export]]` entry.
fn syslog_sink(name: &str, transport: &str, port: u16, format: &str, ca: &Path, extra: &str) -> String {
    let tls = if transport == "tls" {
        format!("ca_pem = \"{}\"\nserver_name = \"localhost\"\n", ca.display())
    } else {
        String::new()
    };
    format!(
        "\n[[export]]\nname = \"{name}\"\nkind = \"syslog\"\ntransport = \"{transport}\"\naddress = \"127.0.0.1:{port}\"\nformat = \"{format}\"\nrecords = [\"alerts\"]\nretry_initial_ms = 100\nretry_max_ms = 500\n{tls}{extra}"
    )
}

/// The Ward JSON an RFC 5424 message from rsyslog carries.
fn ward_json(m: &Value) -> Value {
    let msg = m["msg"].as_str().unwrap();
    serde_json::from_str(msg.trim_start()).unwrap_or_else(|e| panic!("message is not Ward JSON ({e}): {msg}"))
}

/// Alert ids in the order a device sent them (its sequence).
async fn send_alerts(dev: &mut TestDevice, n: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for chunk in 0..n.div_ceil(100) {
        let k = (n - chunk * 100).min(100);
        let alerts: Vec<_> = (0..k).map(|_| dev.next_alert()).collect();
        ids.extend(alerts.iter().map(|a| a.id.to_string()));
        let signed = alerts.iter().map(|a| dev.sign(a)).collect();
        dev.send_batch(signed).await.unwrap();
    }
    ids
}

#[tokio::test]
async fn syslog_reaches_rsyslog_over_tls_and_udp_as_rfc5424_and_cef() {
    let certs = tempfile::tempdir().unwrap();
    let pki = make_pki(certs.path());
    let rsyslog = Rsyslog::start(&pki, free_port(false));
    let (tls, udp) = (rsyslog.tls_port, rsyslog.udp_port);
    let ca = pki.ca.clone();
    let collector = Collector::start_with(|c| {
        ward_tests::without_folding(c);
        c.push_str(&syslog_sink("tls-json", "tls", tls, "rfc5424", &ca, ""));
        c.push_str(&syslog_sink("tls-cef", "tls", tls, "cef", &ca, ""));
        c.push_str(&syslog_sink("udp-json", "udp", udp, "rfc5424", &ca, "facility = 16\n"));
    })
    .unwrap();
    // The spool starts at the newest stored entries: give it a moment to be created.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut dev = TestDevice::enroll(&collector.join_token(1, "1h").unwrap(), "web-1")
        .await
        .unwrap();
    dev.connect().await.unwrap();
    let ids = send_alerts(&mut dev, 30).await;

    let got = rsyslog
        .wait_for("3 sinks x 30 alerts", Duration::from_secs(30), |m| m.len() >= 90)
        .await;
    let by = |input: &str, cef: bool| -> Vec<&Value> {
        got.iter()
            .filter(|m| m["input"] == input && m["msg"].as_str().unwrap().starts_with("CEF:") == cef)
            .collect()
    };
    let (tls_json, tls_cef, udp_json) = (by("tls", false), by("tls", true), by("udp", false));
    assert_eq!(
        (tls_json.len(), tls_cef.len(), udp_json.len()),
        (30, 30, 30),
        "{got:#?}"
    );

    for (msgs, facility) in [(&tls_json, "13"), (&udp_json, "16")] {
        let order: Vec<String> = msgs
            .iter()
            .map(|m| {
                // rsyslog parsed every RFC 5424 field.
                assert_eq!(m["version"], "1");
                assert_eq!(m["app"], "ward");
                assert_eq!(m["msgid"], "alert");
                // facility * 8 + 4 (warning: a medium alert).
                let pri: u32 = m["pri"].as_str().unwrap().parse().unwrap();
                assert_eq!(pri.to_string(), (facility.parse::<u32>().unwrap() * 8 + 4).to_string());
                let v = ward_json(m);
                let id = v["alert"]["id"].as_str().unwrap().to_string();
                let sd = m["sd"].as_str().unwrap();
                assert!(
                    sd.starts_with(&format!(
                        "[ward@32473 id=\"alert-{id}\" kind=\"alert\" severity=\"medium\""
                    )),
                    "{sd}"
                );
                assert_eq!(v["alert"]["device_id"], dev.id().to_string());
                assert_eq!(v["hostname"], "web-1");
                id
            })
            .collect();
        assert_eq!(order, ids, "messages arrive in the order the alerts were stored");
    }
    let cef_ids: Vec<String> = tls_cef
        .iter()
        .map(|m| {
            let (h, e) = parse_cef(m["msg"].as_str().unwrap());
            assert_eq!(&h[..3], ["CEF:0", "Ward", "Ward EDR"]);
            assert_eq!(h[4], "ward-test-rule");
            assert_eq!(h[5], "Test rule");
            assert_eq!(h[6], "5");
            assert_eq!(e["dvchost"], "web-1");
            assert_eq!(e["cs1"], "T1059.004");
            assert_eq!(e["cat"], "agent");
            let matched: Value = serde_json::from_str(&e["cs4"]).unwrap();
            assert!(matched.to_string().contains("TargetFilename"), "{matched}");
            e["externalId"].clone()
        })
        .collect();
    assert_eq!(cef_ids, ids);

    let metrics = collector.metrics().await.unwrap();
    for sink in ["tls-json", "tls-cef", "udp-json"] {
        assert_eq!(
            metric(&metrics, &format!("ward_export_sent_total{{sink=\"{sink}\"}}")),
            30,
            "{metrics}"
        );
        assert_eq!(metric(&metrics, &format!("ward_export_queued{{sink=\"{sink}\"}}")), 0);
    }
}
