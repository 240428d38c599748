//! Agent benchmarks for BENCHMARKS.md: resident memory and CPU while idle and
//! under 1,000 file events per second, and file-created-to-alert-stored latency.
//! Starts a real collector and a real agent (the binaries next to this one).
//!
//!   cargo build --release -p ward-collector -p ward-agent -p ward-tests
//!   target/release/ward-agentbench resources
//!   target/release/ward-agentbench actions --kind quarantine --count 200
//!   target/release/ward-agentbench actions --kind isolate --count 200   (root; runs in its own network namespace)
//!   target/release/ward-agentbench kernel   (root: the eBPF exec, network, UDP and DNS sources)
//!   target/release/ward-agentbench build    (the agent's CPU while a cargo build and test run under /tmp)

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use serde_json::json;
use ward_tests::{Agent, Collector, now_ms};

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    command: Bench,
}

#[derive(Subcommand)]
enum Bench {
    /// Idle and loaded CPU and memory, and file-created-to-alert-stored latency.
    Resources,
    /// From the approve call to the result stored at the collector.
    Actions {
        /// quarantine or isolate
        #[arg(long)]
        kind: String,
        #[arg(long, default_value_t = 200)]
        count: usize,
    },
    /// The eBPF sources (root): how many of `execs` sub-millisecond execs under load
    /// arrive with full argv and parent, how many of `connections` loopback connects,
    /// `datagrams` UDP sendtos and `lookups` DNS queries (to a responder on
    /// 127.0.85.53:53) arrive with the right pid and exe, and the agent's CPU at
    /// `rate` execs/s plus `rate` connections/s.
    Kernel {
        #[arg(long, default_value_t = 10_000)]
        execs: usize,
        #[arg(long, default_value_t = 10_000)]
        connections: usize,
        #[arg(long, default_value_t = 10_000)]
        datagrams: usize,
        #[arg(long, default_value_t = 10_000)]
        lookups: usize,
        /// DNS lookups per second (0: as fast as they are answered).
        #[arg(long, default_value_t = 1000)]
        lookup_rate: u64,
        #[arg(long, default_value_t = 1000)]
        rate: u64,
        /// Seconds of the paced load.
        #[arg(long, default_value_t = 20)]
        secs: u64,
        /// Only the paced load, with this `process_source` (`ebpf`, or `proc` to
        /// compare with the netlink connector and /proc).
        #[arg(long)]
        cpu_only: Option<String>,
        /// The paced execs' command lines all differ (`/bin/true paced N`), so no
        /// two execs look alike to the rules; by default they are identical.
        #[arg(long)]
        unique_args: bool,
    },
    /// The agent's CPU on a build host, against its own idle CPU in the same run: the
    /// default sensors (watches on /tmp and /var/tmp among them) while `cargo test
    /// -p CRATE` builds and runs with its target directory under /tmp; a known-bad file
    /// dropped into /tmp during the build must still raise its alert.
    Build {
        /// The workspace to build from (default: the one this bench was built in).
        #[arg(long)]
        workspace: Option<std::path::PathBuf>,
        #[arg(long, default_value = "ward-protocol")]
        krate: String,
        /// Seconds of the idle sample before the build.
        #[arg(long, default_value_t = 30)]
        idle_secs: u64,
        /// More `[sensors]` settings for the agent, TOML lines (to compare one setting).
        #[arg(long, default_value = "")]
        sensors: String,
    },
}

const IN_NS: &str = "WARD_AGENTBENCH_IN_NS";

const EICAR: &[u8] = br"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*";

/// CPU time (user + system) of a process, in seconds.
fn cpu_seconds(pid: u32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let after = stat.rsplit_once(')').context("stat")?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = fields[11].parse::<f64>()? + fields[12].parse::<f64>()?;
    // SAFETY: sysconf has no memory effects; _SC_CLK_TCK is a valid name.
    #[allow(unsafe_code)]
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Ok(ticks / hz)
}

fn rss_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("VmRSS")
}

/// CPU share of one core and the RSS at the end of `secs` seconds.
fn sample(pid: u32, secs: u64, during: impl FnOnce(Duration)) -> Result<(f64, u64)> {
    let c0 = cpu_seconds(pid)?;
    let t0 = Instant::now();
    during(Duration::from_secs(secs));
    let elapsed = t0.elapsed().as_secs_f64();
    let c1 = cpu_seconds(pid)?;
    Ok(((c1 - c0) / elapsed * 100.0, rss_kib(pid)?))
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Bench::Resources => resources(),
        Bench::Actions { kind, count } if kind == "isolate" && std::env::var_os(IN_NS).is_none() => {
            // nftables rules must never touch this machine's network: run in a namespace of our own.
            let status = std::process::Command::new("unshare")
                .args(["--net", "--mount"])
                .arg(std::env::current_exe()?)
                .args(["actions", "--kind", "isolate", "--count", &count.to_string()])
                .env(IN_NS, "1")
                .status()
                .context("unshare (run as root)")?;
            if !status.success() {
                bail!("isolate benchmark failed in its namespace: {status}");
            }
            Ok(())
        }
        Bench::Actions { kind, count } => actions(&kind, count),
        Bench::Kernel {
            execs,
            connections,
            datagrams,
            lookups,
            lookup_rate,
            rate,
            secs,
            cpu_only,
            unique_args,
        } => match cpu_only {
            Some(source) => paced(&source, rate, secs, unique_args),
            None => {
                kernel(execs, connections, datagrams, lookups, lookup_rate)?;
                paced("ebpf", rate, secs, unique_args)
            }
        },
        Bench::Build {
            workspace,
            krate,
            idle_secs,
            sensors,
        } => build(workspace, &krate, idle_secs, &sensors),
    }
}

fn percentiles(mut v: Vec<i64>) -> (i64, i64, i64) {
    v.sort_unstable();
    let pct = |p: f64| v[((v.len() as f64 - 1.0) * p).round() as usize];
    (pct(0.5), pct(0.99), v.last().copied().unwrap_or(0))
}

/// Proposes, approves and waits for the stored result of `count` actions; returns
/// approve-call-to-result-stored latencies in ms.
fn actions(kind: &str, count: usize) -> Result<()> {
    if std::env::var_os(IN_NS).is_some() {
        std::process::Command::new("ip")
            .args(["link", "set", "lo", "up"])
            .status()?;
    }
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let collector = Collector::start()?;
    let agent = Agent::start(&collector)?;
    agent.wait_connected(Duration::from_secs(20))?;
    let ann = collector.user("ann", "analyst")?;
    let bob = collector.user("bob", "approver")?;
    let db = collector.db()?;
    let device = agent.device_id.clone();
    let mut latencies = Vec::new();
    rt.block_on(async {
        for i in 0..count {
            let action = match kind {
                "quarantine" => {
                    let path = agent.watch.join(format!("q-{i}.bin"));
                    let body = format!("sample {i}");
                    std::fs::write(&path, &body)?;
                    let sha = ring::digest::digest(&ring::digest::SHA256, body.as_bytes());
                    let hex: String = sha.as_ref().iter().map(|b| format!("{b:02x}")).collect();
                    json!({"kind": "quarantine_file", "path": path.display().to_string(), "sha256": hex})
                }
                "isolate" if i % 2 == 0 => json!({"kind": "isolate", "allow": []}),
                "isolate" => json!({"kind": "release"}),
                other => bail!("unknown kind {other}"),
            };
            let (status, body) = collector
                .post_as(
                    "/api/v1/actions",
                    &ann,
                    json!({"device_id": device, "action": action, "reason": "bench"}),
                )
                .await?;
            if status != 201 {
                bail!("propose: {status} {body}");
            }
            let id = body["id"].as_str().context("id")?.to_string();
            let t0 = now_ms() as i64;
            collector
                .post_as(
                    &format!("/api/v1/actions/{id}/approve"),
                    &bob,
                    json!({"comment": "bench"}),
                )
                .await?;
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                let (status, updated): (String, i64) =
                    db.query_row("SELECT status, updated_at_ms FROM actions WHERE id = ?1", [&id], |r| {
                        Ok((r.get(0)?, r.get(1)?))
                    })?;
                if status == "succeeded" {
                    latencies.push(updated - t0);
                    break;
                }
                if status == "failed" || status == "refused" || Instant::now() > deadline {
                    bail!("action {id} ended {status}");
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
        Ok(())
    })?;
    let (p50, p99, max) = percentiles(latencies);
    println!(
        "{kind}: {count} actions, approve call -> result stored at the collector: p50 {p50} ms, p99 {p99} ms, max {max} ms"
    );
    Ok(())
}

fn resources() -> Result<()> {
    let collector = Collector::start()?;
    // The default sensors (watches /etc, /tmp, ... and polls /proc every second), plus the bench dir.
    let agent = Agent::start_with(&collector, |watch| {
        let defaults = ward_agent::sensor::SensorConfig::default();
        let mut paths = defaults.file_watch_paths.clone();
        paths.push(watch.display().to_string());
        format!("[agent]\nstatus_interval_ms = 2000\n\n[sensors]\nfile_watch_paths = {paths:?}\n")
    })?;
    agent.wait_connected(Duration::from_secs(20))?;
    let pid = agent.pid().context("agent pid")?;
    std::thread::sleep(Duration::from_secs(5));

    let (cpu, rss) = sample(pid, 30, std::thread::sleep)?;
    println!(
        "idle (default watches, 1 poll/s): {cpu:.2}% of one core, RSS {:.1} MiB",
        rss as f64 / 1024.0
    );

    let dir = agent.watch.join("load");
    std::fs::create_dir_all(&dir)?;
    std::thread::sleep(Duration::from_millis(500));
    let (cpu, rss) = sample(pid, 20, |d| {
        let start = Instant::now();
        let mut i: u64 = 0;
        while start.elapsed() < d {
            // 1,000 events/s: a create or a modify of one of 200 benign files.
            let due = start + Duration::from_millis(i);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            let _ = std::fs::write(dir.join(format!("f{}.txt", i % 200)), i.to_le_bytes());
            i += 1;
        }
    })?;
    println!(
        "1,000 file events/s: {cpu:.1}% of one core, RSS {:.1} MiB",
        rss as f64 / 1024.0
    );

    // File created -> alert stored: 200 EICAR drops, 10 per second.
    let lat_dir = agent.watch.join("latency");
    std::fs::create_dir_all(&lat_dir)?;
    std::thread::sleep(Duration::from_millis(500));
    let mut written = Vec::new();
    for i in 0..200 {
        let name = format!("sample-{i:03}.bin");
        let t = now_ms();
        std::fs::write(lat_dir.join(&name), EICAR)?;
        written.push((name, t));
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_secs(3));
    let db = collector.db()?;
    let mut latencies = Vec::new();
    for (name, t) in &written {
        let received: Option<i64> = db
            .query_row(
                "SELECT MIN(received_at_ms) FROM alerts WHERE entities LIKE ?1",
                [format!("%{name}%")],
                |r| r.get(0),
            )
            .ok()
            .flatten();
        if let Some(r) = received {
            latencies.push(r - *t as i64);
        }
    }
    let samples = latencies.len();
    let (p50, p99, max) = percentiles(latencies);
    println!(
        "file created -> alert stored at the collector ({samples} of {} samples): p50 {p50} ms, p99 {p99} ms, max {max} ms",
        written.len()
    );
    Ok(())
}

/// Process entities of the alerts whose entities mention `needle`.
fn alert_processes(collector: &Collector, needle: &str) -> Result<Vec<serde_json::Value>> {
    let db = collector.db()?;
    let mut stmt = db.prepare("SELECT entities FROM alerts WHERE entities LIKE ?1")?;
    let rows = stmt.query_map([format!("%{needle}%")], |r| r.get::<_, String>(0))?;
    let mut out = Vec::new();
    for row in rows {
        let entities: Vec<serde_json::Value> = serde_json::from_str(&row?)?;
        if let Some(p) = entities.into_iter().find(|e| e["kind"] == "process") {
            out.push(p);
        }
    }
    Ok(out)
}

/// Polls until `count()` stops growing for 3 s or reaches `want`.
fn settle(want: usize, count: impl Fn() -> Result<usize>) -> Result<usize> {
    let mut last = (0usize, Instant::now());
    loop {
        let n = count()?;
        if n >= want {
            return Ok(n);
        }
        if n != last.0 {
            last = (n, Instant::now());
        } else if last.1.elapsed() > Duration::from_secs(3) {
            return Ok(n);
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// A DNS query for `name`, type A, with id `id`.
fn dns_query(id: u16, name: &str) -> Vec<u8> {
    let mut q = id.to_be_bytes().to_vec();
    q.extend_from_slice(&[1, 0, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    q
}

/// Answers every query on `sock` with 192.0.2.1 until `stop`.
fn dns_responder(sock: std::net::UdpSocket, stop: std::sync::Arc<std::sync::atomic::AtomicBool>) {
    sock.set_read_timeout(Some(Duration::from_millis(100))).ok();
    let mut buf = [0u8; 512];
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        let Ok((n, from)) = sock.recv_from(&mut buf) else {
            continue;
        };
        let mut r = buf[..n].to_vec();
        if r.len() < 12 {
            continue;
        }
        r[2] |= 0x80;
        r[7] = 1;
        r.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 192, 0, 2, 1]);
        let _ = sock.send_to(&r, from);
    }
}

/// `n` lookups of `name(i)` to 127.0.85.53:53 at `rate` a second (0: as fast as they
/// are answered), a socket each as a stub resolver makes them; returns how many were
/// answered.
fn lookup_burst(n: usize, rate: u64, name: impl Fn(usize) -> String) -> Result<usize> {
    let t0 = Instant::now();
    let mut answered = 0;
    for i in 0..n {
        if let Some(us) = (i as u64 * 1_000_000).checked_div(rate)
            && let Some(wait) = (t0 + Duration::from_micros(us)).checked_duration_since(Instant::now())
        {
            std::thread::sleep(wait);
        }
        let sock = std::net::UdpSocket::bind("127.0.0.1:0")?;
        sock.connect("127.0.85.53:53")?;
        sock.set_read_timeout(Some(Duration::from_secs(1)))?;
        sock.send(&dns_query(i as u16, &name(i)))?;
        let mut buf = [0u8; 512];
        if sock.recv(&mut buf).is_ok() {
            answered += 1;
        }
    }
    Ok(answered)
}

/// Alerts of rule `title` whose process entity is this process and its executable.
fn alerts_naming_me(collector: &Collector, title: &str) -> Result<usize> {
    let me = std::process::id();
    let my_exe = std::fs::read_link("/proc/self/exe")?.display().to_string();
    let db = collector.db()?;
    let mut stmt = db.prepare("SELECT entities FROM alerts WHERE rule_title = ?1")?;
    let rows = stmt.query_map([title], |r| r.get::<_, String>(0))?;
    let mut n = 0;
    for row in rows {
        let entities: Vec<serde_json::Value> = serde_json::from_str(&row?)?;
        if entities
            .iter()
            .any(|e| e["kind"] == "process" && e["pid"] == me && e["exe"] == my_exe.as_str())
        {
            n += 1;
        }
    }
    Ok(n)
}

fn kernel(execs: usize, connections: usize, datagrams: usize, lookups: usize, lookup_rate: u64) -> Result<()> {
    if !ward_tests::is_root() {
        bail!("the eBPF sources need root (CAP_BPF and CAP_PERFMON)");
    }
    let collector = Collector::start_with(ward_tests::without_folding)?;
    let marker = format!("ward-kbench-{}", std::process::id());
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let port = listener.local_addr()?.port();
    let rules = tempfile::tempdir()?;
    std::fs::write(
        rules.path().join("exec.yml"),
        format!(
            "title: bench exec\nid: 5b1f8e2c-7a3d-4c6b-9e0f-1a2b3c4d5e6f\nstatus: test\nlogsource:\n    product: linux\n    category: process_creation\ndetection:\n    selection:\n        CommandLine|contains: '{marker}'\n    condition: selection\nlevel: medium\n"
        ),
    )?;
    std::fs::write(
        rules.path().join("connect.yml"),
        format!(
            "title: bench connect\nid: 6c2a9f3d-8b4e-4d7c-8f1a-2b3c4d5e6f70\nstatus: test\nlogsource:\n    product: linux\n    category: network_connection\ndetection:\n    selection:\n        Initiated: 'true'\n        DestinationPort: {port}\n    condition: selection\nlevel: medium\n"
        ),
    )?;
    let udp_sink = std::net::UdpSocket::bind("127.0.0.1:0")?;
    let udp_port = udp_sink.local_addr()?.port();
    std::fs::write(
        rules.path().join("udp.yml"),
        format!(
            "title: bench udp\nid: 7d3b0a4e-9c5f-4e8d-9a2b-3c4d5e6f7081\nstatus: test\nlogsource:\n    product: linux\n    category: network_connection\ndetection:\n    selection:\n        Protocol: udp\n        DestinationPort: {udp_port}\n    condition: selection\nlevel: medium\n"
        ),
    )?;
    std::fs::write(
        rules.path().join("dns.yml"),
        format!(
            "title: bench dns\nid: 8e4c1b5f-0d6a-4f9e-8b3c-4d5e6f708192\nstatus: test\nlogsource:\n    product: linux\n    category: dns_query\ndetection:\n    selection:\n        QueryName|endswith: '.{marker}.example'\n        QueryResults: '192.0.2.1'\n    condition: selection\nlevel: medium\n"
        ),
    )?;
    let rules_dir = rules.path().display().to_string();
    // The default sensors and pack, eBPF only, every connection reported (no folding
    // of repeats: the figures are for every connection), every match its own alert.
    let agent = Agent::start_with(&collector, |_| {
        format!(
            "[agent]\nstatus_interval_ms = 2000\n\n[sensors]\nprocess_source = \"ebpf\"\nnetwork_dedup_ms = 0\n\n\
             [detection]\nrules_dir = {rules_dir:?}\naggregate_window_ms = 0\nrule_max_new_alerts_per_window = 0\n"
        )
    })?;
    agent.wait_connected(Duration::from_secs(20))?;
    std::thread::sleep(Duration::from_secs(3));
    let status = agent.status()?;
    if !status.contains("process: ready (eBPF") || !status.contains("network: ready (eBPF") || !status.contains("DNS") {
        bail!("the eBPF sources are not running: {status}");
    }
    let agent_pid = agent.pid().context("agent pid")?;

    // 1. Sub-millisecond execs (/bin/true) from a shell loop, with both cores busy.
    let burners: Vec<std::process::Child> = (0..2)
        .map(|_| {
            std::process::Command::new("sh")
                .args(["-c", "while :; do :; done"])
                .spawn()
        })
        .collect::<std::io::Result<_>>()?;
    let script = format!("i=0; while [ $i -lt {execs} ]; do /bin/true {marker} $i; i=$((i+1)); done");
    let t0 = Instant::now();
    let mut sh = std::process::Command::new("/bin/sh").args(["-c", &script]).spawn()?;
    let sh_pid = sh.id();
    sh.wait()?;
    let exec_secs = t0.elapsed().as_secs_f64();
    for mut b in burners {
        let _ = b.kill();
        let _ = b.wait();
    }
    let prefix = format!("/bin/true {marker} ");
    let complete = || -> Result<usize> {
        let mut seen = std::collections::HashSet::new();
        for p in alert_processes(&collector, &prefix)? {
            let i = p["cmdline"]
                .as_str()
                .and_then(|c| c.strip_prefix(&prefix))
                .and_then(|i| i.parse::<usize>().ok());
            if let Some(i) = i
                && p["ppid"] == sh_pid
                && p["exe"].as_str().is_some_and(|e| e.ends_with("/true"))
            {
                seen.insert(i);
            }
        }
        Ok(seen.len())
    };
    let got = settle(execs, complete)?;
    println!(
        "execs: {got} of {execs} ({:.2} %) arrived with full argv and parent; {:.0} execs/s from one shell loop with 2 busy-looping shells",
        got as f64 * 100.0 / execs as f64,
        execs as f64 / exec_secs
    );

    // 2. Loopback connects by this process, accepted by a thread of it.
    let me = std::process::id();
    let my_exe = std::fs::read_link("/proc/self/exe")?.display().to_string();
    let acceptor = std::thread::spawn(move || {
        for _ in 0..connections {
            if listener.accept().is_err() {
                break;
            }
        }
    });
    let t0 = Instant::now();
    for _ in 0..connections {
        let _ = std::net::TcpStream::connect(("127.0.0.1", port))?;
    }
    let conn_secs = t0.elapsed().as_secs_f64();
    let _ = acceptor.join();
    let right = || -> Result<usize> {
        let db = collector.db()?;
        let mut stmt = db.prepare("SELECT entities FROM alerts WHERE rule_title = 'bench connect'")?;
        let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
        let mut n = 0;
        for row in rows {
            let entities: Vec<serde_json::Value> = serde_json::from_str(&row?)?;
            if entities
                .iter()
                .any(|e| e["kind"] == "process" && e["pid"] == me && e["exe"] == my_exe.as_str())
            {
                n += 1;
            }
        }
        Ok(n)
    };
    let got = settle(connections, right)?;
    println!(
        "connections: {got} of {connections} ({:.2} %) reported with the right pid and exe; {:.0} connects/s",
        got as f64 * 100.0 / connections as f64,
        connections as f64 / conn_secs
    );

    // 3. UDP datagrams sent with an address (sendto) by this process, each reported
    // (no folding); the agent's CPU from the first to the last alert stored.
    let cpu0 = cpu_seconds(agent_pid)?;
    let t0 = Instant::now();
    let sender = std::net::UdpSocket::bind("127.0.0.1:0")?;
    for i in 0..datagrams {
        sender.send_to(&(i as u32).to_le_bytes(), ("127.0.0.1", udp_port))?;
        // Paced a little, as the sink reads nothing: the socket's buffer stays small.
        if i % 64 == 63 {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    let udp_secs = t0.elapsed().as_secs_f64();
    let got = settle(datagrams, || alerts_naming_me(&collector, "bench udp"))?;
    let cpu = (cpu_seconds(agent_pid)? - cpu0) / t0.elapsed().as_secs_f64() * 100.0;
    println!(
        "udp: {got} of {datagrams} ({:.2} %) sendtos reported with the right pid and exe; {:.0} datagrams/s; agent {cpu:.1} % of one core until the last alert was stored",
        got as f64 * 100.0 / datagrams as f64,
        datagrams as f64 / udp_secs
    );
    drop(udp_sink);

    // 4. DNS lookups as a stub resolver makes them (a socket each, connect, send,
    // wait for the answer), to a responder on a loopback address's port 53, paced at
    // `lookup_rate` a second.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let dns = std::net::UdpSocket::bind("127.0.85.53:53").context("binding 127.0.85.53:53")?;
    let s = stop.clone();
    let responder = std::thread::spawn(move || dns_responder(dns, s));
    let cpu0 = cpu_seconds(agent_pid)?;
    let t0 = Instant::now();
    let answered = lookup_burst(lookups, lookup_rate, |i| format!("q{i}.{marker}.example"))?;
    let dns_secs = t0.elapsed().as_secs_f64();
    let got = settle(lookups, || alerts_naming_me(&collector, "bench dns"))?;
    let cpu = (cpu_seconds(agent_pid)? - cpu0) / t0.elapsed().as_secs_f64() * 100.0;
    println!(
        "dns: {got} of {lookups} ({:.2} %) lookups reported with their answer and the right pid and exe ({answered} answered); {:.0} lookups/s; agent {cpu:.1} % of one core until the last alert was stored",
        got as f64 * 100.0 / lookups as f64,
        lookups as f64 / dns_secs
    );
    // 5. The same lookups for 10 s matching no rule: what seeing them costs, without
    // the alerts (signing, the outbox's fsync, sending) the part above paid for.
    let rate = if lookup_rate > 0 { lookup_rate } else { 1000 };
    let n = (rate * 10) as usize;
    let cpu0 = cpu_seconds(agent_pid)?;
    let t0 = Instant::now();
    lookup_burst(n, rate, |i| format!("q{i}.quiet.example"))?;
    let cpu = (cpu_seconds(agent_pid)? - cpu0) / t0.elapsed().as_secs_f64() * 100.0;
    println!("dns, matching no rule: {rate} lookups/s for 10 s: agent {cpu:.2} % of one core");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = responder.join();
    let status = agent.status()?;
    for line in status.lines().filter(|l| l.contains("network")) {
        println!("  status: {}", line.trim());
    }

    drop(agent);
    drop(collector);
    Ok(())
}

/// Agent CPU at `rate` execs/s plus `rate` connections/s, paced by two threads, on a
/// fresh agent with the default sensors and pack (nothing the load does matches a
/// rule), files watched in a private directory, and the process source `source`;
/// every connection is reported (no folding).
fn paced(source: &str, rate: u64, secs: u64, unique_args: bool) -> Result<()> {
    if !ward_tests::is_root() {
        bail!("the eBPF sources need root (CAP_BPF and CAP_PERFMON)");
    }
    let collector = Collector::start()?;
    // Files are watched in a private directory only: on this shared machine other
    // people's builds write into /tmp all the time, which is not this load.
    let agent = Agent::start_with(&collector, |w| {
        format!(
            "[agent]\nstatus_interval_ms = 2000\n\n[sensors]\nprocess_source = {source:?}\nnetwork_dedup_ms = 0\nfile_watch_paths = [{:?}]\n",
            w.display().to_string()
        )
    })?;
    agent.wait_connected(Duration::from_secs(20))?;
    let pid = agent.pid().context("agent pid")?;
    std::thread::sleep(Duration::from_secs(5));
    let quiet = std::net::TcpListener::bind("127.0.0.1:0")?;
    let quiet_port = quiet.local_addr()?.port();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let s = stop.clone();
    let acceptor = std::thread::spawn(move || {
        quiet.set_nonblocking(true).ok();
        while !s.load(std::sync::atomic::Ordering::Relaxed) {
            if quiet.accept().is_err() {
                std::thread::sleep(Duration::from_micros(200));
            }
        }
    });
    // One pacing thread per kind; each returns how many it did.
    let pace = |work: Box<dyn Fn() -> bool + Send>, d: Duration| {
        std::thread::spawn(move || {
            let start = Instant::now();
            let (mut i, mut done) = (0u64, 0u64);
            while start.elapsed() < d {
                let due = start + Duration::from_micros(i * 1_000_000 / rate);
                if let Some(wait) = due.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
                if work() {
                    done += 1;
                }
                i += 1;
            }
            done
        })
    };
    let (mut spawned, mut connected) = (0u64, 0u64);
    let (cpu, rss) = sample(pid, secs, |d| {
        let n = std::sync::atomic::AtomicU64::new(0);
        let execs = pace(
            Box::new(move || {
                let mut cmd = std::process::Command::new("/bin/true");
                cmd.arg("paced");
                if unique_args {
                    cmd.arg(n.fetch_add(1, std::sync::atomic::Ordering::Relaxed).to_string());
                }
                cmd.status().is_ok()
            }),
            d,
        );
        let conns = pace(
            Box::new(move || std::net::TcpStream::connect(("127.0.0.1", quiet_port)).is_ok()),
            d,
        );
        spawned = execs.join().unwrap_or(0);
        connected = conns.join().unwrap_or(0);
    })?;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = acceptor.join();
    println!(
        "paced load, process_source = {source:?}{}: {:.0} execs/s + {:.0} connections/s for {secs} s: agent {cpu:.2} % of one core, RSS {:.1} MiB",
        if unique_args {
            ", every command line different"
        } else {
            ""
        },
        spawned as f64 / secs as f64,
        connected as f64 / secs as f64,
        rss as f64 / 1024.0
    );
    let status = agent.status()?;
    for line in status
        .lines()
        .filter(|l| l.contains("process") || l.contains("network") || l.starts_with("detection"))
    {
        println!("  status: {}", line.trim());
    }
    Ok(())
}

/// The agent's CPU while `cargo test -p krate` builds and runs with its target
/// directory under /tmp, beside the same agent's idle CPU in the same run; an EICAR
/// file dropped into /tmp halfway must raise its alert as on a quiet host.
fn build(workspace: Option<std::path::PathBuf>, krate: &str, idle_secs: u64, sensors: &str) -> Result<()> {
    let workspace = match workspace {
        Some(w) => w,
        None => std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .context("workspace")?
            .to_path_buf(),
    };
    let collector = Collector::start()?;
    // The default sensors, as `resources` runs them (watches on /tmp and /var/tmp).
    let agent = Agent::start_with(&collector, |watch| {
        let defaults = ward_agent::sensor::SensorConfig::default();
        let mut paths = defaults.file_watch_paths.clone();
        paths.push(watch.display().to_string());
        format!("[agent]\nstatus_interval_ms = 2000\n\n[sensors]\nfile_watch_paths = {paths:?}\n{sensors}\n")
    })?;
    agent.wait_connected(Duration::from_secs(20))?;
    let pid = agent.pid().context("agent pid")?;
    std::thread::sleep(Duration::from_secs(5));
    let (idle, rss) = sample(pid, idle_secs, std::thread::sleep)?;
    println!(
        "idle, {idle_secs} s: agent {idle:.2} % of one core, RSS {:.1} MiB (loadavg {})",
        rss as f64 / 1024.0,
        ward_tests::procfs::loadavg()
    );
    let target = std::env::temp_dir().join(format!("ward-buildbench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&target);
    let eicar = std::env::temp_dir().join(format!("ward-buildbench-{}-sample.bin", std::process::id()));
    let c0 = cpu_seconds(pid)?;
    let t0 = Instant::now();
    let mut child = std::process::Command::new("cargo")
        .args(["test", "--offline", "-q", "-p", krate])
        .current_dir(&workspace)
        .env("CARGO_TARGET_DIR", &target)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .context("cargo")?;
    // Halfway through a typical build of the crate, the known-bad file.
    let mut dropped_at = None;
    let status = loop {
        if dropped_at.is_none() && t0.elapsed() > Duration::from_secs(15) {
            dropped_at = Some(now_ms());
            std::fs::write(&eicar, EICAR)?;
        }
        if let Some(st) = child.try_wait()? {
            break st;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let elapsed = t0.elapsed().as_secs_f64();
    let busy = (cpu_seconds(pid)? - c0) / elapsed * 100.0;
    let written = dir_bytes(&target);
    println!(
        "cargo test -p {krate} under {} ({status}, {elapsed:.0} s, {:.0} MiB written): agent {busy:.2} % of one core, RSS {:.1} MiB (loadavg {})",
        target.display(),
        written as f64 / 1_048_576.0,
        rss_kib(pid)? as f64 / 1024.0,
        ward_tests::procfs::loadavg()
    );
    if dropped_at.is_none() {
        dropped_at = Some(now_ms());
        std::fs::write(&eicar, EICAR)?;
        println!("  (the build ended before 15 s: the known-bad file was dropped after it)");
    }
    let name = eicar.file_name().and_then(|n| n.to_str()).context("name")?.to_string();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut received = None;
    while received.is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
        received = collector
            .db()?
            .query_row(
                "SELECT MIN(received_at_ms) FROM alerts WHERE entities LIKE ?1",
                [format!("%{name}%")],
                |r| r.get::<_, Option<i64>>(0),
            )
            .ok()
            .flatten();
    }
    match (received, dropped_at) {
        (Some(r), Some(t)) => println!(
            "known-bad file in /tmp during the build: alert stored {} ms after the write",
            r - t as i64
        ),
        _ => println!("known-bad file in /tmp during the build: NO alert within 30 s"),
    }
    let status = agent.status()?;
    for line in status
        .lines()
        .filter(|l| l.contains("hash") || l.contains("file") || l.starts_with("detection"))
    {
        println!("  status: {}", line.trim());
    }
    let _ = std::fs::remove_file(&eicar);
    let _ = std::fs::remove_dir_all(&target);
    Ok(())
}

/// Bytes of the regular files under `dir` (what the build left there).
fn dir_bytes(dir: &std::path::Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else { continue };
        for e in entries.flatten() {
            match e.file_type() {
                Ok(t) if t.is_dir() => stack.push(e.path()),
                Ok(t) if t.is_file() => total += e.metadata().map(|m| m.len()).unwrap_or(0),
                _ => {}
            }
        }
    }
    total
}
