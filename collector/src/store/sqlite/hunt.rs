//! The SQLite side of [`crate::store::hunt`]. Every piece of SQL here is a
//! constant: a field's expression comes from [`column`] (a closed table keyed by
//! the model's field names), an operator from a `match`, and every value a query
//! carries is a bound parameter. A hunt runs under a watchdog thread that
//! interrupts the connection once its time limit passes; the watchdog is joined
//! before the connection is handed back, so it can never interrupt the next user.

use std::sync::mpsc;
use std::time::Duration;

use rusqlite::types::Value as Sql;
use rusqlite::{ErrorCode, OptionalExtension, params};
use serde_json::Value;

use super::alert_id::alert_id;
use super::{SqliteStore, StoreError, i64_of, sev_from};
use crate::model::hunt::{
    FieldKind, Filter, FilterValue, HuntCursor, HuntPage, HuntQuery, HuntSource, MAX_COUNTED, Op,
};
use crate::store::hunt::*;

/// A source's table, alias, time column and the expressions of its result columns
/// (in `HuntSource::columns` order).
struct Shape {
    from: &'static str,
    time: &'static str,
    rowid: &'static str,
    select: &'static str,
}

fn shape(source: HuntSource) -> Shape {
    match source {
        HuntSource::Alerts => Shape {
            from: "alerts a",
            time: "a.observed_at_ms",
            rowid: "a.rowid",
            select: "a.observed_at_ms, ward_alert_id(a.id), (SELECT d.hostname FROM devices d WHERE d.id = a.device_id), a.severity,
                a.rule_title, a.rule_id, a.source, a.count, a.techniques,
                (SELECT group_concat(e.kind || '=' || e.value, ' ') FROM alert_entities e
                 WHERE e.alert_rowid = a.rowid AND e.kind NOT IN ('lineage', 'process', 'process_context'))",
        },
        HuntSource::SignIns => Shape {
            from: "sign_ins s",
            time: "s.time_ms",
            rowid: "s.rowid",
            select: "s.time_ms, s.user, s.ip, s.location, s.app, s.client, s.outcome, s.result, s.risk_level, s.mfa,
                s.device, s.provider",
        },
        HuntSource::Mail => Shape {
            from: "mail_events m",
            time: "m.time_ms",
            rowid: "m.rowid",
            select: "m.time_ms, m.kind, m.sender, m.recipient, m.subject, m.threat_types, m.delivery_action,
                m.delivery_location, m.file_name, m.sha256, m.url, m.action, m.ip, m.network_message_id",
        },
        HuntSource::Directory => Shape {
            from: "audit_events v",
            time: "v.time_ms",
            rowid: "v.rowid",
            select: "v.time_ms, v.kind, v.operation, v.actor, v.target_user, v.app_name, v.app_id, v.mailbox, v.ip,
                v.detail, v.items, v.provider",
        },
    }
}

/// The SQL expression of a field a query may name (entity fields have none: they
/// are looked up in `alert_entities`).
fn column(source: HuntSource, field: &str) -> Option<&'static str> {
    Some(match (source, field) {
        // Stored as 16 bytes (store/sqlite/alert_id): filtered as its text.
        (HuntSource::Alerts, "id") => "ward_alert_id(a.id)",
        (HuntSource::Alerts, "host") => "(SELECT d.hostname FROM devices d WHERE d.id = a.device_id)",
        (HuntSource::Alerts, "device") => "a.device_id",
        (HuntSource::Alerts, "severity") => "a.severity",
        (HuntSource::Alerts, "rule") => "a.rule_title",
        (HuntSource::Alerts, "rule_id") => "a.rule_id",
        (HuntSource::Alerts, "author") => "a.rule_author",
        (HuntSource::Alerts, "source") => "a.source",
        (HuntSource::Alerts, "count") => "a.count",
        (HuntSource::Alerts, "technique") => "a.techniques",
        (HuntSource::Alerts, "tactic") => "a.tactics",
        (HuntSource::Alerts, "entities") => "a.entities",
        (HuntSource::Alerts, "matched") => "a.matched",
        (HuntSource::SignIns, "user") => "s.user",
        (HuntSource::SignIns, "ip") => "s.ip",
        (HuntSource::SignIns, "location") => "s.location",
        (HuntSource::SignIns, "app") => "s.app",
        (HuntSource::SignIns, "client") => "s.client",
        (HuntSource::SignIns, "outcome") => "s.outcome",
        (HuntSource::SignIns, "result") => "s.result",
        (HuntSource::SignIns, "result_detail") => "s.result_detail",
        (HuntSource::SignIns, "risk_level") => "s.risk_level",
        (HuntSource::SignIns, "risk_state") => "s.risk_state",
        (HuntSource::SignIns, "conditional_access") => "s.conditional_access",
        (HuntSource::SignIns, "mfa") => "s.mfa",
        (HuntSource::SignIns, "device") => "s.device",
        (HuntSource::SignIns, "provider") => "s.provider",
        (HuntSource::Mail, "kind") => "m.kind",
        (HuntSource::Mail, "sender") => "m.sender",
        (HuntSource::Mail, "recipient") => "m.recipient",
        (HuntSource::Mail, "subject") => "m.subject",
        (HuntSource::Mail, "threat_types") => "m.threat_types",
        (HuntSource::Mail, "detection_methods") => "m.detection_methods",
        (HuntSource::Mail, "delivery_action") => "m.delivery_action",
        (HuntSource::Mail, "delivery_location") => "m.delivery_location",
        (HuntSource::Mail, "file_name") => "m.file_name",
        (HuntSource::Mail, "sha256") => "m.sha256",
        (HuntSource::Mail, "url") => "m.url",
        (HuntSource::Mail, "action") => "m.action",
        (HuntSource::Mail, "ip") => "m.ip",
        (HuntSource::Mail, "network_message_id") => "m.network_message_id",
        (HuntSource::Directory, "kind") => "v.kind",
        (HuntSource::Directory, "operation") => "v.operation",
        (HuntSource::Directory, "actor") => "v.actor",
        (HuntSource::Directory, "target_user") => "v.target_user",
        (HuntSource::Directory, "app_name") => "v.app_name",
        (HuntSource::Directory, "app_id") => "v.app_id",
        (HuntSource::Directory, "mailbox") => "v.mailbox",
        (HuntSource::Directory, "ip") => "v.ip",
        (HuntSource::Directory, "detail") => "v.detail",
        (HuntSource::Directory, "items") => "v.items",
        (HuntSource::Directory, "provider") => "v.provider",
        _ => return None,
    })
}

/// The WHERE clause of `q` (with or without its cursor), its parameters appended to `params`.
fn where_clause(q: &HuntQuery, with_cursor: bool, params: &mut Vec<Sql>) -> Result<String, StoreError> {
    let shape = shape(q.source);
    let mut parts = Vec::new();
    let mut bind = |params: &mut Vec<Sql>, v: Sql| {
        params.push(v);
        format!("?{}", params.len())
    };
    for f in &q.filters {
        parts.push(condition(q.source, f, params, &mut bind)?);
    }
    if let Some(since) = q.since_ms {
        parts.push(format!("{} >= {}", shape.time, bind(params, Sql::Integer(since))));
    }
    if let Some(until) = q.until_ms {
        parts.push(format!("{} < {}", shape.time, bind(params, Sql::Integer(until))));
    }
    if let (true, Some(HuntCursor { time_ms, rowid })) = (with_cursor, q.cursor) {
        let t = bind(params, Sql::Integer(time_ms));
        let r = bind(params, Sql::Integer(rowid));
        parts.push(format!(
            "({time} < {t} OR ({time} = {t} AND {row} < {r}))",
            time = shape.time,
            row = shape.rowid
        ));
    }
    Ok(if parts.is_empty() {
        "1".to_string()
    } else {
        parts.join(" AND ")
    })
}

fn condition(
    source: HuntSource,
    f: &Filter,
    params: &mut Vec<Sql>,
    bind: &mut impl FnMut(&mut Vec<Sql>, Sql) -> String,
) -> Result<String, StoreError> {
    let value = match &f.value {
        FilterValue::Text(t) => Sql::Text(t.clone()),
        FilterValue::Number(n) => Sql::Integer(*n),
    };
    if let FieldKind::Entity(kind) = f.field.kind {
        let k = bind(params, Sql::Text(kind.to_string()));
        let v = bind(params, value);
        let (negated, test) = match f.op {
            Op::Eq => (false, format!("e.value = {v} COLLATE NOCASE")),
            Op::Ne => (true, format!("e.value = {v} COLLATE NOCASE")),
            Op::Contains => (false, format!("instr(lower(e.value), lower({v})) > 0")),
            Op::NotContains => (true, format!("instr(lower(e.value), lower({v})) > 0")),
            _ => return Err(StoreError::Corrupt(format!("operator {} on an entity", f.op.as_str()))),
        };
        return Ok(format!(
            "{}EXISTS (SELECT 1 FROM alert_entities e WHERE e.alert_rowid = a.rowid AND e.kind = {k} AND {test})",
            if negated { "NOT " } else { "" }
        ));
    }
    let e = column(source, f.field.name)
        .ok_or_else(|| StoreError::Corrupt(format!("no column for hunt field {}", f.field.name)))?;
    let v = bind(params, value);
    Ok(match (f.field.kind, f.op) {
        (FieldKind::Number | FieldKind::Severity, op) => {
            let sql_op = match op {
                Op::Eq => "=",
                Op::Ne => "<>",
                Op::Ge => ">=",
                Op::Gt => ">",
                Op::Le => "<=",
                Op::Lt => "<",
                Op::Contains | Op::NotContains => {
                    return Err(StoreError::Corrupt(format!(
                        "contains on number field {}",
                        f.field.name
                    )));
                }
            };
            format!("{e} {sql_op} {v}")
        }
        (FieldKind::List, Op::Eq) => {
            format!("EXISTS (SELECT 1 FROM json_each({e}) j WHERE j.value = {v} COLLATE NOCASE)")
        }
        (FieldKind::List, Op::Ne) => {
            format!("NOT EXISTS (SELECT 1 FROM json_each({e}) j WHERE j.value = {v} COLLATE NOCASE)")
        }
        (_, Op::Eq) => format!("{e} = {v} COLLATE NOCASE"),
        (_, Op::Ne) => format!("({e} IS NULL OR {e} <> {v} COLLATE NOCASE)"),
        (_, Op::Contains) => format!("instr(lower({e}), lower({v})) > 0"),
        (_, Op::NotContains) => format!("({e} IS NULL OR instr(lower({e}), lower({v})) = 0)"),
        (_, op) => {
            return Err(StoreError::Corrupt(format!(
                "operator {} on text field {}",
                op.as_str(),
                f.field.name
            )));
        }
    })
}

/// A stored cell as JSON: severities by name, ATT&CK lists as comma-separated text.
fn cell(source: HuntSource, column: &str, v: Sql) -> Value {
    match (source, column, v) {
        (HuntSource::Alerts, "severity", Sql::Integer(n)) => Value::String(sev_from(n).to_string()),
        (HuntSource::Alerts, "techniques", Sql::Text(t)) => {
            let list: Vec<String> = serde_json::from_str(&t).unwrap_or_default();
            Value::String(list.join(","))
        }
        (_, _, Sql::Null) => Value::Null,
        (_, _, Sql::Integer(n)) => Value::from(n),
        (_, _, Sql::Real(r)) => Value::from(r),
        (_, _, Sql::Text(t)) => Value::String(t),
        (_, _, Sql::Blob(_)) => Value::Null,
    }
}

fn interrupted(e: &StoreError) -> bool {
    let StoreError::Database(e) = e else { return false };
    matches!(e.downcast_ref::<rusqlite::Error>(), Some(rusqlite::Error::SqliteFailure(f, _)) if f.code == ErrorCode::OperationInterrupted)
}

impl SqliteStore {
    fn run_hunt(&self, q: &HuntQuery) -> Result<HuntPage, StoreError> {
        let shape = shape(q.source);
        let columns = q.source.columns();
        let mut count_params = Vec::new();
        let count_where = where_clause(q, false, &mut count_params)?;
        let count_sql = format!(
            "SELECT COUNT(*) FROM (SELECT 1 FROM {} WHERE {count_where} LIMIT {})",
            shape.from,
            MAX_COUNTED + 1
        );
        let counted: i64 = self
            .conn
            .prepare(&count_sql)?
            .query_row(rusqlite::params_from_iter(count_params), |r| r.get(0))?;
        let mut page_params = Vec::new();
        let page_where = where_clause(q, true, &mut page_params)?;
        page_params.push(Sql::Integer(i64::from(q.limit) + 1));
        let page_sql = format!(
            "SELECT {}, {time}, {row} FROM {} WHERE {page_where} ORDER BY {time} DESC, {row} DESC LIMIT ?{}",
            shape.select,
            shape.from,
            page_params.len(),
            time = shape.time,
            row = shape.rowid,
        );
        let mut stmt = self.conn.prepare(&page_sql)?;
        let mut rows = stmt.query(rusqlite::params_from_iter(page_params))?;
        let mut out = Vec::new();
        let mut last = None;
        let mut more = false;
        while let Some(r) = rows.next()? {
            if out.len() == q.limit as usize {
                more = true;
                break;
            }
            let mut cells = Vec::with_capacity(columns.len());
            for (i, name) in columns.iter().enumerate() {
                cells.push(cell(q.source, name, r.get::<_, Sql>(i)?));
            }
            last = Some(HuntCursor {
                time_ms: r.get(columns.len())?,
                rowid: r.get(columns.len() + 1)?,
            });
            out.push(cells);
        }
        let counted = u64::try_from(counted).unwrap_or(0);
        Ok(HuntPage {
            columns,
            rows: out,
            total: counted.min(u64::from(MAX_COUNTED)),
            total_capped: counted > u64::from(MAX_COUNTED),
            next_cursor: if more { last.map(|c| c.to_string()) } else { None },
        })
    }
}

fn saved(r: &rusqlite::Row<'_>) -> rusqlite::Result<SavedHunt> {
    Ok(SavedHunt {
        id: r.get(0)?,
        name: r.get(1)?,
        source: r.get(2)?,
        query: r.get(3)?,
        window_ms: r.get(4)?,
        created_at_ms: r.get(5)?,
        updated_at_ms: r.get(6)?,
    })
}

const SAVED_COLUMNS: &str = "id, name, source, query, window_ms, created_at_ms, updated_at_ms";

impl SqliteStore {
    /// Runs `f` on this connection, interrupted once `time_limit` passes (then None).
    fn within<R>(
        &self,
        time_limit: Duration,
        f: impl FnOnce(&Self) -> Result<R, StoreError>,
    ) -> Result<Option<R>, StoreError> {
        let handle = self.conn.get_interrupt_handle();
        let (done, wait) = mpsc::channel::<()>();
        let watchdog = std::thread::Builder::new()
            .name("hunt-watchdog".into())
            .spawn(move || {
                if let Err(mpsc::RecvTimeoutError::Timeout) = wait.recv_timeout(time_limit) {
                    // Again until the hunt ends: an interrupt while no statement
                    // runs (between the count and the page) stops nothing.
                    loop {
                        handle.interrupt();
                        if !matches!(
                            wait.recv_timeout(Duration::from_millis(1)),
                            Err(mpsc::RecvTimeoutError::Timeout)
                        ) {
                            break;
                        }
                    }
                }
            })
            .map_err(|e| StoreError::Database(Box::new(e)))?;
        let result = f(self);
        drop(done);
        // Joined before the connection is used again: a late interrupt would stop
        // whatever statement runs next on it.
        let _ = watchdog.join();
        match result {
            Ok(r) => Ok(Some(r)),
            Err(e) if interrupted(&e) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

impl HuntStore for SqliteStore {
    fn hunt(&self, q: &HuntQuery, time_limit: Duration) -> Result<Option<HuntPage>, StoreError> {
        self.within(time_limit, |s| s.run_hunt(q))
    }

    fn file_sightings(
        &self,
        key: &str,
        by_path: bool,
        limit: u32,
        time_limit: Duration,
    ) -> Result<Option<Vec<FileSighting>>, StoreError> {
        self.within(time_limit, |s| {
            let mut stmt = s.conn.prepare_cached(if by_path {
                "SELECT a.id, a.device_id, d.hostname, a.observed_at_ms, a.entities
                 FROM alerts a LEFT JOIN devices d ON d.id = a.device_id
                 WHERE instr(a.entities, ?1) > 0 ORDER BY a.rowid DESC LIMIT ?2"
            } else {
                "SELECT a.id, a.device_id, d.hostname, a.observed_at_ms, a.entities
                 FROM alert_entities e JOIN alerts a ON a.rowid = e.alert_rowid LEFT JOIN devices d ON d.id = a.device_id
                 WHERE e.kind = 'file' AND e.value = ?1 ORDER BY a.rowid DESC LIMIT ?2"
            })?;
            let rows = stmt
                .query_map(params![key, limit], |r| {
                    Ok(FileSighting {
                        alert_id: alert_id(r, 0)?,
                        device_id: r.get(1)?,
                        hostname: r.get(2)?,
                        observed_at_ms: r.get(3)?,
                        entities: r.get(4)?,
                    })
                })?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
    }

    fn saved_hunts(&self, owner: &str) -> Result<Vec<SavedHunt>, StoreError> {
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {SAVED_COLUMNS} FROM saved_hunts WHERE owner = ?1 ORDER BY name, id"
        ))?;
        let rows = stmt.query_map([owner], saved)?.collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    fn save_hunt(
        &mut self,
        owner: &str,
        hunt: &NewSavedHunt,
        max_per_owner: u32,
        now_ms: u64,
    ) -> Result<Option<SavedHunt>, StoreError> {
        let tx = self.conn.transaction()?;
        let exists: Option<i64> = tx
            .query_row(
                "SELECT id FROM saved_hunts WHERE owner = ?1 AND name = ?2",
                params![owner, hunt.name],
                |r| r.get(0),
            )
            .optional()?;
        if exists.is_none() {
            let n: i64 = tx.query_row("SELECT COUNT(*) FROM saved_hunts WHERE owner = ?1", [owner], |r| {
                r.get(0)
            })?;
            if n >= i64::from(max_per_owner) {
                return Ok(None);
            }
        }
        let now = i64_of(now_ms);
        tx.execute(
            "INSERT INTO saved_hunts (owner, name, source, query, window_ms, created_at_ms, updated_at_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6)
             ON CONFLICT(owner, name) DO UPDATE SET source = excluded.source, query = excluded.query,
                 window_ms = excluded.window_ms, updated_at_ms = excluded.updated_at_ms",
            params![owner, hunt.name, hunt.source, hunt.query, hunt.window_ms, now],
        )?;
        let row = tx.query_row(
            &format!("SELECT {SAVED_COLUMNS} FROM saved_hunts WHERE owner = ?1 AND name = ?2"),
            params![owner, hunt.name],
            saved,
        )?;
        tx.commit()?;
        Ok(Some(row))
    }

    fn delete_saved_hunt(&mut self, owner: &str, id: i64) -> Result<bool, StoreError> {
        let n = self.conn.execute(
            "DELETE FROM saved_hunts WHERE owner = ?1 AND id = ?2",
            params![owner, id],
        )?;
        Ok(n > 0)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::model::hunt::{self, MAX_EXPORT_ROWS};
    use crate::store::prelude::*;
    use crate::store::test_support::open;
    use crate::store::{AlertSource, SourcedAlert};
    use ward_protocol::{Entity, RuleRef, Severity};

    const T0: u64 = 1_700_000_000_000;

    fn alert(n: u64, title: &str, severity: Severity, user: &str, tactic: &str) -> SourcedAlert {
        SourcedAlert {
            id: format!("hunt-{n}"),
            source: AlertSource::Identity,
            device_id: None,
            observed_at_ms: T0 + n * 1000,
            last_observed_at_ms: T0 + n * 1000,
            rule: RuleRef {
                id: format!("rule-{title}"),
                title: title.into(),
                author: "tests".into(),
                severity,
                techniques: vec!["T1078".into()],
                tactics: vec![tactic.into()],
            },
            entities: vec![
                Entity::User {
                    name: user.into(),
                    uid: None,
                },
                Entity::File {
                    path: format!("/home/{user}/.ssh/authorized_keys"),
                    sha256: None,
                },
            ],
            count: n as u32 + 1,
            matched: serde_json::Map::new(),
        }
    }

    /// Stores alerts 0..n (titles alternate, users alternate, severities cycle).
    fn seeded(n: u64) -> (tempfile::TempDir, crate::store::Store) {
        let (dir, mut s) = open();
        let alerts: Vec<SourcedAlert> = (0..n)
            .map(|i| {
                let (title, user) = if i % 2 == 0 {
                    ("Password spray", "alice@contoso.com")
                } else {
                    ("New SSH key", "bob@contoso.com")
                };
                let tactic = if i % 2 == 0 { "TA0006" } else { "TA0003" };
                alert(i, title, Severity::ALL[(i % 5) as usize], user, tactic)
            })
            .collect();
        s.insert_sourced_alerts(&alerts, T0).unwrap();
        (dir, s)
    }

    fn query(s: &crate::store::Store, source: HuntSource, text: &str, limit: u32) -> HuntPage {
        let q = HuntQuery {
            source,
            filters: hunt::parse(source, text).unwrap(),
            since_ms: None,
            until_ms: None,
            cursor: None,
            limit,
        };
        s.hunt(&q, Duration::from_secs(60)).unwrap().unwrap()
    }

    fn ids(p: &HuntPage) -> Vec<String> {
        p.rows.iter().map(|r| r[1].as_str().unwrap().to_string()).collect()
    }

    #[test]
    fn every_field_a_query_may_name_has_a_column_or_is_an_entity() {
        for source in HuntSource::ALL {
            for f in source.fields() {
                let ok = matches!(f.kind, FieldKind::Entity(_)) || column(source, f.name).is_some();
                assert!(ok, "{} {}", source.as_str(), f.name);
            }
        }
    }

    #[test]
    fn filters_select_rows_newest_first() {
        let (_d, s) = seeded(10);
        let p = query(&s, HuntSource::Alerts, "", 100);
        assert_eq!(p.total, 10);
        assert_eq!(ids(&p)[0], "hunt-9");
        assert_eq!(p.columns, HuntSource::Alerts.columns());
        let p = query(&s, HuntSource::Alerts, "rule ~ ssh", 100);
        assert_eq!(ids(&p), ["hunt-9", "hunt-7", "hunt-5", "hunt-3", "hunt-1"]);
        let p = query(
            &s,
            HuntSource::Alerts,
            "user = ALICE@contoso.com and severity >= high",
            100,
        );
        assert_eq!(ids(&p), ["hunt-8", "hunt-4"]);
        let p = query(&s, HuntSource::Alerts, "user != alice@contoso.com and count > 8", 100);
        assert_eq!(ids(&p), ["hunt-9"]);
        let p = query(&s, HuntSource::Alerts, "tactic = ta0003 and technique ~ 1078", 100);
        assert_eq!(p.total, 5);
        let p = query(&s, HuntSource::Alerts, "tactic != TA0003", 100);
        assert_eq!(p.total, 5);
        let p = query(&s, HuntSource::Alerts, "entities ~ \"bob@contoso.com/.ssh\"", 100);
        assert_eq!(p.total, 5);
        let p = query(&s, HuntSource::Alerts, "rule !~ ssh and severity = critical", 100);
        assert_eq!(ids(&p), ["hunt-4"]);
        // Cells: severity by name, entities in words.
        let row = &query(&s, HuntSource::Alerts, "id = hunt-3", 1).rows[0];
        assert_eq!(row[3], "high");
        assert_eq!(row[8], "T1078");
        assert!(row[9].as_str().unwrap().contains("user=bob@contoso.com"), "{row:?}");
    }

    /// Ids stored as 16 bytes (store/sqlite/alert_id) print and filter as their
    /// text: exact (any case, as before), contains, and not-equal.
    #[test]
    fn ids_stored_as_bytes_hunt_as_their_text() {
        let (_d, mut s) = open();
        let texts: Vec<String> = (1..=3u128)
            .map(|n| ward_protocol::Id128::from_u128((0x0190u128 << 112) | n).to_string())
            .collect();
        let alerts: Vec<SourcedAlert> = texts
            .iter()
            .enumerate()
            .map(|(i, id)| SourcedAlert {
                id: id.clone(),
                ..alert(
                    i as u64,
                    "Password spray",
                    Severity::High,
                    "alice@contoso.com",
                    "TA0006",
                )
            })
            .collect();
        s.insert_sourced_alerts(&alerts, T0).unwrap();
        let bytes: i64 = s
            .conn
            .query_row("SELECT COUNT(*) FROM alerts WHERE typeof(id) = 'blob'", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(bytes, 3);
        assert_eq!(
            ids(&query(&s, HuntSource::Alerts, "", 10)),
            [texts[2].as_str(), texts[1].as_str(), texts[0].as_str()]
        );
        let exact = format!("id = {}", texts[1].to_lowercase());
        assert_eq!(ids(&query(&s, HuntSource::Alerts, &exact, 10)), [texts[1].as_str()]);
        let tail = format!("id ~ {}", &texts[0][20..]);
        assert_eq!(ids(&query(&s, HuntSource::Alerts, &tail, 10)), [texts[0].as_str()]);
        let not = format!("id != {}", texts[0]);
        assert_eq!(
            ids(&query(&s, HuntSource::Alerts, &not, 10)),
            [texts[2].as_str(), texts[1].as_str()]
        );
    }

    #[test]
    fn pages_follow_their_cursor_and_the_time_range() {
        let (_d, s) = seeded(7);
        let mut q = HuntQuery {
            source: HuntSource::Alerts,
            filters: vec![],
            since_ms: Some((T0 + 1000) as i64),
            until_ms: Some((T0 + 6000) as i64),
            cursor: None,
            limit: 2,
        };
        let mut seen = Vec::new();
        loop {
            let p = s.hunt(&q, Duration::from_secs(60)).unwrap().unwrap();
            assert_eq!(p.total, 5);
            seen.extend(ids(&p));
            match p.next_cursor {
                Some(c) => q.cursor = HuntCursor::parse(&c),
                None => break,
            }
        }
        assert_eq!(seen, ["hunt-5", "hunt-4", "hunt-3", "hunt-2", "hunt-1"]);
    }

    #[test]
    fn injection_attempts_are_values_and_match_nothing() {
        let (_d, s) = seeded(4);
        for text in [
            r#"user = "x' OR '1'='1""#,
            "user = x');DROP/**/TABLE/**/alerts;--",
            "user = \"x'); DROP TABLE alerts; --\"",
            r#"rule ~ "%' OR 1=1 --""#,
            r#"entities ~ "\") OR 1=1 --""#,
            "technique = \"T1078') OR 1=1 --\"",
        ] {
            let p = query(&s, HuntSource::Alerts, text, 100);
            assert_eq!(p.total, 0, "{text}");
        }
        // The table is still there, with every row.
        assert_eq!(query(&s, HuntSource::Alerts, "", 100).total, 4);
        // LIKE wildcards are not wildcards: contains is literal.
        assert_eq!(query(&s, HuntSource::Alerts, "rule ~ %", 100).total, 0);
        assert_eq!(query(&s, HuntSource::Alerts, "rule ~ _", 100).total, 0);
    }

    #[test]
    fn sign_ins_and_mail_are_hunted_too() {
        let (_d, s) = open();
        for (i, (user, ip, outcome)) in [
            ("alice@contoso.com", "203.0.113.7", "failure"),
            ("bob@contoso.com", "203.0.113.7", "failure"),
            ("alice@contoso.com", "198.51.100.2", "success"),
        ]
        .iter()
        .enumerate()
        {
            s.conn
                .execute(
                    "INSERT INTO sign_ins (record_key, provider, time_ms, user, ip, outcome, result, raw, imported_at_ms)
                     VALUES (?1, 'entra', ?2, ?3, ?4, ?5, '0', '{}', 0)",
                    params![format!("k{i}"), T0 as i64 + i as i64, user, ip, outcome],
                )
                .unwrap();
        }
        s.conn
            .execute(
                "INSERT INTO mail_events (record_key, kind, time_ms, sender, recipient, subject, raw, imported_at_ms)
                 VALUES ('m1', 'email', 1, 'evil@example.net', 'alice@contoso.com', 'Invoice overdue', '{}', 0)",
                [],
            )
            .unwrap();
        let p = query(&s, HuntSource::SignIns, "ip = 203.0.113.7 and outcome = failure", 100);
        assert_eq!(p.total, 2);
        assert_eq!(p.rows[0][1], "bob@contoso.com");
        let p = query(&s, HuntSource::SignIns, "location !~ paris", 100);
        assert_eq!(p.total, 3, "a missing location does not contain paris");
        let p = query(&s, HuntSource::Mail, "subject ~ INVOICE", 100);
        assert_eq!(p.rows[0][2], "evil@example.net");
    }

    #[test]
    fn directory_events_are_hunted_too() {
        let (_d, s) = open();
        for (i, (kind, actor, items)) in [
            ("mail_access", "contoso mail sync", 1200),
            ("mail_access", "alice@contoso.com", 20),
            ("role_assigned", "admin@contoso.com", 1),
        ]
        .iter()
        .enumerate()
        {
            s.conn
                .execute(
                    "INSERT INTO audit_events (record_key, provider, kind, time_ms, operation, actor, items, failed, raw,
                         imported_at_ms)
                     VALUES (?1, 'm365', ?2, ?3, 'op', ?4, ?5, 0, '{}', 0)",
                    params![format!("k{i}"), kind, T0 as i64 + i as i64, actor, items],
                )
                .unwrap();
        }
        let p = query(&s, HuntSource::Directory, "kind = mail_access and items >= 1000", 100);
        assert_eq!((p.total, p.rows[0][3].as_str()), (1, Some("contoso mail sync")));
        let p = query(&s, HuntSource::Directory, "actor ~ CONTOSO.COM", 100);
        assert_eq!(p.total, 2);
    }

    #[test]
    fn a_hunt_past_its_time_limit_is_stopped_and_the_connection_stays_usable() {
        let (_d, s) = seeded(u64::from(MAX_EXPORT_ROWS) / 2);
        let q = HuntQuery {
            source: HuntSource::Alerts,
            filters: hunt::parse(HuntSource::Alerts, "entities ~ zzz").unwrap(),
            since_ms: None,
            until_ms: None,
            cursor: None,
            limit: 10,
        };
        assert_eq!(s.hunt(&q, Duration::ZERO).unwrap(), None);
        // The watchdog is gone: the next statement runs to its end.
        assert_eq!(query(&s, HuntSource::Alerts, "", 1).total, 5000);
    }

    #[test]
    fn saved_hunts_are_per_analyst_replaced_by_name_and_capped() {
        let (_d, mut s) = open();
        let h = |name: &str, query: &str| NewSavedHunt {
            name: name.into(),
            source: "alerts".into(),
            query: query.into(),
            window_ms: Some(86_400_000),
        };
        let a = s.save_hunt("ann", &h("ssh", "rule ~ ssh"), 2, 1).unwrap().unwrap();
        s.save_hunt("bob", &h("ssh", "rule ~ key"), 2, 1).unwrap().unwrap();
        let again = s.save_hunt("ann", &h("ssh", "rule ~ sshd"), 2, 5).unwrap().unwrap();
        assert_eq!(
            (again.id, again.query.as_str(), again.created_at_ms, again.updated_at_ms),
            (a.id, "rule ~ sshd", 1, 5)
        );
        s.save_hunt("ann", &h("spray", "rule ~ spray"), 2, 6).unwrap().unwrap();
        assert_eq!(s.save_hunt("ann", &h("third", "x = 1"), 2, 7).unwrap(), None);
        // Replacing one of the two is still allowed at the cap.
        assert!(s.save_hunt("ann", &h("spray", "rule ~ pass"), 2, 8).unwrap().is_some());
        let names: Vec<String> = s.saved_hunts("ann").unwrap().into_iter().map(|h| h.name).collect();
        assert_eq!(names, ["spray", "ssh"]);
        assert!(!s.delete_saved_hunt("bob", a.id).unwrap(), "bob cannot delete ann's");
        assert!(s.delete_saved_hunt("ann", a.id).unwrap());
        assert_eq!(s.saved_hunts("ann").unwrap().len(), 1);
        assert_eq!(s.saved_hunts("bob").unwrap()[0].query, "rule ~ key");
    }
}
