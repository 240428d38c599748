//! Load generator for the collector benchmarks in BENCHMARKS.md. Starts a real
//! collector (the binary next to this one) and drives it with simulated agents
//! built on the protocol crate.
//!
//!   cargo build --release -p ward-collector -p ward-tests
//!   target/release/ward-loadgen ingest --agents 100 --alerts-per-agent 3000 [--flood]
//!   target/release/ward-loadgen storm --agents 5000
//!   target/release/ward-loadgen idle --agents 1000
//!   target/release/ward-loadgen correlate --agents 50 --rate 10000 --seconds 30
//!   target/release/ward-loadgen restart --alerts 1000000

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use clap::{Parser, Subcommand};
use tokio::sync::Semaphore;
use ward_agent::link;
use ward_protocol::{Entity, JoinToken, Signed};
use ward_tests::procfs::{clock_ticks_per_sec, loadavg, stat_ticks};
use ward_tests::{Collector, TestDevice};

#[path = "../loadgen/restart.rs"]
mod restart;

/// The collector's allocator, so the bare server of `idle` is measured on the same.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    command: Scenario,
}

#[derive(Subcommand)]
enum Scenario {
    /// Sustained signed alerts per second, end to end (QUIC, verify, decode, dedup, durable commit).
    Ingest {
        #[arg(long, default_value_t = 100)]
        agents: usize,
        #[arg(long, default_value_t = 3000)]
        alerts_per_agent: usize,
        #[arg(long, default_value_t = 250)]
        batch: usize,
        /// Every alert of an agent repeats its first (same rule and folder), so the
        /// collector folds them all into one row per agent (the flood path).
        #[arg(long)]
        flood: bool,
    },
    /// Connect N agents, kill -9 and restart the collector, time until all are back.
    Storm {
        #[arg(long, default_value_t = 5000)]
        agents: usize,
        /// All simulated agents on one client UDP socket (how this was first
        /// measured); by default each has its own, as real agents do.
        #[arg(long)]
        shared_socket: bool,
        /// Load-generator processes sharing the agents (each enrolls and drives its
        /// part on its own sockets): one process's client handshakes run on one
        /// tokio runtime, which is then what a storm of 10,000 measures.
        #[arg(long, default_value_t = 1)]
        processes: usize,
        /// The collector's `[ingest] udp_recv_buffer_bytes` (its default when absent;
        /// the kernel caps it at `net.core.rmem_max`).
        #[arg(long)]
        udp_recv_buffer_bytes: Option<u32>,
    },
    /// (Used by `storm --processes`.) One part of a storm: enrolls `agents` with
    /// `token`, connects them from loopback addresses from `first` on, prints
    /// `connected`, then for each `restarted EPOCH_MS` line on stdin reconnects them
    /// all and prints `back MS` (milliseconds from that epoch to the last one back).
    #[command(hide = true)]
    StormPart {
        #[arg(long)]
        token: String,
        #[arg(long)]
        agents: usize,
        #[arg(long)]
        first: usize,
    },
    /// Collector memory with N connected idle agents, beside the same N connections
    /// to a bare quinn server with the collector's TLS and transport settings (its
    /// limit: what QUIC and TLS themselves hold per connection).
    Idle {
        #[arg(long, default_value_t = 1000)]
        agents: usize,
    },
    /// (Used by `idle`.) A bare quinn server on the collector's TLS and transport
    /// configuration from the collector data dir: accepts connections and their
    /// stream, reads and holds them, nothing else. Prints its port.
    #[command(hide = true)]
    BareServer {
        #[arg(long)]
        data_dir: std::path::PathBuf,
    },
    /// A sustained alert rate for a while, then alert-to-incident times: how long
    /// each alert waited between its commit and its incident link.
    Correlate {
        #[arg(long, default_value_t = 50)]
        agents: usize,
        /// Alerts per second, all agents together.
        #[arg(long, default_value_t = 10_000)]
        rate: usize,
        #[arg(long, default_value_t = 30)]
        seconds: usize,
        /// Batches per agent and second.
        #[arg(long, default_value_t = 4)]
        batches_per_second: usize,
    },
    /// Fill the database with N alerts, kill -9 and restart the collector, and time
    /// its first acknowledged batch, beside the same on an empty database.
    Restart {
        #[arg(long, default_value_t = 1_000_000)]
        alerts: usize,
        #[arg(long, default_value_t = 100)]
        agents: usize,
        #[arg(long, default_value_t = 250)]
        batch: usize,
        /// Kill the collector as soon as the alerts are stored, correlation still
        /// behind (by default it waits until every alert is in an incident).
        #[arg(long)]
        correlation_behind: bool,
        /// Milliseconds the collector stays idle before the kill (the last commit's
        /// log is emptied after a second without commits).
        #[arg(long, default_value_t = 0)]
        idle_before_kill_ms: u64,
    },
}

fn unthrottled(config: &mut String) {
    *config = config
        .replace(
            "max_alerts_per_second_per_agent = 5000",
            "max_alerts_per_second_per_agent = 10000000",
        )
        .replace("burst_alerts_per_agent = 20000", "burst_alerts_per_agent = 10000000");
}

async fn enroll_many(token: &JoinToken, n: usize) -> Result<Vec<TestDevice>> {
    let slots = Arc::new(Semaphore::new(32));
    let mut tasks = Vec::new();
    for i in 0..n {
        let token = token.clone();
        let slots = Arc::clone(&slots);
        tasks.push(tokio::spawn(async move {
            let _slot = slots.acquire().await.expect("semaphore");
            TestDevice::enroll(&token, &format!("sim-{i}")).await
        }));
    }
    let mut devices = Vec::with_capacity(n);
    for t in tasks {
        devices.push(t.await??);
    }
    Ok(devices)
}

/// Connects every device, device `i` through `endpoints[i % len]` (one shared
/// socket, or one socket each as real agents have).
async fn connect_all(devices: Vec<TestDevice>, endpoints: &[quinn::Endpoint], remote: SocketAddr) -> Vec<TestDevice> {
    connect_all_timed(devices, endpoints, remote).await.0
}

/// As [`connect_all`], with how long each device took to get its session, sorted.
async fn connect_all_timed(
    devices: Vec<TestDevice>,
    endpoints: &[quinn::Endpoint],
    remote: SocketAddr,
) -> (Vec<TestDevice>, Vec<u64>) {
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (i, mut d) in devices.into_iter().enumerate() {
        let endpoint = endpoints[i % endpoints.len()].clone();
        tasks.push(tokio::spawn(async move {
            let mut backoff = Duration::from_millis(100);
            loop {
                let attempt = Instant::now();
                match d.connect_on(&endpoint, remote).await {
                    Ok(()) => return (d, started.elapsed().as_millis() as u64),
                    Err(e) => {
                        if std::env::var_os("WARD_LOADGEN_TRACE").is_some() {
                            eprintln!(
                                "attempt {i} failed after {} ms at {} ms: {e}",
                                attempt.elapsed().as_millis(),
                                started.elapsed().as_millis()
                            );
                        }
                        let jitter = Duration::from_millis((i as u64 * 7919) % (backoff.as_millis() as u64 + 1));
                        tokio::time::sleep(backoff / 2 + jitter / 2).await;
                        backoff = (backoff * 2).min(Duration::from_secs(2));
                    }
                }
            }
        }));
    }
    let mut out = Vec::new();
    let mut times = Vec::new();
    for t in tasks {
        let (d, ms) = t.await.expect("connect task");
        out.push(d);
        times.push(ms);
    }
    times.sort_unstable();
    (out, times)
}

async fn ingest(agents: usize, per_agent: usize, batch: usize, flood: bool) -> Result<()> {
    let collector = Collector::start_with(unthrottled)?;
    let token = collector.join_token(agents as u32, "1h")?;
    let devices = enroll_many(&token, agents).await?;
    println!("enrolled {agents} agents; signing {} alerts", agents * per_agent);
    let (devices, work): (Vec<TestDevice>, Vec<Vec<Signed>>) = devices
        .into_iter()
        .map(|mut d| {
            let signed = (0..per_agent)
                .map(|_| {
                    let mut a = d.next_alert();
                    if flood {
                        a.entities = vec![Entity::File {
                            path: format!("/tmp/flood/test-{}", a.seq),
                            sha256: Some([7; 32]),
                        }];
                    }
                    d.sign(&a)
                })
                .collect();
            (d, signed)
        })
        .unzip();
    let endpoint = link::client_endpoint(&collector.quic)?;
    let devices = connect_all(devices, std::slice::from_ref(&endpoint), collector.quic).await;
    let pid = collector.pid().ok_or_else(|| anyhow::anyhow!("collector pid"))?;
    let cpu_before = (ProcCpu::of(pid), ProcCpu::of_self(), loadavg());
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (d, signed) in devices.into_iter().zip(work) {
        tasks.push(tokio::spawn(async move {
            let mut d = d;
            for chunk in signed.chunks(batch) {
                d.send_batch(chunk.to_vec()).await.expect("batch acknowledged");
            }
        }));
    }
    for t in tasks {
        t.await?;
    }
    let elapsed = started.elapsed();
    let cpu_after = (ProcCpu::of(pid), ProcCpu::of_self(), loadavg());
    let (rows, stored): (i64, i64) =
        collector
            .db()?
            .query_row("SELECT COUNT(*), COALESCE(SUM(count), 0) FROM alerts", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })?;
    let want_rows = if flood { agents } else { agents * per_agent };
    if stored as usize != agents * per_agent || rows as usize != want_rows {
        bail!(
            "{rows} rows standing for {stored} alerts, expected {want_rows} for {}",
            agents * per_agent
        );
    }
    println!(
        "ingest: {} alerts from {agents} agents in {:.2} s = {:.0} alerts/s (batches of {batch}, every alert committed before its ack; {rows} rows)",
        stored,
        elapsed.as_secs_f64(),
        stored as f64 / elapsed.as_secs_f64()
    );
    let correlated: i64 = collector.db()?.query_row(
        "SELECT COALESCE(MAX(value), 0) FROM correlation_state WHERE name = 'watermark'",
        [],
        |r| r.get(0),
    )?;
    print_ingest_cpu(&cpu_before, &cpu_after, stored as f64);
    println!("correlated when measured (also on the writer thread): alerts up to row {correlated} of {rows}");
    Ok(())
}

/// CPU time (utime + stime, in clock ticks) of a process and of its threads grouped
/// by name, from /proc.
#[derive(Default)]
struct ProcCpu {
    total: u64,
    threads: std::collections::BTreeMap<String, u64>,
}

impl ProcCpu {
    fn of(pid: u32) -> ProcCpu {
        let mut cpu = ProcCpu {
            total: stat_ticks(format!("/proc/{pid}/stat").as_ref()).unwrap_or(0),
            ..ProcCpu::default()
        };
        for task in std::fs::read_dir(format!("/proc/{pid}/task"))
            .into_iter()
            .flatten()
            .flatten()
        {
            let path = task.path();
            let Ok(name) = std::fs::read_to_string(path.join("comm")) else {
                continue;
            };
            // ward-verify-0, ward-verify-1 .. are one group.
            let name = name
                .trim()
                .trim_end_matches(|c: char| c.is_ascii_digit())
                .trim_end_matches('-');
            let ticks = stat_ticks(&path.join("stat")).unwrap_or(0);
            *cpu.threads.entry(name.to_string()).or_default() += ticks;
        }
        cpu
    }

    fn of_self() -> ProcCpu {
        ProcCpu {
            total: stat_ticks("/proc/self/stat".as_ref()).unwrap_or(0),
            ..ProcCpu::default()
        }
    }
}

/// The collector's CPU per alert over the measured run, whole and by thread group,
/// the load generator's own, and the load average at both ends.
fn print_ingest_cpu(before: &(ProcCpu, ProcCpu, String), after: &(ProcCpu, ProcCpu, String), alerts: f64) {
    let hz = clock_ticks_per_sec();
    let us = |ticks: u64| ticks as f64 / hz * 1e6 / alerts.max(1.0);
    let secs = |ticks: u64| ticks as f64 / hz;
    let collector = after.0.total.saturating_sub(before.0.total);
    let groups: Vec<String> = after
        .0
        .threads
        .iter()
        .map(|(name, t)| (name, t.saturating_sub(before.0.threads.get(name).copied().unwrap_or(0))))
        .filter(|(_, t)| *t > 0)
        .map(|(name, t)| format!("{name} {:.2} s = {:.1} us", secs(t), us(t)))
        .collect();
    println!(
        "collector CPU: {:.2} s = {:.1} us per alert ({})",
        secs(collector),
        us(collector),
        groups.join(", ")
    );
    let own = after.1.total.saturating_sub(before.1.total);
    println!(
        "load generator CPU: {:.2} s = {:.1} us per alert; load average {} at the start, {} at the end",
        secs(own),
        us(own),
        before.2,
        after.2
    );
}

async fn correlate(agents: usize, rate: usize, seconds: usize, batches_per_second: usize) -> Result<()> {
    let collector = Collector::start_with(unthrottled)?;
    let token = collector.join_token(agents as u32, "1h")?;
    let devices = enroll_many(&token, agents).await?;
    let batch = (rate / agents / batches_per_second).max(1);
    let rounds = seconds * batches_per_second;
    println!(
        "enrolled {agents} agents; signing {} alerts ({batch} per batch, {batches_per_second} batches per agent and second)",
        agents * batch * rounds
    );
    let (devices, work): (Vec<TestDevice>, Vec<Vec<Signed>>) = devices
        .into_iter()
        .map(|mut d| {
            let signed = (0..batch * rounds)
                .map(|_| {
                    let a = d.next_alert();
                    d.sign(&a)
                })
                .collect();
            (d, signed)
        })
        .unzip();
    let endpoint = link::client_endpoint(&collector.quic)?;
    let devices = connect_all(devices, std::slice::from_ref(&endpoint), collector.quic).await;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (i, (d, signed)) in devices.into_iter().zip(work).enumerate() {
        tasks.push(tokio::spawn(async move {
            let mut d = d;
            let period = Duration::from_secs(1) / batches_per_second as u32;
            // Agents spread over the period, so the load is even.
            tokio::time::sleep(period * i as u32 / agents as u32).await;
            let mut tick = tokio::time::interval(period);
            for chunk in signed.chunks(batch) {
                tick.tick().await;
                d.send_batch(chunk.to_vec()).await.expect("batch acknowledged");
            }
        }));
    }
    for t in tasks {
        t.await?;
    }
    let sent = started.elapsed();
    let db = collector.db()?;
    let total: i64 = db.query_row("SELECT COUNT(*) FROM alerts", [], |r| r.get(0))?;
    loop {
        let linked: i64 = db.query_row("SELECT COUNT(*) FROM incident_alerts", [], |r| r.get(0))?;
        if linked >= total {
            break;
        }
        if started.elapsed() > Duration::from_secs(600) {
            bail!("{linked} of {total} alerts correlated after 10 minutes");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut waits: Vec<i64> = db
        .prepare(
            "SELECT ia.linked_at_ms - a.received_at_ms FROM incident_alerts ia JOIN alerts a ON a.rowid = ia.alert_rowid",
        )?
        .query_map([], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    waits.sort_unstable();
    let at = |p: f64| waits[((waits.len() as f64 * p).ceil() as usize).clamp(1, waits.len()) - 1];
    println!(
        "correlate: {total} alerts from {agents} agents in {:.1} s = {:.0} alerts/s sustained; alert-to-incident (link time minus commit time) p50 {} ms, p99 {} ms, max {} ms",
        sent.as_secs_f64(),
        total as f64 / sent.as_secs_f64(),
        at(0.5),
        at(0.99),
        at(1.0)
    );
    Ok(())
}

/// Each simulated agent's own client socket, on its own loopback address.
fn agent_endpoints(first: usize, n: usize) -> std::io::Result<Vec<quinn::Endpoint>> {
    (first..first + n)
        .map(|i| {
            let ip = std::net::Ipv4Addr::new(127, 1 + (i / 65_536) as u8, (i / 256 % 256) as u8, (i % 256) as u8);
            quinn::Endpoint::client(SocketAddr::from((ip, 0)))
        })
        .collect()
}

fn epoch_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A child process driving part of a storm (see `Scenario::StormPart`).
struct Part {
    child: std::process::Child,
    stdin: std::process::ChildStdin,
    lines: std::io::Lines<std::io::BufReader<std::process::ChildStdout>>,
}

impl Part {
    fn start(token: &JoinToken, agents: usize, first: usize) -> Result<Part> {
        let mut child = std::process::Command::new(std::env::current_exe()?)
            .args(["storm-part", "--token", &token.to_string()])
            .args(["--agents", &agents.to_string(), "--first", &first.to_string()])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()?;
        let stdin = child.stdin.take().expect("piped stdin");
        let stdout = child.stdout.take().expect("piped stdout");
        let lines = std::io::BufRead::lines(std::io::BufReader::new(stdout));
        Ok(Part { child, stdin, lines })
    }

    /// The next line that starts with `word`, with the rest of it.
    fn expect(&mut self, word: &str) -> Result<String> {
        for line in self.lines.by_ref() {
            if let Some(rest) = line?.strip_prefix(word) {
                return Ok(rest.trim().to_string());
            }
        }
        bail!("a storm part ended before saying {word:?}")
    }
}

impl Drop for Part {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn storm_part(token: &str, agents: usize, first: usize) -> Result<()> {
    let token: JoinToken = token.parse()?;
    let remote = ward_agent::link::resolve(&token.collector_addr).await?;
    let devices = enroll_many(&token, agents).await?;
    let endpoints = agent_endpoints(first, agents)?;
    let mut devices = connect_all(devices, &endpoints, remote).await;
    println!("connected");
    for line in std::io::BufRead::lines(std::io::stdin().lock()) {
        let Some(at) = line?
            .strip_prefix("restarted ")
            .and_then(|v| v.trim().parse::<u64>().ok())
        else {
            continue;
        };
        for d in &mut devices {
            d.session = None;
        }
        let started = epoch_ms().saturating_sub(at);
        let (back, times) = connect_all_timed(devices, &endpoints, remote).await;
        devices = back;
        // Each device's time since the restart, for the percentiles.
        let times: Vec<String> = times.iter().map(|t| (t + started).to_string()).collect();
        println!("back {}", times.join(" "));
    }
    Ok(())
}

async fn storm(agents: usize, shared_socket: bool, processes: usize, udp_recv_buffer: Option<u32>) -> Result<()> {
    let mut collector = Collector::start_with(|config| {
        if let Some(bytes) = udp_recv_buffer {
            *config = config.replace(
                "udp_recv_buffer_bytes = 8388608",
                &format!("udp_recv_buffer_bytes = {bytes}"),
            );
        }
    })?;
    let token = collector.join_token(agents as u32, "1h")?;
    let processes = processes.max(1);
    if processes > 1 && shared_socket {
        bail!("--shared-socket is one socket for all: it cannot be shared by several processes");
    }
    // This process drives the first share; each other process the same share after it.
    let share = agents.div_ceil(processes);
    let own = agents - share * (processes - 1);
    let t = Instant::now();
    let mut parts = (1..processes)
        .map(|p| Part::start(&token, share, own + (p - 1) * share))
        .collect::<Result<Vec<_>>>()?;
    let devices = enroll_many(&token, own).await?;
    let agents = own;
    // A shared socket drops the replies of thousands of handshakes itself (its own
    // receive buffer), which the collector would be blamed for. Each agent's own
    // socket is on its own loopback address (127.0.0.0/8 is all local), as real
    // agents come from their own hosts: the collector bounds unauthenticated
    // connections per address, and one address for all would measure that bound.
    let endpoints = if shared_socket {
        vec![link::client_endpoint(&collector.quic)?]
    } else {
        agent_endpoints(0, agents)?
    };
    let baseline = collector.rss_kib().unwrap_or(0);
    let devices = connect_all(devices, &endpoints, collector.quic).await;
    for part in &mut parts {
        part.expect("connected")?;
    }
    let agents = own + share * (processes - 1);
    println!(
        "enrolled and connected {agents} agents from {processes} process(es) in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    let rss = collector.rss_kib().unwrap_or(0);
    println!(
        "idle: collector RSS {rss} KiB with {agents} agents (baseline {baseline} KiB) = {:.1} KiB per agent",
        (rss.saturating_sub(baseline)) as f64 / agents as f64
    );
    collector.kill9();
    let mut devices = devices;
    for d in &mut devices {
        d.session = None;
    }
    let restarted = Instant::now();
    let restarted_epoch = epoch_ms();
    collector.serve()?;
    for part in &mut parts {
        writeln!(part.stdin, "restarted {restarted_epoch}")?;
    }
    let since_restart = restarted.elapsed().as_millis() as u64;
    let (devices, mut times) = connect_all_timed(devices, &endpoints, collector.quic).await;
    times.iter_mut().for_each(|t| *t += since_restart);
    let last = restarted.elapsed().as_secs_f64();
    let mut back = devices.len();
    for part in &mut parts {
        for ms in part.expect("back")?.split_whitespace() {
            times.push(ms.parse()?);
        }
        back += share;
    }
    times.sort_unstable();
    let last = last.max(times.last().copied().unwrap_or(0) as f64 / 1000.0);
    let at = |p: f64| times[((times.len() as f64 * p).ceil() as usize).clamp(1, times.len()) - 1] as f64 / 1000.0;
    println!(
        "storm: all {back} agents reconnected {last:.1} s after the collector was restarted (kill -9, restart, jittered back-off from 100 ms to 2 s; {}; {processes} load-generator process(es))",
        if shared_socket {
            "one client socket for all"
        } else {
            "one client socket each"
        }
    );
    println!(
        "  back after the restart: p50 {:.1} s, p90 {:.1} s, p99 {:.1} s",
        at(0.5),
        at(0.9),
        at(0.99)
    );
    // What the restarted collector turned away meanwhile (agents retried each).
    let metrics = collector.metrics().await.unwrap_or_default();
    for line in metrics.lines().filter(|l| {
        (l.starts_with("ward_rejected") || l.starts_with("ward_quic_retries") || l.starts_with("ward_tls_resumptions"))
            && !l.ends_with(" 0")
    }) {
        println!("  {line}");
    }
    // Datagrams the kernel dropped on the collector's socket (its receive queue full).
    let port = format!(":{:04X}", collector.quic.port());
    if let Ok(table) = std::fs::read_to_string("/proc/net/udp") {
        for f in table.lines().skip(1).map(|l| l.split_whitespace().collect::<Vec<_>>()) {
            if f.get(1).is_some_and(|local| local.ends_with(&port)) {
                println!(
                    "  collector socket: {} datagrams dropped by the kernel",
                    f.last().unwrap_or(&"?")
                );
            }
        }
    }
    Ok(())
}

async fn idle(agents: usize) -> Result<()> {
    let collector = Collector::start()?;
    let token = collector.join_token(agents as u32, "1h")?;
    let devices = enroll_many(&token, agents).await?;

    // The limit first: the same devices on a bare quinn server.
    let mut bare = std::process::Command::new(std::env::current_exe()?)
        .arg("bare-server")
        .arg("--data-dir")
        .arg(collector.data_dir())
        .stdout(std::process::Stdio::piped())
        .spawn()?;
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(bare.stdout.take().expect("piped stdout")),
        &mut line,
    )?;
    let bare_addr: SocketAddr = format!("127.0.0.1:{}", line.trim()).parse()?;
    let bare_rss = || rss_of(bare.id()).unwrap_or(0);
    let endpoint = link::client_endpoint(&bare_addr)?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let bare_base = bare_rss();
    let mut held = Vec::new();
    for chunk in devices.chunks(200) {
        let tasks: Vec<_> = chunk
            .iter()
            .map(|d| {
                let e = d.identity.enrollment.clone();
                let key = d.identity.tls_key_pkcs8.clone();
                let endpoint = endpoint.clone();
                tokio::spawn(async move {
                    let config = link::tls::session_config(&e.ca_cert_der, &e.client_cert_der, &key).ok()?;
                    let conn = endpoint
                        .connect_with(config, bare_addr, &e.server_name)
                        .ok()?
                        .await
                        .ok()?;
                    let (mut send, recv) = conn.open_bi().await.ok()?;
                    send.write_all(b"hello").await.ok()?;
                    Some((conn, send, recv))
                })
            })
            .collect();
        for t in tasks {
            held.extend(t.await?);
        }
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let bare_per = bare_rss().saturating_sub(bare_base) as f64 / held.len().max(1) as f64;
    println!(
        "idle: bare quinn server RSS {} KiB with {} connections (baseline {bare_base} KiB) = {bare_per:.1} KiB per connection",
        bare_rss(),
        held.len()
    );
    drop(held);
    let _ = bare.kill();
    let _ = bare.wait();

    let endpoint = link::client_endpoint(&collector.quic)?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let baseline = collector.rss_kib().unwrap_or(0);
    let devices = connect_all(devices, std::slice::from_ref(&endpoint), collector.quic).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let rss = collector.rss_kib().unwrap_or(0);
    let per = (rss.saturating_sub(baseline)) as f64 / agents as f64;
    println!(
        "idle: collector RSS {rss} KiB with {} agents connected (baseline {baseline} KiB) = {per:.1} KiB per agent, {:.2}x the bare connection",
        devices.len(),
        per / bare_per
    );
    Ok(())
}

fn rss_of(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// The bare server of `idle`: the collector's server TLS and transport settings,
/// its certificate and CA, and nothing of the collector behind them.
async fn bare_server(data_dir: &std::path::Path) -> Result<()> {
    let (chain, key) = ward_collector::pki::server_identity(data_dir)?;
    let ca = ward_collector::pki::Ca::load(data_dir)?;
    let ticketer = ward_collector::transport::tickets::PersistentTicketer::open(data_dir, Default::default())?;
    let config = ward_collector::transport::tls::server_config(chain, key, &ca.cert_der, Arc::new(ticketer))?;
    let endpoint = quinn::Endpoint::server(config, "127.0.0.1:0".parse()?)?;
    println!("{}", endpoint.local_addr()?.port());
    while let Some(incoming) = endpoint.accept().await {
        tokio::spawn(async move {
            let Ok(conn) = incoming.await else { return };
            let Ok((_send, mut recv)) = conn.accept_bi().await else {
                return;
            };
            let mut buf = [0u8; 64];
            while let Ok(Some(_)) = recv.read(&mut buf).await {}
            drop(conn);
        });
    }
    Ok(())
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async {
        match cli.command {
            Scenario::Ingest {
                agents,
                alerts_per_agent,
                batch,
                flood,
            } => ingest(agents, alerts_per_agent, batch, flood).await,
            Scenario::Storm {
                agents,
                shared_socket,
                processes,
                udp_recv_buffer_bytes,
            } => storm(agents, shared_socket, processes, udp_recv_buffer_bytes).await,
            Scenario::StormPart { token, agents, first } => storm_part(&token, agents, first).await,
            Scenario::Idle { agents } => idle(agents).await,
            Scenario::BareServer { data_dir } => bare_server(&data_dir).await,
            Scenario::Correlate {
                agents,
                rate,
                seconds,
                batches_per_second,
            } => correlate(agents, rate, seconds, batches_per_second).await,
            Scenario::Restart {
                alerts,
                agents,
                batch,
                correlation_behind,
                idle_before_kill_ms,
            } => restart::restart(alerts, agents, batch, correlation_behind, idle_before_kill_ms).await,
        }
    })
}
