//! The Atomic Red Team coverage harness behind `ward-attackbench`: the curated test
//! list (`tests/fixtures/atomic-red-team/curated.tsv`) over the upstream atomics YAML,
//! arguments substituted, the safety check every live command passes, attribution of
//! alerts (API JSON) to a test's process tree, technique matching through
//! `ward_detect::attack`, the replay of unsafe tests as Ward events, and the report.
//! Everything here is pure (text in, values out); running tests in namespaces is in
//! [`lab`].

pub mod bench;
pub mod lab;

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// The fixtures folder: upstream atomics, license, origin and the curated list.
pub fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/atomic-red-team")
}

/// One `atomics/Txxxx/Txxxx.yaml` file as upstream writes it (fields we use).
#[derive(Debug, Clone, Deserialize)]
pub struct AtomicFile {
    pub attack_technique: String,
    #[serde(default)]
    pub display_name: String,
    pub atomic_tests: Vec<AtomicTest>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct AtomicTest {
    pub name: String,
    pub auto_generated_guid: String,
    #[serde(default)]
    pub supported_platforms: Vec<String>,
    #[serde(default)]
    pub input_arguments: BTreeMap<String, InputArgument>,
    #[serde(default)]
    pub dependency_executor_name: Option<String>,
    #[serde(default)]
    pub dependencies: Vec<Dependency>,
    pub executor: Executor,
}

#[derive(Debug, Clone, Deserialize)]
pub struct InputArgument {
    /// A string, number or boolean upstream.
    #[serde(default)]
    pub default: serde_yaml::Value,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Dependency {
    #[serde(default)]
    pub description: String,
    pub prereq_command: String,
    #[serde(default)]
    pub get_prereq_command: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Executor {
    pub name: String,
    #[serde(default)]
    pub command: Option<String>,
    #[serde(default)]
    pub cleanup_command: Option<String>,
}

/// How a curated test is exercised.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Run in the lab; unmet prerequisites skip it.
    Live,
    /// Run in the lab; unmet prerequisites are fetched with the test's own
    /// `get_prereq_command` (vetted: local files only).
    LivePrereq,
    /// Unsafe to run even in the lab: its command lines are replayed as events.
    Replay,
}

/// A prerequisite of a planned test, arguments substituted.
#[derive(Debug, Clone, Serialize)]
pub struct Prereq {
    pub description: String,
    pub check: String,
    pub get: String,
}

/// One curated test, ready to run or replay.
#[derive(Debug, Clone, Serialize)]
pub struct Planned {
    /// ATT&CK v19 id (normalised; upstream already writes v19).
    pub technique: String,
    pub tactic: String,
    pub guid: String,
    pub name: String,
    pub mode: Mode,
    /// `sh` or `bash`.
    pub executor: String,
    pub prereq_executor: String,
    pub command: String,
    pub cleanup: String,
    pub prereqs: Vec<Prereq>,
    /// Arguments the curated list overrides (`name=value`), with why in the README.
    pub overrides: Vec<(String, String)>,
    /// Why it is replayed (replay mode only).
    pub note: String,
}

/// Reads the curated list and the atomics it names from `dir`.
pub fn load_plan(dir: &Path) -> Result<Vec<Planned>> {
    let curated = std::fs::read_to_string(dir.join("curated.tsv")).context("curated.tsv")?;
    let index =
        std::fs::read_to_string(dir.join("atomics/Indexes/Indexes-CSV/linux-index.csv")).context("linux-index.csv")?;
    let mut files: HashMap<String, AtomicFile> = HashMap::new();
    let mut plan = Vec::new();
    for (n, line) in curated.lines().enumerate() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let row = CuratedRow::parse(line).with_context(|| format!("curated.tsv line {}", n + 1))?;
        let key = row.technique.clone();
        if !files.contains_key(&key) {
            let path = dir.join(format!("atomics/{key}/{key}.yaml"));
            let text = std::fs::read_to_string(&path).with_context(|| format!("{}", path.display()))?;
            files.insert(key.clone(), parse_atomic_file(&text)?);
        }
        plan.push(plan_test(&files[&key], &row, &index)?);
    }
    Ok(plan)
}

/// Parses one upstream atomics file.
pub fn parse_atomic_file(text: &str) -> Result<AtomicFile> {
    serde_yaml::from_str(text).map_err(|e| anyhow!("atomics YAML: {e}"))
}

/// One line of `curated.tsv`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CuratedRow {
    pub technique: String,
    pub tactic: String,
    pub guid: String,
    pub mode: Mode,
    pub overrides: Vec<(String, String)>,
    pub note: String,
}

impl CuratedRow {
    pub fn parse(line: &str) -> Result<CuratedRow> {
        let cols: Vec<&str> = line.split('\t').collect();
        let [technique, tactic, guid, mode, overrides, note] = cols.as_slice() else {
            bail!("want 6 tab-separated columns, have {}", cols.len());
        };
        let mode = match *mode {
            "live" => Mode::Live,
            "live+prereq" => Mode::LivePrereq,
            "replay" => Mode::Replay,
            other => bail!("unknown mode {other:?}"),
        };
        let overrides = if *overrides == "-" {
            Vec::new()
        } else {
            overrides
                .split(';')
                .map(|kv| {
                    kv.split_once('=')
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .ok_or_else(|| anyhow!("override {kv:?} is not name=value"))
                })
                .collect::<Result<_>>()?
        };
        Ok(CuratedRow {
            technique: technique.to_string(),
            tactic: tactic.to_string(),
            guid: guid.to_string(),
            mode,
            overrides,
            note: note.to_string(),
        })
    }
}

/// The tactics `linux-index.csv` lists for a test GUID.
pub fn index_tactics(index_csv: &str, guid: &str) -> Vec<String> {
    index_csv
        .lines()
        .filter(|l| l.contains(guid))
        .filter_map(|l| l.split(',').next().map(str::to_string))
        .collect()
}

/// Builds the planned test for `row` from its atomics file.
pub fn plan_test(file: &AtomicFile, row: &CuratedRow, index_csv: &str) -> Result<Planned> {
    let test = file
        .atomic_tests
        .iter()
        .find(|t| t.auto_generated_guid == row.guid)
        .ok_or_else(|| anyhow!("{} has no test {}", file.attack_technique, row.guid))?;
    if !test.supported_platforms.iter().any(|p| p == "linux") {
        bail!("{} is not a Linux test", row.guid);
    }
    if !matches!(test.executor.name.as_str(), "sh" | "bash") {
        bail!("{} runs under {}, not sh or bash", row.guid, test.executor.name);
    }
    if file.attack_technique != row.technique {
        bail!(
            "{} belongs to {}, not {}",
            row.guid,
            file.attack_technique,
            row.technique
        );
    }
    let tactics = index_tactics(index_csv, &row.guid);
    if !tactics.contains(&row.tactic) {
        bail!("{}: tactic {} is not one of {tactics:?}", row.guid, row.tactic);
    }
    let mut args: BTreeMap<String, String> = test
        .input_arguments
        .iter()
        .map(|(k, v)| (k.clone(), yaml_scalar(&v.default)))
        .collect();
    for (k, v) in &row.overrides {
        if !args.contains_key(k) {
            bail!("{}: override of unknown argument {k}", row.guid);
        }
        args.insert(k.clone(), v.clone());
    }
    let sub = |s: &str| substitute(s, &args);
    let command = sub(test.executor.command.as_deref().unwrap_or_default());
    if command.trim().is_empty() {
        bail!("{} has no command", row.guid);
    }
    Ok(Planned {
        technique: ward_detect::attack::normalize_technique(&row.technique),
        tactic: row.tactic.clone(),
        guid: row.guid.clone(),
        name: test.name.clone(),
        mode: row.mode,
        executor: test.executor.name.clone(),
        prereq_executor: test
            .dependency_executor_name
            .clone()
            .unwrap_or_else(|| test.executor.name.clone()),
        command,
        cleanup: sub(test.executor.cleanup_command.as_deref().unwrap_or_default()),
        prereqs: test
            .dependencies
            .iter()
            .map(|d| Prereq {
                description: d.description.trim().to_string(),
                check: sub(&d.prereq_command),
                get: sub(&d.get_prereq_command),
            })
            .collect(),
        overrides: row.overrides.clone(),
        note: row.note.clone(),
    })
}

fn yaml_scalar(v: &serde_yaml::Value) -> String {
    match v {
        serde_yaml::Value::String(s) => s.clone(),
        serde_yaml::Value::Number(n) => n.to_string(),
        serde_yaml::Value::Bool(b) => b.to_string(),
        serde_yaml::Value::Null => String::new(),
        other => serde_yaml::to_string(other).unwrap_or_default().trim().to_string(),
    }
}

/// Replaces every `#{name}` with its argument; `PathToAtomicsFolder` (payloads not
/// copied) stays as written, so a prerequisite naming it fails and says so.
pub fn substitute(text: &str, args: &BTreeMap<String, String>) -> String {
    let mut out = text.to_string();
    for (k, v) in args {
        out = out.replace(&format!("#{{{k}}}"), v);
    }
    out
}

/// What a live command or cleanup must not contain: things that reach past the
/// lab's namespaces to the host (its kernel, its systemd, its processes).
const UNSAFE: &[&str] = &[
    "systemctl stop",
    "systemctl start",
    "systemctl restart",
    "systemctl enable",
    "systemctl disable",
    "systemctl daemon-reload",
    "systemd-run",
    "sysctl",
    "/proc/sys",
    "insmod",
    "modprobe",
    "rmmod",
    "auditctl",
    "reboot",
    "shutdown",
    "halt",
    "poweroff",
    "killall",
    "pkill",
    "$(pgrep",
    "swapoff",
    "swapon",
    "iptables",
    "nft ",
    "ufw ",
    "rm -rf / ",
    "--no-preserve-root",
    "drop_caches",
    "setenforce",
];

/// Why `command` may not run live, if it may not. `service NAME start` (or stop,
/// restart...) on one line reaches the host's init like systemctl does.
pub fn unsafe_reason(command: &str) -> Option<&'static str> {
    if let Some(p) = UNSAFE.iter().copied().find(|p| command.contains(p)) {
        return Some(p);
    }
    const VERBS: &[&str] = &[" start", " stop", " restart", " reload", " enable", " disable"];
    command
        .lines()
        .any(|l| l.contains("service ") && VERBS.iter().any(|v| l.contains(v)))
        .then_some("service start/stop")
}

/// Whether an alert's technique counts for a test's: the same technique or the
/// test technique's parent (a `T1003.008` test is matched by `T1003.008` or `T1003`),
/// both normalised to ATT&CK v19.
pub fn technique_matches(test_technique: &str, alert_technique: &str) -> bool {
    let norm = |t: &str| ward_detect::attack::normalize_technique(&t.trim().to_ascii_uppercase());
    let test = norm(test_technique);
    let alert = norm(alert_technique);
    let parent = test.split('.').next().unwrap_or_default();
    alert == test || alert == parent
}

/// What the harness knows of one live run, for attribution.
#[derive(Debug, Clone, Serialize)]
pub struct RunWindow {
    /// The test's top process: the shell that runs its command.
    pub top_pid: u32,
    /// Its start, Unix ms, as `/proc` gives it (the agent's own reckoning).
    pub top_start_ms: u64,
    pub started_ms: u64,
    /// When its command ended plus the settle time alerts may lag by.
    pub until_ms: u64,
    /// Folders only this test writes to.
    pub temp_paths: Vec<String>,
}

/// How an alert was tied to a test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Attribution {
    /// The top process is the alerted process or among its ancestors.
    ProcessTree,
    /// A file alert under one of the test's temp paths.
    TempPath,
    /// An alert naming no process (a file change), raised while the test ran in
    /// the lab, where nothing else writes.
    Window,
}

/// Most an alert's start time may differ from `/proc`'s for the same process
/// (jiffies rounding, boot-time seconds).
const START_SLACK_MS: u64 = 2_000;

/// Ties an alert (API JSON) to a run, or not.
pub fn attribute(alert: &Value, run: &RunWindow) -> Option<Attribution> {
    let at = alert["observed_at_ms"].as_u64().unwrap_or(0);
    let in_window = at + 50 >= run.started_ms && at <= run.until_ms;
    let entities = alert["entities"].as_array().map(Vec::as_slice).unwrap_or_default();
    let same_top = |node: &Value| {
        node["pid"].as_u64() == Some(u64::from(run.top_pid)) && {
            let start = node["start_time_ms"].as_u64().unwrap_or(0);
            start == 0 || run.top_start_ms == 0 || start.abs_diff(run.top_start_ms) <= START_SLACK_MS
        }
    };
    let mut names_process = false;
    for e in entities {
        match e["kind"].as_str() {
            Some("lineage") => {
                names_process = true;
                let nodes = std::iter::once(&e["process"])
                    .chain(e["ancestors"].as_array().map(Vec::as_slice).unwrap_or_default());
                if nodes.into_iter().any(same_top) {
                    return Some(Attribution::ProcessTree);
                }
            }
            Some("process") => {
                names_process = true;
                let child = e["ppid"].as_u64() == Some(u64::from(run.top_pid)) && in_window;
                if same_top(e) || child {
                    return Some(Attribution::ProcessTree);
                }
            }
            Some("file") => {
                let path = e["path"].as_str().unwrap_or_default();
                if in_window
                    && run
                        .temp_paths
                        .iter()
                        .any(|t| path.starts_with(&format!("{}/", t.trim_end_matches('/'))))
                {
                    return Some(Attribution::TempPath);
                }
            }
            _ => {}
        }
    }
    (!names_process && in_window && entities.iter().any(|e| e["kind"] == "file")).then_some(Attribution::Window)
}

/// The technique ids an alert's rule carries.
pub fn alert_techniques(alert: &Value) -> Vec<String> {
    alert["rule"]["techniques"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).map(str::to_string).collect())
        .unwrap_or_default()
}

/// One alert as the report keeps it.
#[derive(Debug, Clone, Serialize)]
pub struct SeenAlert {
    pub rule_title: String,
    pub rule_id: String,
    pub techniques: Vec<String>,
    pub matched_technique: bool,
    /// How it was tied to the test (`None` for replayed matches).
    pub how: Option<Attribution>,
    pub observed_at_ms: u64,
    pub received_at_ms: u64,
}

/// How a test ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "status", content = "reason")]
pub enum Outcome {
    Matched,
    /// Alerts, none naming the technique.
    WrongTechnique,
    NoAlert,
    Skipped(String),
    /// The harness could not run it (not the test's exit status: that is recorded).
    Failed(String),
}

/// One row of the report.
#[derive(Debug, Clone, Serialize)]
pub struct TestResult {
    pub technique: String,
    pub technique_name: String,
    pub tactic: String,
    pub guid: String,
    pub name: String,
    pub mode: Mode,
    pub outcome: Outcome,
    pub alerts: Vec<SeenAlert>,
    /// Collector receipt minus the event's observation (agent clock, same machine)
    /// of the first technique-matched alert.
    pub detect_latency_ms: Option<u64>,
    /// That alert's event observation minus the test's start.
    pub from_start_ms: Option<u64>,
    pub exit_status: Option<i32>,
    /// For a miss: whether the test's command lines, replayed as events through the
    /// default pack, match a rule of the technique (then live telemetry or
    /// attribution lost it; else no rule covers it).
    pub replay_matches: Option<bool>,
}

/// Judges a live run's alerts.
pub fn judge(
    planned: &Planned,
    run: &RunWindow,
    alerts: &[Value],
) -> (Outcome, Vec<SeenAlert>, Option<u64>, Option<u64>) {
    let mut seen: Vec<SeenAlert> = alerts
        .iter()
        .filter_map(|a| {
            let how = attribute(a, run)?;
            let techniques = alert_techniques(a);
            Some(SeenAlert {
                rule_title: a["rule"]["title"].as_str().unwrap_or_default().to_string(),
                rule_id: a["rule"]["id"].as_str().unwrap_or_default().to_string(),
                matched_technique: techniques.iter().any(|t| technique_matches(&planned.technique, t)),
                techniques,
                how: Some(how),
                observed_at_ms: a["observed_at_ms"].as_u64().unwrap_or(0),
                received_at_ms: a["received_at_ms"].as_u64().unwrap_or(0),
            })
        })
        .collect();
    seen.sort_by_key(|s| s.observed_at_ms);
    let first = seen.iter().find(|s| s.matched_technique);
    let outcome = if first.is_some() {
        Outcome::Matched
    } else if seen.is_empty() {
        Outcome::NoAlert
    } else {
        Outcome::WrongTechnique
    };
    let latency = first.map(|s| s.received_at_ms.saturating_sub(s.observed_at_ms));
    let from_start = first.map(|s| s.observed_at_ms.saturating_sub(run.started_ms));
    (outcome, seen, latency, from_start)
}

/// Shell words that are not programs (no exec event of their own).
const BUILTINS: &[&str] = &[
    "echo", "printf", "cd", "export", "unset", "set", "if", "then", "else", "elif", "fi", "for", "do", "done", "while",
    "[", "[[", "test", "true", "false", "exit", "alias", "trap", "history", "local", "read", "eval", "{", "}", "case",
    "esac", "return", "source", ".", "wait",
];

/// A test's command lines as the process and file events a sensor would report
/// (Ward event JSON lines, as `ward-agent rules test` reads them): each simple
/// command that is a program becomes a process event with the test's shell as
/// parent, each `>`/`>>` redirection to an absolute path a file event. It stands
/// in for telemetry and says nothing about what a real sensor would add.
pub fn replay_events(planned: &Planned, at_ms: u64) -> Vec<Value> {
    let shell = format!("/usr/bin/{}", planned.executor);
    let mut events = Vec::new();
    let mut pid = 40_000;
    for line in planned.command.lines() {
        for simple in line.split(['|', ';', '&']).map(str::trim).filter(|s| !s.is_empty()) {
            let simple = simple.trim_start_matches(['(', ')', ' ']).trim();
            let words: Vec<&str> = simple.split_whitespace().collect();
            // `then cmd`, `else cmd`, `do cmd`, `! cmd` run `cmd`.
            let mut i = usize::from(matches!(words.first(), Some(&("then" | "else" | "do" | "!"))));
            // `VAR=value cmd` and `sudo cmd` run `cmd`.
            while i < words.len() && (words[i].contains('=') && !words[i].starts_with('=') || words[i] == "sudo") {
                i += 1;
            }
            // The last redirection is the shell's (an earlier one may sit in quotes).
            if let Some(w) = words.iter().rposition(|w| *w == ">" || *w == ">>")
                && let Some(path) = words.get(w + 1).filter(|p| p.starts_with('/'))
            {
                events.push(json!({"observed_at_ms": at_ms, "data": {"kind": "file", "op": "modify", "path": path.trim_matches('"')}}));
            }
            let Some(program) = words.get(i) else { continue };
            let program = program.trim_matches(['"', '\'', '(', ')', '`', '$']);
            if program.is_empty() || BUILTINS.contains(&program) || program.contains('=') {
                continue;
            }
            let exe = if program.starts_with('/') {
                program.to_string()
            } else {
                format!("/usr/bin/{program}")
            };
            let cmdline = words[i..].join(" ");
            pid += 1;
            events.push(json!({"observed_at_ms": at_ms, "data": {
                "kind": "process", "pid": pid, "ppid": 39_999, "exe": exe, "cmdline": cmdline,
                "cwd": "/root", "user": "root", "uid": 0,
                "parent_exe": shell, "parent_cmdline": format!("{} -s", planned.executor),
            }}));
        }
    }
    events
}

/// Runs replayed events through `detector` (compile the pack once:
/// `ward_detect::Detector::load`); returns the matching rules (one per rule) and
/// whether one names the test's technique.
pub fn replay_judge(planned: &Planned, detector: &ward_detect::Detector, events: &[Value]) -> (Vec<SeenAlert>, bool) {
    let rules: Vec<ward_protocol::RuleRef> = events
        .iter()
        .filter_map(|e| match ward_detect::rulestest::parse_event_line(&e.to_string()) {
            Ok(ward_detect::rulestest::EventLine::Ward(event)) => Some(event),
            _ => None,
        })
        .flat_map(|event| detector.evaluate(&event))
        .map(|d| d.rule)
        .collect();
    let mut seen: Vec<SeenAlert> = Vec::new();
    for rule in &rules {
        if seen.iter().any(|s| s.rule_id == rule.id) {
            continue;
        }
        seen.push(SeenAlert {
            rule_title: rule.title.clone(),
            rule_id: rule.id.clone(),
            techniques: rule.techniques.clone(),
            matched_technique: rule.techniques.iter().any(|t| technique_matches(&planned.technique, t)),
            how: None,
            observed_at_ms: 0,
            received_at_ms: 0,
        });
    }
    let matched = seen.iter().any(|s| s.matched_technique);
    (seen, matched)
}

/// The `q`-quantile (0..=1) of `values` by nearest rank.
pub fn quantile(values: &[u64], q: f64) -> Option<u64> {
    if values.is_empty() {
        return None;
    }
    let mut v = values.to_vec();
    v.sort_unstable();
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
    Some(v[rank - 1])
}

/// A failing command says so beside a miss (its target missing here, a bug of the test).
fn exit_note(status: Option<i32>) -> String {
    match status {
        Some(0) => String::new(),
        Some(n) => format!("; exit {n}"),
        None => "; timed out".to_string(),
    }
}

fn pct(n: usize, of: usize) -> String {
    if of == 0 {
        "-".into()
    } else {
        format!("{:.0} %", 100.0 * n as f64 / of as f64)
    }
}

/// The report as markdown: summary, coverage by tactic, per test, misses, replays.
pub fn markdown(results: &[TestResult]) -> String {
    let live: Vec<&TestResult> = results
        .iter()
        .filter(|r| r.mode != Mode::Replay && !matches!(r.outcome, Outcome::Skipped(_) | Outcome::Failed(_)))
        .collect();
    let matched = live.iter().filter(|r| r.outcome == Outcome::Matched).count();
    let lat: Vec<u64> = live.iter().filter_map(|r| r.detect_latency_ms).collect();
    let from_start: Vec<u64> = live.iter().filter_map(|r| r.from_start_ms).collect();
    let skipped = results
        .iter()
        .filter(|r| matches!(r.outcome, Outcome::Skipped(_)))
        .count();
    let failed = results
        .iter()
        .filter(|r| matches!(r.outcome, Outcome::Failed(_)))
        .count();
    let mut out = String::new();
    let show = |v: Option<u64>| v.map_or("-".into(), |v| format!("{v} ms"));
    let _ = writeln!(
        out,
        "Live: {matched} of {} run tests technique-matched ({}); {skipped} skipped (prerequisites), {failed} could not run.\n\
         Detection latency (collector receipt − the event's observation by the agent, first matched alert): p50 {}, p95 {}.\n\
         Event observation − test start (includes the test's own steps before the detected one): p50 {}, p95 {}.\n",
        live.len(),
        pct(matched, live.len()),
        show(quantile(&lat, 0.5)),
        show(quantile(&lat, 0.95)),
        show(quantile(&from_start, 0.5)),
        show(quantile(&from_start, 0.95)),
    );
    let _ = writeln!(out, "| tactic | run | technique-matched | % |\n|---|---:|---:|---:|");
    let mut by_tactic: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    for r in &live {
        let e = by_tactic.entry(r.tactic.as_str()).or_default();
        e.0 += 1;
        e.1 += usize::from(r.outcome == Outcome::Matched);
    }
    for (t, (n, m)) in &by_tactic {
        let _ = writeln!(out, "| {t} | {n} | {m} | {} |", pct(*m, *n));
    }
    let _ = writeln!(
        out,
        "\n| technique | tactic | test | result | alerts (rule titles) | latency |\n|---|---|---|---|---|---:|"
    );
    for r in results.iter().filter(|r| r.mode != Mode::Replay) {
        let result = match &r.outcome {
            Outcome::Matched => "matched".to_string(),
            Outcome::WrongTechnique => "wrong technique".to_string() + &exit_note(r.exit_status),
            Outcome::NoAlert => {
                let why = match r.replay_matches {
                    Some(true) => "no alert (replayed lines match: telemetry)",
                    _ => "no alert (no rule)",
                };
                format!("{why}{}", exit_note(r.exit_status))
            }
            Outcome::Skipped(why) => format!("skipped: {why}"),
            Outcome::Failed(why) => format!("failed: {why}"),
        };
        let mut titles: Vec<&str> = r.alerts.iter().map(|a| a.rule_title.as_str()).collect();
        titles.sort_unstable();
        titles.dedup();
        let _ = writeln!(
            out,
            "| {} {} | {} | {} | {} | {} | {} |",
            r.technique,
            r.technique_name,
            r.tactic,
            r.name.replace('|', "/"),
            result.replace('|', "/"),
            titles.join("; ").replace('|', "/"),
            show(r.detect_latency_ms)
        );
    }
    let replays: Vec<&TestResult> = results.iter().filter(|r| r.mode == Mode::Replay).collect();
    if !replays.is_empty() {
        let m = replays.iter().filter(|r| r.outcome == Outcome::Matched).count();
        let _ = writeln!(
            out,
            "\nReplayed (unsafe to run live; command lines as events through the default pack): {m} of {} technique-matched.\n\n\
             | technique | tactic | test | result | rules |\n|---|---|---|---|---|",
            replays.len()
        );
        for r in replays {
            let mut titles: Vec<&str> = r.alerts.iter().map(|a| a.rule_title.as_str()).collect();
            titles.dedup();
            let _ = writeln!(
                out,
                "| {} {} | {} | {} | {} | {} |",
                r.technique,
                r.technique_name,
                r.tactic,
                r.name.replace('|', "/"),
                if r.outcome == Outcome::Matched {
                    "matched"
                } else if r.alerts.is_empty() {
                    "no rule"
                } else {
                    "wrong technique"
                },
                titles.join("; ").replace('|', "/")
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan() -> Vec<Planned> {
        load_plan(&fixtures_dir()).unwrap()
    }

    #[test]
    fn the_curated_list_loads_linux_shell_tests_with_their_defaults() {
        let plan = plan();
        let live = plan.iter().filter(|p| p.mode != Mode::Replay).count();
        assert!((60..=90).contains(&live), "{live} live tests");
        assert!(plan.iter().any(|p| p.mode == Mode::Replay));
        let shadow = plan.iter().find(|p| p.guid.starts_with("3723ab77")).unwrap();
        assert_eq!(shadow.technique, "T1003.008");
        assert_eq!(shadow.tactic, "credential-access");
        assert!(
            shadow.command.contains("sudo cat /etc/shadow > /tmp/T1003.008.txt"),
            "{}",
            shadow.command
        );
        assert_eq!(shadow.cleanup.trim(), "rm -f /tmp/T1003.008.txt");
        // An override replaces the default (grep -ri password / would read every disk).
        let grep = plan.iter().find(|p| p.guid.starts_with("bd4cf0d1")).unwrap();
        assert!(grep.command.starts_with("grep -ri password /etc"), "{}", grep.command);
        // No argument is left unsubstituted.
        for p in &plan {
            assert!(!p.command.contains("#{"), "{}: {}", p.guid, p.command);
        }
        let mut guids: Vec<&str> = plan.iter().map(|p| p.guid.as_str()).collect();
        guids.sort_unstable();
        guids.dedup();
        assert_eq!(guids.len(), plan.len(), "a test listed twice");
    }

    #[test]
    fn no_live_test_or_cleanup_reaches_the_host() {
        for p in plan().iter().filter(|p| p.mode != Mode::Replay) {
            assert_eq!(unsafe_reason(&p.command), None, "{} {}: {}", p.guid, p.name, p.command);
            for pre in &p.prereqs {
                assert_eq!(unsafe_reason(&pre.check), None, "{}: {}", p.guid, pre.check);
                if p.mode == Mode::LivePrereq {
                    assert_eq!(unsafe_reason(&pre.get), None, "{}: {}", p.guid, pre.get);
                }
            }
        }
        // And the check does catch what the replayed tests do.
        let plan = plan();
        let stop = plan.iter().find(|p| p.guid.starts_with("c3a377f9")).unwrap();
        assert_eq!(unsafe_reason(&stop.command), Some("systemctl stop"));
        assert_eq!(unsafe_reason("service art-test start"), Some("service start/stop"));
        assert_eq!(unsafe_reason("service -e; else systemctl --type=service; fi"), None);
    }

    #[test]
    fn bad_curated_rows_are_refused() {
        let ok = "T1082\tdiscovery\tcccb070c-df86-4216-a5bc-9fb60c74e27c\tlive\t-\tList OS Information";
        assert!(CuratedRow::parse(ok).is_ok());
        assert!(CuratedRow::parse(&ok.replace("live", "maybe")).is_err());
        assert!(CuratedRow::parse(&ok.replace("\t-\t", "\tnoequals\t")).is_err());
        assert!(CuratedRow::parse("T1082\tdiscovery").is_err());
        let index =
            std::fs::read_to_string(fixtures_dir().join("atomics/Indexes/Indexes-CSV/linux-index.csv")).unwrap();
        let file =
            parse_atomic_file(&std::fs::read_to_string(fixtures_dir().join("atomics/T1082/T1082.yaml")).unwrap())
                .unwrap();
        let row = CuratedRow::parse(ok).unwrap();
        assert!(plan_test(&file, &row, &index).is_ok());
        let wrong_tactic = CuratedRow::parse(&ok.replace("discovery", "impact")).unwrap();
        assert!(plan_test(&file, &wrong_tactic, &index).is_err());
        let unknown_arg = CuratedRow::parse(&ok.replace("\t-\t", "\tnope=1\t")).unwrap();
        assert!(plan_test(&file, &unknown_arg, &index).is_err());
    }

    #[test]
    fn techniques_match_themselves_and_their_parent_after_normalising() {
        assert!(technique_matches("T1003.008", "T1003.008"));
        assert!(technique_matches("T1003.008", "t1003"));
        assert!(!technique_matches("T1003.008", "T1003.007"));
        assert!(!technique_matches("T1003", "T1003.008"));
        // T1562.001 (v18) is T1685 in v19.
        assert!(technique_matches("T1685", "T1562.001"));
    }

    fn run() -> RunWindow {
        RunWindow {
            top_pid: 500,
            top_start_ms: 10_000,
            started_ms: 10_010,
            until_ms: 20_000,
            temp_paths: vec!["/run/ward-attackbench-1/t/abc".into()],
        }
    }

    fn node(pid: u32, start: u64) -> Value {
        json!({"pid": pid, "ppid": 1, "start_time_ms": start, "exe": "/usr/bin/sh", "cmdline": "sh"})
    }

    #[test]
    fn alerts_belong_to_the_test_whose_top_process_is_in_their_lineage() {
        let r = run();
        let lineage = |ancestors: Vec<Value>| {
            json!({"observed_at_ms": 11_000, "entities": [
                {"kind": "process", "pid": 900, "ppid": 800, "start_time_ms": 10_900, "exe": "/usr/bin/cat", "cmdline": "cat /etc/shadow"},
                {"kind": "lineage", "process": node(900, 10_900), "ancestors": ancestors, "rooted": false}]})
        };
        assert_eq!(
            attribute(&lineage(vec![node(800, 10_500), node(500, 10_000)]), &r),
            Some(Attribution::ProcessTree)
        );
        // The same pid with another start time is another process (pid reuse).
        assert_eq!(
            attribute(&lineage(vec![node(800, 10_500), node(500, 90_000)]), &r),
            None
        );
        assert_eq!(attribute(&lineage(vec![node(800, 10_500), node(1, 0)]), &r), None);
        // A direct child named only by its process entity, inside the window.
        let child = json!({"observed_at_ms": 11_000, "entities": [
            {"kind": "process", "pid": 901, "ppid": 500, "start_time_ms": 10_900, "exe": "/usr/bin/id", "cmdline": "id"}]});
        assert_eq!(attribute(&child, &r), Some(Attribution::ProcessTree));
        let late_child = json!({"observed_at_ms": 30_000, "entities": child["entities"].clone()});
        assert_eq!(attribute(&late_child, &r), None);
    }

    #[test]
    fn file_alerts_belong_by_temp_path_or_by_window_when_they_name_no_process() {
        let r = run();
        let file = |path: &str, at: u64| json!({"observed_at_ms": at, "entities": [{"kind": "file", "path": path}]});
        assert_eq!(
            attribute(&file("/run/ward-attackbench-1/t/abc/x", 12_000), &r),
            Some(Attribution::TempPath)
        );
        assert_eq!(
            attribute(&file("/etc/cron.d/persistevil", 12_000), &r),
            Some(Attribution::Window)
        );
        assert_eq!(attribute(&file("/etc/cron.d/persistevil", 25_000), &r), None);
        // A file alert of some other process is not the test's.
        let other = json!({"observed_at_ms": 12_000, "entities": [{"kind": "file", "path": "/etc/x"},
            {"kind": "process", "pid": 7, "ppid": 1, "start_time_ms": 5, "exe": "/x", "cmdline": "x"}]});
        assert_eq!(attribute(&other, &r), None);
    }

    #[test]
    fn judging_finds_the_first_matched_alert_and_its_latency() {
        let p = plan().into_iter().find(|p| p.guid.starts_with("3723ab77")).unwrap();
        let r = run();
        let alert = |title: &str, tech: &str, at: u64, recv: u64| {
            json!({"observed_at_ms": at, "received_at_ms": recv,
                "rule": {"id": title, "title": title, "techniques": [tech]},
                "entities": [{"kind": "process", "pid": 500, "ppid": 1, "start_time_ms": 10_000, "exe": "/usr/bin/sh", "cmdline": "sh"}]})
        };
        let (o, seen, lat, from) = judge(
            &p,
            &r,
            &[
                alert("other", "T1082", 10_500, 10_520),
                alert("shadow", "T1003.008", 10_600, 10_611),
            ],
        );
        assert_eq!(o, Outcome::Matched);
        assert_eq!(seen.len(), 2);
        assert_eq!((lat, from), (Some(11), Some(590)));
        let (o, _, lat, _) = judge(&p, &r, &[alert("other", "T1082", 10_500, 10_520)]);
        assert_eq!((o, lat), (Outcome::WrongTechnique, None));
        assert_eq!(judge(&p, &r, &[]).0, Outcome::NoAlert);
    }

    #[test]
    fn replayed_command_lines_become_events_the_rules_judge() {
        let plan = plan();
        let audit = plan.iter().find(|p| p.guid.starts_with("33a29ab1")).unwrap();
        let events = replay_events(audit, 1);
        assert!(
            events
                .iter()
                .any(|e| e["data"]["cmdline"] == "auditctl -D" && e["data"]["exe"] == "/usr/bin/auditctl"),
            "{events:?}"
        );
        let cron = plan.iter().find(|p| p.guid.starts_with("078e69eb")).unwrap();
        let events = replay_events(cron, 1);
        assert!(
            events
                .iter()
                .any(|e| e["data"]["kind"] == "file" && e["data"]["path"] == "/etc/cron.d/persistevil"),
            "{events:?}"
        );
        assert!(
            !events.iter().any(|e| e["data"]["exe"] == "/usr/bin/echo"),
            "echo is a builtin: {events:?}"
        );
        let (detector, errors) = ward_detect::Detector::load(&ward_detect::default_rule_files(&Default::default()));
        assert!(errors.is_empty(), "{errors:?}");
        let (titles, matched) = replay_judge(cron, &detector, &events);
        assert!(matched, "the cron rule sees a file in /etc/cron.d: {titles:?}");
    }

    #[test]
    fn quantiles_and_the_markdown_report() {
        assert_eq!(quantile(&[], 0.5), None);
        assert_eq!(quantile(&[5, 1, 3], 0.5), Some(3));
        assert_eq!(quantile(&[1, 2, 3, 4, 5, 6, 7, 8, 9, 10], 0.95), Some(10));
        let row = |tactic: &str, outcome: Outcome, lat: Option<u64>| TestResult {
            technique: "T1082".into(),
            technique_name: "System Information Discovery".into(),
            tactic: tactic.into(),
            guid: "g".into(),
            name: "n".into(),
            mode: Mode::Live,
            outcome,
            alerts: Vec::new(),
            detect_latency_ms: lat,
            from_start_ms: lat,
            exit_status: Some(0),
            replay_matches: Some(false),
        };
        let md = markdown(&[
            row("discovery", Outcome::Matched, Some(7)),
            row("discovery", Outcome::NoAlert, None),
            row("impact", Outcome::Skipped("no gpg".into()), None),
        ]);
        assert!(md.contains("Live: 1 of 2 run tests technique-matched (50 %)"), "{md}");
        assert!(md.contains("| discovery | 2 | 1 | 50 % |"), "{md}");
        assert!(md.contains("skipped: no gpg"), "{md}");
        assert!(md.contains("p50 7 ms"), "{md}");
    }
}
