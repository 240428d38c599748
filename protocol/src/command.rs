//! Response commands (collector to agent) and their results (agent to collector).
//! The set of actions is a closed enum: there is no "run this script" command.

use serde::{Deserialize, Serialize};

use crate::auth::Refusal;
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
