//! Delivery of stored, signed commands to devices' sessions, ordered and not
//! duplicated per connection.
//!
//! A small per-device state (which connection, highest sequence pushed on it) is
//! updated under a per-device lock by both the session start and the approval
//! path, and each pushes every stored, unexpired command above that mark in
//! sequence order. Without it, an approval racing a reconnect could send a command
//! twice (the agent would refuse the copy as a replay) or out of order.
//!
//! [`Deliveries`] is one value made by the server and handed to the transport (which
//! reports sessions starting and ending) and to the dispatcher (which pushes after
//! an approval). It reaches sessions only through [`Outbound`], which the transport
//! implements: this module knows no connection type.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedMutexGuard, mpsc};
use tracing::{debug, warn};
use ward_protocol::{CollectorMessage, DeviceId, Signed};

use crate::readpool::ReadPool;
use crate::store::prelude::*;
use crate::util::now_ms;

/// Where a message for a device's live session goes.
pub trait Outbound: Send + Sync {
    /// Queues `msg` for the device's session; false if it is not connected or its
    /// queue is full (the device gets it on its next session start).
    fn send(&self, device: &DeviceId, msg: CollectorMessage) -> bool;
}

/// What has been pushed to a device's current connection.
#[derive(Debug, Clone, Copy)]
struct Live {
    conn: usize,
    /// False while the session is starting: the session start delivers then.
    ready: bool,
    /// Highest command sequence number pushed on this connection.
    high: u64,
}

/// A device's delivery state in this process.
#[derive(Debug, Default)]
pub struct SlotState {
    /// The current connection, if any.
    live: Option<Live>,
    /// Highest command sequence number ever handed to any connection of this
    /// device (or reported accepted by it) in this process.
    pushed_high: u64,
}

type Slot = Arc<tokio::sync::Mutex<SlotState>>;

/// The device's delivery lock, held: nothing is pushed to it meanwhile.
pub type Hold = OwnedMutexGuard<SlotState>;

/// Per-device delivery state, shared by sessions and the API in this process.
pub struct Deliveries {
    /// Slots are kept for the life of the process (a few dozen bytes per device) so
    /// the lock a caller holds is always the device's one lock.
    slots: Mutex<HashMap<DeviceId, Slot>>,
    /// When this process started: commands issued earlier may have been pushed by
    /// a previous process.
    started_ms: u64,
    reads: ReadPool,
    outbound: Arc<dyn Outbound>,
}

impl std::fmt::Debug for Deliveries {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deliveries")
            .field("started_ms", &self.started_ms)
            .finish_non_exhaustive()
    }
}

impl Deliveries {
    /// `started_ms`: when this process started (before any session could exist).
    pub fn new(reads: ReadPool, outbound: Arc<dyn Outbound>, started_ms: u64) -> Deliveries {
        Deliveries {
            slots: Mutex::new(HashMap::new()),
            started_ms,
            reads,
            outbound,
        }
    }

    fn slot(&self, device: DeviceId) -> Slot {
        // A poisoned map only means another thread panicked mid-insert; the map itself is intact.
        let mut map = self.slots.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        Arc::clone(map.entry(device).or_default())
    }

    async fn pending(&self, device: DeviceId, after: u64) -> Vec<(u64, Signed)> {
        match self
            .reads
            .run(move |s| s.pending_commands(device, after, now_ms()))
            .await
        {
            Ok(Ok(p)) => p,
            Ok(Err(e)) | Err(e) => {
                warn!(%device, error = %e, "cannot read pending commands");
                Vec::new()
            }
        }
    }

    /// A session of `device` on connection `conn` is starting: the approval path
    /// holds back until [`Deliveries::session_ready`] has delivered what was pending.
    pub async fn session_starting(&self, device: DeviceId, conn: usize) {
        self.slot(device).lock().await.live = Some(Live {
            conn,
            ready: false,
            high: 0,
        });
    }

    /// Delivers the device's pending commands above `last_command_seq` (what the
    /// agent says it already accepted) on the new session, in sequence order.
    pub async fn session_ready(
        &self,
        device: DeviceId,
        conn: usize,
        last_command_seq: u64,
        out: &mpsc::Sender<Box<CollectorMessage>>,
    ) {
        let slot = self.slot(device);
        let mut state = slot.lock().await;
        if state.live.is_some_and(|d| d.conn != conn) {
            return; // A newer connection took over.
        }
        let mut high = last_command_seq;
        state.pushed_high = state.pushed_high.max(last_command_seq);
        for (seq, signed) in self.pending(device, last_command_seq).await {
            // Counted as pushed before the attempt: a failed send may still have left.
            state.pushed_high = state.pushed_high.max(seq);
            if out.send(Box::new(CollectorMessage::Command(signed))).await.is_err() {
                break;
            }
            debug!(%device, seq, "pending command delivered on session start");
            high = seq;
        }
        state.live = Some(Live {
            conn,
            ready: true,
            high,
        });
    }

    /// The session on `conn` ended.
    pub async fn session_ended(&self, device: DeviceId, conn: usize) {
        let slot = self.slot(device);
        let mut state = slot.lock().await;
        if state.live.is_some_and(|d| d.conn == conn) {
            state.live = None;
        }
    }

    /// Pushes the device's stored commands not yet pushed on its live session;
    /// returns how many were queued (0 if the device is offline: its next session
    /// start delivers them).
    pub async fn push(&self, device: DeviceId) -> usize {
        let slot = self.slot(device);
        let mut state = slot.lock().await;
        let Some(mut d) = state.live else { return 0 };
        if !d.ready {
            return 0;
        }
        let mut sent = 0;
        for (seq, signed) in self.pending(device, d.high).await {
            state.pushed_high = state.pushed_high.max(seq);
            if !self.outbound.send(&device, CollectorMessage::Command(signed)) {
                break;
            }
            d.high = seq;
            sent += 1;
        }
        state.live = Some(d);
        sent
    }

    /// Takes the device's delivery lock until the returned value is dropped.
    pub async fn hold(&self, device: DeviceId) -> Hold {
        self.slot(device).lock_owned().await
    }

    /// Whether a dispatched command of the held device, issued at `issued_at_ms`,
    /// provably never left the collector, as a test of its sequence number: it was
    /// issued by this process (no earlier process pushed it) and no connection of
    /// this process was ever handed that number. Without a hold (a device id that
    /// does not parse) it never is.
    pub fn cancellable(&self, hold: Option<&Hold>, issued_at_ms: Option<i64>) -> impl Fn(i64) -> bool + Send + 'static {
        let pushed_high = hold.map_or(u64::MAX, |h| h.pushed_high);
        let started = i64::try_from(self.started_ms).unwrap_or(i64::MAX);
        let issued_here = issued_at_ms.is_some_and(|t| t > started);
        move |seq: i64| issued_here && u64::try_from(seq).is_ok_and(|seq| seq > pushed_high)
    }
}
