//! The ingest writer's own cap (BENCHMARKS.md, "Collector ingest"): signed alerts
//! are verified first (the collector's `verify_batch`, timed on this thread: the
//! verify pool's cost per alert), then handed to the collector's `Writer` in
//! batches from many devices at once, as sessions hand them over, with no network,
//! no verification and no correlation in the way. The writer thread's CPU per alert
//! is the figure: one core's worth of it is the most alerts per second ingest can
//! commit, however many cores verify.
//!
//!   cargo build --release -p ward-tests --bin ward-writerbench
//!   target/release/ward-writerbench --devices 100 --alerts-per-device 3000

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use clap::Parser;
use ring::rand::SystemRandom;
use ward_collector::ingest::verify::verify_batch;
use ward_collector::ingest::writer::Writer;
use ward_collector::store::prelude::*;
use ward_collector::store::{Fold, NewDevice, Store, VerifiedAlert};
use ward_protocol::{DeviceId, Id128, Inventory, SigningKey};
use ward_tests::procfs::{loadavg, schedstat, task_dir, thread_cpu};

/// The collector's allocator (SQLite's too, through the override).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
struct Cli {
    #[arg(long, default_value_t = 100)]
    devices: usize,
    #[arg(long, default_value_t = 3000)]
    alerts_per_device: usize,
    /// Alerts per batch, as an agent sends them.
    #[arg(long, default_value_t = 250)]
    batch: usize,
    /// `[ingest] writer_max_batch_alerts`.
    #[arg(long, default_value_t = 8192)]
    max_round_alerts: usize,
    /// `[ingest] fold_window_ms` (0: folding off).
    #[arg(long, default_value_t = 300_000)]
    fold_window_ms: u64,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let dir = tempfile::tempdir()?;
    let db = dir.path().join("ward.db");
    let rng = SystemRandom::new();

    // Devices enrolled straight into the store, each with its own signing key.
    let mut devices = Vec::with_capacity(cli.devices);
    {
        let mut store = Store::open(&db)?;
        store.create_enroll_token(&[1; 32], cli.devices as u32, 0, u64::MAX / 2)?;
        for n in 0..cli.devices {
            let (key, _) = SigningKey::generate(&rng).map_err(|e| anyhow::anyhow!("key: {e:?}"))?;
            let id = DeviceId(Id128::from_u128(((n as u128) + 1) << 64));
            let mut cert = [0u8; 32];
            cert[..8].copy_from_slice(&(n as u64).to_le_bytes());
            let device = NewDevice {
                id,
                signing_key: key.public_key(),
                cert_sha256: cert,
                inventory: Inventory {
                    hostname: format!("sim-{n}"),
                    os: "Test OS".into(),
                    kernel: "6.1".into(),
                    addresses: vec!["192.0.2.10".into()],
                    logged_on_users: vec!["alice".into()],
                    agent_version: "test".into(),
                },
            };
            if store.enroll(&[1; 32], &device, 1)?.is_err() {
                bail!("enrollment refused");
            }
            devices.push((id, key));
        }
    }

    // Signed, then verified as the verify pool does (its CPU per alert printed).
    let total = cli.devices * cli.alerts_per_device;
    println!("signing {total} alerts");
    let mut signed = Vec::with_capacity(cli.devices);
    for (id, key) in &devices {
        let batches: Vec<Vec<ward_protocol::Signed>> = (1..=cli.alerts_per_device as u64)
            .map(|seq| {
                let alert = ward_tests::test_alert(*id, seq);
                key.sign_value(ward_protocol::SignatureKind::Alert, &alert)
                    .expect("encode")
            })
            .collect::<Vec<_>>()
            .chunks(cli.batch)
            .map(<[_]>::to_vec)
            .collect();
        signed.push((*id, key.public_key(), batches));
    }
    let verify_started = thread_cpu();
    let mut work: Vec<(DeviceId, Vec<Vec<VerifiedAlert>>)> = Vec::with_capacity(cli.devices);
    for (id, key, batches) in signed {
        let verified = batches
            .into_iter()
            .map(|b| verify_batch(id, &key, b).map_err(|e| anyhow::anyhow!("{e}")))
            .collect::<Result<Vec<_>>>()?;
        work.push((id, verified));
    }
    let verify_cpu = thread_cpu().saturating_sub(verify_started);

    let fold = Fold {
        window_ms: cli.fold_window_ms,
        max_span_ms: 3_600_000,
    };
    let metrics: Arc<ward_collector::metrics::Metrics> = Arc::default();
    let (writer, thread) = Writer::start(&db, cli.max_round_alerts, fold, 256, Arc::clone(&metrics))?;
    // A thread takes its name itself once it runs: wait for it, or its CPU is not found.
    let named = Instant::now();
    while task_dir("self", "ward-writer").is_none() || task_dir("self", "ward-checkpoint").is_none() {
        if named.elapsed() > Duration::from_secs(5) {
            bail!("no ward-writer or ward-checkpoint thread");
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let (before, wall) = rt.block_on(async {
        let before = (
            task_cpu("ward-writer"),
            task_cpu("ward-checkpoint"),
            task_waited("ward-writer"),
            written_bytes(),
        );
        let started = Instant::now();
        let mut tasks = Vec::new();
        for (id, batches) in work {
            let writer = writer.clone();
            tasks.push(tokio::spawn(async move {
                let mut stored = 0u64;
                for b in batches {
                    let outcome = writer.store_alerts(id, b).await.map_err(|e| e.error)?;
                    stored += u64::from(outcome.stored);
                }
                Ok::<_, ward_collector::ingest::WriteError>(stored)
            }));
        }
        let mut stored = 0;
        for t in tasks {
            stored += t.await??;
        }
        if stored as usize != total {
            bail!("{stored} alerts stored of {total}");
        }
        Ok::<_, anyhow::Error>((before, started.elapsed()))
    })?;
    let writer_cpu = task_cpu("ward-writer").context("writer thread")? - before.0.context("writer thread")?;
    let checkpoint_cpu = task_cpu("ward-checkpoint")
        .zip(before.1)
        .map(|(a, b)| a.saturating_sub(b))
        .unwrap_or_default();
    let waited = task_waited("ward-writer")
        .zip(before.2)
        .map(|(a, b)| a.saturating_sub(b))
        .unwrap_or_default();
    let written = written_bytes().saturating_sub(before.3);
    let rendered = metrics.render();
    let metric = |name: &str| {
        rendered
            .lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let (rounds, in_rounds) = (
        metric("ward_batch_commit_seconds_count"),
        metric("ward_batch_commit_seconds_sum"),
    );
    drop(writer);
    thread.join().map_err(|_| anyhow::anyhow!("writer thread panicked"))?;
    let db_bytes = database_bytes(&db)?;

    let per = |d: Duration| d.as_secs_f64() * 1e6 / total as f64;
    println!(
        "verify (one thread, batches of {}): {:.1} us per alert",
        cli.batch,
        per(verify_cpu)
    );
    println!(
        "writer: {total} alerts from {} devices in {:.2} s = {:.0} alerts/s committed (synchronous=FULL, rounds of up to {})",
        cli.devices,
        wall.as_secs_f64(),
        total as f64 / wall.as_secs_f64(),
        cli.max_round_alerts
    );
    println!(
        "writer thread CPU: {:.2} s = {:.1} us per alert, a cap of {:.0} alerts/s on one core; checkpoint thread {:.1} us per alert; load average {}",
        writer_cpu.as_secs_f64(),
        per(writer_cpu),
        1e6 / per(writer_cpu),
        per(checkpoint_cpu),
        loadavg()
    );
    println!(
        "writer: {rounds:.0} rounds, {in_rounds:.2} s inside them (insert and commit); {:.2} s runnable but waiting for a core; {:.0} bytes written to storage per alert (this process, /proc/self/io)",
        waited.as_secs_f64(),
        written as f64 / total as f64
    );
    println!(
        "database: {} bytes after a checkpoint = {:.0} bytes per alert stored; the alerts table {:.0}, its id index {:.0}",
        db_bytes.0,
        db_bytes.0 as f64 / total as f64,
        db_bytes.1 as f64 / total as f64,
        db_bytes.2 as f64 / total as f64
    );
    Ok(())
}

/// The database's size once its log is checkpointed into it (pages in use and
/// free), and of it the pages of the alerts table and of its unique index on `id`.
fn database_bytes(db: &std::path::Path) -> Result<(u64, u64, u64)> {
    let conn = rusqlite::Connection::open(db)?;
    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
    let pages: i64 = conn.query_row("PRAGMA page_count", [], |r| r.get(0))?;
    let size: i64 = conn.query_row("PRAGMA page_size", [], |r| r.get(0))?;
    let (table, id_index): (i64, i64) = conn.query_row(
        "SELECT (SELECT SUM(pgsize) FROM dbstat WHERE name = 'alerts'),
                (SELECT SUM(pgsize) FROM dbstat WHERE name IN
                    (SELECT name FROM sqlite_master WHERE tbl_name = 'alerts' AND name LIKE 'sqlite_autoindex_%'))",
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    let bytes = |n: i64| u64::try_from(n).unwrap_or(0);
    Ok((bytes(pages * size), bytes(table), bytes(id_index)))
}

/// Bytes this process has caused to be written to storage.
fn written_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/io")
        .ok()
        .and_then(|io| {
            io.lines()
                .find_map(|l| l.strip_prefix("write_bytes:"))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0)
}

/// CPU time of this process's thread named `name`.
fn task_cpu(name: &str) -> Option<Duration> {
    schedstat(&task_dir("self", name)?).map(|(on_cpu, _)| on_cpu)
}

/// How long this process's thread named `name` was runnable but waited for a core.
fn task_waited(name: &str) -> Option<Duration> {
    schedstat(&task_dir("self", name)?).map(|(_, waited)| waited)
}
