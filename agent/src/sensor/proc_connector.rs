//! Exec events from the kernel's netlink process connector, so short-lived processes are seen.
//!
//! On each exec event /proc/PID is read at once through the shared
//! [`ProcessTracker`](super::process::ProcessTracker), which deduplicates with the poller.
//! Needs root or CAP_NET_ADMIN; without it, it reports a gap and ends (the poller still
//! runs). Must not block on a full events channel (the kernel would drop messages instead):
//! it counts its own drops and reports them as a gap. The raw socket code is the only
//! `unsafe` here, each call with its own proof.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

use super::process::ProcessTracker;
use super::{SensorCtx, SensorError};
use ward_detect::event::{EventData, ProcessEvent};

const CN_IDX_PROC: u32 = 1;
const CN_VAL_PROC: u32 = 1;
const PROC_CN_MCAST_LISTEN: u32 = 1;
const PROC_EVENT_EXEC: u32 = 0x0000_0002;
const NLMSG_HDRLEN: usize = 16;
const CN_MSG_LEN: usize = 20;
const NLMSG_DONE: u16 = 3;
const NLMSG_ERROR: u16 = 2;
const NLMSG_OVERRUN: u16 = 4;

/// Why the connector could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConnectorError {
    /// Not root / no CAP_NET_ADMIN (or the kernel lacks CONFIG_PROC_EVENTS).
    #[error("no privilege for the netlink process connector: {0}")]
    NoPrivilege(io::Error),
    #[error("netlink process connector: {what}: {source}")]
    Io { what: &'static str, source: io::Error },
}

/// A subscribed netlink process-connector socket.
#[derive(Debug)]
pub struct Connector {
    fd: OwnedFd,
}

/// One message from the connector that matters here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectorMsg {
    /// A thread group leader called exec.
    Exec { pid: u32 },
}

impl Connector {
    /// Opens the socket, joins the proc multicast group and asks the kernel to start sending.
    /// `recv_timeout` bounds each [`Connector::recv`] so callers can check for shutdown.
    #[allow(unsafe_code)]
    pub fn open(recv_timeout: Duration) -> Result<Self, ConnectorError> {
        // SAFETY: socket() takes only integer arguments; the result is checked before use.
        let raw = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
                libc::NETLINK_CONNECTOR,
            )
        };
        if raw < 0 {
            return Err(ConnectorError::Io {
                what: "socket",
                source: io::Error::last_os_error(),
            });
        }
        // SAFETY: `raw` is a valid, open descriptor just returned by socket() and owned by
        // nobody else; OwnedFd takes sole ownership and closes it exactly once.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };

        // SAFETY: sockaddr_nl is a plain C struct of integers; all-zero is a valid value.
        let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        addr.nl_pid = 0; // let the kernel pick a unique port id
        addr.nl_groups = CN_IDX_PROC;
        // SAFETY: `addr` is a live, initialised sockaddr_nl and the length passed is its exact
        // size; bind only reads it during the call.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&raw const addr).cast::<libc::sockaddr>(),
                std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            let e = io::Error::last_os_error();
            return Err(if e.raw_os_error() == Some(libc::EPERM) {
                ConnectorError::NoPrivilege(e)
            } else {
                ConnectorError::Io {
                    what: "bind",
                    source: e,
                }
            });
        }

        // `as _` takes the field types as this libc defines them: musl's `time_t` and
        // `suseconds_t` aliases are deprecated (they change width in musl 1.2).
        let tv = libc::timeval {
            tv_sec: recv_timeout.as_secs().min(i32::MAX as u64) as _,
            tv_usec: recv_timeout.subsec_micros() as _,
        };
        set_opt(&fd, libc::SO_RCVTIMEO, &tv, "SO_RCVTIMEO")?;
        // A larger receive buffer rides out bursts of forks; failure only means the default.
        let _ = set_opt(&fd, libc::SO_RCVBUF, &(4 * 1024 * 1024_i32), "SO_RCVBUF");

        let msg = listen_message(std::process::id());
        // SAFETY: `msg` is a live buffer of `msg.len()` initialised bytes that send only reads
        // during the call.
        let sent = unsafe { libc::send(fd.as_raw_fd(), msg.as_ptr().cast(), msg.len(), 0) };
        if sent < 0 {
            let e = io::Error::last_os_error();
            return Err(if e.raw_os_error() == Some(libc::EPERM) {
                ConnectorError::NoPrivilege(e)
            } else {
                ConnectorError::Io {
                    what: "send listen",
                    source: e,
                }
            });
        }
        Ok(Connector { fd })
    }

    /// Waits (up to the receive timeout) for one datagram and returns the exec events in it.
    /// `Ok(None)` on timeout. `Err` with ENOBUFS means the kernel dropped messages.
    #[allow(unsafe_code)]
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<Option<Vec<ConnectorMsg>>> {
        // SAFETY: `buf` is a live, writable buffer of `buf.len()` bytes, exclusively borrowed
        // for the call; recv writes at most that many bytes into it.
        let n = unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            let e = io::Error::last_os_error();
            return match e.raw_os_error() {
                Some(libc::EAGAIN) | Some(libc::EINTR) => Ok(None),
                _ => Err(e),
            };
        }
        let n = usize::try_from(n).unwrap_or(0);
        Ok(Some(parse_datagram(buf.get(..n).unwrap_or_default())))
    }
}

#[allow(unsafe_code)]
fn set_opt<T>(fd: &OwnedFd, opt: libc::c_int, value: &T, what: &'static str) -> Result<(), ConnectorError> {
    // SAFETY: `value` points to a live, initialised T and the length passed is exactly
    // size_of::<T>(); setsockopt only reads it during the call. Callers pass the C type the
    // option expects (timeval for SO_RCVTIMEO, int for SO_RCVBUF).
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            opt,
            (value as *const T).cast(),
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(ConnectorError::Io {
            what,
            source: io::Error::last_os_error(),
        });
    }
    Ok(())
}

/// nlmsghdr + cn_msg + PROC_CN_MCAST_LISTEN, in native byte order.
fn listen_message(port: u32) -> Vec<u8> {
    let payload = PROC_CN_MCAST_LISTEN.to_ne_bytes();
    let total = NLMSG_HDRLEN + CN_MSG_LEN + payload.len();
    let mut m = Vec::with_capacity(total);
    m.extend_from_slice(&(total as u32).to_ne_bytes()); // nlmsg_len
    m.extend_from_slice(&NLMSG_DONE.to_ne_bytes()); // nlmsg_type
    m.extend_from_slice(&0u16.to_ne_bytes()); // nlmsg_flags
    m.extend_from_slice(&0u32.to_ne_bytes()); // nlmsg_seq
    m.extend_from_slice(&port.to_ne_bytes()); // nlmsg_pid
    m.extend_from_slice(&CN_IDX_PROC.to_ne_bytes()); // cb_id.idx
    m.extend_from_slice(&CN_VAL_PROC.to_ne_bytes()); // cb_id.val
    m.extend_from_slice(&0u32.to_ne_bytes()); // seq
    m.extend_from_slice(&0u32.to_ne_bytes()); // ack
    m.extend_from_slice(&(payload.len() as u16).to_ne_bytes()); // len
    m.extend_from_slice(&0u16.to_ne_bytes()); // flags
    m.extend_from_slice(&payload);
    m
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

/// Parses one datagram (possibly several netlink messages); anything malformed is skipped.
pub fn parse_datagram(mut b: &[u8]) -> Vec<ConnectorMsg> {
    let mut out = Vec::new();
    while b.len() >= NLMSG_HDRLEN {
        let Some(len) = u32_at(b, 0).map(|l| l as usize) else {
            break;
        };
        let ty = u16_at(b, 4).unwrap_or(0);
        if len < NLMSG_HDRLEN || len > b.len() {
            break;
        }
        let msg = b.get(NLMSG_HDRLEN..len).unwrap_or_default();
        if ty != NLMSG_ERROR && ty != NLMSG_OVERRUN {
            // cn_msg: idx, val, seq, ack, len(u16), flags(u16), then proc_event.
            let ev = msg.get(CN_MSG_LEN..).unwrap_or_default();
            // proc_event: what u32, cpu u32, timestamp_ns u64, event_data.
            if u32_at(msg, 0) == Some(CN_IDX_PROC)
                && u32_at(ev, 0) == Some(PROC_EVENT_EXEC)
                && let (Some(pid), Some(tgid)) = (u32_at(ev, 16), u32_at(ev, 20))
                && pid == tgid
            {
                out.push(ConnectorMsg::Exec { pid });
            }
        }
        let aligned = (len + 3) & !3;
        b = b.get(aligned..).unwrap_or_default();
    }
    out
}

/// Runs the connector until the sensor is stopped. Without privilege it reports a gap and
/// returns `Ok` (not restarted).
pub fn run(tracker: &ProcessTracker, ctx: &SensorCtx) -> Result<(), SensorError> {
    let conn = match Connector::open(Duration::from_millis(250)) {
        Ok(c) => c,
        Err(ConnectorError::NoPrivilege(e)) => {
            ctx.blind(format!(
                "netlink process connector unavailable ({e}): falling back to /proc polling only; \
                 processes living shorter than the poll interval may be missed"
            ));
            return Ok(());
        }
        Err(ConnectorError::Io { what, source }) => return Err(SensorError::io(what, source)),
    };
    ctx.ready("netlink process connector");
    let mut buf = vec![0u8; 64 * 1024];
    let mut dropped: u64 = 0;
    let mut kernel_overflows: u64 = 0;
    while !ctx.stopped() {
        let msgs = match conn.recv(&mut buf) {
            Ok(Some(m)) => m,
            Ok(None) => Vec::new(),
            Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                kernel_overflows += 1;
                Vec::new()
            }
            Err(e) => return Err(SensorError::io("netlink recv", e)),
        };
        for ConnectorMsg::Exec { pid } in msgs {
            let ev = match tracker.observe(pid) {
                Ok(Some(ev)) => ev,
                Ok(None) => continue,
                // Gone before we could read it: report what the kernel told us, and
                // count it (its command line and parent are lost).
                Err(_) => {
                    ctx.lost(1);
                    ProcessEvent {
                        pid,
                        ..ProcessEvent::default()
                    }
                }
            };
            if !ctx.try_emit(EventData::Process(ev)) {
                dropped += 1;
                ctx.lost(1);
            }
        }
        if kernel_overflows > 0 {
            let g = super::gap(
                ctx.sensor(),
                format!("kernel dropped process connector messages ({kernel_overflows} overflows): exec events lost"),
            );
            if ctx.try_emit(g) {
                kernel_overflows = 0;
            }
        }
        if dropped > 0 {
            let g = super::gap(
                ctx.sensor(),
                format!("events channel full: {dropped} process events dropped"),
            );
            if ctx.try_emit(g) {
                dropped = 0;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Instant;
    use tokio::sync::mpsc;

    fn exec_datagram(pid: u32, tgid: u32) -> Vec<u8> {
        let mut ev = Vec::new();
        ev.extend_from_slice(&PROC_EVENT_EXEC.to_ne_bytes());
        ev.extend_from_slice(&0u32.to_ne_bytes());
        ev.extend_from_slice(&0u64.to_ne_bytes());
        ev.extend_from_slice(&pid.to_ne_bytes());
        ev.extend_from_slice(&tgid.to_ne_bytes());
        let mut m = listen_message(0);
        m.truncate(NLMSG_HDRLEN + CN_MSG_LEN);
        m.extend_from_slice(&ev);
        let len = m.len() as u32;
        m.get_mut(0..4).unwrap().copy_from_slice(&len.to_ne_bytes());
        m
    }

    #[test]
    fn parses_exec_events_and_skips_garbage() {
        let mut d = exec_datagram(42, 42);
        d.extend(exec_datagram(43, 41)); // a thread's exec: not a new process
        assert_eq!(parse_datagram(&d), vec![ConnectorMsg::Exec { pid: 42 }]);
        assert!(parse_datagram(&[1, 2, 3]).is_empty());
        let mut bad = exec_datagram(1, 1);
        bad.get_mut(0..4).unwrap().copy_from_slice(&9999u32.to_ne_bytes());
        assert!(parse_datagram(&bad).is_empty());
    }

    #[test]
    fn sees_a_short_lived_exec_or_reports_the_gap() {
        let (tx, mut rx) = mpsc::channel(4096);
        let stop = Arc::new(AtomicBool::new(false));
        let ctx = SensorCtx::new("process_connector", tx, stop.clone());
        let tracker = Arc::new(ProcessTracker::new(1 << 30, 64));
        let t = tracker.clone();
        let handle = std::thread::spawn(move || run(&t, &ctx));
        if !crate::sensor::test_is_root() {
            let ev = rx.blocking_recv().unwrap();
            assert!(matches!(ev.data, EventData::Gap(ref g) if g.detail.contains("polling")));
            handle.join().unwrap().unwrap();
            return;
        }
        // Give the subscription a moment, then run a process that exits at once.
        std::thread::sleep(Duration::from_millis(200));
        let mut child = std::process::Command::new("/bin/true").spawn().unwrap();
        let pid = child.id();
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut found = None;
        while Instant::now() < deadline && found.is_none() {
            match rx.try_recv() {
                Ok(ev) => match ev.data {
                    EventData::Process(p) if p.pid == pid => found = Some(p),
                    EventData::Gap(g) => panic!("unexpected gap as root: {g:?}"),
                    _ => {}
                },
                Err(_) => std::thread::sleep(Duration::from_millis(10)),
            }
        }
        let _ = child.wait();
        stop.store(true, Ordering::Relaxed);
        handle.join().unwrap().unwrap();
        let p = found.expect("/bin/true exec was not seen");
        assert!(p.exe.is_empty() || p.exe.ends_with("/true"), "{p:?}");
    }
}
