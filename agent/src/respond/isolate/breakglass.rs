//! Offline break-glass release at the device's console: the token is checked by
//! `ward_protocol::BreakGlassToken::verify`; here its nonce is recorded as used
//! (once only) before the isolation is released.

use std::fs;
use std::io::ErrorKind;
use std::path::Path;

use serde::{Deserialize, Serialize};
use thiserror::Error;
use ward_protocol::{BreakGlassToken, DeviceId, PublicKey};

use super::lifecycle::release;
use super::nft::Nft;
use super::state::IsolateError;
use crate::identity::write_atomic;

/// Used break-glass nonces, so a token works once.
pub const BREAK_GLASS_USED_FILE: &str = "break_glass_used.json";

/// Why an offline break-glass release was refused or failed.
#[derive(Debug, Error)]
pub enum BreakGlassError {
    /// Not a valid token for this device now (see [`BreakGlassToken::verify`]).
    #[error(transparent)]
    Token(#[from] ward_protocol::BreakGlassError),
    #[error("break-glass token was already used")]
    Reused,
    #[error("release failed: {0}")]
    Release(#[from] IsolateError),
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct UsedNonces {
    /// Hex nonce and the token's expiry; pruned once long expired.
    used: Vec<(String, u64)>,
}

/// Verifies an offline break-glass token and releases isolation.
///
/// Order: decode, verify the signature against `command_keys`, check the magic,
/// the device, the expiry and the validity cap, refuse a used nonce; then the
/// nonce is recorded as used (before anything else, so a crash cannot make it
/// reusable) and the isolation released.
pub fn break_glass_release(
    state_dir: &Path,
    token_text: &str,
    device_id: DeviceId,
    command_keys: &[PublicKey],
    now_ms: u64,
) -> Result<(), BreakGlassError> {
    break_glass_release_with(state_dir, &Nft::new(), token_text, device_id, command_keys, now_ms)
}

/// [`break_glass_release`] with a given `nft`.
pub fn break_glass_release_with(
    state_dir: &Path,
    nft: &Nft,
    token_text: &str,
    device_id: DeviceId,
    command_keys: &[PublicKey],
    now_ms: u64,
) -> Result<(), BreakGlassError> {
    let token = BreakGlassToken::verify(token_text, device_id, command_keys, now_ms)?;
    let path = state_dir.join(BREAK_GLASS_USED_FILE);
    let mut used: UsedNonces = match fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| IsolateError::Corrupt {
            path: path.clone(),
            detail: e.to_string(),
        })?,
        Err(e) if e.kind() == ErrorKind::NotFound => UsedNonces::default(),
        Err(source) => return Err(IsolateError::Io { path, source }.into()),
    };
    let nonce = hex::encode(token.nonce);
    if used.used.iter().any(|(n, _)| *n == nonce) {
        return Err(BreakGlassError::Reused);
    }
    // An expired token is refused anyway; keep a day's margin for clock steps.
    used.used
        .retain(|(_, exp)| exp.saturating_add(24 * 3600 * 1000) > now_ms);
    used.used.push((nonce, token.expires_at_ms));
    let json = serde_json::to_vec_pretty(&used).map_err(|e| IsolateError::Corrupt {
        path: path.clone(),
        detail: e.to_string(),
    })?;
    write_atomic(&path, &json, 0o600).map_err(IsolateError::from)?;
    release(state_dir, nft)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::respond::isolate::plan::example_plan as plan;
    use crate::respond::isolate::state::IsolationState;
    use ring::rand::SystemRandom;
    use ward_protocol::{BreakGlassError as TokenError, Id128, SignatureError, SigningKey};

    const NOW: u64 = 1_800_000_000_000;
    const DAY: u64 = 24 * 3600 * 1000;

    /// A stand-in for `nft -f -` without root: `sort -f -` (ignore case, read
    /// stdin) drains the ruleset and exits 0. An existing binary, so no freshly
    /// written executable races with other tests' forks (ETXTBSY).
    fn fake_nft() -> Nft {
        Nft::with_program("sort")
    }

    /// The token's own checks (device, expiry, validity cap, format) are the
    /// protocol's and tested there; here: a refused token changes nothing, a valid
    /// one releases once.
    #[test]
    fn break_glass_works_once_and_refusals_leave_the_device_isolated() {
        let rng = SystemRandom::new();
        let key = SigningKey::generate(&rng).unwrap().0;
        let other_key = SigningKey::generate(&rng).unwrap().0;
        let dir = tempfile::tempdir().unwrap();
        let nft = fake_nft();
        let device = DeviceId(Id128([1; 16]));
        let pins = [key.public_key()];
        IsolationState {
            isolated: true,
            plan: plan(),
            applied_at_ms: NOW - DAY,
            command_id: None,
        }
        .store(dir.path())
        .unwrap();
        let release =
            |text: &str, dev: DeviceId, now: u64| break_glass_release_with(dir.path(), &nft, text, dev, &pins, now);

        let token = BreakGlassToken::new(device, NOW + 3 * DAY, [9; 16]).sign(&key).unwrap();
        assert!(matches!(
            release(&token, DeviceId(Id128([2; 16])), NOW),
            Err(BreakGlassError::Token(TokenError::WrongDevice { .. }))
        ));
        let foreign = BreakGlassToken::new(device, NOW + DAY, [8; 16])
            .sign(&other_key)
            .unwrap();
        assert!(matches!(
            release(&foreign, device, NOW),
            Err(BreakGlassError::Token(TokenError::Signature(
                SignatureError::UnknownKey
            )))
        ));
        let mut tampered = token.clone().into_bytes();
        let mid = tampered.len() / 2;
        tampered[mid] = if tampered[mid] == b'A' { b'B' } else { b'A' };
        assert!(release(std::str::from_utf8(&tampered).unwrap(), device, NOW).is_err());
        assert!(
            !dir.path().join(BREAK_GLASS_USED_FILE).exists(),
            "no nonce spent on a refusal"
        );

        // Refusals left the device isolated.
        assert!(IsolationState::load(dir.path()).unwrap().unwrap().isolated);
        release(&token, device, NOW).unwrap();
        assert!(!IsolationState::load(dir.path()).unwrap().unwrap().isolated);
        assert!(matches!(release(&token, device, NOW + 1), Err(BreakGlassError::Reused)));
    }
}
