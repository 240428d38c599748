//! The agent's clocks: wall time ([`now_ms`]) and the one boot clock every process
//! start time goes through (events, lineage, the kill action's identity check,
//! investigation packages), measured to the millisecond and pinned per boot id in the
//! state dir, so a process keeps the very same start time across agent restarts.

use std::fs;
use std::path::Path;
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Unix time now, milliseconds.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
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

/// A start time in clock ticks since boot (as /proc/PID/stat gives it) in Unix
/// milliseconds, through the boot clock.
pub fn start_time_ms(ticks: u64) -> u64 {
    let clock = boot_clock();
    clock
        .boot_ms
        .saturating_add(ticks.saturating_mul(1000) / clock.ticks_per_s.max(1))
}

/// A kernel start time in nanoseconds since boot (`task->start_boottime`, as eBPF reads
/// it) in Unix milliseconds: cut to clock ticks first, exactly as /proc/PID/stat does,
/// so a process has the same start time whichever source saw it (the kill action and
/// correlation compare start times exactly).
pub fn start_time_ms_from_boot_ns(ns: u64) -> u64 {
    let ticks_per_s = boot_clock().ticks_per_s.max(1);
    start_time_ms(ns / (1_000_000_000 / ticks_per_s).max(1))
}

/// Now, on the clock start times are on (boot time plus CLOCK_BOOTTIME), so it
/// compares with them even after the wall clock was set since the boot time was taken.
pub fn now_as_start_time_ms() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes one timespec through the valid pointer we pass and
    // reads nothing else; the result is checked.
    #[allow(unsafe_code)]
    let r = unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
    if r != 0 {
        return now_ms();
    }
    let ms =
        u64::try_from(ts.tv_sec).unwrap_or(0).saturating_mul(1000) + u64::try_from(ts.tv_nsec).unwrap_or(0) / 1_000_000;
    boot_clock().boot_ms.saturating_add(ms)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn now_is_on_the_start_times_clock() {
        // A process started now has a start time within a clock tick of now (the
        // wall clock is not read: it may have been set since boot).
        let me = crate::procfs::read_stat(std::path::Path::new("/proc"), std::process::id()).unwrap();
        let now = now_as_start_time_ms();
        assert!(me.start_time_ms <= now + 10, "started {} > now {now}", me.start_time_ms);
        let mut child = std::process::Command::new("sleep").arg("1").spawn().unwrap();
        let started = crate::procfs::read_stat(std::path::Path::new("/proc"), child.id())
            .unwrap()
            .start_time_ms;
        let after = now_as_start_time_ms();
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(started.abs_diff(after) <= 50, "child started {started}, now {after}");
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
}
