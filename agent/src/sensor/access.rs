//! Sensitive files opened, and by which process (fanotify).
//!
//! Each configured path that exists is marked: a file for its own opens, a directory
//! for the opens of the files in it (not below). Inode marks follow an inode, and a
//! tool that replaces a file (`passwd` writes a new `/etc/shadow` and renames it over
//! the old) leaves the mark on the old one: every `access_recheck_ms` the paths are
//! looked at again, and one now naming another inode (or that appeared) is marked
//! anew. Each open becomes a [`FileAccessEvent`] with the opening process read from
//! /proc at once; the agent's own opens are left out, and one process opening one file
//! again within [`REPEAT_MS`] is reported once.
//!
//! Needs CAP_SYS_ADMIN (root); without it the sensor says it is blind and ends. A
//! kernel queue overflow and a full events channel are gaps, and counted as lost.
//! The fanotify calls are the only `unsafe` here, each with its proof.

use std::collections::HashMap;
use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ward_detect::event::{EventData, FileAccessEvent, ProcessEvent};

use super::file::expand;
use super::process::ProcessTracker;
use super::{SensorConfig, SensorCtx, SensorError};

/// One process opening one file again within this is one report.
pub const REPEAT_MS: u64 = 10_000;
/// Repeats remembered; past this the memory is cleared.
const REPEATS_MAX: usize = 4096;
/// Size of `struct fanotify_event_metadata` (version 3), the part read here.
const METADATA_LEN: usize = 24;

/// One event as the kernel wrote it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawEvent {
    pub mask: u64,
    pub fd: i32,
    pub pid: i32,
}

/// A new fanotify notification group (non-blocking; the descriptors in its events
/// are opened read-only).
pub fn open_group() -> io::Result<OwnedFd> {
    let flags = libc::FAN_CLASS_NOTIF | libc::FAN_CLOEXEC | libc::FAN_NONBLOCK;
    let event_flags = (libc::O_RDONLY | libc::O_LARGEFILE | libc::O_CLOEXEC) as libc::c_uint;
    // SAFETY: fanotify_init takes two integer flag words and returns a new file
    // descriptor or -1; the result is checked before it is used.
    #[allow(unsafe_code)]
    let raw = unsafe { libc::fanotify_init(flags, event_flags) };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `raw` is a descriptor fanotify_init just created; nothing else owns it.
    #[allow(unsafe_code)]
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

/// Adds `mask` on `path` to the group `fd` (`flags`: `FAN_MARK_ADD`, with
/// `FAN_MARK_FILESYSTEM` for the whole filesystem holding it).
pub fn add_mark(fd: &OwnedFd, path: &Path, flags: libc::c_uint, mask: u64) -> io::Result<()> {
    let c = CString::new(path.as_os_str().as_bytes()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: the descriptor is an open fanotify group, `c` a NUL-terminated path that
    // outlives the call; the result is checked.
    #[allow(unsafe_code)]
    let r = unsafe { libc::fanotify_mark(fd.as_raw_fd(), flags, mask, libc::AT_FDCWD, c.as_ptr()) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Waits up to 250 ms for a fanotify group's events and reads them into `buf`:
/// how many bytes, or `None` when there were none (the wait ended, or a signal).
pub fn read_events(fd: &OwnedFd, buf: &mut [u8]) -> io::Result<Option<usize>> {
    let mut pfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd for the duration of the call; the result is checked.
    #[allow(unsafe_code)]
    let ready = unsafe { libc::poll(&mut pfd, 1, 250) };
    if ready <= 0 {
        return Ok(None);
    }
    // SAFETY: reads at most `buf.len()` bytes into `buf`, which we own; the
    // result is checked before the bytes are looked at.
    #[allow(unsafe_code)]
    let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        let e = io::Error::last_os_error();
        if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted) {
            return Ok(None);
        }
        return Err(e);
    }
    Ok(Some(usize::try_from(n).unwrap_or(0)))
}

/// Splits a read of the fanotify descriptor into its events. Events of another
/// metadata version, or cut short, end the parse (the kernel writes whole events).
pub fn parse_events(mut buf: &[u8]) -> Vec<RawEvent> {
    let mut out = Vec::new();
    while buf.len() >= METADATA_LEN {
        let event_len = u32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
        let version = buf[4];
        if version != libc::FANOTIFY_METADATA_VERSION || event_len < METADATA_LEN || event_len > buf.len() {
            break;
        }
        let mut mask = [0u8; 8];
        mask.copy_from_slice(&buf[8..16]);
        out.push(RawEvent {
            mask: u64::from_ne_bytes(mask),
            fd: i32::from_ne_bytes([buf[16], buf[17], buf[18], buf[19]]),
            pid: i32::from_ne_bytes([buf[20], buf[21], buf[22], buf[23]]),
        });
        buf = &buf[event_len..];
    }
    out
}

/// The fanotify group and what it has marked.
struct Marks {
    fd: OwnedFd,
    /// Path marked, and the inode the mark is on.
    marked: HashMap<PathBuf, (u64, u64)>,
    /// Paths that could not be marked, with why (reported once).
    failed: HashMap<PathBuf, String>,
}

impl Marks {
    fn open() -> io::Result<Marks> {
        Ok(Marks {
            fd: open_group()?,
            marked: HashMap::new(),
            failed: HashMap::new(),
        })
    }

    fn mark(&self, path: &Path, dir: bool) -> io::Result<()> {
        let mask = if dir {
            libc::FAN_OPEN | libc::FAN_EVENT_ON_CHILD
        } else {
            libc::FAN_OPEN
        };
        add_mark(&self.fd, path, libc::FAN_MARK_ADD, mask)
    }

    /// Marks every configured path that exists and is not marked on its current
    /// inode. Returns the new failures, to report.
    fn refresh(&mut self, patterns: &[String]) -> Vec<String> {
        let mut new_failures = Vec::new();
        for pattern in patterns {
            for path in expand(pattern) {
                let Ok(meta) = std::fs::metadata(&path) else { continue };
                let inode = (meta.dev(), meta.ino());
                if self.marked.get(&path) == Some(&inode) {
                    continue;
                }
                match self.mark(&path, meta.is_dir()) {
                    Ok(()) => {
                        self.failed.remove(&path);
                        self.marked.insert(path, inode);
                    }
                    Err(e) => {
                        let why = format!("cannot watch opens of {}: {e}", path.display());
                        if self.failed.insert(path, why.clone()).is_none() {
                            new_failures.push(why);
                        }
                    }
                }
            }
        }
        new_failures
    }

    fn source(&self) -> String {
        format!("fanotify: {} paths", self.marked.len())
    }
}

/// The path an event's descriptor names (then closed).
fn path_of(fd: OwnedFd) -> Option<String> {
    let link = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())).ok()?;
    Some(link.to_string_lossy().into_owned())
}

/// Watches opens of the configured sensitive paths until the sensor stops.
pub fn run(config: &SensorConfig, tracker: &ProcessTracker, ctx: &SensorCtx) -> Result<(), SensorError> {
    let mut marks = match Marks::open() {
        Ok(m) => m,
        Err(e) => {
            ctx.blind(format!(
                "fanotify unavailable ({e}; it needs root): opens of credential and key files are not seen"
            ));
            return Ok(());
        }
    };
    let own_pid = std::process::id() as i32;
    let recheck = Duration::from_millis(config.access_recheck_ms.max(100));
    let mut last_refresh: Option<Instant> = None;
    let mut recent: HashMap<(i32, String), Instant> = HashMap::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut lost: u64 = 0;
    while !ctx.stopped() {
        if last_refresh.is_none_or(|t| t.elapsed() >= recheck) {
            last_refresh = Some(Instant::now());
            for why in marks.refresh(&config.access_watch_paths) {
                if !ctx.gap(why) {
                    return Ok(());
                }
            }
            if marks.failed.is_empty() {
                ctx.ready(marks.source());
            } else {
                let mut paths: Vec<String> = marks.failed.keys().map(|p| p.display().to_string()).collect();
                paths.sort();
                ctx.degraded(marks.source(), format!("not watched: {}", paths.join(", ")));
            }
        }
        let n = match read_events(&marks.fd, &mut buf) {
            Ok(Some(n)) => n,
            Ok(None) => continue,
            Err(e) => return Err(SensorError::io("fanotify read", e)),
        };
        let now = Instant::now();
        for ev in parse_events(&buf[..n]) {
            if ev.fd == libc::FAN_NOFD {
                if ev.mask & libc::FAN_Q_OVERFLOW != 0 {
                    ctx.lost(1);
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
            let Some(path) = path_of(fd) else { continue };
            let key = (ev.pid, path);
            if recent
                .get(&key)
                .is_some_and(|t| now.duration_since(*t) < Duration::from_millis(REPEAT_MS))
            {
                continue;
            }
            if recent.len() >= REPEATS_MAX {
                recent.clear();
            }
            let pid = u32::try_from(ev.pid).unwrap_or(0);
            let process = tracker.read(pid).unwrap_or(ProcessEvent {
                pid,
                ..ProcessEvent::default()
            });
            let event = FileAccessEvent {
                path: key.1.clone(),
                process,
            };
            recent.insert(key, now);
            if !ctx.try_emit(EventData::FileAccess(event)) {
                ctx.lost(1);
                lost += 1;
            }
        }
        if lost > 0 {
            let g = super::gap(
                ctx.sensor(),
                format!("{lost} sensitive-file opens lost (kernel queue overflow or events channel full)"),
            );
            if ctx.try_emit(g) {
                lost = 0;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn event(len: u32, version: u8, mask: u64, fd: i32, pid: i32) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&len.to_ne_bytes());
        b.push(version);
        b.push(0);
        b.extend_from_slice(&(METADATA_LEN as u16).to_ne_bytes());
        b.extend_from_slice(&mask.to_ne_bytes());
        b.extend_from_slice(&fd.to_ne_bytes());
        b.extend_from_slice(&pid.to_ne_bytes());
        b.resize(len as usize, 0);
        b
    }

    #[test]
    fn events_are_parsed_and_bad_ones_end_the_parse() {
        let v = libc::FANOTIFY_METADATA_VERSION;
        let mut buf = event(24, v, libc::FAN_OPEN, 7, 100);
        buf.extend(event(32, v, libc::FAN_OPEN, 8, 101));
        buf.extend(event(24, v, libc::FAN_Q_OVERFLOW, libc::FAN_NOFD, 0));
        let got = parse_events(&buf);
        assert_eq!(got.len(), 3);
        assert_eq!((got[1].fd, got[1].pid), (8, 101));
        assert_eq!(got[2].fd, libc::FAN_NOFD);
        assert!(parse_events(&event(24, v + 1, 0, 1, 1)).is_empty(), "another version");
        assert!(parse_events(&event(24, v, 0, 1, 1)[..20]).is_empty(), "cut short");
        let mut long = event(24, v, 0, 1, 1);
        long[0] = 200;
        assert!(parse_events(&long).is_empty(), "longer than the read");
    }

    /// Tests that need CAP_SYS_ADMIN (fanotify): skipped by `cargo quick`, failed with
    /// the reason where the kernel refuses.
    mod privileged {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicBool, Ordering};

        use super::super::*;

        #[test]
        fn a_watched_file_opened_by_a_shell_is_reported_with_the_process() {
            let dir = tempfile::tempdir().unwrap();
            let secret = dir.path().canonicalize().unwrap().join("shadow");
            std::fs::write(&secret, b"root:*:1::::::\n").unwrap();
            if let Err(e) = Marks::open() {
                panic!("fanotify refused ({e}): run as root (CI does)");
            }
            let (tx, mut rx) = tokio::sync::mpsc::channel(1024);
            let stop = Arc::new(AtomicBool::new(false));
            let board = crate::sensor::SensorBoard::default();
            let ctx = SensorCtx::new("access", tx, stop.clone()).on_board(board.clone());
            let config = SensorConfig {
                access_watch_paths: vec![secret.display().to_string()],
                access_recheck_ms: 200,
                ..SensorConfig::default()
            };
            let tracker = Arc::new(ProcessTracker::new(1 << 20, 64));
            let t = tracker.clone();
            let handle = std::thread::spawn(move || run(&config, &t, &ctx));
            let deadline = Instant::now() + Duration::from_secs(5);
            while board.get("access").is_none_or(|s| s.source != "fanotify: 1 paths") {
                assert!(Instant::now() < deadline, "{:?}", board.get("access"));
                std::thread::sleep(Duration::from_millis(20));
            }
            // The agent's own reads are not reported; a shell's builtin read is, with
            // the shell (alive while its details are read).
            std::fs::read(&secret).unwrap();
            let script = format!("read line < {}; sleep 0.5", secret.display());
            let out = std::process::Command::new("sh").args(["-c", &script]).output().unwrap();
            assert!(out.status.success());
            // Other programs on a shared host (another Ward agent hashing files in
            // /tmp) may open it too: the shell's open is the one looked for.
            let by_the_shell = |a: &FileAccessEvent| a.process.cmdline.contains("read line <");
            let deadline = Instant::now() + Duration::from_secs(5);
            let access = loop {
                assert!(Instant::now() < deadline, "no access event from the shell");
                match rx.try_recv() {
                    Ok(ev) => match ev.data {
                        EventData::FileAccess(a) if by_the_shell(&a) => break a,
                        EventData::Gap(g) => panic!("gap: {g:?}"),
                        _ => {}
                    },
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            };
            assert_eq!(access.path, secret.display().to_string());
            assert!(access.process.exe.ends_with("sh"), "{access:?}");
            assert!(access.process.cmdline.contains("read line <"), "{access:?}");
            assert!(access.process.parent_exe.contains("ward_agent"), "{access:?}");
            std::thread::sleep(Duration::from_millis(300));
            assert!(
                std::iter::from_fn(|| rx.try_recv().ok())
                    .all(|e| !matches!(&e.data, EventData::FileAccess(a) if by_the_shell(a))),
                "one open, one report"
            );

            // Replaced as `passwd` does (a new file renamed over it): marked again.
            let new = secret.with_extension("new");
            std::fs::write(&new, b"root:!:1::::::\n").unwrap();
            std::fs::rename(&new, &secret).unwrap();
            std::thread::sleep(Duration::from_millis(700));
            let script = format!("read line < {}; sleep 0.4", secret.display());
            std::process::Command::new("sh").args(["-c", &script]).output().unwrap();
            let deadline = Instant::now() + Duration::from_secs(5);
            loop {
                assert!(Instant::now() < deadline, "the replaced file was not marked again");
                match rx.try_recv() {
                    Ok(ev) => {
                        if let EventData::FileAccess(a) = ev.data
                            && a.process.cmdline.contains("sleep 0.4")
                        {
                            break;
                        }
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
            stop.store(true, Ordering::Relaxed);
            handle.join().unwrap().unwrap();
        }
    }
}
