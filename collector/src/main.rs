//! `ward-collector`: the command line. Parses arguments, then hands over to the library.

use std::path::PathBuf;

use anyhow::{Context as _, Result};
use clap::{Parser, Subcommand};
use tokio::sync::watch;
use ward_collector::config::Config;
use ward_collector::feeds::Feed;
use ward_collector::{server, setup, util};

/// mimalloc instead of glibc's malloc: allocation and freeing were a third of the
/// correlation engine's CPU and an eighth of the writer thread's, and the writer
/// thread is what bounds ingest plus correlation (BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "ward-collector",
    version,
    about = "Ward collector: agents' alerts in, incidents and actions out"
)]
struct Cli {
    /// The collector's data directory.
    #[arg(
        long,
        global = true,
        env = "WARD_DATA_DIR",
        default_value = "/var/lib/ward/collector"
    )]
    data_dir: PathBuf,
    /// The settings file; without it, collector.toml in the data dir. The Debian
    /// package uses /etc/ward/collector.toml.
    #[arg(long, global = true, env = "WARD_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create a new data dir: config, CA and certificates, command key, database, admin token.
    Init {
        /// host:port agents will use to reach this collector's QUIC endpoint, written
        /// into a new config (default 127.0.0.1:4433). Refused when the config file
        /// exists: its public_addr is used.
        #[arg(long)]
        public_addr: Option<String>,
    },
    /// Run the collector.
    Serve {
        /// Start even when the database fails its integrity check at start (to
        /// export or back up what it still holds; docs/backup-restore.md).
        #[arg(long)]
        skip_integrity_check: bool,
    },
    /// Enrollment tokens.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Enrolled devices.
    Device {
        #[command(subcommand)]
        command: DeviceCommand,
    },
    /// Sigma rule packs for the agents.
    Rules {
        #[command(subcommand)]
        command: RulesCommand,
    },
    /// API users.
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
    /// The hash-chained audit log.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Replace the command key: agents learn the new key from a rollover signed with the
    /// current one at their next connect; restart the collector afterwards.
    RotateCommandKey {
        /// How long agents keep accepting the keys they pinned before: e.g. 1h, 7d.
        #[arg(long, default_value = "7d")]
        overlap: String,
    },
    /// Import a feed file as exported (shape recognised: JSON, NDJSON, records[], CSV); prints the report as JSON.
    Import {
        #[command(subcommand)]
        command: ImportCommand,
    },
}

#[derive(Subcommand)]
enum ImportCommand {
    /// Sign-ins: Entra ID SigninLogs rows or diagnostic records, Okta System Log events.
    Identity { file: PathBuf },
    /// Email: Defender EmailEvents, EmailAttachmentInfo, EmailUrlInfo, UrlClickEvents, EmailPostDeliveryEvents.
    Mailbox { file: PathBuf },
    /// Other sensors' logs judged by Sigma rules: EVTX files, Sysmon for Linux syslog lines, Sentinel or Winlogbeat JSON.
    Endpoint { file: PathBuf },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Recompute the audit log's hash chain; exits non-zero if an entry was altered, removed or inserted.
    Verify,
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Print a join token for `ward-agent enroll --token`.
    Create {
        /// How many devices may enroll with it.
        #[arg(long, default_value_t = 1)]
        uses: u32,
        /// How long it is valid: e.g. 30m, 24h, 7d.
        #[arg(long, default_value = "24h")]
        ttl: String,
        /// Collector address to put in the token instead of the config's public_addr.
        #[arg(long)]
        addr: Option<String>,
    },
}

#[derive(Subcommand)]
enum DeviceCommand {
    /// List enrolled devices.
    List,
    /// Make a device's keys useless at once (its open connection is closed too).
    Revoke { id: String },
    /// Print a one-time token that lifts isolation at the device's console
    /// (`ward-agent break-glass --token ...`), for a device that lost its collector.
    BreakGlass {
        id: String,
        /// How long it is valid: e.g. 12h, 3d (at most 7d).
        #[arg(long, default_value = "3d")]
        ttl: String,
    },
}

#[derive(Subcommand)]
enum RulesCommand {
    /// Validate every rule in DIR, sign them as the next pack and push it to the agents.
    Push { dir: PathBuf },
}

#[derive(Subcommand)]
enum UserCommand {
    /// Add a user (or give an existing one a new token and role); prints the token.
    Add {
        name: String,
        /// viewer, analyst, approver or admin.
        #[arg(long)]
        role: String,
    },
    /// Every user with their role and when they were added (tokens are never shown again).
    List,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info,quinn=warn".into()),
        )
        .with_writer(std::io::stderr)
        // Colours only on a terminal: under systemd stderr goes to the journal.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let dir = &cli.data_dir;
    let config_path = Config::path(dir, cli.config.as_deref());
    match cli.command {
        Command::Init { public_addr } => {
            let token = setup::init(dir, &config_path, public_addr.as_deref())?;
            println!("initialized {}", dir.display());
            println!("admin API token (shown once, keep it safe): {token}");
        }
        Command::Serve { skip_integrity_check } => serve(dir, &config_path, skip_integrity_check)?,
        Command::Token {
            command: TokenCommand::Create { uses, ttl, addr },
        } => {
            let ttl_ms = util::parse_duration_ms(&ttl).map_err(anyhow::Error::msg)?;
            println!(
                "{}",
                setup::create_join_token(dir, &config_path, uses, ttl_ms, addr.as_deref())?
            );
        }
        Command::RotateCommandKey { overlap } => {
            let overlap_ms = util::parse_duration_ms(&overlap).map_err(anyhow::Error::msg)?;
            let r = setup::rotate_command_key(dir, overlap_ms)?;
            println!("rollover {} to command key {}", r.serial, hex::encode(r.new_key.0));
            if let Some(v) = r.pack_version {
                println!("rule pack signed again with the new key as version {v}");
            }
            println!(
                "agents accept the previous keys until {} (epoch ms); restart the collector now to sign with the new key",
                r.retire_at_ms
            );
        }
        Command::Device {
            command: DeviceCommand::Revoke { id },
        } => {
            setup::revoke_device(dir, &id)?;
            println!("revoked {id}");
        }
        Command::Device {
            command: DeviceCommand::BreakGlass { id, ttl },
        } => {
            let ttl_ms = util::parse_duration_ms(&ttl).map_err(anyhow::Error::msg)?;
            println!("{}", setup::break_glass_token(dir, &id, ttl_ms)?);
        }
        Command::Device {
            command: DeviceCommand::List,
        } => {
            println!(
                "{:<26}  {:<24}  {:<10}  {:<9}  {:<23}  CLOCK (ms, device - collector)",
                "ID", "HOSTNAME", "VERSION", "STATE", "LAST SEEN"
            );
            for d in setup::list_devices(dir)? {
                let state = if d.revoked_at_ms.is_some() {
                    "revoked"
                } else {
                    d.isolation.as_str()
                };
                let seen = d.last_seen_ms.map_or_else(
                    || "never".to_string(),
                    |ms| util::show_ms(u64::try_from(ms).unwrap_or(0)),
                );
                let clock = d.clock_skew_ms.map_or_else(|| "-".to_string(), |ms| format!("{ms:+}"));
                println!(
                    "{:<26}  {:<24}  {:<10}  {:<9}  {:<23}  {}",
                    d.id, d.hostname, d.agent_version, state, seen, clock
                );
            }
        }
        Command::Rules {
            command: RulesCommand::Push { dir: rules },
        } => {
            let pushed = setup::push_rules(dir, &rules)?;
            println!(
                "rule pack {} with {} rules signed; connected agents receive it within a second",
                pushed.version, pushed.rules
            );
            let s = pushed.context.stats;
            if s.clipped + s.dropped > 0 {
                println!(
                    "rule context: {} field(s) cut to their size limit, {} reference(s) or item(s) dropped (the alert page says which)",
                    s.clipped, s.dropped
                );
            }
        }
        Command::User {
            command: UserCommand::Add { name, role },
        } => {
            let token = setup::add_user(dir, &name, &role)?;
            println!("{token}");
        }
        Command::User {
            command: UserCommand::List,
        } => {
            println!("{:<32}  {:<9}  ADDED", "NAME", "ROLE");
            for (name, role, added) in setup::list_users(dir)? {
                println!(
                    "{name:<32}  {role:<9}  {}",
                    util::show_ms(u64::try_from(added).unwrap_or(0))
                );
            }
        }
        Command::Audit {
            command: AuditCommand::Verify,
        } => {
            let report = setup::verify_audit(dir)?;
            println!("verified entries: {}", report.verified);
            println!("unchained legacy entries: {}", report.unchained_legacy);
            println!("head: {}", report.head.as_deref().unwrap_or("(none)"));
            if let Some(id) = report.broken_at {
                println!("BROKEN at entry {id}");
                anyhow::bail!("the audit chain is broken at entry {id}: it was altered, removed or inserted");
            }
            println!("OK");
        }
        Command::Import { command } => {
            let (feed, file) = match command {
                ImportCommand::Identity { file } => (Feed::Identity, file),
                ImportCommand::Mailbox { file } => (Feed::Mailbox, file),
                ImportCommand::Endpoint { file } => (Feed::Endpoint, file),
            };
            // Fails (non-zero exit) only when nothing in the file could be read.
            let report = setup::import_feed(dir, &config_path, feed, &file)?;
            println!("{}", serde_json::to_string_pretty(&report)?);
        }
    }
    Ok(())
}

fn serve(dir: &std::path::Path, config_path: &std::path::Path, skip_integrity_check: bool) -> Result<()> {
    let mut config = ward_collector::setup::load_config(config_path)?;
    config.skip_integrity_check = skip_integrity_check;
    tracing::info!(config = %config_path.display(), data_dir = %dir.display(), "collector starting");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("tokio runtime")?;
    runtime.block_on(async {
        let (stop_tx, stop_rx) = watch::channel(false);
        tokio::spawn(async move {
            wait_for_signal().await;
            let _ = stop_tx.send(true);
        });
        server::run(dir, config, stop_rx, |bound| {
            println!("QUIC listening on {}", bound.quic);
            let scheme = if bound.https { "https" } else { "http" };
            println!("HTTP listening on {scheme}://{}", bound.http);
        })
        .await
    })?;
    Ok(())
}

async fn wait_for_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
