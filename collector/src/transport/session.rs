//! One enrolled agent's session. Identity comes from the client certificate,
//! never from the payload. Frames are read one at a time from the agent's single
//! long-lived stream; an alert batch is rate-limited, verified on the pool,
//! committed by the writer and only then acknowledged. A bad frame or signature
//! closes this connection with a reason and affects no other agent.

use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tracing::{debug, info, warn};
use ward_protocol::codec::MAX_COLLECTOR_FRAME;
use ward_protocol::message::{Ack, AlertBatch, Welcome, close_code};
use ward_protocol::{AgentMessage, CollectorMessage, DeviceId, PROTOCOL_MAJOR, PROTOCOL_MINOR, PublicKey};

use super::limits::{Kind, MAX_DROP_SEQS};
use super::{Context, ReadError, read_frame, write_frame};
use crate::actions;
use crate::pki::fingerprint;
use crate::store::DeviceState;
use crate::util::clip_device_text;
use crate::util::now_ms;

const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// The protocol minor version that added [`CollectorMessage::KeyRollover`].
const ROLLOVER_MINOR: u8 = 1;
/// The protocol minor version that added [`CollectorMessage::CommandSequence`].
const COMMAND_SEQUENCE_MINOR: u8 = 3;

pub async fn handle(conn: quinn::Connection, ctx: &Context, shutdown: watch::Receiver<bool>) {
    let Some((device, key)) = identify(&conn, ctx).await else {
        return;
    };
    let Ok(Ok((send, mut recv))) = tokio::time::timeout(HELLO_TIMEOUT, conn.accept_bi()).await else {
        conn.close(close_code::PROTOCOL.into(), b"no session stream");
        return;
    };
    let (running_pack, last_command_seq, agent_minor) = match tokio::time::timeout(
        HELLO_TIMEOUT,
        read_frame::<AgentMessage>(&mut recv, ctx.config.ingest.max_frame_bytes),
    )
    .await
    {
        Ok(Ok(Some(AgentMessage::Hello(hello)))) if hello.device_id == device => {
            debug!(%device, version = %hello.agent_version, "session hello");
            (hello.rule_pack_version, hello.last_command_seq, hello.protocol_minor)
        }
        Ok(Ok(Some(AgentMessage::Hello(_)))) => {
            ctx.metrics.reject("wrong_device");
            conn.close(close_code::WRONG_DEVICE.into(), b"hello names another device");
            return;
        }
        _ => {
            ctx.metrics.reject("protocol");
            conn.close(close_code::PROTOCOL.into(), b"expected hello");
            return;
        }
    };

    // Before the welcome, so a command approved once the session is up is numbered
    // above what the device has accepted.
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
            Err(_) => return, // The writer stopped: shutting down.
        }
    }
    let (out_tx, out_rx) = mpsc::channel::<CollectorMessage>(64);
    tokio::spawn(outbound(send, out_rx));
    let welcome = Welcome {
        server_time_ms: now_ms(),
        protocol_major: PROTOCOL_MAJOR,
        protocol_minor: PROTOCOL_MINOR,
    };
    if out_tx.send(CollectorMessage::Welcome(welcome)).await.is_err() {
        return;
    }
    // Before any command or rule pack, which may be signed with a rolled-over key.
    // Agents of protocol minor 0 predate rollovers and could not decode one.
    if agent_minor < ROLLOVER_MINOR && !ctx.key_rollovers.is_empty() {
        warn!(%device, agent_minor, "agent too old for command-key rollovers: upgrade it, or it refuses commands signed with the new key");
    }
    for signed in ctx.key_rollovers.iter().filter(|_| agent_minor >= ROLLOVER_MINOR) {
        if out_tx
            .send(CollectorMessage::KeyRollover(signed.clone()))
            .await
            .is_err()
        {
            return;
        }
    }
    // Before any command: an agent that lost its record of the last command it
    // accepted refuses commands until it knows ours (replay protection never
    // falls open).
    if agent_minor >= COMMAND_SEQUENCE_MINOR {
        let seq = match ctx.reads.run(move |s| s.command_seq(device)).await {
            Ok(Ok(seq)) => Some(seq),
            Ok(Err(e)) | Err(e) => {
                // The agent keeps refusing commands until a later session tells it.
                warn!(%device, error = %e, "command sequence not read; not sent");
                None
            }
        };
        if let Some(last_assigned) = seq
            && out_tx
                .send(CollectorMessage::CommandSequence { last_assigned })
                .await
                .is_err()
        {
            return;
        }
    }
    // Commands approved while this session starts wait for `session_ready` below.
    ctx.deliveries.session_starting(device, conn.stable_id()).await;
    if ctx.registry.register(device, conn.clone(), out_tx.clone()) {
        ctx.metrics.identity_conflicts.inc();
        warn!(%device, remote = %conn.remote_address(), "device connected while its previous connection was alive");
    }
    ctx.metrics.connected_agents.inc();
    info!(%device, remote = %conn.remote_address(), "agent connected");
    let mut pack_sent = running_pack;
    offer_rule_pack(ctx, &out_tx, &mut pack_sent);
    // Approved commands that waited for this device, in sequence order.
    ctx.deliveries
        .session_ready(device, conn.stable_id(), last_command_seq, &out_tx)
        .await;
    let peer = Peer {
        conn: &conn,
        device,
        key,
        out: &out_tx,
    };
    let reason = run(&peer, ctx, &mut recv, shutdown, &mut pack_sent).await;
    ctx.deliveries.session_ended(device, conn.stable_id()).await;
    ctx.registry.unregister(device, &conn);
    ctx.metrics.connected_agents.dec();
    info!(%device, %reason, "agent session ended");
    let _ = ctx.writer.run(move |store| store.touch_device(device, now_ms())).await;
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
    out: &'a mpsc::Sender<CollectorMessage>,
}

/// A device clock further from the collector's than the agents' default
/// `response.clock_skew_ms` makes them refuse commands: warned about.
pub const CLOCK_SKEW_WARN_MS: u64 = ward_protocol::auth::DEFAULT_CLOCK_SKEW_MS;

async fn run(
    peer: &Peer<'_>,
    ctx: &Context,
    recv: &mut quinn::RecvStream,
    mut shutdown: watch::Receiver<bool>,
    pack_sent: &mut u64,
) -> String {
    let Peer { conn, device, out, .. } = *peer;
    // Kept across reconnects: a device cannot buy a fresh burst by reconnecting.
    let limits = ctx.limits.of(device, &ctx.config.ingest);
    let max = ctx.config.ingest.max_frame_bytes;
    // The clock skew last warned about in this session.
    let mut warned_skew = 0i64;
    let warned_skew = &mut warned_skew;
    // The outbox epoch this session has made current (protocol 1.4), and the storage
    // state last recorded, so each is written only when it changes.
    let mut epoch: Option<u64> = None;
    let mut storage: Option<Option<String>> = None;
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
            AgentMessage::Heartbeat(_) | AgentMessage::Health(_) => Some(Kind::Heartbeat),
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
        match msg {
            AgentMessage::Alerts(batch) => {
                if let Err(reason) = alerts(peer, ctx, batch).await {
                    return reason;
                }
            }
            AgentMessage::Heartbeat(hb) => {
                if hb.rule_pack_version < *pack_sent {
                    // The agent did not take the pack it was sent (or lost it): offer it again.
                    *pack_sent = hb.rule_pack_version;
                }
                offer_rule_pack(ctx, out, pack_sent);
                let now = now_ms();
                let skew = i64::try_from(hb.sent_at_ms).unwrap_or(i64::MAX) - i64::try_from(now).unwrap_or(i64::MAX);
                // Said when it starts or changes by a second, not every heartbeat.
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
            AgentMessage::Dropped(report) => {
                warn!(%device, dropped = report.dropped, reason = %clip_device_text(&report.reason), "agent dropped alerts");
                let seqs: Vec<u64> = report.seqs.into_iter().take(MAX_DROP_SEQS).collect();
                let _ = ctx
                    .writer
                    .run(move |s| s.record_drops(device, report.dropped, &seqs, &report.reason, now_ms()))
                    .await;
            }
            AgentMessage::EpochAlerts(batch) => {
                if let Err(reason) = switch_epoch(ctx, device, batch.epoch, &mut epoch).await {
                    return reason;
                }
                let batch = AlertBatch {
                    batch_id: batch.batch_id,
                    alerts: batch.alerts,
                };
                if let Err(reason) = alerts(peer, ctx, batch).await {
                    return reason;
                }
            }
            AgentMessage::DropNotice(notice) => {
                warn!(%device, dropped = notice.report.dropped, reason = %clip_device_text(&notice.report.reason), "agent dropped alerts");
                let report_id = notice.report_id;
                let stored = ctx
                    .writer
                    .run(move |s| s.record_drop_notice(device, &notice, now_ms()))
                    .await;
                match stored {
                    // Acknowledged only once stored: until then the agent keeps it.
                    Ok(Ok(_)) => {
                        if out.send(CollectorMessage::DropStored { report_id }).await.is_err() {
                            return "outbound closed".into();
                        }
                    }
                    Ok(Err(e)) => warn!(%device, error = %e, "drop report not stored; the agent sends it again"),
                    Err(e) => return e.to_string(),
                }
            }
            AgentMessage::Health(health) => {
                if let Err(reason) = switch_epoch(ctx, device, health.epoch, &mut epoch).await {
                    return reason;
                }
                if storage.as_ref() != Some(&health.storage_error) {
                    if let Some(e) = &health.storage_error {
                        warn!(%device, error = %e, waiting = health.alerts_waiting, lost = health.alerts_lost, "agent cannot store alerts");
                    }
                    let error = health.storage_error.clone();
                    let _ = ctx
                        .writer
                        .run(move |s| s.set_storage_error(device, error.as_deref(), now_ms()))
                        .await;
                    storage = Some(health.storage_error);
                }
            }
            AgentMessage::CommandResult(signed) => {
                let audit = match limits.lock() {
                    Ok(mut l) => l.audit(),
                    Err(p) => p.into_inner().audit(),
                };
                if let Err(reason) = command_result(peer, ctx, &signed, audit).await {
                    return reason;
                }
            }
            AgentMessage::Hello(_) | AgentMessage::Enroll(_) => {
                ctx.metrics.reject("protocol");
                conn.close(close_code::PROTOCOL.into(), b"unexpected message in session");
                return "unexpected message".into();
            }
        }
    }
}

/// Makes `new` the device's outbox epoch before anything numbered in it is stored.
async fn switch_epoch(ctx: &Context, device: DeviceId, new: u64, current: &mut Option<u64>) -> Result<(), String> {
    if *current == Some(new) {
        return Ok(());
    }
    let changed = ctx
        .writer
        .run(move |s| s.switch_epoch(device, new, now_ms()))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    if changed {
        info!(%device, epoch = %format!("{new:016x}"), "device outbox epoch");
    }
    *current = Some(new);
    Ok(())
}

/// Sends the newest rule pack if the agent has not been sent it yet.
fn offer_rule_pack(ctx: &Context, out: &mpsc::Sender<CollectorMessage>, sent: &mut u64) {
    if let Some((version, signed)) = ctx.newer_rule_pack(*sent)
        && out.try_send(CollectorMessage::RulePack(signed)).is_ok()
    {
        *sent = version;
    }
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

async fn alerts(peer: &Peer<'_>, ctx: &Context, batch: AlertBatch) -> Result<(), String> {
    let Peer { conn, device, key, out } = *peer;
    if batch.alerts.is_empty() {
        // Nothing to store: answered without the writer.
        let ack = Ack {
            batch_id: batch.batch_id,
            stored: 0,
            duplicates: 0,
        };
        return out
            .send(CollectorMessage::Ack(ack))
            .await
            .map_err(|_| "outbound closed".to_string());
    }
    ctx.metrics.alerts_received.add(batch.alerts.len() as u64);
    let verified = match ctx.verify.verify(device, key, batch.alerts).await {
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
    let ack = Ack {
        batch_id: batch.batch_id,
        // A folded alert is durably kept too (in the row it was folded into).
        stored: outcome.stored + outcome.folded,
        duplicates: outcome.duplicates,
    };
    out.send(CollectorMessage::Ack(ack))
        .await
        .map_err(|_| "outbound closed".to_string())
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
async fn outbound(mut send: quinn::SendStream, mut rx: mpsc::Receiver<CollectorMessage>) {
    while let Some(msg) = rx.recv().await {
        if let Err(e) = write_frame(&mut send, &msg, MAX_COLLECTOR_FRAME).await {
            debug!(error = %e, "outbound stream closed");
            return;
        }
    }
    let _ = send.finish();
}
