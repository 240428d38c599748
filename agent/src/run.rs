//! `ward-agent run`: loads the identity, rules and outbox, then runs sensors,
//! detection, delivery and the status writer until shutdown.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use thiserror::Error;
use tokio::sync::{Notify, mpsc, watch};
use tracing::{info, warn};

use crate::alert::AlertBuilder;
use crate::clock::now_ms;
use crate::config::Config;
use crate::delivery::Delivery;
use crate::identity::{Identity, IdentityError};
use crate::keys::PinnedKeys;
use crate::lifecycle::{self, PreviousRun};
use crate::outbox::Outbox;
use crate::pipeline::{Rules, run_detection};
use crate::respond::executor::Executor;
use crate::respond::isolate;
use crate::rulepack;
use crate::sensor::{SensorBoard, inventory, run_sensors};
use crate::shared::Shared;
use crate::status::Status;
use ward_detect::Detector;

pub const OUTBOX_FILE: &str = "outbox.db";
/// How long after start the agent releases what start-up alone used.
const STARTUP_SETTLES: Duration = Duration::from_secs(20);

#[derive(Debug, Error)]
pub enum RunError {
    #[error(transparent)]
    Identity(#[from] IdentityError),
    #[error("outbox: {0}")]
    Outbox(#[from] crate::outbox::OutboxError),
    #[error("cannot write the running marker in the state dir: {0}")]
    Marker(std::io::Error),
}

/// Compiles the rules the agent starts with: built-in, the local rules dir, and
/// the last known good pushed pack.
pub fn initial_rules(config: &Config, state_dir: &Path, identity: &Identity) -> (Rules, usize) {
    let (local, local_errors) = rulepack::local_rules(&config.detection.rules_dir);
    for e in &local_errors {
        warn!(error = %e, "local rule skipped");
    }
    let pack = rulepack::load(state_dir, &identity.enrollment.keys.active(now_ms()));
    let version = pack.as_ref().map(|p| p.version).unwrap_or(0);
    let files = rulepack::compose(
        &config.detection.pack_choice(),
        local,
        pack.as_ref().map(|p| p.rules.as_slice()).unwrap_or(&[]),
    );
    let (detector, errors) = Detector::load(&files);
    for e in &errors {
        warn!(error = %e, "rule skipped");
    }
    (Rules { version, detector }, errors.len() + local_errors.len())
}

pub async fn run(config: Config, state_dir: PathBuf, mut shutdown: watch::Receiver<bool>) -> Result<(), RunError> {
    let identity = Identity::load(&state_dir)?;
    // Before any start time is read: the same process keeps the same start time across
    // agent restarts (kill commands and correlation compare it exactly).
    crate::clock::pin_boot_time(&state_dir);
    let mut outbox = Outbox::open(&state_dir.join(OUTBOX_FILE), config.outbox.max_bytes)?;
    let (judged_through, _) = outbox.judged_since(u64::MAX)?;
    let previous = PreviousRun::read(&state_dir, judged_through);
    let max_delay = config.sensors.file_max_delay_ms;
    if let Some(reason) = previous.unclean_reason(max_delay) {
        warn!(%reason, "the last run did not stop cleanly");
        outbox.report_loss(0, &reason)?;
    }
    let mut config = config;
    let started_at_ms = now_ms();
    // What changed while the agent was down (since its last run), or else since this
    // start: a file written before its directory's watch is in place is still seen.
    let rescan_since = previous.rescan_since_ms(max_delay).unwrap_or(started_at_ms);
    let (_, judged) = outbox.judged_since(rescan_since)?;
    config.sensors.file_rescan = Some(crate::sensor::file::Rescan {
        since_ms: rescan_since,
        judged,
    });
    lifecycle::mark_running(
        &state_dir,
        lifecycle::Marker {
            pid: std::process::id(),
            started_at_ms,
        },
    )
    .map_err(RunError::Marker)?;
    let (rules, rule_errors) = initial_rules(&config, &state_dir, &identity);
    let stats = rules.detector.stats();
    info!(device = %identity.enrollment.device_id, rules = stats.loaded, rule_errors, pack = rules.version, "agent starting");
    let status = Status {
        pid: std::process::id(),
        collector: identity.enrollment.collector_addr.clone(),
        outbox_depth: outbox.depth(),
        outbox_bytes: outbox.bytes(),
        rule_pack_version: rules.version,
        rules_loaded: stats.loaded,
        rule_errors,
        isolation: "none".into(),
        ..Status::default()
    };
    let shared = Arc::new(Shared {
        outbox: Mutex::new(outbox),
        new_alerts: Notify::new(),
        status: Mutex::new(status),
        recent: Arc::new(Mutex::new(std::collections::VecDeque::new())),
        sensors: SensorBoard::default(),
    });

    let hostname = inventory::collect(env!("CARGO_PKG_VERSION")).hostname;
    // The builder owns its own handle on the signing key (ring keys are not Clone).
    let key = Identity::load(&state_dir)?.signing_key;
    let builder = AlertBuilder::new(identity.enrollment.device_id, hostname, key);
    let (events_tx, events_rx) = mpsc::channel::<ward_detect::event::Event>(4096);
    let (rules_tx, rules_rx) = mpsc::channel::<Rules>(1);
    let pack_version = rules.version;

    let sensors = tokio::spawn(run_sensors(
        config.sensors.clone(),
        events_tx,
        shutdown.clone(),
        shared.sensors.clone(),
    ));
    let recorder = match &config.detection.record_events_path {
        Some(path) => match crate::record::EventRecorder::create(path, config.detection.record_events_max_bytes) {
            Ok(r) => {
                info!(path = %path.display(), "recording every judged event (detection.record_events_path)");
                Some(r)
            }
            Err(e) => {
                warn!(path = %path.display(), error = %e, "cannot create the event record; not recording");
                None
            }
        },
        None => None,
    };
    let detection = tokio::spawn(run_detection(
        rules,
        rules_rx,
        events_rx,
        builder,
        Arc::clone(&shared),
        ward_detect::AggregatorConfig {
            window_ms: config.detection.aggregate_window_ms,
            max_new_per_rule: config.detection.rule_max_new_alerts_per_window,
            ..ward_detect::AggregatorConfig::default()
        },
        config.outbox.memory_queue_max_alerts,
        recorder,
        shutdown.clone(),
    ));
    let (commands_tx, commands_rx) = mpsc::channel(16);
    let (results_tx, results_rx) = mpsc::channel(16);
    let keys = PinnedKeys::new(identity.enrollment.keys.clone(), &state_dir);
    let executor = Executor::new(
        identity.enrollment.device_id,
        keys.clone(),
        config.response.policy(),
        state_dir.clone(),
        config.sensors.file_watch_paths.iter().map(PathBuf::from).collect(),
        Arc::clone(&shared.recent),
        Identity::load(&state_dir)?.signing_key,
    );
    let mut executor = executor;
    executor.isolation = isolation_control(&state_dir, &shared, &identity)?;
    let commands = tokio::spawn(crate::respond::executor::run(executor, commands_rx, results_tx));
    let delivery = Delivery {
        identity,
        keys,
        config: config.clone(),
        state_dir: state_dir.clone(),
        shared: Arc::clone(&shared),
        rules_tx,
        rule_pack_version: pack_version,
        commands_tx,
        results_rx,
        pending_result: None,
    };
    let link = tokio::spawn(delivery.run(shutdown.clone()));

    let mut tick = tokio::time::interval(Duration::from_millis(config.agent.status_interval_ms));
    // Start-up (rules compiled, eBPF loaded, the first rescan and connect) is over by
    // then: what it left mapped and freed goes back (see `crate::memory`).
    let release = tokio::time::sleep(STARTUP_SETTLES);
    tokio::pin!(release);
    let mut released = false;
    loop {
        tokio::select! {
            _ = tick.tick() => write_status(&shared, &state_dir),
            () = &mut release, if !released => {
                released = true;
                let bytes = crate::memory::release_startup_memory();
                info!(image_bytes = bytes, "start-up memory released");
            }
            _ = shutdown.changed() => break,
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(5), detection).await;
    let _ = tokio::time::timeout(Duration::from_secs(5), link).await;
    commands.abort();
    let _ = tokio::time::timeout(Duration::from_secs(5), sensors).await;
    write_status(&shared, &state_dir);
    if let Err(e) = lifecycle::mark_stopped(&state_dir) {
        warn!(error = %e, "cannot clear the running marker: the next start reports an unclean stop");
    }
    info!("agent stopped");
    Ok(())
}

/// Puts a persisted isolation back in force before anything else talks to the
/// network, and prepares isolate/release for commands. `None` when this device has
/// no usable nft (commands to isolate then fail with that reason).
fn isolation_control(
    state_dir: &Path,
    shared: &Arc<Shared>,
    identity: &Identity,
) -> Result<Option<crate::respond::isolation_control::IsolationControl>, RunError> {
    let nft = isolate::Nft::new();
    if let Err(e) = nft.version() {
        warn!(error = %e, "nft not usable: network isolation unavailable on this device");
        return Ok(None);
    }
    let guard = match isolate::restore_with(state_dir, &nft) {
        Ok(guard) => guard,
        Err(e) => {
            warn!(error = %e, "cannot restore the persisted isolation");
            None
        }
    };
    if guard.is_some() {
        info!("isolation restored from the state dir");
    }
    if let Ok(mut s) = shared.status.lock() {
        s.isolation = if guard.is_some() {
            "isolated".into()
        } else {
            "none".into()
        };
    }
    let alerts_key = Identity::load(state_dir)?.signing_key;
    Ok(Some(crate::respond::isolation_control::IsolationControl {
        identity: Identity::load(state_dir)?,
        nft,
        guard,
        self_test: isolate::SelfTest {
            blocked_timeout: Duration::from_secs(1),
            ..isolate::SelfTest::default()
        },
        shared: Arc::clone(shared),
        alerts: AlertBuilder::new(
            identity.enrollment.device_id,
            inventory::collect(env!("CARGO_PKG_VERSION")).hostname,
            alerts_key,
        ),
    }))
}

fn write_status(shared: &Shared, state_dir: &Path) {
    let (depth, bytes) = shared.outbox.lock().map(|o| (o.depth(), o.bytes())).unwrap_or((0, 0));
    let (_, sensors) = shared.sensors.snapshot();
    if let Ok(mut s) = shared.status.lock() {
        s.updated_at_ms = now_ms();
        s.outbox_depth = depth;
        s.outbox_bytes = bytes;
        s.sensors = sensors;
        s.write(state_dir);
    }
}
