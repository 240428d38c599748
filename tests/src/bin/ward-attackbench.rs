//! Coverage benchmark for BENCHMARKS.md: runs the curated Atomic Red Team Linux
//! tests (`tests/fixtures/atomic-red-team/curated.tsv`) against a real collector and
//! a real agent, each test in a lab of namespaces so nothing on the host changes
//! (see `ward_tests::attack::lab`), and reports which tests raised an alert naming
//! their ATT&CK technique, by tactic, with detection latency; tests unsafe to run
//! are replayed as events and reported apart. Root only (eBPF, mounts).
//!
//!   cargo build -p ward-collector -p ward-agent -p ward-tests --bin ward-attackbench
//!   sudo target/debug/ward-attackbench --out target/attackbench
//!
//! Prints the markdown report; writes it with the JSON (every alert attributed to
//! every test) and the replayed events to `--out`. Exits non-zero when a protected
//! host path changed.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Result, bail};
use clap::Parser;
use ward_tests::attack::{bench, markdown};

#[derive(Parser)]
struct Cli {
    /// Where the report, the JSON and the replayed events go.
    #[arg(long, default_value = "target/attackbench")]
    out: PathBuf,
    /// Only these tests (GUID prefixes, comma-separated).
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// How long alerts may lag a test's command, milliseconds.
    #[arg(long, default_value_t = 1500)]
    settle_ms: u64,
    /// A test's command is killed after this many seconds.
    #[arg(long, default_value_t = 30)]
    timeout_s: u64,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    // Outside every path the lab overlays (/tmp is one): the collector's and the
    // agent's temporary dirs, the lab's scripts and the sudo stand-in.
    let work = PathBuf::from(format!("/run/ward-attackbench-{}", std::process::id()));
    std::fs::create_dir_all(work.join("tmp"))?;
    if tempfile::env::override_temp_dir(&work.join("tmp")).is_err() {
        bail!("the temporary dir was already chosen");
    }
    let opts = bench::Options {
        only: cli.only,
        settle: Duration::from_millis(cli.settle_ms),
        timeout: Duration::from_secs(cli.timeout_s),
        work_dir: work.clone(),
    };
    let outcome = bench::run(&opts).await;
    let replay_src = work.join("replay");
    let finish = |results: &[ward_tests::attack::TestResult]| -> Result<()> {
        let md = markdown(results);
        println!("{md}");
        bench::write_report(&cli.out, results, &md)?;
        if replay_src.exists() {
            let dst = cli.out.join("replay");
            std::fs::create_dir_all(&dst)?;
            for e in std::fs::read_dir(&replay_src)?.flatten() {
                std::fs::copy(e.path(), dst.join(e.file_name()))?;
            }
        }
        Ok(())
    };
    let result = match outcome {
        Ok((results, changed)) => {
            finish(&results)?;
            if changed.is_empty() {
                eprintln!("host check: the protected paths are unchanged");
                Ok(())
            } else {
                eprintln!("HOST CHANGED during the run ({} differences):", changed.len());
                for c in changed.iter().take(50) {
                    eprintln!("  {c}");
                }
                Err(anyhow::anyhow!(
                    "the host changed during the run: see the differences above"
                ))
            }
        }
        Err(e) => Err(e),
    };
    let _ = std::fs::remove_dir_all(&work);
    result
}
