//! The isolation self-test (dead-man switch) settings and report, and the probe
//! that checks a destination which must be blocked does not answer.

use std::io::ErrorKind;
use std::net::SocketAddr;
use std::time::Duration;

/// The dead-man switch's settings.
#[derive(Debug, Clone)]
pub struct SelfTest {
    /// The collector round-trip must complete within this time.
    pub collector_timeout: Duration,
    /// An address that must not answer while isolated (a TCP connect is tried).
    pub blocked: Option<SocketAddr>,
    pub blocked_timeout: Duration,
}

impl Default for SelfTest {
    fn default() -> Self {
        SelfTest {
            collector_timeout: Duration::from_secs(60),
            blocked: Some(SocketAddr::from(([1, 1, 1, 1], 443))),
            blocked_timeout: Duration::from_secs(3),
        }
    }
}

/// How the blocked-address probe went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlockedProbe {
    Skipped,
    /// No answer within the timeout, or the local stack refused to send.
    Blocked(String),
    /// A connection or a refusal (RST) came back: packets got through.
    Reachable,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SelfTestReport {
    pub collector_round_trip: Duration,
    pub blocked: BlockedProbe,
}

/// Tries a TCP connect to `addr`; anything that comes back means not blocked.
pub async fn probe_blocked(addr: SocketAddr, timeout: Duration) -> BlockedProbe {
    match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(addr)).await {
        Err(_) => BlockedProbe::Blocked(format!("no answer within {timeout:?}")),
        Ok(Ok(_)) => BlockedProbe::Reachable,
        Ok(Err(e)) if e.kind() == ErrorKind::ConnectionRefused => BlockedProbe::Reachable,
        Ok(Err(e)) => BlockedProbe::Blocked(e.to_string()),
    }
}
