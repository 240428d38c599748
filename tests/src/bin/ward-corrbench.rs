//! Correlation benchmark (BENCHMARKS.md): a seeded generator of alerts over many
//! devices and users, correlated (1) by the engine alone on one core, and (2) by a
//! real collector tailing its alerts table, whose incident API is then timed.
//!
//!   cargo build --release -p ward-collector -p ward-tests
//!   target/release/ward-corrbench --alerts 1000000 --devices 10000 --users 20000
//!
//! Alerts span 365 days (80 per device a year on average): 80 % from devices (the device's user, sometimes a dropped
//! file's hash, a remote address; some system-binary hashes and DNS resolvers seen
//! everywhere, some connections from another device's address), 10 % risky
//! sign-ins (UPN, address), 10 % mail (recipient, sender, attachment hash). Device
//! alerts are stored as the collector's own (source `collector`, with a device id):
//! signing a million alerts over QUIC is the ingest benchmark's business, not this one's.
//! The end-to-end figure runs from the first insert until the collector's watermark
//! passes the last alert: it includes this process's inserts (transactions of the
//! writer's largest ingest round, its connection set as the writer sets its own) and
//! the collector's correlation and writes, which share SQLite's one write lock.
//! Settings: window 24 h, prevalence threshold 10.
//!
//! `--labelled [DIR]` measures grouping quality instead: the labelled corpus
//! (tests/fixtures/correlation) correlated by a collector store with the default
//! settings, scored by pairwise precision and recall (see its README).

#![allow(clippy::unwrap_used, clippy::expect_used)]

/// The collector's allocator, so the benchmark's inserts cost what the collector's do.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use clap::Parser;
use ward_collector::incidents::engine::{Engine, EngineConfig};
use ward_collector::incidents::keys::{KeyContext, KnownDevice};
use ward_collector::incidents::{STEP_ALERTS, alert_in};
use ward_collector::store::prelude::*;
use ward_collector::store::{AlertSource, SourcedAlert, Store, StoredAlert};
use ward_protocol::{Entity, Id128, RuleRef, Severity};
use ward_tests::Collector;
use ward_tests::procfs::{clock_ticks_per_sec, schedstat, stat_ticks, task_dir, thread_cpu};

#[derive(Parser)]
struct Cli {
    #[arg(long, default_value_t = 1_000_000)]
    alerts: u64,
    #[arg(long, default_value_t = 10_000)]
    devices: u64,
    #[arg(long, default_value_t = 20_000)]
    users: u64,
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Only the in-memory engine (no collector, no API).
    #[arg(long)]
    engine_only: bool,
    /// Requests per API measurement.
    #[arg(long, default_value_t = 2000)]
    requests: usize,
    /// Print a digest of everything the engine decided (links, merges, incident rows,
    /// prevalence), to check that a change to the engine keeps its results. Alert times
    /// then start at a fixed instant instead of a year before now, so runs compare.
    #[arg(long)]
    digest: bool,
    /// Grouping quality instead of speed: correlate the labelled corpus (default
    /// tests/fixtures/correlation) with the default settings and score it.
    #[arg(
        long,
        value_name = "DIR",
        num_args = 0..=1,
        default_missing_value = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/correlation")
    )]
    labelled: Option<std::path::PathBuf>,
    /// With `--labelled`: also write every alert's label, episode, device, time,
    /// incident and link reason, tab-separated in corpus order, to this file (to read
    /// why an alert was grouped as it was).
    #[arg(long, value_name = "FILE", requires = "labelled")]
    trace: Option<std::path::PathBuf>,
    /// After the API timings, restart the collector and time the first analyst write
    /// (a PATCH) against the engine's load from the store.
    #[arg(long)]
    restart: bool,
    /// Alerts per transaction of the benchmark's inserts; by default the most the
    /// collector's writer puts in one ingest round (`[ingest] writer_max_batch_alerts`).
    #[arg(long)]
    insert_batch: Option<u64>,
    /// The inserts' connection as SQLite's defaults leave it (2 MiB page cache, the
    /// log checkpointed inside its commits) instead of as the collector's writer sets
    /// its own (`[ingest] writer_cache_mib`, checkpoints on another thread): the
    /// first two rounds of BENCHMARKS.md measured that way.
    #[arg(long)]
    insert_defaults: bool,
    /// Correlation alone: store every alert with the collector stopped, then start it
    /// and time it from its start until it has correlated them all.
    #[arg(long)]
    preload: bool,
}

const DAY: u64 = 86_400_000;
const TACTICS: [&str; 14] = [
    "TA0043", "TA0042", "TA0001", "TA0002", "TA0003", "TA0004", "TA0005", "TA0006", "TA0007", "TA0008", "TA0009",
    "TA0011", "TA0010", "TA0040",
];

struct Gen {
    x: u64,
    devices: u64,
    users: u64,
    start_ms: u64,
    step_ms: u64,
}

impl Gen {
    fn next(&mut self, n: u64) -> u64 {
        // xorshift64*: seeded, fast, good enough to spread choices.
        self.x ^= self.x >> 12;
        self.x ^= self.x << 25;
        self.x ^= self.x >> 27;
        (self.x.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) % n.max(1)
    }

    fn hash(tag: u64, n: u64) -> [u8; 32] {
        let mut h = [0u8; 32];
        h[..8].copy_from_slice(&tag.to_le_bytes());
        h[8..16].copy_from_slice(&n.to_le_bytes());
        h[16] = 0xa5;
        h
    }

    fn device_id(d: u64) -> String {
        Id128::from_u128((1u128 << 100) | u128::from(d)).to_string()
    }

    fn device_address(d: u64) -> String {
        format!("10.{}.{}.{}", d / 65_536 % 256, d / 256 % 256, d % 256)
    }

    /// Alert number `i` (alerts come in time order).
    fn alert(&mut self, i: u64) -> SourcedAlert {
        let at = self.start_ms + i * self.step_ms;
        let u = self.next(self.users);
        let home = u % self.devices;
        let roams = u.is_multiple_of(20);
        let kind = self.next(100);
        let mut entities = Vec::new();
        let (source, device, title) = if kind < 80 {
            let d = if roams && self.next(2) == 0 {
                (home * 7 + 13) % self.devices
            } else {
                home
            };
            if self.next(10) == 0 {
                entities.push(Entity::User {
                    name: "root".into(),
                    uid: Some(0),
                });
            } else {
                entities.push(Entity::User {
                    name: format!("user{u:05}"),
                    uid: Some(1000 + (u % 5000) as u32),
                });
            }
            if self.next(100) < 40 {
                let h = if self.next(10) == 0 {
                    Self::hash(1, self.next(30)) // system binaries, on every device
                } else {
                    Self::hash(2, d * 32 + self.next(20))
                };
                entities.push(Entity::File {
                    path: format!("/tmp/f{}", self.next(1000)),
                    sha256: Some(h),
                });
            }
            let r = self.next(100);
            if r < 20 {
                // Mostly addresses seen once; one in twenty from a few popular services.
                let addr = if self.next(20) == 0 {
                    format!("203.0.113.{}", self.next(20))
                } else {
                    format!("100.{}.{}.{}", 64 + self.next(64), self.next(256), self.next(256))
                };
                entities.push(Entity::Ip {
                    addr: addr.parse().unwrap(),
                });
            } else if r < 25 {
                entities.push(Entity::Ip {
                    addr: format!("192.0.2.{}", 53 + self.next(4)).parse().unwrap(),
                });
            } else if self.next(1000) == 0 {
                let other = self.next(self.devices);
                entities.push(Entity::Ip {
                    addr: Self::device_address(other).parse().unwrap(),
                });
            }
            (
                AlertSource::Collector,
                Some(Self::device_id(d)),
                "Suspicious activity on a device",
            )
        } else if kind < 90 {
            entities.push(Entity::User {
                name: format!("user{u:05}@contoso.com"),
                uid: None,
            });
            // Mostly the user's usual address; sometimes one seen once.
            let addr = if self.next(10) == 0 {
                format!("100.{}.{}.{}", 64 + self.next(64), self.next(256), self.next(256))
            } else {
                format!("198.{}.{}.{}", 18 + u / 65_536, u / 256 % 256, u % 256)
            };
            entities.push(Entity::Ip {
                addr: addr.parse().unwrap(),
            });
            (AlertSource::Identity, None, "Risky sign-in")
        } else {
            // As the mailbox feed names them: the recipient as user and mailbox, the sender as mailbox.
            entities.push(Entity::User {
                name: format!("user{u:05}@contoso.com"),
                uid: None,
            });
            entities.push(Entity::Mailbox {
                address: format!("user{u:05}@contoso.com"),
            });
            // Senders: bulk senders (50, seen by many) or one-off ones; the sender's domain too.
            let (sender, domain) = if self.next(10) < 6 {
                let b = self.next(50);
                (format!("news@bulk{b}.example"), format!("bulk{b}.example"))
            } else {
                let d = self.next(1 << 40);
                (format!("s@x{d}.example"), format!("x{d}.example"))
            };
            entities.push(Entity::Mailbox { address: sender });
            entities.push(Entity::Domain { name: domain });
            // Attachments: half one-off, half from 200 campaigns that hit many users.
            let h = if self.next(2) == 0 {
                Self::hash(3, self.next(200))
            } else {
                Self::hash(4, self.next(1 << 40))
            };
            entities.push(Entity::File {
                path: "invoice.docm".into(),
                sha256: Some(h),
            });
            (AlertSource::Mailbox, None, "Malicious attachment delivered")
        };
        let severity = Severity::ALL[self.next(5) as usize];
        let mut tactics = vec![TACTICS[self.next(14) as usize].to_string()];
        if self.next(3) == 0 {
            tactics.push(TACTICS[self.next(14) as usize].to_string());
        }
        SourcedAlert {
            id: Id128::from_u128((u128::from(at) << 80) | u128::from(i)).to_string(),
            source,
            device_id: device,
            observed_at_ms: at,
            last_observed_at_ms: at,
            rule: RuleRef {
                id: format!("bench-{}", self.next(40)),
                title: title.into(),
                author: "bench".into(),
                severity,
                techniques: vec![],
                tactics,
            },
            entities,
            count: 1,
            matched: serde_json::Map::new(),
        }
    }
}

fn stored(i: u64, a: &SourcedAlert) -> StoredAlert {
    StoredAlert {
        rowid: i as i64 + 1,
        id: a.id.clone(),
        device_id: a.device_id.clone(),
        at_ms: a.observed_at_ms,
        received_ms: a.observed_at_ms,
        severity: a.rule.severity,
        tactics: a.rule.tactics.clone(),
        source: a.source.as_str().to_string(),
        title: a.rule.title.clone(),
        entities: a.entities.clone(),
    }
}

fn rss_kib(pid: &str, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(field))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

fn generator(cli: &Cli) -> Gen {
    let span = 365 * DAY;
    let start_ms = if cli.digest {
        1_600_000_000_000
    } else {
        ward_tests::now_ms() - span - 60_000
    };
    Gen {
        x: cli.seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1,
        devices: cli.devices,
        users: cli.users,
        start_ms,
        step_ms: (span / cli.alerts.max(1)).max(1),
    }
}

fn known_devices(n: u64) -> Vec<KnownDevice> {
    (0..n)
        .map(|d| KnownDevice {
            id: Gen::device_id(d),
            hostname: format!("host-{d:05}"),
            addresses: vec![Gen::device_address(d).parse().unwrap()],
        })
        .collect()
}

/// The engine alone, one core: key derivation and correlation of every alert.
fn engine_run(cli: &Cli) {
    let mut g = generator(cli);
    let ctx = KeyContext::new(HashMap::new(), known_devices(cli.devices));
    let defaults = ward_collector::config::CorrelationConfig::default();
    let mut engine = Engine::new(EngineConfig {
        window_ms: DAY,
        prevalence_threshold: 10,
        proximity_ms: defaults.device_proximity_ms,
        max_span_ms: defaults.max_span_ms,
    });
    let rss_before = rss_kib("self", "VmRSS:");
    let mut busy = Duration::ZERO;
    let mut cpu = Duration::ZERO;
    let (mut links, mut merges, mut created) = (0u64, 0u64, 0u64);
    let mut digest = std::collections::hash_map::DefaultHasher::new();
    let mut i = 0;
    while i < cli.alerts {
        let n = u64::from(STEP_ALERTS).min(cli.alerts - i);
        let batch: Vec<StoredAlert> = (i..i + n).map(|k| stored(k, &g.alert(k))).collect();
        let t = Instant::now();
        let c = thread_cpu();
        for a in batch {
            let skew = defaults.max_clock_skew_ms;
            if let Some(l) = engine.correlate(&alert_in(&ctx, a, skew)) {
                created += u64::from(l.created);
            }
        }
        let changes = engine.take_changes();
        cpu += thread_cpu().saturating_sub(c);
        busy += t.elapsed();
        links += changes.links.len() as u64;
        merges += changes.merges.len() as u64;
        if cli.digest {
            digest_changes(&mut digest, &changes);
        }
        i += n;
    }
    println!(
        "engine: {} alerts in {:.2} s wall = {:.0} alerts/s; {:.2} s of one core's CPU = {:.0} alerts per CPU-second; {created} incidents opened, {merges} merged, {} in memory at the end",
        links,
        busy.as_secs_f64(),
        cli.alerts as f64 / busy.as_secs_f64(),
        cpu.as_secs_f64(),
        cli.alerts as f64 / cpu.as_secs_f64().max(1e-9),
        engine.incident_count()
    );
    println!(
        "engine memory: RSS {:.1} MiB before, peak {:.1} MiB (VmHWM; includes the generator's batch)",
        rss_before as f64 / 1024.0,
        rss_kib("self", "VmHWM:") as f64 / 1024.0
    );
    if cli.digest {
        use std::hash::Hasher;
        println!("engine digest: {:016x}", digest.finish());
    }
}

/// Feeds what the engine decided into a hash, in an order that does not depend on
/// how the engine keeps its tables.
fn digest_changes(h: &mut impl std::hash::Hasher, c: &ward_collector::incidents::engine::Changes) {
    use std::hash::Hash;
    for l in &c.links {
        (
            l.alert_rowid,
            l.alert_id.to_string(),
            l.incident_id.to_string(),
            l.reason.to_string(),
            l.created,
        )
            .hash(h);
    }
    for m in &c.merges {
        (m.from.to_string(), m.into.to_string(), m.reason.to_string()).hash(h);
    }
    let mut rows: Vec<_> = c
        .merged_away
        .iter()
        .map(|r| (0, r))
        .chain(c.incidents.iter().map(|r| (1, r)))
        .collect();
    rows.sort_by_key(|(n, r)| (*n, r.id.to_string()));
    for (n, r) in rows {
        (
            n,
            r.id.to_string(),
            r.seq,
            r.title.to_string(),
            r.severity as u8,
            r.alert_severity as u8,
        )
            .hash(h);
        (r.sources.iter().map(|s| s.to_string()).collect::<Vec<_>>(), &r.tactics).hash(h);
        (
            r.first_title.to_string(),
            r.several_titles,
            r.first_ms,
            r.last_ms,
            r.alert_count,
        )
            .hash(h);
        (r.devices, r.users, r.mailboxes).hash(h);
        let mut keys: Vec<_> = r
            .keys
            .iter()
            .map(|k| {
                let via = k.via.as_deref().map(str::to_string);
                (
                    k.key.to_string(),
                    k.kind as u8,
                    k.label().to_string(),
                    via,
                    k.first_ms,
                    k.last_ms,
                    k.last_alert.to_string(),
                )
            })
            .collect();
        keys.sort();
        keys.hash(h);
    }
    let mut prevalence: Vec<_> = c
        .prevalence
        .iter()
        .map(|(k, d)| (k.to_string(), d.iter().map(|s| s.to_string()).collect::<Vec<_>>()))
        .collect();
    prevalence.sort();
    prevalence.hash(h);
}

fn percentile(mut v: Vec<Duration>, p: f64) -> Duration {
    v.sort();
    let i = ((v.len() as f64 * p).ceil() as usize).saturating_sub(1);
    v.get(i.min(v.len().saturating_sub(1))).copied().unwrap_or_default()
}

async fn time_get(client: &reqwest::Client, url: &str, token: &str) -> Result<(Duration, serde_json::Value)> {
    let t = Instant::now();
    let resp = client.get(url).bearer_auth(token).send().await?;
    let status = resp.status();
    let body: serde_json::Value = resp.json().await?;
    let took = t.elapsed();
    if !status.is_success() {
        bail!("{url}: {status} {body}");
    }
    Ok((took, body))
}

/// A real collector correlating everything from its store, then its incident API timed.
async fn collector_run(cli: &Cli) -> Result<()> {
    let mut collector = Collector::start()?;
    let db = collector.data_dir().join("ward.db");
    let mut store = Store::open(&db)?;
    {
        let conn = rusqlite::Connection::open(&db)?;
        conn.busy_timeout(Duration::from_secs(30))?;
        conn.execute_batch("BEGIN")?;
        for d in known_devices(cli.devices) {
            conn.execute(
                "INSERT INTO devices (id, hostname, signing_key, cert_sha256, enrolled_at_ms, addresses)
                 VALUES (?1, ?2, x'00', ?3, 0, ?4)",
                rusqlite::params![d.id, d.hostname, d.id.as_bytes(), format!("[\"{}\"]", d.addresses[0])],
            )?;
        }
        conn.execute_batch("COMMIT")?;
    }
    if !cli.insert_defaults {
        // As the collector's writer sets its connection (`ingest::Writer::start`).
        let ingest = ward_collector::config::Config::default().ingest;
        store.become_writer(ward_collector::store::Fold::OFF, ingest.writer_cache_mib)?;
    }
    let insert_batch = cli
        .insert_batch
        .unwrap_or_else(|| ward_collector::config::Config::default().ingest.writer_max_batch_alerts as u64);
    if cli.preload {
        collector.stop()?;
    }
    let mut g = generator(cli);
    let mut started = Instant::now();
    let mut insert_cpu = Duration::ZERO;
    let mut i = 0;
    while i < cli.alerts {
        let n = insert_batch.max(1).min(cli.alerts - i);
        let batch: Vec<SourcedAlert> = (i..i + n).map(|k| g.alert(k)).collect();
        let c = thread_cpu();
        store.insert_sourced_alerts(&batch, ward_tests::now_ms())?;
        insert_cpu += thread_cpu().saturating_sub(c);
        i += n;
    }
    let written = started.elapsed();
    println!(
        "stored {} alerts in {:.1} s in transactions of {} (the collector correlating meanwhile); the inserts' CPU {:.2} s = {:.1} us per alert",
        cli.alerts,
        written.as_secs_f64(),
        insert_batch,
        insert_cpu.as_secs_f64(),
        insert_cpu.as_secs_f64() * 1e6 / cli.alerts.max(1) as f64
    );
    if cli.preload {
        drop(store);
        started = Instant::now();
        collector.serve()?;
    }
    let max_rowid: i64 = store_query(&db, "SELECT MAX(rowid) FROM alerts")?;
    loop {
        let w: i64 = store_query(
            &db,
            "SELECT COALESCE(MAX(value), 0) FROM correlation_state WHERE name = 'watermark'",
        )?;
        if w >= max_rowid {
            break;
        }
        if started.elapsed() > Duration::from_secs(3600) {
            bail!("correlation did not finish within an hour ({w} of {max_rowid})");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let total = started.elapsed();
    let pid = collector.pid().map(|p| p.to_string()).unwrap_or_default();
    let incidents: i64 = store_query(&db, "SELECT COUNT(*) FROM incidents WHERE status <> 'redirected'")?;
    if cli.preload {
        println!(
            "collector: {} alerts correlated in {:.1} s from its start = {:.0} alerts/s, correlation alone (alerts stored before it started); {incidents} incidents; collector peak RSS {:.1} MiB",
            cli.alerts,
            total.as_secs_f64(),
            cli.alerts as f64 / total.as_secs_f64(),
            rss_kib(&pid, "VmHWM:") as f64 / 1024.0
        );
    } else {
        println!(
            "collector: {} alerts stored and correlated in {:.1} s = {:.0} alerts/s end to end (store writes in this process, correlation in the collector); {incidents} incidents; collector peak RSS {:.1} MiB",
            cli.alerts,
            total.as_secs_f64(),
            cli.alerts as f64 / total.as_secs_f64(),
            rss_kib(&pid, "VmHWM:") as f64 / 1024.0
        );
    }
    if let Some(cpu) = writer_cpu(&pid) {
        println!(
            "collector writer thread CPU: {:.1} s = {:.1} us per alert; {:.1} s runnable but waiting for a core (schedstat: other load on the machine)",
            cpu.as_secs_f64(),
            cpu.as_secs_f64() * 1e6 / cli.alerts as f64,
            writer_waited(&pid).unwrap_or_default().as_secs_f64()
        );
    }

    let client = ward_tests::http_client();
    let base = format!("http://{}", collector.http);
    let token = collector.admin_token.clone();
    let (_, first) = time_get(&client, &format!("{base}/api/v1/incidents"), &token).await?;
    let cursor = first["next_cursor"].as_str().unwrap_or_default().to_string();
    let page2 = if cursor.is_empty() {
        "/api/v1/incidents?limit=10".to_string()
    } else {
        format!("/api/v1/incidents?cursor={cursor}")
    };
    let lists = [
        "/api/v1/incidents".to_string(),
        "/api/v1/incidents?sort=severity".into(),
        "/api/v1/incidents?status=active,in_progress&severity=high".into(),
        "/api/v1/incidents?tactic=TA0002".into(),
        "/api/v1/incidents?source=mailbox".into(),
        page2,
    ];
    let mut g2 = generator(cli);
    let mut list_times = Vec::new();
    let mut per_mix: Vec<Vec<Duration>> = vec![Vec::new(); 8];
    for k in 0..cli.requests {
        let path = match k % 8 {
            6 => format!("/api/v1/incidents?user=user{:05}", g2.next(cli.users)),
            7 => format!("/api/v1/incidents?device=host-{:05}", g2.next(cli.devices)),
            n => lists[n].clone(),
        };
        let t = time_get(&client, &format!("{base}{path}"), &token).await?.0;
        per_mix[k % 8].push(t);
        list_times.push(t);
    }
    for (n, times) in per_mix.into_iter().enumerate() {
        let name = match n {
            6 => "?user=<random user>".to_string(),
            7 => "?device=<random hostname>".to_string(),
            n => lists[n].trim_start_matches("/api/v1/incidents").to_string(),
        };
        println!(
            "  list {name:40} p50 {:.1} ms, p99 {:.1} ms",
            percentile(times.clone(), 0.5).as_secs_f64() * 1e3,
            percentile(times, 0.99).as_secs_f64() * 1e3
        );
    }
    let ids: Vec<String> = {
        let conn = rusqlite::Connection::open_with_flags(&db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
        let mut stmt = conn.prepare("SELECT id FROM incidents WHERE status <> 'redirected' ORDER BY id")?;
        stmt.query_map([], |r| r.get(0))?.collect::<Result<_, _>>()?
    };
    let mut detail_times = Vec::new();
    let mut biggest = 0;
    for _ in 0..cli.requests {
        let id = &ids[g2.next(ids.len() as u64) as usize];
        let (t, body) = time_get(&client, &format!("{base}/api/v1/incidents/{id}"), &token).await?;
        biggest = biggest.max(body["alerts"].as_array().map_or(0, Vec::len));
        detail_times.push(t);
    }
    println!(
        "GET /api/v1/incidents (8 filter mixes, {} requests): p50 {:.1} ms, p99 {:.1} ms",
        list_times.len(),
        percentile(list_times.clone(), 0.5).as_secs_f64() * 1e3,
        percentile(list_times, 0.99).as_secs_f64() * 1e3
    );
    println!(
        "GET /api/v1/incidents/{{id}} (random incidents, {} requests, largest page {biggest} alerts): p50 {:.1} ms, p99 {:.1} ms",
        detail_times.len(),
        percentile(detail_times.clone(), 0.5).as_secs_f64() * 1e3,
        percentile(detail_times, 0.99).as_secs_f64() * 1e3
    );
    if cli.restart {
        restart_run(collector, &client, &ids, cli.alerts).await?;
    }
    Ok(())
}

/// Restarts the collector and times its first analyst write (a PATCH of one
/// incident) from the moment it listens, and how long until the correlation engine
/// is loaded (its first step moved the backlog gauge; every alert is correlated,
/// so the engine only has to load).
async fn restart_run(mut collector: Collector, client: &reqwest::Client, ids: &[String], alerts: u64) -> Result<()> {
    let Some(id) = ids.first() else {
        bail!("no incident to patch");
    };
    collector.stop()?;
    let t = Instant::now();
    collector.serve()?;
    let listening = t.elapsed();
    let base = format!("http://{}", collector.http);
    let p = Instant::now();
    let resp = client
        .patch(format!("{base}/api/v1/incidents/{id}"))
        .bearer_auth(&collector.admin_token)
        .json(&serde_json::json!({"tags": ["restart-bench"]}))
        .send()
        .await?;
    let status = resp.status();
    let patched = p.elapsed();
    if !status.is_success() {
        bail!("PATCH after restart: {status} {}", resp.text().await?);
    }
    // The engine is in place when the writer thread has done its install and the
    // load's CPU shows on the reading thread; the writer's own CPU says whether the
    // load ran there instead.
    let pid = collector.pid().map(|p| p.to_string()).unwrap_or_default();
    tokio::time::sleep(Duration::from_secs(5)).await;
    println!(
        "restart with {alerts} alerts: listening after {:.0} ms; first PATCH {:.0} ms after that; writer thread CPU in the 5 s after: {:.0} ms",
        listening.as_secs_f64() * 1e3,
        patched.as_secs_f64() * 1e3,
        writer_cpu(&pid).unwrap_or_default().as_secs_f64() * 1e3
    );
    Ok(())
}

fn store_query(db: &std::path::Path, sql: &str) -> Result<i64> {
    let conn = rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    conn.busy_timeout(Duration::from_secs(10))?;
    Ok(conn.query_row(sql, [], |r| r.get(0))?)
}

/// `--labelled`: the labelled corpus's grouping scores (tests/fixtures/correlation/README.md).
fn labelled_run(dir: &std::path::Path, trace: Option<&std::path::Path>) -> Result<()> {
    let corpus = ward_tests::corpus::Corpus::load(dir)?;
    if let Some(path) = trace {
        use std::fmt::Write;
        let outcome = ward_tests::corpus::correlate(&corpus, ward_tests::corpus::settings(), |_| true)?;
        let mut out = String::from("label\tepisode\tdevice\tobserved\tincident\treason\n");
        for ((r, inc), why) in corpus.records.iter().zip(&outcome.incident).zip(&outcome.reason) {
            let _ = writeln!(
                out,
                "{}\t{}\t{}\t{}\t{}\t{}",
                r.label,
                r.episode,
                r.device.as_deref().unwrap_or("-"),
                ward_collector::util::show_ms(r.alert.observed_at_ms),
                inc.as_deref().unwrap_or("-"),
                why.as_deref().unwrap_or("-")
            );
        }
        std::fs::write(path, out)?;
    }
    let started = Instant::now();
    let report = ward_tests::corpus::evaluate(&corpus)?;
    print!("{}", report.render(&corpus));
    println!(
        "({} correlated twice, with and without the skewed device, in {:.1} s)",
        dir.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    if let Some(dir) = &cli.labelled {
        return labelled_run(dir, cli.trace.as_deref());
    }
    engine_run(&cli);
    if cli.engine_only {
        return Ok(());
    }
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?
        .block_on(collector_run(&cli))
}

/// CPU time (user + system) of the collector's `ward-writer` thread so far.
fn writer_cpu(pid: &str) -> Option<Duration> {
    let ticks = stat_ticks(&task_dir(pid, "ward-writer")?.join("stat"))?;
    Some(Duration::from_secs_f64(ticks as f64 / clock_ticks_per_sec()))
}

/// How long the `ward-writer` thread was ready to run but waited for a core.
fn writer_waited(pid: &str) -> Option<Duration> {
    schedstat(&task_dir(pid, "ward-writer")?).map(|(_, waited)| waited)
}
