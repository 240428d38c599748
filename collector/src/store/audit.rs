//! The hash-chained audit log: every change anyone makes (people, automation,
//! devices, the collector) is appended in the transaction that makes it.
//!
//! Each audit entry written by this version carries
//! `hash = SHA-256("ward-audit-v1\0" || prev_hash || id || at_ms || len-prefixed actor, action, target, detail)`,
//! where `prev_hash` is the hash of the previous chained entry (32 zero bytes for
//! the first). [`Store::verify_audit_chain`] recomputes it: an altered, removed
//! or inserted entry breaks the chain from that point. Entries written before
//! migration 3 have no hash and are reported as unchained, not verified; and
//! removing the newest entries leaves a valid (shorter) chain, so the head hash
//! should be copied elsewhere (a log shipper) to detect truncation.

use rusqlite::{OptionalExtension, Transaction, params};
use serde::Serialize;

use super::{Store, StoreError, i64_of};
use crate::util::sha256;

/// One audit log entry.
#[derive(Debug, Clone, Serialize)]
pub struct AuditEntry {
    pub id: i64,
    pub at_ms: i64,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub detail: String,
    /// Hex; absent for entries written before the chain existed.
    pub hash: Option<String>,
}

/// The result of checking the audit chain.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct AuditChainReport {
    /// Chained entries whose hash verified, up to the first bad one.
    pub verified: u64,
    /// Entries written before the chain existed (not covered).
    pub unchained_legacy: u64,
    /// The first entry that breaks the chain, if any.
    pub broken_at: Option<i64>,
    /// Hex hash of the newest chained entry: keep it elsewhere to detect truncation.
    pub head: Option<String>,
}

impl AuditChainReport {
    pub fn ok(&self) -> bool {
        self.broken_at.is_none()
    }
}

/// The chained hash of one audit entry.
pub fn audit_hash(
    prev: &[u8; 32],
    id: i64,
    at_ms: i64,
    actor: &str,
    action: &str,
    target: &str,
    detail: &str,
) -> [u8; 32] {
    let mut buf = Vec::with_capacity(96 + actor.len() + action.len() + target.len() + detail.len());
    buf.extend_from_slice(b"ward-audit-v1\0");
    buf.extend_from_slice(prev);
    buf.extend_from_slice(&id.to_le_bytes());
    buf.extend_from_slice(&at_ms.to_le_bytes());
    for field in [actor, action, target, detail] {
        buf.extend_from_slice(&(field.len() as u64).to_le_bytes());
        buf.extend_from_slice(field.as_bytes());
    }
    sha256(&buf)
}

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

impl Store {
    /// Audit entries, newest first.
    pub fn list_audit(&self, before_id: Option<i64>, limit: u32) -> Result<Vec<AuditEntry>, StoreError> {
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

    /// Recomputes the audit hash chain (see the module doc for what it covers).
    pub fn verify_audit_chain(&self) -> Result<AuditChainReport, StoreError> {
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
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn open() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("ward.db")).unwrap();
        (dir, store)
    }

    fn append(store: &Store, n: u64) {
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
