//! The QUIC link to the collector: enrollment, and the session that carries
//! alert batches, heartbeats and results up and acknowledgements, commands and
//! rule packs down. The only agent module that uses quinn or rustls.
//!
//! A session's rules are [`ward_protocol::session::AgentSession`]'s: [`Session::open`]
//! drives it through hello and welcome, and [`Live`] is the IO its driver
//! ([`crate::delivery`]) needs afterwards: the frames in, the frames out, and the QUIC
//! stack's count of acknowledgements (whether a slow collector is alive).

pub mod tls;

use std::net::SocketAddr;
use std::sync::Arc;

use serde::Serialize;
use serde::de::DeserializeOwned;
use thiserror::Error;
use ward_protocol::codec::{FrameHeader, HEADER_LEN, MAX_AGENT_FRAME, MAX_COLLECTOR_FRAME, decode_body, encode_frame};
use ward_protocol::enroll::EnrollEnvelope;
use ward_protocol::message::Hello;
use ward_protocol::session::{AgentEnd, AgentEvent, AgentSession, AgentTimers};
use ward_protocol::{
    AgentMessage, CollectorMessage, EnrollRequest, EnrollResponse, FrameError, Inventory, JoinToken, PROTOCOL_MAJOR,
    PROTOCOL_MINOR, SignatureKind, SigningKey,
};

use crate::identity::{CommandKeys, Enrollment, Identity, public_of};

/// A link failure. `retryable` says whether trying again later can help.
#[derive(Debug, Error)]
pub enum LinkError {
    #[error("cannot resolve collector address {0}")]
    Resolve(String),
    #[error("TLS setup: {0}")]
    Tls(String),
    #[error("connection: {0}")]
    Connect(String),
    #[error("collector closed the connection: {0}")]
    Closed(String),
    #[error("protocol: {0}")]
    Protocol(String),
    #[error("enrollment refused: {0}")]
    Refused(String),
    #[error("collector busy: {0}")]
    Busy(String),
}

impl LinkError {
    pub fn retryable(&self) -> bool {
        !matches!(self, LinkError::Tls(_) | LinkError::Refused(_))
    }
}

impl From<FrameError> for LinkError {
    fn from(e: FrameError) -> Self {
        LinkError::Protocol(e.to_string())
    }
}

pub async fn resolve(addr: &str) -> Result<SocketAddr, LinkError> {
    tokio::net::lookup_host(addr)
        .await
        .map_err(|e| LinkError::Resolve(format!("{addr}: {e}")))?
        .next()
        .ok_or_else(|| LinkError::Resolve(addr.to_string()))
}

/// The largest UDP payload the agent accepts: an Ethernet frame's. The collector
/// sends it acknowledgements and commands, never jumbo datagrams; quinn sizes its
/// receive buffer by this (with its 64 KiB default the buffer was 3 MB, a sixth of
/// an idle agent's memory budget).
const MAX_UDP_PAYLOAD: u16 = 1472;

/// A client endpoint (one UDP socket) that many connections can share.
pub fn client_endpoint(remote: &SocketAddr) -> Result<quinn::Endpoint, LinkError> {
    let bind: SocketAddr = if remote.is_ipv6() { "[::]:0" } else { "0.0.0.0:0" }
        .parse()
        .map_err(|_| LinkError::Connect("bind address".into()))?;
    let socket = std::net::UdpSocket::bind(bind).map_err(|e| LinkError::Connect(e.to_string()))?;
    let mut config = quinn::EndpointConfig::default();
    config
        .max_udp_payload_size(MAX_UDP_PAYLOAD)
        .map_err(|e| LinkError::Connect(e.to_string()))?;
    quinn::Endpoint::new(config, None, socket, Arc::new(quinn::TokioRuntime))
        .map_err(|e| LinkError::Connect(e.to_string()))
}

/// Reads one frame from a stream; `Ok(None)` when the peer finished it.
pub async fn read_frame<T: DeserializeOwned>(recv: &mut quinn::RecvStream, max: u32) -> Result<Option<T>, LinkError> {
    let mut header = [0u8; HEADER_LEN];
    match recv.read_exact(&mut header).await {
        Ok(()) => {}
        Err(quinn::ReadExactError::FinishedEarly(0)) => return Ok(None),
        Err(e) => return Err(closed(e)),
    }
    let header = FrameHeader::parse(&header, max)?;
    let mut body = vec![0u8; header.body_len as usize];
    recv.read_exact(&mut body).await.map_err(closed)?;
    Ok(Some(decode_body(&body)?))
}

/// This device's clock minus the collector's: the server's time is taken as the
/// midpoint of the hello's round trip.
pub fn clock_skew(asked_ms: u64, answered_ms: u64, server_ms: u64) -> i64 {
    let mid = asked_ms / 2 + answered_ms / 2 + (asked_ms % 2 + answered_ms % 2) / 2;
    i64::try_from(mid).unwrap_or(i64::MAX) - i64::try_from(server_ms).unwrap_or(i64::MAX)
}

fn closed(e: quinn::ReadExactError) -> LinkError {
    match e {
        quinn::ReadExactError::ReadError(quinn::ReadError::ConnectionLost(c)) if busy(&c) => {
            LinkError::Busy(c.to_string())
        }
        quinn::ReadExactError::ReadError(quinn::ReadError::ConnectionLost(c)) => LinkError::Closed(c.to_string()),
        other => LinkError::Closed(other.to_string()),
    }
}

pub async fn write_frame<T: Serialize>(send: &mut quinn::SendStream, msg: &T) -> Result<(), LinkError> {
    let frame = encode_frame(msg, MAX_AGENT_FRAME)?;
    send.write_all(&frame)
        .await
        .map_err(|e| LinkError::Closed(e.to_string()))
}

/// How long enrollment keeps retrying a collector that says it is busy.
pub const ENROLL_RETRY_FOR: std::time::Duration = std::time::Duration::from_secs(60);

/// Whether a connection error is the collector refusing for load (too many
/// unauthenticated connections from this address or in all, its handshake or
/// enrollment deadline passed): worth a retry.
fn busy(e: &quinn::ConnectionError) -> bool {
    match e {
        quinn::ConnectionError::ConnectionClosed(c) => {
            c.error_code == quinn::TransportErrorCode::CONNECTION_REFUSED
                || c.error_code == quinn::TransportErrorCode::APPLICATION_ERROR
        }
        quinn::ConnectionError::ApplicationClosed(a) => {
            a.error_code == quinn::VarInt::from_u32(ward_protocol::message::close_code::BUSY)
        }
        _ => false,
    }
}

fn connection_error(e: quinn::ConnectionError) -> LinkError {
    if busy(&e) {
        LinkError::Busy(e.to_string())
    } else {
        LinkError::Connect(e.to_string())
    }
}

/// Enrolls with the collector named in `token`; the caller stores the result.
/// A busy collector (a fleet enrolling at once behind one address, a flood) is
/// retried with jittered back-off for up to [`ENROLL_RETRY_FOR`].
pub async fn enroll(
    token: &JoinToken,
    signing_key: &SigningKey,
    tls_key_pkcs8: &[u8],
    inventory: Inventory,
) -> Result<Enrollment, LinkError> {
    let started = std::time::Instant::now();
    let mut wait = std::time::Duration::from_millis(100);
    loop {
        match enroll_once(token, signing_key, tls_key_pkcs8, inventory.clone()).await {
            Err(LinkError::Busy(why)) if started.elapsed() + wait < ENROLL_RETRY_FOR => {
                tracing::info!(%why, retry_in_ms = wait.as_millis() as u64, "collector busy; retrying enrollment");
                let mut b = [0u8; 2];
                let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b);
                let spread = u64::from(u16::from_le_bytes(b)) * wait.as_millis() as u64 / u64::from(u16::MAX);
                tokio::time::sleep(wait / 2 + std::time::Duration::from_millis(spread / 2)).await;
                wait = (wait * 2).min(std::time::Duration::from_secs(5));
            }
            other => return other,
        }
    }
}

async fn enroll_once(
    token: &JoinToken,
    signing_key: &SigningKey,
    tls_key_pkcs8: &[u8],
    inventory: Inventory,
) -> Result<Enrollment, LinkError> {
    let remote = resolve(&token.collector_addr).await?;
    let endpoint = client_endpoint(&remote)?;
    let conn = endpoint
        .connect_with(tls::enroll_config(token.ca_sha256)?, remote, &token.server_name)
        .map_err(|e| LinkError::Connect(e.to_string()))?
        .await
        .map_err(connection_error)?;
    let tls_key = public_of(tls_key_pkcs8).ok_or_else(|| LinkError::Tls("TLS key is not Ed25519 PKCS#8".into()))?;
    let request = EnrollRequest {
        token_secret: token.secret,
        signing_key: signing_key.public_key(),
        tls_key,
        inventory,
    };
    let signed = signing_key
        .sign_value(SignatureKind::Enrollment, &request)
        .map_err(|e| LinkError::Protocol(e.to_string()))?;
    let (mut send, mut recv) = conn.open_bi().await.map_err(|e| LinkError::Connect(e.to_string()))?;
    let msg = AgentMessage::Enroll(EnrollEnvelope {
        signing_key: signing_key.public_key(),
        request: signed,
    });
    write_frame(&mut send, &msg).await?;
    let _ = send.finish();
    let answer: Option<CollectorMessage> = read_frame(&mut recv, MAX_COLLECTOR_FRAME).await?;
    conn.close(0u32.into(), b"enrolled");
    endpoint.wait_idle().await;
    match answer {
        Some(CollectorMessage::Enrolled(EnrollResponse::Accepted {
            device_id,
            client_cert_der,
            ca_cert_der,
            command_keys,
        })) => {
            if ring::digest::digest(&ring::digest::SHA256, &ca_cert_der).as_ref() != token.ca_sha256 {
                return Err(LinkError::Protocol(
                    "collector sent a CA that does not match the pin".into(),
                ));
            }
            Ok(Enrollment {
                device_id,
                collector_addr: token.collector_addr.clone(),
                server_name: token.server_name.clone(),
                client_cert_der,
                ca_cert_der,
                keys: CommandKeys::pinned(command_keys),
            })
        }
        Some(CollectorMessage::Enrolled(EnrollResponse::Refused { reason })) => Err(LinkError::Refused(reason)),
        Some(_) => Err(LinkError::Protocol("unexpected answer to enrollment".into())),
        None => Err(LinkError::Protocol("collector closed without answering".into())),
    }
}

/// A fresh authenticated round trip to the collector: a full QUIC + mutual TLS
/// handshake with the device's certificate, then closed. Used to prove that the
/// collector is still reachable after isolating.
pub async fn probe(identity: &Identity) -> Result<std::time::Duration, LinkError> {
    let started = std::time::Instant::now();
    let remote = resolve(&identity.enrollment.collector_addr).await?;
    let endpoint = client_endpoint(&remote)?;
    let conn = tokio::time::timeout(OPEN_TIMEOUT, connect_device(&endpoint, remote, identity))
        .await
        .map_err(|_| LinkError::Connect("handshake timed out".into()))??;
    conn.close(0u32.into(), b"probe");
    endpoint.wait_idle().await;
    Ok(started.elapsed())
}

/// A QUIC connection authenticated with the device's certificate (mutual TLS).
async fn connect_device(
    endpoint: &quinn::Endpoint,
    remote: SocketAddr,
    identity: &Identity,
) -> Result<quinn::Connection, LinkError> {
    let e = &identity.enrollment;
    let config = tls::session_config(&e.ca_cert_der, &e.client_cert_der, &identity.tls_key_pkcs8)?;
    let connecting = endpoint
        .connect_with(config, remote, &e.server_name)
        .map_err(|e| LinkError::Connect(e.to_string()))?;
    // The collector gives up on a handshake at the same time.
    let limit = std::time::Duration::from_millis(ward_protocol::session::HANDSHAKE_TIMEOUT_MS);
    tokio::time::timeout(limit, connecting)
        .await
        .map_err(|_| LinkError::Connect("handshake timed out".into()))?
        .map_err(|e| LinkError::Connect(e.to_string()))
}

/// How long connecting plus hello/welcome may take.
pub const OPEN_TIMEOUT: std::time::Duration =
    std::time::Duration::from_millis(ward_protocol::session::agent::OPEN_TIMEOUT_MS);

/// The session machine's clock: milliseconds since the session began opening.
#[derive(Debug, Clone, Copy)]
pub struct Clock(tokio::time::Instant);

impl Clock {
    pub fn start() -> Self {
        Clock(tokio::time::Instant::now())
    }

    pub fn now(self) -> u64 {
        u64::try_from(self.0.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    pub fn at(self, ms: u64) -> tokio::time::Instant {
        self.0 + std::time::Duration::from_millis(ms)
    }
}

/// The session clocks of `config`.
pub fn timers(config: &crate::config::Config) -> AgentTimers {
    AgentTimers {
        open_timeout_ms: ward_protocol::session::agent::OPEN_TIMEOUT_MS,
        ack_timeout_ms: config.link.ack_timeout_ms,
        heartbeat_interval_ms: config.agent.heartbeat_interval_ms,
        inventory_interval_ms: config.agent.inventory_interval_ms,
    }
}

/// An open session: the QUIC connection and its one long-lived stream.
pub struct Session {
    pub endpoint: quinn::Endpoint,
    pub conn: quinn::Connection,
    pub send: quinn::SendStream,
    pub recv: quinn::RecvStream,
    /// This device's clock minus the collector's when the welcome came (half the
    /// round trip is the error): commands are refused beyond the allowed skew.
    pub clock_skew_ms: i64,
    /// The collector's protocol minor version (from its welcome): newer messages are
    /// sent only to a collector that reads them.
    pub collector_minor: u8,
    /// The session's rules, welcomed; [`Session::live`] hands them to a driver.
    pub machine: AgentSession,
    pub clock: Clock,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("remote", &self.conn.remote_address())
            .finish_non_exhaustive()
    }
}

impl Session {
    /// Connects with the device's certificate and exchanges hello/welcome, with the
    /// default session clocks.
    pub async fn open(
        identity: &Identity,
        rule_pack_version: u64,
        last_command_seq: u64,
    ) -> Result<Session, LinkError> {
        let timers = timers(&crate::config::Config::default());
        Self::open_with(identity, rule_pack_version, last_command_seq, timers).await
    }

    /// Like [`Session::open`], with these session clocks.
    pub async fn open_with(
        identity: &Identity,
        rule_pack_version: u64,
        last_command_seq: u64,
        timers: AgentTimers,
    ) -> Result<Session, LinkError> {
        let remote = resolve(&identity.enrollment.collector_addr).await?;
        let endpoint = client_endpoint(&remote)?;
        Self::open_within(endpoint, remote, identity, rule_pack_version, last_command_seq, timers).await
    }

    /// Like [`Session::open`], on an existing endpoint to a resolved address.
    /// Gives up after [`OPEN_TIMEOUT`]: a lost handshake never stalls the agent.
    pub async fn open_on(
        endpoint: quinn::Endpoint,
        remote: SocketAddr,
        identity: &Identity,
        rule_pack_version: u64,
        last_command_seq: u64,
    ) -> Result<Session, LinkError> {
        let timers = timers(&crate::config::Config::default());
        Self::open_within(endpoint, remote, identity, rule_pack_version, last_command_seq, timers).await
    }

    /// The handshake, given up after [`OPEN_TIMEOUT`].
    async fn open_within(
        endpoint: quinn::Endpoint,
        remote: SocketAddr,
        identity: &Identity,
        rule_pack_version: u64,
        last_command_seq: u64,
        timers: AgentTimers,
    ) -> Result<Session, LinkError> {
        let started = Clock::start();
        tokio::time::timeout(
            OPEN_TIMEOUT,
            Self::handshake(
                endpoint,
                remote,
                identity,
                rule_pack_version,
                last_command_seq,
                timers,
                started,
            ),
        )
        .await
        .map_err(|_| LinkError::Connect(format!("no session within {} s", OPEN_TIMEOUT.as_secs())))?
    }

    async fn handshake(
        endpoint: quinn::Endpoint,
        remote: SocketAddr,
        identity: &Identity,
        rule_pack_version: u64,
        last_command_seq: u64,
        timers: AgentTimers,
        clock: Clock,
    ) -> Result<Session, LinkError> {
        let e = &identity.enrollment;
        let hello = Hello {
            device_id: e.device_id,
            agent_version: env!("CARGO_PKG_VERSION").to_string(),
            protocol_major: PROTOCOL_MAJOR,
            protocol_minor: PROTOCOL_MINOR,
            rule_pack_version,
            last_command_seq,
        };
        // Its open deadline is the caller's OPEN_TIMEOUT, counted from the same start.
        let mut machine = AgentSession::new(clock.now(), timers, hello);
        let conn = connect_device(&endpoint, remote, identity).await?;
        let (mut send, mut recv) = conn.open_bi().await.map_err(|e| LinkError::Connect(e.to_string()))?;
        let asked = crate::clock::now_ms();
        while let Some(msg) = machine.poll_transmit() {
            write_frame(&mut send, &msg).await?;
        }
        let deadline = machine.poll_timeout().unwrap_or(0);
        match tokio::time::timeout_at(
            clock.at(deadline),
            read_frame::<CollectorMessage>(&mut recv, MAX_COLLECTOR_FRAME),
        )
        .await
        {
            Ok(Ok(Some(msg))) => machine.handle_message(clock.now(), msg),
            Ok(Ok(None)) => return Err(LinkError::Closed("stream finished before welcome".into())),
            Ok(Err(e)) => return Err(e),
            Err(_) => machine.handle_timeout(clock.now().max(deadline)),
        }
        match machine.poll_event() {
            Some(AgentEvent::Welcomed(w)) => Ok(Session {
                endpoint,
                conn,
                send,
                recv,
                clock_skew_ms: clock_skew(asked, crate::clock::now_ms(), w.server_time_ms),
                collector_minor: w.protocol_minor,
                machine,
                clock,
            }),
            Some(AgentEvent::Ended(AgentEnd::Goodbye(reason))) => Err(LinkError::Closed(reason)),
            Some(AgentEvent::Ended(end @ AgentEnd::OpenTimedOut(_))) => Err(LinkError::Connect(end.to_string())),
            _ => Err(LinkError::Protocol("expected welcome".into())),
        }
    }

    /// Hands the welcomed session to its driver: the machine, its clock, and the IO.
    pub fn live(self) -> (Live, AgentSession, Clock) {
        let Session {
            endpoint,
            conn,
            send,
            mut recv,
            machine,
            clock,
            ..
        } = self;
        let (tx, incoming) = tokio::sync::mpsc::channel::<Result<CollectorMessage, LinkError>>(16);
        let reader = tokio::spawn(async move {
            loop {
                let msg = read_frame::<CollectorMessage>(&mut recv, MAX_COLLECTOR_FRAME).await;
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
        let live = Live {
            _endpoint: endpoint,
            conn,
            send,
            reader,
            incoming,
        };
        (live, machine, clock)
    }

    pub async fn send(&mut self, msg: &AgentMessage) -> Result<(), LinkError> {
        write_frame(&mut self.send, msg).await
    }

    /// Sends bytes as they are (tests use this to send malformed frames).
    pub async fn send_raw(&mut self, bytes: &[u8]) -> Result<(), LinkError> {
        self.send
            .write_all(bytes)
            .await
            .map_err(|e| LinkError::Closed(e.to_string()))
    }

    pub async fn recv(&mut self) -> Result<Option<CollectorMessage>, LinkError> {
        read_frame(&mut self.recv, MAX_COLLECTOR_FRAME).await
    }

    pub fn close(&self) {
        self.conn.close(0u32.into(), b"bye");
    }
}

/// A welcomed session's IO, for the driver of its machine.
pub struct Live {
    _endpoint: quinn::Endpoint,
    conn: quinn::Connection,
    send: quinn::SendStream,
    reader: tokio::task::JoinHandle<()>,
    /// The collector's messages, in order; an error (or the stream's end) is the last.
    pub incoming: tokio::sync::mpsc::Receiver<Result<CollectorMessage, LinkError>>,
}

impl Live {
    pub async fn write(&mut self, msg: &AgentMessage) -> Result<(), LinkError> {
        write_frame(&mut self.send, msg).await
    }

    /// QUIC ACK frames received from the collector so far: a count that moves shows
    /// its QUIC stack alive.
    pub fn peer_acks(&self) -> u64 {
        self.conn.stats().frame_rx.acks
    }

    /// Stops reading and closes the connection.
    pub fn close(self) {
        self.reader.abort();
        self.conn.close(0u32.into(), b"agent closing");
    }
}
