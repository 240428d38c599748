//! Batch verification of many Ed25519 signatures made by one key.
//!
//! An agent signs every alert of a batch with its one device key, so the batch
//! equation needs that key once. For signatures `(Rᵢ, sᵢ)` on messages `Mᵢ`
//! under key `A`, with `hᵢ = SHA-512(Rᵢ ‖ A ‖ Mᵢ) mod ℓ` and weights `zᵢ`:
//!
//! ```text
//!   −(Σ zᵢsᵢ)·B + Σ zᵢ·Rᵢ + (Σ zᵢhᵢ)·A = 0
//! ```
//!
//! This is the equation of ed25519-dalek's `verify_batch` (which the collector ran
//! before), with the key's n terms `Σ (zᵢhᵢ)·A` folded into one: a multiscalar
//! multiplication over n + 2 points instead of 2n + 1.
//!
//! # Why this is as strict as verifying each signature
//!
//! The caller ([`crate::sign::verify_batch`]) falls back to [`crate::sign::verify`]
//! (ring, one signature at a time) whenever this returns false, and that decides.
//! So the only question is whether this can return true for a batch holding a
//! signature that ring refuses:
//! - **Encodings.** Before any arithmetic, every `sᵢ` must be canonical (`< ℓ`)
//!   and every `Rᵢ` a canonical encoding (y `< p`, no sign bit on x = 0), as
//!   ring requires; ed25519-dalek's batch accepted non-canonical `Rᵢ`.
//! - **Weights.** The `zᵢ` are 128-bit values derived from a SHA-512 of the whole
//!   batch (the key, every `hᵢ`, which binds `Rᵢ`, `A` and `Mᵢ`, and every `sᵢ`),
//!   so whoever chose the signatures fixed them before the weights existed. If
//!   some signature's own equation `sᵢ·B − Rᵢ − hᵢ·A = Eᵢ` has `Eᵢ` with a
//!   component of order ℓ, the sum vanishes only if the weights hit one value in
//!   2¹²⁸: a forgery hidden in a batch passes with probability about 2⁻¹²⁸.
//! - **Small-order parts.** What the weights cannot rule out is an `Eᵢ` in the
//!   8-element torsion group, which can cancel (ring, checking `sᵢ·B − hᵢ·A`
//!   against `Rᵢ` exactly, refuses it). Making such a signature needs the
//!   secret key: `sᵢ` must solve the equation's order-ℓ part, which is a valid
//!   signature's `s`. So only the device itself could send one, and it gains
//!   nothing: the payload is one it signed and could have signed validly. The
//!   same holds for ed25519-dalek's batch and for cofactored verification.
//!
//! Tested against ring on random valid batches and batches with one signature,
//! key, message, `R` or `s` tampered (property tests below).

use curve25519_dalek::constants::ED25519_BASEPOINT_POINT;
use curve25519_dalek::edwards::{CompressedEdwardsY, EdwardsPoint};
use curve25519_dalek::scalar::Scalar;
use curve25519_dalek::traits::{IsIdentity, VartimeMultiscalarMul};
use ring::digest::{Context, SHA512};

/// Domain of the weights' hash (so they are derived for this use only).
const WEIGHTS_DOMAIN: &[u8] = b"ward one-key ed25519 batch weights v1\0";

/// True when every signature verifies under `key` (see the module doc); false
/// when any does not, or when an encoding is malformed. `signatures[i]` signs
/// `prefix` followed by `messages[i]` (the prefix is a domain tag); the slices
/// must have equal lengths (false otherwise).
pub fn verify_one_key(key: &[u8; 32], prefix: &[u8], messages: &[&[u8]], signatures: &[&[u8; 64]]) -> bool {
    if messages.len() != signatures.len() {
        return false;
    }
    let Some(a) = CompressedEdwardsY(*key).decompress() else {
        return false;
    };
    let n = signatures.len();
    let mut rs = Vec::with_capacity(n);
    let mut ss = Vec::with_capacity(n);
    let mut hs = Vec::with_capacity(n);
    let mut transcript = Context::new(&SHA512);
    transcript.update(WEIGHTS_DOMAIN);
    transcript.update(key);
    transcript.update(&(n as u64).to_le_bytes());
    for (sig, msg) in signatures.iter().zip(messages) {
        let (r_bytes, s_bytes) = split(sig);
        if !canonical_point_encoding(&r_bytes) {
            return false;
        }
        let Some(s) = Option::<Scalar>::from(Scalar::from_canonical_bytes(s_bytes)) else {
            return false;
        };
        let Some(r) = CompressedEdwardsY(r_bytes).decompress() else {
            return false;
        };
        let mut h = Context::new(&SHA512);
        h.update(&r_bytes);
        h.update(key);
        h.update(prefix);
        h.update(msg);
        let hram = wide(h.finish().as_ref());
        transcript.update(&hram);
        transcript.update(&s_bytes);
        rs.push(r);
        ss.push(s);
        hs.push(Scalar::from_bytes_mod_order_wide(&hram));
    }
    let seed = transcript.finish();
    let zs = weights(seed.as_ref(), n);
    let b_coefficient: Scalar = zs.iter().zip(&ss).map(|(z, s)| z * s).sum();
    let a_coefficient: Scalar = zs.iter().zip(&hs).map(|(z, h)| z * h).sum();
    let scalars = std::iter::once(-b_coefficient)
        .chain(zs.iter().copied())
        .chain(std::iter::once(a_coefficient));
    let points = std::iter::once(ED25519_BASEPOINT_POINT)
        .chain(rs)
        .chain(std::iter::once(a));
    EdwardsPoint::vartime_multiscalar_mul(scalars, points).is_identity()
}

fn split(sig: &[u8; 64]) -> ([u8; 32], [u8; 32]) {
    let mut r = [0u8; 32];
    let mut s = [0u8; 32];
    r.copy_from_slice(&sig[..32]);
    s.copy_from_slice(&sig[32..]);
    (r, s)
}

fn wide(digest: &[u8]) -> [u8; 64] {
    let mut out = [0u8; 64];
    out.copy_from_slice(&digest[..64]);
    out
}

/// n 128-bit weights, four from each SHA-512 of the batch's seed and a counter.
fn weights(seed: &[u8], n: usize) -> Vec<Scalar> {
    let mut zs = Vec::with_capacity(n);
    let mut block = 0u64;
    while zs.len() < n {
        let mut h = Context::new(&SHA512);
        h.update(seed);
        h.update(&block.to_le_bytes());
        let out = h.finish();
        for chunk in out.as_ref().chunks_exact(16).take(n - zs.len()) {
            let mut z = [0u8; 16];
            z.copy_from_slice(chunk);
            zs.push(Scalar::from(u128::from_le_bytes(z)));
        }
        block += 1;
    }
    zs
}

/// A point's encoding is canonical: its y (the low 255 bits) is below
/// p = 2²⁵⁵ − 19, and the sign bit is clear when x = 0 (y = 1 or y = p − 1).
fn canonical_point_encoding(bytes: &[u8; 32]) -> bool {
    let sign = bytes[31] & 0x80 != 0;
    let mut y = *bytes;
    y[31] &= 0x7f;
    // y >= p: the top 250 bits all ones and the lowest byte at least 0xed.
    let at_least_p = y[31] == 0x7f && y[1..31].iter().all(|&b| b == 0xff) && y[0] >= 0xed;
    if at_least_p {
        return false;
    }
    let one = y[0] == 1 && y[1..].iter().all(|&b| b == 0);
    let minus_one = y[0] == 0xec && y[1..31].iter().all(|&b| b == 0xff) && y[31] == 0x7f;
    !(sign && (one || minus_one))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sign::{SignatureKind, SigningKey, verify};
    use proptest::prelude::*;

    /// Signs `payloads` and returns (key, payloads, signatures).
    fn batch(payloads: &[Vec<u8>]) -> (SigningKey, Vec<Vec<u8>>, Vec<[u8; 64]>) {
        let key = SigningKey::generate(&ring::rand::SystemRandom::new()).unwrap().0;
        let sigs = payloads
            .iter()
            .map(|p| {
                let s = key.sign(SignatureKind::Alert, p.clone());
                <[u8; 64]>::try_from(s.signature.as_slice()).unwrap()
            })
            .collect();
        (key, payloads.to_vec(), sigs)
    }

    fn check(key: &[u8; 32], msgs: &[Vec<u8>], sigs: &[[u8; 64]]) -> bool {
        let m: Vec<&[u8]> = msgs.iter().map(Vec::as_slice).collect();
        let s: Vec<&[u8; 64]> = sigs.iter().collect();
        verify_one_key(key, SignatureKind::Alert.domain_tag(), &m, &s)
    }

    /// What ring says of every signature of the batch.
    fn ring_says(key: &SigningKey, msgs: &[Vec<u8>], sigs: &[[u8; 64]]) -> bool {
        msgs.iter().zip(sigs).all(|(m, s)| {
            let signed = crate::sign::Signed {
                key_id: key.public_key().key_id(),
                payload: m.clone(),
                signature: s.to_vec(),
            };
            verify(SignatureKind::Alert, &key.public_key(), &signed).is_ok()
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        #[test]
        fn agrees_with_ring_on_valid_and_tampered_batches(
            payloads in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..200), 1..24),
            which in any::<prop::sample::Index>(),
            how in 0u8..6,
            byte in any::<prop::sample::Index>(),
            flip in 1u8..=255,
        ) {
            let (key, mut msgs, mut sigs) = batch(&payloads);
            let mut pk = key.public_key().0;
            prop_assert!(check(&pk, &msgs, &sigs));
            let i = which.index(sigs.len());
            match how {
                0 => {}
                1 => sigs[i][byte.index(32)] ^= flip,      // R
                2 => sigs[i][32 + byte.index(32)] ^= flip, // s
                3 => msgs[i].push(flip),                   // message
                4 => pk[byte.index(32)] ^= flip,           // key
                _ => sigs.swap(0, i),                      // signatures swapped
            }
            let swapped_same = how == 5 && (i == 0 || msgs[0] == msgs[i]);
            let expected = ring_says(&key, &msgs, &sigs) && pk == key.public_key().0;
            prop_assert_eq!(check(&pk, &msgs, &sigs), expected);
            prop_assert_eq!(expected, how == 0 || swapped_same);
        }
    }

    #[test]
    fn an_empty_batch_holds_and_mismatched_lengths_do_not() {
        let (key, msgs, sigs) = batch(&[b"one".to_vec()]);
        assert!(check(&key.public_key().0, &[], &[]));
        assert!(!check(&key.public_key().0, &msgs, &[]));
        assert!(!check(&key.public_key().0, &[], &sigs));
    }

    #[test]
    fn a_non_canonical_s_is_refused_as_ring_refuses_it() {
        let (key, msgs, mut sigs) = batch(&[b"alert".to_vec()]);
        // s + ℓ: the same scalar mod ℓ, not canonical.
        let ell: [u8; 32] = [
            0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde, 0x14, 0, 0, 0, 0,
            0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
        ];
        let mut carry = 0u16;
        for k in 0..32 {
            let v = u16::from(sigs[0][32 + k]) + u16::from(ell[k]) + carry;
            sigs[0][32 + k] = v as u8;
            carry = v >> 8;
        }
        assert!(!ring_says(&key, &msgs, &sigs));
        assert!(!check(&key.public_key().0, &msgs, &sigs));
    }

    #[test]
    fn point_encodings_at_or_above_p_are_not_canonical() {
        let mut p = [0xffu8; 32];
        p[0] = 0xed;
        p[31] = 0x7f;
        assert!(!canonical_point_encoding(&p));
        p[0] = 0xec; // p − 1: canonical without the sign bit, not with it
        assert!(canonical_point_encoding(&p));
        p[31] |= 0x80;
        assert!(!canonical_point_encoding(&p));
        let mut one = [0u8; 32];
        one[0] = 1;
        assert!(canonical_point_encoding(&one));
        one[31] = 0x80;
        assert!(!canonical_point_encoding(&one));
        assert!(canonical_point_encoding(&ED25519_BASEPOINT_POINT.compress().0));
    }

    #[test]
    fn weights_are_many_and_differ() {
        let zs = weights(&[7u8; 64], 9);
        assert_eq!(zs.len(), 9);
        for i in 0..zs.len() {
            for j in i + 1..zs.len() {
                assert_ne!(zs[i], zs[j]);
            }
        }
        assert_ne!(weights(&[8u8; 64], 1)[0], zs[0]);
    }
}
