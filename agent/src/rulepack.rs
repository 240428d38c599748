//! Rule packs pushed by the collector: verified with the pinned command keys,
//! compiled before they replace the running rules, and kept on disk as the last
//! known good pack so a restart runs the same rules.

use std::path::Path;

use thiserror::Error;
use ward_protocol::{PublicKey, RuleFile, RulePack, SignatureKind, Signed};

use crate::identity::write_atomic;

const PACK_FILE: &str = "rulepack.signed";

#[derive(Debug, Error)]
pub enum PackError {
    #[error("rule pack signature: {0}")]
    Signature(#[from] ward_protocol::SignatureError),
    #[error("rule pack {got} is not newer than the running pack {running}")]
    NotNewer { got: u64, running: u64 },
    #[error("cannot store the rule pack: {0}")]
    Store(String),
}

/// Verifies a signed pack against the pinned keys and checks it is newer.
pub fn verify(signed: &Signed, keys: &[PublicKey], running: u64) -> Result<RulePack, PackError> {
    let pack: RulePack = signed.open_with(SignatureKind::RulePack, keys)?;
    if pack.version <= running {
        return Err(PackError::NotNewer {
            got: pack.version,
            running,
        });
    }
    Ok(pack)
}

/// Keeps the signed pack as the last known good one.
pub fn save(state_dir: &Path, signed: &Signed) -> Result<(), PackError> {
    let bytes = postcard::to_stdvec(signed).map_err(|e| PackError::Store(e.to_string()))?;
    write_atomic(&state_dir.join(PACK_FILE), &bytes, 0o600).map_err(|e| PackError::Store(e.to_string()))
}

/// The stored pack, verified again (a file changed on disk is not trusted).
pub fn load(state_dir: &Path, keys: &[PublicKey]) -> Option<RulePack> {
    let bytes = std::fs::read(state_dir.join(PACK_FILE)).ok()?;
    let signed: Signed = ward_protocol::codec::decode_body(&bytes).ok()?;
    verify(&signed, keys, 0).ok()
}

/// Rules from the agent's own rules directory (missing directory: none).
pub fn local_rules(dir: &Path) -> (Vec<RuleFile>, Vec<String>) {
    if !dir.exists() {
        return (Vec::new(), Vec::new());
    }
    match ward_detect::load_dir(dir) {
        Ok((files, errors)) => (files, errors.iter().map(ToString::to_string).collect()),
        Err(e) => (Vec::new(), vec![e.to_string()]),
    }
}

/// The rule files the agent runs: the default pack (built-in and vetted SigmaHQ
/// rules, as `choice` says), the local rules dir, then the pushed pack's rules.
pub fn compose(choice: &ward_detect::PackChoice, local: Vec<RuleFile>, pushed: &[RuleFile]) -> Vec<RuleFile> {
    let mut files = ward_detect::default_rule_files(choice);
    files.extend(local);
    files.extend(pushed.iter().cloned());
    files
}
