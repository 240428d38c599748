//! Storage of response actions: proposals, decisions, the signed commands and
//! their per-device sequence numbers, results.
//!
//! A change of an action is made through [`ActionTx`]: narrow reads and writes
//! inside one transaction, with the audit entry ([`super::audit`]) in the same
//! transaction. Which change is allowed is the workflow's (`actions::transitions`);
//! this module only keeps what it is told.

use serde::Serialize;
use serde_json::Value;
use thiserror::Error;
use ward_protocol::{Action, CommandId, DeviceId, Signed};

use super::StoreError;
use crate::model::action::Status;

/// A proposal being stored.
#[derive(Debug, Clone)]
pub struct NewAction {
    pub id: CommandId,
    pub device_id: DeviceId,
    pub action: Action,
    pub reason: String,
    pub requested_by: String,
    pub now_ms: u64,
    /// The action this one undoes, if any.
    pub undo_of: Option<String>,
    /// The approval deadline (now + the policy's pending time).
    pub expires_at_ms: u64,
    /// The incident this action belongs to, if any.
    pub incident_id: Option<String>,
}

/// Why a proposal names a device it cannot act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum TargetRefusal {
    #[error("device not found")]
    UnknownDevice,
    #[error("device is revoked")]
    RevokedDevice,
}

/// Filters for listing actions, newest first.
#[derive(Debug, Clone, Default)]
pub struct ActionFilter {
    pub status: Option<Status>,
    pub device_id: Option<String>,
    pub incident_id: Option<String>,
    /// Only actions older than this id (from the previous page).
    pub before_id: Option<String>,
    pub limit: u32,
}

/// An action as the API shows it: exactly what will happen on which device.
#[derive(Debug, Clone, Serialize)]
pub struct ActionView {
    pub id: String,
    pub device_id: String,
    pub device_hostname: String,
    pub kind: String,
    pub action: Value,
    pub summary: String,
    pub reason: String,
    pub requested_by: String,
    pub requested_at_ms: i64,
    pub status: String,
    pub approvals: Value,
    pub decided_by: Option<String>,
    pub decided_at_ms: Option<i64>,
    pub decision_comment: Option<String>,
    /// The command's sequence number on its device, once dispatched.
    pub seq: Option<i64>,
    pub issued_at_ms: Option<i64>,
    /// The approval deadline while requested; the command's expiry once dispatched.
    pub expires_at_ms: i64,
    pub result: Option<ResultView>,
    /// Size of the returned package, if any (`GET .../package`).
    pub package_bytes: Option<i64>,
    pub updated_at_ms: i64,
    pub cancelled_by: Option<String>,
    pub cancelled_at_ms: Option<i64>,
    pub cancel_comment: Option<String>,
    /// The action this one undoes, if any.
    pub undo_of: Option<String>,
    /// The incident this action belongs to, if any.
    pub incident_id: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ResultView {
    pub outcome: String,
    pub reason: Option<String>,
    pub detail: String,
    pub finished_at_ms: Option<i64>,
}

/// A stored action as the workflow reads it.
#[derive(Debug, Clone)]
pub struct ActionRecord {
    pub id: String,
    pub device_id: String,
    pub action: Action,
    pub reason: String,
    pub requested_by: String,
    pub status: Status,
    /// `{"by", "at_ms", "comment"}` per approval so far.
    pub approvals: Vec<Value>,
    pub seq: Option<i64>,
    pub expires_at_ms: i64,
}

impl ActionRecord {
    /// Who approved so far.
    pub fn approvers(&self) -> Vec<String> {
        self.approvals
            .iter()
            .filter_map(|a| a["by"].as_str().map(str::to_string))
            .collect()
    }
}

/// Response actions: proposing, reading and listing them, and the transaction
/// ([`ActionOps`]) through which the workflow changes one.
pub trait ActionStore {
    /// One open transaction of this store.
    type ActionTx<'a>: ActionOps
    where
        Self: 'a;

    /// The last command sequence assigned to a device (0: none yet).
    fn command_seq(&self, device: DeviceId) -> Result<u64, StoreError>;

    /// Moves a device's command sequence up to what the device says it has
    /// accepted, when that is ahead of ours (a database restored from an older
    /// backup); returns the previous value when it moved. Without this the device
    /// would refuse every new command as a replay.
    fn catch_up_command_seq(&self, device: DeviceId, accepted: u64, now_ms: u64) -> Result<Option<u64>, StoreError>;

    /// Stores a proposal (status requested) with its audit entry.
    fn create_action(&self, new: &NewAction) -> Result<Result<ActionView, TargetRefusal>, StoreError>;

    /// Signed commands of `device` still waiting to be carried out, with a
    /// sequence number above `after_seq`, unexpired, in sequence order.
    fn pending_commands(&self, device: DeviceId, after_seq: u64, now_ms: u64)
    -> Result<Vec<(u64, Signed)>, StoreError>;

    /// Audits a command result refused before it could be matched (bad signature,
    /// another device): the device is the actor.
    fn audit_refused_result(&self, device: DeviceId, why: &str, now_ms: u64) -> Result<(), StoreError>;

    /// An action with the result detail its device reported, read together.
    fn action_with_detail(&self, id: &str) -> Result<Option<(ActionRecord, Option<String>)>, StoreError>;

    /// The earliest deadline of an action in one of `statuses`.
    fn earliest_deadline(&self, statuses: &[Status]) -> Result<Option<u64>, StoreError>;

    fn get_action(&self, id: &str) -> Result<Option<ActionView>, StoreError>;

    fn list_actions(&self, f: &ActionFilter) -> Result<Vec<ActionView>, StoreError>;

    /// The investigation package (or other attachment) a device returned.
    fn action_attachment(&self, id: &str) -> Result<Option<Vec<u8>>, StoreError>;

    fn action_tx(&mut self) -> Result<Self::ActionTx<'_>, StoreError>;
}

/// One open transaction over actions and command sequences: what the workflow
/// reads and writes for one change, with the change's audit entry. Dropped without
/// [`ActionOps::commit`], nothing is kept.
pub trait ActionOps {
    fn commit(self) -> Result<(), StoreError>;

    fn load(&self, id: &str) -> Result<Option<ActionRecord>, StoreError>;

    /// The device's dispatched command whose signed bytes hash to `unread` (a
    /// refusal of a command the device could not read names it so).
    fn dispatched_named_by_unread_id(
        &self,
        device_id: &str,
        unread: CommandId,
    ) -> Result<Option<ActionRecord>, StoreError>;

    /// Whether the device was revoked (an unknown device counts as not).
    fn device_revoked(&self, device_id: &str) -> Result<bool, StoreError>;

    /// The next command sequence number of a device (persisted, monotonic).
    fn next_command_seq(&self, device_id: &str) -> Result<u64, StoreError>;

    /// Ids of actions in one of `statuses` whose deadline is at or before `now_ms`.
    fn due(&self, statuses: &[Status], now_ms: u64) -> Result<Vec<String>, StoreError>;

    fn set_status(&self, id: &str, status: Status, now_ms: u64) -> Result<(), StoreError>;

    fn set_rejected(&self, id: &str, by: &str, now_ms: u64, comment: &str) -> Result<(), StoreError>;

    /// The approvals so far (a JSON array) and the status they lead to.
    fn set_approvals(&self, id: &str, status: Status, approvals: &Value, now_ms: u64) -> Result<(), StoreError>;

    /// Who completed the approval, when, with what comment.
    fn set_decided(&self, id: &str, by: &str, now_ms: u64, comment: &str) -> Result<(), StoreError>;

    /// The signed command with its sequence number, issue and expiry: dispatched.
    fn set_dispatched(
        &self,
        id: &str,
        seq: u64,
        issued_at_ms: u64,
        expires_at_ms: u64,
        signed: &Signed,
    ) -> Result<(), StoreError>;

    fn set_cancelled(&self, id: &str, by: &str, now_ms: u64, comment: &str) -> Result<(), StoreError>;

    /// A device's result: the status it leads to, the outcome, and what came with it.
    #[allow(clippy::too_many_arguments)]
    fn set_result(
        &self,
        id: &str,
        status: Status,
        outcome: &str,
        reason: Option<&str>,
        detail: &str,
        finished_at_ms: u64,
        attachment: Option<&[u8]>,
        now_ms: u64,
    ) -> Result<(), StoreError>;

    /// Stores a proposal (status requested) with its audit entry.
    fn insert(&self, new: &NewAction) -> Result<Result<(), TargetRefusal>, StoreError>;

    /// What automation rule `rule` already did for `subject`, if anything.
    fn automation_record(&self, rule: &str, subject: &str) -> Result<Option<String>, StoreError>;

    /// Records what automation rule `rule` did for `subject` (once).
    fn set_automation_record(
        &self,
        rule: &str,
        subject: &str,
        action_id: Option<&str>,
        outcome: &str,
        at_ms: u64,
    ) -> Result<(), StoreError>;

    /// An action in one of `statuses` with exactly this device, requester and action.
    fn same_action(
        &self,
        device: DeviceId,
        requested_by: &str,
        action: &Action,
        statuses: &[Status],
    ) -> Result<Option<String>, StoreError>;

    /// What says the device is isolated or being isolated, if anything: an isolate
    /// in one of `open` statuses, a succeeded isolate not followed by a succeeded
    /// release, or the device's own report.
    fn isolation_evidence(&self, device: DeviceId, open: &[Status]) -> Result<Option<String>, StoreError>;

    /// Appends the change's audit entry.
    fn audit(&self, now_ms: u64, actor: &str, action: &str, target: &str, detail: &str) -> Result<(), StoreError>;
}
