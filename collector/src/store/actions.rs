//! Storage of response actions: proposals, decisions, the signed commands and
//! their per-device sequence numbers, results, and the hash-chained audit log.
//!
//! Every transition is one transaction that also appends its audit entry, so the
//! log never misses a change and never records one that did not happen (the chain
//! is in [`super::audit`]). The transitions themselves are decided by
//! [`crate::actions::workflow`].

use rusqlite::{OptionalExtension, Transaction, params};
use serde::Serialize;
use serde_json::{Value, json};
use thiserror::Error;
use ward_protocol::{Action, Approval, Command, CommandId, CommandOutcome, CommandResult, DeviceId, Refusal, Signed};

use super::audit::append_audit;
use super::{Store, StoreError, i64_of};
use crate::actions::policy::Policy;
use crate::actions::workflow::{self, Actor, Event, Facts, UndoRefusal, WorkflowError};
use crate::model::action::{ActionSpec, describe};
use crate::model::action::{Outcome, Status};

/// Longest result detail kept; longer ones are cut.
const MAX_DETAIL_BYTES: usize = 64 * 1024;
/// Longest reason or comment kept.
const MAX_TEXT_BYTES: usize = 4096;

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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Approve,
    Reject,
    /// An automation rule approving its own proposal.
    AutoApprove,
}

/// Why a decision was not recorded.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DecideError {
    #[error("action not found")]
    NotFound,
    #[error("{0}")]
    Workflow(#[from] WorkflowError),
    #[error("the device was revoked; the action cannot be carried out")]
    DeviceRevoked,
    #[error("cannot sign the command: {0}")]
    Sign(String),
}

/// Why a cancellation was not recorded.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CancelError {
    #[error("action not found")]
    NotFound,
    #[error("{0}")]
    Workflow(#[from] WorkflowError),
    #[error("the command may already have reached the device; it can no longer be cancelled")]
    MayBeDelivered,
}

/// The device and action that undo an action, or why it cannot be undone.
pub type UndoTarget = Result<(DeviceId, Action), UndoRefusal>;

/// What a decision is taken under: the permission table, and how to sign the
/// command when the decision completes the approval.
#[derive(Clone, Copy)]
pub struct Rules<'a> {
    pub policy: &'a Policy,
    pub sign: &'a dyn Fn(&Command) -> Result<Signed, String>,
}

/// A recorded decision, and the command to deliver if it was dispatched.
#[derive(Debug, Clone)]
pub struct DecisionOutcome {
    pub view: ActionView,
    /// The device and sequence number of the command that is now dispatched.
    pub dispatched: Option<(DeviceId, u64)>,
}

/// What happened to a device's command result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResultRecord {
    Recorded {
        id: String,
        status: Status,
    },
    /// No dispatched command of this device has that id and sequence number.
    Unknown(String),
    /// The action already ended (e.g. a duplicate result); nothing changed.
    Ignored {
        id: String,
        status: Status,
    },
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

/// Cuts `s` to at most `max` bytes on a character boundary, marked with `…` when cut.
fn clip(s: &str, max: usize) -> String {
    let kept = crate::util::clip(s, max);
    if kept.len() == s.len() {
        s.to_string()
    } else {
        format!("{kept}…")
    }
}

/// What a transition needs to know about a stored action.
struct Row {
    id: String,
    device_id: String,
    action: Action,
    reason: String,
    requested_by: String,
    status: Status,
    approvals: Vec<Value>,
    seq: Option<i64>,
    expires_at_ms: i64,
}

impl Row {
    fn approvers(&self) -> Vec<String> {
        self.approvals
            .iter()
            .filter_map(|a| a["by"].as_str().map(str::to_string))
            .collect()
    }
}

fn load_row(tx: &Transaction<'_>, id: &str) -> Result<Option<Row>, StoreError> {
    let raw = tx
        .prepare_cached(
            "SELECT id, device_id, action, reason, requested_by, status, approvals, seq, expires_at_ms
             FROM actions WHERE id = ?1",
        )?
        .query_row(params![id], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, String>(4)?,
                r.get::<_, String>(5)?,
                r.get::<_, String>(6)?,
                r.get::<_, Option<i64>>(7)?,
                r.get::<_, i64>(8)?,
            ))
        })
        .optional()?;
    let Some((id, device_id, action, reason, requested_by, status, approvals, seq, expires_at_ms)) = raw else {
        return Ok(None);
    };
    let corrupt = |what: &str| StoreError::Corrupt(format!("action {id}: {what}"));
    let action = serde_json::from_str(&action)
        .ok()
        .and_then(|v| ActionSpec::parse(v).ok())
        .ok_or_else(|| corrupt("stored action does not parse"))?;
    let status = status.parse().map_err(|e: String| corrupt(&e))?;
    let approvals = serde_json::from_str(&approvals).map_err(|_| corrupt("approvals"))?;
    Ok(Some(Row {
        id,
        device_id,
        action,
        reason,
        requested_by,
        status,
        approvals,
        seq,
        expires_at_ms,
    }))
}

fn set_status(tx: &Transaction<'_>, id: &str, status: Status, now_ms: u64) -> Result<(), StoreError> {
    tx.prepare_cached("UPDATE actions SET status = ?2, updated_at_ms = ?3 WHERE id = ?1")?
        .execute(params![id, status.as_str(), i64_of(now_ms)])?;
    Ok(())
}

impl Store {
    /// The last command sequence assigned to a device (0: none yet).
    pub fn command_seq(&self, device: DeviceId) -> Result<u64, StoreError> {
        let seq: i64 = self.conn.query_row(
            "SELECT COALESCE(MAX(last_seq), 0) FROM command_seqs WHERE device_id = ?1",
            params![device.to_string()],
            |r| r.get(0),
        )?;
        Ok(seq.max(0) as u64)
    }

    /// Moves a device's command sequence up to what the device says it has
    /// accepted, when that is ahead of ours (a database restored from an older
    /// backup); returns the previous value when it moved. Without this the device
    /// would refuse every new command as a replay.
    pub fn catch_up_command_seq(
        &self,
        device: DeviceId,
        accepted: u64,
        now_ms: u64,
    ) -> Result<Option<u64>, StoreError> {
        let device_id = device.to_string();
        let tx = self.conn.unchecked_transaction()?;
        let ours: i64 = tx.query_row(
            "SELECT COALESCE(MAX(last_seq), 0) FROM command_seqs WHERE device_id = ?1",
            params![device_id],
            |r| r.get(0),
        )?;
        // A device can only push its own sequence ahead; the cap keeps it an i64.
        let accepted = i64::try_from(accepted).unwrap_or(i64::MAX).min(i64::MAX / 2);
        if accepted <= ours {
            return Ok(None);
        }
        tx.execute(
            "INSERT INTO command_seqs (device_id, last_seq) VALUES (?1, ?2)
             ON CONFLICT(device_id) DO UPDATE SET last_seq = MAX(last_seq, excluded.last_seq)",
            params![device_id, accepted],
        )?;
        append_audit(
            &tx,
            now_ms,
            &device_id,
            "device.command_seq_caught_up",
            &device_id,
            &format!("the device has accepted commands up to {accepted}, the collector was at {ours}"),
        )?;
        tx.commit()?;
        Ok(Some(ours.max(0) as u64))
    }
}

/// A refusal of a command the device could not read (it names the command by
/// [`ward_protocol::unread_command_id`]).
fn refused_unread(outcome: &CommandOutcome) -> bool {
    matches!(
        outcome,
        CommandOutcome::Refused {
            reason: Refusal::UnknownKey | Refusal::BadSignature | Refusal::Malformed
        }
    )
}

/// The device's dispatched command whose signed bytes hash to `unread`.
fn unread_command(tx: &Transaction<'_>, device_id: &str, unread: CommandId) -> Result<Option<Row>, StoreError> {
    let sent: Vec<(String, Vec<u8>)> = tx
        .prepare_cached(
            "SELECT id, signed_command FROM actions
             WHERE device_id = ?1 AND status = 'dispatched' AND signed_command IS NOT NULL",
        )?
        .query_map(params![device_id], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?;
    for (id, bytes) in sent {
        let Ok(signed) = postcard::from_bytes::<Signed>(&bytes) else {
            continue;
        };
        if ward_protocol::unread_command_id(&signed) == unread {
            return load_row(tx, &id);
        }
    }
    Ok(None)
}

/// The next command sequence number of a device (persisted, monotonic).
fn next_command_seq(tx: &Transaction<'_>, device_id: &str) -> Result<u64, StoreError> {
    let seq: i64 = tx
        .prepare_cached(
            "INSERT INTO command_seqs (device_id, last_seq) VALUES (?1, 1)
             ON CONFLICT(device_id) DO UPDATE SET last_seq = last_seq + 1 RETURNING last_seq",
        )?
        .query_row(params![device_id], |r| r.get(0))?;
    u64::try_from(seq).map_err(|_| StoreError::Corrupt(format!("command sequence of {device_id}")))
}

const VIEW_COLUMNS: &str = "a.id, a.device_id, COALESCE(d.hostname, ''), a.kind, a.action, a.reason, a.requested_by,
    a.requested_at_ms, a.status, a.approvals, a.decided_by, a.decided_at_ms, a.decision_comment, a.seq,
    a.issued_at_ms, a.expires_at_ms, a.outcome, a.outcome_reason, a.detail, a.finished_at_ms,
    length(a.attachment), a.updated_at_ms, a.cancelled_by, a.cancelled_at_ms, a.cancel_comment, a.undo_of, a.incident_id";

fn view_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ActionView> {
    let hostname: String = r.get(2)?;
    let action_text: String = r.get(4)?;
    let action_json: Value = serde_json::from_str(&action_text).unwrap_or(Value::Null);
    let summary = ActionSpec::parse(action_json.clone())
        .map(|a| {
            describe(
                &a,
                if hostname.is_empty() {
                    "an unknown device"
                } else {
                    &hostname
                },
            )
        })
        .unwrap_or_else(|e| format!("unreadable action: {e}"));
    let approvals: String = r.get(9)?;
    let outcome: Option<String> = r.get(16)?;
    let result = match outcome {
        Some(outcome) => Some(ResultView {
            outcome,
            reason: r.get(17)?,
            detail: r.get::<_, Option<String>>(18)?.unwrap_or_default(),
            finished_at_ms: r.get(19)?,
        }),
        None => None,
    };
    Ok(ActionView {
        id: r.get(0)?,
        device_id: r.get(1)?,
        device_hostname: hostname,
        kind: r.get(3)?,
        action: action_json,
        summary,
        reason: r.get(5)?,
        requested_by: r.get(6)?,
        requested_at_ms: r.get(7)?,
        status: r.get(8)?,
        approvals: serde_json::from_str(&approvals).unwrap_or(Value::Null),
        decided_by: r.get(10)?,
        decided_at_ms: r.get(11)?,
        decision_comment: r.get(12)?,
        seq: r.get(13)?,
        issued_at_ms: r.get(14)?,
        expires_at_ms: r.get(15)?,
        result,
        package_bytes: r.get(20)?,
        updated_at_ms: r.get(21)?,
        cancelled_by: r.get(22)?,
        cancelled_at_ms: r.get(23)?,
        cancel_comment: r.get(24)?,
        undo_of: r.get(25)?,
        incident_id: r.get(26)?,
    })
}

fn outcome_parts(outcome: &CommandOutcome) -> (Outcome, &'static str, Option<String>) {
    match outcome {
        CommandOutcome::Succeeded => (Outcome::Succeeded, "succeeded", None),
        CommandOutcome::Failed { reason } => (Outcome::Failed, "failed", Some(clip(reason, MAX_TEXT_BYTES))),
        CommandOutcome::Refused { reason } => (Outcome::Refused, "refused", Some(reason.to_string())),
    }
}

impl Store {
    /// Stores a proposal (status requested) with its audit entry.
    pub fn create_action(&self, new: &NewAction) -> Result<Result<ActionView, TargetRefusal>, StoreError> {
        let tx = self.conn.unchecked_transaction()?;
        if let Err(refusal) = insert_action(&tx, new)? {
            return Ok(Err(refusal));
        }
        tx.commit()?;
        let id = new.id.to_string();
        self.get_action(&id)?
            .map(Ok)
            .ok_or_else(|| StoreError::Corrupt(format!("action {id} vanished")))
    }

    /// Approves or rejects under `policy`. When the last needed approval arrives the command is
    /// built, signed with `sign` and stored as dispatched, with its sequence
    /// number, in the same transaction: it exists on disk before anyone sends it.
    pub fn decide_action(
        &mut self,
        id: &str,
        actor: &Actor,
        decision: Decision,
        comment: &str,
        now_ms: u64,
        rules: Rules<'_>,
    ) -> Result<Result<DecisionOutcome, DecideError>, StoreError> {
        let Rules { policy, sign } = rules;
        let tx = self.conn.transaction()?;
        let Some(row) = load_row(&tx, id)? else {
            return Ok(Err(DecideError::NotFound));
        };
        let rules = policy.for_kind(row.action.kind());
        let approvers = row.approvers();
        let facts = Facts {
            kind: row.action.kind(),
            requested_by: &row.requested_by,
            approvals: &approvers,
        };
        let event = match decision {
            Decision::Approve => Event::Approve(actor, rules),
            Decision::Reject => Event::Reject(actor, rules),
            Decision::AutoApprove => Event::AutoApprove(actor, rules),
        };
        let transition = match workflow::apply(row.status, facts, event) {
            Ok(t) => t,
            Err(e) => return Ok(Err(e.into())),
        };
        if row.expires_at_ms <= i64_of(now_ms) {
            // Past its deadline; the expiry task has not swept it yet.
            return Ok(Err(WorkflowError::WrongState {
                event: event.name(),
                status: Status::Expired,
            }
            .into()));
        }
        let comment = clip(comment, MAX_TEXT_BYTES);
        let now = i64_of(now_ms);
        let mut dispatched = None;
        match transition.to {
            Status::Rejected => {
                tx.execute(
                    "UPDATE actions SET status = ?2, decided_by = ?3, decided_at_ms = ?4, decision_comment = ?5,
                                        updated_at_ms = ?4 WHERE id = ?1",
                    params![id, Status::Rejected.as_str(), actor.name, now, comment],
                )?;
                append_audit(&tx, now_ms, &actor.name, "action.reject", id, &comment)?;
            }
            to => {
                let mut approvals = row.approvals.clone();
                approvals.push(json!({"by": actor.name, "at_ms": now, "comment": comment}));
                let approvals_text = Value::Array(approvals).to_string();
                tx.execute(
                    "UPDATE actions SET status = ?2, approvals = ?3, updated_at_ms = ?4 WHERE id = ?1",
                    params![id, to.as_str(), approvals_text, now],
                )?;
                let needed = rules.approvals_needed;
                append_audit(
                    &tx,
                    now_ms,
                    &actor.name,
                    if decision == Decision::AutoApprove {
                        "action.auto_approve"
                    } else {
                        "action.approve"
                    },
                    id,
                    &json!({"approval": approvers.len() + 1, "of": needed, "comment": comment}).to_string(),
                )?;
                if to == Status::Approved {
                    tx.execute(
                        "UPDATE actions SET decided_by = ?2, decided_at_ms = ?3, decision_comment = ?4 WHERE id = ?1",
                        params![id, actor.name, now, comment],
                    )?;
                    let mut all = approvers.clone();
                    all.extend(transition.add_approver);
                    match dispatch(&tx, &row, all, now_ms, rules.command_ttl_ms, sign)? {
                        Ok(d) => dispatched = Some(d),
                        Err(e) => return Ok(Err(e)),
                    }
                }
            }
        }
        tx.commit()?;
        let view = self
            .get_action(id)?
            .ok_or_else(|| StoreError::Corrupt(format!("action {id} vanished")))?;
        Ok(Ok(DecisionOutcome { view, dispatched }))
    }

    /// Cancels an action (requested, approved, or dispatched when
    /// `dispatched_seq_undelivered` says the device never had that sequence
    /// number), with its audit entry.
    pub fn cancel_action(
        &mut self,
        id: &str,
        actor: &Actor,
        comment: &str,
        now_ms: u64,
        policy: &Policy,
        dispatched_seq_undelivered: &dyn Fn(i64) -> bool,
    ) -> Result<Result<ActionView, CancelError>, StoreError> {
        let tx = self.conn.transaction()?;
        let Some(row) = load_row(&tx, id)? else {
            return Ok(Err(CancelError::NotFound));
        };
        let approvers = row.approvers();
        let facts = Facts {
            kind: row.action.kind(),
            requested_by: &row.requested_by,
            approvals: &approvers,
        };
        let rules = policy.for_kind(row.action.kind());
        if let Err(e) = workflow::apply(row.status, facts, Event::Cancel(actor, rules)) {
            return Ok(Err(e.into()));
        }
        if row.status == Status::Dispatched && !row.seq.is_some_and(dispatched_seq_undelivered) {
            return Ok(Err(CancelError::MayBeDelivered));
        }
        let comment = clip(comment, MAX_TEXT_BYTES);
        let now = i64_of(now_ms);
        tx.execute(
            "UPDATE actions SET status = ?2, cancelled_by = ?3, cancelled_at_ms = ?4, cancel_comment = ?5,
                                updated_at_ms = ?4 WHERE id = ?1",
            params![id, Status::Cancelled.as_str(), actor.name, now, comment],
        )?;
        append_audit(
            &tx,
            now_ms,
            &actor.name,
            "action.cancel",
            id,
            &json!({"was": row.status.as_str(), "seq": row.seq, "comment": comment}).to_string(),
        )?;
        tx.commit()?;
        self.get_action(id)?
            .map(Ok)
            .ok_or_else(|| StoreError::Corrupt(format!("action {id} vanished")))
    }

    /// The device and the action that would undo action `id` (`None` if there is
    /// no such action), or why there is none.
    pub fn undo_target(&self, id: &str) -> Result<Option<UndoTarget>, StoreError> {
        let tx = self.conn.unchecked_transaction()?;
        let Some(row) = load_row(&tx, id)? else {
            return Ok(None);
        };
        let detail: Option<String> =
            tx.query_row("SELECT detail FROM actions WHERE id = ?1", params![id], |r| r.get(0))?;
        let device: DeviceId = row
            .device_id
            .parse()
            .map_err(|_| StoreError::Corrupt(format!("action {id}: device id")))?;
        Ok(Some(
            workflow::undo(&row.action, row.status, detail.as_deref()).map(|a| (device, a)),
        ))
    }

    /// Signed commands of `device` still waiting to be carried out, with a
    /// sequence number above `after_seq`, unexpired, in sequence order.
    pub fn pending_commands(
        &self,
        device: DeviceId,
        after_seq: u64,
        now_ms: u64,
    ) -> Result<Vec<(u64, Signed)>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT seq, signed_command FROM actions
             WHERE device_id = ?1 AND status = 'dispatched' AND seq > ?2 AND expires_at_ms > ?3
               AND signed_command IS NOT NULL
             ORDER BY seq",
        )?;
        let rows = stmt
            .query_map(params![device.to_string(), i64_of(after_seq), i64_of(now_ms)], |r| {
                Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        rows.into_iter()
            .map(|(seq, bytes)| {
                let signed: Signed = postcard::from_bytes(&bytes)
                    .map_err(|e| StoreError::Corrupt(format!("stored command {seq}: {e}")))?;
                Ok((seq.max(0) as u64, signed))
            })
            .collect()
    }

    /// Records a device's verified result for one of its dispatched commands.
    /// The attachment is kept only up to `max_attachment` bytes. A result that
    /// changes nothing (no such command, an ended action) is audited only when
    /// `audit_noise` (the device's audit budget lasts), with its text clipped.
    pub fn record_command_result(
        &mut self,
        device: DeviceId,
        result: &CommandResult,
        max_attachment: usize,
        audit_noise: bool,
        now_ms: u64,
    ) -> Result<ResultRecord, StoreError> {
        let tx = self.conn.transaction()?;
        let device_id = device.to_string();
        let mut row = load_row(&tx, &result.command_id.to_string())?
            .filter(|r| r.device_id == device_id && r.seq == Some(i64_of(result.seq)));
        if row.is_none() && result.seq == 0 && refused_unread(&result.outcome) {
            row = unread_command(&tx, &device_id, result.command_id)?;
        }
        let id = row
            .as_ref()
            .map_or_else(|| result.command_id.to_string(), |r| r.id.clone());
        let Some(row) = row else {
            let (_, outcome, reason) = outcome_parts(&result.outcome);
            let why = format!(
                "no dispatched command {id} with sequence {} for this device ({outcome}{})",
                result.seq,
                reason
                    .map(|r| format!(": {}", crate::util::clip_device_text(&r)))
                    .unwrap_or_default()
            );
            if audit_noise {
                append_audit(&tx, now_ms, &device_id, "action.result_refused", &id, &why)?;
            }
            tx.commit()?;
            return Ok(ResultRecord::Unknown(why));
        };
        let (outcome, outcome_text, reason) = outcome_parts(&result.outcome);
        let approvers = row.approvers();
        let facts = Facts {
            kind: row.action.kind(),
            requested_by: &row.requested_by,
            approvals: &approvers,
        };
        let to = match workflow::apply(row.status, facts, Event::Result(outcome)) {
            Ok(t) => t.to,
            Err(_) => {
                if audit_noise {
                    append_audit(
                        &tx,
                        now_ms,
                        &device_id,
                        "action.result_ignored",
                        &id,
                        &format!("{outcome_text} reported for an action that is {}", row.status),
                    )?;
                }
                tx.commit()?;
                return Ok(ResultRecord::Ignored { id, status: row.status });
            }
        };
        let mut detail = clip(&result.detail, MAX_DETAIL_BYTES);
        let attachment = match &result.attachment {
            Some(a) if a.len() > max_attachment => {
                detail.push_str(&format!(
                    "\n[attachment of {} bytes exceeds the {max_attachment}-byte limit; not stored]",
                    a.len()
                ));
                None
            }
            other => other.as_deref(),
        };
        tx.execute(
            "UPDATE actions SET status = ?2, outcome = ?3, outcome_reason = ?4, detail = ?5, finished_at_ms = ?6,
                                attachment = ?7, updated_at_ms = ?8 WHERE id = ?1",
            params![
                id,
                to.as_str(),
                outcome_text,
                reason,
                detail,
                i64_of(result.finished_at_ms),
                attachment,
                i64_of(now_ms)
            ],
        )?;
        let audit_detail = json!({
            "outcome": outcome_text,
            "reason": reason,
            "late": row.status == Status::Expired,
            "attachment_bytes": attachment.map(<[u8]>::len),
        });
        append_audit(&tx, now_ms, &device_id, "action.result", &id, &audit_detail.to_string())?;
        tx.commit()?;
        Ok(ResultRecord::Recorded { id, status: to })
    }

    /// Audits a command result refused before it could be matched (bad signature,
    /// another device): the device is the actor.
    pub fn audit_refused_result(&self, device: DeviceId, why: &str, now_ms: u64) -> Result<(), StoreError> {
        let tx = self.conn.unchecked_transaction()?;
        let d = device.to_string();
        append_audit(&tx, now_ms, &d, "action.result_refused", &d, why)?;
        tx.commit()?;
        Ok(())
    }

    /// Marks every requested, approved or dispatched action past its deadline as
    /// expired; returns their ids.
    pub fn expire_actions(&mut self, now_ms: u64) -> Result<Vec<String>, StoreError> {
        let tx = self.conn.transaction()?;
        let due: Vec<(String, String)> = tx
            .prepare_cached(
                "SELECT id, status FROM actions
                 WHERE status IN ('pending_approval', 'approved', 'dispatched') AND expires_at_ms <= ?1",
            )?
            .query_map(params![i64_of(now_ms)], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<Vec<_>, _>>()?;
        let mut expired = Vec::with_capacity(due.len());
        for (id, status) in due {
            let Some(row) = load_row(&tx, &id)? else { continue };
            let approvers = row.approvers();
            let facts = Facts {
                kind: row.action.kind(),
                requested_by: &row.requested_by,
                approvals: &approvers,
            };
            if workflow::apply(row.status, facts, Event::Expire).is_err() {
                continue;
            }
            set_status(&tx, &id, Status::Expired, now_ms)?;
            append_audit(&tx, now_ms, "collector", "action.expire", &id, &format!("was {status}"))?;
            expired.push(id);
        }
        tx.commit()?;
        Ok(expired)
    }

    /// The earliest deadline of an action that can still expire.
    pub fn next_action_expiry(&self) -> Result<Option<u64>, StoreError> {
        let t: Option<i64> = self.conn.query_row(
            "SELECT MIN(expires_at_ms) FROM actions WHERE status IN ('pending_approval', 'approved', 'dispatched')",
            [],
            |r| r.get(0),
        )?;
        Ok(t.map(|t| t.max(0) as u64))
    }

    pub fn get_action(&self, id: &str) -> Result<Option<ActionView>, StoreError> {
        let sql =
            format!("SELECT {VIEW_COLUMNS} FROM actions a LEFT JOIN devices d ON d.id = a.device_id WHERE a.id = ?1");
        Ok(self.conn.query_row(&sql, params![id], view_row).optional()?)
    }

    pub fn list_actions(&self, f: &ActionFilter) -> Result<Vec<ActionView>, StoreError> {
        let sql = format!(
            "SELECT {VIEW_COLUMNS} FROM actions a LEFT JOIN devices d ON d.id = a.device_id
             WHERE (?1 IS NULL OR a.status = ?1) AND (?2 IS NULL OR a.device_id = ?2) AND (?3 IS NULL OR a.id < ?3)
               AND (?5 IS NULL OR a.incident_id = ?5)
             ORDER BY a.id DESC LIMIT ?4"
        );
        let mut stmt = self.conn.prepare_cached(&sql)?;
        let rows = stmt
            .query_map(
                params![
                    f.status.map(|s| s.as_str()),
                    f.device_id,
                    f.before_id,
                    f.limit,
                    f.incident_id
                ],
                view_row,
            )?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// The investigation package (or other attachment) a device returned.
    pub fn action_attachment(&self, id: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .conn
            .query_row("SELECT attachment FROM actions WHERE id = ?1", params![id], |r| {
                r.get::<_, Option<Vec<u8>>>(0)
            })
            .optional()?
            .flatten())
    }
}

/// Inserts a proposal and its audit entry into `tx`.
pub(super) fn insert_action(tx: &Transaction<'_>, new: &NewAction) -> Result<Result<(), TargetRefusal>, StoreError> {
    let device_id = new.device_id.to_string();
    let revoked: Option<Option<i64>> = tx
        .query_row(
            "SELECT revoked_at_ms FROM devices WHERE id = ?1",
            params![device_id],
            |r| r.get(0),
        )
        .optional()?;
    match revoked {
        None => return Ok(Err(TargetRefusal::UnknownDevice)),
        Some(Some(_)) => return Ok(Err(TargetRefusal::RevokedDevice)),
        Some(None) => {}
    }
    let id = new.id.to_string();
    let kind = new.action.kind();
    let spec = serde_json::to_string(&ActionSpec::of(&new.action))
        .map_err(|e| StoreError::Corrupt(format!("action does not encode: {e}")))?;
    let reason = clip(&new.reason, MAX_TEXT_BYTES);
    let now = i64_of(new.now_ms);
    let expires = i64_of(new.expires_at_ms);
    tx.execute(
        "INSERT INTO actions (id, device_id, kind, action, reason, requested_by, requested_at_ms, status,
                                  expires_at_ms, updated_at_ms, undo_of, incident_id)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?7, ?10, ?11)",
        params![
            id,
            device_id,
            kind.as_str(),
            spec,
            reason,
            new.requested_by,
            now,
            Status::Requested.as_str(),
            expires,
            new.undo_of,
            new.incident_id
        ],
    )?;
    let mut detail = json!({"device": device_id, "kind": kind.as_str(), "action": serde_json::from_str::<Value>(&spec).unwrap_or(Value::Null), "reason": reason});
    if let Value::Object(map) = &mut detail {
        if let Some(of) = &new.undo_of {
            map.insert("undo_of".into(), Value::String(of.clone()));
        }
        if let Some(incident) = &new.incident_id {
            map.insert("incident_id".into(), Value::String(incident.clone()));
        }
    }
    append_audit(
        tx,
        new.now_ms,
        &new.requested_by,
        "action.request",
        &id,
        &detail.to_string(),
    )?;
    Ok(Ok(()))
}

/// Approved → dispatched: the next sequence number, the command, its signature,
/// all stored (and audited) in `tx`.
fn dispatch(
    tx: &Transaction<'_>,
    row: &Row,
    approved_by: Vec<String>,
    now_ms: u64,
    ttl: u64,
    sign: &dyn Fn(&Command) -> Result<Signed, String>,
) -> Result<Result<(DeviceId, u64), DecideError>, StoreError> {
    let revoked: Option<i64> = tx.query_row(
        "SELECT revoked_at_ms FROM devices WHERE id = ?1",
        params![row.device_id],
        |r| r.get(0),
    )?;
    if revoked.is_some() {
        return Ok(Err(DecideError::DeviceRevoked));
    }
    let approvers = approved_by.clone();
    let facts = Facts {
        kind: row.action.kind(),
        requested_by: &row.requested_by,
        approvals: &approvers,
    };
    if let Err(e) = workflow::apply(Status::Approved, facts, Event::Dispatch) {
        return Ok(Err(e.into()));
    }
    let corrupt = |what: &str| StoreError::Corrupt(format!("action {}: {what}", row.id));
    let command_id: CommandId = row.id.parse().map_err(|_| corrupt("id"))?;
    let device_id: DeviceId = row.device_id.parse().map_err(|_| corrupt("device id"))?;
    let seq = next_command_seq(tx, &row.device_id)?;
    let command = Command {
        id: command_id,
        device_id,
        seq,
        issued_at_ms: now_ms,
        expires_at_ms: now_ms.saturating_add(ttl),
        action: row.action.clone(),
        approval: Approval {
            requested_by: row.requested_by.clone(),
            approved_by,
            reason: row.reason.clone(),
        },
    };
    let signed = match sign(&command) {
        Ok(s) => s,
        Err(e) => return Ok(Err(DecideError::Sign(e))),
    };
    let bytes = postcard::to_stdvec(&signed).map_err(|e| corrupt(&format!("signed command encoding: {e}")))?;
    tx.execute(
        "UPDATE actions SET status = ?2, seq = ?3, issued_at_ms = ?4, expires_at_ms = ?5, signed_command = ?6,
                            updated_at_ms = ?4 WHERE id = ?1",
        params![
            row.id,
            Status::Dispatched.as_str(),
            i64_of(seq),
            i64_of(command.issued_at_ms),
            i64_of(command.expires_at_ms),
            bytes
        ],
    )?;
    append_audit(
        tx,
        now_ms,
        "collector",
        "action.dispatch",
        &row.id,
        &json!({"device": row.device_id, "seq": seq, "expires_at_ms": command.expires_at_ms,
                "key_id": hex::encode(signed.key_id.0)})
        .to_string(),
    )?;
    Ok(Ok((device_id, seq)))
}

#[cfg(test)]
mod tests {
    use ring::rand::SystemRandom;
    use ward_protocol::{CommandOutcome, Inventory, SigningKey};

    use super::*;
    use crate::roles::Role;
    use crate::store::NewDevice;

    const T0: u64 = 1_700_000_000_000;

    fn open() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("ward.db")).unwrap();
        (dir, store)
    }

    fn device(store: &mut Store, n: u8) -> DeviceId {
        let rng = SystemRandom::new();
        let secret = [n; 32];
        store.create_enroll_token(&secret, 1, T0, T0 + 1000).unwrap();
        let id = DeviceId::generate(T0, &rng).unwrap();
        let (key, _) = SigningKey::generate(&rng).unwrap();
        let new = NewDevice {
            id,
            signing_key: key.public_key(),
            cert_sha256: [n; 32],
            inventory: Inventory {
                hostname: format!("host-{n}"),
                os: String::new(),
                kernel: String::new(),
                addresses: vec![],
                logged_on_users: vec![],
                agent_version: String::new(),
            },
        };
        store.enroll(&secret, &new, T0).unwrap().unwrap();
        id
    }

    #[test]
    fn heartbeats_are_written_together_and_last_seen_only_moves_forward() {
        let (_dir, mut store) = open();
        let (a, b) = (device(&mut store, 1), device(&mut store, 2));
        let state = |seen_at_ms, isolation, outbox_depth| crate::store::DeviceState {
            seen_at_ms,
            inventory: None,
            isolation,
            outbox_depth,
            rule_pack_version: 3,
            clock_skew_ms: -1_500,
        };
        store.touch_device(a, T0 + 500).unwrap();
        store
            .update_device_states(&[
                (a, state(T0 + 100, ward_protocol::IsolationState::Isolated, 7)),
                (b, state(T0 + 200, ward_protocol::IsolationState::None, 0)),
            ])
            .unwrap();
        let a = store.get_device(&a.to_string()).unwrap().unwrap();
        assert_eq!(
            a.last_seen_ms,
            Some(i64_of(T0 + 500)),
            "a session end recorded later stays"
        );
        assert_eq!((a.isolation.as_str(), a.outbox_depth), ("isolated", 7));
        let b = store.get_device(&b.to_string()).unwrap().unwrap();
        assert_eq!(b.last_seen_ms, Some(i64_of(T0 + 200)));
    }

    fn propose(store: &Store, dev: DeviceId, action: Action, at: u64) -> String {
        let new = NewAction {
            id: CommandId::generate(at, &SystemRandom::new()).unwrap(),
            device_id: dev,
            action,
            reason: "why".into(),
            requested_by: "ann".into(),
            now_ms: at,
            undo_of: None,
            expires_at_ms: at + Policy::default().pending_ttl_ms,
            incident_id: None,
        };
        store.create_action(&new).unwrap().unwrap().id
    }

    fn approve(store: &mut Store, id: &str, at: u64, key: &SigningKey) -> Result<DecisionOutcome, DecideError> {
        let bob = Actor {
            name: "bob".into(),
            role: Role::Approver,
        };
        let sign = |c: &Command| {
            key.sign_value(ward_protocol::SignatureKind::Command, c)
                .map_err(|e| e.to_string())
        };
        store
            .decide_action(
                id,
                &bob,
                Decision::Approve,
                "ok",
                at,
                Rules {
                    policy: &Policy::default(),
                    sign: &sign,
                },
            )
            .unwrap()
    }

    #[test]
    fn sequences_are_per_device_and_monotonic_and_commands_expire() {
        let (_dir, mut store) = open();
        let (key, _) = SigningKey::generate(&SystemRandom::new()).unwrap();
        let a = device(&mut store, 1);
        let b = device(&mut store, 2);
        let mut seqs = Vec::new();
        for (dev, action) in [
            (a, Action::Release),
            (b, Action::CollectPackage),
            (a, Action::CollectPackage),
        ] {
            let id = propose(&store, dev, action, T0);
            let out = approve(&mut store, &id, T0 + 10, &key).unwrap();
            assert_eq!(out.view.status, "dispatched");
            seqs.push(out.dispatched.unwrap());
        }
        assert_eq!(seqs, vec![(a, 1), (b, 1), (a, 2)]);
        let pending = store.pending_commands(a, 0, T0 + 20).unwrap();
        assert_eq!(pending.iter().map(|(s, _)| *s).collect::<Vec<_>>(), vec![1, 2]);
        assert_eq!(store.pending_commands(a, 1, T0 + 20).unwrap().len(), 1);

        // Commands wait for their device until they expire (3 days by default); expired ones are not delivered.
        let later = T0 + 10 + crate::config::COMMAND_TTL_MS;
        assert_eq!(store.pending_commands(a, 0, later - 1).unwrap().len(), 2);
        assert_eq!(store.next_action_expiry().unwrap(), Some(later));
        let expired = store.expire_actions(later).unwrap();
        assert_eq!(expired.len(), 3, "every command");
        assert_eq!(store.pending_commands(a, 0, later).unwrap().len(), 0);
        assert_eq!(store.pending_commands(b, 0, later).unwrap().len(), 0);
        // A late result for an expired command is still recorded: the device did it.
        let late_id = &expired[0];
        let row = store.get_action(late_id).unwrap().unwrap();
        let dev: DeviceId = row.device_id.parse().unwrap();
        let result = CommandResult {
            command_id: late_id.parse().unwrap(),
            device_id: dev,
            seq: row.seq.unwrap() as u64,
            finished_at_ms: later,
            outcome: CommandOutcome::Succeeded,
            detail: "d".into(),
            attachment: Some(vec![0; 100]),
        };
        // Wrong device: nothing recorded.
        let other = if dev == a { b } else { a };
        assert!(matches!(
            store.record_command_result(other, &result, 10, true, later).unwrap(),
            ResultRecord::Unknown(_)
        ));
        let rec = store.record_command_result(dev, &result, 10, true, later).unwrap();
        assert!(
            matches!(
                rec,
                ResultRecord::Recorded {
                    status: Status::Succeeded,
                    ..
                }
            ),
            "{rec:?}"
        );
        let v = store.get_action(late_id).unwrap().unwrap();
        assert_eq!(v.package_bytes, None, "attachment over the cap is not stored");
        assert!(v.result.unwrap().detail.contains("exceeds"));

        // A pending proposal past its approval deadline cannot be approved, and expires.
        let stale = propose(&store, a, Action::Release, T0);
        let too_late = T0 + crate::config::PENDING_APPROVAL_TTL_MS;
        assert!(matches!(
            approve(&mut store, &stale, too_late, &key),
            Err(DecideError::Workflow(WorkflowError::WrongState { .. }))
        ));
        let swept = store.expire_actions(too_late).unwrap();
        assert_eq!(swept, vec![stale.clone()]);
        assert!(swept.contains(&stale));
        assert_eq!(store.get_action(&stale).unwrap().unwrap().status, "expired");
        assert!(store.verify_audit_chain().unwrap().ok());
    }
}
