//! Isolate, restore, release: the steps that change the kernel's table and the
//! state file together, in the order that keeps them consistent across crashes.

use std::fmt;
use std::future::Future;
use std::io::ErrorKind;
use std::path::Path;
use std::time::Instant;

use ward_protocol::CommandId;

use super::guard::Guard;
use super::nft::{Nft, NftError};
use super::plan::{IsolationPlan, render};
use super::selftest::{BlockedProbe, SelfTest, SelfTestReport, probe_blocked};
use super::state::{IsolateError, IsolationState};

/// What [`isolate`] returns on success.
#[derive(Debug)]
pub struct Isolated {
    pub guard: Guard,
    pub report: SelfTestReport,
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, IsolateError> + Send + 'static,
) -> Result<T, IsolateError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| IsolateError::Task(e.to_string()))?
}

/// Isolates the device: validate, `nft -c`, apply in one transaction, self-test,
/// then persist. `probe_collector` must perform a *fresh authenticated*
/// round-trip with the collector (not reuse a cached answer).
///
/// If the probe fails or times out, the previous state is restored (the previous
/// isolation re-applied, or the table deleted) and
/// [`IsolateError::RolledBack`] says why. If the blocked address answers,
/// [`IsolateError::NotEnforced`] is returned with the table kept in place and
/// the state persisted ([`restore`] gives its guard).
///
/// The caller serialises isolate, release and the guard's reassert (one task owns
/// them): a guard for the previous plan reasserted while this runs would put the
/// previous ruleset back. Replace the old guard with the returned one.
pub async fn isolate<F, Fut, E>(
    state_dir: &Path,
    nft: &Nft,
    plan: IsolationPlan,
    command_id: Option<CommandId>,
    now_ms: u64,
    self_test: &SelfTest,
    probe_collector: F,
) -> Result<Isolated, IsolateError>
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<(), E>>,
    E: fmt::Display,
{
    plan.validate()?;
    let previous = IsolationState::load(state_dir)?.filter(|s| s.isolated);
    let ruleset = render(&plan);
    let fingerprint = {
        let (nft, ruleset) = (nft.clone(), ruleset.clone());
        blocking(move || {
            nft.check(&ruleset)?;
            Ok(nft.apply(&ruleset)?)
        })
        .await?
    };

    let started = Instant::now();
    let probe = tokio::time::timeout(self_test.collector_timeout, probe_collector()).await;
    let failure = match probe {
        Ok(Ok(())) => None,
        Ok(Err(e)) => Some(format!("collector unreachable: {e}")),
        Err(_) => Some(format!(
            "collector unreachable: no round-trip within {:?}",
            self_test.collector_timeout
        )),
    };
    if let Some(reason) = failure {
        let nft = nft.clone();
        let rollback = blocking(move || {
            match previous {
                Some(prev) => {
                    nft.apply(&render(&prev.plan))?;
                }
                None => nft.release()?,
            }
            Ok(())
        })
        .await;
        return Err(match rollback {
            Ok(()) => IsolateError::RolledBack { reason },
            Err(e) => IsolateError::RollbackFailed {
                reason,
                rollback: e.to_string(),
            },
        });
    }
    let collector_round_trip = started.elapsed();

    let blocked = match self_test.blocked {
        Some(addr) => probe_blocked(addr, self_test.blocked_timeout).await,
        None => BlockedProbe::Skipped,
    };
    let state = IsolationState {
        isolated: true,
        plan,
        applied_at_ms: now_ms,
        command_id,
    };
    state.store(state_dir)?;
    if let (Some(addr), BlockedProbe::Reachable) = (self_test.blocked, &blocked) {
        return Err(IsolateError::NotEnforced(addr));
    }
    Ok(Isolated {
        guard: Guard::new(nft.clone(), state_dir.to_path_buf(), ruleset, fingerprint),
        report: SelfTestReport {
            collector_round_trip,
            blocked,
        },
    })
}

/// On agent start: makes the kernel match the state file. Isolated: re-applies
/// (atomic, so an existing table is simply replaced) and returns the guard. Not
/// isolated: removes a table left behind (e.g. a crash during a self-test).
pub fn restore(state_dir: &Path) -> Result<Option<Guard>, IsolateError> {
    restore_with(state_dir, &Nft::new())
}

/// [`restore`] with a given `nft`.
pub fn restore_with(state_dir: &Path, nft: &Nft) -> Result<Option<Guard>, IsolateError> {
    match IsolationState::load(state_dir)? {
        Some(state) if state.isolated => {
            let ruleset = render(&state.plan);
            let fingerprint = nft.apply(&ruleset)?;
            Ok(Some(Guard::new(
                nft.clone(),
                state_dir.to_path_buf(),
                ruleset,
                fingerprint,
            )))
        }
        _ => match nft.release() {
            Ok(()) => Ok(None),
            // Never isolated and no nft on this host: nothing can be left over.
            Err(NftError::Spawn { source, .. }) if source.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        },
    }
}

/// Releases isolation: records "not isolated" first (so a crash cannot bring the
/// table back on restart), then deletes exactly Ward's table.
pub fn release(state_dir: &Path, nft: &Nft) -> Result<(), IsolateError> {
    if let Some(mut state) = IsolationState::load(state_dir)?
        && state.isolated
    {
        state.isolated = false;
        state.store(state_dir)?;
    }
    nft.release()?;
    Ok(())
}
