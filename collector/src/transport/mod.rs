//! The agent-facing QUIC endpoint: accepts connections up to the configured cap,
//! dispatches by ALPN to enrollment or to a session, and frames messages on the
//! streams. The only module (with `tls`, and `https` for the API) that touches
//! quinn or rustls.

pub mod admission;
mod enroll;
pub mod https;
pub mod limits;
pub mod registry;
pub mod reset;
mod session;
pub mod tickets;
pub mod tls;

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use thiserror::Error;
use tokio::sync::{Semaphore, watch};
use tracing::{debug, info, warn};
use ward_protocol::codec::{FrameHeader, HEADER_LEN, decode_body, encode_frame};
use ward_protocol::message::close_code;
use ward_protocol::version::{ALPN_ENROLL, ALPN_SESSION};
use ward_protocol::{FrameError, PublicKey};

use crate::config::Config;
use crate::ingest::{VerifyPool, Writer};
use crate::metrics::Metrics;
use crate::pki::Ca;
use crate::readpool::ReadPool;
use crate::store::prelude::*;
pub use registry::Registry;

/// What every connection handler shares.
pub struct Context {
    pub config: Config,
    pub ca: Ca,
    pub command_key: PublicKey,
    pub writer: Writer,
    pub verify: VerifyPool,
    pub reads: ReadPool,
    pub metrics: Arc<Metrics>,
    pub registry: Arc<Registry>,
    /// Pushes stored commands to sessions; told when sessions start and end.
    pub deliveries: Arc<crate::actions::delivery::Deliveries>,
    /// Devices revoked since start (and at start), checked before every batch.
    pub revoked: Arc<std::sync::RwLock<std::collections::HashSet<ward_protocol::DeviceId>>>,
    pub enroll_slots: Semaphore,
    /// Open connections and unfinished enrollments ([`admission`]).
    pub admission: admission::Admission,
    /// Each device's message budgets ([`limits`]).
    pub limits: limits::Limits,
    /// Heartbeats not yet written: the newest per device ([`write_heartbeats`]).
    pub heartbeats: std::sync::Mutex<std::collections::HashMap<ward_protocol::DeviceId, crate::store::DeviceState>>,
    /// Every command-key rollover, oldest first: the first thing each session sends.
    pub key_rollovers: Vec<ward_protocol::Signed>,
    /// The newest signed rule pack, pushed to every agent that runs an older one.
    pub rule_pack: std::sync::RwLock<Option<(u64, ward_protocol::Signed)>>,
}

impl Context {
    /// The newest rule pack if it is newer than `running`.
    pub fn newer_rule_pack(&self, running: u64) -> Option<(u64, ward_protocol::Signed)> {
        self.rule_pack
            .read()
            .ok()?
            .as_ref()
            .filter(|(v, _)| *v > running)
            .cloned()
    }
}

/// How often buffered heartbeats are written.
pub const HEARTBEAT_WRITE_EVERY: Duration = Duration::from_secs(1);

/// Writes the buffered heartbeats in one transaction. Heartbeats are soft state
/// (last seen, isolation, outbox depth, inventory): one transaction a second for
/// all devices instead of one each (10,000 agents every 30 s would otherwise cost the
/// writer over 300 synced transactions a second).
pub async fn flush_heartbeats(ctx: &Context) {
    let states: Vec<_> = match ctx.heartbeats.lock() {
        Ok(mut pending) => pending.drain().collect(),
        Err(_) => return,
    };
    if states.is_empty() {
        return;
    }
    let count = states.len();
    match ctx.writer.run(move |s| s.update_device_states(&states)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => warn!(devices = count, error = %e, "heartbeats not written"),
        Err(_) => {}
    }
}

/// Writes buffered heartbeats every [`HEARTBEAT_WRITE_EVERY`] until `shutdown` flips.
pub async fn write_heartbeats(ctx: Arc<Context>, mut shutdown: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(HEARTBEAT_WRITE_EVERY);
    loop {
        tokio::select! {
            _ = tick.tick() => flush_heartbeats(&ctx).await,
            _ = shutdown.changed() => return,
        }
    }
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context").finish_non_exhaustive()
    }
}

/// Kernel buffer sizes asked for the endpoint's UDP socket.
#[derive(Debug, Clone, Copy)]
pub struct SocketBuffers {
    pub recv_bytes: usize,
    pub send_bytes: usize,
}

/// The agent-facing QUIC endpoint on `addr`, and the address it got. Its UDP socket
/// asks for `buffers` first: a restart meets every agent's handshake at once, and a
/// default-sized receive buffer drops them (logged when the kernel gives less).
pub fn bind(
    endpoint_config: quinn::EndpointConfig,
    config: quinn::ServerConfig,
    addr: std::net::SocketAddr,
    buffers: SocketBuffers,
) -> std::io::Result<(quinn::Endpoint, std::net::SocketAddr)> {
    let socket = udp_socket(addr, buffers)?;
    let runtime =
        quinn::default_runtime().ok_or_else(|| std::io::Error::other("no async runtime for the QUIC endpoint"))?;
    let endpoint = quinn::Endpoint::new(endpoint_config, Some(config), socket, runtime)?;
    let local = endpoint.local_addr()?;
    Ok((endpoint, local))
}

fn udp_socket(addr: std::net::SocketAddr, buffers: SocketBuffers) -> std::io::Result<std::net::UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        // As std binds "[::]": IPv4 agents too where the system allows it.
        let _ = socket.set_only_v6(false);
    }
    // Linux caps each at net.core.[rw]mem_max and reports twice what it keeps.
    let _ = socket.set_recv_buffer_size(buffers.recv_bytes);
    let _ = socket.set_send_buffer_size(buffers.send_bytes);
    let got_recv = socket.recv_buffer_size().unwrap_or(0) / 2;
    let got_send = socket.send_buffer_size().unwrap_or(0) / 2;
    if got_recv < buffers.recv_bytes || got_send < buffers.send_bytes {
        warn!(
            asked_recv = buffers.recv_bytes,
            got_recv,
            asked_send = buffers.send_bytes,
            got_send,
            "the kernel gave the QUIC socket smaller buffers than asked (net.core.rmem_max / wmem_max); \
             a reconnect storm may lose handshakes"
        );
    } else {
        info!(recv = got_recv, send = got_send, "QUIC socket buffers");
    }
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

/// Accepts connections until `shutdown` flips, then waits for sessions to finish
/// their in-flight batch and closes the endpoint.
pub async fn serve(endpoint: quinn::Endpoint, ctx: Arc<Context>, mut shutdown: watch::Receiver<bool>) {
    let mut tasks = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            incoming = endpoint.accept() => {
                let Some(incoming) = incoming else { break };
                // Every connection counts from its first packet: handshaking, enrolling
                // and not yet welcomed ones too, so they cannot pile up past the cap.
                let Some(open) = ctx.admission.try_open(ctx.config.ingest.max_connections as usize) else {
                    ctx.metrics.reject("too_many_connections");
                    debug!(remote = %incoming.remote_address(), "refused: too many connections");
                    incoming.refuse();
                    continue;
                };
                // Under load an unproven address first proves itself (stateless Retry).
                if admission::should_retry(
                    incoming.remote_address_validated(),
                    incoming.may_retry(),
                    ctx.admission.pending(),
                    ctx.config.ingest.retry_unvalidated_above,
                ) {
                    drop(open);
                    let remote = incoming.remote_address();
                    if incoming.retry().is_ok() {
                        ctx.metrics.quic_retries.inc();
                        debug!(%remote, "asked to retry (address validation under load)");
                    }
                    continue;
                }
                // Bounded per address before any handshake work is spent on it.
                let pending = match ctx.admission.try_pending(incoming.remote_address().ip()) {
                    Ok(p) => p,
                    Err(busy) => {
                        ctx.metrics.reject(busy.as_str());
                        debug!(remote = %incoming.remote_address(), reason = busy.as_str(), "refused");
                        incoming.refuse();
                        continue;
                    }
                };
                let ctx = Arc::clone(&ctx);
                let shutdown = shutdown.clone();
                tasks.spawn(async move {
                    handle(incoming, pending, ctx, shutdown).await;
                    drop(open);
                });
            }
            _ = shutdown.changed() => break,
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
        }
    }
    info!("agent endpoint stopping: letting sessions finish their current batch");
    let drain = async { while tasks.join_next().await.is_some() {} };
    let _ = tokio::time::timeout(std::time::Duration::from_secs(10), drain).await;
    ctx.registry.close_all(close_code::SHUTDOWN, "collector shutting down");
    endpoint.close(close_code::SHUTDOWN.into(), b"collector shutting down");
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), endpoint.wait_idle()).await;
}

async fn handle(
    incoming: quinn::Incoming,
    pending: admission::PendingGuard,
    ctx: Arc<Context>,
    shutdown: watch::Receiver<bool>,
) {
    let remote = incoming.remote_address();
    let conn = match tokio::time::timeout(tls::HANDSHAKE_TIMEOUT, incoming).await {
        Ok(Ok(conn)) => {
            debug!(%remote, "handshake done");
            conn
        }
        Ok(Err(e)) => {
            debug!(%remote, error = %e, "handshake failed");
            return;
        }
        Err(_) => {
            ctx.metrics.reject("handshake_timeout");
            debug!(%remote, "handshake timed out");
            return;
        }
    };
    let alpn = conn
        .handshake_data()
        .and_then(|d| d.downcast::<quinn::crypto::rustls::HandshakeData>().ok())
        .and_then(|d| d.protocol);
    match alpn.as_deref() {
        // An enrollment stays unauthenticated until it is answered.
        Some(p) if p == ALPN_ENROLL => enroll::handle(conn, pending, &ctx).await,
        // A session's client certificate was verified in the handshake.
        Some(p) if p == ALPN_SESSION => {
            drop(pending);
            session::handle(conn, &ctx, shutdown).await
        }
        _ => conn.close(close_code::PROTOCOL.into(), b"unknown application protocol"),
    }
}

/// Reading a frame failed.
#[derive(Debug, Error)]
pub enum ReadError {
    #[error("{0}")]
    Frame(#[from] FrameError),
    #[error("stream: {0}")]
    Stream(String),
    #[error("frame not finished in time (10 s, plus 1 s per 32 KiB it declared)")]
    Stalled,
}

/// How long a frame may take from its first byte to its last, plus one second
/// for every [`FRAME_MIN_BYTES_PER_SEC`] of its declared length (a large batch on
/// a slow uplink). Between frames a peer may be idle as long as it likes; a
/// frame begun and never finished (a declared length that never arrives) would
/// otherwise hold its buffer forever.
pub const FRAME_DEADLINE: Duration = Duration::from_secs(10);
/// The slowest sending rate a frame's deadline allows for (256 kbit/s).
pub const FRAME_MIN_BYTES_PER_SEC: u64 = 32 * 1024;

/// Reads one frame; `Ok(None)` when the peer finished the stream cleanly.
/// The header's length is checked against `max` before the body is allocated,
/// and the frame must be complete within its deadline ([`FRAME_DEADLINE`]).
pub async fn read_frame<T: DeserializeOwned>(recv: &mut quinn::RecvStream, max: u32) -> Result<Option<T>, ReadError> {
    let mut header = [0u8; HEADER_LEN];
    // The first byte may be long in coming; the rest of the frame may not.
    match recv.read_exact(&mut header[..1]).await {
        Ok(()) => {}
        Err(quinn::ReadExactError::FinishedEarly(_)) => return Ok(None),
        Err(quinn::ReadExactError::ReadError(e)) => return Err(ReadError::Stream(e.to_string())),
    }
    let started = tokio::time::Instant::now();
    let rest_of_header = tokio::time::timeout(FRAME_DEADLINE, recv.read_exact(&mut header[1..]))
        .await
        .map_err(|_| ReadError::Stalled)?;
    match rest_of_header {
        Ok(()) => {}
        Err(quinn::ReadExactError::FinishedEarly(n)) => {
            return Err(FrameError::Truncated {
                needed: HEADER_LEN - 1 - n,
            }
            .into());
        }
        Err(quinn::ReadExactError::ReadError(e)) => return Err(ReadError::Stream(e.to_string())),
    }
    let header = FrameHeader::parse(&header, max)?;
    let mut body = vec![0u8; header.body_len as usize];
    let deadline = started + FRAME_DEADLINE + Duration::from_secs(u64::from(header.body_len) / FRAME_MIN_BYTES_PER_SEC);
    tokio::time::timeout_at(deadline, recv.read_exact(&mut body))
        .await
        .map_err(|_| ReadError::Stalled)?
        .map_err(|e| match e {
            quinn::ReadExactError::FinishedEarly(n) => ReadError::Frame(FrameError::Truncated {
                needed: body_len(&header) - n,
            }),
            quinn::ReadExactError::ReadError(e) => ReadError::Stream(e.to_string()),
        })?;
    Ok(Some(decode_body(&body)?))
}

fn body_len(h: &FrameHeader) -> usize {
    h.body_len as usize
}

/// Writes one frame.
pub async fn write_frame<T: Serialize>(send: &mut quinn::SendStream, msg: &T, max: u32) -> Result<(), ReadError> {
    let frame = encode_frame(msg, max)?;
    send.write_all(&frame)
        .await
        .map_err(|e| ReadError::Stream(e.to_string()))
}

#[cfg(test)]
mod socket_tests {
    use super::*;

    /// The endpoint's socket gets the buffers asked for when the kernel allows them
    /// (64 KiB is under Linux's default maximum) and is bound where asked.
    #[test]
    fn the_udp_socket_gets_its_buffers_and_address() {
        let buffers = SocketBuffers {
            recv_bytes: 64 << 10,
            send_bytes: 48 << 10,
        };
        let socket = udp_socket("127.0.0.1:0".parse().unwrap(), buffers).unwrap();
        let s = socket2::SockRef::from(&socket);
        assert!(s.recv_buffer_size().unwrap() / 2 >= buffers.recv_bytes);
        assert!(s.send_buffer_size().unwrap() / 2 >= buffers.send_bytes);
        assert!(socket.local_addr().unwrap().port() != 0);
    }
}
