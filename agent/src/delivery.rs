//! Delivery: keeps a session with the collector open (reconnecting with jittered
//! back-off), sends outbox batches one at a time and removes them only when their
//! acknowledgement arrives, sends heartbeats and drop reports, and takes rule packs.
//! A batch not acknowledged in time means the connection is dead: its lease is
//! released and everything unacknowledged is sent again on the next session.
//!
//! When each of those goes, and what ends a session, is
//! [`ward_protocol::session::AgentSession`]'s to say; this module drives it with the
//! outbox, the keys, the rule packs and the executor, over [`crate::link::Live`].

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ring::rand::SecureRandom;
use tokio::sync::{mpsc, watch};
use tracing::{debug, info, warn};
use ward_protocol::message::Heartbeat;
use ward_protocol::session::agent::DropDelivery;
use ward_protocol::session::{AgentEvent, AgentSession};
use ward_protocol::{AgentHealth, AgentMessage, Inventory, IsolationState};

use crate::clock::now_ms;
use crate::config::Config;
use crate::identity::Identity;
use crate::keys::PinnedKeys;
use crate::link::{Clock, LinkError, Live, Session};
use crate::pipeline::Rules;
use crate::rulepack;
use crate::sensor::inventory;
use crate::shared::Shared;

pub struct Delivery {
    pub identity: Identity,
    /// The command keys accepted: rollovers change them, rule packs are checked with them.
    pub keys: PinnedKeys,
    pub config: Config,
    pub state_dir: PathBuf,
    pub shared: Arc<Shared>,
    pub rules_tx: mpsc::Sender<Rules>,
    pub rule_pack_version: u64,
    /// Verified-later commands go to the executor; its signed results come back.
    pub commands_tx: mpsc::Sender<ward_protocol::Signed>,
    pub results_rx: mpsc::Receiver<ward_protocol::Signed>,
    /// A result taken from the executor but not yet written to a session.
    pub pending_result: Option<ward_protocol::Signed>,
}

enum End {
    Shutdown,
    Lost(String),
}

impl Delivery {
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        let min = Duration::from_millis(self.config.link.reconnect_min_ms);
        let max = Duration::from_millis(self.config.link.reconnect_max_ms);
        let mut backoff = min;
        loop {
            let opened = tokio::select! {
                s = Session::open_with(&self.identity, self.rule_pack_version, crate::respond::executor::last_seq(&self.state_dir).unwrap_or(0), crate::link::timers(&self.config)) => s,
                _ = shutdown.changed() => return,
            };
            let reason = match opened {
                Ok(session) => {
                    backoff = min;
                    self.set_connected(true, None);
                    self.set_clock_skew(session.clock_skew_ms);
                    info!(collector = %self.identity.enrollment.collector_addr, "connected");
                    match self.session(session, &mut shutdown).await {
                        End::Shutdown => return,
                        End::Lost(reason) => reason,
                    }
                }
                Err(e) => {
                    if let LinkError::Closed(r) = &e
                        && r.contains("revoked")
                    {
                        warn!("this device was revoked by the collector");
                    }
                    e.to_string()
                }
            };
            warn!(%reason, retry_in_ms = backoff.as_millis() as u64, "collector link down");
            self.set_connected(false, Some(reason));
            if let Ok(mut outbox) = self.shared.outbox.lock() {
                outbox.release_leases();
            }
            let sleep = jitter(backoff);
            backoff = (backoff * 2).min(max);
            tokio::select! {
                _ = tokio::time::sleep(sleep) => {}
                _ = shutdown.changed() => return,
            }
        }
    }

    /// Records the device's clock skew; beyond what commands allow it is a warning:
    /// every command the collector sends would be refused as too old or too new.
    fn set_clock_skew(&self, skew_ms: i64) {
        let limit = self.config.response.clock_skew_ms;
        if skew_ms.unsigned_abs() > limit {
            warn!(
                skew_ms,
                limit_ms = limit,
                "this device's clock differs from the collector's by more than commands allow: fix the time (NTP)"
            );
        }
        if let Ok(mut s) = self.shared.status.lock() {
            s.clock_skew_ms = Some(skew_ms);
        }
    }

    fn set_connected(&self, connected: bool, error: Option<String>) {
        if let Ok(mut s) = self.shared.status.lock() {
            s.connected = connected;
            if error.is_some() || connected {
                s.last_error = error;
            }
        }
    }

    async fn session(&mut self, session: Session, shutdown: &mut watch::Receiver<bool>) -> End {
        let (mut live, mut machine, clock) = session.live();
        let end = self.exchange(&mut live, &mut machine, clock, shutdown).await;
        live.close();
        end
    }

    async fn exchange(
        &mut self,
        live: &mut Live,
        machine: &mut AgentSession,
        clock: Clock,
        shutdown: &mut watch::Receiver<bool>,
    ) -> End {
        let mut last_inventory: Option<Inventory> = None;
        // The board version this session's collector has (sensor states go when they
        // change, looked at whenever the loop wakes: at the latest every heartbeat).
        let mut sensors_sent: Option<u64> = None;
        let mut collector_reads_sensors = true;
        loop {
            if let Err(end) = self.drive(live, machine, &mut last_inventory).await {
                return end;
            }
            if collector_reads_sensors && sensors_sent != Some(self.shared.sensors.version()) {
                let (version, sensors) = self.shared.sensors.snapshot();
                if let Ok(sent) = machine.send_sensors(ward_protocol::SensorReport { sensors }) {
                    // A collector older than 1.5 never reads them: not offered again.
                    collector_reads_sensors = sent;
                    sensors_sent = Some(version);
                }
            }
            if let Some(result) = self.pending_result.take()
                && machine.send_result(result.clone()).is_err()
            {
                self.pending_result = Some(result);
            }
            if machine.batch_slot_free() {
                match self.next_batch() {
                    Ok(Some((epoch, batch_id, alerts))) => {
                        machine.set_peer_acks(live.peer_acks());
                        let _ = machine.send_batch(clock.now(), epoch, batch_id, alerts);
                    }
                    Ok(None) => {}
                    Err(e) => warn!(error = %e, "outbox read failed"),
                }
            }
            if let Some(bound) = machine.take_drops_due() {
                self.drop_report(machine, bound);
            }
            if let Err(end) = self.flush(live, machine).await {
                return end;
            }
            // An hour when nothing is due (the machine always has a heartbeat due).
            let deadline = clock.at(machine.poll_timeout().unwrap_or(clock.now() + 3_600_000));
            tokio::select! {
                msg = live.incoming.recv() => match msg {
                    Some(Ok(msg)) => machine.handle_message(clock.now(), msg),
                    Some(Err(e)) => return End::Lost(e.to_string()),
                    None => return End::Lost("reader stopped".into()),
                },
                _ = self.shared.new_alerts.notified(), if machine.batch_slot_free() => {}
                result = self.results_rx.recv() => {
                    // Sent at the top of the loop; kept there if the session dies first.
                    self.pending_result = result;
                }
                _ = tokio::time::sleep_until(deadline) => {
                    machine.set_peer_acks(live.peer_acks());
                    machine.handle_timeout(clock.now());
                }
                _ = shutdown.changed() => return End::Shutdown,
            }
        }
    }

    /// Does what the machine asks, in order, writing what it queues as it goes.
    async fn drive(
        &mut self,
        live: &mut Live,
        machine: &mut AgentSession,
        last_inventory: &mut Option<Inventory>,
    ) -> Result<(), End> {
        while let Some(event) = machine.poll_event() {
            match event {
                AgentEvent::Welcomed(_) => {}
                AgentEvent::Heartbeat { heartbeat, health } => {
                    if heartbeat {
                        let _ = machine.send_heartbeat(self.heartbeat(None));
                    }
                    if health {
                        let _ = machine.send_health(self.health());
                    }
                }
                AgentEvent::InventoryDue => {
                    let inv = tokio::task::spawn_blocking(|| inventory::collect(env!("CARGO_PKG_VERSION")))
                        .await
                        .ok();
                    if inv.is_some() && inv != *last_inventory {
                        last_inventory.clone_from(&inv);
                        let _ = machine.send_heartbeat(self.heartbeat(inv));
                    }
                }
                AgentEvent::SlowAck {
                    batch_id,
                    waited_ms,
                    first,
                } => {
                    if first {
                        warn!(
                            batch_id,
                            waited_ms, "collector slow to acknowledge; still connected, waiting"
                        );
                    }
                }
                AgentEvent::Acked { batch_id, alerts } => self.acknowledged(batch_id, alerts),
                AgentEvent::DropStored(id) => self.drop_stored(id),
                AgentEvent::KeyRollover(signed) => self.key_rollover(&signed),
                AgentEvent::CommandSequence(last_assigned) => {
                    // Before any command of this session: written before the next is passed on.
                    match crate::respond::executor::learn_collector_seq(&self.state_dir, last_assigned) {
                        Ok(true) => warn!(
                            last_assigned,
                            "no record of the last command accepted: took the collector's sequence; commands up to it are refused as replays"
                        ),
                        Ok(false) => {}
                        Err(e) => {
                            warn!(error = %e, "cannot record the collector's command sequence; commands stay refused")
                        }
                    }
                }
                AgentEvent::RulePack(signed) => self.rule_pack(&signed).await,
                AgentEvent::Command(signed) => {
                    if self.commands_tx.try_send(signed).is_err() {
                        warn!("command queue full: command dropped (the collector resends it on reconnect)");
                    }
                }
                AgentEvent::Ended(why) => return Err(End::Lost(why.to_string())),
            }
            self.flush(live, machine).await?;
        }
        Ok(())
    }

    /// Writes what the machine queued; a command result not written is kept for the
    /// next session.
    async fn flush(&mut self, live: &mut Live, machine: &mut AgentSession) -> Result<(), End> {
        while let Some(msg) = machine.poll_transmit() {
            if let Err(e) = live.write(&msg).await {
                if let AgentMessage::CommandResult(result) = msg {
                    self.pending_result = Some(result);
                }
                return Err(End::Lost(e.to_string()));
            }
        }
        Ok(())
    }

    /// The next batch to send, leased: its outbox epoch, id and alerts.
    fn next_batch(&self) -> Result<Option<(u64, u64, Vec<ward_protocol::Signed>)>, crate::outbox::OutboxError> {
        let Ok(mut outbox) = self.shared.outbox.lock() else {
            return Ok(None);
        };
        let max_bytes = u64::from(ward_protocol::codec::MAX_AGENT_FRAME) / 2;
        let lease = outbox.lease(self.config.outbox.batch_max_alerts, max_bytes)?;
        let epoch = outbox.epoch();
        Ok(lease.map(|l| (epoch, l.batch_id, l.entries)))
    }

    fn acknowledged(&self, batch_id: u64, n: u64) {
        if let Ok(mut outbox) = self.shared.outbox.lock() {
            if let Err(e) = outbox.ack(batch_id) {
                warn!(error = %e, batch_id, "cannot remove acknowledged batch");
            }
            if let Ok(mut s) = self.shared.status.lock() {
                s.alerts_delivered += n;
                s.outbox_depth = outbox.depth();
                s.outbox_bytes = outbox.bytes();
            }
        }
    }

    /// Hands the machine the oldest pending drop report (up to `bound`, the one in
    /// flight). With protocol 1.4 it stays in the outbox until the collector says it
    /// stored it ("reported at least once"); an older collector cannot say so, and it
    /// is cleared once handed to the session.
    fn drop_report(&self, machine: &mut AgentSession, bound: u64) {
        let Ok(mut outbox) = self.shared.outbox.lock() else {
            return;
        };
        let pending = match outbox.pending_drops_upto(bound) {
            Ok(Some(p)) => p,
            Ok(None) => return,
            Err(e) => {
                warn!(error = %e, "cannot read the drop reports");
                return;
            }
        };
        let id = pending.upto;
        let sent = machine.send_drops(
            id,
            outbox.epoch(),
            pending.seqs_epoch,
            pending.lost_range,
            pending.report,
        );
        if sent == Ok(DropDelivery::ClearNow) {
            let _ = outbox.clear_drops(id);
        }
    }

    /// The collector stored drop report `id`: its rows go.
    fn drop_stored(&self, id: u64) {
        if let Ok(mut outbox) = self.shared.outbox.lock()
            && let Err(e) = outbox.clear_drops(id)
        {
            // Kept, so it is sent again: the collector ignores a report it has.
            warn!(error = %e, "cannot clear a stored drop report");
        }
    }

    fn health(&self) -> AgentHealth {
        let epoch = self.shared.outbox.lock().map(|o| o.epoch()).unwrap_or(0);
        let (storage_error, alerts_waiting, alerts_lost) = self
            .shared
            .status
            .lock()
            .map(|s| (s.storage_error.clone(), s.alerts_waiting, s.alerts_lost_in_memory))
            .unwrap_or_default();
        AgentHealth {
            epoch,
            storage_error,
            alerts_waiting,
            alerts_lost,
        }
    }

    fn heartbeat(&self, inventory: Option<Inventory>) -> Heartbeat {
        let depth = self.shared.outbox.lock().map(|o| o.depth()).unwrap_or(0);
        let isolated = self
            .shared
            .status
            .lock()
            .map(|s| s.isolation == "isolated")
            .unwrap_or(false);
        Heartbeat {
            sent_at_ms: now_ms(),
            inventory,
            isolation: if isolated {
                IsolationState::Isolated
            } else {
                IsolationState::None
            },
            outbox_depth: depth,
            rule_pack_version: self.rule_pack_version,
        }
    }

    /// Applies a key rollover before reading the next message, so the commands
    /// and rule packs that follow it are checked with the new key. The collector
    /// sends every rollover at each connect: one already applied is skipped quietly.
    fn key_rollover(&mut self, signed: &ward_protocol::Signed) {
        match self.keys.apply(signed, crate::clock::now_ms()) {
            Ok(r) => {
                info!(serial = r.serial, new_key = %hex::encode(r.new_key.0), retire_at_ms = r.retire_at_ms, "command key rollover applied")
            }
            // An old rollover: applied already, or signed by a key retired since.
            Err(
                crate::keys::RolloverError::NotNewer { .. }
                | crate::keys::RolloverError::Signature(ward_protocol::SignatureError::UnknownKey),
            ) => {}
            Err(e) => warn!(error = %e, "command key rollover refused"),
        }
    }

    /// Verifies, compiles and swaps in a pushed rule pack; keeps the old one on any failure.
    async fn rule_pack(&mut self, signed: &ward_protocol::Signed) {
        let keys = self.keys.active(crate::clock::now_ms());
        let pack = match rulepack::verify(signed, &keys, self.rule_pack_version) {
            Ok(p) => p,
            // Offered again (a push to every session and the session's own offer can
            // cross): nothing to do.
            Err(e @ rulepack::PackError::NotNewer { .. }) => {
                debug!(error = %e, "rule pack already running");
                return;
            }
            Err(e) => {
                warn!(error = %e, "rule pack refused");
                return;
            }
        };
        let (local, local_errors) = rulepack::local_rules(&self.config.detection.rules_dir);
        let files = rulepack::compose(&self.config.detection.pack_choice(), local, &pack.rules);
        let version = pack.version;
        let compiled = tokio::task::spawn_blocking(move || ward_detect::Detector::load(&files)).await;
        let Ok((detector, errors)) = compiled else {
            warn!(version, "rule pack failed to compile; keeping the running rules");
            return;
        };
        for e in &errors {
            warn!(version, error = %e, "rule skipped");
        }
        if let Err(e) = rulepack::save(&self.state_dir, signed) {
            warn!(error = %e, "rule pack not kept on disk");
        }
        let loaded = detector.stats().loaded;
        if self.rules_tx.send(Rules { version, detector }).await.is_ok() {
            self.rule_pack_version = version;
            if let Ok(mut s) = self.shared.status.lock() {
                s.rule_pack_version = version;
                s.rules_loaded = loaded;
                s.rule_errors = errors.len() + local_errors.len();
            }
            info!(version, loaded, skipped = errors.len(), "rule pack running");
        }
    }
}

/// Between half and all of `d`, so reconnecting agents spread out.
fn jitter(d: Duration) -> Duration {
    let mut b = [0u8; 2];
    let r = ring::rand::SystemRandom::new()
        .fill(&mut b)
        .map(|_| u16::from_le_bytes(b))
        .unwrap_or(0);
    let half = d / 2;
    half + half.mul_f64(f64::from(r) / f64::from(u16::MAX))
}
