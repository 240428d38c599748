//! Renamed copies of system binaries (ATT&CK T1036.003): `cp /bin/sh /tmp/crond;
//! /tmp/crond` runs the shell under a name no rule about shells matches. An exec
//! from outside the system directories whose content is a system binary's, under a
//! name none of that content's system names has, gets the system path as its
//! `OriginalImage` (the built-in masquerading rule matches on it).
//!
//! Cheap on every exec: the system directories are listed once (and again every
//! [`RESCAN`], by the process sensors' maintenance tick, outside the lock the exec
//! path takes: [`listing`]) into executables by size; only an exec outside them whose size
//! equals a system binary's costs hashes, and those go through the sensor's hash
//! cache and budget, so each system binary is hashed once per version.
//!
//! Names are compared as families (`python3.11`, `python3` and `python` are one):
//! a virtualenv's copied interpreter, or a container image's own `sh`, keeps its
//! name and is not a masquerade.

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::hash::{HashCache, Priority};

/// Where a distribution installs the programs a masquerade copies.
pub const SYSTEM_DIRS: &[&str] = &[
    "/usr/bin",
    "/usr/sbin",
    "/bin",
    "/sbin",
    "/usr/libexec",
    "/usr/lib/systemd",
];
/// How often the system directories are listed again (packages change).
pub const RESCAN: Duration = Duration::from_secs(15 * 60);
/// At most this many executables are indexed (a distribution has a few thousand).
const MAX_INDEXED: usize = 50_000;

/// The system executables by size. See the module doc.
#[derive(Debug)]
pub struct SystemBinaries {
    dirs: Vec<PathBuf>,
    by_size: HashMap<u64, Vec<PathBuf>>,
    listed_at: Option<Instant>,
}

impl SystemBinaries {
    /// An index of `dirs`, listed at first use.
    pub fn new(dirs: &[&str]) -> Self {
        SystemBinaries {
            dirs: dirs.iter().map(PathBuf::from).collect(),
            by_size: HashMap::new(),
            listed_at: None,
        }
    }

    /// Whether `exe` lies in one of the system directories.
    pub fn is_system_path(&self, exe: &str) -> bool {
        let path = Path::new(exe);
        self.dirs.iter().any(|d| path.starts_with(d))
    }

    /// The directories indexed.
    pub fn dirs(&self) -> &[PathBuf] {
        &self.dirs
    }

    /// Whether the index is older than [`RESCAN`] (or was never listed).
    pub fn due(&self, now: Instant) -> bool {
        self.listed_at.is_none_or(|at| now.duration_since(at) >= RESCAN)
    }

    /// Takes a [`listing`] of the directories made at `now`.
    pub fn install(&mut self, by_size: HashMap<u64, Vec<PathBuf>>, now: Instant) {
        self.by_size = by_size;
        self.listed_at = Some(now);
    }

    /// The system binary `exe` (of `size` bytes and content `sha256`) is a renamed copy
    /// of, if it is one: `exe` outside the system directories, its content a system
    /// binary's, and its name not in that content's family of names.
    pub fn original_of(
        &mut self,
        exe: &str,
        size: u64,
        sha256: &[u8; 32],
        hashes: &mut HashCache,
        now: Instant,
    ) -> Option<String> {
        if exe.is_empty() || self.is_system_path(exe) {
            return None;
        }
        // Listed here only the first time; later the maintenance tick lists again.
        if self.listed_at.is_none() {
            self.install(listing(&self.dirs), now);
        }
        let candidates = self.by_size.get(&size)?;
        let same: Vec<&PathBuf> = candidates
            .iter()
            .filter(|c| hashes.hash_as(c, Priority::Executable).is_ok_and(|h| &h == sha256))
            .collect();
        let name = family(file_name(exe));
        if same.iter().any(|c| family(&c.to_string_lossy()) == name) {
            return None;
        }
        same.first().map(|c| c.to_string_lossy().into_owned())
    }
}

/// The executables in `dirs` by size (symlinks skipped: their target is listed
/// where it lives; /bin is /usr/bin on a merged-/usr system, so each directory is
/// listed once), at most [`MAX_INDEXED`].
pub fn listing(dirs: &[PathBuf]) -> HashMap<u64, Vec<PathBuf>> {
    let mut by_size: HashMap<u64, Vec<PathBuf>> = HashMap::new();
    let mut n = 0;
    let mut listed = Vec::new();
    for dir in dirs {
        let Ok(real) = std::fs::canonicalize(dir) else { continue };
        if listed.contains(&real) {
            continue;
        }
        listed.push(real);
        let Ok(entries) = std::fs::read_dir(dir) else { continue };
        for entry in entries.flatten() {
            let Ok(meta) = entry.metadata() else { continue };
            if !meta.is_file() || meta.permissions().mode() & 0o111 == 0 || n >= MAX_INDEXED {
                continue;
            }
            by_size.entry(meta.len()).or_default().push(entry.path());
            n += 1;
        }
    }
    by_size
}

fn file_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// A program's name without its version and case: `python3.11` → `python`.
fn family(name: &str) -> String {
    let name = file_name(name);
    name.trim_end_matches(|c: char| c.is_ascii_digit() || c == '.' || c == '-' || c == '_')
        .to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn executable(path: &Path, content: &[u8]) {
        std::fs::write(path, content).unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    fn sha(content: &[u8]) -> [u8; 32] {
        ring::digest::digest(&ring::digest::SHA256, content)
            .as_ref()
            .try_into()
            .unwrap()
    }

    struct Lab {
        _dir: tempfile::TempDir,
        sys: PathBuf,
        tmp: PathBuf,
        index: SystemBinaries,
        hashes: HashCache,
    }

    fn lab() -> Lab {
        let dir = tempfile::tempdir().unwrap();
        let sys = dir.path().join("usr/bin");
        let tmp = dir.path().join("tmp");
        std::fs::create_dir_all(&sys).unwrap();
        std::fs::create_dir_all(&tmp).unwrap();
        executable(&sys.join("sh"), b"#shell binary");
        executable(&sys.join("python3.11"), b"#python binary");
        executable(&sys.join("ls"), b"#ls binary..."); // the shell's size, not its content
        std::fs::write(sys.join("notes"), b"#not executable").unwrap();
        let index = SystemBinaries::new(&[sys.to_str().unwrap()]);
        Lab {
            _dir: dir,
            sys,
            tmp,
            index,
            hashes: HashCache::new(64, 1 << 20),
        }
    }

    fn check(l: &mut Lab, exe: &Path, content: &[u8]) -> Option<String> {
        let exe = exe.to_str().unwrap();
        l.index
            .original_of(exe, content.len() as u64, &sha(content), &mut l.hashes, Instant::now())
    }

    #[test]
    fn a_renamed_copy_outside_the_system_dirs_names_its_original() {
        let mut l = lab();
        let copy = l.tmp.join("crond");
        executable(&copy, b"#shell binary");
        assert_eq!(
            check(&mut l, &copy, b"#shell binary"),
            Some(l.sys.join("sh").display().to_string())
        );
    }

    #[test]
    fn same_names_other_content_and_system_paths_are_not_masquerades() {
        let mut l = lab();
        // A copy keeping its name (a container image's sh), or its family (a venv's python).
        let tmp = l.tmp.clone();
        executable(&tmp.join("sh"), b"#shell binary");
        assert_eq!(check(&mut l, &tmp.join("sh"), b"#shell binary"), None);
        executable(&tmp.join("python"), b"#python binary");
        assert_eq!(check(&mut l, &tmp.join("python"), b"#python binary"), None);
        // Same size as a system binary, other content.
        executable(&tmp.join("tool"), b"#own binary..");
        assert_eq!(check(&mut l, &tmp.join("tool"), b"#own binary.."), None);
        // In a system directory: not judged at all.
        let sys_sh = l.sys.join("dash");
        assert_eq!(check(&mut l, &sys_sh, b"#shell binary"), None);
        // A size no system binary has costs no hash.
        assert_eq!(check(&mut l, &tmp.join("other"), b"#other size entirely"), None);
    }

    #[test]
    fn families_drop_versions_and_case() {
        assert_eq!(family("/usr/bin/python3.11"), "python");
        assert_eq!(family("Python3"), "python");
        assert_eq!(family("crond"), "crond");
        assert_eq!(family("x86_64-linux-gnu-gcc-12"), "x86_64-linux-gnu-gcc");
    }

    #[test]
    fn the_index_is_listed_again_after_rescan() {
        let mut l = lab();
        let t0 = Instant::now();
        let copy = l.tmp.join("kworker");
        executable(&copy, b"#a new system tool");
        let c = b"#a new system tool";
        let exe = copy.to_str().unwrap().to_string();
        assert_eq!(
            l.index.original_of(&exe, c.len() as u64, &sha(c), &mut l.hashes, t0),
            None
        );
        executable(&l.sys.join("newtool"), c);
        assert_eq!(
            l.index.original_of(&exe, c.len() as u64, &sha(c), &mut l.hashes, t0),
            None,
            "listed at t0"
        );
        let later = t0 + RESCAN;
        assert_eq!(
            l.index.original_of(&exe, c.len() as u64, &sha(c), &mut l.hashes, later),
            None,
            "the exec path does not list again"
        );
        assert!(!l.index.due(t0 + RESCAN - Duration::from_secs(1)) && l.index.due(later));
        let fresh = listing(l.index.dirs());
        l.index.install(fresh, later);
        assert_eq!(
            l.index.original_of(&exe, c.len() as u64, &sha(c), &mut l.hashes, later),
            Some(l.sys.join("newtool").display().to_string())
        );
    }
}
