//! The SQLite side of [`crate::store::silence`].

use rusqlite::params;
use ward_protocol::{AlertId, Entity, RuleRef, Severity};

use super::sourced::insert_sourced;
use super::{Fold, SqliteStore, StoreError, i64_of};
use crate::store::silence::*;
use crate::store::*;

const DUE: &str = "FROM devices
     WHERE isolation = 'isolated' AND revoked_at_ms IS NULL AND last_seen_ms IS NOT NULL AND last_seen_ms < ?1
       AND (silence_alerted_seen_ms IS NULL OR silence_alerted_seen_ms <> last_seen_ms)";

impl SilenceStore for SqliteStore {
    fn silent_isolated_due(&self, silent_since_ms: u64) -> Result<bool, StoreError> {
        let sql = format!("SELECT EXISTS (SELECT 1 {DUE})");
        Ok(self
            .conn
            .prepare_cached(&sql)?
            .query_row(params![i64_of(silent_since_ms)], |r| r.get(0))?)
    }

    fn raise_silent_isolated_alerts(
        &mut self,
        now_ms: u64,
        offline_after_ms: u64,
        new_id: &mut dyn FnMut() -> Option<AlertId>,
    ) -> Result<Vec<RaisedAlert>, StoreError> {
        let result = self.try_raise_silent_isolated_alerts(now_ms, offline_after_ms, new_id);
        if result.is_err() {
            // Rolled back: the fold cache may name rows that were never committed.
            self.fold_cache.clear();
        }
        result
    }
}

impl SqliteStore {
    fn try_raise_silent_isolated_alerts(
        &mut self,
        now_ms: u64,
        offline_after_ms: u64,
        new_id: &mut dyn FnMut() -> Option<AlertId>,
    ) -> Result<Vec<RaisedAlert>, StoreError> {
        self.merge_loaded_folds(false);
        let cache = &mut self.fold_cache;
        let tx = self.conn.transaction()?;
        let sql = format!("SELECT id, hostname, last_seen_ms {DUE}");
        let due: Vec<(String, String, i64)> = tx
            .prepare_cached(&sql)?
            .query_map(params![i64_of(now_ms.saturating_sub(offline_after_ms))], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        let mut raised = Vec::with_capacity(due.len());
        for (device_id, hostname, last_seen) in due {
            let Some(alert_id) = new_id() else {
                return Err(StoreError::Corrupt("cannot create an alert id".into()));
            };
            let host = Entity::Device {
                hostname: hostname.clone(),
            };
            let mut matched = serde_json::Map::new();
            matched.insert("isolation".into(), "isolated".into());
            matched.insert("last_seen_ms".into(), last_seen.to_string().into());
            matched.insert("offline_after_ms".into(), offline_after_ms.to_string().into());
            let alert = SourcedAlert {
                id: alert_id.to_string(),
                source: AlertSource::Collector,
                device_id: Some(device_id.clone()),
                observed_at_ms: now_ms,
                last_observed_at_ms: now_ms,
                rule: RuleRef {
                    id: SILENT_ISOLATED_RULE_ID.into(),
                    title: SILENT_ISOLATED_TITLE.into(),
                    author: "Ward".into(),
                    severity: Severity::High,
                    techniques: vec![SILENT_ISOLATED_TECHNIQUE.into()],
                    tactics: vec![SILENT_ISOLATED_TACTIC.into()],
                },
                entities: vec![host],
                count: 1,
                matched,
            };
            // One alert per silence already (the device's last-seen time is its key
            // here): a later silence is a new event, never a repeat to fold.
            insert_sourced(&tx, std::slice::from_ref(&alert), now_ms, Fold::OFF, cache)?;
            tx.prepare_cached("UPDATE devices SET silence_alerted_seen_ms = ?2 WHERE id = ?1")?
                .execute(params![device_id, last_seen])?;
            raised.push(RaisedAlert {
                alert_id: alert_id.to_string(),
                device_id,
            });
        }
        tx.commit()?;
        Ok(raised)
    }
}
