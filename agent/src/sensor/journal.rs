//! Follows the systemd journal through `journalctl -f -o json` and splits its output into
//! entries: the auth sensor's source when a host keeps no auth log file.
//!
//! Must not read an unbounded line (each is cut at [`MAX_LINE_BYTES`] and then skipped), outlive
//! the sensor (the child is killed whenever following ends), or interpret messages: turning
//! an entry into an event is the caller's business.

use std::ffi::OsStr;
use std::io::{self, BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

use super::SensorCtx;

/// Longest journal line read; a longer one is reported as a gap and skipped.
pub const MAX_LINE_BYTES: usize = super::tail::MAX_LINE_BYTES;
/// Lines read ahead of the sensor; when full, journalctl waits on its pipe.
const QUEUE_LINES: usize = 256;
/// How much of journalctl's stderr is kept for the error report.
const MAX_STDERR_BYTES: usize = 1024;

/// Why following the journal stopped.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("journalctl is not installed")]
    NotInstalled,
    #[error("cannot start journalctl: {0}")]
    Spawn(io::Error),
    #[error("journalctl exited ({status}): {stderr}")]
    Exited { status: String, stderr: String },
    #[error("reading journalctl output: {0}")]
    Read(io::Error),
}

/// The fields of one journal entry the sensors use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalEntry {
    pub message: String,
    /// `SYSLOG_IDENTIFIER`, e.g. `sshd` or `sudo`.
    pub identifier: Option<String>,
    /// `_COMM`: the process name (at most 15 bytes, set by journald).
    pub comm: Option<String>,
    pub hostname: Option<String>,
    /// `__REALTIME_TIMESTAMP` in Unix milliseconds: when journald received the entry.
    pub realtime_ms: Option<u64>,
    /// `_PID` (set by journald, trusted), else `SYSLOG_PID`: the logging process.
    pub pid: Option<u32>,
}

#[derive(Deserialize)]
struct RawEntry {
    #[serde(rename = "MESSAGE")]
    message: Option<Value>,
    #[serde(rename = "SYSLOG_IDENTIFIER")]
    identifier: Option<Value>,
    #[serde(rename = "_COMM")]
    comm: Option<Value>,
    #[serde(rename = "_HOSTNAME")]
    hostname: Option<Value>,
    #[serde(rename = "__REALTIME_TIMESTAMP")]
    realtime_us: Option<Value>,
    #[serde(rename = "_PID")]
    pid: Option<Value>,
    #[serde(rename = "SYSLOG_PID")]
    syslog_pid: Option<Value>,
}

/// A field as text: journald writes strings, byte arrays for values that are not valid
/// UTF-8 or not printable, null for values over its size threshold, and an array of those
/// when the field occurs more than once (the first is taken).
fn text(v: Option<Value>) -> Option<String> {
    match v? {
        Value::String(s) => Some(s),
        Value::Array(items) if items.iter().all(Value::is_u64) => {
            let bytes: Vec<u8> = items
                .iter()
                .filter_map(|b| b.as_u64().and_then(|b| u8::try_from(b).ok()))
                .collect();
            Some(String::from_utf8_lossy(&bytes).into_owned())
        }
        Value::Array(items) => text(items.into_iter().next()),
        _ => None,
    }
}

/// Parses one line of `journalctl -o json`. `None` for what is not a JSON object or has no
/// usable `MESSAGE`.
pub fn parse_entry(line: &str) -> Option<JournalEntry> {
    if line.len() > MAX_LINE_BYTES {
        return None;
    }
    let raw: RawEntry = serde_json::from_str(line).ok()?;
    Some(JournalEntry {
        message: text(raw.message)?,
        identifier: text(raw.identifier),
        comm: text(raw.comm),
        hostname: text(raw.hostname),
        realtime_ms: text(raw.realtime_us)
            .and_then(|us| us.parse::<u64>().ok())
            .map(|us| us / 1000),
        pid: text(raw.pid)
            .or_else(|| text(raw.syslog_pid))
            .and_then(|p| p.trim().parse().ok()),
    })
}

/// Reads one line of at most `max` bytes (newline removed) into `buf`. `Ok(None)` at the end
/// of input; `Ok(Some(true))` when the line was longer and the rest of it was skipped.
pub fn read_line_bounded(r: &mut impl BufRead, buf: &mut Vec<u8>, max: usize) -> io::Result<Option<bool>> {
    buf.clear();
    let mut cut = false;
    let mut any = false;
    loop {
        let available = match r.fill_buf() {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if available.is_empty() {
            return Ok(any.then_some(cut));
        }
        any = true;
        let (chunk, used, done) = match available.iter().position(|&b| b == b'\n') {
            Some(i) => (available.get(..i).unwrap_or_default(), i + 1, true),
            None => (available, available.len(), false),
        };
        let room = max.saturating_sub(buf.len());
        if chunk.len() > room {
            cut = true;
        }
        buf.extend_from_slice(chunk.get(..chunk.len().min(room)).unwrap_or_default());
        r.consume(used);
        if done {
            return Ok(Some(cut));
        }
    }
}

/// Kills and reaps the child however following ends.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

enum Output {
    Line(String),
    TooLong,
    Failed(io::Error),
}

/// Runs `journalctl -f -o json --no-pager -n 0 MATCHES...` (only entries written from now
/// on) and calls `handle` with each entry until the sensor stops or `handle` returns false.
/// Over-long lines become gaps. journalctl ending by itself is an error (the supervisor
/// reports it and restarts the sensor).
pub fn follow(
    ctx: &SensorCtx,
    matches: &[&str],
    poll: Duration,
    handle: impl FnMut(JournalEntry) -> bool,
) -> Result<(), JournalError> {
    let mut args = vec!["-f", "-o", "json", "--no-pager", "-n", "0"];
    args.extend_from_slice(matches);
    follow_command(ctx, OsStr::new("journalctl"), &args, poll, handle)
}

fn follow_command(
    ctx: &SensorCtx,
    program: &OsStr,
    args: &[&str],
    poll: Duration,
    mut handle: impl FnMut(JournalEntry) -> bool,
) -> Result<(), JournalError> {
    let mut child = match Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(c) => KillOnDrop(c),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(JournalError::NotInstalled),
        Err(e) => return Err(JournalError::Spawn(e)),
    };
    let stdout = child.0.stdout.take();
    let stderr = child.0.stderr.take();
    let (tx, rx) = mpsc::sync_channel(QUEUE_LINES);
    if let Some(stdout) = stdout {
        std::thread::Builder::new()
            .name("journal-read".into())
            .spawn(move || read_lines(BufReader::new(stdout), &tx))
            .map_err(JournalError::Spawn)?;
    }
    let (err_tx, err_rx) = mpsc::sync_channel(1);
    if let Some(stderr) = stderr {
        std::thread::Builder::new()
            .name("journal-stderr".into())
            .spawn(move || {
                let mut kept = Vec::new();
                let mut stderr = stderr;
                let _ = (&mut stderr).take(MAX_STDERR_BYTES as u64).read_to_end(&mut kept);
                let _ = io::copy(&mut stderr, &mut io::sink());
                let _ = err_tx.send(String::from_utf8_lossy(&kept).trim().to_string());
            })
            .map_err(JournalError::Spawn)?;
    }
    loop {
        match rx.recv_timeout(poll) {
            Ok(Output::Line(line)) => {
                if let Some(entry) = parse_entry(&line)
                    && !handle(entry)
                {
                    return Ok(());
                }
            }
            Ok(Output::TooLong) => {
                if !ctx.gap(format!("a journal entry over {MAX_LINE_BYTES} bytes was skipped")) {
                    return Ok(());
                }
            }
            Ok(Output::Failed(e)) => return Err(JournalError::Read(e)),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => {
                let status = child.0.wait().map(|s| s.to_string()).unwrap_or_else(|e| e.to_string());
                let stderr = err_rx.recv_timeout(Duration::from_secs(1)).unwrap_or_default();
                return Err(JournalError::Exited { status, stderr });
            }
        }
        if ctx.stopped() {
            return Ok(());
        }
    }
}

fn read_lines(mut r: impl BufRead, tx: &mpsc::SyncSender<Output>) {
    let mut buf = Vec::new();
    loop {
        let item = match read_line_bounded(&mut r, &mut buf, MAX_LINE_BYTES) {
            Ok(None) => return,
            Ok(Some(true)) => Output::TooLong,
            Ok(Some(false)) => Output::Line(String::from_utf8_lossy(&buf).into_owned()),
            Err(e) => Output::Failed(e),
        };
        let failed = matches!(item, Output::Failed(_));
        if tx.send(item).is_err() || failed {
            return;
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    #[test]
    fn entries_and_field_encodings() {
        let line = r#"{"__CURSOR":"s=1;i=2","__REALTIME_TIMESTAMP":"1718000000123456","__MONOTONIC_TIMESTAMP":"99","_BOOT_ID":"b","PRIORITY":"6","SYSLOG_FACILITY":"4","SYSLOG_IDENTIFIER":"sshd","_PID":"811","_COMM":"sshd","_HOSTNAME":"web1","MESSAGE":"Accepted publickey for ann from 10.1.2.3 port 5 ssh2"}"#;
        assert_eq!(
            parse_entry(line),
            Some(JournalEntry {
                message: "Accepted publickey for ann from 10.1.2.3 port 5 ssh2".into(),
                identifier: Some("sshd".into()),
                comm: Some("sshd".into()),
                hostname: Some("web1".into()),
                realtime_ms: Some(1_718_000_000_123),
                pid: Some(811),
            })
        );
        // A message with a byte that is not printable comes as an array of bytes.
        let e = parse_entry(r#"{"MESSAGE":[104,105,7],"_COMM":"su"}"#).unwrap();
        assert_eq!(e.message, "hi\u{7}");
        // A repeated field comes as an array of values.
        let e = parse_entry(r#"{"MESSAGE":"x","SYSLOG_IDENTIFIER":["sudo","other"]}"#).unwrap();
        assert_eq!(e.identifier.as_deref(), Some("sudo"));
        // Over journald's size threshold: null, so no message.
        assert_eq!(parse_entry(r#"{"MESSAGE":null,"_COMM":"sshd"}"#), None);
        assert_eq!(parse_entry("not json"), None);
        assert_eq!(parse_entry("[1,2]"), None);
        assert_eq!(
            parse_entry(r#"{"MESSAGE":"x","__REALTIME_TIMESTAMP":"soon"}"#)
                .unwrap()
                .realtime_ms,
            None
        );
        assert_eq!(
            parse_entry(&format!(r#"{{"MESSAGE":"{}"}}"#, "a".repeat(MAX_LINE_BYTES))),
            None
        );
    }

    #[test]
    fn lines_are_bounded() {
        let input = format!("short\n{}\nlast", "x".repeat(100));
        let mut r = BufReader::with_capacity(7, input.as_bytes());
        let mut buf = Vec::new();
        assert_eq!(read_line_bounded(&mut r, &mut buf, 10).unwrap(), Some(false));
        assert_eq!(buf, b"short");
        assert_eq!(read_line_bounded(&mut r, &mut buf, 10).unwrap(), Some(true));
        assert_eq!(buf.len(), 10);
        assert_eq!(read_line_bounded(&mut r, &mut buf, 10).unwrap(), Some(false));
        assert_eq!(buf, b"last");
        assert_eq!(read_line_bounded(&mut r, &mut buf, 10).unwrap(), None);
    }

    fn ctx() -> (
        SensorCtx,
        Arc<AtomicBool>,
        tokio::sync::mpsc::Receiver<ward_detect::event::Event>,
    ) {
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        let stop = Arc::new(AtomicBool::new(false));
        (SensorCtx::new("auth", tx, stop.clone()), stop, rx)
    }

    #[test]
    fn a_child_that_exits_is_an_error_with_its_stderr() {
        let (ctx, _stop, _rx) = ctx();
        let mut seen = Vec::new();
        let script = r#"echo '{"MESSAGE":"one","_COMM":"sshd"}'; echo 'No journal files were opened' >&2; exit 1"#;
        let err = follow_command(
            &ctx,
            OsStr::new("sh"),
            &["-c", script],
            Duration::from_millis(20),
            |e| {
                seen.push(e.message);
                true
            },
        )
        .unwrap_err();
        assert_eq!(seen, vec!["one"]);
        assert!(
            matches!(&err, JournalError::Exited { stderr, .. } if stderr.contains("No journal files")),
            "{err}"
        );
        let missing = follow_command(
            &ctx,
            OsStr::new("/nonexistent/journalctl"),
            &[],
            Duration::from_millis(20),
            |_| true,
        );
        assert!(matches!(missing, Err(JournalError::NotInstalled)));
    }

    #[test]
    fn stopping_kills_the_child() {
        let (ctx, stop, _rx) = ctx();
        let pid_file = tempfile::NamedTempFile::new().unwrap();
        let script = format!("echo $$ > {}; exec sleep 60", pid_file.path().display());
        let stopper = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(300));
                stop.store(true, Ordering::Relaxed);
            })
        };
        follow_command(
            &ctx,
            OsStr::new("sh"),
            &["-c", &script],
            Duration::from_millis(20),
            |_| true,
        )
        .unwrap();
        stopper.join().unwrap();
        let pid = std::fs::read_to_string(pid_file.path()).unwrap();
        // Killed and reaped: the pid no longer names our child.
        let status = std::fs::read_to_string(format!("/proc/{}/status", pid.trim())).unwrap_or_default();
        assert!(!status.contains("sleep"), "{status}");
    }
}
