//! Process ancestry for alerts: the alerted process and its ancestors, parent first, read
//! from /proc while they live, up to the service or session root.
//!
//! The walk goes up from a process through `ppid` and ends, with `rooted`, at the first
//! ancestor that is a tree's root: a child of pid 0 or 1 (a service's main process: sshd,
//! cron, a Java server, dockerd), a session manager (`systemd --user`) or a container
//! shim (`containerd-shim*`, `conmon`). A process that is itself a child of init has no
//! ancestors and is rooted. The walk is cut, not rooted, after
//! [`MAX_ANCESTORS`](ward_protocol::MAX_ANCESTORS) ancestors or at an ancestor that
//! already exited (its pid gone, or reused by a process younger than its child).
//!
//! Sensors call it when they build an event, because short processes and their parents
//! exit: the process sensor (poller and netlink connector) for every new process, the
//! audit sensor for a record's `pid`, the auth sensor for the logging process
//! (`sshd[811]`, the journal's `_PID`), the last two only while that pid still runs the
//! program the record names. A small bounded cache of nodes by (pid, start time) spares a burst of execs
//! under one shell from re-reading each ancestor's exe, command line and users: an
//! ancestor costs one /proc/PID/stat read when cached. Command lines in nodes are cut
//! at [`MAX_NODE_CMDLINE_BYTES`]. This module must not trust /proc
//! (every read may fail or race with an exit) nor ever signal or trace a process; it
//! reads from a configurable proc root so it is tested on a fake tree.

use std::collections::{HashMap, VecDeque};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ward_protocol::{MAX_ANCESTORS, ProcessNode};

use super::process::UserNames;
use crate::procfs::{ProcError, read_cmdline, read_exe, read_stat, read_uids};
use ward_detect::event::Lineage;

/// Nodes remembered by default (a few hundred bytes each).
pub const DEFAULT_CACHE_ENTRIES: usize = 1024;
/// Longest command line kept in a node, bytes: nine nodes stay small in an alert (the
/// alerted process's full command line is in its `Process` entity).
pub const MAX_NODE_CMDLINE_BYTES: usize = 4096;
/// `/proc/PID/loginuid` of a process no login set (-1 as unsigned).
const LOGINUID_UNSET: u32 = u32::MAX;

/// Reads lineages under one proc root. Shared by the sensors that know pids.
#[derive(Debug)]
pub struct LineageReader {
    proc_root: PathBuf,
    users: Mutex<UserNames>,
    cache: Mutex<NodeCache>,
    /// When each pid's /proc entry was last read, and the start time it had then.
    verified: Mutex<HashMap<u32, (Instant, u64)>>,
}

/// Nodes by (pid, start time), oldest evicted first.
#[derive(Debug)]
struct NodeCache {
    nodes: HashMap<(u32, u64), ProcessNode>,
    order: VecDeque<(u32, u64)>,
    capacity: usize,
}

impl NodeCache {
    fn get(&self, pid: u32, start_time_ms: u64) -> Option<ProcessNode> {
        self.nodes.get(&(pid, start_time_ms)).cloned()
    }

    /// Stores (or replaces, after an exec) the node of a process.
    fn put(&mut self, node: &ProcessNode) {
        let key = (node.pid, node.start_time_ms);
        if self.nodes.insert(key, node.clone()).is_none() {
            self.order.push_back(key);
        }
        while self.nodes.len() > self.capacity {
            match self.order.pop_front() {
                Some(old) => {
                    self.nodes.remove(&old);
                }
                None => break,
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding the lock leaves plain data behind; keep using it.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// True for the executable of a tree's root that is not a child of init: a session
/// manager or a container shim.
pub fn is_root_exe(exe: &str) -> bool {
    let name = exe.rsplit('/').next().unwrap_or(exe);
    name == "systemd" || name == "conmon" || name.starts_with("containerd-shim")
}

/// `s` cut to at most `max` bytes, on a character boundary.
fn cut(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut at = max;
        while !s.is_char_boundary(at) {
            at -= 1;
        }
        s.truncate(at);
    }
    s
}

/// A parent pid that means "child of init (or of the kernel)".
fn is_init(ppid: u32) -> bool {
    ppid <= 1
}

impl LineageReader {
    /// A reader of the real /proc, with user names from /etc/passwd.
    pub fn new() -> Self {
        Self::with_root(Path::new("/proc"), Path::new("/etc/passwd"), DEFAULT_CACHE_ENTRIES)
    }

    /// A reader of the proc tree at `proc_root`, names from the passwd file `passwd`,
    /// remembering up to `cache_entries` nodes.
    pub fn with_root(proc_root: &Path, passwd: &Path, cache_entries: usize) -> Self {
        LineageReader {
            proc_root: proc_root.to_path_buf(),
            users: Mutex::new(UserNames::new(passwd.to_path_buf())),
            cache: Mutex::new(NodeCache {
                nodes: HashMap::new(),
                order: VecDeque::new(),
                capacity: cache_entries.max(1),
            }),
            verified: Mutex::new(HashMap::new()),
        }
    }

    /// The name of `uid` (its number as text without one).
    pub fn user_name(&self, uid: u32) -> String {
        lock(&self.users).name(uid)
    }

    /// The login user of a process: None when unset or unreadable.
    pub fn login_user(&self, pid: u32) -> Option<String> {
        let text = fs::read_to_string(self.proc_root.join(pid.to_string()).join("loginuid")).ok()?;
        let uid: u32 = text.trim().parse().ok()?;
        (uid != LOGINUID_UNSET).then(|| self.user_name(uid))
    }

    /// The node of a live process, read now (the cache is refreshed with it, so a process
    /// that called exec is seen with its new program by its children's lineages).
    pub fn read_node(&self, pid: u32) -> Result<ProcessNode, ProcError> {
        let stat = read_stat(&self.proc_root, pid)?;
        let node = ProcessNode {
            pid,
            ppid: stat.ppid,
            start_time_ms: stat.start_time_ms,
            exe: read_exe(&self.proc_root, pid).0,
            cmdline: cut(read_cmdline(&self.proc_root, pid), MAX_NODE_CMDLINE_BYTES),
            user: read_uids(&self.proc_root, pid).map(|(_, euid)| self.user_name(euid)),
            login_user: self.login_user(pid),
        };
        // The pid may have died and been reused while it was read.
        if read_stat(&self.proc_root, pid)?.start_time_ms != stat.start_time_ms {
            return Err(ProcError::Malformed {
                path: format!("{}/{pid} (replaced while read)", self.proc_root.display()),
            });
        }
        lock(&self.cache).put(&node);
        Ok(node)
    }

    /// An ancestor's node: from the cache when this (pid, start time) was read before, its
    /// parent always as it is now (a process whose parent exits is reparented).
    fn ancestor(&self, pid: u32) -> Result<ProcessNode, ProcError> {
        let stat = read_stat(&self.proc_root, pid)?;
        self.verified_now(pid, stat.start_time_ms);
        let cached = lock(&self.cache).get(pid, stat.start_time_ms);
        if let Some(mut node) = cached {
            node.ppid = stat.ppid;
            // The cache keeps the parent it has now, for walks that trust it.
            lock(&self.cache).put(&node);
            return Ok(node);
        }
        self.read_node(pid)
    }

    fn verified_now(&self, pid: u32, start_time_ms: u64) {
        let capacity = lock(&self.cache).capacity;
        let mut v = lock(&self.verified);
        if v.len() >= 4 * capacity {
            v.clear();
        }
        v.insert(pid, (Instant::now(), start_time_ms));
    }

    /// Like [`LineageReader::ancestor`], but an ancestor whose /proc entry was read less
    /// than `trust` ago is taken from the cache as it was then (a burst of execs under
    /// one shell reads the shell's chain once, not once per exec).
    fn ancestor_within(&self, pid: u32, trust: Duration) -> Result<ProcessNode, ProcError> {
        let recent = lock(&self.verified)
            .get(&pid)
            .filter(|(at, _)| at.elapsed() < trust)
            .map(|(_, start)| *start);
        if let Some(start) = recent
            && let Some(node) = lock(&self.cache).get(pid, start)
        {
            return Ok(node);
        }
        self.ancestor(pid)
    }

    /// The lineage of `process` (a node the caller has just read): its ancestors up to the
    /// root, see the module doc.
    pub fn lineage_of(&self, process: ProcessNode) -> Lineage {
        self.walk(process, None)
    }

    /// Like [`LineageReader::lineage_of`] for a process the kernel just reported (eBPF):
    /// ancestors read less than `trust` ago are not read again. A pid reused within
    /// `trust` could then be named by the process it had before, so keep it short.
    pub fn lineage_of_recent(&self, process: ProcessNode, trust: Duration) -> Lineage {
        self.walk(process, Some(trust))
    }

    fn walk(&self, mut process: ProcessNode, trust: Option<Duration>) -> Lineage {
        process.cmdline = cut(process.cmdline, MAX_NODE_CMDLINE_BYTES);
        lock(&self.cache).put(&process);
        let mut ancestors: Vec<ProcessNode> = Vec::new();
        let rooted = if is_init(process.ppid) {
            true
        } else {
            let mut child = (process.ppid, process.start_time_ms);
            loop {
                if ancestors.len() >= MAX_ANCESTORS {
                    break false;
                }
                let parent = match trust {
                    Some(trust) => self.ancestor_within(child.0, trust),
                    None => self.ancestor(child.0),
                };
                let Ok(parent) = parent else {
                    break false;
                };
                // A parent younger than its child is a newcomer on a reused pid.
                if parent.start_time_ms > child.1 {
                    break false;
                }
                let root = is_init(parent.ppid) || is_root_exe(&parent.exe);
                child = (parent.ppid, parent.start_time_ms);
                ancestors.push(parent);
                if root {
                    break true;
                }
            }
        };
        Lineage {
            process,
            ancestors,
            rooted,
        }
    }

    /// The lineage of the live process `pid`, read now.
    pub fn lineage(&self, pid: u32) -> Option<Lineage> {
        self.read_node(pid).ok().map(|n| self.lineage_of(n))
    }

    /// The lineage of the process `pid` that a log record (audit) saw at `seen_at_ms`
    /// running `exe`, if that process still lives: the pid must be held by a process that
    /// started by then (with a second of slack for clock adjustments) and runs that exe.
    pub fn lineage_if_same(&self, pid: u32, seen_at_ms: u64, exe: Option<&str>) -> Option<Lineage> {
        if pid == 0 {
            return None;
        }
        let node = self.read_node(pid).ok()?;
        if node.start_time_ms > seen_at_ms.saturating_add(1000) {
            return None;
        }
        if let Some(exe) = exe.filter(|e| !e.is_empty())
            && node.exe != exe
        {
            return None;
        }
        Some(self.lineage_of(node))
    }
}

impl Default for LineageReader {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    /// A fake /proc: each process gets stat, exe (a symlink), cmdline, status, loginuid.
    struct FakeProc {
        dir: tempfile::TempDir,
    }

    const HZ_TICKS_PER_S: u64 = 100;

    impl FakeProc {
        fn new() -> Self {
            let dir = tempfile::tempdir().unwrap();
            fs::create_dir(dir.path().join("proc")).unwrap();
            fs::write(
                dir.path().join("passwd"),
                "root:x:0:0:root:/root:/bin/bash\nalice:x:1000:1000::/home/alice:/bin/sh\ntomcat:x:91:91::/opt:/bin/false\n",
            )
            .unwrap();
            FakeProc { dir }
        }

        fn root(&self) -> PathBuf {
            self.dir.path().join("proc")
        }

        /// Adds a process started `start_ticks` after boot, effective uid `euid`.
        #[allow(clippy::too_many_arguments)]
        fn add(&self, pid: u32, ppid: u32, start_ticks: u64, exe: &str, args: &[&str], euid: u32, loginuid: u32) {
            let d = self.root().join(pid.to_string());
            let _ = fs::remove_dir_all(&d);
            fs::create_dir_all(&d).unwrap();
            let comm = exe.rsplit('/').next().filter(|c| !c.is_empty()).unwrap_or("kthread");
            fs::write(
                d.join("stat"),
                format!("{pid} ({comm}) S {ppid} 1 1 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 {start_ticks} 1000 10 0\n"),
            )
            .unwrap();
            if !exe.is_empty() {
                std::os::unix::fs::symlink(exe, d.join("exe")).unwrap();
            }
            let mut cmd = args.join("\0").into_bytes();
            cmd.push(0);
            fs::write(d.join("cmdline"), cmd).unwrap();
            fs::write(
                d.join("status"),
                format!("Name:\t{comm}\nUid:\t1000\t{euid}\t{euid}\t{euid}\n"),
            )
            .unwrap();
            fs::write(d.join("loginuid"), loginuid.to_string()).unwrap();
        }

        fn remove(&self, pid: u32) {
            fs::remove_dir_all(self.root().join(pid.to_string())).unwrap();
        }

        fn reader(&self) -> LineageReader {
            LineageReader::with_root(&self.root(), &self.dir.path().join("passwd"), 64)
        }
    }

    /// (pid, ancestors' pids, rooted) of the lineage of `pid`.
    fn check(p: &FakeProc, pid: u32, want_ancestors: &[u32], want_rooted: bool) -> Lineage {
        let l = p.reader().lineage(pid).unwrap();
        let got: Vec<u32> = l.ancestors.iter().map(|n| n.pid).collect();
        assert_eq!(
            (l.process.pid, got.as_slice(), l.rooted),
            (pid, want_ancestors, want_rooted)
        );
        l
    }

    const UNSET: u32 = LOGINUID_UNSET;

    #[test]
    fn a_web_shell_is_rooted_at_the_java_server() {
        let p = FakeProc::new();
        p.add(
            4410,
            1,
            100,
            "/usr/lib/jvm/bin/java",
            &["java", "-jar", "tomcat.jar"],
            91,
            UNSET,
        );
        p.add(
            17794,
            4410,
            5000,
            "/usr/bin/bash",
            &["bash", "-c", "bash -i"],
            91,
            UNSET,
        );
        p.add(17795, 17794, 5001, "/usr/bin/bash", &["bash", "-i"], 91, UNSET);
        p.add(17801, 17795, 5100, "/usr/bin/whoami", &["whoami"], 91, UNSET);
        let l = check(&p, 17801, &[17795, 17794, 4410], true);
        assert_eq!(l.process.cmdline, "whoami");
        assert_eq!(l.process.user.as_deref(), Some("tomcat"));
        assert_eq!(l.process.login_user, None, "loginuid 4294967295 means unset");
        let java = l.ancestors.last().unwrap();
        assert_eq!(
            (java.exe.as_str(), java.cmdline.as_str()),
            ("/usr/lib/jvm/bin/java", "java -jar tomcat.jar")
        );
        // Start times are boot time plus ticks, to the millisecond.
        let boot = crate::clock::boot_time_ms();
        assert_eq!(l.process.start_time_ms, boot + 5100 * 1000 / HZ_TICKS_PER_S);
        assert_eq!(java.start_time_ms, boot + 1000);
    }

    #[test]
    fn session_managers_and_container_shims_are_roots() {
        let p = FakeProc::new();
        p.add(
            900,
            1,
            10,
            "/usr/lib/systemd/systemd",
            &["/lib/systemd/systemd", "--user"],
            1000,
            1000,
        );
        p.add(901, 900, 20, "/usr/bin/gnome-terminal", &["gnome-terminal"], 1000, 1000);
        p.add(902, 901, 30, "/usr/bin/bash", &["bash"], 1000, 1000);
        let l = check(&p, 902, &[901, 900], true);
        assert_eq!(l.process.login_user.as_deref(), Some("alice"));
        assert_eq!(l.process.user.as_deref(), Some("alice"));

        p.add(
            700,
            650,
            10,
            "/usr/bin/containerd-shim-runc-v2",
            &["containerd-shim-runc-v2"],
            0,
            UNSET,
        );
        p.add(650, 1, 5, "/usr/bin/containerd", &["containerd"], 0, UNSET);
        p.add(701, 700, 11, "/usr/sbin/nginx", &["nginx"], 0, UNSET);
        p.add(702, 701, 12, "/bin/sh", &["sh", "-c", "id"], 33, UNSET);
        let l = check(&p, 702, &[701, 700], true);
        assert_eq!(
            l.process.user.as_deref(),
            Some("33"),
            "a uid without a name is its number"
        );
        p.add(800, 799, 10, "/usr/bin/conmon", &["conmon"], 0, UNSET);
        p.add(801, 800, 11, "/bin/sh", &["sh"], 0, UNSET);
        check(&p, 801, &[800], true);
    }

    #[test]
    fn a_child_of_init_has_no_ancestors_and_is_rooted() {
        let p = FakeProc::new();
        p.add(300, 1, 10, "/usr/sbin/sshd", &["sshd", "-D"], 0, UNSET);
        check(&p, 300, &[], true);
        p.add(2, 0, 0, "", &[], 0, UNSET);
        p.add(40, 2, 1, "", &[], 0, UNSET);
        check(&p, 40, &[2], true);
    }

    #[test]
    fn the_walk_is_cut_at_eight_ancestors() {
        let p = FakeProc::new();
        // 100 <- 101 <- ... <- 112, and 100 is a child of init: 12 levels above 112.
        p.add(100, 1, 1, "/usr/bin/bash", &["bash"], 0, UNSET);
        for pid in 101..=112 {
            p.add(pid, pid - 1, u64::from(pid), "/usr/bin/bash", &["bash"], 0, UNSET);
        }
        check(&p, 112, &[111, 110, 109, 108, 107, 106, 105, 104], false);
        // Exactly eight up to the root: rooted.
        check(&p, 108, &[107, 106, 105, 104, 103, 102, 101, 100], true);
    }

    #[test]
    fn an_exited_or_replaced_parent_cuts_the_walk() {
        let p = FakeProc::new();
        p.add(500, 1, 10, "/usr/sbin/cron", &["cron"], 0, UNSET);
        p.add(501, 500, 20, "/usr/sbin/cron", &["CRON"], 0, UNSET);
        p.add(502, 501, 30, "/bin/sh", &["sh", "-c", "job"], 0, UNSET);
        p.add(503, 502, 40, "/usr/bin/job", &["job"], 0, UNSET);
        check(&p, 503, &[502, 501, 500], true);
        p.remove(501);
        check(&p, 503, &[502], false);
        // The pid comes back as a younger process: not the parent.
        p.add(501, 1, 35, "/usr/bin/other", &["other"], 0, UNSET);
        check(&p, 503, &[502], false);
    }

    #[test]
    fn cached_ancestors_are_not_read_again_but_an_exec_refreshes_them() {
        let p = FakeProc::new();
        p.add(600, 1, 10, "/usr/sbin/sshd", &["sshd"], 0, UNSET);
        p.add(601, 600, 20, "/usr/bin/bash", &["-bash"], 1000, 1000);
        p.add(602, 601, 30, "/usr/bin/ls", &["ls"], 1000, 1000);
        let r = p.reader();
        let first = r.lineage(602).unwrap();
        assert_eq!(first.ancestors[0].cmdline, "-bash");
        // Same pid and start time: the cached node is used (the cmdline change is not read).
        fs::write(p.root().join("601/cmdline"), b"changed\0").unwrap();
        p.add(603, 601, 40, "/usr/bin/id", &["id"], 1000, 1000);
        assert_eq!(r.lineage(603).unwrap().ancestors[0].cmdline, "-bash");
        // 601 calls exec: when it is read as an alerted process, its children see the new program.
        r.lineage(601).unwrap();
        assert_eq!(r.lineage(603).unwrap().ancestors[0].cmdline, "changed");
        // Reparented: the cached node takes the parent it has now.
        p.add(601, 1, 20, "/usr/bin/bash", &["changed"], 1000, 1000);
        let l = r.lineage(603).unwrap();
        assert_eq!((l.ancestors.len(), l.ancestors[0].ppid, l.rooted), (1, 1, true));
    }

    #[test]
    fn recently_read_ancestors_are_trusted_only_within_the_window() {
        let p = FakeProc::new();
        p.add(500, 1, 10, "/usr/sbin/cron", &["cron"], 0, UNSET);
        p.add(501, 500, 20, "/bin/sh", &["sh"], 0, UNSET);
        p.add(502, 501, 30, "/usr/bin/job", &["job"], 0, UNSET);
        let r = p.reader();
        let node = |pid| r.read_node(pid).unwrap();
        let long = Duration::from_secs(60);
        let ids = |l: Lineage| l.ancestors.iter().map(|n| n.pid).collect::<Vec<u32>>();
        assert_eq!(ids(r.lineage_of_recent(node(502), long)), vec![501, 500]);
        let job = node(502);
        p.remove(500);
        // Read a moment ago: not read again, so the exit is not seen yet...
        assert_eq!(ids(r.lineage_of_recent(job.clone(), long)), vec![501, 500]);
        // ...but it is once the window has passed, and always by the plain walk.
        assert_eq!(ids(r.lineage_of_recent(job.clone(), Duration::ZERO)), vec![501]);
        assert_eq!(ids(r.lineage_of(job)), vec![501]);
    }

    #[test]
    fn long_command_lines_are_cut_on_a_character_boundary() {
        let p = FakeProc::new();
        let long = "é".repeat(MAX_NODE_CMDLINE_BYTES);
        p.add(10, 1, 1, "/bin/sh", &["sh", &long], 0, UNSET);
        p.add(11, 10, 2, "/bin/sh", &["sh", &long], 0, UNSET);
        let l = check(&p, 11, &[10], true);
        for n in [&l.process, &l.ancestors[0]] {
            assert!(n.cmdline.len() <= MAX_NODE_CMDLINE_BYTES && n.cmdline.len() > MAX_NODE_CMDLINE_BYTES - 4);
            assert!(n.cmdline.starts_with("sh éé"));
        }
        assert_eq!(cut("abc".into(), 2), "ab");
        assert_eq!(cut("é".into(), 1), "");
    }

    #[test]
    fn the_cache_is_bounded() {
        let p = FakeProc::new();
        let r = LineageReader::with_root(&p.root(), &p.dir.path().join("passwd"), 4);
        for pid in 10..30 {
            p.add(pid, 1, u64::from(pid), "/bin/true", &["true"], 0, UNSET);
            r.lineage(pid).unwrap();
        }
        let cache = lock(&r.cache);
        assert_eq!((cache.nodes.len(), cache.order.len()), (4, 4));
    }

    #[test]
    fn audit_records_match_only_the_same_live_process() {
        let p = FakeProc::new();
        p.add(700, 1, 10, "/usr/sbin/sshd", &["sshd"], 0, UNSET);
        p.add(701, 700, 500, "/usr/bin/cat", &["cat", "/etc/shadow"], 0, 1000);
        let r = p.reader();
        let start = crate::clock::boot_time_ms() + 5000;
        assert!(r.lineage_if_same(701, start + 3, Some("/usr/bin/cat")).is_some());
        assert!(r.lineage_if_same(701, start + 3, None).is_some());
        assert!(
            r.lineage_if_same(701, start + 3, Some("/usr/bin/vim")).is_none(),
            "another program"
        );
        assert!(
            r.lineage_if_same(701, start - 60_000, Some("/usr/bin/cat")).is_none(),
            "started later"
        );
        assert!(r.lineage_if_same(799, start, None).is_none(), "gone");
        assert!(r.lineage_if_same(0, start, None).is_none());
    }

    /// A real chain: sh -c 'sh -c "sleep 5; true"': the innermost shell's lineage has the
    /// outer shell, then this test process, with their real command lines and start times.
    #[test]
    fn lineage_of_a_real_process_chain() {
        let mut outer = std::process::Command::new("/bin/sh")
            .args(["-c", "sh -c 'sleep 5; true'; true"])
            .spawn()
            .unwrap();
        let outer_pid = outer.id();
        let children = |pid: u32| -> Vec<u32> {
            fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
                .unwrap_or_default()
                .split_whitespace()
                .filter_map(|c| c.parse().ok())
                .collect()
        };
        let deadline = Instant::now() + Duration::from_secs(5);
        let inner = loop {
            let found = children(outer_pid).into_iter().find(|c| !children(*c).is_empty());
            if let Some(c) = found {
                break c;
            }
            assert!(Instant::now() < deadline, "the inner shell did not start");
            std::thread::sleep(Duration::from_millis(10));
        };
        let r = LineageReader::new();
        let l = r.lineage(inner).unwrap();
        let _ = outer.kill();
        let _ = outer.wait();
        assert_eq!(l.process.cmdline, "sh -c sleep 5; true");
        assert_eq!(l.process.ppid, outer_pid);
        let parent = &l.ancestors[0];
        assert_eq!(parent.pid, outer_pid);
        assert_eq!(parent.cmdline, "/bin/sh -c sh -c 'sleep 5; true'; true");
        assert!(parent.exe.ends_with("sh") || parent.exe.ends_with("dash") || parent.exe.ends_with("bash"));
        let me = &l.ancestors[1];
        assert_eq!(me.pid, std::process::id());
        assert_eq!(
            me.start_time_ms,
            read_stat(Path::new("/proc"), me.pid).unwrap().start_time_ms
        );
        assert!(parent.start_time_ms >= me.start_time_ms && l.process.start_time_ms >= parent.start_time_ms);
        let now = crate::clock::now_ms();
        assert!(
            now.abs_diff(l.process.start_time_ms) < 10_000,
            "{} vs now {now}",
            l.process.start_time_ms
        );
        let euid = read_uids(Path::new("/proc"), inner).unwrap().1;
        assert_eq!(l.process.user, Some(r.user_name(euid)));
        assert!(l.ancestors.len() <= MAX_ANCESTORS);
        if l.rooted {
            let top = l.ancestors.last().unwrap();
            assert!(is_init(top.ppid) || is_root_exe(&top.exe), "{top:?}");
        }
    }
}
