//! Quarantine, restore and delete of one file, bound to its SHA-256.
//!
//! Every action works on exactly the object the command identified: the path must pass
//! [`PathPolicy::check`]; the parent directory is opened component by component with
//! `O_NOFOLLOW` (a directory swapped for a symlink after the check is refused); the file is
//! opened relative to that directory with `O_NOFOLLOW|O_NONBLOCK|O_CLOEXEC` (a symlink as the
//! final component is refused, a FIFO cannot block us), checked with `fstat` to be a regular
//! file, and hashed through that same descriptor. Only when the hash matches is anything
//! changed, and then only through the descriptor or after `fstatat(AT_SYMLINK_NOFOLLOW)`
//! shows the name still holds the same (device, inode):
//!
//! - quarantine: the open inode is hard-linked into the quarantine directory (`linkat` of
//!   the descriptor; on another filesystem, a copy read from the descriptor, verified and
//!   fsynced), the record `<id>.json` is written, then the original name is unlinked after
//!   the (device, inode) check, and the quarantined file loses its exec, setuid and setgid
//!   bits. Any failure before the unlink removes what was created: nothing changed.
//! - restore: the quarantined bytes are verified against the record, given back their owner
//!   and mode, and linked (never renamed) to the original path, so an existing file there is
//!   never overwritten.
//! - delete: the original name is unlinked after the same checks.
//!
//! A file with more than one hard link is refused (quarantine and delete): its other names
//! cannot be listed, so they may be outside the allowed roots (a setuid binary hard-linked
//! into /tmp, the agent's own key), and stripping the mode would change them too. Files in
//! the agent's own state are refused by identity whatever name reaches them.
//!
//! The one window left is between `fstatat` and `unlinkat`; `unlinkat` never follows a
//! symlink, so a swap in that window can at worst remove the swapped-in directory entry
//! itself, never what it points to.
//!
//! Must not follow a symlink in the final component, spawn a shell or any process, act on a
//! path before its hash was verified through the open descriptor, or overwrite anything.

use std::ffi::{CString, OsStr, OsString};
use std::fs::{File, Permissions};
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::policy::{CanonicalPath, PathPolicy, Refusal};

/// The largest quarantine record read back, bytes.
const MAX_RECORD_BYTES: u64 = 64 * 1024;
/// Mode bits a quarantined file keeps: read and write, no exec, setuid, setgid or sticky.
const QUARANTINE_KEEP_BITS: u32 = 0o666;

/// What was quarantined, kept as `<quarantine_dir>/<id>.json` beside the file `<id>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuarantineRecord {
    /// 32 lowercase hex characters (128 random bits).
    pub id: String,
    /// The original path for display (lossy if it was not UTF-8).
    pub original_path: String,
    /// The original path's exact bytes, hex; restore uses these.
    pub original_path_hex: String,
    pub uid: u32,
    pub gid: u32,
    /// Permission bits (`st_mode & 0o7777`) of the original.
    pub mode: u32,
    pub size: u64,
    /// SHA-256 of the content, hex.
    pub sha256: String,
    pub quarantined_at_ms: u64,
    /// Other hard links to the same file that still exist elsewhere (their content was not
    /// removed from the device).
    pub other_links: u64,
}

impl QuarantineRecord {
    /// The exact original path.
    pub fn original_path(&self) -> Option<PathBuf> {
        hex::decode(&self.original_path_hex)
            .ok()
            .map(|b| PathBuf::from(OsString::from_vec(b)))
    }
}

/// What [`delete`] removed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeleteReport {
    pub path: String,
    pub uid: u32,
    pub gid: u32,
    pub mode: u32,
    pub size: u64,
    pub sha256: String,
    /// Other hard links to the same content that still exist.
    pub other_links: u64,
}

/// Why a file action was refused or failed; the text is meant for the collector.
#[derive(Debug, thiserror::Error)]
pub enum FileActionError {
    #[error("refused: {0}")]
    Refused(#[from] Refusal),
    #[error("{path} does not exist")]
    NotFound { path: String },
    #[error("{path} is a symlink; refusing to follow it")]
    Symlink { path: String },
    #[error("{path} is not a regular file ({kind})")]
    NotRegularFile { path: String, kind: &'static str },
    #[error("SHA-256 of {path} is {actual}, not the expected {expected}; nothing was changed")]
    HashMismatch {
        path: String,
        expected: String,
        actual: String,
    },
    #[error("{path} is the same file as a protected path; refusing")]
    ProtectedObject { path: String },
    #[error(
        "{path} has {links} hard links; refusing: the other names may be outside the allowed roots (a setuid binary, the agent's own keys), and acting on the file would change them too"
    )]
    HardLinked { path: String, links: u64 },
    #[error("{path} changed between check and use ({detail}); nothing was changed")]
    Changed { path: String, detail: String },
    #[error("quarantine directory {path} is unusable: {reason}")]
    QuarantineDir { path: String, reason: String },
    #[error("invalid quarantine id {0:?} (expected 32 lowercase hex characters)")]
    InvalidId(String),
    #[error("no quarantined file with id {0}")]
    UnknownId(String),
    #[error("quarantine record {id} is corrupt: {reason}")]
    CorruptRecord { id: String, reason: String },
    #[error("quarantined file {id} no longer matches its record ({reason}); not restored")]
    QuarantinedFileAltered { id: String, reason: String },
    #[error("something already exists at {path}; not overwritten")]
    TargetExists { path: String },
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: String,
        source: io::Error,
    },
}

fn show(p: &Path) -> String {
    p.display().to_string()
}

fn io_err(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> FileActionError + use<> {
    let path = show(path);
    move |source| FileActionError::Io { op, path, source }
}

/// Thin wrappers over the `*at` system calls std does not offer. Each returns the OS error.
#[allow(unsafe_code)]
mod sys {
    use super::*;

    pub fn cstr(name: &OsStr) -> io::Result<CString> {
        CString::new(name.as_bytes()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
    }

    pub fn openat(dir: BorrowedFd<'_>, name: &OsStr, flags: libc::c_int, mode: libc::mode_t) -> io::Result<OwnedFd> {
        let name = cstr(name)?;
        // SAFETY: `dir` is a live descriptor for the duration of the call and `name` a valid
        // NUL-terminated string owned by this frame; openat has no other preconditions.
        let fd = unsafe {
            libc::openat(
                dir.as_raw_fd(),
                name.as_ptr(),
                flags | libc::O_CLOEXEC,
                mode as libc::c_uint,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: openat returned a fresh descriptor that nothing else owns.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }

    /// `fstatat(dir, name, AT_SYMLINK_NOFOLLOW)`: (device, inode, st_mode).
    pub fn lstat_at(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<(u64, u64, u32)> {
        let name = cstr(name)?;
        // SAFETY: an all-zero `stat` is a valid value of this plain C struct.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: `dir` is live, `name` NUL-terminated, `st` a valid exclusive pointer to a
        // `stat` that outlives the call.
        let rc = unsafe { libc::fstatat(dir.as_raw_fd(), name.as_ptr(), &mut st, libc::AT_SYMLINK_NOFOLLOW) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok((st.st_dev, st.st_ino, st.st_mode))
    }

    /// `unlinkat(dir, name, 0)`: removes a directory entry; never follows a symlink.
    pub fn unlinkat(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<()> {
        let name = cstr(name)?;
        // SAFETY: `dir` is live and `name` NUL-terminated for the duration of the call.
        let rc = unsafe { libc::unlinkat(dir.as_raw_fd(), name.as_ptr(), 0) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Gives the inode open as `fd` a new name `new_name` in `new_dir` (fails with EEXIST
    /// rather than replace anything). `AT_EMPTY_PATH` needs CAP_DAC_READ_SEARCH; without it,
    /// /proc/self/fd/N with `AT_SYMLINK_FOLLOW` names the same open inode.
    pub fn link_fd(fd: BorrowedFd<'_>, new_dir: BorrowedFd<'_>, new_name: &OsStr) -> io::Result<()> {
        let new = cstr(new_name)?;
        let empty = c"";
        // SAFETY: both descriptors are live, both strings NUL-terminated and owned by this frame.
        let rc = unsafe {
            libc::linkat(
                fd.as_raw_fd(),
                empty.as_ptr(),
                new_dir.as_raw_fd(),
                new.as_ptr(),
                libc::AT_EMPTY_PATH,
            )
        };
        if rc == 0 {
            return Ok(());
        }
        let err = io::Error::last_os_error();
        if !matches!(err.raw_os_error(), Some(libc::ENOENT) | Some(libc::EPERM)) {
            return Err(err);
        }
        let via_proc = cstr(OsStr::new(&format!("/proc/self/fd/{}", fd.as_raw_fd())))?;
        // SAFETY: as above; /proc/self/fd/N is our own descriptor's magic link.
        let rc = unsafe {
            libc::linkat(
                libc::AT_FDCWD,
                via_proc.as_ptr(),
                new_dir.as_raw_fd(),
                new.as_ptr(),
                libc::AT_SYMLINK_FOLLOW,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// `linkat(dir, old, dir, new, 0)`: a second name in the same directory, never replacing.
    pub fn link_at(dir: BorrowedFd<'_>, old: &OsStr, new: &OsStr) -> io::Result<()> {
        let old = cstr(old)?;
        let new = cstr(new)?;
        // SAFETY: `dir` is live, both strings NUL-terminated and owned by this frame.
        let rc = unsafe { libc::linkat(dir.as_raw_fd(), old.as_ptr(), dir.as_raw_fd(), new.as_ptr(), 0) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    pub fn geteuid() -> u32 {
        // SAFETY: geteuid takes no arguments and cannot fail.
        unsafe { libc::geteuid() }
    }
}

/// Opens an absolute directory path one component at a time without following symlinks.
fn open_dir_nofollow(path: &Path) -> io::Result<OwnedFd> {
    let flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW;
    let mut cur: Option<OwnedFd> = None;
    for comp in path.components() {
        cur = Some(match (comp, &cur) {
            (Component::RootDir, None) => OwnedFd::from(File::open("/")?),
            (Component::Normal(name), Some(dir)) => sys::openat(dir.as_fd(), name, flags, 0)?,
            _ => return Err(io::Error::from(io::ErrorKind::InvalidInput)),
        });
    }
    cur.ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))
}

fn fsync_dir(dir: &OwnedFd) {
    // A failed directory fsync only weakens durability across a crash; the action is done.
    if let Ok(d) = dir.try_clone() {
        let _ = File::from(d).sync_all();
    }
}

fn kind_of(mode: u32) -> &'static str {
    match mode & libc::S_IFMT {
        libc::S_IFDIR => "directory",
        libc::S_IFLNK => "symlink",
        libc::S_IFIFO => "fifo",
        libc::S_IFSOCK => "socket",
        libc::S_IFCHR => "character device",
        libc::S_IFBLK => "block device",
        libc::S_IFREG => "regular file",
        _ => "unknown",
    }
}

fn sha256_of(file: &File) -> io::Result<[u8; 32]> {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    let mut buf = vec![0u8; 64 * 1024];
    let mut off = 0u64;
    loop {
        let n = file.read_at(&mut buf, off)?;
        if n == 0 {
            break;
        }
        ctx.update(buf.get(..n).unwrap_or_default());
        off = off.saturating_add(n as u64);
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    Ok(out)
}

/// The file at a checked path, open, verified regular and matching its expected hash.
struct Verified {
    file: File,
    dev: u64,
    ino: u64,
    uid: u32,
    gid: u32,
    mode: u32,
    size: u64,
    nlink: u64,
}

/// Opens the parent without following symlinks, then the file, and verifies it.
fn open_verified(
    target: &CanonicalPath,
    expected: &[u8; 32],
    policy: &PathPolicy,
) -> Result<(OwnedFd, Verified), FileActionError> {
    let path = target.given();
    let parent = open_dir_nofollow(target.parent()).map_err(|e| FileActionError::Changed {
        path: show(path),
        detail: format!("parent directory cannot be opened without following symlinks: {e}"),
    })?;
    let flags = libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY;
    let fd = sys::openat(parent.as_fd(), target.file_name(), flags, 0).map_err(|e| match e.raw_os_error() {
        Some(libc::ELOOP) => FileActionError::Symlink { path: show(path) },
        Some(libc::ENOENT) => FileActionError::NotFound { path: show(path) },
        _ => FileActionError::Io {
            op: "open",
            path: show(path),
            source: e,
        },
    })?;
    let file = File::from(fd);
    let meta = file.metadata().map_err(io_err("fstat", path))?;
    if !meta.file_type().is_file() {
        return Err(FileActionError::NotRegularFile {
            path: show(path),
            kind: kind_of(meta.mode()),
        });
    }
    if policy.protected_identities().contains(&(meta.dev(), meta.ino())) {
        return Err(FileActionError::ProtectedObject { path: show(path) });
    }
    // Another name for the same inode may sit anywhere on the filesystem, and which
    // names an inode has cannot be listed: the path policy judged one name only.
    if meta.nlink() > 1 {
        return Err(FileActionError::HardLinked {
            path: show(path),
            links: meta.nlink(),
        });
    }
    let actual = sha256_of(&file).map_err(io_err("read", path))?;
    if &actual != expected {
        return Err(FileActionError::HashMismatch {
            path: show(path),
            expected: hex::encode(expected),
            actual: hex::encode(actual),
        });
    }
    let v = Verified {
        dev: meta.dev(),
        ino: meta.ino(),
        uid: meta.uid(),
        gid: meta.gid(),
        mode: meta.mode() & 0o7777,
        size: meta.size(),
        nlink: meta.nlink(),
        file,
    };
    Ok((parent, v))
}

/// Unlinks `name` in `dir` only if it still names (dev, ino).
fn unlink_if_same(dir: &OwnedFd, name: &OsStr, v: &Verified, path: &Path) -> Result<(), FileActionError> {
    let (dev, ino, mode) = sys::lstat_at(dir.as_fd(), name).map_err(|e| FileActionError::Changed {
        path: show(path),
        detail: format!("cannot stat it again: {e}"),
    })?;
    if (dev, ino) != (v.dev, v.ino) {
        return Err(FileActionError::Changed {
            path: show(path),
            detail: format!("it is now another {}", kind_of(mode)),
        });
    }
    sys::unlinkat(dir.as_fd(), name).map_err(io_err("unlink", path))
}

/// Creates (if needed) and opens the quarantine directory, insisting that it is a real
/// directory owned by the agent's user with no access for anyone else.
fn open_quarantine_dir(dir: &Path, create: bool) -> Result<OwnedFd, FileActionError> {
    let unusable = |reason: String| FileActionError::QuarantineDir {
        path: show(dir),
        reason,
    };
    if !dir.is_absolute() {
        return Err(unusable("not an absolute path".into()));
    }
    if create {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| unusable(e.to_string()))?;
    }
    let fd = open_dir_nofollow(dir).map_err(|e| unusable(format!("cannot open without following symlinks: {e}")))?;
    let d = File::from(fd.try_clone().map_err(|e| unusable(e.to_string()))?);
    let meta = d.metadata().map_err(|e| unusable(e.to_string()))?;
    if meta.uid() != sys::geteuid() {
        return Err(unusable(format!("owned by uid {}, not by the agent", meta.uid())));
    }
    if meta.mode() & 0o077 != 0 {
        d.set_permissions(Permissions::from_mode(0o700))
            .map_err(|e| unusable(format!("cannot restrict to 0700: {e}")))?;
    }
    Ok(fd)
}

fn new_id() -> Result<String, FileActionError> {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 16];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| FileActionError::Io {
            op: "random",
            path: String::new(),
            source: io::Error::other("no randomness"),
        })?;
    Ok(hex::encode(bytes))
}

fn valid_id(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Copies `src` (read through its descriptor) into a new file `name` in `dir`, then
/// verifies the copy's hash and fsyncs it. The new file is created exclusively, mode 0600.
fn copy_into(
    src: &File,
    dir: &OwnedFd,
    name: &OsStr,
    expected: &[u8; 32],
    path: &Path,
) -> Result<File, FileActionError> {
    let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW;
    let fd = sys::openat(dir.as_fd(), name, flags, 0o600).map_err(io_err("create", path))?;
    let mut out = File::from(fd);
    let result = (|| -> io::Result<()> {
        let mut buf = vec![0u8; 64 * 1024];
        let mut off = 0u64;
        loop {
            let n = src.read_at(&mut buf, off)?;
            if n == 0 {
                break;
            }
            out.write_all(buf.get(..n).unwrap_or_default())?;
            off = off.saturating_add(n as u64);
        }
        out.sync_all()
    })();
    if let Err(e) = result {
        let _ = sys::unlinkat(dir.as_fd(), name);
        return Err(io_err("copy", path)(e));
    }
    let check = sys::openat(dir.as_fd(), name, libc::O_RDONLY | libc::O_NOFOLLOW, 0).map(File::from);
    match check.and_then(|f| sha256_of(&f)) {
        Ok(h) if &h == expected => Ok(out),
        Ok(_) => {
            let _ = sys::unlinkat(dir.as_fd(), name);
            Err(FileActionError::Changed {
                path: show(path),
                detail: "content changed while it was copied".into(),
            })
        }
        Err(e) => {
            let _ = sys::unlinkat(dir.as_fd(), name);
            Err(io_err("verify copy", path)(e))
        }
    }
}

fn dev_of(fd: &OwnedFd) -> io::Result<u64> {
    File::from(fd.try_clone()?).metadata().map(|m| m.dev())
}

/// Moves the file at `path` into `quarantine_dir` if its SHA-256 is `expected_sha256`.
pub fn quarantine(
    path: &Path,
    expected_sha256: &[u8; 32],
    policy: &PathPolicy,
    quarantine_dir: &Path,
) -> Result<QuarantineRecord, FileActionError> {
    let target = policy.check(path)?;
    let qdir = open_quarantine_dir(quarantine_dir, true)?;
    // Whatever the policy says, nothing inside the quarantine directory is quarantined again.
    if let Ok(q) = quarantine_dir.canonicalize()
        && target.resolved().starts_with(&q)
    {
        return Err(Refusal::Protected {
            path: show(path),
            protected: show(quarantine_dir),
        }
        .into());
    }
    let (parent, v) = open_verified(&target, expected_sha256, policy)?;
    let id = new_id()?;
    let data_name = OsString::from(&id);
    let qdev = dev_of(&qdir).map_err(io_err("fstat", quarantine_dir))?;

    // 1. The verified inode gets a name in the quarantine directory (or a verified copy does).
    let stored = if v.dev == qdev {
        sys::link_fd(v.file.as_fd(), qdir.as_fd(), &data_name).map_err(|e| match e.raw_os_error() {
            // The verified inode lost its last name meanwhile.
            Some(libc::ENOENT) => FileActionError::Changed {
                path: show(path),
                detail: "it was removed".into(),
            },
            _ => io_err("link into quarantine", path)(e),
        })?;
        None
    } else {
        Some(copy_into(&v.file, &qdir, &data_name, expected_sha256, path)?)
    };
    let undo_data = || {
        let _ = sys::unlinkat(qdir.as_fd(), &data_name);
    };

    // 2. The record, before the original disappears.
    let record = QuarantineRecord {
        id: id.clone(),
        original_path: show(path),
        original_path_hex: hex::encode(path.as_os_str().as_bytes()),
        uid: v.uid,
        gid: v.gid,
        mode: v.mode,
        size: v.size,
        sha256: hex::encode(expected_sha256),
        quarantined_at_ms: crate::clock::now_ms(),
        other_links: v.nlink.saturating_sub(1),
    };
    let record_path = quarantine_dir.join(format!("{id}.json"));
    let write = serde_json::to_vec_pretty(&record)
        .map_err(|e| io::Error::other(e.to_string()))
        .and_then(|bytes| crate::identity::write_atomic(&record_path, &bytes, 0o600).map_err(io::Error::other));
    if let Err(e) = write {
        undo_data();
        return Err(io_err("write record", &record_path)(e));
    }

    // 3. The original name goes, if it still names the verified file.
    if let Err(e) = unlink_if_same(&parent, target.file_name(), &v, path) {
        undo_data();
        let _ = sys::unlinkat(qdir.as_fd(), OsStr::new(&format!("{id}.json")));
        return Err(e);
    }
    fsync_dir(&parent);

    // 4. No longer executable. For a link this is the very inode we verified.
    let stored_file = match stored {
        Some(f) => f,
        None => v.file,
    };
    // The file is already out of reach (0700 directory); a failure here must not report the
    // action as failed when it took effect. A name linked to the inode since the check
    // (nlink above our quarantine name alone) would see the mode change too: leave it.
    let linked_since = stored_file.metadata().map(|m| m.nlink() > 1).unwrap_or(true);
    if linked_since {
        tracing::warn!(id = %id, "quarantined file gained another hard link meanwhile; its mode is left as it was");
    } else if let Err(e) = stored_file.set_permissions(Permissions::from_mode(v.mode & QUARANTINE_KEEP_BITS)) {
        tracing::warn!(id = %id, error = %e, "cannot strip exec bits of a quarantined file");
    }
    fsync_dir(&qdir);
    tracing::info!(path = %show(path), id = %id, "file quarantined");
    Ok(record)
}

fn read_record(qdir: &OwnedFd, id: &str) -> Result<QuarantineRecord, FileActionError> {
    let name = format!("{id}.json");
    let fd = sys::openat(qdir.as_fd(), OsStr::new(&name), libc::O_RDONLY | libc::O_NOFOLLOW, 0).map_err(|e| match e
        .raw_os_error()
    {
        Some(libc::ENOENT) => FileActionError::UnknownId(id.to_string()),
        _ => FileActionError::CorruptRecord {
            id: id.to_string(),
            reason: e.to_string(),
        },
    })?;
    let mut bytes = Vec::new();
    File::from(fd)
        .take(MAX_RECORD_BYTES)
        .read_to_end(&mut bytes)
        .map_err(|e| FileActionError::CorruptRecord {
            id: id.to_string(),
            reason: e.to_string(),
        })?;
    let record: QuarantineRecord = serde_json::from_slice(&bytes).map_err(|e| FileActionError::CorruptRecord {
        id: id.to_string(),
        reason: e.to_string(),
    })?;
    if record.id != id {
        return Err(FileActionError::CorruptRecord {
            id: id.to_string(),
            reason: format!("names id {}", record.id),
        });
    }
    Ok(record)
}

/// Puts a quarantined file back at its original path, byte for byte, with its owner and
/// mode. Refuses if anything exists at that path or the path is no longer allowed.
pub fn restore(id: &str, quarantine_dir: &Path, policy: &PathPolicy) -> Result<QuarantineRecord, FileActionError> {
    if !valid_id(id) {
        return Err(FileActionError::InvalidId(id.chars().take(64).collect()));
    }
    let qdir = open_quarantine_dir(quarantine_dir, false)?;
    let record = read_record(&qdir, id)?;
    let corrupt = |reason: &str| FileActionError::CorruptRecord {
        id: id.to_string(),
        reason: reason.to_string(),
    };
    let original = record
        .original_path()
        .ok_or_else(|| corrupt("original_path_hex is not hex"))?;
    let expected: [u8; 32] = hex::decode(&record.sha256)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| corrupt("sha256 is not 32 hex bytes"))?;
    let target = policy.check(&original)?;
    let parent = open_dir_nofollow(target.parent()).map_err(|e| FileActionError::Changed {
        path: show(&original),
        detail: format!("parent directory cannot be opened without following symlinks: {e}"),
    })?;
    let exists = || FileActionError::TargetExists { path: show(&original) };
    match sys::lstat_at(parent.as_fd(), target.file_name()) {
        Ok(_) => return Err(exists()),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
        Err(e) => return Err(io_err("stat", &original)(e)),
    }

    let data_name = OsString::from(id);
    let fd = sys::openat(
        qdir.as_fd(),
        &data_name,
        libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK,
        0,
    )
    .map_err(|e| FileActionError::QuarantinedFileAltered {
        id: id.to_string(),
        reason: e.to_string(),
    })?;
    let stored = File::from(fd);
    let altered = |reason: String| FileActionError::QuarantinedFileAltered {
        id: id.to_string(),
        reason,
    };
    let meta = stored.metadata().map_err(|e| altered(e.to_string()))?;
    if !meta.file_type().is_file() {
        return Err(altered(format!("it is a {}", kind_of(meta.mode()))));
    }
    let actual = sha256_of(&stored).map_err(|e| altered(e.to_string()))?;
    if actual != expected {
        return Err(altered(format!("SHA-256 is {}", hex::encode(actual))));
    }
    let qdev = dev_of(&qdir).map_err(io_err("fstat", quarantine_dir))?;
    let pdev = dev_of(&parent).map_err(io_err("fstat", &original))?;
    let mode = Permissions::from_mode(record.mode & 0o7777);

    if qdev == pdev {
        // chown first: it clears setuid/setgid, which chmod then puts back.
        std::os::unix::fs::fchown(&stored, Some(record.uid), Some(record.gid)).map_err(io_err("chown", &original))?;
        stored.set_permissions(mode).map_err(io_err("chmod", &original))?;
        if let Err(e) = sys::link_fd(stored.as_fd(), parent.as_fd(), target.file_name()) {
            let _ = stored.set_permissions(Permissions::from_mode(record.mode & QUARANTINE_KEEP_BITS));
            return Err(match e.raw_os_error() {
                Some(libc::EEXIST) => exists(),
                _ => io_err("link back", &original)(e),
            });
        }
    } else {
        let tmp = OsString::from(format!(".ward-restore-{id}"));
        let out = copy_into(&stored, &parent, &tmp, &expected, &original)?;
        let finish = (|| -> io::Result<()> {
            std::os::unix::fs::fchown(&out, Some(record.uid), Some(record.gid))?;
            out.set_permissions(mode)?;
            out.sync_all()?;
            sys::link_at(parent.as_fd(), &tmp, target.file_name())
        })();
        let _ = sys::unlinkat(parent.as_fd(), &tmp);
        if let Err(e) = finish {
            return Err(match e.raw_os_error() {
                Some(libc::EEXIST) => exists(),
                _ => io_err("restore", &original)(e),
            });
        }
    }
    fsync_dir(&parent);
    let _ = sys::unlinkat(qdir.as_fd(), &data_name);
    let _ = sys::unlinkat(qdir.as_fd(), OsStr::new(&format!("{id}.json")));
    fsync_dir(&qdir);
    tracing::info!(path = %show(&original), id = %id, "quarantined file restored");
    Ok(record)
}

/// Deletes the file at `path` if its SHA-256 is `expected_sha256`.
pub fn delete(path: &Path, expected_sha256: &[u8; 32], policy: &PathPolicy) -> Result<DeleteReport, FileActionError> {
    let target = policy.check(path)?;
    let (parent, v) = open_verified(&target, expected_sha256, policy)?;
    unlink_if_same(&parent, target.file_name(), &v, path)?;
    fsync_dir(&parent);
    tracing::info!(path = %show(path), "file deleted");
    Ok(DeleteReport {
        path: show(path),
        uid: v.uid,
        gid: v.gid,
        mode: v.mode,
        size: v.size,
        sha256: hex::encode(expected_sha256),
        other_links: v.nlink.saturating_sub(1),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn sha(bytes: &[u8]) -> [u8; 32] {
        let mut out = [0u8; 32];
        out.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, bytes).as_ref());
        out
    }

    struct Fixture {
        _dir: tempfile::TempDir,
        allowed: PathBuf,
        qdir: PathBuf,
        policy: PathPolicy,
    }

    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        let allowed = root.join("allowed");
        std::fs::create_dir(&allowed).unwrap();
        let qdir = root.join("quarantine");
        let policy = PathPolicy {
            allowed_roots: vec![allowed.clone()],
            protected: vec![qdir.clone()],
        };
        Fixture {
            _dir: dir,
            allowed,
            qdir,
            policy,
        }
    }

    #[test]
    fn quarantine_and_restore_round_trip() {
        let f = fixture();
        let p = f.allowed.join("evil.bin");
        std::fs::write(&p, b"payload").unwrap();
        std::fs::set_permissions(&p, Permissions::from_mode(0o4755)).unwrap();
        let rec = quarantine(&p, &sha(b"payload"), &f.policy, &f.qdir).unwrap();
        assert!(!p.exists());
        let stored = f.qdir.join(&rec.id);
        assert_eq!(std::fs::metadata(&stored).unwrap().mode() & 0o7777, 0o644);
        assert_eq!(std::fs::metadata(&f.qdir).unwrap().mode() & 0o777, 0o700);
        assert_eq!(rec.mode, 0o4755);
        let back = restore(&rec.id, &f.qdir, &f.policy).unwrap();
        assert_eq!(back, rec);
        assert_eq!(std::fs::read(&p).unwrap(), b"payload");
        assert_eq!(std::fs::metadata(&p).unwrap().mode() & 0o7777, 0o4755);
        assert!(!stored.exists());
        assert!(matches!(
            restore(&rec.id, &f.qdir, &f.policy),
            Err(FileActionError::UnknownId(_))
        ));
    }

    #[test]
    fn a_hard_link_to_a_file_outside_the_allowed_roots_is_refused() {
        let f = fixture();
        // A setuid binary outside the allowed roots, hard-linked into one of them.
        let outside = f.allowed.parent().unwrap().join("outside");
        std::fs::create_dir(&outside).unwrap();
        let target = outside.join("passwd-helper");
        std::fs::write(&target, b"setuid binary").unwrap();
        std::fs::set_permissions(&target, Permissions::from_mode(0o4755)).unwrap();
        let link = f.allowed.join("innocent");
        std::fs::hard_link(&target, &link).unwrap();
        let h = sha(b"setuid binary");
        for r in [
            quarantine(&link, &h, &f.policy, &f.qdir).map(|_| ()),
            delete(&link, &h, &f.policy).map(|_| ()),
        ] {
            assert!(matches!(r, Err(FileActionError::HardLinked { links: 2, .. })), "{r:?}");
        }
        assert_eq!(
            std::fs::metadata(&target).unwrap().mode() & 0o7777,
            0o4755,
            "mode untouched"
        );
        assert!(link.exists() && target.exists(), "both names kept");
        // Once it is the only name, it is an ordinary file inside the roots.
        std::fs::remove_file(&target).unwrap();
        quarantine(&link, &h, &f.policy, &f.qdir).unwrap();
    }

    #[test]
    fn the_agents_own_state_is_refused_by_any_name() {
        let f = fixture();
        let root = f.allowed.parent().unwrap();
        let state = root.join("state");
        std::fs::create_dir_all(state.join("outbox")).unwrap();
        std::fs::write(state.join("device.key"), b"private key").unwrap();
        std::fs::write(state.join("outbox").join("outbox.db"), b"alerts").unwrap();
        let policy = PathPolicy {
            allowed_roots: f.policy.allowed_roots.clone(),
            protected: vec![f.qdir.clone(), state.clone()],
        };
        // A hard link to the key in an allowed root.
        let link = f.allowed.join("key-copy");
        std::fs::hard_link(state.join("device.key"), &link).unwrap();
        let r = quarantine(&link, &sha(b"private key"), &policy, &f.qdir);
        assert!(matches!(r, Err(FileActionError::ProtectedObject { .. })), "{r:?}");
        assert!(state.join("device.key").exists());
        // Whatever name reaches them (a bind mount, say), the state's files are
        // protected by identity, not only by path.
        let ids = policy.protected_identities();
        for file in [state.join("device.key"), state.join("outbox").join("outbox.db")] {
            let m = std::fs::metadata(&file).unwrap();
            assert!(ids.contains(&(m.dev(), m.ino())), "{}", file.display());
        }
    }

    #[test]
    fn restore_never_overwrites() {
        let f = fixture();
        let p = f.allowed.join("a");
        std::fs::write(&p, b"one").unwrap();
        let rec = quarantine(&p, &sha(b"one"), &f.policy, &f.qdir).unwrap();
        std::fs::write(&p, b"two").unwrap();
        assert!(matches!(
            restore(&rec.id, &f.qdir, &f.policy),
            Err(FileActionError::TargetExists { .. })
        ));
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        assert!(f.qdir.join(&rec.id).exists());
    }

    #[test]
    fn quarantine_dir_contents_are_never_quarantined() {
        let mut f = fixture();
        let p = f.allowed.join("x");
        std::fs::write(&p, b"q").unwrap();
        let rec = quarantine(&p, &sha(b"q"), &f.policy, &f.qdir).unwrap();
        // Even with a policy that forgets to protect it.
        f.policy.protected.clear();
        f.policy.allowed_roots.push(f.qdir.parent().unwrap().to_path_buf());
        assert!(matches!(
            quarantine(&f.qdir.join(&rec.id), &sha(b"q"), &f.policy, &f.qdir),
            Err(FileActionError::Refused(Refusal::Protected { .. }))
        ));
    }

    #[test]
    fn ids_are_validated() {
        let f = fixture();
        for bad in ["../../etc/passwd", "", "ABCDEF", "0123456789abcdef0123456789abcdeg"] {
            assert!(matches!(
                restore(bad, &f.qdir, &f.policy),
                Err(FileActionError::InvalidId(_))
            ));
        }
    }

    #[test]
    fn hash_mismatch_changes_nothing() {
        let f = fixture();
        let p = f.allowed.join("x");
        std::fs::write(&p, b"real").unwrap();
        assert!(matches!(
            quarantine(&p, &sha(b"other"), &f.policy, &f.qdir),
            Err(FileActionError::HashMismatch { .. })
        ));
        assert!(matches!(
            delete(&p, &sha(b"other"), &f.policy),
            Err(FileActionError::HashMismatch { .. })
        ));
        assert_eq!(std::fs::read(&p).unwrap(), b"real");
        assert_eq!(std::fs::read_dir(&f.qdir).unwrap().count(), 0);
    }

    #[test]
    fn fifo_and_directory_are_refused_without_blocking() {
        let f = fixture();
        let fifo = f.allowed.join("fifo");
        let c = CString::new(fifo.as_os_str().as_bytes()).unwrap();
        #[allow(unsafe_code)]
        // SAFETY: c is a valid NUL-terminated path.
        let rc = unsafe { libc::mkfifo(c.as_ptr(), 0o600) };
        assert_eq!(rc, 0);
        assert!(matches!(
            delete(&fifo, &sha(b""), &f.policy),
            Err(FileActionError::NotRegularFile { kind: "fifo", .. })
        ));
        std::fs::create_dir(f.allowed.join("d")).unwrap();
        assert!(matches!(
            delete(&f.allowed.join("d"), &sha(b""), &f.policy),
            Err(FileActionError::NotRegularFile { .. })
        ));
    }

    #[test]
    fn delete_removes_only_the_verified_file() {
        let f = fixture();
        let p = f.allowed.join("x");
        std::fs::write(&p, b"bye").unwrap();
        let r = delete(&p, &sha(b"bye"), &f.policy).unwrap();
        assert_eq!(r.size, 3);
        assert!(!p.exists());
    }
}
