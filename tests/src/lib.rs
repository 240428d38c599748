//! Test harness: starts the real `ward-collector` (and `ward-agent`) binaries in
//! temporary directories on loopback, and a test device built on the protocol
//! crate and the agent's link that can send good and deliberately bad traffic.

#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod attack;
pub mod browser;
pub mod corpus;
pub mod procfs;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use ring::rand::SystemRandom;
use serde_json::Value;
use tempfile::TempDir;
use ward_agent::identity::{Enrollment, Identity};
use ward_agent::link::{self, LinkError, Session};
use ward_protocol::message::{Ack, AlertBatch};
use ward_protocol::*;

/// Path of a workspace binary built next to this test executable.
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // Tests run from target/<profile>/deps, tools from target/<profile>.
    let here = exe.parent().expect("executable dir");
    let path = [here, here.parent().unwrap_or(here)]
        .iter()
        .map(|d| d.join(name))
        .find(|p| p.exists())
        .unwrap_or(here.join(name));
    assert!(
        path.exists(),
        "{} is missing: run the tests with `cargo test --workspace` so it is built",
        path.display()
    );
    path
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// A collector process on loopback with its own data dir.
pub struct Collector {
    pub dir: TempDir,
    child: Option<Child>,
    pub quic: SocketAddr,
    pub http: SocketAddr,
    pub admin_token: String,
    http_client: reqwest::Client,
}

impl Collector {
    /// `init` then `serve` on ephemeral loopback ports.
    pub fn start() -> Result<Collector> {
        Self::start_with(|_| {})
    }

    /// Like [`Collector::start`], editing the config text first.
    pub fn start_with(edit: impl FnOnce(&mut String)) -> Result<Collector> {
        let dir = tempfile::tempdir()?;
        let out = Command::new(bin("ward-collector"))
            .args(["--data-dir"])
            .arg(dir.path().join("data"))
            .args(["init", "--public-addr", "127.0.0.1:4433"])
            .output()?;
        if !out.status.success() {
            bail!("init failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        let stdout = String::from_utf8(out.stdout)?;
        let admin_token = stdout
            .lines()
            .find_map(|l| l.split("token (shown once, keep it safe): ").nth(1))
            .ok_or_else(|| anyhow!("no admin token in {stdout}"))?
            .trim()
            .to_string();
        let config_path = dir.path().join("data/collector.toml");
        let mut config = std::fs::read_to_string(&config_path)?;
        config = config
            .replace("quic_listen = \"0.0.0.0:4433\"", "quic_listen = \"127.0.0.1:0\"")
            .replace("http_listen = \"127.0.0.1:8080\"", "http_listen = \"127.0.0.1:0\"")
            .replace("revocation_poll_ms = 1000", "revocation_poll_ms = 200");
        edit(&mut config);
        std::fs::write(&config_path, config)?;
        let mut c = Collector {
            dir,
            child: None,
            quic: "127.0.0.1:0".parse()?,
            http: "127.0.0.1:0".parse()?,
            admin_token,
            http_client: http_client(),
        };
        c.serve()?;
        Ok(c)
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Starts `serve` (again) and waits for its listening addresses. The QUIC
    /// port is pinned after the first start so agents can reconnect after a restart.
    pub fn serve(&mut self) -> Result<()> {
        let mut child = Command::new(bin("ward-collector"))
            .arg("--data-dir")
            .arg(self.data_dir())
            .arg("serve")
            // A benchmark or a test being debugged may ask for more (quinn's handshakes...).
            .env(
                "RUST_LOG",
                std::env::var("WARD_TEST_COLLECTOR_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let stdout = child.stdout.take().context("stdout")?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let mut quic = None;
        let mut http = None;
        while quic.is_none() || http.is_none() {
            let line = rx
                .recv_timeout(Duration::from_secs(20))
                .context("collector did not report its addresses")?;
            if let Some(a) = line.strip_prefix("QUIC listening on ") {
                quic = Some(a.trim().parse()?);
            } else if let Some(a) = line
                .strip_prefix("HTTP listening on http://")
                .or_else(|| line.strip_prefix("HTTP listening on https://"))
            {
                http = Some(a.trim().parse()?);
            }
        }
        self.quic = quic.context("quic")?;
        self.http = http.context("http")?;
        self.child = Some(child);
        let config_path = self.data_dir().join("collector.toml");
        let config = std::fs::read_to_string(&config_path)?
            .replace(
                "quic_listen = \"127.0.0.1:0\"",
                &format!("quic_listen = \"{}\"", self.quic),
            )
            .replace(
                "http_listen = \"127.0.0.1:0\"",
                &format!("http_listen = \"{}\"", self.http),
            );
        std::fs::write(config_path, config)?;
        Ok(())
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Resident memory of the collector process, in KiB.
    pub fn rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()?)).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
    }

    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait for a clean exit.
    pub fn stop(&mut self) -> Result<std::process::ExitStatus> {
        let mut c = self.child.take().context("not running")?;
        // SAFETY: kill(2) with a pid we own and a valid signal number has no memory effects.
        #[allow(unsafe_code)]
        unsafe {
            libc::kill(c.id() as i32, libc::SIGTERM);
        }
        Ok(c.wait()?)
    }

    pub fn cli(&self, args: &[&str]) -> Result<String> {
        let out = Command::new(bin("ward-collector"))
            .arg("--data-dir")
            .arg(self.data_dir())
            .args(args)
            .output()?;
        if !out.status.success() {
            bail!("ward-collector {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(String::from_utf8(out.stdout)?.trim().to_string())
    }

    pub fn join_token(&self, uses: u32, ttl: &str) -> Result<JoinToken> {
        let t = self.cli(&[
            "token",
            "create",
            "--uses",
            &uses.to_string(),
            "--ttl",
            ttl,
            "--addr",
            &self.quic.to_string(),
        ])?;
        Ok(t.parse()?)
    }

    pub fn db(&self) -> Result<rusqlite::Connection> {
        Ok(rusqlite::Connection::open_with_flags(
            self.data_dir().join("ward.db"),
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )?)
    }

    /// Waits until the correlator placed `alert` (10 s at most); returns its
    /// incident id and how long that took.
    pub async fn incident_of(&self, alert: &str) -> (String, Duration) {
        let started = Instant::now();
        loop {
            let found: Option<String> = self.db().ok().and_then(|db| {
                db.query_row(
                    "SELECT i.id FROM incident_alerts ia JOIN alerts a ON a.rowid = ia.alert_rowid
                     JOIN incidents i ON i.seq = ia.incident WHERE a.id = ?1",
                    [ward_collector::store::sqlite::alert_id::AlertKey::of(alert)],
                    |r| r.get(0),
                )
                .ok()
            });
            if let Some(id) = found {
                return (id, started.elapsed());
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "alert {alert} was not correlated within 10 s"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// GET with the admin token; returns the status and the JSON body.
    pub async fn get(&self, path: &str) -> Result<(u16, Value)> {
        self.get_as(path, &self.admin_token.clone()).await
    }

    pub async fn get_as(&self, path: &str, token: &str) -> Result<(u16, Value)> {
        let resp = self
            .http_client
            .get(format!("http://{}{path}", self.http))
            .bearer_auth(token)
            .send()
            .await?;
        let status = resp.status().as_u16();
        let text = resp.text().await?;
        Ok((status, serde_json::from_str(&text).unwrap_or(Value::String(text))))
    }

    pub async fn post_as(&self, path: &str, token: &str, body: Value) -> Result<(u16, Value)> {
        let resp = self
            .http_client
            .post(format!("http://{}{path}", self.http))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await?;
        let status = resp.status().as_u16();
        let text = resp.text().await?;
        Ok((status, serde_json::from_str(&text).unwrap_or(Value::String(text))))
    }

    pub async fn patch_as(&self, path: &str, token: &str, body: Value) -> Result<(u16, Value)> {
        let resp = self
            .http_client
            .patch(format!("http://{}{path}", self.http))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await?;
        let status = resp.status().as_u16();
        let text = resp.text().await?;
        Ok((status, serde_json::from_str(&text).unwrap_or(Value::String(text))))
    }

    /// POST a raw body (a feed file as exported); returns the status and the JSON body.
    pub async fn post_bytes_as(&self, path: &str, token: &str, body: Vec<u8>) -> Result<(u16, Value)> {
        let resp = self
            .http_client
            .post(format!("http://{}{path}", self.http))
            .bearer_auth(token)
            .body(body)
            .send()
            .await?;
        let status = resp.status().as_u16();
        let text = resp.text().await?;
        Ok((status, serde_json::from_str(&text).unwrap_or(Value::String(text))))
    }

    /// A request written by hand on a fresh connection, for what reqwest will not
    /// send: a chunked body (no Content-Length) in `chunk`-byte pieces, or a raw
    /// path. Returns the status and the body (JSON if it parses, else a string).
    pub async fn raw_request(
        &self,
        method: &str,
        path: &str,
        token: &str,
        body: Option<(&[u8], usize)>,
    ) -> Result<(u16, Value)> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut conn = tokio::net::TcpStream::connect(self.http).await?;
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n",
            self.http
        );
        if body.is_some() {
            head.push_str("Transfer-Encoding: chunked\r\n");
        }
        head.push_str("\r\n");
        conn.write_all(head.as_bytes()).await?;
        if let Some((body, chunk)) = body {
            // The server may answer and close before it has all of it: stop writing then.
            for piece in body.chunks(chunk.max(1)) {
                let mut framed = format!("{:x}\r\n", piece.len()).into_bytes();
                framed.extend_from_slice(piece);
                framed.extend_from_slice(b"\r\n");
                if conn.write_all(&framed).await.is_err() {
                    break;
                }
            }
            let _ = conn.write_all(b"0\r\n\r\n").await;
        }
        let mut raw = Vec::new();
        // A reset after the answer arrived (the server closed with our body unread) still leaves the answer read.
        let _ = conn.read_to_end(&mut raw).await;
        let text = String::from_utf8_lossy(&raw);
        let (head, body) = text
            .split_once("\r\n\r\n")
            .ok_or_else(|| anyhow!("no HTTP response: {text:?}"))?;
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| anyhow!("no status in {head:?}"))?;
        Ok((
            status,
            serde_json::from_str(body).unwrap_or(Value::String(body.to_string())),
        ))
    }

    pub async fn metrics(&self) -> Result<String> {
        Ok(self
            .http_client
            .get(format!("http://{}/metrics", self.http))
            .bearer_auth(&self.admin_token)
            .send()
            .await?
            .text()
            .await?)
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// The value of a metric line (`name{labels} value`) in Prometheus text.
pub fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .map(|v| v as u64)
        .unwrap_or(0)
}

/// A device enrolled with the real collector, speaking the protocol directly.
pub struct TestDevice {
    pub identity: Identity,
    pub session: Option<Session>,
    pub next_seq: u64,
    next_batch: u64,
}

impl TestDevice {
    pub async fn enroll(token: &JoinToken, hostname: &str) -> Result<TestDevice, LinkError> {
        Self::enroll_at(token, hostname, "192.0.2.10", "alice").await
    }

    /// Enrolls reporting its own network address and logged-on user in the inventory.
    pub async fn enroll_at(
        token: &JoinToken,
        hostname: &str,
        address: &str,
        user: &str,
    ) -> Result<TestDevice, LinkError> {
        let rng = SystemRandom::new();
        let (signing_key, _) = SigningKey::generate(&rng).expect("key");
        let (_, tls_pkcs8) = SigningKey::generate(&rng).expect("key");
        let inventory = Inventory {
            hostname: hostname.into(),
            os: "Test OS".into(),
            kernel: "6.1".into(),
            addresses: vec![address.into()],
            logged_on_users: vec![user.into()],
            agent_version: "test".into(),
        };
        let enrollment: Enrollment = link::enroll(token, &signing_key, &tls_pkcs8, inventory).await?;
        Ok(TestDevice {
            identity: Identity {
                enrollment,
                signing_key,
                tls_key_pkcs8: tls_pkcs8,
            },
            session: None,
            next_seq: 1,
            next_batch: 1,
        })
    }

    pub fn id(&self) -> DeviceId {
        self.identity.enrollment.device_id
    }

    pub async fn connect(&mut self) -> Result<(), LinkError> {
        self.session = Some(Session::open(&self.identity, 0, 0).await?);
        Ok(())
    }

    /// Connects over a shared client endpoint (load tests run thousands of devices).
    pub async fn connect_on(&mut self, endpoint: &quinn::Endpoint, remote: SocketAddr) -> Result<(), LinkError> {
        self.session = Some(Session::open_on(endpoint.clone(), remote, &self.identity, 0, 0).await?);
        Ok(())
    }

    /// An alert of this device with the next sequence number.
    pub fn next_alert(&mut self) -> Alert {
        let seq = self.next_seq;
        self.next_seq += 1;
        test_alert(self.id(), seq)
    }

    pub fn sign(&self, alert: &Alert) -> Signed {
        self.identity
            .signing_key
            .sign_value(SignatureKind::Alert, alert)
            .expect("encode")
    }

    /// Sends signed alerts as one batch and waits for its acknowledgement.
    pub async fn send_batch(&mut self, alerts: Vec<Signed>) -> Result<Ack, LinkError> {
        let batch_id = self.next_batch;
        self.next_batch += 1;
        let session = self
            .session
            .as_mut()
            .ok_or_else(|| LinkError::Closed("not connected".into()))?;
        session
            .send(&AgentMessage::Alerts(AlertBatch { batch_id, alerts }))
            .await?;
        // A collector that died sends no close: give up on the ack after a while, as the agent does.
        let wait_ack = async {
            loop {
                match session.recv().await? {
                    Some(CollectorMessage::Ack(ack)) if ack.batch_id == batch_id => return Ok(ack),
                    Some(_) => continue,
                    None => return Err(LinkError::Closed("stream finished".into())),
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(5), wait_ack)
            .await
            .map_err(|_| LinkError::Closed("no acknowledgement within 5 s".into()))?
    }

    /// Sends `n` fresh alerts in one batch.
    pub async fn send_new(&mut self, n: usize) -> Result<Ack, LinkError> {
        let alerts: Vec<Signed> = (0..n)
            .map(|_| {
                let a = self.next_alert();
                self.sign(&a)
            })
            .collect();
        self.send_batch(alerts).await
    }

    /// Waits until the collector closes the connection; returns its reason.
    pub async fn closed_reason(&mut self) -> String {
        let Some(s) = self.session.as_mut() else {
            return "not connected".into();
        };
        let conn = s.conn.clone();
        match tokio::time::timeout(Duration::from_secs(5), conn.closed()).await {
            Ok(e) => e.to_string(),
            Err(_) => "still open".into(),
        }
    }
}

/// A collector config edit (for [`Collector::start_with`]) that turns the folding of
/// repeats off, for tests whose synthetic alerts stand for distinct detections even
/// though they share rule and key entity.
pub fn without_folding(config: &mut String) {
    *config = config.replace("fold_window_ms = 300000", "fold_window_ms = 0");
}

/// A realistic alert for tests.
pub fn test_alert(device: DeviceId, seq: u64) -> Alert {
    let now = now_ms();
    Alert {
        id: AlertId::generate(now, &SystemRandom::new()).expect("rng"),
        device_id: device,
        seq,
        observed_at_ms: now,
        last_observed_at_ms: now,
        rule: RuleRef {
            id: "ward-test-rule".into(),
            title: "Test rule".into(),
            author: "Ward tests".into(),
            severity: Severity::Medium,
            techniques: vec!["T1059.004".into()],
            tactics: vec!["TA0002".into()],
        },
        entities: vec![
            Entity::User {
                name: "alice".into(),
                uid: Some(1000),
            },
            // A folder of its own: distinct alerts, none a repeat of another (the
            // collector folds repeats of a rule in one folder).
            Entity::File {
                path: format!("/tmp/test-{seq}/payload"),
                sha256: Some([7; 32]),
            },
        ],
        count: 1,
        matched: vec![MatchedField {
            name: "TargetFilename".into(),
            value: format!("/tmp/test-{seq}/payload"),
        }],
    }
}

/// A `ward-agent run` process enrolled with a collector, watching one directory.
pub struct Agent {
    pub dir: TempDir,
    pub watch: PathBuf,
    child: Option<Child>,
    pub device_id: String,
    /// A command line `ward-agent` runs under (e.g. `nsenter -t <pid> -n --` to
    /// run it in another network namespace); empty to run it directly.
    wrapper: Vec<String>,
}

/// `program` run under `wrapper` (see [`Agent::start_wrapped`]).
fn wrapped(wrapper: &[String], program: PathBuf) -> Command {
    match wrapper.split_first() {
        None => Command::new(program),
        Some((first, rest)) => {
            let mut c = Command::new(first);
            c.args(rest).arg(program);
            c
        }
    }
}

impl Agent {
    /// Enrolls (with the real CLI) and starts an agent whose file sensor watches
    /// only a temporary directory; auth and audit logs are left alone.
    pub fn start(collector: &Collector) -> Result<Agent> {
        Self::start_with(collector, Agent::test_config)
    }

    /// The config [`Agent::start`] uses: fast status, heartbeats and reconnects,
    /// the file sensor on `watch` only. Tables may be appended to it.
    pub fn test_config(watch: &std::path::Path) -> String {
        format!(
            "[agent]\nstatus_interval_ms = 500\nheartbeat_interval_ms = 2000\n\n[sensors]\nfile_watch_paths = [{:?}]\nauth_enabled = false\naudit_enabled = false\naccess_enabled = false\nfile_writers_enabled = false\nprocess_poll_interval_ms = 250\n\n[link]\nreconnect_min_ms = 100\nreconnect_max_ms = 1000\nack_timeout_ms = 3000\n",
            watch.display().to_string()
        )
    }

    /// Like [`Agent::start`] with the config text `config(watch_dir)` returns.
    pub fn start_with(collector: &Collector, config: impl FnOnce(&std::path::Path) -> String) -> Result<Agent> {
        Self::start_wrapped(collector, config, Vec::new())
    }

    /// Like [`Agent::start_with`], enrolling and running `ward-agent` under
    /// `wrapper` (e.g. `["nsenter", "-t", pid, "-n", "--"]`).
    pub fn start_wrapped(
        collector: &Collector,
        config: impl FnOnce(&std::path::Path) -> String,
        wrapper: Vec<String>,
    ) -> Result<Agent> {
        let dir = tempfile::tempdir()?;
        let watch = dir.path().join("watched");
        std::fs::create_dir_all(&watch)?;
        let token = collector.join_token(1, "1h")?.to_string();
        let state = dir.path().join("state");
        // The token on stdin, as the docs recommend: never in the process list.
        let mut child = wrapped(&wrapper, bin("ward-agent"))
            .args(["enroll", "--token-file", "-", "--state-dir"])
            .arg(&state)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        if let Some(mut stdin) = child.stdin.take() {
            use std::io::Write as _;
            writeln!(stdin, "{token}")?;
        }
        let out = child.wait_with_output()?;
        if !out.status.success() {
            bail!("enroll failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        let stdout = String::from_utf8(out.stdout)?;
        let device_id = stdout
            .split_whitespace()
            .skip_while(|w| *w != "device")
            .nth(1)
            .ok_or_else(|| anyhow!("no device id in {stdout}"))?
            .to_string();
        std::fs::write(dir.path().join("agent.toml"), config(&watch))?;
        let mut agent = Agent {
            dir,
            watch,
            child: None,
            device_id,
            wrapper,
        };
        agent.run()?;
        Ok(agent)
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// Starts (or restarts) `ward-agent run`.
    pub fn run(&mut self) -> Result<()> {
        let child = wrapped(&self.wrapper, bin("ward-agent"))
            .arg("run")
            .arg("--config")
            .arg(self.dir.path().join("agent.toml"))
            .arg("--state-dir")
            .arg(self.state_dir())
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()?;
        self.child = Some(child);
        Ok(())
    }

    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Stops the agent cleanly (SIGTERM, as systemd does) and waits for it.
    pub fn stop(&mut self) -> Result<std::process::ExitStatus> {
        let mut c = self.child.take().ok_or_else(|| anyhow!("agent not running"))?;
        let ok = Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status()?
            .success();
        if !ok {
            bail!("could not signal the agent");
        }
        Ok(c.wait()?)
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// `ward-agent status` output.
    pub fn status(&self) -> Result<String> {
        let out = Command::new(bin("ward-agent"))
            .arg("status")
            .arg("--state-dir")
            .arg(self.state_dir())
            .output()?;
        Ok(String::from_utf8(out.stdout)?)
    }

    /// Waits until the running agent reports a live collector session.
    pub fn wait_connected(&self, within: Duration) -> Result<()> {
        let deadline = std::time::Instant::now() + within;
        while std::time::Instant::now() < deadline {
            if self.status()?.contains("connection: connected") {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        bail!("agent did not connect: {}", self.status()?)
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.kill9();
    }
}

impl Collector {
    /// Polls the alerts of `device` until one satisfies `pred`; returns it.
    pub async fn wait_alert(&self, device: &str, within: Duration, pred: impl Fn(&Value) -> bool) -> Result<Value> {
        let deadline = std::time::Instant::now() + within;
        loop {
            let (_, body) = self.get(&format!("/api/v1/alerts?device={device}&limit=1000")).await?;
            if let Some(a) = body["alerts"].as_array().and_then(|a| a.iter().find(|a| pred(a))) {
                return Ok(a.clone());
            }
            if std::time::Instant::now() >= deadline {
                bail!("no matching alert within {within:?}; have {body}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Alerts stored for a device whose entities mention `needle`, and how many
    /// distinct ids they have (other agents' processes may raise other alerts).
    pub fn alert_counts(&self, device: &str, needle: &str) -> Result<(i64, i64)> {
        Ok(self.db()?.query_row(
            "SELECT COUNT(*), COUNT(DISTINCT id) FROM alerts WHERE device_id = ?1 AND entities LIKE ?2",
            [device, &format!("%{needle}%")],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?)
    }
}

// ---- response actions (collector approval workflow and command dispatch) ----

impl Collector {
    /// Adds (or re-keys) an API user with `role`; returns the user's token.
    pub fn user(&self, name: &str, role: &str) -> Result<String> {
        self.cli(&["user", "add", name, "--role", role])
    }

    /// Polls `GET /api/v1/actions/{id}` until its status is `status`; returns the action.
    pub async fn wait_action_status(&self, id: &str, status: &str, within: Duration) -> Result<Value> {
        let deadline = std::time::Instant::now() + within;
        loop {
            let (_, body) = self.get(&format!("/api/v1/actions/{id}")).await?;
            if body["status"] == status {
                return Ok(body);
            }
            if std::time::Instant::now() >= deadline {
                bail!("action {id} not {status} within {within:?}: {body}");
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

impl TestDevice {
    /// Connects telling the collector the last command sequence this device accepted.
    pub async fn connect_after(&mut self, last_command_seq: u64) -> Result<(), LinkError> {
        self.session = Some(Session::open(&self.identity, 0, last_command_seq).await?);
        Ok(())
    }

    /// Waits for the next signed command the collector pushes, skipping other messages.
    pub async fn recv_command(&mut self, within: Duration) -> Result<Signed> {
        let session = self.session.as_mut().context("not connected")?;
        let wait = async {
            loop {
                match session.recv().await? {
                    Some(CollectorMessage::Command(signed)) => return Ok(signed),
                    Some(_) => continue,
                    None => bail!("stream finished"),
                }
            }
        };
        tokio::time::timeout(within, wait)
            .await
            .map_err(|_| anyhow!("no command within {within:?}"))?
    }

    /// Checks a command as the agent does, with the command keys pinned at enrollment.
    pub fn authorize(&self, signed: &Signed, last_seq: u64) -> Result<ward_protocol::Command, Refusal> {
        self.authorize_with(signed, last_seq, &CommandPolicy::default())
    }

    /// Like [`TestDevice::authorize`] under the device policy `policy`.
    pub fn authorize_with(
        &self,
        signed: &Signed,
        last_seq: u64,
        policy: &CommandPolicy,
    ) -> Result<ward_protocol::Command, Refusal> {
        authorize(
            signed,
            &self.identity.enrollment.keys.command_keys,
            self.id(),
            last_seq,
            now_ms(),
            policy,
        )
    }

    /// The result of `command` signed by `key` (the device's own key unless a test forges one).
    pub fn command_result(
        &self,
        command: &ward_protocol::Command,
        outcome: CommandOutcome,
        attachment: Option<Vec<u8>>,
        key: Option<&SigningKey>,
    ) -> Signed {
        let result = CommandResult {
            command_id: command.id,
            device_id: self.id(),
            seq: command.seq,
            finished_at_ms: now_ms(),
            outcome,
            detail: format!("test device did {:?}", command.action.kind()),
            attachment,
        };
        key.unwrap_or(&self.identity.signing_key)
            .sign_value(SignatureKind::CommandResult, &result)
            .expect("encode")
    }

    /// Sends a signed command result.
    pub async fn send_result(&mut self, signed: Signed) -> Result<(), LinkError> {
        let session = self
            .session
            .as_mut()
            .ok_or_else(|| LinkError::Closed("not connected".into()))?;
        session.send(&AgentMessage::CommandResult(signed)).await
    }
}

// ---- the `ward` command line ----

/// Runs `ward ARGS` against `collector` with `token` in the environment and a
/// home directory of its own (so no user config is read); returns (success, stdout, stderr).
pub fn ward(collector: &Collector, token: &str, args: &[&str]) -> Result<(bool, String, String)> {
    let home = tempfile::tempdir()?;
    let out = Command::new(bin("ward"))
        .args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", home.path())
        .env("WARD_URL", format!("http://{}", collector.http))
        .env("WARD_TOKEN", token)
        .output()?;
    Ok((
        out.status.success(),
        String::from_utf8(out.stdout)?,
        String::from_utf8(out.stderr)?,
    ))
}

/// Like [`ward`], failing unless it succeeds; returns stdout.
pub fn ward_ok(collector: &Collector, token: &str, args: &[&str]) -> Result<String> {
    let (ok, stdout, stderr) = ward(collector, token, args)?;
    if !ok {
        bail!("ward {args:?} failed: {stderr}");
    }
    Ok(stdout)
}

/// Milliseconds since the epoch as RFC 3339 UTC ("2026-11-23T15:30:00.000Z"), as feed exports write times.
pub fn rfc3339_ms(ms: u64) -> String {
    chrono::DateTime::from_timestamp_millis(i64::try_from(ms).unwrap_or(i64::MAX))
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

impl TestDevice {
    /// Enrolls with a chosen inventory (hostname, addresses, logged-on users), for
    /// tests where what the collector knows about a device decides correlation.
    pub async fn enroll_with(token: &JoinToken, inventory: Inventory) -> Result<TestDevice, LinkError> {
        let rng = SystemRandom::new();
        let (signing_key, _) = SigningKey::generate(&rng).expect("key");
        let (_, tls_pkcs8) = SigningKey::generate(&rng).expect("key");
        let enrollment: Enrollment = link::enroll(token, &signing_key, &tls_pkcs8, inventory).await?;
        Ok(TestDevice {
            identity: Identity {
                enrollment,
                signing_key,
                tls_key_pkcs8: tls_pkcs8,
            },
            session: None,
            next_seq: 1,
            next_batch: 1,
        })
    }
}

/// Whether this process runs with effective uid 0.
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .map(|u| u.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

/// The name the test harness gives test function `name` of module `module_path`
/// (`module_path!()` there): the path without the test binary's crate name, as
/// `--exact` wants it when a test runs its own binary again.
pub fn test_path(module_path: &str, name: &str) -> String {
    match module_path.split_once("::") {
        Some((_crate, rest)) => format!("{rest}::{name}"),
        None => name.to_string(),
    }
}

/// Runs `scenario` in a network and mount namespace of its own, so that nftables
/// rules and veth pairs never touch the machine's network: the test binary runs
/// itself again (only the test named `test`, its full path: [`test_path`]) under
/// `unshare`, as root or inside a user namespace otherwise, and that run executes
/// `scenario`. Fails with the reason
/// (unshare missing, no user namespaces, the scenario's panic); never skips.
pub fn in_own_namespace<F: std::future::Future<Output = ()>>(test: &str, scenario: impl FnOnce() -> F) {
    const INSIDE: &str = "WARD_TEST_IN_OWN_NAMESPACE";
    const DONE: &str = "WARD NAMESPACE SCENARIO COMPLETE";
    if std::env::var_os(INSIDE).is_some() {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("cannot start a runtime: {e}"));
        runtime.block_on(scenario());
        println!("{DONE}");
        return;
    }
    let mut ns_args = vec!["--net", "--mount"];
    if !is_root() {
        ns_args.splice(0..0, ["--user", "--map-root-user"]);
    }
    let exe = std::env::current_exe().unwrap_or_else(|e| panic!("cannot find the test binary: {e}"));
    let started = Instant::now();
    let out = Command::new("unshare")
        .args(&ns_args)
        .arg(exe)
        .args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env(INSIDE, "1")
        .output()
        .unwrap_or_else(|e| panic!("cannot run unshare to create the test's namespaces: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    print!("{stdout}");
    assert!(
        out.status.success(),
        "{test} failed in its namespace (unshare {}: {}):\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        ns_args.join(" "),
        out.status
    );
    assert!(
        stdout.contains(DONE),
        "{test} did not run to the end:\n{stdout}\n{stderr}"
    );
    println!("{test} took {:?} in its namespace", started.elapsed());
}

/// An HTTP client for the API on loopback. The workspace's reqwest has rustls with no
/// crypto provider (the `ward` CLI's choice: one TLS stack, ring), and such a client
/// needs a TLS configuration even for plain http://; this one trusts no certificate.
pub fn http_client() -> reqwest::Client {
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap_or_else(|e| panic!("TLS versions: {e}"))
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .build()
        .unwrap_or_else(|e| panic!("HTTP client: {e}"))
}
