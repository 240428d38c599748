//! Console benchmark for whole incidents (BENCHMARKS.md): seeds one incident of
//! `--alerts` alerts (100,000 by default) into a real collector's store, lets the
//! collector correlate them, then times the incident API (detail with its first page,
//! a page deep in the incident, the process tree) and opens the incident page in
//! headless Chromium, reporting the time from navigation to the rendered page.
//!
//!   cargo build --release -p ward-collector -p ward-tests
//!   target/release/ward-consolebench --alerts 100000
//!
//! The alerts all name one dropped file's hash (the link), each its own remote
//! address and process, one of 12 rules, 50 ms apart; one in 50 carries a process
//! lineage (a web shell under java) for the process tree, one in 100 is folded (a count).
//! They are stored as the collector's own alerts without a device, as
//! `ward-corrbench` does: signing 100,000 alerts over QUIC is the ingest benchmark's business.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use clap::Parser;
use ring::rand::SystemRandom;
use serde_json::Value;
use ward_collector::store::prelude::*;
use ward_collector::store::{AlertSource, SourcedAlert, Store};
use ward_protocol::{AlertId, Entity, ProcessNode, RuleRef, Severity};
use ward_tests::browser::Browser;
use ward_tests::{Collector, now_ms};

#[derive(Parser)]
struct Cli {
    #[arg(long, default_value_t = 100_000)]
    alerts: u64,
    /// Page opens measured (the median is reported).
    #[arg(long, default_value_t = 5)]
    runs: usize,
}

fn node(pid: u32, start: u64, exe: &str) -> ProcessNode {
    ProcessNode {
        pid,
        ppid: 1,
        start_time_ms: start,
        exe: exe.into(),
        cmdline: exe.into(),
        user: Some("tomcat".into()),
        login_user: None,
    }
}

fn alert(i: u64, t0: u64, rng: &SystemRandom) -> SourcedAlert {
    let at = t0 + i * 50;
    let pid = 10_000 + (i % 50_000) as u32;
    let mut entities = vec![
        Entity::File {
            path: "/tmp/.x/dropper".into(),
            sha256: Some([0x42; 32]),
        },
        Entity::Ip {
            addr: std::net::Ipv4Addr::from(0x0a00_0000 + i as u32).into(),
        },
        Entity::Process {
            pid,
            ppid: 4,
            start_time_ms: at,
            exe: format!("/usr/bin/tool{}", i % 30),
            cmdline: "tool --run".into(),
            sha256: None,
        },
    ];
    if i.is_multiple_of(50) {
        let ancestors = vec![
            node(5, t0, "/bin/bash -i"),
            node(4, t0, "/bin/bash -c"),
            node(3, t0, "/bin/sh"),
            node(2, t0, "/usr/bin/java"),
            node(1, t0, "/usr/lib/systemd/systemd --user"),
        ];
        entities.push(Entity::Lineage {
            process: node(pid, at, &format!("/usr/bin/tool{}", i % 30)),
            ancestors,
            rooted: true,
        });
    }
    let k = i % 12;
    SourcedAlert {
        id: AlertId::generate(at, rng).unwrap().to_string(),
        source: AlertSource::Collector,
        device_id: None,
        observed_at_ms: at,
        last_observed_at_ms: at + if i % 100 == 7 { 60_000 } else { 0 },
        rule: RuleRef {
            id: format!("bench-{k}"),
            title: format!("Bench rule {k}"),
            author: "Ward".into(),
            severity: if k == 0 { Severity::High } else { Severity::Medium },
            techniques: vec!["T1105".into()],
            tactics: vec!["TA0011".into()],
        },
        entities,
        count: if i % 100 == 7 { 25 } else { 1 },
        matched: serde_json::Map::new(),
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

async fn timed_get(c: &Collector, path: &str) -> Result<(f64, Value)> {
    let t = Instant::now();
    let (status, body) = c.get(path).await?;
    let ms = t.elapsed().as_secs_f64() * 1000.0;
    if status != 200 {
        bail!("{path}: {status} {body}");
    }
    Ok((ms, body))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    let collector = Collector::start()?;
    let rng = SystemRandom::new();
    let t0 = now_ms() - 3 * 3_600_000;
    let started = Instant::now();
    let mut first = String::new();
    {
        let mut store = Store::open(&collector.data_dir().join("ward.db"))?;
        let mut i = 0;
        while i < cli.alerts {
            let n = (cli.alerts - i).min(10_000);
            let batch: Vec<SourcedAlert> = (i..i + n).map(|k| alert(k, t0, &rng)).collect();
            if i == 0 {
                first = batch[0].id.clone();
            }
            store.insert_sourced_alerts(&batch, now_ms())?;
            i += n;
        }
    }
    println!(
        "seeded {} alerts in {:.1} s",
        cli.alerts,
        started.elapsed().as_secs_f64()
    );
    let (incident, _) = collector.incident_of(&first).await;
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let (_, list) = collector
            .get(&format!("/api/v1/incidents/{incident}/alerts?limit=1"))
            .await?;
        if list["totals"]["alerts"].as_u64() == Some(cli.alerts) {
            break;
        }
        if Instant::now() > deadline {
            bail!(
                "the incident holds {} of {} alerts after 10 min",
                list["totals"]["alerts"],
                cli.alerts
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    println!(
        "correlated into incident {incident} after {:.1} s",
        started.elapsed().as_secs_f64()
    );

    // The API alone.
    let mut detail = Vec::new();
    let mut light = Vec::new();
    let mut body = Value::Null;
    for _ in 0..cli.runs {
        let (ms, b) = timed_get(&collector, &format!("/api/v1/incidents/{incident}")).await?;
        detail.push(ms);
        body = b;
    }
    let deep = format!(
        "/api/v1/incidents/{incident}/alerts?order=oldest&since_ms={}&limit=200",
        t0 + cli.alerts * 25
    );
    let mut page = Vec::new();
    let mut tree = Vec::new();
    let mut tree_body = Value::Null;
    for _ in 0..cli.runs {
        light.push(
            timed_get(&collector, &format!("/api/v1/incidents/{incident}?evidence=deferred"))
                .await?
                .0,
        );
        page.push(timed_get(&collector, &deep).await?.0);
        let (ms, b) = timed_get(&collector, &format!("/api/v1/incidents/{incident}/process_tree")).await?;
        tree.push(ms);
        tree_body = b;
    }
    println!(
        "API: detail (totals, evidence over all alerts, first page of 200) median {:.0} ms of {detail:.0?}; \
         detail with evidence deferred median {:.0} ms; \
         a page from the middle by time range median {:.0} ms; process tree median {:.0} ms ({} processes, {} nodes)",
        median(detail.clone()),
        median(light),
        median(page),
        median(tree),
        tree_body["alerted_processes"],
        tree_body["nodes"],
    );
    println!(
        "detail: {} alerts, {} entities listed of {}, {} bytes",
        body["totals"]["alerts"],
        body["entities"].as_array().map_or(0, Vec::len),
        body["entity_totals"],
        body.to_string().len()
    );

    // The console in headless Chromium: navigation to the rendered page.
    let base = format!("http://{}", collector.http);
    let mut b = Browser::launch()?;
    b.navigate(&format!("{base}/"))?;
    b.wait_for(
        "the sign-in form",
        "!document.querySelector('#signin').hidden",
        Duration::from_secs(10),
    )?;
    b.eval(&format!(
        "document.querySelector('#token').value = {}; document.querySelector('#signin-button').click(); true",
        serde_json::to_string(&collector.admin_token)?
    ))?;
    b.wait_for(
        "the signed-in role",
        "(document.querySelector('#who') || {}).textContent.includes('admin')",
        Duration::from_secs(10),
    )?;
    let mut totals = Vec::new();
    let mut outside = Vec::new();
    let mut evidence = Vec::new();
    for _ in 0..cli.runs {
        b.eval("location.hash = '#/incidents'; true")?;
        b.wait_for(
            "the queue",
            "!!document.querySelector('#queue')",
            Duration::from_secs(10),
        )?;
        let t = Instant::now();
        b.eval(&format!(
            "delete document.body.dataset.incidentRendered; delete document.body.dataset.evidenceLoaded; \
             location.hash = '#/incident/{incident}'; true"
        ))?;
        b.wait_for(
            "the incident drawn",
            &format!("document.body.dataset.incidentRendered === '{incident}'"),
            Duration::from_secs(60),
        )?;
        outside.push(t.elapsed().as_secs_f64() * 1000.0);
        b.wait_for(
            "the evidence of the whole incident",
            &format!("document.body.dataset.evidenceLoaded === '{incident}' && window.wardPerf.evidenceMs > 0"),
            Duration::from_secs(60),
        )?;
        let perf = b.eval("window.wardPerf")?;
        evidence.push(perf["evidenceMs"].as_f64().unwrap_or(f64::MAX));
        let shown = b.eval("(document.querySelector('#alerts-showing') || {}).textContent")?;
        println!(
            "page: fetch {:.0} ms, render {:.0} ms, total {:.0} ms, whole-incident evidence shown at {:.0} ms; \
             graph: {} alert nodes (repeats grouped) of {} nodes; \"{}\"",
            perf["fetchMs"].as_f64().unwrap_or(0.0),
            perf["renderMs"].as_f64().unwrap_or(0.0),
            perf["totalMs"].as_f64().unwrap_or(0.0),
            perf["evidenceMs"].as_f64().unwrap_or(0.0),
            b.eval("document.querySelectorAll('#graph circle.alert').length")?,
            b.eval("document.querySelectorAll('#graph .node').length")?,
            shown.as_str().unwrap_or("")
        );
        totals.push(perf["totalMs"].as_f64().unwrap_or(f64::MAX));
    }
    // Playing the story graph of the page drawn (4 s by design, at any size).
    b.eval("window.wardPerf.playMs = 0; document.querySelector('#play').click(); true")?;
    b.wait_for(
        "the play over",
        "document.querySelector('#play').textContent.includes('Play') && window.wardPerf.playMs > 0",
        Duration::from_secs(60),
    )?;
    println!(
        "graph play: {:.0} ms for {} steps",
        b.eval("window.wardPerf.playMs")?.as_f64().unwrap_or(0.0),
        b.eval("document.querySelector('#play-step').max")?
    );
    println!(
        "incident of {} alerts in the console, navigation to page drawn: median {:.0} ms (page's own clock) / \
         {:.0} ms (seen from the benchmark, including DevTools round trips) of {} runs; \
         the whole incident's evidence (assets, evidence tab) in at median {:.0} ms",
        cli.alerts,
        median(totals),
        median(outside),
        cli.runs,
        median(evidence)
    );
    Ok(())
}
