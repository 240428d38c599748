//! The events sensors produce and detection consumes. Plain data: no IO here.

use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use ward_protocol::ProcessNode;

/// One observation from a sensor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// When the sensor observed it, Unix milliseconds.
    pub observed_at_ms: u64,
    pub data: EventData,
}

/// What was observed, by sensor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum EventData {
    Process(ProcessEvent),
    File(FileEvent),
    Auth(AuthEvent),
    Audit(AuditEvent),
    /// A watched sensitive file opened, and the process that opened it.
    FileAccess(FileAccessEvent),
    /// A TCP connection made, accepted, or a port listened on, and the process (boxed:
    /// the largest kind, and every event on the channel is as large as it).
    Network(Box<NetworkEvent>),
    /// A sensor's blind spot: it may have missed something (watch limit reached,
    /// unreadable path, a poll too slow for a short-lived process, dropped events).
    Gap(SensorGap),
    /// A DNS lookup (query and, when seen, its response) and the process that made it
    /// (boxed, as network events).
    Dns(Box<DnsEvent>),
}

/// A process that started.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ProcessEvent {
    pub pid: u32,
    pub ppid: u32,
    /// Unix milliseconds; with `pid` it identifies the process.
    pub start_time_ms: u64,
    pub exe: String,
    pub cmdline: String,
    pub cwd: String,
    pub user: String,
    pub uid: Option<u32>,
    pub sha256: Option<[u8; 32]>,
    pub parent_exe: String,
    pub parent_cmdline: String,
    /// True when the executable was deleted from disk while the process runs.
    pub exe_deleted: bool,
    /// The process and its ancestors, read when the event was built (shared: most
    /// events on the channel are not alerts, keep them small; a process's connections
    /// each carry its event, and a copy is a reference count, not the ancestors' strings).
    #[serde(default, with = "shared_opt")]
    pub lineage: Option<Arc<Lineage>>,
    /// Where and for whom it runs: terminal, login, session, cgroup, namespaces
    /// (shared, as the lineage).
    #[serde(default, with = "shared")]
    pub context: Arc<ProcessContext>,
    /// The processes writing into its stdin pipe and reading its stdout pipe, when the
    /// agent saw them start (boxed: most processes have neither).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pipes: Option<Box<PipePeers>>,
    /// The system binary this executable is a renamed copy of, when it runs from
    /// outside the system directories (Sigma `OriginalImage`; masquerading, T1036.003).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub original_image: Option<String>,
}

/// The other ends of a process's stdin and stdout pipes (`curl … | bash`: bash's
/// `from` is curl). Only the end that started second learns of the first.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct PipePeers {
    #[serde(default)]
    pub from: Option<PipeEnd>,
    #[serde(default)]
    pub to: Option<PipeEnd>,
}

/// A process at one end of a pipe.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct PipeEnd {
    pub pid: u32,
    pub exe: String,
    pub cmdline: String,
}

/// Where a process runs and for whom, read by the kernel source at exec (else from
/// /proc): becomes the alert's `Entity::ProcessContext`. Unknown values are empty/None.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ProcessContext {
    /// The controlling terminal (`pts/3`, `tty1`); empty when it has none.
    #[serde(default)]
    pub tty: String,
    /// The audit session id; None when unset (a process no login started).
    #[serde(default)]
    pub session_id: Option<u32>,
    /// The audit login uid (the human behind `sudo`); None when unset.
    #[serde(default)]
    pub login_uid: Option<u32>,
    /// The login uid's user name (its number as text without one).
    #[serde(default)]
    pub login_user: Option<String>,
    /// The cgroup path (v2, else the most specific v1 one), e.g.
    /// `/system.slice/docker-<id>.scope`.
    #[serde(default)]
    pub cgroup: String,
    /// The container id the cgroup names (docker, containerd, CRI-O, podman), if any.
    #[serde(default)]
    pub container_id: Option<String>,
    /// The mount namespace's inode number (as in `/proc/PID/ns/mnt`).
    #[serde(default)]
    pub mnt_ns: Option<u32>,
    /// The pid namespace's inode number (as in `/proc/PID/ns/pid`).
    #[serde(default)]
    pub pid_ns: Option<u32>,
    /// True when both namespaces are the host's (pid 1's, else the agent's own when
    /// pid 1 cannot be read); None when either side is unknown.
    #[serde(default)]
    pub host_namespaces: Option<bool>,
}

/// A process and its ancestors, parent first, up to the service or session root (see
/// `sensor::lineage`); becomes the alert's `Entity::Lineage`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Lineage {
    pub process: ProcessNode,
    /// At most `ward_protocol::MAX_ANCESTORS`, parent first.
    pub ancestors: Vec<ProcessNode>,
    /// The last ancestor (or, with none, the process itself) is a tree's root.
    pub rooted: bool,
}

/// What happened to a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FileOp {
    Create,
    Modify,
    Rename,
    Delete,
    Chmod,
}

/// A change in a watched path.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileEvent {
    pub op: FileOp,
    pub path: String,
    /// For a rename, where the file came from.
    pub from_path: Option<String>,
    /// SHA-256 of a regular file under the size limit.
    pub sha256: Option<[u8; 32]>,
    pub size: Option<u64>,
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    /// The file's last change (later of mtime and ctime), Unix ms, when it was read:
    /// lets the start-up rescan skip a change whose alert is already in the outbox.
    #[serde(default)]
    pub changed_ms: Option<u64>,
    /// The process that wrote it (closed it after writing), when the agent saw that
    /// (fanotify, as root); boxed: most events on the channel have none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub process: Option<Box<ProcessEvent>>,
}

/// A watched sensitive file (credentials, keys, sudoers, PAM) opened by a process
/// (fanotify). The process is described as a process event is, read when the file
/// was opened.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct FileAccessEvent {
    pub path: String,
    pub process: ProcessEvent,
}

/// What a process did on the network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NetOp {
    /// It connected out (`Initiated: true`).
    #[default]
    Connect,
    /// A connection came in to a port it listens on (`Initiated: false`).
    Accept,
    /// It listens on a port.
    Listen,
}

/// A network connection or listener (`network_connection` in Sigma). Source is the
/// side that initiated: for a connect the local end, for an accept the remote end;
/// a listener has only its local (source) end.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NetworkEvent {
    pub op: NetOp,
    /// `tcp` or `udp`.
    pub protocol: String,
    pub source_ip: std::net::IpAddr,
    pub source_port: u16,
    pub destination_ip: Option<std::net::IpAddr>,
    pub destination_port: Option<u16>,
    /// False for a connect the peer refused or that timed out.
    pub established: bool,
    /// The process that connected, accepted or listens (its pid 0 and image empty
    /// when it could not be named).
    pub process: ProcessEvent,
    /// The name the remote address was looked up by, when a DNS answer seen shortly
    /// before gave it (`DestinationHostname`).
    #[serde(default)]
    pub destination_hostname: Option<String>,
}

impl NetworkEvent {
    /// The other end's address: the destination of a connect, the source of an accept.
    pub fn remote_ip(&self) -> Option<std::net::IpAddr> {
        match self.op {
            NetOp::Connect => self.destination_ip,
            NetOp::Accept => Some(self.source_ip),
            NetOp::Listen => None,
        }
    }
}

/// A DNS lookup seen on the wire (UDP port 53): the question, and the answers when the
/// response was seen (`dns_query` in Sigma).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct DnsEvent {
    /// The name asked for, without the trailing dot.
    pub query_name: String,
    /// The record type asked for: `A`, `AAAA`, `TXT`, ... (`TYPE<n>` for others).
    pub query_type: String,
    /// The response's code (`NOERROR`, `NXDOMAIN`, `SERVFAIL`, ...); None when no
    /// response was seen.
    pub status: Option<String>,
    /// The answers' data in order: addresses, and names for CNAME, PTR, MX, NS.
    pub answers: Vec<String>,
    /// The server asked.
    pub server_ip: Option<std::net::IpAddr>,
    pub server_port: u16,
    /// The process whose socket sent the query (pid 0 and image empty when the socket
    /// was opened before the sensor started).
    pub process: ProcessEvent,
}

/// An authentication-related log line (auth log or journal), parsed.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct AuthEvent {
    /// The program that logged it: sshd, sudo, su, useradd, groupadd, cron...
    pub service: String,
    /// What it means, e.g. `ssh_login`, `ssh_failed`, `sudo`, `user_added`.
    pub action: String,
    pub user: Option<String>,
    pub source_ip: Option<String>,
    pub success: Option<bool>,
    /// The message part of the line, as logged (Sigma keyword rules match on it).
    pub message: String,
    pub host: String,
    /// The logging process (`program[pid]`, the journal's `_PID`).
    #[serde(default)]
    pub pid: Option<u32>,
    /// That process and its ancestors, when it still ran the logging program as the
    /// sensor read the line (an sshd session's monitor, sudo, su).
    #[serde(default)]
    pub lineage: Option<Box<Lineage>>,
}

/// One reassembled Linux audit event (all records of one serial number).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct AuditEvent {
    pub serial: u64,
    /// The main record type (SYSCALL, EXECVE, USER_LOGIN, ...).
    pub record_type: String,
    /// Every record's key=value pairs, names as in the log (`a0`, `exe`, `comm`,
    /// `name`, `key`, ...); EXECVE arguments are decoded from hex.
    pub fields: std::collections::BTreeMap<String, String>,
    /// All record types in the event.
    pub record_types: Vec<String>,
    /// When the kernel logged it (the first record's header), Unix milliseconds.
    #[serde(default)]
    pub timestamp_ms: u64,
    /// The process of the record's `pid` and its ancestors, when that process still
    /// ran the record's executable as the sensor read the record.
    #[serde(default)]
    pub lineage: Option<Box<Lineage>>,
}

/// A blind spot, reported so that silence never means "nothing happened".
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct SensorGap {
    pub sensor: String,
    pub detail: String,
}

/// Serde for a shared (`Arc`) field, in the same form as the value itself (as a `Box`
/// is), without serde's `rc` feature for the whole build.
mod shared {
    use super::*;

    pub fn serialize<S: Serializer, T: Serialize>(v: &Arc<T>, s: S) -> Result<S::Ok, S::Error> {
        T::serialize(v, s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Arc<T>, D::Error> {
        T::deserialize(d).map(Arc::new)
    }
}

/// As [`shared`], for an optional field (the form of `Option<T>`).
mod shared_opt {
    use super::*;

    pub fn serialize<S: Serializer, T: Serialize>(v: &Option<Arc<T>>, s: S) -> Result<S::Ok, S::Error> {
        v.as_deref().serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<Arc<T>>, D::Error> {
        Option::<T>::deserialize(d).map(|v| v.map(Arc::new))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    /// Shared fields are written as the values themselves (as they were boxed), so
    /// recorded events read back the same.
    #[test]
    fn shared_fields_keep_their_serialized_form_and_copies_share_them() {
        let node = ProcessNode {
            pid: 2,
            ppid: 1,
            start_time_ms: 3,
            exe: "/bin/sh".into(),
            cmdline: "sh".into(),
            user: None,
            login_user: None,
        };
        let p = ProcessEvent {
            pid: 2,
            lineage: Some(Arc::new(Lineage {
                process: node.clone(),
                ancestors: vec![node],
                rooted: true,
            })),
            context: Arc::new(ProcessContext {
                tty: "pts/1".into(),
                ..ProcessContext::default()
            }),
            ..ProcessEvent::default()
        };
        let json = serde_json::to_value(&p).unwrap();
        assert_eq!(json["context"]["tty"], "pts/1");
        assert_eq!(json["lineage"]["ancestors"][0]["exe"], "/bin/sh");
        let back: ProcessEvent = serde_json::from_value(json).unwrap();
        assert_eq!(back, p);
        let bare: ProcessEvent = serde_json::from_str(r#"{"pid":1,"ppid":0,"start_time_ms":0,"exe":"","cmdline":"","cwd":"","user":"","uid":null,"sha256":null,"parent_exe":"","parent_cmdline":"","exe_deleted":false}"#).unwrap();
        assert!(bare.lineage.is_none() && bare.context.tty.is_empty());
        let none = serde_json::to_value(&bare).unwrap();
        assert!(none["lineage"].is_null(), "{none}");
        let copy = p.clone();
        assert!(Arc::ptr_eq(copy.lineage.as_ref().unwrap(), p.lineage.as_ref().unwrap()));
    }
}
