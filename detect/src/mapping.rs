//! The one mapping layer between Ward's events and Sigma: which logsource an event
//! belongs to and which Sigma field name reads which event field. It borrows the
//! event (no copies on the hot path); it must not do IO and must not know any rule.
//!
//! | Ward event | Sigma logsource | fields |
//! | --- | --- | --- |
//! | process | `product: linux`, `category: process_creation` | `Image`, `CommandLine`, `ParentImage`, `ParentCommandLine`, `ParentUser` (the parent's effective user, from the lineage), `CurrentDirectory`, `User`, `UserId`, `LogonId` (= uid, as Sysmon for Linux derives it: see below), `ProcessId`, `ParentProcessId`, `Hashes` (`SHA256=<hex>`), `sha256`, `ImageDeleted` (bool), `GrandparentImage`, `GrandparentCommandLine` (from the lineage), `LoginUid` (the audit login uid; absent when unset), `LoginUser` (its name), `SessionId` (audit session; absent when unset), `Terminal` (controlling tty, `pts/3`; absent when none), `ContainerId`, `CgroupPath`, `MountNamespace`, `PidNamespace` (inode numbers, as in `/proc/PID/ns/*`), `PipedFromImage`, `PipedFromCommandLine` (the process writing into its stdin pipe), `PipedToImage`, `PipedToCommandLine` (the one reading its stdout pipe): each set on whichever end of a pipe started second |
//! | file create / modify / chmod / rename | `category: file_event` | `TargetFilename`, `SourceFilename` (rename), `Hashes`, `sha256`, `FileSize`, `FileMode` (4-digit octal permission bits), `UserId`, `Operation` |
//! | file rename | also `category: file_rename` | as above |
//! | file delete | `category: file_delete` | as above |
//! | sensitive file opened | `category: file_access` | `TargetFilename`, and the opening process's fields as for process (`Image`, `CommandLine`, `ParentImage`, `User`, ...) |
//! | network connection (connect, accept, listen) | `category: network_connection` | `Initiated` (`true` for a connect, `false` for an accept or a listener), `SourceIp`, `SourcePort`, `DestinationIp`, `DestinationPort` (the initiating side is the source; a listener has only its source), `SourceIsIpv6`, `DestinationIsIpv6`, `Protocol` (`tcp`, `udp`; a UDP connect or sendto is `connect`, a UDP bind to a named port is `listen`), `Operation` (`connect`, `accept`, `listen`), `DestinationHostname` (the name a DNS answer seen before gave the remote address; absent otherwise), and the process's fields as for process (`Image`, `CommandLine`, `User`, ...) |
//! | DNS lookup (UDP port 53) | `category: dns_query` | `QueryName` (no trailing dot), `QueryType` (`A`, `AAAA`, `TXT`, ..., `TYPE<n>`), `QueryResults` (the answers' data joined by `;`; absent when no response was seen), `QueryStatus` (the response code: `NOERROR`, `NXDOMAIN`, ...; absent when no response was seen), and the querying process's fields as for process (`Image`, `CommandLine`, `User`, ...) |
//! | auth line | `service: <program>` (sshd, sudo, su, cron, useradd...), and the generic `service: auth` / `service: syslog` | keyword rules search `message`; fields `service`, `action`, `User`, `USER`, `SourceIp`, `success`, `Hostname`, `message` |
//! | audit | `service: auditd` | every audit field as logged (`a0`..`aN`, `exe`, `comm`, `name`, `key`, `nametype`, `euid`, ...); `type` is every record type of the event; `SYSCALL` falls back to a non-numeric `syscall` |
//!
//! `LogonId` stays the uid: Sysmon for Linux, whose events SigmaHQ's Linux rules are
//! written against, fills it from the uid (with the tty index in its high half), not
//! from the audit login uid, and a shipped rule (OMIGOD: `User: root`, `LogonId: 0`)
//! relies on that for a service's child that has no login uid. The login uid is
//! `LoginUid`.
//!
//! Rules with only `product: linux` see every event kind; their keywords search the
//! command line (process), the message (auth) or every audit value.

use std::borrow::Cow;

use rsigma_eval::event::{Event as SigmaEventTrait, EventValue};
use serde_json::{Map, Value};

use crate::event::{
    AuditEvent, AuthEvent, DnsEvent, Event, EventData, FileAccessEvent, FileEvent, FileOp, NetOp, NetworkEvent,
    ProcessEvent,
};

/// Which group of rules an event is evaluated against. A rule lives in exactly one
/// bucket, except rules with no category and no service, which live in every
/// [`Bucket::PRIMARY`] bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Bucket {
    Process,
    FileEvent,
    FileDelete,
    FileRename,
    FileAccess,
    /// Network connections and listeners. Not a primary bucket: `product: linux`
    /// keyword rules search command lines, and a process's command line is judged
    /// once, on its process event, not again on each of its connections.
    Network,
    /// Auth lines of any program: rules with `service: auth` or `service: syslog`.
    AuthGeneric,
    /// Auth lines of one program: rules with `service: <program>`.
    AuthService,
    Audit,
    /// DNS lookups. Not primary, for the reason network connections are not.
    Dns,
}

impl Bucket {
    /// The buckets that hold rules written for `product: linux` alone. An event
    /// reaches exactly one of them, so such a rule fires at most once per event.
    pub const PRIMARY: [Bucket; 6] = [
        Bucket::Process,
        Bucket::FileEvent,
        Bucket::FileDelete,
        Bucket::FileAccess,
        Bucket::AuthGeneric,
        Bucket::Audit,
    ];
}

/// Where a rule belongs, from its logsource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placement {
    /// One bucket (with the program name for [`Bucket::AuthService`]).
    One(Bucket, Option<String>),
    /// `product: linux` (or no product) with no category and no service.
    AllPrimary,
    /// A logsource Ward has no events for (another product, network_connection...).
    Inactive(String),
}

/// Decides a rule's bucket from its logsource (case-insensitive, as Sigma).
pub fn placement(category: Option<&str>, product: Option<&str>, service: Option<&str>) -> Placement {
    if let Some(p) = product
        && !p.eq_ignore_ascii_case("linux")
    {
        return Placement::Inactive(format!("product {p}"));
    }
    if let Some(c) = category {
        let bucket = match c.to_ascii_lowercase().as_str() {
            "process_creation" => Bucket::Process,
            "file_event" => Bucket::FileEvent,
            "file_delete" => Bucket::FileDelete,
            "file_rename" => Bucket::FileRename,
            "file_access" => Bucket::FileAccess,
            "network_connection" => Bucket::Network,
            "dns_query" => Bucket::Dns,
            other => return Placement::Inactive(format!("category {other}")),
        };
        return Placement::One(bucket, None);
    }
    if let Some(s) = service {
        let s = s.to_ascii_lowercase();
        return match s.as_str() {
            "auditd" => Placement::One(Bucket::Audit, None),
            "auth" | "syslog" => Placement::One(Bucket::AuthGeneric, None),
            _ => Placement::One(Bucket::AuthService, Some(s)),
        };
    }
    Placement::AllPrimary
}

/// The buckets one event is evaluated against, and the program name for
/// [`Bucket::AuthService`]. Gaps are evaluated against nothing.
pub fn buckets(event: &Event) -> (&'static [Bucket], Option<String>) {
    match &event.data {
        EventData::Process(_) => (&[Bucket::Process], None),
        EventData::File(f) => match f.op {
            FileOp::Delete => (&[Bucket::FileDelete], None),
            FileOp::Rename => (&[Bucket::FileEvent, Bucket::FileRename], None),
            FileOp::Create | FileOp::Modify | FileOp::Chmod => (&[Bucket::FileEvent], None),
        },
        EventData::Auth(a) => (
            &[Bucket::AuthGeneric, Bucket::AuthService],
            Some(a.service.to_ascii_lowercase()),
        ),
        EventData::Audit(_) => (&[Bucket::Audit], None),
        EventData::FileAccess(_) => (&[Bucket::FileAccess], None),
        EventData::Network(_) => (&[Bucket::Network], None),
        EventData::Gap(_) => (&[], None),
        EventData::Dns(_) => (&[Bucket::Dns], None),
    }
}

/// Lowercase hex of a SHA-256.
pub fn sha256_hex(h: &[u8; 32]) -> String {
    hex::encode(h)
}

/// The file operation as a word (the `Operation` field).
pub fn file_op_name(op: FileOp) -> &'static str {
    match op {
        FileOp::Create => "create",
        FileOp::Modify => "modify",
        FileOp::Rename => "rename",
        FileOp::Delete => "delete",
        FileOp::Chmod => "chmod",
    }
}

/// A process's fields: who it is and where it runs (also the opener of a file
/// access), then what its image is (a process event's own).
const PROCESS_FIELDS: &[&str] = &[
    "Image",
    "CommandLine",
    "ParentImage",
    "ParentCommandLine",
    "ParentUser",
    "CurrentDirectory",
    "User",
    "UserId",
    "LogonId",
    "ProcessId",
    "ParentProcessId",
    "GrandparentImage",
    "GrandparentCommandLine",
    "LoginUid",
    "LoginUser",
    "SessionId",
    "Terminal",
    "ContainerId",
    "CgroupPath",
    "MountNamespace",
    "PidNamespace",
];
const IMAGE_FIELDS: &[&str] = &[
    "Hashes",
    "sha256",
    "ImageDeleted",
    "PipedFromImage",
    "PipedFromCommandLine",
    "PipedToImage",
    "PipedToCommandLine",
    "OriginalImage",
];
const FILE_FIELDS: &[&str] = &[
    "TargetFilename",
    "SourceFilename",
    "Hashes",
    "sha256",
    "FileSize",
    "FileMode",
    "UserId",
    "Operation",
];
const NETWORK_FIELDS: &[&str] = &[
    "Initiated",
    "SourceIp",
    "SourcePort",
    "DestinationIp",
    "DestinationPort",
    "SourceIsIpv6",
    "DestinationIsIpv6",
    "Protocol",
    "Operation",
    "DestinationHostname",
];
const DNS_FIELDS: &[&str] = &["QueryName", "QueryType", "QueryResults", "QueryStatus"];
const AUTH_FIELDS: &[&str] = &[
    "service", "action", "User", "USER", "SourceIp", "success", "Hostname", "message",
];

/// A Ward event seen through Sigma field names. Implements rsigma's `Event`.
#[derive(Debug, Clone, Copy)]
pub struct SigmaView<'a> {
    event: &'a Event,
}

impl<'a> SigmaView<'a> {
    pub fn new(event: &'a Event) -> Self {
        SigmaView { event }
    }
}

fn s(v: &str) -> Option<EventValue<'_>> {
    Some(EventValue::Str(Cow::Borrowed(v)))
}

fn opt_s(v: Option<&str>) -> Option<EventValue<'_>> {
    v.map(|v| EventValue::Str(Cow::Borrowed(v)))
}

fn hashes(h: &Option<[u8; 32]>) -> Option<EventValue<'static>> {
    h.as_ref()
        .map(|h| EventValue::Str(Cow::Owned(format!("SHA256={}", sha256_hex(h).to_ascii_uppercase()))))
}

fn sha(h: &Option<[u8; 32]>) -> Option<EventValue<'static>> {
    h.as_ref().map(|h| EventValue::Str(Cow::Owned(sha256_hex(h))))
}

fn process_field<'a>(p: &'a ProcessEvent, name: &str) -> Option<EventValue<'a>> {
    match name {
        "Image" => s(&p.exe),
        "CommandLine" => s(&p.cmdline),
        "ParentImage" => s(&p.parent_exe),
        "ParentCommandLine" => s(&p.parent_cmdline),
        "ParentUser" => opt_s(p.lineage.as_ref()?.ancestors.first()?.user.as_deref()),
        "CurrentDirectory" => s(&p.cwd),
        "User" => s(&p.user),
        "UserId" | "LogonId" => p.uid.map(|u| EventValue::Int(i64::from(u))),
        "ProcessId" => Some(EventValue::Int(i64::from(p.pid))),
        "ParentProcessId" => Some(EventValue::Int(i64::from(p.ppid))),
        "Hashes" => hashes(&p.sha256),
        "sha256" => sha(&p.sha256),
        "ImageDeleted" => Some(EventValue::Bool(p.exe_deleted)),
        "GrandparentImage" => s(&p.lineage.as_ref()?.ancestors.get(1)?.exe),
        "GrandparentCommandLine" => s(&p.lineage.as_ref()?.ancestors.get(1)?.cmdline),
        "LoginUid" => p.context.login_uid.map(|u| EventValue::Int(i64::from(u))),
        "LoginUser" => opt_s(p.context.login_user.as_deref()),
        "SessionId" => p.context.session_id.map(|u| EventValue::Int(i64::from(u))),
        "Terminal" => Some(&p.context.tty).filter(|t| !t.is_empty()).and_then(|t| s(t)),
        "ContainerId" => opt_s(p.context.container_id.as_deref()),
        "CgroupPath" => Some(&p.context.cgroup).filter(|c| !c.is_empty()).and_then(|c| s(c)),
        "MountNamespace" => p.context.mnt_ns.map(|n| EventValue::Int(i64::from(n))),
        "PidNamespace" => p.context.pid_ns.map(|n| EventValue::Int(i64::from(n))),
        "PipedFromImage" => s(&p.pipes.as_ref()?.from.as_ref()?.exe),
        "PipedFromCommandLine" => s(&p.pipes.as_ref()?.from.as_ref()?.cmdline),
        "PipedToImage" => s(&p.pipes.as_ref()?.to.as_ref()?.exe),
        "PipedToCommandLine" => s(&p.pipes.as_ref()?.to.as_ref()?.cmdline),
        "OriginalImage" => opt_s(p.original_image.as_deref()),
        _ => None,
    }
}

fn file_field<'a>(f: &'a FileEvent, name: &str) -> Option<EventValue<'a>> {
    match name {
        "TargetFilename" => s(&f.path),
        "SourceFilename" => opt_s(f.from_path.as_deref()),
        "Hashes" => hashes(&f.sha256),
        "sha256" => sha(&f.sha256),
        "FileSize" => f.size.map(|n| EventValue::Int(i64::try_from(n).unwrap_or(i64::MAX))),
        "FileMode" => f
            .mode
            .map(|m| EventValue::Str(Cow::Owned(format!("{:04o}", m & 0o7777)))),
        "UserId" => f.uid.map(|u| EventValue::Int(i64::from(u))),
        "Operation" => s(file_op_name(f.op)),
        // The writer's fields (Image, CommandLine, User...); `UserId` matched above.
        other if PROCESS_FIELDS.contains(&other) => process_field(f.process.as_deref()?, other),
        _ => None,
    }
}

/// A file event's process fields (its writer's): the process fields a file's own
/// do not name (`UserId` stays the owner's).
fn writer_fields() -> impl Iterator<Item = &'static &'static str> {
    PROCESS_FIELDS.iter().filter(|k| !FILE_FIELDS.contains(k))
}

fn access_field<'a>(a: &'a FileAccessEvent, name: &str) -> Option<EventValue<'a>> {
    match name {
        "TargetFilename" => s(&a.path),
        // The file is not the process's image: its hash fields are not offered.
        other if IMAGE_FIELDS.contains(&other) => None,
        other => process_field(&a.process, other),
    }
}

/// The words Sigma's (Sysmon-shaped) rules compare `Initiated` and `*IsIpv6` with.
fn bool_word(b: bool) -> Option<EventValue<'static>> {
    Some(EventValue::Str(Cow::Borrowed(if b { "true" } else { "false" })))
}

/// The name of a network operation (the `Operation` field).
pub fn net_op_name(op: NetOp) -> &'static str {
    match op {
        NetOp::Connect => "connect",
        NetOp::Accept => "accept",
        NetOp::Listen => "listen",
    }
}

fn network_field<'a>(n: &'a NetworkEvent, name: &str) -> Option<EventValue<'a>> {
    let ip = |a: std::net::IpAddr| Some(EventValue::Str(Cow::Owned(a.to_string())));
    match name {
        "Initiated" => bool_word(n.op == NetOp::Connect),
        "SourceIp" => ip(n.source_ip),
        "SourcePort" => Some(EventValue::Int(i64::from(n.source_port))),
        "DestinationIp" => n.destination_ip.and_then(ip),
        "DestinationPort" => n.destination_port.map(|p| EventValue::Int(i64::from(p))),
        "SourceIsIpv6" => bool_word(n.source_ip.is_ipv6()),
        "DestinationIsIpv6" => n.destination_ip.and_then(|a| bool_word(a.is_ipv6())),
        "Protocol" => s(&n.protocol),
        "Operation" => s(net_op_name(n.op)),
        "DestinationHostname" => opt_s(n.destination_hostname.as_deref()),
        // The process's image is not hashed again for each of its connections.
        other if IMAGE_FIELDS.contains(&other) => None,
        other => process_field(&n.process, other),
    }
}

fn dns_field<'a>(d: &'a DnsEvent, name: &str) -> Option<EventValue<'a>> {
    match name {
        "QueryName" => s(&d.query_name),
        "QueryType" => s(&d.query_type),
        // Absent with no response seen; empty for a response without answers.
        "QueryResults" => d
            .status
            .as_ref()
            .map(|_| EventValue::Str(Cow::Owned(d.answers.join(";")))),
        "QueryStatus" => opt_s(d.status.as_deref()),
        other if IMAGE_FIELDS.contains(&other) => None,
        other => process_field(&d.process, other),
    }
}

fn auth_field<'a>(a: &'a AuthEvent, name: &str) -> Option<EventValue<'a>> {
    match name {
        "service" => s(&a.service),
        "action" => s(&a.action),
        "User" | "USER" => opt_s(a.user.as_deref()),
        "SourceIp" => opt_s(a.source_ip.as_deref()),
        "success" => a.success.map(EventValue::Bool),
        "Hostname" => s(&a.host),
        "message" => s(&a.message),
        _ => None,
    }
}

fn audit_field<'a>(a: &'a AuditEvent, name: &str) -> Option<EventValue<'a>> {
    match name {
        "type" => {
            if a.record_types.is_empty() {
                s(&a.record_type)
            } else {
                let mut all = Vec::with_capacity(a.record_types.len() + 1);
                all.push(EventValue::Str(Cow::Borrowed(a.record_type.as_str())));
                all.extend(
                    a.record_types
                        .iter()
                        .filter(|t| **t != a.record_type)
                        .map(|t| EventValue::Str(Cow::Borrowed(t.as_str()))),
                );
                Some(EventValue::Array(all))
            }
        }
        "SYSCALL" => match a.fields.get("SYSCALL") {
            Some(v) => s(v),
            None => a
                .fields
                .get("syscall")
                .filter(|v| !v.is_empty() && !v.bytes().all(|b| b.is_ascii_digit()))
                .map(|v| EventValue::Str(Cow::Borrowed(v.as_str()))),
        },
        other => a.fields.get(other).map(|v| EventValue::Str(Cow::Borrowed(v.as_str()))),
    }
}

impl SigmaEventTrait for SigmaView<'_> {
    fn get_field(&self, path: &str) -> Option<EventValue<'_>> {
        match &self.event.data {
            EventData::Process(p) => process_field(p, path),
            EventData::File(f) => file_field(f, path),
            EventData::Auth(a) => auth_field(a, path),
            EventData::Audit(a) => audit_field(a, path),
            EventData::FileAccess(a) => access_field(a, path),
            EventData::Network(n) => network_field(n, path),
            EventData::Gap(_) => None,
            EventData::Dns(d) => dns_field(d, path),
        }
    }

    fn any_string_value(&self, pred: &dyn Fn(&str) -> bool) -> bool {
        let mut hit = false;
        self.visit_string_values(&mut |v| {
            if !hit && pred(v) {
                hit = true;
            }
        });
        hit
    }

    fn all_string_values(&self) -> Vec<Cow<'_, str>> {
        let mut out = Vec::new();
        self.visit_string_values(&mut |v| out.push(Cow::Owned(v.to_string())));
        out
    }

    /// The strings keyword rules search: the command line, the auth message, or
    /// every audit value. Paths and hashes are not keyword material.
    fn visit_string_values(&self, visit: &mut dyn FnMut(&str)) {
        match &self.event.data {
            EventData::Process(p) => visit(&p.cmdline),
            EventData::FileAccess(a) => visit(&a.process.cmdline),
            EventData::Auth(a) => visit(&a.message),
            EventData::Audit(a) => a.fields.values().for_each(|v| visit(v)),
            EventData::File(_) | EventData::Network(_) | EventData::Gap(_) | EventData::Dns(_) => {}
        }
    }

    fn to_json(&self) -> Value {
        let mut map = Map::new();
        let mut put = |k: &str| {
            if let Some(v) = self.get_field(k) {
                map.insert(k.to_string(), v.to_json());
            }
        };
        match &self.event.data {
            EventData::Process(_) => PROCESS_FIELDS.iter().chain(IMAGE_FIELDS).for_each(|k| put(k)),
            EventData::File(_) => FILE_FIELDS.iter().chain(writer_fields()).for_each(|k| put(k)),
            EventData::FileAccess(_) => ["TargetFilename"].iter().chain(PROCESS_FIELDS).for_each(|k| put(k)),
            EventData::Network(_) => NETWORK_FIELDS.iter().chain(PROCESS_FIELDS).for_each(|k| put(k)),
            EventData::Auth(_) => AUTH_FIELDS.iter().for_each(|k| put(k)),
            EventData::Audit(a) => {
                put("type");
                put("SYSCALL");
                for (k, v) in &a.fields {
                    map.entry(k.clone()).or_insert_with(|| Value::String(v.clone()));
                }
            }
            EventData::Gap(_) => {}
            EventData::Dns(_) => DNS_FIELDS.iter().chain(PROCESS_FIELDS).for_each(|k| put(k)),
        }
        Value::Object(map)
    }

    fn top_level_keys(&self) -> Option<Vec<Cow<'_, str>>> {
        let mut out = Vec::new();
        self.visit_top_level_keys(&mut |k| out.push(Cow::Owned(k.to_string())));
        Some(out)
    }

    fn visit_top_level_keys(&self, visit: &mut dyn FnMut(&str)) -> bool {
        match &self.event.data {
            EventData::Process(_) => PROCESS_FIELDS.iter().chain(IMAGE_FIELDS).for_each(|k| visit(k)),
            EventData::File(_) => FILE_FIELDS.iter().chain(writer_fields()).for_each(|k| visit(k)),
            EventData::FileAccess(_) => ["TargetFilename"].iter().chain(PROCESS_FIELDS).for_each(|k| visit(k)),
            EventData::Network(_) => NETWORK_FIELDS.iter().chain(PROCESS_FIELDS).for_each(|k| visit(k)),
            EventData::Auth(_) => AUTH_FIELDS.iter().for_each(|k| visit(k)),
            EventData::Audit(a) => {
                visit("type");
                visit("SYSCALL");
                a.fields.keys().for_each(|k| visit(k));
            }
            EventData::Gap(_) => {}
            EventData::Dns(_) => DNS_FIELDS.iter().chain(PROCESS_FIELDS).for_each(|k| visit(k)),
        }
        true
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use serde_json::json;

    fn proc_event() -> Event {
        Event {
            observed_at_ms: 1,
            data: EventData::Process(ProcessEvent {
                pid: 10,
                exe: "/usr/bin/curl".into(),
                cmdline: "curl http://x/y.sh".into(),
                sha256: Some([0xab; 32]),
                exe_deleted: true,
                ..Default::default()
            }),
        }
    }

    #[test]
    fn a_file_access_shows_the_file_and_its_opener_not_the_openers_image() {
        let mut process = ProcessEvent {
            exe: "/usr/bin/cat".into(),
            cmdline: "cat /etc/shadow".into(),
            sha256: Some([7; 32]),
            ..ProcessEvent::default()
        };
        process.pid = 42;
        let e = Event {
            observed_at_ms: 0,
            data: EventData::FileAccess(FileAccessEvent {
                path: "/etc/shadow".into(),
                process,
            }),
        };
        let json = SigmaView::new(&e).to_json();
        assert_eq!(json["TargetFilename"], "/etc/shadow");
        assert_eq!(json["Image"], "/usr/bin/cat");
        assert_eq!(json["ProcessId"], 42);
        assert!(json.get("Hashes").is_none() && json.get("sha256").is_none(), "{json}");
        assert!(SigmaView::new(&e).get_field("Hashes").is_none());
    }

    #[test]
    fn process_fields_use_sigma_names() {
        let e = proc_event();
        let v = SigmaView::new(&e);
        assert_eq!(v.get_field("Image"), s("/usr/bin/curl"));
        assert_eq!(v.get_field("ProcessId"), Some(EventValue::Int(10)));
        assert_eq!(v.get_field("ImageDeleted"), Some(EventValue::Bool(true)));
        let h = v.get_field("Hashes").unwrap();
        assert!(h.as_str().unwrap().starts_with("SHA256=ABAB"));
        assert_eq!(v.get_field("Nope"), None);
        assert_eq!(v.get_field("ParentUser"), None, "no lineage, no parent user");
        let mut e = proc_event();
        if let EventData::Process(p) = &mut e.data {
            let node = |pid: u32, user: &str| ward_protocol::ProcessNode {
                pid,
                ppid: 1,
                start_time_ms: 5,
                exe: "/usr/bin/bash".into(),
                cmdline: "bash".into(),
                user: Some(user.into()),
                login_user: None,
            };
            p.lineage = Some(std::sync::Arc::new(crate::event::Lineage {
                process: node(10, "www-data"),
                ancestors: vec![node(9, "root")],
                rooted: true,
            }));
        }
        assert_eq!(SigmaView::new(&e).get_field("ParentUser"), s("root"));
    }

    #[test]
    fn context_and_grandparent_fields() {
        let e = proc_event();
        let v = SigmaView::new(&e);
        for absent in [
            "GrandparentImage",
            "LoginUid",
            "LoginUser",
            "SessionId",
            "Terminal",
            "ContainerId",
            "CgroupPath",
            "MountNamespace",
        ] {
            assert_eq!(v.get_field(absent), None, "{absent} of an event without context");
        }
        let mut e = proc_event();
        if let EventData::Process(p) = &mut e.data {
            p.uid = Some(0);
            let node = |pid: u32, exe: &str, cmdline: &str| ward_protocol::ProcessNode {
                pid,
                ppid: pid - 1,
                start_time_ms: 5,
                exe: exe.into(),
                cmdline: cmdline.into(),
                user: None,
                login_user: None,
            };
            p.lineage = Some(std::sync::Arc::new(crate::event::Lineage {
                process: node(10, "/usr/bin/curl", "curl"),
                ancestors: vec![
                    node(9, "/usr/bin/bash", "bash"),
                    node(8, "/usr/sbin/sshd", "sshd: alice"),
                ],
                rooted: true,
            }));
            p.context = std::sync::Arc::new(crate::event::ProcessContext {
                tty: "pts/3".into(),
                session_id: Some(12),
                login_uid: Some(1000),
                login_user: Some("alice".into()),
                cgroup: "/system.slice/docker-ab.scope".into(),
                container_id: Some("ab".into()),
                mnt_ns: Some(4_026_531_841),
                pid_ns: Some(4_026_531_836),
                host_namespaces: Some(true),
            });
        }
        let v = SigmaView::new(&e);
        let get = |k: &str| v.get_field(k).map(|x| x.to_json());
        assert_eq!(get("GrandparentImage"), Some(json!("/usr/sbin/sshd")));
        assert_eq!(get("GrandparentCommandLine"), Some(json!("sshd: alice")));
        assert_eq!(
            get("ParentImage"),
            Some(json!("")),
            "the parent fields are the event's own"
        );
        assert_eq!(get("LogonId"), Some(json!(0)), "LogonId stays the uid");
        assert_eq!(get("LoginUid"), Some(json!(1000)));
        assert_eq!(get("LoginUser"), Some(json!("alice")));
        assert_eq!(get("SessionId"), Some(json!(12)));
        assert_eq!(get("Terminal"), Some(json!("pts/3")));
        assert_eq!(get("ContainerId"), Some(json!("ab")));
        assert_eq!(get("CgroupPath"), Some(json!("/system.slice/docker-ab.scope")));
        assert_eq!(get("MountNamespace"), Some(json!(4_026_531_841u32)));
        assert_eq!(get("PidNamespace"), Some(json!(4_026_531_836u32)));
        assert!(v.top_level_keys().unwrap().iter().any(|k| k == "Terminal"));
    }

    #[test]
    fn pipe_fields_name_the_other_ends() {
        let mut e = proc_event();
        assert_eq!(SigmaView::new(&e).get_field("PipedFromImage"), None);
        if let EventData::Process(p) = &mut e.data {
            p.pipes = Some(Box::new(crate::event::PipePeers {
                from: Some(crate::event::PipeEnd {
                    pid: 9,
                    exe: "/usr/bin/curl".into(),
                    cmdline: "curl -s https://example.org/i.sh".into(),
                }),
                to: None,
            }));
        }
        let v = SigmaView::new(&e);
        let get = |k: &str| v.get_field(k).map(|x| x.to_json());
        assert_eq!(get("PipedFromImage"), Some(json!("/usr/bin/curl")));
        assert_eq!(
            get("PipedFromCommandLine"),
            Some(json!("curl -s https://example.org/i.sh"))
        );
        assert_eq!(get("PipedToImage"), None);
        assert!(v.top_level_keys().unwrap().iter().any(|k| k == "PipedFromImage"));
    }

    #[test]
    fn placement_follows_logsource() {
        assert_eq!(
            placement(Some("file_access"), Some("linux"), None),
            Placement::One(Bucket::FileAccess, None)
        );
        assert_eq!(
            placement(Some("process_creation"), Some("linux"), None),
            Placement::One(Bucket::Process, None)
        );
        assert_eq!(
            placement(None, Some("linux"), Some("sshd")),
            Placement::One(Bucket::AuthService, Some("sshd".into()))
        );
        assert_eq!(placement(None, Some("Linux"), None), Placement::AllPrimary);
        assert!(matches!(
            placement(Some("process_creation"), Some("windows"), None),
            Placement::Inactive(_)
        ));
        assert_eq!(
            placement(Some("network_connection"), Some("linux"), None),
            Placement::One(Bucket::Network, None)
        );
        assert_eq!(
            placement(Some("dns_query"), Some("linux"), None),
            Placement::One(Bucket::Dns, None)
        );
        assert!(matches!(
            placement(Some("dns"), Some("linux"), None),
            Placement::Inactive(_)
        ));
    }

    #[test]
    fn network_events_read_as_sysmon_shaped_fields() {
        let ev = |op, src: &str, dst: Option<&str>| Event {
            observed_at_ms: 1,
            data: EventData::Network(Box::new(NetworkEvent {
                op,
                protocol: "tcp".into(),
                source_ip: src.parse().unwrap(),
                source_port: 40000,
                destination_ip: dst.map(|d| d.parse().unwrap()),
                destination_port: dst.map(|_| 4444),
                established: true,
                destination_hostname: None,
                process: ProcessEvent {
                    pid: 7,
                    exe: "/usr/bin/bash".into(),
                    cmdline: "bash -i".into(),
                    user: "www-data".into(),
                    sha256: Some([1; 32]),
                    ..Default::default()
                },
            })),
        };
        let connect = ev(NetOp::Connect, "10.0.0.5", Some("2001:db8::7"));
        let v = SigmaView::new(&connect);
        let get = |v: &SigmaView<'_>, k: &str| v.get_field(k).map(|x| x.to_json());
        assert_eq!(get(&v, "Initiated"), Some(json!("true")));
        assert_eq!(get(&v, "SourceIp"), Some(json!("10.0.0.5")));
        assert_eq!(get(&v, "SourcePort"), Some(json!(40000)));
        assert_eq!(get(&v, "DestinationIp"), Some(json!("2001:db8::7")));
        assert_eq!(get(&v, "DestinationPort"), Some(json!(4444)));
        assert_eq!(get(&v, "SourceIsIpv6"), Some(json!("false")));
        assert_eq!(get(&v, "DestinationIsIpv6"), Some(json!("true")));
        assert_eq!(get(&v, "Protocol"), Some(json!("tcp")));
        assert_eq!(get(&v, "Operation"), Some(json!("connect")));
        assert_eq!(get(&v, "Image"), Some(json!("/usr/bin/bash")));
        assert_eq!(get(&v, "User"), Some(json!("www-data")));
        assert_eq!(get(&v, "DestinationHostname"), None);
        assert_eq!(get(&v, "Hashes"), None, "the image's hash is the process event's");
        assert!(
            !v.any_string_value(&|s| s.contains("bash")),
            "no keyword search on connections"
        );
        assert_eq!(buckets(&connect).0, &[Bucket::Network]);
        let listen = ev(NetOp::Listen, "0.0.0.0", None);
        let v = SigmaView::new(&listen);
        assert_eq!(get(&v, "Initiated"), Some(json!("false")));
        assert_eq!((get(&v, "DestinationIp"), get(&v, "DestinationPort")), (None, None));
        let keys = v.top_level_keys().unwrap();
        assert!(keys.iter().any(|k| k == "SourcePort") && keys.iter().any(|k| k == "Image"));
    }

    #[test]
    fn dns_lookups_read_as_dns_query_fields() {
        let e = Event {
            observed_at_ms: 1,
            data: EventData::Dns(Box::new(DnsEvent {
                query_name: "x1.tunnel.example".into(),
                query_type: "TXT".into(),
                status: Some("NOERROR".into()),
                answers: vec!["192.0.2.7".into(), "2001:db8::1".into()],
                server_ip: Some("127.0.0.53".parse().unwrap()),
                server_port: 53,
                process: ProcessEvent {
                    pid: 9,
                    exe: "/usr/bin/dig".into(),
                    cmdline: "dig x1.tunnel.example".into(),
                    sha256: Some([1; 32]),
                    ..Default::default()
                },
            })),
        };
        let v = SigmaView::new(&e);
        let get = |k: &str| v.get_field(k).map(|x| x.to_json());
        assert_eq!(get("QueryName"), Some(json!("x1.tunnel.example")));
        assert_eq!(get("QueryType"), Some(json!("TXT")));
        assert_eq!(get("QueryResults"), Some(json!("192.0.2.7;2001:db8::1")));
        assert_eq!(get("QueryStatus"), Some(json!("NOERROR")));
        assert_eq!(get("Image"), Some(json!("/usr/bin/dig")));
        assert_eq!(get("ProcessId"), Some(json!(9)));
        assert_eq!(get("Hashes"), None);
        assert_eq!(buckets(&e).0, &[Bucket::Dns]);
        assert!(
            !v.any_string_value(&|s| s.contains("dig")),
            "no keyword search on lookups"
        );
        let json = v.to_json();
        assert_eq!(json["QueryName"], "x1.tunnel.example");
        assert!(!Bucket::PRIMARY.contains(&Bucket::Dns));
        let mut unanswered = e.clone();
        if let EventData::Dns(d) = &mut unanswered.data {
            d.status = None;
            d.answers.clear();
        }
        let v = SigmaView::new(&unanswered);
        assert_eq!(v.get_field("QueryStatus"), None);
        assert_eq!(v.get_field("QueryResults"), None);
    }

    #[test]
    fn a_connection_carries_the_name_its_address_was_looked_up_by() {
        let e = Event {
            observed_at_ms: 1,
            data: EventData::Network(Box::new(NetworkEvent {
                op: NetOp::Connect,
                protocol: "udp".into(),
                source_ip: "10.0.0.5".parse().unwrap(),
                source_port: 0,
                destination_ip: Some("192.0.2.7".parse().unwrap()),
                destination_port: Some(443),
                established: true,
                process: ProcessEvent::default(),
                destination_hostname: Some("c2.example".into()),
            })),
        };
        let v = SigmaView::new(&e);
        assert_eq!(v.get_field("DestinationHostname"), s("c2.example"));
        assert_eq!(v.get_field("Protocol"), s("udp"));
        assert_eq!(v.to_json()["DestinationHostname"], "c2.example");
    }
}
