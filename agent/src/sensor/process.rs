//! New processes: read from /proc, deduplicated between the poller and the netlink connector.
//!
//! The poller lists processes through sysinfo every `process_poll_interval_ms`; details are
//! read from /proc/PID by [`read_process`], which the netlink connector uses too. Must not
//! kill, trace or otherwise touch the processes it observes, nor hash an executable more
//! than once per file version (the hash cache), nor trust /proc content (every read may fail
//! or race with the process exiting).
//!
//! The first poll is a baseline: processes already running are remembered without events
//! (re-reporting them on every agent restart would re-raise old alerts); one gap says how
//! many were not reported.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use sysinfo::{ProcessRefreshKind, ProcessesToUpdate, System};

use ward_protocol::ProcessNode;

use super::hash::HashCache;
use super::lineage::LineageReader;
use super::{SensorConfig, SensorCtx, SensorError};
use ward_detect::event::{EventData, ProcessEvent};

/// Longest cmdline kept, bytes.
const MAX_CMDLINE_BYTES: usize = 32 * 1024;

/// Why /proc/PID could not be read (usually: the process already exited).
#[derive(Debug, thiserror::Error)]
pub enum ProcError {
    #[error("cannot read {path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("malformed {path}")]
    Malformed { path: String },
}

/// The identity and start time of a process, from /proc/PID/stat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcStat {
    pub pid: u32,
    pub ppid: u32,
    pub start_time_ms: u64,
}

fn proc_path(root: &Path, pid: u32, file: &str) -> PathBuf {
    root.join(pid.to_string()).join(file)
}

fn read_string(path: &Path) -> Result<String, ProcError> {
    fs::read_to_string(path).map_err(|source| ProcError::Io {
        path: path.display().to_string(),
        source,
    })
}

/// Parses the content of /proc/PID/stat: ppid and start time in clock ticks since boot.
pub fn parse_stat(content: &str) -> Option<(u32, u64)> {
    // The command name (field 2) is in parentheses and may itself contain ") ".
    let after = content.get(content.rfind(')')? + 1..)?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    // fields[0] is field 3 (state); ppid is field 4, starttime field 22.
    let ppid = fields.get(1)?.parse().ok()?;
    let start = fields.get(19)?.parse().ok()?;
    Some((ppid, start))
}

/// Clock ticks per second and boot time, to turn /proc start times into Unix milliseconds.
#[derive(Debug, Clone, Copy)]
struct BootClock {
    boot_ms: u64,
    ticks_per_s: u64,
}

static CLOCK: OnceLock<BootClock> = OnceLock::new();

/// The one boot clock of this agent process: every start time (process events, lineage,
/// the kill action's identity check, investigation packages) goes through it, so they
/// always agree. Set by [`pin_boot_time`] at startup, else measured on first use.
fn boot_clock() -> BootClock {
    *CLOCK.get_or_init(|| BootClock {
        boot_ms: measure_boot_ms(),
        ticks_per_s: clock_ticks_per_second(),
    })
}

/// The boot time in Unix milliseconds this agent uses for start times.
pub fn boot_time_ms() -> u64 {
    boot_clock().boot_ms
}

/// /proc/uptime's first field (CLOCK_BOOTTIME) in centiseconds.
fn parse_uptime_cs(content: &str) -> Option<u64> {
    let up = content.split_whitespace().next()?;
    let (secs, frac) = up.split_once('.').unwrap_or((up, "0"));
    let frac: String = frac.chars().chain(std::iter::repeat('0')).take(2).collect();
    secs.parse::<u64>()
        .ok()?
        .checked_mul(100)?
        .checked_add(frac.parse().ok()?)
}

fn unix_us(t: SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Boot time, Unix milliseconds, to well under a millisecond.
///
/// /proc/stat's `btime` is whole seconds, which would put every start time up to a
/// second off. /proc/uptime is CLOCK_BOOTTIME cut to 10 ms, computed at each read: it
/// changes exactly when the true uptime crosses a 10 ms boundary. So read it until it
/// changes; at that moment the uptime is the new value, and the wall clock then (between
/// the start of the previous read and the end of this one) minus it is the boot time.
/// A thread preempted in that window widens it, so a few edges are timed (at most
/// 8, about 80 ms once per agent start) and the narrowest window wins.
fn measure_boot_ms() -> u64 {
    const GOOD_WINDOW_US: u64 = 100;
    const MAX_EDGES: usize = 8;
    let read = || {
        fs::read_to_string("/proc/uptime")
            .ok()
            .as_deref()
            .and_then(parse_uptime_cs)
    };
    let fallback = || {
        let now_us = unix_us(SystemTime::now());
        let up_cs = read().unwrap_or(0);
        now_us.saturating_sub(up_cs.saturating_mul(10_000)) / 1000
    };
    let Some(mut last) = read() else {
        return fallback();
    };
    // (window, boot time) of the narrowest edge, microseconds.
    let mut best: Option<(u64, u64)> = None;
    let mut edges = 0;
    let deadline = Instant::now() + Duration::from_millis(200);
    let mut prev_start = unix_us(SystemTime::now());
    while edges < MAX_EDGES && Instant::now() < deadline {
        let start = unix_us(SystemTime::now());
        let Some(now) = read() else {
            break;
        };
        let end = unix_us(SystemTime::now());
        if now != last {
            edges += 1;
            let window = end.saturating_sub(prev_start);
            let boot_us = (prev_start + window / 2).saturating_sub(now.saturating_mul(10_000));
            if best.is_none_or(|(w, _)| window < w) {
                best = Some((window, boot_us));
            }
            if window <= GOOD_WINDOW_US {
                break;
            }
            last = now;
        }
        prev_start = start;
    }
    best.map(|(_, boot_us)| (boot_us + 500) / 1000).unwrap_or_else(fallback)
}

/// Keeps the boot time stable across agent restarts: the first agent after a boot
/// measures it and saves it in `state_dir` under the kernel's boot id; later agents of
/// the same boot use the saved value, so a process keeps the very same start time (the
/// kill action compares it exactly, and correlation keys on it). Call before any start
/// time is read; returns the boot time in use.
pub fn pin_boot_time(state_dir: &Path) -> u64 {
    let boot_id = fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    let file = state_dir.join(BOOT_TIME_FILE);
    let saved = fs::read_to_string(&file).ok().and_then(|s| saved_boot_ms(&s, &boot_id));
    let clock = *CLOCK.get_or_init(|| BootClock {
        boot_ms: saved.unwrap_or_else(measure_boot_ms),
        ticks_per_s: clock_ticks_per_second(),
    });
    if saved != Some(clock.boot_ms)
        && !boot_id.is_empty()
        && let Err(e) = fs::write(&file, format!("{boot_id} {}\n", clock.boot_ms))
    {
        tracing::warn!(error = %e, "cannot save the boot time: start times may move by a millisecond after a restart");
    }
    clock.boot_ms
}

/// The boot time saved in `content` if it was saved during the boot `boot_id`.
fn saved_boot_ms(content: &str, boot_id: &str) -> Option<u64> {
    let (id, ms) = content.trim().split_once(' ')?;
    if id != boot_id || boot_id.is_empty() {
        return None;
    }
    ms.parse().ok()
}

/// The file [`pin_boot_time`] keeps: `<boot id> <boot time, Unix ms>`.
pub const BOOT_TIME_FILE: &str = "boot_time";

#[allow(unsafe_code)]
fn clock_ticks_per_second() -> u64 {
    // SAFETY: sysconf only reads a configuration value; it takes no pointers and has no
    // preconditions. A failure returns -1, handled below.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as u64 } else { 100 }
}

/// Reads /proc/PID/stat under `root` (normally /proc).
pub fn read_stat(root: &Path, pid: u32) -> Result<ProcStat, ProcError> {
    let path = proc_path(root, pid, "stat");
    let content = read_string(&path)?;
    let (ppid, ticks) = parse_stat(&content).ok_or(ProcError::Malformed {
        path: path.display().to_string(),
    })?;
    let clock = boot_clock();
    let start_time_ms = clock
        .boot_ms
        .saturating_add(ticks.saturating_mul(1000) / clock.ticks_per_s.max(1));
    Ok(ProcStat {
        pid,
        ppid,
        start_time_ms,
    })
}

/// The executable of a process and whether it was deleted from disk.
pub fn read_exe(root: &Path, pid: u32) -> (String, bool) {
    match fs::read_link(proc_path(root, pid, "exe")) {
        Ok(p) => {
            let s = p.to_string_lossy();
            match s.strip_suffix(" (deleted)") {
                Some(stripped) => (stripped.to_string(), true),
                None => (s.into_owned(), false),
            }
        }
        Err(_) => (String::new(), false),
    }
}

/// The command line of a process, arguments joined by spaces (empty for kernel threads and
/// zombies), cut at 32 KiB.
pub fn read_cmdline(root: &Path, pid: u32) -> String {
    let Ok(bytes) = fs::read(proc_path(root, pid, "cmdline")) else {
        return String::new();
    };
    let bytes = bytes.get(..MAX_CMDLINE_BYTES).unwrap_or(&bytes);
    let s = String::from_utf8_lossy(bytes);
    s.trim_end_matches('\0').replace('\0', " ")
}

/// The real and effective uid of a process, from /proc/PID/status.
pub fn read_uids(root: &Path, pid: u32) -> Option<(u32, u32)> {
    let status = fs::read_to_string(proc_path(root, pid, "status")).ok()?;
    let mut ids = status.lines().find_map(|l| l.strip_prefix("Uid:"))?.split_whitespace();
    let real = ids.next()?.parse().ok()?;
    let effective = ids.next().and_then(|e| e.parse().ok()).unwrap_or(real);
    Some((real, effective))
}

/// User names by uid, from a passwd file, reloaded when the file changes.
#[derive(Debug)]
pub struct UserNames {
    path: PathBuf,
    names: HashMap<u32, String>,
    loaded_mtime: Option<SystemTime>,
    checked_at: Option<Instant>,
}

impl Default for UserNames {
    fn default() -> Self {
        UserNames::new(PathBuf::from("/etc/passwd"))
    }
}

impl UserNames {
    /// Names from the passwd file at `path`.
    pub fn new(path: PathBuf) -> Self {
        UserNames {
            path,
            names: HashMap::new(),
            loaded_mtime: None,
            checked_at: None,
        }
    }

    /// The name of `uid`, or the number as text when unknown.
    pub fn name(&mut self, uid: u32) -> String {
        self.refresh();
        self.names.get(&uid).cloned().unwrap_or_else(|| uid.to_string())
    }

    fn refresh(&mut self) {
        if self.checked_at.is_some_and(|t| t.elapsed() < Duration::from_secs(5)) {
            return;
        }
        self.checked_at = Some(Instant::now());
        let mtime = fs::metadata(&self.path).and_then(|m| m.modified()).ok();
        if mtime.is_some() && mtime == self.loaded_mtime {
            return;
        }
        self.loaded_mtime = mtime;
        self.names = fs::read_to_string(&self.path)
            .map(|s| parse_passwd(&s))
            .unwrap_or_default();
    }
}

/// uid -> name from the content of /etc/passwd; malformed lines are skipped.
pub fn parse_passwd(content: &str) -> HashMap<u32, String> {
    content
        .lines()
        .filter_map(|l| {
            let mut parts = l.split(':');
            let name = parts.next()?;
            let uid = parts.nth(1)?.parse().ok()?;
            Some((uid, name.to_string()))
        })
        .collect()
}

#[derive(Debug)]
struct Seen {
    start_time_ms: u64,
    exe: String,
    at: Instant,
}

/// Who has already reported which process: shared by the poller and the connector, so each
/// (pid, start time, executable) is reported once. An exec in a known process (same pid and
/// start time, new executable) is reported again: that is a new program.
#[derive(Debug)]
pub struct ProcessTracker {
    seen: Mutex<HashMap<u32, Seen>>,
    hashes: Mutex<HashCache>,
    lineage: Arc<LineageReader>,
    proc_root: PathBuf,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock leaves plain data behind; keep using it.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl ProcessTracker {
    /// A tracker hashing executables up to `exe_hash_max_bytes`, caching `cache_entries` hashes.
    pub fn new(exe_hash_max_bytes: u64, cache_entries: usize) -> Self {
        Self::with_lineage(exe_hash_max_bytes, cache_entries, Arc::new(LineageReader::new()))
    }

    /// Like [`ProcessTracker::new`], reading lineages (and user names) through `lineage`.
    pub fn with_lineage(exe_hash_max_bytes: u64, cache_entries: usize, lineage: Arc<LineageReader>) -> Self {
        ProcessTracker {
            seen: Mutex::new(HashMap::new()),
            hashes: Mutex::new(HashCache::new(cache_entries, exe_hash_max_bytes)),
            lineage,
            proc_root: PathBuf::from("/proc"),
        }
    }

    /// Remembers a process as already running, without reporting it. False if it is gone.
    pub fn remember(&self, pid: u32) -> bool {
        let Ok(stat) = read_stat(&self.proc_root, pid) else {
            return false;
        };
        let (exe, _) = read_exe(&self.proc_root, pid);
        lock(&self.seen).insert(
            pid,
            Seen {
                start_time_ms: stat.start_time_ms,
                exe,
                at: Instant::now(),
            },
        );
        true
    }

    /// True when this pid with this start time (Unix seconds, as sysinfo gives it) is known.
    fn knows(&self, pid: u32, start_s: u64) -> bool {
        lock(&self.seen)
            .get(&pid)
            .is_some_and(|s| (s.start_time_ms / 1000).abs_diff(start_s) <= 1)
    }

    /// Reads a process and returns its event unless it was already reported.
    ///
    /// `Err` when /proc/PID cannot be read at all (the process is gone).
    pub fn observe(&self, pid: u32) -> Result<Option<ProcessEvent>, ProcError> {
        let root = &self.proc_root;
        let stat = read_stat(root, pid)?;
        let (exe, exe_deleted) = read_exe(root, pid);
        {
            let mut seen = lock(&self.seen);
            if let Some(s) = seen.get(&pid)
                && s.start_time_ms == stat.start_time_ms
                && (s.exe == exe || exe.is_empty())
            {
                return Ok(None);
            }
            seen.insert(
                pid,
                Seen {
                    start_time_ms: stat.start_time_ms,
                    exe: exe.clone(),
                    at: Instant::now(),
                },
            );
        }
        let cmdline = read_cmdline(root, pid);
        let cwd = fs::read_link(proc_path(root, pid, "cwd"))
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        let uids = read_uids(root, pid);
        let uid = uids.map(|(real, _)| real);
        let user = uid.map(|u| self.lineage.user_name(u)).unwrap_or_default();
        let sha256 = if exe.is_empty() {
            None
        } else {
            lock(&self.hashes).hash(&proc_path(root, pid, "exe")).ok()
        };
        // Read at once, while the parents live; the parent fields come from it (the
        // parent's node is checked against the child's start time, so a reused pid is
        // never taken for the parent).
        let lineage = self.lineage.lineage_of(ProcessNode {
            pid,
            ppid: stat.ppid,
            start_time_ms: stat.start_time_ms,
            exe: exe.clone(),
            cmdline: cmdline.clone(),
            user: uids.map(|(_, euid)| self.lineage.user_name(euid)),
            login_user: self.lineage.login_user(pid),
        });
        let (parent_exe, parent_cmdline) = match lineage.ancestors.first() {
            Some(parent) => (parent.exe.clone(), parent.cmdline.clone()),
            // A child of init (the walk does not include init), else the parent is gone.
            None if stat.ppid == 1 => (read_exe(root, 1).0, read_cmdline(root, 1)),
            None => (String::new(), String::new()),
        };
        Ok(Some(ProcessEvent {
            pid,
            ppid: stat.ppid,
            start_time_ms: stat.start_time_ms,
            exe,
            cmdline,
            cwd,
            user,
            uid,
            sha256,
            parent_exe,
            parent_cmdline,
            exe_deleted,
            lineage: Some(Box::new(lineage)),
        }))
    }

    /// Forgets processes not in `alive` that were recorded before `before` (a process the
    /// connector recorded after the poller listed /proc is kept).
    fn prune(&self, alive: &dyn Fn(u32) -> bool, before: Instant) {
        lock(&self.seen).retain(|pid, s| alive(*pid) || s.at >= before);
    }

    /// How many processes are remembered.
    pub fn len(&self) -> usize {
        lock(&self.seen).len()
    }

    /// True when no process is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Polls for new processes until the sensor is stopped.
pub fn run_poller(config: &SensorConfig, tracker: &ProcessTracker, ctx: &SensorCtx) -> Result<(), SensorError> {
    let interval = Duration::from_millis(config.process_poll_interval_ms.max(10));
    let mut system = System::new().map_err(|e| SensorError::Failed(format!("sysinfo: {e}")))?;
    // Threads are not processes here, and listing every /proc/PID/task is the poll's main cost.
    let kind = ProcessRefreshKind::nothing().without_tasks();
    system.refresh_processes_specifics(ProcessesToUpdate::All, true, kind);
    let mut baseline = 0usize;
    for pid in system.processes().keys() {
        if tracker.remember(pid.as_u32()) {
            baseline += 1;
        }
    }
    if !ctx.gap(format!(
        "baseline: {baseline} processes already running when the sensor started were not reported as new"
    )) {
        return Ok(());
    }
    if !config.process_connector_enabled
        && !ctx.gap(format!(
            "process poll interval {} ms without the netlink connector: processes living shorter may be missed",
            interval.as_millis()
        ))
    {
        return Ok(());
    }
    while ctx.sleep(interval) {
        let listed_at = Instant::now();
        system.refresh_processes_specifics(ProcessesToUpdate::All, true, kind);
        for (pid, p) in system.processes() {
            let pid = pid.as_u32();
            if p.thread_kind().is_some() || tracker.knows(pid, p.start_time()) {
                continue;
            }
            if let Ok(Some(ev)) = tracker.observe(pid)
                && !ctx.emit(EventData::Process(ev))
            {
                return Ok(());
            }
        }
        let procs = system.processes();
        tracker.prune(&|pid| procs.contains_key(&sysinfo::Pid::from_u32(pid)), listed_at);
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;
    use std::sync::Arc;
    use std::sync::atomic::AtomicBool;
    use tokio::sync::mpsc;

    #[test]
    fn parses_stat_with_awkward_names() {
        let line = "1234 (a) b) (c) S 77 1234 1234 0 -1 4194560 1 0 0 0 0 0 0 0 20 0 1 0 98765 1000 10 0";
        assert_eq!(parse_stat(line), Some((77, 98765)));
        assert_eq!(parse_stat("garbage"), None);
        assert_eq!(parse_stat("1 (x) S"), None);
    }

    #[test]
    fn boot_time_is_precise_and_pinned_per_boot() {
        assert_eq!(parse_uptime_cs("350735.47 4939.96\n"), Some(35_073_547));
        assert_eq!(parse_uptime_cs("12.5 1.0"), Some(1250));
        assert_eq!(parse_uptime_cs("12 1"), Some(1200));
        assert_eq!(parse_uptime_cs("x"), None);
        let btime_ms = fs::read_to_string("/proc/stat")
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix("btime "))
            .unwrap()
            .trim()
            .parse::<u64>()
            .unwrap()
            * 1000;
        // btime is the same instant cut to the second.
        let a = measure_boot_ms();
        assert!(a + 5 >= btime_ms && a < btime_ms + 1005, "{a} vs btime {btime_ms}");
        let b = measure_boot_ms();
        assert!(a.abs_diff(b) <= 2, "two measures {a} and {b}");

        assert_eq!(saved_boot_ms("abc 1234\n", "abc"), Some(1234));
        assert_eq!(saved_boot_ms("abc 1234", "other-boot"), None);
        assert_eq!(saved_boot_ms("abc x", "abc"), None);
        assert_eq!(saved_boot_ms("", ""), None);
        let dir = tempfile::tempdir().unwrap();
        let pinned = pin_boot_time(dir.path());
        assert_eq!(pinned, boot_time_ms());
        let boot_id = fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap();
        let saved = fs::read_to_string(dir.path().join(BOOT_TIME_FILE)).unwrap();
        assert_eq!(saved_boot_ms(&saved, boot_id.trim()), Some(pinned));
    }

    #[test]
    fn parses_passwd() {
        let m = parse_passwd("root:x:0:0:root:/root:/bin/bash\nbad\nalice:x:1000:1000::/home/alice:/bin/sh\n");
        assert_eq!(m.get(&0).map(String::as_str), Some("root"));
        assert_eq!(m.get(&1000).map(String::as_str), Some("alice"));
        assert_eq!(m.len(), 2);
    }

    #[test]
    fn observes_itself_once() {
        let t = ProcessTracker::new(1 << 30, 16);
        let me = std::process::id();
        let ev = t.observe(me).unwrap().unwrap();
        assert_eq!(ev.pid, me);
        assert!(ev.exe.contains("ward_agent") || !ev.exe.is_empty());
        assert!(ev.sha256.is_some());
        assert!(ev.start_time_ms > 1_500_000_000_000);
        assert!(!ev.exe_deleted);
        assert_eq!(ev.uid, Some(unsafe_free_uid()));
        assert!(t.observe(me).unwrap().is_none(), "reported twice");
    }

    fn unsafe_free_uid() -> u32 {
        fs::metadata("/proc/self").unwrap().uid()
    }

    #[test]
    fn poller_sees_a_new_process_with_its_parent() {
        let (tx, mut rx) = mpsc::channel(1024);
        let stop = Arc::new(AtomicBool::new(false));
        let ctx = SensorCtx::new("process", tx, stop.clone());
        let config = SensorConfig {
            process_poll_interval_ms: 100,
            process_connector_enabled: false,
            ..SensorConfig::default()
        };
        let tracker = Arc::new(ProcessTracker::new(1 << 30, 64));
        let t = tracker.clone();
        let handle = std::thread::spawn(move || run_poller(&config, &t, &ctx));
        // Wait for the baseline gap before starting the child.
        let first = rx.blocking_recv().unwrap();
        assert!(matches!(first.data, EventData::Gap(ref g) if g.detail.contains("baseline")));
        let mut child = std::process::Command::new("sleep")
            .arg("2")
            .current_dir("/tmp")
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut found = None;
        while Instant::now() < deadline && found.is_none() {
            match rx.try_recv() {
                Ok(ev) => {
                    if let EventData::Process(p) = ev.data
                        && p.pid == child.id()
                    {
                        found = Some(p);
                    }
                }
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let _ = child.kill();
        let _ = child.wait();
        handle.join().unwrap().unwrap();
        let p = found.expect("sleep was not reported");
        assert!(p.exe.ends_with("/sleep"), "{p:?}");
        assert_eq!(p.cmdline, "sleep 2");
        assert_eq!(p.cwd, "/tmp");
        assert_eq!(p.ppid, std::process::id());
        assert!(!p.parent_exe.is_empty());
        assert!(p.sha256.is_some());
    }
}
