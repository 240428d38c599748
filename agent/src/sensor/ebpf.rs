//! The kernel's own view of execs and TCP connections, through eBPF.
//!
//! Two BPF objects, written in C (`agent/bpf/*.bpf.c`), compiled by `agent/bpf/build`
//! and committed so that ordinary builds need no clang, are loaded here with the
//! pure-Rust `aya` crate:
//! - `exec.bpf.o`: the BTF tracepoint `sched_process_exec` writes one record per exec
//!   (pid, parent, ids, start time, the executable's and the working directory's
//!   paths, argv up to 4 KiB, cgroup id, mount and pid namespaces, controlling tty)
//!   before the new program runs, so even a process that
//!   lives a microsecond arrives complete;
//! - `net.bpf.o`: the BTF tracepoint `inet_sock_set_state` writes TCP connects (with
//!   the connecting process), listens (with the listening process) and accepted
//!   connections (named after the process listening on the port).
//!
//! UDP connects, sendtos and binds and DNS messages come from a third object,
//! `udp.bpf.o` (cgroup programs, loaded by `sensor::netcg`); [`run_net`] reads its
//! ring buffer beside the TCP one, pairs DNS queries with their responses and names a
//! connection's remote address after the answer that gave it.
//!
//! Only BTF tracepoints are used: no kprobes, fentry or tracefs, which some kernels
//! lack or refuse (this machine's kernel has no kprobes and refuses fentry). Needs BTF
//! (`/sys/kernel/btf/vmlinux`), `bpf_loop` (5.17+) and CAP_BPF + CAP_PERFMON (or root).
//! When anything is missing, loading fails with the reason and the caller falls back
//! (see `sensor::run_sensors`).
//!
//! A network event's process is read from /proc (cached per process) when the agent
//! reads the event, a few milliseconds after the kernel wrote it. The kernel sends the
//! connecting (or listening) process's executable path just before, in its context;
//! when /proc shows another program by then (the process exec'd right after
//! connecting: `nc -e /bin/sh`, a shell running its last command in place), the event
//! names the program that connected, without the new program's command line.
//!
//! Records are decoded by pure functions ([`decode_exec`], [`decode_net`]) from the
//! ring buffer's bytes: the layouts are the C structs `exec_event` and `net_event`,
//! little-endian; change both sides together. Malformed records are counted, never
//! trusted. Records the kernel could not queue (ring buffer full) are counted in a map
//! and reported as lost with a gap.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::{Duration, Instant};

use aya::maps::{MapData, PerCpuArray, RingBuf};
use aya::programs::BtfTracePoint;
use aya::{Btf, Ebpf, EbpfLoader};

use super::process::ProcessTracker;
use super::{SensorConfig, SensorCtx, SensorError};
use ward_detect::event::{DnsEvent, EventData, NetOp, NetworkEvent, ProcessEvent};

/// The compiled exec program (see agent/bpf/exec.bpf.c).
static EXEC_OBJECT: &[u8] = aya::include_bytes_aligned!("../../bpf/exec.bpf.o");
/// The compiled TCP program (see agent/bpf/net.bpf.c).
static NET_OBJECT: &[u8] = aya::include_bytes_aligned!("../../bpf/net.bpf.o");

const KIND_EXEC: u32 = 1;
const KIND_NET: u32 = 2;
const KIND_NET_EXE: u32 = 3;
/// A UDP record (udp.bpf.c's `udp_event`: `net_event`'s layout, the socket's cookie
/// in place of its address).
const KIND_UDP: u32 = 4;

// struct exec_event (exec.bpf.c): byte offsets.
const EXEC_CGROUP_AT: usize = 72;
const EXEC_MNT_NS_AT: usize = 80;
const EXEC_PID_NS_AT: usize = 84;
const EXEC_TTY_MAJOR_AT: usize = 88;
const EXEC_TTY_MINOR_AT: usize = 92;
const EXEC_TTY_AT: usize = 96;
const EXEC_TTY_CAP: usize = 32;
const EXEC_STDIN_PIPE_AT: usize = 128;
const EXEC_STDOUT_PIPE_AT: usize = 136;
const EXEC_EXE_INO_AT: usize = 144;
const EXEC_EXE_SIZE_AT: usize = 152;
const EXEC_EXE_MTIME_SEC_AT: usize = 160;
const EXEC_EXE_MTIME_NSEC_AT: usize = 168;
const EXEC_EXE_DEV_AT: usize = 172;
const EXEC_EXE_AT: usize = 176;
const EXEC_PATH_CAP: usize = 1280;
const EXEC_CWD_AT: usize = EXEC_EXE_AT + EXEC_PATH_CAP;
const EXEC_FILENAME_AT: usize = EXEC_CWD_AT + EXEC_PATH_CAP;
const EXEC_FILENAME_CAP: usize = 256;
const EXEC_ARGS_AT: usize = EXEC_FILENAME_AT + EXEC_FILENAME_CAP;
const EXEC_ARGS_CAP: usize = 4096;

const FLAG_ARGS_CUT: u32 = 1;
const FLAG_EXE_CUT: u32 = 2;
const FLAG_CWD_CUT: u32 = 4;
const FLAG_EXE_DELETED: u32 = 8;
const FLAG_EXE_ID: u32 = 16;

// struct net_event (net.bpf.c).
const NET_SIZE: usize = 96;
// struct exe_event (net.bpf.c).
const NET_EXE_AT: usize = 24;
const NET_FLAG_ESTABLISHED: u8 = 1;

/// Why a ring-buffer record was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("record of {0} bytes is shorter than its header")]
    Short(usize),
    #[error("record kind {0} is not the one expected")]
    Kind(u32),
    #[error("{field} length {len} is beyond the record")]
    Length { field: &'static str, len: usize },
    #[error("unknown network operation {0}")]
    Op(u8),
    #[error("unknown address family {0}")]
    Family(u8),
}

/// One exec, as the kernel saw it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ExecRecord {
    /// The process (thread group) id.
    pub tgid: u32,
    /// The parent's process id.
    pub ppid: u32,
    pub uid: u32,
    pub gid: u32,
    pub euid: u32,
    /// The login uid (`u32::MAX` when unset).
    pub loginuid: u32,
    pub sessionid: u32,
    /// Start, nanoseconds since boot.
    pub start_ns: u64,
    pub parent_start_ns: u64,
    /// The executable's path, symlinks resolved (empty when the kernel could not name it).
    pub exe: String,
    /// The path given to execve (relative, or a symlink, as typed).
    pub filename: String,
    pub cwd: String,
    pub argv: Vec<String>,
    /// argv was longer than the 4 KiB kept.
    pub args_cut: bool,
    /// A path was deeper or longer than kept: only its last components are in it.
    pub path_cut: bool,
    /// The executable had no link left on disk when it ran (deleted, or a memfd).
    pub exe_deleted: bool,
    /// The cgroup v2 id (the cgroup directory's inode number).
    pub cgroup_id: u64,
    /// Mount and pid namespace inode numbers (0: the kernel could not read them).
    pub mnt_ns: u32,
    pub pid_ns: u32,
    /// The controlling tty, named as `ps` names it (`pts/3`); empty when none.
    pub tty: String,
    /// The pipes (inode numbers) on its stdin and stdout, if they are pipes.
    pub stdin_pipe: Option<u64>,
    pub stdout_pipe: Option<u64>,
    /// The executable's version as stat would key it (hash cache), when the kernel has
    /// the fields (6.11+).
    pub exe_key: Option<super::hash::FileKey>,
}

impl ExecRecord {
    /// The command line: argv joined by spaces, as /proc's reader gives it.
    pub fn cmdline(&self) -> String {
        self.argv.join(" ")
    }

    /// The executable: the kernel's path, else the path given to execve.
    pub fn image(&self) -> &str {
        if self.exe.is_empty() { &self.filename } else { &self.exe }
    }
}

/// The process behind a network record, as the kernel saw it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NetOwner {
    pub pid: u32,
    pub tgid: u32,
    pub uid: u32,
    pub start_ns: u64,
    /// The thread's name (15 bytes at most).
    pub comm: String,
}

/// One TCP connect, accept or listen, as the kernel saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetRecord {
    pub op: NetOp,
    /// A connect that completed (false: refused or timed out).
    pub established: bool,
    pub local: SocketAddr,
    pub remote: SocketAddr,
    /// None for an accept (the kernel completes it outside the accepting process).
    pub owner: Option<NetOwner>,
    /// The socket (a kernel address; a UDP socket's cookie): pairs the record with
    /// its [`NetExe`].
    pub sk: u64,
    /// A UDP socket (connect, sendto or bind); else TCP.
    pub udp: bool,
}

/// The executable of the process connecting or listening on a socket, sent by the
/// kernel in that process just before the socket's record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetExe {
    pub sk: u64,
    pub tgid: u32,
    pub exe: String,
}

/// One record of the network ring buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetItem {
    Net(NetRecord),
    Exe(NetExe),
}

/// Decodes one record of the network ring buffer (`net_event` or `exe_event`).
pub fn decode_net_item(b: &[u8]) -> Result<NetItem, DecodeError> {
    match u32_at(b, 0) {
        Some(KIND_NET_EXE) => {
            let len = u32_at(b, 4).ok_or(DecodeError::Short(b.len()))?;
            let exe = region(b, NET_EXE_AT, EXEC_PATH_CAP, len, "exe")?;
            Ok(NetItem::Exe(NetExe {
                sk: u64_at(b, 8).ok_or(DecodeError::Short(b.len()))?,
                tgid: u32_at(b, 16).ok_or(DecodeError::Short(b.len()))?,
                exe: if exe.is_empty() {
                    String::new()
                } else {
                    join_components(exe)
                },
            }))
        }
        _ => decode_net(b).map(NetItem::Net),
    }
}

pub(super) fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

pub(super) fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

/// Text up to the first NUL.
fn c_str(b: &[u8]) -> String {
    let end = b.iter().position(|c| *c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(b.get(..end).unwrap_or_default()).into_owned()
}

/// A path from its components, leaf first and each NUL-ended (as `walk_path` writes
/// them): `bin\0usr\0` is `/usr/bin`; none is `/`.
fn join_components(b: &[u8]) -> String {
    let parts: Vec<&[u8]> = b.split(|c| *c == 0).filter(|p| !p.is_empty() && *p != b"/").collect();
    if parts.is_empty() {
        return "/".to_string();
    }
    let mut path = String::new();
    for p in parts.iter().rev() {
        path.push('/');
        path.push_str(&String::from_utf8_lossy(p));
    }
    path
}

/// A length field, checked against its region's capacity and the record's size.
fn region<'a>(b: &'a [u8], at: usize, cap: usize, len: u32, field: &'static str) -> Result<&'a [u8], DecodeError> {
    let len = len as usize;
    if len > cap {
        return Err(DecodeError::Length { field, len });
    }
    b.get(at..at + len).ok_or(DecodeError::Length { field, len })
}

/// Decodes one `exec_event` record.
pub fn decode_exec(b: &[u8]) -> Result<ExecRecord, DecodeError> {
    let field = |at| u32_at(b, at).ok_or(DecodeError::Short(b.len()));
    let long = |at| u64_at(b, at).ok_or(DecodeError::Short(b.len()));
    if b.len() < EXEC_ARGS_AT {
        return Err(DecodeError::Short(b.len()));
    }
    let kind = field(0)?;
    if kind != KIND_EXEC {
        return Err(DecodeError::Kind(kind));
    }
    let flags = field(4)?;
    let exe = region(b, EXEC_EXE_AT, EXEC_PATH_CAP, field(56)?, "exe")?;
    let cwd = region(b, EXEC_CWD_AT, EXEC_PATH_CAP, field(60)?, "cwd")?;
    let filename = region(b, EXEC_FILENAME_AT, EXEC_FILENAME_CAP, field(64)?, "filename")?;
    let args = region(b, EXEC_ARGS_AT, EXEC_ARGS_CAP, field(68)?, "args")?;
    let args_cut = flags & FLAG_ARGS_CUT != 0;
    let mut argv: Vec<String> = args
        .split(|c| *c == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    // argv ends with a NUL: the split leaves one empty string after it (unless cut).
    if argv.last().is_some_and(|a| a.is_empty()) {
        argv.pop();
    }
    let exe = if exe.is_empty() {
        String::new()
    } else {
        join_components(exe)
    };
    Ok(ExecRecord {
        tgid: field(12)?,
        ppid: field(16)?,
        uid: field(20)?,
        gid: field(24)?,
        euid: field(28)?,
        loginuid: field(32)?,
        sessionid: field(36)?,
        start_ns: u64_at(b, 40).ok_or(DecodeError::Short(b.len()))?,
        parent_start_ns: u64_at(b, 48).ok_or(DecodeError::Short(b.len()))?,
        exe,
        filename: c_str(filename),
        cwd: join_components(cwd),
        argv,
        args_cut,
        path_cut: flags & (FLAG_EXE_CUT | FLAG_CWD_CUT) != 0,
        exe_deleted: flags & FLAG_EXE_DELETED != 0,
        cgroup_id: u64_at(b, EXEC_CGROUP_AT).ok_or(DecodeError::Short(b.len()))?,
        mnt_ns: field(EXEC_MNT_NS_AT)?,
        pid_ns: field(EXEC_PID_NS_AT)?,
        tty: super::context::tty_name(
            field(EXEC_TTY_MAJOR_AT)?,
            field(EXEC_TTY_MINOR_AT)?,
            &c_str(b.get(EXEC_TTY_AT..EXEC_TTY_AT + EXEC_TTY_CAP).unwrap_or_default()),
        ),
        stdin_pipe: Some(long(EXEC_STDIN_PIPE_AT)?).filter(|p| *p != 0),
        stdout_pipe: Some(long(EXEC_STDOUT_PIPE_AT)?).filter(|p| *p != 0),
        exe_key: if flags & FLAG_EXE_ID != 0 {
            let dev = field(EXEC_EXE_DEV_AT)?;
            Some(super::hash::FileKey {
                // The kernel's dev_t is major << 20 | minor; stat's is glibc's encoding.
                dev: libc::makedev(dev >> 20, dev & 0xf_ffff),
                ino: long(EXEC_EXE_INO_AT)?,
                mtime_ns: i128::from(long(EXEC_EXE_MTIME_SEC_AT)? as i64) * 1_000_000_000
                    + i128::from(field(EXEC_EXE_MTIME_NSEC_AT)?),
                size: long(EXEC_EXE_SIZE_AT)?,
            })
        } else {
            None
        },
    })
}

/// The address of `family` (4 or 6) at the start of `b`; a v4-mapped v6 address as v4.
pub(super) fn addr(family: u8, b: &[u8]) -> Result<IpAddr, DecodeError> {
    match family {
        4 => {
            let o: [u8; 4] = b
                .get(..4)
                .and_then(|s| s.try_into().ok())
                .ok_or(DecodeError::Short(0))?;
            Ok(IpAddr::V4(Ipv4Addr::from(o)))
        }
        6 => {
            let o: [u8; 16] = b
                .get(..16)
                .and_then(|s| s.try_into().ok())
                .ok_or(DecodeError::Short(0))?;
            let v6 = Ipv6Addr::from(o);
            // A v4 peer of a dual-stack socket: report it as the v4 address it is.
            Ok(v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(IpAddr::V6(v6)))
        }
        other => Err(DecodeError::Family(other)),
    }
}

/// Decodes one `net_event` record.
pub fn decode_net(b: &[u8]) -> Result<NetRecord, DecodeError> {
    if b.len() < NET_SIZE {
        return Err(DecodeError::Short(b.len()));
    }
    let short = || DecodeError::Short(b.len());
    let kind = u32_at(b, 0).ok_or_else(short)?;
    if kind != KIND_NET && kind != KIND_UDP {
        return Err(DecodeError::Kind(kind));
    }
    let byte = |at: usize| b.get(at).copied().ok_or_else(short);
    let op = match byte(4)? {
        1 => NetOp::Connect,
        2 => NetOp::Accept,
        3 => NetOp::Listen,
        other => return Err(DecodeError::Op(other)),
    };
    let family = byte(5)?;
    let flags = byte(6)?;
    let sport = u16_at(b, 8).ok_or_else(short)?;
    let dport = u16_at(b, 10).ok_or_else(short)?;
    let local = SocketAddr::new(addr(family, b.get(16..32).unwrap_or_default())?, sport);
    let remote = SocketAddr::new(addr(family, b.get(32..48).unwrap_or_default())?, dport);
    let owner = (op != NetOp::Accept).then(|| NetOwner {
        pid: u32_at(b, 48).unwrap_or(0),
        tgid: u32_at(b, 52).unwrap_or(0),
        uid: u32_at(b, 56).unwrap_or(0),
        start_ns: u64_at(b, 64).unwrap_or(0),
        comm: c_str(b.get(72..88).unwrap_or_default()),
    });
    Ok(NetRecord {
        op,
        established: flags & NET_FLAG_ESTABLISHED != 0,
        local,
        remote,
        owner,
        sk: u64_at(b, 88).ok_or_else(short)?,
        udp: kind == KIND_UDP,
    })
}

/// Why a BPF source could not start (shown on the board and in the fallback's gap).
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("no kernel BTF (/sys/kernel/btf/vmlinux): {0}")]
    NoBtf(String),
    #[error("loading {what}: {detail}")]
    Load { what: &'static str, detail: String },
}

fn load_err(what: &'static str) -> impl Fn(&dyn std::fmt::Display) -> LoadError {
    move |e| LoadError::Load {
        what,
        detail: e.to_string(),
    }
}

/// Waits up to `timeout` until one of `fds` (at most two ring buffers) is readable.
/// False on timeout or a signal.
#[allow(unsafe_code)]
fn poll_readable(fds: &[std::os::fd::RawFd], timeout: Duration) -> io::Result<bool> {
    let mut pfds = [libc::pollfd {
        fd: -1,
        events: libc::POLLIN,
        revents: 0,
    }; 2];
    for (p, fd) in pfds.iter_mut().zip(fds) {
        p.fd = *fd;
    }
    let used = fds.len().min(pfds.len());
    let ms = libc::c_int::try_from(timeout.as_millis()).unwrap_or(libc::c_int::MAX);
    // SAFETY: `pfds` holds `used` (≤ its length) live, initialised pollfds at its start
    // and the count passed is `used`; poll writes only their `revents` during the call.
    let n = unsafe { libc::poll(pfds.as_mut_ptr(), used as libc::nfds_t, ms) };
    if n < 0 {
        let e = io::Error::last_os_error();
        return if e.raw_os_error() == Some(libc::EINTR) {
            Ok(false)
        } else {
            Err(e)
        };
    }
    Ok(n > 0)
}

/// Full error chain of an aya error (its Display alone often says only "the program
/// could not be loaded"; the source has the kernel's errno).
pub(super) fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let more = c.to_string();
        // aya's messages often repeat their source's text already.
        if !s.contains(&more) {
            s.push_str(": ");
            s.push_str(&more);
        }
        cur = c.source();
    }
    if s.contains("Operation not permitted") {
        s.push_str(" (needs root, or CAP_BPF and CAP_PERFMON)");
    }
    s
}

/// Gives the heap freed after loading back to the system: parsing the kernel's BTF
/// (several MB of types) leaves tens of MB of freed heap that glibc would otherwise
/// keep for the agent's whole life.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn release_freed_memory() {
    // SAFETY: malloc_trim only returns free heap pages to the kernel; it takes no
    // pointers and has no preconditions.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn release_freed_memory() {}

/// A loaded, attached program with its ring buffer and lost-record counter. The
/// programs stay attached while this lives.
pub struct Probe {
    _ebpf: Ebpf,
    ring: RingBuf<MapData>,
    lost: PerCpuArray<MapData, u64>,
    lost_seen: u64,
}

impl std::fmt::Debug for Probe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Probe")
            .field("lost_seen", &self.lost_seen)
            .finish_non_exhaustive()
    }
}

impl Probe {
    fn load(
        object: &[u8],
        what: &'static str,
        program: &str,
        tracepoint: &str,
        ring: &str,
        ring_bytes: u32,
        lost: &str,
    ) -> Result<Self, LoadError> {
        let btf = Btf::from_sys_fs().map_err(|e| LoadError::NoBtf(chain(&e)))?;
        let mut ebpf = EbpfLoader::new()
            .btf(Some(&btf))
            .set_max_entries(ring, ring_bytes)
            .load(object)
            .map_err(|e| load_err(what)(&chain(&e)))?;
        let prog: &mut BtfTracePoint = ebpf
            .program_mut(program)
            .ok_or_else(|| load_err(what)(&format!("no program {program} in the object")))?
            .try_into()
            .map_err(|e: aya::programs::ProgramError| load_err(what)(&chain(&e)))?;
        prog.load(tracepoint, &btf).map_err(|e| load_err(what)(&chain(&e)))?;
        prog.attach().map_err(|e| load_err(what)(&chain(&e)))?;
        drop(btf);
        Self::from_loaded(ebpf, what, ring, lost)
    }

    /// A loaded object whose programs are attached: its ring buffer `ring` and
    /// lost-record counter `lost` (other objects than the two above: `sensor::netcg`).
    pub(super) fn from_loaded(mut ebpf: Ebpf, what: &'static str, ring: &str, lost: &str) -> Result<Self, LoadError> {
        let ring_map = ebpf
            .take_map(ring)
            .ok_or_else(|| load_err(what)(&format!("no map {ring}")))?;
        let ring = RingBuf::try_from(ring_map).map_err(|e| load_err(what)(&chain(&e)))?;
        let lost_map = ebpf
            .take_map(lost)
            .ok_or_else(|| load_err(what)(&format!("no map {lost}")))?;
        let lost = PerCpuArray::try_from(lost_map).map_err(|e| load_err(what)(&chain(&e)))?;
        release_freed_memory();
        Ok(Probe {
            _ebpf: ebpf,
            ring,
            lost,
            lost_seen: 0,
        })
    }

    /// The exec program, attached.
    pub fn exec() -> Result<Self, LoadError> {
        Self::load(
            EXEC_OBJECT,
            "exec program",
            "ward_exec",
            "sched_process_exec",
            "events",
            EXEC_RING_BYTES,
            "lost",
        )
    }

    /// The TCP program, attached.
    pub fn net() -> Result<Self, LoadError> {
        Self::load(
            NET_OBJECT,
            "network program",
            "ward_tcp_state",
            "inet_sock_set_state",
            "net_events",
            NET_RING_BYTES,
            "net_lost",
        )
    }

    /// Waits up to `timeout` for records. False on timeout.
    pub(super) fn wait(&self, timeout: Duration) -> io::Result<bool> {
        poll_readable(&[self.ring.as_raw_fd()], timeout)
    }

    /// Waits up to `timeout` for records in this ring buffer or `other`'s. False on
    /// timeout.
    fn wait_with(&self, other: Option<&Probe>, timeout: Duration) -> io::Result<bool> {
        match other {
            Some(other) => poll_readable(&[self.ring.as_raw_fd(), other.ring.as_raw_fd()], timeout),
            None => self.wait(timeout),
        }
    }

    /// Records the kernel could not queue since the last call.
    pub(super) fn newly_lost(&mut self) -> u64 {
        let total: u64 = self
            .lost
            .get(&0, 0)
            .map(|per_cpu| per_cpu.iter().copied().fold(0u64, u64::saturating_add))
            .unwrap_or(self.lost_seen);
        let new = total.saturating_sub(self.lost_seen);
        self.lost_seen = total;
        new
    }

    /// Hands every queued record to `each` (copied out: the kernel may reuse the space
    /// once `each` returns), up to `max`. Returns how many were handled.
    pub(super) fn drain(&mut self, max: usize, mut each: impl FnMut(&[u8]) -> bool) -> usize {
        let mut n = 0;
        while n < max {
            let Some(item) = self.ring.next() else {
                break;
            };
            n += 1;
            if !each(&item) {
                break;
            }
        }
        n
    }
}

/// Ring buffer sizes, set at load (the exec and UDP objects say more). The kernel maps a
/// ring's pages twice into the agent (so a record can wrap), and they all count in
/// its resident memory: 1 MiB costs 2 MiB of RSS. An exec record is 2.6-7 KB, so the
/// exec ring holds 150-400 execs, several hundred milliseconds of a busy build host's
/// execs while the reader waits [`COALESCE`] or is not scheduled; losses are counted
/// and reported as gaps.
const EXEC_RING_BYTES: u32 = 1024 * 1024;
const NET_RING_BYTES: u32 = 512 * 1024;
/// UDP and DNS records (DNS ones carry up to 512 bytes of the message).
pub(super) const UDP_RING_BYTES: u32 = 512 * 1024;

/// After the ring buffer says it has records, wait this long before reading them, so a
/// stream of events is read (and handed to detection) in batches rather than one
/// wake-up per event; the ring buffers hold far more than arrives in this time (the
/// exec ring 3,000-8,000 execs a second of it). 50 ms against 25: a fifth less CPU at
/// 1,000 execs/s + 1,000 connections/s, alerts at most 25 ms later (BENCHMARKS.md).
const COALESCE: Duration = Duration::from_millis(50);

/// The batch buffers keep their room from one read to the next (growing a fresh
/// vector per read made glibc consolidate its free lists on every read), but not the
/// room of a rare burst.
const BATCH_KEEP: usize = 256;

fn recycle<T>(v: &mut Vec<T>) {
    v.clear();
    if v.capacity() > BATCH_KEEP {
        v.shrink_to(BATCH_KEEP);
    }
}

/// Counts what it lost and reports it as a gap, at most once a second.
struct LossReport {
    last: Instant,
    pending_lost: u64,
    pending_bad: u64,
}

impl LossReport {
    fn new() -> Self {
        LossReport {
            last: Instant::now(),
            pending_lost: 0,
            pending_bad: 0,
        }
    }

    fn tick(&mut self, probe: &mut Probe, ctx: &SensorCtx, what: &str) {
        if self.last.elapsed() < Duration::from_secs(1) {
            return;
        }
        self.last = Instant::now();
        let lost = probe.newly_lost();
        ctx.lost(lost);
        self.pending_lost += lost;
        if self.pending_lost > 0 {
            let g = super::gap(
                ctx.sensor(),
                format!(
                    "eBPF ring buffer full: {} {what} events lost in the kernel",
                    self.pending_lost
                ),
            );
            if ctx.try_emit(g) {
                self.pending_lost = 0;
            }
        }
        if self.pending_bad > 0 {
            let g = super::gap(
                ctx.sensor(),
                format!("{} malformed eBPF {what} records dropped", self.pending_bad),
            );
            if ctx.try_emit(g) {
                self.pending_bad = 0;
            }
        }
    }
}

fn running_processes() -> usize {
    std::fs::read_dir("/proc")
        .map(|d| {
            d.filter_map(Result::ok)
                .filter(|e| {
                    e.file_name()
                        .to_str()
                        .is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()))
                })
                .count()
        })
        .unwrap_or(0)
}

/// Reports execs from the loaded exec program until the sensor is stopped.
pub fn run_exec(probe: &mut Probe, tracker: &ProcessTracker, ctx: &SensorCtx) -> Result<(), SensorError> {
    if !ctx.gap(format!(
        "baseline: {} processes already running when the sensor started were not reported as new",
        running_processes()
    )) {
        return Ok(());
    }
    ctx.ready("eBPF sched_process_exec");
    let mut report = LossReport::new();
    let mut pruned = Instant::now();
    let mut records: Vec<ExecRecord> = Vec::new();
    let mut events: Vec<EventData> = Vec::new();
    while !ctx.stopped() {
        if probe
            .wait(Duration::from_millis(250))
            .map_err(|e| SensorError::io("eBPF exec ring buffer poll", e))?
        {
            std::thread::sleep(COALESCE);
        }
        let mut bad = 0u64;
        probe.drain(4096, |b| {
            match decode_exec(b) {
                Ok(r) => records.push(r),
                Err(e) => {
                    bad += 1;
                    tracing::debug!(error = %e, "malformed eBPF exec record");
                }
            }
            true
        });
        report.pending_bad += bad;
        events.extend(records.iter().map(|rec| EventData::Process(tracker.from_kernel(rec))));
        recycle(&mut records);
        if !ctx.emit_all(events.drain(..)) {
            return Ok(());
        }
        recycle(&mut events);
        report.tick(probe, ctx, "exec");
        if pruned.elapsed() >= Duration::from_secs(30) {
            let before = Instant::now();
            tracker.prune_exited(before);
            pruned = before;
            if let Some(detail) = tracker.hash_budget_report()
                && !ctx.gap(detail)
            {
                return Ok(());
            }
        }
    }
    Ok(())
}

/// Who listens on which local port, from listen events and /proc at start: an accepted
/// connection is the listening process's.
#[derive(Debug, Default)]
pub struct Listeners {
    by_port: HashMap<u16, NetOwner>,
}

impl Listeners {
    /// The processes listening on TCP ports now, from /proc/net/tcp{,6} and the
    /// sockets each process holds.
    pub fn from_proc(proc_root: &Path) -> Self {
        let mut inodes: HashMap<u64, u16> = HashMap::new();
        for table in ["net/tcp", "net/tcp6"] {
            if let Ok(text) = std::fs::read_to_string(proc_root.join(table)) {
                inodes.extend(parse_listening(&text));
            }
        }
        let mut by_port = HashMap::new();
        if inodes.is_empty() {
            return Listeners { by_port };
        }
        let Ok(dir) = std::fs::read_dir(proc_root) else {
            return Listeners { by_port };
        };
        for entry in dir.filter_map(Result::ok) {
            let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
                continue;
            };
            let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else {
                continue;
            };
            for fd in fds.filter_map(Result::ok) {
                let Ok(target) = std::fs::read_link(fd.path()) else {
                    continue;
                };
                let inode = target
                    .to_str()
                    .and_then(|t| t.strip_prefix("socket:["))
                    .and_then(|t| t.strip_suffix(']'))
                    .and_then(|t| t.parse::<u64>().ok());
                if let Some(port) = inode.and_then(|i| inodes.get(&i)) {
                    by_port.entry(*port).or_insert(NetOwner {
                        pid,
                        tgid: pid,
                        ..NetOwner::default()
                    });
                }
            }
        }
        Listeners { by_port }
    }

    /// Remembers the process listening on `port`.
    pub fn listen(&mut self, port: u16, owner: NetOwner) {
        self.by_port.insert(port, owner);
    }

    /// The process listening on `port`, if known.
    pub fn owner(&self, port: u16) -> Option<&NetOwner> {
        self.by_port.get(&port)
    }
}

/// (inode, local port) of each listening socket in a /proc/net/tcp table.
fn parse_listening(text: &str) -> impl Iterator<Item = (u64, u16)> + '_ {
    text.lines().skip(1).filter_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        // sl local_address rem_address st ... inode (field 9); st 0A is LISTEN.
        if f.get(3) != Some(&"0A") {
            return None;
        }
        let port = u16::from_str_radix(f.get(1)?.rsplit(':').next()?, 16).ok()?;
        let inode = f.get(9)?.parse().ok()?;
        Some((inode, port))
    })
}

/// Folds repeats of the same (process, operation, remote address and port) within a
/// window, so one busy process cannot flood the agent; counts what it folded.
#[derive(Debug)]
pub struct Dedup {
    window: Duration,
    seen: HashMap<(u32, NetOp, IpAddr, u16), Instant>,
    /// Repeats folded since the start.
    pub folded: u64,
}

const DEDUP_MAX_ENTRIES: usize = 65_536;

impl Dedup {
    /// Folds within `window` (zero: never).
    pub fn new(window: Duration) -> Self {
        Dedup {
            window,
            seen: HashMap::new(),
            folded: 0,
        }
    }

    /// True when the event is new (to report), false when it repeats one reported
    /// less than the window ago.
    pub fn admit(&mut self, tgid: u32, op: NetOp, remote: SocketAddr, now: Instant) -> bool {
        if self.window.is_zero() {
            return true;
        }
        // Listeners repeat nothing; an accept's remote port is the client's ephemeral
        // one, so accepts fold on the client's address and the local service.
        let key = (tgid, op, remote.ip(), remote.port());
        if let Some(at) = self.seen.get(&key)
            && now.duration_since(*at) < self.window
        {
            self.folded += 1;
            return false;
        }
        if self.seen.len() >= DEDUP_MAX_ENTRIES {
            let window = self.window;
            self.seen.retain(|_, at| now.duration_since(*at) < window);
            if self.seen.len() >= DEDUP_MAX_ENTRIES {
                self.seen.clear();
            }
        }
        self.seen.insert(key, now);
        true
    }
}

/// Turns a kernel record into the event: the process named through the tracker (what
/// the exec source saw, else /proc), the initiating side as the source.
/// `hostname`: the name a DNS answer gave the destination.
fn network_event(rec: &NetRecord, process: ProcessEvent, hostname: Option<String>) -> NetworkEvent {
    let (source, destination) = match rec.op {
        NetOp::Connect => (rec.local, Some(rec.remote)),
        NetOp::Accept => (rec.remote, Some(rec.local)),
        NetOp::Listen => (rec.local, None),
    };
    NetworkEvent {
        op: rec.op,
        protocol: if rec.udp { "udp" } else { "tcp" }.into(),
        source_ip: source.ip(),
        source_port: source.port(),
        destination_ip: destination.map(|d| d.ip()),
        destination_port: destination.map(|d| d.port()),
        // A UDP "connection" is a datagram sent (or a connect, which sends nothing).
        established: rec.op != NetOp::Connect || rec.established || rec.udp,
        process,
        destination_hostname: hostname,
    }
}

/// How long a DNS query waits for its response before it is reported alone.
const DNS_ANSWER_WAIT: Duration = Duration::from_secs(2);
/// Addresses remembered with the name a DNS answer gave them.
const HOSTNAMES: usize = 4096;

/// Reports TCP connects, accepts and listens from the loaded network program, and UDP
/// connects, sends and binds and DNS lookups from the cgroup programs (`udp`: None
/// when configured off, else loaded or why not), until the sensor is stopped.
pub fn run_net(
    config: &SensorConfig,
    probe: &mut Probe,
    mut udp: Option<Result<Probe, LoadError>>,
    tracker: &ProcessTracker,
    ctx: &SensorCtx,
) -> Result<(), SensorError> {
    let mut listeners = Listeners::from_proc(Path::new("/proc"));
    let tcp_source = "eBPF inet_sock_set_state (TCP connect, accept, listen)";
    let mut what = Vec::new();
    if config.network_udp_enabled {
        what.push("UDP connect, sendto, bind");
    }
    if config.dns_enabled {
        what.push("DNS on UDP port 53");
    }
    let source = match &udp {
        Some(Ok(_)) => format!("{tcp_source}; eBPF cgroup hooks ({})", what.join("; ")),
        _ => tcp_source.to_string(),
    };
    let degraded = match &udp {
        Some(Err(e)) => {
            let why = format!("{} not seen ({e}); TCP connections are reported", what.join(" and "));
            tracing::warn!(%why, "network sensor degraded");
            if !ctx.gap(why.clone()) {
                return Ok(());
            }
            Some(why)
        }
        _ => None,
    };
    let show = |extra: &str| match &degraded {
        Some(why) => ctx.degraded(format!("{source}{extra}"), why.clone()),
        None => ctx.ready(format!("{source}{extra}")),
    };
    show("");
    let mut udp = match udp.take() {
        Some(Ok(p)) => Some(p),
        _ => None,
    };
    let mut report = LossReport::new();
    let mut udp_report = LossReport::new();
    let mut dedup = Dedup::new(Duration::from_millis(config.network_dedup_ms));
    let mut folded_shown = 0u64;
    let (mut dns_malformed, mut malformed_shown) = (0u64, 0u64);
    let mut shown_at = Instant::now();
    // The executable sent for each socket, until its record comes.
    let mut exes: HashMap<u64, String> = HashMap::new();
    let mut lookups = super::netcg::Lookups::new(DNS_ANSWER_WAIT);
    let mut hostnames = super::netcg::Hostnames::new(HOSTNAMES);
    // A drain that stopped at its cap left records behind: read on without waiting.
    let mut backlog = false;
    let mut records: Vec<NetRecord> = Vec::new();
    let mut dns: Vec<super::netcg::DnsRecord> = Vec::new();
    let mut events: Vec<EventData> = Vec::new();
    while !ctx.stopped() {
        if !backlog
            && probe
                .wait_with(udp.as_ref(), Duration::from_millis(250))
                .map_err(|e| SensorError::io("eBPF network ring buffer poll", e))?
        {
            std::thread::sleep(COALESCE);
        }
        let mut bad = 0u64;
        let mut keep_exe = |e: NetExe| {
            if exes.len() >= 16_384 {
                exes.clear();
            }
            exes.insert(e.sk, e.exe);
        };
        backlog = probe.drain(4096, |b| {
            match decode_net_item(b) {
                Ok(NetItem::Net(r)) => records.push(r),
                Ok(NetItem::Exe(e)) => keep_exe(e),
                Err(e) => {
                    bad += 1;
                    tracing::debug!(error = %e, "malformed eBPF network record");
                }
            }
            true
        }) >= 4096;
        report.pending_bad += bad;
        let mut bad_udp = 0u64;
        if let Some(u) = udp.as_mut() {
            backlog |= u.drain(4096, |b| {
                match super::netcg::decode_udp_item(b) {
                    Ok(super::netcg::UdpItem::Net(NetItem::Net(r))) => records.push(r),
                    Ok(super::netcg::UdpItem::Net(NetItem::Exe(e))) => keep_exe(e),
                    Ok(super::netcg::UdpItem::Dns(d)) => dns.push(d),
                    Err(e) => {
                        bad_udp += 1;
                        tracing::debug!(error = %e, "malformed eBPF UDP record");
                    }
                }
                true
            }) >= 4096;
        }
        let now = Instant::now();
        // DNS first: a connection made right after a lookup is named by its answer.
        let mut done = lookups.expired(now);
        for d in &dns {
            match super::netcg::parse_dns(&d.payload, d.cut) {
                Ok(msg) if msg.response == d.response => done.extend(lookups.message(d, msg, now)),
                // Not DNS (anything may use port 53): counted on the board, not a gap,
                // since it is no blind spot of the sensor's.
                Ok(_) => {
                    dns_malformed += 1;
                    tracing::debug!("DNS message in the wrong direction for its flag");
                }
                Err(e) => {
                    dns_malformed += 1;
                    tracing::debug!(error = %e, "malformed DNS message");
                }
            }
        }
        udp_report.pending_bad += bad_udp;
        for l in done {
            hostnames.learn(&l, now);
            if !config.dns_enabled {
                continue;
            }
            let process = match &l.owner {
                Some(o) => tracker.network_process(
                    o.tgid,
                    o.start_ns,
                    o.uid,
                    &o.comm,
                    exes.get(&l.cookie).map(String::as_str),
                ),
                None => ProcessEvent::default(),
            };
            events.push(EventData::Dns(Box::new(dns_event(&l, process))));
        }
        recycle(&mut dns);
        for rec in records.drain(..) {
            let owner = match (&rec.owner, rec.op) {
                (Some(o), NetOp::Listen) => {
                    if !rec.udp {
                        listeners.listen(rec.local.port(), o.clone());
                    }
                    Some(o.clone())
                }
                (Some(o), _) => Some(o.clone()),
                (None, _) => listeners.owner(rec.local.port()).cloned(),
            };
            // A UDP socket's executable stays for its DNS messages (the map is bounded).
            let exe = if rec.udp {
                exes.get(&rec.sk).cloned()
            } else {
                exes.remove(&rec.sk)
            };
            let tgid = owner.as_ref().map(|o| o.tgid).unwrap_or(0);
            if !dedup.admit(tgid, rec.op, dedup_peer(&rec), now) {
                continue;
            }
            let process = match &owner {
                Some(o) => tracker.network_process(o.tgid, o.start_ns, o.uid, &o.comm, exe.as_deref()),
                None => ProcessEvent::default(),
            };
            // The destination's name: a connect's remote end (an accept's destination
            // is this host).
            let hostname = (rec.op == NetOp::Connect)
                .then(|| hostnames.get(&rec.remote.ip(), now))
                .flatten()
                .map(str::to_string);
            events.push(EventData::Network(Box::new(network_event(&rec, process, hostname))));
        }
        recycle(&mut records);
        if !ctx.emit_all(events.drain(..)) {
            return Ok(());
        }
        recycle(&mut events);
        report.tick(probe, ctx, "network");
        if let Some(u) = udp.as_mut() {
            udp_report.tick(u, ctx, "UDP and DNS");
        }
        if (dedup.folded != folded_shown || dns_malformed != malformed_shown)
            && shown_at.elapsed() >= Duration::from_secs(10)
        {
            folded_shown = dedup.folded;
            malformed_shown = dns_malformed;
            shown_at = Instant::now();
            let mut extra = String::new();
            if folded_shown > 0 {
                extra.push_str(&format!(
                    "; {folded_shown} repeated connections folded (same process and peer within {} ms)",
                    config.network_dedup_ms
                ));
            }
            if malformed_shown > 0 {
                extra.push_str(&format!("; {malformed_shown} malformed DNS messages dropped"));
            }
            show(&extra);
        }
    }
    Ok(())
}

/// What repeats of a record are recognised by: the peer, or for a listener (which
/// has none) the local address it listens on, so two ports listened on are two events.
fn dedup_peer(rec: &NetRecord) -> SocketAddr {
    match rec.op {
        NetOp::Listen => rec.local,
        NetOp::Connect | NetOp::Accept => rec.remote,
    }
}

/// Turns a paired DNS lookup into the event.
fn dns_event(l: &super::netcg::Lookup, process: ProcessEvent) -> DnsEvent {
    let (status, answers) = match &l.response {
        Some(r) => (Some(r.rcode.clone()), r.answers.clone()),
        None => (None, Vec::new()),
    };
    DnsEvent {
        query_name: l.query.name.clone(),
        query_type: l.query.qtype.clone(),
        status,
        answers,
        server_ip: Some(l.server.ip()),
        server_port: l.server.port(),
        process,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    /// An exec record laid out as exec.bpf.c writes it.
    fn exec_bytes(exe: &[&str], cwd: &[&str], filename: &str, args: &[u8], flags: u32) -> Vec<u8> {
        let mut b = vec![0u8; EXEC_ARGS_AT];
        let put = |b: &mut Vec<u8>, at: usize, v: u32| b[at..at + 4].copy_from_slice(&v.to_le_bytes());
        put(&mut b, 0, KIND_EXEC);
        put(&mut b, 4, flags);
        put(&mut b, 8, 4321);
        put(&mut b, 12, 4321);
        put(&mut b, 16, 77);
        put(&mut b, 20, 1000);
        put(&mut b, 24, 1001);
        put(&mut b, 28, 0);
        put(&mut b, 32, 1000);
        put(&mut b, 36, 5);
        b[40..48].copy_from_slice(&123_450_000_000u64.to_le_bytes());
        b[48..56].copy_from_slice(&100_000_000_000u64.to_le_bytes());
        b[EXEC_CGROUP_AT..EXEC_CGROUP_AT + 8].copy_from_slice(&9876u64.to_le_bytes());
        put(&mut b, EXEC_MNT_NS_AT, 4_026_531_841);
        put(&mut b, EXEC_PID_NS_AT, 4_026_531_836);
        put(&mut b, EXEC_TTY_MAJOR_AT, 136);
        put(&mut b, EXEC_TTY_MINOR_AT, 3);
        b[EXEC_TTY_AT..EXEC_TTY_AT + 5].copy_from_slice(b"pts3\0");
        let write_path = |b: &mut Vec<u8>, at: usize, len_at: usize, parts: &[&str]| {
            let mut off = 0;
            for p in parts {
                b[at + off..at + off + p.len()].copy_from_slice(p.as_bytes());
                off += p.len() + 1;
            }
            put(b, len_at, off as u32);
        };
        write_path(&mut b, EXEC_EXE_AT, 56, exe);
        write_path(&mut b, EXEC_CWD_AT, 60, cwd);
        b[EXEC_FILENAME_AT..EXEC_FILENAME_AT + filename.len()].copy_from_slice(filename.as_bytes());
        put(&mut b, 64, filename.len() as u32 + 1);
        put(&mut b, 68, args.len() as u32);
        b.extend_from_slice(args);
        b
    }

    #[test]
    fn decodes_an_exec_record() {
        let b = exec_bytes(
            &["dash", "bin", "usr"],
            &["alice", "home"],
            "/bin/sh",
            b"sh\0-c\0echo hi there\0",
            0,
        );
        let r = decode_exec(&b).unwrap();
        assert_eq!((r.tgid, r.ppid, r.uid, r.gid, r.euid), (4321, 77, 1000, 1001, 0));
        assert_eq!((r.loginuid, r.sessionid), (1000, 5));
        assert_eq!((r.start_ns, r.parent_start_ns), (123_450_000_000, 100_000_000_000));
        assert_eq!(r.exe, "/usr/bin/dash");
        assert_eq!(r.image(), "/usr/bin/dash");
        assert_eq!(r.filename, "/bin/sh");
        assert_eq!(r.cwd, "/home/alice");
        assert_eq!(r.argv, vec!["sh", "-c", "echo hi there"]);
        assert_eq!(r.cmdline(), "sh -c echo hi there");
        assert!(!r.args_cut && !r.path_cut && !r.exe_deleted);
        assert_eq!((r.cgroup_id, r.mnt_ns, r.pid_ns), (9876, 4_026_531_841, 4_026_531_836));
        assert_eq!(r.tty, "pts/3");
        assert_eq!((r.stdin_pipe, r.stdout_pipe, r.exe_key), (None, None, None));
        // Pipes on stdin and stdout, and the executable's version (with its flag).
        let mut p = exec_bytes(&["bash", "bin"], &[], "bash", b"bash\0", FLAG_EXE_ID);
        p[EXEC_STDIN_PIPE_AT..EXEC_STDIN_PIPE_AT + 8].copy_from_slice(&123_456u64.to_le_bytes());
        p[EXEC_EXE_INO_AT..EXEC_EXE_INO_AT + 8].copy_from_slice(&42u64.to_le_bytes());
        p[EXEC_EXE_SIZE_AT..EXEC_EXE_SIZE_AT + 8].copy_from_slice(&1_234_376u64.to_le_bytes());
        p[EXEC_EXE_MTIME_SEC_AT..EXEC_EXE_MTIME_SEC_AT + 8].copy_from_slice(&1_700_000_000i64.to_le_bytes());
        p[EXEC_EXE_MTIME_NSEC_AT..EXEC_EXE_MTIME_NSEC_AT + 4].copy_from_slice(&5u32.to_le_bytes());
        // Device 254:1 in the kernel's encoding.
        p[EXEC_EXE_DEV_AT..EXEC_EXE_DEV_AT + 4].copy_from_slice(&((254u32 << 20) | 1).to_le_bytes());
        let r = decode_exec(&p).unwrap();
        assert_eq!((r.stdin_pipe, r.stdout_pipe), (Some(123_456), None));
        let key = r.exe_key.unwrap();
        assert_eq!(
            (key.ino, key.size, key.mtime_ns),
            (42, 1_234_376, 1_700_000_000_000_000_005)
        );
        assert_eq!(key.dev, libc::makedev(254, 1));
        // No controlling tty: an empty name; a device ps has no name for: the kernel's.
        let mut b = b.clone();
        b[EXEC_TTY_MAJOR_AT..EXEC_TTY_AT + EXEC_TTY_CAP].fill(0);
        assert_eq!(decode_exec(&b).unwrap().tty, "");
        b[EXEC_TTY_MAJOR_AT..EXEC_TTY_MAJOR_AT + 4].copy_from_slice(&188u32.to_le_bytes());
        // A name filling its area without a NUL is taken up to the area's end.
        b[EXEC_TTY_AT..EXEC_TTY_AT + EXEC_TTY_CAP].fill(b'x');
        assert_eq!(decode_exec(&b).unwrap().tty, "x".repeat(EXEC_TTY_CAP));
    }

    #[test]
    fn cut_and_odd_exec_records() {
        // argv cut mid-argument: the last one is kept as far as it goes.
        let r = decode_exec(&exec_bytes(
            &[],
            &[],
            "./x",
            b"x\0aaaa",
            FLAG_ARGS_CUT | FLAG_CWD_CUT | FLAG_EXE_DELETED,
        ))
        .unwrap();
        assert!(r.exe_deleted);
        assert_eq!(r.argv, vec!["x", "aaaa"]);
        assert!(r.args_cut && r.path_cut);
        assert_eq!((r.exe.as_str(), r.image(), r.cwd.as_str()), ("", "./x", "/"));
        // Not valid UTF-8: replaced, not refused.
        let r = decode_exec(&exec_bytes(&["b\u{e9}"], &[], "/b", b"\xff\0", 0)).unwrap();
        assert_eq!(r.argv, vec!["\u{fffd}"]);
        assert_eq!(r.exe, "/b\u{e9}");
    }

    #[test]
    fn malformed_exec_records_are_refused() {
        let good = exec_bytes(&["true", "bin"], &[], "/bin/true", b"true\0", 0);
        assert_eq!(decode_exec(&good[..10]), Err(DecodeError::Short(10)));
        let mut b = good.clone();
        b[0] = 9;
        assert_eq!(decode_exec(&b), Err(DecodeError::Kind(9)));
        // A length beyond its region, or beyond the bytes received.
        let mut b = good.clone();
        b[56..60].copy_from_slice(&5000u32.to_le_bytes());
        assert!(matches!(decode_exec(&b), Err(DecodeError::Length { field: "exe", .. })));
        let mut b = good.clone();
        b[68..72].copy_from_slice(&100u32.to_le_bytes());
        assert!(matches!(
            decode_exec(&b),
            Err(DecodeError::Length { field: "args", .. })
        ));
    }

    fn net_bytes(op: u8, family: u8, local: (&[u8], u16), remote: (&[u8], u16), flags: u8) -> Vec<u8> {
        let mut b = vec![0u8; NET_SIZE];
        b[0..4].copy_from_slice(&KIND_NET.to_le_bytes());
        b[4] = op;
        b[5] = family;
        b[6] = flags;
        b[8..10].copy_from_slice(&local.1.to_le_bytes());
        b[10..12].copy_from_slice(&remote.1.to_le_bytes());
        b[16..16 + local.0.len()].copy_from_slice(local.0);
        b[32..32 + remote.0.len()].copy_from_slice(remote.0);
        b[48..52].copy_from_slice(&900u32.to_le_bytes());
        b[52..56].copy_from_slice(&900u32.to_le_bytes());
        b[56..60].copy_from_slice(&33u32.to_le_bytes());
        b[64..72].copy_from_slice(&5_000_000u64.to_le_bytes());
        b[72..76].copy_from_slice(b"curl");
        b[88..96].copy_from_slice(&0xffff_8880_1234_5678u64.to_le_bytes());
        b
    }

    #[test]
    fn decodes_network_records() {
        let r = decode_net(&net_bytes(1, 4, (&[10, 0, 0, 5], 40000), (&[203, 0, 113, 7], 443), 1)).unwrap();
        assert_eq!(r.op, NetOp::Connect);
        assert!(r.established);
        assert_eq!(r.local, "10.0.0.5:40000".parse().unwrap());
        assert_eq!(r.remote, "203.0.113.7:443".parse().unwrap());
        let o = r.owner.unwrap();
        assert_eq!(
            (o.pid, o.tgid, o.uid, o.start_ns, o.comm.as_str()),
            (900, 900, 33, 5_000_000, "curl")
        );
        // v6, and a v4 peer on a dual-stack socket.
        let mut v6 = [0u8; 16];
        v6[15] = 1;
        let mut mapped = [0u8; 16];
        mapped[10] = 0xff;
        mapped[11] = 0xff;
        mapped[12..].copy_from_slice(&[192, 0, 2, 1]);
        let r = decode_net(&net_bytes(2, 6, (&v6, 22), (&mapped, 51000), 0)).unwrap();
        assert_eq!(r.op, NetOp::Accept);
        assert_eq!(r.local, "[::1]:22".parse().unwrap());
        assert_eq!(r.remote, "192.0.2.1:51000".parse().unwrap());
        assert!(
            r.owner.is_none(),
            "an accept's process is the listener's, named by the agent"
        );
        assert!(!r.udp);
        // udp.bpf.c's UDP record: the same layout, its own kind.
        let mut b = net_bytes(1, 4, (&[0, 0, 0, 0], 0), (&[192, 0, 2, 9], 53), 2);
        b[0..4].copy_from_slice(&KIND_UDP.to_le_bytes());
        let r = decode_net(&b).unwrap();
        assert!(r.udp && r.op == NetOp::Connect);
        assert_eq!(network_event(&r, ProcessEvent::default(), None).protocol, "udp");
    }

    #[test]
    fn decodes_the_executable_sent_for_a_socket() {
        let mut b = vec![0u8; NET_EXE_AT];
        b[0..4].copy_from_slice(&KIND_NET_EXE.to_le_bytes());
        b[8..16].copy_from_slice(&77u64.to_le_bytes());
        b[16..20].copy_from_slice(&900u32.to_le_bytes());
        b.extend_from_slice(b"nc\0bin\0usr\0");
        b[4..8].copy_from_slice(&11u32.to_le_bytes());
        let want = NetExe {
            sk: 77,
            tgid: 900,
            exe: "/usr/bin/nc".into(),
        };
        assert_eq!(decode_net_item(&b), Ok(NetItem::Exe(want)));
        b[4..8].copy_from_slice(&5000u32.to_le_bytes());
        assert!(matches!(decode_net_item(&b), Err(DecodeError::Length { .. })));
        let net = net_bytes(1, 4, (&[10, 0, 0, 5], 1), (&[10, 0, 0, 6], 2), 0);
        assert!(matches!(decode_net_item(&net), Ok(NetItem::Net(_))));
    }

    #[test]
    fn malformed_network_records_are_refused() {
        let good = net_bytes(3, 4, (&[0, 0, 0, 0], 8080), (&[0, 0, 0, 0], 0), 0);
        assert!(decode_net(&good).is_ok());
        assert_eq!(decode_net(&good[..40]), Err(DecodeError::Short(40)));
        let mut b = good.clone();
        b[4] = 9;
        assert_eq!(decode_net(&b), Err(DecodeError::Op(9)));
        let mut b = good.clone();
        b[5] = 5;
        assert_eq!(decode_net(&b), Err(DecodeError::Family(5)));
        let mut b = good;
        b[0] = 1;
        assert_eq!(decode_net(&b), Err(DecodeError::Kind(1)));
    }

    #[test]
    fn the_initiating_side_is_the_source() {
        let rec = |op| NetRecord {
            op,
            established: true,
            local: "10.0.0.5:8080".parse().unwrap(),
            remote: "198.51.100.9:50000".parse().unwrap(),
            owner: None,
            sk: 1,
            udp: false,
        };
        let c = network_event(&rec(NetOp::Connect), ProcessEvent::default(), None);
        assert_eq!(
            (c.source_ip.to_string(), c.destination_port),
            ("10.0.0.5".into(), Some(50000))
        );
        assert_eq!(c.remote_ip(), Some("198.51.100.9".parse().unwrap()));
        let a = network_event(&rec(NetOp::Accept), ProcessEvent::default(), None);
        assert_eq!((a.source_ip.to_string(), a.source_port), ("198.51.100.9".into(), 50000));
        assert_eq!((a.destination_port, a.remote_ip()), (Some(8080), Some(a.source_ip)));
        let l = network_event(&rec(NetOp::Listen), ProcessEvent::default(), None);
        assert_eq!((l.source_port, l.destination_ip, l.remote_ip()), (8080, None, None));
        let mut refused = rec(NetOp::Connect);
        refused.established = false;
        assert!(!network_event(&refused, ProcessEvent::default(), None).established);
    }

    #[test]
    fn repeats_fold_within_the_window_and_are_counted() {
        let t0 = Instant::now();
        let peer: SocketAddr = "198.51.100.9:443".parse().unwrap();
        let mut d = Dedup::new(Duration::from_millis(1000));
        assert!(d.admit(7, NetOp::Connect, peer, t0));
        assert!(!d.admit(7, NetOp::Connect, peer, t0 + Duration::from_millis(10)));
        assert!(d.admit(8, NetOp::Connect, peer, t0), "another process");
        assert!(d.admit(7, NetOp::Accept, peer, t0), "another operation");
        assert!(d.admit(7, NetOp::Connect, "198.51.100.9:80".parse().unwrap(), t0));
        assert!(d.admit(7, NetOp::Connect, peer, t0 + Duration::from_millis(1000)));
        assert_eq!(d.folded, 1);
        // Listeners fold on the address they listen on.
        let listen = |port: u16| NetRecord {
            op: NetOp::Listen,
            established: true,
            local: SocketAddr::new("0.0.0.0".parse().unwrap(), port),
            remote: "0.0.0.0:0".parse().unwrap(),
            owner: None,
            sk: 1,
            udp: true,
        };
        assert!(d.admit(7, NetOp::Listen, dedup_peer(&listen(53)), t0));
        assert!(d.admit(7, NetOp::Listen, dedup_peer(&listen(5353)), t0), "another port");
        assert!(!d.admit(7, NetOp::Listen, dedup_peer(&listen(53)), t0));
        assert_eq!(d.folded, 2);
        let mut off = Dedup::new(Duration::ZERO);
        assert!(off.admit(7, NetOp::Connect, peer, t0) && off.admit(7, NetOp::Connect, peer, t0));
    }

    #[test]
    fn listening_sockets_from_proc_net_tcp() {
        let text = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4242 1 0 100 0 0 10 0\n   1: 0100007F:A1B2 0100007F:1F90 01 00000000:00000000 00:00000000 00000000     0        0 4343 1 0 20 4 30 10 -1\n";
        let got: Vec<(u64, u16)> = parse_listening(text).collect();
        assert_eq!(got, vec![(4242, 8080)]);
    }

    /// The real kernel: an exec of a process that exits at once arrives with its argv,
    /// parent, paths and the same start time /proc gives; a loopback connect and its
    /// accept arrive with the right ports and process. Needs root: fails saying so.
    #[test]
    fn the_kernel_names_a_pipelines_pipes_and_the_executables_version() {
        assert!(
            crate::sensor::test_is_root(),
            "needs root (CAP_BPF, CAP_PERFMON) to load eBPF programs"
        );
        let mut exec = Probe::exec().unwrap();
        let marker = format!("ward-pipe-{}", std::process::id());
        let script = format!("/bin/echo {marker} | /bin/cat > /dev/null");
        let status = std::process::Command::new("/bin/sh")
            .args(["-c", &script])
            .status()
            .unwrap();
        assert!(status.success());
        let (mut writer, mut reader) = (None, None);
        let deadline = Instant::now() + Duration::from_secs(5);
        while (writer.is_none() || reader.is_none()) && Instant::now() < deadline {
            exec.wait(Duration::from_millis(100)).unwrap();
            exec.drain(usize::MAX, |b| {
                if let Ok(r) = decode_exec(b) {
                    if r.argv == ["/bin/echo", marker.as_str()] {
                        writer = Some(r);
                    } else if r.argv == ["/bin/cat"] && r.stdin_pipe.is_some() {
                        reader = Some(r);
                    }
                }
                true
            });
        }
        let (w, r) = (writer.expect("echo's exec"), reader.expect("cat's exec"));
        assert!(w.stdout_pipe.is_some(), "{w:?}");
        assert_eq!(w.stdout_pipe, r.stdin_pipe, "one pipe between them");
        assert_eq!(r.stdout_pipe, None, "cat writes to /dev/null, not a pipe");
        let cat = std::fs::metadata(std::fs::canonicalize("/bin/cat").unwrap()).unwrap();
        assert_eq!(
            r.exe_key,
            Some(super::super::hash::FileKey::of(&cat)),
            "the key stat gives"
        );
    }

    #[test]
    fn the_kernel_reports_an_exec_and_a_connection() {
        assert!(
            crate::sensor::test_is_root(),
            "needs root (CAP_BPF, CAP_PERFMON) to load eBPF programs"
        );
        let mut exec = Probe::exec().unwrap();
        let mut net = Probe::net().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let mut child = std::process::Command::new("/bin/sh")
            .args(["-c", "exit 0", "ward-test-arg"])
            .current_dir(dir.path())
            .spawn()
            .unwrap();
        let pid = child.id();
        child.wait().unwrap();
        // A program deleted before it runs (run through its open descriptor).
        let script = format!(
            "cp /bin/true {d}/gone && exec 3<{d}/gone && rm {d}/gone && exec /proc/self/fd/3 ward-deleted",
            d = dir.path().display()
        );
        let mut gone = std::process::Command::new("/bin/sh")
            .args(["-c", &script])
            .spawn()
            .unwrap();
        let gone_pid = gone.id();
        assert!(gone.wait().unwrap().success());
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let client = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        let client_port = client.local_addr().unwrap().port();
        let (_server, _) = listener.accept().unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        let (mut found, mut deleted) = (None, None);
        while (found.is_none() || deleted.is_none()) && Instant::now() < deadline {
            exec.wait(Duration::from_millis(100)).unwrap();
            exec.drain(usize::MAX, |b| {
                if let Ok(r) = decode_exec(b) {
                    if r.tgid == pid {
                        found = Some(r);
                    } else if r.tgid == gone_pid && r.argv.last().is_some_and(|a| a == "ward-deleted") {
                        deleted = Some(r);
                    }
                }
                true
            });
        }
        let gone = deleted.expect("the deleted program's exec was not reported");
        assert!(gone.exe_deleted && gone.exe.ends_with("/gone"), "{gone:?}");
        let r = found.expect("the exec was not reported");
        assert!(!r.exe_deleted, "{r:?}");
        assert_eq!(r.argv, vec!["/bin/sh", "-c", "exit 0", "ward-test-arg"]);
        assert_eq!(r.ppid, std::process::id());
        assert_eq!(r.filename, "/bin/sh");
        assert!(r.exe.starts_with('/') && std::path::Path::new(&r.exe).exists(), "{r:?}");
        let cwd = dir.path().canonicalize().unwrap();
        assert_eq!(std::path::Path::new(&r.cwd), cwd);
        let me = crate::procfs::read_stat(Path::new("/proc"), std::process::id()).unwrap();
        let parent_ms = crate::clock::start_time_ms_from_boot_ns(r.parent_start_ns);
        assert_eq!(parent_ms, me.start_time_ms, "the same start time as /proc gives");
        assert!(exec.newly_lost() == 0);

        let mut got: Vec<NetRecord> = Vec::new();
        let mut exes: HashMap<u64, NetExe> = HashMap::new();
        let deadline = Instant::now() + Duration::from_secs(5);
        while got.len() < 3 && Instant::now() < deadline {
            net.wait(Duration::from_millis(100)).unwrap();
            net.drain(usize::MAX, |b| {
                match decode_net_item(b) {
                    Ok(NetItem::Net(r)) if r.local.port() == port || r.remote.port() == port => got.push(r),
                    Ok(NetItem::Exe(e)) => {
                        exes.insert(e.sk, e);
                    }
                    _ => {}
                }
                true
            });
        }
        let me = std::process::id();
        let listen = got.iter().find(|r| r.op == NetOp::Listen).expect("listen");
        assert_eq!(listen.owner.as_ref().unwrap().tgid, me);
        let connect = got.iter().find(|r| r.op == NetOp::Connect).expect("connect");
        assert_eq!(connect.owner.as_ref().unwrap().tgid, me);
        let my_exe = std::fs::read_link("/proc/self/exe").unwrap();
        for r in [listen, connect] {
            let sent = exes.get(&r.sk).expect("the executable sent for the socket");
            assert_eq!((sent.tgid, Path::new(&sent.exe)), (me, my_exe.as_path()));
        }
        assert!(connect.established);
        assert_eq!((connect.local.port(), connect.remote.port()), (client_port, port));
        let accept = got.iter().find(|r| r.op == NetOp::Accept).expect("accept");
        assert_eq!((accept.local.port(), accept.remote.port()), (port, client_port));
    }

    /// The real kernel: a process run on a pseudo terminal (`script`), in a cgroup of
    /// its own named as docker names a container's, in new mount and pid namespaces
    /// (`unshare`), arrives with that tty, those namespaces and that cgroup (resolved
    /// to its path by id after the process is gone, and the container id read from
    /// it). Needs root: fails saying so.
    #[test]
    fn the_kernel_reports_a_process_context() {
        assert!(
            crate::sensor::test_is_root(),
            "needs root (CAP_BPF, CAP_PERFMON) to load eBPF programs, and to make a cgroup"
        );
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let cg_root = super::super::context::cgroup2_mount(&mountinfo)
            .expect("no cgroup2 hierarchy mounted: the cgroup part of this test cannot run");
        let id = format!("{:064x}", u128::from(std::process::id()) << 64 | 0xc0ffee);
        let cg = cg_root.join(format!("docker-{id}.scope"));
        std::fs::create_dir_all(&cg).unwrap();
        let mut exec = Probe::exec().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let tty_file = dir.path().join("tty");
        let marker = format!("ward-ctx-{}", std::process::id());
        let script = format!(
            "echo $$ > {procs} && exec script -qec 'tty > {tty}; exec unshare -mpf /bin/sh -c \"sleep 2\" {marker}' /dev/null",
            procs = cg.join("cgroup.procs").display(),
            tty = tty_file.display(),
        );
        let mut child = std::process::Command::new("/bin/sh")
            .args(["-c", &script])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut found = None;
        while found.is_none() && Instant::now() < deadline {
            exec.wait(Duration::from_millis(100)).unwrap();
            exec.drain(usize::MAX, |b| {
                if let Ok(r) = decode_exec(b)
                    && r.argv.last() == Some(&marker)
                    && ["/dash", "/sh", "/bash"].iter().any(|sh| r.exe.ends_with(sh))
                {
                    found = Some(r);
                }
                true
            });
        }
        let r = found.expect("the exec in the namespaces was not reported");
        // While it sleeps: its namespaces as /proc shows them.
        let (mnt, pid) = super::super::context::read_namespaces(Path::new("/proc"), r.tgid);
        let (my_mnt, my_pid) = super::super::context::read_namespaces(Path::new("/proc"), std::process::id());
        assert!(child.wait().unwrap().success());
        // The process is gone (its sleep may linger a moment): the cgroup's path is
        // found by id in the tree, and the container id read from it.
        let ino = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&cg).unwrap());
        let paths = super::super::context::CgroupPaths::new(Some(cg_root));
        let path = paths.path_of(r.cgroup_id, Path::new("/nonexistent-proc"), r.tgid);
        let _ = std::fs::remove_dir(&cg);
        assert_eq!(r.cgroup_id, ino, "the cgroup id is the cgroup directory's inode: {r:?}");
        assert_eq!(path, format!("/docker-{id}.scope"));
        assert_eq!(super::super::context::container_id(&path), Some(id.clone()));
        assert_eq!((Some(r.mnt_ns), Some(r.pid_ns)), (mnt, pid), "{r:?}");
        assert!(
            Some(r.mnt_ns) != my_mnt && Some(r.pid_ns) != my_pid,
            "new namespaces: {r:?}"
        );
        let tty = std::fs::read_to_string(&tty_file).unwrap();
        let tty = tty.trim().strip_prefix("/dev/").unwrap_or_default();
        assert!(tty.starts_with("pts/"), "script's terminal: {tty:?}");
        assert_eq!(r.tty, tty, "{r:?}");
        let me = std::fs::read_to_string("/proc/self/loginuid").unwrap();
        assert_eq!(r.loginuid.to_string(), me.trim(), "the login uid is inherited");
    }

    /// Runs the network sensor with `udp` until `done` says what it got is enough
    /// (or 10 s pass), after `act`; returns the board's network line and the events.
    fn run_net_with(
        udp: Option<Result<Probe, LoadError>>,
        act: impl FnOnce(),
        done: impl Fn(&[EventData]) -> bool,
    ) -> (ward_protocol::SensorState, Vec<EventData>) {
        let (tx, mut rx) = tokio::sync::mpsc::channel(65_536);
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let board = crate::sensor::SensorBoard::default();
        let ctx = SensorCtx::new("network", tx, stop.clone()).on_board(board.clone());
        let config = SensorConfig {
            network_dedup_ms: 0,
            ..SensorConfig::default()
        };
        let mut probe = Probe::net().unwrap();
        let runner = std::thread::spawn(move || {
            let tracker = ProcessTracker::new(1 << 20, 64);
            run_net(&config, &mut probe, udp, &tracker, &ctx).unwrap();
        });
        let deadline = Instant::now() + Duration::from_secs(5);
        while board
            .get("network")
            .is_none_or(|s| s.readiness == ward_protocol::Readiness::Starting)
        {
            assert!(Instant::now() < deadline, "the network sensor never said it was ready");
            std::thread::sleep(Duration::from_millis(20));
        }
        act();
        let mut events = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !done(&events) && Instant::now() < deadline {
            while let Ok(e) = rx.try_recv() {
                events.push(e.data);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        runner.join().unwrap();
        (board.get("network").unwrap(), events)
    }

    /// Without the cgroup programs the network sensor says it is degraded and why
    /// (and reports a gap), and TCP connections are still reported. Needs root.
    #[test]
    fn without_the_cgroup_programs_tcp_runs_degraded() {
        assert!(
            crate::sensor::test_is_root(),
            "needs root (CAP_BPF, CAP_PERFMON) to load eBPF programs"
        );
        let why = LoadError::Load {
            what: "UDP and DNS programs",
            detail: "no cgroup v2 hierarchy is mounted".into(),
        };
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let tcp_to_port = |e: &EventData| matches!(e, EventData::Network(n) if n.protocol == "tcp" && n.destination_port == Some(port) && n.op == NetOp::Connect);
        let (state, events) = run_net_with(
            Some(Err(why)),
            || {
                let _c = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
                listener.accept().unwrap();
            },
            |events| events.iter().any(tcp_to_port),
        );
        assert_eq!(state.readiness, ward_protocol::Readiness::Degraded, "{state:?}");
        let detail = state.detail.unwrap_or_default();
        assert!(
            detail.contains("UDP") && detail.contains("no cgroup v2 hierarchy is mounted") && detail.contains("TCP"),
            "{detail}"
        );
        assert!(
            events
                .iter()
                .any(|e| matches!(e, EventData::Gap(g) if g.detail.contains("no cgroup v2")))
        );
        assert!(events.iter().any(tcp_to_port), "TCP still reported");
    }

    /// With the cgroup programs: a DNS lookup by bash to a responder on
    /// 127.0.83.55:53 arrives as a DNS event with its answer and bash as the process,
    /// and bash's UDP send to the answered address right after carries the name
    /// (`DestinationHostname`). Needs root.
    #[test]
    fn a_lookup_and_the_connection_it_named_arrive_together() {
        assert!(
            crate::sensor::test_is_root(),
            "needs root (CAP_BPF, CAP_PERFMON, CAP_NET_ADMIN)"
        );
        let udp = super::super::netcg::load(super::super::netcg::Hooks {
            udp: true,
            dns: true,
            dedup: Duration::ZERO,
            ignore_tgid: Some(std::process::id()),
        });
        assert!(udp.is_ok(), "{udp:?}");
        let dns = std::net::UdpSocket::bind("127.0.83.55:53").expect("binding 127.0.83.55:53");
        let sink = std::net::UdpSocket::bind("127.0.83.99:0").unwrap();
        let sink_port = sink.local_addr().unwrap().port();
        let responder = std::thread::spawn(move || {
            let mut buf = [0u8; 512];
            let (n, from) = dns.recv_from(&mut buf).unwrap();
            let q = &buf[..n];
            // The query with the response flag, one answer: 127.0.83.99 (TTL 60).
            let mut r = q.to_vec();
            r[2] |= 0x80;
            r[7] = 1;
            r.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 127, 0, 83, 99]);
            dns.send_to(&r, from).unwrap();
        });
        // ward-lookup.example A, id 0x4242, as bytes bash can print.
        let query = "\\x42\\x42\\x01\\x00\\x00\\x01\\x00\\x00\\x00\\x00\\x00\\x00\\x0bward-lookup\\x07example\\x00\\x00\\x01\\x00\\x01";
        let script = format!(
            "exec 3<>/dev/udp/127.0.83.55/53; printf '{query}' >&3; head -c 1 <&3 >/dev/null; echo hi > /dev/udp/127.0.83.99/{sink_port}"
        );
        let mut bash_pid = 0;
        let got = |events: &[EventData]| {
            events.iter().any(|e| matches!(e, EventData::Dns(_)))
                && events
                    .iter()
                    .any(|e| matches!(e, EventData::Network(n) if n.destination_port == Some(sink_port)))
        };
        let (state, events) = run_net_with(
            Some(udp),
            || {
                let mut bash = std::process::Command::new("bash")
                    .args(["-c", &script])
                    .spawn()
                    .unwrap();
                bash_pid = bash.id();
                assert!(bash.wait().unwrap().success());
            },
            got,
        );
        responder.join().unwrap();
        assert_eq!(state.readiness, ward_protocol::Readiness::Ready, "{state:?}");
        assert!(state.source.contains("DNS"), "{state:?}");
        let d = events
            .iter()
            .find_map(|e| match e {
                EventData::Dns(d) if d.query_name == "ward-lookup.example" => Some(d),
                _ => None,
            })
            .expect("the lookup");
        assert_eq!((d.query_type.as_str(), d.status.as_deref()), ("A", Some("NOERROR")));
        assert_eq!(d.answers, vec!["127.0.83.99"]);
        assert_eq!((d.process.pid, d.server_port), (bash_pid, 53));
        assert!(d.process.exe.ends_with("/bash"), "{:?}", d.process);
        let n = events
            .iter()
            .find_map(|e| match e {
                EventData::Network(n) if n.destination_port == Some(sink_port) => Some(n),
                _ => None,
            })
            .expect("the UDP send");
        assert_eq!(
            (n.protocol.as_str(), n.op, n.process.pid),
            ("udp", NetOp::Connect, bash_pid)
        );
        assert_eq!(n.destination_hostname.as_deref(), Some("ward-lookup.example"));
        drop(sink);
    }

    /// The committed objects are what agent/bpf/build makes from the committed C.
    #[test]
    fn committed_objects_match_their_source() {
        let have_clang = std::process::Command::new("clang").arg("--version").output().is_ok()
            && std::process::Command::new("llvm-strip")
                .arg("--version")
                .output()
                .is_ok()
            && Path::new("/usr/include/bpf/bpf_helpers.h").exists();
        if !have_clang {
            eprintln!(
                "SKIPPED committed_objects_match_their_source: clang, llvm-strip or libbpf-dev's headers \
                 are not installed (apt-get install -y clang llvm libbpf-dev), so the objects cannot be rebuilt here"
            );
            return;
        }
        let bpf = Path::new(env!("CARGO_MANIFEST_DIR")).join("bpf");
        let clang = std::process::Command::new("clang").arg("--version").output().unwrap();
        let clang = String::from_utf8_lossy(&clang.stdout)
            .lines()
            .next()
            .unwrap_or_default()
            .to_string();
        let committed_clang = std::fs::read_to_string(bpf.join("clang-version")).unwrap();
        if clang != committed_clang.trim() {
            eprintln!(
                "SKIPPED committed_objects_match_their_source: the objects were built with {:?}, this is {clang:?}; \
                 another clang makes other bytes",
                committed_clang.trim()
            );
            return;
        }
        let out = tempfile::tempdir().unwrap();
        let status = std::process::Command::new(bpf.join("build"))
            .arg(out.path())
            .status()
            .unwrap();
        assert!(status.success(), "agent/bpf/build failed");
        for name in ["exec.bpf.o", "net.bpf.o", "udp.bpf.o"] {
            let built = std::fs::read(out.path().join(name)).unwrap();
            let committed = std::fs::read(bpf.join(name)).unwrap();
            assert!(
                built == committed,
                "agent/bpf/{name} is not what agent/bpf/build makes from the source: run agent/bpf/build and commit"
            );
        }
    }
}
