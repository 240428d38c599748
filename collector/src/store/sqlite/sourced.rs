//! The SQLite side of [`crate::store::sourced`].

use rusqlite::params;

use super::alert_id::AlertKey;
use super::fold::{self, Evidence, FoldCache, Observed, Placement};
use super::{InsertOutcome, SqliteStore, StoreError, i64_of, sev_num};
use crate::entity;
use crate::store::sourced::*;
use crate::store::*;

/// Inserts into an open transaction (for callers that store more in the same one).
/// With `fold` on, the collector's own alerts about a device fold like agent alerts
/// (see `store::fold`); feed alerts never do.
pub(crate) fn insert_sourced(
    tx: &rusqlite::Transaction<'_>,
    alerts: &[SourcedAlert],
    now_ms: u64,
    fold: Fold,
    cache: &mut FoldCache,
) -> Result<InsertOutcome, StoreError> {
    let mut outcome = InsertOutcome::default();
    let mut insert = tx.prepare_cached(
        "INSERT INTO alerts (id, device_id, seq, observed_at_ms, last_observed_at_ms, received_at_ms, rule_id,
             rule_title, rule_author, severity, techniques, tactics, count, entities, matched, signed_payload,
             signature, source, fold_hash)
         VALUES (?1, ?2, 0, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, x'', x'', ?15, ?16)
         ON CONFLICT(id) DO NOTHING",
    )?;
    let mut insert_entity =
        tx.prepare_cached("INSERT OR IGNORE INTO alert_entities (alert_rowid, kind, value) VALUES (?1, ?2, ?3)")?;
    for a in alerts {
        let hash = match (&a.device_id, a.source) {
            (Some(device), AlertSource::Collector) => fold.hash(device, &a.rule.id, &a.entities, &[]),
            _ => None,
        };
        let seen = Observed {
            first_ms: a.observed_at_ms,
            last_ms: a.last_observed_at_ms.max(a.observed_at_ms),
            count: a.count,
        };
        let evidence = Evidence {
            seq: 0,
            payload: &[],
            signature: &[],
        };
        match fold::place(tx, cache, &a.id, hash.as_ref(), seen, fold, evidence, now_ms)? {
            Placement::Duplicate => {
                outcome.duplicates += 1;
                continue;
            }
            Placement::Folded(_) => {
                outcome.folded += 1;
                continue;
            }
            Placement::NewRow => {}
        }
        let entities: Vec<serde_json::Value> = a.entities.iter().map(entity::to_json).collect();
        let inserted = insert.execute(params![
            AlertKey::of(&a.id),
            a.device_id,
            i64_of(a.observed_at_ms),
            i64_of(a.last_observed_at_ms.max(a.observed_at_ms)),
            i64_of(now_ms),
            a.rule.id,
            a.rule.title,
            a.rule.author,
            sev_num(a.rule.severity),
            serde_json::to_string(&a.rule.techniques).unwrap_or_default(),
            serde_json::to_string(&a.rule.tactics).unwrap_or_default(),
            a.count.max(1),
            serde_json::Value::Array(entities).to_string(),
            serde_json::Value::Object(
                a.matched
                    .iter()
                    .map(|(k, v)| match v {
                        serde_json::Value::String(t) => (
                            k.clone(),
                            serde_json::Value::String(entity::redact_userinfo(t).into_owned()),
                        ),
                        other => (k.clone(), other.clone()),
                    })
                    .collect()
            )
            .to_string(),
            a.source.as_str(),
            hash.as_ref().map(|h| &h[..]),
        ])?;
        if inserted == 0 {
            outcome.duplicates += 1;
            continue;
        }
        outcome.stored += 1;
        let rowid = tx.last_insert_rowid();
        if let Some(hash) = hash {
            cache.stored(hash, rowid, a.id.clone(), seen.first_ms, seen.last_ms);
        }
        for e in &a.entities {
            let (kind, value) = entity::key(e);
            insert_entity.execute(params![rowid, kind, value])?;
        }
    }
    Ok(outcome)
}

impl SourcedStore for SqliteStore {
    fn insert_sourced_alerts(&mut self, alerts: &[SourcedAlert], now_ms: u64) -> Result<InsertOutcome, StoreError> {
        let tx = self.conn.transaction()?;
        let outcome = insert_sourced(&tx, alerts, now_ms, Fold::OFF, &mut FoldCache::default())?;
        tx.commit()?;
        Ok(outcome)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ward_protocol::Severity;
    use ward_protocol::{Entity, RuleRef};

    fn feed_alert(id: &str) -> SourcedAlert {
        SourcedAlert {
            id: id.into(),
            source: AlertSource::Identity,
            device_id: None,
            observed_at_ms: 1_000,
            last_observed_at_ms: 1_000,
            rule: RuleRef {
                id: "ward-identity-risky-sign-in".into(),
                title: "Risky sign-in".into(),
                author: "Ward".into(),
                severity: Severity::High,
                techniques: vec!["T1078".into()],
                tactics: vec!["TA0001".into()],
            },
            entities: vec![Entity::User {
                name: "alice@example.com".into(),
                uid: None,
            }],
            count: 1,
            matched: serde_json::Map::new(),
        }
    }

    #[test]
    fn feed_alerts_need_no_device_and_are_stored_once() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = SqliteStore::open(&dir.path().join("ward.db")).unwrap();
        let alerts = [feed_alert("a1"), feed_alert("a2")];
        let first = store.insert_sourced_alerts(&alerts, 5).unwrap();
        assert_eq!((first.stored, first.duplicates), (2, 0));
        let again = store.insert_sourced_alerts(&alerts, 6).unwrap();
        assert_eq!((again.stored, again.duplicates), (0, 2));
        let view = store.get_alert("a1").unwrap().unwrap();
        assert_eq!(view.device_id, None);
        assert_eq!(view.source, "identity");
    }
}
