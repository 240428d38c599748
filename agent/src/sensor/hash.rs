//! SHA-256 of files, streamed under a size limit, with a small cache keyed by file identity.
//!
//! Must not read more than the limit of any file, nor hold file contents in memory, nor grow
//! without bound: the cache forgets its oldest entries beyond its capacity.

use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// Why a file could not be hashed.
#[derive(Debug, thiserror::Error)]
pub enum HashError {
    #[error("cannot read {path}: {source}")]
    Io { path: String, source: io::Error },
    #[error("{path} is not a regular file")]
    NotRegular { path: String },
    #[error("{path} is larger than the hash limit of {limit_bytes} bytes")]
    TooLarge { path: String, limit_bytes: u64 },
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
}

impl HashCache {
    /// A cache of at most `capacity_entries` hashes of files no larger than `limit_bytes`.
    pub fn new(capacity_entries: usize, limit_bytes: u64) -> Self {
        HashCache {
            map: HashMap::new(),
            order: VecDeque::new(),
            capacity_entries: capacity_entries.max(1),
            limit_bytes,
        }
    }

    /// How many hashes are cached.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// True when nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// The hash of the file at `path`, from the cache when its identity is unchanged.
    pub fn hash(&mut self, path: &Path) -> Result<[u8; 32], HashError> {
        let meta = std::fs::metadata(path).map_err(|source| HashError::Io {
            path: path.display().to_string(),
            source,
        })?;
        if let Some(d) = self.map.get(&FileKey::of(&meta)) {
            return Ok(*d);
        }
        let (digest, key) = sha256_file_with_key(path, self.limit_bytes)?;
        self.insert(key, digest);
        Ok(digest)
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
    fn cache_reuses_and_notices_changes_and_stays_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let mut cache = HashCache::new(2, 1 << 20);
        let a = dir.path().join("a");
        std::fs::write(&a, b"one").unwrap();
        let h1 = cache.hash(&a).unwrap();
        assert_eq!(cache.hash(&a).unwrap(), h1);
        assert_eq!(cache.len(), 1);
        let mut f = std::fs::OpenOptions::new().append(true).open(&a).unwrap();
        f.write_all(b" two").unwrap();
        drop(f);
        let h2 = cache.hash(&a).unwrap();
        assert_ne!(h1, h2);
        for name in ["b", "c", "d"] {
            let p = dir.path().join(name);
            std::fs::write(&p, name).unwrap();
            cache.hash(&p).unwrap();
        }
        assert_eq!(cache.len(), 2);
    }
}
