//! Which process wrote a file (fanotify `FAN_CLOSE_WRITE`), for the file sensor's
//! events: inotify says what changed, not who changed it.
//!
//! Each filesystem holding a watched root is marked once (`FAN_MARK_FILESYSTEM`, so
//! files in directories created later are covered as inotify's recursive watches
//! are); a close after writing under a watched root is noted in the [`WriterBook`]
//! with the process read from /proc at once (it may exit before the change settles
//! in the file sensor). A writer that exited before even that (a `cp` is gone by the
//! time its close is read) is named, when the note is taken, by the exec the process
//! sensor reported for it ([`ProcessTracker::recent_exec`]): the kernel's record of
//! its program, arguments and parent. The file sensor takes the note when it reports
//! the change. Closes elsewhere on those filesystems cost a readlink and are dropped.
//!
//! Needs CAP_SYS_ADMIN (root); without it the file sensor's events go without their
//! writer and this sensor says it is blind. The fanotify calls are the only
//! `unsafe` here, each with its proof.

use std::collections::{HashMap, HashSet, VecDeque};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ward_detect::event::ProcessEvent;

use super::access::{add_mark, open_group, parse_events, read_events};
use super::file::expand;
use super::process::ProcessTracker;
use super::{SensorConfig, SensorCtx, SensorError};

/// How long a writer is kept for the file sensor to take (its settle and max delay
/// are well within).
pub const KEEP: Duration = Duration::from_secs(30);
/// Writers kept at most; the oldest go first.
pub const BOOK_MAX: usize = 8_192;
/// A process writing many files is read from /proc once per this.
const PROCESS_REUSE: Duration = Duration::from_secs(1);

/// The last writer of each recently written path. Shared by this sensor (which
/// notes) and the file sensor (which takes).
#[derive(Debug)]
pub struct WriterBook {
    inner: Mutex<Book>,
    /// Set once the filesystems are marked: only then is a writer worth waiting for.
    active: AtomicBool,
    /// Names writers that were gone before /proc could be read.
    tracker: Arc<ProcessTracker>,
}

#[derive(Debug, Default)]
struct Book {
    by_path: HashMap<String, Noted>,
    order: VecDeque<(Instant, String)>,
}

/// One close after writing.
#[derive(Debug, Clone)]
struct Noted {
    at: Instant,
    /// When the close was read, on the start times' clock
    /// ([`crate::clock::now_as_start_time_ms`]), to tell the writer from a later
    /// program on its pid.
    at_ms: u64,
    pid: u32,
    /// As read from /proc at the close; `None` when it was already gone. Shared by
    /// every file the process wrote (an event can weigh kilobytes).
    process: Option<Arc<ProcessEvent>>,
}

/// Whether a process reading names its program and arguments (a zombie's does not).
fn complete(p: &ProcessEvent) -> bool {
    !p.exe.is_empty() && !p.cmdline.is_empty()
}

impl WriterBook {
    pub fn new(tracker: Arc<ProcessTracker>) -> Arc<WriterBook> {
        Arc::new(WriterBook {
            inner: Mutex::default(),
            active: AtomicBool::new(false),
            tracker,
        })
    }

    /// Whether writers are being noted (the marks are in place).
    pub fn active(&self) -> bool {
        self.active.load(Ordering::Relaxed)
    }

    /// Notes that process `pid` (as read then, if it could be) closed `path` after
    /// writing, at `now` (`now_ms` on the start times' clock).
    pub fn note(&self, path: String, pid: u32, process: Option<Arc<ProcessEvent>>, now: Instant, now_ms: u64) {
        let Ok(mut b) = self.inner.lock() else { return };
        while b.order.len() >= BOOK_MAX || b.order.front().is_some_and(|(t, _)| now.duration_since(*t) > KEEP) {
            let Some((t, p)) = b.order.pop_front() else { break };
            if b.by_path.get(&p).is_some_and(|n| n.at == t) {
                b.by_path.remove(&p);
            }
        }
        b.order.push_back((now, path.clone()));
        let noted = Noted {
            at: now,
            at_ms: now_ms,
            pid,
            process,
        };
        b.by_path.insert(path, noted);
    }

    /// The last writer of `path` noted within [`KEEP`] of `now`: as read at its close,
    /// else as its exec was reported, else its pid alone.
    pub fn writer_of(&self, path: &str, now: Instant) -> Option<ProcessEvent> {
        let noted = {
            let b = self.inner.lock().ok()?;
            b.by_path
                .get(path)
                .filter(|n| now.duration_since(n.at) <= KEEP)?
                .clone()
        };
        if let Some(p) = noted.process.as_ref().filter(|p| complete(p)) {
            return Some(ProcessEvent::clone(p));
        }
        // A program started after the close is not the writer (the pid was reused).
        let exec = self
            .tracker
            .recent_exec(noted.pid)
            .filter(|e| e.start_time_ms <= noted.at_ms + START_SLACK_MS);
        Some(exec.or(noted.process).map_or_else(
            || ProcessEvent {
                pid: noted.pid,
                ..ProcessEvent::default()
            },
            |p| ProcessEvent::clone(&p),
        ))
    }
}

/// Start times are cut to clock ticks and the close is read a moment after it: a
/// program started this much after the note is still taken for the writer.
const START_SLACK_MS: u64 = 1_000;

/// The fanotify group and the filesystems it marked.
struct Marks {
    fd: OwnedFd,
    devices: HashSet<u64>,
}

impl Marks {
    fn open() -> io::Result<Marks> {
        Ok(Marks {
            fd: open_group()?,
            devices: HashSet::new(),
        })
    }

    /// Marks the filesystem holding `root` for closes after writing, once per filesystem.
    fn mark(&mut self, root: &Path) -> io::Result<()> {
        let dev = std::fs::metadata(root)?.dev();
        if self.devices.contains(&dev) {
            return Ok(());
        }
        add_mark(
            &self.fd,
            root,
            libc::FAN_MARK_ADD | libc::FAN_MARK_FILESYSTEM,
            libc::FAN_CLOSE_WRITE,
        )?;
        self.devices.insert(dev);
        Ok(())
    }
}

/// Notes the writers of files under the watched roots until the sensor stops.
pub fn run(
    config: &SensorConfig,
    tracker: &ProcessTracker,
    book: &WriterBook,
    ctx: &SensorCtx,
) -> Result<(), SensorError> {
    let mut marks = match Marks::open() {
        Ok(m) => m,
        Err(e) => {
            ctx.blind(format!(
                "fanotify unavailable ({e}; it needs root): file changes are reported without the process that wrote them"
            ));
            return Ok(());
        }
    };
    let roots: Vec<PathBuf> = config.file_watch_paths.iter().flat_map(|p| expand(p)).collect();
    let mut failed = Vec::new();
    for root in &roots {
        if let Err(e) = marks.mark(root) {
            failed.push(format!("{}: {e}", root.display()));
        }
    }
    book.active.store(!marks.devices.is_empty(), Ordering::Relaxed);
    let source = format!("fanotify: {} filesystems", marks.devices.len());
    if failed.is_empty() {
        ctx.ready(source);
    } else {
        ctx.degraded(source, format!("writers not seen under {}", failed.join(", ")));
    }
    let own_pid = std::process::id() as i32;
    let mut recent: HashMap<i32, (Instant, Option<Arc<ProcessEvent>>)> = HashMap::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut lost: u64 = 0;
    while !ctx.stopped() {
        let n = match read_events(&marks.fd, &mut buf) {
            Ok(Some(n)) => n,
            Ok(None) => continue,
            Err(e) => return Err(SensorError::io("fanotify read", e)),
        };
        let now = Instant::now();
        if recent.len() >= 1024 {
            recent.retain(|_, (t, _)| now.duration_since(*t) < PROCESS_REUSE);
        }
        for ev in parse_events(&buf[..n]) {
            if ev.fd == libc::FAN_NOFD {
                if ev.mask & libc::FAN_Q_OVERFLOW != 0 {
                    lost += 1;
                }
                continue;
            }
            // SAFETY: the kernel opened this descriptor for us and put it in the
            // event; it is ours to close, and closed once (dropped with `fd`).
            #[allow(unsafe_code)]
            let fd = unsafe { OwnedFd::from_raw_fd(ev.fd) };
            if ev.pid == own_pid {
                continue;
            }
            let Ok(path) = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())) else {
                continue;
            };
            drop(fd);
            if !roots.iter().any(|r| path.starts_with(r)) {
                continue;
            }
            let pid = u32::try_from(ev.pid).unwrap_or(0);
            let process = match recent.get(&ev.pid) {
                Some((t, p)) if now.duration_since(*t) < PROCESS_REUSE => p.clone(),
                _ => {
                    // Gone, or a zombie with no program left: the book names it later.
                    let p = tracker.read(pid).ok().filter(complete).map(Arc::new);
                    recent.insert(ev.pid, (now, p.clone()));
                    p
                }
            };
            book.note(
                path.to_string_lossy().into_owned(),
                pid,
                process,
                now,
                crate::clock::now_as_start_time_ms(),
            );
        }
        if lost > 0
            && ctx.gap(format!(
                "fanotify queue overflowed {lost} times: some file changes are reported without their writer"
            ))
        {
            lost = 0;
        }
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn p(pid: u32, exe: &str) -> Option<Arc<ProcessEvent>> {
        Some(Arc::new(ProcessEvent {
            pid,
            exe: exe.into(),
            cmdline: exe.into(),
            ..ProcessEvent::default()
        }))
    }

    fn book() -> Arc<WriterBook> {
        WriterBook::new(Arc::new(ProcessTracker::new(1 << 20, 16)))
    }

    #[test]
    fn the_last_writer_of_a_path_is_kept_for_a_while() {
        let book = book();
        let t0 = Instant::now();
        book.note("/tmp/a".into(), 1, p(1, "/usr/bin/curl"), t0, 0);
        book.note(
            "/tmp/a".into(),
            2,
            p(2, "/usr/bin/cp"),
            t0 + Duration::from_millis(5),
            0,
        );
        assert_eq!(book.writer_of("/tmp/a", t0 + Duration::from_secs(1)).unwrap().pid, 2);
        assert!(book.writer_of("/tmp/b", t0).is_none());
        assert!(book.writer_of("/tmp/a", t0 + KEEP + Duration::from_secs(1)).is_none());
    }

    #[test]
    fn a_writer_gone_before_its_close_was_read_is_named_by_its_exec() {
        let book = book();
        let exec = |pid: u32, exe: &str, start_ns: u64| super::super::ebpf::ExecRecord {
            tgid: pid,
            ppid: 1,
            exe: exe.into(),
            argv: vec!["cp".into(), "/tmp/x".into(), "/etc/cron.d/x".into()],
            start_ns,
            ..Default::default()
        };
        let cp = book.tracker.from_kernel(&exec(900_100, "/usr/bin/cp", 1_000_000));
        let (t0, closed_ms) = (Instant::now(), cp.start_time_ms + 5);
        book.note("/etc/cron.d/x".into(), 900_100, None, t0, closed_ms);
        let w = book.writer_of("/etc/cron.d/x", t0).unwrap();
        assert_eq!(
            (w.exe.as_str(), w.cmdline.as_str()),
            ("/usr/bin/cp", "cp /tmp/x /etc/cron.d/x")
        );
        // A zombie's reading (no command line) gives way to the exec too.
        let zombie = Some(Arc::new(ProcessEvent {
            pid: 900_100,
            exe: "/usr/bin/cp".into(),
            ..ProcessEvent::default()
        }));
        book.note("/etc/cron.d/y".into(), 900_100, zombie, t0, closed_ms);
        assert_eq!(
            book.writer_of("/etc/cron.d/y", t0).unwrap().cmdline,
            "cp /tmp/x /etc/cron.d/x"
        );
        // A program started on that pid well after the close is not its writer.
        book.note(
            "/etc/cron.d/z".into(),
            900_100,
            None,
            t0,
            closed_ms - START_SLACK_MS - 10,
        );
        let w = book.writer_of("/etc/cron.d/z", t0).unwrap();
        assert_eq!((w.pid, w.exe.as_str()), (900_100, ""), "the pid alone");
    }

    #[test]
    fn the_book_stays_bounded_and_old_notes_go_first() {
        let book = book();
        let t0 = Instant::now();
        for i in 0..(BOOK_MAX + 10) {
            book.note(format!("/tmp/f{i}"), i as u32, p(i as u32, "/bin/sh"), t0, 0);
        }
        let b = book.inner.lock().unwrap();
        assert_eq!(b.by_path.len(), BOOK_MAX);
        assert!(!b.by_path.contains_key("/tmp/f0"));
        assert!(b.by_path.contains_key(&format!("/tmp/f{}", BOOK_MAX + 9)));
        drop(b);
        // Past KEEP everything older is dropped at the next note.
        book.note(
            "/tmp/new".into(),
            1,
            p(1, "/bin/sh"),
            t0 + KEEP + Duration::from_secs(1),
            0,
        );
        assert_eq!(book.inner.lock().unwrap().by_path.len(), 1);
    }
}
