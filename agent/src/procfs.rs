//! Reading the records the kernel and the login system keep about processes and users:
//! /proc/PID (stat, exe, cmdline, status), /etc/passwd and utmp content. Shared by the
//! sensors and the response actions; nothing here trusts what it reads (a process may
//! exit or change between reads, every file may be missing or malformed).

use std::collections::{BTreeSet, HashMap};
use std::fs;
use std::path::{Path, PathBuf};

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

/// `root/PID/file`, e.g. `/proc/42/stat`.
pub fn proc_path(root: &Path, pid: u32, file: &str) -> PathBuf {
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

/// The pids of the processes now listed under `root` (threads are not listed there),
/// or `None` when it cannot be read.
pub fn live_pids(root: &Path) -> Option<std::collections::HashSet<u32>> {
    let dir = std::fs::read_dir(root).ok()?;
    Some(
        dir.filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().to_str()?.parse().ok())
            .collect(),
    )
}

/// Reads /proc/PID/stat under `root` (normally /proc).
pub fn read_stat(root: &Path, pid: u32) -> Result<ProcStat, ProcError> {
    let path = proc_path(root, pid, "stat");
    let content = read_string(&path)?;
    let (ppid, ticks) = parse_stat(&content).ok_or(ProcError::Malformed {
        path: path.display().to_string(),
    })?;
    let start_time_ms = crate::clock::start_time_ms(ticks);
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

/// utmp record size and offsets (glibc, Linux; the same on 32- and 64-bit since the record
/// uses 32-bit time fields).
pub(crate) const UTMP_RECORD_BYTES: usize = 384;
const UT_TYPE_AT: usize = 0;
pub(crate) const UT_USER_AT: usize = 44;
const UT_USER_LEN: usize = 32;
pub(crate) const USER_PROCESS: i16 = 7;

/// The users of USER_PROCESS records in utmp content, sorted and without repeats.
pub fn parse_utmp(bytes: &[u8]) -> Vec<String> {
    let mut users = BTreeSet::new();
    for rec in bytes.chunks_exact(UTMP_RECORD_BYTES) {
        let ty = rec
            .get(UT_TYPE_AT..UT_TYPE_AT + 2)
            .map(|b| i16::from_ne_bytes([b[0], b[1]]));
        if ty != Some(USER_PROCESS) {
            continue;
        }
        let Some(raw) = rec.get(UT_USER_AT..UT_USER_AT + UT_USER_LEN) else {
            continue;
        };
        let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
        let name = String::from_utf8_lossy(raw.get(..end).unwrap_or_default())
            .trim()
            .to_string();
        if !name.is_empty() {
            users.insert(name);
        }
    }
    users.into_iter().collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn live_pids_lists_numeric_entries_only() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["1", "42", "self", "net", "007"] {
            std::fs::create_dir(dir.path().join(name)).unwrap();
        }
        let live = live_pids(dir.path()).unwrap();
        assert_eq!(live, [1, 42, 7].into_iter().collect());
        assert!(live_pids(&dir.path().join("missing")).is_none());
    }

    #[test]
    fn parses_stat_with_awkward_names() {
        let line = "1234 (a) b) (c) S 77 1234 1234 0 -1 4194560 1 0 0 0 0 0 0 0 20 0 1 0 98765 1000 10 0";
        assert_eq!(parse_stat(line), Some((77, 98765)));
        assert_eq!(parse_stat("garbage"), None);
        assert_eq!(parse_stat("1 (x) S"), None);
    }

    #[test]
    fn parses_passwd() {
        let m = parse_passwd("root:x:0:0:root:/root:/bin/bash\nbad\nalice:x:1000:1000::/home/alice:/bin/sh\n");
        assert_eq!(m.get(&0).map(String::as_str), Some("root"));
        assert_eq!(m.get(&1000).map(String::as_str), Some("alice"));
        assert_eq!(m.len(), 2);
    }
}
