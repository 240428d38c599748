//! A response action as a value: its JSON form (API input, stored record, API
//! view) with its validation, its plain-words summary, and the statuses it passes
//! through. The same form is parsed on the way in and back out of storage, so what
//! the approver saw is exactly what is signed. Hashes are hex. Which status follows
//! which is the workflow's (`actions::workflow`), not this module's.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use thiserror::Error;
use ward_protocol::Action;

/// Longest reason or comment kept; longer ones are cut.
pub const MAX_TEXT_BYTES: usize = 4096;
/// Longest result detail kept; longer ones are cut.
pub const MAX_DETAIL_BYTES: usize = 64 * 1024;

/// Longest accepted path, exe or domain list entry.
const MAX_PATH: usize = 4096;
const MAX_ALLOW_ENTRIES: usize = 64;
const MAX_ALLOW_LEN: usize = 253;
const MAX_QUARANTINE_ID: usize = 128;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{0}")]
pub struct InvalidParams(pub String);

fn invalid(msg: impl Into<String>) -> InvalidParams {
    InvalidParams(msg.into())
}

/// The tagged JSON form, `{"kind": "quarantine_file", "path": ..., "sha256": ...}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum ActionSpec {
    Isolate {
        #[serde(default)]
        allow: Vec<String>,
    },
    Release {},
    QuarantineFile {
        path: String,
        sha256: String,
    },
    RestoreFile {
        quarantine_id: String,
    },
    DeleteFile {
        path: String,
        sha256: String,
    },
    KillProcess {
        pid: u32,
        start_time_ms: u64,
        exe: String,
        #[serde(default)]
        tree: bool,
    },
    CollectPackage {},
}

fn sha256_of(s: &str) -> Result<[u8; 32], InvalidParams> {
    if s.len() != 64 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(invalid("sha256 must be 64 hex characters"));
    }
    let mut out = [0u8; 32];
    hex::decode_to_slice(s, &mut out).map_err(|_| invalid("sha256 must be 64 hex characters"))?;
    Ok(out)
}

fn absolute_path(what: &str, p: &str) -> Result<(), InvalidParams> {
    if !p.starts_with('/') {
        return Err(invalid(format!("{what} must be an absolute path")));
    }
    if p.len() > MAX_PATH {
        return Err(invalid(format!("{what} is longer than {MAX_PATH} bytes")));
    }
    if p.chars().any(char::is_control) {
        return Err(invalid(format!("{what} contains control characters")));
    }
    if p.split('/').any(|c| c == "..") {
        return Err(invalid(format!("{what} must not contain '..'")));
    }
    Ok(())
}

fn allow_entry(e: &str) -> Result<(), InvalidParams> {
    let ok = !e.is_empty()
        && e.len() <= MAX_ALLOW_LEN
        && e.bytes().all(|b| b.is_ascii_alphanumeric() || b".:-/_".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(invalid(format!(
            "isolate allow entry {:?} must be an IP, CIDR or domain name",
            e.chars().take(64).collect::<String>()
        )))
    }
}

impl ActionSpec {
    /// Validates and converts to the protocol's action.
    pub fn to_action(&self) -> Result<Action, InvalidParams> {
        Ok(match self {
            ActionSpec::Isolate { allow } => {
                if allow.len() > MAX_ALLOW_ENTRIES {
                    return Err(invalid(format!("at most {MAX_ALLOW_ENTRIES} allow entries")));
                }
                allow.iter().try_for_each(|e| allow_entry(e))?;
                Action::Isolate { allow: allow.clone() }
            }
            ActionSpec::Release {} => Action::Release,
            ActionSpec::QuarantineFile { path, sha256 } => {
                absolute_path("path", path)?;
                Action::QuarantineFile {
                    path: path.clone(),
                    sha256: sha256_of(sha256)?,
                }
            }
            ActionSpec::DeleteFile { path, sha256 } => {
                absolute_path("path", path)?;
                Action::DeleteFile {
                    path: path.clone(),
                    sha256: sha256_of(sha256)?,
                }
            }
            ActionSpec::RestoreFile { quarantine_id } => {
                let ok = !quarantine_id.is_empty()
                    && quarantine_id.len() <= MAX_QUARANTINE_ID
                    && quarantine_id
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
                if !ok {
                    return Err(invalid("quarantine_id must be 1-128 letters, digits, '-' or '_'"));
                }
                Action::RestoreFile {
                    quarantine_id: quarantine_id.clone(),
                }
            }
            ActionSpec::KillProcess {
                pid,
                start_time_ms,
                exe,
                tree,
            } => {
                if *pid <= 1 {
                    return Err(invalid("pid must be greater than 1"));
                }
                absolute_path("exe", exe)?;
                Action::KillProcess {
                    pid: *pid,
                    start_time_ms: *start_time_ms,
                    exe: exe.clone(),
                    tree: *tree,
                }
            }
            ActionSpec::CollectPackage {} => Action::CollectPackage,
        })
    }

    /// The JSON form of a protocol action.
    pub fn of(action: &Action) -> ActionSpec {
        match action {
            Action::Isolate { allow } => ActionSpec::Isolate { allow: allow.clone() },
            Action::Release => ActionSpec::Release {},
            Action::QuarantineFile { path, sha256 } => ActionSpec::QuarantineFile {
                path: path.clone(),
                sha256: hex::encode(sha256),
            },
            Action::RestoreFile { quarantine_id } => ActionSpec::RestoreFile {
                quarantine_id: quarantine_id.clone(),
            },
            Action::DeleteFile { path, sha256 } => ActionSpec::DeleteFile {
                path: path.clone(),
                sha256: hex::encode(sha256),
            },
            Action::KillProcess {
                pid,
                start_time_ms,
                exe,
                tree,
            } => ActionSpec::KillProcess {
                pid: *pid,
                start_time_ms: *start_time_ms,
                exe: exe.clone(),
                tree: *tree,
            },
            Action::CollectPackage => ActionSpec::CollectPackage {},
        }
    }

    /// Parses and validates the JSON form.
    pub fn parse(value: serde_json::Value) -> Result<Action, InvalidParams> {
        let spec: ActionSpec = serde_json::from_value(value).map_err(|e| invalid(format!("action: {e}")))?;
        spec.to_action()
    }
}

/// One line saying what will happen on the device, for the approver.
pub fn describe(action: &Action, hostname: &str) -> String {
    match action {
        Action::Isolate { allow } if allow.is_empty() => {
            format!("isolate {hostname} from the network (only the collector stays reachable)")
        }
        Action::Isolate { allow } => format!(
            "isolate {hostname} from the network (the collector and {} stay reachable)",
            allow.join(", ")
        ),
        Action::Release => format!("release {hostname} from network isolation"),
        Action::QuarantineFile { path, sha256 } => {
            format!(
                "quarantine {path} on {hostname} if its SHA-256 is {}",
                hex::encode(sha256)
            )
        }
        Action::RestoreFile { quarantine_id } => {
            format!("restore quarantined file {quarantine_id} on {hostname}")
        }
        Action::DeleteFile { path, sha256 } => {
            format!("delete {path} on {hostname} if its SHA-256 is {}", hex::encode(sha256))
        }
        Action::KillProcess {
            pid,
            start_time_ms,
            exe,
            tree,
        } => format!(
            "kill process {pid} ({exe}, started at {start_time_ms} ms){} on {hostname}",
            if *tree { " and its descendants" } else { "" }
        ),
        Action::CollectPackage => format!("collect an investigation package from {hostname}"),
    }
}

/// Where an action stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Status {
    /// Proposed, waiting for approval.
    Requested,
    /// Approved by enough people; the command is being built and signed.
    Approved,
    /// Signed, stored and queued for (or sent to) the device.
    Dispatched,
    /// The device said it accepted the command (reserved: the protocol has no
    /// acknowledgement message yet, results move straight from dispatched).
    Acked,
    Succeeded,
    Failed,
    /// The device refused the command (its own authorization said no).
    Refused,
    /// An approver said no.
    Rejected,
    /// Not approved, or not carried out, in time.
    Expired,
    /// Withdrawn by the requester or an approver before the device had it.
    Cancelled,
}

impl Status {
    pub const ALL: [Status; 10] = [
        Status::Requested,
        Status::Approved,
        Status::Dispatched,
        Status::Acked,
        Status::Succeeded,
        Status::Failed,
        Status::Refused,
        Status::Rejected,
        Status::Expired,
        Status::Cancelled,
    ];

    pub fn as_str(&self) -> &'static str {
        match self {
            Status::Requested => "pending_approval",
            Status::Approved => "approved",
            Status::Dispatched => "dispatched",
            Status::Acked => "acked",
            Status::Succeeded => "succeeded",
            Status::Failed => "failed",
            Status::Refused => "refused",
            Status::Rejected => "rejected",
            Status::Expired => "expired",
            Status::Cancelled => "cancelled",
        }
    }

    /// No event but a late result moves an action out of a final status.
    pub fn is_final(&self) -> bool {
        matches!(
            self,
            Status::Succeeded
                | Status::Failed
                | Status::Refused
                | Status::Rejected
                | Status::Expired
                | Status::Cancelled
        )
    }

    /// Statuses whose action may still expire.
    pub const EXPIRABLE: [Status; 3] = [Status::Requested, Status::Approved, Status::Dispatched];
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Status {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Status::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| format!("unknown status {s:?}"))
    }
}

/// How the device said a command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Succeeded,
    Failed,
    Refused,
}

impl Outcome {
    pub fn status(self) -> Status {
        match self {
            Outcome::Succeeded => Status::Succeeded,
            Outcome::Failed => Status::Failed,
            Outcome::Refused => Status::Refused,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_kind_round_trips_through_json() {
        let actions = [
            Action::Isolate {
                allow: vec!["10.0.0.0/8".into(), "updates.example.com".into()],
            },
            Action::Release,
            Action::QuarantineFile {
                path: "/tmp/x".into(),
                sha256: [0xab; 32],
            },
            Action::RestoreFile {
                quarantine_id: "q-01".into(),
            },
            Action::DeleteFile {
                path: "/tmp/y".into(),
                sha256: [1; 32],
            },
            Action::KillProcess {
                pid: 4242,
                start_time_ms: 17,
                exe: "/usr/bin/nc".into(),
                tree: true,
            },
            Action::CollectPackage,
        ];
        for a in actions {
            let v = serde_json::to_value(ActionSpec::of(&a)).unwrap();
            assert_eq!(v["kind"], a.kind().as_str());
            assert_eq!(ActionSpec::parse(v), Ok(a.clone()));
            assert!(!describe(&a, "web-1").is_empty());
        }
    }

    #[test]
    fn bad_parameters_are_refused() {
        let sha = "ab".repeat(32);
        let bad = [
            json!({"kind": "quarantine_file", "path": "tmp/x", "sha256": sha}),
            json!({"kind": "quarantine_file", "path": "/tmp/../etc/shadow", "sha256": sha}),
            json!({"kind": "quarantine_file", "path": "/tmp/x\n", "sha256": sha}),
            json!({"kind": "quarantine_file", "path": "/tmp/x", "sha256": "abc"}),
            json!({"kind": "delete_file", "path": "/tmp/x", "sha256": "zz".repeat(32)}),
            json!({"kind": "kill_process", "pid": 1, "start_time_ms": 0, "exe": "/sbin/init"}),
            json!({"kind": "kill_process", "pid": 0, "start_time_ms": 0, "exe": "/x"}),
            json!({"kind": "kill_process", "pid": 5, "start_time_ms": 0, "exe": "x"}),
            json!({"kind": "kill_process", "pid": -5, "start_time_ms": 0, "exe": "/x"}),
            json!({"kind": "isolate", "allow": ["1.2.3.4; rm -rf /"]}),
            json!({"kind": "restore_file", "quarantine_id": "../../etc"}),
            json!({"kind": "run_script", "script": "/tmp/x.sh"}),
            json!({"kind": "release", "extra": 1}),
            json!({"path": "/tmp/x"}),
            json!("isolate"),
        ];
        for v in bad {
            assert!(ActionSpec::parse(v.clone()).is_err(), "{v} accepted");
        }
        assert!(ActionSpec::parse(json!({"kind": "isolate"})).is_ok());
        assert!(ActionSpec::parse(json!({"kind": "kill_process", "pid": 2, "start_time_ms": 0, "exe": "/x"})).is_ok());
    }
}
