//! The SQLite side of [`crate::store::incidents`].

use std::collections::{BTreeSet, HashMap};

use rusqlite::{OptionalExtension, Transaction, params, params_from_iter};
use serde::Serialize;
use serde_json::Value;

use super::alert_id::{AlertKey, alert_id};
use super::audit::append_audit;
use super::{SqliteStore, StoreError, i64_of, sev_from, sev_num};
use crate::entity;
use crate::model::correlation::{Changes, Incident, IncidentRow, KeyKind, KeyRow, KnownDevice};
use crate::model::incident::{
    Classification, Status, merged_status, severity_from, tactic_name, tactic_rank, take_missing,
};
use crate::store::incidents::*;

pub(super) const SUMMARY_COLUMNS: &str =
    "i.id, i.title, i.severity, i.status, i.redirected_to, i.assignee, i.classification,
    i.determination, i.tags, i.sources, i.tactics, i.first_activity_ms, i.last_activity_ms, i.created_at_ms,
    i.updated_at_ms, i.alert_count, i.device_count, i.user_count, i.mailbox_count";

/// The engine's load: open incidents active since a time, oldest first. Through
/// the index by last activity (`+seq`: sorting them beats scanning every incident
/// in `seq` order).
pub(crate) const OPEN_INCIDENTS: &str =
    "SELECT id FROM incidents WHERE status IN ('active', 'in_progress') AND last_activity_ms >= ?1 ORDER BY +seq";

fn json_strings(s: &str) -> Vec<String> {
    serde_json::from_str(s).unwrap_or_default()
}

fn tactic_views(ids: &[String]) -> Vec<TacticView> {
    let mut v: Vec<&String> = ids.iter().collect();
    v.sort_by_key(|t| tactic_rank(t).unwrap_or(usize::MAX));
    v.into_iter()
        .map(|t| TacticView {
            id: t.clone(),
            name: tactic_name(t).unwrap_or("Unknown").to_string(),
        })
        .collect()
}

pub(super) fn summary_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<IncidentSummary> {
    let severity: i64 = r.get(2)?;
    Ok(IncidentSummary {
        id: r.get(0)?,
        title: r.get(1)?,
        severity: sev_from(severity),
        severity_num: severity,
        status: r.get(3)?,
        redirected_to: r.get(4)?,
        assignee: r.get(5)?,
        classification: r.get(6)?,
        determination: r.get(7)?,
        tags: json_strings(&r.get::<_, String>(8)?),
        sources: json_strings(&r.get::<_, String>(9)?),
        tactics: tactic_views(&json_strings(&r.get::<_, String>(10)?)),
        first_activity_ms: r.get(11)?,
        last_activity_ms: r.get(12)?,
        created_at_ms: r.get(13)?,
        updated_at_ms: r.get(14)?,
        alert_count: r.get(15)?,
        device_count: r.get(16)?,
        user_count: r.get(17)?,
        mailbox_count: r.get(18)?,
    })
}

fn to_json_text<T: Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "[]".into())
}

/// An incident's number (`incidents.seq`): the incident tables name it by that.
fn seq_of(conn: &rusqlite::Connection, id: &str) -> Result<i64, StoreError> {
    conn.prepare_cached("SELECT seq FROM incidents WHERE id = ?1")?
        .query_row(params![id], |r| r.get(0))
        .optional()?
        .ok_or_else(|| StoreError::Corrupt(format!("no incident {id}")))
}

fn activity(
    tx: &Transaction<'_>,
    id: &str,
    now_ms: u64,
    actor: &str,
    kind: &str,
    detail: &str,
) -> Result<(), StoreError> {
    activity_of(tx, seq_of(tx, id)?, now_ms, actor, kind, detail)
}

/// An activity entry of the incident numbered `seq`.
fn activity_of(
    tx: &Transaction<'_>,
    seq: i64,
    now_ms: u64,
    actor: &str,
    kind: &str,
    detail: &str,
) -> Result<(), StoreError> {
    tx.prepare_cached(
        "INSERT INTO incident_activity (incident, at_ms, actor, kind, detail) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![seq, i64_of(now_ms), actor, kind, detail])?;
    Ok(())
}

fn save_counters(tx: &Transaction<'_>, c: CorrelationCounters) -> Result<(), StoreError> {
    let mut stmt = tx.prepare_cached(
        "INSERT INTO correlation_state (name, value) VALUES (?1, ?2)
         ON CONFLICT(name) DO UPDATE SET value = MAX(value, excluded.value)",
    )?;
    stmt.execute(params!["watermark", c.watermark])?;
    stmt.execute(params!["next_seq", i64_of(c.next_seq)])?;
    stmt.execute(params!["high_ms", i64_of(c.high_ms)])?;
    Ok(())
}

/// Saves an incident's summary; `opened_by` (the alert that opened it) when no row
/// of it can exist yet (opened in this step and not saved before in it), which
/// spares looking for its old severity.
fn upsert_incident(
    tx: &Transaction<'_>,
    inc: &IncidentRow,
    opened_by: Option<&str>,
    now_ms: u64,
) -> Result<(), StoreError> {
    let before: Option<(i64, bool)> = if opened_by.is_some() {
        None
    } else {
        tx.prepare_cached("SELECT severity, severity_manual FROM incidents WHERE id = ?1")?
            .query_row(params![inc.id], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?
    };
    if let Some((old, false)) = before
        && sev_num(inc.severity) > old
    {
        activity_of(
            tx,
            i64_of(inc.seq),
            now_ms,
            "correlation",
            "severity_raised",
            &format!(
                "severity raised from {} to {}: {}",
                sev_from(old),
                inc.severity.as_str(),
                severity_reason(inc)
            ),
        )?;
    }
    tx.prepare_cached(
        "INSERT INTO incidents (id, seq, title, severity, alert_severity, status, sources, tactics, first_title,
             several_titles, first_activity_ms, last_activity_ms, created_at_ms, updated_at_ms, alert_count,
             device_count, user_count, mailbox_count, opened_by)
         VALUES (?1, ?2, ?3, ?4, ?5, 'active', ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?12, ?13, ?14, ?15, ?16, ?17)
         ON CONFLICT(id) DO UPDATE SET
             title = CASE WHEN title_manual THEN title ELSE excluded.title END,
             severity = CASE WHEN severity_manual THEN severity ELSE excluded.severity END,
             alert_severity = excluded.alert_severity, sources = excluded.sources, tactics = excluded.tactics,
             first_title = excluded.first_title, several_titles = excluded.several_titles,
             first_activity_ms = excluded.first_activity_ms, last_activity_ms = excluded.last_activity_ms,
             updated_at_ms = excluded.updated_at_ms, alert_count = excluded.alert_count,
             device_count = excluded.device_count, user_count = excluded.user_count,
             mailbox_count = excluded.mailbox_count",
    )?
    .execute(params![
        inc.id,
        i64_of(inc.seq),
        inc.title,
        sev_num(inc.severity),
        sev_num(inc.alert_severity),
        to_json_text(&inc.sources.iter().map(|s| &**s).collect::<Vec<&str>>()),
        to_json_text(&inc.tactics),
        inc.first_title,
        inc.several_titles,
        i64_of(inc.first_ms),
        i64_of(inc.last_ms),
        i64_of(now_ms),
        i64_of(inc.alert_count),
        inc.devices as i64,
        inc.users as i64,
        inc.mailboxes as i64,
        opened_by,
    ])?;
    Ok(())
}

/// Why an incident has the severity it has (see `model::incident_severity`).
fn severity_reason(inc: &IncidentRow) -> String {
    if inc.severity <= inc.alert_severity {
        return format!("an alert of severity {} joined", inc.alert_severity.as_str());
    }
    let mut breadth = Vec::new();
    if inc.tactics.len() >= 3 {
        breadth.push(format!("it spans {} ATT&CK tactics", inc.tactics.len()));
    }
    if inc.sources.len() >= 2 {
        let sources: Vec<&str> = inc.sources.iter().map(|s| &**s).collect();
        breadth.push(format!("its alerts come from {}", sources.join(", ")));
    }
    format!(
        "highest alert {}, raised because {}",
        inc.alert_severity.as_str(),
        breadth.join(" and ")
    )
}

/// `text` with LIKE's wildcards escaped (escape character `\`).
fn like_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// `incident_entities.flags` bits (migration 19).
const KEY_WEAKLY_HELD: i64 = 1;

const KEY_ON_DEVICE: i64 = 2;

/// Saves the keys a row carries.
fn upsert_keys(tx: &Transaction<'_>, inc: &IncidentRow) -> Result<(), StoreError> {
    let mut stmt = tx.prepare_cached(
        "INSERT INTO incident_entities (incident, key, label, via, first_ms, last_ms, last_alert, runs, flags)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
         ON CONFLICT(incident, key) DO UPDATE SET via = excluded.via, first_ms = excluded.first_ms,
             last_ms = excluded.last_ms, last_alert = excluded.last_alert, runs = excluded.runs,
             flags = excluded.flags",
    )?;
    for k in &inc.keys {
        let runs = (!k.runs.is_empty()).then(|| to_json_text(&k.runs));
        // The label only where it is not the value (the key holds that).
        let label = k.label.as_deref().filter(|l| *l != k.value());
        stmt.execute(params![
            i64_of(inc.seq),
            &*k.key,
            label,
            k.via.as_deref(),
            i64_of(k.first_ms),
            i64_of(k.last_ms),
            &*k.last_alert,
            runs,
            (i64::from(k.weakly_held) * KEY_WEAKLY_HELD) | (i64::from(k.on_device) * KEY_ON_DEVICE)
        ])?;
    }
    Ok(())
}

/// Moves everything of `from` into `into` and marks `from` redirected.
fn merge_rows(
    tx: &Transaction<'_>,
    from: &str,
    into: &str,
    reason: &str,
    actor: &str,
    now_ms: u64,
) -> Result<(), StoreError> {
    let (from_seq, into_seq) = (seq_of(tx, from)?, seq_of(tx, into)?);
    for sql in [
        "UPDATE incident_alerts SET incident = ?2 WHERE incident = ?1",
        "UPDATE incident_activity SET incident = ?2 WHERE incident = ?1",
    ] {
        tx.prepare_cached(sql)?.execute(params![from_seq, into_seq])?;
    }
    for sql in [
        "UPDATE incident_comments SET incident_id = ?2 WHERE incident_id = ?1",
        "UPDATE incidents SET redirected_to = ?2 WHERE redirected_to = ?1",
    ] {
        tx.prepare_cached(sql)?.execute(params![from, into])?;
    }
    tx.prepare_cached("DELETE FROM incident_entities WHERE incident = ?1")?
        .execute(params![from_seq])?;
    let tags_of = |id: &str| -> Result<Vec<String>, StoreError> {
        let t: String = tx
            .prepare_cached("SELECT tags FROM incidents WHERE id = ?1")?
            .query_row(params![id], |r| r.get(0))?;
        Ok(json_strings(&t))
    };
    inherit_triage(tx, from, into, actor, now_ms)?;
    let mut tags: BTreeSet<String> = tags_of(into)?.into_iter().collect();
    tags.extend(tags_of(from)?);
    let tags: Vec<String> = tags.into_iter().collect();
    tx.prepare_cached("UPDATE incidents SET tags = ?2, updated_at_ms = ?3 WHERE id = ?1")?
        .execute(params![into, to_json_text(&tags), i64_of(now_ms)])?;
    tx.prepare_cached(
        "UPDATE incidents SET status = 'redirected', redirected_to = ?2, updated_at_ms = ?3 WHERE id = ?1",
    )?
    .execute(params![from, into, i64_of(now_ms)])?;
    activity(
        tx,
        into,
        now_ms,
        actor,
        "merged",
        &format!("incident {from} merged into this one: {reason}"),
    )?;
    activity(
        tx,
        from,
        now_ms,
        actor,
        "redirected",
        &format!("merged into incident {into}: {reason}"),
    )?;
    Ok(())
}

/// The survivor of a merge takes from the other what it lacks (`model::incident::take_missing`).
fn inherit_triage(tx: &Transaction<'_>, from: &str, into: &str, actor: &str, now_ms: u64) -> Result<(), StoreError> {
    type Triage = (String, Option<String>, Option<String>, Option<String>);
    let triage_of = |id: &str| -> Result<Triage, StoreError> {
        Ok(tx
            .prepare_cached("SELECT status, assignee, classification, determination FROM incidents WHERE id = ?1")?
            .query_row(params![id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?)
    };
    let (status, mut assignee, mut classification, mut determination) = triage_of(into)?;
    let (other_status, other_assignee, other_classification, other_determination) = triage_of(from)?;
    let mut taken = Vec::new();
    for (mine, theirs, what) in [
        (&mut assignee, &other_assignee, "assignee"),
        (&mut classification, &other_classification, "classification"),
        (&mut determination, &other_determination, "determination"),
    ] {
        if take_missing(mine, theirs.as_ref()) {
            taken.push(format!("{what} {}", theirs.as_deref().unwrap_or_default()));
        }
    }
    let status = match (Status::parse(&status), Status::parse(&other_status)) {
        (Some(mine), Some(theirs)) if merged_status(mine, theirs) != mine => {
            taken.push("status in_progress".into());
            merged_status(mine, theirs).as_str().to_string()
        }
        _ => status,
    };
    if taken.is_empty() {
        return Ok(());
    }
    tx.prepare_cached(
        "UPDATE incidents SET status = ?2, assignee = ?3, classification = ?4, determination = ?5 WHERE id = ?1",
    )?
    .execute(params![into, status, assignee, classification, determination])?;
    activity(
        tx,
        into,
        now_ms,
        actor,
        "triage_inherited",
        &format!("took {} from incident {from}", taken.join(", ")),
    )
}

fn write_changes(tx: &Transaction<'_>, changes: &Changes, now_ms: u64) -> Result<(), StoreError> {
    // Incidents opened by this step's alerts have no row until their first save
    // here, which records the alert (the activity log's "created" entry).
    let mut opened: HashMap<&str, &str> = changes
        .links
        .iter()
        .filter(|l| l.created)
        .map(|l| (&*l.incident_id, &*l.alert_id))
        .collect();
    // Every incident a link names is saved here; the tables below name it by number.
    let mut seqs: HashMap<&str, i64> = HashMap::with_capacity(changes.incidents.len() + changes.merged_away.len());
    for inc in changes.merged_away.iter().chain(&changes.incidents) {
        upsert_incident(tx, inc, opened.remove(&*inc.id), now_ms)?;
        seqs.insert(&inc.id, i64_of(inc.seq));
    }
    let seq = |id: &str| -> Result<i64, StoreError> {
        match seqs.get(id) {
            Some(&n) => Ok(n),
            None => seq_of(tx, id),
        }
    };
    let mut link = tx.prepare_cached(
        "INSERT INTO incident_alerts (alert_rowid, incident, reason, linked_by, linked_at_ms, at_ms, clock_note)
         VALUES (?1, ?2, ?3, 'correlation', ?4, ?5, ?6) ON CONFLICT(alert_rowid) DO NOTHING",
    )?;
    for l in &changes.links {
        let incident = seq(&l.incident_id)?;
        link.execute(params![
            l.alert_rowid,
            incident,
            l.reason,
            i64_of(now_ms),
            i64_of(l.at_ms),
            l.clock_note.as_deref()
        ])?;
        if let Some(old) = &l.continues {
            tx.prepare_cached("UPDATE incidents SET continues_from = ?2 WHERE id = ?1")?
                .execute(params![&*l.incident_id, &**old])?;
            activity_of(
                tx,
                incident,
                now_ms,
                "correlation",
                "continues",
                &format!("continues incident {old}, which reached its maximum span"),
            )?;
            activity_of(
                tx,
                seq(old)?,
                now_ms,
                "correlation",
                "continued",
                &format!("continued by incident {} (alert {})", l.incident_id, l.alert_id),
            )?;
        }
    }
    for m in &changes.merges {
        merge_rows(tx, &m.from, &m.into, &m.reason, "correlation", now_ms)?;
    }
    for inc in &changes.incidents {
        upsert_keys(tx, inc)?;
    }
    let mut prev = tx.prepare_cached(
        "INSERT INTO correlation_keys (key, devices) VALUES (?1, ?2)
         ON CONFLICT(key) DO UPDATE SET devices = excluded.devices",
    )?;
    for (key, devices) in &changes.prevalence {
        prev.execute(params![key, to_json_text(devices)])?;
    }
    Ok(())
}

impl IncidentStore for SqliteStore {
    // ---- correlator state ----

    fn correlation_counters(&self) -> Result<CorrelationCounters, StoreError> {
        let mut c = CorrelationCounters {
            next_seq: 1,
            ..Default::default()
        };
        let mut stmt = self.conn.prepare_cached("SELECT name, value FROM correlation_state")?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
        for row in rows {
            let (name, value) = row?;
            match name.as_str() {
                "watermark" => c.watermark = value,
                "next_seq" => c.next_seq = value.max(1) as u64,
                "high_ms" => c.high_ms = value.max(0) as u64,
                _ => {}
            }
        }
        Ok(c)
    }

    fn open_incidents(&self, horizon_ms: u64) -> Result<Vec<Incident>, StoreError> {
        let mut stmt = self.conn.prepare_cached(OPEN_INCIDENTS)?;
        let ids = stmt
            .query_map(params![i64_of(horizon_ms)], |r| r.get::<_, String>(0))?
            .collect::<Result<Vec<_>, _>>()?;
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(inc) = self.load_incident(&id)? {
                out.push(inc);
            }
        }
        Ok(out)
    }

    fn load_incident(&self, id: &str) -> Result<Option<Incident>, StoreError> {
        let row = self
            .conn
            .prepare_cached(
                "SELECT seq, status, assignee, classification, first_activity_ms, last_activity_ms, alert_severity,
                        tactics, sources, alert_count, first_title, several_titles
                 FROM incidents WHERE id = ?1",
            )?
            .query_row(params![id], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, Option<String>>(2)?,
                    r.get::<_, Option<String>>(3)?,
                    r.get::<_, i64>(4)?,
                    r.get::<_, i64>(5)?,
                    r.get::<_, i64>(6)?,
                    r.get::<_, String>(7)?,
                    r.get::<_, String>(8)?,
                    r.get::<_, i64>(9)?,
                    r.get::<_, String>(10)?,
                    r.get::<_, bool>(11)?,
                ))
            })
            .optional()?;
        let Some((seq, status, assignee, class, first, last, sev, tactics, sources, count, first_title, several)) = row
        else {
            return Ok(None);
        };
        let mut keys = Vec::new();
        let mut stmt = self.conn.prepare_cached(
            "SELECT key, label, via, first_ms, last_ms, last_alert, runs, flags FROM incident_entities WHERE incident = ?1",
        )?;
        let rows = stmt.query_map(params![seq], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, Option<String>>(1)?,
                r.get::<_, Option<String>>(2)?,
                r.get::<_, i64>(3)?,
                r.get::<_, i64>(4)?,
                r.get::<_, String>(5)?,
                r.get::<_, Option<String>>(6)?,
                r.get::<_, i64>(7)?,
            ))
        })?;
        for row in rows {
            let (key, label, via, first_ms, last_ms, last_alert, runs, flags) = row?;
            // A key is `kind:value`.
            let kind = key
                .split_once(':')
                .and_then(|(kind, _)| KeyKind::parse(kind))
                .ok_or_else(|| StoreError::Corrupt(format!("entity key {key}")))?;
            let (first_ms, last_ms) = (first_ms.max(0) as u64, last_ms.max(0) as u64);
            // Device keys saved before runs were kept count as one run over their span.
            let runs = match runs {
                Some(text) => serde_json::from_str(&text)
                    .map_err(|e| StoreError::Corrupt(format!("runs of {key} in {id}: {e}")))?,
                None if kind == KeyKind::Device => vec![(first_ms, last_ms)],
                None => Vec::new(),
            };
            keys.push(KeyRow {
                key: key.into(),
                kind,
                label: label.map(Into::into),
                via: via.map(Into::into),
                first_ms,
                last_ms,
                last_alert: last_alert.into(),
                runs,
                weakly_held: flags & KEY_WEAKLY_HELD != 0,
                on_device: flags & KEY_ON_DEVICE != 0,
            });
        }
        Ok(Some(Incident {
            id: id.to_string(),
            seq: seq.max(0) as u64,
            status: Status::parse(&status).ok_or_else(|| StoreError::Corrupt(format!("incident status {status}")))?,
            assignee,
            classification: class.as_deref().and_then(Classification::parse),
            first_ms: first.max(0) as u64,
            last_ms: last.max(0) as u64,
            alert_severity: severity_from(sev),
            tactics: json_strings(&tactics).iter().filter_map(|t| tactic_rank(t)).collect(),
            sources: json_strings(&sources).into_iter().collect(),
            alert_count: count.max(0) as u64,
            first_title,
            several_titles: several,
            keys,
        }))
    }

    fn incidents_holding(&self, keys: &[String], from_ms: u64, to_ms: u64) -> Result<Vec<Incident>, StoreError> {
        let mut ids: Vec<(i64, String)> = Vec::new();
        let mut stmt = self.conn.prepare_cached(
            "SELECT i.seq, i.id FROM incident_entities ie JOIN incidents i ON i.seq = ie.incident
             WHERE ie.key = ?1 AND i.status IN ('active', 'in_progress')
               AND i.last_activity_ms >= ?2 AND i.first_activity_ms <= ?3",
        )?;
        for key in keys {
            let rows = stmt.query_map(params![key, i64_of(from_ms), i64_of(to_ms)], |r| {
                Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?))
            })?;
            for row in rows {
                ids.push(row?);
            }
        }
        ids.sort();
        ids.dedup();
        let mut out = Vec::with_capacity(ids.len());
        for (_, id) in ids {
            if let Some(inc) = self.load_incident(&id)? {
                out.push(inc);
            }
        }
        Ok(out)
    }

    fn key_prevalence(&self) -> Result<Vec<(String, Vec<String>)>, StoreError> {
        let mut stmt = self.conn.prepare_cached("SELECT key, devices FROM correlation_keys")?;
        let rows = stmt
            .query_map([], |r| {
                Ok((r.get::<_, String>(0)?, json_strings(&r.get::<_, String>(1)?)))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    fn known_devices(&self) -> Result<Vec<KnownDevice>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT id, hostname, addresses FROM devices")?;
        let rows = stmt
            .query_map([], |r| {
                Ok(KnownDevice {
                    id: r.get(0)?,
                    hostname: r.get(1)?,
                    addresses: json_strings(&r.get::<_, String>(2)?)
                        .iter()
                        .filter_map(|a| a.split('/').next().and_then(|a| a.parse().ok()))
                        .collect(),
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    fn devices_fingerprint(&self) -> Result<i64, StoreError> {
        Ok(self
            .conn
            .query_row("SELECT n FROM device_inventory_version", [], |r| r.get(0))?)
    }

    fn alerts_after(&self, rowid: i64, limit: u32) -> Result<Vec<StoredAlert>, StoreError> {
        self.stored_alerts(
            "SELECT rowid, id, device_id, observed_at_ms, severity, tactics, source, rule_title, entities,
                    received_at_ms
             FROM alerts WHERE rowid > ?1 ORDER BY rowid LIMIT ?2",
            params![rowid, limit],
        )
    }

    fn last_alert_rowid(&self) -> Result<i64, StoreError> {
        Ok(self
            .conn
            .prepare_cached("SELECT COALESCE(MAX(rowid), 0) FROM alerts")?
            .query_row([], |r| r.get(0))?)
    }

    fn incident_stored_alerts(&self, id: &str) -> Result<Vec<StoredAlert>, StoreError> {
        self.stored_alerts(
            "SELECT a.rowid, a.id, a.device_id, a.observed_at_ms, a.severity, a.tactics, a.source, a.rule_title,
                    a.entities, a.received_at_ms
             FROM incident_alerts ia JOIN alerts a ON a.rowid = ia.alert_rowid
             WHERE ia.incident = (SELECT seq FROM incidents WHERE id = ?1) ORDER BY a.rowid",
            params![id],
        )
    }

    fn apply_correlation(
        &mut self,
        changes: &Changes,
        counters: CorrelationCounters,
        now_ms: u64,
    ) -> Result<std::time::Duration, StoreError> {
        let asked = std::time::Instant::now();
        let tx = self.conn.transaction()?;
        let waited = asked.elapsed();
        write_changes(&tx, changes, now_ms)?;
        save_counters(&tx, counters)?;
        tx.commit()?;
        Ok(waited)
    }

    fn replace_incident_state(&mut self, row: &IncidentRow, now_ms: u64) -> Result<(), StoreError> {
        let tx = self.conn.transaction()?;
        tx.execute(
            "DELETE FROM incident_entities WHERE incident = ?1",
            params![i64_of(row.seq)],
        )?;
        upsert_incident(&tx, row, None, now_ms)?;
        upsert_keys(&tx, row)?;
        tx.commit()?;
        Ok(())
    }

    fn save_next_seq(&self, next_seq: u64) -> Result<(), StoreError> {
        self.conn.execute(
            "INSERT INTO correlation_state (name, value) VALUES ('next_seq', ?1)
             ON CONFLICT(name) DO UPDATE SET value = MAX(value, excluded.value)",
            params![i64_of(next_seq)],
        )?;
        Ok(())
    }

    fn patch_incident(
        &mut self,
        id: &str,
        patch: &IncidentPatch,
        actor: &str,
        now_ms: u64,
    ) -> Result<Result<(), IncidentRefusal>, StoreError> {
        if let Err(e) = self.open_incident_status(id)? {
            return Ok(Err(e));
        }
        if patch.status == Some(Status::Redirected) {
            return Ok(Err(IncidentRefusal::Invalid(
                "status redirected is set by merging, not by hand".into(),
            )));
        }
        let tx = self.conn.transaction()?;
        let (old_status, old_assignee, old_class, old_det, old_tags, old_title, old_sev): (
            String,
            Option<String>,
            Option<String>,
            Option<String>,
            String,
            String,
            i64,
        ) = tx.query_row(
            "SELECT status, assignee, classification, determination, tags, title, severity FROM incidents WHERE id = ?1",
            params![id],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?)),
        )?;
        let mut changed = Vec::new();
        let show = |v: &Option<String>| v.clone().unwrap_or_else(|| "(none)".into());
        if let Some(s) = patch.status
            && s.as_str() != old_status
        {
            tx.execute(
                "UPDATE incidents SET status = ?2 WHERE id = ?1",
                params![id, s.as_str()],
            )?;
            changed.push(("status", format!("status {old_status} → {}", s.as_str())));
        }
        if let Some(a) = &patch.assignee
            && *a != old_assignee
        {
            tx.execute("UPDATE incidents SET assignee = ?2 WHERE id = ?1", params![id, a])?;
            changed.push(("assignee", format!("assignee {} → {}", show(&old_assignee), show(a))));
        }
        if let Some(c) = &patch.classification {
            let c = c.map(|c| c.as_str().to_string());
            if c != old_class {
                tx.execute("UPDATE incidents SET classification = ?2 WHERE id = ?1", params![id, c])?;
                changed.push((
                    "classification",
                    format!("classification {} → {}", show(&old_class), show(&c)),
                ));
            }
        }
        if let Some(d) = &patch.determination
            && *d != old_det
        {
            tx.execute("UPDATE incidents SET determination = ?2 WHERE id = ?1", params![id, d])?;
            changed.push((
                "determination",
                format!("determination {} → {}", show(&old_det), show(d)),
            ));
        }
        if let Some(tags) = &patch.tags {
            let text = to_json_text(tags);
            if text != old_tags {
                tx.execute("UPDATE incidents SET tags = ?2 WHERE id = ?1", params![id, text])?;
                changed.push(("tags", format!("tags {old_tags} → {text}")));
            }
        }
        if let Some(t) = &patch.title
            && *t != old_title
        {
            tx.execute(
                "UPDATE incidents SET title = ?2, title_manual = 1 WHERE id = ?1",
                params![id, t],
            )?;
            changed.push(("title", format!("title {old_title:?} → {t:?}")));
        }
        if let Some(s) = patch.severity
            && sev_num(s) != old_sev
        {
            tx.execute(
                "UPDATE incidents SET severity = ?2, severity_manual = 1 WHERE id = ?1",
                params![id, sev_num(s)],
            )?;
            changed.push(("severity", format!("severity {} → {}", sev_from(old_sev), s.as_str())));
        }
        if !changed.is_empty() {
            tx.execute(
                "UPDATE incidents SET updated_at_ms = ?2 WHERE id = ?1",
                params![id, i64_of(now_ms)],
            )?;
        }
        for (kind, detail) in &changed {
            activity(&tx, id, now_ms, actor, kind, detail)?;
            append_audit(&tx, now_ms, actor, "incident.update", id, detail)?;
        }
        tx.commit()?;
        Ok(Ok(()))
    }

    fn add_incident_comment(
        &mut self,
        id: &str,
        comment_id: &str,
        text: &str,
        author: &str,
        now_ms: u64,
    ) -> Result<Result<CommentView, IncidentRefusal>, StoreError> {
        if let Err(e) = self.open_incident_status(id)? {
            return Ok(Err(e));
        }
        let tx = self.conn.transaction()?;
        tx.execute(
            "INSERT INTO incident_comments (id, incident_id, at_ms, author, text) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![comment_id, id, i64_of(now_ms), author, text],
        )?;
        tx.execute(
            "UPDATE incidents SET updated_at_ms = ?2 WHERE id = ?1",
            params![id, i64_of(now_ms)],
        )?;
        activity(&tx, id, now_ms, author, "comment", &format!("comment {comment_id}"))?;
        append_audit(&tx, now_ms, author, "incident.comment", id, comment_id)?;
        tx.commit()?;
        Ok(Ok(CommentView {
            id: comment_id.into(),
            at_ms: i64_of(now_ms),
            author: author.into(),
            text: text.into(),
        }))
    }

    fn merge_incidents_by_hand(
        &mut self,
        into: &str,
        from: &[String],
        actor: &str,
        now_ms: u64,
    ) -> Result<Result<(), IncidentRefusal>, StoreError> {
        if let Err(e) = self.open_incident_status(into)? {
            return Ok(Err(e));
        }
        for f in from {
            if f == into {
                return Ok(Err(IncidentRefusal::Invalid(
                    "an incident cannot be merged into itself".into(),
                )));
            }
            if let Err(e) = self.open_incident_status(f)? {
                return Ok(Err(e));
            }
        }
        let tx = self.conn.transaction()?;
        for f in from {
            let reason = format!("merged by {actor}");
            merge_rows(&tx, f, into, &reason, actor, now_ms)?;
            append_audit(
                &tx,
                now_ms,
                actor,
                "incident.merge",
                into,
                &format!("merged {f} into {into}"),
            )?;
        }
        tx.commit()?;
        Ok(Ok(()))
    }

    #[allow(clippy::too_many_arguments)]
    fn move_incident_alert(
        &mut self,
        from: &str,
        alert_id: &str,
        to: Option<&str>,
        new: (&str, u64),
        reason: &str,
        actor: &str,
        now_ms: u64,
    ) -> Result<Result<String, IncidentRefusal>, StoreError> {
        if let Err(e) = self.open_incident_status(from)? {
            return Ok(Err(e));
        }
        let rowid: Option<i64> = self
            .conn
            .query_row(
                "SELECT a.rowid FROM alerts a JOIN incident_alerts ia ON ia.alert_rowid = a.rowid
                 WHERE a.id = ?1 AND ia.incident = (SELECT seq FROM incidents WHERE id = ?2)",
                params![AlertKey::of(alert_id), from],
                |r| r.get(0),
            )
            .optional()?;
        let Some(rowid) = rowid else {
            return Ok(Err(IncidentRefusal::Invalid(format!(
                "alert {alert_id} is not in incident {from}"
            ))));
        };
        if let Some(to) = to {
            if to == from {
                return Ok(Err(IncidentRefusal::Invalid(
                    "the alert is already in that incident".into(),
                )));
            }
            if let Err(e) = self.open_incident_status(to)? {
                return Ok(Err(e));
            }
        }
        let tx = self.conn.transaction()?;
        let dest = match to {
            Some(to) => to.to_string(),
            None => {
                let (id, seq) = new;
                tx.execute(
                    "INSERT INTO incidents (id, seq, title, severity, alert_severity, status, sources, tactics,
                         first_title, several_titles, first_activity_ms, last_activity_ms, created_at_ms,
                         updated_at_ms, alert_count, device_count, user_count, mailbox_count)
                     VALUES (?1, ?2, '', 0, 0, 'active', '[]', '[]', '', 0, 0, 0, ?3, ?3, 0, 0, 0, 0)",
                    params![id, i64_of(seq), i64_of(now_ms)],
                )?;
                activity(
                    &tx,
                    id,
                    now_ms,
                    actor,
                    "created",
                    &format!("opened by hand for alert {alert_id}"),
                )?;
                id.to_string()
            }
        };
        let why = if reason.is_empty() {
            format!("moved by {actor} from incident {from}")
        } else {
            format!("moved by {actor} from incident {from}: {reason}")
        };
        tx.execute(
            "UPDATE incident_alerts SET incident = ?2, reason = ?3, linked_by = ?4, linked_at_ms = ?5
             WHERE alert_rowid = ?1",
            params![rowid, seq_of(&tx, &dest)?, why, actor, i64_of(now_ms)],
        )?;
        activity(
            &tx,
            from,
            now_ms,
            actor,
            "alert_moved",
            &format!("alert {alert_id} moved to incident {dest}"),
        )?;
        activity(
            &tx,
            &dest,
            now_ms,
            actor,
            "alert_moved",
            &format!("alert {alert_id} moved here from incident {from}"),
        )?;
        append_audit(
            &tx,
            now_ms,
            actor,
            "incident.move_alert",
            from,
            &format!("alert {alert_id} → {dest}"),
        )?;
        let left: i64 = tx.query_row(
            "SELECT COUNT(*) FROM incident_alerts WHERE incident = ?1",
            params![seq_of(&tx, from)?],
            |r| r.get(0),
        )?;
        if left == 0 {
            // Nothing is left in it: it lives on in the destination, as a merge does
            // (comments, tags, activity and triage along).
            merge_rows(
                &tx,
                from,
                &dest,
                &format!("its last alert {alert_id} moved"),
                actor,
                now_ms,
            )?;
        }
        tx.commit()?;
        Ok(Ok(dest))
    }

    // ---- reading ----

    fn list_incidents(&self, f: &IncidentFilter) -> Result<Vec<IncidentSummary>, StoreError> {
        // With an entity filter the few incidents holding that entity are found through
        // the entity index first (CROSS JOIN fixes that order), not by scanning by time.
        let driver = [&f.device_keys, &f.user_keys].into_iter().find(|k| !k.is_empty());
        let mut p: Vec<rusqlite::types::Value> = Vec::new();
        let mut sql = match driver {
            Some(keys) => {
                p.extend(keys.iter().map(|k| k.clone().into()));
                format!(
                    "SELECT DISTINCT {SUMMARY_COLUMNS} FROM incident_entities d CROSS JOIN incidents i ON i.seq = d.incident
                     WHERE d.key IN ({}) AND i.last_activity_ms >= ?",
                    vec!["?"; keys.len()].join(",")
                )
            }
            None => format!("SELECT {SUMMARY_COLUMNS} FROM incidents i WHERE i.last_activity_ms >= ?"),
        };
        p.push(f.since_ms.into());
        if let Some(u) = f.until_ms {
            sql.push_str(" AND i.last_activity_ms < ?");
            p.push(u.into());
        }
        if f.statuses.is_empty() {
            sql.push_str(" AND i.status <> 'redirected'");
        } else {
            // `+` keeps SQLite on the time index: most incidents match, and the first page comes at once.
            sql.push_str(&format!(
                " AND +i.status IN ({})",
                vec!["?"; f.statuses.len()].join(",")
            ));
            p.extend(f.statuses.iter().map(|s| s.as_str().to_string().into()));
        }
        if let Some(s) = f.min_severity {
            sql.push_str(match f.sort {
                IncidentSort::LastActivity => " AND +i.severity >= ?",
                IncidentSort::Severity => " AND i.severity >= ?",
            });
            p.push(sev_num(s).into());
        }
        if let Some(a) = &f.assignee {
            sql.push_str(" AND i.assignee = ?");
            p.push(a.clone().into());
        }
        for (col, v) in [("tags", &f.tag), ("sources", &f.source), ("tactics", &f.tactic)] {
            if let Some(v) = v {
                sql.push_str(&format!(
                    " AND EXISTS (SELECT 1 FROM json_each(i.{col}) j WHERE j.value = ?)"
                ));
                p.push(v.clone().into());
            }
        }
        if let Some(text) = &f.text {
            let like = format!("%{}%", like_escape(text));
            // The incident's own words and keys first (cheap); then its alerts' rule
            // titles and entities as stored (file paths, command lines, full user
            // names), which correlation keys hold only as hashes or short names.
            sql.push_str(
                " AND (i.title LIKE ? ESCAPE '\\' OR EXISTS (SELECT 1 FROM incident_entities t
                     WHERE t.incident = i.seq AND (t.key LIKE ? ESCAPE '\\' OR t.label LIKE ? ESCAPE '\\'))
                   OR EXISTS (SELECT 1 FROM incident_alerts ia CROSS JOIN alerts a ON a.rowid = ia.alert_rowid
                     WHERE ia.incident = i.seq AND (a.rule_title LIKE ? ESCAPE '\\' OR a.entities LIKE ? ESCAPE '\\')))",
            );
            p.extend(std::iter::repeat_n(like, 5).map(Into::into));
        }
        for keys in [&f.device_keys, &f.user_keys] {
            if !keys.is_empty() && !driver.is_some_and(|d| std::ptr::eq(d, keys)) {
                sql.push_str(&format!(
                    " AND i.seq IN (SELECT e.incident FROM incident_entities e WHERE e.key IN ({}))",
                    vec!["?"; keys.len()].join(",")
                ));
                p.extend(keys.iter().map(|k| k.clone().into()));
            }
        }
        if let Some((sev, last, id)) = &f.after {
            match f.sort {
                IncidentSort::LastActivity => {
                    sql.push_str(" AND (i.last_activity_ms, i.id) < (?, ?)");
                    p.push((*last).into());
                    p.push(id.clone().into());
                }
                IncidentSort::Severity => {
                    sql.push_str(" AND (i.severity, i.last_activity_ms, i.id) < (?, ?, ?)");
                    p.push((*sev).into());
                    p.push((*last).into());
                    p.push(id.clone().into());
                }
            }
        }
        sql.push_str(match f.sort {
            IncidentSort::LastActivity => " ORDER BY i.last_activity_ms DESC, i.id DESC LIMIT ?",
            IncidentSort::Severity => " ORDER BY i.severity DESC, i.last_activity_ms DESC, i.id DESC LIMIT ?",
        });
        p.push(i64::from(f.limit).into());
        let mut stmt = self.conn.prepare_cached(&sql)?;
        let rows = stmt
            .query_map(params_from_iter(p), summary_row)?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    fn incident_summary(&self, id: &str) -> Result<Option<IncidentSummary>, StoreError> {
        let sql = format!("SELECT {SUMMARY_COLUMNS} FROM incidents i WHERE i.id = ?1");
        Ok(self.conn.query_row(&sql, params![id], summary_row).optional()?)
    }

    fn device_filter_keys(&self, device: &str) -> Result<Vec<String>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT id FROM devices WHERE id = ?1 OR lower(hostname) = lower(?1)")?;
        let mut keys: Vec<String> = stmt
            .query_map(params![device], |r| r.get::<_, String>(0))?
            .map(|id| id.map(|id| format!("device:{id}")))
            .collect::<Result<_, _>>()?;
        keys.push(format!("device:host/{}", device.to_ascii_lowercase()));
        Ok(keys)
    }

    fn incident_alerts_of(&self, alert_id: &str) -> Result<(String, String), StoreError> {
        Ok(self.conn.query_row(
            "SELECT i.id, ia.reason FROM incident_alerts ia JOIN alerts a ON a.rowid = ia.alert_rowid
             JOIN incidents i ON i.seq = ia.incident WHERE a.id = ?1",
            params![AlertKey::of(alert_id)],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?)
    }

    fn incident_device_ids(&self, id: &str) -> Result<Vec<String>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT substr(key, 8) AS value FROM incident_entities
             WHERE incident = (SELECT seq FROM incidents WHERE id = ?1) AND substr(key, 1, 7) = 'device:' AND substr(key, 8) NOT LIKE 'host/%'
             ORDER BY first_ms, value",
        )?;
        let rows = stmt
            .query_map(params![id], |r| r.get::<_, String>(0))?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    fn incident_activity(&self, id: &str) -> Result<Vec<ActivityEntry>, StoreError> {
        // "created" entries of correlation are read from the incidents opened (this
        // one and those merged into it), first among entries of the same instant.
        let mut stmt = self.conn.prepare_cached(
            "SELECT at_ms, actor, kind, detail FROM (
                 SELECT created_at_ms AS at_ms, -1 AS id, 'correlation' AS actor, 'created' AS kind,
                        'opened by alert ' || opened_by AS detail
                 FROM incidents WHERE id = ?1 AND opened_by IS NOT NULL
                 UNION ALL
                 SELECT created_at_ms, -1, 'correlation', 'created', 'opened by alert ' || opened_by
                 FROM incidents WHERE redirected_to = ?1 AND opened_by IS NOT NULL
                 UNION ALL
                 SELECT at_ms, id, actor, kind, detail FROM incident_activity
                 WHERE incident = (SELECT seq FROM incidents WHERE id = ?1)
             ) ORDER BY at_ms, id",
        )?;
        let rows = stmt
            .query_map(params![id], |r| {
                Ok(ActivityEntry {
                    at_ms: r.get(0)?,
                    actor: r.get(1)?,
                    kind: r.get(2)?,
                    detail: r.get(3)?,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    fn incident_comments(&self, id: &str) -> Result<Vec<CommentView>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT id, at_ms, author, text FROM incident_comments WHERE incident_id = ?1 ORDER BY at_ms, id",
        )?;
        let rows = stmt
            .query_map(params![id], |r| {
                Ok(CommentView {
                    id: r.get(0)?,
                    at_ms: r.get(1)?,
                    author: r.get(2)?,
                    text: r.get(3)?,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    fn incident_action_ids(&self, id: &str) -> Result<Vec<String>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT id FROM actions WHERE incident_id = ?1 ORDER BY id DESC LIMIT 200")?;
        let rows = stmt
            .query_map(params![id], |r| r.get::<_, String>(0))?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }
}

impl SqliteStore {
    fn stored_alerts(&self, sql: &str, p: impl rusqlite::Params) -> Result<Vec<StoredAlert>, StoreError> {
        let mut stmt = self.conn.prepare_cached(sql)?;
        let rows = stmt
            .query_map(p, |r| {
                let entities: Vec<Value> = serde_json::from_str(&r.get::<_, String>(8)?).unwrap_or_default();
                let received_ms = r.get::<_, i64>(9)?.max(0) as u64;
                Ok(StoredAlert {
                    rowid: r.get(0)?,
                    id: alert_id(r, 1)?,
                    device_id: r.get(2)?,
                    at_ms: r.get::<_, i64>(3)?.max(0) as u64,
                    received_ms,
                    severity: severity_from(r.get(4)?),
                    tactics: json_strings(&r.get::<_, String>(5)?),
                    source: r.get(6)?,
                    title: r.get(7)?,
                    entities: entities.iter().filter_map(entity::from_json).collect(),
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    // ---- analyst changes ----

    fn open_incident_status(&self, id: &str) -> Result<Result<Status, IncidentRefusal>, StoreError> {
        let row: Option<(String, Option<String>)> = self
            .conn
            .query_row(
                "SELECT status, redirected_to FROM incidents WHERE id = ?1",
                params![id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        Ok(match row {
            None => Err(IncidentRefusal::NotFound),
            Some((s, to)) => match Status::parse(&s) {
                Some(Status::Redirected) => Err(IncidentRefusal::Redirected(id.into(), to.unwrap_or_default())),
                Some(s) => Ok(s),
                None => return Err(StoreError::Corrupt(format!("incident status {s}"))),
            },
        })
    }
}
