//! File changes in watched paths (inotify through notify): create, modify, rename, delete, chmod.
//!
//! Bursts of writes to one file are coalesced: a file is reported (and hashed once) when its
//! writes pause for `file_settle_ms`, when it is closed after writing, or at the latest
//! `file_max_delay_ms` after its first event. Renames, deletes and permission changes are
//! reported at once. A file moved out of the watched paths is reported as deleted, one moved
//! in as created. Must not follow a file's content beyond the hash limit, block on a slow
//! consumer forever (it checks the stop flag), or hide what it cannot watch: an exhausted
//! watch limit, an unreadable path and a kernel queue overflow are gaps.
//!
//! Every `file_watch_check_ms` the kernel's watch list is compared with the watched trees:
//! a root or a directory below one that exists unwatched (replaced, mounted over, refused
//! by the watch limit, its create lost) is watched again, reported as a gap and rescanned;
//! one that cannot be watched again is a gap naming it and why. A directory that appears
//! is read for the files it already holds, which have no event of their own.

use std::collections::{HashMap, HashSet, VecDeque};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use notify::event::{AccessKind, AccessMode, EventKind, MetadataKind, ModifyKind, RenameMode};
use notify::{RecursiveMode, Watcher};

use super::hash::{HashBudget, HashCache, HashError, Priority};
use super::writers::WriterBook;
use super::{SensorConfig, SensorCtx, SensorError};
use ward_detect::event::{EventData, FileEvent, FileOp};

/// Expands `*` path components (one directory level each) of an absolute pattern.
/// Paths that do not exist are left out.
pub fn expand(pattern: &str) -> Vec<PathBuf> {
    let mut acc = vec![PathBuf::from("/")];
    for comp in Path::new(pattern).components().skip(1) {
        let comp = comp.as_os_str().to_string_lossy();
        let mut next = Vec::new();
        for base in acc {
            if comp == "*" {
                if let Ok(rd) = std::fs::read_dir(&base) {
                    let mut found: Vec<PathBuf> = rd
                        .filter_map(|e| e.ok())
                        .map(|e| e.path())
                        .filter(|p| p.is_dir())
                        .collect();
                    found.sort();
                    next.extend(found);
                }
            } else {
                next.push(base.join(comp.as_ref()));
            }
        }
        acc = next;
    }
    acc.into_iter().filter(|p| p.exists()).collect()
}

/// A change ready to be reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ready {
    pub op: FileOp,
    pub path: PathBuf,
    pub from_path: Option<PathBuf>,
}

#[derive(Debug)]
struct PendingWrite {
    op: FileOp,
    first: Instant,
    last: Instant,
}

/// Turns notify events into [`Ready`] changes, coalescing writes. Pure: time is passed in.
#[derive(Debug)]
pub struct Coalescer {
    settle: Duration,
    max_delay: Duration,
    writes: HashMap<PathBuf, PendingWrite>,
    moved_from: HashMap<usize, (PathBuf, Instant)>,
    moved_to: HashMap<usize, (PathBuf, Instant)>,
}

impl Coalescer {
    pub fn new(settle: Duration, max_delay: Duration) -> Self {
        Coalescer {
            settle,
            max_delay,
            writes: HashMap::new(),
            moved_from: HashMap::new(),
            moved_to: HashMap::new(),
        }
    }

    /// Holds nothing that becomes due later.
    pub fn is_empty(&self) -> bool {
        self.writes.is_empty() && self.moved_from.is_empty() && self.moved_to.is_empty()
    }

    fn flush_path(&mut self, path: &Path, out: &mut Vec<Ready>) {
        if let Some(p) = self.writes.remove(path) {
            out.push(Ready {
                op: p.op,
                path: path.to_path_buf(),
                from_path: None,
            });
        }
    }

    /// Takes one notify event; returns what is ready at once.
    pub fn on_event(&mut self, ev: &notify::Event, now: Instant) -> Vec<Ready> {
        let mut out = Vec::new();
        let first = ev.paths.first().cloned();
        match ev.kind {
            EventKind::Create(_) => {
                if let Some(p) = first {
                    self.writes.insert(
                        p,
                        PendingWrite {
                            op: FileOp::Create,
                            first: now,
                            last: now,
                        },
                    );
                }
            }
            EventKind::Modify(ModifyKind::Data(_) | ModifyKind::Any | ModifyKind::Other) => {
                if let Some(p) = first {
                    self.writes
                        .entry(p)
                        .and_modify(|w| w.last = now)
                        .or_insert(PendingWrite {
                            op: FileOp::Modify,
                            first: now,
                            last: now,
                        });
                }
            }
            EventKind::Access(AccessKind::Close(AccessMode::Write)) => {
                if let Some(p) = first {
                    self.flush_path(&p, &mut out);
                }
            }
            EventKind::Modify(ModifyKind::Metadata(
                MetadataKind::Any | MetadataKind::Permissions | MetadataKind::Ownership,
            )) => {
                // A file still being created is reported with its final mode anyway.
                if let Some(p) = first
                    && !self.writes.get(&p).is_some_and(|w| w.op == FileOp::Create)
                {
                    out.push(Ready {
                        op: FileOp::Chmod,
                        path: p,
                        from_path: None,
                    });
                }
            }
            EventKind::Modify(ModifyKind::Name(RenameMode::Both)) => {
                if let (Some(from), Some(to)) = (ev.paths.first(), ev.paths.get(1)) {
                    if let Some(t) = ev.attrs.tracker() {
                        self.moved_from.remove(&t);
                        self.moved_to.remove(&t);
                    }
                    self.flush_path(from, &mut out);
                    out.push(Ready {
                        op: FileOp::Rename,
                        path: to.clone(),
                        from_path: Some(from.clone()),
                    });
                }
            }
            EventKind::Modify(ModifyKind::Name(RenameMode::From)) => match (first, ev.attrs.tracker()) {
                (Some(p), Some(t)) => {
                    self.moved_from.insert(t, (p, now));
                }
                // MOVE_SELF of a watched root: it left its place.
                (Some(p), None) => out.push(Ready {
                    op: FileOp::Delete,
                    path: p,
                    from_path: None,
                }),
                _ => {}
            },
            EventKind::Modify(ModifyKind::Name(RenameMode::To)) => {
                if let (Some(p), Some(t)) = (first, ev.attrs.tracker()) {
                    self.moved_to.insert(t, (p, now));
                }
            }
            EventKind::Remove(_) => {
                if let Some(p) = first {
                    self.flush_path(&p, &mut out);
                    out.push(Ready {
                        op: FileOp::Delete,
                        path: p,
                        from_path: None,
                    });
                }
            }
            _ => {}
        }
        out
    }

    /// What has waited long enough.
    pub fn due(&mut self, now: Instant) -> Vec<Ready> {
        let mut out = Vec::new();
        let (settle, max_delay) = (self.settle, self.max_delay);
        let mut ready: Vec<(PathBuf, FileOp, Instant)> = self
            .writes
            .iter()
            .filter(|(_, w)| now.duration_since(w.last) >= settle || now.duration_since(w.first) >= max_delay)
            .map(|(p, w)| (p.clone(), w.op, w.first))
            .collect();
        ready.sort_by_key(|(_, _, first)| *first);
        for (p, op, _) in ready {
            self.writes.remove(&p);
            out.push(Ready {
                op,
                path: p,
                from_path: None,
            });
        }
        // Half a rename whose other half never came: moved out of, or into, the watched paths.
        let expired = |m: &mut HashMap<usize, (PathBuf, Instant)>| {
            let keys: Vec<usize> = m
                .iter()
                .filter(|(_, (_, t))| now.duration_since(*t) >= settle)
                .map(|(k, _)| *k)
                .collect();
            keys.into_iter()
                .filter_map(|k| m.remove(&k))
                .map(|(p, _)| p)
                .collect::<Vec<_>>()
        };
        for p in expired(&mut self.moved_from) {
            out.push(Ready {
                op: FileOp::Delete,
                path: p,
                from_path: None,
            });
        }
        for p in expired(&mut self.moved_to) {
            out.push(Ready {
                op: FileOp::Create,
                path: p,
                from_path: None,
            });
        }
        out
    }
}

/// Which changed files are hashed: none under `skip` (logs); under `temp` (temporary
/// directories, where builds write object files, libraries and caches all the time) a
/// file without an execute bit only up to `temp_max_bytes`; a larger one is reported
/// without a SHA-256 and counted (`HashBudget::count_temp_skip`). A file given an execute
/// bit later is hashed on that change, and a program is hashed when it runs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HashPolicy {
    pub skip: Vec<PathBuf>,
    pub temp: Vec<PathBuf>,
    pub temp_max_bytes: u64,
}

impl HashPolicy {
    /// The policy of `[sensors]`.
    pub fn of(config: &SensorConfig) -> Self {
        HashPolicy {
            skip: config.file_hash_skip_paths.iter().map(PathBuf::from).collect(),
            temp: config.file_hash_temp_paths.iter().map(PathBuf::from).collect(),
            temp_max_bytes: config.file_hash_temp_max_bytes,
        }
    }

    /// Nothing hashed under `skip`; no rule for temporary directories.
    pub fn skipping(skip: &[PathBuf]) -> Self {
        HashPolicy {
            skip: skip.to_vec(),
            ..HashPolicy::default()
        }
    }

    /// A large file without an execute bit under a temporary directory.
    fn large_temp(&self, path: &Path, meta: &std::fs::Metadata) -> bool {
        meta.size() > self.temp_max_bytes && meta.mode() & 0o111 == 0 && self.temp.iter().any(|p| path.starts_with(p))
    }
}

/// Builds the event for a ready change: mode, owner, size and (regular files under the limit)
/// SHA-256. A file already gone is reported without them.
pub fn describe(ready: Ready, hashes: &mut HashCache, policy: &HashPolicy) -> FileEvent {
    describe_within_budget(ready, hashes, policy).0
}

/// As [`describe`]; also true when the hashing budget refused the hash (the caller may
/// try again a little later). Files with an execute bit spend the budget first.
pub fn describe_within_budget(ready: Ready, hashes: &mut HashCache, policy: &HashPolicy) -> (FileEvent, bool) {
    let meta = std::fs::symlink_metadata(&ready.path).ok();
    let is_file = meta.as_ref().is_some_and(|m| m.is_file());
    let mut skip = policy.skip.iter().any(|p| ready.path.starts_with(p));
    if is_file
        && !skip
        && ready.op != FileOp::Delete
        && meta.as_ref().is_some_and(|m| policy.large_temp(&ready.path, m))
    {
        hashes.budget().count_temp_skip();
        skip = true;
    }
    let mut over_budget = false;
    let sha256 = if is_file && ready.op != FileOp::Delete && !skip {
        let priority = match &meta {
            Some(m) if m.mode() & 0o111 != 0 => Priority::Executable,
            _ => Priority::File,
        };
        let hashed = hashes.hash_as(&ready.path, priority);
        over_budget = matches!(hashed, Err(HashError::OverBudget { .. }));
        hashed.ok()
    } else {
        None
    };
    let meta = meta.filter(|_| ready.op != FileOp::Delete);
    let event = FileEvent {
        op: ready.op,
        path: ready.path.to_string_lossy().into_owned(),
        from_path: ready.from_path.map(|p| p.to_string_lossy().into_owned()),
        sha256,
        size: meta.as_ref().filter(|_| is_file).map(|m| m.size()),
        mode: meta.as_ref().map(|m| m.mode() & 0o7777),
        uid: meta.as_ref().map(|m| m.uid()),
        changed_ms: meta.as_ref().map(changed_ms),
        process: None,
    };
    (event, over_budget)
}

/// How long a change waits for the hashing budget at most.
const HASH_DEFER: Duration = Duration::from_secs(2);
/// Changes waiting for the budget at most; beyond, a change is reported at once.
const HASH_DEFER_MAX: usize = 1024;

/// The later of a file's mtime and ctime, Unix ms.
pub fn changed_ms(meta: &std::fs::Metadata) -> u64 {
    let ms =
        |secs: i64, nsecs: i64| u64::try_from(secs.saturating_mul(1000).saturating_add(nsecs / 1_000_000)).unwrap_or(0);
    ms(meta.mtime(), meta.mtime_nsec()).max(ms(meta.ctime(), meta.ctime_nsec()))
}

/// What the start-up rescan looks for: changes after `since_ms`, except those already
/// judged (path to the change time whose alert the outbox holds; see `outbox`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Rescan {
    pub since_ms: u64,
    pub judged: HashMap<String, u64>,
}

/// The most directory entries a start-up rescan looks at; past it a gap says so.
pub const RESCAN_MAX_ENTRIES: usize = 200_000;

/// Files under `roots` whose content or inode changed (mtime or ctime) after
/// `what.since_ms` and were not judged since: what changed while the agent was down or
/// was in flight at a crash. A file born after
/// `since_ms` is a create, any other a modify; oldest change first. Symbolic links are
/// not followed. The bool is false when `max_entries` stopped the walk early.
pub fn rescan(roots: &[PathBuf], what: &Rescan, max_entries: usize) -> (Vec<Ready>, bool) {
    let since_ms = what.since_ms;
    let mut found: Vec<(u64, Ready)> = Vec::new();
    let mut stack: Vec<PathBuf> = roots.to_vec();
    let mut seen = 0usize;
    while let Some(path) = stack.pop() {
        seen += 1;
        if seen > max_entries {
            found.sort_by_key(|(t, _)| *t);
            return (found.into_iter().map(|(_, r)| r).collect(), false);
        }
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if meta.is_dir() {
            if let Ok(rd) = std::fs::read_dir(&path) {
                stack.extend(rd.filter_map(|e| e.ok()).map(|e| e.path()));
            }
            continue;
        }
        if !meta.is_file() {
            continue;
        }
        let changed = changed_ms(&meta);
        if changed <= since_ms
            || what
                .judged
                .get(path.to_string_lossy().as_ref())
                .is_some_and(|&j| j >= changed)
        {
            continue;
        }
        let born = meta
            .created()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        let op = if born.is_some_and(|b| b > since_ms) {
            FileOp::Create
        } else {
            FileOp::Modify
        };
        found.push((
            changed,
            Ready {
                op,
                path,
                from_path: None,
            },
        ));
    }
    found.sort_by_key(|(t, _)| *t);
    (found.into_iter().map(|(_, r)| r).collect(), true)
}

/// An inode as the kernel names it in inotify's fdinfo: (device, inode number).
pub type WatchedInode = (u64, u64);

/// The inodes this process's inotify instances watch, read from
/// `/proc/self/fdinfo` (one `inotify wd:… ino:… sdev:…` line per watch).
pub fn inotify_watches() -> std::io::Result<HashSet<WatchedInode>> {
    let mut out = HashSet::new();
    for entry in std::fs::read_dir("/proc/self/fd")? {
        let Ok(entry) = entry else { continue };
        let is_inotify = std::fs::read_link(entry.path()).is_ok_and(|t| t.as_os_str() == "anon_inode:inotify");
        if !is_inotify {
            continue;
        }
        let info = Path::new("/proc/self/fdinfo").join(entry.file_name());
        if let Ok(text) = std::fs::read_to_string(info) {
            out.extend(parse_fdinfo(&text));
        }
    }
    Ok(out)
}

/// The watches of one inotify fdinfo text.
pub fn parse_fdinfo(text: &str) -> impl Iterator<Item = WatchedInode> + '_ {
    text.lines().filter(|l| l.starts_with("inotify ")).filter_map(|line| {
        let field = |name: &str| {
            line.split_whitespace()
                .find_map(|f| f.strip_prefix(name))
                .and_then(|v| u64::from_str_radix(v, 16).ok())
        };
        Some((field("sdev:")?, field("ino:")?))
    })
}

/// A path's inode as inotify's fdinfo names it (the kernel's device number,
/// major << 20 | minor).
pub fn inode_of(path: &Path) -> Option<WatchedInode> {
    let meta = std::fs::metadata(path).ok()?;
    let dev = meta.dev();
    let (major, minor) = (u64::from(libc::major(dev)), u64::from(libc::minor(dev)));
    Some(((major << 20) | minor, meta.ino()))
}

/// Roots whose watch the kernel no longer holds: `checked` are the roots whose watch
/// was seen right after it was placed (elsewhere, as on some file systems, the
/// device numbers do not compare and the check cannot tell).
pub fn lost_roots<'a>(checked: impl IntoIterator<Item = &'a PathBuf>, held: &HashSet<WatchedInode>) -> Vec<PathBuf> {
    checked
        .into_iter()
        .filter(|root| inode_of(root).is_none_or(|i| !held.contains(&i)))
        .cloned()
        .collect()
}

/// The most directory entries one watch check reads below the roots. A larger tree is
/// checked over several checks, each going on where the last stopped, so a lost watch
/// deep in it is found later but still found.
/// (Measured on a shared 2-core machine: 8 to 12 ms of CPU per 1,000 directories holding
/// a file each, mostly in the kernel, 13 to 15 ms in a debug build; see
/// `the_check_finds_a_lost_watch_among_5000_directories...`.)
pub const WATCH_CHECK_MAX_ENTRIES: usize = 20_000;

/// How long a directory found unwatched waits before it counts as lost: notify watches a
/// directory created or moved in only after its event, so one that appeared an instant
/// before the check is not yet in the kernel's list.
const SUSPECT_CONFIRM: Duration = Duration::from_secs(1);

/// A walk over the watched trees for directories that exist but whose inode the kernel
/// no longer watches (a file system mounted over one, a watch the limit refused when a
/// subtree appeared, creates lost in a queue overflow). Goes on across checks when a
/// tree is larger than one check's bound.
#[derive(Debug, Default)]
pub struct SubdirCheck {
    /// Directories seen watched whose entries are still to read.
    stack: Vec<PathBuf>,
    /// When the current pass over all roots began, Unix ms.
    pass_started_ms: u64,
    /// When the previous pass began: every directory was last seen watched after it.
    prev_pass_started_ms: u64,
    /// The bound stopped a pass (said once).
    bounded: bool,
}

impl SubdirCheck {
    /// A check whose first pass looks for watches lost since `since_ms`.
    pub fn new(since_ms: u64) -> Self {
        SubdirCheck {
            prev_pass_started_ms: since_ms,
            pass_started_ms: since_ms,
            ..SubdirCheck::default()
        }
    }

    /// Reads up to `max_entries` entries below `roots` (each seen watched) and returns
    /// the directories found unwatched, the top-most of each unwatched subtree only, with
    /// their inode and the time since which each may have been blind. True when the bound
    /// stopped a pass for the first time. `skip` are directories not to look at or below.
    pub fn step(
        &mut self,
        roots: &[PathBuf],
        held: &HashSet<WatchedInode>,
        skip: &HashSet<PathBuf>,
        max_entries: usize,
        now_ms: u64,
    ) -> (Vec<(PathBuf, WatchedInode, u64)>, bool) {
        if self.stack.is_empty() {
            self.prev_pass_started_ms = self.pass_started_ms;
            self.pass_started_ms = now_ms;
            self.stack = roots.to_vec();
        }
        let mut found = Vec::new();
        let mut seen = 0usize;
        while let Some(dir) = self.stack.pop() {
            let Ok(rd) = std::fs::read_dir(&dir) else { continue };
            for entry in rd.filter_map(|e| e.ok()) {
                seen += 1;
                // Symbolic links are not followed: only real directories hold watches.
                if !entry.file_type().is_ok_and(|t| t.is_dir()) {
                    continue;
                }
                let path = entry.path();
                if skip.contains(&path) {
                    continue;
                }
                // stat, not the entry's inode: a mount point shows the mounted root.
                match inode_of(&path) {
                    Some(ino) if held.contains(&ino) => self.stack.push(path),
                    Some(ino) => found.push((path, ino, self.prev_pass_started_ms)),
                    None => {}
                }
            }
            if seen >= max_entries && !self.stack.is_empty() {
                let first = !self.bounded;
                self.bounded = true;
                return (found, first);
            }
        }
        (found, false)
    }
}

/// The watch limit, its value and how to raise it.
fn limit_reason() -> String {
    let limit = std::fs::read_to_string("/proc/sys/fs/inotify/max_user_watches")
        .map(|v| format!(" ({})", v.trim()))
        .unwrap_or_default();
    format!(
        "the inotify watch limit fs.inotify.max_user_watches{limit} is reached \
         (raise it: sysctl -w fs.inotify.max_user_watches=<more>, and in /etc/sysctl.d/)"
    )
}

fn watch_error_gap(path: &Path, e: &notify::Error) -> String {
    match &e.kind {
        notify::ErrorKind::MaxFilesWatch => format!(
            "inotify watch limit reached while watching {} (raise fs.inotify.max_user_watches): changes there are not seen",
            path.display()
        ),
        _ => format!("cannot watch {}: {e}: changes there are not seen", path.display()),
    }
}

/// Ready once the configured paths that exist are watched; degraded while some
/// cannot be (their gaps say why).
/// `blind` are directories below the roots whose watch was lost and cannot be placed again.
fn report_readiness(
    ctx: &SensorCtx,
    watched: &HashSet<PathBuf>,
    failed: &HashSet<PathBuf>,
    blind: &HashMap<PathBuf, u64>,
    watches: usize,
) {
    /// Paths named at most; the rest are counted.
    const NAMED: usize = 10;
    let source = format!("inotify: {} roots, {watches} watches", watched.len());
    if failed.is_empty() && blind.is_empty() {
        ctx.ready(source);
    } else {
        let mut paths: Vec<String> = failed
            .iter()
            .chain(blind.keys())
            .map(|p| p.display().to_string())
            .collect();
        paths.sort();
        let more = paths.len().saturating_sub(NAMED);
        paths.truncate(NAMED);
        let mut detail = format!("not watched: {}", paths.join(", "));
        if more > 0 {
            detail.push_str(&format!(" and {more} more"));
        }
        ctx.degraded(source, detail);
    }
}

/// How far before a check the rescan of a re-armed directory starts, milliseconds.
const FILE_CLOCK_MARGIN_MS: u64 = 1000;

/// Reports the files under `dir` changed after `since_ms` that were not reported yet.
/// False when the sensor should stop.
fn emit_changed_since(
    ctx: &SensorCtx,
    dir: &Path,
    since_ms: u64,
    hashes: &mut HashCache,
    no_hash: &HashPolicy,
    reported: &mut Reported,
) -> bool {
    // File times come from the kernel's coarse clock, up to a tick behind the wall
    // clock that `since_ms` was read from: a file written just after it could look older.
    // What the margin finds again was reported already and is not reported twice.
    let since = Rescan {
        since_ms: since_ms.saturating_sub(FILE_CLOCK_MARGIN_MS),
        judged: HashMap::new(),
    };
    let (changed, _) = rescan(&[dir.to_path_buf()], &since, RESCAN_MAX_ENTRIES);
    for r in changed {
        let ev = describe(r, hashes, no_hash);
        if reported.is_new(&ev) && !ctx.emit(EventData::File(ev)) {
            return false;
        }
    }
    true
}

/// Watches the configured paths until the sensor stops.
/// How long a created or written file waits for its writer's note: fanotify's queue
/// is read by another thread and may trail inotify's by a moment.
const WRITER_NOTE_WAIT: Duration = Duration::from_millis(50);
/// How long it waits when the writer exited before /proc could be read: it is named
/// from its exec, which the process sensor may report a little later under load.
const WRITER_EXEC_WAIT: Duration = Duration::from_millis(250);

/// Whether a change that began waiting for its writer at `since` may wait on.
fn may_wait(ev: &FileEvent, since: Instant, now: Instant) -> bool {
    let limit = if ev.process.is_some() {
        WRITER_EXEC_WAIT
    } else {
        WRITER_NOTE_WAIT
    };
    wants_writer(ev) && now.duration_since(since) < limit
}
/// Changes waiting for their writer at most; past this they go without one.
const WRITER_WAIT_MAX: usize = 4096;

/// Whether a file event still waits for (a better name of) its writer.
fn wants_writer(ev: &FileEvent) -> bool {
    matches!(ev.op, FileOp::Create | FileOp::Modify) && ev.process.as_ref().is_none_or(|p| p.exe.is_empty())
}

/// The writer noted for a created or written file, if the writers sensor runs.
fn attach_writer(ev: &mut FileEvent, writers: Option<&WriterBook>, now: Instant) {
    if let Some(book) = writers
        && wants_writer(ev)
        && let Some(writer) = book.writer_of(&ev.path, now)
    {
        ev.process = Some(Box::new(writer));
    }
}

/// What the kernel is asked to report: changes and closes after writing, not opens. A
/// build opens every object and library in its output tree many times; with opens
/// watched each one woke the watcher thread and the sensor to be thrown away
/// (notify watches them unless told otherwise).
fn watch_config() -> notify::Config {
    notify::Config::default()
        .with_event_kinds(notify::event::EventKindMask::CORE | notify::event::EventKindMask::ACCESS_CLOSE)
}

pub fn run(
    config: &SensorConfig,
    ctx: &SensorCtx,
    budget: Arc<HashBudget>,
    writers: Option<Arc<WriterBook>>,
) -> Result<(), SensorError> {
    let writers = writers.as_deref();
    // Changes waiting for their writer, with when they began to.
    let mut awaiting: VecDeque<(FileEvent, Instant)> = VecDeque::new();
    let (tx, rx) = mpsc::channel::<notify::Result<notify::Event>>();
    let mut watcher = notify::RecommendedWatcher::new(tx, watch_config())?;
    let mut hashes = HashCache::with_budget(config.hash_cache_entries, config.file_hash_max_bytes, budget);
    // Changes whose hash the budget refused, in order, with when their wait ends; each
    // is reported without a hash, and counted, once its wait is over.
    let mut deferred: VecDeque<(Ready, Instant)> = VecDeque::new();
    let no_hash = HashPolicy::of(config);
    let mut coalescer = Coalescer::new(
        Duration::from_millis(config.file_settle_ms),
        Duration::from_millis(config.file_max_delay_ms),
    );
    let mut watched: HashSet<PathBuf> = HashSet::new();
    let mut failed: HashSet<PathBuf> = HashSet::new();
    let recheck = Duration::from_millis(config.file_missing_recheck_ms.max(1000));
    let mut last_check: Option<Instant> = None;
    let tick = Duration::from_millis((config.file_settle_ms / 3).clamp(5, 50));
    let mut rescan_once = config.file_rescan.clone();
    let mut reported = Reported::default();
    // Roots whose watch was seen in the kernel's list right after it was placed, and
    // when the last check found them all held.
    let mut checked: HashSet<PathBuf> = HashSet::new();
    let watch_check = Duration::from_millis(config.file_watch_check_ms.max(100));
    let mut last_watch_check = Instant::now();
    let mut held_since_ms = crate::clock::now_ms();
    // Directories below the roots: the walk looking for unwatched ones, those found and
    // waiting for `SUSPECT_CONFIRM` (path, inode, blind since, found at), those whose
    // watch cannot be placed again (to when they may have been blind since), those whose
    // device numbers do not compare (not checked), and whether the watch limit was said.
    let mut subdirs = SubdirCheck::new(held_since_ms);
    let mut suspects: Vec<(PathBuf, WatchedInode, u64, Instant)> = Vec::new();
    let mut blind: HashMap<PathBuf, u64> = HashMap::new();
    let mut uncomparable: HashSet<PathBuf> = HashSet::new();
    let mut limit_said = false;
    let mut sweep_blind = false;
    let confirm = SUSPECT_CONFIRM.min(watch_check);
    // Directories that appeared, read for the files they hold from when notify watches them.
    let mut new_dirs: VecDeque<(Ready, Instant)> = VecDeque::new();
    let mut read_dirs: HashMap<PathBuf, Instant> = HashMap::new();
    let settle = Duration::from_millis(config.file_settle_ms);
    loop {
        if ctx.stopped() {
            return Ok(());
        }
        if !checked.is_empty() && last_watch_check.elapsed() >= watch_check {
            last_watch_check = Instant::now();
            let now_ms = crate::clock::now_ms();
            let held = inotify_watches().unwrap_or_default();
            let lost = lost_roots(&checked, &held);
            for root in &lost {
                // notify keeps the path's old watch (perhaps on a replaced directory's
                // inode): dropped, then placed on what the path is now.
                let _ = watcher.unwatch(root);
                let again = watcher.watch(root, RecursiveMode::Recursive);
                let detail = match &again {
                    Ok(()) => format!(
                        "the watch on {} was lost (the directory was replaced or unwatched): watched again; \
                         files changed there since the last check are rescanned",
                        root.display()
                    ),
                    Err(e) => watch_error_gap(root, e),
                };
                if again.is_err() {
                    watched.remove(root);
                    checked.remove(root);
                }
                if !ctx.gap(detail) {
                    return Ok(());
                }
                if !emit_changed_since(ctx, root, held_since_ms, &mut hashes, &no_hash, &mut reported) {
                    return Ok(());
                }
            }
            // Below the roots whose watch is held: directories the kernel does not watch.
            let roots: Vec<PathBuf> = checked.iter().filter(|r| !lost.contains(r)).cloned().collect();
            let (found, bounded) = subdirs.step(&roots, &held, &uncomparable, WATCH_CHECK_MAX_ENTRIES, now_ms);
            if bounded {
                // Not a gap: nothing is unseen, a lost watch is found a few checks later.
                tracing::warn!(
                    max_entries = WATCH_CHECK_MAX_ENTRIES,
                    "the watched trees hold more entries than one watch check reads: \
                     each check goes on where the last stopped, so a lost watch deep in them is found later"
                );
            }
            for (path, ino, since) in found {
                if !suspects.iter().any(|(p, ..)| *p == path) {
                    suspects.push((path, ino, since, Instant::now()));
                }
            }
            // Blind ones are looked at again even when the walk no longer finds them
            // (removed, or watched again with a directory above them).
            sweep_blind = !blind.is_empty();
            held_since_ms = now_ms;
            // The kernel's list is read again only when watches were placed anew.
            let watches = if lost.is_empty() {
                held.len()
            } else {
                inotify_watches().map_or(0, |w| w.len())
            };
            report_readiness(ctx, &watched, &failed, &blind, watches);
        }
        if suspects.first().is_some_and(|s| s.3.elapsed() >= confirm) || std::mem::take(&mut sweep_blind) {
            let (due, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut suspects)
                .into_iter()
                .partition(|s| s.3.elapsed() >= confirm);
            suspects = waiting;
            let held = inotify_watches().unwrap_or_default();
            // Top-most first, so that a re-armed directory covers those below it.
            let mut due: Vec<_> = due
                .into_iter()
                .filter(|(p, i, ..)| inode_of(p) == Some(*i) && !held.contains(i))
                .map(|(p, i, since, _)| (p, i, since))
                .collect();
            due.sort_by_key(|(p, ..)| p.components().count());
            let mut rearmed: Vec<(PathBuf, u64)> = Vec::new();
            // Newly blind, with why (none: the watch limit).
            let mut newly_blind: Vec<(PathBuf, Option<String>)> = Vec::new();
            let mut limit_hit = false;
            for (path, _, since) in due {
                if rearmed.iter().any(|(r, _)| path.starts_with(r)) {
                    continue;
                }
                let since = blind.get(&path).copied().unwrap_or(since);
                // Past the limit every other watch fails alike: not tried this time.
                let result = if limit_hit {
                    Err(notify::Error::new(notify::ErrorKind::MaxFilesWatch))
                } else {
                    watcher.watch(&path, RecursiveMode::Recursive)
                };
                match result {
                    Ok(()) => rearmed.push((path, since)),
                    Err(e) => {
                        let at_limit = matches!(e.kind, notify::ErrorKind::MaxFilesWatch);
                        limit_hit |= at_limit;
                        if blind.insert(path.clone(), since).is_none() {
                            newly_blind.push((path, (!at_limit).then(|| e.to_string())));
                        }
                    }
                }
            }
            let held = inotify_watches().unwrap_or_default();
            // Said once per directory; once for all while the watch limit holds.
            let (at_limit, other): (Vec<_>, Vec<_>) = newly_blind.into_iter().partition(|(_, r)| r.is_none());
            for (path, reason) in other {
                let reason = reason.unwrap_or_default();
                let detail = format!(
                    "{} is blind: the kernel does not watch it and it cannot be watched again: {reason}: \
                     changes there are not seen",
                    path.display()
                );
                if !ctx.gap(detail) {
                    return Ok(());
                }
            }
            if !at_limit.is_empty() && !limit_said {
                let reason = limit_reason();
                limit_said = true;
                let mut named: Vec<String> = at_limit.iter().take(5).map(|(p, _)| p.display().to_string()).collect();
                if at_limit.len() > 5 {
                    named.push(format!("and {} more", at_limit.len() - 5));
                }
                let detail = format!(
                    "{} directories are blind ({}): the kernel does not watch them and they cannot be watched \
                     again: {reason}: changes there are not seen until it is raised",
                    at_limit.len(),
                    named.join(", ")
                );
                if !ctx.gap(detail) {
                    return Ok(());
                }
            }
            // Watched again: re-armed now, or a blind one whose own watch a partial
            // attempt placed. Blind ones that are gone are forgotten.
            let blind_now: Vec<(PathBuf, u64)> = blind.iter().map(|(p, s)| (p.clone(), *s)).collect();
            for (path, since) in blind_now {
                match inode_of(&path) {
                    None => {
                        blind.remove(&path);
                    }
                    Some(i) if held.contains(&i) => {
                        blind.remove(&path);
                        rearmed.push((path, since));
                    }
                    Some(_) => {}
                }
            }
            for (path, since) in rearmed {
                if !inode_of(&path).is_some_and(|i| held.contains(&i)) {
                    // Placed, yet not in the list: its device numbers do not compare
                    // (as on a btrfs subvolume), so it cannot be checked.
                    tracing::debug!(path = %path.display(), "watch check cannot compare this directory's device");
                    uncomparable.insert(path);
                    continue;
                }
                let detail = format!(
                    "the watch on {} was lost (a file system mounted over it, the watch limit, or lost events): \
                     watched again; files changed there since the last check are rescanned",
                    path.display()
                );
                if !ctx.gap(detail) || !emit_changed_since(ctx, &path, since, &mut hashes, &no_hash, &mut reported) {
                    return Ok(());
                }
            }
            if blind.is_empty() {
                limit_said = false;
            }
            report_readiness(ctx, &watched, &failed, &blind, held.len());
        }
        if last_check.is_none_or(|t| t.elapsed() >= recheck) {
            let first = last_check.is_none();
            last_check = Some(Instant::now());
            let mut placed = false;
            for pattern in &config.file_watch_paths {
                for path in expand(pattern) {
                    if watched.contains(&path) || failed.contains(&path) {
                        continue;
                    }
                    match watcher.watch(&path, RecursiveMode::Recursive) {
                        Ok(()) => {
                            watched.insert(path);
                            placed = true;
                        }
                        Err(e) if matches!(e.kind, notify::ErrorKind::PathNotFound) => {}
                        Err(e) => {
                            let detail = watch_error_gap(&path, &e);
                            failed.insert(path);
                            placed = true;
                            if !ctx.gap(detail) {
                                return Ok(());
                            }
                        }
                    }
                }
            }
            // The watches placed now that the kernel shows (see `lost_roots`); the
            // kernel's list is read only when something changed.
            let held = if first || placed {
                inotify_watches().unwrap_or_default()
            } else {
                HashSet::new()
            };
            for root in &watched {
                if !checked.contains(root) && inode_of(root).is_some_and(|i| held.contains(&i)) {
                    checked.insert(root.clone());
                }
            }
            // Once the watches are up (so nothing falls between the rescan and them):
            // what changed while the agent was down, or since it started.
            if let Some(what) = rescan_once.take() {
                let roots: Vec<PathBuf> = watched.iter().cloned().collect();
                let (changed, complete) = rescan(&roots, &what, RESCAN_MAX_ENTRIES);
                tracing::info!(
                    since_ms = what.since_ms,
                    changed = changed.len(),
                    "watched files rescanned at start"
                );
                if !complete
                    && !ctx.gap(format!(
                        "start-up rescan stopped after {RESCAN_MAX_ENTRIES} entries: files changed while the agent was down may not be reported"
                    ))
                {
                    return Ok(());
                }
                for r in changed {
                    // Recorded, so the watch's own event for a file the rescan found
                    // (written as the watches went up) is not a second report.
                    let ev = describe(r, &mut hashes, &no_hash);
                    if reported.is_new(&ev) && !ctx.emit(EventData::File(ev)) {
                        return Ok(());
                    }
                }
            }
            if first || placed {
                report_readiness(ctx, &watched, &failed, &blind, held.len());
            }
        }
        let mut ready = Vec::new();
        // Nothing waiting on time: no reason to wake each tick.
        let idle = coalescer.is_empty() && awaiting.is_empty() && deferred.is_empty() && new_dirs.is_empty();
        let mut next = rx.recv_timeout(if idle { IDLE_WAIT } else { tick });
        if next.is_ok() {
            // Let the rest of a burst queue up: one wake-up for it, and the watcher
            // thread sends without waking this one for each event.
            std::thread::sleep(BATCH_WAIT);
        }
        loop {
            let now = Instant::now();
            match next {
                Ok(Ok(ev)) => {
                    if ev.need_rescan() {
                        let detail = "inotify queue overflowed: some file changes were lost";
                        if !ctx.gap(detail) {
                            return Ok(());
                        }
                    }
                    // A re-armed directory below a root also reports its own move
                    // (notify watches it as it would a root); its parent's events say it.
                    let move_self_below_root = matches!(ev.kind, EventKind::Modify(ModifyKind::Name(RenameMode::From)))
                        && ev.attrs.tracker().is_none()
                        && ev.paths.first().is_some_and(|p| !watched.contains(p));
                    if !move_self_below_root {
                        ready.extend(coalescer.on_event(&ev, now));
                    }
                }
                Ok(Err(e)) => {
                    let path = e.paths.first().cloned().unwrap_or_default();
                    if !ctx.gap(watch_error_gap(&path, &e)) {
                        return Ok(());
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => break,
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    return Err(SensorError::Failed("file watcher thread ended".into()));
                }
            }
            if ready.len() >= 1024 {
                break;
            }
            next = rx.try_recv().map_err(|e| match e {
                mpsc::TryRecvError::Empty => mpsc::RecvTimeoutError::Timeout,
                mpsc::TryRecvError::Disconnected => mpsc::RecvTimeoutError::Disconnected,
            });
        }
        let now = Instant::now();
        ready.extend(coalescer.due(now));
        for (mut ev, since) in std::mem::take(&mut awaiting) {
            attach_writer(&mut ev, writers, now);
            if may_wait(&ev, since, now) {
                awaiting.push_back((ev, since));
                continue;
            }
            if reported.is_new(&ev) && !ctx.emit(EventData::File(ev)) {
                return Ok(());
            }
        }
        // A directory that appeared is read once notify has had time to watch it (it
        // does so after passing on its event), so nothing falls between the two.
        for r in &ready {
            if appeared_dir(r) {
                new_dirs.push_back((r.clone(), now + settle));
            }
        }
        let mut read_now = Vec::new();
        while new_dirs.front().is_some_and(|(_, at)| *at <= now) {
            if let Some((r, at)) = new_dirs.pop_front() {
                // Already read, once notify had time to watch it, with a directory above
                // it (a tree being unpacked): not read again.
                if read_dirs.get(&r.path).is_none_or(|t| *t < at) {
                    read_now.push(r);
                }
            }
        }
        let contents = new_dir_contents(read_now, NEW_DIR_MAX_ENTRIES);
        if read_dirs.len() + contents.read.len() > READ_DIRS_MAX {
            read_dirs.clear();
        }
        read_dirs.extend(contents.read.into_iter().map(|d| (d, now)));
        ready.extend(contents.files);
        for dir in contents.cut {
            let detail = format!(
                "{} appeared holding more than {NEW_DIR_MAX_ENTRIES} entries: files past them are not reported",
                dir.display()
            );
            if !ctx.gap(detail) {
                return Ok(());
            }
        }
        // Changes that waited for the budget go first, in the order they came.
        let waited = std::mem::take(&mut deferred);
        let fresh = ready.into_iter().map(|r| (r, now + HASH_DEFER));
        for (r, deadline) in waited.into_iter().chain(fresh) {
            let (mut ev, over_budget) = describe_within_budget(r.clone(), &mut hashes, &no_hash);
            if over_budget {
                if now < deadline && deferred.len() < HASH_DEFER_MAX {
                    deferred.push_back((r, deadline));
                    continue;
                }
                hashes.budget().count_skip(Priority::File);
            }
            attach_writer(&mut ev, writers, now);
            if writers.is_some_and(WriterBook::active) && may_wait(&ev, now, now) && awaiting.len() < WRITER_WAIT_MAX {
                awaiting.push_back((ev, now));
                continue;
            }
            if !reported.is_new(&ev) {
                continue;
            }
            if !ctx.emit(EventData::File(ev)) {
                return Ok(());
            }
        }
        if let Some(detail) = hashes.budget().report(now)
            && !ctx.gap(detail)
        {
            return Ok(());
        }
    }
}

/// How long the sensor waits for an event when nothing it holds is due later; the
/// watch checks and the stop flag are looked at this often.
const IDLE_WAIT: Duration = Duration::from_millis(250);

/// After the first event of a burst, how long the rest is given to arrive before all
/// are read. A change is reported no sooner than its writes settle (75 ms by
/// default); a close after writing waits this long at most.
const BATCH_WAIT: Duration = Duration::from_millis(10);

/// The most entries read in one directory that appeared; past them a gap says so.
pub const NEW_DIR_MAX_ENTRIES: usize = 10_000;

/// Directories remembered as read (see `run`); past this the memory is cleared (a
/// directory then may be read twice).
const READ_DIRS_MAX: usize = 8192;

/// A directory created, moved in or renamed (what [`new_dir_contents`] reads).
fn appeared_dir(r: &Ready) -> bool {
    matches!(r.op, FileOp::Create | FileOp::Rename) && std::fs::symlink_metadata(&r.path).is_ok_and(|m| m.is_dir())
}

/// The regular files already in each directory that appeared (created, moved in, or
/// renamed): notify watches a new directory only once it has
/// seen it appear, so what was written in it before (`mkdir -p d && echo > d/f`), or
/// what a directory moved in brings (`mv /elsewhere/d /etc/cron.d`), has no event of its
/// own. A created or moved-in directory's files are creates; a renamed one's, renames
/// from their old path. Links are not followed. Also the directories whose walk
/// `max_entries` stopped.
pub fn new_dir_contents(dirs: Vec<Ready>, max_entries: usize) -> NewDirContents {
    let mut out = Vec::new();
    let mut cut = Vec::new();
    let mut read = Vec::new();
    for r in dirs {
        if !appeared_dir(&r) {
            continue;
        }
        let (dir, from) = (r.path, r.from_path);
        let mut stack = vec![dir.clone()];
        let mut seen = 0usize;
        'walk: while let Some(d) = stack.pop() {
            let Ok(rd) = std::fs::read_dir(&d) else { continue };
            read.push(d);
            for entry in rd.filter_map(|e| e.ok()) {
                seen += 1;
                if seen > max_entries {
                    cut.push(dir.clone());
                    break 'walk;
                }
                let Ok(kind) = entry.file_type() else { continue };
                let path = entry.path();
                if kind.is_dir() {
                    stack.push(path);
                } else if kind.is_file() {
                    let from_path = match (&from, path.strip_prefix(&dir)) {
                        (Some(from), Ok(rel)) => Some(from.join(rel)),
                        _ => None,
                    };
                    let op = if from_path.is_some() {
                        FileOp::Rename
                    } else {
                        FileOp::Create
                    };
                    out.push(Ready { op, path, from_path });
                }
            }
        }
    }
    NewDirContents { files: out, cut, read }
}

/// What [`new_dir_contents`] found.
#[derive(Debug)]
pub struct NewDirContents {
    /// The files, each directory's after each other.
    pub files: Vec<Ready>,
    /// Directories whose walk the bound stopped.
    pub cut: Vec<PathBuf>,
    /// Every directory read, those below the ones given too.
    pub read: Vec<PathBuf>,
}

/// The last change reported per path, so that one change is reported once: when
/// inotify's events for one write reach the coalescer late (a loaded machine), the
/// create is reported when it settles and the write's modify and close come after,
/// describing the very same file again.
#[derive(Debug, Default)]
pub struct Reported {
    last: HashMap<String, Described>,
}

/// What a report said of a file: change time, size, hash.
type Described = (u64, Option<u64>, Option<[u8; 32]>);

/// Paths remembered; past this the memory is cleared (a repeat then is a repeat).
const REPORTED_MAX: usize = 8192;

impl Reported {
    /// False when `ev` is a create or modify describing exactly what was last reported
    /// for its path (same change time, size and hash).
    pub fn is_new(&mut self, ev: &FileEvent) -> bool {
        match ev.op {
            FileOp::Create | FileOp::Modify => {
                let Some(changed) = ev.changed_ms else { return true };
                let now = (changed, ev.size, ev.sha256);
                if self.last.get(&ev.path) == Some(&now) {
                    return false;
                }
                if self.last.len() >= REPORTED_MAX {
                    self.last.clear();
                }
                self.last.insert(ev.path.clone(), now);
                true
            }
            FileOp::Delete | FileOp::Rename | FileOp::Chmod => {
                self.last.remove(&ev.path);
                if let Some(from) = &ev.from_path {
                    self.last.remove(from);
                }
                true
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    fn sha(data: &[u8]) -> [u8; 32] {
        let d = ring::digest::digest(&ring::digest::SHA256, data);
        let mut out = [0u8; 32];
        out.copy_from_slice(d.as_ref());
        out
    }

    #[test]
    fn files_under_skip_paths_are_described_without_a_hash() {
        let dir = tempfile::tempdir().unwrap();
        let logs = dir.path().join("log");
        std::fs::create_dir_all(&logs).unwrap();
        std::fs::write(logs.join("syslog"), b"").unwrap();
        std::fs::write(dir.path().join("other"), b"x").unwrap();
        let mut hashes = HashCache::new(16, 1024);
        let ready = |p: PathBuf| Ready {
            op: FileOp::Modify,
            path: p,
            from_path: None,
        };
        let log = describe(
            ready(logs.join("syslog")),
            &mut hashes,
            &HashPolicy::skipping(std::slice::from_ref(&logs)),
        );
        assert_eq!(
            (log.sha256, log.size),
            (None, Some(0)),
            "truncation still shows as size 0"
        );
        let other = describe(
            ready(dir.path().join("other")),
            &mut hashes,
            &HashPolicy::skipping(&[logs]),
        );
        assert_eq!(other.sha256, Some(sha(b"x")));
    }

    #[test]
    fn large_files_under_temporary_directories_are_counted_not_hashed_unless_executable() {
        let dir = tempfile::tempdir().unwrap();
        let tmp = dir.path().join("tmp");
        std::fs::create_dir_all(&tmp).unwrap();
        let policy = HashPolicy {
            skip: Vec::new(),
            temp: vec![tmp.clone()],
            temp_max_bytes: 4,
        };
        let budget = HashBudget::unlimited();
        let mut hashes = HashCache::with_budget(16, 1024, budget.clone());
        let ready = |p: PathBuf| Ready {
            op: FileOp::Create,
            path: p,
            from_path: None,
        };
        let write = |p: &Path, data: &[u8], mode: u32| {
            std::fs::write(p, data).unwrap();
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
        };
        // Small, under a temporary directory: hashed.
        write(&tmp.join("small"), b"abcd", 0o644);
        assert_eq!(
            describe(ready(tmp.join("small")), &mut hashes, &policy).sha256,
            Some(sha(b"abcd"))
        );
        // Large: reported (size and all) without a hash, and counted.
        write(&tmp.join("big.o"), b"abcde", 0o644);
        let big = describe(ready(tmp.join("big.o")), &mut hashes, &policy);
        assert_eq!((big.sha256, big.size), (None, Some(5)));
        let report = budget.report(Instant::now()).expect("the skip is reported");
        assert!(report.contains("1 large files under temporary directories"), "{report}");
        // Large with an execute bit (a fresh program): hashed.
        write(&tmp.join("big-run"), b"abcde", 0o755);
        assert_eq!(
            describe(ready(tmp.join("big-run")), &mut hashes, &policy).sha256,
            Some(sha(b"abcde"))
        );
        // Large elsewhere: hashed.
        write(&dir.path().join("big"), b"abcde", 0o644);
        assert_eq!(
            describe(ready(dir.path().join("big")), &mut hashes, &policy).sha256,
            Some(sha(b"abcde"))
        );
    }

    #[test]
    fn rescan_finds_what_changed_after_the_point_and_nothing_older() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        std::fs::create_dir_all(root.join("sub")).unwrap();
        std::fs::write(root.join("old"), b"x").unwrap();
        std::thread::sleep(Duration::from_millis(30));
        let since = crate::clock::now_ms();
        std::thread::sleep(Duration::from_millis(30));
        std::fs::write(root.join("sub/new"), b"y").unwrap();
        std::fs::write(root.join("judged"), b"z").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", root.join("link")).unwrap();
        let judged_at = changed_ms(&std::fs::metadata(root.join("judged")).unwrap());
        let what = Rescan {
            since_ms: since,
            judged: [(root.join("judged").display().to_string(), judged_at)].into(),
        };
        let (got, complete) = rescan(std::slice::from_ref(&root), &what, 100);
        assert!(complete);
        assert_eq!(
            got.iter().map(|r| (r.op, r.path.clone())).collect::<Vec<_>>(),
            vec![(FileOp::Create, root.join("sub/new"))],
            "only the file changed after the point and not judged; links are not followed"
        );
        std::thread::sleep(Duration::from_millis(30));
        std::fs::write(root.join("judged"), b"changed again").unwrap();
        let (got, _) = rescan(std::slice::from_ref(&root), &what, 100);
        assert_eq!(got.len(), 2, "a change after the judged one is reported");
        let (_, complete) = rescan(&[root], &what, 2);
        assert!(!complete, "a walk cut short says so");
    }

    #[test]
    fn a_change_waits_briefly_for_its_writer_and_longer_for_a_gone_ones_exec() {
        let t0 = Instant::now();
        let mut ev = FileEvent {
            op: FileOp::Create,
            path: "/etc/cron.d/x".into(),
            from_path: None,
            sha256: None,
            size: None,
            mode: None,
            uid: None,
            changed_ms: None,
            process: None,
        };
        assert!(may_wait(&ev, t0, t0 + Duration::from_millis(40)), "no note yet");
        assert!(!may_wait(&ev, t0, t0 + WRITER_NOTE_WAIT), "none came");
        ev.process = Some(Box::new(ward_detect::event::ProcessEvent {
            pid: 7,
            ..Default::default()
        }));
        assert!(
            may_wait(&ev, t0, t0 + WRITER_NOTE_WAIT),
            "noted, its exec not yet reported"
        );
        assert!(!may_wait(&ev, t0, t0 + WRITER_EXEC_WAIT));
        ev.process = Some(Box::new(ward_detect::event::ProcessEvent {
            pid: 7,
            exe: "/usr/bin/cp".into(),
            ..Default::default()
        }));
        assert!(!may_wait(&ev, t0, t0), "named");
        ev.process = None;
        ev.op = FileOp::Delete;
        assert!(!may_wait(&ev, t0, t0), "a delete has no writer");
    }

    #[test]
    fn one_change_is_reported_once() {
        let ev = |op, changed: u64, size: u64| FileEvent {
            op,
            path: "/w/f".into(),
            from_path: None,
            sha256: Some([1; 32]),
            size: Some(size),
            mode: Some(0o644),
            uid: Some(0),
            changed_ms: Some(changed),
            process: None,
        };
        let mut r = Reported::default();
        assert!(r.is_new(&ev(FileOp::Create, 10, 5)));
        assert!(!r.is_new(&ev(FileOp::Modify, 10, 5)), "the same write, described again");
        assert!(r.is_new(&ev(FileOp::Modify, 11, 6)), "a later write");
        assert!(r.is_new(&ev(FileOp::Chmod, 12, 6)));
        assert!(r.is_new(&ev(FileOp::Delete, 12, 6)));
        assert!(r.is_new(&ev(FileOp::Create, 12, 6)), "created again after its delete");
    }

    #[test]
    fn expands_star_components() {
        let dir = tempfile::tempdir().unwrap();
        for u in ["alice", "bob"] {
            std::fs::create_dir_all(dir.path().join(u).join(".ssh")).unwrap();
        }
        std::fs::create_dir_all(dir.path().join("carol")).unwrap();
        let got = expand(&format!("{}/*/.ssh", dir.path().display()));
        assert_eq!(got, vec![dir.path().join("alice/.ssh"), dir.path().join("bob/.ssh")]);
        assert!(expand("/definitely/not/here").is_empty());
    }

    #[test]
    fn coalesces_writes_but_never_delays_beyond_the_limit() {
        let mut c = Coalescer::new(Duration::from_millis(75), Duration::from_millis(200));
        let t0 = Instant::now();
        let p = PathBuf::from("/x/f");
        let ev = |k| notify::Event::new(k).add_path(p.clone());
        assert!(
            c.on_event(&ev(EventKind::Create(notify::event::CreateKind::File)), t0)
                .is_empty()
        );
        for i in 1..10 {
            let at = t0 + Duration::from_millis(i * 20);
            assert!(
                c.on_event(
                    &ev(EventKind::Modify(ModifyKind::Data(notify::event::DataChange::Any))),
                    at
                )
                .is_empty()
            );
            if i * 20 < 200 {
                assert!(c.due(at).is_empty(), "reported too early at {i}");
            }
        }
        let due = c.due(t0 + Duration::from_millis(200));
        assert_eq!(
            due,
            vec![Ready {
                op: FileOp::Create,
                path: p.clone(),
                from_path: None
            }]
        );
        // A modify, then close-after-write: reported at once.
        c.on_event(&ev(EventKind::Modify(ModifyKind::Any)), t0);
        let out = c.on_event(&ev(EventKind::Access(AccessKind::Close(AccessMode::Write))), t0);
        assert_eq!(
            out,
            vec![Ready {
                op: FileOp::Modify,
                path: p.clone(),
                from_path: None
            }]
        );
        // A rename out of the watched paths becomes a delete once its other half is overdue.
        c.on_event(
            &ev(EventKind::Modify(ModifyKind::Name(RenameMode::From))).set_tracker(7),
            t0,
        );
        assert!(c.due(t0).is_empty());
        assert_eq!(
            c.due(t0 + Duration::from_millis(80)),
            vec![Ready {
                op: FileOp::Delete,
                path: p,
                from_path: None
            }]
        );
    }

    /// Runs the sensor on a fresh directory with `budget`, writes `files` and collects
    /// each file's first reported hash and every gap, for `secs`.
    fn run_with_budget(
        budget: Arc<HashBudget>,
        files: &[(&str, Vec<u8>)],
        secs: u64,
    ) -> (HashMap<String, Option<[u8; 32]>>, Vec<String>) {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        let (tx, mut rx) = tokio::sync::mpsc::channel(1024);
        let stop = Arc::new(AtomicBool::new(false));
        let ctx = SensorCtx::new("file", tx, stop.clone());
        let config = SensorConfig {
            file_watch_paths: vec![root.display().to_string()],
            ..SensorConfig::default()
        };
        let handle = std::thread::spawn(move || run(&config, &ctx, budget, None));
        std::thread::sleep(Duration::from_millis(300));
        for (name, data) in files {
            std::fs::write(root.join(name), data).unwrap();
        }
        let (mut got, mut gaps) = (HashMap::new(), Vec::new());
        let deadline = Instant::now() + Duration::from_secs(secs);
        while Instant::now() < deadline {
            match rx.try_recv() {
                Ok(ev) => match ev.data {
                    EventData::File(f) => {
                        let name = f.path.rsplit('/').next().unwrap_or_default().to_string();
                        got.entry(name).or_insert(f.sha256);
                    }
                    EventData::Gap(g) => gaps.push(g.detail),
                    _ => {}
                },
                Err(_) => std::thread::sleep(Duration::from_millis(10)),
            }
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        handle.join().unwrap().unwrap();
        (got, gaps)
    }

    #[test]
    fn a_file_over_the_hashing_budget_waits_for_it() {
        // 4 KiB/s: the first 3,000-byte file is hashed at once, the second once about
        // 0.7 s have refilled the budget, within its 2 s wait.
        let files = [("a", vec![b'a'; 3000]), ("b", vec![b'b'; 3000])];
        let (got, gaps) = run_with_budget(HashBudget::new(4096), &files, 3);
        for (name, data) in &files {
            assert_eq!(got.get(*name), Some(&Some(sha(data))), "{name}");
        }
        assert!(gaps.iter().all(|g| !g.contains("hashing budget")), "{gaps:?}");
    }

    #[test]
    fn a_file_the_budget_cannot_reach_in_time_goes_without_a_hash_and_is_counted() {
        // A 10,000-byte file is hashed from the full bucket and leaves it 1.4 s in debt;
        // the small file after it would need 2.4 s: it goes without a hash after 2 s.
        let files = [("big", vec![b'x'; 10_000]), ("small", vec![b'y'; 3000])];
        let (got, gaps) = run_with_budget(HashBudget::new(4096), &files, 3);
        assert_eq!(got.get("big"), Some(&Some(sha(&files[0].1))));
        assert_eq!(got.get("small"), Some(&None));
        assert!(
            gaps.iter().any(|g| g.contains("0 executables and 1 other files")),
            "{gaps:?}"
        );
    }

    #[test]
    fn reports_create_modify_chmod_rename_delete_with_hashes() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        let (tx, mut rx) = tokio::sync::mpsc::channel(1024);
        let stop = Arc::new(AtomicBool::new(false));
        let ctx = SensorCtx::new("file", tx, stop.clone());
        let config = SensorConfig {
            file_watch_paths: vec![root.display().to_string(), "/nonexistent/ward/test".into()],
            ..SensorConfig::default()
        };
        let handle = std::thread::spawn(move || run(&config, &ctx, HashBudget::unlimited(), None));
        std::thread::sleep(Duration::from_millis(300));
        let mut next = |what: &str| -> FileEvent {
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                match rx.try_recv() {
                    Ok(ev) => match ev.data {
                        EventData::File(f) => return f,
                        other => panic!("unexpected {other:?}"),
                    },
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
            panic!("no event for {what}");
        };
        let f = root.join("payload.sh");
        let started = Instant::now();
        std::fs::write(&f, b"#!/bin/sh\necho hi\n").unwrap();
        let ev = next("create");
        assert!(
            started.elapsed() < Duration::from_millis(500),
            "create took {:?}",
            started.elapsed()
        );
        assert_eq!((ev.op, ev.path.as_str()), (FileOp::Create, f.to_str().unwrap()));
        assert_eq!(ev.sha256, Some(sha(b"#!/bin/sh\necho hi\n")));
        assert_eq!(ev.size, Some(18));

        let mut h = std::fs::OpenOptions::new().append(true).open(&f).unwrap();
        std::io::Write::write_all(&mut h, b"id\n").unwrap();
        drop(h);
        let ev = next("modify");
        assert_eq!(ev.op, FileOp::Modify);
        assert_eq!(ev.sha256, Some(sha(b"#!/bin/sh\necho hi\nid\n")));

        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o4755)).unwrap();
        let ev = next("chmod");
        assert_eq!((ev.op, ev.mode), (FileOp::Chmod, Some(0o4755)));

        let g = root.join("renamed.sh");
        std::fs::rename(&f, &g).unwrap();
        let ev = next("rename");
        assert_eq!(ev.op, FileOp::Rename);
        assert_eq!(ev.path, g.display().to_string());
        assert_eq!(ev.from_path, Some(f.display().to_string()));

        std::fs::remove_file(&g).unwrap();
        let ev = next("delete");
        assert_eq!(
            (ev.op, ev.path.as_str(), ev.sha256),
            (FileOp::Delete, g.to_str().unwrap(), None)
        );

        stop.store(true, Ordering::Relaxed);
        handle.join().unwrap().unwrap();
    }

    #[test]
    fn fdinfo_lines_name_the_watched_inodes() {
        let text = "pos:\t0\nflags:\t02004000\nmnt_id:\t15\nino:\t1057\n\
                    inotify wd:2 ino:1a2b sdev:800001 mask:fce ignored_mask:0 fhandle-bytes:8 fhandle-type:1 f_handle:2b1a0000\n\
                    inotify wd:1 ino:2 sdev:fd00000 mask:fce ignored_mask:0\n";
        let mut got: Vec<WatchedInode> = parse_fdinfo(text).collect();
        got.sort();
        assert_eq!(got, vec![(0x80_0001, 0x1a2b), (0xfd0_0000, 2)]);
        // This process's own watches, read back as the kernel lists them.
        let dir = tempfile::tempdir().unwrap();
        let mut watcher = notify::RecommendedWatcher::new(|_| {}, notify::Config::default()).unwrap();
        watcher.watch(dir.path(), RecursiveMode::Recursive).unwrap();
        let held = inotify_watches().unwrap();
        let root = dir.path().to_path_buf();
        assert!(held.contains(&inode_of(&root).unwrap()), "{held:?}");
        assert!(lost_roots([&root], &held).is_empty());
        watcher.unwatch(&root).unwrap();
        assert_eq!(lost_roots([&root], &inotify_watches().unwrap()), vec![root]);
    }

    /// A watched root replaced by a new directory (a package upgrade's directory swap)
    /// takes the watch with the old inode: the check sees the path unwatched, watches
    /// it again, says so, and reports the file written there meanwhile.
    #[test]
    fn a_replaced_root_is_watched_again_and_its_changes_reported() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap().join("watched");
        std::fs::create_dir(&root).unwrap();
        let (tx, mut rx) = tokio::sync::mpsc::channel(1024);
        let stop = Arc::new(AtomicBool::new(false));
        let board = super::super::SensorBoard::default();
        let ctx = SensorCtx::new("file", tx, stop.clone()).on_board(board.clone());
        let config = SensorConfig {
            file_watch_paths: vec![root.display().to_string()],
            file_watch_check_ms: 200,
            ..SensorConfig::default()
        };
        let handle = std::thread::spawn(move || run(&config, &ctx, HashBudget::unlimited(), None));
        let deadline = Instant::now() + Duration::from_secs(5);
        while board
            .get("file")
            .is_none_or(|s| s.readiness != ward_protocol::Readiness::Ready)
        {
            assert!(Instant::now() < deadline, "{:?}", board.get("file"));
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(board.get("file").unwrap().source.starts_with("inotify: 1 roots"));

        std::fs::rename(&root, dir.path().join("watched.old")).unwrap();
        std::fs::create_dir(&root).unwrap();
        let payload = root.join("payload.sh");
        std::fs::write(&payload, b"#!/bin/sh\nid\n").unwrap();
        let (mut gap, mut file) = (None, None);
        let deadline = Instant::now() + Duration::from_secs(5);
        while (gap.is_none() || file.is_none()) && Instant::now() < deadline {
            match rx.try_recv() {
                Ok(ev) => match ev.data {
                    EventData::Gap(g) if g.detail.contains("was lost") => gap = Some(g.detail),
                    EventData::File(f) if f.path == payload.display().to_string() => file = Some(f),
                    _ => {}
                },
                Err(_) => std::thread::sleep(Duration::from_millis(10)),
            }
        }
        let gap = gap.expect("no gap for the lost watch");
        assert!(gap.contains(&root.display().to_string()), "{gap}");
        assert_eq!(
            file.expect("the file written meanwhile").sha256,
            Some(sha(b"#!/bin/sh\nid\n"))
        );
        // Watched again: a later write is seen as it happens.
        let later = root.join("later.sh");
        std::fs::write(&later, b"x").unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            assert!(Instant::now() < deadline, "the re-armed watch saw nothing");
            match rx.try_recv() {
                Ok(ev) if matches!(&ev.data, EventData::File(f) if f.path == later.display().to_string()) => break,
                Ok(_) => {}
                Err(_) => std::thread::sleep(Duration::from_millis(10)),
            }
        }
        stop.store(true, Ordering::Relaxed);
        handle.join().unwrap().unwrap();
    }

    /// A file sensor running on one root with a fast watch check, and what it reported.
    struct Running {
        rx: tokio::sync::mpsc::Receiver<ward_detect::event::Event>,
        seen: Vec<EventData>,
        board: super::super::SensorBoard,
        stop: Arc<AtomicBool>,
        handle: Option<std::thread::JoinHandle<Result<(), SensorError>>>,
    }

    impl Running {
        fn start(root: &Path) -> Running {
            let (tx, rx) = tokio::sync::mpsc::channel(4096);
            let stop = Arc::new(AtomicBool::new(false));
            let board = super::super::SensorBoard::default();
            let ctx = SensorCtx::new("file", tx, stop.clone()).on_board(board.clone());
            let config = SensorConfig {
                file_watch_paths: vec![root.display().to_string()],
                file_watch_check_ms: 200,
                ..SensorConfig::default()
            };
            let handle = std::thread::spawn(move || run(&config, &ctx, HashBudget::unlimited(), None));
            let deadline = Instant::now() + Duration::from_secs(5);
            while board
                .get("file")
                .is_none_or(|s| s.readiness != ward_protocol::Readiness::Ready)
            {
                assert!(Instant::now() < deadline, "{:?}", board.get("file"));
                std::thread::sleep(Duration::from_millis(20));
            }
            Running {
                rx,
                seen: Vec::new(),
                board,
                stop,
                handle: Some(handle),
            }
        }

        /// The first event (since the last call) that `want` picks, within `secs`.
        fn wait<T>(&mut self, secs: u64, mut want: impl FnMut(&EventData) -> Option<T>) -> Option<T> {
            let deadline = Instant::now() + Duration::from_secs(secs);
            while Instant::now() < deadline {
                match self.rx.try_recv() {
                    Ok(ev) => {
                        let got = want(&ev.data);
                        self.seen.push(ev.data);
                        if got.is_some() {
                            return got;
                        }
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
            None
        }

        fn gap_with(&mut self, secs: u64, words: &[&str]) -> Option<String> {
            self.wait(secs, |d| match d {
                EventData::Gap(g) if words.iter().all(|w| g.detail.contains(w)) => Some(g.detail.clone()),
                _ => None,
            })
        }

        /// The first event for `path`, already seen or within `secs`.
        fn file(&mut self, secs: u64, path: &Path) -> Option<FileEvent> {
            let path = path.display().to_string();
            let earlier = self.seen.iter().find_map(|d| match d {
                EventData::File(f) if f.path == path => Some(f.clone()),
                _ => None,
            });
            earlier.or_else(|| {
                self.wait(secs, |d| match d {
                    EventData::File(f) if f.path == path => Some(f.clone()),
                    _ => None,
                })
            })
        }

        fn gaps(&self) -> Vec<&str> {
            self.seen
                .iter()
                .filter_map(|d| match d {
                    EventData::Gap(g) => Some(g.detail.as_str()),
                    _ => None,
                })
                .collect()
        }
    }

    impl Drop for Running {
        fn drop(&mut self) {
            self.stop.store(true, Ordering::Relaxed);
            if let Some(h) = self.handle.take() {
                let _ = h.join();
            }
        }
    }

    /// Set in the copy of the test binary that runs inside a namespace of its own.
    const IN_NAMESPACE: &str = "WARD_TEST_IN_NAMESPACE";

    /// Runs test `name` of this binary again in new namespaces (`unshare` flags, a user
    /// namespace where the test is root) and fails with the reason when it cannot.
    /// True when this already is that copy.
    fn in_own_namespace(name: &str, flags: &str) -> bool {
        if std::env::var_os(IN_NAMESPACE).is_some() {
            return true;
        }
        let exe = std::env::current_exe().unwrap();
        let out = std::process::Command::new("unshare")
            .arg(flags)
            .arg("--")
            .arg(exe)
            .args([name, "--exact", "--nocapture", "--test-threads=1"])
            .env(IN_NAMESPACE, "1")
            .output()
            .unwrap_or_else(|e| panic!("cannot run unshare {flags} (util-linux) for {name}: {e}"));
        let (stdout, stderr) = (
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
        assert!(
            out.status.success() && stdout.contains("1 passed"),
            "{name} in a namespace of its own (unshare {flags}; needs user namespaces) failed:\n{stdout}\n{stderr}"
        );
        false
    }

    /// The inotify watch limit of this user namespace (the copy runs as its root).
    fn set_watch_limit(n: u32) {
        std::fs::write("/proc/sys/user/max_inotify_watches", n.to_string())
            .unwrap_or_else(|e| panic!("cannot set this user namespace's inotify watch limit: {e}"));
    }

    /// A subtree created while the watch limit is reached is blind: the check names the
    /// directories and the limit once, keeps the sensor running and degraded, and once
    /// the limit is raised watches them again, says so per directory and reports the
    /// file written there while blind. The limit is this test's own (a user namespace).
    #[test]
    fn directories_the_watch_limit_left_blind_are_reported_and_watched_again_once_raised() {
        if !in_own_namespace(
            "sensor::file::tests::directories_the_watch_limit_left_blind_are_reported_and_watched_again_once_raised",
            "-Ur",
        ) {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        std::fs::create_dir(root.join("a")).unwrap();
        // The root and `a`, and one more: `big` is watched, what is below it is not.
        set_watch_limit(3);
        let mut s = Running::start(&root);
        for d in ["1", "2", "3/deeper"] {
            std::fs::create_dir_all(root.join("big").join(d)).unwrap();
        }
        let gap = s
            .gap_with(5, &["are blind", "max_user_watches"])
            .expect("no gap for the blind directories");
        // Written while blind (what was there before is read as the new directory's).
        let payload = root.join("big/2/payload.sh");
        std::fs::write(&payload, b"#!/bin/sh\nid\n").unwrap();
        for d in ["big/1", "big/2", "big/3"] {
            assert!(gap.contains(&root.join(d).display().to_string()), "{gap}");
        }
        let status = s.board.get("file").unwrap();
        assert_eq!(status.readiness, ward_protocol::Readiness::Degraded, "{status:?}");
        assert!(status.detail.unwrap_or_default().contains("big/2"));
        // Said once, not at every check.
        std::thread::sleep(Duration::from_secs(2));
        s.wait(0, |_| None::<()>);
        assert_eq!(
            s.gaps().iter().filter(|g| g.contains("are blind")).count(),
            1,
            "{:?}",
            s.gaps()
        );
        assert!(
            s.seen
                .iter()
                .all(|d| !matches!(d, EventData::File(f) if f.path == payload.display().to_string()))
        );

        // A blind directory removed is no longer blind.
        std::fs::remove_dir_all(root.join("big/1")).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while s
            .board
            .get("file")
            .unwrap()
            .detail
            .unwrap_or_default()
            .contains("big/1")
        {
            assert!(Instant::now() < deadline, "{:?}", s.board.get("file"));
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(
            s.board
                .get("file")
                .unwrap()
                .detail
                .unwrap_or_default()
                .contains("big/2")
        );

        set_watch_limit(100);
        let mut again = Vec::new();
        for _ in 0..2 {
            let g = s
                .gap_with(5, &["was lost", "watched again"])
                .expect("not watched again");
            again.push(g);
        }
        for d in ["big/2", "big/3"] {
            let d = root.join(d).display().to_string();
            assert_eq!(
                again.iter().filter(|g| g.contains(&format!("on {d} "))).count(),
                1,
                "{again:?}"
            );
        }
        let file = s.file(5, &payload).expect("the file written while blind");
        assert_eq!(file.sha256, Some(sha(b"#!/bin/sh\nid\n")));
        assert_eq!(s.board.get("file").unwrap().readiness, ward_protocol::Readiness::Ready);
        // Watched again, below too: a later write is seen as it happens.
        let later = root.join("big/3/deeper/later.sh");
        std::fs::write(&later, b"x").unwrap();
        assert!(s.file(5, &later).is_some(), "the re-armed watch saw nothing");
    }

    /// A file system mounted over a watched directory hides it from the watch (the watch
    /// stays on the directory underneath): the check watches what the path is now, says
    /// so, and reports the file written there.
    #[test]
    fn a_directory_mounted_over_is_watched_again_and_its_changes_reported() {
        if !in_own_namespace(
            "sensor::file::tests::a_directory_mounted_over_is_watched_again_and_its_changes_reported",
            "-Urm",
        ) {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        let sub = root.join("cron.d");
        std::fs::create_dir(&sub).unwrap();
        let mut s = Running::start(&root);
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "ward-test", sub.to_str().unwrap()])
            .status()
            .unwrap();
        assert!(status.success(), "mount -t tmpfs in a mount namespace of its own");
        let payload = sub.join("job");
        std::fs::write(&payload, b"* * * * * root id\n").unwrap();
        let gap = s
            .gap_with(5, &["was lost", "watched again"])
            .expect("no gap for the lost watch");
        assert!(gap.contains(&format!("on {} ", sub.display())), "{gap}");
        let file = s.file(5, &payload).expect("the file written meanwhile");
        assert_eq!(file.sha256, Some(sha(b"* * * * * root id\n")));
        let later = sub.join("later");
        std::fs::write(&later, b"x").unwrap();
        assert!(s.file(5, &later).is_some(), "the re-armed watch saw nothing");
        assert_eq!(
            s.gaps().iter().filter(|g| g.contains("was lost")).count(),
            1,
            "{:?}",
            s.gaps()
        );
    }

    /// A directory replaced by one built elsewhere and moved in (`mv /tmp/new /etc/cron.d`)
    /// or built beside it and renamed over it: notify watches it, but the files it holds
    /// have no event of their own. They are reported, as creates or as renames.
    #[test]
    fn files_in_a_directory_that_replaced_a_watched_one_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().canonicalize().unwrap();
        let (root, outside) = (base.join("etc"), base.join("staging"));
        std::fs::create_dir_all(root.join("cron.d")).unwrap();
        std::fs::write(root.join("cron.d/old"), b"old").unwrap();
        std::fs::create_dir_all(outside.join("new/deeper")).unwrap();
        std::fs::write(outside.join("new/job"), b"* * * * * root id\n").unwrap();
        std::fs::write(outside.join("new/deeper/more"), b"more").unwrap();
        let mut s = Running::start(&root);

        std::fs::remove_dir_all(root.join("cron.d")).unwrap();
        std::fs::rename(outside.join("new"), root.join("cron.d")).unwrap();
        let job = s
            .file(5, &root.join("cron.d/job"))
            .expect("the moved-in directory's file");
        assert_eq!(
            (job.op, job.sha256),
            (FileOp::Create, Some(sha(b"* * * * * root id\n")))
        );
        assert!(
            s.file(5, &root.join("cron.d/deeper/more")).is_some(),
            "nor the one below it"
        );

        // Built beside it, then renamed over it (`rm -rf d; mv d2 d`).
        std::fs::create_dir(root.join("cron.d2")).unwrap();
        std::fs::write(root.join("cron.d2/job2"), b"* * * * * root whoami\n").unwrap();
        std::fs::remove_dir_all(root.join("cron.d")).unwrap();
        std::fs::rename(root.join("cron.d2"), root.join("cron.d")).unwrap();
        let job2 = s
            .file(5, &root.join("cron.d/job2"))
            .expect("the renamed directory's file");
        assert_eq!(job2.sha256, Some(sha(b"* * * * * root whoami\n")));
        if job2.op == FileOp::Rename {
            assert_eq!(job2.from_path, Some(root.join("cron.d2/job2").display().to_string()));
        }
        // Watched: a later write is seen as it happens, once.
        let later = root.join("cron.d/later");
        std::fs::write(&later, b"x").unwrap();
        assert!(s.file(5, &later).is_some());
        std::thread::sleep(Duration::from_millis(500));
        s.wait(0, |_| None::<()>);
        let reports = |p: &Path| {
            let p = p.display().to_string();
            s.seen
                .iter()
                .filter(|d| matches!(d, EventData::File(f) if f.path == p && f.op != FileOp::Delete))
                .count()
        };
        assert_eq!(reports(&later), 1);
        assert_eq!(reports(&root.join("cron.d/job")), 1);
        assert!(s.gaps().is_empty(), "nothing was lost: {:?}", s.gaps());
    }

    #[test]
    fn a_new_directory_brings_its_files_and_a_huge_one_says_where_it_stopped() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        std::fs::create_dir_all(root.join("d/e")).unwrap();
        std::fs::write(root.join("d/f"), b"1").unwrap();
        std::fs::write(root.join("d/e/g"), b"2").unwrap();
        std::os::unix::fs::symlink("/etc", root.join("d/link")).unwrap();
        std::fs::write(root.join("plain"), b"3").unwrap();
        let r = |op, p: &str, from: Option<&str>| Ready {
            op,
            path: root.join(p),
            from_path: from.map(|f| root.join(f)),
        };
        let c = new_dir_contents(
            vec![r(FileOp::Create, "d", None), r(FileOp::Create, "plain", None)],
            100,
        );
        let (mut got, cut, mut read) = (c.files, c.cut, c.read);
        got.sort_by(|a, b| a.path.cmp(&b.path));
        assert_eq!(
            got,
            vec![r(FileOp::Create, "d/e/g", None), r(FileOp::Create, "d/f", None)],
            "the files of the directory only; links are not followed"
        );
        assert!(cut.is_empty());
        read.sort();
        assert_eq!(read, vec![root.join("d"), root.join("d/e")]);
        let got = new_dir_contents(vec![r(FileOp::Rename, "d", Some("old"))], 100).files;
        assert!(got.contains(&r(FileOp::Rename, "d/e/g", Some("old/e/g"))), "{got:?}");
        let got = new_dir_contents(vec![r(FileOp::Modify, "d", None), r(FileOp::Delete, "d", None)], 100).files;
        assert!(got.is_empty(), "only a directory that appeared is read");
        let cut = new_dir_contents(vec![r(FileOp::Create, "d", None)], 2).cut;
        assert_eq!(cut, vec![root.join("d")]);
    }

    /// The check on a tree of 5,000 directories (and a file in each) finds the one whose
    /// watch is gone, and a bounded check resumes where it stopped until it does. Prints
    /// what one full check costs (the kernel's watch list and the walk).
    #[test]
    fn the_check_finds_a_lost_watch_among_5000_directories_and_resumes_when_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        for a in 0..50 {
            for b in 0..100 {
                let d = root.join(format!("{a:02}/{b:03}"));
                std::fs::create_dir_all(&d).unwrap();
                std::fs::write(d.join("f"), b"x").unwrap();
            }
        }
        let mut watcher = notify::RecommendedWatcher::new(|_| {}, notify::Config::default()).unwrap();
        watcher.watch(&root, RecursiveMode::Recursive).unwrap();
        let lost = root.join("31/042");
        // This thread's CPU time, for a figure that load elsewhere inflates less.
        let cpu = || {
            let text = std::fs::read_to_string("/proc/thread-self/schedstat").unwrap();
            Duration::from_nanos(text.split_whitespace().next().unwrap().parse().unwrap())
        };
        let (started, c0) = (Instant::now(), cpu());
        let mut held = inotify_watches().unwrap();
        let (read, c1) = (started.elapsed(), cpu());
        // One directory's watch lost: left out of the kernel's list as read (notify
        // cannot drop the watch of one directory inside a recursive watch).
        assert!(held.remove(&inode_of(&lost).unwrap()), "every directory watched");
        let mut check = SubdirCheck::new(7);
        let roots = [root.clone()];
        let (found, bounded) = check.step(&roots, &held, &HashSet::new(), WATCH_CHECK_MAX_ENTRIES, 9);
        let (total, c2) = (started.elapsed(), cpu());
        eprintln!(
            "watch check of 5,050 directories and 5,000 files: {} watches read in {read:?} (cpu {:?}), \
             walk {:?} (cpu {:?})",
            held.len(),
            c1 - c0,
            total - read,
            c2 - c1,
        );
        assert!(!bounded);
        assert_eq!(found, vec![(lost.clone(), inode_of(&lost).unwrap(), 7)]);

        // 1,000 entries a check: the same directory is found within a pass, the bound said once.
        let mut check = SubdirCheck::new(7);
        let (mut found, mut said) = (Vec::new(), 0);
        for i in 0..12 {
            let (f, b) = check.step(&roots, &held, &HashSet::new(), 1000, 10 + i);
            found.extend(f);
            said += usize::from(b);
        }
        assert_eq!(said, 1);
        assert_eq!(found.first().map(|f| f.0.clone()), Some(lost.clone()));
        // Skipped: a directory that cannot be checked is not looked at.
        let mut check = SubdirCheck::new(7);
        let (found, _) = check.step(&roots, &held, &[lost].into(), WATCH_CHECK_MAX_ENTRIES, 9);
        assert!(found.is_empty());
    }

    /// `mkdir -p` and a write at once: the files are in place before notify watches the
    /// new directories, and are reported once each all the same.
    #[test]
    fn files_written_in_a_new_tree_before_its_watch_are_reported_once() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        let mut s = Running::start(&root);
        std::fs::create_dir_all(root.join("q/a/b/c")).unwrap();
        let (deep, top) = (root.join("q/a/b/c/f"), root.join("q/top"));
        std::fs::write(&deep, b"deep").unwrap();
        std::fs::write(&top, b"top").unwrap();
        assert_eq!(s.file(5, &deep).expect("the deep file").sha256, Some(sha(b"deep")));
        assert!(s.file(5, &top).is_some(), "the top file");
        std::thread::sleep(Duration::from_millis(700));
        s.wait(0, |_| None::<()>);
        for p in [&deep, &top] {
            let p = p.display().to_string();
            let n = s
                .seen
                .iter()
                .filter(|d| matches!(d, EventData::File(f) if f.path == p))
                .count();
            assert_eq!(n, 1, "{p}: {:?}", s.seen);
        }
    }
}
