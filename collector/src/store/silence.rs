//! Alerts the collector raises itself: an isolated device that went silent.
//!
//! A device whose last reported isolation state is `isolated` and that has not
//! been heard from for longer than `devices.offline_after_ms` gets ONE alert per
//! silence: the `last_seen_ms` it went silent at is remembered on the device, so
//! the next check does not raise it again, and a device that comes back and goes
//! silent again (a new `last_seen_ms`) raises a new one.
//!
//! Such alerts have no agent signature (empty `signed_payload` and `signature`),
//! sequence number 0 and `source = 'collector'`; they never go through the
//! device's sequence tracking, so they open no gap.

use rusqlite::params;
use ward_protocol::{AlertId, Entity, Severity};

use super::{Store, StoreError, i64_of, sev_num};
use crate::entity;

/// Rule id of the alert for an isolated device that went silent.
pub const SILENT_ISOLATED_RULE_ID: &str = "ward-isolated-device-silent";
const SILENT_ISOLATED_TITLE: &str = "Isolated device went silent";
/// MITRE ATT&CK: Impair Defenses.
const TECHNIQUE: &str = "T1562";
/// MITRE ATT&CK: Defense Evasion.
const TACTIC: &str = "TA0005";

/// A collector-raised alert that was stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RaisedAlert {
    pub alert_id: String,
    pub device_id: String,
}

const DUE: &str = "FROM devices
     WHERE isolation = 'isolated' AND revoked_at_ms IS NULL AND last_seen_ms IS NOT NULL AND last_seen_ms < ?1
       AND (silence_alerted_seen_ms IS NULL OR silence_alerted_seen_ms <> last_seen_ms)";

impl Store {
    /// Whether some isolated device has been silent since before `silent_since_ms`
    /// without an alert yet (a cheap read for the periodic check).
    pub fn silent_isolated_due(&self, silent_since_ms: u64) -> Result<bool, StoreError> {
        let sql = format!("SELECT EXISTS (SELECT 1 {DUE})");
        Ok(self
            .conn
            .prepare_cached(&sql)?
            .query_row(params![i64_of(silent_since_ms)], |r| r.get(0))?)
    }

    /// Raises one alert for each isolated device silent since before
    /// `now_ms - offline_after_ms` that has none for this silence yet.
    pub fn raise_silent_isolated_alerts(
        &mut self,
        now_ms: u64,
        offline_after_ms: u64,
        new_id: &mut dyn FnMut() -> Option<AlertId>,
    ) -> Result<Vec<RaisedAlert>, StoreError> {
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
            let matched = serde_json::json!({
                "isolation": "isolated",
                "last_seen_ms": last_seen.to_string(),
                "offline_after_ms": offline_after_ms.to_string(),
            });
            let now = i64_of(now_ms);
            tx.prepare_cached(
                "INSERT INTO alerts (id, device_id, seq, observed_at_ms, last_observed_at_ms, received_at_ms, rule_id,
                     rule_title, rule_author, severity, techniques, tactics, count, entities, matched, signed_payload,
                     signature, source)
                 VALUES (?1, ?2, 0, ?3, ?3, ?3, ?4, ?5, 'Ward', ?6, ?7, ?8, 1, ?9, ?10, x'', x'', 'collector')",
            )?
            .execute(params![
                alert_id.to_string(),
                device_id,
                now,
                SILENT_ISOLATED_RULE_ID,
                SILENT_ISOLATED_TITLE,
                sev_num(Severity::High),
                serde_json::json!([TECHNIQUE]).to_string(),
                serde_json::json!([TACTIC]).to_string(),
                serde_json::json!([entity::to_json(&host)]).to_string(),
                matched.to_string(),
            ])?;
            let rowid = tx.last_insert_rowid();
            let (kind, value) = entity::key(&host);
            tx.prepare_cached("INSERT INTO alert_entities (alert_rowid, kind, value) VALUES (?1, ?2, ?3)")?
                .execute(params![rowid, kind, value])?;
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
