//! One enrolled agent's session. Identity comes from the client certificate,
//! never from the payload. Frames are read one at a time from the agent's single
//! long-lived stream; an alert batch is rate-limited, verified on the pool,
//! committed by the writer and only then acknowledged. A bad frame or signature
//! closes this connection with a reason and affects no other agent.
//!
//! The session's rules (hello first, what the welcome is followed by and in which
//! order, when an ack or a drop acknowledgement goes, the deadlines) are
//! [`ward_protocol::session::CollectorSession`]'s; this driver reads frames into it,
//! writes what it transmits, and does the work its events ask for with the store,
//! the verify pool, the rate limits and the deliveries.

use tokio::sync::{mpsc, watch};
use tracing::{debug, info, warn};
use ward_protocol::codec::MAX_COLLECTOR_FRAME;
use ward_protocol::message::close_code;
use ward_protocol::session::{Close, CollectorEvent, CollectorSession, Start};
use ward_protocol::{AgentMessage, CollectorMessage, DeviceId, PublicKey};

use super::limits::{Kind, MAX_DROP_SEQS};
use super::{Context, ReadError, read_frame, write_frame};
use crate::actions;
use crate::pki::fingerprint;
use crate::store::DeviceState;
use crate::store::prelude::*;
use crate::util::clip_device_text;
use crate::util::now_ms;

/// The session machine's clock: milliseconds since the connection was identified.
#[derive(Clone, Copy)]
struct Clock(tokio::time::Instant);

impl Clock {
    fn now(self) -> u64 {
        u64::try_from(self.0.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn at(self, ms: u64) -> tokio::time::Instant {
        self.0 + std::time::Duration::from_millis(ms)
    }
}

pub async fn handle(conn: quinn::Connection, ctx: &Context, shutdown: watch::Receiver<bool>) {
    let Some((device, key)) = identify(&conn, ctx).await else {
        return;
    };
    let clock = Clock(tokio::time::Instant::now());
    let mut machine = CollectorSession::new(clock.now(), device);
    let Some((send, mut recv)) = open_stream(&conn, ctx, &mut machine, clock).await else {
        return;
    };
    let last_command_seq = match machine.poll_event() {
        Some(CollectorEvent::Hello {
            agent_version,
            agent_minor,
            rule_pack_version,
            last_command_seq,
            wants_command_seq,
        }) => {
            debug!(%device, version = %agent_version, agent_minor, rule_pack_version, "session hello");
            let Some(start) = start(ctx, device, last_command_seq, wants_command_seq).await else {
                return; // The writer stopped: shutting down.
            };
            if machine.welcome(start).is_err() {
                return;
            }
            last_command_seq
        }
        Some(CollectorEvent::Closed(close)) => {
            close_with(&conn, ctx, &close);
            return;
        }
        _ => return,
    };
    // Boxed messages: tokio allocates a queue's slots 32 at a time when it is made,
    // and 32 messages inline (88 bytes each) were 2.8 KiB of every idle session.
    let (out_tx, out_rx) = mpsc::channel::<Box<CollectorMessage>>(64);
    tokio::spawn(outbound(send, out_rx));
    while let Some(event) = machine.poll_event() {
        if let CollectorEvent::TooOldForRollovers { agent_minor } = event {
            warn!(%device, agent_minor, "agent too old for command-key rollovers: upgrade it, or it refuses commands signed with the new key");
        }
    }
    // Welcome, rollovers and command sequence, before the deliveries know of the session.
    if flush(&mut machine, &out_tx).await.is_err() {
        return;
    }
    // Commands approved while this session starts wait for `session_ready` below.
    ctx.deliveries.session_starting(device, conn.stable_id()).await;
    if ctx.registry.register(device, conn.clone(), out_tx.clone()) {
        ctx.metrics.identity_conflicts.inc();
        warn!(%device, remote = %conn.remote_address(), "device connected while its previous connection was alive");
    }
    ctx.metrics.connected_agents.inc();
    info!(%device, remote = %conn.remote_address(), "agent connected");
    let _ = machine.ready(ctx.newer_rule_pack(machine.pack_sent()));
    let reason = match flush(&mut machine, &out_tx).await {
        Ok(()) => {
            // Approved commands that waited for this device, in sequence order.
            ctx.deliveries
                .session_ready(device, conn.stable_id(), last_command_seq, &out_tx)
                .await;
            let peer = Peer {
                conn: &conn,
                device,
                key,
            };
            run(&peer, ctx, &mut machine, &out_tx, &mut recv, shutdown, clock).await
        }
        Err(reason) => reason,
    };
    ctx.deliveries.session_ended(device, conn.stable_id()).await;
    ctx.registry.unregister(device, &conn);
    ctx.metrics.connected_agents.dec();
    info!(%device, %reason, "agent session ended");
    let _ = ctx.writer.run(move |store| store.touch_device(device, now_ms())).await;
}

/// Waits for the agent's stream and its hello, within the machine's deadlines;
/// closes the connection as the machine says when either fails.
async fn open_stream(
    conn: &quinn::Connection,
    ctx: &Context,
    machine: &mut CollectorSession,
    clock: Clock,
) -> Option<(quinn::SendStream, quinn::RecvStream)> {
    let deadline = machine.poll_timeout().unwrap_or(0);
    let streams = match tokio::time::timeout_at(clock.at(deadline), conn.accept_bi()).await {
        Ok(Ok(streams)) => Some(streams),
        Ok(Err(_)) => {
            machine.stream_failed();
            None
        }
        Err(_) => {
            machine.handle_timeout(clock.now().max(deadline));
            None
        }
    };
    if let Some((send, mut recv)) = streams {
        machine.stream_opened(clock.now());
        let deadline = machine.poll_timeout().unwrap_or(0);
        let max = ctx.config.ingest.max_frame_bytes;
        match tokio::time::timeout_at(clock.at(deadline), read_frame::<AgentMessage>(&mut recv, max)).await {
            Ok(Ok(Some(msg))) => machine.handle_message(clock.now(), msg),
            Ok(_) => machine.stream_failed(),
            Err(_) => machine.handle_timeout(clock.now().max(deadline)),
        }
        if !machine.is_closed() {
            return Some((send, recv));
        }
    }
    if let Some(CollectorEvent::Closed(close)) = machine.poll_event() {
        close_with(conn, ctx, &close);
    }
    None
}

/// What the welcome needs: the device's command sequence checked (before the welcome,
/// so a command approved once the session is up is numbered above what the device has
/// accepted) and read, and the rollovers. `None` when the writer stopped.
async fn start(ctx: &Context, device: DeviceId, last_command_seq: u64, wants_command_seq: bool) -> Option<Start> {
    if last_command_seq > 0 {
        match ctx
            .writer
            .run(move |s| s.catch_up_command_seq(device, last_command_seq, now_ms()))
            .await
        {
            Ok(Ok(Some(ours))) => warn!(
                %device,
                accepted = last_command_seq,
                ours,
                "device is ahead of the collector's command sequence (database restored from an older backup?); moved ahead"
            ),
            Ok(Ok(None)) => {}
            Ok(Err(e)) => warn!(%device, error = %e, "command sequence not checked"),
            Err(_) => return None,
        }
    }
    // An agent that lost its record of the last command it accepted refuses commands
    // until it knows ours (replay protection never falls open).
    let command_seq = if wants_command_seq {
        match ctx.reads.run(move |s| s.command_seq(device)).await {
            Ok(Ok(seq)) => Some(seq),
            Ok(Err(e)) | Err(e) => {
                // The agent keeps refusing commands until a later session tells it.
                warn!(%device, error = %e, "command sequence not read; not sent");
                None
            }
        }
    } else {
        None
    };
    Some(Start {
        server_time_ms: now_ms(),
        rollovers: ctx.key_rollovers.clone(),
        command_seq,
    })
}

/// Hands the machine's transmits to the session's outbound queue, in order. A rule
/// pack is offered, never waited for: with the queue full it goes at a later heartbeat.
async fn flush(machine: &mut CollectorSession, out: &mpsc::Sender<Box<CollectorMessage>>) -> Result<(), String> {
    while let Some(msg) = machine.poll_transmit() {
        if matches!(msg, CollectorMessage::RulePack(_)) {
            if out.try_send(Box::new(msg)).is_err() {
                machine.rule_pack_not_queued(machine.pack_sent());
            }
            continue;
        }
        out.send(Box::new(msg))
            .await
            .map_err(|_| "outbound closed".to_string())?;
    }
    Ok(())
}

fn close_with(conn: &quinn::Connection, ctx: &Context, close: &Close) {
    if let Some(label) = close.reject {
        ctx.metrics.reject(label);
    }
    conn.close(close.code.into(), close.reason.as_bytes());
}

/// Maps the client certificate to an enrolled, unrevoked device.
async fn identify(conn: &quinn::Connection, ctx: &Context) -> Option<(DeviceId, PublicKey)> {
    let cert = conn
        .peer_identity()
        .and_then(|id| id.downcast::<Vec<rustls_pki_types::CertificateDer<'static>>>().ok())
        .and_then(|chain| chain.first().map(|c| fingerprint(c.as_ref())));
    let Some(fp) = cert else {
        ctx.metrics.reject("unknown_device");
        conn.close(
            close_code::UNKNOWN_DEVICE.into(),
            b"a session needs a client certificate",
        );
        return None;
    };
    match ctx.reads.run(move |s| s.device_by_cert(&fp)).await {
        Ok(Ok(Some(d))) if !d.revoked => Some((d.id, d.signing_key)),
        Ok(Ok(Some(_))) => {
            ctx.metrics.reject("revoked");
            conn.close(close_code::REVOKED.into(), b"device revoked");
            None
        }
        Ok(Ok(None)) => {
            ctx.metrics.reject("unknown_device");
            conn.close(close_code::UNKNOWN_DEVICE.into(), b"unknown device");
            None
        }
        Ok(Err(e)) | Err(e) => {
            warn!(error = %e, "device lookup failed");
            conn.close(close_code::SHUTDOWN.into(), b"collector storage unavailable");
            None
        }
    }
}

/// The authenticated device on the other end of a session.
struct Peer<'a> {
    conn: &'a quinn::Connection,
    device: DeviceId,
    key: PublicKey,
}

/// A device clock further from the collector's than the agents' default
/// `response.clock_skew_ms` makes them refuse commands: warned about.
pub const CLOCK_SKEW_WARN_MS: u64 = ward_protocol::auth::DEFAULT_CLOCK_SKEW_MS;

async fn run(
    peer: &Peer<'_>,
    ctx: &Context,
    machine: &mut CollectorSession,
    out: &mpsc::Sender<Box<CollectorMessage>>,
    recv: &mut quinn::RecvStream,
    mut shutdown: watch::Receiver<bool>,
    clock: Clock,
) -> String {
    let Peer { conn, device, .. } = *peer;
    // Kept across reconnects: a device cannot buy a fresh burst by reconnecting.
    let limits = ctx.limits.of(device, &ctx.config.ingest);
    let max = ctx.config.ingest.max_frame_bytes;
    // The clock skew last warned about in this session.
    let mut warned_skew = 0i64;
    // The sensors last reported blind, and why: a warning when that changes, not
    // with every report.
    let mut blind: Vec<(String, Option<String>)> = Vec::new();
    loop {
        let frame = tokio::select! {
            f = read_frame::<AgentMessage>(recv, max) => f,
            _ = shutdown.changed() => return "collector shutting down".into(),
        };
        let msg = match frame {
            Ok(Some(msg)) => msg,
            Ok(None) => return "agent finished the stream".into(),
            Err(ReadError::Frame(e)) => {
                ctx.metrics.reject("bad_frame");
                warn!(%device, error = %e, "bad frame");
                conn.close(close_code::PROTOCOL.into(), format!("bad frame: {e}").as_bytes());
                return format!("bad frame: {e}");
            }
            Err(ReadError::Stream(e)) => return e,
            Err(ReadError::Stalled) => {
                ctx.metrics.reject("bad_frame");
                warn!(%device, "frame not finished in time");
                conn.close(close_code::PROTOCOL.into(), ReadError::Stalled.to_string().as_bytes());
                return ReadError::Stalled.to_string();
            }
        };
        if is_revoked(ctx, &device) {
            ctx.metrics.reject("revoked");
            conn.close(close_code::REVOKED.into(), b"device revoked");
            return "device revoked".into();
        }
        // Every kind has its budget; over it, the session waits before handling
        // the message (QUIC flow control slows the device; nothing is dropped).
        let kind = match &msg {
            AgentMessage::Alerts(b) => Some(Kind::Alerts(b.alerts.len())),
            AgentMessage::EpochAlerts(b) => Some(Kind::Alerts(b.alerts.len())),
            AgentMessage::Heartbeat(_) | AgentMessage::Health(_) | AgentMessage::Sensors(_) => Some(Kind::Heartbeat),
            AgentMessage::Dropped(_) | AgentMessage::DropNotice(_) => Some(Kind::Dropped),
            AgentMessage::CommandResult(_) => Some(Kind::Result),
            AgentMessage::Hello(_) | AgentMessage::Enroll(_) => None,
        };
        if let Some(kind) = kind {
            let wait = match limits.lock() {
                Ok(mut l) => l.take(kind),
                Err(p) => p.into_inner().take(kind),
            };
            if !wait.is_zero() {
                ctx.metrics.throttled(kind.as_str());
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = shutdown.changed() => return "collector shutting down".into(),
                }
            }
        }
        machine.handle_message(clock.now(), msg);
        while let Some(event) = machine.poll_event() {
            let done = match event {
                CollectorEvent::Epoch(epoch) => switch_epoch(ctx, device, epoch).await,
                CollectorEvent::Batch {
                    batch_id,
                    alerts: batch,
                } => alerts(peer, ctx, batch)
                    .await
                    .map(|(stored, dups)| machine.acknowledge(batch_id, stored, dups)),
                CollectorEvent::Heartbeat(hb) => {
                    machine.offer_rule_pack(ctx.newer_rule_pack(machine.pack_sent()));
                    heartbeat(ctx, device, hb, &mut warned_skew);
                    Ok(())
                }
                CollectorEvent::Dropped(report) => {
                    warn!(%device, dropped = report.dropped, reason = %clip_device_text(&report.reason), "agent dropped alerts");
                    let seqs: Vec<u64> = report.seqs.into_iter().take(MAX_DROP_SEQS).collect();
                    let _ = ctx
                        .writer
                        .run(move |s| s.record_drops(device, report.dropped, &seqs, &report.reason, now_ms()))
                        .await;
                    Ok(())
                }
                CollectorEvent::DropNotice(notice) => {
                    warn!(%device, dropped = notice.report.dropped, reason = %clip_device_text(&notice.report.reason), "agent dropped alerts");
                    let report_id = notice.report_id;
                    let stored = ctx
                        .writer
                        .run(move |s| s.record_drop_notice(device, &notice, now_ms()))
                        .await;
                    match stored {
                        // Acknowledged only once stored: until then the agent keeps it.
                        Ok(Ok(_)) => {
                            machine.drop_stored(report_id);
                            Ok(())
                        }
                        Ok(Err(e)) => {
                            warn!(%device, error = %e, "drop report not stored; the agent sends it again");
                            Ok(())
                        }
                        Err(e) => Err(e.to_string()),
                    }
                }
                CollectorEvent::Storage { error, waiting, lost } => {
                    if let Some(e) = &error {
                        warn!(%device, error = %e, waiting, lost, "agent cannot store alerts");
                    }
                    let _ = ctx
                        .writer
                        .run(move |s| s.set_storage_error(device, error.as_deref(), now_ms()))
                        .await;
                    Ok(())
                }
                CollectorEvent::Sensors(report) => {
                    let sensors = sensor_views(report);
                    let now_blind: Vec<(String, Option<String>)> = sensors
                        .iter()
                        .filter(|s| s.readiness == "blind")
                        .map(|s| (s.name.clone(), s.detail.clone()))
                        .collect();
                    for (name, detail) in now_blind.iter().filter(|b| !blind.contains(b)) {
                        warn!(%device, sensor = %name, detail = detail.as_deref().unwrap_or(""), "agent sensor blind");
                    }
                    blind = now_blind;
                    let _ = ctx.writer.run(move |s| s.set_sensors(device, &sensors, now_ms())).await;
                    Ok(())
                }
                CollectorEvent::CommandResult(signed) => {
                    let audit = match limits.lock() {
                        Ok(mut l) => l.audit(),
                        Err(p) => p.into_inner().audit(),
                    };
                    command_result(peer, ctx, &signed, audit).await
                }
                CollectorEvent::Closed(close) => {
                    close_with(conn, ctx, &close);
                    Err(close.reason.to_string())
                }
                // Only before the session is open.
                CollectorEvent::Hello { .. } | CollectorEvent::TooOldForRollovers { .. } => Ok(()),
            };
            if let Err(reason) = done {
                return reason;
            }
        }
        if let Err(reason) = flush(machine, out).await {
            return reason;
        }
    }
}

/// Records a heartbeat (written in bulk by [`super::write_heartbeats`]) and warns about
/// the device's clock when its skew starts or changes by a second.
fn heartbeat(ctx: &Context, device: DeviceId, hb: ward_protocol::Heartbeat, warned_skew: &mut i64) {
    let now = now_ms();
    let skew = i64::try_from(hb.sent_at_ms).unwrap_or(i64::MAX) - i64::try_from(now).unwrap_or(i64::MAX);
    if skew.unsigned_abs() > CLOCK_SKEW_WARN_MS && skew.abs_diff(*warned_skew) > 1_000 {
        warn!(%device, skew_ms = skew, "device clock differs from the collector's by more than agents allow for commands: they will refuse them");
        *warned_skew = skew;
    }
    let state = DeviceState {
        seen_at_ms: now,
        clock_skew_ms: skew,
        inventory: hb.inventory,
        isolation: hb.isolation,
        outbox_depth: hb.outbox_depth,
        rule_pack_version: hb.rule_pack_version,
    };
    if let Ok(mut pending) = ctx.heartbeats.lock() {
        pending.insert(device, state);
    }
}

/// Makes `new` the device's outbox epoch before anything numbered in it is stored.
async fn switch_epoch(ctx: &Context, device: DeviceId, new: u64) -> Result<(), String> {
    let changed = ctx
        .writer
        .run(move |s| s.switch_epoch(device, new, now_ms()))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    if changed {
        info!(%device, epoch = %format!("{new:016x}"), "device outbox epoch");
    }
    Ok(())
}

fn is_revoked(ctx: &Context, device: &DeviceId) -> bool {
    ctx.revoked.read().map(|set| set.contains(device)).unwrap_or(false)
}

/// Stores a batch, retrying with back-off while commits fail (a full disk, an I/O
/// error): the session stays open and reads nothing more meanwhile, so the agent
/// keeps its batch and waits (flow control), instead of every agent being dropped
/// into a reconnect storm that cannot succeed either. Ends when stored, when the
/// agent leaves or when the writer stops.
async fn store_until_stored(
    ctx: &Context,
    conn: &quinn::Connection,
    device: DeviceId,
    mut alerts: Vec<crate::store::VerifiedAlert>,
) -> Result<crate::store::InsertOutcome, String> {
    const FIRST_RETRY: std::time::Duration = std::time::Duration::from_millis(100);
    const LONGEST_RETRY: std::time::Duration = std::time::Duration::from_secs(5);
    let mut wait = FIRST_RETRY;
    loop {
        match ctx.writer.store_alerts(device, alerts).await {
            Ok(outcome) => return Ok(outcome),
            Err(failed) if matches!(failed.error, crate::ingest::WriteError::Commit(_)) => {
                warn!(%device, error = %failed.error, retry_in_ms = wait.as_millis() as u64, "batch not stored: retrying");
                alerts = failed.alerts;
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = conn.closed() => return Err(format!("agent left while storage failed: {}", failed.error)),
                }
                wait = (wait * 2).min(LONGEST_RETRY);
            }
            Err(failed) => return Err(failed.error.to_string()),
        }
    }
}

/// Verifies and stores a non-empty batch; its counts (stored, duplicates) for the ack.
async fn alerts(peer: &Peer<'_>, ctx: &Context, batch: Vec<ward_protocol::Signed>) -> Result<(u32, u32), String> {
    let Peer { conn, device, key } = *peer;
    ctx.metrics.alerts_received.add(batch.len() as u64);
    let verified = match ctx.verify.verify(device, key, batch).await {
        Ok(Ok(v)) => v,
        Ok(Err(rejection)) => {
            ctx.metrics.reject(rejection.label());
            warn!(%device, %rejection, "batch refused");
            let code = match rejection.label() {
                "bad_signature" => close_code::BAD_SIGNATURE,
                "wrong_device" => close_code::WRONG_DEVICE,
                _ => close_code::PROTOCOL,
            };
            conn.close(code.into(), rejection.to_string().as_bytes());
            return Err(rejection.to_string());
        }
        Err(e) => return Err(e.to_string()),
    };
    let outcome = store_until_stored(ctx, conn, device, verified).await?;
    // A folded alert is durably kept too (in the row it was folded into).
    Ok((outcome.stored + outcome.folded, outcome.duplicates))
}

/// Verifies (with the device's enrolled key, before decoding) and stores a
/// command result. A bad signature or a result naming another device closes
/// the connection, as a bad alert does; both are audited while the device's
/// audit budget lasts (`audit`), then only counted.
async fn command_result(
    peer: &Peer<'_>,
    ctx: &Context,
    signed: &ward_protocol::Signed,
    audit: bool,
) -> Result<(), String> {
    let Peer { conn, device, key, .. } = *peer;
    if !audit {
        ctx.metrics.device_audit_suppressed.inc();
    }
    match actions::dispatch::record_result(&ctx.writer, device, &key, signed, audit).await {
        Ok(Ok(_)) => {
            // The device may have been sent less than it should (a full queue): catch up.
            ctx.deliveries.push(device).await;
            Ok(())
        }
        Ok(Err(refusal)) => {
            let (label, code) = match refusal {
                actions::dispatch::ResultRefusal::Signature(_) => ("bad_signature", close_code::BAD_SIGNATURE),
                actions::dispatch::ResultRefusal::WrongDevice(_) => ("wrong_device", close_code::WRONG_DEVICE),
            };
            ctx.metrics.reject(label);
            warn!(%device, %refusal, "command result refused");
            conn.close(code.into(), refusal.to_string().as_bytes());
            Err(refusal.to_string())
        }
        Err(e) => Err(e.to_string()),
    }
}

/// Writes queued messages to the agent until the queue closes.
async fn outbound(mut send: quinn::SendStream, mut rx: mpsc::Receiver<Box<CollectorMessage>>) {
    while let Some(msg) = rx.recv().await {
        if let Err(e) = write_frame(&mut send, &*msg, MAX_COLLECTOR_FRAME).await {
            debug!(error = %e, "outbound stream closed");
            return;
        }
    }
    let _ = send.finish();
}

/// Sensors kept per device, and each text's limit: a report is the device's own
/// words, bounded before it is stored.
const MAX_SENSORS: usize = 32;
const MAX_SENSOR_NAME: usize = 64;
const MAX_SENSOR_TEXT: usize = 512;

/// A device's sensor report as stored: at most [`MAX_SENSORS`], texts clipped.
fn sensor_views(report: ward_protocol::SensorReport) -> Vec<crate::store::SensorView> {
    report
        .sensors
        .into_iter()
        .take(MAX_SENSORS)
        .map(|s| crate::store::SensorView {
            name: crate::util::clip_marked(&s.name, MAX_SENSOR_NAME),
            readiness: s.readiness.as_str().to_string(),
            source: crate::util::clip_marked(&s.source, MAX_SENSOR_TEXT),
            detail: s.detail.map(|d| crate::util::clip_marked(&d, MAX_SENSOR_TEXT)),
            since_ms: s.since_ms,
            lost: s.lost,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use ward_protocol::{Readiness, SensorReport, SensorState};

    use super::*;

    #[test]
    fn a_sensor_report_is_bounded_before_it_is_stored() {
        let long = "x".repeat(10_000);
        let report = SensorReport {
            sensors: (0..100)
                .map(|i| SensorState {
                    name: format!("{i}{long}"),
                    readiness: Readiness::Blind,
                    source: long.clone(),
                    detail: Some(long.clone()),
                    since_ms: 1,
                    lost: 2,
                })
                .collect(),
        };
        let views = sensor_views(report);
        assert_eq!(views.len(), MAX_SENSORS);
        for v in &views {
            assert!(v.name.len() <= MAX_SENSOR_NAME + 3, "{}", v.name.len());
            assert!(v.source.len() <= MAX_SENSOR_TEXT + 3);
            assert!(v.detail.as_ref().unwrap().len() <= MAX_SENSOR_TEXT + 3);
            assert_eq!((v.readiness.as_str(), v.since_ms, v.lost), ("blind", 1, 2));
        }
    }
}
