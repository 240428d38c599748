//! The QUIC endpoint's stateless-reset identity, kept across restarts so a collector
//! killed and started again tells every agent at once that its connection is gone.
//!
//! An agent holding a connection to a dead collector only learns of it from a
//! stateless reset (RFC 9000 §10.3): the restarted endpoint answers a packet for a
//! connection it does not know with a token derived from the connection id. The
//! agent accepts it only if it matches the token the old process announced, and
//! quinn's endpoint answers at all only for connection ids its own generator would
//! have made. Both come from random keys per process by default, so a restarted
//! collector dropped the agents' keep-alives silently and each agent waited out its
//! idle timeout (about 75 s) before reconnecting. With both keys in the data dir
//! (`quic-reset-key`, mode 0600, beside the CA key and with the same custody), the
//! agent's next keep-alive after the restart is answered by a reset and it
//! reconnects at once.
//!
//! Whoever reads the key can reset any agent's connection, which someone on the path
//! can already do by dropping its packets; it gives nothing else. A missing or
//! unreadable file is replaced: agents connected before then wait out their idle
//! timeout once.

use std::path::Path;
use std::sync::Arc;

use ring::rand::{SecureRandom, SystemRandom};
use tracing::warn;

/// The reset keys' file in the data dir.
pub const RESET_KEYS: &str = "quic-reset-key";

const MAGIC: &[u8; 4] = b"WRK1";
/// quinn's own default reset key is 64 bytes of HMAC-SHA256 key.
const RESET_KEY_LEN: usize = 64;
/// magic, the HMAC key for reset tokens, the connection-id generator's key.
const FILE_LEN: usize = MAGIC.len() + RESET_KEY_LEN + 8;

/// The endpoint configuration with the data dir's keys, created (or replaced, if
/// unreadable) when needed.
pub fn endpoint_config(data_dir: &Path) -> std::io::Result<quinn::EndpointConfig> {
    let keys = ResetKeys::open(data_dir)?;
    let mut config = quinn::EndpointConfig::new(Arc::new(ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &keys.reset)));
    config.cid_generator(move || Box::new(keys.cid_generator()));
    Ok(config)
}

#[derive(Clone, Copy)]
struct ResetKeys {
    /// HMAC-SHA256 key of the reset tokens.
    reset: [u8; RESET_KEY_LEN],
    /// Key of the connection ids' check hash.
    cid: u64,
}

impl ResetKeys {
    fn open(data_dir: &Path) -> std::io::Result<ResetKeys> {
        let path = data_dir.join(RESET_KEYS);
        match std::fs::read(&path) {
            Ok(bytes) => match Self::decode(&bytes) {
                Some(keys) => return Ok(keys),
                None => {
                    warn!(path = %path.display(), "QUIC reset keys unreadable: replaced; connected agents notice this restart only at their idle timeout")
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let mut bytes = [0u8; FILE_LEN];
        bytes[..MAGIC.len()].copy_from_slice(MAGIC);
        SystemRandom::new()
            .fill(&mut bytes[MAGIC.len()..])
            .map_err(|_| std::io::Error::other("no randomness for QUIC reset keys"))?;
        crate::util::replace_private_file(&path, &bytes)?;
        Self::decode(&bytes).ok_or_else(|| std::io::Error::other("QUIC reset keys"))
    }

    fn decode(bytes: &[u8]) -> Option<ResetKeys> {
        let rest = bytes.strip_prefix(MAGIC).filter(|_| bytes.len() == FILE_LEN)?;
        let (reset, cid) = rest.split_at(RESET_KEY_LEN);
        Some(ResetKeys {
            reset: reset.try_into().ok()?,
            cid: u64::from_le_bytes(cid.try_into().ok()?),
        })
    }

    fn cid_generator(&self) -> quinn_proto::HashedConnectionIdGenerator {
        quinn_proto::HashedConnectionIdGenerator::from_key(self.cid)
    }
}

#[cfg(test)]
mod tests {
    use quinn_proto::ConnectionIdGenerator as _;

    use super::*;

    #[test]
    fn the_keys_survive_a_restart_and_a_bad_file_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(RESET_KEYS);
        let first = ResetKeys::open(dir.path()).unwrap();
        let stored = std::fs::read(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions();
        assert_eq!(std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777, 0o600);
        let cid = first.cid_generator().generate_cid();

        let again = ResetKeys::open(dir.path()).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), stored, "kept, not rewritten");
        assert_eq!(again.reset, first.reset);
        assert!(
            again.cid_generator().validate(&cid).is_ok(),
            "a restart knows its predecessor's ids"
        );

        for bad in [
            &b"garbage"[..],
            &stored[..FILE_LEN - 1],
            &[b"WRK2", &stored[4..]].concat(),
        ] {
            std::fs::write(&path, bad).unwrap();
            let replaced = ResetKeys::open(dir.path()).unwrap();
            assert_ne!(replaced.reset, first.reset);
            assert!(
                replaced.cid_generator().validate(&cid).is_err(),
                "fresh keys do not know the old ids"
            );
            assert_eq!(std::fs::read(&path).unwrap().len(), FILE_LEN);
        }
        assert!(endpoint_config(dir.path()).is_ok());
    }
}
