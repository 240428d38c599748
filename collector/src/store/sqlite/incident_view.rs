//! The SQLite side of [`crate::store::incident_view`].

use std::collections::{BTreeSet, HashMap};

use rusqlite::{params, params_from_iter};
use serde_json::Value;

use super::alert_id::alert_id;
use super::{AlertView, SqliteStore, StoreError, sev_from};
use crate::store::incident_view::*;
use crate::store::*;

/// Alerts a process lists with itself in the tree.
const PROCESS_SAMPLE: u32 = 3;

/// A few alerts of one process of an incident. CROSS JOIN keeps SQLite on the
/// entity index (a process names few alerts) instead of walking the incident's
/// alerts once per process; `kind IN (...)` is written as the partial index's
/// condition (migration 26), so SQLite may use it.
pub(crate) const PROCESS_SAMPLE_SQL: &str = "SELECT a.id, a.rule_title, a.severity, a.observed_at_ms FROM alert_entities ae
     CROSS JOIN incident_alerts ia ON ia.alert_rowid = ae.alert_rowid CROSS JOIN alerts a ON a.rowid = ae.alert_rowid
     WHERE ae.kind IN ('lineage', 'process') AND ae.value = ?1 AND ia.incident = (SELECT seq FROM incidents WHERE id = ?2) AND a.device_id IS ?3
     GROUP BY a.rowid ORDER BY a.observed_at_ms, a.rowid LIMIT ?4";

/// What a page query is scoped to.
enum Scope<'a> {
    Incident(&'a str),
    Device(&'a str),
}

impl Scope<'_> {
    fn sql_and_key(&self) -> (&'static str, &str) {
        match self {
            Scope::Incident(id) => (
                "FROM incident_alerts ia JOIN alerts ON alerts.rowid = ia.alert_rowid WHERE ia.incident = (SELECT seq FROM incidents WHERE id = ?)",
                id,
            ),
            Scope::Device(id) => ("FROM alerts WHERE alerts.device_id = ?", id),
        }
    }
}

impl IncidentViews for SqliteStore {
    fn incident_alert_page(
        &self,
        id: &str,
        q: &AlertPageQuery,
        known_total: Option<i64>,
    ) -> Result<AlertPage<IncidentAlert>, StoreError> {
        self.alert_page_rows(
            Scope::Incident(id),
            ", ia.reason, ia.linked_at_ms, ia.linked_by, COALESCE(ia.at_ms, alerts.observed_at_ms), ia.clock_note",
            q,
            known_total,
            |r| {
                Ok(IncidentAlert {
                    alert: Self::alert_row(r)?,
                    reason: r.get(Self::ALERT_COLUMN_COUNT)?,
                    linked_at_ms: r.get(Self::ALERT_COLUMN_COUNT + 1)?,
                    linked_by: r.get(Self::ALERT_COLUMN_COUNT + 2)?,
                    correlated_at_ms: r.get(Self::ALERT_COLUMN_COUNT + 3)?,
                    clock_note: r.get(Self::ALERT_COLUMN_COUNT + 4)?,
                })
            },
            |a| (a.alert.observed_at_ms, a.alert.rowid),
        )
    }

    fn device_alert_page(&self, device_id: &str, q: &AlertPageQuery) -> Result<AlertPage<AlertView>, StoreError> {
        self.alert_page_rows(Scope::Device(device_id), "", q, None, Self::alert_row, |a| {
            (a.observed_at_ms, a.rowid)
        })
    }

    fn incident_alert_totals(&self, id: &str) -> Result<AlertTotals, StoreError> {
        self.totals(Scope::Incident(id))
    }

    fn device_alert_totals(&self, device_id: &str) -> Result<AlertTotals, StoreError> {
        self.totals(Scope::Device(device_id))
    }

    fn incident_evidence(&self, id: &str) -> Result<(AlertTotals, Vec<EntityAggregate>), StoreError> {
        let mut totals = AlertTotals::default();
        struct Meta {
            device_id: Option<String>,
            observed: i64,
            last: i64,
            severity: i64,
            source: u8,
        }
        let mut sources: Vec<String> = Vec::new();
        let mut hostnames: HashMap<String, String> = HashMap::new();
        {
            let mut stmt = self.conn.prepare_cached("SELECT id, lower(hostname) FROM devices")?;
            let mut rows = stmt.query([])?;
            while let Some(r) = rows.next()? {
                hostnames.insert(r.get(0)?, r.get(1)?);
            }
        }
        let mut alerts: HashMap<i64, Meta> = HashMap::new();
        {
            let mut stmt = self.conn.prepare_cached(
                "SELECT a.rowid, a.device_id, a.observed_at_ms, a.last_observed_at_ms, a.severity, a.source, a.count
                 FROM incident_alerts ia JOIN alerts a ON a.rowid = ia.alert_rowid
                 WHERE ia.incident = (SELECT seq FROM incidents WHERE id = ?1)",
            )?;
            let mut rows = stmt.query(params![id])?;
            while let Some(r) = rows.next()? {
                let (observed, last, severity, count): (i64, i64, i64, i64) =
                    (r.get(2)?, r.get(3)?, r.get(4)?, r.get(6)?);
                totals.alerts += 1;
                totals.events += count;
                totals.folded_alerts += i64::from(count > 1);
                *totals.by_severity.entry(sev_from(severity)).or_default() += 1;
                totals.first_observed_ms = Some(totals.first_observed_ms.map_or(observed, |f| f.min(observed)));
                totals.last_observed_ms = Some(totals.last_observed_ms.map_or(last, |l| l.max(last)));
                let source: String = r.get(5)?;
                let idx = match sources.iter().position(|s| *s == source) {
                    Some(i) => i,
                    None => {
                        sources.push(source);
                        sources.len() - 1
                    }
                };
                alerts.insert(
                    r.get(0)?,
                    Meta {
                        device_id: r.get(1)?,
                        observed,
                        last,
                        severity,
                        source: u8::try_from(idx).unwrap_or(u8::MAX),
                    },
                );
            }
        }
        struct Acc {
            agg: EntityAggregate,
            sources: u64,
            last_rowid: i64,
            devices: BTreeSet<String>,
        }
        let mut acc: HashMap<(String, String), Acc> = HashMap::new();
        let mut add = |kind: &str, key: &str, rowid: i64, m: &Meta, recipient: bool| {
            let a = acc.entry((kind.to_string(), key.to_string())).or_insert_with(|| Acc {
                agg: EntityAggregate {
                    kind: kind.to_string(),
                    key: key.to_string(),
                    alert_count: 0,
                    first_ms: m.observed,
                    last_ms: m.last,
                    max_severity: m.severity,
                    sample_rowid: rowid,
                    sources: Vec::new(),
                    recipient: false,
                    device_ids: Vec::new(),
                },
                sources: 0,
                last_rowid: i64::MIN,
                devices: BTreeSet::new(),
            });
            // An alert naming one entity twice counts once.
            if a.last_rowid == rowid {
                return;
            }
            a.last_rowid = rowid;
            let g = &mut a.agg;
            g.alert_count += 1;
            g.first_ms = g.first_ms.min(m.observed);
            g.last_ms = g.last_ms.max(m.last);
            g.max_severity = g.max_severity.max(m.severity);
            g.sample_rowid = g.sample_rowid.min(rowid);
            g.recipient |= recipient;
            a.sources |= 1u64 << u32::from(m.source.min(63));
            if let Some(d) = &m.device_id {
                a.devices.insert(d.clone());
            }
        };
        // One alert's entity keys at a time (rows come in alert order), so a mailbox
        // can be checked against the users of its own alert.
        let mut flush = |rowid: i64, keys: &mut Vec<(String, String)>| {
            let Some(m) = alerts.get(&rowid) else {
                keys.clear();
                return;
            };
            let host = m.device_id.as_ref().and_then(|d| hostnames.get(d));
            if let Some(h) = host
                && !keys.iter().any(|(k, v)| k == "device" && v == h)
            {
                keys.push(("device".into(), h.clone()));
            }
            let mail = sources.get(usize::from(m.source)).is_some_and(|s| s == "mailbox");
            for (kind, value) in keys.iter() {
                let recipient = mail && kind == "mailbox" && keys.iter().any(|(k, v)| k == "user" && v == value);
                add(kind, value, rowid, m, recipient);
            }
            keys.clear();
        };
        let mut stmt = self.conn.prepare_cached(
            "SELECT ae.alert_rowid, ae.kind, ae.value FROM incident_alerts ia
             JOIN alert_entities ae ON ae.alert_rowid = ia.alert_rowid
             WHERE ia.incident = (SELECT seq FROM incidents WHERE id = ?1)
             ORDER BY ae.alert_rowid",
        )?;
        let mut rows = stmt.query(params![id])?;
        let mut current: Option<i64> = None;
        let mut keys: Vec<(String, String)> = Vec::new();
        let mut with_entities: std::collections::HashSet<i64> = std::collections::HashSet::new();
        while let Some(r) = rows.next()? {
            let rowid: i64 = r.get(0)?;
            if current != Some(rowid) {
                if let Some(c) = current {
                    flush(c, &mut keys);
                }
                current = Some(rowid);
                with_entities.insert(rowid);
            }
            keys.push((r.get(1)?, r.get(2)?));
        }
        if let Some(c) = current {
            flush(c, &mut keys);
        }
        drop(rows);
        // Alerts without entity rows still name their device.
        let bare: Vec<i64> = alerts.keys().filter(|r| !with_entities.contains(r)).copied().collect();
        for rowid in bare {
            flush(rowid, &mut keys);
        }
        let mut out: Vec<EntityAggregate> = acc
            .into_values()
            .map(|mut a| {
                a.agg.sources = (0..sources.len())
                    .filter(|i| a.sources & (1u64 << (*i).min(63)) != 0)
                    .map(|i| sources[i].clone())
                    .collect();
                a.agg.device_ids = a.devices.into_iter().collect();
                a.agg
            })
            .collect();
        out.sort_by(|a, b| (&a.kind, &a.key).cmp(&(&b.kind, &b.key)));
        Ok((totals, out))
    }

    fn alert_entity_lists(&self, rowids: &[i64]) -> Result<HashMap<i64, Value>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT entities FROM alerts WHERE rowid = ?1")?;
        let mut out = HashMap::new();
        for &rowid in rowids {
            if out.contains_key(&rowid) {
                continue;
            }
            let text: Option<String> = stmt.query_map(params![rowid], |r| r.get(0))?.next().transpose()?;
            if let Some(t) = text {
                out.insert(rowid, serde_json::from_str(&t).unwrap_or(Value::Null));
            }
        }
        Ok(out)
    }

    fn incident_alert_devices(&self, id: &str, limit: u32) -> Result<(Vec<String>, i64), StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT a.device_id, MIN(a.observed_at_ms) first FROM incident_alerts ia JOIN alerts a ON a.rowid = ia.alert_rowid
             WHERE ia.incident = (SELECT seq FROM incidents WHERE id = ?1) AND a.device_id IS NOT NULL GROUP BY a.device_id ORDER BY first, a.device_id",
        )?;
        let all = stmt
            .query_map(params![id], |r| r.get::<_, String>(0))?
            .collect::<Result<Vec<_>, _>>()?;
        let total = i64::try_from(all.len()).unwrap_or(i64::MAX);
        Ok((all.into_iter().take(limit as usize).collect(), total))
    }

    fn incident_processes(&self, id: &str, limit: u32) -> Result<(Vec<ProcessAlerts>, i64), StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT a.device_id, ae.value, COUNT(DISTINCT ae.alert_rowid),
                    COALESCE(MIN(CASE WHEN ae.kind = 'lineage' THEN ae.alert_rowid END), MIN(ae.alert_rowid)) sample
             FROM incident_alerts ia JOIN alert_entities ae ON ae.alert_rowid = ia.alert_rowid
             JOIN alerts a ON a.rowid = ia.alert_rowid
             WHERE ia.incident = (SELECT seq FROM incidents WHERE id = ?1) AND ae.kind IN ('lineage', 'process')
             GROUP BY a.device_id, ae.value ORDER BY MIN(a.observed_at_ms), sample",
        )?;
        let all = stmt
            .query_map(params![id], |r| {
                Ok((
                    r.get::<_, Option<String>>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, i64>(3)?,
                ))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        let total = i64::try_from(all.len()).unwrap_or(i64::MAX);
        let kept: Vec<_> = all.into_iter().take(limit as usize).collect();
        let lists = self.alert_entity_lists(&kept.iter().map(|k| k.3).collect::<Vec<_>>())?;
        let mut sample = self.conn.prepare_cached(PROCESS_SAMPLE_SQL)?;
        let mut out = Vec::with_capacity(kept.len());
        for (device_id, key, alert_count, rowid) in kept {
            let alerts = sample
                .query_map(params![key, id, device_id, PROCESS_SAMPLE], |r| {
                    Ok((alert_id(r, 0)?, r.get(1)?, sev_from(r.get(2)?), r.get(3)?))
                })?
                .collect::<Result<Vec<_>, _>>()?;
            out.push(ProcessAlerts {
                entities: lists.get(&rowid).cloned().unwrap_or(Value::Null),
                device_id,
                key,
                alert_count,
                sample: alerts,
            });
        }
        Ok((out, total))
    }
}

impl SqliteStore {
    fn alert_page_rows<T>(
        &self,
        scope: Scope<'_>,
        extra_columns: &str,
        q: &AlertPageQuery,
        known_total: Option<i64>,
        row: impl Fn(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
        position: impl Fn(&T) -> (i64, i64),
    ) -> Result<AlertPage<T>, StoreError> {
        let (from, id) = scope.sql_and_key();
        let mut range = String::new();
        let mut p: Vec<rusqlite::types::Value> = vec![id.to_string().into()];
        if let Some(s) = q.since_ms {
            range.push_str(" AND alerts.observed_at_ms >= ?");
            p.push(s.into());
        }
        if let Some(u) = q.until_ms {
            range.push_str(" AND alerts.observed_at_ms < ?");
            p.push(u.into());
        }
        let total: i64 = match known_total {
            Some(n) if q.since_ms.is_none() && q.until_ms.is_none() => n,
            _ => self
                .conn
                .prepare_cached(&format!("SELECT COUNT(*) {from}{range}"))?
                .query_row(params_from_iter(p.iter()), |r| r.get(0))?,
        };
        let (cmp, dir) = match q.order {
            AlertOrder::Newest => ("<", "DESC"),
            AlertOrder::Oldest => (">", "ASC"),
        };
        if let Some((t, rowid)) = q.after {
            range.push_str(&format!(" AND (alerts.observed_at_ms, alerts.rowid) {cmp} (?, ?)"));
            p.push(t.into());
            p.push(rowid.into());
        }
        p.push(i64::from(q.limit).into());
        let sql = format!(
            "SELECT {}{extra_columns} {from}{range} ORDER BY alerts.observed_at_ms {dir}, alerts.rowid {dir} LIMIT ?",
            Self::ALERT_COLUMNS.replace("rowid,", "alerts.rowid,")
        );
        let items = self
            .conn
            .prepare_cached(&sql)?
            .query_map(params_from_iter(p.iter()), row)?
            .collect::<Result<Vec<_>, _>>()?;
        let next = (items.len() == q.limit as usize)
            .then(|| items.last().map(&position))
            .flatten();
        Ok(AlertPage { items, total, next })
    }

    fn totals(&self, scope: Scope<'_>) -> Result<AlertTotals, StoreError> {
        let (from, id) = scope.sql_and_key();
        let sql = format!(
            "SELECT alerts.severity, COUNT(*), SUM(alerts.count), SUM(alerts.count > 1), MIN(alerts.observed_at_ms),
                    MAX(alerts.last_observed_at_ms) {from} GROUP BY alerts.severity"
        );
        let mut t = AlertTotals::default();
        let mut stmt = self.conn.prepare_cached(&sql)?;
        let mut rows = stmt.query(params![id])?;
        while let Some(r) = rows.next()? {
            let (n, events, folded): (i64, i64, i64) = (r.get(1)?, r.get(2)?, r.get(3)?);
            t.alerts += n;
            t.events += events;
            t.folded_alerts += folded;
            *t.by_severity.entry(sev_from(r.get(0)?)).or_default() += n;
            let (first, last): (i64, i64) = (r.get(4)?, r.get(5)?);
            t.first_observed_ms = Some(t.first_observed_ms.map_or(first, |f| f.min(first)));
            t.last_observed_ms = Some(t.last_observed_ms.map_or(last, |l| l.max(last)));
        }
        Ok(t)
    }
}
