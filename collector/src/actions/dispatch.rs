//! Turning decisions into commands on the wire, and results back into statuses.
//!
//! On the approval that completes an action, the writer thread assigns the
//! device's next command sequence number, builds the [`ward_protocol::Command`],
//! signs it with the collector's command key and commits it as dispatched (with
//! its audit entry). Only then is it pushed ([`super::delivery`]): straight onto
//! the device's open session if there is one, otherwise when its next session
//! starts. Nothing polls on this path.
//!
//! Cancelling a dispatched command is allowed only while it provably never left
//! the collector ([`Deliveries::cancellable`](super::delivery::Deliveries::cancellable)); the check and the cancellation
//! happen under the device's delivery lock, so a reconnect cannot slip it onto the
//! wire in between.
//!
//! Results arrive signed by the device key: the signature is checked against the
//! key enrolled for the session's device before the payload is decoded, the
//! result must name that device and one of its dispatched commands (id and
//! sequence), and only then is it stored.

use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;
use tokio::sync::watch;
use tracing::{debug, info, warn};
use ward_protocol::{
    Action, Command, CommandId, CommandResult, DeviceId, PublicKey, SignatureError, SignatureKind, Signed, SigningKey,
};

use super::delivery::Deliveries;
use super::policy::Policy;
use super::transitions::{self, CancelError, DecideError, Decision, DecisionOutcome, ResultRecord, Rules};
use super::workflow::Actor;
use crate::ingest::Writer;
use crate::readpool::ReadPool;
use crate::store::prelude::*;
use crate::store::{ActionView, NewAction, StoreError, TargetRefusal};
use crate::util::now_ms;

/// Largest attachment (investigation package) stored with a result. An agent
/// frame is at most [`ward_protocol::codec::MAX_AGENT_FRAME`] anyway.
pub const MAX_ATTACHMENT_BYTES: usize = ward_protocol::codec::MAX_AGENT_FRAME as usize;
/// How often the expiry task looks for actions past their deadline.
pub const EXPIRY_CHECK: Duration = Duration::from_secs(1);

#[derive(Debug, Error)]
pub enum DispatchError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("collector is shutting down")]
    Stopped,
    #[error("cannot create an id: {0}")]
    Random(String),
}

/// Why a command result from a device was refused before it was stored.
#[derive(Debug, Error)]
pub enum ResultRefusal {
    #[error("command result signature: {0}")]
    Signature(#[from] SignatureError),
    #[error("command result names device {0}, not the connection's")]
    WrongDevice(DeviceId),
}

/// The approval workflow's entry points for the API.
pub struct Dispatcher {
    pub(super) writer: Writer,
    pub(super) reads: ReadPool,
    pub(super) deliveries: Arc<Deliveries>,
    pub(super) key: Arc<SigningKey>,
    pub(super) policy: Arc<Policy>,
}

impl std::fmt::Debug for Dispatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dispatcher")
            .field("key", &self.key.public_key().key_id())
            .finish_non_exhaustive()
    }
}

impl Dispatcher {
    pub fn new(
        writer: Writer,
        reads: ReadPool,
        deliveries: Arc<Deliveries>,
        key: SigningKey,
        policy: Policy,
    ) -> Dispatcher {
        Dispatcher {
            writer,
            reads,
            deliveries,
            key: Arc::new(key),
            policy: Arc::new(policy),
        }
    }

    /// The permission table in force.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// Stores a proposal. Roles are checked by the caller ([`super::workflow::may_propose`]).
    pub async fn propose(
        &self,
        actor: &Actor,
        device: DeviceId,
        action: Action,
        reason: String,
        links: Links,
    ) -> Result<Result<ActionView, TargetRefusal>, DispatchError> {
        let now = now_ms();
        let id = CommandId::generate(now, &ring::rand::SystemRandom::new())
            .map_err(|e| DispatchError::Random(format!("{e:?}")))?;
        let new = NewAction {
            id,
            device_id: device,
            action,
            reason,
            requested_by: actor.name.clone(),
            now_ms: now,
            undo_of: links.undo_of,
            expires_at_ms: now.saturating_add(self.policy.pending_ttl_ms),
            incident_id: links.incident_id,
        };
        let stored = self
            .writer
            .run(move |s| s.create_action(&new))
            .await
            .map_err(|_| DispatchError::Stopped)??;
        if let Ok(v) = &stored {
            info!(action = %v.id, device = %v.device_id, kind = %v.kind, by = %v.requested_by, "action proposed");
        }
        Ok(stored)
    }

    /// Approves or rejects; a completed approval is signed, stored and pushed to
    /// the device before this returns.
    pub async fn decide(
        &self,
        id: String,
        actor: Actor,
        decision: Decision,
        comment: String,
    ) -> Result<Result<(DecisionOutcome, bool), DecideError>, DispatchError> {
        let key = Arc::clone(&self.key);
        let policy = Arc::clone(&self.policy);
        let sign = move |c: &Command| key.sign_value(SignatureKind::Command, c).map_err(|e| e.to_string());
        let outcome = self
            .writer
            .run(move |s| {
                let rules = Rules {
                    policy: &policy,
                    sign: &sign,
                };
                transitions::decide(s, &id, &actor, decision, &comment, now_ms(), rules)
            })
            .await
            .map_err(|_| DispatchError::Stopped)??;
        let outcome = match outcome {
            Ok(o) => o,
            Err(e) => return Ok(Err(e)),
        };
        let mut pushed = false;
        if let Some((device, seq)) = outcome.dispatched {
            info!(action = %outcome.view.id, %device, seq, "command dispatched");
            pushed = self.deliveries.push(device).await >= 1;
        }
        Ok(Ok((outcome, pushed)))
    }

    /// Cancels an action for `actor`: any time before dispatch, and after
    /// dispatch only if the command never left the collector (see the module doc).
    pub async fn cancel(
        &self,
        id: String,
        actor: Actor,
        comment: String,
    ) -> Result<Result<ActionView, CancelError>, DispatchError> {
        let lookup = id.clone();
        let Some(view) = self
            .reads
            .run(move |s| s.get_action(&lookup))
            .await
            .map_err(|_| DispatchError::Stopped)??
        else {
            return Ok(Err(CancelError::NotFound));
        };
        let device: Option<DeviceId> = view.device_id.parse().ok();
        // Hold the device's delivery lock through the cancellation so nothing is pushed meanwhile.
        let hold = match device {
            Some(d) => Some(self.deliveries.hold(d).await),
            None => None,
        };
        let undelivered = self.deliveries.cancellable(hold.as_ref(), view.issued_at_ms);
        let policy = Arc::clone(&self.policy);
        let cancelled = self
            .writer
            .run(move |s| transitions::cancel(s, &id, &actor, &comment, now_ms(), &policy, &undelivered))
            .await
            .map_err(|_| DispatchError::Stopped)??;
        drop(hold);
        if let Ok(v) = &cancelled {
            info!(action = %v.id, device = %v.device_id, by = ?v.cancelled_by, "action cancelled");
        }
        Ok(cancelled)
    }
}

/// What a proposal is linked to.
#[derive(Debug, Clone, Default)]
pub struct Links {
    /// The action it undoes.
    pub undo_of: Option<String>,
    /// The incident it belongs to.
    pub incident_id: Option<String>,
}

// ---- results ----

/// Verifies a device's signed result with its enrolled key, then stores it.
pub async fn record_result(
    writer: &Writer,
    device: DeviceId,
    key: &PublicKey,
    signed: &Signed,
    audit: bool,
) -> Result<Result<ResultRecord, ResultRefusal>, DispatchError> {
    let refused = |why: ResultRefusal| async move {
        let text = why.to_string();
        if audit {
            let _ = writer
                .run(move |s| s.audit_refused_result(device, &text, now_ms()))
                .await;
        }
        Ok(Err(why))
    };
    let result: CommandResult = match signed.open(SignatureKind::CommandResult, key) {
        Ok(r) => r,
        Err(e) => return refused(e.into()).await,
    };
    if result.device_id != device {
        return refused(ResultRefusal::WrongDevice(result.device_id)).await;
    }
    let record = writer
        .run(move |s| transitions::record_result(s, device, &result, MAX_ATTACHMENT_BYTES, audit, now_ms()))
        .await
        .map_err(|_| DispatchError::Stopped)??;
    match &record {
        ResultRecord::Recorded { id, status } => info!(%device, action = %id, %status, "command result stored"),
        ResultRecord::Unknown(why) => {
            warn!(%device, why = %crate::util::clip_device_text(why), "command result for no dispatched command")
        }
        ResultRecord::Ignored { id, status } => {
            debug!(%device, action = %id, %status, "command result for an ended action ignored");
        }
    }
    Ok(Ok(record))
}

// ---- expiry ----

/// Marks actions expired when their deadline passes, until `shutdown` flips.
/// Each tick is one cheap read; the writer is used only when something is due.
pub async fn run_expiry(writer: Writer, reads: ReadPool, mut shutdown: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(EXPIRY_CHECK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
        }
        let due = matches!(reads.run(transitions::next_expiry).await, Ok(Ok(Some(t))) if t <= now_ms());
        if !due {
            continue;
        }
        match writer.run(|s| transitions::expire(s, now_ms())).await {
            Ok(Ok(ids)) if !ids.is_empty() => info!(count = ids.len(), ids = ?ids, "actions expired"),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => warn!(error = %e, "cannot expire actions"),
            Err(_) => return,
        }
    }
}
