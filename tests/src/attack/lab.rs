//! The lab the atomics run in, so nothing on the host changes: one private mount
//! namespace (held by a `sleep` process) where the host's `/etc`, `/root`, `/home`,
//! `/tmp`, `/var/*`, `/usr`, `/opt` and `/dev/shm` are overlays whose upper layers
//! live on a tmpfs of that namespace. The agent runs in the lab's mount namespace
//! (so its file sensor watches the overlays the tests write) but in the host's
//! network namespace (it reaches the collector); each test runs in the lab's mounts
//! plus network (loopback only), mount, UTS and IPC namespaces of its own. eBPF sees
//! every namespace. Root only.
//!
//! What cannot be made safe by namespaces (the kernel's audit rules, sysctls,
//! modules, the host's systemd over its socket) is refused by
//! [`super::unsafe_reason`] and replayed instead.

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// Host paths the lab overlays.
pub const OVERLAID: &[&str] = &[
    "/etc",
    "/root",
    "/home",
    "/tmp",
    "/var/tmp",
    "/var/spool",
    "/var/mail",
    "/var/log",
    "/var/lib",
    "/usr",
    "/opt",
    "/srv",
    "/dev/shm",
];

/// Mounts the overlays, says `ready`, then holds the namespace. `$1` is the lab dir.
const HOLDER: &str = r#"
set -e
B="$1/layers"
mkdir -p "$B"
mount -t tmpfs -o mode=0700,size=2g ward-lab "$B"
for p in $WARD_OVERLAID; do
  [ -d "$p" ] && [ ! -L "$p" ] || continue
  n=$(echo "$p" | tr / _)
  mkdir -p "$B/$n/upper" "$B/$n/work"
  mount -t overlay overlay -o "lowerdir=$p,upperdir=$B/$n/upper,workdir=$B/$n/work" "$p"
done
echo ready
exec sleep 2147483647
"#;

/// Runs one test: loopback up, then a shell of its own (the test's top process)
/// prints its pid and becomes `$1 $2` (executor, script) with output to `$3`.
const LAUNCH: &str = r#"
ip link set lo up || exit 97
cd /root || exit 98
sh -c 'echo "WARD_TOP $$"; exec "$0" "$1" >"$2" 2>&1 </dev/null' "$1" "$2" "$3"
echo "WARD_EXIT $?"
"#;

/// A stand-in for sudo (not installed on the bench machine; the bench is root).
const SUDO_SHIM: &str = r#"#!/bin/sh
# ward-attackbench: stands in for sudo, which is not installed; the tests run as root.
while [ $# -gt 0 ]; do
  case "$1" in
    -u|-g|-C|-h|-p) shift 2 ;;
    -l) echo "(ALL : ALL) ALL"; exit 0 ;;
    --) shift; break ;;
    -*) shift ;;
    *) break ;;
  esac
done
[ $# -eq 0 ] && exit 0
exec "$@"
"#;

/// The held lab namespace.
pub struct Lab {
    holder: Child,
    pub pid: u32,
    /// Host directory for scripts, outputs and the shim (not overlaid).
    pub dir: PathBuf,
}

/// What one launch did.
#[derive(Debug, Clone)]
pub struct Launch {
    pub top_pid: u32,
    pub top_start_ms: u64,
    pub started_ms: u64,
    pub ended_ms: u64,
    /// The command's exit status; `None` when it was killed at the timeout.
    pub exit: Option<i32>,
    pub output: String,
}

impl Lab {
    /// Starts the lab in `dir` (on the host, outside every overlaid path).
    pub fn start(dir: &Path) -> Result<Lab> {
        if let Some(p) = OVERLAID.iter().find(|p| dir.starts_with(p)) {
            bail!("the lab dir {} is under {p}, which the lab overlays", dir.display());
        }
        std::fs::create_dir_all(dir.join("bin"))?;
        std::fs::create_dir_all(dir.join("scripts"))?;
        std::fs::create_dir_all(dir.join("layers"))?;
        let shim = dir.join("bin/sudo");
        std::fs::write(&shim, SUDO_SHIM)?;
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&shim, std::fs::Permissions::from_mode(0o755))?;
        let mut holder = Command::new("unshare")
            .args(["--mount", "--propagation", "private", "--", "sh", "-c", HOLDER, "sh"])
            .arg(dir)
            .env("WARD_OVERLAID", OVERLAID.join(" "))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("unshare (util-linux) for the lab's mount namespace")?;
        let mut line = String::new();
        let stdout = holder.stdout.take().context("holder stdout")?;
        BufReader::new(stdout).read_line(&mut line)?;
        if line.trim() != "ready" {
            let out = holder.wait_with_output()?;
            bail!(
                "the lab's overlays could not be mounted (root is needed): {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let pid = holder.id();
        Ok(Lab {
            holder,
            pid,
            dir: dir.to_path_buf(),
        })
    }

    /// The command line that runs a program in the lab's mount namespace (for the agent).
    pub fn wrapper(&self) -> Vec<String> {
        vec![
            "nsenter".into(),
            "-t".into(),
            self.pid.to_string(),
            "-m".into(),
            "--".into(),
        ]
    }

    /// Runs `script` under `executor` (`sh`/`bash`) in a test namespace of the lab,
    /// killed with its whole process group after `timeout`.
    pub fn launch(&self, name: &str, executor: &str, script: &str, timeout: Duration) -> Result<Launch> {
        let script_path = self.dir.join("scripts").join(format!("{name}.sh"));
        let out_path = self.dir.join("scripts").join(format!("{name}.out"));
        std::fs::write(&script_path, script)?;
        let path = format!(
            "{}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            self.dir.join("bin").display()
        );
        let started_ms = crate::now_ms();
        let started = Instant::now();
        let mut child = Command::new("nsenter")
            .args(["-t", &self.pid.to_string(), "-m", "--"])
            .args([
                "unshare", "--net", "--mount", "--uts", "--ipc", "--fork", "--", "sh", "-c", LAUNCH, "sh",
            ])
            .arg(executor)
            .arg(&script_path)
            .arg(&out_path)
            .env_clear()
            .env("PATH", path)
            .env("HOME", "/root")
            .env("USER", "root")
            .env("LOGNAME", "root")
            .env("SHELL", "/bin/bash")
            .env("LANG", "C.UTF-8")
            .env("TERM", "dumb")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .context("nsenter into the lab")?;
        let group = child.id();
        let stdout = child.stdout.take().context("stdout")?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let mut top: Option<(u32, u64)> = None;
        let mut netns: Option<PathBuf> = None;
        let mut exit: Option<i32> = None;
        let mut launch_error = None;
        loop {
            match rx.recv_timeout(Duration::from_millis(20)) {
                Ok(line) => {
                    if let Some(pid) = line
                        .strip_prefix("WARD_TOP ")
                        .and_then(|p| p.trim().parse::<u32>().ok())
                    {
                        let start = ward_agent::procfs::read_stat(Path::new("/proc"), pid)
                            .map(|s| s.start_time_ms)
                            .unwrap_or(started_ms);
                        top = Some((pid, start));
                        netns = std::fs::read_link(format!("/proc/{pid}/ns/net")).ok();
                    } else if let Some(code) = line.strip_prefix("WARD_EXIT ") {
                        exit = code.trim().parse().ok();
                    }
                }
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            }
            if started.elapsed() > timeout {
                break;
            }
            if let Ok(Some(status)) = child.try_wait() {
                if matches!(status.code(), Some(97 | 98)) {
                    launch_error = Some(format!("the test namespace could not be set up ({status})"));
                }
                // Drain what is left (a quick test's pid may still be on its way), then stop.
                while let Ok(line) = rx.recv_timeout(Duration::from_millis(50)) {
                    if let Some(pid) = line
                        .strip_prefix("WARD_TOP ")
                        .and_then(|p| p.trim().parse::<u32>().ok())
                    {
                        // Already gone: its start is about when the launch began.
                        top = Some((pid, started_ms));
                    } else if let Some(code) = line.strip_prefix("WARD_EXIT ") {
                        exit = code.trim().parse().ok();
                    }
                }
                break;
            }
        }
        let ended_ms = crate::now_ms();
        // Whatever the test left running goes too: its process group, and whatever
        // left the group (a new session, as pty.spawn makes) but not its network
        // namespace, which is the test's alone.
        kill_group(group);
        if let Some(ns) = &netns {
            kill_namespace(ns);
        }
        let stderr = child.wait_with_output().map(|o| o.stderr).unwrap_or_default();
        if let Some(e) = launch_error {
            bail!("{e}: {}", String::from_utf8_lossy(&stderr));
        }
        let Some((top_pid, top_start_ms)) = top else {
            bail!("the test's shell never started: {}", String::from_utf8_lossy(&stderr));
        };
        let output = std::fs::read_to_string(&out_path).unwrap_or_default();
        Ok(Launch {
            top_pid,
            top_start_ms,
            started_ms,
            ended_ms,
            exit,
            output: output.chars().take(2000).collect(),
        })
    }
}

fn kill_group(group: u32) {
    // `kill -KILL -- -PGID` is the process group the launch made (process_group(0)).
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{group}")])
        .stderr(Stdio::null())
        .status();
}

/// Kills every process in the network namespace `ns` (a `net:[inode]` link).
fn kill_namespace(ns: &Path) {
    let Ok(dir) = std::fs::read_dir("/proc") else { return };
    for e in dir.flatten() {
        let name = e.file_name();
        let Some(pid) = name.to_str().filter(|n| n.bytes().all(|b| b.is_ascii_digit())) else {
            continue;
        };
        if std::fs::read_link(format!("/proc/{pid}/ns/net")).is_ok_and(|l| l == ns) {
            let _ = Command::new("kill").args(["-KILL", pid]).stderr(Stdio::null()).status();
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = self.holder.kill();
        let _ = self.holder.wait();
    }
}

/// A fingerprint of the host paths the lab protects: every entry's path, type,
/// size, mode, owner and modification time, under `roots` (not following
/// symlinks, not crossing into other file systems, not entering `skip`). Compared
/// before and after.
pub fn fingerprint(roots: &[&str], skip: &[&str]) -> Vec<String> {
    use std::os::unix::fs::MetadataExt as _;
    let mut out = Vec::new();
    let mut stack: Vec<(PathBuf, u64)> = Vec::new();
    for r in roots {
        if let Ok(m) = std::fs::symlink_metadata(r) {
            stack.push((PathBuf::from(r), m.dev()));
        }
    }
    while let Some((p, dev)) = stack.pop() {
        if skip.iter().any(|s| p == Path::new(s)) {
            continue;
        }
        let Ok(m) = std::fs::symlink_metadata(&p) else { continue };
        out.push(format!(
            "{} {:o} {} {} {} {}",
            p.display(),
            m.mode(),
            m.uid(),
            m.len(),
            m.mtime(),
            m.mtime_nsec()
        ));
        if m.is_dir()
            && m.dev() == dev
            && let Ok(rd) = std::fs::read_dir(&p)
        {
            for e in rd.flatten() {
                stack.push((e.path(), dev));
            }
        }
    }
    out.sort();
    out
}

/// The lines of `after` that differ from `before` (added, removed or changed).
pub fn fingerprint_diff(before: &[String], after: &[String]) -> Vec<String> {
    let b: std::collections::BTreeSet<&String> = before.iter().collect();
    let a: std::collections::BTreeSet<&String> = after.iter().collect();
    b.symmetric_difference(&a).map(|s| s.to_string()).collect()
}
