//! Ed25519 signatures over a domain tag plus the exact encoded bytes.
//!
//! Every signed kind has its own tag, so a signature made for one kind never
//! verifies as another. [`verify`] is the single place a signature is checked:
//! it works on bytes, before anything is decoded, and a batch verifier can
//! replace it without touching callers.

use ring::digest;
use ring::rand::SecureRandom;
use ring::signature::{self, Ed25519KeyPair, KeyPair};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::{DecodeError, SignatureError};

/// The kinds of signed payloads, each with its own domain tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SignatureKind {
    Alert,
    Command,
    CommandResult,
    RulePack,
    Enrollment,
    KeyRollover,
}

impl SignatureKind {
    pub const ALL: [SignatureKind; 6] = [
        SignatureKind::Alert,
        SignatureKind::Command,
        SignatureKind::CommandResult,
        SignatureKind::RulePack,
        SignatureKind::Enrollment,
        SignatureKind::KeyRollover,
    ];

    /// NUL-terminated, so no tag is a prefix of another.
    pub fn domain_tag(&self) -> &'static [u8] {
        match self {
            SignatureKind::Alert => b"ward-alert-v1\0",
            SignatureKind::Command => b"ward-cmd-v1\0",
            SignatureKind::CommandResult => b"ward-cmd-result-v1\0",
            SignatureKind::RulePack => b"ward-rulepack-v1\0",
            SignatureKind::Enrollment => b"ward-enroll-v1\0",
            SignatureKind::KeyRollover => b"ward-key-rollover-v1\0",
        }
    }
}

/// The first 8 bytes of the SHA-256 of a public key: names the key that signed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
pub struct KeyId(pub [u8; 8]);

/// A raw 32-byte Ed25519 public key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PublicKey(pub [u8; 32]);

impl PublicKey {
    pub fn from_slice(bytes: &[u8]) -> Result<Self, SignatureError> {
        let arr: [u8; 32] = bytes.try_into().map_err(|_| SignatureError::BadKey)?;
        Ok(PublicKey(arr))
    }

    pub fn key_id(&self) -> KeyId {
        let d = digest::digest(&digest::SHA256, &self.0);
        let mut id = [0u8; 8];
        id.copy_from_slice(&d.as_ref()[..8]);
        KeyId(id)
    }
}

/// An Ed25519 private key (ring), loaded from PKCS#8.
pub struct SigningKey {
    pair: Ed25519KeyPair,
    public: PublicKey,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("public", &self.public)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// Generates a key; returns it with its PKCS#8 document for storage.
    pub fn generate(rng: &dyn SecureRandom) -> Result<(SigningKey, Vec<u8>), SignatureError> {
        let doc = Ed25519KeyPair::generate_pkcs8(rng).map_err(|_| SignatureError::BadKey)?;
        let pkcs8 = doc.as_ref().to_vec();
        Ok((SigningKey::from_pkcs8(&pkcs8)?, pkcs8))
    }

    pub fn from_pkcs8(pkcs8: &[u8]) -> Result<SigningKey, SignatureError> {
        let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(pkcs8).map_err(|_| SignatureError::BadKey)?;
        let public = PublicKey::from_slice(pair.public_key().as_ref())?;
        Ok(SigningKey { pair, public })
    }

    pub fn public_key(&self) -> PublicKey {
        self.public
    }

    /// Signs `payload` exactly as given.
    pub fn sign(&self, kind: SignatureKind, payload: Vec<u8>) -> Signed {
        let sig = self.pair.sign(&tagged(kind, &payload));
        Signed {
            key_id: self.public.key_id(),
            payload,
            signature: sig.as_ref().to_vec(),
        }
    }

    /// Encodes `value` with postcard and signs the encoding.
    pub fn sign_value<T: Serialize>(&self, kind: SignatureKind, value: &T) -> Result<Signed, DecodeError> {
        Ok(self.sign(kind, postcard::to_stdvec(value)?))
    }
}

/// Encoded bytes with the signature over them, shipped as they were signed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signed {
    pub key_id: KeyId,
    pub payload: Vec<u8>,
    pub signature: Vec<u8>,
}

fn tagged(kind: SignatureKind, payload: &[u8]) -> Vec<u8> {
    let tag = kind.domain_tag();
    let mut msg = Vec::with_capacity(tag.len() + payload.len());
    msg.extend_from_slice(tag);
    msg.extend_from_slice(payload);
    msg
}

/// Checks `signed` against `key` for `kind`. The one verification step.
pub fn verify(kind: SignatureKind, key: &PublicKey, signed: &Signed) -> Result<(), SignatureError> {
    if signed.signature.len() != 64 {
        return Err(SignatureError::BadLength(signed.signature.len()));
    }
    signature::UnparsedPublicKey::new(&signature::ED25519, &key.0)
        .verify(&tagged(kind, &signed.payload), &signed.signature)
        .map_err(|_| SignatureError::Invalid)
}

/// Checks many signatures of one kind by one key at once ([`crate::batch`]: one
/// multiscalar multiplication with the key's terms folded). If the batch fails,
/// each item is checked on its own with [`verify`], which decides, and the first
/// bad index is returned. Used by the collector's ingest; [`verify`] stays the reference.
pub fn verify_batch(kind: SignatureKind, key: &PublicKey, items: &[&Signed]) -> Result<(), (usize, SignatureError)> {
    let mut sigs = Vec::with_capacity(items.len());
    for (i, s) in items.iter().enumerate() {
        match <&[u8; 64]>::try_from(s.signature.as_slice()) {
            Ok(sig) => sigs.push(sig),
            Err(_) => return Err((i, SignatureError::BadLength(s.signature.len()))),
        }
    }
    let payloads: Vec<&[u8]> = items.iter().map(|s| s.payload.as_slice()).collect();
    let batch_ok = crate::batch::verify_one_key(&key.0, kind.domain_tag(), &payloads, &sigs);
    if batch_ok {
        return Ok(());
    }
    for (i, item) in items.iter().enumerate() {
        verify(kind, key, item).map_err(|e| (i, e))?;
    }
    Ok(())
}

impl Signed {
    /// Verifies, then decodes: the payload is never parsed unless the signature holds.
    pub fn open<T: DeserializeOwned>(&self, kind: SignatureKind, key: &PublicKey) -> Result<T, SignatureError> {
        verify(kind, key, self)?;
        Ok(decode_exact(&self.payload)?)
    }

    /// Like [`Signed::open`], choosing among `keys` by the key id.
    pub fn open_with<T: DeserializeOwned>(&self, kind: SignatureKind, keys: &[PublicKey]) -> Result<T, SignatureError> {
        let key = keys
            .iter()
            .find(|k| k.key_id() == self.key_id)
            .ok_or(SignatureError::UnknownKey)?;
        self.open(kind, key)
    }
}

/// Decodes a postcard value that must use every byte.
pub(crate) fn decode_exact<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, DecodeError> {
    let (value, rest) = postcard::take_from_bytes(bytes)?;
    if !rest.is_empty() {
        return Err(DecodeError(format!("{} trailing bytes", rest.len())));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::rand::SystemRandom;

    #[test]
    fn sign_verify_and_domain_separation() {
        let (key, pkcs8) = SigningKey::generate(&SystemRandom::new()).unwrap();
        let reloaded = SigningKey::from_pkcs8(&pkcs8).unwrap();
        assert_eq!(reloaded.public_key(), key.public_key());
        let signed = key.sign(SignatureKind::Alert, b"payload".to_vec());
        assert_eq!(verify(SignatureKind::Alert, &key.public_key(), &signed), Ok(()));
        for other in SignatureKind::ALL.into_iter().filter(|k| *k != SignatureKind::Alert) {
            assert_eq!(verify(other, &key.public_key(), &signed), Err(SignatureError::Invalid));
        }
        let mut short = signed.clone();
        short.signature.pop();
        assert_eq!(
            verify(SignatureKind::Alert, &key.public_key(), &short),
            Err(SignatureError::BadLength(63))
        );
    }

    #[test]
    fn batch_verification_agrees_and_names_the_bad_item() {
        let (key, _) = SigningKey::generate(&SystemRandom::new()).unwrap();
        let items: Vec<Signed> = (0..20u8).map(|i| key.sign(SignatureKind::Alert, vec![i; 40])).collect();
        let refs: Vec<&Signed> = items.iter().collect();
        assert_eq!(verify_batch(SignatureKind::Alert, &key.public_key(), &refs), Ok(()));
        assert!(verify_batch(SignatureKind::Command, &key.public_key(), &refs).is_err());
        let mut bad = items.clone();
        bad[13].payload[0] ^= 1;
        let refs: Vec<&Signed> = bad.iter().collect();
        assert_eq!(
            verify_batch(SignatureKind::Alert, &key.public_key(), &refs),
            Err((13, SignatureError::Invalid))
        );
        assert_eq!(verify_batch(SignatureKind::Alert, &key.public_key(), &[]), Ok(()));
    }

    #[test]
    fn open_with_picks_the_named_key() {
        let rng = SystemRandom::new();
        let (a, _) = SigningKey::generate(&rng).unwrap();
        let (b, _) = SigningKey::generate(&rng).unwrap();
        let signed = a.sign_value(SignatureKind::Command, &42u64).unwrap();
        let got: u64 = signed
            .open_with(SignatureKind::Command, &[b.public_key(), a.public_key()])
            .unwrap();
        assert_eq!(got, 42);
        assert_eq!(
            signed.open_with::<u64>(SignatureKind::Command, &[b.public_key()]),
            Err(SignatureError::UnknownKey)
        );
    }
}
