//! What the benchmarks read of /proc: a thread's CPU time and its wait for a core,
//! a process's CPU ticks, the load average.

use std::path::PathBuf;
use std::time::Duration;

/// CPU time the calling thread has used.
pub fn thread_cpu() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes one timespec we own; CLOCK_THREAD_CPUTIME_ID is valid on Linux.
    #[allow(unsafe_code)]
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return Duration::ZERO;
    }
    Duration::new(ts.tv_sec.max(0) as u64, ts.tv_nsec.clamp(0, 999_999_999) as u32)
}

/// The /proc directory of the thread named `name` in process `pid` ("self" or a number).
pub fn task_dir(pid: &str, name: &str) -> Option<PathBuf> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .ok()?
        .flatten()
        .map(|t| t.path())
        .find(|t| std::fs::read_to_string(t.join("comm")).is_ok_and(|c| c.trim() == name))
}

/// A thread's time on a CPU and its time runnable but waiting for one (schedstat).
pub fn schedstat(task: &std::path::Path) -> Option<(Duration, Duration)> {
    let stat = std::fs::read_to_string(task.join("schedstat")).ok()?;
    let mut f = stat.split_whitespace().map(|v| v.parse::<u64>().ok());
    Some((Duration::from_nanos(f.next()??), Duration::from_nanos(f.next()??)))
}

/// utime + stime of a /proc `stat` file, in clock ticks ([`clock_ticks_per_sec`]).
pub fn stat_ticks(path: &std::path::Path) -> Option<u64> {
    let stat = std::fs::read_to_string(path).ok()?;
    // The fields after the command's closing parenthesis: utime and stime are 14 and 15.
    let f: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

pub fn clock_ticks_per_sec() -> f64 {
    // SAFETY: sysconf has no memory effects; _SC_CLK_TCK is a valid name.
    #[allow(unsafe_code)]
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    hz.max(1) as f64
}

/// The 1, 5 and 15 minute load averages, as /proc/loadavg gives them.
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}
