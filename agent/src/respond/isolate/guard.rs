//! Keeps an applied isolation in force: [`Guard::reassert`], called every few
//! seconds, puts a missing or changed table back ([`Reassert::Tampered`], the caller
//! raises an alert) and stands down once the state file says released.

use std::path::PathBuf;

use super::nft::{Fingerprint, Nft, TableStatus};
use super::state::{IsolateError, IsolationState};

/// Result of one [`Guard::reassert`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reassert {
    Intact,
    /// The state file says released (e.g. a break-glass release run from the
    /// console by another process): nothing was touched; drop the guard.
    Released,
    /// The table was missing or changed and has been put back: raise an alert.
    Tampered(TableStatus),
}

/// Keeps an applied isolation in force: call [`Guard::reassert`] every few seconds.
#[derive(Debug, Clone)]
pub struct Guard {
    nft: Nft,
    state_dir: PathBuf,
    ruleset: String,
    fingerprint: Fingerprint,
}

impl Guard {
    pub fn new(nft: Nft, state_dir: PathBuf, ruleset: String, fingerprint: Fingerprint) -> Guard {
        Guard {
            nft,
            state_dir,
            ruleset,
            fingerprint,
        }
    }

    pub fn ruleset(&self) -> &str {
        &self.ruleset
    }

    pub fn fingerprint(&self) -> &Fingerprint {
        &self.fingerprint
    }

    /// Re-applies the ruleset if the table is missing or differs from what was
    /// applied, unless the state file says the device was released meanwhile.
    /// Blocking (reads the state file, runs `nft` two or three times: milliseconds).
    pub fn reassert(&mut self) -> Result<Reassert, IsolateError> {
        if !IsolationState::load(&self.state_dir)?.is_some_and(|s| s.isolated) {
            return Ok(Reassert::Released);
        }
        reassert(&self.nft, &self.ruleset, &mut self.fingerprint)
    }
}

/// The check behind [`Guard::reassert`]: updates `fingerprint` after a re-apply.
pub fn reassert(nft: &Nft, ruleset: &str, fingerprint: &mut Fingerprint) -> Result<Reassert, IsolateError> {
    match nft.status(fingerprint)? {
        TableStatus::Intact => Ok(Reassert::Intact),
        other => {
            *fingerprint = nft.apply(ruleset)?;
            Ok(Reassert::Tampered(other))
        }
    }
}
