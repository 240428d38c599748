//! The SQLite side of [`crate::store::audit`].

use rusqlite::{OptionalExtension, Transaction, params};

use super::{SqliteStore, StoreError, i64_of};
use crate::store::audit::*;

fn hash_of(blob: Option<Vec<u8>>) -> Result<Option<[u8; 32]>, StoreError> {
    blob.map(|b| {
        <[u8; 32]>::try_from(b.as_slice()).map_err(|_| StoreError::Corrupt("audit hash is not 32 bytes".into()))
    })
    .transpose()
}

/// Appends one chained audit entry inside `tx`.
pub(super) fn append_audit(
    tx: &Transaction<'_>,
    now_ms: u64,
    actor: &str,
    action: &str,
    target: &str,
    detail: &str,
) -> Result<(), StoreError> {
    let at = i64_of(now_ms);
    tx.prepare_cached("INSERT INTO audit_log (at_ms, actor, action, target, detail) VALUES (?1, ?2, ?3, ?4, ?5)")?
        .execute(params![at, actor, action, target, detail])?;
    let id = tx.last_insert_rowid();
    let prev: Option<Vec<u8>> = tx
        .prepare_cached("SELECT hash FROM audit_log WHERE id < ?1 AND hash IS NOT NULL ORDER BY id DESC LIMIT 1")?
        .query_row(params![id], |r| r.get(0))
        .optional()?;
    let prev = hash_of(prev)?.unwrap_or([0; 32]);
    let hash = audit_hash(&prev, id, at, actor, action, target, detail);
    tx.prepare_cached("UPDATE audit_log SET hash = ?2 WHERE id = ?1")?
        .execute(params![id, &hash[..]])?;
    Ok(())
}

impl AuditStore for SqliteStore {
    fn list_audit(&self, before_id: Option<i64>, limit: u32) -> Result<Vec<AuditEntry>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT id, at_ms, actor, action, target, detail, hash FROM audit_log
             WHERE (?1 IS NULL OR id < ?1) ORDER BY id DESC LIMIT ?2",
        )?;
        let rows = stmt
            .query_map(params![before_id, limit], |r| {
                Ok(AuditEntry {
                    id: r.get(0)?,
                    at_ms: r.get(1)?,
                    actor: r.get(2)?,
                    action: r.get(3)?,
                    target: r.get(4)?,
                    detail: r.get(5)?,
                    hash: r.get::<_, Option<Vec<u8>>>(6)?.map(hex::encode),
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    fn verify_audit_chain(&self) -> Result<AuditChainReport, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT id, at_ms, actor, action, target, detail, hash FROM audit_log ORDER BY id")?;
        let mut rows = stmt.query([])?;
        let mut report = AuditChainReport {
            verified: 0,
            unchained_legacy: 0,
            broken_at: None,
            head: None,
        };
        let mut prev: Option<[u8; 32]> = None;
        while let Some(r) = rows.next()? {
            let id: i64 = r.get(0)?;
            let hash = hash_of(r.get(6)?)?;
            let (Some(hash), expected_prev) = (hash, prev) else {
                if prev.is_some() {
                    // An unchained entry after the chain began: inserted, or its hash wiped.
                    report.broken_at = Some(id);
                    break;
                }
                report.unchained_legacy += 1;
                continue;
            };
            let computed = audit_hash(
                &expected_prev.unwrap_or([0; 32]),
                id,
                r.get(1)?,
                &r.get::<_, String>(2)?,
                &r.get::<_, String>(3)?,
                &r.get::<_, String>(4)?,
                &r.get::<_, String>(5)?,
            );
            if computed != hash {
                report.broken_at = Some(id);
                break;
            }
            report.verified += 1;
            prev = Some(hash);
        }
        report.head = prev.map(hex::encode);
        Ok(report)
    }

    fn audit(&self, actor: &str, action: &str, target: &str, detail: &str, now_ms: u64) -> Result<(), StoreError> {
        let tx = self.conn.unchecked_transaction()?;
        append_audit(&tx, now_ms, actor, action, target, detail)?;
        tx.commit()?;
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn open() -> (tempfile::TempDir, SqliteStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("ward.db")).unwrap();
        (dir, store)
    }

    fn append(store: &SqliteStore, n: u64) {
        let tx = store.conn.unchecked_transaction().unwrap();
        append_audit(&tx, n, "ann", "test.entry", "target", &format!("entry {n}")).unwrap();
        tx.commit().unwrap();
    }

    #[test]
    fn audit_chain_covers_new_entries_and_detects_edits_and_removals() {
        let (_dir, store) = open();
        // An entry from before the chain existed.
        store
            .conn
            .execute(
                "INSERT INTO audit_log (at_ms, actor, action, target, detail) VALUES (1, 'old', 'x', 'y', 'z')",
                [],
            )
            .unwrap();
        for n in 0..3 {
            append(&store, n);
        }
        let report = store.verify_audit_chain().unwrap();
        assert_eq!(
            (report.unchained_legacy, report.verified, report.broken_at),
            (1, 3, None)
        );
        let ids: Vec<i64> = store
            .list_audit(None, 100)
            .unwrap()
            .into_iter()
            .filter(|e| e.hash.is_some())
            .map(|e| e.id)
            .collect();
        // Removing a middle entry breaks the chain at its successor.
        store
            .conn
            .execute("DELETE FROM audit_log WHERE id = ?1", [ids[1]])
            .unwrap();
        assert_eq!(store.verify_audit_chain().unwrap().broken_at, Some(ids[0]));
        // An inserted unchained entry after the chain began is caught too.
        let (_dir2, fresh) = open();
        append(&fresh, 0);
        append(&fresh, 1);
        fresh
            .conn
            .execute(
                "INSERT INTO audit_log (at_ms, actor, action, target, detail) VALUES (1, 'sneaky', 'x', 'y', 'z')",
                [],
            )
            .unwrap();
        let r = fresh.verify_audit_chain().unwrap();
        assert!(!r.ok());
        assert_eq!(r.verified, 2);
    }
}
