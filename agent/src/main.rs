//! `ward-agent`: the command line. Parses arguments, then hands over to the library.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};
use clap::{Parser, Subcommand};
use tokio::sync::watch;
use ward_agent::config::Config;
use ward_agent::identity::{self, Identity};
use ward_agent::status::Status;
use ward_agent::{link, run, sensor};

#[derive(Parser)]
#[command(name = "ward-agent", version, about = "Ward endpoint agent")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Enroll this device with the collector named in a join token. Prefer
    /// `--token-file` (a file, or `-` for stdin) or `WARD_JOIN_TOKEN`: a token
    /// on the command line is visible to every user in the process list.
    Enroll {
        /// The join token itself (visible in the process list while enrolling).
        #[arg(
            long,
            env = "WARD_JOIN_TOKEN",
            conflicts_with = "token_file",
            required_unless_present = "token_file"
        )]
        token: Option<String>,
        /// Read the join token from this file, or from stdin with `-`.
        #[arg(long)]
        token_file: Option<PathBuf>,
        #[arg(long, default_value = "/var/lib/ward/agent")]
        state_dir: PathBuf,
    },
    /// Run the agent.
    Run {
        /// TOML config; without it the defaults apply.
        #[arg(long)]
        config: Option<PathBuf>,
        #[arg(long, default_value = "/var/lib/ward/agent")]
        state_dir: PathBuf,
    },
    /// Enrollment, connection, outbox depth, rule pack and isolation state. Exits 0
    /// when running, connected and storing; 1 when running but disconnected or its
    /// storage fails; 3 when not running; 4 when not enrolled.
    Status {
        #[arg(long, default_value = "/var/lib/ward/agent")]
        state_dir: PathBuf,
    },
    /// Lift network isolation at the console of a device that lost its collector
    /// for good, with a one-time token from `ward-collector device break-glass`.
    BreakGlass {
        #[arg(long)]
        token: String,
        #[arg(long, default_value = "/var/lib/ward/agent")]
        state_dir: PathBuf,
    },
    /// Detection engineering.
    Rules {
        #[command(subcommand)]
        command: RulesCommand,
    },
}

#[derive(Subcommand)]
enum RulesCommand {
    /// Show which rules match which events in EVENTS.jsonl, the matches per rule and
    /// each rule's time alone over the events. With RULES_DIR, the rules in it;
    /// without, the rules the agent runs (the default pack as `--config` chooses it,
    /// plus its rules dir).
    #[command(override_usage = "ward-agent rules test [--config FILE] [RULES_DIR] EVENTS.jsonl")]
    Test {
        /// `[RULES_DIR] EVENTS.jsonl`
        #[arg(num_args = 1..=2, required = true, value_names = ["RULES_DIR", "EVENTS"])]
        paths: Vec<PathBuf>,
        /// The agent config whose [detection] choices apply (without RULES_DIR).
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

fn main() -> Result<()> {
    ward_agent::memory::limit_malloc_arenas();
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info,quinn=warn".into()),
        )
        .with_writer(std::io::stderr)
        // Colours only on a terminal: under systemd stderr goes to the journal.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let _ = rustls::crypto::ring::default_provider().install_default();
    match cli.command {
        Command::Enroll {
            token,
            token_file,
            state_dir,
        } => {
            let token = match (token, token_file) {
                (_, Some(file)) => read_token(&file)?,
                (Some(t), None) => t,
                (None, None) => anyhow::bail!("give --token-file FILE (or - for stdin), or WARD_JOIN_TOKEN"),
            };
            enroll(&token, &state_dir)
        }
        Command::Run { config, state_dir } => {
            let config = Config::load(config.as_deref())?;
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .context("tokio runtime")?;
            runtime.block_on(async {
                let (stop_tx, stop_rx) = watch::channel(false);
                tokio::spawn(async move {
                    wait_for_signal().await;
                    let _ = stop_tx.send(true);
                });
                run::run(config, state_dir, stop_rx).await
            })?;
            Ok(())
        }
        Command::Status { state_dir } => {
            let code = status(&state_dir)?;
            std::process::exit(i32::from(code))
        }
        Command::BreakGlass { token, state_dir } => {
            let identity = Identity::load(&state_dir)?;
            let e = &identity.enrollment;
            ward_agent::respond::isolate::break_glass_release(
                &state_dir,
                &token,
                e.device_id,
                &e.keys.active(ward_agent::clock::now_ms()),
                ward_agent::clock::now_ms(),
            )
            .context("break-glass release")?;
            println!("isolation released; the running agent stops enforcing it within seconds");
            Ok(())
        }
        Command::Rules {
            command: RulesCommand::Test { paths, config },
        } => {
            let started = std::time::Instant::now();
            let mut clock_ns = || u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
            let report = match paths.as_slice() {
                [rules_dir, events] => ward_detect::rulestest::run(rules_dir, events, &mut clock_ns)?,
                [events] => {
                    let config = Config::load(config.as_deref())?;
                    let (local, errors) = ward_agent::rulepack::local_rules(&config.detection.rules_dir);
                    for e in errors {
                        eprintln!("local rule skipped: {e}");
                    }
                    let files = ward_agent::rulepack::compose(&config.detection.pack_choice(), local, &[]);
                    ward_detect::rulestest::run_files(&files, Vec::new(), events, &mut clock_ns)?
                }
                _ => bail!("give [RULES_DIR] EVENTS"),
            };
            print!("{report}");
            Ok(())
        }
    }
}

/// Longest token file read (a token is a few hundred characters).
const MAX_TOKEN_FILE_BYTES: u64 = 4096;

/// The join token from `path`, or stdin for `-`: the first line, trimmed.
fn read_token(path: &Path) -> Result<String> {
    use std::io::Read as _;
    let mut text = String::new();
    if path == Path::new("-") {
        std::io::stdin()
            .take(MAX_TOKEN_FILE_BYTES)
            .read_to_string(&mut text)
            .context("reading the join token from stdin")?;
    } else {
        std::fs::File::open(path)
            .and_then(|f| f.take(MAX_TOKEN_FILE_BYTES).read_to_string(&mut text))
            .with_context(|| format!("reading the join token from {}", path.display()))?;
    }
    let token = text.lines().next().unwrap_or("").trim().to_string();
    anyhow::ensure!(!token.is_empty(), "no join token in {}", path.display());
    Ok(token)
}

fn enroll(token: &str, state_dir: &Path) -> Result<()> {
    let token: ward_protocol::JoinToken = token.parse().context("join token")?;
    let (signing_key, tls_pkcs8) = identity::load_or_create_keys(state_dir)?;
    let inventory = sensor::inventory::collect(env!("CARGO_PKG_VERSION"));
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let enrollment = runtime
        .block_on(link::enroll(&token, &signing_key, &tls_pkcs8, inventory))
        .with_context(|| format!("enrolling with {}", token.collector_addr))?;
    Identity::save_enrollment(state_dir, &enrollment)?;
    println!(
        "enrolled as device {} with collector {}",
        enrollment.device_id, enrollment.collector_addr
    );
    Ok(())
}

/// `ward-agent status`'s exit codes, for scripts and monitoring (documented in
/// docs/enrolling-devices.md).
mod exit_code {
    /// Running, connected, storing alerts.
    pub const OK: u8 = 0;
    /// Running but disconnected from the collector, or its storage is failing.
    pub const DEGRADED: u8 = 1;
    /// Enrolled, but the agent is not running (or has never run).
    pub const NOT_RUNNING: u8 = 3;
    /// Not enrolled.
    pub const NOT_ENROLLED: u8 = 4;
}

fn status(state_dir: &Path) -> Result<u8> {
    let identity = match Identity::load(state_dir) {
        Ok(i) => i,
        Err(identity::IdentityError::NotEnrolled(_)) => {
            println!("enrolled: no ({} holds no identity)", state_dir.display());
            return Ok(exit_code::NOT_ENROLLED);
        }
        Err(e) => bail!(e),
    };
    let e = &identity.enrollment;
    println!(
        "enrolled: yes, device {} with collector {}",
        e.device_id, e.collector_addr
    );
    Ok(match Status::read(state_dir) {
        Some(s) if s.is_live(ward_agent::clock::now_ms(), 2_000) => {
            let link = if s.connected {
                "connected".to_string()
            } else {
                format!("disconnected ({})", s.last_error.as_deref().unwrap_or("connecting"))
            };
            println!("agent: running (pid {})", s.pid);
            println!("connection: {link}");
            println!("outbox: {} alerts, {} bytes", s.outbox_depth, s.outbox_bytes);
            println!(
                "rule pack: version {} ({} rules, {} skipped)",
                s.rule_pack_version, s.rules_loaded, s.rule_errors
            );
            println!("isolation: {}", s.isolation);
            println!("alerts: {} raised, {} delivered", s.alerts_raised, s.alerts_delivered);
            println!(
                "detection: {} rule verdicts evaluated, {} repeats answered from the verdict memo",
                s.verdicts_evaluated, s.verdicts_remembered
            );
            if let Some(skew) = s.clock_skew_ms {
                println!("clock: {}", ward_agent::status::describe_skew(skew));
            }
            for sensor in &s.sensors {
                println!("sensor {}", ward_agent::sensor::board::describe(sensor));
            }
            match &s.storage_error {
                None => println!("storage: ok"),
                Some(e) => println!(
                    "storage: FAILING: {e}; {} alerts waiting in memory, {} dropped (reported once storage works)",
                    s.alerts_waiting, s.alerts_lost_in_memory
                ),
            }
            if s.connected && s.storage_error.is_none() {
                exit_code::OK
            } else {
                exit_code::DEGRADED
            }
        }
        Some(s) => {
            println!("agent: not running (last status from pid {})", s.pid);
            println!("outbox: {} alerts waiting", s.outbox_depth);
            println!("rule pack: version {}", s.rule_pack_version);
            println!("isolation: {}", s.isolation);
            exit_code::NOT_RUNNING
        }
        None => {
            println!("agent: has not run yet");
            exit_code::NOT_RUNNING
        }
    })
}

async fn wait_for_signal() {
    let Ok(mut term) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) else {
        let _ = tokio::signal::ctrl_c().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
