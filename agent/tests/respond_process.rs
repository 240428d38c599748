//! Kill of real spawned processes: right identity kills, a wrong start time or exe refuses
//! and the process lives, a tree kill takes the children too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use ward_agent::procfs::{read_exe, read_stat};
use ward_agent::respond::process::{ProcessActionError, kill};

fn proc() -> &'static Path {
    Path::new("/proc")
}

fn spawn(cmd: &str, args: &[&str]) -> Child {
    Command::new(cmd).args(args).spawn().unwrap()
}

fn identity(pid: u32) -> (u64, String) {
    (read_stat(proc(), pid).unwrap().start_time_ms, read_exe(proc(), pid).0)
}

/// Alive and not a zombie.
fn running(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => {
            let state = s.rsplit_once(')').and_then(|(_, r)| r.split_whitespace().next());
            !matches!(state, Some("Z") | Some("X"))
        }
        Err(_) => false,
    }
}

fn children_of(pid: u32) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|p| read_stat(proc(), *p).map(|s| s.ppid == pid).unwrap_or(false))
        .collect()
}

#[test]
fn kill_with_the_right_identity() {
    let mut child = spawn("sleep", &["30"]);
    let pid = child.id();
    let (start, exe) = identity(pid);
    let report = kill(pid, start, &exe, false).unwrap();
    assert_eq!(report.killed.len(), 1);
    assert_eq!(report.killed[0].pid, pid);
    assert!(report.killed[0].exited);
    let status = child.wait().unwrap();
    assert!(!status.success());
}

#[test]
fn wrong_start_time_or_exe_is_refused_and_the_process_lives() {
    let mut child = spawn("sleep", &["30"]);
    let pid = child.id();
    let (start, exe) = identity(pid);
    assert!(matches!(
        kill(pid, start + 10_000, &exe, false),
        Err(ProcessActionError::StartTimeMismatch { .. })
    ));
    assert!(matches!(
        kill(pid, start, "/usr/bin/not-sleep", true),
        Err(ProcessActionError::ExeMismatch { .. })
    ));
    assert!(matches!(
        kill(pid, start, "", false),
        Err(ProcessActionError::ExeMismatch { .. })
    ));
    std::thread::sleep(Duration::from_millis(50));
    assert!(running(pid));
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn tree_kill_takes_the_children() {
    let mut child = spawn("sh", &["-c", "sleep 30 & sleep 30; :"]);
    let pid = child.id();
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut kids = children_of(pid);
    while kids.len() < 2 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
        kids = children_of(pid);
    }
    assert_eq!(kids.len(), 2, "sh should have two sleeping children");
    let (start, exe) = identity(pid);
    let report = kill(pid, start, &exe, true).unwrap();
    let killed: Vec<u32> = report.killed.iter().map(|k| k.pid).collect();
    assert_eq!(killed.last(), Some(&pid), "root last: {report:?}");
    for k in &kids {
        assert!(killed.contains(k), "child {k} not killed: {report:?}");
    }
    child.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(2);
    while kids.iter().any(|k| running(*k)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    for k in &kids {
        assert!(!running(*k), "child {k} still running");
    }
}
