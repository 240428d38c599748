//! Where a process runs and for whom: its controlling terminal, audit login and
//! session, cgroup (and the container it names), mount and pid namespaces, and whether
//! those are the host's. The eBPF exec source gets the numbers from the kernel at exec;
//! this module turns them into names (a tty device into `pts/3`, a cgroup id into its
//! path) and reads the same fields from /proc for the fallback sources, so both give
//! the same values.
//!
//! Nothing read here is trusted: every /proc file may be missing, malformed or belong
//! to a newer process on a reused pid by the time it is read. Cgroup paths by id are
//! cached (bounded); a cgroup the cache does not know is looked up by walking the
//! cgroup v2 tree at most once every [`WALK_EVERY`], over at most [`WALK_MAX_DIRS`]
//! directories. Must not write anything under /proc or /sys.

use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ward_detect::event::ProcessContext;

use crate::procfs::proc_path;

/// Cgroup paths remembered by id.
const CACHE_MAX: usize = 4096;
/// The least time between two walks of the cgroup tree for an unknown id.
pub const WALK_EVERY: Duration = Duration::from_secs(10);
/// Directories visited per walk at most.
pub const WALK_MAX_DIRS: usize = 20_000;
/// How deep a walk goes below the cgroup root.
const WALK_MAX_DEPTH: usize = 12;
/// Longest cgroup path kept, bytes.
const MAX_CGROUP_BYTES: usize = 4096;
/// The value of an unset audit login uid or session id (-1 as unsigned).
const AUDIT_UNSET: u32 = u32::MAX;

/// A tty's name from its device number, as `ps` names it: `pts/N` for pseudo
/// terminals (majors 136–143), `ttyN` and `ttySN` for consoles and serial lines
/// (major 4); `None` for other devices (the caller names them another way).
pub fn tty_from_dev(major: u32, minor: u32) -> Option<String> {
    match major {
        136..=143 => Some(format!("pts/{}", (major - 136) * 256 + minor)),
        4 if minor < 64 => Some(format!("tty{minor}")),
        4 if minor < 256 => Some(format!("ttyS{}", minor - 64)),
        5 if minor == 0 => Some("tty".to_string()),
        5 if minor == 1 => Some("console".to_string()),
        _ => None,
    }
}

/// The tty of an exec record: its device's name when known, else the kernel's own
/// name for it (`ttyUSB0`); empty when the process has no controlling terminal.
pub fn tty_name(major: u32, minor: u32, kernel_name: &str) -> String {
    if major == 0 && kernel_name.is_empty() {
        return String::new();
    }
    tty_from_dev(major, minor).unwrap_or_else(|| kernel_name.to_string())
}

/// (major, minor) of the `tty_nr` field of /proc/PID/stat (the kernel's
/// `new_encode_dev`: minor bits 0–7 and 20–31, major bits 8–19); None for 0 (no tty).
pub fn decode_tty_nr(tty_nr: u32) -> Option<(u32, u32)> {
    if tty_nr == 0 {
        return None;
    }
    let major = (tty_nr >> 8) & 0xfff;
    let minor = (tty_nr & 0xff) | ((tty_nr >> 12) & 0xfff00);
    Some((major, minor))
}

/// The `tty_nr` field (field 7) of /proc/PID/stat content.
pub fn parse_stat_tty_nr(content: &str) -> Option<u32> {
    // The command name (field 2) is in parentheses and may itself contain ") ".
    let after = content.get(content.rfind(')')? + 1..)?;
    // after[0] is field 3 (state); tty_nr is field 7. It is signed in the kernel's
    // output; a negative value is malformed here.
    after.split_whitespace().nth(4)?.parse().ok()
}

/// The namespace inode number of a `/proc/PID/ns/*` link's target (`mnt:[4026531841]`).
pub fn parse_ns_link(target: &str) -> Option<u32> {
    let inner = target.split_once(":[")?.1.strip_suffix(']')?;
    inner.parse().ok()
}

/// An audit id from /proc/PID/loginuid or sessionid: None when unset or malformed.
pub fn parse_audit_id(text: &str) -> Option<u32> {
    text.trim().parse::<u32>().ok().filter(|v| *v != AUDIT_UNSET)
}

/// The cgroup path of /proc/PID/cgroup content, and whether it is the v2 (unified)
/// one: the v2 path unless it is the root while a v1 hierarchy names a deeper one (a
/// hybrid host running containers under v1), else the first v1 path below the root.
/// `None` for content with no valid line.
pub fn parse_cgroup(content: &str) -> Option<(String, bool)> {
    let mut unified: Option<&str> = None;
    let mut v1: Option<&str> = None;
    let mut any = false;
    for line in content.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(id), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        if id.parse::<u32>().is_err() || !path.starts_with('/') {
            continue;
        }
        any = true;
        if id == "0" && controllers.is_empty() {
            unified = Some(path);
        } else if path != "/" && (v1.is_none() || controllers == "name=systemd") {
            // Any controller's path names the container; systemd's when several differ.
            v1 = Some(path);
        }
    }
    if !any {
        return None;
    }
    let (path, is_v2) = match (unified, v1) {
        (Some(u), _) if u != "/" => (u, true),
        (_, Some(p)) => (p, false),
        (Some(u), None) => (u, true),
        (None, None) => ("/", false),
    };
    Some((clip(path, MAX_CGROUP_BYTES), is_v2))
}

fn clip(s: &str, max: usize) -> String {
    let mut at = s.len().min(max);
    while !s.is_char_boundary(at) {
        at -= 1;
    }
    s.get(..at).unwrap_or_default().to_string()
}

fn is_hex_id(s: &str) -> bool {
    (12..=64).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The container id a cgroup path names, from its deepest component that names one:
/// `docker-<id>.scope`, `/docker/<id>`, `cri-containerd-<id>.scope`,
/// `crio-<id>.scope` (and `crio-conmon-`), `libpod-<id>.scope` (podman),
/// `/kubepods/.../<id>` (cgroupfs driver), `/lxc.payload.<name>` and `/lxc/<name>`.
/// Ids are 12 to 64 hexadecimal characters (LXC: the container's name); anything else
/// is not a container id.
pub fn container_id(cgroup: &str) -> Option<String> {
    let parts: Vec<&str> = cgroup.split('/').filter(|p| !p.is_empty()).collect();
    for (i, part) in parts.iter().enumerate().rev() {
        let stem = part.strip_suffix(".scope").unwrap_or(part);
        for prefix in [
            "docker-",
            "cri-containerd-",
            "crio-conmon-",
            "crio-",
            "libpod-conmon-",
            "libpod-",
        ] {
            if let Some(id) = stem.strip_prefix(prefix)
                && is_hex_id(id)
            {
                return Some(id.to_ascii_lowercase());
            }
        }
        let parent = i.checked_sub(1).and_then(|p| parts.get(p)).copied().unwrap_or("");
        // cgroupfs drivers: the id is the component itself, under a runtime's folder.
        let under_runtime = matches!(parent, "docker" | "libpod_parent" | "crio" | "containerd")
            || parts.first().is_some_and(|p| p.starts_with("kubepods"));
        if under_runtime && is_hex_id(stem) {
            return Some(stem.to_ascii_lowercase());
        }
        if let Some(name) = part.strip_prefix("lxc.payload.").filter(|n| !n.is_empty()) {
            return Some(clip(name, 64));
        }
        if parent == "lxc" && i == 1 {
            return Some(clip(part, 64));
        }
    }
    None
}

/// Reads one process's context from /proc (the fallback sources). `host` is pid 1's
/// namespaces ([`host_namespaces`]); `user_name` names the login uid.
pub fn read_context(
    proc_root: &Path,
    pid: u32,
    host: Option<(u32, u32)>,
    user_name: &dyn Fn(u32) -> String,
) -> ProcessContext {
    let tty = fs::read_to_string(proc_path(proc_root, pid, "stat"))
        .ok()
        .and_then(|s| parse_stat_tty_nr(&s))
        .and_then(decode_tty_nr)
        .map(|(major, minor)| tty_from_dev(major, minor).unwrap_or_else(|| sys_char_name(major, minor)))
        .unwrap_or_default();
    let audit = |file: &str| {
        fs::read_to_string(proc_path(proc_root, pid, file))
            .ok()
            .and_then(|t| parse_audit_id(&t))
    };
    let login_uid = audit("loginuid");
    let (cgroup, _) = read_cgroup(proc_root, pid).unwrap_or_default();
    let (mnt_ns, pid_ns) = read_namespaces(proc_root, pid);
    ProcessContext {
        tty,
        session_id: audit("sessionid"),
        login_uid,
        login_user: login_uid.map(user_name),
        container_id: container_id(&cgroup),
        cgroup,
        mnt_ns,
        pid_ns,
        host_namespaces: same_namespaces(mnt_ns, pid_ns, host),
    }
}

/// The name of a character device by number, from /sys (`ttyUSB0`), else `M:m`.
fn sys_char_name(major: u32, minor: u32) -> String {
    fs::read_link(format!("/sys/dev/char/{major}:{minor}"))
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| format!("{major}:{minor}"))
}

/// /proc/PID/cgroup's path (see [`parse_cgroup`]).
pub fn read_cgroup(proc_root: &Path, pid: u32) -> Option<(String, bool)> {
    let text = fs::read_to_string(proc_path(proc_root, pid, "cgroup")).ok()?;
    parse_cgroup(&text)
}

/// The mount and pid namespace inode numbers of a process.
pub fn read_namespaces(proc_root: &Path, pid: u32) -> (Option<u32>, Option<u32>) {
    let ns = |name: &str| {
        fs::read_link(proc_path(proc_root, pid, &format!("ns/{name}")))
            .ok()
            .and_then(|t| parse_ns_link(&t.to_string_lossy()))
    };
    (ns("mnt"), ns("pid"))
}

/// The host's mount and pid namespaces: pid 1's, else (pid 1 unreadable: a
/// restricted /proc, an init that is not dumpable) the agent's own, which are the
/// host's for an agent installed on it; None when neither can be read.
pub fn host_namespaces(proc_root: &Path) -> Option<(u32, u32)> {
    let ns = |who: &str, name: &str| {
        fs::read_link(proc_root.join(who).join("ns").join(name))
            .ok()
            .and_then(|t| parse_ns_link(&t.to_string_lossy()))
    };
    ["1", "self"]
        .iter()
        .find_map(|who| Some((ns(who, "mnt")?, ns(who, "pid")?)))
}

/// Whether a process's namespaces are the host's; None when either side is unknown.
pub fn same_namespaces(mnt_ns: Option<u32>, pid_ns: Option<u32>, host: Option<(u32, u32)>) -> Option<bool> {
    let (hm, hp) = host?;
    Some(mnt_ns? == hm && pid_ns? == hp)
}

/// Cgroup v2 paths by cgroup id (the id the kernel gives is the cgroup directory's
/// inode number on the cgroup2 file system), learnt from /proc/PID/cgroup as processes
/// are read and, for an id not seen yet whose process is gone, by a bounded walk.
#[derive(Debug)]
pub struct CgroupPaths {
    /// The cgroup2 mount point (None: no v2 hierarchy mounted, or not found).
    root: Option<PathBuf>,
    inner: Mutex<CgroupCache>,
}

#[derive(Debug, Default)]
struct CgroupCache {
    by_id: HashMap<u64, String>,
    walked_at: Option<Instant>,
}

/// The cgroup2 mount point in /proc/self/mountinfo content.
pub fn cgroup2_mount(mountinfo: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|line| {
        // ... mount-point ... - fstype source options
        let (left, right) = line.split_once(" - ")?;
        if right.split_whitespace().next()? != "cgroup2" {
            return None;
        }
        Some(PathBuf::from(left.split_whitespace().nth(4)?.replace("\\040", " ")))
    })
}

impl CgroupPaths {
    /// Paths under the cgroup2 mount point `root` (None: no walk, the cache only).
    pub fn new(root: Option<PathBuf>) -> Self {
        CgroupPaths {
            root,
            inner: Mutex::new(CgroupCache::default()),
        }
    }

    /// Paths under the system's cgroup2 mount, found in /proc/self/mountinfo.
    pub fn system() -> Self {
        let root = fs::read_to_string("/proc/self/mountinfo")
            .ok()
            .and_then(|m| cgroup2_mount(&m));
        Self::new(root)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, CgroupCache> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The path of cgroup `id` for the process `pid` the kernel reported in it: the
    /// cache, else /proc/PID/cgroup while the process lives (remembered when it is the
    /// v2 path of a cgroup below the root: only then does the id name it), else a walk
    /// of the cgroup tree. Empty when none of them knows it.
    pub fn path_of(&self, id: u64, proc_root: &Path, pid: u32) -> String {
        if id != 0
            && let Some(p) = self.lock().by_id.get(&id)
        {
            return p.clone();
        }
        if let Some((path, is_v2)) = read_cgroup(proc_root, pid) {
            if is_v2 && path != "/" && id != 0 {
                self.remember(id, &path);
            }
            return path;
        }
        if id == 0 {
            return String::new();
        }
        self.walk();
        self.lock().by_id.get(&id).cloned().unwrap_or_default()
    }

    fn remember(&self, id: u64, path: &str) {
        let mut c = self.lock();
        if c.by_id.len() >= CACHE_MAX {
            c.by_id.clear();
        }
        c.by_id.insert(id, path.to_string());
    }

    /// Walks the cgroup tree (breadth first, bounded) and remembers every directory's
    /// id; at most once every [`WALK_EVERY`].
    fn walk(&self) {
        let Some(root) = &self.root else {
            return;
        };
        {
            let mut c = self.lock();
            if c.walked_at.is_some_and(|t| t.elapsed() < WALK_EVERY) {
                return;
            }
            c.walked_at = Some(Instant::now());
        }
        let mut found: Vec<(u64, String)> = Vec::new();
        let mut queue: std::collections::VecDeque<(PathBuf, String, usize)> =
            std::collections::VecDeque::from([(root.clone(), String::new(), 0)]);
        let mut visited = 0usize;
        while let Some((dir, rel, depth)) = queue.pop_front() {
            visited += 1;
            if visited > WALK_MAX_DIRS {
                break;
            }
            let Ok(entries) = fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.filter_map(Result::ok) {
                let Ok(meta) = entry.metadata() else {
                    continue;
                };
                if !meta.is_dir() {
                    continue;
                }
                let name = entry.file_name().to_string_lossy().into_owned();
                let path = format!("{rel}/{name}");
                found.push((meta.ino(), path.clone()));
                if depth + 1 < WALK_MAX_DEPTH {
                    queue.push_back((entry.path(), path, depth + 1));
                }
            }
        }
        let mut c = self.lock();
        for (id, path) in found {
            if c.by_id.len() >= CACHE_MAX {
                break;
            }
            c.by_id.insert(id, path);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn ttys_by_device_number_and_kernel_name() {
        let cases: &[(u32, u32, &str, &str)] = &[
            (136, 3, "pts3", "pts/3"),
            (137, 2, "pts258", "pts/258"),
            (4, 1, "tty1", "tty1"),
            (4, 64, "ttyS0", "ttyS0"),
            (188, 0, "ttyUSB0", "ttyUSB0"),
            (0, 0, "", ""),
        ];
        for (major, minor, kernel, want) in cases {
            assert_eq!(tty_name(*major, *minor, kernel), *want, "{major}:{minor}");
        }
        // /proc/PID/stat's encoding: pts/3 is 34819; pts/300 spills into the high bits.
        assert_eq!(decode_tty_nr(34819), Some((136, 3)));
        let enc = |major: u32, minor: u32| (minor & 0xff) | (major << 8) | ((minor & !0xff) << 12);
        assert_eq!(decode_tty_nr(enc(136, 300)), Some((136, 300)));
        assert_eq!(decode_tty_nr(0), None);
    }

    #[test]
    fn stat_tty_and_namespace_links_and_audit_ids() {
        let stat = "4242 (a) b) c) S 1 4242 4242 34819 4242 4194560 0 0 0 0 0 0 0 0 20 0 1 0 100 0 0\n";
        assert_eq!(parse_stat_tty_nr(stat), Some(34819));
        assert_eq!(
            parse_stat_tty_nr("4242 (x) S 1 2 3 -1 5"),
            None,
            "negative is malformed"
        );
        assert_eq!(parse_stat_tty_nr("garbage"), None);
        assert_eq!(parse_ns_link("mnt:[4026531841]"), Some(4_026_531_841));
        assert_eq!(parse_ns_link("pid:[x]"), None);
        assert_eq!(parse_ns_link("4026531841"), None);
        assert_eq!(parse_audit_id("1000\n"), Some(1000));
        assert_eq!(parse_audit_id("4294967295"), None, "unset");
        assert_eq!(parse_audit_id("-1"), None);
        assert_eq!(parse_audit_id(""), None);
    }

    #[test]
    fn container_ids_from_several_runtimes_cgroups() {
        let id = "4f1c0de2a9b8e7d6c5b4a3928170f6e5d4c3b2a1908f7e6d5c4b3a2918071625";
        let cases: Vec<(String, Option<&str>)> = vec![
            (format!("/system.slice/docker-{id}.scope"), Some(id)),
            (format!("/docker/{id}"), Some(id)),
            (
                format!(
                    "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1a2b.slice/cri-containerd-{id}.scope"
                ),
                Some(id),
            ),
            (
                format!("/kubepods.slice/kubepods-pod1a2b.slice/crio-{id}.scope"),
                Some(id),
            ),
            (format!("/machine.slice/libpod-{id}.scope/container"), Some(id)),
            (
                format!("/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{id}.scope"),
                Some(id),
            ),
            (format!("/kubepods/besteffort/pod1a2b-3c4d/{id}"), Some(id)),
            ("/lxc.payload.web1".into(), Some("web1")),
            ("/lxc/web1".into(), Some("web1")),
            // Not container ids.
            ("/user.slice/user-1000.slice/session-3.scope".into(), None),
            ("/system.slice/docker.service".into(), None),
            ("/system.slice/docker-xyz.scope".into(), None),
            (format!("/system.slice/docker-{id}ff.scope"), None),
            ("/docker/".into(), None),
            ("/".into(), None),
            ("".into(), None),
            ("garbage without slashes".into(), None),
        ];
        for (cgroup, want) in cases {
            assert_eq!(container_id(&cgroup).as_deref(), want, "{cgroup}");
        }
        // Upper-case hex is the same id.
        assert_eq!(
            container_id(&format!("/docker/{}", id.to_ascii_uppercase())).as_deref(),
            Some(id)
        );
    }

    #[test]
    fn cgroup_files_v2_v1_hybrid_and_malformed() {
        assert_eq!(
            parse_cgroup("0::/system.slice/sshd.service\n"),
            Some(("/system.slice/sshd.service".into(), true))
        );
        // Hybrid: v2 at the root, a v1 controller names the container.
        let hybrid = "12:memory:/docker/abc\n1:name=systemd:/docker/abc\n0::/\n";
        assert_eq!(parse_cgroup(hybrid), Some(("/docker/abc".into(), false)));
        assert_eq!(
            parse_cgroup("4:memory:/process_api/2423ff\n0::/\n"),
            Some(("/process_api/2423ff".into(), false))
        );
        assert_eq!(parse_cgroup("3:cpu:/\n0::/\n"), Some(("/".into(), true)));
        assert_eq!(parse_cgroup("5:cpu:/a\n"), Some(("/a".into(), false)));
        assert_eq!(parse_cgroup(""), None);
        assert_eq!(parse_cgroup("nonsense\nx:y:z\n0::relative\n"), None);
        let long = format!("0::/{}\n", "a".repeat(10_000));
        assert_eq!(parse_cgroup(&long).unwrap().0.len(), MAX_CGROUP_BYTES);
    }

    #[test]
    fn the_cgroup2_mount_from_mountinfo() {
        let info = "25 30 0:22 / /sys rw,nosuid - sysfs sysfs rw\n\
                    33 25 0:28 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw,nsdelegate\n";
        assert_eq!(cgroup2_mount(info), Some(PathBuf::from("/sys/fs/cgroup/unified")));
        assert_eq!(cgroup2_mount("25 30 0:22 / /sys rw - sysfs sysfs rw\n"), None);
        assert_eq!(cgroup2_mount("short line\n"), None);
    }

    /// A fake /proc and cgroup tree: the process's own file names its cgroup; once it
    /// is gone, the walk finds the id (the directory's inode) in the tree.
    #[test]
    fn cgroup_paths_from_proc_then_cache_then_walk() {
        let dir = tempfile::tempdir().unwrap();
        let proc_root = dir.path().join("proc");
        let cg = dir.path().join("cgroup");
        let svc = cg.join("system.slice/docker-ab12ab12ab12.scope");
        fs::create_dir_all(&svc).unwrap();
        fs::create_dir_all(proc_root.join("7")).unwrap();
        let id = fs::metadata(&svc).unwrap().ino();
        fs::write(
            proc_root.join("7/cgroup"),
            "0::/system.slice/docker-ab12ab12ab12.scope\n",
        )
        .unwrap();
        let paths = CgroupPaths::new(Some(cg.clone()));
        assert_eq!(
            paths.path_of(id, &proc_root, 7),
            "/system.slice/docker-ab12ab12ab12.scope"
        );
        // Now cached: another pid (gone) in that cgroup.
        assert_eq!(
            paths.path_of(id, &proc_root, 8),
            "/system.slice/docker-ab12ab12ab12.scope"
        );
        // Unknown id, process gone: the walk finds it.
        let other = cg.join("user.slice/session-4.scope");
        fs::create_dir_all(&other).unwrap();
        let other_id = fs::metadata(&other).unwrap().ino();
        assert_eq!(paths.path_of(other_id, &proc_root, 9), "/user.slice/session-4.scope");
        // An id nowhere: empty, and no second walk within WALK_EVERY.
        assert_eq!(paths.path_of(u64::MAX, &proc_root, 9), "");
        // The root cgroup read from /proc is not cached by id (on a hybrid host every
        // process has the v2 root's id whatever its v1 cgroup).
        fs::write(proc_root.join("7/cgroup"), "4:memory:/docker/ab12ab12ab12\n0::/\n").unwrap();
        assert_eq!(paths.path_of(1, &proc_root, 7), "/docker/ab12ab12ab12");
        fs::remove_file(proc_root.join("7/cgroup")).unwrap();
        assert_eq!(paths.path_of(1, &proc_root, 7), "");
    }

    #[test]
    fn reads_a_live_process_context_from_proc() {
        let me = std::process::id();
        let host = host_namespaces(Path::new("/proc"));
        let c = read_context(Path::new("/proc"), me, host, &|u| format!("u{u}"));
        let (mnt, pid) = read_namespaces(Path::new("/proc"), me);
        assert!(mnt.is_some() && pid.is_some(), "{c:?}");
        assert_eq!((c.mnt_ns, c.pid_ns), (mnt, pid));
        let own = fs::read_to_string("/proc/self/cgroup").unwrap();
        assert_eq!(Some(c.cgroup.clone()), parse_cgroup(&own).map(|p| p.0));
        if let Some(uid) = c.login_uid {
            assert_eq!(c.login_user, Some(format!("u{uid}")));
        }
        assert!(host.is_some(), "pid 1's namespaces or the agent's own");
        assert_eq!(
            c.host_namespaces,
            Some(true),
            "this test runs in the host's (or its own) namespaces"
        );
    }
}
