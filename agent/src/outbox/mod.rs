//! The durable outbox of signed alerts: every alert is stored here before it is sent,
//! and leaves only when the collector has acknowledged it or the size cap forced it out
//! (which is recorded and reported). It does no networking and never decides what to
//! send when; the link drives it. Only [`store`] touches SQLite.
//!
//! # Specification
//!
//! This section is the contract; `store.rs` implements it and
//! `agent/tests/outbox_model.rs` checks it against an in-memory model with simulated
//! crashes.
//!
//! ## File and durability
//!
//! One SQLite database file in the agent's state directory (e.g. `outbox.db`), in WAL
//! mode with `synchronous=FULL` and `locking_mode=EXCLUSIVE` (one agent process owns
//! it; a second opener gets [`OutboxError::Locked`]). Every public mutating call is one
//! transaction, committed (WAL fsynced) before the call returns `Ok`: what a call
//! reported as done survives `kill -9` and power loss.
//!
//! Group commit: [`Outbox::append_many`] appends many alerts in ONE transaction, with
//! exactly the outcome of the same [`Outbox::append_with`] calls in a row (seqs,
//! evictions, drop rows; the model test checks it), for one fsync. The detection task
//! stores each group of judged events this way, so a burst is durable within one
//! commit (see BENCHMARKS.md) rather than queued behind one fsync per alert.
//!
//! Why `FULL`, not `NORMAL`: with `NORMAL` a power cut can roll back the last
//! committed transactions. Losing a *delete* (ack) would be harmless (the entry is
//! resent; the collector deduplicates by alert id), but losing an *append* would also
//! roll back the sequence counter, so a sequence number already sent and acknowledged
//! could be handed out again to a different alert. The counter's guarantee needs `FULL`.
//!
//! ## Record format (schema version 1)
//!
//! ```text
//! meta(key TEXT PRIMARY KEY, value INTEGER)
//!     format       = 1
//!     next_seq     = the next alert sequence number (starts at 1, only ever grows)
//!     epoch        = incremented durably on every open; high 32 bits of batch ids
//!     outbox_epoch = random (63 bits, not 0), chosen when the file begins: see "Epochs"
//!     judged_through_ms = every event observed up to this time was judged and its
//!                  alerts are stored (written with each group)
//! entries(seq INTEGER PRIMARY KEY,     -- the alert's per-device sequence number
//!         severity INTEGER,            -- 0 informational .. 4 critical
//!         alert_id BLOB(16),           -- the alert's id, for logs and forensics
//!         key_id BLOB(8), payload BLOB, signature BLOB,   -- the `Signed`, verbatim
//!         size INTEGER)                -- accounted bytes, see "Caps"
//!     index (severity, seq, size)      -- the drop order
//! drops(id INTEGER PRIMARY KEY AUTOINCREMENT,
//!       seq INTEGER NULL,              -- the dropped alert, NULL if unknown (quarantine)
//!       lost INTEGER,                  -- how many alerts this row stands for
//!       reason TEXT,
//!       seqs_epoch INTEGER NULL,       -- whose numbers seq/range are; NULL: this file's
//!       range_first, range_last INTEGER NULL)  -- a whole range lost (reset, quarantine)
//! judged(path TEXT PRIMARY KEY, changed_ms INTEGER)  -- files judged in stored groups
//! ```
//!
//! The `drops` range and epoch columns were added after format 1 shipped; opening an
//! older file adds them (no data changes). Beside the file, `<name>.seq` holds the
//! outbox epoch and next seq (the high-water mark), rewritten after every group that
//! handed out numbers (not synced: it is a check, see "Epochs").
//!
//! The [`ward_protocol::Signed`] is stored as its three fields, byte for byte as it
//! was signed; the outbox never decodes or re-encodes the payload. `CHECK` constraints
//! hold severity to 0..=4 and the id lengths; a row that does not read back as a valid
//! `Signed` is reported as [`OutboxError::Corrupt`].
//!
//! ## Sequence numbers
//!
//! [`Outbox::append_with`] allocates the alert's `seq` and hands it to the caller's
//! closure, which builds and signs the alert with it. `seq` starts at 1 and is never
//! reused, across restarts and crashes: `next_seq` is advanced in the same transaction
//! that stores (or records the drop of) the alert. If the closure fails nothing is
//! written and the number is handed out again next time (no alert carried it).
//! Every sequence number that was committed is therefore either delivered or named in
//! a drop report, so the collector's gap checker sees gaps only where drops were
//! reported (or where a quarantine said the file was lost).
//!
//! ## Caps and what happens when full
//!
//! An entry's accounted size is `payload + signature + key id + alert id +
//! RECORD_OVERHEAD` bytes. [`Outbox::bytes`] is the sum over stored entries and never
//! exceeds `max_bytes`. (The file itself is larger by SQLite's page overhead and the
//! WAL, which is truncated to `WAL_LIMIT_BYTES` after checkpoints; freed pages are
//! reused, so the file stays at its high-water mark.)
//!
//! An entry larger than `min(max_bytes, MAX_ENTRY_BYTES)` is never stored: it is
//! recorded as dropped ("entry too large") at once. Otherwise, when the new entry `E`
//! does not fit, entries that *rank below* `E` are evicted, lowest rank first, until it
//! fits. Rank is severity first, then age: an entry ranks below another if its
//! severity is lower, or equal and its seq smaller (older). If evicting every entry
//! that ranks below `E` still would not make room, nothing is evicted and `E` itself is
//! dropped: an informational alert never pushes out a critical one. Every dropped
//! alert (evicted or refused) gets a `drops` row in the same transaction, and
//! [`Appended`] says whether the alert was stored and how many alerts were dropped.
//! In-flight (leased) entries can be evicted too; if their batch is acknowledged later
//! the collector simply has an alert the report called dropped.
//!
//! ## Lease, then ack or roll back
//!
//! [`Outbox::lease`] hands out the oldest entries (by seq) that are not in an
//! outstanding lease, up to `max_entries` and `max_bytes` accounted bytes (the first
//! entry is always included so one large entry cannot wedge the queue; appends keep
//! entries under `MAX_ENTRY_BYTES`, so budget the frame for that). Leases live only
//! in memory: an entry is in at most one outstanding lease.
//!
//! * [`Outbox::ack`] deletes that lease's entries in one durable transaction and
//!   returns how many it removed. An ack for an unknown batch (already acked,
//!   released, or from before a restart) is a no-op returning 0.
//! * [`Outbox::release_leases`] (on disconnect) forgets every outstanding lease: its
//!   entries are pending again and go out, oldest first, in the next lease. Opening
//!   the outbox starts with no leases, which is the same thing.
//!
//! Batch ids are `epoch << 32 | n`, with `epoch` bumped durably at every open and `n`
//! counting from 1 within it, so a batch id is never reused and a late ack from an old
//! connection can never remove another batch's entries.
//!
//! ## Epochs
//!
//! Sequence numbers are numbered per outbox epoch, and every batch says its epoch
//! ([`ward_protocol::EpochAlertBatch`]), so the collector never mixes two files'
//! numbers. A file that begins without history starts a new random epoch at seq 1:
//! deleted (the sidecar knows the old epoch: a drop row names its numbers 1..next-1),
//! or quarantined unreadable (the same, from the sidecar). A quarantined file whose
//! meta could be read keeps its epoch and numbering. A *rolled-back* file (an older
//! copy of the same epoch, behind the sidecar's mark) keeps its epoch and jumps
//! `next_seq` to the mark, reporting the numbers in between: a number is never handed
//! out twice in one epoch (unless the sidecar was rolled back with it, which the agent
//! cannot see).
//!
//! ## Judging progress and the start-up rescan
//!
//! With each group, [`Outbox::append_many_judged`] records how far judging got and the
//! files judged (path and change time; kept for `JUDGED_KEEP_MS` behind the point), in
//! the same transaction as the alerts. At start, watched files changed after that
//! point (less a margin) are judged again, except those whose recorded change is the
//! one they still have: their alert is already here.
//!
//! ## Drop reports
//!
//! [`Outbox::pending_drops`] returns the oldest unreported drops with a single reason
//! (at most `MAX_REPORT_SEQS` seqs) as a [`ward_protocol::DropReport`], plus the last
//! drop row id it covers. At most `MAX_DROP_ROWS` rows are kept; past that, further
//! drops are counted on one row with no seq (the report's `dropped` still counts them,
//! its `seqs` just does not name them), so an endless outage cannot grow the file
//! without bound. A row with a range, or another epoch's numbers, is a report of its
//! own ([`PendingDrops::seqs_epoch`], [`PendingDrops::lost_range`]). Once the collector
//! says it stored the report (protocol 1.4 `DropStored`, naming `upto` as the report
//! id), [`Outbox::clear_drops`] removes those rows durably. Until then the same report
//! ([`Outbox::pending_drops_upto`]: no rows recorded since) is offered again, after any
//! restart: drops are reported at least once.
//!
//! ## Crash behaviour
//!
//! A crash (or `kill -9`, or power loss) at any point leaves the state of the last
//! committed call: no half-appended entry, no half-acked batch. Outstanding leases are
//! lost, so their entries are sent again (at-least-once). Acked entries never come back.
//!
//! ## Corruption
//!
//! On open the file is checked (`PRAGMA quick_check`, schema and format version). If
//! SQLite reports it corrupt or not a database, or the format is unknown, the file (and
//! its `-wal`) is renamed aside to `<name>.corrupt.<n>`, whatever can still be read of
//! its counters is salvaged (`next_seq`, the number of entries), and a fresh outbox is
//! started with a drop row saying the file was quarantined and how many alerts were
//! lost, so it reaches the collector as a drop report. If not even `next_seq` can be
//! read, seq restarts from 1 and the report says so. Corruption found while running
//! returns [`OutboxError::Corrupt`]; reopening quarantines the file.
//!
//! ## Errors
//!
//! Every [`OutboxError`] says through [`OutboxError::is_retryable`] whether the same
//! call can succeed later (disk full, file locked, transient I/O) or not (corruption,
//! the caller's closure failed).

mod store;

pub use store::{
    Appended, JUDGED_KEEP_MS, Lease, MAX_DROP_ROWS, MAX_ENTRY_BYTES, MAX_REPORT_SEQS, Outbox, OutboxError,
    PendingDrops, Progress, RECORD_OVERHEAD, WAL_LIMIT_BYTES,
};
