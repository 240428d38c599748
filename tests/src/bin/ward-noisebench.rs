//! Noise benchmark for BENCHMARKS.md and docs/detection-content.md: alerts per
//! hour, by rule, while a developer works. Starts a real collector and two real
//! agents with the shipped sensor defaults (file watches on /etc, /tmp, /var/log...;
//! auth and audit logs where present): one runs the default pack, the other every
//! shipped rule (so each excluded rule's noise is measured on the same activity).
//! Meanwhile a shell loop does what a developer does: cargo builds and tests of a
//! crate with a build script (target dir under /tmp), git, curl to localhost, vim,
//! package-manager queries, node, python, tar, make. Everything else the machine
//! runs is seen too (it is a real agent): say what else ran when you report.
//!
//!   cargo build -p ward-collector -p ward-agent -p ward-tests
//!   target/debug/ward-noisebench --minutes 10        (as root: the process connector)
//!
//! Prints two tables per agent: every alert it raised (other people's builds and
//! tests on a shared machine included), and those the activity caused (the
//! session shell among the alert's ancestors, or its work dir in the
//! alert): rule, level, alert rows at the collector, events folded into them, and
//! alert rows per hour.
//!
//! The default-pack agent records every event it judges
//! (`[detection] record_events_path`); at the end `ward-agent rules test` times each
//! rule of the default pack alone over those events and the benchmark prints the
//! costliest rules and those over the per-rule budget. Timings come from
//! target/release/ward-agent when it is built (`cargo build --release -p ward-agent`),
//! as the budget is set for a release build; otherwise from the debug agent, said so.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Parser;
use ward_tests::{Agent, Collector};

#[derive(Parser)]
struct Cli {
    /// How long the developer activity runs.
    #[arg(long, default_value_t = 10.0)]
    minutes: f64,
    /// Pause between two rounds of activity, seconds.
    #[arg(long, default_value_t = 5)]
    pause_s: u64,
    /// Rules listed in the per-rule cost table (the costliest first).
    #[arg(long, default_value_t = 15)]
    costliest: usize,
}

/// One round of developer activity; `$1` is the work dir, `$2` the collector's
/// HTTP address, `$3` the round number.
const ROUND: &str = r#"
set -u
W=$1; HTTP=$2; I=$3
export CARGO_TARGET_DIR=$W/target CARGO_NET_OFFLINE=true
cd "$W/app"
echo "// round $I" >> src/lib.rs
cargo build -q 2>/dev/null
cargo test -q 2>/dev/null >/dev/null
cargo run -q 2>/dev/null >/dev/null
git add -A && git commit -qm "round $I" >/dev/null
git log --oneline | head -3 >/dev/null; git status --short >/dev/null; git diff HEAD~1 --stat >/dev/null
git branch -f "topic-$I" >/dev/null 2>&1; git stash list >/dev/null
curl -s "http://$HTTP/healthz" >/dev/null
curl -s -o "$W/page.json" "http://$HTTP/api/v1/alerts" >/dev/null
vim -Es -c "normal Go- note $I" -c wq "$W/app/NOTES.md" </dev/null
sed -i "s/^version = .*/version = \"0.1.$I\"/" Cargo.toml
apt-cache policy bash >/dev/null 2>&1; dpkg -l >/dev/null 2>&1; dpkg -S /usr/bin/curl >/dev/null 2>&1
grep -rn "fn " src | wc -l >/dev/null; find . -name '*.rs' -not -path './target/*' | xargs wc -l >/dev/null
ps aux >/dev/null; ls -la /tmp >/dev/null; env | sort >/dev/null; which cargo >/dev/null
python3 -c 'import json,sys; print(json.dumps({"ok": 1}))' >/dev/null
node -e 'console.log(JSON.stringify({ok: 1}))' >/dev/null 2>&1; npm --version >/dev/null 2>&1
tar czf "$W/app.tgz" --exclude=./target . && tar tzf "$W/app.tgz" >/dev/null && rm -f "$W/app.tgz"
make -s -C "$W/mk" >/dev/null 2>&1
rm -rf "$W/scratch" && mkdir -p "$W/scratch" && cp src/*.rs "$W/scratch/" && rm -rf "$W/scratch"
printf '#!/bin/sh\necho hi\n' > "$W/hello.sh" && chmod +x "$W/hello.sh" && "$W/hello.sh" >/dev/null
nohup sleep 1 >/dev/null 2>&1 &
base64 "$W/app/NOTES.md" > "$W/notes.b64" && base64 -d "$W/notes.b64" >/dev/null
crontab -l >/dev/null 2>&1; id >/dev/null; whoami >/dev/null; hostname >/dev/null; uname -a >/dev/null
ip addr >/dev/null 2>&1; ss -tln >/dev/null 2>&1; uptime >/dev/null; df -h >/dev/null; free -m >/dev/null
systemctl --version >/dev/null 2>&1; journalctl -n 5 --no-pager >/dev/null 2>&1; sudo -n true >/dev/null 2>&1
ssh -V >/dev/null 2>&1; openssl version >/dev/null 2>&1; wget --version >/dev/null 2>&1; pip --version >/dev/null 2>&1
cat /etc/os-release >/dev/null; less -V >/dev/null 2>&1; diff -u Cargo.toml Cargo.toml >/dev/null
wait
"#;

const LIB: &str = "pub fn add(a: u64, b: u64) -> u64 {\n    a + b\n}\n\n#[cfg(test)]\nmod tests {\n    #[test]\n    fn adds() {\n        assert_eq!(super::add(2, 2), 4);\n    }\n}\n";

fn sh(cmd: &str, dir: &Path) -> Result<()> {
    let ok = Command::new("bash")
        .args(["-c", cmd])
        .current_dir(dir)
        .stdout(Stdio::null())
        .status()?
        .success();
    if !ok {
        bail!("`{cmd}` failed");
    }
    Ok(())
}

/// A small crate with a build script and a test, a git repo, a Makefile.
fn project(w: &Path) -> Result<()> {
    let app = w.join("app");
    std::fs::create_dir_all(app.join("src"))?;
    std::fs::write(
        app.join("Cargo.toml"),
        "[package]\nname = \"noiseapp\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[workspace]\n",
    )?;
    std::fs::write(
        app.join("build.rs"),
        "fn main() {\n    println!(\"cargo:rerun-if-changed=build.rs\");\n}\n",
    )?;
    std::fs::write(app.join("src/lib.rs"), LIB)?;
    std::fs::write(
        app.join("src/main.rs"),
        "fn main() {\n    println!(\"{}\", noiseapp::add(1, 2));\n}\n",
    )?;
    std::fs::write(app.join("NOTES.md"), "# notes\n")?;
    sh(
        "git init -q && git config user.email dev@example.com && git config user.name dev && git add -A && git commit -qm init",
        &app,
    )?;
    let mk = w.join("mk");
    std::fs::create_dir_all(&mk)?;
    std::fs::write(mk.join("hello.c"), "int main(void) { return 0; }\n")?;
    std::fs::write(
        mk.join("Makefile"),
        "hello: hello.c\n\tcc -o hello hello.c\n\trm -f hello\n",
    )?;
    Ok(())
}

const LEVELS: [&str; 5] = ["informational", "low", "medium", "high", "critical"];

/// One rule's figures on one device.
struct Row {
    id: String,
    title: String,
    level: String,
    alerts: i64,
    events: i64,
    /// What the rule matched in its first alert (cut), to tell its cause.
    sample: String,
}

/// Every alert of `device`, or (with `workload`) only those the activity caused:
/// its process tree (the session shell's pid among the ancestors) or its work dir.
fn tally(collector: &Collector, device: &str, workload: Option<(u32, &str)>) -> Result<Vec<Row>> {
    let db = collector.db()?;
    let (pid, dir) = match workload {
        Some((pid, dir)) => (format!("%\"pid\":{pid},%"), format!("%{dir}%")),
        None => ("%".to_string(), "%".to_string()),
    };
    let mut stmt = db.prepare(
        "SELECT rule_id, rule_title, MAX(severity), COUNT(*), SUM(count), MIN(matched) \
         FROM alerts WHERE device_id = ?1 AND (entities LIKE ?2 OR entities LIKE ?3) \
         GROUP BY rule_id ORDER BY COUNT(*) DESC",
    )?;
    let rows = stmt.query_map([device, pid.as_str(), dir.as_str()], |r| {
        let sev: i64 = r.get(2)?;
        let sample: String = r.get(5)?;
        Ok(Row {
            id: r.get(0)?,
            title: r.get(1)?,
            level: LEVELS.get(sev as usize).copied().unwrap_or("?").to_string(),
            alerts: r.get(3)?,
            events: r.get(4)?,
            sample: sample.chars().take(200).collect::<String>().replace('|', "/"),
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

fn report(name: &str, rows: &[Row], hours: f64) {
    let total: i64 = rows.iter().map(|r| r.alerts).sum();
    println!(
        "\n## {name}: {total} alerts in {:.1} min = {:.1} alerts/hour\n",
        hours * 60.0,
        total as f64 / hours
    );
    println!("| rule | id | level | alerts | events | alerts/hour | first match |");
    println!("|---|---|---|---:|---:|---:|---|");
    for r in rows {
        println!(
            "| {} | {} | {} | {} | {} | {:.1} | `{}` |",
            r.title,
            r.id,
            r.level,
            r.alerts,
            r.events,
            r.alerts as f64 / hours,
            r.sample
        );
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    let collector = Collector::start()?;
    let every: Vec<String> = ward_detect::defaultpack::SIGMAHQ_RULES
        .iter()
        .map(|r| format!("{:?}", r.id))
        .collect();
    // The shipped sensor defaults, with quick status and reconnects for the harness.
    let base = "[agent]\nstatus_interval_ms = 500\nheartbeat_interval_ms = 2000\n\n[link]\nreconnect_min_ms = 100\nreconnect_max_ms = 1000\n";
    let recorded = tempfile::Builder::new().prefix("ward-noisebench-events-").tempdir()?;
    let events = recorded.path().join("events.jsonl");
    let default_agent = Agent::start_with(&collector, |_| {
        format!(
            "{base}\n[detection]\nrecord_events_path = {:?}\n",
            events.display().to_string()
        )
    })?;
    let all_agent = Agent::start_with(&collector, |_| {
        format!("{base}\n[detection]\nenabled_rules = [{}]\n", every.join(", "))
    })?;
    default_agent.wait_connected(Duration::from_secs(30))?;
    all_agent.wait_connected(Duration::from_secs(30))?;
    // Let the start-up rescan and first inventory pass before counting.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let start_ms = ward_tests::now_ms();

    let work = tempfile::Builder::new().prefix("ward-noisebench-").tempdir_in("/tmp")?;
    project(work.path())?;
    let http = collector.http.to_string();
    let started = Instant::now();
    let until = Duration::from_secs_f64(cli.minutes * 60.0);
    // One terminal session for the whole run, as a developer works: a shell that
    // leads its own session (setsid), fed on stdin as typed (the script never sits in
    // one command line), each round a function call, so the commands are children
    // of that shell as they are of a login shell.
    let mut session = Command::new("setsid")
        .args(["bash", "-s", "--"])
        .arg(work.path())
        .arg(&http)
        .current_dir(work.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .context("the developer's shell")?;
    let shell_pid = session.id();
    {
        use std::io::Write as _;
        let mut stdin = session.stdin.take().context("stdin")?;
        let script = format!(
            "round() {{\n{ROUND}\n}}\nI=0\nwhile :; do I=$((I+1)); round \"$1\" \"$2\" $I; echo round $I; sleep {}; done\n",
            cli.pause_s
        );
        stdin.write_all(script.as_bytes())?;
        // Kept open: the shell reads the loop and runs it until it is stopped.
        std::mem::forget(stdin);
    }
    let stdout = session.stdout.take().context("stdout")?;
    let rounds = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counted = rounds.clone();
    std::thread::spawn(move || {
        use std::io::BufRead as _;
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.starts_with("round ") {
                counted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }
    });
    tokio::time::sleep(until).await;
    // The shell leads its own process group: stop it and whatever it runs.
    // SAFETY: kill has no memory effects; the group is the session this run started.
    #[allow(unsafe_code)]
    unsafe {
        libc::kill(-(shell_pid as i32), libc::SIGTERM);
    }
    let _ = session.wait();
    let rounds = rounds.load(std::sync::atomic::Ordering::Relaxed);
    let elapsed = started.elapsed();
    // Repeats folded in the agents' 60 s windows arrive when the window closes.
    tokio::time::sleep(Duration::from_secs(65)).await;
    let hours = elapsed.as_secs_f64() / 3600.0;
    println!(
        "# ward-noisebench: {rounds} rounds of developer activity in {:.1} min (alerts observed since {start_ms})",
        elapsed.as_secs_f64() / 60.0
    );
    let mut by_agent = BTreeMap::new();
    let me = shell_pid;
    let dir = work.path().display().to_string();
    for (name, agent) in [("default pack", &default_agent), ("every shipped rule", &all_agent)] {
        let rows = tally(&collector, &agent.device_id, None)?;
        report(&format!("{name}, the whole machine"), &rows, hours);
        let mine = tally(&collector, &agent.device_id, Some((me, &dir)))?;
        report(&format!("{name}, caused by the activity"), &mine, hours);
        by_agent.insert(name, mine);
    }
    let over_medium = by_agent["default pack"]
        .iter()
        .filter(|r| r.level == "high" || r.level == "critical")
        .count();
    println!("\ndefault pack, caused by the activity: {over_medium} rules above medium fired");
    rule_costs(&default_agent, &events, cli.costliest)
}

/// Times each rule of the default pack alone over the events the default-pack agent
/// judged (`ward-agent rules test` with that agent's config) and prints the costliest
/// and every rule over the budget.
fn rule_costs(agent: &Agent, events: &Path, costliest: usize) -> Result<()> {
    let debug = ward_tests::bin("ward-agent");
    let release = debug
        .parent()
        .and_then(Path::parent)
        .map(|target| target.join("release/ward-agent"))
        .filter(|p| p.exists());
    let timing = release.clone().unwrap_or(debug);
    let size = std::fs::metadata(events).map(|m| m.len()).unwrap_or(0);
    let out = Command::new(&timing)
        .args(["rules", "test", "--config"])
        .arg(agent.dir.path().join("agent.toml"))
        .arg(events)
        .output()
        .with_context(|| format!("{} rules test", timing.display()))?;
    if !out.status.success() {
        bail!(
            "{} rules test failed: {}",
            timing.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let report = String::from_utf8_lossy(&out.stdout);
    let Some(costs) = report.split("\ntime per rule").nth(1) else {
        bail!(
            "rules test printed no per-rule times over {} ({size} bytes)",
            events.display()
        );
    };
    let mut lines = costs.lines();
    let heading = lines.next().unwrap_or_default();
    println!(
        "\n## default pack: per-rule cost over the {size} bytes of events it judged ({}{})\n",
        timing.display(),
        if release.is_some() {
            ""
        } else {
            "; a debug build: not comparable with the budget, which is for a release build"
        }
    );
    println!("time per rule{heading}");
    let rows: Vec<&str> = lines.take_while(|l| !l.trim().is_empty()).collect();
    if let Some((header, body)) = rows.split_first() {
        println!("{header}");
        for row in body.iter().take(costliest) {
            println!("{row}");
        }
        for row in body.iter().skip(costliest).filter(|r| r.ends_with("OVER BUDGET")) {
            println!("{row}");
        }
    }
    Ok(())
}
