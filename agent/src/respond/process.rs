//! Kill one process (optionally with its descendants), bound to pid, start time and exe.
//!
//! A pidfd is opened for the pid BEFORE its identity is read from /proc: if the verified
//! identity matches, the signal sent through that pidfd can only reach that process, even
//! if it exits and the pid is reused right after the check (the signal then fails with
//! ESRCH instead of hitting the newcomer). A tree kill first stops the root and every
//! descendant it finds (each through its own pidfd, each verified against the parent and
//! start time seen in the scan), rescanning until no new descendant appears, so nothing can
//! fork away or be reparented out of the tree while it is killed; then SIGKILL goes to the
//! deepest first and to the root last.
//!
//! Must not signal pid 1, the agent itself or any of its ancestors; must not signal a process
//! whose start time or exe differ from the command's; must not spawn anything or use any
//! signal path other than a verified pidfd.

use std::collections::{HashMap, HashSet};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::procfs::{ProcError, ProcStat, read_exe, read_stat};

const PROC: &str = "/proc";
/// Rescans of the tree while stopping it; a tree still growing after this many is killed
/// as far as it was found, the rest reported.
const MAX_TREE_ROUNDS: usize = 32;
/// Largest tree killed at once.
const MAX_TREE_PROCESSES: usize = 4096;
/// How long to wait for the killed processes to exit before reporting them unconfirmed.
const EXIT_WAIT: Duration = Duration::from_secs(2);

/// One process that was sent SIGKILL.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KilledProcess {
    pub pid: u32,
    pub ppid: u32,
    pub start_time_ms: u64,
    pub exe: String,
    /// The process had exited when the report was made (its pidfd became readable).
    pub exited: bool,
}

/// A descendant found in the tree but not killed, and why (usually: it exited first).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SkippedProcess {
    pub pid: u32,
    pub reason: String,
}

/// What [`kill`] did: the killed processes, deepest first, the root last.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct KillReport {
    pub killed: Vec<KilledProcess>,
    pub skipped: Vec<SkippedProcess>,
}

/// Why a kill was refused or failed; the text is meant for the collector.
#[derive(Debug, thiserror::Error)]
pub enum ProcessActionError {
    #[error("refused to kill pid {pid}: {reason}")]
    Forbidden { pid: u32, reason: &'static str },
    #[error("no process with pid {pid}")]
    NotFound { pid: u32 },
    #[error("pid {pid} started at {actual} ms, not {expected} ms: the pid was reused; not killed")]
    StartTimeMismatch { pid: u32, expected: u64, actual: u64 },
    #[error("pid {pid} runs {actual:?}, not {expected:?}; not killed")]
    ExeMismatch { pid: u32, expected: String, actual: String },
    #[error("pid {pid} cannot be identified: {reason}; not killed")]
    Unidentifiable { pid: u32, reason: String },
    #[error("pidfd_open({pid}): {source}")]
    Pidfd { pid: u32, source: io::Error },
    #[error("signal to pid {pid}: {source}")]
    Signal { pid: u32, source: io::Error },
}

/// The system calls std does not wrap.
#[allow(unsafe_code)]
mod sys {
    use super::*;

    pub fn pidfd_open(pid: u32) -> io::Result<OwnedFd> {
        let pid = libc::pid_t::try_from(pid).map_err(|_| io::Error::from_raw_os_error(libc::ESRCH))?;
        // SAFETY: pidfd_open takes a pid and flags by value and returns a new descriptor or
        // -1; no memory is passed.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0 as libc::c_uint) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let fd = libc::c_int::try_from(fd).map_err(|_| io::Error::from_raw_os_error(libc::EBADF))?;
        // SAFETY: the kernel returned a fresh descriptor that nothing else owns.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }

    pub fn pidfd_send_signal(pidfd: BorrowedFd<'_>, sig: libc::c_int) -> io::Result<()> {
        // SAFETY: `pidfd` is live for the call; a NULL siginfo is allowed (the kernel fills
        // in the same info as kill(2)); flags must be 0.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                pidfd.as_raw_fd(),
                sig,
                std::ptr::null::<libc::siginfo_t>(),
                0 as libc::c_uint,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Whether the process behind `pidfd` has exited, waiting at most `timeout`.
    pub fn pidfd_exited(pidfd: BorrowedFd<'_>, timeout: Duration) -> bool {
        let mut pfd = libc::pollfd {
            fd: pidfd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = libc::c_int::try_from(timeout.as_millis()).unwrap_or(libc::c_int::MAX);
        // SAFETY: `pfd` is one valid, exclusively borrowed pollfd and the count is 1.
        let rc = unsafe { libc::poll(&mut pfd, 1, ms) };
        rc > 0 && pfd.revents & libc::POLLIN != 0
    }

    pub fn getpid() -> u32 {
        std::process::id()
    }
}

fn not_found_or(pid: u32, e: ProcError) -> ProcessActionError {
    match e {
        ProcError::Io { source, .. } if source.kind() == io::ErrorKind::NotFound => {
            ProcessActionError::NotFound { pid }
        }
        other => ProcessActionError::Unidentifiable {
            pid,
            reason: other.to_string(),
        },
    }
}

/// Pids that are never signalled: 0, 1, the agent and its ancestors.
fn untouchable(proc: &Path) -> HashSet<u32> {
    let mut out: HashSet<u32> = [0, 1].into_iter().collect();
    let mut pid = sys::getpid();
    while out.insert(pid) {
        match read_stat(proc, pid) {
            Ok(s) => pid = s.ppid,
            Err(_) => break,
        }
    }
    out
}

fn forbidden_reason(pid: u32, untouchable: &HashSet<u32>) -> Option<&'static str> {
    match pid {
        0 => Some("pid 0 is not a process"),
        1 => Some("pid 1 (init) is never killed"),
        p if p == sys::getpid() => Some("it is the agent itself"),
        p if untouchable.contains(&p) => Some("it is an ancestor of the agent"),
        _ => None,
    }
}

/// A process held by a pidfd whose identity was verified after the pidfd was opened.
struct Held {
    stat: ProcStat,
    exe: String,
    pidfd: OwnedFd,
    depth: usize,
}

fn open_pidfd(pid: u32) -> Result<OwnedFd, ProcessActionError> {
    sys::pidfd_open(pid).map_err(|source| match source.raw_os_error() {
        Some(libc::ESRCH) => ProcessActionError::NotFound { pid },
        _ => ProcessActionError::Pidfd { pid, source },
    })
}

fn hold_root(proc: &Path, pid: u32, start_time_ms: u64, exe: &str) -> Result<Held, ProcessActionError> {
    let pidfd = open_pidfd(pid)?;
    let stat = read_stat(proc, pid).map_err(|e| not_found_or(pid, e))?;
    if stat.start_time_ms != start_time_ms {
        return Err(ProcessActionError::StartTimeMismatch {
            pid,
            expected: start_time_ms,
            actual: stat.start_time_ms,
        });
    }
    let (actual, _deleted) = read_exe(proc, pid);
    if actual.is_empty() {
        return Err(ProcessActionError::Unidentifiable {
            pid,
            reason: "no executable (kernel thread, zombie or unreadable)".into(),
        });
    }
    if actual != exe {
        return Err(ProcessActionError::ExeMismatch {
            pid,
            expected: exe.to_string(),
            actual,
        });
    }
    Ok(Held {
        stat,
        exe: actual,
        pidfd,
        depth: 0,
    })
}

/// All processes now: (pid, stat).
fn snapshot(proc: &Path) -> Vec<ProcStat> {
    let Ok(entries) = std::fs::read_dir(proc) else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| read_stat(proc, pid).ok())
        .collect()
}

/// Opens a pidfd for a descendant seen in a scan and checks it is still that process
/// (same start time, same parent).
fn hold_descendant(proc: &Path, seen: &ProcStat, depth: usize) -> Result<Held, String> {
    let pidfd = sys::pidfd_open(seen.pid).map_err(|e| format!("gone before it could be held: {e}"))?;
    let now = read_stat(proc, seen.pid).map_err(|e| format!("gone before it could be verified: {e}"))?;
    if now.start_time_ms != seen.start_time_ms || now.ppid != seen.ppid {
        return Err("the pid now belongs to another process".into());
    }
    let (exe, _) = read_exe(proc, seen.pid);
    Ok(Held {
        stat: now,
        exe,
        pidfd,
        depth,
    })
}

fn signal(h: &Held, sig: libc::c_int) -> Result<(), ProcessActionError> {
    sys::pidfd_send_signal(h.pidfd.as_fd(), sig).map_err(|source| ProcessActionError::Signal {
        pid: h.stat.pid,
        source,
    })
}

/// Stops the root, then finds and stops its descendants until the tree stops growing.
fn stop_tree(proc: &Path, root: &Held, untouchable: &HashSet<u32>, report: &mut KillReport) -> Vec<Held> {
    let mut held: Vec<Held> = Vec::new();
    let mut depth_of: HashMap<u32, usize> = HashMap::from([(root.stat.pid, 0)]);
    let mut refused: HashSet<u32> = HashSet::new();
    for _ in 0..MAX_TREE_ROUNDS {
        let mut grew = false;
        // Parents before children within one scan: repeat until the scan adds nothing.
        let procs = snapshot(proc);
        loop {
            let mut added = false;
            for p in &procs {
                if depth_of.contains_key(&p.pid) || refused.contains(&p.pid) {
                    continue;
                }
                let Some(&parent_depth) = depth_of.get(&p.ppid) else {
                    continue;
                };
                if held.len() >= MAX_TREE_PROCESSES {
                    refused.insert(p.pid);
                    report.skipped.push(SkippedProcess {
                        pid: p.pid,
                        reason: format!("tree larger than {MAX_TREE_PROCESSES} processes"),
                    });
                    continue;
                }
                if let Some(reason) = forbidden_reason(p.pid, untouchable) {
                    refused.insert(p.pid);
                    report.skipped.push(SkippedProcess {
                        pid: p.pid,
                        reason: reason.into(),
                    });
                    continue;
                }
                match hold_descendant(proc, p, parent_depth + 1) {
                    Ok(h) => {
                        if let Err(e) = signal(&h, libc::SIGSTOP) {
                            tracing::debug!(pid = p.pid, error = %e, "SIGSTOP failed");
                        }
                        depth_of.insert(p.pid, h.depth);
                        held.push(h);
                        added = true;
                        grew = true;
                    }
                    Err(reason) => {
                        refused.insert(p.pid);
                        report.skipped.push(SkippedProcess { pid: p.pid, reason });
                    }
                }
            }
            if !added {
                break;
            }
        }
        if !grew {
            break;
        }
    }
    held
}

/// Sends SIGKILL to the process `pid` if it started at `start_time_ms` and runs `exe`
/// (the path /proc/PID/exe shows, without " (deleted)"); with `tree`, to its descendants too.
pub fn kill(pid: u32, start_time_ms: u64, exe: &str, tree: bool) -> Result<KillReport, ProcessActionError> {
    kill_in(Path::new(PROC), pid, start_time_ms, exe, tree)
}

fn kill_in(proc: &Path, pid: u32, start_time_ms: u64, exe: &str, tree: bool) -> Result<KillReport, ProcessActionError> {
    let untouchable = untouchable(proc);
    if let Some(reason) = forbidden_reason(pid, &untouchable) {
        return Err(ProcessActionError::Forbidden { pid, reason });
    }
    let root = hold_root(proc, pid, start_time_ms, exe)?;
    let mut report = KillReport::default();

    let mut order = if tree {
        signal(&root, libc::SIGSTOP)?;
        let mut held = stop_tree(proc, &root, &untouchable, &mut report);
        held.sort_by_key(|h| std::cmp::Reverse(h.depth));
        held
    } else {
        Vec::new()
    };
    order.push(root);

    let mut sent: Vec<Held> = Vec::with_capacity(order.len());
    let mut root_error = None;
    let last = order.len().saturating_sub(1);
    for (i, h) in order.into_iter().enumerate() {
        match signal(&h, libc::SIGKILL) {
            Ok(()) => sent.push(h),
            Err(e) if i == last => root_error = Some(e),
            Err(e) => report.skipped.push(SkippedProcess {
                pid: h.stat.pid,
                reason: e.to_string(),
            }),
        }
    }
    let deadline = Instant::now() + EXIT_WAIT;
    for h in sent {
        let left = deadline.saturating_duration_since(Instant::now());
        let exited = sys::pidfd_exited(h.pidfd.as_fd(), left);
        report.killed.push(KilledProcess {
            pid: h.stat.pid,
            ppid: h.stat.ppid,
            start_time_ms: h.stat.start_time_ms,
            exe: h.exe,
            exited,
        });
    }
    if let Some(e) = root_error {
        return Err(e);
    }
    tracing::info!(pid, tree, killed = report.killed.len(), "process killed");
    Ok(report)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn init_self_and_ancestors_are_refused() {
        for pid in [0, 1, std::process::id()] {
            assert!(matches!(
                kill(pid, 0, "/x", false),
                Err(ProcessActionError::Forbidden { .. })
            ));
        }
        let parent = read_stat(Path::new(PROC), std::process::id()).unwrap().ppid;
        if parent > 1 {
            assert!(matches!(
                kill(parent, 0, "/x", true),
                Err(ProcessActionError::Forbidden { .. })
            ));
        }
    }

    #[test]
    fn missing_pid_is_not_found() {
        // Beyond the kernel's pid_max (at most 2^22).
        assert!(matches!(
            kill(4_194_305 + 7, 0, "/x", false),
            Err(ProcessActionError::NotFound { .. })
        ));
    }
}
