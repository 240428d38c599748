//! Checkpoints the write-ahead log on a thread of its own, so the writer does not.
//!
//! SQLite's automatic checkpoint runs inside the commit that crossed its threshold,
//! on the committing thread: a correlation step's commit copied its pages into the
//! database file before the writer could take the next round (about an eighth of
//! the writer's time in a profile of 100,000 alerts correlated end to end). Here the
//! writer's connection has no automatic checkpoint; after each commit it wakes this
//! thread, which runs a PASSIVE checkpoint on its own connection (it waits for no
//! one and no one waits for it). The log restarts from its beginning when the writer
//! starts a transaction after a complete checkpoint.
//!
//! When no commit has come for [`IDLE_TRUNCATE_AFTER`], the thread copies the rest and
//! empties the log file: a restart (after a crash too) reads the whole log before the
//! database opens (83 MiB of log held the first acknowledgement back ~60 ms).
//!
//! Under a steady stream of commits a checkpoint may still be copying whenever the
//! writer begins, so the log can only grow: when it holds more than
//! [`INLINE_FRAMES`] the writer checkpoints itself after its commit, as SQLite would
//! (the log then restarts at its next transaction).

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use tracing::warn;

use crate::store::prelude::*;
use crate::store::{Store, StoreError};

/// Frames (pages) in the log past which the writer checkpoints itself: 64 MiB of
/// 4 KiB pages, a few correlation steps' commits. The thread has copied all but the
/// last commits by then, so the writer copies only those, and the log restarts at
/// its next transaction unless a reader still uses it (as with SQLite's own
/// checkpoints: `ward-corrbench` saw log files of 84–158 MB before this thread and
/// 52–184 MB with it, 100,000 alerts).
pub const INLINE_FRAMES: u64 = 16_384;

/// A log left this long without a commit is copied whole and emptied.
pub const IDLE_TRUNCATE_AFTER: Duration = Duration::from_secs(1);

#[derive(Default)]
struct Wake {
    pending: bool,
    stop: bool,
}

#[derive(Default)]
struct Shared {
    wake: Mutex<Wake>,
    cond: Condvar,
    /// Frames in the log at the last checkpoint, copied or not: a log copied whole
    /// restarts only if the writer's next transaction begins after the copy, which
    /// under a stream of commits a checkpoint on another thread rarely finishes
    /// before (a million alerts grew the log to 8.9 GB when this counted only
    /// frames left to copy).
    log_frames: AtomicU64,
    /// Checkpoints the writer ran itself.
    inline: AtomicU64,
}

/// The checkpoint thread's handle; it stops when this is dropped.
pub struct Checkpointer {
    shared: Arc<Shared>,
    inline_frames: u64,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Checkpointer {
    /// Opens a connection of its own to `db_path` (already migrated) and starts the
    /// thread; the writer checkpoints itself past `inline_frames` ([`INLINE_FRAMES`]).
    pub fn start(db_path: &Path, inline_frames: u64) -> Result<Checkpointer, StoreError> {
        let store = Store::open(db_path)?;
        let shared = Arc::new(Shared::default());
        let mine = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("ward-checkpoint".into())
            .spawn(move || run(&store, &mine))
            .map_err(|e| StoreError::Corrupt(format!("cannot start checkpoint thread: {e}")))?;
        Ok(Checkpointer {
            shared,
            inline_frames,
            thread: Some(thread),
        })
    }

    /// Says a transaction committed: checkpoint what it logged.
    pub fn committed(&self) {
        if let Ok(mut w) = self.shared.wake.lock() {
            w.pending = true;
            self.shared.cond.notify_one();
        }
    }

    /// After a commit on the writer: checkpoints there instead when the log has
    /// grown too long, else wakes the thread.
    pub fn after_commit(&self, store: &Store) {
        if self.shared.log_frames.load(Ordering::Relaxed) > self.inline_frames {
            self.shared.inline.fetch_add(1, Ordering::Relaxed);
            match store.checkpoint() {
                Ok((log, _)) => self.shared.log_frames.store(log, Ordering::Relaxed),
                Err(e) => warn!(error = %e, "checkpoint on the writer failed"),
            }
            return;
        }
        self.committed();
    }

    /// How many checkpoints the writer ran itself (the log had grown too long).
    pub fn inline_checkpoints(&self) -> u64 {
        self.shared.inline.load(Ordering::Relaxed)
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        if let Ok(mut w) = self.shared.wake.lock() {
            w.stop = true;
            self.shared.cond.notify_one();
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn run(store: &Store, shared: &Shared) {
    // Whether the log may hold frames since it was last emptied.
    let mut log_used = true;
    loop {
        {
            let Ok(mut w) = shared.wake.lock() else { return };
            while !w.pending && !w.stop {
                let (next, waited) = match shared.cond.wait_timeout(w, IDLE_TRUNCATE_AFTER) {
                    Ok(r) => r,
                    Err(_) => return,
                };
                w = next;
                if waited.timed_out() && !w.pending && !w.stop && log_used {
                    match store.truncate_log() {
                        Ok(emptied) => log_used = !emptied,
                        Err(e) => warn!(error = %e, "emptying the idle log failed"),
                    }
                    if !log_used {
                        shared.log_frames.store(0, Ordering::Relaxed);
                    }
                }
            }
            if w.stop {
                return;
            }
            w.pending = false;
        }
        log_used = true;
        match store.checkpoint() {
            Ok((log, _)) => shared.log_frames.store(log, Ordering::Relaxed),
            Err(e) => warn!(error = %e, "background checkpoint failed; the next commit retries"),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::time::Duration;

    use rusqlite::Connection;

    use super::*;

    fn wal_pages(dir: &Path) -> u64 {
        std::fs::metadata(dir.join("ward.db-wal")).map_or(0, |m| m.len()) / 4096
    }

    /// The writer's store (migrated, no automatic checkpoints) and a connection
    /// like it for the test's own rows.
    fn open(dir: &Path) -> (Store, Connection) {
        let mut store = Store::open(&dir.join("ward.db")).unwrap();
        store.become_writer(crate::store::Fold::OFF, 2).unwrap();
        let conn = Connection::open(dir.join("ward.db")).unwrap();
        conn.pragma_update(None, "wal_autocheckpoint", 0).unwrap();
        conn.execute_batch("CREATE TABLE t (x BLOB)").unwrap();
        (store, conn)
    }

    fn write(conn: &Connection) {
        conn.execute("INSERT INTO t VALUES (zeroblob(40000))", []).unwrap();
    }

    /// Without automatic checkpoints the log grows with every commit; the thread's
    /// checkpoints let it restart, so it stays a few commits long.
    #[test]
    fn the_thread_keeps_the_log_short() {
        let dir = tempfile::tempdir().unwrap();
        let (_store, conn) = open(dir.path());
        for _ in 0..300 {
            write(&conn);
        }
        let unchecked = wal_pages(dir.path());
        assert!(unchecked > 2_000, "{unchecked} pages");

        let dir = tempfile::tempdir().unwrap();
        let (store, conn) = open(dir.path());
        let ckpt = Checkpointer::start(&dir.path().join("ward.db"), INLINE_FRAMES).unwrap();
        for _ in 0..300 {
            write(&conn);
            ckpt.after_commit(&store);
            // Time for it to finish, as a writer busy with its next round gives it.
            std::thread::sleep(Duration::from_millis(5));
        }
        let checked = wal_pages(dir.path());
        assert!(
            checked < unchecked / 4,
            "{checked} pages with the thread, {unchecked} without"
        );
        assert_eq!(ckpt.inline_checkpoints(), 0);
    }

    /// A second without a commit and the log file is empty (a restart reads no log),
    /// unless a reader still holds an older snapshot; then it is emptied once it ends.
    #[test]
    fn an_idle_log_is_emptied() {
        let dir = tempfile::tempdir().unwrap();
        let (store, conn) = open(dir.path());
        let ckpt = Checkpointer::start(&dir.path().join("ward.db"), INLINE_FRAMES).unwrap();
        let reader = Connection::open(dir.path().join("ward.db")).unwrap();
        for _ in 0..50 {
            write(&conn);
            ckpt.after_commit(&store);
        }
        // A read transaction on this snapshot, then more commits after it.
        reader.execute_batch("BEGIN").unwrap();
        let _: i64 = reader.query_row("SELECT COUNT(*) FROM t", [], |r| r.get(0)).unwrap();
        for _ in 0..5 {
            write(&conn);
            ckpt.after_commit(&store);
        }
        std::thread::sleep(IDLE_TRUNCATE_AFTER * 2 + Duration::from_millis(500));
        assert!(wal_pages(dir.path()) > 0, "emptied under a reader of an older snapshot");
        reader.execute_batch("COMMIT").unwrap();
        std::thread::sleep(IDLE_TRUNCATE_AFTER * 2 + Duration::from_millis(500));
        assert_eq!(std::fs::metadata(dir.path().join("ward.db-wal")).unwrap().len(), 0);
        let rows: i64 = conn.query_row("SELECT COUNT(*) FROM t", [], |r| r.get(0)).unwrap();
        assert_eq!(rows, 55);
    }

    /// A log the thread copies whole after each commit still grows when each
    /// transaction began before that copy finished (it cannot restart then): the
    /// writer checkpoints itself past the limit, between its commit and its next
    /// transaction, and the log restarts.
    #[test]
    fn a_log_copied_too_late_is_checkpointed_by_the_writer() {
        let dir = tempfile::tempdir().unwrap();
        let (store, conn) = open(dir.path());
        let other = Store::open(&dir.path().join("ward.db")).unwrap();
        let ckpt = Checkpointer::start(&dir.path().join("ward.db"), 500).unwrap();
        let mut log = 0;
        for _ in 0..100 {
            conn.execute_batch("BEGIN IMMEDIATE; INSERT INTO t VALUES (zeroblob(40000));")
                .unwrap();
            // The thread's checkpoint, finishing while the next transaction runs.
            let (frames, copied) = other.checkpoint().unwrap();
            assert_eq!(frames, copied);
            log = frames;
            ckpt.shared.log_frames.store(frames, Ordering::Relaxed);
            conn.execute_batch("COMMIT").unwrap();
        }
        assert!(log > 500, "{log} frames");
        assert_eq!(ckpt.inline_checkpoints(), 0);
        ckpt.after_commit(&store);
        assert_eq!(ckpt.inline_checkpoints(), 1);
        write(&conn);
        let (log, copied) = store.checkpoint().unwrap();
        assert_eq!(log, copied);
        assert!(log < 50, "{log} frames after the restart");
    }

    /// When every commit starts while a checkpoint is still copying, the log only
    /// grows; past the limit the writer checkpoints itself and it restarts.
    #[test]
    fn a_log_past_the_limit_is_checkpointed_by_the_writer() {
        let dir = tempfile::tempdir().unwrap();
        let (store, conn) = open(dir.path());
        let ckpt = Checkpointer::start(&dir.path().join("ward.db"), 500).unwrap();
        // A reader's snapshot keeps the log from restarting, as a checkpoint racing
        // the writer's next transaction does.
        let reader = Store::open_readonly(&dir.path().join("ward.db")).unwrap();
        let grown = reader
            .read_snapshot(|r| {
                r.last_alert_rowid()?;
                for _ in 0..100 {
                    write(&conn);
                    ckpt.after_commit(&store);
                }
                for _ in 0..200 {
                    if ckpt.shared.log_frames.load(Ordering::Relaxed) > 500 {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
                Ok(ckpt.shared.log_frames.load(Ordering::Relaxed))
            })
            .unwrap();
        assert!(grown > 500, "{grown} frames");
        // Past the limit the writer checkpoints itself (here, each commit: the reader
        // held every frame in the log).
        let during = ckpt.inline_checkpoints();
        assert!(during > 0);
        write(&conn);
        ckpt.after_commit(&store);
        assert_eq!(ckpt.inline_checkpoints(), during + 1);
        // Everything was copied, so the next transaction restarts the log and the
        // writer leaves checkpoints to the thread again.
        write(&conn);
        let (log, copied) = store.checkpoint().unwrap();
        assert_eq!(log, copied);
        assert!(log < 50, "{log} frames after the restart");
        // The next commit's checkpoint sees the short log; then the thread has them again.
        ckpt.after_commit(&store);
        let settled = ckpt.inline_checkpoints();
        write(&conn);
        ckpt.after_commit(&store);
        assert_eq!(ckpt.inline_checkpoints(), settled);
    }
}
