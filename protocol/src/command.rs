//! Response commands (collector to agent) and their results (agent to collector).
//! The set of actions is a closed enum: there is no "run this script" command.

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::ids::{CommandId, DeviceId};

/// What the agent is asked to do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Action {
    /// Cut the device off the network except for the collector and the exceptions.
    Isolate {
        /// Extra allowed destinations: IPs, CIDRs or domain names.
        allow: Vec<String>,
    },
    /// Remove Ward's isolation table.
    Release,
    QuarantineFile {
        path: String,
        sha256: [u8; 32],
    },
    RestoreFile {
        /// The quarantine record to restore, as returned by the quarantine result.
        quarantine_id: String,
    },
    DeleteFile {
        path: String,
        sha256: [u8; 32],
    },
    KillProcess {
        pid: u32,
        /// With `pid` and `exe`, identifies one process so a reused pid is never hit.
        start_time_ms: u64,
        exe: String,
        tree: bool,
    },
    CollectPackage,
}

/// The kind of an action, for policy tables and permission matrices.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum ActionKind {
    Isolate,
    Release,
    QuarantineFile,
    RestoreFile,
    DeleteFile,
    KillProcess,
    CollectPackage,
}

impl ActionKind {
    pub const ALL: [ActionKind; 7] = [
        ActionKind::Isolate,
        ActionKind::Release,
        ActionKind::QuarantineFile,
        ActionKind::RestoreFile,
        ActionKind::DeleteFile,
        ActionKind::KillProcess,
        ActionKind::CollectPackage,
    ];

    pub fn as_str(&self) -> &'static str {
        match self {
            ActionKind::Isolate => "isolate",
            ActionKind::Release => "release",
            ActionKind::QuarantineFile => "quarantine_file",
            ActionKind::RestoreFile => "restore_file",
            ActionKind::DeleteFile => "delete_file",
            ActionKind::KillProcess => "kill_process",
            ActionKind::CollectPackage => "collect_package",
        }
    }
}

impl Action {
    pub fn kind(&self) -> ActionKind {
        match self {
            Action::Isolate { .. } => ActionKind::Isolate,
            Action::Release => ActionKind::Release,
            Action::QuarantineFile { .. } => ActionKind::QuarantineFile,
            Action::RestoreFile { .. } => ActionKind::RestoreFile,
            Action::DeleteFile { .. } => ActionKind::DeleteFile,
            Action::KillProcess { .. } => ActionKind::KillProcess,
            Action::CollectPackage => ActionKind::CollectPackage,
        }
    }
}

/// Who asked for and who approved a command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Approval {
    pub requested_by: String,
    pub approved_by: Vec<String>,
    pub reason: String,
}

impl Approval {
    /// Distinct approvers other than the requester: four eyes means two people.
    pub fn independent_approvals(&self) -> usize {
        let mut names: Vec<&str> = self
            .approved_by
            .iter()
            .map(String::as_str)
            .filter(|n| *n != self.requested_by)
            .collect();
        names.sort_unstable();
        names.dedup();
        names.len()
    }
}

/// A command, bound to one device, signed by the collector's command key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Command {
    pub id: CommandId,
    pub device_id: DeviceId,
    /// Monotonic per device; the agent refuses any sequence it has reached before.
    pub seq: u64,
    pub issued_at_ms: u64,
    pub expires_at_ms: u64,
    pub action: Action,
    pub approval: Approval,
}

/// How a command ended on the device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CommandOutcome {
    Succeeded,
    Failed { reason: String },
    Refused { reason: Refusal },
}

/// The device's signed report of what it did with a command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandResult {
    /// The command's id; for a command refused before it could be read (unknown
    /// key, bad signature, malformed), [`unread_command_id`] of its bytes, with `seq` 0.
    pub command_id: CommandId,
    pub device_id: DeviceId,
    pub seq: u64,
    pub finished_at_ms: u64,
    pub outcome: CommandOutcome,
    /// Human-readable evidence of what was done (paths, counts, rule sets).
    pub detail: String,
    /// Output that belongs to the result, e.g. an investigation package.
    pub attachment: Option<Vec<u8>>,
}

/// Names a signed command that was refused unread: its payload is never decoded
/// when its signature does not hold, so the device names it by a hash of the bytes
/// it received (domain-separated SHA-256 of payload and signature, first 16 bytes).
/// The collector, which keeps what it sent, finds the command by the same hash.
pub fn unread_command_id(signed: &crate::sign::Signed) -> CommandId {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(b"ward-unread-cmd-v1\0");
    ctx.update(&(signed.payload.len() as u64).to_le_bytes());
    ctx.update(&signed.payload);
    ctx.update(&signed.signature);
    let d = ctx.finish();
    let mut id = [0u8; 16];
    id.copy_from_slice(&d.as_ref()[..16]);
    CommandId(crate::ids::Id128::from_u128(u128::from_be_bytes(id)))
}

/// Why a command was refused. Reported back to the collector, signed.
#[derive(Debug, Clone, PartialEq, Eq, Error, Serialize, Deserialize)]
pub enum Refusal {
    #[error("signed by a key this device has not pinned")]
    UnknownKey,
    #[error("signature does not verify")]
    BadSignature,
    #[error("payload does not decode")]
    Malformed,
    #[error("command is for device {0}, not this one")]
    WrongDevice(String),
    #[error("command expired at {expires_at_ms} (now {now_ms})")]
    Expired { expires_at_ms: u64, now_ms: u64 },
    #[error("command issued at {issued_at_ms} is in the future (now {now_ms})")]
    NotYetValid { issued_at_ms: u64, now_ms: u64 },
    #[error("sequence {seq} already reached (last accepted {last_seq})")]
    Replayed { seq: u64, last_seq: u64 },
    #[error("{kind:?} needs {needed} approvals, command has {got}")]
    InsufficientApprovals { kind: ActionKind, needed: u8, got: u8 },
    #[error("{0:?} is disabled on this device")]
    ActionDisabled(ActionKind),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sign::{KeyId, Signed};

    #[test]
    fn an_unread_command_is_named_by_its_exact_bytes() {
        let signed = Signed {
            key_id: KeyId([1; 8]),
            payload: vec![1, 2, 3],
            signature: vec![9; 64],
        };
        let id = unread_command_id(&signed);
        assert_eq!(id, unread_command_id(&signed.clone()), "stable");
        let mut other_key = signed.clone();
        other_key.key_id = KeyId([2; 8]);
        assert_eq!(unread_command_id(&other_key), id, "the key id is not part of it");
        let mut payload = signed.clone();
        payload.payload[0] ^= 1;
        assert_ne!(unread_command_id(&payload), id);
        let mut signature = signed.clone();
        signature.signature[0] ^= 1;
        assert_ne!(unread_command_id(&signature), id);
        // The length prefix keeps payload and signature apart.
        let shifted = Signed {
            key_id: signed.key_id,
            payload: vec![1, 2, 3, 9],
            signature: vec![9; 63],
        };
        assert_ne!(unread_command_id(&shifted), id);
    }
}
