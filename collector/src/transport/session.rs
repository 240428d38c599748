//! One enrolled agent's session. Identity comes from the client certificate,
//! never from the payload. Frames are read one at a time from the agent's single
//! long-lived stream; an alert batch is rate-limited, verified on the pool,
//! committed by the writer and only then acknowledged. A bad frame or signature
//! closes this connection with a reason and affects no other agent.

use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};
use tracing::{debug, info, warn};
use ward_protocol::codec::MAX_COLLECTOR_FRAME;
use ward_protocol::message::{Ack, AlertBatch, Welcome, close_code};
use ward_protocol::{AgentMessage, CollectorMessage, DeviceId, PROTOCOL_MAJOR, PROTOCOL_MINOR, PublicKey};

use super::{Context, ReadError, read_frame, write_frame};
use crate::actions;
use crate::pki::fingerprint;
use crate::store::DeviceState;
use crate::util::now_ms;

const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// The protocol minor version that added [`CollectorMessage::KeyRollover`].
const ROLLOVER_MINOR: u8 = 1;

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
    // Commands approved while this session starts wait for `session_ready` below.
    actions::dispatch::session_starting(device, conn.stable_id()).await;
    if ctx.registry.register(device, conn.clone(), out_tx.clone()) {
        ctx.metrics.identity_conflicts.inc();
        warn!(%device, remote = %conn.remote_address(), "device connected while its previous connection was alive");
    }
    ctx.metrics.connected_agents.inc();
    info!(%device, remote = %conn.remote_address(), "agent connected");
    let mut pack_sent = running_pack;
    offer_rule_pack(ctx, &out_tx, &mut pack_sent);
    // Approved commands that waited for this device, in sequence order.
    actions::dispatch::session_ready(&ctx.reads, device, conn.stable_id(), last_command_seq, &out_tx).await;
    let peer = Peer {
        conn: &conn,
        device,
        key,
        out: &out_tx,
    };
    let reason = run(&peer, ctx, &mut recv, shutdown, &mut pack_sent).await;
    actions::dispatch::session_ended(device, conn.stable_id()).await;
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

/// Token bucket of alerts per second. Over the rate, the session sleeps before
/// reading on: the agent is slowed by QUIC flow control, nothing is dropped.
struct RateLimit {
    per_sec: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl RateLimit {
    fn new(per_sec: u32, burst: u32) -> Self {
        let burst = f64::from(burst.max(per_sec));
        RateLimit {
            per_sec: f64::from(per_sec),
            burst,
            tokens: burst,
            last: Instant::now(),
        }
    }

    /// Takes `n` tokens; returns how long to wait before they are paid for.
    fn take(&mut self, n: usize) -> Duration {
        let now = Instant::now();
        self.tokens = (self.tokens + now.duration_since(self.last).as_secs_f64() * self.per_sec).min(self.burst);
        self.last = now;
        self.tokens -= n as f64;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / self.per_sec)
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

async fn run(
    peer: &Peer<'_>,
    ctx: &Context,
    recv: &mut quinn::RecvStream,
    mut shutdown: watch::Receiver<bool>,
    pack_sent: &mut u64,
) -> String {
    let Peer { conn, device, out, .. } = *peer;
    let mut limit = RateLimit::new(
        ctx.config.ingest.max_alerts_per_second_per_agent,
        ctx.config.ingest.burst_alerts_per_agent,
    );
    let max = ctx.config.ingest.max_frame_bytes;
    // The outbox epoch this session has made current (protocol 1.3), and the storage
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
        };
        if is_revoked(ctx, &device) {
            ctx.metrics.reject("revoked");
            conn.close(close_code::REVOKED.into(), b"device revoked");
            return "device revoked".into();
        }
        match msg {
            AgentMessage::Alerts(batch) => {
                if let Err(reason) = alerts(peer, ctx, batch, &mut limit).await {
                    return reason;
                }
            }
            AgentMessage::Heartbeat(hb) => {
                if hb.rule_pack_version < *pack_sent {
                    // The agent did not take the pack it was sent (or lost it): offer it again.
                    *pack_sent = hb.rule_pack_version;
                }
                offer_rule_pack(ctx, out, pack_sent);
                let state = DeviceState {
                    seen_at_ms: now_ms(),
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
                warn!(%device, dropped = report.dropped, reason = %report.reason, "agent dropped alerts");
                let seqs: Vec<u64> = report.seqs.into_iter().take(10_000).collect();
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
                if let Err(reason) = alerts(peer, ctx, batch, &mut limit).await {
                    return reason;
                }
            }
            AgentMessage::DropNotice(notice) => {
                warn!(%device, dropped = notice.report.dropped, reason = %notice.report.reason, "agent dropped alerts");
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
                if let Err(reason) = command_result(peer, ctx, &signed).await {
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

async fn alerts(peer: &Peer<'_>, ctx: &Context, batch: AlertBatch, limit: &mut RateLimit) -> Result<(), String> {
    let Peer { conn, device, key, out } = *peer;
    ctx.metrics.alerts_received.add(batch.alerts.len() as u64);
    let wait = limit.take(batch.alerts.len());
    if !wait.is_zero() {
        ctx.metrics.throttled_batches.inc();
        tokio::time::sleep(wait).await;
    }
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
    let outcome = ctx
        .writer
        .store_alerts(device, verified)
        .await
        .map_err(|e| e.to_string())?;
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
/// the connection, as a bad alert does; both are audited.
async fn command_result(peer: &Peer<'_>, ctx: &Context, signed: &ward_protocol::Signed) -> Result<(), String> {
    let Peer { conn, device, key, .. } = *peer;
    match actions::dispatch::record_result(&ctx.writer, device, &key, signed).await {
        Ok(Ok(_)) => {
            // The device may have been sent less than it should (a full queue): catch up.
            actions::dispatch::push(&ctx.reads, &ctx.registry, device).await;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limit_allows_the_burst_then_paces() {
        let mut l = RateLimit::new(1000, 2000);
        assert_eq!(l.take(2000), Duration::ZERO);
        let wait = l.take(500);
        assert!(
            wait > Duration::from_millis(400) && wait <= Duration::from_millis(501),
            "{wait:?}"
        );
    }
}
