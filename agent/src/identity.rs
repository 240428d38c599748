//! The agent's enrolled identity in its state dir: device id, the device's alert
//! signing key and TLS key (PKCS#8, mode 0600, generated here and never sent), its
//! client certificate, the collector's CA and the pinned command keys.

use std::fs;
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use thiserror::Error;
use ward_protocol::{DeviceId, KeyRollover, PublicKey, SigningKey};

const IDENTITY_FILE: &str = "identity.json";
const SIGNING_KEY_FILE: &str = "device.key";
const TLS_KEY_FILE: &str = "tls.key";

#[derive(Debug, Error)]
pub enum IdentityError {
    #[error("not enrolled: {0} has no identity (run `ward-agent enroll --token ...`)")]
    NotEnrolled(PathBuf),
    #[error("already enrolled as {0}; remove the state dir to enroll again")]
    AlreadyEnrolled(String),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path} is corrupt: {detail}")]
    Corrupt { path: PathBuf, detail: String },
}

/// What enrollment leaves on disk (besides the keys).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Enrollment {
    pub device_id: DeviceId,
    pub collector_addr: String,
    pub server_name: String,
    pub client_cert_der: Vec<u8>,
    pub ca_cert_der: Vec<u8>,
    /// The command keys it accepts (in the same JSON object, as before rollovers existed).
    #[serde(flatten)]
    pub keys: CommandKeys,
}

/// The collector's command keys a device accepts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandKeys {
    /// Pinned at enrollment or by a key rollover.
    pub command_keys: Vec<PublicKey>,
    /// Pinned keys on their way out after a key rollover, with the time (epoch ms)
    /// from which they are refused.
    #[serde(default)]
    pub retiring_keys: Vec<(PublicKey, u64)>,
    /// The serial of the last key rollover applied (0: none).
    #[serde(default)]
    pub key_serial: u64,
}

impl CommandKeys {
    pub fn pinned(keys: Vec<PublicKey>) -> CommandKeys {
        CommandKeys {
            command_keys: keys,
            ..CommandKeys::default()
        }
    }

    /// The keys accepted at `now_ms`: pinned and not retired.
    pub fn active(&self, now_ms: u64) -> Vec<PublicKey> {
        self.command_keys
            .iter()
            .filter(|k| !self.retiring_keys.iter().any(|(r, at)| r == *k && now_ms >= *at))
            .copied()
            .collect()
    }

    /// The keys that may sign the next rollover: the newest pinned ones (pinned
    /// and not on their way out), never a retiring key. After a rollover that is
    /// exactly the key it introduced; before any, the keys pinned at enrollment.
    /// A retiring key stays valid for commands during the overlap, but letting it
    /// introduce keys would let whoever holds the old key (a stolen backup) name
    /// their own key and retire the real one.
    pub fn rollover_signers(&self, now_ms: u64) -> Vec<PublicKey> {
        self.active(now_ms)
            .into_iter()
            .filter(|k| !self.retiring_keys.iter().any(|(r, _)| r == k))
            .collect()
    }

    /// Pins a rollover's key; the keys that were newest until now (the rollover's
    /// signers) retire at its `retire_at_ms`. A key already retiring keeps the
    /// time it was given: a later rollover never shortens (nor lengthens) it.
    /// Retired keys are dropped.
    pub fn apply_rollover(&mut self, r: &KeyRollover, now_ms: u64) {
        for k in self.command_keys.iter().filter(|k| **k != r.new_key) {
            if !self.retiring_keys.iter().any(|(old, _)| old == k) {
                self.retiring_keys.push((*k, r.retire_at_ms));
            }
        }
        self.retiring_keys.retain(|(k, _)| *k != r.new_key);
        if !self.command_keys.contains(&r.new_key) {
            self.command_keys.push(r.new_key);
        }
        self.key_serial = r.serial;
        self.command_keys = self.active(now_ms);
        self.retiring_keys
            .retain(|(k, at)| self.command_keys.contains(k) && now_ms < *at);
    }
}

/// A loaded identity: enrollment plus keys.
pub struct Identity {
    pub enrollment: Enrollment,
    pub signing_key: SigningKey,
    pub tls_key_pkcs8: Vec<u8>,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("device_id", &self.enrollment.device_id)
            .finish_non_exhaustive()
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> IdentityError + '_ {
    move |source| IdentityError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Writes a file atomically (temp file, fsync, rename) with the given mode.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<(), IdentityError> {
    let tmp = path.with_extension("tmp");
    let _ = fs::remove_file(&tmp);
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(io(&tmp))?;
    f.write_all(bytes).map_err(io(&tmp))?;
    f.sync_all().map_err(io(&tmp))?;
    fs::rename(&tmp, path).map_err(io(path))?;
    if let Some(dir) = path.parent()
        && let Ok(d) = fs::File::open(dir)
    {
        let _ = d.sync_all();
    }
    Ok(())
}

pub fn ensure_state_dir(dir: &Path) -> Result<(), IdentityError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io(dir))
}

/// Keys for a new enrollment: made once and kept, so a retried enrollment reuses them.
pub fn load_or_create_keys(dir: &Path) -> Result<(SigningKey, Vec<u8>), IdentityError> {
    if dir.join(IDENTITY_FILE).exists() {
        let existing = Identity::load(dir)?;
        return Err(IdentityError::AlreadyEnrolled(
            existing.enrollment.device_id.to_string(),
        ));
    }
    ensure_state_dir(dir)?;
    let rng = ring::rand::SystemRandom::new();
    let signing = key_file(dir, SIGNING_KEY_FILE, &rng)?;
    let tls = key_file(dir, TLS_KEY_FILE, &rng)?;
    let signing_key = SigningKey::from_pkcs8(&signing).map_err(|e| corrupt(dir, SIGNING_KEY_FILE, e))?;
    Ok((signing_key, tls))
}

fn key_file(dir: &Path, name: &str, rng: &ring::rand::SystemRandom) -> Result<Vec<u8>, IdentityError> {
    let path = dir.join(name);
    if let Ok(bytes) = fs::read(&path) {
        return Ok(bytes);
    }
    let (_, pkcs8) = SigningKey::generate(rng).map_err(|e| corrupt(dir, name, e))?;
    write_atomic(&path, &pkcs8, 0o600)?;
    Ok(pkcs8)
}

fn corrupt(dir: &Path, name: &str, e: impl std::fmt::Display) -> IdentityError {
    IdentityError::Corrupt {
        path: dir.join(name),
        detail: e.to_string(),
    }
}

/// The raw public key of a PKCS#8 Ed25519 key.
pub fn public_of(pkcs8: &[u8]) -> Option<PublicKey> {
    SigningKey::from_pkcs8(pkcs8).ok().map(|k| k.public_key())
}

impl Identity {
    pub fn save_enrollment(dir: &Path, enrollment: &Enrollment) -> Result<(), IdentityError> {
        let json = serde_json::to_vec_pretty(enrollment).map_err(|e| corrupt(dir, IDENTITY_FILE, e))?;
        write_atomic(&dir.join(IDENTITY_FILE), &json, 0o600)
    }

    pub fn load(dir: &Path) -> Result<Identity, IdentityError> {
        let path = dir.join(IDENTITY_FILE);
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(IdentityError::NotEnrolled(dir.to_path_buf()));
            }
            Err(e) => return Err(IdentityError::Io { path, source: e }),
        };
        let enrollment: Enrollment = serde_json::from_slice(&bytes).map_err(|e| corrupt(dir, IDENTITY_FILE, e))?;
        let signing = fs::read(dir.join(SIGNING_KEY_FILE)).map_err(io(&dir.join(SIGNING_KEY_FILE)))?;
        let signing_key = SigningKey::from_pkcs8(&signing).map_err(|e| corrupt(dir, SIGNING_KEY_FILE, e))?;
        let tls_key_pkcs8 = fs::read(dir.join(TLS_KEY_FILE)).map_err(io(&dir.join(TLS_KEY_FILE)))?;
        Ok(Identity {
            enrollment,
            signing_key,
            tls_key_pkcs8,
        })
    }
}
