//! Break-glass tokens: an offline release of one isolated device, once, before it
//! expires, typed in at the device's console when the collector cannot reach it.
//!
//! The collector signs a [`BreakGlassToken`] with its command key
//! (`ward-collector device break-glass`); the agent's `break-glass` command checks
//! it here ([`BreakGlassToken::verify`]: signature, magic, device, expiry, validity
//! cap) and then, outside this crate, records the nonce as used and releases.
//! The text form is base64url without padding (RFC 4648 §5) of the postcard-encoded
//! [`Signed`]; it is frozen by `tests/golden/v1/break_glass_token.txt`.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::error::SignatureError;
use crate::ids::DeviceId;
use crate::sign::{PublicKey, SignatureKind, Signed, SigningKey};

/// The longest validity an agent accepts for a break-glass token (MDE uses 3 days).
pub const BREAK_GLASS_MAX_VALIDITY_MS: u64 = 7 * 24 * 3600 * 1000;

/// Token text longer than this is refused before it is decoded.
const MAX_TOKEN_CHARS: usize = 4096;

/// Leads every break-glass payload. Bytes 32.. are 0xFF: at that offset a
/// `Command` encoding holds its `seq` varint, which can never be ten 0xFF bytes,
/// so no valid `Command` decodes as a token and no token decodes as a `Command`,
/// although both are signed with [`SignatureKind::Command`] by the command key.
pub const BREAK_GLASS_MAGIC: [u8; 48] = {
    let mut m = [0xFFu8; 48];
    let tag = b"ward-break-glass-release-v1";
    let mut i = 0;
    while i < 32 {
        m[i] = if i < tag.len() { tag[i] } else { 0 };
        i += 1;
    }
    m
};

/// An offline release for one device, once, before it expires. Signed by the
/// collector's command key with [`SignatureKind::Command`] (the protocol has no
/// kind of its own for it; [`BREAK_GLASS_MAGIC`] keeps it apart from commands).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BreakGlassToken {
    #[serde(with = "magic_bytes")]
    pub magic: [u8; 48],
    pub device_id: DeviceId,
    pub expires_at_ms: u64,
    pub nonce: [u8; 16],
}

mod magic_bytes {
    //! serde has no impls for arrays longer than 32: a fixed-size tuple of bytes.
    use serde::de::{Error, SeqAccess, Visitor};
    use serde::ser::SerializeTuple;
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8; 48], s: S) -> Result<S::Ok, S::Error> {
        let mut t = s.serialize_tuple(48)?;
        for b in v {
            t.serialize_element(b)?;
        }
        t.end()
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 48], D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = [u8; 48];
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("48 bytes")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<[u8; 48], A::Error> {
                let mut out = [0u8; 48];
                for (i, b) in out.iter_mut().enumerate() {
                    *b = seq.next_element()?.ok_or_else(|| A::Error::invalid_length(i, &self))?;
                }
                Ok(out)
            }
        }
        d.deserialize_tuple(48, V)
    }
}

/// A break-glass token that is not valid here and now.
#[derive(Debug, Error)]
pub enum BreakGlassError {
    #[error("break-glass token is malformed: {0}")]
    Malformed(String),
    #[error("break-glass token signature refused: {0}")]
    Signature(SignatureError),
    #[error("signed payload is not a break-glass token")]
    NotABreakGlassToken,
    #[error("break-glass token is for device {token}, this is {this}")]
    WrongDevice { token: DeviceId, this: DeviceId },
    #[error("break-glass token expired at {expires_at_ms} (now {now_ms})")]
    Expired { expires_at_ms: u64, now_ms: u64 },
    #[error("break-glass token is valid for longer than the agent accepts ({max_ms} ms)")]
    TooLongLived { max_ms: u64 },
}

impl BreakGlassToken {
    pub fn new(device_id: DeviceId, expires_at_ms: u64, nonce: [u8; 16]) -> BreakGlassToken {
        BreakGlassToken {
            magic: BREAK_GLASS_MAGIC,
            device_id,
            expires_at_ms,
            nonce,
        }
    }

    /// Signs with the command key and returns the token text (for the collector side).
    pub fn sign(&self, key: &SigningKey) -> Result<String, BreakGlassError> {
        let signed = key
            .sign_value(SignatureKind::Command, self)
            .map_err(|e| BreakGlassError::Malformed(e.to_string()))?;
        let bytes = postcard::to_stdvec(&signed).map_err(|e| BreakGlassError::Malformed(e.to_string()))?;
        Ok(URL_SAFE_NO_PAD.encode(bytes))
    }

    /// Decodes and verifies token text against the pinned command keys.
    pub fn open(text: &str, command_keys: &[PublicKey]) -> Result<BreakGlassToken, BreakGlassError> {
        let text = text.trim();
        if text.len() > MAX_TOKEN_CHARS {
            return Err(BreakGlassError::Malformed("token too long".to_string()));
        }
        let bytes = base64url_decode(text).ok_or_else(|| BreakGlassError::Malformed("not base64url".to_string()))?;
        let (signed, rest): (Signed, &[u8]) =
            postcard::take_from_bytes(&bytes).map_err(|e| BreakGlassError::Malformed(e.to_string()))?;
        if !rest.is_empty() {
            return Err(BreakGlassError::Malformed(format!("{} trailing bytes", rest.len())));
        }
        let token: BreakGlassToken = signed
            .open_with(SignatureKind::Command, command_keys)
            .map_err(BreakGlassError::Signature)?;
        if token.magic != BREAK_GLASS_MAGIC {
            return Err(BreakGlassError::NotABreakGlassToken);
        }
        Ok(token)
    }

    /// [`BreakGlassToken::open`], then checks that the token is for `device_id`, not
    /// expired at `now_ms` and not valid for longer than [`BREAK_GLASS_MAX_VALIDITY_MS`].
    /// Whether its nonce was used before is the caller's to check.
    pub fn verify(
        text: &str,
        device_id: DeviceId,
        command_keys: &[PublicKey],
        now_ms: u64,
    ) -> Result<BreakGlassToken, BreakGlassError> {
        let token = BreakGlassToken::open(text, command_keys)?;
        if token.device_id != device_id {
            return Err(BreakGlassError::WrongDevice {
                token: token.device_id,
                this: device_id,
            });
        }
        if token.expires_at_ms <= now_ms {
            return Err(BreakGlassError::Expired {
                expires_at_ms: token.expires_at_ms,
                now_ms,
            });
        }
        if token.expires_at_ms - now_ms > BREAK_GLASS_MAX_VALIDITY_MS {
            return Err(BreakGlassError::TooLongLived {
                max_ms: BREAK_GLASS_MAX_VALIDITY_MS,
            });
        }
        Ok(token)
    }
}

/// base64url without padding, as the tokens have always been read: trailing `=` are
/// tolerated (a token pasted from a tool that pads), non-canonical encodings (stray
/// low bits) are refused; `None` if invalid.
fn base64url_decode(text: &str) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(text.trim_end_matches('=')).ok()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::command::{Action, Approval, Command};
    use crate::ids::{CommandId, Id128};
    use ring::rand::SystemRandom;

    fn keys() -> (SigningKey, SigningKey) {
        let rng = SystemRandom::new();
        (
            SigningKey::generate(&rng).unwrap().0,
            SigningKey::generate(&rng).unwrap().0,
        )
    }

    const NOW: u64 = 1_800_000_000_000;
    const DAY: u64 = 24 * 3600 * 1000;

    #[test]
    fn base64url_reads_as_the_hand_written_codec_did() {
        for len in 0..40usize {
            let data: Vec<u8> = (0..len as u8).map(|i| i.wrapping_mul(37).wrapping_add(250)).collect();
            let text = URL_SAFE_NO_PAD.encode(&data);
            assert!(!text.contains('=') && !text.contains('+') && !text.contains('/'));
            assert_eq!(base64url_decode(&text).unwrap(), data, "len {len}");
        }
        assert_eq!(URL_SAFE_NO_PAD.encode(b"\xfb\xff"), "-_8");
        assert_eq!(base64url_decode("-_8=").unwrap(), b"\xfb\xff", "padding tolerated");
        assert_eq!(base64url_decode("-_8===").unwrap(), b"\xfb\xff");
        assert!(base64url_decode("A").is_none());
        assert!(base64url_decode("AB").is_none(), "stray low bits");
        assert!(base64url_decode("AA*A").is_none());
        assert!(base64url_decode("+/8").is_none(), "standard alphabet refused");
    }

    #[test]
    fn verify_checks_device_expiry_cap_and_signature() {
        let (key, other_key) = keys();
        let device = DeviceId(Id128([1; 16]));
        let other_device = DeviceId(Id128([2; 16]));
        let pins = [key.public_key()];
        let token = BreakGlassToken::new(device, NOW + 3 * DAY, [9; 16]).sign(&key).unwrap();
        assert!(matches!(
            BreakGlassToken::verify(&token, other_device, &pins, NOW),
            Err(BreakGlassError::WrongDevice { .. })
        ));
        assert!(matches!(
            BreakGlassToken::verify(&token, device, &pins, NOW + 3 * DAY),
            Err(BreakGlassError::Expired { .. })
        ));
        let foreign = BreakGlassToken::new(device, NOW + DAY, [8; 16])
            .sign(&other_key)
            .unwrap();
        assert!(matches!(
            BreakGlassToken::verify(&foreign, device, &pins, NOW),
            Err(BreakGlassError::Signature(SignatureError::UnknownKey))
        ));
        let long = BreakGlassToken::new(device, NOW + 30 * DAY, [6; 16])
            .sign(&key)
            .unwrap();
        assert!(matches!(
            BreakGlassToken::verify(&long, device, &pins, NOW),
            Err(BreakGlassError::TooLongLived { .. })
        ));
        assert!(matches!(
            BreakGlassToken::verify("not a token!", device, &pins, NOW),
            Err(BreakGlassError::Malformed(_))
        ));
        let ok = BreakGlassToken::verify(&token, device, &pins, NOW).unwrap();
        assert_eq!(ok.nonce, [9; 16]);
    }

    #[test]
    fn break_glass_and_commands_never_decode_as_each_other() {
        let (key, _) = keys();
        let pins = [key.public_key()];
        let command = Command {
            id: CommandId(Id128([0xFF; 16])),
            device_id: DeviceId(Id128([0xFF; 16])),
            seq: u64::MAX,
            issued_at_ms: u64::MAX,
            expires_at_ms: u64::MAX,
            action: Action::Release,
            approval: Approval {
                requested_by: String::new(),
                approved_by: vec![],
                reason: String::new(),
            },
        };
        let signed_cmd = key.sign_value(SignatureKind::Command, &command).unwrap();
        let text = URL_SAFE_NO_PAD.encode(postcard::to_stdvec(&signed_cmd).unwrap());
        assert!(matches!(
            BreakGlassToken::open(&text, &pins),
            Err(BreakGlassError::Signature(SignatureError::Decode(_)))
        ));

        let token = BreakGlassToken::new(DeviceId(Id128([1; 16])), NOW, [3; 16]);
        let signed_token = key.sign_value(SignatureKind::Command, &token).unwrap();
        assert!(
            signed_token
                .open_with::<Command>(SignatureKind::Command, &pins)
                .is_err()
        );
        // The magic as documented.
        assert_eq!(&BREAK_GLASS_MAGIC[..27], b"ward-break-glass-release-v1");
        assert!(BREAK_GLASS_MAGIC[32..].iter().all(|b| *b == 0xFF));
    }
}
