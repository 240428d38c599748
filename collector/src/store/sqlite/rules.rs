//! The SQLite side of [`crate::store::rules`]: rule versions and the alert page's reads.

use rusqlite::{OptionalExtension, params};

use super::alert_id::{AlertKey, alert_id};
use super::{SqliteStore, StoreError, i64_of, sev_from};
use crate::store::rules::*;

fn json_list(v: &[String]) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "[]".into())
}

fn list_of(s: String) -> Vec<String> {
    serde_json::from_str(&s).unwrap_or_default()
}

impl RuleContextStore for SqliteStore {
    fn record_rule_contexts(&self, rows: &[NewRuleContext], now_ms: u64) -> Result<usize, StoreError> {
        let tx = self.conn.unchecked_transaction()?;
        let mut new = 0;
        {
            let mut insert = tx.prepare_cached(
                "INSERT INTO rule_contexts (rule_id, content_sha256, origin, pack_version, file, title, level,
                     description, refs, false_positives, author, license, source_url, techniques, tactics, notes,
                     first_seen_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17)
                 ON CONFLICT(rule_id, content_sha256) DO NOTHING",
            )?;
            for r in rows {
                new += insert.execute(params![
                    r.rule_id,
                    r.content_sha256,
                    r.origin,
                    r.pack_version.map(i64_of),
                    r.file,
                    r.title,
                    r.level,
                    r.description,
                    json_list(&r.references),
                    json_list(&r.false_positives),
                    r.author,
                    r.license,
                    r.source_url,
                    json_list(&r.techniques),
                    json_list(&r.tactics),
                    json_list(&r.notes),
                    i64_of(now_ms),
                ])?;
            }
        }
        tx.commit()?;
        Ok(new)
    }

    fn rule_contexts_of(&self, rule_id: &str, limit: u32) -> Result<Vec<RuleContextView>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT rule_id, content_sha256, origin, pack_version, file, title, level, description, refs,
                 false_positives, author, license, source_url, techniques, tactics, notes, first_seen_ms
             FROM rule_contexts WHERE rule_id = ?1
             ORDER BY first_seen_ms DESC, pack_version DESC, content_sha256 LIMIT ?2",
        )?;
        let rows = stmt
            .query_map(params![rule_id, limit], |r| {
                Ok(RuleContextView {
                    rule: NewRuleContext {
                        rule_id: r.get(0)?,
                        content_sha256: r.get(1)?,
                        origin: r.get(2)?,
                        pack_version: r.get::<_, Option<i64>>(3)?.and_then(|v| u64::try_from(v).ok()),
                        file: r.get(4)?,
                        title: r.get(5)?,
                        level: r.get(6)?,
                        description: r.get(7)?,
                        references: list_of(r.get(8)?),
                        false_positives: list_of(r.get(9)?),
                        author: r.get(10)?,
                        license: r.get(11)?,
                        source_url: r.get(12)?,
                        techniques: list_of(r.get(13)?),
                        tactics: list_of(r.get(14)?),
                        notes: list_of(r.get(15)?),
                    },
                    first_seen_ms: r.get(16)?,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    fn rule_context_count(&self) -> Result<i64, StoreError> {
        Ok(self
            .conn
            .query_row("SELECT COUNT(*) FROM rule_contexts", [], |r| r.get(0))?)
    }

    fn alert_incident(&self, alert_rowid: i64) -> Result<Option<AlertIncidentLink>, StoreError> {
        Ok(self
            .conn
            .prepare_cached(
                "SELECT i.id, i.title, i.status, i.severity, i.redirected_to, ia.reason, ia.linked_by, ia.linked_at_ms
                 FROM incident_alerts ia JOIN incidents i ON i.seq = ia.incident WHERE ia.alert_rowid = ?1",
            )?
            .query_row(params![alert_rowid], |r| {
                Ok(AlertIncidentLink {
                    id: r.get(0)?,
                    title: r.get(1)?,
                    status: r.get(2)?,
                    severity: sev_from(r.get(3)?),
                    redirected_to: r.get(4)?,
                    reason: r.get(5)?,
                    linked_by: r.get(6)?,
                    linked_at_ms: r.get(7)?,
                })
            })
            .optional()?)
    }

    fn folded_records(&self, alert_rowid: i64, limit: u32) -> Result<(Vec<FoldedRecord>, i64), StoreError> {
        let total: i64 = self
            .conn
            .prepare_cached("SELECT COUNT(*) FROM alert_folds WHERE into_rowid = ?1")?
            .query_row(params![alert_rowid], |r| r.get(0))?;
        let mut stmt = self.conn.prepare_cached(
            "SELECT alert_id, seq, observed_at_ms, last_observed_at_ms, count, received_at_ms FROM alert_folds
             WHERE into_rowid = ?1 ORDER BY received_at_ms, seq LIMIT ?2",
        )?;
        let rows = stmt
            .query_map(params![alert_rowid, limit], |r| {
                Ok(FoldedRecord {
                    alert_id: alert_id(r, 0)?,
                    seq: r.get(1)?,
                    observed_at_ms: r.get(2)?,
                    last_observed_at_ms: r.get(3)?,
                    count: r.get(4)?,
                    received_at_ms: r.get(5)?,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok((rows, total))
    }

    fn signed_alert(&self, alert_id: &str) -> Result<Option<SignedAlertRecord>, StoreError> {
        Ok(self
            .conn
            .prepare_cached(
                "SELECT a.signed_payload, a.signature, CASE WHEN a.source = 'agent' THEN d.signing_key END
                 FROM alerts a LEFT JOIN devices d ON d.id = a.device_id WHERE a.id = ?1
                 UNION ALL
                 SELECT f.signed_payload, f.signature, d.signing_key
                 FROM alert_folds f JOIN alerts a ON a.rowid = f.into_rowid LEFT JOIN devices d ON d.id = a.device_id
                 WHERE f.alert_id = ?1
                 LIMIT 1",
            )?
            .query_row(params![AlertKey::of(alert_id)], |r| {
                Ok(SignedAlertRecord {
                    payload: r.get(0)?,
                    signature: r.get(1)?,
                    device_key: r.get(2)?,
                })
            })
            .optional()?)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use ward_protocol::{Alert, AlertId, Entity, Id128, KeyId, RuleRef, Severity, Signed};

    use super::*;
    use crate::store::prelude::*;
    use crate::store::{Fold, VerifiedAlert, test_support};

    fn alert(device: ward_protocol::DeviceId, n: u128, at: u64) -> VerifiedAlert {
        VerifiedAlert {
            alert: Alert {
                id: AlertId(Id128::from_u128(n)),
                device_id: device,
                seq: n as u64,
                observed_at_ms: at,
                last_observed_at_ms: at,
                rule: RuleRef {
                    id: "r".into(),
                    title: "t".into(),
                    author: "a".into(),
                    severity: Severity::High,
                    techniques: vec![],
                    tactics: vec![],
                },
                entities: vec![Entity::File {
                    path: "/w/a".into(),
                    sha256: Some([7; 32]),
                }],
                count: 1,
                matched: vec![],
            },
            signed: Signed {
                key_id: KeyId([0; 8]),
                payload: format!("payload {n}").into_bytes(),
                signature: vec![n as u8; 64],
            },
        }
    }

    /// A folded alert's page reads the row it was folded into, each delivery's own
    /// signed record, and the list of deliveries.
    #[test]
    fn folded_deliveries_and_their_signed_records_are_read_back() {
        let (_dir, mut store) = test_support::open();
        store
            .set_fold(Fold {
                window_ms: 300_000,
                max_span_ms: 3_600_000,
            })
            .unwrap();
        let dev = test_support::enrolled_device(&mut store, 1, 1);
        let alerts: Vec<VerifiedAlert> = (1..=3).map(|n| alert(dev, n, 10_000 + n as u64)).collect();
        for a in &alerts {
            store
                .insert_alert_batches(&[(dev, std::slice::from_ref(a))], 20)
                .unwrap();
        }
        let first = alerts[0].alert.id.to_string();
        let third = alerts[2].alert.id.to_string();
        let row = store.get_alert(&third).unwrap().unwrap();
        assert_eq!(row.id, first, "folded into the first");
        let (records, total) = store.folded_records(row.rowid, 1).unwrap();
        assert_eq!((records.len(), total), (1, 2));
        assert_eq!(records[0].alert_id, alerts[1].alert.id.to_string());
        let own = store.signed_alert(&third).unwrap().unwrap();
        assert_eq!(own.payload, b"payload 3");
        assert!(own.device_key.is_some());
        assert_eq!(store.signed_alert(&first).unwrap().unwrap().payload, b"payload 1");
        assert_eq!(store.signed_alert("01JX0000000000000000000000").unwrap(), None);
        // Not correlated in this test: no incident.
        assert_eq!(store.alert_incident(row.rowid).unwrap(), None);
    }
}
