//! The SQLite side of [`crate::store::export`]: the three streams the sinks tail
//! (read from the collector's database), and the spool, a database file of its own
//! so that spooling never takes the collector database's write lock from ingest.

use std::collections::HashMap;
use std::path::Path;

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use super::alert_id::alert_id;
use super::incidents::{SUMMARY_COLUMNS, summary_row};
use super::{BUSY_TIMEOUT, SqliteStore, StoreError};
use crate::store::Maintenance;
use crate::store::export::*;

impl ExportStore for SqliteStore {
    fn export_newest(&self) -> Result<ExportMarks, StoreError> {
        Ok(self.conn.query_row(
            "SELECT (SELECT COALESCE(MAX(rowid), 0) FROM alerts),
                    (SELECT COALESCE(MAX(alert_rowid), 0) FROM incident_alerts),
                    (SELECT COALESCE(MAX(id), 0) FROM incident_activity)",
            [],
            |r| {
                Ok(ExportMarks {
                    alert: r.get(0)?,
                    link: r.get(1)?,
                    activity: r.get(2)?,
                })
            },
        )?)
    }

    fn export_read(&self, from: ExportMarks, limit: u32) -> Result<ExportBatch, StoreError> {
        self.read_snapshot(|s| s.export_read_now(from, limit))
    }
}

impl SqliteStore {
    fn export_read_now(&self, from: ExportMarks, limit: u32) -> Result<ExportBatch, StoreError> {
        let sql = format!(
            "SELECT {}, (SELECT hostname FROM devices d WHERE d.id = alerts.device_id)
             FROM alerts WHERE rowid > ?1 ORDER BY rowid LIMIT ?2",
            Self::ALERT_COLUMNS
        );
        let alerts: Vec<ExportAlert> = self
            .conn
            .prepare_cached(&sql)?
            .query_map(params![from.alert, limit], |r| {
                Ok(ExportAlert {
                    alert: Self::alert_row(r)?,
                    hostname: r.get(Self::ALERT_COLUMN_COUNT)?,
                })
            })?
            .collect::<Result<_, _>>()?;
        let links: Vec<ExportLink> = self
            .conn
            .prepare_cached(
                "SELECT ia.alert_rowid, a.id, i.id, ia.reason, ia.linked_at_ms, i.opened_by
                 FROM incident_alerts ia JOIN incidents i ON i.seq = ia.incident JOIN alerts a ON a.rowid = ia.alert_rowid
                 WHERE ia.alert_rowid > ?1 ORDER BY ia.alert_rowid LIMIT ?2",
            )?
            .query_map(params![from.link, limit], |r| {
                let alert_id = alert_id(r, 1)?;
                // `opened_by` keeps the text id (correlation writes it).
                let opened = r.get::<_, Option<String>>(5)?.as_deref() == Some(alert_id.as_str());
                Ok(ExportLink {
                    alert_rowid: r.get(0)?,
                    alert_id,
                    incident_id: r.get(2)?,
                    reason: r.get(3)?,
                    at_ms: r.get(4)?,
                    opened,
                })
            })?
            .collect::<Result<_, _>>()?;
        let activity: Vec<ExportActivity> = self
            .conn
            .prepare_cached(
                "SELECT a.id, i.id, a.at_ms, a.actor, a.kind, a.detail
                 FROM incident_activity a JOIN incidents i ON i.seq = a.incident
                 WHERE a.id > ?1 ORDER BY a.id LIMIT ?2",
            )?
            .query_map(params![from.activity, limit], |r| {
                Ok(ExportActivity {
                    id: r.get(0)?,
                    incident_id: r.get(1)?,
                    at_ms: r.get(2)?,
                    actor: r.get(3)?,
                    kind: r.get(4)?,
                    detail: r.get(5)?,
                })
            })?
            .collect::<Result<_, _>>()?;
        let mut ids: Vec<&str> = links
            .iter()
            .map(|l| l.incident_id.as_str())
            .chain(activity.iter().map(|a| a.incident_id.as_str()))
            .collect();
        ids.sort_unstable();
        ids.dedup();
        let sql = format!("SELECT {SUMMARY_COLUMNS} FROM incidents i WHERE i.id = ?1");
        let mut stmt = self.conn.prepare_cached(&sql)?;
        let mut incidents = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(s) = stmt.query_row(params![id], summary_row).optional()? {
                incidents.push(s);
            }
        }
        let marks = ExportMarks {
            alert: alerts.last().map_or(from.alert, |a| a.alert.rowid),
            link: links.last().map_or(from.link, |l| l.alert_rowid),
            activity: activity.last().map_or(from.activity, |a| a.id),
        };
        Ok(ExportBatch {
            alerts,
            links,
            activity,
            incidents,
            marks,
        })
    }
}

const SPOOL_SCHEMA: &str = "
    CREATE TABLE IF NOT EXISTS spool (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        sink TEXT NOT NULL,
        id TEXT NOT NULL,
        enqueued_ms INTEGER NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        body BLOB NOT NULL
    );
    CREATE INDEX IF NOT EXISTS spool_by_sink ON spool(sink, seq);
    CREATE TABLE IF NOT EXISTS marks (
        name TEXT PRIMARY KEY,
        value INTEGER NOT NULL
    ) WITHOUT ROWID;
";

/// The export spool on its own SQLite file (WAL, `synchronous=FULL`: an append
/// or an acknowledgement that returned survives a crash or power loss).
pub struct SqliteSpool {
    conn: Connection,
    /// Records held per sink (counted at open, kept up to date by every change).
    depth: HashMap<String, u64>,
}

impl std::fmt::Debug for SqliteSpool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteSpool").field("depth", &self.depth).finish()
    }
}

impl SqliteSpool {
    pub fn open(path: &Path) -> Result<SqliteSpool, StoreError> {
        let mut conn = Connection::open(path)?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.set_transaction_behavior(TransactionBehavior::Immediate);
        conn.execute_batch(SPOOL_SCHEMA)?;
        let depth = conn
            .prepare("SELECT sink, COUNT(*) FROM spool GROUP BY sink")?
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?.max(0) as u64)))?
            .collect::<Result<_, _>>()?;
        Ok(SqliteSpool { conn, depth })
    }

    fn recount(&mut self, sink: &str) -> Result<(), StoreError> {
        let n: i64 = self
            .conn
            .prepare_cached("SELECT COUNT(*) FROM spool WHERE sink = ?1")?
            .query_row(params![sink], |r| r.get(0))?;
        self.depth.insert(sink.to_string(), n.max(0) as u64);
        Ok(())
    }
}

impl SpoolStore for SqliteSpool {
    fn spool_marks(&self) -> Result<Option<ExportMarks>, StoreError> {
        let mut marks = ExportMarks::default();
        let mut found = false;
        let mut stmt = self.conn.prepare_cached("SELECT name, value FROM marks")?;
        for row in stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))? {
            let (name, value) = row?;
            found = true;
            match name.as_str() {
                "alert" => marks.alert = value,
                "link" => marks.link = value,
                "activity" => marks.activity = value,
                _ => {}
            }
        }
        Ok(found.then_some(marks))
    }

    fn spool_append(
        &mut self,
        records: &[NewSpooled],
        marks: ExportMarks,
        caps: &[(String, u64)],
        now_ms: u64,
    ) -> Result<Appended, StoreError> {
        let mut per_sink: Vec<(String, u64, u64)> = caps.iter().map(|(s, _)| (s.clone(), 0, 0)).collect();
        let mut depth = self.depth.clone();
        let tx = self.conn.transaction()?;
        {
            let mut insert =
                tx.prepare_cached("INSERT INTO spool (sink, id, enqueued_ms, body) VALUES (?1, ?2, ?3, ?4)")?;
            for r in records {
                let Some(i) = caps.iter().position(|(s, _)| *s == r.sink) else {
                    continue;
                };
                let held = depth.entry(r.sink.clone()).or_insert(0);
                if *held >= caps[i].1 {
                    per_sink[i].2 += 1;
                    continue;
                }
                insert.execute(params![r.sink, r.id, i64::try_from(now_ms).unwrap_or(i64::MAX), r.body])?;
                *held += 1;
                per_sink[i].1 += 1;
            }
            let mut mark = tx.prepare_cached(
                "INSERT INTO marks (name, value) VALUES (?1, ?2)
                 ON CONFLICT(name) DO UPDATE SET value = MAX(value, excluded.value)",
            )?;
            mark.execute(params!["alert", marks.alert])?;
            mark.execute(params!["link", marks.link])?;
            mark.execute(params!["activity", marks.activity])?;
        }
        tx.commit()?;
        self.depth = depth;
        Ok(Appended { per_sink })
    }

    fn spool_peek(&self, sink: &str, limit: u32) -> Result<Vec<Spooled>, StoreError> {
        Ok(self
            .conn
            .prepare_cached(
                "SELECT seq, id, enqueued_ms, attempts, body FROM spool WHERE sink = ?1 ORDER BY seq LIMIT ?2",
            )?
            .query_map(params![sink, limit], |r| {
                Ok(Spooled {
                    seq: r.get(0)?,
                    id: r.get(1)?,
                    enqueued_ms: r.get::<_, i64>(2)?.max(0) as u64,
                    attempts: u32::try_from(r.get::<_, i64>(3)?.max(0)).unwrap_or(u32::MAX),
                    body: r.get(4)?,
                })
            })?
            .collect::<Result<_, _>>()?)
    }

    fn spool_ack(&mut self, sink: &str, through_seq: i64) -> Result<(), StoreError> {
        let gone = self
            .conn
            .prepare_cached("DELETE FROM spool WHERE sink = ?1 AND seq <= ?2")?
            .execute(params![sink, through_seq])? as u64;
        match self.depth.get_mut(sink) {
            Some(n) if *n >= gone => *n -= gone,
            _ => self.recount(sink)?,
        }
        Ok(())
    }

    fn spool_failed(&mut self, sink: &str, through_seq: i64) -> Result<(), StoreError> {
        self.conn
            .prepare_cached("UPDATE spool SET attempts = attempts + 1 WHERE sink = ?1 AND seq <= ?2")?
            .execute(params![sink, through_seq])?;
        Ok(())
    }

    fn spool_depth(&self, sink: &str) -> Result<(u64, Option<u64>), StoreError> {
        let oldest: Option<i64> = self
            .conn
            .prepare_cached("SELECT enqueued_ms FROM spool WHERE sink = ?1 ORDER BY seq LIMIT 1")?
            .query_row(params![sink], |r| r.get(0))
            .optional()?;
        Ok((
            self.depth.get(sink).copied().unwrap_or(0),
            oldest.map(|v| v.max(0) as u64),
        ))
    }

    fn spool_forget_others(&mut self, keep: &[String]) -> Result<Vec<(String, u64)>, StoreError> {
        let others: Vec<String> = self.depth.keys().filter(|s| !keep.contains(s)).cloned().collect();
        let mut out = Vec::new();
        for sink in others {
            let n = self
                .conn
                .prepare_cached("DELETE FROM spool WHERE sink = ?1")?
                .execute(params![sink])? as u64;
            self.depth.remove(&sink);
            if n > 0 {
                out.push((sink, n));
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn rec(sink: &str, id: &str) -> NewSpooled {
        NewSpooled {
            sink: sink.into(),
            id: id.into(),
            body: id.as_bytes().to_vec(),
        }
    }

    #[test]
    fn the_spool_keeps_order_bounds_each_sink_and_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("export.db");
        let mut spool = SqliteSpool::open(&path).unwrap();
        assert_eq!(spool.spool_marks().unwrap(), None);
        let caps = vec![("a".to_string(), 3), ("b".to_string(), 10)];
        let marks = ExportMarks {
            alert: 5,
            link: 2,
            activity: 1,
        };
        let records: Vec<NewSpooled> = (1..=5)
            .flat_map(|n| [rec("a", &format!("r{n}")), rec("b", &format!("r{n}"))])
            .collect();
        let appended = spool.spool_append(&records, marks, &caps, 1_000).unwrap();
        assert_eq!(appended.per_sink, [("a".into(), 3, 2), ("b".into(), 5, 0)]);
        // Records of a sink not configured are not spooled.
        spool.spool_append(&[rec("gone", "x")], marks, &caps, 1_001).unwrap();
        let a: Vec<String> = spool.spool_peek("a", 10).unwrap().into_iter().map(|r| r.id).collect();
        assert_eq!(a, ["r1", "r2", "r3"]);
        let b = spool.spool_peek("b", 2).unwrap();
        spool.spool_failed("b", b[1].seq).unwrap();
        spool.spool_ack("a", spool.spool_peek("a", 2).unwrap()[1].seq).unwrap();
        assert_eq!(spool.spool_depth("a").unwrap(), (1, Some(1_000)));
        drop(spool);

        let mut spool = SqliteSpool::open(&path).unwrap();
        assert_eq!(spool.spool_marks().unwrap(), Some(marks));
        assert_eq!(spool.spool_depth("a").unwrap().0, 1);
        assert_eq!(spool.spool_depth("b").unwrap().0, 5);
        let b = spool.spool_peek("b", 10).unwrap();
        assert_eq!(b.iter().map(|r| r.attempts).collect::<Vec<_>>(), [1, 1, 0, 0, 0]);
        assert_eq!(b[0].body, b"r1");
        // Marks never move back.
        spool.spool_append(&[], ExportMarks::default(), &caps, 2_000).unwrap();
        assert_eq!(spool.spool_marks().unwrap(), Some(marks));
        assert_eq!(
            spool.spool_forget_others(&["b".to_string()]).unwrap(),
            [("a".to_string(), 1)]
        );
        assert_eq!(spool.spool_depth("a").unwrap(), (0, None));
    }
}
