//! The SQLite implementation of the outbox specified in [`super`]: schema, append with
//! the drop policy, leases, acks, drop reports and quarantine of a corrupt file.
//! It knows nothing of the network or of alert contents: it stores `Signed` bytes as
//! given and never decodes a payload.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use rusqlite::{Connection, ErrorCode, OpenFlags, OptionalExtension, Transaction, TransactionBehavior, params};
use thiserror::Error;
use ward_protocol::{AlertId, DropReport, KeyId, Severity, Signed};

/// Bytes added to every entry's accounted size for the row and index overhead.
pub const RECORD_OVERHEAD: u64 = 64;
/// The largest entry ever stored; larger alerts are recorded as dropped. Keeps any
/// single entry well inside one agent frame (`ward_protocol::codec::MAX_AGENT_FRAME`).
pub const MAX_ENTRY_BYTES: u64 = 512 * 1024;
/// The most sequence numbers one [`DropReport`] names.
pub const MAX_REPORT_SEQS: usize = 4096;
/// Drop rows kept with their seq; past this, further drops are only counted (one
/// row per reason with `seq` NULL), so a long outage cannot grow the file without bound.
pub const MAX_DROP_ROWS: i64 = 65_536;
/// Judged files are kept this long behind the judging point, for the start-up rescan.
pub const JUDGED_KEEP_MS: u64 = 120_000;
/// The WAL is truncated to this size after a checkpoint.
pub const WAL_LIMIT_BYTES: i64 = 4 << 20;

const FORMAT: i64 = 1;
/// Columns added to `drops` after format 1 shipped (added at open when missing).
const DROPS_COLUMNS: &[(&str, &str)] = &[
    ("seqs_epoch", "ALTER TABLE drops ADD COLUMN seqs_epoch INTEGER"),
    ("range_first", "ALTER TABLE drops ADD COLUMN range_first INTEGER"),
    ("range_last", "ALTER TABLE drops ADD COLUMN range_last INTEGER"),
];
const REASON_FULL: &str = "outbox full";
const REASON_TOO_LARGE: &str = "entry too large";
const REASON_CAP_LOWERED: &str = "outbox cap lowered";
/// How many `<name>.corrupt.<n>` names are tried before giving up.
const MAX_QUARANTINE_SLOTS: u32 = 1000;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL) STRICT;
CREATE TABLE IF NOT EXISTS entries (
    seq INTEGER PRIMARY KEY,
    severity INTEGER NOT NULL CHECK (severity BETWEEN 0 AND 4),
    alert_id BLOB NOT NULL CHECK (length(alert_id) = 16),
    key_id BLOB NOT NULL CHECK (length(key_id) = 8),
    payload BLOB NOT NULL,
    signature BLOB NOT NULL,
    size INTEGER NOT NULL
) STRICT;
CREATE INDEX IF NOT EXISTS entries_rank ON entries (severity, seq, size);
CREATE TABLE IF NOT EXISTS drops (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    seq INTEGER,
    lost INTEGER NOT NULL,
    reason TEXT NOT NULL
) STRICT;
CREATE INDEX IF NOT EXISTS drops_counting ON drops (reason) WHERE seq IS NULL;
CREATE TABLE IF NOT EXISTS judged (path TEXT PRIMARY KEY, changed_ms INTEGER NOT NULL) STRICT;
CREATE INDEX IF NOT EXISTS judged_by_time ON judged (changed_ms);
INSERT OR IGNORE INTO meta (key, value) VALUES ('format', 1), ('next_seq', 1), ('epoch', 0), ('judged_through_ms', 0);
";

/// Why an outbox call failed, and whether trying again can help.
#[derive(Debug, Error)]
pub enum OutboxError {
    /// Another process holds the outbox file. Retryable once it exits.
    #[error("the outbox file is locked by another process")]
    Locked,
    /// The filesystem is full. Retryable when space returns; nothing was changed.
    #[error("no space left on the device for the outbox")]
    DiskFull,
    /// An I/O error from the filesystem. Often transient; retryable.
    #[error("outbox I/O failed: {0}")]
    Io(#[from] std::io::Error),
    /// The file is damaged. Not retryable; reopening quarantines it.
    #[error("the outbox is corrupt: {0}")]
    Corrupt(String),
    /// Any other SQLite failure (misuse, permissions). Not retryable.
    #[error("outbox storage failed: {0}")]
    Sqlite(rusqlite::Error),
    /// The caller's closure could not build or sign the alert. Nothing was written.
    #[error("building the alert failed: {0}")]
    Build(Box<dyn std::error::Error + Send + Sync>),
}

impl OutboxError {
    /// Whether the same call may succeed later without anyone fixing anything.
    pub fn is_retryable(&self) -> bool {
        match self {
            OutboxError::Locked | OutboxError::DiskFull | OutboxError::Io(_) => true,
            OutboxError::Corrupt(_) | OutboxError::Sqlite(_) | OutboxError::Build(_) => false,
        }
    }
}

impl From<rusqlite::Error> for OutboxError {
    fn from(e: rusqlite::Error) -> Self {
        match e.sqlite_error_code() {
            Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => OutboxError::Locked,
            Some(ErrorCode::DiskFull) => OutboxError::DiskFull,
            Some(ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase) => OutboxError::Corrupt(e.to_string()),
            Some(ErrorCode::SystemIoFailure) => OutboxError::Io(std::io::Error::other(e)),
            _ => OutboxError::Sqlite(e),
        }
    }
}

/// The result of [`Outbox::append_with`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    /// The sequence number the alert was built with; never handed out again.
    pub seq: u64,
    /// False if the alert itself was dropped (too large, or everything it could
    /// have evicted outranks it); the drop is recorded for the next report.
    pub stored: bool,
    /// Alerts dropped by this call, the new one included if it was not stored.
    pub dropped: u64,
}

/// Entries handed to the link, to be acknowledged (or released) as one batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// Unique across restarts; the collector's acknowledgement names it.
    pub batch_id: u64,
    /// The entries' sequence numbers, ascending, parallel to `entries`.
    pub seqs: Vec<u64>,
    /// The signed alerts, oldest first, exactly as they were stored.
    pub entries: Vec<Signed>,
    /// Sum of the entries' accounted sizes.
    pub bytes: u64,
}

/// What a group commit records besides its alerts (see "Judging progress").
#[derive(Debug, Clone, Copy, Default)]
pub struct Progress<'a> {
    /// Every event observed up to this time (Unix ms) has been judged.
    pub through_ms: u64,
    /// Files judged in this group: path and change time.
    pub files: &'a [(String, u64)],
}

/// Unreported drops, as a report to send, and the last drop row it covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingDrops {
    pub report: DropReport,
    /// Pass to [`Outbox::clear_drops`] once the collector has taken the report; also
    /// the report's id (unique within this outbox epoch).
    pub upto: u64,
    /// The outbox epoch the report's sequence numbers belong to.
    pub seqs_epoch: u64,
    /// Sequence numbers lost as a range, inclusive, when not named one by one.
    pub lost_range: Option<(u64, u64)>,
}

/// The durable outbox. See the module documentation of [`super`] for the contract.
#[derive(Debug)]
pub struct Outbox {
    conn: Connection,
    path: PathBuf,
    max_bytes: u64,
    next_seq: u64,
    /// Bumped at every open: the high 32 bits of batch ids.
    epoch: u64,
    /// The outbox epoch: random, chosen when this file began; see "Epochs".
    outbox_epoch: u64,
    /// The low 32 bits of the last batch id handed out in this epoch.
    batch_counter: u64,
    /// Outstanding leases: batch id to the inclusive seq range it covers.
    leases: HashMap<u64, (u64, u64)>,
    /// Every entry with seq <= cursor is in an outstanding lease; pending ones are above.
    cursor: u64,
    depth: u64,
    bytes: u64,
    quarantined: Option<PathBuf>,
}

impl Outbox {
    /// Opens (or creates) the outbox at `path`, bounded to `max_bytes` accounted bytes.
    /// A corrupt file is moved aside and replaced by a fresh one that reports the loss.
    pub fn open(path: &Path, max_bytes: u64) -> Result<Outbox, OutboxError> {
        let high_water = HighWater::read(path);
        let existed = path.exists();
        let (mut conn, quarantined) = match open_checked(path) {
            Ok(conn) => (conn, None),
            Err(OutboxError::Corrupt(why)) => {
                let mut salvaged = salvage(path);
                salvaged.high_water = high_water;
                let aside = quarantine(path)?;
                tracing::warn!(
                    path = %path.display(),
                    aside = %aside.display(),
                    reason = %why,
                    "outbox file is corrupt; moved aside and started fresh"
                );
                let mut conn = open_checked(path)?;
                record_quarantine(&mut conn, &why, &aside, salvaged)?;
                (conn, Some(aside))
            }
            Err(e) => return Err(e),
        };

        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let epoch = read_meta(&tx, "epoch")?
            .checked_add(1)
            .ok_or_else(|| OutboxError::Corrupt("epoch overflow".into()))?;
        write_meta(&tx, "epoch", epoch)?;
        let outbox_epoch = match read_meta(&tx, "outbox_epoch") {
            Ok(e) if e != 0 => e,
            _ => {
                let e = new_epoch()?;
                write_meta(&tx, "outbox_epoch", e)?;
                // A new file where one was known (deleted, or replaced by an empty
                // one): what the old one held is lost; say which numbers.
                if quarantined.is_none()
                    && let Some(h) = high_water.filter(|h| h.epoch != e)
                {
                    let reason = if existed {
                        "outbox file was replaced by one without history (reset)"
                    } else {
                        "outbox file was deleted (reset)"
                    };
                    let reason = format!(
                        "{reason}: a new epoch {e:016x} starts; undelivered alerts of epoch {:016x} up to seq {} are lost",
                        h.epoch,
                        h.next_seq.saturating_sub(1)
                    );
                    tracing::warn!(%reason, "outbox reset");
                    insert_drop_ext(
                        &tx,
                        None,
                        0,
                        &reason,
                        Some(h.epoch),
                        Some((1, h.next_seq.saturating_sub(1))),
                    )?;
                }
                e
            }
        };
        // Rolled back (an older copy of this very file restored): numbers handed out
        // since must not be handed out again. Numbering continues past the high-water
        // mark, and the numbers in between are reported.
        let file_next = read_meta(&tx, "next_seq")?;
        if let Some(h) = high_water.filter(|h| h.epoch == outbox_epoch && h.next_seq > file_next) {
            write_meta(&tx, "next_seq", h.next_seq)?;
            let reason = format!(
                "outbox was rolled back (an older copy restored): seqs {file_next}..{} were handed out before and may be lost; numbering continues after them",
                h.next_seq - 1
            );
            tracing::warn!(%reason, "outbox rolled back");
            insert_drop_ext(&tx, None, 0, &reason, None, Some((file_next, h.next_seq - 1)))?;
        }
        tx.commit()?;

        let next_seq = read_meta(&conn, "next_seq")?;
        let (depth, bytes) = conn.query_row("SELECT COUNT(*), COALESCE(SUM(size), 0) FROM entries", [], |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?))
        })?;
        let mut outbox = Outbox {
            conn,
            path: path.to_path_buf(),
            max_bytes,
            next_seq,
            epoch,
            outbox_epoch,
            batch_counter: 0,
            leases: HashMap::new(),
            cursor: 0,
            depth: from_i64(depth)?,
            bytes: from_i64(bytes)?,
            quarantined,
        };
        if outbox.bytes > max_bytes {
            outbox.shrink_to_cap()?;
        }
        outbox.save_high_water();
        Ok(outbox)
    }

    /// Allocates the next seq, lets `build` make and sign the alert with it, and stores
    /// it durably (or records it as dropped) before returning. If `build` fails nothing
    /// is written and the seq is handed out again next time.
    pub fn append_with<E>(
        &mut self,
        severity: Severity,
        build: impl FnOnce(u64) -> Result<(AlertId, Signed), E>,
    ) -> Result<Appended, OutboxError>
    where
        E: std::error::Error + Send + Sync + 'static,
    {
        let mut build = Some(build);
        let mut out = self.append_group(
            &[severity],
            |_, seq| match build.take() {
                Some(b) => b(seq).map_err(|e| OutboxError::Build(Box::new(e))),
                None => Err(OutboxError::Corrupt("one alert built twice".into())),
            },
            Progress::default(),
        )?;
        out.pop()
            .unwrap_or_else(|| Err(OutboxError::Corrupt("no append result".into())))
    }

    /// Group commit: appends one alert per entry of `severities`, in order, in ONE
    /// durable transaction, exactly as the same [`Outbox::append_with`] calls one after
    /// the other would (same seqs, same evictions, same drop rows), but with one fsync.
    /// `build(i, seq)` makes and signs the `i`-th alert with its seq; if it fails, that
    /// alert's result is [`OutboxError::Build`], it takes no seq, and the others go on.
    /// The outer error means nothing at all was written (the whole group can be retried).
    pub fn append_many<E>(
        &mut self,
        severities: &[Severity],
        build: impl FnMut(usize, u64) -> Result<(AlertId, Signed), E>,
    ) -> Result<Vec<Result<Appended, OutboxError>>, OutboxError>
    where
        E: std::error::Error + Send + Sync + 'static,
    {
        self.append_many_judged(severities, build, Progress::default())
    }

    /// [`Outbox::append_many`], also recording in the same transaction how far judging
    /// got and which files were judged, so that what the outbox holds and what the
    /// start-up rescan may skip never disagree.
    pub fn append_many_judged<E>(
        &mut self,
        severities: &[Severity],
        mut build: impl FnMut(usize, u64) -> Result<(AlertId, Signed), E>,
        progress: Progress<'_>,
    ) -> Result<Vec<Result<Appended, OutboxError>>, OutboxError>
    where
        E: std::error::Error + Send + Sync + 'static,
    {
        self.append_group(
            severities,
            |i, seq| build(i, seq).map_err(|e| OutboxError::Build(Box::new(e))),
            progress,
        )
    }

    /// Records judging progress alone (a clean stop).
    pub fn record_progress(&mut self, progress: Progress<'_>) -> Result<(), OutboxError> {
        self.append_group(
            &[],
            |_, _| Err(OutboxError::Corrupt("nothing to build".into())),
            progress,
        )
        .map(|_| ())
    }

    /// How far the last run got judging (Unix ms; 0 if never recorded) and the files
    /// it judged that changed after `since_ms`, with their change times.
    pub fn judged_since(&self, since_ms: u64) -> Result<(u64, HashMap<String, u64>), OutboxError> {
        let through = read_meta(&self.conn, "judged_through_ms")?;
        let mut stmt = self
            .conn
            .prepare_cached("SELECT path, changed_ms FROM judged WHERE changed_ms > ?1")?;
        let mut rows = stmt.query([i64::try_from(since_ms).unwrap_or(i64::MAX)])?;
        let mut out = HashMap::new();
        while let Some(row) = rows.next()? {
            out.insert(row.get::<_, String>(0)?, from_i64(row.get(1)?)?);
        }
        Ok((through, out))
    }

    fn append_group(
        &mut self,
        severities: &[Severity],
        mut build: impl FnMut(usize, u64) -> Result<(AlertId, Signed), OutboxError>,
        progress: Progress<'_>,
    ) -> Result<Vec<Result<Appended, OutboxError>>, OutboxError> {
        let mut results = Vec::with_capacity(severities.len());
        let mut next_seq = self.next_seq;
        let mut bytes = self.bytes;
        let mut depth = self.depth;
        let mut evicted_total = 0usize;
        let mut refused = Vec::new();
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        for (i, &severity) in severities.iter().enumerate() {
            let seq = next_seq;
            let (alert_id, signed) = match build(i, seq) {
                Ok(built) => built,
                Err(e) => {
                    results.push(Err(e));
                    continue;
                }
            };
            let next = seq
                .checked_add(1)
                .ok_or_else(|| OutboxError::Corrupt("sequence counter overflow".into()))?;
            let size = entry_size(&signed);
            let sev = severity_rank(severity);
            let mut evicted: Vec<(u64, u64)> = Vec::new();
            let stored = if size > self.max_bytes.min(MAX_ENTRY_BYTES) {
                insert_drop(&tx, Some(seq), 1, REASON_TOO_LARGE)?;
                false
            } else {
                let need = (bytes + size).saturating_sub(self.max_bytes);
                let fits = need == 0 || {
                    // Everything stored is older than `seq`, so "ranks below" is severity <= ours.
                    match select_victims(&tx, sev, need)? {
                        Some(victims) => {
                            for &(victim, _) in &victims {
                                tx.execute("DELETE FROM entries WHERE seq = ?1", [to_i64(victim)?])?;
                                insert_drop(&tx, Some(victim), 1, REASON_FULL)?;
                            }
                            evicted = victims;
                            true
                        }
                        None => false,
                    }
                };
                if fits {
                    tx.prepare_cached(
                        "INSERT INTO entries (seq, severity, alert_id, key_id, payload, signature, size)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                    )?
                    .execute(params![
                        to_i64(seq)?,
                        sev,
                        &alert_id.0.0[..],
                        &signed.key_id.0[..],
                        &signed.payload,
                        &signed.signature,
                        to_i64(size)?
                    ])?;
                } else {
                    insert_drop(&tx, Some(seq), 1, REASON_FULL)?;
                }
                fits
            };
            next_seq = next;
            bytes = bytes.saturating_sub(evicted.iter().map(|&(_, s)| s).sum::<u64>());
            depth = depth.saturating_sub(evicted.len() as u64);
            if stored {
                bytes += size;
                depth += 1;
            } else {
                refused.push((seq, size));
            }
            evicted_total += evicted.len();
            let dropped = evicted.len() as u64 + u64::from(!stored);
            results.push(Ok(Appended { seq, stored, dropped }));
        }
        if next_seq != self.next_seq {
            write_meta(&tx, "next_seq", next_seq)?;
        }
        if progress.through_ms > 0 {
            let mut upsert = tx.prepare_cached(
                "INSERT INTO judged (path, changed_ms) VALUES (?1, ?2)
                 ON CONFLICT (path) DO UPDATE SET changed_ms = MAX(changed_ms, excluded.changed_ms)",
            )?;
            for (path, changed) in progress.files {
                upsert.execute(params![path, to_i64(*changed)?])?;
            }
            drop(upsert);
            tx.execute(
                "UPDATE meta SET value = MAX(value, ?1) WHERE key = 'judged_through_ms'",
                [to_i64(progress.through_ms)?],
            )?;
            tx.execute(
                "DELETE FROM judged WHERE changed_ms < ?1",
                [to_i64(progress.through_ms.saturating_sub(JUDGED_KEEP_MS))?],
            )?;
        }
        tx.commit()?;

        let advanced = next_seq != self.next_seq;
        self.next_seq = next_seq;
        self.bytes = bytes;
        self.depth = depth;
        if advanced {
            self.save_high_water();
        }
        for (seq, size) in refused {
            tracing::warn!(
                seq,
                size,
                "outbox dropped a new alert (too large, or outranked by everything stored)"
            );
        }
        if evicted_total > 0 {
            tracing::warn!(count = evicted_total, "outbox full: evicted lower-ranked alerts");
        }
        Ok(results)
    }

    /// Leases the oldest entries not already leased: at most `max_entries`, and at most
    /// `max_bytes` accounted bytes unless the first entry alone is larger.
    /// `Ok(None)` when nothing is pending.
    pub fn lease(&mut self, max_entries: usize, max_bytes: u64) -> Result<Option<Lease>, OutboxError> {
        if max_entries == 0 {
            return Ok(None);
        }
        let mut seqs = Vec::new();
        let mut entries = Vec::new();
        let mut total = 0u64;
        {
            let mut stmt = self.conn.prepare_cached(
                "SELECT seq, key_id, payload, signature, size FROM entries WHERE seq > ?1 ORDER BY seq LIMIT ?2",
            )?;
            let limit = i64::try_from(max_entries).unwrap_or(i64::MAX);
            let mut rows = stmt.query(params![to_i64(self.cursor)?, limit])?;
            while let Some(row) = rows.next()? {
                let size = from_i64(row.get(4)?)?;
                if !seqs.is_empty() && total + size > max_bytes {
                    break;
                }
                let key_id: Vec<u8> = row.get(1)?;
                let key_id: [u8; 8] = key_id
                    .try_into()
                    .map_err(|_| OutboxError::Corrupt("stored key id is not 8 bytes".into()))?;
                seqs.push(from_i64(row.get(0)?)?);
                entries.push(Signed {
                    key_id: KeyId(key_id),
                    payload: row.get(2)?,
                    signature: row.get(3)?,
                });
                total += size;
            }
        }
        let (Some(&first), Some(&last)) = (seqs.first(), seqs.last()) else {
            return Ok(None);
        };
        let batch_id = self.next_batch_id()?;
        self.leases.insert(batch_id, (first, last));
        self.cursor = last;
        Ok(Some(Lease {
            batch_id,
            seqs,
            entries,
            bytes: total,
        }))
    }

    /// Removes the entries of lease `batch_id` durably; returns how many were removed
    /// (fewer than leased if some were evicted meanwhile). Unknown batch: no-op, 0.
    pub fn ack(&mut self, batch_id: u64) -> Result<usize, OutboxError> {
        let Some(&(lo, hi)) = self.leases.get(&batch_id) else {
            return Ok(0);
        };
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let (count, freed) = tx.query_row(
            "SELECT COUNT(*), COALESCE(SUM(size), 0) FROM entries WHERE seq BETWEEN ?1 AND ?2",
            params![to_i64(lo)?, to_i64(hi)?],
            |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)),
        )?;
        tx.execute(
            "DELETE FROM entries WHERE seq BETWEEN ?1 AND ?2",
            params![to_i64(lo)?, to_i64(hi)?],
        )?;
        tx.commit()?;
        self.leases.remove(&batch_id);
        let count = from_i64(count)?;
        self.depth = self.depth.saturating_sub(count);
        self.bytes = self.bytes.saturating_sub(from_i64(freed)?);
        usize::try_from(count).map_err(|_| OutboxError::Corrupt("entry count overflow".into()))
    }

    /// Forgets every outstanding lease (on disconnect): their entries are pending again,
    /// and a later ack for any of them is a no-op.
    pub fn release_leases(&mut self) {
        self.leases.clear();
        self.cursor = 0;
    }

    /// The oldest unreported drops sharing one reason (and epoch), if any.
    pub fn pending_drops(&self) -> Result<Option<PendingDrops>, OutboxError> {
        self.pending_drops_upto(u64::MAX)
    }

    /// Like [`Outbox::pending_drops`], from rows up to `upto` only: a report sent
    /// again while unacknowledged is the same report (same id, same content), not one
    /// grown by drops recorded since.
    pub fn pending_drops_upto(&self, upto: u64) -> Result<Option<PendingDrops>, OutboxError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT id, seq, lost, reason, seqs_epoch, range_first, range_last FROM drops WHERE id <= ?1 ORDER BY id",
        )?;
        let mut rows = stmt.query([i64::try_from(upto).unwrap_or(i64::MAX)])?;
        let mut pending: Option<PendingDrops> = None;
        while let Some(row) = rows.next()? {
            let id = from_i64(row.get(0)?)?;
            let seq: Option<i64> = row.get(1)?;
            let lost = from_i64(row.get(2)?)?;
            let reason: String = row.get(3)?;
            let seqs_epoch = row
                .get::<_, Option<i64>>(4)?
                .map(|e| u64::from_ne_bytes(e.to_ne_bytes()))
                .unwrap_or(self.outbox_epoch);
            let range = match (row.get::<_, Option<i64>>(5)?, row.get::<_, Option<i64>>(6)?) {
                (Some(a), Some(b)) => Some((from_i64(a)?, from_i64(b)?)),
                _ => None,
            };
            let p = pending.get_or_insert_with(|| PendingDrops {
                report: DropReport {
                    dropped: 0,
                    seqs: Vec::new(),
                    reason: reason.clone(),
                },
                upto: id,
                seqs_epoch,
                lost_range: range,
            });
            let first = p.upto == id;
            // A row with a range is a report of its own; others group by reason and epoch.
            if !first
                && (p.report.reason != reason
                    || p.seqs_epoch != seqs_epoch
                    || p.lost_range.is_some()
                    || range.is_some()
                    || (seq.is_some() && p.report.seqs.len() >= MAX_REPORT_SEQS))
            {
                break;
            }
            if let Some(seq) = seq {
                p.report.seqs.push(from_i64(seq)?);
            }
            p.report.dropped += lost;
            p.upto = id;
        }
        Ok(pending)
    }

    /// Records a loss that has no sequence numbers (alerts that were never numbered:
    /// in flight at a crash, or dropped before reaching the outbox), `lost` alerts or 0
    /// when unknown, to be reported like any drop.
    pub fn report_loss(&mut self, lost: u64, reason: &str) -> Result<(), OutboxError> {
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        insert_drop(&tx, None, lost, reason)?;
        tx.commit()?;
        Ok(())
    }

    /// Removes the drop rows up to and including `upto` (from [`PendingDrops::upto`]).
    /// Returns how many rows were removed.
    pub fn clear_drops(&mut self, upto: u64) -> Result<u64, OutboxError> {
        let n = self.conn.execute("DELETE FROM drops WHERE id <= ?1", [to_i64(upto)?])?;
        Ok(n as u64)
    }

    /// Entries stored (leased or not).
    pub fn depth(&self) -> u64 {
        self.depth
    }

    /// Accounted bytes of the stored entries; never above [`Outbox::max_bytes`].
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    /// The outbox epoch: random, new whenever the outbox starts without history.
    #[allow(clippy::misnamed_getters)] // `epoch` (the field) counts opens; this is the outbox's epoch.
    pub fn epoch(&self) -> u64 {
        self.outbox_epoch
    }

    /// Writes the high-water sidecar (`<file>.seq`: epoch and next seq), read at open to
    /// tell a deleted or rolled-back file. Not synced: it is a check, not the record;
    /// failing to write it only weakens that check, and is logged.
    fn save_high_water(&self) {
        let h = HighWater {
            epoch: self.outbox_epoch,
            next_seq: self.next_seq,
        };
        if let Err(e) = h.write(&self.path) {
            tracing::debug!(error = %e, "outbox high-water mark not written");
        }
    }

    /// The seq the next append will hand out.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Where a corrupt file was moved when this outbox was opened, if it was.
    pub fn quarantined(&self) -> Option<&Path> {
        self.quarantined.as_deref()
    }

    fn next_batch_id(&mut self) -> Result<u64, OutboxError> {
        if self.batch_counter >= u64::from(u32::MAX) {
            let epoch = self
                .epoch
                .checked_add(1)
                .ok_or_else(|| OutboxError::Corrupt("epoch overflow".into()))?;
            write_meta(&self.conn, "epoch", epoch)?;
            self.epoch = epoch;
            self.batch_counter = 0;
        }
        self.batch_counter += 1;
        Ok((self.epoch << 32) | self.batch_counter)
    }

    /// Evicts lowest-ranked entries until within the cap (after the cap was lowered).
    fn shrink_to_cap(&mut self) -> Result<(), OutboxError> {
        let need = self.bytes.saturating_sub(self.max_bytes);
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let victims = select_victims(&tx, severity_rank(Severity::Critical), need)?.unwrap_or_default();
        for &(victim, _) in &victims {
            tx.execute("DELETE FROM entries WHERE seq = ?1", [to_i64(victim)?])?;
            insert_drop(&tx, Some(victim), 1, REASON_CAP_LOWERED)?;
        }
        tx.commit()?;
        self.bytes = self.bytes.saturating_sub(victims.iter().map(|&(_, s)| s).sum::<u64>());
        self.depth = self.depth.saturating_sub(victims.len() as u64);
        tracing::warn!(count = victims.len(), "outbox cap lowered: evicted lower-ranked alerts");
        Ok(())
    }
}

/// The sidecar `<outbox file>.seq`: the outbox epoch and next seq last handed out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct HighWater {
    epoch: u64,
    next_seq: u64,
}

impl HighWater {
    fn path(outbox: &Path) -> PathBuf {
        let mut s = outbox.as_os_str().to_owned();
        s.push(".seq");
        PathBuf::from(s)
    }

    /// `None` when missing or unreadable (a check that cannot run, not an error).
    fn read(outbox: &Path) -> Option<HighWater> {
        let text = std::fs::read_to_string(Self::path(outbox)).ok()?;
        let mut it = text.split_whitespace();
        let epoch = u64::from_str_radix(it.next()?, 16).ok()?;
        let next_seq = it.next()?.parse().ok()?;
        Some(HighWater { epoch, next_seq })
    }

    fn write(&self, outbox: &Path) -> std::io::Result<()> {
        let path = Self::path(outbox);
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".tmp");
        std::fs::write(&tmp, format!("{:016x} {}\n", self.epoch, self.next_seq))?;
        std::fs::rename(&tmp, &path)
    }
}

/// A fresh outbox epoch: 63 random bits (it is stored as an SQLite integer), never 0
/// (0 means "none" on the collector).
fn new_epoch() -> Result<u64, OutboxError> {
    use ring::rand::SecureRandom;
    let mut b = [0u8; 8];
    ring::rand::SystemRandom::new()
        .fill(&mut b)
        .map_err(|_| OutboxError::Io(std::io::Error::other("no random source for the outbox epoch")))?;
    Ok((u64::from_le_bytes(b) >> 1).max(1))
}

/// The accounted size of an entry (see the specification).
fn entry_size(signed: &Signed) -> u64 {
    (signed.payload.len() + signed.signature.len() + 8 + 16) as u64 + RECORD_OVERHEAD
}

fn severity_rank(s: Severity) -> i64 {
    match s {
        Severity::Informational => 0,
        Severity::Low => 1,
        Severity::Medium => 2,
        Severity::High => 3,
        Severity::Critical => 4,
    }
}

fn to_i64(v: u64) -> Result<i64, OutboxError> {
    i64::try_from(v).map_err(|_| OutboxError::Corrupt(format!("value {v} out of range")))
}

fn from_i64(v: i64) -> Result<u64, OutboxError> {
    u64::try_from(v).map_err(|_| OutboxError::Corrupt(format!("negative value {v} stored")))
}

fn read_meta(conn: &Connection, key: &str) -> Result<u64, OutboxError> {
    let v: Option<i64> = conn
        .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
        .optional()?;
    from_i64(v.ok_or_else(|| OutboxError::Corrupt(format!("meta key {key} missing")))?)
}

fn write_meta(conn: &Connection, key: &str, value: u64) -> Result<(), OutboxError> {
    conn.execute(
        "INSERT INTO meta (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        params![key, to_i64(value)?],
    )?;
    Ok(())
}

fn insert_drop(tx: &Transaction<'_>, seq: Option<u64>, lost: u64, reason: &str) -> Result<(), OutboxError> {
    insert_drop_ext(tx, seq, lost, reason, None, None)
}

/// A drop row; `seqs_epoch` when its numbers are another epoch's than the file's,
/// `range` when they are a whole range rather than one seq.
fn insert_drop_ext(
    tx: &Transaction<'_>,
    seq: Option<u64>,
    lost: u64,
    reason: &str,
    seqs_epoch: Option<u64>,
    range: Option<(u64, u64)>,
) -> Result<(), OutboxError> {
    if seqs_epoch.is_some() || range.is_some() {
        tx.execute(
            "INSERT INTO drops (seq, lost, reason, seqs_epoch, range_first, range_last) VALUES (NULL, ?1, ?2, ?3, ?4, ?5)",
            params![
                to_i64(lost)?,
                reason,
                seqs_epoch.map(|e| i64::from_ne_bytes(e.to_ne_bytes())),
                range.map(|r| to_i64(r.0)).transpose()?,
                range.map(|r| to_i64(r.1)).transpose()?
            ],
        )?;
        return Ok(());
    }
    let mut seq = seq.map(to_i64).transpose()?;
    let span: Option<i64> = tx.query_row(
        "SELECT (SELECT MAX(id) FROM drops) - (SELECT MIN(id) FROM drops)",
        [],
        |r| r.get(0),
    )?;
    // Row ids are contiguous apart from cleared prefixes, so span + 1 is the row count.
    if span.is_some_and(|span| span + 1 >= MAX_DROP_ROWS - 1) {
        // Full: count this drop on the seq-less row of the same reason, or start one.
        let merged = tx.execute(
            "UPDATE drops SET lost = lost + ?1
             WHERE id = (SELECT MAX(id) FROM drops WHERE seq IS NULL AND reason = ?2)",
            params![to_i64(lost)?, reason],
        )?;
        if merged == 1 {
            return Ok(());
        }
        seq = None;
    }
    tx.execute(
        "INSERT INTO drops (seq, lost, reason) VALUES (?1, ?2, ?3)",
        params![seq, to_i64(lost)?, reason],
    )?;
    Ok(())
}

/// Entries with severity <= `max_severity`, lowest rank first, whose sizes add up to at
/// least `need`; `None` if all of them together are not enough.
fn select_victims(tx: &Transaction<'_>, max_severity: i64, need: u64) -> Result<Option<Vec<(u64, u64)>>, OutboxError> {
    let mut stmt = tx.prepare_cached("SELECT seq, size FROM entries WHERE severity <= ?1 ORDER BY severity, seq")?;
    let mut rows = stmt.query([max_severity])?;
    let mut victims = Vec::new();
    let mut freed = 0u64;
    while freed < need {
        let Some(row) = rows.next()? else {
            return Ok(None);
        };
        let size = from_i64(row.get(1)?)?;
        victims.push((from_i64(row.get(0)?)?, size));
        freed += size;
    }
    Ok(Some(victims))
}

/// Opens the file, applies the pragmas, creates the schema and checks it is sound.
fn open_checked(path: &Path) -> Result<Connection, OutboxError> {
    let conn = Connection::open(path)?;
    conn.execute_batch("PRAGMA locking_mode = EXCLUSIVE;")?;
    let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(OutboxError::Io(std::io::Error::other(format!(
            "the outbox could not switch to WAL mode (got {mode})"
        ))));
    }
    conn.execute_batch(&format!(
        "PRAGMA synchronous = FULL; PRAGMA journal_size_limit = {WAL_LIMIT_BYTES}; PRAGMA foreign_keys = OFF;"
    ))?;
    let check: String = conn.query_row("PRAGMA quick_check", [], |r| r.get(0))?;
    if check != "ok" {
        return Err(OutboxError::Corrupt(format!("quick_check: {check}")));
    }
    conn.execute_batch(&format!("BEGIN IMMEDIATE; {SCHEMA} COMMIT;"))?;
    for (column, add) in DROPS_COLUMNS {
        let has: bool = conn.query_row(
            "SELECT COUNT(*) > 0 FROM pragma_table_info('drops') WHERE name = ?1",
            [column],
            |r| r.get(0),
        )?;
        if !has {
            conn.execute_batch(add)?;
        }
    }
    let format = read_meta(&conn, "format")?;
    if format != FORMAT as u64 {
        return Err(OutboxError::Corrupt(format!("unknown outbox format {format}")));
    }
    Ok(conn)
}

/// What could still be read from a corrupt file.
#[derive(Debug, Clone, Copy, Default)]
struct Salvaged {
    next_seq: Option<u64>,
    entries: Option<u64>,
    /// The lost file's outbox epoch and its oldest undelivered seq, when readable.
    epoch: Option<u64>,
    min_seq: Option<u64>,
    /// The sidecar's account, for the report when the file itself says nothing.
    high_water: Option<HighWater>,
}

fn salvage(path: &Path) -> Salvaged {
    let Ok(conn) = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY) else {
        return Salvaged::default();
    };
    let meta_next: Option<u64> = conn
        .query_row("SELECT value FROM meta WHERE key = 'next_seq'", [], |r| {
            r.get::<_, i64>(0)
        })
        .ok()
        .and_then(|v| u64::try_from(v).ok());
    let epoch: Option<u64> = conn
        .query_row("SELECT value FROM meta WHERE key = 'outbox_epoch'", [], |r| {
            r.get::<_, i64>(0)
        })
        .ok()
        .and_then(|v| u64::try_from(v).ok())
        .filter(|&e| e != 0);
    let (max_seq, count, min_seq) = conn
        .query_row("SELECT MAX(seq), COUNT(*), MIN(seq) FROM entries", [], |r| {
            Ok((
                r.get::<_, Option<i64>>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, Option<i64>>(2)?,
            ))
        })
        .map(|(m, c, n)| {
            (
                m.and_then(|m| u64::try_from(m).ok()),
                u64::try_from(c).ok(),
                n.and_then(|n| u64::try_from(n).ok()),
            )
        })
        .unwrap_or((None, None, None));
    let next_seq = match (meta_next, max_seq.map(|m| m.saturating_add(1))) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    };
    Salvaged {
        next_seq,
        entries: count,
        epoch,
        min_seq,
        high_water: None,
    }
}

/// Moves `path` (and its `-wal`) aside to the first free `<path>.corrupt.<n>`.
fn quarantine(path: &Path) -> Result<PathBuf, OutboxError> {
    let with_suffix = |p: &Path, suffix: &str| {
        let mut s = p.as_os_str().to_owned();
        s.push(suffix);
        PathBuf::from(s)
    };
    let aside = (1..=MAX_QUARANTINE_SLOTS)
        .map(|n| with_suffix(path, &format!(".corrupt.{n}")))
        .find(|p| !p.exists())
        .ok_or_else(|| OutboxError::Io(std::io::Error::other("no free name to quarantine the corrupt outbox")))?;
    std::fs::rename(path, &aside)?;
    let wal = with_suffix(path, "-wal");
    if wal.exists() {
        std::fs::rename(&wal, with_suffix(&aside, "-wal"))?;
    }
    let shm = with_suffix(path, "-shm");
    if shm.exists() {
        std::fs::remove_file(&shm)?;
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(aside)
}

fn record_quarantine(conn: &mut Connection, why: &str, aside: &Path, salvaged: Salvaged) -> Result<(), OutboxError> {
    let name = aside
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let lost = match salvaged.entries {
        Some(n) => format!("{n} undelivered alerts lost"),
        None => "an unknown number of undelivered alerts lost".to_string(),
    };
    // Kept from the file itself: the same epoch goes on, numbering after its last
    // seq. Otherwise a new epoch starts at 1 (the sidecar may be a little behind, so
    // its numbers are only used to name what was lost).
    let kept = salvaged.epoch.zip(salvaged.next_seq);
    let seq = match kept {
        Some(_) => String::new(),
        None => "; a new epoch starts and sequence numbers restart at 1".to_string(),
    };
    let reason = format!("outbox file was corrupt ({why}); moved aside to {name}; {lost}{seq}");
    let old_epoch = salvaged.epoch.or(salvaged.high_water.map(|h| h.epoch));
    let old_next = salvaged.next_seq.or(salvaged.high_water.map(|h| h.next_seq));
    // The numbers lost: from the oldest undelivered entry (or, not knowing it, from 1:
    // the collector explains only the gaps it really has) to the last handed out.
    let range = old_next
        .filter(|&n| n > 1)
        .map(|n| (salvaged.min_seq.unwrap_or(1).min(n - 1), n - 1));
    let reason = match range {
        Some((a, b)) => format!("{reason}; seqs {a}..{b} of the old epoch may be lost"),
        None => reason,
    };
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    if let Some((epoch, next)) = kept {
        write_meta(&tx, "outbox_epoch", epoch)?;
        write_meta(&tx, "next_seq", next.max(1))?;
    }
    insert_drop_ext(
        &tx,
        None,
        salvaged.entries.unwrap_or(0),
        &reason,
        Some(old_epoch.unwrap_or(0)),
        range,
    )?;
    tx.commit()?;
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use ward_protocol::{Alert, Id128, SignatureKind, SigningKey};

    #[derive(Debug, thiserror::Error)]
    #[error("never")]
    struct Never;

    /// A fake signed alert whose payload starts with its seq, `pad` bytes long in all.
    fn fake(seq: u64, pad: usize) -> (AlertId, Signed) {
        let mut payload = seq.to_le_bytes().to_vec();
        payload.resize(pad.max(8), 0xa5);
        let signed = Signed {
            key_id: KeyId([7; 8]),
            payload,
            signature: vec![1; 64],
        };
        (AlertId(Id128::from_u128(u128::from(seq))), signed)
    }

    fn append(ob: &mut Outbox, sev: Severity, pad: usize) -> Appended {
        ob.append_with(sev, |seq| Ok::<_, Never>(fake(seq, pad))).unwrap()
    }

    fn seq_of(s: &Signed) -> u64 {
        u64::from_le_bytes(s.payload[..8].try_into().unwrap())
    }

    fn size_for(pad: usize) -> u64 {
        entry_size(&fake(1, pad).1)
    }

    #[test]
    fn append_lease_ack_release_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("outbox.db");
        let mut ob = Outbox::open(&path, 1 << 20).unwrap();
        for i in 1..=5 {
            let a = append(&mut ob, Severity::Medium, 100);
            assert_eq!(
                a,
                Appended {
                    seq: i,
                    stored: true,
                    dropped: 0
                }
            );
        }
        assert_eq!(ob.depth(), 5);
        assert_eq!(ob.bytes(), 5 * size_for(100));

        let a = ob.lease(2, u64::MAX).unwrap().unwrap();
        assert_eq!(a.seqs, vec![1, 2]);
        assert_eq!(a.entries.iter().map(seq_of).collect::<Vec<_>>(), vec![1, 2]);
        let b = ob.lease(10, u64::MAX).unwrap().unwrap();
        assert_eq!(b.seqs, vec![3, 4, 5]);
        assert_ne!(a.batch_id, b.batch_id);
        assert!(ob.lease(10, u64::MAX).unwrap().is_none(), "everything is leased");

        assert_eq!(ob.ack(b.batch_id).unwrap(), 3);
        assert_eq!(ob.ack(b.batch_id).unwrap(), 0, "a second ack is a no-op");
        ob.release_leases();
        assert_eq!(ob.ack(a.batch_id).unwrap(), 0, "an ack for a released batch is a no-op");
        let again = ob.lease(10, u64::MAX).unwrap().unwrap();
        assert_eq!(again.seqs, vec![1, 2]);
        assert_eq!(ob.ack(again.batch_id).unwrap(), 2);
        assert_eq!((ob.depth(), ob.bytes()), (0, 0));
    }

    #[test]
    fn lease_respects_byte_budget_but_always_takes_one() {
        let dir = tempfile::tempdir().unwrap();
        let mut ob = Outbox::open(&dir.path().join("o.db"), 1 << 20).unwrap();
        for _ in 0..4 {
            append(&mut ob, Severity::Low, 1000);
        }
        let one = size_for(1000);
        let l = ob.lease(100, 2 * one + 1).unwrap().unwrap();
        assert_eq!(l.seqs, vec![1, 2]);
        assert_eq!(l.bytes, 2 * one);
        let l = ob.lease(100, 1).unwrap().unwrap();
        assert_eq!(l.seqs, vec![3], "the first entry goes even if over budget");
        assert!(ob.lease(0, u64::MAX).unwrap().is_none());
    }

    #[test]
    fn seq_and_batch_ids_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("o.db");
        let (first_batch, leased) = {
            let mut ob = Outbox::open(&path, 1 << 20).unwrap();
            append(&mut ob, Severity::High, 10);
            append(&mut ob, Severity::High, 10);
            let l = ob.lease(1, u64::MAX).unwrap().unwrap();
            ob.ack(l.batch_id).unwrap();
            let l2 = ob.lease(1, u64::MAX).unwrap().unwrap();
            (l.batch_id, l2)
        };
        let mut ob = Outbox::open(&path, 1 << 20).unwrap();
        assert_eq!(ob.next_seq(), 3);
        assert_eq!(ob.depth(), 1);
        assert_eq!(ob.ack(leased.batch_id).unwrap(), 0, "leases do not survive a restart");
        let l = ob.lease(10, u64::MAX).unwrap().unwrap();
        assert_eq!(l.seqs, vec![2]);
        assert!(l.batch_id > leased.batch_id && l.batch_id > first_batch);
        assert_eq!(append(&mut ob, Severity::High, 10).seq, 3);
    }

    #[test]
    fn a_failing_build_writes_nothing_and_keeps_the_seq() {
        let dir = tempfile::tempdir().unwrap();
        let mut ob = Outbox::open(&dir.path().join("o.db"), 1 << 20).unwrap();
        let err = ob
            .append_with(Severity::Low, |_| Err::<(AlertId, Signed), _>(Never))
            .unwrap_err();
        assert!(matches!(err, OutboxError::Build(_)));
        assert!(!err.is_retryable());
        assert_eq!(ob.depth(), 0);
        assert_eq!(append(&mut ob, Severity::Low, 10).seq, 1);
    }

    #[test]
    fn full_outbox_evicts_lowest_severity_then_oldest_and_reports() {
        let dir = tempfile::tempdir().unwrap();
        let one = size_for(100);
        let mut ob = Outbox::open(&dir.path().join("o.db"), 4 * one).unwrap();
        append(&mut ob, Severity::High, 100); // 1
        append(&mut ob, Severity::Low, 100); // 2
        append(&mut ob, Severity::Medium, 100); // 3
        append(&mut ob, Severity::Low, 100); // 4
        assert_eq!(ob.bytes(), 4 * one);

        // A medium alert evicts the oldest low one.
        assert_eq!(
            append(&mut ob, Severity::Medium, 100),
            Appended {
                seq: 5,
                stored: true,
                dropped: 1
            }
        );
        // An informational alert outranks nothing: it is dropped itself.
        assert_eq!(
            append(&mut ob, Severity::Informational, 100),
            Appended {
                seq: 6,
                stored: false,
                dropped: 1
            }
        );
        // A double-size critical alert evicts the low one, then the oldest medium.
        assert_eq!(
            append(&mut ob, Severity::Critical, 100 + one as usize),
            Appended {
                seq: 7,
                stored: true,
                dropped: 2
            }
        );
        assert!(ob.bytes() <= ob.max_bytes());
        let l = ob.lease(100, u64::MAX).unwrap().unwrap();
        assert_eq!(l.seqs, vec![1, 5, 7]);

        let drops = ob.pending_drops().unwrap().unwrap();
        assert_eq!(drops.report.seqs, vec![2, 6, 4, 3]);
        assert_eq!(drops.report.dropped, 4);
        assert_eq!(drops.report.reason, REASON_FULL);
        assert_eq!(ob.clear_drops(drops.upto).unwrap(), 4);
        assert!(ob.pending_drops().unwrap().is_none());
    }

    #[test]
    fn oversized_entries_are_dropped_and_reported_separately() {
        let dir = tempfile::tempdir().unwrap();
        let mut ob = Outbox::open(&dir.path().join("o.db"), 1000).unwrap();
        assert_eq!(
            append(&mut ob, Severity::Critical, 2000),
            Appended {
                seq: 1,
                stored: false,
                dropped: 1
            }
        );
        append(&mut ob, Severity::Low, 500);
        assert!(!append(&mut ob, Severity::Informational, 500).stored);
        let first = ob.pending_drops().unwrap().unwrap();
        assert_eq!(first.report.reason, REASON_TOO_LARGE);
        assert_eq!(first.report.seqs, vec![1]);
        ob.clear_drops(first.upto).unwrap();
        let second = ob.pending_drops().unwrap().unwrap();
        assert_eq!(
            (second.report.reason.as_str(), second.report.seqs.clone()),
            (REASON_FULL, vec![3])
        );
    }

    #[test]
    fn drop_reports_survive_reopen_until_cleared() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("o.db");
        {
            let mut ob = Outbox::open(&path, 1000).unwrap();
            append(&mut ob, Severity::Low, 5000);
        }
        let mut ob = Outbox::open(&path, 1000).unwrap();
        let d = ob.pending_drops().unwrap().unwrap();
        assert_eq!(d.report.seqs, vec![1]);
        ob.clear_drops(d.upto).unwrap();
        drop(ob);
        assert!(Outbox::open(&path, 1000).unwrap().pending_drops().unwrap().is_none());
    }

    #[test]
    fn lowering_the_cap_evicts_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("o.db");
        let one = size_for(100);
        {
            let mut ob = Outbox::open(&path, 10 * one).unwrap();
            append(&mut ob, Severity::High, 100);
            append(&mut ob, Severity::Low, 100);
            append(&mut ob, Severity::Medium, 100);
        }
        let mut ob = Outbox::open(&path, 2 * one).unwrap();
        assert_eq!((ob.depth(), ob.bytes()), (2, 2 * one));
        let d = ob.pending_drops().unwrap().unwrap();
        assert_eq!((d.report.seqs, d.report.reason.as_str()), (vec![2], REASON_CAP_LOWERED));
        assert_eq!(ob.lease(10, u64::MAX).unwrap().unwrap().seqs, vec![1, 3]);
    }

    #[test]
    fn a_second_opener_is_locked_out() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("o.db");
        let mut ob = Outbox::open(&path, 1 << 20).unwrap();
        append(&mut ob, Severity::Low, 10);
        let conn = Connection::open(&path).unwrap();
        conn.busy_timeout(std::time::Duration::from_millis(10)).unwrap();
        let err = OutboxError::from(
            conn.query_row("SELECT COUNT(*) FROM entries", [], |r| r.get::<_, i64>(0))
                .unwrap_err(),
        );
        assert!(matches!(err, OutboxError::Locked), "{err:?}");
        assert!(err.is_retryable());
        conn.close().unwrap();
        drop(ob);
        assert_eq!(Outbox::open(&path, 1 << 20).unwrap().depth(), 1);
    }

    #[test]
    fn garbage_file_is_quarantined_and_reported() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("o.db");
        std::fs::write(&path, vec![0x42u8; 8192]).unwrap();
        let mut ob = Outbox::open(&path, 1 << 20).unwrap();
        let aside = ob.quarantined().unwrap().to_path_buf();
        assert_eq!(aside, dir.path().join("o.db.corrupt.1"));
        assert_eq!(
            std::fs::read(&aside).unwrap(),
            vec![0x42u8; 8192],
            "the evidence is kept as it was"
        );
        let d = ob.pending_drops().unwrap().unwrap();
        assert!(d.report.reason.contains("corrupt"), "{}", d.report.reason);
        assert!(d.report.reason.contains("restart at 1"), "{}", d.report.reason);
        assert!(d.report.seqs.is_empty());
        assert_eq!(append(&mut ob, Severity::Low, 10).seq, 1);
        drop(ob);
        assert!(Outbox::open(&path, 1 << 20).unwrap().quarantined().is_none());
    }

    #[test]
    fn damaged_pages_are_quarantined_and_counters_salvaged_when_readable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("o.db");
        {
            let mut ob = Outbox::open(&path, 1 << 30).unwrap();
            for _ in 0..300 {
                append(&mut ob, Severity::Low, 3000);
            }
            // Fold the WAL into the main file so the damage below hits the real pages.
            ob.conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);").unwrap();
        }
        // Scribble over the middle of the file, leaving the header and first pages alone.
        let mut bytes = std::fs::read(&path).unwrap();
        let mid = bytes.len() / 2;
        for b in &mut bytes[mid..mid + 64 * 1024] {
            *b = 0x5a;
        }
        std::fs::write(&path, &bytes).unwrap();
        let mut ob = Outbox::open(&path, 1 << 30).unwrap();
        assert!(ob.quarantined().is_some());
        assert_eq!(ob.depth(), 0);
        let d = ob.pending_drops().unwrap().unwrap();
        assert!(d.report.reason.contains("corrupt"), "{}", d.report.reason);
        assert_eq!(d.lost_range.map(|r| r.1), Some(300), "the report names the range lost");
        // meta lives in the first pages, so the counter is salvaged and never reused.
        assert_eq!(append(&mut ob, Severity::Low, 10).seq, 301, "{}", d.report.reason);
    }

    #[test]
    fn a_deleted_outbox_starts_a_new_epoch_and_reports_the_old_numbers() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("o.db");
        let old_epoch = {
            let mut ob = Outbox::open(&path, 1 << 20).unwrap();
            for _ in 0..5 {
                append(&mut ob, Severity::Low, 10);
            }
            ob.epoch()
        };
        assert_eq!(
            Outbox::open(&path, 1 << 20).unwrap().epoch(),
            old_epoch,
            "a reopen keeps the epoch"
        );
        for f in ["o.db", "o.db-wal", "o.db-shm"] {
            let _ = std::fs::remove_file(dir.path().join(f));
        }
        let mut ob = Outbox::open(&path, 1 << 20).unwrap();
        assert_ne!(ob.epoch(), old_epoch);
        assert_eq!(append(&mut ob, Severity::Low, 10).seq, 1, "a new epoch numbers from 1");
        let d = ob.pending_drops().unwrap().unwrap();
        assert_eq!(d.seqs_epoch, old_epoch, "the report names the old epoch's numbers");
        assert_eq!(d.lost_range, Some((1, 5)));
        assert!(d.report.reason.contains("deleted"), "{}", d.report.reason);
    }

    #[test]
    fn a_rolled_back_outbox_never_hands_out_a_number_twice() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("o.db");
        let copy = dir.path().join("copy.db");
        let epoch = {
            let mut ob = Outbox::open(&path, 1 << 20).unwrap();
            append(&mut ob, Severity::Low, 10);
            append(&mut ob, Severity::Low, 10);
            ob.conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);").unwrap();
            std::fs::copy(&path, &copy).unwrap();
            for _ in 0..8 {
                append(&mut ob, Severity::Low, 10);
            }
            ob.epoch()
        };
        // Restore the older copy (seq 3 next) over the file that had reached 11.
        let _ = std::fs::remove_file(dir.path().join("o.db-wal"));
        std::fs::copy(&copy, &path).unwrap();
        let mut ob = Outbox::open(&path, 1 << 20).unwrap();
        assert_eq!(ob.epoch(), epoch);
        assert_eq!(
            append(&mut ob, Severity::Low, 10).seq,
            11,
            "numbering continues past the high-water mark"
        );
        let d = ob.pending_drops().unwrap().unwrap();
        assert_eq!((d.seqs_epoch, d.lost_range), (epoch, Some((3, 10))));
        assert!(d.report.reason.contains("rolled back"), "{}", d.report.reason);
    }

    #[test]
    fn unknown_format_is_quarantined() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("o.db");
        {
            let mut ob = Outbox::open(&path, 1 << 20).unwrap();
            append(&mut ob, Severity::Low, 10);
            write_meta(&ob.conn, "format", 99).unwrap();
        }
        let ob = Outbox::open(&path, 1 << 20).unwrap();
        assert!(ob.quarantined().is_some());
        assert_eq!(ob.next_seq(), 2, "counters salvaged from a readable file");
        assert!(ob.pending_drops().unwrap().unwrap().report.reason.contains("format 99"));
    }

    #[test]
    fn drop_rows_are_bounded_and_the_excess_is_counted() {
        let dir = tempfile::tempdir().unwrap();
        let mut ob = Outbox::open(&dir.path().join("o.db"), 1 << 20).unwrap();
        let extra = 1000u64;
        let total = MAX_DROP_ROWS as u64 + extra;
        let tx = ob.conn.transaction().unwrap();
        for seq in 1..=total {
            insert_drop(&tx, Some(seq), 1, REASON_FULL).unwrap();
        }
        tx.commit().unwrap();
        let rows: i64 = ob
            .conn
            .query_row("SELECT COUNT(*) FROM drops", [], |r| r.get(0))
            .unwrap();
        assert_eq!(rows, MAX_DROP_ROWS);
        let mut reported = 0;
        let mut named = 0;
        while let Some(p) = ob.pending_drops().unwrap() {
            assert!(p.report.seqs.len() <= MAX_REPORT_SEQS);
            reported += p.report.dropped;
            named += p.report.seqs.len() as u64;
            ob.clear_drops(p.upto).unwrap();
        }
        assert_eq!(reported, total, "every drop is counted");
        assert_eq!(
            named,
            MAX_DROP_ROWS as u64 - 1,
            "all but the counting row name their seq"
        );
    }

    #[test]
    fn real_signed_alerts_come_back_verifiable() {
        let rng = ring::rand::SystemRandom::new();
        let (key, _) = SigningKey::generate(&rng).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("o.db");
        let mut ob = Outbox::open(&path, 1 << 20).unwrap();
        let appended = ob
            .append_with(Severity::High, |seq| {
                let alert = Alert {
                    id: AlertId(Id128::from_u128(77)),
                    device_id: Default::default(),
                    seq,
                    observed_at_ms: 1,
                    last_observed_at_ms: 1,
                    rule: ward_protocol::RuleRef {
                        id: "r".into(),
                        title: "t".into(),
                        author: "a".into(),
                        severity: Severity::High,
                        techniques: vec![],
                        tactics: vec![],
                    },
                    entities: vec![],
                    count: 1,
                    matched: vec![],
                };
                let signed = key.sign_value(SignatureKind::Alert, &alert)?;
                Ok::<_, ward_protocol::DecodeError>((alert.id, signed))
            })
            .unwrap();
        drop(ob);
        let mut ob = Outbox::open(&path, 1 << 20).unwrap();
        let lease = ob.lease(1, u64::MAX).unwrap().unwrap();
        let alert: Alert = lease.entries[0].open(SignatureKind::Alert, &key.public_key()).unwrap();
        assert_eq!(alert.seq, appended.seq);
    }
}
