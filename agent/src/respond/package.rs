//! The investigation package: a JSON snapshot of the device for an analyst.
//!
//! Processes, network connections with their owning process, logged-on users, the recent
//! changes in watched paths (given by the caller, from the file sensor), and the usual
//! persistence locations: cron, systemd units, authorized_keys (with key fingerprints) and
//! /etc/ld.so.preload. Everything is read under a root directory (`/` in production, a fake
//! tree in tests). Every section is bounded by [`PackageLimits`] and says when it was cut;
//! an unreadable item is listed as an error in its section and never fails the package.
//!
//! Must not change anything, run any command, follow a symlink when reading a file's content
//! (a symlink is reported with its target instead, so `~/.ssh/authorized_keys -> /etc/shadow`
//! leaks nothing), block on a FIFO or read more than the limits allow.

use std::collections::{HashMap, VecDeque};
use std::fmt::Display;
use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use base64::alphabet;
use base64::engine::general_purpose::{self, GeneralPurpose};
use serde::{Deserialize, Serialize};

use crate::procfs::parse_utmp;
use crate::procfs::{parse_passwd, read_cmdline, read_exe, read_stat};
use ward_detect::event::{Event, EventData, FileOp};

/// Identifies the document layout.
pub const FORMAT: &str = "ward-investigation-package/1";

/// Caps on what the package holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackageLimits {
    pub max_processes: usize,
    pub max_connections: usize,
    pub max_users: usize,
    pub max_changes: usize,
    /// Entries per persistence section (cron, systemd, authorized_keys, ld.so.preload).
    pub max_entries: usize,
    /// Content kept per file, bytes.
    pub max_file_bytes: usize,
    /// Encoded size per section, bytes.
    pub max_section_bytes: usize,
    /// Errors listed per section.
    pub max_errors: usize,
}

impl Default for PackageLimits {
    fn default() -> Self {
        PackageLimits {
            max_processes: 4096,
            max_connections: 8192,
            max_users: 256,
            max_changes: 2000,
            max_entries: 1000,
            max_file_bytes: 64 * 1024,
            max_section_bytes: 4 * 1024 * 1024,
            max_errors: 200,
        }
    }
}

/// Why no package could be produced at all.
#[derive(Debug, thiserror::Error)]
pub enum PackageError {
    #[error("root directory {0} is not a readable directory")]
    Root(String),
    #[error("cannot encode the package: {0}")]
    Encode(#[from] serde_json::Error),
}

/// A change in a watched path, as the file sensor saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecentChange {
    pub observed_at_ms: u64,
    pub op: FileOp,
    pub path: String,
    pub from_path: Option<String>,
    /// Hex.
    pub sha256: Option<String>,
    pub size: Option<u64>,
    pub mode: Option<u32>,
    pub uid: Option<u32>,
}

impl RecentChange {
    /// The change a file event describes (None for other events).
    pub fn from_event(event: &Event) -> Option<RecentChange> {
        let EventData::File(f) = &event.data else {
            return None;
        };
        Some(RecentChange {
            observed_at_ms: event.observed_at_ms,
            op: f.op,
            path: f.path.clone(),
            from_path: f.from_path.clone(),
            sha256: f.sha256.map(hex::encode),
            size: f.size,
            mode: f.mode,
            uid: f.uid,
        })
    }
}

/// Recent file changes kept for investigation packages.
pub const RECENT_CHANGES: usize = 2000;

/// File changes seen lately, for investigation packages (bounded, oldest dropped).
pub type RecentChanges = Arc<Mutex<VecDeque<RecentChange>>>;

/// An item that could not be read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ItemError {
    pub path: String,
    pub error: String,
}

/// One bounded list of items.
#[derive(Debug, Clone, Serialize)]
pub struct Section<T> {
    pub items: Vec<T>,
    /// Set when items were left out because of a limit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub truncated: Option<String>,
    pub errors: Vec<ItemError>,
    #[serde(skip)]
    max_items: usize,
    #[serde(skip)]
    max_bytes: usize,
    #[serde(skip)]
    max_errors: usize,
    #[serde(skip)]
    bytes: usize,
    #[serde(skip)]
    left_out: usize,
}

impl<T: Serialize> Section<T> {
    fn new(max_items: usize, limits: &PackageLimits) -> Self {
        Section {
            items: Vec::new(),
            truncated: None,
            errors: Vec::new(),
            max_items,
            max_bytes: limits.max_section_bytes,
            max_errors: limits.max_errors,
            bytes: 0,
            left_out: 0,
        }
    }

    /// Adds an item unless a limit is reached (then the truncation note counts it).
    fn push(&mut self, item: T) {
        let size = serde_json::to_vec(&item).map(|v| v.len()).unwrap_or(usize::MAX);
        if self.items.len() >= self.max_items || self.bytes.saturating_add(size) > self.max_bytes {
            self.left_out += 1;
            self.truncated = Some(format!(
                "{} item(s) left out (limits: {} items, {} bytes)",
                self.left_out, self.max_items, self.max_bytes
            ));
            return;
        }
        self.bytes += size;
        self.items.push(item);
    }

    fn full(&self) -> bool {
        self.items.len() >= self.max_items
    }

    fn error(&mut self, path: impl Display, error: impl Display) {
        if self.errors.len() < self.max_errors {
            self.errors.push(ItemError {
                path: path.to_string(),
                error: error.to_string(),
            });
        } else if self.truncated.is_none() {
            self.truncated = Some(format!("more than {} errors", self.max_errors));
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ProcessEntry {
    pub pid: u32,
    pub ppid: u32,
    pub start_time_ms: u64,
    pub uid: Option<u32>,
    pub user: String,
    pub exe: String,
    pub exe_deleted: bool,
    pub cmdline: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct ConnectionEntry {
    /// tcp, tcp6, udp or udp6.
    pub proto: &'static str,
    pub local: String,
    pub remote: String,
    pub state: &'static str,
    pub uid: Option<u32>,
    pub inode: u64,
    /// The processes holding the socket open.
    pub pids: Vec<u32>,
}

#[derive(Debug, Clone, Serialize)]
pub struct FileEntry {
    pub path: String,
    /// file, symlink, directory, fifo, socket, device.
    pub kind: &'static str,
    pub size: u64,
    pub mtime_ms: i64,
    pub mode: u32,
    pub uid: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub symlink_target: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub content_truncated: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct AuthorizedKey {
    pub key_type: String,
    /// `SHA256:` and the unpadded base64 of the key blob's SHA-256, as `ssh-keygen -l` shows.
    pub fingerprint: String,
    pub comment: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub options: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct AuthorizedKeysFile {
    pub file: FileEntry,
    pub keys: Vec<AuthorizedKey>,
    /// Non-empty, non-comment lines that are not keys.
    pub unparsed_lines: usize,
}

#[derive(Debug, Serialize)]
pub struct Persistence {
    pub cron: Section<FileEntry>,
    pub systemd: Section<FileEntry>,
    pub authorized_keys: Section<AuthorizedKeysFile>,
    pub ld_so_preload: Section<FileEntry>,
}

/// The package document.
#[derive(Debug, Serialize)]
pub struct Package {
    pub format: &'static str,
    pub collected_at_ms: u64,
    pub limits: PackageLimits,
    pub watched_paths: Vec<String>,
    pub processes: Section<ProcessEntry>,
    pub connections: Section<ConnectionEntry>,
    pub logged_on_users: Section<String>,
    pub recent_changes: Section<RecentChange>,
    pub persistence: Persistence,
}

/// Collects the package from the running system (root `/`) as JSON.
pub fn collect(
    watched_paths: &[PathBuf],
    recent_changes: &[RecentChange],
    limits: &PackageLimits,
) -> Result<Vec<u8>, PackageError> {
    collect_under(Path::new("/"), watched_paths, recent_changes, limits)
}

/// Like [`collect`], with /proc, /etc, /home... read under `root`.
pub fn collect_under(
    root: &Path,
    watched_paths: &[PathBuf],
    recent_changes: &[RecentChange],
    limits: &PackageLimits,
) -> Result<Vec<u8>, PackageError> {
    let package = build(root, watched_paths, recent_changes, limits)?;
    Ok(serde_json::to_vec(&package)?)
}

/// The package as a value, before encoding.
pub fn build(
    root: &Path,
    watched_paths: &[PathBuf],
    recent_changes: &[RecentChange],
    limits: &PackageLimits,
) -> Result<Package, PackageError> {
    if !root.is_dir() {
        return Err(PackageError::Root(root.display().to_string()));
    }
    let reader = Reader { root, limits };
    let mut changes = Section::new(limits.max_changes, limits);
    for c in recent_changes {
        changes.push(c.clone());
    }
    Ok(Package {
        format: FORMAT,
        collected_at_ms: crate::clock::now_ms(),
        limits: limits.clone(),
        watched_paths: watched_paths.iter().map(|p| p.display().to_string()).collect(),
        processes: reader.processes(),
        connections: reader.connections(),
        logged_on_users: reader.users(),
        recent_changes: changes,
        persistence: Persistence {
            cron: reader.cron(),
            systemd: reader.systemd(),
            authorized_keys: reader.authorized_keys(),
            ld_so_preload: reader.ld_so_preload(),
        },
    })
}

struct Reader<'a> {
    root: &'a Path,
    limits: &'a PackageLimits,
}

/// `/a/b` under the root.
fn under(root: &Path, abs: &str) -> PathBuf {
    root.join(abs.trim_start_matches('/'))
}

fn kind_of(ft: &fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if ft.is_symlink() {
        "symlink"
    } else if ft.is_file() {
        "file"
    } else if ft.is_dir() {
        "directory"
    } else if ft.is_fifo() {
        "fifo"
    } else if ft.is_socket() {
        "socket"
    } else {
        "device"
    }
}

/// Entries of a directory, sorted by name (missing directory: none).
fn list_dir(dir: &Path) -> io::Result<Vec<PathBuf>> {
    match fs::read_dir(dir) {
        Ok(rd) => {
            let mut v: Vec<PathBuf> = rd.filter_map(|e| e.ok().map(|e| e.path())).collect();
            v.sort();
            Ok(v)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

/// Reads at most `max` bytes of a regular file without following a symlink or blocking.
fn read_capped(path: &Path, max: usize) -> io::Result<(Vec<u8>, bool)> {
    let file = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)?;
    if !file.metadata()?.is_file() {
        return Err(io::Error::other("not a regular file"));
    }
    let mut buf = Vec::new();
    file.take(max as u64 + 1).read_to_end(&mut buf)?;
    let cut = buf.len() > max;
    buf.truncate(max);
    Ok((buf, cut))
}

impl Reader<'_> {
    fn shown(&self, path: &Path) -> String {
        match path.strip_prefix(self.root) {
            Ok(rel) => format!("/{}", rel.display()),
            Err(_) => path.display().to_string(),
        }
    }

    /// The entry for one path; `Ok(None)` when it does not exist.
    fn entry(&self, path: &Path, with_content: bool) -> io::Result<Option<FileEntry>> {
        let meta = match fs::symlink_metadata(path) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let ft = meta.file_type();
        let mut entry = FileEntry {
            path: self.shown(path),
            kind: kind_of(&ft),
            size: meta.size(),
            mtime_ms: meta.mtime().saturating_mul(1000) + meta.mtime_nsec() / 1_000_000,
            mode: meta.mode() & 0o7777,
            uid: meta.uid(),
            symlink_target: None,
            content: None,
            content_truncated: false,
        };
        if ft.is_symlink() {
            entry.symlink_target = fs::read_link(path).ok().map(|t| t.display().to_string());
        } else if ft.is_file() && with_content {
            let (bytes, cut) = read_capped(path, self.limits.max_file_bytes)?;
            entry.content = Some(String::from_utf8_lossy(&bytes).into_owned());
            entry.content_truncated = cut;
        }
        Ok(Some(entry))
    }

    fn add_entry(&self, section: &mut Section<FileEntry>, path: &Path, with_content: bool) {
        match self.entry(path, with_content) {
            Ok(Some(e)) => section.push(e),
            Ok(None) => {}
            Err(e) => section.error(self.shown(path), e),
        }
    }

    /// Files under `dir` (not following symlinked directories), to `depth` levels.
    fn add_tree(&self, section: &mut Section<FileEntry>, dir: &Path, depth: usize, with_content: bool) {
        let entries = match list_dir(dir) {
            Ok(v) => v,
            Err(e) => return section.error(self.shown(dir), e),
        };
        for p in entries {
            if section.full() {
                section.push_overflow();
                return;
            }
            let is_dir = fs::symlink_metadata(&p).map(|m| m.is_dir()).unwrap_or(false);
            if is_dir && depth > 0 {
                self.add_tree(section, &p, depth - 1, with_content);
            } else {
                self.add_entry(section, &p, with_content);
            }
        }
    }

    fn proc_dir(&self) -> PathBuf {
        under(self.root, "/proc")
    }

    fn pids(&self) -> io::Result<Vec<u32>> {
        let mut pids: Vec<u32> = fs::read_dir(self.proc_dir())?
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .collect();
        pids.sort_unstable();
        Ok(pids)
    }

    fn processes(&self) -> Section<ProcessEntry> {
        let mut s = Section::new(self.limits.max_processes, self.limits);
        let proc = self.proc_dir();
        let pids = match self.pids() {
            Ok(p) => p,
            Err(e) => {
                s.error(self.shown(&proc), e);
                return s;
            }
        };
        let users = fs::read_to_string(under(self.root, "/etc/passwd"))
            .map(|c| parse_passwd(&c))
            .unwrap_or_default();
        for pid in pids {
            let stat = match read_stat(&proc, pid) {
                Ok(st) => st,
                // Exited since the listing: not an error worth reporting.
                Err(_) => continue,
            };
            let uid = fs::read_to_string(proc.join(pid.to_string()).join("status"))
                .ok()
                .and_then(|st| {
                    st.lines()
                        .find_map(|l| l.strip_prefix("Uid:"))
                        .and_then(|v| v.split_whitespace().next()?.parse::<u32>().ok())
                });
            let (exe, exe_deleted) = read_exe(&proc, pid);
            s.push(ProcessEntry {
                pid,
                ppid: stat.ppid,
                start_time_ms: stat.start_time_ms,
                uid,
                user: uid.and_then(|u| users.get(&u).cloned()).unwrap_or_default(),
                exe,
                exe_deleted,
                cmdline: read_cmdline(&proc, pid),
            });
        }
        s
    }

    /// Socket inode -> pids holding it, from /proc/*/fd.
    fn socket_owners(&self) -> HashMap<u64, Vec<u32>> {
        let mut owners: HashMap<u64, Vec<u32>> = HashMap::new();
        let proc = self.proc_dir();
        for pid in self.pids().unwrap_or_default() {
            let Ok(fds) = fs::read_dir(proc.join(pid.to_string()).join("fd")) else {
                continue;
            };
            for fd in fds.flatten() {
                let Ok(target) = fs::read_link(fd.path()) else {
                    continue;
                };
                let t = target.to_string_lossy();
                if let Some(inode) = t
                    .strip_prefix("socket:[")
                    .and_then(|r| r.strip_suffix(']'))
                    .and_then(|n| n.parse::<u64>().ok())
                {
                    let v = owners.entry(inode).or_default();
                    if !v.contains(&pid) {
                        v.push(pid);
                    }
                }
            }
        }
        owners
    }

    fn connections(&self) -> Section<ConnectionEntry> {
        let mut s = Section::new(self.limits.max_connections, self.limits);
        let owners = self.socket_owners();
        for proto in ["tcp", "tcp6", "udp", "udp6"] {
            let path = under(self.root, &format!("/proc/net/{proto}"));
            let content = match fs::read_to_string(&path) {
                Ok(c) => c,
                Err(e) => {
                    s.error(self.shown(&path), e);
                    continue;
                }
            };
            for line in content.lines().skip(1) {
                match parse_net_line(proto, line) {
                    Some(mut c) => {
                        c.pids = owners.get(&c.inode).cloned().unwrap_or_default();
                        s.push(c);
                    }
                    None => s.error(self.shown(&path), format!("unparsed line: {}", line.trim())),
                }
            }
        }
        s
    }

    fn users(&self) -> Section<String> {
        let mut s = Section::new(self.limits.max_users, self.limits);
        for candidate in ["/run/utmp", "/var/run/utmp"] {
            let path = under(self.root, candidate);
            match fs::read(&path) {
                Ok(bytes) => {
                    for u in parse_utmp(&bytes) {
                        s.push(u);
                    }
                    return s;
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => s.error(self.shown(&path), e),
            }
        }
        s
    }

    fn cron(&self) -> Section<FileEntry> {
        let mut s = Section::new(self.limits.max_entries, self.limits);
        self.add_entry(&mut s, &under(self.root, "/etc/crontab"), true);
        let etc = under(self.root, "/etc");
        match list_dir(&etc) {
            Ok(entries) => {
                for dir in entries {
                    let is_cron_dir = dir
                        .file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with("cron.") && n != "cron.allow" && n != "cron.deny");
                    if is_cron_dir && fs::symlink_metadata(&dir).map(|m| m.is_dir()).unwrap_or(false) {
                        self.add_tree(&mut s, &dir, 0, true);
                    }
                }
            }
            Err(e) => s.error(self.shown(&etc), e),
        }
        self.add_tree(&mut s, &under(self.root, "/var/spool/cron"), 3, true);
        s
    }

    /// Home directories: /root and /home/*.
    fn homes(&self) -> Vec<PathBuf> {
        let mut homes = vec![under(self.root, "/root")];
        homes.extend(list_dir(&under(self.root, "/home")).unwrap_or_default());
        homes
    }

    fn systemd(&self) -> Section<FileEntry> {
        let mut s = Section::new(self.limits.max_entries, self.limits);
        self.add_tree(&mut s, &under(self.root, "/etc/systemd/system"), 2, true);
        for home in self.homes() {
            self.add_tree(&mut s, &home.join(".config/systemd/user"), 2, true);
        }
        s
    }

    fn authorized_keys(&self) -> Section<AuthorizedKeysFile> {
        let mut s = Section::new(self.limits.max_entries, self.limits);
        for home in self.homes() {
            for name in ["authorized_keys", "authorized_keys2"] {
                let path = home.join(".ssh").join(name);
                match self.entry(&path, true) {
                    Ok(Some(mut file)) => {
                        let (keys, unparsed_lines) = parse_authorized_keys(file.content.as_deref().unwrap_or(""));
                        // The keys say it all; the raw content is not repeated.
                        file.content = None;
                        s.push(AuthorizedKeysFile {
                            file,
                            keys,
                            unparsed_lines,
                        });
                    }
                    Ok(None) => {}
                    Err(e) => s.error(self.shown(&path), e),
                }
            }
        }
        s
    }

    fn ld_so_preload(&self) -> Section<FileEntry> {
        let mut s = Section::new(self.limits.max_entries, self.limits);
        self.add_entry(&mut s, &under(self.root, "/etc/ld.so.preload"), true);
        s
    }
}

impl<T: Serialize> Section<T> {
    /// Records that a walk stopped because the section is full.
    fn push_overflow(&mut self) {
        self.left_out += 1;
        self.truncated = Some(format!(
            "listing stopped after {} items (limit {})",
            self.items.len(),
            self.max_items
        ));
    }
}

fn tcp_state(code: u8) -> &'static str {
    match code {
        0x01 => "ESTABLISHED",
        0x02 => "SYN_SENT",
        0x03 => "SYN_RECV",
        0x04 => "FIN_WAIT1",
        0x05 => "FIN_WAIT2",
        0x06 => "TIME_WAIT",
        0x07 => "CLOSE",
        0x08 => "CLOSE_WAIT",
        0x09 => "LAST_ACK",
        0x0A => "LISTEN",
        0x0B => "CLOSING",
        0x0C => "NEW_SYN_RECV",
        _ => "UNKNOWN",
    }
}

/// `0100007F:1F90` (IPv4) or 32 hex digits (IPv6), each 32-bit word in host byte order.
fn parse_addr(s: &str) -> Option<String> {
    let (ip_hex, port_hex) = s.split_once(':')?;
    let port = u16::from_str_radix(port_hex, 16).ok()?;
    let words: Option<Vec<[u8; 4]>> = (0..ip_hex.len() / 8)
        .map(|i| {
            let w = ip_hex.get(i * 8..i * 8 + 8)?;
            u32::from_str_radix(w, 16).ok().map(u32::to_ne_bytes)
        })
        .collect();
    let bytes: Vec<u8> = words?.concat();
    match (ip_hex.len(), bytes.len()) {
        (8, 4) => {
            let a: [u8; 4] = bytes.try_into().ok()?;
            Some(format!("{}:{port}", std::net::Ipv4Addr::from(a)))
        }
        (32, 16) => {
            let a: [u8; 16] = bytes.try_into().ok()?;
            Some(format!("[{}]:{port}", std::net::Ipv6Addr::from(a)))
        }
        _ => None,
    }
}

/// One line of /proc/net/{tcp,tcp6,udp,udp6} after the header.
fn parse_net_line(proto: &'static str, line: &str) -> Option<ConnectionEntry> {
    let f: Vec<&str> = line.split_whitespace().collect();
    let local = parse_addr(f.get(1)?)?;
    let remote = parse_addr(f.get(2)?)?;
    let state_code = u8::from_str_radix(f.get(3)?, 16).ok()?;
    let state = if proto.starts_with("udp") && state_code == 0x07 {
        "UNCONN"
    } else {
        tcp_state(state_code)
    };
    Some(ConnectionEntry {
        proto,
        local,
        remote,
        state,
        uid: f.get(7).and_then(|u| u.parse().ok()),
        inode: f.get(9)?.parse().ok()?,
        pids: Vec::new(),
    })
}

/// Standard base64 without padding, read as the hand-written codec this replaces
/// did: trailing `=` trimmed first and stray low bits accepted (OpenSSH's own
/// encoder never leaves them, but a key is fingerprinted as written).
const B64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    general_purpose::NO_PAD.with_decode_allow_trailing_bits(true),
);

fn b64_decode(s: &str) -> Option<Vec<u8>> {
    B64.decode(s.trim_end_matches('=')).ok()
}

fn b64_encode_unpadded(bytes: &[u8]) -> String {
    B64.encode(bytes)
}

fn is_key_type(t: &str) -> bool {
    t.starts_with("ssh-") || t.starts_with("ecdsa-sha2-") || t.starts_with("sk-")
}

/// Splits on whitespace outside double quotes (options may contain quoted spaces).
fn tokens(line: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = None;
    let mut quoted = false;
    for (i, c) in line.char_indices() {
        match c {
            '"' => {
                quoted = !quoted;
                start.get_or_insert(i);
            }
            c if c.is_whitespace() && !quoted => {
                if let Some(s) = start.take() {
                    out.push(line.get(s..i).unwrap_or_default());
                }
            }
            _ => {
                start.get_or_insert(i);
            }
        }
    }
    if let Some(s) = start {
        out.push(line.get(s..).unwrap_or_default());
    }
    out
}

/// Keys in authorized_keys content, and the count of lines that are not keys.
pub fn parse_authorized_keys(content: &str) -> (Vec<AuthorizedKey>, usize) {
    let mut keys = Vec::new();
    let mut unparsed = 0;
    for line in content.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let t = tokens(line);
        let Some(at) = t.iter().position(|tok| is_key_type(tok)) else {
            unparsed += 1;
            continue;
        };
        let Some(blob) = t.get(at + 1).and_then(|b| b64_decode(b)) else {
            unparsed += 1;
            continue;
        };
        let digest = ring::digest::digest(&ring::digest::SHA256, &blob);
        keys.push(AuthorizedKey {
            key_type: t.get(at).map(|s| s.to_string()).unwrap_or_default(),
            fingerprint: format!("SHA256:{}", b64_encode_unpadded(digest.as_ref())),
            comment: t.get(at + 2..).map(|c| c.join(" ")).unwrap_or_default(),
            options: t.get(..at).map(|o| o.join(" ")).unwrap_or_default(),
        });
    }
    (keys, unparsed)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trip() {
        for input in [&b""[..], b"f", b"fo", b"foo", b"foob", b"fooba", b"foobar"] {
            let enc = b64_encode_unpadded(input);
            assert_eq!(b64_decode(&enc).unwrap(), input);
        }
        assert_eq!(b64_encode_unpadded(b"foobar"), "Zm9vYmFy");
        assert_eq!(b64_encode_unpadded(b"fo"), "Zm8");
        assert!(b64_decode("not*base64").is_none());
        assert_eq!(b64_decode("Zm8=").unwrap(), b"fo", "padding tolerated");
        assert_eq!(b64_decode("Zm9=").unwrap(), b"fo", "stray low bits tolerated");
        assert!(b64_decode("Zm9vY").is_none(), "a dangling character is not base64");
        assert!(b64_decode("-_8").is_none(), "the URL alphabet is not ssh's");
    }

    #[test]
    fn authorized_keys_lines() {
        let content = "# comment\n\
            ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl alice@laptop\n\
            command=\"/bin/echo hi there\",no-pty ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQ== backdoor key\n\
            garbage line\n";
        let (keys, unparsed) = parse_authorized_keys(content);
        assert_eq!(unparsed, 1);
        assert_eq!(keys.len(), 2);
        assert_eq!(keys[0].key_type, "ssh-ed25519");
        assert_eq!(keys[0].comment, "alice@laptop");
        assert!(keys[0].fingerprint.starts_with("SHA256:"));
        assert_eq!(keys[0].fingerprint.len(), "SHA256:".len() + 43);
        assert_eq!(keys[1].options, "command=\"/bin/echo hi there\",no-pty");
        assert_eq!(keys[1].comment, "backdoor key");
    }

    #[test]
    fn net_lines() {
        let v4 = "   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 12345 1 0000000000000000 100 0 0 10 0";
        let c = parse_net_line("tcp", v4).unwrap();
        if cfg!(target_endian = "little") {
            assert_eq!(c.local, "127.0.0.1:8080");
        }
        assert_eq!(c.state, "LISTEN");
        assert_eq!(c.uid, Some(1000));
        assert_eq!(c.inode, 12345);
        let v6 = "   0: 00000000000000000000000001000000:0016 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 999 1 0000000000000000 100 0 0 10 0";
        let c = parse_net_line("tcp6", v6).unwrap();
        if cfg!(target_endian = "little") {
            assert_eq!(c.local, "[::1]:22");
        }
        assert!(parse_net_line("tcp", "junk").is_none());
    }

    #[test]
    fn sections_are_bounded() {
        let limits = PackageLimits {
            max_section_bytes: 20,
            ..PackageLimits::default()
        };
        let mut s: Section<String> = Section::new(2, &limits);
        s.push("a".into());
        s.push("b".into());
        s.push("c".into());
        assert_eq!(s.items.len(), 2);
        assert!(s.truncated.as_deref().unwrap().contains("1 item"));
        let mut s: Section<String> = Section::new(100, &limits);
        s.push("x".repeat(30));
        assert!(s.items.is_empty() && s.truncated.is_some());
    }
}
