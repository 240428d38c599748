//! Sensors: processes, files, authentication, audit, inventory; their config and their supervisor.
//!
//! Sensors observe and report, nothing else: they must not evaluate rules, block the agent
//! when one of them fails, or stay silent about what they could not see (that is a
//! [`SensorGap`](ward_detect::event::SensorGap) event).
//!
//! # Tasks and the events channel
//!
//! [`run_sensors`] starts each enabled sensor on its own blocking thread (tokio's
//! `spawn_blocking`) under a supervisor task. A sensor that returns an error or panics is
//! reported as a gap and restarted after a back-off that doubles from
//! `restart_backoff_min_ms` to `restart_backoff_max_ms` (reset once a run lasted a minute).
//!
//! The events channel is bounded. When it is full:
//! - the process poller, file, auth and audit sensors wait for room (back-pressure: the
//!   poller's next poll is late, the tailers' read position simply stays behind, inotify
//!   queues in the kernel and a kernel queue overflow is reported as a gap);
//! - the netlink process connector does not wait (the kernel would drop its messages
//!   instead): it counts what it dropped and reports the count as a gap once there is room.
//!
//! Every wait checks the stop flag, so shutdown never hangs on a full channel.
//!
//! # Readiness
//!
//! Each sensor keeps its state on the [`SensorBoard`]: `starting` until its source is
//! in place (the file sensor: watches placed and the start-up rescan done), `ready`
//! with what it reads, `degraded` or `blind` with why, `off` when configured off. The
//! supervisor marks a failed sensor blind until its restart. `ward-agent status` and
//! the collector (protocol 1.5) show the board, so a quiet sensor is never mistaken
//! for a quiet host.

pub mod access;
pub mod audit;
pub mod auth;
pub mod board;
pub mod context;
pub mod ebpf;
pub mod file;
pub mod hash;
pub mod inventory;
pub mod journal;
pub mod lineage;
pub mod masquerade;
pub mod netcg;
pub mod pipes;
pub mod proc_connector;
pub mod process;
pub mod tail;
pub mod writers;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde::Deserialize;
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, watch};

use crate::clock::now_ms;
use ward_detect::event::{Event, EventData, SensorGap};
use ward_protocol::Readiness;

pub use board::SensorBoard;

/// Sensor settings. Every field has a default (shown in its doc); unknown fields are refused.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SensorConfig {
    /// Report new processes by polling /proc. Default: true.
    pub process_enabled: bool,
    /// How often to poll /proc for new processes, milliseconds. Default: 1000.
    pub process_poll_interval_ms: u64,
    /// Also subscribe to the kernel's netlink process connector (needs root or
    /// CAP_NET_ADMIN; without it the poller alone runs and a gap says so). Default: true.
    pub process_connector_enabled: bool,
    /// Where process starts come from: `auto` (eBPF, else the netlink connector and
    /// /proc, with the reason on the board and in a gap), `ebpf` (eBPF only: without
    /// it the process sensor is blind and says why), `proc` (the netlink connector and
    /// /proc only). Default: auto.
    pub process_source: ProcessSource,
    /// Report TCP connects, accepts and listens with their process (eBPF; without it
    /// the network sensor is blind and says why). Default: true.
    pub network_enabled: bool,
    /// A process's connections to (or from) the same address and port are reported
    /// once per this window; repeats are counted on the board, milliseconds (0: every
    /// connection). Default: 1000.
    pub network_dedup_ms: u64,
    /// Also report UDP: connects, datagrams sent with an address (sendto), and binds
    /// to a named port (`Operation: listen`), with their process (eBPF cgroup hooks on
    /// the root cgroup v2; needs CAP_NET_ADMIN besides CAP_BPF and CAP_PERFMON, or
    /// root; without them the network sensor is degraded and TCP still reported).
    /// Default: true.
    pub network_udp_enabled: bool,
    /// Report DNS lookups on UDP port 53 (name, type, answers, response code and the
    /// process that asked), and name a connection's remote address after the answer
    /// that gave it (`DestinationHostname`). Same hooks and needs as
    /// `network_udp_enabled`. Default: true.
    pub dns_enabled: bool,
    /// Largest executable to hash, bytes. Default: 67108864 (64 MiB).
    pub exe_hash_max_bytes: u64,
    /// Hashes to remember per sensor, entries (about 80 bytes each). Default: 4096.
    pub hash_cache_entries: usize,
    /// Bytes the agent may hash per second, executables first (up to 1 MiB always);
    /// files over it are reported without a SHA-256 and counted (0: no limit).
    /// Default: 33554432 (32 MiB).
    pub hash_budget_bytes_per_s: u64,
    /// Watch files in `file_watch_paths`. Default: true.
    pub file_enabled: bool,
    /// Paths to watch recursively; a `*` path component is expanded (e.g. `/home/*/.ssh`).
    /// Missing paths are skipped and looked for again every `file_missing_recheck_ms`.
    /// Default: /etc, /root/.ssh, /home/*/.ssh, /tmp, /var/tmp, /dev/shm, /var/spool/cron,
    /// /lib/systemd/system, /usr/lib/systemd/system, /root/.config/systemd/user,
    /// /home/*/.config/systemd/user, /var/log (/etc covers /etc/cron.* and
    /// /etc/systemd/system; /var/log is watched for deleted and truncated logs).
    pub file_watch_paths: Vec<String>,
    /// Files under these paths are reported without a hash: logs change all the time,
    /// are never run, and hashing a busy log on every write would cost a core.
    /// Default: /var/log.
    pub file_hash_skip_paths: Vec<String>,
    /// Largest file to hash, bytes. Default: 33554432 (32 MiB).
    pub file_hash_max_bytes: u64,
    /// Temporary directories, where builds write object files, libraries and caches all
    /// the time: a file there without an execute bit is hashed only up to
    /// `file_hash_temp_max_bytes`; a larger one is reported without a SHA-256 and counted
    /// (a gap line once a minute). It is hashed once given an execute bit, and a program
    /// is hashed when it runs. Default: /tmp, /var/tmp, /dev/shm.
    pub file_hash_temp_paths: Vec<String>,
    /// See `file_hash_temp_paths`, bytes. Default: 1048576 (1 MiB).
    pub file_hash_temp_max_bytes: u64,
    /// A modified file is reported once writes to it have paused this long, milliseconds.
    /// Default: 75.
    pub file_settle_ms: u64,
    /// A created or modified file is reported at the latest this long after its first event,
    /// even if writes continue, milliseconds. Default: 200.
    pub file_max_delay_ms: u64,
    /// How often to look again for watch paths that did not exist, milliseconds. Default: 30000.
    pub file_missing_recheck_ms: u64,
    /// How often the file sensor checks that the kernel still holds the watch on each
    /// watched root and directory below one (one replaced, mounted over or unwatched is
    /// re-armed, reported as a gap, and what changed meanwhile rescanned), milliseconds.
    /// Default: 30000.
    pub file_watch_check_ms: u64,
    /// Not configurable: set at start from the last run's state (see `lifecycle`).
    /// Watched files changed since then are reported once the watches are up.
    #[serde(skip)]
    pub file_rescan: Option<file::Rescan>,
    /// Report opens of sensitive files (credentials, keys, sudoers, PAM) with the
    /// process that opened them (fanotify; needs root). Default: true.
    pub access_enabled: bool,
    /// Name the process that wrote a created or modified file (fanotify close-write
    /// on the watched roots' filesystems; needs root). Default: true.
    pub file_writers_enabled: bool,
    /// The files, and directories whose files, whose opens are reported; a `*` path
    /// component is expanded. Default: /etc/shadow, /etc/gshadow, /etc/sudoers,
    /// /etc/sudoers.d, /etc/pam.d, /etc/ssh (host keys), /root/.ssh, /home/*/.ssh,
    /// /root/.aws, /home/*/.aws, /root/.kube, /home/*/.kube, /root/.config/gcloud,
    /// /home/*/.config/gcloud, /root/.docker, /home/*/.docker.
    pub access_watch_paths: Vec<String>,
    /// How often those paths are looked at again (a file replaced by a new one, or one
    /// that appeared, is watched anew), milliseconds. Default: 5000.
    pub access_recheck_ms: u64,
    /// Tail the authentication log. Default: true.
    pub auth_enabled: bool,
    /// Candidate auth logs; the first that exists is tailed.
    /// Default: /var/log/auth.log, /var/log/secure.
    pub auth_log_paths: Vec<String>,
    /// When none of `auth_log_paths` exists and `journalctl` is installed, follow the
    /// systemd journal's auth entries (syslog facilities auth and authpriv, and the auth
    /// programs by name) instead. Default: true.
    pub auth_journal_fallback: bool,
    /// Tail the Linux audit log. Default: true.
    pub audit_enabled: bool,
    /// The audit log. Default: /var/log/audit/audit.log.
    pub audit_log_path: String,
    /// An audit event without its EOE record is complete once a newer serial has been seen
    /// for this long, or it has waited twice this long, milliseconds. Default: 1000.
    pub audit_event_timeout_ms: u64,
    /// Audit events being reassembled at once; beyond it the oldest is completed. Default: 256.
    pub audit_max_in_flight_events: usize,
    /// How often the log tailers look for new lines, milliseconds. Default: 250.
    pub log_poll_interval_ms: u64,
    /// First restart delay of a failed sensor, milliseconds. Default: 1000.
    pub restart_backoff_min_ms: u64,
    /// Longest restart delay of a failed sensor, milliseconds. Default: 60000.
    pub restart_backoff_max_ms: u64,
}

impl Default for SensorConfig {
    fn default() -> Self {
        SensorConfig {
            process_enabled: true,
            process_poll_interval_ms: 1000,
            process_connector_enabled: true,
            process_source: ProcessSource::Auto,
            network_enabled: true,
            network_dedup_ms: 1000,
            network_udp_enabled: true,
            dns_enabled: true,
            exe_hash_max_bytes: 64 * 1024 * 1024,
            hash_cache_entries: 4096,
            hash_budget_bytes_per_s: 32 * 1024 * 1024,
            file_enabled: true,
            file_watch_paths: [
                "/etc",
                "/root/.ssh",
                "/home/*/.ssh",
                "/tmp",
                "/var/tmp",
                "/dev/shm",
                "/var/spool/cron",
                "/lib/systemd/system",
                "/usr/lib/systemd/system",
                "/root/.config/systemd/user",
                "/home/*/.config/systemd/user",
                "/var/log",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect(),
            file_hash_skip_paths: vec!["/var/log".into()],
            file_hash_max_bytes: 32 * 1024 * 1024,
            file_hash_temp_paths: ["/tmp", "/var/tmp", "/dev/shm"].iter().map(|s| s.to_string()).collect(),
            file_hash_temp_max_bytes: 1024 * 1024,
            file_settle_ms: 75,
            file_max_delay_ms: 200,
            file_missing_recheck_ms: 30_000,
            file_watch_check_ms: 30_000,
            access_enabled: true,
            file_writers_enabled: true,
            access_watch_paths: [
                "/etc/shadow",
                "/etc/gshadow",
                "/etc/sudoers",
                "/etc/sudoers.d",
                "/etc/pam.d",
                "/etc/ssh",
                "/root/.ssh",
                "/home/*/.ssh",
                "/root/.aws",
                "/home/*/.aws",
                "/root/.kube",
                "/home/*/.kube",
                "/root/.config/gcloud",
                "/home/*/.config/gcloud",
                "/root/.docker",
                "/home/*/.docker",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect(),
            access_recheck_ms: 5_000,
            file_rescan: None,
            auth_enabled: true,
            auth_log_paths: vec!["/var/log/auth.log".into(), "/var/log/secure".into()],
            auth_journal_fallback: true,
            audit_enabled: true,
            audit_log_path: "/var/log/audit/audit.log".into(),
            audit_event_timeout_ms: 1000,
            audit_max_in_flight_events: 256,
            log_poll_interval_ms: 250,
            restart_backoff_min_ms: 1000,
            restart_backoff_max_ms: 60_000,
        }
    }
}

/// Where process starts come from (`process_source`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProcessSource {
    /// eBPF when it loads, else the netlink connector and /proc.
    Auto,
    /// eBPF only.
    Ebpf,
    /// The netlink connector and /proc only.
    Proc,
}

/// Why a sensor stopped working (it is then reported and restarted).
#[derive(Debug, thiserror::Error)]
pub enum SensorError {
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("file watcher: {0}")]
    Notify(#[from] notify::Error),
    #[error("journal: {0}")]
    Journal(#[from] journal::JournalError),
    #[error("{0}")]
    Failed(String),
}

impl SensorError {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        SensorError::Io {
            context: context.into(),
            source,
        }
    }
}

/// What a sensor thread uses to report: the events channel, its name and the stop flag.
#[derive(Debug, Clone)]
pub struct SensorCtx {
    events: mpsc::Sender<Event>,
    stop: Arc<AtomicBool>,
    sensor: &'static str,
    board: SensorBoard,
}

impl SensorCtx {
    /// A context for the sensor named `sensor`, with a board of its own.
    pub fn new(sensor: &'static str, events: mpsc::Sender<Event>, stop: Arc<AtomicBool>) -> Self {
        SensorCtx {
            events,
            stop,
            sensor,
            board: SensorBoard::default(),
        }
    }

    /// The same context reporting its readiness on `board`.
    pub fn on_board(mut self, board: SensorBoard) -> Self {
        self.board = board;
        self
    }

    /// The board this sensor reports its readiness on.
    pub fn board(&self) -> &SensorBoard {
        &self.board
    }

    /// Sees everything it is meant to, reading `source`.
    pub fn ready(&self, source: impl Into<String>) {
        self.board.set(self.sensor, Readiness::Ready, Some(source.into()), None);
    }

    /// Sees only part of it: `detail` says what is missed and which fallback runs.
    pub fn degraded(&self, source: impl Into<String>, detail: impl Into<String>) {
        let detail = detail.into();
        self.board
            .set(self.sensor, Readiness::Degraded, Some(source.into()), Some(detail));
    }

    /// Sees nothing: `detail` says why. Reported as a gap too.
    pub fn blind(&self, detail: impl Into<String>) -> bool {
        let detail = detail.into();
        self.board
            .set(self.sensor, Readiness::Blind, Some(String::new()), Some(detail.clone()));
        self.gap(detail)
    }

    /// Counts events this sensor knows it lost.
    pub fn lost(&self, n: u64) {
        self.board.add_lost(self.sensor, n);
    }

    /// The sensor's name, as used in its gaps.
    pub fn sensor(&self) -> &'static str {
        self.sensor
    }

    /// True once the sensor should end: shutdown, or nobody receives events any more.
    pub fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed) || self.events.is_closed()
    }

    /// Sends an event, waiting while the channel is full. False when the sensor should stop.
    /// Must be called from a blocking thread, not from async code.
    pub fn emit(&self, data: EventData) -> bool {
        self.emit_at(now_ms(), data)
    }

    /// Like [`SensorCtx::emit`], for a source that says when it saw the event (the journal).
    pub fn emit_at(&self, observed_at_ms: u64, data: EventData) -> bool {
        let mut event = Event { observed_at_ms, data };
        loop {
            match self.events.try_send(event) {
                Ok(()) => return true,
                Err(TrySendError::Closed(_)) => return false,
                Err(TrySendError::Full(back)) => {
                    if self.stop.load(Ordering::Relaxed) {
                        return false;
                    }
                    event = back;
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
        }
    }

    /// Sends events read together, after all of them are built: detection wakes once
    /// for the batch instead of once per event (a wake-up costs more than judging a
    /// connection). False when the pipeline is gone.
    pub fn emit_all(&self, batch: impl IntoIterator<Item = EventData>) -> bool {
        let observed_at_ms = now_ms();
        batch.into_iter().all(|data| self.emit_at(observed_at_ms, data))
    }

    /// Sends an event only if there is room now. False when it was not sent.
    pub fn try_emit(&self, data: EventData) -> bool {
        self.events
            .try_send(Event {
                observed_at_ms: now_ms(),
                data,
            })
            .is_ok()
    }

    /// Reports a blind spot of this sensor (waits for room like [`SensorCtx::emit`]).
    pub fn gap(&self, detail: impl Into<String>) -> bool {
        let detail = detail.into();
        tracing::warn!(sensor = self.sensor, %detail, "sensor gap");
        self.emit(gap(self.sensor, detail))
    }

    /// Sleeps up to `d`, waking early when the sensor should stop. False when it should stop.
    pub fn sleep(&self, d: Duration) -> bool {
        let end = Instant::now() + d;
        loop {
            if self.stopped() {
                return false;
            }
            let now = Instant::now();
            if now >= end {
                return true;
            }
            std::thread::sleep((end - now).min(Duration::from_millis(100)));
        }
    }
}

/// A gap event.
pub fn gap(sensor: &str, detail: impl Into<String>) -> EventData {
    EventData::Gap(SensorGap {
        sensor: sensor.to_string(),
        detail: detail.into(),
    })
}

type Runner = Arc<dyn Fn(&SensorCtx) -> Result<(), SensorError> + Send + Sync>;

/// Runs every enabled sensor until `shutdown` becomes true (or its sender is dropped).
///
/// Each sensor runs on a blocking thread under a supervisor: errors and panics become gaps
/// and the sensor is restarted with back-off. A sensor that ends by itself (for example the
/// netlink connector without privilege, after reporting so) is not restarted. Returns once
/// every sensor thread has ended.
pub async fn run_sensors(
    config: SensorConfig,
    events: mpsc::Sender<Event>,
    mut shutdown: watch::Receiver<bool>,
    board: SensorBoard,
) {
    let config = Arc::new(config);
    let off = |name: &'static str| {
        board.set(
            name,
            Readiness::Off,
            None,
            Some("turned off in the configuration".into()),
        )
    };
    if !config.process_enabled {
        off("process");
    }
    if !config.process_enabled || !config.process_connector_enabled {
        off("process_connector");
    }
    if !config.file_enabled {
        off("file");
    }
    if !config.auth_enabled {
        off("auth");
    }
    if !config.access_enabled {
        off("access");
    }
    if !config.audit_enabled {
        off("audit");
    }
    if !config.network_enabled {
        off("network");
    }
    let stop = Arc::new(AtomicBool::new(false));
    let mut runners: Vec<(&'static str, Runner)> = Vec::new();
    let lineage = Arc::new(lineage::LineageReader::new());
    let hash_budget = hash::HashBudget::new(config.hash_budget_bytes_per_s);
    let tracker = Arc::new(process::ProcessTracker::with_lineage(
        config.exe_hash_max_bytes,
        config.hash_cache_entries,
        lineage.clone(),
        hash_budget.clone(),
    ));
    if config.process_enabled {
        // eBPF first; the reason it cannot load decides the fallback and is shown.
        let exec = match config.process_source {
            ProcessSource::Proc => Err("process_source = \"proc\" in the configuration".to_string()),
            ProcessSource::Auto | ProcessSource::Ebpf => tokio::task::spawn_blocking(ebpf::Probe::exec)
                .await
                .map_err(|e| e.to_string())
                .and_then(|r| r.map_err(|e| e.to_string())),
        };
        match exec {
            Ok(probe) => {
                tracing::info!("process sensor: eBPF exec source loaded");
                board.set(
                    "process_connector",
                    Readiness::Off,
                    None,
                    Some("not needed: the eBPF exec source runs".into()),
                );
                let probe = std::sync::Mutex::new(Some(probe));
                let t = tracker.clone();
                runners.push((
                    "process",
                    Arc::new(move |ctx| {
                        // The probe loaded at start; a restart loads it again.
                        let loaded = probe.lock().unwrap_or_else(|e| e.into_inner()).take();
                        let mut probe = match loaded {
                            Some(p) => p,
                            None => ebpf::Probe::exec().map_err(|e| SensorError::Failed(e.to_string()))?,
                        };
                        ebpf::run_exec(&mut probe, &t, ctx)
                    }),
                ));
            }
            Err(why) if config.process_source == ProcessSource::Ebpf => {
                tracing::error!(%why, "process sensor: eBPF exec source unavailable and process_source = \"ebpf\"");
                off("process_connector");
                runners.push((
                    "process",
                    Arc::new(move |ctx| {
                        ctx.blind(format!(
                            "eBPF exec source unavailable ({why}) and process_source = \"ebpf\": no process is reported"
                        ));
                        Ok(())
                    }),
                ));
            }
            Err(why) => {
                if config.process_source == ProcessSource::Auto {
                    tracing::warn!(%why, "process sensor: eBPF exec source unavailable, using the netlink connector and /proc");
                }
                let fallback = (config.process_source == ProcessSource::Auto).then_some(why);
                let (c, t) = (config.clone(), tracker.clone());
                runners.push((
                    "process",
                    Arc::new(move |ctx| process::run_poller(&c, &t, fallback.as_deref(), ctx)),
                ));
                if config.process_connector_enabled {
                    let t = tracker.clone();
                    runners.push(("process_connector", Arc::new(move |ctx| proc_connector::run(&t, ctx))));
                }
            }
        }
    }
    if config.network_enabled {
        let (c, t) = (config.clone(), tracker.clone());
        runners.push((
            "network",
            Arc::new(move |ctx| match ebpf::Probe::net() {
                Ok(mut probe) => {
                    let udp = (c.network_udp_enabled || c.dns_enabled).then(|| {
                        netcg::load(netcg::Hooks {
                            udp: c.network_udp_enabled,
                            dns: c.dns_enabled,
                            dedup: Duration::from_millis(c.network_dedup_ms),
                            ignore_tgid: Some(std::process::id()),
                        })
                    });
                    ebpf::run_net(&c, &mut probe, udp, &t, ctx)
                }
                Err(e) => {
                    tracing::warn!(error = %e, "network sensor: eBPF unavailable");
                    ctx.blind(format!(
                        "eBPF network source unavailable ({e}): no connection is reported"
                    ));
                    Ok(())
                }
            }),
        ));
    }
    if config.file_enabled {
        let writers = config
            .file_writers_enabled
            .then(|| writers::WriterBook::new(tracker.clone()));
        if let Some(book) = &writers {
            let (c, t, b) = (config.clone(), tracker.clone(), book.clone());
            runners.push(("file_writers", Arc::new(move |ctx| writers::run(&c, &t, &b, ctx))));
        }
        let c = config.clone();
        let budget = hash_budget.clone();
        runners.push((
            "file",
            Arc::new(move |ctx| file::run(&c, ctx, budget.clone(), writers.clone())),
        ));
    }
    if config.access_enabled {
        let (c, t) = (config.clone(), tracker.clone());
        runners.push(("access", Arc::new(move |ctx| access::run(&c, &t, ctx))));
    }
    if config.auth_enabled {
        let c = config.clone();
        let l = lineage.clone();
        runners.push(("auth", Arc::new(move |ctx| auth::run(&c, &l, ctx))));
    }
    if config.audit_enabled {
        let c = config.clone();
        runners.push(("audit", Arc::new(move |ctx| audit::run(&c, &lineage, ctx))));
    }
    let mut tasks = tokio::task::JoinSet::new();
    for (name, runner) in runners {
        let ctx = SensorCtx::new(name, events.clone(), stop.clone()).on_board(board.clone());
        tasks.spawn(supervise(runner, ctx, config.clone(), shutdown.clone()));
    }
    drop(events);
    wait_for_shutdown(&mut shutdown).await;
    stop.store(true, Ordering::Relaxed);
    while tasks.join_next().await.is_some() {}
}

async fn wait_for_shutdown(shutdown: &mut watch::Receiver<bool>) {
    loop {
        if *shutdown.borrow_and_update() {
            return;
        }
        if shutdown.changed().await.is_err() {
            return;
        }
    }
}

async fn supervise(runner: Runner, ctx: SensorCtx, config: Arc<SensorConfig>, mut shutdown: watch::Receiver<bool>) {
    let min = Duration::from_millis(config.restart_backoff_min_ms.max(1));
    let max = Duration::from_millis(config.restart_backoff_max_ms).max(min);
    let mut backoff = min;
    loop {
        let started = Instant::now();
        ctx.board.set(ctx.sensor, Readiness::Starting, None, None);
        let (r, c) = (runner.clone(), ctx.clone());
        let result = tokio::task::spawn_blocking(move || r(&c)).await;
        if ctx.stopped() {
            return;
        }
        let why = match result {
            Ok(Ok(())) => return,
            Ok(Err(e)) => format!("sensor failed: {e}"),
            Err(join) if join.is_panic() => {
                let payload = join.into_panic();
                let msg = payload
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| payload.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "unknown panic".into());
                format!("sensor panicked: {msg}")
            }
            Err(_) => return,
        };
        if started.elapsed() >= Duration::from_secs(60) {
            backoff = min;
        }
        let detail = format!("{why}; not observing until restart in {} ms", backoff.as_millis());
        tracing::error!(sensor = ctx.sensor(), %detail, "sensor stopped");
        ctx.board.set(ctx.sensor, Readiness::Blind, None, Some(detail.clone()));
        let data = gap(ctx.sensor(), detail);
        if ctx
            .events
            .send(Event {
                observed_at_ms: now_ms(),
                data,
            })
            .await
            .is_err()
        {
            return;
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = wait_for_shutdown(&mut shutdown) => return,
        }
        backoff = (backoff * 2).min(max);
    }
}

/// Whether the tests run with effective uid 0 (kernel-facing tests need it).
#[cfg(test)]
pub(crate) fn test_is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .map(|v| v.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn config_defaults_and_unknown_fields() {
        let c: SensorConfig = toml::from_str("process_poll_interval_ms = 500").unwrap();
        assert_eq!(c.process_poll_interval_ms, 500);
        assert_eq!(c.file_hash_max_bytes, 32 * 1024 * 1024);
        assert!(toml::from_str::<SensorConfig>("poll = 1").is_err());
        assert_eq!(c.process_source, ProcessSource::Auto);
        assert!(c.network_enabled);
        assert_eq!(c.network_dedup_ms, 1000);
        for (text, want) in [
            ("auto", ProcessSource::Auto),
            ("ebpf", ProcessSource::Ebpf),
            ("proc", ProcessSource::Proc),
        ] {
            let c: SensorConfig = toml::from_str(&format!("process_source = {text:?}")).unwrap();
            assert_eq!(c.process_source, want);
        }
        assert!(toml::from_str::<SensorConfig>("process_source = \"kprobe\"").is_err());
    }

    /// `process_source = "proc"` runs the netlink connector and the /proc poll, ready,
    /// and loads no eBPF; the network sensor reports on its own line.
    #[tokio::test]
    async fn the_proc_source_is_chosen_by_configuration() {
        let (tx, mut rx) = mpsc::channel(1024);
        let (stx, srx) = watch::channel(false);
        let dir = tempfile::tempdir().unwrap();
        let config = SensorConfig {
            process_source: ProcessSource::Proc,
            file_enabled: false,
            access_enabled: false,
            auth_enabled: false,
            audit_enabled: false,
            network_enabled: false,
            file_watch_paths: vec![dir.path().display().to_string()],
            ..SensorConfig::default()
        };
        let board = SensorBoard::default();
        let task = tokio::spawn(run_sensors(config, tx, srx, board.clone()));
        let deadline = Instant::now() + Duration::from_secs(10);
        while board.get("process").is_none_or(|s| s.readiness == Readiness::Starting) {
            assert!(Instant::now() < deadline, "{:?}", board.snapshot());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let process = board.get("process").unwrap();
        assert_eq!(
            (process.readiness, process.source.as_str()),
            (Readiness::Ready, "/proc every 1000 ms")
        );
        assert_ne!(board.get("process_connector").unwrap().readiness, Readiness::Off);
        assert_eq!(board.get("network").unwrap().readiness, Readiness::Off);
        stx.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .unwrap()
            .unwrap();
        while rx.try_recv().is_ok() {}
    }

    #[tokio::test]
    async fn a_panicking_sensor_is_reported_and_restarted() {
        let (tx, mut rx) = mpsc::channel(16);
        let stop = Arc::new(AtomicBool::new(false));
        let ctx = SensorCtx::new("boom", tx, stop.clone());
        let config = Arc::new(SensorConfig {
            restart_backoff_min_ms: 10,
            ..SensorConfig::default()
        });
        let (_stx, srx) = watch::channel(false);
        let runs = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let r = runs.clone();
        let runner: Runner = Arc::new(move |_ctx| {
            if r.fetch_add(1, Ordering::SeqCst) == 0 {
                panic!("first run fails");
            }
            Err(SensorError::Failed("second run fails".into()))
        });
        let task = tokio::spawn(supervise(runner, ctx, config, srx));
        let first = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .unwrap()
            .unwrap();
        assert!(matches!(&first.data, EventData::Gap(g) if g.sensor == "boom" && g.detail.contains("panicked")));
        let second = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .unwrap()
            .unwrap();
        assert!(matches!(&second.data, EventData::Gap(g) if g.detail.contains("second run fails")));
        stop.store(true, Ordering::Relaxed);
        drop(rx);
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .unwrap()
            .unwrap();
    }

    #[tokio::test]
    async fn run_sensors_ends_on_shutdown() {
        let (tx, mut rx) = mpsc::channel(1024);
        let (stx, srx) = watch::channel(false);
        let dir = tempfile::tempdir().unwrap();
        let config = SensorConfig {
            file_watch_paths: vec![dir.path().display().to_string()],
            auth_log_paths: vec![dir.path().join("auth.log").display().to_string()],
            audit_log_path: dir.path().join("audit.log").display().to_string(),
            ..SensorConfig::default()
        };
        let task = tokio::spawn(run_sensors(config, tx, srx, SensorBoard::default()));
        tokio::time::sleep(Duration::from_millis(300)).await;
        stx.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .unwrap()
            .unwrap();
        while rx.try_recv().is_ok() {}
    }
}
