//! Which paths a file action (quarantine, restore, delete) may name.
//!
//! [`PathPolicy::check`] decides twice: on the path exactly as the command gave it (absolute,
//! no `.`/`..` components, no NUL, inside an allowed root, outside every protected path) and
//! on the same path with its parent directory resolved by `realpath`, so that a symlinked
//! parent cannot lead outside the allowed roots or into a protected tree. The final
//! component is deliberately left unresolved: the file executors open it with `O_NOFOLLOW`
//! and refuse a symlink.
//!
//! Must not touch the file itself, create anything or follow the final component; a refusal
//! is final (there is no "force"). The check is one step of a defence in depth: the executors
//! in [`super::file`] still open the parent without following symlinks and verify the
//! identity (device, inode, SHA-256) of what they act on.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};

/// Longest path accepted, bytes (Linux PATH_MAX).
pub const MAX_PATH_BYTES: usize = 4096;

/// `/dev` is protected except for this tmpfs, where malware likes to drop files.
const DEV: &str = "/dev";
const DEV_SHM: &str = "/dev/shm";

/// Where file actions may act, and what they must never touch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathPolicy {
    /// A path must be inside one of these (component-wise), both as given and resolved.
    pub allowed_roots: Vec<PathBuf>,
    /// Always refused, even inside an allowed root. `/dev` is special: `/dev/shm` stays
    /// allowed when it is also an allowed root.
    pub protected: Vec<PathBuf>,
}

/// The allowed roots when the configuration names none.
pub fn default_allowed_roots() -> Vec<PathBuf> {
    [
        "/home",
        "/tmp",
        "/var/tmp",
        "/dev/shm",
        "/root",
        "/opt",
        "/srv",
        "/etc/cron.d",
        "/etc/systemd/system",
        "/var/spool/cron",
    ]
    .iter()
    .map(PathBuf::from)
    .collect()
}

/// Most files of the agent's own directories whose identities are protected.
pub const MAX_OWN_FILES: usize = 10_000;

/// Adds the (device, inode) of the files under `dir` (not following symlinks) to `out`.
fn own_files(dir: &Path, depth: u32, out: &mut Vec<(u64, u64)>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        if out.len() >= MAX_OWN_FILES {
            return;
        }
        let Ok(m) = e.path().symlink_metadata() else { continue };
        if m.is_file() {
            out.push((m.dev(), m.ino()));
        } else if m.is_dir() && depth > 1 {
            own_files(&e.path(), depth - 1, out);
        }
    }
}

/// System trees that are always protected, whatever the configuration says.
pub fn default_protected() -> Vec<PathBuf> {
    ["/proc", "/sys", DEV, "/boot"].iter().map(PathBuf::from).collect()
}

impl Default for PathPolicy {
    fn default() -> Self {
        PathPolicy {
            allowed_roots: default_allowed_roots(),
            protected: default_protected(),
        }
    }
}

/// Why a path was refused; the text is meant for the action's result at the collector.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("path is empty")]
    Empty,
    #[error("path is longer than {MAX_PATH_BYTES} bytes")]
    TooLong,
    #[error("path contains a NUL byte")]
    Nul,
    #[error("path is not absolute: {0}")]
    Relative(String),
    #[error("path contains a `.` or `..` component: {0}")]
    DotComponent(String),
    #[error("path names no file (root or trailing slash): {0}")]
    NoFileName(String),
    #[error("path is outside the allowed roots: {0}")]
    OutsideAllowedRoots(String),
    #[error("path {path} is inside the protected path {protected}")]
    Protected { path: String, protected: String },
    #[error("parent directory of {path} cannot be resolved: {reason}")]
    ParentUnresolvable { path: String, reason: String },
    #[error("path {path} resolves to {resolved}, outside the allowed roots")]
    ResolvedOutsideAllowedRoots { path: String, resolved: String },
    #[error("path {path} resolves to {resolved}, inside the protected path {protected}")]
    ResolvedProtected {
        path: String,
        resolved: String,
        protected: String,
    },
}

/// A path that passed [`PathPolicy::check`]: the parent as resolved at check time (free of
/// symlinks) and the final component, unresolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CanonicalPath {
    given: PathBuf,
    parent: PathBuf,
    name: OsString,
}

impl CanonicalPath {
    /// The path as the command gave it.
    pub fn given(&self) -> &Path {
        &self.given
    }

    /// The parent directory, resolved (absolute, no symlinks at check time).
    pub fn parent(&self) -> &Path {
        &self.parent
    }

    /// The final component, never resolved.
    pub fn file_name(&self) -> &OsStr {
        &self.name
    }

    /// The resolved parent joined with the final component.
    pub fn resolved(&self) -> PathBuf {
        self.parent.join(&self.name)
    }
}

fn show(p: &Path) -> String {
    p.display().to_string()
}

/// The canonical form of a configured path when it exists, else the path as written.
fn canonical_or_same(p: &Path) -> PathBuf {
    std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf())
}

/// A configured root is usable only when absolute and not `/` itself.
fn usable_root(p: &Path) -> bool {
    p.is_absolute() && p.parent().is_some()
}

impl PathPolicy {
    /// The default policy with the agent's own files protected: its state directory, the
    /// quarantine directory and the running executable.
    pub fn for_agent(state_dir: &Path, quarantine_dir: &Path) -> Self {
        let mut policy = PathPolicy::default();
        policy.protected.push(state_dir.to_path_buf());
        policy.protected.push(quarantine_dir.to_path_buf());
        if let Ok(exe) = std::env::current_exe() {
            policy.protected.push(exe);
        }
        policy
    }

    /// Configuration problems: relative entries or `/` as an allowed root (which would allow
    /// everything). Entries that fail here are ignored by [`check`](Self::check) for allowed
    /// roots; relative protected entries are ignored too, so callers should validate.
    pub fn validate(&self) -> Result<(), String> {
        for root in &self.allowed_roots {
            if !usable_root(root) {
                return Err(format!("allowed root {} must be absolute and not /", show(root)));
            }
        }
        for p in &self.protected {
            if !p.is_absolute() {
                return Err(format!("protected path {} must be absolute", show(p)));
            }
        }
        Ok(())
    }

    fn inside_allowed(&self, path: &Path) -> bool {
        self.allowed_roots.iter().filter(|r| usable_root(r)).any(|root| {
            // The path must name something strictly inside the root, not the root itself.
            (path.starts_with(root) && path != root) || {
                let c = canonical_or_same(root);
                path.starts_with(&c) && path != c
            }
        })
    }

    /// The protected entry `path` falls in, if any.
    fn protected_by(&self, path: &Path) -> Option<&Path> {
        self.protected.iter().filter(|p| p.is_absolute()).find_map(|p| {
            let exempt = p == Path::new(DEV)
                && path.starts_with(DEV_SHM)
                && path != Path::new(DEV_SHM)
                && self.allowed_roots.iter().any(|r| r == Path::new(DEV_SHM));
            let hit = path.starts_with(p) || path.starts_with(canonical_or_same(p));
            (hit && !exempt).then_some(p.as_path())
        })
    }

    /// (device, inode) of the protected entries that exist, following symlinks: a hard link
    /// to the agent's executable elsewhere is still the agent's executable. For protected
    /// directories other than the system trees (the agent's state and quarantine
    /// directories), the files in them too (two levels, at most [`MAX_OWN_FILES`]), so a
    /// name that reaches one another way (a bind mount, a hard link) is still refused.
    pub fn protected_identities(&self) -> Vec<(u64, u64)> {
        let system = default_protected();
        let mut out: Vec<(u64, u64)> = Vec::new();
        for p in &self.protected {
            let Ok(m) = std::fs::metadata(p) else { continue };
            out.push((m.dev(), m.ino()));
            if m.is_dir() && !system.contains(p) {
                own_files(p, 2, &mut out);
            }
        }
        out
    }

    /// Decides whether a file action may name `path`. See the module documentation.
    pub fn check(&self, path: &Path) -> Result<CanonicalPath, Refusal> {
        let bytes = path.as_os_str().as_bytes();
        if bytes.is_empty() {
            return Err(Refusal::Empty);
        }
        if bytes.len() > MAX_PATH_BYTES {
            return Err(Refusal::TooLong);
        }
        if bytes.contains(&0) {
            return Err(Refusal::Nul);
        }
        if bytes.first() != Some(&b'/') {
            return Err(Refusal::Relative(show(path)));
        }
        // Literal segments, not Path::components (which hides `.`).
        if bytes.split(|&b| b == b'/').any(|seg| seg == b"." || seg == b"..") {
            return Err(Refusal::DotComponent(show(path)));
        }
        if bytes.last() == Some(&b'/') {
            return Err(Refusal::NoFileName(show(path)));
        }
        let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
            return Err(Refusal::NoFileName(show(path)));
        };
        debug_assert!(
            path.components()
                .all(|c| matches!(c, Component::RootDir | Component::Normal(_)))
        );

        // As given.
        if !self.inside_allowed(path) {
            return Err(Refusal::OutsideAllowedRoots(show(path)));
        }
        if let Some(p) = self.protected_by(path) {
            return Err(Refusal::Protected {
                path: show(path),
                protected: show(p),
            });
        }

        // With the parent resolved.
        let resolved_parent = std::fs::canonicalize(parent).map_err(|e| Refusal::ParentUnresolvable {
            path: show(path),
            reason: e.to_string(),
        })?;
        let resolved = resolved_parent.join(name);
        if !self.inside_allowed(&resolved) {
            return Err(Refusal::ResolvedOutsideAllowedRoots {
                path: show(path),
                resolved: show(&resolved),
            });
        }
        if let Some(p) = self.protected_by(&resolved) {
            return Err(Refusal::ResolvedProtected {
                path: show(path),
                resolved: show(&resolved),
                protected: show(p),
            });
        }
        Ok(CanonicalPath {
            given: path.to_path_buf(),
            parent: resolved_parent,
            name: name.to_os_string(),
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn policy_for(root: &Path) -> PathPolicy {
        PathPolicy {
            allowed_roots: vec![root.to_path_buf(), PathBuf::from(DEV_SHM)],
            protected: vec![PathBuf::from("/proc"), PathBuf::from(DEV), root.join("state")],
        }
    }

    #[test]
    fn literal_refusals() {
        let p = PathPolicy::default();
        assert_eq!(p.check(Path::new("")), Err(Refusal::Empty));
        assert!(matches!(p.check(Path::new("tmp/x")), Err(Refusal::Relative(_))));
        assert!(matches!(
            p.check(Path::new("/tmp/../etc/passwd")),
            Err(Refusal::DotComponent(_))
        ));
        assert!(matches!(p.check(Path::new("/tmp/./x")), Err(Refusal::DotComponent(_))));
        assert!(matches!(p.check(Path::new("/tmp/x/")), Err(Refusal::NoFileName(_))));
        assert!(matches!(
            p.check(Path::new("/")),
            Err(Refusal::OutsideAllowedRoots(_)) | Err(Refusal::NoFileName(_))
        ));
        assert!(matches!(
            p.check(Path::new("/tmp")),
            Err(Refusal::OutsideAllowedRoots(_))
        ));
        assert!(matches!(
            p.check(Path::new("/etc/passwd")),
            Err(Refusal::OutsideAllowedRoots(_))
        ));
        assert!(matches!(
            p.check(Path::new("/proc/self/exe")),
            Err(Refusal::OutsideAllowedRoots(_))
        ));
        let long = format!("/tmp/{}", "a".repeat(MAX_PATH_BYTES));
        assert_eq!(p.check(Path::new(&long)), Err(Refusal::TooLong));
        use std::os::unix::ffi::OsStrExt;
        assert_eq!(p.check(Path::new(OsStr::from_bytes(b"/tmp/a\0b"))), Err(Refusal::Nul));
    }

    #[test]
    fn dev_is_protected_but_dev_shm_is_not() {
        let p = PathPolicy::default();
        assert!(p.check(Path::new("/dev/shm/payload")).is_ok());
        let mut with_dev = p.clone();
        with_dev.allowed_roots.push(PathBuf::from("/dev"));
        assert!(matches!(
            with_dev.check(Path::new("/dev/null")),
            Err(Refusal::Protected { .. })
        ));
    }

    #[test]
    fn protected_inside_allowed_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        std::fs::create_dir(root.join("state")).unwrap();
        let p = policy_for(&root);
        assert!(matches!(
            p.check(&root.join("state/key")),
            Err(Refusal::Protected { .. })
        ));
        assert!(p.check(&root.join("file")).is_ok());
    }

    #[test]
    fn symlinked_parent_cannot_escape() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        let allowed = root.join("allowed");
        std::fs::create_dir(&allowed).unwrap();
        std::fs::create_dir(root.join("outside")).unwrap();
        std::os::unix::fs::symlink(root.join("outside"), allowed.join("link")).unwrap();
        std::os::unix::fs::symlink("/proc/self", allowed.join("proc")).unwrap();
        let p = PathPolicy {
            allowed_roots: vec![allowed.clone()],
            protected: default_protected(),
        };
        assert!(matches!(
            p.check(&allowed.join("link/secret")),
            Err(Refusal::ResolvedOutsideAllowedRoots { .. })
        ));
        assert!(matches!(
            p.check(&allowed.join("proc/environ")),
            Err(Refusal::ResolvedOutsideAllowedRoots { .. })
        ));
        assert!(matches!(
            p.check(&allowed.join("missing/x")),
            Err(Refusal::ParentUnresolvable { .. })
        ));
        let ok = p.check(&allowed.join("x")).unwrap();
        assert_eq!(ok.resolved(), allowed.join("x"));
    }

    #[test]
    fn slash_is_not_a_usable_root() {
        let p = PathPolicy {
            allowed_roots: vec![PathBuf::from("/")],
            protected: vec![],
        };
        assert!(p.validate().is_err());
        assert!(p.check(Path::new("/etc/passwd")).is_err());
    }
}
