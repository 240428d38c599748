//! `ward-attackbench`'s run: a real collector and a real enrolled agent (eBPF
//! process source, the default pack, no folding of repeats so every test gets its
//! own alerts), the lab, each curated test in its own namespaces one after the
//! other, then every alert of the device read from the API and judged per test.
//! The host's protected paths are fingerprinted before and after; any difference
//! fails the run.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde_json::Value;

use super::lab::{Lab, fingerprint, fingerprint_diff};
use super::{
    Mode, Outcome, Planned, RunWindow, TestResult, judge, load_plan, replay_events, replay_judge, unsafe_reason,
};
use crate::{Agent, Collector, is_root, without_folding};

/// How to run.
#[derive(Debug, Clone)]
pub struct Options {
    /// Only tests whose GUID starts with one of these (all when empty).
    pub only: Vec<String>,
    /// How long after a test's command ends its alerts may still be raised.
    pub settle: Duration,
    /// A test's command is killed after this.
    pub timeout: Duration,
    /// Where the lab's scripts, the agent and the collector live (not overlaid).
    pub work_dir: PathBuf,
}

/// Host paths that must not change, and what inside them changes for reasons of
/// its own on a shared machine: other people's cargo and headless Chromium under
/// /root, `top`'s settings (both seen changing during runs, outside the lab). No
/// curated test writes there.
const PROTECTED: &[&str] = &["/etc", "/root", "/home", "/var/spool", "/usr/local", "/opt"];
const PROTECTED_SKIP: &[&str] = &[
    "/root/.cargo",
    "/root/.rustup",
    "/root/.cache",
    "/root/.npm",
    "/root/.config/chromium",
    "/root/.config/procps",
];

/// The whole run; returns every test's result and the host check's differences
/// (empty when the host is unchanged).
pub async fn run(opts: &Options) -> Result<(Vec<TestResult>, Vec<String>)> {
    if !is_root() {
        bail!(
            "ward-attackbench needs root: the agent loads eBPF programs and the lab mounts overlays in namespaces of its own"
        );
    }
    let mut plan = load_plan(&super::fixtures_dir())?;
    if !opts.only.is_empty() {
        plan.retain(|p| opts.only.iter().any(|o| p.guid.starts_with(o.as_str())));
        if plan.is_empty() {
            bail!("no curated test starts with {:?}", opts.only);
        }
    }
    let artefacts = artefact_paths(&plan);
    let before = protected_fingerprint();
    let artefacts_before = stat_all(&artefacts);

    let lab = Lab::start(&opts.work_dir.join("lab"))?;
    let collector = Collector::start_with(without_folding)?;
    let rules_dir = opts.work_dir.join("rules.d");
    std::fs::create_dir_all(&rules_dir)?;
    let rules = rules_dir.display().to_string();
    let agent = Agent::start_wrapped(
        &collector,
        |_| {
            format!(
                "[agent]\nstatus_interval_ms = 500\nheartbeat_interval_ms = 2000\n\n[sensors]\nprocess_source = \"ebpf\"\n\n\
                 [detection]\nrules_dir = {rules:?}\naggregate_window_ms = 0\nrule_max_new_alerts_per_window = 0\n\n\
                 [link]\nreconnect_min_ms = 100\nreconnect_max_ms = 1000\n"
            )
        },
        lab.wrapper(),
    )?;
    agent.wait_connected(Duration::from_secs(30))?;
    wait_ready(&agent, Duration::from_secs(30))?;
    // The file sensor's start-up scan and first inventory pass before any test.
    tokio::time::sleep(Duration::from_secs(3)).await;

    let (default_pack, pack_errors) =
        ward_detect::Detector::load(&ward_detect::default_rule_files(&Default::default()));
    if !pack_errors.is_empty() {
        bail!("the default pack does not compile: {pack_errors:?}");
    }
    let mut pending: Vec<(Planned, LiveRun)> = Vec::new();
    for (i, p) in plan.iter().enumerate() {
        eprintln!("[{}/{}] {} {} ({:?})", i + 1, plan.len(), p.technique, p.name, p.mode);
        if p.mode == Mode::Replay {
            pending.push((p.clone(), Err(Outcome::NoAlert)));
            continue;
        }
        let outcome = run_live(&lab, p, i, opts).await;
        pending.push((p.clone(), outcome));
    }
    tokio::time::sleep(opts.settle).await;
    let alerts = all_alerts(&collector, &agent.device_id).await?;
    // What the agent lost or could not see, to read the misses by.
    for line in agent
        .status()?
        .lines()
        .filter(|l| l.contains("lost") || l.contains("gap"))
    {
        eprintln!("agent status: {}", line.trim());
    }

    let mut results = Vec::new();
    for (p, outcome) in pending {
        let events = replay_events(&p, crate::now_ms());
        let (replay_alerts, replay_matched) = replay_judge(&p, &default_pack, &events);
        let mut r = TestResult {
            technique_name: ward_detect::attack::technique(&p.technique)
                .map(|t| t.name.to_string())
                .unwrap_or_default(),
            technique: p.technique.clone(),
            tactic: p.tactic.clone(),
            guid: p.guid.clone(),
            name: p.name.clone(),
            mode: p.mode,
            outcome: Outcome::NoAlert,
            alerts: Vec::new(),
            detect_latency_ms: None,
            from_start_ms: None,
            exit_status: None,
            replay_matches: Some(replay_matched),
        };
        if p.mode == Mode::Replay {
            std::fs::create_dir_all(opts.work_dir.join("replay"))?;
            let jsonl: String = events.iter().map(|e| format!("{e}\n")).collect();
            std::fs::write(opts.work_dir.join(format!("replay/{}.jsonl", p.guid)), jsonl)?;
            r.outcome = if replay_matched {
                Outcome::Matched
            } else if replay_alerts.is_empty() {
                Outcome::NoAlert
            } else {
                Outcome::WrongTechnique
            };
            r.alerts = replay_alerts;
            results.push(r);
            continue;
        }
        match outcome {
            Err(o) => r.outcome = o,
            Ok((window, exit)) => {
                let (o, seen, latency, from_start) = judge(&p, &window, &alerts);
                r.outcome = o;
                r.alerts = seen;
                r.detect_latency_ms = latency;
                r.from_start_ms = from_start;
                r.exit_status = exit;
            }
        }
        results.push(r);
    }
    drop(agent);
    drop(lab);
    let mut changed = fingerprint_diff(&before, &protected_fingerprint());
    for ((path, was), now) in artefacts.iter().zip(&artefacts_before).zip(stat_all(&artefacts)) {
        // Other people's work appends to these (logs): a test's leak would create,
        // remove or truncate one.
        let leaked = match (was, &now) {
            (Some((a, _)), Some((b, _))) => b < a,
            (None, None) => false,
            _ => true,
        };
        if leaked {
            changed.push(format!("{path}: {was:?} -> {now:?}"));
        }
    }
    Ok((results, changed))
}

/// A live test's window and exit status, or why it did not run.
type LiveRun = Result<(RunWindow, Option<i32>), Outcome>;

/// Prerequisites, the command, the settle time, then the cleanup (when it is safe).
async fn run_live(lab: &Lab, p: &Planned, i: usize, opts: &Options) -> LiveRun {
    let short = p.guid.get(..8).unwrap_or(&p.guid);
    for (n, pre) in p.prereqs.iter().enumerate() {
        let check = |tag: &str| {
            lab.launch(
                &format!("{i:03}-{short}-pre{n}-{tag}"),
                &p.prereq_executor,
                &pre.check,
                opts.timeout,
            )
            .map(|l| l.exit == Some(0))
        };
        let met = check("a").map_err(|e| Outcome::Failed(format!("prerequisite check: {e:#}")))?;
        if met {
            continue;
        }
        if p.mode == Mode::LivePrereq {
            let _ = lab.launch(
                &format!("{i:03}-{short}-pre{n}-get"),
                &p.prereq_executor,
                &pre.get,
                opts.timeout,
            );
            if check("b").unwrap_or(false) {
                continue;
            }
        }
        return Err(Outcome::Skipped(format!(
            "prerequisite not met: {}",
            first_line(&pre.description, &pre.check)
        )));
    }
    let launch = lab
        .launch(&format!("{i:03}-{short}"), &p.executor, &p.command, opts.timeout)
        .map_err(|e| Outcome::Failed(format!("{e:#}")))?;
    tokio::time::sleep(opts.settle).await;
    let window = RunWindow {
        top_pid: launch.top_pid,
        top_start_ms: launch.top_start_ms,
        started_ms: launch.started_ms,
        until_ms: launch.ended_ms + opts.settle.as_millis() as u64,
        temp_paths: Vec::new(),
    };
    if !p.cleanup.trim().is_empty() && unsafe_reason(&p.cleanup).is_none() {
        let _ = lab.launch(
            &format!("{i:03}-{short}-cleanup"),
            &p.executor,
            &p.cleanup,
            opts.timeout,
        );
        // The cleanup's file changes must not land in the next test's window.
        tokio::time::sleep(opts.settle).await;
    }
    Ok((window, launch.exit))
}

fn first_line(description: &str, fallback: &str) -> String {
    let d = if description.trim().is_empty() {
        fallback
    } else {
        description
    };
    d.lines().next().unwrap_or_default().chars().take(120).collect()
}

/// Waits until `ward-agent status` shows the eBPF process source ready.
fn wait_ready(agent: &Agent, within: Duration) -> Result<()> {
    let deadline = std::time::Instant::now() + within;
    loop {
        let status = agent.status()?;
        if status.contains("process: ready (eBPF") {
            if let Some(pack) = status.lines().find(|l| l.contains("rule pack")) {
                eprintln!("agent {}", pack.trim());
            }
            return Ok(());
        }
        if std::time::Instant::now() >= deadline {
            bail!("the agent's eBPF process sensor is not ready: {status}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Every alert of `device`, through the API's cursor.
async fn all_alerts(collector: &Collector, device: &str) -> Result<Vec<Value>> {
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            None => format!("/api/v1/alerts?device={device}&limit=1000"),
            Some(c) => format!("/api/v1/alerts?device={device}&limit=1000&cursor={c}"),
        };
        let (status, body) = collector.get(&path).await?;
        if status != 200 {
            bail!("GET {path}: {status} {body}");
        }
        out.extend(body["alerts"].as_array().cloned().unwrap_or_default());
        match body["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => return Ok(out),
        }
    }
}

fn protected_fingerprint() -> Vec<String> {
    fingerprint(PROTECTED, PROTECTED_SKIP)
}

/// Absolute paths the live tests name under the volatile host folders (which other
/// people's work changes, so they are checked path by path).
pub fn artefact_paths(plan: &[Planned]) -> Vec<String> {
    const VOLATILE: &[&str] = &[
        "/tmp/",
        "/var/tmp/",
        "/var/log/",
        "/dev/shm/",
        "/var/lib/",
        "/var/mail/",
    ];
    let mut paths: Vec<String> = plan
        .iter()
        .filter(|p| p.mode != Mode::Replay)
        .flat_map(|p| {
            p.command
                .split(|c: char| c.is_whitespace() || "'\";|&<>(){}$`".contains(c))
                .filter(|w| VOLATILE.iter().any(|v| w.starts_with(v) && w.len() > v.len()))
                .map(|w| w.trim_end_matches(['/', ',']).to_string())
                .collect::<Vec<_>>()
        })
        .filter(|w| !w.contains('*'))
        .collect();
    paths.sort();
    paths.dedup();
    paths
}

fn stat_all(paths: &[String]) -> Vec<Option<(u64, i64)>> {
    use std::os::unix::fs::MetadataExt as _;
    paths
        .iter()
        .map(|p| {
            std::fs::symlink_metadata(Path::new(p))
                .ok()
                .map(|m| (m.len(), m.mtime()))
        })
        .collect()
}

/// Writes the report files into `dir`: `attackbench.md` and `attackbench.json`.
pub fn write_report(dir: &Path, results: &[TestResult], markdown: &str) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join("attackbench.md"), markdown)?;
    let json = serde_json::to_string_pretty(results).context("report JSON")?;
    std::fs::write(dir.join("attackbench.json"), json)?;
    Ok(())
}
