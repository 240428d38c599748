//! The workflow applied to stored actions: each decision, cancellation, device
//! result and expiry reads the action, asks [`super::workflow`] whether the event is
//! allowed, and writes the change with its audit entry, all in one store
//! transaction ([`ActionTx`]), so the log never misses a change and never records
//! one that did not happen. Runs on the writer thread.
//!
//! On the approval that completes an action, the device's next command sequence
//! number is taken, the [`ward_protocol::Command`] built and signed, and stored as
//! dispatched in that same transaction: it exists on disk before anyone sends it.

use serde_json::{Value, json};
use thiserror::Error;
use ward_protocol::{Action, Approval, Command, CommandId, CommandOutcome, CommandResult, DeviceId, Refusal, Signed};

use super::policy::Policy;
use super::workflow::{self, Actor, Event, Facts, UndoRefusal, WorkflowError};
use crate::model::action::{MAX_DETAIL_BYTES, MAX_TEXT_BYTES, Outcome, Status};
use crate::store::prelude::*;
use crate::store::{ActionRecord, ActionTx, ActionView, Store, StoreError};
use crate::util::clip_marked;

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

fn facts<'a>(row: &'a ActionRecord, approvers: &'a [String]) -> Facts<'a> {
    Facts {
        kind: row.action.kind(),
        requested_by: &row.requested_by,
        approvals: approvers,
    }
}

fn vanished(id: &str) -> StoreError {
    StoreError::Corrupt(format!("action {id} vanished"))
}

/// Approves or rejects action `id` under `rules`. When the last needed approval
/// arrives the command is built, signed and stored as dispatched, with its sequence
/// number, in the same transaction.
pub fn decide(
    store: &mut Store,
    id: &str,
    actor: &Actor,
    decision: Decision,
    comment: &str,
    now_ms: u64,
    rules: Rules<'_>,
) -> Result<Result<DecisionOutcome, DecideError>, StoreError> {
    let Rules { policy, sign } = rules;
    let tx = store.action_tx()?;
    let Some(row) = tx.load(id)? else {
        return Ok(Err(DecideError::NotFound));
    };
    let rules = policy.for_kind(row.action.kind());
    let approvers = row.approvers();
    let event = match decision {
        Decision::Approve => Event::Approve(actor, rules),
        Decision::Reject => Event::Reject(actor, rules),
        Decision::AutoApprove => Event::AutoApprove(actor, rules),
    };
    let transition = match workflow::apply(row.status, facts(&row, &approvers), event) {
        Ok(t) => t,
        Err(e) => return Ok(Err(e.into())),
    };
    if row.expires_at_ms <= i64::try_from(now_ms).unwrap_or(i64::MAX) {
        // Past its deadline; the expiry task has not swept it yet.
        return Ok(Err(WorkflowError::WrongState {
            event: event.name(),
            status: Status::Expired,
        }
        .into()));
    }
    let comment = clip_marked(comment, MAX_TEXT_BYTES);
    let mut dispatched = None;
    match transition.to {
        Status::Rejected => {
            tx.set_rejected(id, &actor.name, now_ms, &comment)?;
            tx.audit(now_ms, &actor.name, "action.reject", id, &comment)?;
        }
        to => {
            let mut approvals = row.approvals.clone();
            approvals.push(json!({"by": actor.name, "at_ms": now_ms, "comment": comment}));
            tx.set_approvals(id, to, &Value::Array(approvals), now_ms)?;
            let audit_action = if decision == Decision::AutoApprove {
                "action.auto_approve"
            } else {
                "action.approve"
            };
            let detail = json!({"approval": approvers.len() + 1, "of": rules.approvals_needed, "comment": comment});
            tx.audit(now_ms, &actor.name, audit_action, id, &detail.to_string())?;
            if to == Status::Approved {
                tx.set_decided(id, &actor.name, now_ms, &comment)?;
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
    let view = store.get_action(id)?.ok_or_else(|| vanished(id))?;
    Ok(Ok(DecisionOutcome { view, dispatched }))
}

/// Approved → dispatched: the next sequence number, the command, its signature,
/// all stored (and audited) in `tx`.
fn dispatch(
    tx: &ActionTx<'_>,
    row: &ActionRecord,
    approved_by: Vec<String>,
    now_ms: u64,
    ttl: u64,
    sign: &dyn Fn(&Command) -> Result<Signed, String>,
) -> Result<Result<(DeviceId, u64), DecideError>, StoreError> {
    if tx.device_revoked(&row.device_id)? {
        return Ok(Err(DecideError::DeviceRevoked));
    }
    if let Err(e) = workflow::apply(Status::Approved, facts(row, &approved_by), Event::Dispatch) {
        return Ok(Err(e.into()));
    }
    let corrupt = |what: &str| StoreError::Corrupt(format!("action {}: {what}", row.id));
    let command_id: CommandId = row.id.parse().map_err(|_| corrupt("id"))?;
    let device_id: DeviceId = row.device_id.parse().map_err(|_| corrupt("device id"))?;
    let seq = tx.next_command_seq(&row.device_id)?;
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
    tx.set_dispatched(&row.id, seq, command.issued_at_ms, command.expires_at_ms, &signed)?;
    let detail = json!({"device": row.device_id, "seq": seq, "expires_at_ms": command.expires_at_ms,
                        "key_id": hex::encode(signed.key_id.0)});
    tx.audit(now_ms, "collector", "action.dispatch", &row.id, &detail.to_string())?;
    Ok(Ok((device_id, seq)))
}

/// Cancels action `id` (requested, approved, or dispatched when
/// `dispatched_seq_undelivered` says the device never had that sequence number),
/// with its audit entry.
pub fn cancel(
    store: &mut Store,
    id: &str,
    actor: &Actor,
    comment: &str,
    now_ms: u64,
    policy: &Policy,
    dispatched_seq_undelivered: &dyn Fn(i64) -> bool,
) -> Result<Result<ActionView, CancelError>, StoreError> {
    let tx = store.action_tx()?;
    let Some(row) = tx.load(id)? else {
        return Ok(Err(CancelError::NotFound));
    };
    let approvers = row.approvers();
    let rules = policy.for_kind(row.action.kind());
    if let Err(e) = workflow::apply(row.status, facts(&row, &approvers), Event::Cancel(actor, rules)) {
        return Ok(Err(e.into()));
    }
    if row.status == Status::Dispatched && !row.seq.is_some_and(dispatched_seq_undelivered) {
        return Ok(Err(CancelError::MayBeDelivered));
    }
    let comment = clip_marked(comment, MAX_TEXT_BYTES);
    tx.set_cancelled(id, &actor.name, now_ms, &comment)?;
    let detail = json!({"was": row.status.as_str(), "seq": row.seq, "comment": comment});
    tx.audit(now_ms, &actor.name, "action.cancel", id, &detail.to_string())?;
    tx.commit()?;
    Ok(Ok(store.get_action(id)?.ok_or_else(|| vanished(id))?))
}

/// The device and the action that would undo action `id` (`None` if there is no
/// such action), or why there is none.
pub fn undo_target(store: &Store, id: &str) -> Result<Option<UndoTarget>, StoreError> {
    let Some((row, detail)) = store.action_with_detail(id)? else {
        return Ok(None);
    };
    let device: DeviceId = row
        .device_id
        .parse()
        .map_err(|_| StoreError::Corrupt(format!("action {id}: device id")))?;
    Ok(Some(
        workflow::undo(&row.action, row.status, detail.as_deref()).map(|a| (device, a)),
    ))
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

fn outcome_parts(outcome: &CommandOutcome) -> (Outcome, &'static str, Option<String>) {
    match outcome {
        CommandOutcome::Succeeded => (Outcome::Succeeded, "succeeded", None),
        CommandOutcome::Failed { reason } => (Outcome::Failed, "failed", Some(clip_marked(reason, MAX_TEXT_BYTES))),
        CommandOutcome::Refused { reason } => (Outcome::Refused, "refused", Some(reason.to_string())),
    }
}

/// Records a device's verified result for one of its dispatched commands. The
/// attachment is kept only up to `max_attachment` bytes. A result that changes
/// nothing (no such command, an ended action) is audited only when `audit_noise`
/// (the device's audit budget lasts), with its text clipped.
pub fn record_result(
    store: &mut Store,
    device: DeviceId,
    result: &CommandResult,
    max_attachment: usize,
    audit_noise: bool,
    now_ms: u64,
) -> Result<ResultRecord, StoreError> {
    let tx = store.action_tx()?;
    let device_id = device.to_string();
    let seq = i64::try_from(result.seq).unwrap_or(i64::MAX);
    let mut row = tx
        .load(&result.command_id.to_string())?
        .filter(|r| r.device_id == device_id && r.seq == Some(seq));
    if row.is_none() && result.seq == 0 && refused_unread(&result.outcome) {
        row = tx.dispatched_named_by_unread_id(&device_id, result.command_id)?;
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
            tx.audit(now_ms, &device_id, "action.result_refused", &id, &why)?;
        }
        tx.commit()?;
        return Ok(ResultRecord::Unknown(why));
    };
    let (outcome, outcome_text, reason) = outcome_parts(&result.outcome);
    let approvers = row.approvers();
    let to = match workflow::apply(row.status, facts(&row, &approvers), Event::Result(outcome)) {
        Ok(t) => t.to,
        Err(_) => {
            if audit_noise {
                let why = format!("{outcome_text} reported for an action that is {}", row.status);
                tx.audit(now_ms, &device_id, "action.result_ignored", &id, &why)?;
            }
            tx.commit()?;
            return Ok(ResultRecord::Ignored { id, status: row.status });
        }
    };
    let mut detail = clip_marked(&result.detail, MAX_DETAIL_BYTES);
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
    tx.set_result(
        &id,
        to,
        outcome_text,
        reason.as_deref(),
        &detail,
        result.finished_at_ms,
        attachment,
        now_ms,
    )?;
    let audit_detail = json!({
        "outcome": outcome_text,
        "reason": reason,
        "late": row.status == Status::Expired,
        "attachment_bytes": attachment.map(<[u8]>::len),
    });
    tx.audit(now_ms, &device_id, "action.result", &id, &audit_detail.to_string())?;
    tx.commit()?;
    Ok(ResultRecord::Recorded { id, status: to })
}

/// Marks every action the workflow lets expire ([`Status::EXPIRABLE`]) past its
/// deadline as expired; returns their ids.
pub fn expire(store: &mut Store, now_ms: u64) -> Result<Vec<String>, StoreError> {
    let tx = store.action_tx()?;
    let due = tx.due(&Status::EXPIRABLE, now_ms)?;
    let mut expired = Vec::with_capacity(due.len());
    for id in due {
        let Some(row) = tx.load(&id)? else { continue };
        let approvers = row.approvers();
        if workflow::apply(row.status, facts(&row, &approvers), Event::Expire).is_err() {
            continue;
        }
        tx.set_status(&id, Status::Expired, now_ms)?;
        tx.audit(
            now_ms,
            "collector",
            "action.expire",
            &id,
            &format!("was {}", row.status),
        )?;
        expired.push(id);
    }
    tx.commit()?;
    Ok(expired)
}

/// The earliest deadline of an action that can still expire.
pub fn next_expiry(store: &Store) -> Result<Option<u64>, StoreError> {
    store.earliest_deadline(&Status::EXPIRABLE)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use ring::rand::SystemRandom;
    use ward_protocol::SigningKey;

    use super::*;
    use crate::roles::Role;
    use crate::store::NewAction;
    use crate::store::test_support::{enrolled_device, open};

    const T0: u64 = 1_700_000_000_000;

    fn device(store: &mut Store, n: u8) -> DeviceId {
        enrolled_device(store, n, T0)
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
        decide(
            store,
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
        assert_eq!(next_expiry(&store).unwrap(), Some(later));
        let expired = expire(&mut store, later).unwrap();
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
            record_result(&mut store, other, &result, 10, true, later).unwrap(),
            ResultRecord::Unknown(_)
        ));
        let rec = record_result(&mut store, dev, &result, 10, true, later).unwrap();
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
        let swept = expire(&mut store, too_late).unwrap();
        assert_eq!(swept, vec![stale.clone()]);
        assert!(swept.contains(&stale));
        assert_eq!(store.get_action(&stale).unwrap().unwrap().status, "expired");
        assert!(store.verify_audit_chain().unwrap().ok());
    }
}
