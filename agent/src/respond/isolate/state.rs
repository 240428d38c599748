//! The persisted isolation state (`isolation.json` in the state dir; no file means
//! not isolated) and [`IsolateError`], the error of every isolation step.

use std::fs;
use std::io::ErrorKind;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use thiserror::Error;
use ward_protocol::CommandId;

use super::nft::NftError;
use super::plan::{IsolationPlan, PlanError};
use crate::identity::{IdentityError, write_atomic};

/// The isolation state file in the agent's state dir.
pub const STATE_FILE: &str = "isolation.json";

/// What `isolation.json` holds. No file means not isolated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IsolationState {
    pub isolated: bool,
    pub plan: IsolationPlan,
    pub applied_at_ms: u64,
    pub command_id: Option<CommandId>,
}

impl IsolationState {
    /// Reads the state file; `None` when it does not exist.
    pub fn load(state_dir: &Path) -> Result<Option<IsolationState>, IsolateError> {
        let path = state_dir.join(STATE_FILE);
        match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| IsolateError::Corrupt {
                    path,
                    detail: e.to_string(),
                }),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(source) => Err(IsolateError::Io { path, source }),
        }
    }

    /// Writes the state file atomically (mode 0600).
    pub fn store(&self, state_dir: &Path) -> Result<(), IsolateError> {
        let path = state_dir.join(STATE_FILE);
        let json = serde_json::to_vec_pretty(self).map_err(|e| IsolateError::Corrupt {
            path: path.clone(),
            detail: e.to_string(),
        })?;
        write_atomic(&path, &json, 0o600)?;
        Ok(())
    }

    /// What the heartbeat reports.
    pub fn heartbeat_state(state: Option<&IsolationState>) -> ward_protocol::IsolationState {
        match state {
            Some(s) if s.isolated => ward_protocol::IsolationState::Isolated,
            _ => ward_protocol::IsolationState::None,
        }
    }
}

#[derive(Debug, Error)]
pub enum IsolateError {
    #[error("invalid isolation plan: {0}")]
    Plan(#[from] PlanError),
    #[error(transparent)]
    Nft(#[from] NftError),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path} is corrupt: {detail}")]
    Corrupt { path: PathBuf, detail: String },
    #[error(transparent)]
    State(#[from] IdentityError),
    /// The dead-man switch fired: the previous state is back in force.
    #[error("isolation rolled back: {reason}")]
    RolledBack { reason: String },
    /// The self-test failed and so did the rollback: the table may still be in place.
    #[error("isolation self-test failed ({reason}) and the rollback failed too: {rollback}")]
    RollbackFailed { reason: String, rollback: String },
    /// A destination that must be blocked answered. The table stays in place
    /// (failing closed) and the state is persisted; the caller reports the failure.
    #[error("isolation is not enforced: blocked address {0} answered")]
    NotEnforced(SocketAddr),
    #[error("a blocking task failed: {0}")]
    Task(String),
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::respond::isolate::plan::example_plan as plan;
    use ward_protocol::Id128;

    #[test]
    fn state_round_trips_and_missing_means_not_isolated() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(IsolationState::load(dir.path()).unwrap(), None);
        assert_eq!(
            IsolationState::heartbeat_state(None),
            ward_protocol::IsolationState::None
        );
        let state = IsolationState {
            isolated: true,
            plan: plan(),
            applied_at_ms: 1_700_000_000_000,
            command_id: Some(CommandId(Id128([7; 16]))),
        };
        state.store(dir.path()).unwrap();
        let back = IsolationState::load(dir.path()).unwrap().unwrap();
        assert_eq!(back, state);
        assert_eq!(
            IsolationState::heartbeat_state(Some(&back)),
            ward_protocol::IsolationState::Isolated
        );
        fs::write(dir.path().join(STATE_FILE), b"{not json").unwrap();
        assert!(matches!(
            IsolationState::load(dir.path()),
            Err(IsolateError::Corrupt { .. })
        ));
    }
}
