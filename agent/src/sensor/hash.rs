//! SHA-256 of files, streamed under a size limit, with a small cache keyed by file identity
//! and a per-second budget of bytes hashed shared by the sensors.
//!
//! Must not read more than the limit of any file, nor hold file contents in memory, nor grow
//! without bound: the cache forgets its oldest entries beyond its capacity. On a build host
//! fresh test binaries and object files arrive all the time; the budget caps what hashing
//! them costs, executables first, and every file left unhashed is counted.

use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Why a file could not be hashed.
#[derive(Debug, thiserror::Error)]
pub enum HashError {
    #[error("cannot read {path}: {source}")]
    Io { path: String, source: io::Error },
    #[error("{path} is not a regular file")]
    NotRegular { path: String },
    #[error("{path} is larger than the hash limit of {limit_bytes} bytes")]
    TooLarge { path: String, limit_bytes: u64 },
    #[error("{path}: the hashing budget is spent for now")]
    OverBudget { path: String },
}

/// Who asks for a hash: executables (a process's image, or a file with an execute bit)
/// may spend the whole budget; other files only what is left above a reserve kept for
/// executables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Priority {
    Executable,
    File,
}

/// A token bucket of bytes hashed per second, shared by every hash cache of the agent.
/// The bucket holds one second of budget; a file larger than that is hashed when the
/// bucket is full and leaves it in debt, so no size is refused forever.
#[derive(Debug)]
pub struct HashBudget {
    bytes_per_s: u64,
    state: Mutex<BudgetState>,
}

#[derive(Debug)]
struct BudgetState {
    tokens: i128,
    at: Instant,
    skipped: [u64; 2],
    /// Large files under temporary directories left unhashed (`HashPolicy`).
    temp_skipped: u64,
    reported_at: Option<Instant>,
}

/// An executable this small is always hashed (and still charged): the budget is for
/// the big fresh binaries of a build host, and a dropped payload must not go unhashed
/// because a test binary just spent the second's budget.
pub const SMALL_EXECUTABLE_BYTES: u64 = 1024 * 1024;

/// How often at most the budget's skips are reported as a gap.
const BUDGET_REPORT_EVERY: Duration = Duration::from_secs(60);

impl HashBudget {
    /// A budget of `bytes_per_s` (0: unlimited).
    pub fn new(bytes_per_s: u64) -> Arc<Self> {
        Arc::new(HashBudget {
            bytes_per_s,
            state: Mutex::new(BudgetState {
                tokens: i128::from(bytes_per_s),
                at: Instant::now(),
                skipped: [0; 2],
                temp_skipped: 0,
                reported_at: None,
            }),
        })
    }

    /// An unlimited budget.
    pub fn unlimited() -> Arc<Self> {
        Self::new(0)
    }

    fn state(&self) -> std::sync::MutexGuard<'_, BudgetState> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Takes `bytes` from the budget at `now` if `priority` may.
    pub fn take(&self, bytes: u64, priority: Priority, now: Instant) -> bool {
        if self.bytes_per_s == 0 {
            return true;
        }
        let rate = i128::from(self.bytes_per_s);
        let mut st = self.state();
        let elapsed = now.saturating_duration_since(st.at);
        st.at = now;
        let refill = rate.saturating_mul(elapsed.as_micros() as i128) / 1_000_000;
        st.tokens = st.tokens.saturating_add(refill).min(rate);
        // Other files leave a quarter of a second's budget to executables.
        let reserve = match priority {
            Priority::Executable => 0,
            Priority::File => rate / 4,
        };
        let need = i128::from(bytes).min(rate - reserve);
        let small_executable = priority == Priority::Executable && bytes <= SMALL_EXECUTABLE_BYTES;
        if small_executable || st.tokens - reserve >= need {
            st.tokens -= i128::from(bytes);
            true
        } else {
            false
        }
    }

    /// Counts a file reported without a hash because of the budget (once per file: a
    /// caller that retries counts when it gives up).
    pub fn count_skip(&self, priority: Priority) {
        self.state().skipped[priority as usize] += 1;
    }

    /// Counts a large file under a temporary directory reported without a hash (see
    /// the file sensor's `HashPolicy`): not the budget's doing, but reported with it.
    pub fn count_temp_skip(&self) {
        self.state().temp_skipped += 1;
    }

    /// A line for the sensor board when files were left unhashed since the last report,
    /// at most once a minute.
    pub fn report(&self, now: Instant) -> Option<String> {
        let mut st = self.state();
        if (st.skipped == [0, 0] && st.temp_skipped == 0)
            || st
                .reported_at
                .is_some_and(|t| now.saturating_duration_since(t) < BUDGET_REPORT_EVERY)
        {
            return None;
        }
        let [exes, files] = std::mem::take(&mut st.skipped);
        let temp = std::mem::take(&mut st.temp_skipped);
        st.reported_at = Some(now);
        if exes == 0 && files == 0 {
            return Some(format!(
                "{temp} large files under temporary directories (no execute bit, over [sensors] \
                 file_hash_temp_max_bytes) reported without a SHA-256 since the last report"
            ));
        }
        let temp = if temp == 0 {
            String::new()
        } else {
            format!("; {temp} large files under temporary directories (no execute bit) likewise")
        };
        Some(format!(
            "hashing budget ({} MiB/s) spent: {exes} executables and {files} other files reported without a SHA-256 \
             since the last report (raise [sensors] hash_budget_bytes_per_s to hash more){temp}",
            self.bytes_per_s / (1024 * 1024)
        ))
    }
}

/// What identifies one version of a file's content well enough to reuse its hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FileKey {
    pub dev: u64,
    pub ino: u64,
    pub mtime_ns: i128,
    pub size: u64,
}

impl FileKey {
    /// The key of a file's metadata.
    pub fn of(meta: &std::fs::Metadata) -> Self {
        FileKey {
            dev: meta.dev(),
            ino: meta.ino(),
            mtime_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
            size: meta.size(),
        }
    }
}

/// SHA-256 of everything `reader` yields, reading at most `limit_bytes + 1` bytes.
/// Returns `Ok(None)` when there was more than `limit_bytes`.
pub fn sha256_reader(reader: &mut impl Read, limit_bytes: u64) -> io::Result<Option<[u8; 32]>> {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    let mut buf = vec![0u8; 64 * 1024];
    let mut total: u64 = 0;
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        total = total.saturating_add(n as u64);
        if total > limit_bytes {
            return Ok(None);
        }
        ctx.update(buf.get(..n).unwrap_or_default());
    }
    let digest = ctx.finish();
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_ref());
    Ok(Some(out))
}

/// SHA-256 of a regular file no larger than `limit_bytes`, streamed.
///
/// The size is checked before reading and again while reading (a file that grows past the
/// limit meanwhile is refused, never read to the end).
pub fn sha256_file(path: &Path, limit_bytes: u64) -> Result<[u8; 32], HashError> {
    let (digest, _) = sha256_file_with_key(path, limit_bytes)?;
    Ok(digest)
}

fn sha256_file_with_key(path: &Path, limit_bytes: u64) -> Result<([u8; 32], FileKey), HashError> {
    let p = || path.display().to_string();
    let mut file = File::open(path).map_err(|source| HashError::Io { path: p(), source })?;
    let meta = file.metadata().map_err(|source| HashError::Io { path: p(), source })?;
    if !meta.is_file() {
        return Err(HashError::NotRegular { path: p() });
    }
    if meta.len() > limit_bytes {
        return Err(HashError::TooLarge { path: p(), limit_bytes });
    }
    match sha256_reader(&mut file, limit_bytes) {
        Ok(Some(d)) => Ok((d, FileKey::of(&meta))),
        Ok(None) => Err(HashError::TooLarge { path: p(), limit_bytes }),
        Err(source) => Err(HashError::Io { path: p(), source }),
    }
}

/// A bounded cache of file hashes keyed by [`FileKey`].
///
/// A changed file gets a new key (its mtime or size changes), so a stale hash is never
/// returned for content written through the normal file APIs. Capacity is in entries
/// (each about 80 bytes); the oldest inserted entry is evicted first.
#[derive(Debug)]
pub struct HashCache {
    map: HashMap<FileKey, [u8; 32]>,
    order: VecDeque<FileKey>,
    capacity_entries: usize,
    limit_bytes: u64,
    budget: Arc<HashBudget>,
}

impl HashCache {
    /// A cache of at most `capacity_entries` hashes of files no larger than `limit_bytes`.
    /// Not limited by a budget.
    pub fn new(capacity_entries: usize, limit_bytes: u64) -> Self {
        Self::with_budget(capacity_entries, limit_bytes, HashBudget::unlimited())
    }

    /// As [`HashCache::new`], hashing only what `budget` allows (cache hits are free).
    pub fn with_budget(capacity_entries: usize, limit_bytes: u64, budget: Arc<HashBudget>) -> Self {
        HashCache {
            map: HashMap::new(),
            order: VecDeque::new(),
            capacity_entries: capacity_entries.max(1),
            limit_bytes,
            budget,
        }
    }

    /// The budget this cache spends.
    pub fn budget(&self) -> &Arc<HashBudget> {
        &self.budget
    }

    /// How many hashes are cached.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// True when nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// The hash of the file at `path`, from the cache when its identity is unchanged,
    /// else read within the budget as `priority`.
    pub fn hash_as(&mut self, path: &Path, priority: Priority) -> Result<[u8; 32], HashError> {
        let meta = std::fs::metadata(path).map_err(|source| HashError::Io {
            path: path.display().to_string(),
            source,
        })?;
        if let Some(d) = self.map.get(&FileKey::of(&meta)) {
            return Ok(*d);
        }
        if meta.is_file() && meta.len() <= self.limit_bytes && !self.budget.take(meta.len(), priority, Instant::now()) {
            return Err(HashError::OverBudget {
                path: path.display().to_string(),
            });
        }
        let (digest, key) = sha256_file_with_key(path, self.limit_bytes)?;
        self.insert(key, digest);
        Ok(digest)
    }

    /// The cached hash of the file version `key`, if any (no IO).
    pub fn cached(&self, key: &FileKey) -> Option<[u8; 32]> {
        self.map.get(key).copied()
    }

    fn insert(&mut self, key: FileKey, digest: [u8; 32]) {
        if self.map.insert(key, digest).is_none() {
            self.order.push_back(key);
        }
        while self.map.len() > self.capacity_entries {
            match self.order.pop_front() {
                Some(old) => {
                    self.map.remove(&old);
                }
                None => break,
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use std::io::Write;

    fn hex(d: &[u8; 32]) -> String {
        d.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn hashes_known_vectors() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("abc");
        std::fs::write(&p, b"abc").unwrap();
        assert_eq!(
            hex(&sha256_file(&p, 10).unwrap()),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let e = dir.path().join("empty");
        std::fs::write(&e, b"").unwrap();
        assert_eq!(
            hex(&sha256_file(&e, 0).unwrap()),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn refuses_files_over_the_limit_and_non_files() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("big");
        std::fs::write(&p, vec![7u8; 1000]).unwrap();
        assert!(matches!(sha256_file(&p, 999), Err(HashError::TooLarge { .. })));
        assert!(sha256_file(&p, 1000).is_ok());
        assert!(matches!(
            sha256_file(dir.path(), 1000),
            Err(HashError::NotRegular { .. })
        ));
        assert!(matches!(
            sha256_file(&dir.path().join("nope"), 1000),
            Err(HashError::Io { .. })
        ));
        let mut r: &[u8] = &[1u8; 10];
        assert_eq!(sha256_reader(&mut r, 9).unwrap(), None);
    }

    #[test]
    fn the_budget_refills_per_second_and_keeps_a_reserve_for_executables() {
        let b = HashBudget::new(1000);
        let t0 = Instant::now();
        assert!(b.take(700, Priority::File, t0));
        assert!(
            !b.take(100, Priority::File, t0),
            "300 left, 250 of them kept for executables"
        );
        assert!(b.take(300, Priority::Executable, t0));
        assert!(!b.take(1, Priority::File, t0));
        assert!(
            b.take(500, Priority::File, t0 + Duration::from_millis(800)),
            "800 refilled"
        );
        // Larger than a second's budget: taken from a full bucket, leaving a debt.
        let t1 = t0 + Duration::from_secs(10);
        assert!(b.take(5000, Priority::Executable, t1));
        assert!(!b.take(1, Priority::File, t1 + Duration::from_secs(3)));
        assert!(b.take(1, Priority::File, t1 + Duration::from_secs(5)));
        b.count_skip(Priority::Executable);
        b.count_skip(Priority::Executable);
        b.count_skip(Priority::File);
        let report = b.report(t1).unwrap();
        assert!(report.contains("2 executables and 1 other files"), "{report}");
        assert!(b.report(t1).is_none(), "nothing new, and not again within a minute");
        assert!(HashBudget::unlimited().take(u64::MAX, Priority::File, t0));
    }

    #[test]
    fn a_small_executable_is_hashed_even_when_a_big_one_spent_the_budget() {
        let b = HashBudget::new(32 * 1024 * 1024);
        let t0 = Instant::now();
        assert!(
            b.take(60 * 1024 * 1024, Priority::Executable, t0),
            "from the full bucket"
        );
        assert!(!b.take(2 * 1024 * 1024, Priority::Executable, t0), "a big one waits");
        assert!(b.take(SMALL_EXECUTABLE_BYTES, Priority::Executable, t0));
        assert!(!b.take(4096, Priority::File, t0), "other files still wait");
    }

    #[test]
    fn an_over_budget_file_is_refused_until_the_budget_allows_and_hits_are_free() {
        let dir = tempfile::tempdir().unwrap();
        let mut cache = HashCache::with_budget(8, 1 << 20, HashBudget::new(4096));
        let a = dir.path().join("a");
        std::fs::write(&a, vec![1u8; 3000]).unwrap();
        let b = dir.path().join("b");
        std::fs::write(&b, vec![2u8; 3000]).unwrap();
        let ha = cache.hash_as(&a, Priority::File).unwrap();
        assert!(matches!(
            cache.hash_as(&b, Priority::File),
            Err(HashError::OverBudget { .. })
        ));
        assert_eq!(
            cache.hash_as(&a, Priority::File).unwrap(),
            ha,
            "a cached hash costs nothing"
        );
        std::thread::sleep(Duration::from_millis(800));
        assert!(cache.hash_as(&b, Priority::Executable).is_ok());
    }

    #[test]
    fn cache_reuses_and_notices_changes_and_stays_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let mut cache = HashCache::new(2, 1 << 20);
        let a = dir.path().join("a");
        std::fs::write(&a, b"one").unwrap();
        let h1 = cache.hash_as(&a, Priority::File).unwrap();
        assert_eq!(cache.hash_as(&a, Priority::File).unwrap(), h1);
        assert_eq!(cache.len(), 1);
        let mut f = std::fs::OpenOptions::new().append(true).open(&a).unwrap();
        f.write_all(b" two").unwrap();
        drop(f);
        let h2 = cache.hash_as(&a, Priority::File).unwrap();
        assert_ne!(h1, h2);
        for name in ["b", "c", "d"] {
            let p = dir.path().join(name);
            std::fs::write(&p, name).unwrap();
            cache.hash_as(&p, Priority::File).unwrap();
        }
        assert_eq!(cache.len(), 2);
    }
}
