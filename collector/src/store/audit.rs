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

use serde::Serialize;

use super::StoreError;
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

/// The hash-chained audit log: appending, listing and verifying the chain.
pub trait AuditStore {
    /// Audit entries, newest first.
    fn list_audit(&self, before_id: Option<i64>, limit: u32) -> Result<Vec<AuditEntry>, StoreError>;

    /// Recomputes the audit hash chain (see the module doc for what it covers).
    fn verify_audit_chain(&self) -> Result<AuditChainReport, StoreError>;

    /// Appends an operator action to the audit log.
    fn audit(&self, actor: &str, action: &str, target: &str, detail: &str, now_ms: u64) -> Result<(), StoreError>;
}
