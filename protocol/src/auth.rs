//! Command authorization: the check an agent runs before it acts on a command.
//! Pure: the caller supplies the pinned keys, its device id, the last sequence it
//! accepted (persisted by the caller) and the current time.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::command::{ActionKind, Command, Refusal};
use crate::error::SignatureError;
use crate::ids::DeviceId;
use crate::sign::{PublicKey, SignatureKind, Signed};

/// The agent's own policy, enforced whatever the collector says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandPolicy {
    /// Allowed difference between the collector's clock and ours.
    pub clock_skew_ms: u64,
    /// Independent approvals required per action kind; a missing kind needs 1.
    pub min_approvals: BTreeMap<ActionKind, u8>,
    /// Action kinds this device refuses outright.
    pub disabled: Vec<ActionKind>,
}

/// How far apart the collector's clock and a device's may be before the device
/// refuses commands, unless its policy says otherwise.
pub const DEFAULT_CLOCK_SKEW_MS: u64 = 120_000;

impl Default for CommandPolicy {
    fn default() -> Self {
        CommandPolicy {
            clock_skew_ms: DEFAULT_CLOCK_SKEW_MS,
            min_approvals: ActionKind::ALL.iter().map(|k| (*k, 1)).collect(),
            disabled: Vec::new(),
        }
    }
}

impl CommandPolicy {
    pub fn approvals_needed(&self, kind: ActionKind) -> u8 {
        self.min_approvals.get(&kind).copied().unwrap_or(1)
    }
}

/// Verifies and authorizes a command. On success the caller must persist
/// `command.seq` as its new last sequence *before* acting on it.
pub fn authorize(
    signed: &Signed,
    pinned: &[PublicKey],
    device: DeviceId,
    last_seq: u64,
    now_ms: u64,
    policy: &CommandPolicy,
) -> Result<Command, Refusal> {
    let command: Command = signed.open_with(SignatureKind::Command, pinned).map_err(|e| match e {
        SignatureError::UnknownKey => Refusal::UnknownKey,
        SignatureError::Decode(_) => Refusal::Malformed,
        _ => Refusal::BadSignature,
    })?;
    if command.device_id != device {
        return Err(Refusal::WrongDevice(command.device_id.to_string()));
    }
    if now_ms > command.expires_at_ms.saturating_add(policy.clock_skew_ms) {
        return Err(Refusal::Expired {
            expires_at_ms: command.expires_at_ms,
            now_ms,
        });
    }
    if command.issued_at_ms > now_ms.saturating_add(policy.clock_skew_ms) {
        return Err(Refusal::NotYetValid {
            issued_at_ms: command.issued_at_ms,
            now_ms,
        });
    }
    if command.seq <= last_seq {
        return Err(Refusal::Replayed {
            seq: command.seq,
            last_seq,
        });
    }
    let kind = command.action.kind();
    if policy.disabled.contains(&kind) {
        return Err(Refusal::ActionDisabled(kind));
    }
    let needed = policy.approvals_needed(kind);
    let got = u8::try_from(command.approval.independent_approvals()).unwrap_or(u8::MAX);
    if got < needed {
        return Err(Refusal::InsufficientApprovals { kind, needed, got });
    }
    Ok(command)
}
