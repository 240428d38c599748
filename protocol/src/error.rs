//! Typed errors for framing, decoding and signature checks. None of them carries
//! the offending bytes: callers count and log the kind, never echo the input.

use thiserror::Error;

/// A frame could not be read.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum FrameError {
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge { len: u64, max: u32 },
    #[error("frame is truncated: need {needed} more bytes")]
    Truncated { needed: usize },
    #[error("frame is empty")]
    Empty,
    #[error("unsupported protocol major version {major} (this side speaks {ours})")]
    UnsupportedVersion { major: u8, ours: u8 },
    #[error("frame body does not decode: {0}")]
    Decode(#[from] DecodeError),
}

/// Bytes that are not a valid postcard encoding of the expected type.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[error("{0}")]
pub struct DecodeError(pub String);

impl From<postcard::Error> for DecodeError {
    fn from(e: postcard::Error) -> Self {
        DecodeError(e.to_string())
    }
}

/// A signature did not verify, or a signed payload did not decode after it did.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum SignatureError {
    #[error("signature does not verify")]
    Invalid,
    #[error("signature has {0} bytes, expected 64")]
    BadLength(usize),
    #[error("signed by an unknown key")]
    UnknownKey,
    #[error("key material is malformed")]
    BadKey,
    #[error("signed payload does not decode: {0}")]
    Decode(#[from] DecodeError),
}
