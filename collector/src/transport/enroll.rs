//! Enrollment: an agent with a join token but no certificate yet proves it holds
//! the token and its signing key; the collector registers the device and issues
//! its client certificate. The signature is checked before the request is decoded.

use std::time::Duration;

use ring::rand::SystemRandom;
use tracing::{debug, info, warn};
use ward_protocol::codec::MAX_COLLECTOR_FRAME;
use ward_protocol::message::close_code;
use ward_protocol::{AgentMessage, CollectorMessage, DeviceId, EnrollRequest, EnrollResponse, SignatureKind};

use super::admission::PendingGuard;
use super::{Context, read_frame, write_frame};
use crate::pki::fingerprint;
use crate::store::NewDevice;
use crate::store::prelude::*;
use crate::util::{now_ms, sha256};

/// An enrollment request is small; anything larger is refused unread.
const MAX_ENROLL_FRAME: u32 = 64 * 1024;

/// How long after the handshake the enrollment request must have arrived: it
/// is one small frame. A connection that says nothing is closed then, holding
/// nothing but its own place meanwhile.
pub const REQUEST_DEADLINE: Duration = Duration::from_secs(5);
/// How long a read request may wait for one of the enrollment slots (the
/// signature check, certificate and database write) and be answered.
pub const DECIDE_DEADLINE: Duration = Duration::from_secs(10);

pub async fn handle(conn: quinn::Connection, pending: PendingGuard, ctx: &Context) {
    let remote = conn.remote_address();
    // Counted as unauthenticated (per address and in total) until answered.
    let _pending = pending;
    // The request is read without an enrollment slot: slots are held only for
    // the work, never while a peer keeps quiet.
    let request = match tokio::time::timeout(REQUEST_DEADLINE, read_request(&conn)).await {
        Ok(Ok(r)) => r,
        Ok(Err(reason)) => {
            ctx.metrics.enrollments_refused.inc();
            debug!(%remote, %reason, "enrollment request unreadable");
            conn.close(close_code::PROTOCOL.into(), reason.as_bytes());
            return;
        }
        Err(_) => {
            ctx.metrics.enrollments_refused.inc();
            ctx.metrics.reject("enroll_request_timeout");
            conn.close(close_code::PROTOCOL.into(), b"enrollment request not sent in time");
            return;
        }
    };
    let result = tokio::time::timeout(DECIDE_DEADLINE, async {
        let Ok(_slot) = ctx.enroll_slots.acquire().await else {
            return Err("collector stopping".to_string());
        };
        exchange(request, ctx).await
    })
    .await;
    match result {
        Ok(Ok(device)) => {
            ctx.metrics.enrollments_accepted.inc();
            info!(%remote, %device, "device enrolled");
            // Let the agent read the answer before the connection goes.
            let _ = tokio::time::timeout(Duration::from_secs(5), conn.closed()).await;
        }
        Ok(Err(reason)) => {
            ctx.metrics.enrollments_refused.inc();
            warn!(%remote, %reason, "enrollment refused");
            let _ = tokio::time::timeout(Duration::from_secs(2), conn.closed()).await;
            conn.close(close_code::ENROLL_REFUSED.into(), reason.as_bytes());
        }
        Err(_) => {
            ctx.metrics.enrollments_refused.inc();
            conn.close(close_code::BUSY.into(), b"enrollment timed out; retry later");
        }
    }
}

/// The request's stream and message.
async fn read_request(conn: &quinn::Connection) -> Result<(quinn::SendStream, AgentMessage), String> {
    let (send, mut recv) = conn.accept_bi().await.map_err(|e| e.to_string())?;
    let msg: AgentMessage = read_frame(&mut recv, MAX_ENROLL_FRAME)
        .await
        .map_err(|e| e.to_string())?
        .ok_or("stream ended before the enrollment request")?;
    Ok((send, msg))
}

/// Decides and answers; on refusal the reason has been sent to the agent too.
async fn exchange((mut send, msg): (quinn::SendStream, AgentMessage), ctx: &Context) -> Result<DeviceId, String> {
    let decision = decide(msg, ctx).await;
    let response = match &decision {
        Ok((device, cert)) => EnrollResponse::Accepted {
            device_id: *device,
            client_cert_der: cert.clone(),
            ca_cert_der: ctx.ca.cert_der.clone(),
            command_keys: vec![ctx.command_key],
        },
        Err(reason) => EnrollResponse::Refused { reason: reason.clone() },
    };
    write_frame(&mut send, &CollectorMessage::Enrolled(response), MAX_COLLECTOR_FRAME)
        .await
        .map_err(|e| e.to_string())?;
    let _ = send.finish();
    decision.map(|(device, _)| device)
}

async fn decide(msg: AgentMessage, ctx: &Context) -> Result<(DeviceId, Vec<u8>), String> {
    let AgentMessage::Enroll(envelope) = msg else {
        return Err("expected an enrollment request".into());
    };
    let request: EnrollRequest = envelope
        .request
        .open(SignatureKind::Enrollment, &envelope.signing_key)
        .map_err(|e| format!("enrollment request: {e}"))?;
    if request.signing_key != envelope.signing_key {
        return Err("enrollment request signed by another key than it names".into());
    }
    let now = now_ms();
    let device = DeviceId::generate(now, &SystemRandom::new()).map_err(|e| e.to_string())?;
    let cert = ctx
        .ca
        .issue_device_cert(&device.to_string(), &request.tls_key.0)
        .map_err(|e| format!("cannot issue certificate: {e}"))?;
    let new = NewDevice {
        id: device,
        signing_key: request.signing_key,
        cert_sha256: fingerprint(&cert),
        inventory: request.inventory,
    };
    let secret = sha256(&request.token_secret);
    let outcome = ctx
        .writer
        .run(move |store| store.enroll(&secret, &new, now))
        .await
        .map_err(|e| e.to_string())?;
    match outcome {
        Ok(Ok(())) => Ok((device, cert)),
        Ok(Err(refusal)) => Err(refusal.to_string()),
        Err(e) => Err(format!("storage: {e}")),
    }
}
