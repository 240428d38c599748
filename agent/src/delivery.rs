//! Delivery: keeps a session with the collector open (reconnecting with jittered
//! back-off), sends outbox batches one at a time and removes them only when their
//! acknowledgement arrives, sends heartbeats and drop reports, and takes rule packs.
//! A batch not acknowledged in time means the connection is dead: its lease is
//! released and everything unacknowledged is sent again on the next session.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ring::rand::SecureRandom;
use tokio::sync::{mpsc, watch};
use tracing::{debug, info, warn};
use ward_protocol::message::{AlertBatch, Heartbeat};
use ward_protocol::{
    AgentHealth, AgentMessage, CollectorMessage, DropNotice, EpochAlertBatch, Inventory, IsolationState,
};

use crate::clock::now_ms;
use crate::config::Config;
use crate::identity::Identity;
use crate::keys::PinnedKeys;
use crate::link::{LinkError, Session};
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
    /// Whether this session's collector speaks protocol 1.4 (epochs, acknowledged drop
    /// reports, health); set per session.
    pub epochs: bool,
}

/// How many ack timeouts a live but slow collector is waited for before the batch is
/// sent again on a new connection.
const SLOW_ACK_LIMIT: u32 = 12;

/// The batch sent and not yet acknowledged.
#[derive(Clone, Copy)]
struct InFlight {
    batch_id: u64,
    sent: tokio::time::Instant,
    deadline: tokio::time::Instant,
    /// QUIC ACK frames received from the collector when last looked at.
    peer_acks: u64,
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
                s = Session::open(&self.identity, self.rule_pack_version, crate::respond::executor::last_seq(&self.state_dir).unwrap_or(0)) => s,
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
        let Session {
            conn,
            mut send,
            mut recv,
            endpoint: _endpoint,
            collector_minor,
            ..
        } = session;
        self.epochs = collector_minor >= ward_protocol::MINOR_EPOCHS;
        let (tx, mut rx) = mpsc::channel::<Result<CollectorMessage, LinkError>>(16);
        let reader = tokio::spawn(async move {
            loop {
                let msg =
                    crate::link::read_frame::<CollectorMessage>(&mut recv, ward_protocol::codec::MAX_COLLECTOR_FRAME)
                        .await;
                let done = !matches!(msg, Ok(Some(_)));
                let item = match msg {
                    Ok(Some(m)) => Ok(m),
                    Ok(None) => Err(LinkError::Closed("collector finished the stream".into())),
                    Err(e) => Err(e),
                };
                if tx.send(item).await.is_err() || done {
                    return;
                }
            }
        });
        let end = self.exchange(&conn, &mut send, &mut rx, shutdown).await;
        reader.abort();
        conn.close(0u32.into(), b"agent closing");
        end
    }

    async fn exchange(
        &mut self,
        conn: &quinn::Connection,
        send: &mut quinn::SendStream,
        rx: &mut mpsc::Receiver<Result<CollectorMessage, LinkError>>,
        shutdown: &mut watch::Receiver<bool>,
    ) -> End {
        let ack_timeout = Duration::from_millis(self.config.link.ack_timeout_ms);
        let mut heartbeat = tokio::time::interval(Duration::from_millis(self.config.agent.heartbeat_interval_ms));
        let mut inventory_tick = tokio::time::interval(Duration::from_millis(self.config.agent.inventory_interval_ms));
        let mut last_inventory: Option<Inventory> = None;
        let mut in_flight: Option<InFlight> = None;
        let mut drops_sent = false;
        // The drop report sent and not yet acknowledged (protocol 1.4).
        let mut drop_in_flight: Option<u64> = None;
        if self.epochs
            && let Err(e) = crate::link::write_frame(send, &self.health()).await
        {
            return End::Lost(e.to_string());
        }
        loop {
            if let Some(result) = self.pending_result.take()
                && let Err(e) = crate::link::write_frame(send, &AgentMessage::CommandResult(result.clone())).await
            {
                self.pending_result = Some(result);
                return End::Lost(e.to_string());
            }
            if in_flight.is_none() {
                match self.next_batch() {
                    Ok(Some((batch_id, msg))) => {
                        if let Err(e) = crate::link::write_frame(send, &msg).await {
                            return End::Lost(e.to_string());
                        }
                        let now = tokio::time::Instant::now();
                        in_flight = Some(InFlight {
                            batch_id,
                            sent: now,
                            deadline: now + ack_timeout,
                            peer_acks: conn.stats().frame_rx.acks,
                        });
                    }
                    Ok(None) => {}
                    Err(e) => warn!(error = %e, "outbox read failed"),
                }
            }
            if !drops_sent {
                drops_sent = true;
                if let Some((id, msg)) = self.drop_report(drop_in_flight) {
                    if let Err(e) = crate::link::write_frame(send, &msg).await {
                        return End::Lost(e.to_string());
                    }
                    drop_in_flight = id;
                }
            }
            let deadline = in_flight
                .map(|f| f.deadline)
                .unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(3600));
            tokio::select! {
                msg = rx.recv() => match msg {
                    Some(Ok(CollectorMessage::Ack(ack))) => {
                        if in_flight.is_some_and(|f| f.batch_id == ack.batch_id) {
                            in_flight = None;
                            self.acknowledged(ack.batch_id, u64::from(ack.stored) + u64::from(ack.duplicates));
                        }
                    }
                    Some(Ok(CollectorMessage::RulePack(signed))) => self.rule_pack(&signed).await,
                    Some(Ok(CollectorMessage::KeyRollover(signed))) => self.key_rollover(&signed),
                    Some(Ok(CollectorMessage::Command(signed))) => {
                        if self.commands_tx.try_send(signed).is_err() {
                            warn!("command queue full: command dropped (the collector resends it on reconnect)");
                        }
                    }
                    Some(Ok(CollectorMessage::CommandSequence { last_assigned })) => {
                        // Before any command of this session: written before the next is passed on.
                        match crate::respond::executor::learn_collector_seq(&self.state_dir, last_assigned) {
                            Ok(true) => warn!(last_assigned, "no record of the last command accepted: took the collector's sequence; commands up to it are refused as replays"),
                            Ok(false) => {}
                            Err(e) => warn!(error = %e, "cannot record the collector's command sequence; commands stay refused"),
                        }
                    }
                    Some(Ok(CollectorMessage::DropStored { report_id })) => {
                        if drop_in_flight == Some(report_id) {
                            drop_in_flight = None;
                            self.drop_stored(report_id);
                            // The next one, if any, goes at once.
                            drops_sent = false;
                        }
                    }
                    Some(Ok(CollectorMessage::Goodbye { reason })) => return End::Lost(reason),
                    Some(Ok(_)) => {}
                    Some(Err(e)) => return End::Lost(e.to_string()),
                    None => return End::Lost("reader stopped".into()),
                },
                _ = self.shared.new_alerts.notified(), if in_flight.is_none() => {}
                result = self.results_rx.recv() => {
                    // Written at the top of the loop; kept there if the session dies first.
                    self.pending_result = result;
                }
                _ = tokio::time::sleep_until(deadline), if in_flight.is_some() => {
                    let Some(f) = in_flight.as_mut() else { continue };
                    // A slow acknowledgement from a live collector (its writer busy) is
                    // waited for: reconnecting would send the same batch again and throw
                    // the collector's work away, and under load that repeats without end
                    // (the 60 s stall after an agent restart). Live means its QUIC stack
                    // acknowledged packets since the last look; a heartbeat is the next
                    // probe. A dead peer, or no ack within SLOW_ACK_LIMIT timeouts, ends it.
                    let acks = conn.stats().frame_rx.acks;
                    let waited = f.sent.elapsed();
                    if acks == f.peer_acks || waited >= ack_timeout * SLOW_ACK_LIMIT {
                        return End::Lost(format!(
                            "no acknowledgement within {} ms",
                            waited.as_millis()
                        ));
                    }
                    if waited < ack_timeout * 2 {
                        warn!(batch_id = f.batch_id, waited_ms = waited.as_millis() as u64, "collector slow to acknowledge; still connected, waiting");
                    }
                    f.peer_acks = acks;
                    f.deadline = tokio::time::Instant::now() + ack_timeout;
                    if let Err(e) = crate::link::write_frame(send, &self.heartbeat(None)).await {
                        return End::Lost(e.to_string());
                    }
                }
                _ = inventory_tick.tick() => {
                    let inv = tokio::task::spawn_blocking(|| inventory::collect(env!("CARGO_PKG_VERSION"))).await.ok();
                    if inv.is_some() && inv != last_inventory {
                        last_inventory = inv.clone();
                        if let Err(e) = crate::link::write_frame(send, &self.heartbeat(inv)).await {
                            return End::Lost(e.to_string());
                        }
                    }
                }
                _ = heartbeat.tick() => {
                    if let Err(e) = crate::link::write_frame(send, &self.heartbeat(None)).await {
                        return End::Lost(e.to_string());
                    }
                    if self.epochs
                        && let Err(e) = crate::link::write_frame(send, &self.health()).await
                    {
                        return End::Lost(e.to_string());
                    }
                    // Unacknowledged reports (and new ones) go again.
                    drops_sent = false;
                }
                _ = shutdown.changed() => return End::Shutdown,
            }
        }
    }

    fn next_batch(&self) -> Result<Option<(u64, AgentMessage)>, crate::outbox::OutboxError> {
        let Ok(mut outbox) = self.shared.outbox.lock() else {
            return Ok(None);
        };
        let max_bytes = u64::from(ward_protocol::codec::MAX_AGENT_FRAME) / 2;
        let lease = outbox.lease(self.config.outbox.batch_max_alerts, max_bytes)?;
        let epoch = outbox.epoch();
        Ok(lease.map(|l| {
            let msg = if self.epochs {
                AgentMessage::EpochAlerts(EpochAlertBatch {
                    epoch,
                    batch_id: l.batch_id,
                    alerts: l.entries,
                })
            } else {
                AgentMessage::Alerts(AlertBatch {
                    batch_id: l.batch_id,
                    alerts: l.entries,
                })
            };
            (l.batch_id, msg)
        }))
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

    /// The oldest pending drop report and its id. With protocol 1.4 it stays in the
    /// outbox until the collector says it stored it ("reported at least once");
    /// an older collector cannot say so, and it is cleared once handed to the session.
    fn drop_report(&self, in_flight: Option<u64>) -> Option<(Option<u64>, AgentMessage)> {
        let mut outbox = self.shared.outbox.lock().ok()?;
        let pending = match outbox.pending_drops_upto(in_flight.unwrap_or(u64::MAX)) {
            Ok(p) => p?,
            Err(e) => {
                warn!(error = %e, "cannot read the drop reports");
                return None;
            }
        };
        if self.epochs {
            let id = pending.upto;
            let notice = DropNotice {
                epoch: outbox.epoch(),
                report_id: id,
                seqs_epoch: pending.seqs_epoch,
                lost_range: pending.lost_range,
                report: pending.report,
            };
            return Some((Some(id), AgentMessage::DropNotice(notice)));
        }
        let _ = outbox.clear_drops(pending.upto);
        Some((None, AgentMessage::Dropped(pending.report)))
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

    fn health(&self) -> AgentMessage {
        let epoch = self.shared.outbox.lock().map(|o| o.epoch()).unwrap_or(0);
        let (storage_error, alerts_waiting, alerts_lost) = self
            .shared
            .status
            .lock()
            .map(|s| (s.storage_error.clone(), s.alerts_waiting, s.alerts_lost_in_memory))
            .unwrap_or_default();
        AgentMessage::Health(AgentHealth {
            epoch,
            storage_error,
            alerts_waiting,
            alerts_lost,
        })
    }

    fn heartbeat(&self, inventory: Option<Inventory>) -> AgentMessage {
        let depth = self.shared.outbox.lock().map(|o| o.depth()).unwrap_or(0);
        let isolated = self
            .shared
            .status
            .lock()
            .map(|s| s.isolation == "isolated")
            .unwrap_or(false);
        AgentMessage::Heartbeat(Heartbeat {
            sent_at_ms: now_ms(),
            inventory,
            isolation: if isolated {
                IsolationState::Isolated
            } else {
                IsolationState::None
            },
            outbox_depth: depth,
            rule_pack_version: self.rule_pack_version,
        })
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
        let files = rulepack::compose(local, &pack.rules);
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
