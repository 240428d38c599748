//! The SQLite backend: every store trait implemented on one connection. WAL mode
//! with `synchronous=FULL`, so a committed transaction survives a crash or power
//! loss; one writer connection (the ingest writer's thread) and read-only

//! connections for the API.

mod actions;
pub mod alert_id;
mod audit;
mod automation;
mod endpoint;
mod export;
mod feeds;
mod fold;
mod gaps;
mod hunt;
mod incident_view;
pub(crate) mod incidents;
mod rules;
mod schema;
mod silence;
pub(crate) mod sourced;
#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(crate) mod test_support;

use std::path::Path;
use std::time::{Duration, Instant};

use rusqlite::{Connection, OpenFlags, OptionalExtension, Transaction, TransactionBehavior, params};
use ward_protocol::{DeviceId, Severity};

use crate::entity;
use crate::store::*;
use alert_id::{AlertKey, alert_id};
use audit::append_audit;
pub use export::SqliteSpool;

impl SqliteStore {
    /// Sets how much the page cache may hold, in MiB (SQLite's default is 2 MiB). A
    /// correlation step rewrites pages all over the incident tables; a cache smaller
    /// than what one transaction touches spills dirty pages and reads them back.
    fn set_cache_mib(&self, mib: u32) -> Result<(), StoreError> {
        self.conn.pragma_update(None, "cache_size", -(i64::from(mib) * 1024))?;
        Ok(())
    }

    /// Waits for another process's write lock (a feed import, the CLI) by trying
    /// again every millisecond, for at most the same 10 s as the busy timeout.
    /// SQLite's own wait backs off to 100 ms between tries, so a process that commits
    /// and begins its next transaction at once took the lock again before this
    /// connection woke up: the writer (correlation steps, ingest rounds) waited
    /// behind the other process's whole run.
    fn poll_for_write_lock(&mut self) -> Result<(), StoreError> {
        let mut since = Instant::now();
        self.conn.busy_handler(Some(move |tries: i32| {
            if tries == 0 {
                since = Instant::now();
            }
            if since.elapsed() >= BUSY_TIMEOUT {
                return false;
            }
            std::thread::sleep(Duration::from_millis(1));
            true
        }))?;
        Ok(())
    }

    /// Stops SQLite checkpointing the write-ahead log inside this connection's
    /// commits (the writer's: `ingest::checkpoint` does it on another thread).
    fn disable_auto_checkpoint(&self) -> Result<(), StoreError> {
        self.conn.pragma_update(None, "wal_autocheckpoint", 0)?;
        Ok(())
    }

    /// Folds repeats from now on as `fold` says, into the newest rows stored so far too.
    fn set_fold(&mut self, fold: Fold) -> Result<(), StoreError> {
        self.fold = fold;
        self.fold_cache.clear();
        self.fold_loading = None;
        if fold != Fold::OFF {
            self.fold_loading = Some(fold::load_in_background(&self.conn)?);
        }
        Ok(())
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::Database(Box::new(e))
    }
}

pub struct SqliteStore {
    conn: Connection,
    /// How agent alerts and the collector's own device alerts fold at insert.
    fold: Fold,
    /// The newest row of each recent fold key (the writer's; empty elsewhere).
    fold_cache: fold::FoldCache,
    /// The fold keys of the rows stored before the writer started, still being read.
    fold_loading: Option<fold::Loading>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore").finish_non_exhaustive()
    }
}

fn sev_num(s: Severity) -> i64 {
    s as i64
}

fn sev_from(n: i64) -> &'static str {
    Severity::ALL.get(n as usize).map(Severity::as_str).unwrap_or("unknown")
}

/// How long a connection waits for another's lock before giving up with "database is locked".
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Prepared statements a connection keeps (see `SqliteStore::open`).
const STATEMENT_CACHE: usize = 128;

fn i64_of(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Inserts one alert and its entities; its rowid, or None if its id was already stored.
fn insert_alert(
    tx: &Transaction<'_>,
    id: AlertKey<'_>,
    device_id: &str,
    v: &VerifiedAlert,
    fold_hash: Option<&[u8; 16]>,
    now_ms: u64,
) -> Result<Option<i64>, StoreError> {
    let a = &v.alert;
    // The JSON columns are written straight from the alert (no `serde_json::Value`
    // in between): the same text, keys sorted and the last of a repeated name kept,
    // as a `serde_json::Map` would have it.
    let matched: std::collections::BTreeMap<&str, std::borrow::Cow<'_, str>> = a
        .matched
        .iter()
        .map(|m| (m.name.as_str(), entity::redact_userinfo(&m.value)))
        .collect();
    let inserted = tx
        .prepare_cached(
            "INSERT INTO alerts (id, device_id, seq, observed_at_ms, last_observed_at_ms, received_at_ms, rule_id,
                 rule_title, rule_author, severity, techniques, tactics, count, entities, matched, signed_payload, signature,
                 fold_hash)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18)
             ON CONFLICT(id) DO NOTHING",
        )?
        .execute(params![
            id,
            device_id,
            i64_of(a.seq),
            i64_of(a.observed_at_ms),
            i64_of(a.last_observed_at_ms),
            i64_of(now_ms),
            a.rule.id,
            a.rule.title,
            a.rule.author,
            sev_num(a.rule.severity),
            serde_json::to_string(&a.rule.techniques).unwrap_or_default(),
            serde_json::to_string(&a.rule.tactics).unwrap_or_default(),
            a.count,
            entity::entities_json(&a.entities),
            serde_json::to_string(&matched).unwrap_or_else(|_| "{}".into()),
            v.signed.payload,
            v.signed.signature,
            fold_hash.map(|h| &h[..]),
        ])?;
    if inserted == 0 {
        return Ok(None);
    }
    let rowid = tx.last_insert_rowid();
    let mut stmt =
        tx.prepare_cached("INSERT OR IGNORE INTO alert_entities (alert_rowid, kind, value) VALUES (?1, ?2, ?3)")?;
    for e in &a.entities {
        let (kind, value) = entity::key(e);
        stmt.execute(params![rowid, kind, value])?;
    }
    Ok(Some(rowid))
}

/// Keeps the device's sequence gaps true after a newly stored `seq`: a jump
/// opens a gap, a late arrival closes (part of) one. Returns the new high mark.
fn track_sequence(
    tx: &Transaction<'_>,
    device_id: &str,
    epoch: i64,
    seq: i64,
    last_seq: i64,
    now_ms: u64,
) -> Result<i64, StoreError> {
    if seq > last_seq {
        if seq > last_seq + 1 {
            tx.prepare_cached(
                "INSERT OR REPLACE INTO sequence_gaps (device_id, epoch, first_seq, last_seq, reason, recorded_at_ms)
                 VALUES (?1, ?5, ?2, ?3, 'missing', ?4)",
            )?
            .execute(params![device_id, last_seq + 1, seq - 1, i64_of(now_ms), epoch])?;
        }
        return Ok(seq);
    }
    let gap: Option<(i64, i64, String)> = tx
        .prepare_cached(
            "SELECT first_seq, last_seq, reason FROM sequence_gaps
             WHERE device_id = ?1 AND epoch = ?3 AND first_seq <= ?2 AND last_seq >= ?2",
        )?
        .query_row(params![device_id, seq, epoch], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .optional()?;
    if let Some((first, last, reason)) = gap {
        tx.execute(
            "DELETE FROM sequence_gaps WHERE device_id = ?1 AND epoch = ?3 AND first_seq = ?2",
            params![device_id, first, epoch],
        )?;
        let mut insert = tx.prepare_cached(
            "INSERT INTO sequence_gaps (device_id, epoch, first_seq, last_seq, reason, recorded_at_ms) VALUES (?1, ?6, ?2, ?3, ?4, ?5)",
        )?;
        if first < seq {
            insert.execute(params![device_id, first, seq - 1, reason, i64_of(now_ms), epoch])?;
        }
        if seq < last {
            insert.execute(params![device_id, seq + 1, last, reason, i64_of(now_ms), epoch])?;
        }
    }
    Ok(last_seq)
}

impl Maintenance for SqliteStore {
    fn become_writer(&mut self, fold: Fold, cache_mib: u32) -> Result<(), StoreError> {
        self.set_fold(fold)?;
        self.set_cache_mib(cache_mib)?;
        self.disable_auto_checkpoint()?;
        self.poll_for_write_lock()
    }

    fn checkpoint(&self) -> Result<(u64, u64), StoreError> {
        Ok(self.conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
            Ok((r.get::<_, i64>(1)?.max(0) as u64, r.get::<_, i64>(2)?.max(0) as u64))
        })?)
    }

    fn truncate_log(&self) -> Result<bool, StoreError> {
        // No busy wait: TRUNCATE takes the write lock first and would hold the writer
        // back while it waited for a long reader.
        self.conn.busy_timeout(std::time::Duration::ZERO)?;
        let busy = self
            .conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get::<_, i64>(0));
        self.conn.busy_timeout(BUSY_TIMEOUT)?;
        Ok(busy? == 0)
    }

    fn read_snapshot<R>(&self, f: impl FnOnce(&SqliteStore) -> Result<R, StoreError>) -> Result<R, StoreError> {
        let tx = Transaction::new_unchecked(&self.conn, TransactionBehavior::Deferred)?;
        let out = f(self);
        tx.commit()?;
        out
    }
}

impl DeviceStore for SqliteStore {
    // ---- enrollment tokens and devices ----

    fn create_enroll_token(
        &self,
        secret_sha256: &[u8; 32],
        max_uses: u32,
        now_ms: u64,
        expires_at_ms: u64,
    ) -> Result<(), StoreError> {
        self.conn.execute(
            "INSERT INTO enroll_tokens (secret_sha256, created_at_ms, expires_at_ms, max_uses) VALUES (?1, ?2, ?3, ?4)",
            params![&secret_sha256[..], i64_of(now_ms), i64_of(expires_at_ms), max_uses],
        )?;
        Ok(())
    }

    fn enroll(
        &mut self,
        secret_sha256: &[u8; 32],
        device: &NewDevice,
        now_ms: u64,
    ) -> Result<Result<(), TokenRefusal>, StoreError> {
        let tx = self.conn.transaction()?;
        let row: Option<(i64, i64, i64, i64)> = tx
            .query_row(
                "SELECT id, expires_at_ms, max_uses, uses FROM enroll_tokens WHERE secret_sha256 = ?1",
                params![&secret_sha256[..]],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .optional()?;
        let Some((token_id, expires_at_ms, max_uses, uses)) = row else {
            return Ok(Err(TokenRefusal::Unknown));
        };
        if i64_of(now_ms) >= expires_at_ms {
            return Ok(Err(TokenRefusal::Expired));
        }
        if uses >= max_uses {
            return Ok(Err(TokenRefusal::UsedUp));
        }
        tx.execute(
            "UPDATE enroll_tokens SET uses = uses + 1 WHERE id = ?1",
            params![token_id],
        )?;
        let inv = &device.inventory;
        tx.execute(
            "INSERT INTO devices (id, hostname, signing_key, cert_sha256, enrolled_at_ms, last_seen_ms, agent_version,
                                  os, kernel, addresses, logged_on_users)
             VALUES (?1, ?2, ?3, ?4, ?5, ?5, ?6, ?7, ?8, ?9, ?10)",
            params![
                device.id.to_string(),
                inv.hostname,
                &device.signing_key.0[..],
                &device.cert_sha256[..],
                i64_of(now_ms),
                inv.agent_version,
                inv.os,
                inv.kernel,
                serde_json::to_string(&inv.addresses).unwrap_or_default(),
                serde_json::to_string(&inv.logged_on_users).unwrap_or_default(),
            ],
        )?;
        append_audit(
            &tx,
            now_ms,
            "enrollment",
            "device.enroll",
            &device.id.to_string(),
            &inv.hostname,
        )?;
        tx.commit()?;
        Ok(Ok(()))
    }

    fn device_by_cert(&self, cert_sha256: &[u8; 32]) -> Result<Option<DeviceAuth>, StoreError> {
        self.conn
            .query_row(
                "SELECT id, signing_key, revoked_at_ms FROM devices WHERE cert_sha256 = ?1",
                params![&cert_sha256[..]],
                |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, Vec<u8>>(1)?,
                        r.get::<_, Option<i64>>(2)?,
                    ))
                },
            )
            .optional()?
            .map(|(id, key, revoked)| {
                Ok(DeviceAuth {
                    id: id.parse().map_err(|_| StoreError::Corrupt(format!("device id {id}")))?,
                    signing_key: PublicKey::from_slice(&key)
                        .map_err(|_| StoreError::Corrupt(format!("signing key of {id}")))?,
                    revoked: revoked.is_some(),
                })
            })
            .transpose()
    }

    fn revoke_device(&self, id: &str, actor: &str, now_ms: u64) -> Result<bool, StoreError> {
        let tx = self.conn.unchecked_transaction()?;
        let n = tx.execute(
            "UPDATE devices SET revoked_at_ms = ?2 WHERE id = ?1 AND revoked_at_ms IS NULL",
            params![id, i64_of(now_ms)],
        )?;
        let exists = n == 1
            || tx
                .query_row("SELECT 1 FROM devices WHERE id = ?1", params![id], |_| Ok(()))
                .optional()?
                .is_some();
        if n == 1 {
            append_audit(&tx, now_ms, actor, "device.revoke", id, "")?;
        }
        tx.commit()?;
        Ok(exists)
    }

    fn revoked_devices(&self) -> Result<Vec<String>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT id FROM devices WHERE revoked_at_ms IS NOT NULL")?;
        let ids = stmt.query_map([], |r| r.get(0))?.collect::<Result<Vec<String>, _>>()?;
        Ok(ids)
    }

    fn update_device_states(&self, states: &[(DeviceId, DeviceState)]) -> Result<(), StoreError> {
        let tx = self.conn.unchecked_transaction()?;
        for (id, state) in states {
            tx.prepare_cached(
                "UPDATE devices SET last_seen_ms = MAX(COALESCE(last_seen_ms, 0), ?2), isolation = ?3, outbox_depth = ?4,
                                    rule_pack_version = ?5, clock_skew_ms = ?6 WHERE id = ?1",
            )?
            .execute(params![
                id.to_string(),
                i64_of(state.seen_at_ms),
                state.isolation.as_str(),
                i64_of(state.outbox_depth),
                i64_of(state.rule_pack_version),
                state.clock_skew_ms
            ])?;
            if let Some(inv) = &state.inventory {
                tx.prepare_cached(
                    "UPDATE devices SET hostname = ?2, agent_version = ?3, os = ?4, kernel = ?5, addresses = ?6,
                                        logged_on_users = ?7 WHERE id = ?1",
                )?
                .execute(params![
                    id.to_string(),
                    inv.hostname,
                    inv.agent_version,
                    inv.os,
                    inv.kernel,
                    serde_json::to_string(&inv.addresses).unwrap_or_default(),
                    serde_json::to_string(&inv.logged_on_users).unwrap_or_default(),
                ])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    fn touch_device(&self, id: DeviceId, now_ms: u64) -> Result<(), StoreError> {
        self.conn.execute(
            "UPDATE devices SET last_seen_ms = ?2 WHERE id = ?1",
            params![id.to_string(), i64_of(now_ms)],
        )?;
        Ok(())
    }

    fn list_devices(&self) -> Result<Vec<DeviceView>, StoreError> {
        let sql = format!(
            "SELECT {} FROM devices d ORDER BY d.hostname, d.id",
            Self::DEVICE_COLUMNS
        );
        let mut stmt = self.conn.prepare_cached(&sql)?;
        let rows = stmt.query_map([], Self::device_row)?.collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    fn get_device(&self, id: &str) -> Result<Option<DeviceView>, StoreError> {
        let sql = format!("SELECT {} FROM devices d WHERE d.id = ?1", Self::DEVICE_COLUMNS);
        Ok(self.conn.query_row(&sql, params![id], Self::device_row).optional()?)
    }

    fn set_sensors(&self, id: DeviceId, sensors: &[SensorView], now_ms: u64) -> Result<(), StoreError> {
        let text = serde_json::to_string(sensors).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        self.conn
            .prepare_cached("UPDATE devices SET sensors = ?2, sensors_at_ms = ?3 WHERE id = ?1")?
            .execute(params![id.to_string(), text, i64_of(now_ms)])?;
        Ok(())
    }
}

impl AlertStore for SqliteStore {
    fn record_drops(
        &self,
        id: DeviceId,
        dropped: u64,
        seqs: &[u64],
        reason: &str,
        now_ms: u64,
    ) -> Result<(), StoreError> {
        let reason = gaps::bounded_reason(reason);
        let seqs = &seqs[..seqs.len().min(crate::store::gaps::MAX_REPORT_SEQS)];
        let tx = self.conn.unchecked_transaction()?;
        let epoch: i64 = tx
            .query_row(
                "SELECT outbox_epoch FROM devices WHERE id = ?1",
                params![id.to_string()],
                |r| r.get(0),
            )
            .optional()?
            .unwrap_or(0);
        tx.execute(
            "INSERT INTO drop_reports (device_id, epoch, report_id, seqs_epoch, dropped, first_seq, last_seq, reason, received_at_ms)
             VALUES (?1, ?2, NULL, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                id.to_string(),
                epoch,
                i64_of(dropped),
                seqs.iter().min().map(|&s| i64_of(s)),
                seqs.iter().max().map(|&s| i64_of(s)),
                reason,
                i64_of(now_ms)
            ],
        )?;
        tx.execute(
            "UPDATE devices SET dropped_total = dropped_total + ?2 WHERE id = ?1",
            params![id.to_string(), i64_of(dropped)],
        )?;
        self.apply_drops(&tx, id, epoch, seqs, None, &reason, now_ms)?;
        append_audit(
            &tx,
            now_ms,
            &id.to_string(),
            "device.dropped_alerts",
            &id.to_string(),
            &format!("{dropped}: {reason}"),
        )?;
        tx.commit()?;
        Ok(())
    }

    fn sequence_gaps(&self, device_id: &str) -> Result<Vec<SequenceGap>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT epoch, first_seq, last_seq, reason FROM sequence_gaps WHERE device_id = ?1 ORDER BY epoch, first_seq",
        )?;
        let gaps = stmt
            .query_map(params![device_id], |r| {
                Ok(SequenceGap {
                    epoch: crate::store::gaps::epoch_hex(r.get(0)?),
                    first_seq: r.get(1)?,
                    last_seq: r.get(2)?,
                    reason: r.get(3)?,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(gaps)
    }

    fn insert_alert_batches(
        &mut self,
        batches: &[(DeviceId, &[VerifiedAlert])],
        now_ms: u64,
    ) -> Result<Vec<InsertOutcome>, StoreError> {
        // Foreign keys go unchecked in this transaction (a B-tree lookup per row):
        // its rows cannot break them. Each batch's device row is read first in the
        // same write transaction (the batch fails without it), entity rows name the
        // alert row just inserted, a fold names a row the fold cache saw committed
        // (it is emptied after a rollback), and no alert or device row is ever
        // deleted. Enforcement can only change outside a transaction.
        self.conn.pragma_update(None, "foreign_keys", "OFF")?;
        let result = self.try_insert_alert_batches(batches, now_ms);
        let restored = self.conn.pragma_update(None, "foreign_keys", "ON");
        if result.is_err() {
            // Rolled back: the fold cache may name rows that were never committed.
            self.fold_cache.clear();
        }
        restored?;
        result
    }

    fn list_alerts(&self, f: &AlertFilter) -> Result<Vec<AlertView>, StoreError> {
        let (sql, values) = Self::alert_list_query(f);
        let mut stmt = self.conn.prepare_cached(&sql)?;
        let rows = stmt
            .query_map(rusqlite::params_from_iter(values), Self::alert_row)?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    fn get_alert(&self, id: &str) -> Result<Option<AlertView>, StoreError> {
        let sql = format!(
            "SELECT {} FROM alerts WHERE id = ?1
             UNION ALL
             SELECT {} FROM alerts WHERE rowid = (SELECT into_rowid FROM alert_folds WHERE alert_id = ?1)
             LIMIT 1",
            Self::ALERT_COLUMNS,
            Self::ALERT_COLUMNS
        );
        Ok(self
            .conn
            .query_row(&sql, params![AlertKey::of(id)], Self::alert_row)
            .optional()?)
    }

    fn count_alerts(&self) -> Result<i64, StoreError> {
        Ok(self.conn.query_row("SELECT COUNT(*) FROM alerts", [], |r| r.get(0))?)
    }
}

impl PublishedStore for SqliteStore {
    fn next_rule_pack_version(&self) -> Result<u64, StoreError> {
        let max: i64 = self
            .conn
            .query_row("SELECT COALESCE(MAX(version), 0) FROM rule_packs", [], |r| r.get(0))?;
        Ok(max as u64 + 1)
    }

    fn add_rule_pack(
        &self,
        version: u64,
        rule_count: usize,
        signed: &[u8],
        actor: &str,
        now_ms: u64,
    ) -> Result<(), StoreError> {
        let tx = self.conn.unchecked_transaction()?;
        tx.execute(
            "INSERT INTO rule_packs (version, created_at_ms, created_by, rule_count, signed) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![i64_of(version), i64_of(now_ms), actor, rule_count as i64, signed],
        )?;
        append_audit(
            &tx,
            now_ms,
            actor,
            "rules.push",
            &version.to_string(),
            &format!("{rule_count} rules"),
        )?;
        tx.commit()?;
        Ok(())
    }

    fn latest_rule_pack(&self) -> Result<Option<(u64, Vec<u8>)>, StoreError> {
        Ok(self
            .conn
            .query_row(
                "SELECT version, signed FROM rule_packs ORDER BY version DESC LIMIT 1",
                [],
                |r| Ok((r.get::<_, i64>(0)? as u64, r.get(1)?)),
            )
            .optional()?)
    }

    fn next_key_serial(&self) -> Result<u64, StoreError> {
        let max: i64 = self
            .conn
            .query_row("SELECT COALESCE(MAX(serial), 0) FROM key_rollovers", [], |r| r.get(0))?;
        Ok(max.max(0) as u64 + 1)
    }

    fn add_key_rollover(
        &self,
        rollover: &ward_protocol::KeyRollover,
        signed: &[u8],
        pack: Option<(u64, usize, &[u8])>,
    ) -> Result<(), StoreError> {
        let tx = self.conn.unchecked_transaction()?;
        tx.execute(
            "INSERT INTO key_rollovers (serial, new_key, retire_at_ms, created_at_ms, signed) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![
                i64_of(rollover.serial),
                &rollover.new_key.0[..],
                i64_of(rollover.retire_at_ms),
                i64_of(rollover.created_at_ms),
                signed
            ],
        )?;
        if let Some((version, rule_count, pack)) = pack {
            tx.execute(
                "INSERT INTO rule_packs (version, created_at_ms, created_by, rule_count, signed) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![i64_of(version), i64_of(rollover.created_at_ms), "cli", rule_count as i64, pack],
            )?;
        }
        append_audit(
            &tx,
            rollover.created_at_ms,
            "cli",
            "command_key.rotate",
            &rollover.serial.to_string(),
            &format!(
                "new key {}, previous keys retire at {}{}",
                hex::encode(rollover.new_key.0),
                rollover.retire_at_ms,
                pack.map(|(v, _, _)| format!(", rule pack {v} signed again"))
                    .unwrap_or_default()
            ),
        )?;
        tx.commit()?;
        Ok(())
    }

    fn key_rollovers(&self) -> Result<Vec<Vec<u8>>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT signed FROM key_rollovers ORDER BY serial")?;
        let rows = stmt.query_map([], |r| r.get(0))?.collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }
}

impl UserStore for SqliteStore {
    // ---- users ----

    fn add_user(&self, name: &str, role: &str, token_sha256: &[u8; 32], now_ms: u64) -> Result<(), StoreError> {
        let tx = self.conn.unchecked_transaction()?;
        tx.execute(
            "INSERT INTO users (name, role, token_sha256, created_at_ms) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT(name) DO UPDATE SET role = excluded.role, token_sha256 = excluded.token_sha256",
            params![name, role, &token_sha256[..], i64_of(now_ms)],
        )?;
        append_audit(&tx, now_ms, "cli", "user.add", name, role)?;
        tx.commit()?;
        Ok(())
    }

    fn list_users(&self) -> Result<Vec<(String, String, i64)>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT name, role, created_at_ms FROM users ORDER BY name")?;
        let rows = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    fn user_by_token(&self, token_sha256: &[u8; 32]) -> Result<Option<User>, StoreError> {
        Ok(self
            .conn
            .prepare_cached("SELECT name, role FROM users WHERE token_sha256 = ?1")?
            .query_row(params![&token_sha256[..]], |r| {
                Ok(User {
                    name: r.get(0)?,
                    role: r.get(1)?,
                })
            })
            .optional()?)
    }
}

impl SqliteStore {
    /// Opens (creating if needed) and migrates the database.
    pub fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        // The writer alone runs more distinct statements (ingest, folds, gaps, every
        // table a correlation step writes) than rusqlite's default 16: a cache that
        // small evicts them in turn and prepares each again.
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        alert_id::register(&conn)?;
        let mut store = SqliteStore {
            conn,
            fold: Fold::OFF,
            fold_cache: fold::FoldCache::default(),
            fold_loading: None,
        };
        // Every transaction takes the write lock when it begins, waiting up to the busy
        // timeout for another process (the CLI) to finish. A deferred one reads first and
        // fails at once with "database is locked" when another process wrote meanwhile.
        store.conn.set_transaction_behavior(TransactionBehavior::Immediate);
        store.migrate()?;
        Ok(store)
    }

    /// SQLite's quick check of the database file: empty when it is sound, else the
    /// problems it lists (at most `max`). It reads every page: seconds for a large
    /// database, once at start.
    pub fn quick_check(path: &Path, max: u32) -> Result<Vec<String>, StoreError> {
        let conn =
            Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)?;
        let mut stmt = conn.prepare(&format!("PRAGMA quick_check({max})"))?;
        let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
        let mut problems = Vec::new();
        for row in rows {
            let line = row?;
            if line != "ok" {
                problems.push(line);
            }
        }
        Ok(problems)
    }

    /// The alert list's statement with only the filters given, so SQLite plans for
    /// them (a device's list reads `alerts_by_device`, not every alert), and its values.
    fn alert_list_query(f: &AlertFilter) -> (String, Vec<rusqlite::types::Value>) {
        let mut conditions: Vec<&str> = Vec::new();
        let mut values: Vec<rusqlite::types::Value> = Vec::new();
        let mut when = |given: Option<rusqlite::types::Value>, condition: &'static str| {
            if let Some(v) = given {
                conditions.push(condition);
                values.push(v);
            }
        };
        when(f.device_id.clone().map(Into::into), "device_id = ?");
        when(f.min_severity.map(|s| sev_num(s).into()), "severity >= ?");
        when(f.rule_id.clone().map(Into::into), "rule_id = ?");
        when(f.since_ms.map(Into::into), "observed_at_ms >= ?");
        when(f.until_ms.map(Into::into), "observed_at_ms < ?");
        when(f.before_rowid.map(Into::into), "rowid < ?");
        values.push(i64::from(f.limit).into());
        let filter = if conditions.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", conditions.join(" AND "))
        };
        let sql = format!(
            "SELECT {} FROM alerts {filter} ORDER BY rowid DESC LIMIT ?",
            Self::ALERT_COLUMNS
        );
        (sql, values)
    }

    /// A read-only connection for the API.
    pub fn open_readonly(path: &Path) -> Result<SqliteStore, StoreError> {
        let conn =
            Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        // Whole-incident reads visit every alert of an incident: the file mapped
        // (shared with the OS page cache, no read call per page) and a larger page
        // cache (allocated as used) keep a 100,000-alert incident well under a second.
        conn.pragma_update(None, "mmap_size", 1i64 << 30)?;
        conn.pragma_update(None, "cache_size", -65_536i64)?;
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        alert_id::register(&conn)?;
        Ok(SqliteStore {
            conn,
            fold: Fold::OFF,
            fold_cache: fold::FoldCache::default(),
            fold_loading: None,
        })
    }

    fn migrate(&mut self) -> Result<(), StoreError> {
        let current: i64 = self.conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        let known = schema::MIGRATIONS.len() as i64;
        if current > known {
            return Err(StoreError::TooNew { found: current, known });
        }
        if current == known {
            return Ok(());
        }
        // Migrations that rebuild a table need foreign-key enforcement off (it cannot
        // change inside a transaction); the check below proves they left no dangling row.
        self.conn.pragma_update(None, "foreign_keys", "OFF")?;
        for (i, sql) in schema::MIGRATIONS.iter().enumerate().skip(current as usize) {
            let tx = self.conn.transaction()?;
            tx.execute_batch(sql)?;
            let dangling: i64 = tx.query_row("SELECT COUNT(*) FROM pragma_foreign_key_check", [], |r| r.get(0))?;
            if dangling > 0 {
                return Err(StoreError::Corrupt(format!(
                    "migration {} left {dangling} rows with dangling references",
                    i + 1
                )));
            }
            tx.pragma_update(None, "user_version", i as i64 + 1)?;
            tx.commit()?;
        }
        self.conn.pragma_update(None, "foreign_keys", "ON")?;
        Ok(())
    }

    fn device_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<DeviceView> {
        let json = |s: String| serde_json::from_str(&s).unwrap_or(serde_json::Value::Null);
        Ok(DeviceView {
            id: r.get(0)?,
            hostname: r.get(1)?,
            enrolled_at_ms: r.get(2)?,
            revoked_at_ms: r.get(3)?,
            last_seen_ms: r.get(4)?,
            agent_version: r.get(5)?,
            os: r.get(6)?,
            kernel: r.get(7)?,
            addresses: json(r.get(8)?),
            logged_on_users: json(r.get(9)?),
            isolation: r.get(10)?,
            outbox_depth: r.get(11)?,
            rule_pack_version: r.get(12)?,
            last_seq: r.get(13)?,
            dropped_total: r.get(14)?,
            missing_alerts: r.get(15)?,
            clock_skew_ms: r.get(16)?,
            outbox_epoch: crate::store::gaps::epoch_hex(r.get(17)?),
            storage_error: r.get(18)?,
            sensors: r
                .get::<_, Option<String>>(19)?
                .and_then(|s| serde_json::from_str(&s).ok())
                .unwrap_or_default(),
            sensors_at_ms: r.get(20)?,
            online: false,
        })
    }

    const DEVICE_COLUMNS: &'static str = "d.id, d.hostname, d.enrolled_at_ms, d.revoked_at_ms, d.last_seen_ms,
        d.agent_version, d.os, d.kernel, d.addresses, d.logged_on_users, d.isolation, d.outbox_depth,
        d.rule_pack_version, d.last_seq, d.dropped_total,
        (SELECT COALESCE(SUM(g.last_seq - g.first_seq + 1), 0) FROM sequence_gaps g WHERE g.device_id = d.id),
        d.clock_skew_ms, d.outbox_epoch, d.storage_error, d.sensors, d.sensors_at_ms";

    /// Merges the fold keys loaded since the writer started, once they are read
    /// (waits for them only when `wait`).
    fn merge_loaded_folds(&mut self, wait: bool) {
        let Some(loading) = &self.fold_loading else { return };
        let received = if wait {
            loading.recv().map_err(|_| std::sync::mpsc::TryRecvError::Disconnected)
        } else {
            loading.try_recv()
        };
        match received {
            Ok(Ok(loaded)) => self.fold_cache.merge_older(loaded),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "the fold keys of earlier alerts could not be read; their repeats start new rows")
            }
            Err(std::sync::mpsc::TryRecvError::Empty) => return,
            Err(std::sync::mpsc::TryRecvError::Disconnected) => {}
        }
        self.fold_loading = None;
    }

    /// Waits until the fold keys of the rows stored before the writer started are in
    /// its cache (tests that need folding into them at once).
    #[cfg(test)]
    pub(crate) fn wait_for_fold_load(&mut self) {
        self.merge_loaded_folds(true);
    }

    fn try_insert_alert_batches(
        &mut self,
        batches: &[(DeviceId, &[VerifiedAlert])],
        now_ms: u64,
    ) -> Result<Vec<InsertOutcome>, StoreError> {
        self.merge_loaded_folds(false);
        let fold = self.fold;
        let cache = &mut self.fold_cache;
        let tx = self.conn.transaction()?;
        let mut outcomes = Vec::with_capacity(batches.len());
        for (device, alerts) in batches {
            let mut outcome = InsertOutcome::default();
            let device_id = device.to_string();
            let (mut last_seq, epoch): (i64, i64) = tx.query_row(
                "SELECT last_seq, outbox_epoch FROM devices WHERE id = ?1",
                params![device_id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?;
            for v in alerts.iter() {
                let a = &v.alert;
                let hash = fold.hash(&device_id, &a.rule.id, &a.entities, &a.matched);
                let id = a.id.to_string();
                let placed = fold::place(
                    &tx,
                    cache,
                    &id,
                    hash.as_ref(),
                    fold::Observed::of(a),
                    fold,
                    fold::Evidence::of(v),
                    now_ms,
                )?;
                let kept = match placed {
                    fold::Placement::Duplicate => false,
                    fold::Placement::Folded(_) => {
                        outcome.folded += 1;
                        true
                    }
                    fold::Placement::NewRow => {
                        match insert_alert(&tx, AlertKey::from(a.id.0), &device_id, v, hash.as_ref(), now_ms)? {
                            Some(rowid) => {
                                if let Some(hash) = hash {
                                    cache.stored(hash, rowid, id, a.observed_at_ms, a.last_observed_at_ms);
                                }
                                outcome.stored += 1;
                                true
                            }
                            None => false,
                        }
                    }
                };
                if kept {
                    last_seq = track_sequence(&tx, &device_id, epoch, i64_of(a.seq), last_seq, now_ms)?;
                } else {
                    outcome.duplicates += 1;
                }
            }
            tx.execute(
                "UPDATE devices SET last_seq = ?2, last_seen_ms = ?3 WHERE id = ?1",
                params![device_id, last_seq, i64_of(now_ms)],
            )?;
            outcomes.push(outcome);
        }
        tx.commit()?;
        Ok(outcomes)
    }

    fn alert_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<AlertView> {
        let json = |s: String| serde_json::from_str(&s).unwrap_or(serde_json::Value::Null);
        Ok(AlertView {
            rowid: r.get(0)?,
            id: alert_id(r, 1)?,
            device_id: r.get(2)?,
            seq: r.get(3)?,
            observed_at_ms: r.get(4)?,
            last_observed_at_ms: r.get(5)?,
            received_at_ms: r.get(6)?,
            rule: RuleView {
                id: r.get(7)?,
                title: r.get(8)?,
                author: r.get(9)?,
                techniques: json(r.get(11)?),
                tactics: json(r.get(12)?),
            },
            severity: sev_from(r.get(10)?),
            count: r.get(13)?,
            entities: json(r.get(14)?),
            matched: json(r.get(15)?),
            source: r.get(16)?,
            folded_alerts: r.get(17)?,
        })
    }

    /// How many columns [`SqliteStore::ALERT_COLUMNS`] selects (a query may select more after them).
    const ALERT_COLUMN_COUNT: usize = 18;

    const ALERT_COLUMNS: &'static str = "rowid, id, device_id, seq, observed_at_ms, last_observed_at_ms,
        received_at_ms, rule_id, rule_title, rule_author, severity, techniques, tactics, count, entities, matched, source,
        folds";
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::SqliteStore;
    use crate::store::VerifiedAlert;
    use crate::store::prelude::*;
    use ward_protocol::{Alert, AlertId, DeviceId, Entity, Id128, KeyId, MatchedField, RuleRef, Severity, Signed};

    fn verified(device: DeviceId, n: u128, seq: u64) -> VerifiedAlert {
        VerifiedAlert {
            alert: Alert {
                id: AlertId(Id128::from_u128(n)),
                device_id: device,
                seq,
                observed_at_ms: 1_000,
                last_observed_at_ms: 1_000,
                rule: RuleRef {
                    id: "r".into(),
                    title: "R".into(),
                    author: "Ward".into(),
                    severity: Severity::High,
                    techniques: vec!["T1059".into()],
                    tactics: vec!["TA0002".into()],
                },
                entities: vec![
                    Entity::User {
                        name: "alice".into(),
                        uid: Some(1000),
                    },
                    Entity::File {
                        path: format!("/w/{n}/\"x\""),
                        sha256: Some([7; 32]),
                    },
                ],
                count: 1,
                matched: vec![
                    MatchedField {
                        name: "b".into(),
                        value: "first".into(),
                    },
                    MatchedField {
                        name: "a".into(),
                        value: "https://u:pw@h/".into(),
                    },
                    MatchedField {
                        name: "b".into(),
                        value: "second".into(),
                    },
                ],
            },
            signed: Signed {
                key_id: KeyId([0; 8]),
                payload: vec![1, 2, 3],
                signature: vec![4; 64],
            },
        }
    }

    /// An ingest round stores its rows without checking foreign keys, and the
    /// connection checks them again afterwards, whether the round committed or not;
    /// an alert of a device that is not enrolled is refused all the same.
    #[test]
    fn ingest_rounds_leave_foreign_keys_enforced() {
        let (_dir, mut store) = super::test_support::open();
        let device = super::test_support::enrolled_device(&mut store, 1, 1);
        let enforced = |s: &SqliteStore| -> i64 { s.conn.query_row("PRAGMA foreign_keys", [], |r| r.get(0)).unwrap() };
        let outcome = store
            .insert_alert_batches(&[(device, &[verified(device, 1, 1), verified(device, 2, 2)][..])], 9)
            .unwrap();
        assert_eq!(outcome[0].stored, 2);
        assert_eq!(enforced(&store), 1);
        let stranger = DeviceId(Id128::from_u128(99));
        assert!(
            store
                .insert_alert_batches(&[(stranger, &[verified(stranger, 3, 1)][..])], 9)
                .is_err()
        );
        assert_eq!(enforced(&store), 1);
        let dangling: i64 = store
            .conn
            .query_row("SELECT COUNT(*) FROM pragma_foreign_key_check", [], |r| r.get(0))
            .unwrap();
        assert_eq!(dangling, 0);
        assert_eq!(store.count_alerts().unwrap(), 2);
    }

    /// Ingest stores an agent alert's id as its 16 bytes, and a re-delivery of the
    /// same id (found through those bytes) stores nothing; reads give the text.
    #[test]
    fn ingest_stores_ids_as_sixteen_bytes() {
        let (_dir, mut store) = super::test_support::open();
        let device = super::test_support::enrolled_device(&mut store, 1, 1);
        let n = 0x0190_0000_0000_0000_0000_0000_0000_00ffu128;
        let v = verified(device, n, 1);
        let first = store
            .insert_alert_batches(&[(device, std::slice::from_ref(&v))], 9)
            .unwrap();
        let again = store
            .insert_alert_batches(&[(device, std::slice::from_ref(&v))], 10)
            .unwrap();
        assert_eq!((first[0].stored, again[0].stored, again[0].duplicates), (1, 0, 1));
        let bytes: Vec<u8> = store.conn.query_row("SELECT id FROM alerts", [], |r| r.get(0)).unwrap();
        assert_eq!(bytes, n.to_be_bytes().to_vec());
        let text = AlertId(Id128::from_u128(n)).to_string();
        assert_eq!(store.get_alert(&text).unwrap().unwrap().id, text);
    }

    /// The JSON columns as the API and correlation read them: entities as their
    /// API view, matched fields by name (sorted, the last of a repeated name kept,
    /// credentials in URLs redacted).
    #[test]
    fn stored_json_columns_are_the_views() {
        let (_dir, mut store) = super::test_support::open();
        let device = super::test_support::enrolled_device(&mut store, 1, 1);
        let v = verified(device, 1, 1);
        store
            .insert_alert_batches(&[(device, std::slice::from_ref(&v))], 9)
            .unwrap();
        let (entities, matched, techniques): (String, String, String) = store
            .conn
            .query_row("SELECT entities, matched, techniques FROM alerts", [], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .unwrap();
        let view = serde_json::Value::Array(v.alert.entities.iter().map(crate::entity::to_json).collect());
        assert_eq!(entities, view.to_string());
        let a = crate::entity::redact_userinfo("https://u:pw@h/");
        assert_ne!(a, "https://u:pw@h/");
        assert_eq!(matched, serde_json::json!({"a": a, "b": "second"}).to_string());
        assert_eq!(techniques, r#"["T1059"]"#);
    }

    /// The writer's connection takes the write lock within milliseconds of another
    /// process's commit. SQLite's own wait retries every 100 ms once it has waited
    /// a while, so it woke up 50 ms late on average, and a process that began its
    /// next transaction at once kept the lock.
    #[test]
    fn the_writer_takes_the_lock_soon_after_another_writer_commits() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ward.db");
        let mut store = SqliteStore::open(&path).unwrap();
        store.poll_for_write_lock().unwrap();
        let mut late = Vec::new();
        for round in 0..5u64 {
            let other = rusqlite::Connection::open(&path).unwrap();
            other.execute_batch("BEGIN IMMEDIATE").unwrap();
            let hold = Duration::from_millis(400 + round * 37);
            let release = std::thread::spawn(move || {
                std::thread::sleep(hold);
                other.execute_batch("COMMIT").unwrap();
                Instant::now()
            });
            store.conn.execute_batch("BEGIN IMMEDIATE").unwrap();
            let got = Instant::now();
            store.conn.execute_batch("COMMIT").unwrap();
            let released = release.join().unwrap();
            late.push(got.saturating_duration_since(released));
        }
        late.sort();
        assert!(late[2] < Duration::from_millis(15), "{late:?}");
    }
}
