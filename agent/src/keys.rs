//! The command keys this device accepts, shared by the link (rollovers, rule
//! packs) and the executor (commands): pinned at enrollment, changed only by a
//! [`KeyRollover`] signed with a key pinned already, and kept in `identity.json`
//! so a restart accepts exactly what was accepted before.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use thiserror::Error;
use ward_protocol::{KeyRollover, PublicKey, SignatureError, SignatureKind, Signed};

use crate::identity::{CommandKeys, Identity, IdentityError};

#[derive(Debug, Error)]
pub enum RolloverError {
    #[error("key rollover refused: {0}")]
    Signature(#[from] SignatureError),
    #[error("key rollover {got} is not newer than the applied {applied}")]
    NotNewer { got: u64, applied: u64 },
    #[error("key rollover {got} refused: signed by a retiring key (only the newest pinned key may introduce another)")]
    RetiringSigner { got: u64 },
    #[error("key rollover {got} skips ahead: the next after {applied} is {}", applied + 1)]
    NotNext { got: u64, applied: u64 },
    #[error("key rollover not saved: {0}")]
    Store(#[from] IdentityError),
    #[error("pinned keys unavailable (a thread panicked holding them)")]
    Poisoned,
}

#[derive(Debug, Clone)]
pub struct PinnedKeys {
    inner: Arc<RwLock<CommandKeys>>,
    /// Where `identity.json` lives; none: kept in memory only (tests).
    state_dir: Option<PathBuf>,
}

impl PinnedKeys {
    pub fn new(keys: CommandKeys, state_dir: &Path) -> PinnedKeys {
        PinnedKeys {
            inner: Arc::new(RwLock::new(keys)),
            state_dir: Some(state_dir.to_path_buf()),
        }
    }

    /// Keys not saved anywhere.
    pub fn in_memory(keys: Vec<PublicKey>) -> PinnedKeys {
        PinnedKeys {
            inner: Arc::new(RwLock::new(CommandKeys::pinned(keys))),
            state_dir: None,
        }
    }

    /// The keys accepted at `now_ms`.
    pub fn active(&self, now_ms: u64) -> Vec<PublicKey> {
        self.inner.read().map(|k| k.active(now_ms)).unwrap_or_default()
    }

    /// Verifies a rollover against the newest pinned key (never a retiring one),
    /// requires the serial after the one applied, pins its key and saves the
    /// result before it takes effect; returns the rollover applied.
    ///
    /// An agent that has applied none (serial 0) was enrolled with the key current
    /// then, whose serial enrollment does not carry: it takes the first rollover
    /// its key signed, whatever the serial, and the next one after that.
    pub fn apply(&self, signed: &Signed, now_ms: u64) -> Result<KeyRollover, RolloverError> {
        let mut guard = self.inner.write().map_err(|_| RolloverError::Poisoned)?;
        let applied = guard.key_serial;
        let rollover: KeyRollover = match signed.open_with(SignatureKind::KeyRollover, &guard.rollover_signers(now_ms))
        {
            Ok(r) => r,
            Err(SignatureError::UnknownKey) => {
                // Told apart only to say so: an old rollover the session repeats
                // is quiet, a new one signed by a retiring key is an attack.
                match signed.open_with::<KeyRollover>(SignatureKind::KeyRollover, &guard.active(now_ms)) {
                    Ok(r) if r.serial > applied => return Err(RolloverError::RetiringSigner { got: r.serial }),
                    Ok(r) => return Err(RolloverError::NotNewer { got: r.serial, applied }),
                    Err(e) => return Err(e.into()),
                }
            }
            Err(e) => return Err(e.into()),
        };
        if rollover.serial <= applied {
            return Err(RolloverError::NotNewer {
                got: rollover.serial,
                applied,
            });
        }
        if applied > 0 && rollover.serial != applied + 1 {
            return Err(RolloverError::NotNext {
                got: rollover.serial,
                applied,
            });
        }
        let mut next = guard.clone();
        next.apply_rollover(&rollover, now_ms);
        if let Some(dir) = &self.state_dir {
            let mut enrollment = Identity::load(dir)?.enrollment;
            enrollment.keys = next.clone();
            Identity::save_enrollment(dir, &enrollment)?;
        }
        *guard = next;
        Ok(rollover)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use ring::rand::SystemRandom;
    use ward_protocol::SigningKey;

    fn key() -> SigningKey {
        SigningKey::generate(&SystemRandom::new()).unwrap().0
    }

    fn rollover(by: &SigningKey, kind: SignatureKind, serial: u64, new: &SigningKey, retire_at_ms: u64) -> Signed {
        let r = KeyRollover {
            serial,
            new_key: new.public_key(),
            retire_at_ms,
            created_at_ms: 0,
        };
        by.sign_value(kind, &r).unwrap()
    }

    #[test]
    fn a_rollover_pins_the_new_key_and_retires_the_old_after_the_overlap() {
        let (a, b, c, stranger) = (key(), key(), key(), key());
        let keys = PinnedKeys::in_memory(vec![a.public_key()]);
        // Only a pinned key introduces another, and only with the rollover's signature kind.
        let forged = rollover(&stranger, SignatureKind::KeyRollover, 1, &stranger, 2_000);
        assert!(matches!(
            keys.apply(&forged, 1_000),
            Err(RolloverError::Signature(SignatureError::UnknownKey))
        ));
        let as_command = rollover(&a, SignatureKind::Command, 1, &stranger, 2_000);
        assert!(matches!(
            keys.apply(&as_command, 1_000),
            Err(RolloverError::Signature(SignatureError::Invalid))
        ));
        assert_eq!(keys.active(1_000), [a.public_key()]);

        let first = rollover(&a, SignatureKind::KeyRollover, 1, &b, 2_000);
        keys.apply(&first, 1_000).unwrap();
        assert_eq!(keys.active(1_999), [a.public_key(), b.public_key()], "overlap");
        assert_eq!(keys.active(2_000), [b.public_key()], "cut-over");
        assert!(matches!(
            keys.apply(&first, 1_500),
            Err(RolloverError::NotNewer { got: 1, applied: 1 })
        ));
        // The next rotation is signed by the key that replaced the first.
        keys.apply(&rollover(&b, SignatureKind::KeyRollover, 2, &c, 9_000), 5_000)
            .unwrap();
        assert_eq!(keys.active(5_000), [b.public_key(), c.public_key()]);
        // A retired key can no longer introduce anything.
        assert!(matches!(
            keys.apply(&rollover(&a, SignatureKind::KeyRollover, 3, &stranger, 99_000), 5_000),
            Err(RolloverError::Signature(SignatureError::UnknownKey))
        ));
    }

    #[test]
    fn a_retiring_key_cannot_introduce_a_key_or_cut_the_overlap_short() {
        let (a, b, c, attacker) = (key(), key(), key(), key());
        let keys = PinnedKeys::in_memory(vec![a.public_key()]);
        keys.apply(&rollover(&a, SignatureKind::KeyRollover, 1, &b, 10_000), 1_000)
            .unwrap();
        // During the overlap A still signs commands, but whoever holds A (a stolen
        // backup) cannot name their key and retire B at once.
        let takeover = rollover(&a, SignatureKind::KeyRollover, 2, &attacker, 1_000);
        assert!(matches!(
            keys.apply(&takeover, 2_000),
            Err(RolloverError::RetiringSigner { got: 2 })
        ));
        assert_eq!(keys.active(2_000), [a.public_key(), b.public_key()]);
        // The serial after the one applied, no other: not a skip ahead, not a repeat.
        assert!(matches!(
            keys.apply(&rollover(&b, SignatureKind::KeyRollover, 5, &c, 20_000), 2_000),
            Err(RolloverError::NotNext { got: 5, applied: 1 })
        ));
        assert!(matches!(
            keys.apply(&rollover(&a, SignatureKind::KeyRollover, 1, &b, 10_000), 2_000),
            Err(RolloverError::NotNewer { got: 1, applied: 1 })
        ));
        // The newest key's holder rotates again with a short overlap: B retires then,
        // but A keeps the time it was given, not shortened by the later rollover.
        keys.apply(&rollover(&b, SignatureKind::KeyRollover, 2, &c, 3_000), 2_000)
            .unwrap();
        assert_eq!(keys.active(3_000), [a.public_key(), c.public_key()]);
        assert_eq!(keys.active(10_000), [c.public_key()]);
    }

    #[test]
    fn a_fresh_agent_takes_the_first_rollover_its_key_signed() {
        // Enrolled after two rotations: pins C with serial 0; the session repeats
        // rollovers 1 and 2 (signed by keys it never pinned), then brings 3.
        let (a, b, c, d) = (key(), key(), key(), key());
        let keys = PinnedKeys::in_memory(vec![c.public_key()]);
        for r in [
            rollover(&a, SignatureKind::KeyRollover, 1, &b, 2_000),
            rollover(&b, SignatureKind::KeyRollover, 2, &c, 3_000),
        ] {
            assert!(matches!(
                keys.apply(&r, 5_000),
                Err(RolloverError::Signature(SignatureError::UnknownKey))
            ));
        }
        keys.apply(&rollover(&c, SignatureKind::KeyRollover, 3, &d, 9_000), 5_000)
            .unwrap();
        assert_eq!(keys.active(5_000), [c.public_key(), d.public_key()]);
    }

    #[test]
    fn an_agent_offline_through_two_rotations_follows_the_chain() {
        let (a, b, c) = (key(), key(), key());
        let keys = PinnedKeys::in_memory(vec![a.public_key()]);
        // Back long after both overlaps ended: each step retires the key before it at once.
        keys.apply(&rollover(&a, SignatureKind::KeyRollover, 1, &b, 2_000), 50_000)
            .unwrap();
        assert_eq!(keys.active(50_000), [b.public_key()]);
        assert_eq!(keys.inner.read().unwrap().retiring_keys, [], "retired keys are dropped");
        keys.apply(&rollover(&b, SignatureKind::KeyRollover, 2, &c, 9_000), 50_000)
            .unwrap();
        assert_eq!(keys.active(50_000), [c.public_key()]);
    }

    #[test]
    fn identity_files_from_before_rollovers_still_load() {
        let e = crate::identity::Enrollment {
            device_id: ward_protocol::DeviceId::default(),
            collector_addr: "127.0.0.1:4433".into(),
            server_name: "ward".into(),
            client_cert_der: vec![1],
            ca_cert_der: vec![2],
            keys: CommandKeys::pinned(vec![PublicKey([7; 32])]),
        };
        let mut json = serde_json::to_value(&e).unwrap();
        // The keys sit beside the other fields, where `command_keys` always was.
        assert_eq!(json["command_keys"][0][0], 7);
        let object = json.as_object_mut().unwrap();
        object.remove("retiring_keys");
        object.remove("key_serial");
        let old: crate::identity::Enrollment = serde_json::from_value(json).unwrap();
        assert_eq!(old, e);
    }
}
