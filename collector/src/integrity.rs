//! SQLite's quick check of `ward.db` at start. Acknowledging alerts into a damaged
//! file would promise what it may not keep, so a damaged database stops the
//! collector with the way out (restore a backup, or `--skip-integrity-check` to
//! export what it holds; docs/troubleshooting.md).
//!
//! The check reads every page (2.5 s for a 1 GB database here), so it runs beside
//! serving, not before it: a restart answers its agents at once. When it finds
//! damage the collector stops at once, as a crash would (nothing unacknowledged is
//! lost: agents keep it), and leaves [`FAILED_FLAG`] in the data dir, so every later
//! start checks before it listens and refuses while the damage is there.
//! Acknowledgements given while the check ran went into the file that failed it;
//! restoring a backup loses them as it loses everything since the backup, and
//! `sqlite3 .recover` keeps what it can read.

use std::path::{Path, PathBuf};

use crate::store::Store;

/// Left in the data dir when a check found damage; removed by the first check that passes.
pub const FAILED_FLAG: &str = "integrity-check-failed";

/// Most problems the check lists.
const MAX_PROBLEMS: u32 = 10;

/// What the start-up check decided.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The file passed, or there is none yet.
    Intact,
    /// Damaged, but `--skip-integrity-check` was given: logged, and serving goes on.
    DamagedSkipped,
}

/// The check before serving: only when an earlier check failed (the flag is there).
/// `Ok(None)` when the check is left to [`check_beside_serving`].
pub fn check_before_serving(data_dir: &Path, db: &Path, skip: bool) -> Result<Option<Outcome>, String> {
    if !flag(data_dir).exists() {
        return Ok(None);
    }
    check_now(data_dir, db, skip).map(Some)
}

/// The check while serving, on a thread of its own; on damage (without `skip`) it
/// logs why and the way out, leaves the flag and ends the process with status 1.
pub fn check_beside_serving(data_dir: &Path, db: &Path, skip: bool) -> std::io::Result<std::thread::JoinHandle<()>> {
    let (data_dir, db) = (data_dir.to_path_buf(), db.to_path_buf());
    std::thread::Builder::new()
        .name("ward-integrity".into())
        .spawn(move || {
            if let Err(message) = check_now(&data_dir, &db, skip) {
                tracing::error!("{message}");
                eprintln!("Error: {message}");
                std::process::exit(1);
            }
        })
}

/// Runs the quick check; on damage leaves the flag, and refuses unless `skip`.
pub fn check_now(data_dir: &Path, db: &Path, skip: bool) -> Result<Outcome, String> {
    if !db.exists() {
        return Ok(Outcome::Intact);
    }
    // A file too damaged to check ("database disk image is malformed") is damaged too.
    let problems = Store::quick_check(db, MAX_PROBLEMS).unwrap_or_else(|e| vec![e.to_string()]);
    if problems.is_empty() {
        if let Err(e) = std::fs::remove_file(flag(data_dir))
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(error = %e, "the database passed its integrity check; its failure flag could not be removed");
        }
        return Ok(Outcome::Intact);
    }
    if let Err(e) = std::fs::write(flag(data_dir), problems.join("\n")) {
        tracing::warn!(error = %e, "could not leave the integrity failure flag in the data dir");
    }
    let listed = problems.join("; ");
    if skip {
        tracing::error!(db = %db.display(), problems = %listed, "database fails its integrity check; running on it as asked (--skip-integrity-check)");
        return Ok(Outcome::DamagedSkipped);
    }
    Err(format!(
        "database integrity check: {} is damaged ({listed}): restore the last backup (docs/backup-restore.md), \
         or start with `serve --skip-integrity-check` to export what it still holds",
        db.display()
    ))
}

fn flag(data_dir: &Path) -> PathBuf {
    data_dir.join(FAILED_FLAG)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn damaged_db(dir: &Path) -> PathBuf {
        let db = dir.join("ward.db");
        let conn = rusqlite::Connection::open(&db).unwrap();
        conn.execute_batch(
            "CREATE TABLE t(x TEXT); CREATE INDEX t_x ON t(x);
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 4000)
             INSERT INTO t SELECT printf('%0100d', i) FROM n;",
        )
        .unwrap();
        drop(conn);
        let mut bytes = std::fs::read(&db).unwrap();
        let mid = bytes.len() / 2 / 4096 * 4096;
        bytes[mid..mid + 8192].fill(0xA5);
        std::fs::write(&db, bytes).unwrap();
        db
    }

    #[test]
    fn damage_leaves_the_flag_and_the_next_start_checks_before_serving() {
        let dir = tempfile::tempdir().unwrap();
        let db = damaged_db(dir.path());
        assert_eq!(
            check_before_serving(dir.path(), &db, false),
            Ok(None),
            "no flag: checked beside serving"
        );
        let refused = check_now(dir.path(), &db, false).unwrap_err();
        assert!(
            refused.contains("is damaged") && refused.contains("--skip-integrity-check"),
            "{refused}"
        );
        assert!(dir.path().join(FAILED_FLAG).exists());
        assert!(
            check_before_serving(dir.path(), &db, false).is_err(),
            "the flag makes the next start check first"
        );
        assert_eq!(
            check_before_serving(dir.path(), &db, true),
            Ok(Some(Outcome::DamagedSkipped))
        );
    }

    #[test]
    fn a_restored_file_passes_and_clears_the_flag() {
        let dir = tempfile::tempdir().unwrap();
        let db = damaged_db(dir.path());
        check_now(dir.path(), &db, false).unwrap_err();
        std::fs::remove_file(&db).unwrap();
        rusqlite::Connection::open(&db)
            .unwrap()
            .execute_batch("CREATE TABLE t(x)")
            .unwrap();
        assert_eq!(check_before_serving(dir.path(), &db, false), Ok(Some(Outcome::Intact)));
        assert!(!dir.path().join(FAILED_FLAG).exists());
        assert_eq!(check_before_serving(dir.path(), &db, false), Ok(None));
    }
}
