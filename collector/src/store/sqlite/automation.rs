//! The SQLite side of [`crate::store::automation`].

use rusqlite::{OptionalExtension, params};
use serde_json::Value;
use ward_protocol::{Entity, Severity};

use super::{SqliteStore, StoreError};
use crate::store::automation::*;

/// The watermark row of the alert stream.
const ALERTS: &str = "alerts";

/// The watermark row of the incident stream (alert rowids linked to incidents).
const INCIDENTS: &str = "incidents";

/// The watermark row of analysts' incident changes (`incident_activity` ids).
const CHANGES: &str = "incident_changes";

/// Analyst changes that can make an incident match a rule it did not match:
/// reopened, severity set by hand, another incident merged in, alerts moved.
const RECHECK_KINDS: [&str; 4] = ["status", "severity", "merged", "alert_moved"];

/// A process or file entity from its stored JSON view ([`crate::entity::to_json`]).
fn target_entity(v: &Value) -> Option<Entity> {
    let hash = |v: &Value| -> Option<[u8; 32]> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(v.as_str()?, &mut out).ok()?;
        Some(out)
    };
    match v["kind"].as_str()? {
        "process" => Some(Entity::Process {
            pid: u32::try_from(v["pid"].as_u64()?).ok()?,
            ppid: v["ppid"].as_u64().and_then(|p| u32::try_from(p).ok()).unwrap_or(0),
            start_time_ms: v["start_time_ms"].as_u64()?,
            exe: v["exe"].as_str()?.to_string(),
            cmdline: v["cmdline"].as_str().unwrap_or_default().to_string(),
            sha256: hash(&v["sha256"]),
        }),
        "file" => Some(Entity::File {
            path: v["path"].as_str()?.to_string(),
            sha256: hash(&v["sha256"]),
        }),
        _ => None,
    }
}

fn strings(text: &str) -> Vec<String> {
    serde_json::from_str(text).unwrap_or_default()
}

impl AutomationStore for SqliteStore {
    fn newest_alert_rowid(&self) -> Result<i64, StoreError> {
        Ok(self
            .conn
            .query_row("SELECT COALESCE(MAX(rowid), 0) FROM alerts", [], |r| r.get(0))?)
    }

    fn automation_alerts(&mut self, limit: u32) -> Result<Vec<AutomationAlert>, StoreError> {
        let mark: Option<i64> = self
            .conn
            .query_row(
                "SELECT last_rowid FROM automation_watermarks WHERE stream = ?1",
                [ALERTS],
                |r| r.get(0),
            )
            .optional()?;
        let Some(mark) = mark else {
            let newest = self.newest_alert_rowid()?;
            self.automation_advance(newest)?;
            return Ok(Vec::new());
        };
        let mut stmt = self.conn.prepare_cached(
            "SELECT a.rowid, a.id, a.device_id, d.hostname, a.source, a.rule_id, a.severity, a.techniques, a.tactics,
                    a.entities
             FROM alerts a LEFT JOIN devices d ON d.id = a.device_id
             WHERE a.rowid > ?1 ORDER BY a.rowid LIMIT ?2",
        )?;
        let rows = stmt
            .query_map(params![mark, limit], |r| {
                let severity: i64 = r.get(6)?;
                let entities: String = r.get(9)?;
                Ok(AutomationAlert {
                    rowid: r.get(0)?,
                    id: super::alert_id::alert_id(r, 1)?,
                    device_id: r.get(2)?,
                    hostname: r.get(3)?,
                    source: r.get(4)?,
                    rule_id: r.get(5)?,
                    severity: usize::try_from(severity)
                        .ok()
                        .and_then(|i| Severity::ALL.get(i).copied())
                        .unwrap_or(Severity::Informational),
                    techniques: strings(&r.get::<_, String>(7)?),
                    tactics: strings(&r.get::<_, String>(8)?),
                    entities: serde_json::from_str::<Vec<Value>>(&entities)
                        .unwrap_or_default()
                        .iter()
                        .filter_map(target_entity)
                        .collect(),
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    fn automation_advance(&self, rowid: i64) -> Result<(), StoreError> {
        self.advance(ALERTS, rowid)
    }

    fn automation_advance_incidents(&self, rowid: i64) -> Result<(), StoreError> {
        self.advance(INCIDENTS, rowid)
    }

    fn newest_incident_link(&self) -> Result<i64, StoreError> {
        Ok(self
            .conn
            .query_row("SELECT COALESCE(MAX(alert_rowid), 0) FROM incident_alerts", [], |r| {
                r.get(0)
            })?)
    }

    fn automation_incidents(&mut self, limit: u32) -> Result<IncidentBatch, StoreError> {
        let mut batch = IncidentBatch::default();
        let mut ids: Vec<String> = Vec::new();
        if let Some(mark) = self.watermark(INCIDENTS, |s| s.newest_incident_link())? {
            let links: Vec<(i64, String)> = self
                .conn
                .prepare_cached(
                    "SELECT ia.alert_rowid, i.id FROM incident_alerts ia JOIN incidents i ON i.seq = ia.incident
                     WHERE ia.alert_rowid > ?1 ORDER BY ia.alert_rowid LIMIT ?2",
                )?
                .query_map(params![mark, limit], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<Result<_, _>>()?;
            batch.links = links.len();
            batch.last = links.last().map(|(rowid, _)| *rowid);
            ids.extend(links.into_iter().map(|(_, id)| id));
        }
        // An analyst's change is evaluated like a new alert joining the incident.
        if let Some(mark) = self.watermark(CHANGES, |s| s.newest_incident_change())? {
            let changes: Vec<(i64, String, String, String)> = self
                .conn
                .prepare_cached(
                    "SELECT a.id, i.id, a.actor, a.kind FROM incident_activity a JOIN incidents i ON i.seq = a.incident
                     WHERE a.id > ?1 ORDER BY a.id LIMIT ?2",
                )?
                .query_map(params![mark, limit], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
                })?
                .collect::<Result<_, _>>()?;
            batch.changes = changes.len();
            batch.last_change = changes.last().map(|c| c.0);
            ids.extend(
                changes
                    .into_iter()
                    .filter(|(_, _, actor, kind)| actor != "correlation" && RECHECK_KINDS.contains(&kind.as_str()))
                    .map(|(_, id, _, _)| id),
            );
        }
        let mut seen = Vec::new();
        for id in ids {
            if seen.contains(&id) {
                continue;
            }
            if let Some(inc) = self.automation_incident(&id)? {
                batch.incidents.push(inc);
            }
            seen.push(id);
        }
        Ok(batch)
    }

    fn newest_incident_change(&self) -> Result<i64, StoreError> {
        Ok(self
            .conn
            .query_row("SELECT COALESCE(MAX(id), 0) FROM incident_activity", [], |r| r.get(0))?)
    }

    fn automation_advance_changes(&self, id: i64) -> Result<(), StoreError> {
        self.advance(CHANGES, id)
    }
}

impl SqliteStore {
    fn advance(&self, stream: &str, rowid: i64) -> Result<(), StoreError> {
        self.conn.execute(
            "INSERT INTO automation_watermarks (stream, last_rowid) VALUES (?1, ?2)
             ON CONFLICT(stream) DO UPDATE SET last_rowid = MAX(last_rowid, excluded.last_rowid)",
            params![stream, rowid],
        )?;
        Ok(())
    }

    /// A stream's watermark; the first read on a database sets it to the stream's
    /// newest entry and returns none (rules act on what comes after they exist).
    fn watermark(
        &self,
        stream: &str,
        newest: impl Fn(&Self) -> Result<i64, StoreError>,
    ) -> Result<Option<i64>, StoreError> {
        let mark: Option<i64> = self
            .conn
            .query_row(
                "SELECT last_rowid FROM automation_watermarks WHERE stream = ?1",
                [stream],
                |r| r.get(0),
            )
            .optional()?;
        if mark.is_none() {
            self.advance(stream, newest(self)?)?;
        }
        Ok(mark)
    }

    fn automation_incident(&self, id: &str) -> Result<Option<AutomationIncident>, StoreError> {
        let head: Option<(String, i64, String, String, bool)> = self
            .conn
            .query_row(
                "SELECT status, severity, tactics, sources, severity_manual FROM incidents WHERE id = ?1",
                [id],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get::<_, i64>(4)? != 0)),
            )
            .optional()?;
        let Some((status, severity, tactics, sources, severity_manual)) = head else {
            return Ok(None);
        };
        let alerts = self
            .conn
            .prepare_cached(
                "SELECT a.device_id, a.source, a.severity, a.tactics, a.entities
                 FROM incident_alerts ia JOIN alerts a ON a.rowid = ia.alert_rowid
                 WHERE ia.incident = (SELECT seq FROM incidents WHERE id = ?1) ORDER BY ia.alert_rowid LIMIT ?2",
            )?
            .query_map(params![id, MAX_INCIDENT_ALERTS], |r| {
                let entities: String = r.get(4)?;
                Ok(EvidenceAlert {
                    device_id: r.get(0)?,
                    source: r.get(1)?,
                    severity: crate::model::incident::severity_from(r.get(2)?),
                    tactics: strings(&r.get::<_, String>(3)?),
                    entities: serde_json::from_str::<Vec<Value>>(&entities)
                        .unwrap_or_default()
                        .iter()
                        .filter_map(target_entity)
                        .collect(),
                })
            })?
            .collect::<Result<_, _>>()?;
        Ok(Some(AutomationIncident {
            id: id.to_string(),
            status,
            severity: crate::model::incident::severity_from(severity),
            tactics: strings(&tactics),
            sources: strings(&sources),
            severity_manual,
            alerts,
        }))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use crate::store::prelude::*;
    use serde_json::json;

    use super::*;
    use crate::entity::to_json;

    const T0: u64 = 1_700_000_000_000;

    fn enrolled(store: &mut SqliteStore) -> ward_protocol::DeviceId {
        use ring::rand::SystemRandom;
        let rng = SystemRandom::new();
        store.create_enroll_token(&[1; 32], 1, T0, T0 + 1000).unwrap();
        let id = ward_protocol::DeviceId::generate(T0, &rng).unwrap();
        let (key, _) = ward_protocol::SigningKey::generate(&rng).unwrap();
        let new = super::super::NewDevice {
            id,
            signing_key: key.public_key(),
            cert_sha256: [1; 32],
            inventory: ward_protocol::Inventory {
                hostname: "h".into(),
                os: String::new(),
                kernel: String::new(),
                addresses: vec![],
                logged_on_users: vec![],
                agent_version: String::new(),
            },
        };
        store.enroll(&[1; 32], &new, T0).unwrap().unwrap();
        id
    }

    #[test]
    fn the_watermark_starts_at_the_newest_alert_and_only_moves_forward() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = SqliteStore::open(&dir.path().join("ward.db")).unwrap();
        assert_eq!(store.automation_alerts(10).unwrap(), vec![]);
        store.automation_advance(5).unwrap();
        store.automation_advance(3).unwrap();
        let mark: i64 = store
            .conn
            .query_row("SELECT last_rowid FROM automation_watermarks", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mark, 5);
    }

    #[test]
    fn the_incident_stream_reads_each_touched_incident_once_with_all_its_targets() {
        use super::super::{AlertSource, SourcedAlert};
        let dir = tempfile::tempdir().unwrap();
        let mut store = SqliteStore::open(&dir.path().join("ward.db")).unwrap();
        let device = enrolled(&mut store).to_string();
        let alert = |id: &str, device: Option<&str>, pid: u32| SourcedAlert {
            id: id.into(),
            source: AlertSource::Collector,
            device_id: device.map(str::to_string),
            observed_at_ms: T0,
            last_observed_at_ms: T0,
            rule: ward_protocol::RuleRef {
                id: "r".into(),
                title: "R".into(),
                author: "t".into(),
                severity: Severity::High,
                techniques: vec![],
                tactics: vec![],
            },
            entities: vec![Entity::Process {
                pid,
                ppid: 1,
                start_time_ms: 5,
                exe: "/bin/x".into(),
                cmdline: String::new(),
                sha256: None,
            }],
            count: 1,
            matched: serde_json::Map::new(),
        };
        let incident = |store: &SqliteStore, id: &str, seq: i64, status: &str| {
            store
                .conn
                .execute(
                    "INSERT INTO incidents (id, seq, title, severity, alert_severity, status, sources, tactics,
                         first_title, several_titles, first_activity_ms, last_activity_ms, created_at_ms,
                         updated_at_ms, alert_count, device_count, user_count, mailbox_count)
                     VALUES (?1, ?2, 't', 3, 3, ?3, '[\"agent\"]', '[\"TA0040\"]', 't', 0, 0, 0, 0, 0, 0, 0, 0, 0)",
                    params![id, seq, status],
                )
                .unwrap();
        };
        let link = |store: &mut SqliteStore, alert: SourcedAlert, incident: &str| {
            store.insert_sourced_alerts(std::slice::from_ref(&alert), T0).unwrap();
            store
                .conn
                .execute(
                    "INSERT INTO incident_alerts (alert_rowid, incident, reason, linked_by, linked_at_ms)
                     SELECT rowid, (SELECT seq FROM incidents WHERE id = ?2), 'test', 'correlator', 0 FROM alerts
                     WHERE id = ?1",
                    params![super::super::alert_id::AlertKey::of(&alert.id), incident],
                )
                .unwrap();
        };
        incident(&store, "INC-A", 1, "active");
        incident(&store, "INC-B", 2, "resolved");
        link(&mut store, alert("a1", Some(&device), 1), "INC-A");
        // The first read starts the stream at the newest link.
        assert_eq!(store.automation_incidents(10).unwrap(), IncidentBatch::default());
        link(&mut store, alert("a2", Some(&device), 2), "INC-A");
        link(&mut store, alert("a3", Some(&device), 2), "INC-A");
        link(&mut store, alert("a4", None, 3), "INC-B");
        let batch = store.automation_incidents(10).unwrap();
        assert_eq!(batch.links, 3);
        assert_eq!(batch.last, Some(store.newest_incident_link().unwrap()));
        let ids: Vec<&str> = batch.incidents.iter().map(|i| i.id.as_str()).collect();
        assert_eq!(
            ids,
            vec!["INC-A", "INC-B"],
            "each touched incident once, resolved too (rules filter)"
        );
        let a = &batch.incidents[0];
        assert_eq!((a.status.as_str(), a.severity), ("active", Severity::High));
        assert_eq!(
            (a.tactics.clone(), a.sources.clone()),
            (vec!["TA0040".to_string()], vec!["agent".to_string()])
        );
        let pids: Vec<u32> = a
            .alerts
            .iter()
            .map(|al| {
                assert_eq!(al.device_id.as_ref(), Some(&device));
                match al.entities.as_slice() {
                    [Entity::Process { pid, .. }] => *pid,
                    other => panic!("{other:?}"),
                }
            })
            .collect();
        assert_eq!(pids, vec![1, 2, 2], "all its alerts, the ones before the watermark too");
        let b: Vec<Option<&String>> = batch.incidents[1].alerts.iter().map(|a| a.device_id.as_ref()).collect();
        assert_eq!(
            b,
            vec![None],
            "alerts without a device are read too (evidence, not targets)"
        );
        // A batch stops at the limit; advancing moves past what was read.
        let first = store.automation_incidents(2).unwrap();
        assert_eq!((first.links, first.incidents.len()), (2, 1));
        store.automation_advance_incidents(first.last.unwrap()).unwrap();
        let rest = store.automation_incidents(10).unwrap();
        assert_eq!((rest.links, rest.incidents[0].id.as_str()), (1, "INC-B"));
        store.automation_advance_incidents(rest.last.unwrap()).unwrap();
        assert_eq!(store.automation_incidents(10).unwrap().links, 0);
    }

    #[test]
    fn targets_read_back_from_the_stored_view() {
        let p = Entity::Process {
            pid: 9,
            ppid: 1,
            start_time_ms: 5,
            exe: "/bin/x".into(),
            cmdline: "x -y".into(),
            sha256: Some([3; 32]),
        };
        let f = Entity::File {
            path: "/tmp/f".into(),
            sha256: None,
        };
        assert_eq!(target_entity(&to_json(&p)), Some(p));
        assert_eq!(target_entity(&to_json(&f)), Some(f));
        assert_eq!(target_entity(&json!({"kind": "device", "hostname": "h"})), None);
        assert_eq!(target_entity(&json!({"kind": "process", "pid": -1})), None);
    }
}
