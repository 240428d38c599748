//! Enrollment: the join token an operator hands out, and the request and answer
//! exchanged on the enrollment connection.

use std::fmt;
use std::str::FromStr;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::ids::DeviceId;
use crate::inventory::Inventory;
use crate::sign::{PublicKey, Signed};

const TOKEN_PREFIX: &str = "ward1.";
/// A token longer than this is refused before it is decoded.
const MAX_TOKEN_CHARS: usize = 2048;

/// Everything an agent needs to enroll securely: where the collector is, the
/// SHA-256 of its CA certificate to pin, and the secret that admits it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinToken {
    /// `host:port` of the collector's QUIC endpoint.
    pub collector_addr: String,
    /// The name in the collector's certificate.
    pub server_name: String,
    pub ca_sha256: [u8; 32],
    pub secret: [u8; 32],
}

impl fmt::Debug for JoinToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinToken")
            .field("collector_addr", &self.collector_addr)
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

/// A join token string that does not parse.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum TokenError {
    #[error("not a Ward join token (expected it to start with {TOKEN_PREFIX})")]
    Prefix,
    #[error("join token is too long")]
    TooLong,
    #[error("join token is corrupt: {0}")]
    Corrupt(String),
}

impl fmt::Display for JoinToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let bytes = postcard::to_stdvec(self).map_err(|_| fmt::Error)?;
        write!(f, "{TOKEN_PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes))
    }
}

impl FromStr for JoinToken {
    type Err = TokenError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s.len() > MAX_TOKEN_CHARS {
            return Err(TokenError::TooLong);
        }
        let body = s.strip_prefix(TOKEN_PREFIX).ok_or(TokenError::Prefix)?;
        let bytes = URL_SAFE_NO_PAD
            .decode(body)
            .map_err(|e| TokenError::Corrupt(e.to_string()))?;
        crate::sign::decode_exact(&bytes).map_err(|e| TokenError::Corrupt(e.0))
    }
}

/// What an agent asks at enrollment. Sent signed by `signing_key` (proof that
/// the agent holds it) inside an [`EnrollEnvelope`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnrollRequest {
    pub token_secret: [u8; 32],
    /// The device's alert-signing key.
    pub signing_key: PublicKey,
    /// The device's TLS client key (raw Ed25519), for its certificate.
    pub tls_key: PublicKey,
    pub inventory: Inventory,
}

/// The key travels beside the signed request so that the signature is checked
/// before the request is decoded; the collector then checks that both agree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnrollEnvelope {
    pub signing_key: PublicKey,
    pub request: Signed,
}

/// The collector's answer to an enrollment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum EnrollResponse {
    Accepted {
        device_id: DeviceId,
        /// The device's client certificate (DER), issued by the collector's CA.
        client_cert_der: Vec<u8>,
        ca_cert_der: Vec<u8>,
        /// The keys whose command signatures the agent must accept.
        command_keys: Vec<PublicKey>,
    },
    Refused {
        reason: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_round_trips_and_rejects_garbage() {
        let t = JoinToken {
            collector_addr: "10.0.0.1:4433".into(),
            server_name: "ward-collector".into(),
            ca_sha256: [7; 32],
            secret: [9; 32],
        };
        let s = t.to_string();
        assert!(s.starts_with("ward1."));
        assert_eq!(s.parse::<JoinToken>().unwrap(), t);
        assert_eq!("nope".parse::<JoinToken>(), Err(TokenError::Prefix));
        assert!(matches!("ward1.!!".parse::<JoinToken>(), Err(TokenError::Corrupt(_))));
        assert!(!format!("{t:?}").contains("secret"));
    }
}
