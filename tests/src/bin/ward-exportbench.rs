//! Export benchmark for BENCHMARKS.md: alerts per second sustained from agents
//! through ingest, the export spool and one syslog sink (RFC 5424 over TCP,
//! octet-counted) to a receiver in this process that counts the messages.
//! Starts a real collector (the binary next to this one).
//!
//!   cargo build --release -p ward-collector -p ward-tests
//!   target/release/ward-exportbench --alerts 200000 --agents 10

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Read};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Result;
use clap::Parser;
use ward_tests::{Collector, TestDevice, metric};

#[derive(Parser)]
struct Cli {
    /// Alerts in all.
    #[arg(long, default_value_t = 200_000)]
    alerts: usize,
    /// Agents sending them, in parallel.
    #[arg(long, default_value_t = 10)]
    agents: usize,
    /// Alerts per batch.
    #[arg(long, default_value_t = 250)]
    batch: usize,
    /// rfc5424 or cef.
    #[arg(long, default_value = "rfc5424")]
    format: String,
}

/// Reads octet-counted syslog frames (`<len> <msg>`) and counts them.
fn receive(stream: std::net::TcpStream, count: Arc<AtomicU64>) {
    let mut r = BufReader::with_capacity(1 << 20, stream);
    let mut len = Vec::new();
    let mut msg = Vec::new();
    loop {
        len.clear();
        if r.read_until(b' ', &mut len).unwrap_or(0) == 0 {
            return;
        }
        let Ok(n) = std::str::from_utf8(&len[..len.len() - 1])
            .unwrap_or("x")
            .parse::<usize>()
        else {
            eprintln!("bad frame length {:?}", String::from_utf8_lossy(&len));
            return;
        };
        msg.resize(n, 0);
        if r.read_exact(&mut msg).is_err() {
            return;
        }
        count.fetch_add(1, Ordering::Relaxed);
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let port = listener.local_addr()?.port();
    let received = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&received);
    std::thread::spawn(move || {
        for s in listener.incoming().flatten() {
            let c = Arc::clone(&counter);
            std::thread::spawn(move || receive(s, c));
        }
    });
    let format = cli.format.clone();
    let collector = Collector::start_with(|c| {
        ward_tests::without_folding(c);
        c.push_str(&format!(
            "\n[[export]]\nname = \"bench\"\nkind = \"syslog\"\ntransport = \"tcp\"\naddress = \"127.0.0.1:{port}\"\nformat = \"{format}\"\nrecords = [\"alerts\"]\n"
        ));
    })?;
    // The spool starts at the newest entries once created.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let per_agent = cli.alerts / cli.agents;
    let total = (per_agent * cli.agents) as u64;
    let mut devices = Vec::new();
    for i in 0..cli.agents {
        let mut d = TestDevice::enroll(&collector.join_token(1, "1h")?, &format!("bench-{i}")).await?;
        d.connect().await?;
        // Signed before the clock starts.
        let batches: Vec<Vec<_>> = (0..per_agent.div_ceil(cli.batch))
            .map(|b| {
                let k = (per_agent - b * cli.batch).min(cli.batch);
                (0..k)
                    .map(|_| {
                        let a = d.next_alert();
                        d.sign(&a)
                    })
                    .collect()
            })
            .collect();
        devices.push((d, batches));
    }
    println!("{} agents, {total} alerts signed; sending", cli.agents);
    let started = Instant::now();
    let at_ingest_end = Arc::clone(&received);
    let mut tasks = Vec::new();
    for (mut d, batches) in devices {
        tasks.push(tokio::spawn(async move {
            for b in batches {
                d.send_batch(b).await.unwrap();
            }
        }));
    }
    let mut peak_queued = 0;
    let sampler = {
        let c = &collector;
        async move {
            let mut peak = 0;
            for tick in 0u64.. {
                tokio::time::sleep(Duration::from_millis(10)).await;
                if received.load(Ordering::Relaxed) >= total {
                    break;
                }
                if tick % 25 == 0
                    && let Ok(t) = c.metrics().await
                {
                    peak = peak.max(metric(&t, "ward_export_queued{sink=\"bench\"}"));
                }
            }
            peak
        }
    };
    let ingest = async {
        for t in tasks {
            t.await.unwrap();
        }
        (started.elapsed(), at_ingest_end.load(Ordering::Relaxed))
    };
    let (ingested, peak) = tokio::join!(ingest, async {
        let p = sampler.await;
        (started.elapsed(), p)
    });
    let (delivered, peak) = peak;
    let (ingested, delivered_by_then) = ingested;
    peak_queued = peak_queued.max(peak);
    let text = collector.metrics().await?;
    println!(
        "ingest: {total} alerts stored in {:.1} s ({:.0} alerts/s)",
        ingested.as_secs_f64(),
        total as f64 / ingested.as_secs_f64()
    );
    println!(
        "export: {total} alerts delivered to the sink in {:.1} s ({:.0} alerts/s end to end), peak spool {peak_queued}, sent {} failed {} dropped {}",
        delivered.as_secs_f64(),
        total as f64 / delivered.as_secs_f64(),
        metric(&text, "ward_export_sent_total{sink=\"bench\"}"),
        metric(&text, "ward_export_failed_total{sink=\"bench\"}"),
        metric(&text, "ward_export_dropped_total{sink=\"bench\"}"),
    );
    let drain = delivered.saturating_sub(ingested).as_secs_f64();
    if drain > 0.0 {
        println!(
            "after ingest ended: {} alerts left, delivered in {drain:.1} s ({:.0} alerts/s, export alone)",
            total - delivered_by_then,
            (total - delivered_by_then) as f64 / drain
        );
    }
    Ok(())
}
