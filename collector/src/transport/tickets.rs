//! TLS 1.3 session tickets whose keys outlive the process, so agents resume their
//! sessions after a collector restart instead of all doing full mutual-TLS
//! handshakes at once (a reconnect storm is bound by those handshakes' signatures
//! and certificate checks; a resumption costs an X25519 exchange).
//!
//! What resumption keeps:
//! - **Who the device is.** rustls stores the client certificate chain in the
//!   ticket and gives it back on resumption; the session still maps it to an
//!   enrolled device and checks revocation before anything is accepted.
//! - **No early data.** 0-RTT stays off ([`super::tls`]): a resumed handshake
//!   completes before any message is read, so nothing is replayable.
//! - **Forward secrecy, bounded.** A ticket is sealed (ChaCha20-Poly1305) with the
//!   current key, which is replaced every [`ROTATE`]; tickets of the previous key
//!   are still opened, so a ticket lives at most twice that. A key older than that
//!   is erased from the file.
//!
//! The keys live in the data dir beside the CA key (`tls-ticket-keys`, mode 0600),
//! with the same custody: whoever reads the data dir can already impersonate the
//! collector. A missing or unreadable file is replaced by fresh keys: tickets issued
//! before then are refused and those agents do a full handshake, nothing else.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use tracing::warn;

use crate::metrics::Metrics;

/// The ticket keys' file in the data dir.
pub const TICKET_KEYS: &str = "tls-ticket-keys";

/// How long a key seals new tickets; it opens them for as long again.
pub const ROTATE: Duration = Duration::from_secs(12 * 3600);

const MAGIC: &[u8; 4] = b"WTK1";
const KEY_LEN: usize = 32;
/// magic, the current key's creation time (ms since the epoch, big-endian), current, previous.
const FILE_LEN: usize = MAGIC.len() + 8 + 2 * KEY_LEN;
/// A ticket: the first 4 bytes of its key's id, the nonce, then the sealed session.
const KEY_ID_LEN: usize = 4;
/// rustls' own tickets are a few hundred bytes (more with a client certificate
/// chain); anything far larger is not ours.
const MAX_TICKET_LEN: usize = 16 * 1024;

#[derive(Clone)]
struct Keys {
    created_ms: u64,
    current: [u8; KEY_LEN],
    /// All zeros when there is none.
    previous: [u8; KEY_LEN],
}

impl Keys {
    fn fresh(rng: &dyn SecureRandom, now_ms: u64, previous: [u8; KEY_LEN]) -> Option<Keys> {
        let mut current = [0u8; KEY_LEN];
        rng.fill(&mut current).ok()?;
        Some(Keys {
            created_ms: now_ms,
            current,
            previous,
        })
    }

    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(FILE_LEN);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&self.created_ms.to_be_bytes());
        out.extend_from_slice(&self.current);
        out.extend_from_slice(&self.previous);
        out
    }

    fn decode(bytes: &[u8]) -> Option<Keys> {
        if bytes.len() != FILE_LEN || !bytes.starts_with(MAGIC) {
            return None;
        }
        let rest = &bytes[MAGIC.len()..];
        let (created, rest) = rest.split_at(8);
        let (current, previous) = rest.split_at(KEY_LEN);
        Some(Keys {
            created_ms: u64::from_be_bytes(created.try_into().ok()?),
            current: current.try_into().ok()?,
            previous: previous.try_into().ok()?,
        })
    }

    /// How old the current key is at `now_ms`. A key dated in the future (the clock
    /// was set back) counts as one period old, so it is rotated at once: else it
    /// would seal tickets until the clock caught up with it.
    fn age(&self, now_ms: u64) -> u64 {
        let period = ROTATE.as_millis() as u64;
        if self.created_ms > now_ms {
            period
        } else {
            now_ms - self.created_ms
        }
    }

    /// The keys as they should be at `now_ms`: rotated once per [`ROTATE`] elapsed,
    /// a key two periods old erased.
    fn at(&self, rng: &dyn SecureRandom, now_ms: u64) -> Option<Keys> {
        let age = self.age(now_ms);
        let period = ROTATE.as_millis() as u64;
        if age < period {
            return Some(self.clone());
        }
        let previous = if age < 2 * period { self.current } else { [0; KEY_LEN] };
        Keys::fresh(rng, now_ms, previous)
    }
}

fn key_id(key: &[u8; KEY_LEN]) -> [u8; KEY_ID_LEN] {
    let digest = ring::digest::digest(&ring::digest::SHA256, key);
    let mut id = [0u8; KEY_ID_LEN];
    id.copy_from_slice(&digest.as_ref()[..KEY_ID_LEN]);
    id
}

fn aead(key: &[u8; KEY_LEN]) -> Option<LessSafeKey> {
    Some(LessSafeKey::new(UnboundKey::new(&CHACHA20_POLY1305, key).ok()?))
}

/// rustls' [`rustls::server::ProducesTickets`] over keys kept in the data dir.
pub struct PersistentTicketer {
    path: PathBuf,
    keys: Mutex<Keys>,
    rng: SystemRandom,
    clock: Box<dyn Fn() -> u64 + Send + Sync>,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for PersistentTicketer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PersistentTicketer")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl PersistentTicketer {
    /// The keys of `data_dir`, created (or replaced, if unreadable) when needed.
    pub fn open(data_dir: &Path, metrics: Arc<Metrics>) -> std::io::Result<PersistentTicketer> {
        Self::open_with_clock(data_dir, metrics, Box::new(crate::util::now_ms))
    }

    fn open_with_clock(
        data_dir: &Path,
        metrics: Arc<Metrics>,
        clock: Box<dyn Fn() -> u64 + Send + Sync>,
    ) -> std::io::Result<Self> {
        let path = data_dir.join(TICKET_KEYS);
        let rng = SystemRandom::new();
        let now = clock();
        let stored = match std::fs::read(&path) {
            Ok(bytes) => {
                let keys = Keys::decode(&bytes);
                if keys.is_none() {
                    warn!(path = %path.display(), "TLS ticket keys unreadable: replaced; agents resume after one full handshake");
                }
                keys
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(e),
        };
        let keys = match stored {
            Some(k) => k.at(&rng, now),
            None => Keys::fresh(&rng, now, [0; KEY_LEN]),
        }
        .ok_or_else(|| std::io::Error::other("no randomness for TLS ticket keys"))?;
        write_keys(&path, &keys)?;
        Ok(PersistentTicketer {
            path,
            keys: Mutex::new(keys),
            rng,
            clock,
            metrics,
        })
    }

    /// The current keys, rotated first when due (the new ones written to the file;
    /// if that fails they still serve this process).
    fn keys(&self) -> Keys {
        let mut keys = self.keys.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = (self.clock)();
        if keys.age(now) >= ROTATE.as_millis() as u64
            && let Some(next) = keys.at(&self.rng, now)
        {
            if let Err(e) = write_keys(&self.path, &next) {
                warn!(path = %self.path.display(), error = %e, "cannot write rotated TLS ticket keys");
            }
            *keys = next;
        }
        keys.clone()
    }
}

fn write_keys(path: &Path, keys: &Keys) -> std::io::Result<()> {
    crate::util::replace_private_file(path, &keys.encode())
}

impl rustls::server::ProducesTickets for PersistentTicketer {
    fn enabled(&self) -> bool {
        true
    }

    fn lifetime(&self) -> u32 {
        ROTATE.as_secs() as u32
    }

    fn encrypt(&self, plain: &[u8]) -> Option<Vec<u8>> {
        let keys = self.keys();
        let id = key_id(&keys.current);
        let mut nonce = [0u8; NONCE_LEN];
        self.rng.fill(&mut nonce).ok()?;
        let mut sealed = plain.to_vec();
        aead(&keys.current)?
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(id), &mut sealed)
            .ok()?;
        let mut out = Vec::with_capacity(KEY_ID_LEN + NONCE_LEN + sealed.len());
        out.extend_from_slice(&id);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        Some(out)
    }

    fn decrypt(&self, cipher: &[u8]) -> Option<Vec<u8>> {
        if cipher.len() > MAX_TICKET_LEN || cipher.len() < KEY_ID_LEN + NONCE_LEN {
            return None;
        }
        let keys = self.keys();
        let (id, rest) = cipher.split_at(KEY_ID_LEN);
        let (nonce, sealed) = rest.split_at(NONCE_LEN);
        let key = [keys.current, keys.previous]
            .into_iter()
            .find(|k| *k != [0; KEY_LEN] && key_id(k) == id)?;
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut buf = sealed.to_vec();
        let plain = aead(&key)?.open_in_place(nonce, Aad::from(id), &mut buf).ok()?;
        let plain = plain.to_vec();
        self.metrics.tls_resumptions.inc();
        Some(plain)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};

    use rustls::server::ProducesTickets as _;

    use super::*;

    /// A ticketer whose clock reads `now`.
    fn open_at(dir: &Path, now: &Arc<AtomicU64>) -> PersistentTicketer {
        let now = Arc::clone(now);
        let clock = Box::new(move || now.load(Ordering::SeqCst));
        PersistentTicketer::open_with_clock(dir, Arc::new(Metrics::default()), clock).unwrap()
    }

    fn open(dir: &Path) -> PersistentTicketer {
        open_at(dir, &Arc::new(AtomicU64::new(1_000_000)))
    }

    #[test]
    fn tickets_survive_a_restart_and_tampering_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let t = open(dir.path());
        let ticket = t.encrypt(b"session state").unwrap();
        assert_eq!(t.decrypt(&ticket).unwrap(), b"session state");
        // A new process with the same data dir opens it.
        let again = open(dir.path());
        assert_eq!(again.decrypt(&ticket).unwrap(), b"session state");
        assert_eq!(again.metrics.tls_resumptions.get(), 1);
        // Every single-byte change is refused, and so are cut or oversized tickets.
        for i in 0..ticket.len() {
            let mut bad = ticket.clone();
            bad[i] ^= 0x01;
            assert!(again.decrypt(&bad).is_none(), "byte {i}");
        }
        assert!(again.decrypt(&ticket[..ticket.len() - 1]).is_none());
        assert!(again.decrypt(&[]).is_none());
        assert!(again.decrypt(&vec![0u8; MAX_TICKET_LEN + 1]).is_none());
        // Another data dir's keys open nothing of ours.
        let other = tempfile::tempdir().unwrap();
        assert!(open(other.path()).decrypt(&ticket).is_none());
        let mode = std::fs::metadata(dir.path().join(TICKET_KEYS)).unwrap().permissions();
        assert_eq!(std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777, 0o600);
    }

    #[test]
    fn keys_rotate_and_old_tickets_expire_after_two_periods() {
        let dir = tempfile::tempdir().unwrap();
        let period = ROTATE.as_millis() as u64;
        let now = Arc::new(AtomicU64::new(10 * period));
        let t = open_at(dir.path(), &now);
        let first = t.encrypt(b"a").unwrap();
        // One period later a new key seals; the old one still opens.
        now.store(11 * period, Ordering::SeqCst);
        let second = t.encrypt(b"b").unwrap();
        assert_ne!(first[..KEY_ID_LEN], second[..KEY_ID_LEN]);
        assert_eq!(t.decrypt(&first).unwrap(), b"a");
        // The rotation was written: a restart opens both.
        let restarted = open_at(dir.path(), &now);
        assert_eq!(restarted.decrypt(&first).unwrap(), b"a");
        assert_eq!(restarted.decrypt(&second).unwrap(), b"b");
        // Two periods on, the first key is gone, the second is now the previous one.
        now.store(12 * period, Ordering::SeqCst);
        assert!(t.decrypt(&first).is_none());
        assert_eq!(t.decrypt(&second).unwrap(), b"b");
        // A collector stopped for longer than two periods starts with no old key.
        now.store(20 * period, Ordering::SeqCst);
        assert!(open_at(dir.path(), &now).decrypt(&second).is_none());
    }

    #[test]
    fn a_key_dated_in_the_future_is_rotated_when_the_clock_went_back() {
        let dir = tempfile::tempdir().unwrap();
        let period = ROTATE.as_millis() as u64;
        let now = Arc::new(AtomicU64::new(100 * period));
        let t = open_at(dir.path(), &now);
        let ahead = t.encrypt(b"a").unwrap();
        // The clock is corrected by ten periods: a new key seals at once, the one
        // dated ahead still opens for one period, then never.
        now.store(90 * period, Ordering::SeqCst);
        let back = t.encrypt(b"b").unwrap();
        assert_ne!(ahead[..KEY_ID_LEN], back[..KEY_ID_LEN]);
        assert_eq!(t.decrypt(&ahead).unwrap(), b"a");
        now.store(91 * period, Ordering::SeqCst);
        assert!(t.decrypt(&ahead).is_none());
        assert_eq!(t.decrypt(&back).unwrap(), b"b");
    }

    #[test]
    fn an_unreadable_key_file_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(TICKET_KEYS), b"garbage").unwrap();
        let t = open(dir.path());
        let ticket = t.encrypt(b"x").unwrap();
        assert_eq!(open(dir.path()).decrypt(&ticket).unwrap(), b"x");
    }
}
