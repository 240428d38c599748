//! `ward-loadgen restart`: how soon a restarted collector acknowledges alerts when
//! its database is large (issue 19 item 5). The limit beside it is the same figure
//! measured in the same run on the same collector while its database was empty:
//! what the handshake and one durable commit cost with nothing to load.

use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use ward_agent::link;
use ward_protocol::Signed;
use ward_tests::{Collector, TestDevice};

use super::{connect_all, enroll_many, unthrottled};

/// Batches the probe sends after its first, one after the other, to show the
/// acknowledgements settle.
const FOLLOWING_BATCHES: usize = 10;

pub async fn restart(
    alerts: usize,
    agents: usize,
    batch: usize,
    correlation_behind: bool,
    idle_before_kill_ms: u64,
) -> Result<()> {
    let agents = agents.max(1);
    let mut collector = Collector::start_with(unthrottled)?;
    let token = collector.join_token(agents as u32 + 1, "1h")?;
    let mut probe = TestDevice::enroll(&token, "restart-probe").await?;
    let empty = restart_and_probe(&mut collector, &mut probe).await?;
    println!("restart with an empty database: {empty}");

    let devices = enroll_many(&token, agents).await?;
    let per_agent = alerts.div_ceil(agents);
    println!("enrolled {agents} agents; signing {} alerts", per_agent * agents);
    let (devices, work) = sign_all(devices, per_agent)?;
    let endpoint = link::client_endpoint(&collector.quic)?;
    let devices = connect_all(devices, std::slice::from_ref(&endpoint), collector.quic).await;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (mut d, signed) in devices.into_iter().zip(work) {
        tasks.push(tokio::spawn(async move {
            for chunk in signed.chunks(batch) {
                d.send_batch(chunk.to_vec()).await?;
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let stored: i64 = collector
        .db()?
        .query_row("SELECT COUNT(*) FROM alerts", [], |r| r.get(0))?;
    println!("stored {stored} alerts in {:.1} s", started.elapsed().as_secs_f64());
    if correlation_behind {
        let linked = linked(&collector)?;
        println!("killing the collector with {linked} of {stored} alerts correlated");
    } else {
        wait_correlated(&collector, stored).await?;
        println!(
            "all {stored} alerts correlated after {:.1} s",
            started.elapsed().as_secs_f64()
        );
    }
    tokio::time::sleep(Duration::from_millis(idle_before_kill_ms)).await;
    let size = |file: &str| std::fs::metadata(collector.data_dir().join(file)).map_or(0, |m| m.len());
    let (db_bytes, log_bytes) = (size("ward.db"), size("ward.db-wal"));
    let full = restart_and_probe(&mut collector, &mut probe).await?;
    println!(
        "restart with {stored} alerts ({:.0} MiB database, {:.1} MiB write-ahead log at the kill, {idle_before_kill_ms} ms idle before it{}): {full}",
        db_bytes as f64 / 1_048_576.0,
        log_bytes as f64 / 1_048_576.0,
        if correlation_behind { ", correlation behind" } else { "" }
    );
    println!(
        "first acknowledgement after the restart: {} ms with {stored} alerts against {} ms with none (ratio {:.2})",
        full.first_ack.as_millis(),
        empty.first_ack.as_millis(),
        full.first_ack.as_secs_f64() / empty.first_ack.as_secs_f64().max(1e-6)
    );
    Ok(())
}

/// One restart's timings, from the restart (the `serve` process started).
struct Probe {
    listening: Duration,
    first_ack: Duration,
    /// The acknowledgement times of the batches after the first (each from its send).
    following: Vec<Duration>,
}

impl std::fmt::Display for Probe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut following = self.following.clone();
        following.sort_unstable();
        let median = following.get(following.len() / 2).copied().unwrap_or_default();
        let max = following.last().copied().unwrap_or_default();
        write!(
            f,
            "listening after {} ms, first batch acknowledged {} ms after the restart ({} ms after listening); the next {} batches acknowledged in {:.1} ms median, {:.1} ms max",
            self.listening.as_millis(),
            self.first_ack.as_millis(),
            self.first_ack.saturating_sub(self.listening).as_millis(),
            following.len(),
            median.as_secs_f64() * 1000.0,
            max.as_secs_f64() * 1000.0
        )
    }
}

/// `kill -9`, restart, and time the probe device's first acknowledged one-alert
/// batch (its connection and handshake included, as an agent's would be).
async fn restart_and_probe(collector: &mut Collector, probe: &mut TestDevice) -> Result<Probe> {
    // Signed before the clock starts, as an agent's outbox holds them.
    let alerts: Vec<Signed> = (0..=FOLLOWING_BATCHES)
        .map(|_| {
            let a = probe.next_alert();
            probe.sign(&a)
        })
        .collect();
    collector.kill9();
    probe.session = None;
    let restarted = Instant::now();
    collector.serve()?;
    let listening = restarted.elapsed();
    let endpoint = link::client_endpoint(&collector.quic)?;
    loop {
        match probe.connect_on(&endpoint, collector.quic).await {
            Ok(()) => break,
            // Not accepting yet: try again soon (an agent backs off; this measures when it could).
            Err(_) if restarted.elapsed() < Duration::from_secs(30) => {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Err(e) => bail!("the probe could not connect within 30 s: {e}"),
        }
    }
    let mut alerts = alerts.into_iter();
    let first = alerts.next().context("an alert")?;
    probe.send_batch(vec![first]).await?;
    let first_ack = restarted.elapsed();
    let mut following = Vec::new();
    for alert in alerts {
        let sent = Instant::now();
        probe.send_batch(vec![alert]).await?;
        following.push(sent.elapsed());
    }
    Ok(Probe {
        listening,
        first_ack,
        following,
    })
}

/// Every device's alerts signed up front, on every core (signing 1,000,000 takes
/// half a minute on one).
fn sign_all(devices: Vec<TestDevice>, per_agent: usize) -> Result<(Vec<TestDevice>, Vec<Vec<Signed>>)> {
    let threads = std::thread::available_parallelism().map_or(1, usize::from);
    let chunk = devices.len().div_ceil(threads);
    let mut devices = devices;
    let mut work: Vec<Vec<Signed>> = Vec::with_capacity(devices.len());
    std::thread::scope(|s| {
        let handles: Vec<_> = devices
            .chunks_mut(chunk)
            .map(|part| {
                s.spawn(move || {
                    part.iter_mut()
                        .map(|d| {
                            (0..per_agent)
                                .map(|_| {
                                    let a = d.next_alert();
                                    d.sign(&a)
                                })
                                .collect::<Vec<_>>()
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        for h in handles {
            work.extend(h.join().map_err(|_| anyhow::anyhow!("a signing thread panicked"))?);
        }
        anyhow::Ok(())
    })?;
    Ok((devices, work))
}

fn linked(collector: &Collector) -> Result<i64> {
    Ok(collector
        .db()?
        .query_row("SELECT COUNT(*) FROM incident_alerts", [], |r| r.get(0))?)
}

/// Waits until the correlator has linked every stored alert to an incident.
async fn wait_correlated(collector: &Collector, stored: i64) -> Result<()> {
    let since = Instant::now();
    while linked(collector)? < stored {
        if since.elapsed() > Duration::from_secs(1800) {
            bail!("{} of {stored} alerts correlated after 30 minutes", linked(collector)?);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Ok(())
}
