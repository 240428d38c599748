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

    // The counters move just after the receiver has the messages.
    for sink in ["tls-json", "tls-cef", "udp-json"] {
        let sent = format!("ward_export_sent_total{{sink=\"{sink}\"}}");
        wait_metric(&collector, &sent, Duration::from_secs(5), |v| v == 30).await;
        let queued = format!("ward_export_queued{{sink=\"{sink}\"}}");
        wait_metric(&collector, &queued, Duration::from_secs(5), |v| v == 0).await;
    }
}

/// Ids of the alerts in rsyslog's messages of `input`, first occurrence of each
/// (a redelivery after a crash may repeat some), and how many repeats there were.
fn first_occurrences(got: &[Value]) -> (Vec<String>, usize) {
    let mut seen = std::collections::HashSet::new();
    let mut order = Vec::new();
    for m in got {
        let id = ward_json(m)["alert"]["id"].as_str().unwrap().to_string();
        if seen.insert(id.clone()) {
            order.push(id);
        }
    }
    let repeats = got.len() - order.len();
    (order, repeats)
}

async fn wait_metric(c: &Collector, name: &str, within: Duration, ok: impl Fn(u64) -> bool) -> u64 {
    let started = Instant::now();
    loop {
        if let Ok(text) = c.metrics().await {
            let v = metric(&text, name);
            if ok(v) {
                return v;
            }
        }
        assert!(
            started.elapsed() < within,
            "{name} did not reach its value within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The receiver is down while alerts arrive (they wait in the spool, retried with
/// back-off), the collector is killed with SIGKILL, the receiver comes up, the
/// collector restarts and is killed again in the middle of delivering: after the
/// last restart every alert has arrived, in the order stored.
#[tokio::test]
async fn a_sink_down_catches_up_in_order_and_sigkill_mid_delivery_loses_nothing() {
    let certs = tempfile::tempdir().unwrap();
    let pki = make_pki(certs.path());
    let port = free_port(false);
    let ca = pki.ca.clone();
    let mut collector = Collector::start_with(|c| {
        ward_tests::without_folding(c);
        c.push_str(&syslog_sink("siem", "tls", port, "rfc5424", &ca, "batch_records = 5\n"));
    })
    .unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut dev = TestDevice::enroll(&collector.join_token(1, "1h").unwrap(), "db-1")
        .await
        .unwrap();
    dev.connect().await.unwrap();
    let n = 1500;
    let ids = send_alerts(&mut dev, n).await;
    let queued = "ward_export_queued{sink=\"siem\"}";
    wait_metric(&collector, queued, Duration::from_secs(30), |v| v == n as u64).await;
    wait_metric(
        &collector,
        "ward_export_failed_total{sink=\"siem\"}",
        Duration::from_secs(10),
        |v| v >= 2,
    )
    .await;

    collector.kill9();
    let rsyslog = Rsyslog::start(&pki, port);
    collector.serve().unwrap();
    // Kill it again as soon as delivery has begun and before it has finished.
    let started = Instant::now();
    loop {
        let got = rsyslog.received().len();
        if got > 0 {
            assert!(
                got < n,
                "delivery finished before the kill ({got} messages): nothing was killed mid-way"
            );
            collector.kill9();
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "nothing delivered after the restart"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let at_kill = rsyslog.received().len();
    collector.serve().unwrap();
    let got = rsyslog
        .wait_for("every alert after the restarts", Duration::from_secs(60), |m| {
            first_occurrences(m).0.len() >= n
        })
        .await;
    let (order, repeats) = first_occurrences(&got);
    assert_eq!(order, ids, "every alert arrived once at least, in the order stored");
    println!("{at_kill} of {n} delivered at the SIGKILL; {repeats} sent again after it (at least once)");
    wait_metric(&collector, queued, Duration::from_secs(10), |v| v == 0).await;
}

/// A sink whose spool is full takes no more records: they are counted as dropped,
/// the rest of the collector goes on, and what was spooled is delivered.
#[tokio::test]
async fn a_full_spool_drops_new_records_for_its_sink_only_and_says_so() {
    let certs = tempfile::tempdir().unwrap();
    let pki = make_pki(certs.path());
    let port = free_port(false);
    let ca = pki.ca.clone();
    let mut collector = Collector::start_with(|c| {
        ward_tests::without_folding(c);
        c.push_str(&syslog_sink(
            "small",
            "tls",
            port,
            "rfc5424",
            &ca,
            "spool_max_records = 40\n",
        ));
    })
    .unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut dev = TestDevice::enroll(&collector.join_token(1, "1h").unwrap(), "db-2")
        .await
        .unwrap();
    dev.connect().await.unwrap();
    let ids = send_alerts(&mut dev, 100).await;
    wait_metric(
        &collector,
        "ward_export_dropped_total{sink=\"small\"}",
        Duration::from_secs(20),
        |v| v == 60,
    )
    .await;
    let text = collector.metrics().await.unwrap();
    assert_eq!(metric(&text, "ward_export_queued{sink=\"small\"}"), 40);
    // Ingest went on: every alert was stored.
    assert_eq!(metric(&text, "ward_alerts_stored_total"), 100);
    let rsyslog = Rsyslog::start(&pki, port);
    let got = rsyslog
        .wait_for("the 40 spooled", Duration::from_secs(30), |m| m.len() >= 40)
        .await;
    assert_eq!(first_occurrences(&got).0, ids[..40].to_vec());
    drop(collector.stop());
}

/// One request an HTTP receiver took.
#[derive(Debug, Clone)]
struct Request {
    path: String,
    headers: HashMap<String, String>,
    body: Vec<u8>,
    /// The status it was answered with.
    status: u16,
}

type Answer = Box<dyn Fn(&Request) -> (u16, String) + Send + Sync>;

/// A plain HTTP/1.1 receiver on loopback (keep-alive, Content-Length bodies), as a
/// webhook endpoint, Splunk HEC or Elasticsearch would be; `answer` decides each reply.
struct Receiver {
    addr: std::net::SocketAddr,
    requests: std::sync::Arc<std::sync::Mutex<Vec<Request>>>,
}

impl Receiver {
    async fn start(answer: Answer) -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let answer = std::sync::Arc::new(answer);
        let log = std::sync::Arc::clone(&requests);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (log, answer) = (std::sync::Arc::clone(&log), std::sync::Arc::clone(&answer));
                tokio::spawn(async move {
                    let _ = Self::connection(stream, log, answer).await;
                });
            }
        });
        Receiver { addr, requests }
    }

    async fn connection(
        mut stream: tokio::net::TcpStream,
        log: std::sync::Arc<std::sync::Mutex<Vec<Request>>>,
        answer: std::sync::Arc<Answer>,
    ) -> std::io::Result<()> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut buf = Vec::new();
        loop {
            let head_end = loop {
                if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    break i;
                }
                let mut chunk = [0u8; 8192];
                let n = stream.read(&mut chunk).await?;
                if n == 0 {
                    return Ok(());
                }
                buf.extend_from_slice(&chunk[..n]);
            };
            let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
            let mut lines = head.split("\r\n");
            let request_line = lines.next().unwrap_or_default().to_string();
            let headers: HashMap<String, String> = lines
                .filter_map(|l| l.split_once(':'))
                .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
                .collect();
            let len: usize = headers.get("content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
            while buf.len() < head_end + 4 + len {
                let mut chunk = [0u8; 65536];
                let n = stream.read(&mut chunk).await?;
                if n == 0 {
                    return Ok(());
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            let body = buf[head_end + 4..head_end + 4 + len].to_vec();
            buf.drain(..head_end + 4 + len);
            let mut parts = request_line.split(' ');
            assert_eq!(parts.next(), Some("POST"), "{request_line}");
            let mut req = Request {
                path: parts.next().unwrap_or_default().to_string(),
                headers,
                body,
                status: 0,
            };
            let (status, reply) = answer(&req);
            req.status = status;
            log.lock().unwrap().push(req);
            let response = format!(
                "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{reply}",
                reply.len()
            );
            stream.write_all(response.as_bytes()).await?;
        }
    }

    fn taken(&self) -> Vec<Request> {
        self.requests
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.status / 100 == 2)
            .cloned()
            .collect()
    }

    async fn wait_for(&self, what: &str, within: Duration, done: impl Fn(&[Request]) -> bool) -> Vec<Request> {
        let started = Instant::now();
        loop {
            let got = self.taken();
            if done(&got) {
                return got;
            }
            assert!(
                started.elapsed() < within,
                "{what}: {} requests taken after {within:?}",
                got.len()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Verifies a Standard Webhooks request with `secret` (`whsec_` + base64), written
/// from the specification (standard-webhooks.md, "Verifying webhook authenticity"):
/// the signed content is `{webhook-id}.{webhook-timestamp}.{body}`, HMAC-SHA256 with
/// the base64-decoded secret; `webhook-signature` holds space-separated `v1,<base64>`
/// entries, any of which may match; the timestamp must be within 5 minutes of now.
fn verify_standard_webhook(secret: &str, req: &Request, now_s: u64) -> Result<(), String> {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    let key = b64
        .decode(secret.strip_prefix("whsec_").ok_or("secret without whsec_")?)
        .map_err(|e| e.to_string())?;
    let id = req.headers.get("webhook-id").ok_or("no webhook-id")?;
    let ts = req.headers.get("webhook-timestamp").ok_or("no webhook-timestamp")?;
    let ts_n: u64 = ts.parse().map_err(|_| format!("timestamp {ts:?}"))?;
    if ts_n.abs_diff(now_s) > 300 {
        return Err(format!("timestamp {ts_n} too far from {now_s}"));
    }
    let mut content = format!("{id}.{ts}.").into_bytes();
    content.extend_from_slice(&req.body);
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &key);
    let header = req.headers.get("webhook-signature").ok_or("no webhook-signature")?;
    for entry in header.split(' ') {
        let Some(sig) = entry.strip_prefix("v1,") else {
            continue;
        };
        let Ok(sig) = b64.decode(sig) else {
            continue;
        };
        // ring's verify compares in constant time, as the specification asks.
        if ring::hmac::verify(&key, &content, &sig).is_ok() {
            return Ok(());
        }
    }
    Err("no signature matches".into())
}

fn whsec(byte: u8) -> String {
    use base64::Engine as _;
    format!("whsec_{}", base64::engine::general_purpose::STANDARD.encode([byte; 32]))
}

/// Webhooks signed per Standard Webhooks with two secrets (a rotation: a receiver
/// that knows either verifies), in Ward's schema and in OCSF; the receiver fails
/// the first requests (retried) and then verifies every one; incident changes
/// arrive in their order (opened before an analyst's change), and every OCSF record
/// validates against the OCSF schema.
#[tokio::test]
async fn webhooks_are_signed_per_standard_webhooks_retried_and_ocsf_validates() {
    let failures_left = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(3));
    let left = std::sync::Arc::clone(&failures_left);
    let receiver = Receiver::start(Box::new(move |_req| {
        if left.load(std::sync::atomic::Ordering::SeqCst) > 0 {
            left.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
            return (503, "{}".into());
        }
        (200, "{}".into())
    }))
    .await;
    let (old, new) = (whsec(1), whsec(2));
    let addr = receiver.addr;
    let (o, n) = (old.clone(), new.clone());
    let collector = Collector::start_with(move |c| {
        ward_tests::without_folding(c);
        c.push_str(&format!(
            "\n[[export]]\nname = \"hook\"\nkind = \"webhook\"\nurl = \"http://{addr}/ward\"\nsecrets = [\"{o}\", \"{n}\"]\nretry_initial_ms = 100\nretry_max_ms = 400\n\
             \n[[export]]\nname = \"hook-ocsf\"\nkind = \"webhook\"\nformat = \"ocsf\"\nurl = \"http://{addr}/ocsf\"\nsecrets = [\"{n}\"]\nretry_initial_ms = 100\nretry_max_ms = 400\n"
        ));
    })
    .unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut dev = TestDevice::enroll(&collector.join_token(1, "1h").unwrap(), "app-1")
        .await
        .unwrap();
    dev.connect().await.unwrap();
    let ids = send_alerts(&mut dev, 5).await;
    let (incident, _) = collector.incident_of(&ids[0]).await;
    // Wait for the incident's first record before the analyst's change.
    let is_incident =
        |r: &Request| serde_json::from_slice::<Value>(&r.body).unwrap()["schema"] == "ward.incident_change/1";
    receiver
        .wait_for("the incident opened", Duration::from_secs(20), |rs| {
            rs.iter().any(is_incident)
        })
        .await;
    let (status, body) = collector
        .patch_as(
            &format!("/api/v1/incidents/{incident}"),
            &collector.admin_token,
            serde_json::json!({"status": "in_progress"}),
        )
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");

    let changed = |r: &Request| {
        let v: Value = serde_json::from_slice(&r.body).unwrap();
        v["changes"]
            .as_array()
            .is_some_and(|c| c.iter().any(|c| c["kind"] == "status"))
            || v["unmapped"]["changes"]
                .as_array()
                .is_some_and(|c| c.iter().any(|c| c["kind"] == "status"))
    };
    let got = receiver
        .wait_for(
            "alerts and incident changes on both sinks",
            Duration::from_secs(30),
            |rs| {
                rs.iter().filter(|r| r.path == "/ward" && changed(r)).count() == 1
                    && rs.iter().filter(|r| r.path == "/ocsf" && changed(r)).count() == 1
                    && rs.iter().filter(|r| r.path == "/ocsf").count() >= 7
            },
        )
        .await;
    assert_eq!(failures_left.load(std::sync::atomic::Ordering::SeqCst), 0);
    let now_s = ward_tests::now_ms() / 1000;
    for r in &got {
        let ward = r.path == "/ward";
        // The new secret verifies every request; the old one those of the sink that still has it.
        verify_standard_webhook(&new, r, now_s).unwrap_or_else(|e| panic!("{}: {e}", r.path));
        assert_eq!(verify_standard_webhook(&old, r, now_s).is_ok(), ward, "{}", r.path);
        assert!(verify_standard_webhook(&whsec(3), r, now_s).is_err());
        // A body altered in transit fails.
        let mut tampered = r.clone();
        tampered.body.push(b' ');
        assert!(verify_standard_webhook(&new, &tampered, now_s).is_err());
        assert_eq!(
            r.headers.get("content-type").map(String::as_str),
            Some("application/json")
        );
    }
    let ward: Vec<Value> = got
        .iter()
        .filter(|r| r.path == "/ward")
        .map(|r| serde_json::from_slice(&r.body).unwrap())
        .collect();
    let alert_ids: Vec<&str> = ward.iter().filter_map(|v| v["alert"]["id"].as_str()).collect();
    assert_eq!(alert_ids, ids, "alerts in the order stored");
    for (r, v) in got.iter().filter(|r| r.path == "/ward").zip(&ward) {
        assert_eq!(
            r.headers["webhook-id"],
            v["id"].as_str().unwrap(),
            "webhook-id is the record's id"
        );
    }
    // The incident's records: opened first, the analyst's change last.
    let kinds: Vec<Vec<String>> = ward
        .iter()
        .filter(|v| v["incident"]["id"] == incident.as_str())
        .map(|v| {
            v["changes"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c["kind"].as_str().unwrap().to_string())
                .collect()
        })
        .collect();
    assert_eq!(
        kinds.first().and_then(|k| k.first()).map(String::as_str),
        Some("created"),
        "{kinds:?}"
    );
    assert_eq!(
        kinds.last().and_then(|k| k.last()).map(String::as_str),
        Some("status"),
        "{kinds:?}"
    );

    let schema = crate::export_ocsf::Schema::load();
    let ocsf: Vec<Value> = got
        .iter()
        .filter(|r| r.path == "/ocsf")
        .map(|r| serde_json::from_slice(&r.body).unwrap())
        .collect();
    for v in &ocsf {
        crate::export_ocsf::assert_valid(&schema, v);
    }
    let classes: Vec<u64> = ocsf.iter().map(|v| v["class_uid"].as_u64().unwrap()).collect();
    assert_eq!(classes.iter().filter(|c| **c == 2004).count(), 5, "{classes:?}");
    let last_incident = ocsf.iter().rev().find(|v| v["class_uid"] == 2005).unwrap();
    assert_eq!(last_incident["activity_id"], 2);
    assert_eq!(last_incident["status_id"], 2, "in progress");
    assert_eq!(last_incident["finding_info_list"][0]["uid"], incident.as_str());
}

/// Splunk HEC: POST /services/collector/event with `Authorization: Splunk <token>`,
/// events as concatenated JSON objects, each with time (epoch seconds), host,
/// source, sourcetype and event. Elasticsearch `_bulk`: NDJSON `create` actions
/// with the record's id and ECS documents (`event.kind: alert`); a redelivery's 409
/// counts as delivered.
#[tokio::test]
async fn splunk_hec_and_elasticsearch_bulk_get_their_documented_wire_formats() {
    let receiver = Receiver::start(Box::new(|req| {
        if req.path == "/services/collector/event" {
            return (200, r#"{"text":"Success","code":0}"#.into());
        }
        // _bulk: one item per action line; the first document is reported as a conflict.
        let lines: Vec<Value> = req
            .body
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| serde_json::from_slice(l).unwrap())
            .collect();
        let items: Vec<Value> = lines
            .iter()
            .step_by(2)
            .enumerate()
            .map(|(i, a)| serde_json::json!({"create": {"_id": a["create"]["_id"], "status": if i == 0 { 409 } else { 201 }}}))
            .collect();
        (200, serde_json::json!({"took": 1, "errors": true, "items": items}).to_string())
    }))
    .await;
    let addr = receiver.addr;
    let collector = Collector::start_with(move |c| {
        ward_tests::without_folding(c);
        c.push_str(&format!(
            "\n[[export]]\nname = \"splunk\"\nkind = \"splunk_hec\"\nurl = \"http://{addr}/services/collector/event\"\ntoken = \"11111111-2222-3333-4444-555555555555\"\nrecords = [\"alerts\"]\n\
             \n[[export]]\nname = \"elastic\"\nkind = \"elasticsearch\"\nurl = \"http://{addr}/_bulk\"\nindex = \"ward-alerts\"\ntoken = \"ZWxhc3RpYzprZXk=\"\nrecords = [\"alerts\"]\n"
        ));
    })
    .unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut dev = TestDevice::enroll(&collector.join_token(1, "1h").unwrap(), "hec-1")
        .await
        .unwrap();
    dev.connect().await.unwrap();
    let ids = send_alerts(&mut dev, 12).await;
    let count = |rs: &[Request], path: &str, per: usize| {
        rs.iter()
            .filter(|r| r.path == path)
            .map(|r| r.body.split(|b| *b == b'\n').filter(|l| !l.is_empty()).count() / per)
            .sum::<usize>()
    };
    let got = receiver
        .wait_for("12 alerts on each", Duration::from_secs(30), |rs| {
            count(rs, "/services/collector/event", 1) >= 12 && count(rs, "/_bulk", 2) >= 12
        })
        .await;

    let mut hec_ids = Vec::new();
    for r in got.iter().filter(|r| r.path == "/services/collector/event") {
        assert_eq!(
            r.headers["authorization"],
            "Splunk 11111111-2222-3333-4444-555555555555"
        );
        // Concatenated event objects, read as a stream as HEC does.
        for e in serde_json::Deserializer::from_slice(&r.body).into_iter::<Value>() {
            let e = e.unwrap();
            assert!(e["time"].as_f64().unwrap() > 1.6e9, "{e}");
            assert_eq!(e["host"].as_str().map(str::is_empty), Some(false));
            assert_eq!(e["source"], "ward");
            assert_eq!(e["sourcetype"], "ward:alert");
            hec_ids.push(e["event"]["alert"]["id"].as_str().unwrap().to_string());
        }
    }
    assert_eq!(hec_ids, ids);

    let mut bulk_ids = Vec::new();
    for r in got.iter().filter(|r| r.path == "/_bulk") {
        assert_eq!(r.headers["content-type"], "application/x-ndjson");
        assert_eq!(r.headers["authorization"], "ApiKey ZWxhc3RpYzprZXk=");
        assert!(r.body.ends_with(b"\n"), "a _bulk body ends with a newline");
        let lines: Vec<Value> = r
            .body
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| serde_json::from_slice(l).unwrap())
            .collect();
        for pair in lines.chunks(2) {
            let (action, doc) = (&pair[0], &pair[1]);
            assert_eq!(action["create"]["_index"], "ward-alerts");
            assert_eq!(doc["event"]["kind"], "alert");
            assert_eq!(
                doc["event"]["id"],
                doc["ward"]["record_id"].as_str().unwrap().trim_start_matches("alert-")
            );
            assert_eq!(action["create"]["_id"], doc["ward"]["record_id"]);
            assert!(doc["@timestamp"].as_str().unwrap().ends_with('Z'));
            assert_eq!(doc["host"]["hostname"], "hec-1");
            assert_eq!(doc["rule"]["id"], "ward-test-rule");
            assert_eq!(doc["threat"]["technique"]["id"][0], "T1059.004");
            bulk_ids.push(doc["event"]["id"].as_str().unwrap().to_string());
        }
    }
    assert_eq!(bulk_ids, ids);
    // A 409 is a redelivery: delivered.
    let sent = "ward_export_sent_total{sink=\"elastic\"}";
    wait_metric(&collector, sent, Duration::from_secs(5), |v| v == 12).await;
    let text = collector.metrics().await.unwrap();
    assert_eq!(metric(&text, "ward_export_refused_total{sink=\"elastic\"}"), 0);
}

/// A webhook receiver that refuses one record as malformed (HTTP 400) and fails
/// once on another (503): the refused one is dropped and counted, the failed one
/// goes again, and the records before a failure are not sent twice.
#[tokio::test]
async fn a_refused_webhook_record_is_dropped_alone_and_earlier_ones_are_not_resent() {
    let refused = std::sync::Arc::new(std::sync::Mutex::new((String::new(), String::new(), false)));
    let rule = std::sync::Arc::clone(&refused);
    let receiver = Receiver::start(Box::new(move |req| {
        let id = req.headers.get("webhook-id").cloned().unwrap_or_default();
        let mut r = rule.lock().unwrap();
        if id == r.0 {
            return (400, r#"{"error":"bad record"}"#.into());
        }
        if id == r.1 && !r.2 {
            r.2 = true;
            return (503, "{}".into());
        }
        (200, "{}".into())
    }))
    .await;
    let addr = receiver.addr;
    let secret = whsec(9);
    let s = secret.clone();
    let collector = Collector::start_with(move |c| {
        ward_tests::without_folding(c);
        c.push_str(&format!(
            "\n[[export]]\nname = \"hook\"\nkind = \"webhook\"\nurl = \"http://{addr}/\"\nsecrets = [\"{s}\"]\nrecords = [\"alerts\"]\nretry_initial_ms = 100\nretry_max_ms = 200\n"
        ));
    })
    .unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut dev = TestDevice::enroll(&collector.join_token(1, "1h").unwrap(), "w-1")
        .await
        .unwrap();
    dev.connect().await.unwrap();
    // The ids are known once signed: set the receiver's rule before sending.
    let alerts: Vec<_> = (0..8).map(|_| dev.next_alert()).collect();
    let ids: Vec<String> = alerts.iter().map(|a| a.id.to_string()).collect();
    *refused.lock().unwrap() = (format!("alert-{}", ids[2]), format!("alert-{}", ids[5]), false);
    dev.send_batch(alerts.iter().map(|a| dev.sign(a)).collect())
        .await
        .unwrap();
    let got = receiver
        .wait_for("7 records taken", Duration::from_secs(20), |rs| rs.len() >= 7)
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let taken: Vec<String> = receiver
        .taken()
        .iter()
        .map(|r| r.headers["webhook-id"].trim_start_matches("alert-").to_string())
        .collect();
    let mut want = ids.clone();
    want.remove(2);
    assert_eq!(
        taken,
        want,
        "each taken once, in order, the refused one left out ({} requests)",
        got.len()
    );
    let all = receiver.requests.lock().unwrap().clone();
    let statuses: Vec<u16> = all.iter().map(|r| r.status).collect();
    assert_eq!(statuses.iter().filter(|s| **s == 400).count(), 1, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == 503).count(), 1, "{statuses:?}");
    for r in &all {
        verify_standard_webhook(&secret, r, ward_tests::now_ms() / 1000).unwrap();
    }
    wait_metric(
        &collector,
        "ward_export_sent_total{sink=\"hook\"}",
        Duration::from_secs(5),
        |v| v == 7,
    )
    .await;
    let text = collector.metrics().await.unwrap();
    assert_eq!(metric(&text, "ward_export_refused_total{sink=\"hook\"}"), 1);
    assert_eq!(metric(&text, "ward_export_failed_total{sink=\"hook\"}"), 1);
}

/// A receiver whose certificate the sink's `ca_pem` does not vouch for gets
/// nothing: each handshake fails and is counted, records wait; with the right CA
/// (and a restart, as docs/export.md says) they are delivered.
#[tokio::test]
async fn an_untrusted_receiver_certificate_fails_the_handshake_and_records_wait() {
    let certs = tempfile::tempdir().unwrap();
    let pki = make_pki(certs.path());
    let other = tempfile::tempdir().unwrap();
    let wrong = make_pki(other.path());
    let rsyslog = Rsyslog::start(&pki, free_port(false));
    let port = rsyslog.tls_port;
    let wrong_ca = wrong.ca.clone();
    let mut collector = Collector::start_with(|c| {
        ward_tests::without_folding(c);
        c.push_str(&syslog_sink("siem", "tls", port, "rfc5424", &wrong_ca, ""));
    })
    .unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut dev = TestDevice::enroll(&collector.join_token(1, "1h").unwrap(), "tls-1")
        .await
        .unwrap();
    dev.connect().await.unwrap();
    let ids = send_alerts(&mut dev, 10).await;
    wait_metric(
        &collector,
        "ward_export_failed_total{sink=\"siem\"}",
        Duration::from_secs(20),
        |v| v >= 3,
    )
    .await;
    assert_eq!(
        metric(&collector.metrics().await.unwrap(), "ward_export_queued{sink=\"siem\"}"),
        10
    );
    assert!(
        rsyslog.received().is_empty(),
        "nothing may pass an unverified TLS session"
    );

    collector.stop().unwrap();
    let path = collector.data_dir().join("collector.toml");
    let config = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        config.replace(&wrong.ca.display().to_string(), &pki.ca.display().to_string()),
    )
    .unwrap();
    collector.serve().unwrap();
    let got = rsyslog
        .wait_for("the 10 waiting", Duration::from_secs(30), |m| m.len() >= 10)
        .await;
    assert_eq!(first_occurrences(&got).0, ids);
}
