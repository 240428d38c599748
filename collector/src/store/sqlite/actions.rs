//! The SQLite side of [`crate::store::actions`].

use rusqlite::{OptionalExtension, Transaction, params, params_from_iter};
use serde_json::{Value, json};
use ward_protocol::{Action, CommandId, DeviceId, Signed};

use super::audit::append_audit;
use super::{SqliteStore, StoreError, i64_of};
use crate::model::action::{ActionSpec, MAX_TEXT_BYTES, Status, describe};
use crate::store::actions::*;
use crate::util::clip_marked;

fn load_row(tx: &Transaction<'_>, id: &str) -> Result<Option<ActionRecord>, StoreError> {
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
    Ok(Some(ActionRecord {
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

/// The device's dispatched command whose signed bytes hash to `unread`.
fn unread_command(
    tx: &Transaction<'_>,
    device_id: &str,
    unread: CommandId,
) -> Result<Option<ActionRecord>, StoreError> {
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

/// Inserts a proposal and its audit entry into `tx`.
fn insert_action(tx: &Transaction<'_>, new: &NewAction) -> Result<Result<(), TargetRefusal>, StoreError> {
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
    let reason = clip_marked(&new.reason, MAX_TEXT_BYTES);
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

/// A status is stored as its name.
impl rusqlite::ToSql for Status {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        Ok(self.as_str().into())
    }
}

/// SQL arguments: `lead`, then `statuses` (numbered after them by `placeholders`).
fn with_statuses<'a>(lead: &[&'a dyn rusqlite::ToSql], statuses: &'a [Status]) -> Vec<&'a dyn rusqlite::ToSql> {
    let statuses = statuses.iter().map(|s| s as &dyn rusqlite::ToSql);
    lead.iter().copied().chain(statuses).collect()
}

/// `?from, ?from+1, …`: `n` numbered SQL parameters.
fn placeholders(from: usize, n: usize) -> String {
    (from..from + n).map(|i| format!("?{i}")).collect::<Vec<_>>().join(", ")
}

/// One transaction over actions and command sequences: what the workflow reads and
/// writes for one change, with the change's audit entry. Dropped without
/// [`ActionTx::commit`], nothing is kept.
pub struct ActionTx<'a> {
    tx: Transaction<'a>,
}

impl ActionStore for SqliteStore {
    type ActionTx<'a> = ActionTx<'a>;

    fn command_seq(&self, device: DeviceId) -> Result<u64, StoreError> {
        let seq: i64 = self.conn.query_row(
            "SELECT COALESCE(MAX(last_seq), 0) FROM command_seqs WHERE device_id = ?1",
            params![device.to_string()],
            |r| r.get(0),
        )?;
        Ok(seq.max(0) as u64)
    }

    fn catch_up_command_seq(&self, device: DeviceId, accepted: u64, now_ms: u64) -> Result<Option<u64>, StoreError> {
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

    fn create_action(&self, new: &NewAction) -> Result<Result<ActionView, TargetRefusal>, StoreError> {
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

    fn pending_commands(
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

    fn audit_refused_result(&self, device: DeviceId, why: &str, now_ms: u64) -> Result<(), StoreError> {
        let tx = self.conn.unchecked_transaction()?;
        let d = device.to_string();
        append_audit(&tx, now_ms, &d, "action.result_refused", &d, why)?;
        tx.commit()?;
        Ok(())
    }

    fn action_with_detail(&self, id: &str) -> Result<Option<(ActionRecord, Option<String>)>, StoreError> {
        let tx = self.conn.unchecked_transaction()?;
        let Some(row) = load_row(&tx, id)? else {
            return Ok(None);
        };
        let detail: Option<String> =
            tx.query_row("SELECT detail FROM actions WHERE id = ?1", params![id], |r| r.get(0))?;
        Ok(Some((row, detail)))
    }

    fn earliest_deadline(&self, statuses: &[Status]) -> Result<Option<u64>, StoreError> {
        let t: Option<i64> = self.conn.query_row(
            &format!(
                "SELECT MIN(expires_at_ms) FROM actions WHERE status IN ({})",
                placeholders(1, statuses.len())
            ),
            params_from_iter(statuses.iter().map(Status::as_str)),
            |r| r.get(0),
        )?;
        Ok(t.map(|t| t.max(0) as u64))
    }

    fn get_action(&self, id: &str) -> Result<Option<ActionView>, StoreError> {
        let sql =
            format!("SELECT {VIEW_COLUMNS} FROM actions a LEFT JOIN devices d ON d.id = a.device_id WHERE a.id = ?1");
        Ok(self.conn.query_row(&sql, params![id], view_row).optional()?)
    }

    fn list_actions(&self, f: &ActionFilter) -> Result<Vec<ActionView>, StoreError> {
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

    fn action_attachment(&self, id: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .conn
            .query_row("SELECT attachment FROM actions WHERE id = ?1", params![id], |r| {
                r.get::<_, Option<Vec<u8>>>(0)
            })
            .optional()?
            .flatten())
    }

    fn action_tx(&mut self) -> Result<ActionTx<'_>, StoreError> {
        Ok(ActionTx {
            tx: self.conn.transaction()?,
        })
    }
}

impl ActionOps for ActionTx<'_> {
    fn commit(self) -> Result<(), StoreError> {
        Ok(self.tx.commit()?)
    }

    fn load(&self, id: &str) -> Result<Option<ActionRecord>, StoreError> {
        load_row(&self.tx, id)
    }

    fn dispatched_named_by_unread_id(
        &self,
        device_id: &str,
        unread: CommandId,
    ) -> Result<Option<ActionRecord>, StoreError> {
        unread_command(&self.tx, device_id, unread)
    }

    fn device_revoked(&self, device_id: &str) -> Result<bool, StoreError> {
        let revoked: Option<i64> = self.tx.query_row(
            "SELECT revoked_at_ms FROM devices WHERE id = ?1",
            params![device_id],
            |r| r.get(0),
        )?;
        Ok(revoked.is_some())
    }

    fn next_command_seq(&self, device_id: &str) -> Result<u64, StoreError> {
        next_command_seq(&self.tx, device_id)
    }

    fn due(&self, statuses: &[Status], now_ms: u64) -> Result<Vec<String>, StoreError> {
        let sql = format!(
            "SELECT id FROM actions WHERE expires_at_ms <= ?1 AND status IN ({})",
            placeholders(2, statuses.len())
        );
        let now = i64_of(now_ms);
        let args = with_statuses(&[&now], statuses);
        Ok(self
            .tx
            .prepare_cached(&sql)?
            .query_map(params_from_iter(args), |r| r.get(0))?
            .collect::<Result<Vec<_>, _>>()?)
    }

    fn set_status(&self, id: &str, status: Status, now_ms: u64) -> Result<(), StoreError> {
        self.tx
            .prepare_cached("UPDATE actions SET status = ?2, updated_at_ms = ?3 WHERE id = ?1")?
            .execute(params![id, status.as_str(), i64_of(now_ms)])?;
        Ok(())
    }

    fn set_rejected(&self, id: &str, by: &str, now_ms: u64, comment: &str) -> Result<(), StoreError> {
        self.tx.execute(
            "UPDATE actions SET status = ?2, decided_by = ?3, decided_at_ms = ?4, decision_comment = ?5,
                                updated_at_ms = ?4 WHERE id = ?1",
            params![id, Status::Rejected.as_str(), by, i64_of(now_ms), comment],
        )?;
        Ok(())
    }

    fn set_approvals(&self, id: &str, status: Status, approvals: &Value, now_ms: u64) -> Result<(), StoreError> {
        self.tx.execute(
            "UPDATE actions SET status = ?2, approvals = ?3, updated_at_ms = ?4 WHERE id = ?1",
            params![id, status.as_str(), approvals.to_string(), i64_of(now_ms)],
        )?;
        Ok(())
    }

    fn set_decided(&self, id: &str, by: &str, now_ms: u64, comment: &str) -> Result<(), StoreError> {
        self.tx.execute(
            "UPDATE actions SET decided_by = ?2, decided_at_ms = ?3, decision_comment = ?4 WHERE id = ?1",
            params![id, by, i64_of(now_ms), comment],
        )?;
        Ok(())
    }

    fn set_dispatched(
        &self,
        id: &str,
        seq: u64,
        issued_at_ms: u64,
        expires_at_ms: u64,
        signed: &Signed,
    ) -> Result<(), StoreError> {
        let bytes = postcard::to_stdvec(signed)
            .map_err(|e| StoreError::Corrupt(format!("action {id}: signed command encoding: {e}")))?;
        self.tx.execute(
            "UPDATE actions SET status = ?2, seq = ?3, issued_at_ms = ?4, expires_at_ms = ?5, signed_command = ?6,
                                updated_at_ms = ?4 WHERE id = ?1",
            params![
                id,
                Status::Dispatched.as_str(),
                i64_of(seq),
                i64_of(issued_at_ms),
                i64_of(expires_at_ms),
                bytes
            ],
        )?;
        Ok(())
    }

    fn set_cancelled(&self, id: &str, by: &str, now_ms: u64, comment: &str) -> Result<(), StoreError> {
        self.tx.execute(
            "UPDATE actions SET status = ?2, cancelled_by = ?3, cancelled_at_ms = ?4, cancel_comment = ?5,
                                updated_at_ms = ?4 WHERE id = ?1",
            params![id, Status::Cancelled.as_str(), by, i64_of(now_ms), comment],
        )?;
        Ok(())
    }

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
    ) -> Result<(), StoreError> {
        self.tx.execute(
            "UPDATE actions SET status = ?2, outcome = ?3, outcome_reason = ?4, detail = ?5, finished_at_ms = ?6,
                                attachment = ?7, updated_at_ms = ?8 WHERE id = ?1",
            params![
                id,
                status.as_str(),
                outcome,
                reason,
                detail,
                i64_of(finished_at_ms),
                attachment,
                i64_of(now_ms)
            ],
        )?;
        Ok(())
    }

    fn insert(&self, new: &NewAction) -> Result<Result<(), TargetRefusal>, StoreError> {
        insert_action(&self.tx, new)
    }

    fn automation_record(&self, rule: &str, subject: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .tx
            .query_row(
                "SELECT outcome FROM automation_proposals WHERE rule = ?1 AND alert_id = ?2",
                params![rule, subject],
                |r| r.get(0),
            )
            .optional()?)
    }

    fn set_automation_record(
        &self,
        rule: &str,
        subject: &str,
        action_id: Option<&str>,
        outcome: &str,
        at_ms: u64,
    ) -> Result<(), StoreError> {
        self.tx.execute(
            "INSERT INTO automation_proposals (rule, alert_id, action_id, outcome, at_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![rule, subject, action_id, outcome, i64_of(at_ms)],
        )?;
        Ok(())
    }

    fn same_action(
        &self,
        device: DeviceId,
        requested_by: &str,
        action: &Action,
        statuses: &[Status],
    ) -> Result<Option<String>, StoreError> {
        let spec = serde_json::to_string(&ActionSpec::of(action))
            .map_err(|e| StoreError::Corrupt(format!("action does not encode: {e}")))?;
        let sql = format!(
            "SELECT id FROM actions WHERE device_id = ?1 AND requested_by = ?2 AND action = ?3
               AND status IN ({}) LIMIT 1",
            placeholders(4, statuses.len())
        );
        let (device, requested_by) = (device.to_string(), requested_by.to_string());
        let args = with_statuses(&[&device, &requested_by, &spec], statuses);
        Ok(self
            .tx
            .query_row(&sql, params_from_iter(args), |r| r.get(0))
            .optional()?)
    }

    fn isolation_evidence(&self, device: DeviceId, open: &[Status]) -> Result<Option<String>, StoreError> {
        let sql = format!(
            "SELECT 'action ' || id FROM actions WHERE device_id = ?1 AND kind = 'isolate' AND status IN ({})
             UNION ALL
             SELECT 'action ' || id FROM (SELECT id, kind FROM actions
                 WHERE device_id = ?1 AND kind IN ('isolate', 'release') AND status = ?2
                 ORDER BY finished_at_ms DESC, id DESC LIMIT 1) WHERE kind = 'isolate'
             UNION ALL
             SELECT 'the device reports it' FROM devices WHERE id = ?1 AND isolation = 'isolated'
             LIMIT 1",
            placeholders(3, open.len())
        );
        let device = device.to_string();
        let succeeded = Status::Succeeded.as_str();
        let args = with_statuses(&[&device, &succeeded], open);
        Ok(self
            .tx
            .query_row(&sql, params_from_iter(args), |r| r.get(0))
            .optional()?)
    }

    fn audit(&self, now_ms: u64, actor: &str, action: &str, target: &str, detail: &str) -> Result<(), StoreError> {
        append_audit(&self.tx, now_ms, actor, action, target, detail)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::store::prelude::*;
    use crate::store::test_support::{enrolled_device, open};

    const T0: u64 = 1_700_000_000_000;

    fn device(store: &mut SqliteStore, n: u8) -> DeviceId {
        enrolled_device(store, n, T0)
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
}
