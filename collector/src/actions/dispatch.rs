//! Turning decisions into commands on the wire, and results back into statuses.
//!
//! On the approval that completes an action, the writer thread assigns the
//! device's next command sequence number, builds the [`ward_protocol::Command`],
//! signs it with the collector's command key and commits it as dispatched (with
//! its audit entry). Only then is it pushed: straight onto the device's open
//! session if there is one, otherwise when its next session starts. Nothing
//! polls on this path.
//!
//! Delivery is ordered and not duplicated per connection: a small per-device
//! state (which connection, highest sequence pushed on it) is updated under a
//! per-device lock by both the session start and the approval path, and each
//! pushes every stored, unexpired command above that mark in sequence order.
//! Without it, an approval racing a reconnect could send a command twice (the
//! agent would refuse the copy as a replay) or out of order.
//!
//! Cancelling a dispatched command is allowed only while it provably never left
//! the collector: it was issued by this process (so no earlier process pushed it)
//! and no connection of this process was ever handed its sequence number. The
//! check and the cancellation happen under the device's delivery lock, so a
//! reconnect cannot slip it onto the wire in between.
//!
//! Results arrive signed by the device key: the signature is checked against the
//! key enrolled for the session's device before the payload is decoded, the
//! result must name that device and one of its dispatched commands (id and
//! sequence), and only then is it stored.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use thiserror::Error;
use tokio::sync::{mpsc, watch};
use tracing::{debug, info, warn};
use ward_protocol::{
    Action, CollectorMessage, Command, CommandId, CommandResult, DeviceId, PublicKey, SignatureError, SignatureKind,
    Signed, SigningKey,
};

use super::policy::Policy;
use super::workflow::Actor;
use crate::ingest::Writer;
use crate::readpool::ReadPool;
use crate::store::{
    ActionView, CancelError, DecideError, Decision, DecisionOutcome, NewAction, ResultRecord, Rules, StoreError,
    TargetRefusal,
};
use crate::transport::Registry;
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
    pub(super) registry: Arc<Registry>,
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
        registry: Arc<Registry>,
        key: SigningKey,
        policy: Policy,
    ) -> Dispatcher {
        LazyLock::force(&PROCESS_START_MS);
        Dispatcher {
            writer,
            reads,
            registry,
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
                s.decide_action(&id, &actor, decision, &comment, now_ms(), rules)
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
            pushed = push(&self.reads, &self.registry, device).await >= 1;
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
        let slot = device.map(slot);
        let guard = match &slot {
            Some(s) => Some(s.lock().await),
            None => None,
        };
        let pushed_high = guard.as_ref().map_or(u64::MAX, |g| g.pushed_high);
        let issued_here = view.issued_at_ms.is_some_and(|t| t > i64_of(*PROCESS_START_MS));
        let undelivered = move |seq: i64| issued_here && u64::try_from(seq).is_ok_and(|seq| seq > pushed_high);
        let policy = Arc::clone(&self.policy);
        let cancelled = self
            .writer
            .run(move |s| s.cancel_action(&id, &actor, &comment, now_ms(), &policy, &undelivered))
            .await
            .map_err(|_| DispatchError::Stopped)??;
        drop(guard);
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

/// When this process started: commands issued earlier may have been pushed by a
/// previous process, so they are never cancelled after dispatch.
static PROCESS_START_MS: LazyLock<u64> = LazyLock::new(now_ms);

fn i64_of(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

// ---- delivery ----

/// What has been pushed to a device's current connection.
#[derive(Debug, Clone, Copy)]
struct Delivery {
    conn: usize,
    /// False while the session is starting: the session start delivers then.
    ready: bool,
    /// Highest command sequence number pushed on this connection.
    high: u64,
}

/// A device's delivery state in this process.
#[derive(Debug, Default)]
struct SlotState {
    /// The current connection, if any.
    live: Option<Delivery>,
    /// Highest command sequence number ever handed to any connection of this
    /// device (or reported accepted by it) in this process.
    pushed_high: u64,
}

type Slot = Arc<tokio::sync::Mutex<SlotState>>;

/// Per-device delivery state, shared by sessions and the API in this process.
/// Slots are kept for the life of the process (a few dozen bytes per device)
/// so the lock a caller holds is always the device's one lock.
static DELIVERY: LazyLock<Mutex<HashMap<DeviceId, Slot>>> = LazyLock::new(|| Mutex::new(HashMap::new()));

fn slot(device: DeviceId) -> Slot {
    // A poisoned map only means another thread panicked mid-insert; the map itself is intact.
    let mut map = DELIVERY.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    Arc::clone(map.entry(device).or_default())
}

async fn pending(reads: &ReadPool, device: DeviceId, after: u64) -> Vec<(u64, Signed)> {
    match reads.run(move |s| s.pending_commands(device, after, now_ms())).await {
        Ok(Ok(p)) => p,
        Ok(Err(e)) | Err(e) => {
            warn!(%device, error = %e, "cannot read pending commands");
            Vec::new()
        }
    }
}

/// A session of `device` on connection `conn` is starting: the approval path
/// holds back until [`session_ready`] has delivered what was pending.
pub async fn session_starting(device: DeviceId, conn: usize) {
    slot(device).lock().await.live = Some(Delivery {
        conn,
        ready: false,
        high: 0,
    });
}

/// Delivers the device's pending commands above `last_command_seq` (what the
/// agent says it already accepted) on the new session, in sequence order.
pub async fn session_ready(
    reads: &ReadPool,
    device: DeviceId,
    conn: usize,
    last_command_seq: u64,
    out: &mpsc::Sender<CollectorMessage>,
) {
    let slot = slot(device);
    let mut state = slot.lock().await;
    if state.live.is_some_and(|d| d.conn != conn) {
        return; // A newer connection took over.
    }
    let mut high = last_command_seq;
    state.pushed_high = state.pushed_high.max(last_command_seq);
    for (seq, signed) in pending(reads, device, last_command_seq).await {
        // Counted as pushed before the attempt: a failed send may still have left.
        state.pushed_high = state.pushed_high.max(seq);
        if out.send(CollectorMessage::Command(signed)).await.is_err() {
            break;
        }
        debug!(%device, seq, "pending command delivered on session start");
        high = seq;
    }
    state.live = Some(Delivery {
        conn,
        ready: true,
        high,
    });
}

/// The session on `conn` ended.
pub async fn session_ended(device: DeviceId, conn: usize) {
    let slot = slot(device);
    let mut state = slot.lock().await;
    if state.live.is_some_and(|d| d.conn == conn) {
        state.live = None;
    }
}

/// Pushes the device's stored commands not yet pushed on its live session;
/// returns how many were queued (0 if the device is offline: its next session
/// start delivers them).
pub async fn push(reads: &ReadPool, registry: &Registry, device: DeviceId) -> usize {
    let slot = slot(device);
    let mut state = slot.lock().await;
    let Some(mut d) = state.live else { return 0 };
    if !d.ready {
        return 0;
    }
    let mut sent = 0;
    for (seq, signed) in pending(reads, device, d.high).await {
        state.pushed_high = state.pushed_high.max(seq);
        if !registry.send(&device, CollectorMessage::Command(signed)) {
            break;
        }
        d.high = seq;
        sent += 1;
    }
    state.live = Some(d);
    sent
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
        .run(move |s| s.record_command_result(device, &result, MAX_ATTACHMENT_BYTES, audit, now_ms()))
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
        let due = matches!(reads.run(|s| s.next_action_expiry()).await, Ok(Ok(Some(t))) if t <= now_ms());
        if !due {
            continue;
        }
        match writer.run(|s| s.expire_actions(now_ms())).await {
            Ok(Ok(ids)) if !ids.is_empty() => info!(count = ids.len(), ids = ?ids, "actions expired"),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => warn!(error = %e, "cannot expire actions"),
            Err(_) => return,
        }
    }
}
