//! The Linux audit log: a record parser, a reassembler of records into events, and a tailer.
//!
//! [`parse_record`] reads one line (`type=SYSCALL msg=audit(1490137971.011:50406): ...`),
//! including quoted, hex-encoded and nested (`msg='...'`) values; EXECVE arguments and
//! PROCTITLE are decoded. [`Reassembler`] groups records by serial number into
//! [`AuditEvent`]s, tolerating out-of-order, lost and wrapped serials. It never reads the
//! clock (`now_ms` is passed in). This module must not configure auditd or the kernel's audit
//! rules, nor enrich values (syscall names, errno names: detection's mapping does that).

use std::collections::BTreeMap;
use std::time::Duration;

use super::lineage::LineageReader;
use super::{SensorConfig, SensorCtx, SensorError};
use crate::clock::now_ms;
use ward_detect::event::{AuditEvent, EventData};

/// Why a line is not an audit record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuditParseError {
    #[error("no type= field")]
    NoType,
    #[error("no msg=audit(...) header")]
    NoHeader,
    #[error("malformed timestamp or serial in the header")]
    BadHeader,
}

/// One audit record (one line).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRecord {
    /// As logged, e.g. `SYSCALL`, `USER_LOGIN`, `UNKNOWN[1334]`.
    pub record_type: String,
    /// Unix milliseconds from the header.
    pub timestamp_ms: u64,
    pub serial: u32,
    /// Names as logged; values unquoted and hex-decoded; `?` and `(null)` values left out.
    pub fields: BTreeMap<String, String>,
}

/// Fields whose unquoted values are hex-encoded by the kernel (string with special chars).
const HEX_FIELDS: &[&str] = &[
    "acct",
    "cmd",
    "comm",
    "cwd",
    "data",
    "dir",
    "exe",
    "file",
    "grp",
    "name",
    "new_group",
    "ocomm",
    "path",
    "proctitle",
    "sample",
    "vm",
    "watch",
    "old-chardev",
    "new-chardev",
    "old-disk",
    "new-disk",
    "old-fs",
    "new-fs",
    "old-net",
    "new-net",
    "old-rng",
    "new-rng",
    "old-vcpu",
    "new-vcpu",
    "root_dir",
    "key",
];

fn hex_decode(s: &str) -> Option<Vec<u8>> {
    if s.is_empty() || !s.len().is_multiple_of(2) || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| s.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok()))
        .collect()
}

fn is_execve_arg(key: &str) -> bool {
    let k = key.strip_prefix('a').unwrap_or("");
    let digits = k.split('[').next().unwrap_or("");
    !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
}

/// Decodes an unquoted value when the field is one the kernel hex-encodes.
fn decode_value(record_type: &str, key: &str, value: &str) -> String {
    let hex_field = HEX_FIELDS.contains(&key) || (record_type == "EXECVE" && is_execve_arg(key));
    if !hex_field {
        return value.to_string();
    }
    match hex_decode(value) {
        Some(bytes) => {
            let s = String::from_utf8_lossy(&bytes);
            match key {
                // Arguments separated by NUL.
                "proctitle" => s.trim_end_matches('\0').replace('\0', " "),
                // Several keys separated by 0x01.
                "key" => s.replace('\u{1}', ","),
                _ => s.into_owned(),
            }
        }
        None => value.to_string(),
    }
}

/// Parses `key=value` pairs; bare words are skipped, except `old`/`new` which prefix the next
/// key (`old auid=1 new auid=2` -> `old_auid`, `new_auid`). Nested `msg='...'` pairs are merged.
fn parse_pairs(record_type: &str, body: &str, out: &mut BTreeMap<String, String>) {
    let b = body.as_bytes();
    let mut i = 0;
    let mut prefix: Option<&str> = None;
    while i < b.len() {
        while b.get(i).is_some_and(|c| c.is_ascii_whitespace()) {
            i += 1;
        }
        let start = i;
        while b.get(i).is_some_and(|c| *c != b'=' && !c.is_ascii_whitespace()) {
            i += 1;
        }
        let word = body.get(start..i).unwrap_or("");
        if b.get(i) != Some(&b'=') {
            prefix = match word {
                "old" => Some("old_"),
                "new" => Some("new_"),
                _ => None,
            };
            continue;
        }
        i += 1; // '='
        let key = word.trim_start_matches(['(', '{']).trim_end_matches(',');
        let (value, quoted) = match b.get(i) {
            Some(q @ (b'"' | b'\'')) => {
                let vs = i + 1;
                let ve = b
                    .get(vs..)
                    .and_then(|r| r.iter().position(|c| c == q))
                    .map_or(b.len(), |p| vs + p);
                i = ve + 1;
                (
                    body.get(vs..ve).unwrap_or(""),
                    if *q == b'"' { Some('"') } else { Some('\'') },
                )
            }
            _ => {
                let vs = i;
                while b.get(i).is_some_and(|c| !c.is_ascii_whitespace()) {
                    i += 1;
                }
                let raw = body.get(vs..i).unwrap_or("");
                // "(hostname=?, addr=?, terminal=cron res=success)": drop the list's ',' and ')'.
                let v = if raw.starts_with('(') {
                    raw.trim_end_matches(',')
                } else {
                    raw.trim_end_matches([',', ')'])
                };
                (v, None)
            }
        };
        if key.is_empty() {
            continue;
        }
        if quoted == Some('\'') && key == "msg" {
            parse_pairs(record_type, value, out);
            prefix = None;
            continue;
        }
        if value == "?" || value == "(null)" || (value.is_empty() && quoted.is_none()) {
            prefix = None;
            continue;
        }
        let value = if quoted.is_some() {
            value.to_string()
        } else {
            decode_value(record_type, key, value)
        };
        let key = match prefix.take() {
            Some(p) => format!("{p}{key}"),
            None => key.to_string(),
        };
        out.insert(key, value);
    }
}

/// Joins EXECVE arguments split into pieces (`a1_len=..., a1[0]=..., a1[1]=...`) into `a1`.
fn join_execve_pieces(fields: &mut BTreeMap<String, String>) {
    let pieces: Vec<String> = fields
        .keys()
        .filter(|k| k.starts_with('a') && k.contains('['))
        .cloned()
        .collect();
    if pieces.is_empty() {
        return;
    }
    let mut joined: BTreeMap<String, Vec<(u64, String)>> = BTreeMap::new();
    for k in pieces {
        let Some(v) = fields.remove(&k) else { continue };
        let Some((arg, idx)) = k.split_once('[') else { continue };
        let idx = idx.trim_end_matches(']').parse().unwrap_or(0);
        joined.entry(arg.to_string()).or_default().push((idx, v));
    }
    for (arg, mut parts) in joined {
        parts.sort_by_key(|(i, _)| *i);
        fields.remove(&format!("{arg}_len"));
        fields.insert(arg, parts.into_iter().map(|(_, v)| v).collect());
    }
}

/// Parses one audit log line (an optional `node=NAME ` prefix is accepted).
pub fn parse_record(line: &str) -> Result<AuditRecord, AuditParseError> {
    let line = line.trim();
    let line = match line.strip_prefix("node=") {
        Some(rest) => rest.split_once(' ').map(|(_, r)| r.trim_start()).unwrap_or(rest),
        None => line,
    };
    let rest = line.strip_prefix("type=").ok_or(AuditParseError::NoType)?;
    let (record_type, rest) = rest.split_once(' ').ok_or(AuditParseError::NoHeader)?;
    let rest = rest
        .trim_start()
        .strip_prefix("msg=audit(")
        .ok_or(AuditParseError::NoHeader)?;
    // The header normally ends with "):"; daemon messages sometimes omit the colon.
    let (header, body) = rest.split_once(')').ok_or(AuditParseError::NoHeader)?;
    let body = body.strip_prefix(':').unwrap_or(body);
    let (ts, serial) = header.split_once(':').ok_or(AuditParseError::BadHeader)?;
    let (secs, frac) = ts.split_once('.').unwrap_or((ts, "0"));
    let secs: u64 = secs.parse().map_err(|_| AuditParseError::BadHeader)?;
    let frac3 = format!("{frac:0<3}");
    let ms: u64 = frac3
        .get(..3)
        .and_then(|f| f.parse().ok())
        .ok_or(AuditParseError::BadHeader)?;
    let serial: u32 = serial.parse().map_err(|_| AuditParseError::BadHeader)?;
    let mut fields = BTreeMap::new();
    parse_pairs(record_type, body, &mut fields);
    if record_type == "EXECVE" {
        join_execve_pieces(&mut fields);
    }
    Ok(AuditRecord {
        record_type: record_type.to_string(),
        timestamp_ms: secs.saturating_mul(1000).saturating_add(ms),
        serial,
        fields,
    })
}

/// True for record types the kernel emits as part of a multi-record (syscall) event, which
/// ends with EOE. Others (user-space messages: USER_*, CRED_*, DAEMON_*, ...) stand alone.
fn is_multipart(record_type: &str) -> bool {
    const MULTI: &[&str] = &[
        "SYSCALL",
        "PATH",
        "IPC",
        "SOCKETCALL",
        "CONFIG_CHANGE",
        "SOCKADDR",
        "CWD",
        "EXECVE",
        "IPC_SET_PERM",
        "MQ_OPEN",
        "MQ_SENDRECV",
        "MQ_NOTIFY",
        "MQ_GETSETATTR",
        "KERNEL_OTHER",
        "FD_PAIR",
        "OBJ_PID",
        "TTY",
        "EOE",
        "BPRM_FCAPS",
        "CAPSET",
        "MMAP",
        "NETFILTER_PKT",
        "NETFILTER_CFG",
        "SECCOMP",
        "PROCTITLE",
        "FEATURE_CHANGE",
        "REPLACE",
        "KERN_MODULE",
        "FANOTIFY",
        "TIME_INJOFFSET",
        "TIME_ADJNTPVAL",
        "BPF",
        "EVENT_LISTENER",
        "URINGOP",
        "OPENAT2",
        "DM_CTRL",
        "DM_EVENT",
        "AVC",
        "SELINUX_ERR",
        "AVC_PATH",
        "MAC_POLICY_LOAD",
        "MAC_STATUS",
        "MAC_CONFIG_CHANGE",
        "ANOM_PROMISCUOUS",
        "ANOM_ABEND",
        "ANOM_LINK",
        "ANOM_CREAT",
        "INTEGRITY_DATA",
        "INTEGRITY_METADATA",
        "INTEGRITY_STATUS",
        "INTEGRITY_HASH",
        "INTEGRITY_PCR",
        "INTEGRITY_RULE",
        "INTEGRITY_EVM_XATTR",
        "INTEGRITY_POLICY_RULE",
    ];
    MULTI.contains(&record_type) || record_type.starts_with("UNKNOWN[13")
}

/// True when serial `b` comes after `a`, across the 32-bit wrap.
fn is_newer(a: u32, b: u32) -> bool {
    let d = b.wrapping_sub(a);
    d != 0 && d < 0x8000_0000
}

#[derive(Debug)]
struct Pending {
    serial: u32,
    records: Vec<AuditRecord>,
    first_seen_ms: u64,
    newer_seen_ms: Option<u64>,
}

/// Groups records into events by serial number.
///
/// An event is complete at its EOE record; a stand-alone record type is an event by itself;
/// otherwise an event is complete once a newer serial has been seen for `timeout_ms` (records
/// of one event can arrive out of order), or after twice that in any case, or when more than
/// `max_in_flight` events are pending (the oldest is completed). Serial gaps between completed
/// events are counted as lost (see [`Reassembler::take_lost`]); serials wrap at 2^32.
#[derive(Debug)]
pub struct Reassembler {
    pending: Vec<Pending>,
    timeout_ms: u64,
    max_in_flight: usize,
    last_completed: Option<u32>,
    lost: u64,
}

impl Reassembler {
    pub fn new(timeout_ms: u64, max_in_flight: usize) -> Self {
        Reassembler {
            pending: Vec::new(),
            timeout_ms,
            max_in_flight: max_in_flight.max(1),
            last_completed: None,
            lost: 0,
        }
    }

    /// Adds a record; returns the events completed by it or by time passing.
    pub fn push(&mut self, record: AuditRecord, now_ms: u64) -> Vec<AuditEvent> {
        let mut out = Vec::new();
        let serial = record.serial;
        let idx = self.pending.iter().position(|p| p.serial == serial);
        if record.record_type == "EOE" {
            if let Some(i) = idx {
                let p = self.pending.remove(i);
                out.push(self.complete(p));
            }
        } else if idx.is_none() && !is_multipart(&record.record_type) {
            let p = Pending {
                serial,
                records: vec![record],
                first_seen_ms: now_ms,
                newer_seen_ms: None,
            };
            out.push(self.complete(p));
        } else {
            match idx {
                Some(i) => {
                    if let Some(p) = self.pending.get_mut(i) {
                        p.records.push(record);
                    }
                }
                None => self.pending.push(Pending {
                    serial,
                    records: vec![record],
                    first_seen_ms: now_ms,
                    newer_seen_ms: None,
                }),
            }
        }
        for p in &mut self.pending {
            if p.newer_seen_ms.is_none() && is_newer(p.serial, serial) {
                p.newer_seen_ms = Some(now_ms);
            }
        }
        while self.pending.len() > self.max_in_flight {
            let p = self.pending.remove(0);
            out.push(self.complete(p));
        }
        out.extend(self.flush_expired(now_ms));
        out
    }

    /// Completes the events whose time is up.
    pub fn flush_expired(&mut self, now_ms: u64) -> Vec<AuditEvent> {
        let t = self.timeout_ms;
        let (done, keep): (Vec<Pending>, Vec<Pending>) = std::mem::take(&mut self.pending).into_iter().partition(|p| {
            p.newer_seen_ms.is_some_and(|s| now_ms.saturating_sub(s) >= t)
                || now_ms.saturating_sub(p.first_seen_ms) >= t.saturating_mul(2)
        });
        self.pending = keep;
        done.into_iter().map(|p| self.complete(p)).collect()
    }

    /// Completes everything pending (at shutdown or end of input).
    pub fn flush_all(&mut self) -> Vec<AuditEvent> {
        std::mem::take(&mut self.pending)
            .into_iter()
            .map(|p| self.complete(p))
            .collect()
    }

    /// Serial numbers skipped since the last call (records the kernel or auditd lost).
    pub fn take_lost(&mut self) -> u64 {
        std::mem::take(&mut self.lost)
    }

    fn complete(&mut self, p: Pending) -> AuditEvent {
        match self.last_completed {
            Some(last) if is_newer(last, p.serial) => {
                self.lost += u64::from(p.serial.wrapping_sub(last) - 1);
                self.last_completed = Some(p.serial);
            }
            Some(_) => {}
            None => self.last_completed = Some(p.serial),
        }
        build_event(p.serial, p.records)
    }
}

/// Merges the records of one event.
///
/// `fields` holds plain names, first writer wins, in the order EXECVE, SYSCALL, then arrival
/// (so `a0` is the first argument, not a register). A value that lost to a different value
/// of the same name is kept as `{type}.{name}` (lowercase type), or `{type}.{n}.{name}` for
/// the n-th (from 1) repeat of that record type, e.g. the second PATH's `path.1.name`.
pub fn build_event(serial: u32, records: Vec<AuditRecord>) -> AuditEvent {
    let record_types: Vec<String> = records.iter().map(|r| r.record_type.clone()).collect();
    let main = if record_types.iter().any(|t| t == "SYSCALL") {
        "SYSCALL".to_string()
    } else {
        record_types.first().cloned().unwrap_or_default()
    };
    let rank = |t: &str| match t {
        "EXECVE" => 0,
        "SYSCALL" => 1,
        _ => 2,
    };
    let mut order: Vec<(usize, &AuditRecord)> = records.iter().enumerate().collect();
    order.sort_by_key(|(i, r)| (rank(&r.record_type), *i));
    let mut fields = BTreeMap::new();
    let mut repeats: BTreeMap<&str, usize> = BTreeMap::new();
    for (_, r) in order {
        let n = repeats.entry(r.record_type.as_str()).or_insert(0);
        let qual = if *n == 0 {
            r.record_type.to_lowercase()
        } else {
            format!("{}.{n}", r.record_type.to_lowercase())
        };
        *n += 1;
        for (k, v) in &r.fields {
            match fields.get(k) {
                None => {
                    fields.insert(k.clone(), v.clone());
                }
                Some(existing) if existing == v => {}
                Some(_) => {
                    fields.insert(format!("{qual}.{k}"), v.clone());
                }
            }
        }
    }
    AuditEvent {
        serial: u64::from(serial),
        record_type: main,
        fields,
        record_types,
        timestamp_ms: records.first().map(|r| r.timestamp_ms).unwrap_or(0),
        lineage: None,
    }
}

/// Attaches the lineage of the event's process (its `pid` field), if that process still
/// lives and runs the event's `exe`.
pub fn attach_lineage(ev: &mut AuditEvent, lineage: &LineageReader) {
    let Some(pid) = ev.fields.get("pid").and_then(|p| p.parse::<u32>().ok()) else {
        return;
    };
    let exe = ev.fields.get("exe").map(|e| e.trim_matches('"'));
    ev.lineage = lineage.lineage_if_same(pid, ev.timestamp_ms, exe).map(Box::new);
}

/// Tails the audit log until the sensor stops.
pub fn run(config: &SensorConfig, lineage: &LineageReader, ctx: &SensorCtx) -> Result<(), SensorError> {
    let interval = Duration::from_millis(config.log_poll_interval_ms.max(10));
    let mut reasm = Reassembler::new(config.audit_event_timeout_ms, config.audit_max_in_flight_events);
    let mut malformed: u64 = 0;
    let mut last_malformed_report_ms = 0u64;
    let paths = [config.audit_log_path.clone()];
    super::tail::follow(ctx, &paths, interval, |lines| {
        let now = now_ms();
        let mut events = Vec::new();
        for line in lines {
            match parse_record(&line) {
                Ok(r) => events.extend(reasm.push(r, now)),
                Err(_) => malformed += 1,
            }
        }
        events.extend(reasm.flush_expired(now));
        for mut ev in events {
            attach_lineage(&mut ev, lineage);
            if !ctx.emit(EventData::Audit(ev)) {
                return false;
            }
        }
        let lost = reasm.take_lost();
        if lost > 0 && !ctx.gap(format!("{lost} audit records lost (gaps in serial numbers)")) {
            return false;
        }
        if malformed > 0 && now.saturating_sub(last_malformed_report_ms) >= 60_000 {
            last_malformed_report_ms = now;
            if !ctx.gap(format!("{malformed} unparseable audit log lines skipped")) {
                return false;
            }
            malformed = 0;
        }
        true
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn parses_header_quotes_hex_and_nested_msg() {
        let r = parse_record(r#"node=h1 type=SYSCALL msg=audit(1490137971.011:50406): arch=c000003e syscall=42 comm="curl" exe=2F746D702F782028646571) key=(null) a0=3"#).unwrap();
        assert_eq!(
            (r.record_type.as_str(), r.timestamp_ms, r.serial),
            ("SYSCALL", 1_490_137_971_011, 50406)
        );
        assert_eq!(r.fields.get("comm").unwrap(), "curl");
        assert_eq!(r.fields.get("exe").unwrap(), "/tmp/x (deq");
        assert_eq!(r.fields.get("a0").unwrap(), "3");
        assert!(!r.fields.contains_key("key"));
        let r = parse_record("type=USER_AUTH msg=audit(1.5:7): pid=1 uid=0 msg='op=PAM:authentication acct=\"root\" exe=\"/bin/su\" hostname=? res=failed'").unwrap();
        assert_eq!(r.timestamp_ms, 1500);
        assert_eq!(r.fields.get("acct").unwrap(), "root");
        assert_eq!(r.fields.get("res").unwrap(), "failed");
        assert!(!r.fields.contains_key("hostname"));
        let r = parse_record("type=EXECVE msg=audit(1.000:8): argc=2 a0=\"sh\" a1_len=6 a1[0]=414243 a1[1]=444546")
            .unwrap();
        assert_eq!(r.fields.get("a1").unwrap(), "ABCDEF");
        assert!(!r.fields.contains_key("a1_len"));
        let r = parse_record("type=PROCTITLE msg=audit(1.000:9): proctitle=6375726C002D73").unwrap();
        assert_eq!(r.fields.get("proctitle").unwrap(), "curl -s");
        assert_eq!(parse_record("garbage"), Err(AuditParseError::NoType));
        assert_eq!(
            parse_record("type=X msg=audit(abc:1): a=b"),
            Err(AuditParseError::BadHeader)
        );
        assert_eq!(parse_record("type=X hello"), Err(AuditParseError::NoHeader));
    }

    #[test]
    fn events_of_a_live_process_carry_its_lineage() {
        let me = std::process::id();
        let exe = std::fs::read_link("/proc/self/exe").unwrap().display().to_string();
        let line = |pid: u32, exe: &str| {
            let ts = crate::clock::now_ms();
            format!(
                "type=SYSCALL msg=audit({}.{:03}:7): syscall=59 pid={pid} ppid=1 exe=\"{exe}\"",
                ts / 1000,
                ts % 1000
            )
        };
        let reader = LineageReader::new();
        let mut ev = build_event(7, vec![parse_record(&line(me, &exe)).unwrap()]);
        assert!(ev.timestamp_ms > 0);
        attach_lineage(&mut ev, &reader);
        let l = ev.lineage.expect("a live process has a lineage");
        assert_eq!((l.process.pid, l.process.exe.as_str()), (me, exe.as_str()));
        assert!(!l.ancestors.is_empty() || l.rooted);
        // Another program on that pid, or no pid: none.
        let mut ev = build_event(8, vec![parse_record(&line(me, "/usr/bin/other")).unwrap()]);
        attach_lineage(&mut ev, &reader);
        assert!(ev.lineage.is_none());
        let mut ev = build_event(
            9,
            vec![parse_record("type=USER_LOGIN msg=audit(1.000:9): uid=0").unwrap()],
        );
        attach_lineage(&mut ev, &reader);
        assert!(ev.lineage.is_none());
    }

    #[test]
    fn eoe_and_standalone_records_complete_events() {
        let mut r = Reassembler::new(1000, 16);
        let rec = |l: &str| parse_record(l).unwrap();
        assert!(
            r.push(
                rec(r#"type=SYSCALL msg=audit(1.0:10): syscall=59 exe="/bin/ls" a0=55"#),
                0
            )
            .is_empty()
        );
        assert!(
            r.push(rec(r#"type=EXECVE msg=audit(1.0:10): argc=2 a0="ls" a1="-l""#), 0)
                .is_empty()
        );
        assert!(
            r.push(rec(r#"type=PATH msg=audit(1.0:10): item=0 name="/bin/ls""#), 0)
                .is_empty()
        );
        assert!(
            r.push(rec(r#"type=PATH msg=audit(1.0:10): item=1 name="/lib/ld.so""#), 0)
                .is_empty()
        );
        let ev = r.push(rec("type=EOE msg=audit(1.0:10): "), 0);
        assert_eq!(ev.len(), 1);
        let ev = ev.first().unwrap();
        assert_eq!(ev.record_type, "SYSCALL");
        assert_eq!(ev.record_types, vec!["SYSCALL", "EXECVE", "PATH", "PATH"]);
        assert_eq!(ev.fields.get("a0").unwrap(), "ls");
        assert_eq!(ev.fields.get("syscall.a0").unwrap(), "55");
        assert_eq!(ev.fields.get("name").unwrap(), "/bin/ls");
        assert_eq!(ev.fields.get("path.1.name").unwrap(), "/lib/ld.so");
        let ev = r.push(
            rec("type=USER_LOGIN msg=audit(2.0:11): pid=1 msg='op=login acct=\"bob\" res=success'"),
            5,
        );
        assert_eq!(ev.len(), 1);
        assert_eq!(ev.first().unwrap().fields.get("acct").unwrap(), "bob");
        assert_eq!(r.take_lost(), 0);
    }
}
