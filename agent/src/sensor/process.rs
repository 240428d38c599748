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

use std::collections::{HashMap, VecDeque};
use std::fs;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use sysinfo::{ProcessRefreshKind, ProcessesToUpdate, System};

use ward_protocol::ProcessNode;

use super::context::{self, CgroupPaths};
use super::hash::{HashBudget, HashCache, HashError, Priority};
use super::lineage::LineageReader;
use super::masquerade::{self, SystemBinaries};
use super::pipes::{PipeBook, pipe_inode_of_link};
use super::{SensorConfig, SensorCtx, SensorError};
use crate::procfs::{ProcError, ProcStat, parse_passwd, proc_path, read_cmdline, read_exe, read_stat, read_uids};
use ward_detect::event::{EventData, PipeEnd, PipePeers, ProcessContext, ProcessEvent};

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
    /// Processes named in network events, by (pid, start time), with when read.
    net_cache: Mutex<HashMap<(u32, u64), (Instant, ProcessEvent)>>,
    /// Cgroup paths by the kernel's cgroup id.
    cgroups: CgroupPaths,
    /// Pid 1's mount and pid namespaces, read at start.
    host_ns: Option<(u32, u32)>,
    /// Recent pipe ends, to tell what feeds a shell (see [`super::pipes`]).
    pipes: Mutex<PipeBook>,
    /// System executables by size, to tell a renamed copy (see [`super::masquerade`]).
    system_binaries: Mutex<SystemBinaries>,
    /// The newest programs started, as reported: what names a process that exited
    /// before anyone could read it from /proc (a `cp` that wrote a file).
    recent: Mutex<RecentExecs>,
}

/// How many of the newest started programs [`ProcessTracker::recent_exec`] remembers...
pub const RECENT_EXECS: usize = 512;
/// ...and for how long: a writer is looked up within a second of its close, and an
/// event with its ancestry and command lines can weigh kilobytes on a build host.
pub const RECENT_EXEC_KEEP: Duration = Duration::from_secs(5);

/// The newest exec events by pid, oldest dropped first.
#[derive(Debug, Default)]
struct RecentExecs {
    /// Each pid's newest program, with the number it was kept under.
    by_pid: HashMap<u32, (u64, Arc<ProcessEvent>)>,
    order: VecDeque<(u32, u64, Instant)>,
    next: u64,
}

impl RecentExecs {
    fn keep(&mut self, ev: &ProcessEvent, now: Instant) {
        self.expire(now);
        while self.order.len() >= RECENT_EXECS {
            self.drop_oldest();
        }
        self.next += 1;
        self.order.push_back((ev.pid, self.next, now));
        self.by_pid.insert(ev.pid, (self.next, Arc::new(ev.clone())));
    }

    fn expire(&mut self, now: Instant) {
        while self
            .order
            .front()
            .is_some_and(|(_, _, at)| now.duration_since(*at) > RECENT_EXEC_KEEP)
        {
            self.drop_oldest();
        }
    }

    fn drop_oldest(&mut self) {
        if let Some((pid, n, _)) = self.order.pop_front()
            // Only when that entry is still the pid's newest program.
            && self.by_pid.get(&pid).is_some_and(|(kept, _)| *kept == n)
        {
            self.by_pid.remove(&pid);
        }
    }

    fn get(&self, pid: u32) -> Option<&Arc<ProcessEvent>> {
        self.by_pid.get(&pid).map(|(_, ev)| ev)
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock leaves plain data behind; keep using it.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl ProcessTracker {
    /// A tracker hashing executables up to `exe_hash_max_bytes`, caching `cache_entries` hashes.
    pub fn new(exe_hash_max_bytes: u64, cache_entries: usize) -> Self {
        Self::with_lineage(
            exe_hash_max_bytes,
            cache_entries,
            Arc::new(LineageReader::new()),
            HashBudget::unlimited(),
        )
    }

    /// Like [`ProcessTracker::new`], reading lineages (and user names) through `lineage`
    /// and hashing executables within `budget`.
    pub fn with_lineage(
        exe_hash_max_bytes: u64,
        cache_entries: usize,
        lineage: Arc<LineageReader>,
        budget: Arc<HashBudget>,
    ) -> Self {
        ProcessTracker {
            seen: Mutex::new(HashMap::new()),
            hashes: Mutex::new(HashCache::with_budget(cache_entries, exe_hash_max_bytes, budget)),
            lineage,
            proc_root: PathBuf::from("/proc"),
            net_cache: Mutex::new(HashMap::new()),
            cgroups: CgroupPaths::system(),
            host_ns: context::host_namespaces(std::path::Path::new("/proc")),
            pipes: Mutex::new(PipeBook::default()),
            system_binaries: Mutex::new(SystemBinaries::new(masquerade::SYSTEM_DIRS)),
            recent: Mutex::new(RecentExecs::default()),
        }
    }

    /// The newest program reported for `pid` (by the exec source, so complete even
    /// when the process is gone), if it is among the last [`RECENT_EXECS`] and was
    /// reported within [`RECENT_EXEC_KEEP`].
    pub fn recent_exec(&self, pid: u32) -> Option<Arc<ProcessEvent>> {
        let mut recent = lock(&self.recent);
        recent.expire(Instant::now());
        recent.get(pid).cloned()
    }

    /// Records a new program's stdin and stdout pipes and returns the processes at their
    /// other ends seen so far.
    fn pipe_peers(
        &self,
        pid: u32,
        exe: &str,
        cmdline: &str,
        stdin: Option<u64>,
        stdout: Option<u64>,
    ) -> Option<Box<PipePeers>> {
        if stdin.is_none() && stdout.is_none() {
            return None;
        }
        let me = PipeEnd {
            pid,
            exe: exe.to_string(),
            cmdline: cmdline.to_string(),
        };
        let links = lock(&self.pipes).record(crate::clock::now_ms(), &me, stdin, stdout);
        (links.from.is_some() || links.to.is_some()).then(|| Box::new(links))
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
        let ev = self.describe(pid, stat, exe, exe_deleted);
        lock(&self.recent).keep(&ev, Instant::now());
        Ok(Some(ev))
    }

    /// Reads a running process as a process event, whether or not it was reported
    /// (the process that opened a watched file). `Err` when it is gone. A process
    /// that already exited (a zombie: no executable left to read) is named by the
    /// executable recorded when it was reported, if it was.
    pub fn read(&self, pid: u32) -> Result<ProcessEvent, ProcError> {
        let stat = read_stat(&self.proc_root, pid)?;
        let (mut exe, exe_deleted) = read_exe(&self.proc_root, pid);
        if exe.is_empty()
            && let Some(s) = lock(&self.seen).get(&pid)
            && s.start_time_ms == stat.start_time_ms
        {
            exe.clone_from(&s.exe);
        }
        Ok(self.describe(pid, stat, exe, exe_deleted))
    }

    fn describe(&self, pid: u32, stat: ProcStat, exe: String, exe_deleted: bool) -> ProcessEvent {
        let root = &self.proc_root;
        let cmdline = read_cmdline(root, pid);
        let cwd = fs::read_link(proc_path(root, pid, "cwd"))
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        let uids = read_uids(root, pid);
        let uid = uids.map(|(real, _)| real);
        let user = uid.map(|u| self.lineage.user_name(u)).unwrap_or_default();
        let sha256 = if exe.is_empty() { None } else { self.exe_hash(pid, None) };
        let original_image = self.original_image(pid, &exe, None, sha256.as_ref());
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
        let context = Arc::new(context::read_context(root, pid, self.host_ns, &|u| {
            self.lineage.user_name(u)
        }));
        let pipe = |fd: &str| {
            fs::read_link(proc_path(root, pid, fd))
                .ok()
                .and_then(|l| pipe_inode_of_link(&l.to_string_lossy()))
        };
        let pipes = self.pipe_peers(pid, &exe, &cmdline, pipe("fd/0"), pipe("fd/1"));
        ProcessEvent {
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
            lineage: Some(Arc::new(lineage)),
            context,
            pipes,
            original_image,
        }
    }

    /// The event of an exec the kernel reported (eBPF): argv, parent, ids, paths, the
    /// deleted mark and start time come from the kernel as it ran exec, so they are
    /// complete even when the process is already gone; /proc adds only the hash (through
    /// /proc/PID/exe while it lives, else the path) and the ancestors above the parent.
    pub fn from_kernel(&self, rec: &super::ebpf::ExecRecord) -> ProcessEvent {
        let root = &self.proc_root;
        let pid = rec.tgid;
        let start_time_ms = crate::clock::start_time_ms_from_boot_ns(rec.start_ns);
        let exe = rec.image().to_string();
        let exe_deleted = rec.exe_deleted;
        lock(&self.seen).insert(
            pid,
            Seen {
                start_time_ms,
                exe: exe.clone(),
                at: Instant::now(),
            },
        );
        let cmdline = rec.cmdline();
        let user = self.lineage.user_name(rec.uid);
        let sha256 = if exe.is_empty() {
            None
        } else {
            // The kernel named the executable's version: a cached hash needs no stat.
            rec.exe_key
                .and_then(|key| lock(&self.hashes).cached(&key))
                .or_else(|| self.exe_hash(pid, Some(&exe)))
        };
        let original_image = self.original_image(pid, &exe, rec.exe_key.map(|k| k.size), sha256.as_ref());
        let pipes = self.pipe_peers(pid, &exe, &cmdline, rec.stdin_pipe, rec.stdout_pipe);
        let login_uid = (rec.loginuid != u32::MAX).then_some(rec.loginuid);
        let login_user = login_uid.map(|u| self.lineage.user_name(u));
        let context = Arc::new(self.kernel_context(rec, login_uid, login_user.clone()));
        // Ancestors read within the last 250 ms are not read again: a burst of execs
        // under one shell costs one walk of its chain, not one per exec.
        let lineage = self.lineage.lineage_of_recent(
            ProcessNode {
                pid,
                ppid: rec.ppid,
                start_time_ms,
                exe: exe.clone(),
                cmdline: cmdline.clone(),
                user: Some(self.lineage.user_name(rec.euid)),
                login_user,
            },
            Duration::from_millis(250),
        );
        let (parent_exe, parent_cmdline) = match lineage.ancestors.first() {
            Some(parent) => (parent.exe.clone(), parent.cmdline.clone()),
            None if rec.ppid == 1 => (read_exe(root, 1).0, read_cmdline(root, 1)),
            None => (String::new(), String::new()),
        };
        let ev = ProcessEvent {
            pid,
            ppid: rec.ppid,
            start_time_ms,
            exe,
            cmdline,
            cwd: rec.cwd.clone(),
            user,
            uid: Some(rec.uid),
            sha256,
            parent_exe,
            parent_cmdline,
            exe_deleted,
            lineage: Some(Arc::new(lineage)),
            context,
            pipes,
            original_image,
        };
        lock(&self.recent).keep(&ev, Instant::now());
        ev
    }

    /// The context of an exec the kernel reported: its numbers from the record, the
    /// cgroup's path by id (see [`CgroupPaths::path_of`]).
    fn kernel_context(
        &self,
        rec: &super::ebpf::ExecRecord,
        login_uid: Option<u32>,
        login_user: Option<String>,
    ) -> ProcessContext {
        let cgroup = self.cgroups.path_of(rec.cgroup_id, &self.proc_root, rec.tgid);
        let mnt_ns = (rec.mnt_ns != 0).then_some(rec.mnt_ns);
        let pid_ns = (rec.pid_ns != 0).then_some(rec.pid_ns);
        ProcessContext {
            tty: rec.tty.clone(),
            session_id: (rec.sessionid != u32::MAX).then_some(rec.sessionid),
            login_uid,
            login_user,
            container_id: context::container_id(&cgroup),
            cgroup,
            mnt_ns,
            pid_ns,
            host_namespaces: context::same_namespaces(mnt_ns, pid_ns, self.host_ns),
        }
    }

    /// The process behind a network event: read from /proc while it lives (its last
    /// reading is reused for a minute, so a busy client costs one read, not one per
    /// connection); once gone, what the exec source recorded for it, else its thread
    /// name as the kernel gave it. `exe_then` is the executable the kernel saw when the
    /// process connected or listened: it wins over a later program.
    pub fn network_process(
        &self,
        tgid: u32,
        start_ns: u64,
        uid: u32,
        comm: &str,
        exe_then: Option<&str>,
    ) -> ProcessEvent {
        let start_time_ms = crate::clock::start_time_ms_from_boot_ns(start_ns);
        // The kernel named the program that connected; /proc (or the cache) may show
        // the one it exec'd since: then that program, whose command line is gone.
        let exe_then = exe_then.filter(|e| !e.is_empty());
        let as_then = |ev: ProcessEvent| match exe_then {
            Some(exe) if ev.exe != exe => ProcessEvent {
                pid: tgid,
                ppid: ev.ppid,
                start_time_ms,
                exe: exe.to_string(),
                user: self.lineage.user_name(uid),
                uid: Some(uid),
                ..ProcessEvent::default()
            },
            _ => ev,
        };
        {
            let cache = lock(&self.net_cache);
            if let Some((at, ev)) = cache.get(&(tgid, start_time_ms))
                && at.elapsed() < Duration::from_secs(60)
                && exe_then.is_none_or(|e| e == ev.exe)
            {
                return ev.clone();
            }
        }
        let ev = match self.read(tgid) {
            Ok(ev) if ev.start_time_ms == start_time_ms => ev,
            _ => {
                let exe = lock(&self.seen)
                    .get(&tgid)
                    .filter(|s| s.start_time_ms == start_time_ms)
                    .map(|s| s.exe.clone())
                    .unwrap_or_default();
                ProcessEvent {
                    pid: tgid,
                    start_time_ms,
                    exe,
                    cmdline: comm.to_string(),
                    user: self.lineage.user_name(uid),
                    uid: Some(uid),
                    ..ProcessEvent::default()
                }
            }
        };
        let mut cache = lock(&self.net_cache);
        if cache.len() >= 1024 {
            cache.retain(|_, (at, _)| at.elapsed() < Duration::from_secs(60));
            if cache.len() >= 1024 {
                cache.clear();
            }
        }
        cache.insert((tgid, start_time_ms), (Instant::now(), ev.clone()));
        as_then(ev)
    }

    /// The SHA-256 of `pid`'s executable (or, once it is gone, of the file at `exe`), within
    /// the hashing budget; a hash the budget refused is counted.
    fn exe_hash(&self, pid: u32, exe: Option<&str>) -> Option<[u8; 32]> {
        let mut hashes = lock(&self.hashes);
        let mut result = hashes.hash_as(&proc_path(&self.proc_root, pid, "exe"), Priority::Executable);
        if let (Err(HashError::Io { .. } | HashError::NotRegular { .. }), Some(exe)) = (&result, exe) {
            result = hashes.hash_as(std::path::Path::new(exe), Priority::Executable);
        }
        if matches!(result, Err(HashError::OverBudget { .. })) {
            hashes.budget().count_skip(Priority::Executable);
        }
        result.ok()
    }

    /// The system binary `pid`'s executable `exe` (of `size` bytes, read when `None`) is a
    /// renamed copy of ([`super::masquerade`]).
    fn original_image(&self, pid: u32, exe: &str, size: Option<u64>, sha256: Option<&[u8; 32]>) -> Option<String> {
        let sha256 = sha256?;
        let mut system = lock(&self.system_binaries);
        if exe.is_empty() || system.is_system_path(exe) {
            return None;
        }
        let size = size.or_else(|| {
            fs::metadata(proc_path(&self.proc_root, pid, "exe"))
                .or_else(|_| fs::metadata(exe))
                .ok()
                .map(|m| m.len())
        })?;
        system.original_of(exe, size, sha256, &mut lock(&self.hashes), Instant::now())
    }

    /// What the hashing budget left unhashed since its last report, at most once a minute.
    pub fn hash_budget_report(&self) -> Option<String> {
        lock(&self.hashes).budget().report(Instant::now())
    }

    /// Forgets processes that have exited and were recorded before `before` (the
    /// kernel source reports execs, not exits; this bounds what it remembers).
    ///
    /// /proc is listed once (one directory read) rather than each remembered pid
    /// looked up: a busy host remembers tens of thousands of pids between prunes. If
    /// /proc cannot be listed, nothing is forgotten.
    pub fn prune_exited(&self, before: Instant) {
        self.refresh_system_binaries(before);
        let Some(live) = crate::procfs::live_pids(&self.proc_root) else {
            return;
        };
        self.prune(&|pid| live.contains(&pid), before);
    }

    /// Lists the system directories again once the masquerade index is
    /// [`masquerade::RESCAN`] old, without holding the lock execs take meanwhile.
    pub fn refresh_system_binaries(&self, now: Instant) {
        let dirs = {
            let system = lock(&self.system_binaries);
            if !system.due(now) {
                return;
            }
            system.dirs().to_vec()
        };
        let by_size = masquerade::listing(&dirs);
        lock(&self.system_binaries).install(by_size, now);
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

/// Polls for new processes until the sensor is stopped. `ebpf_unavailable` is why the
/// eBPF exec source could not be used, when this poll is its fallback: the sensor is
/// then degraded and says why.
pub fn run_poller(
    config: &SensorConfig,
    tracker: &ProcessTracker,
    ebpf_unavailable: Option<&str>,
    ctx: &SensorCtx,
) -> Result<(), SensorError> {
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
    let source = format!("/proc every {} ms", interval.as_millis());
    if let Some(why) = ebpf_unavailable {
        let detail = format!(
            "eBPF exec source unavailable ({why}): using the netlink connector and /proc, which \
             read a process after its exec, so one that exits within a millisecond may arrive \
             without its command line and parent"
        );
        ctx.degraded(source, detail.clone());
        if !ctx.gap(detail) {
            return Ok(());
        }
    } else if config.process_connector_enabled {
        ctx.ready(source);
    } else {
        let detail = format!(
            "process poll interval {} ms without the netlink connector: processes living shorter may be missed",
            interval.as_millis()
        );
        ctx.degraded(source, detail.clone());
        if !ctx.gap(detail) {
            return Ok(());
        }
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
        tracker.refresh_system_binaries(listed_at);
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
        // The /proc path fills the context the kernel path does.
        let (mnt, pid) = context::read_namespaces(std::path::Path::new("/proc"), me);
        assert_eq!((ev.context.mnt_ns, ev.context.pid_ns), (mnt, pid));
        assert!(mnt.is_some(), "{:?}", ev.context);
        assert!(!ev.context.cgroup.is_empty(), "{:?}", ev.context);
        assert!(t.observe(me).unwrap().is_none(), "reported twice");
    }

    #[test]
    fn kernel_execs_sharing_a_pipe_name_each_other() {
        let t = ProcessTracker::new(1 << 20, 16);
        let rec = |pid: u32, exe: &str, stdin: Option<u64>, stdout: Option<u64>| super::super::ebpf::ExecRecord {
            tgid: pid,
            ppid: 1,
            exe: exe.into(),
            argv: vec![exe.rsplit('/').next().unwrap().into()],
            stdin_pipe: stdin,
            stdout_pipe: stdout,
            ..Default::default()
        };
        let b64 = t.from_kernel(&rec(900_001, "/usr/bin/base64", Some(1), Some(2)));
        assert!(b64.pipes.is_none(), "nothing at the other ends yet");
        let bash = t.from_kernel(&rec(900_002, "/usr/bin/bash", Some(2), None));
        let from = bash.pipes.and_then(|p| p.from).expect("bash learns what feeds it");
        assert_eq!(
            (from.pid, from.exe.as_str(), from.cmdline.as_str()),
            (900_001, "/usr/bin/base64", "base64")
        );
    }

    #[test]
    fn a_gone_program_is_named_by_its_exec_until_newer_ones_push_it_out() {
        let t = ProcessTracker::new(1 << 20, 16);
        let rec = |pid: u32, exe: &str| super::super::ebpf::ExecRecord {
            tgid: pid,
            ppid: 1,
            exe: exe.into(),
            argv: vec![exe.into(), "/tmp/a".into()],
            ..Default::default()
        };
        t.from_kernel(&rec(900_010, "/usr/bin/cp"));
        let cp = t.recent_exec(900_010).expect("kept");
        assert_eq!(
            (cp.exe.as_str(), cp.cmdline.as_str()),
            ("/usr/bin/cp", "/usr/bin/cp /tmp/a")
        );
        // The same process running a new program: that one is its newest.
        t.from_kernel(&rec(900_010, "/usr/bin/install"));
        assert_eq!(t.recent_exec(900_010).unwrap().exe, "/usr/bin/install");
        for pid in 0..RECENT_EXECS as u32 - 1 {
            t.from_kernel(&rec(910_000 + pid, "/usr/bin/true"));
        }
        assert!(
            t.recent_exec(900_010).is_some(),
            "its older entry going did not take the newer"
        );
        t.from_kernel(&rec(920_000, "/usr/bin/true"));
        assert!(t.recent_exec(900_010).is_none(), "bounded: the oldest go first");
        assert!(t.recent_exec(920_000).is_some());
        // And only for a while: past RECENT_EXEC_KEEP an exec is forgotten.
        let mut recent = RecentExecs::default();
        let t0 = Instant::now();
        recent.keep(&t.recent_exec(920_000).unwrap(), t0);
        recent.expire(t0 + RECENT_EXEC_KEEP);
        assert!(recent.get(920_000).is_some());
        recent.expire(t0 + RECENT_EXEC_KEEP + Duration::from_millis(1));
        assert!(recent.get(920_000).is_none() && recent.order.is_empty());
    }

    #[test]
    fn pruning_forgets_exited_processes_and_keeps_live_ones() {
        let t = ProcessTracker::new(1 << 20, 16);
        let me = std::process::id();
        let mut child = std::process::Command::new("sleep").arg("30").spawn().unwrap();
        assert!(t.remember(me) && t.remember(child.id()));
        child.kill().unwrap();
        child.wait().unwrap();
        t.prune_exited(Instant::now());
        assert_eq!(t.len(), 1, "only this process is still alive");
        assert!(!t.remember(child.id()), "the exited child cannot be read again");
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
        let handle = std::thread::spawn(move || run_poller(&config, &t, None, &ctx));
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
