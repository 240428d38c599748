//! Length-prefixed frames.
//!
//! Layout: `[body length: u32 big-endian][major: u8][minor: u8][postcard body]`.
//! The length is checked against the caller's limit before a byte of the body is
//! buffered, and the major version before the body is decoded.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{DecodeError, FrameError};
use crate::sign::decode_exact;
use crate::version::{PROTOCOL_MAJOR, PROTOCOL_MINOR};

/// Bytes before the body.
pub const HEADER_LEN: usize = 6;
/// Hard ceiling for frames an agent sends (alert batches, results, heartbeats).
pub const MAX_AGENT_FRAME: u32 = 1 << 20;
/// Hard ceiling for frames the collector sends (rule packs are the largest).
pub const MAX_COLLECTOR_FRAME: u32 = 16 << 20;

/// A parsed, checked frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    pub body_len: u32,
    pub major: u8,
    pub minor: u8,
}

impl FrameHeader {
    /// Parses a header, refusing a body over `max` bytes or another major version.
    pub fn parse(bytes: &[u8; HEADER_LEN], max: u32) -> Result<FrameHeader, FrameError> {
        let body_len = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
        if body_len > max {
            return Err(FrameError::TooLarge {
                len: body_len.into(),
                max,
            });
        }
        if body_len == 0 {
            return Err(FrameError::Empty);
        }
        let major = bytes[4];
        if major != PROTOCOL_MAJOR {
            return Err(FrameError::UnsupportedVersion {
                major,
                ours: PROTOCOL_MAJOR,
            });
        }
        Ok(FrameHeader {
            body_len,
            major,
            minor: bytes[5],
        })
    }
}

/// Encodes `msg` as one frame, refusing to produce a frame over `max`.
pub fn encode_frame<T: Serialize>(msg: &T, max: u32) -> Result<Vec<u8>, FrameError> {
    let mut out = vec![0u8; HEADER_LEN];
    out = postcard::to_extend(msg, out).map_err(DecodeError::from)?;
    let body_len = out.len() - HEADER_LEN;
    if body_len as u64 > u64::from(max) {
        return Err(FrameError::TooLarge {
            len: body_len as u64,
            max,
        });
    }
    out[..4].copy_from_slice(&(body_len as u32).to_be_bytes());
    out[4] = PROTOCOL_MAJOR;
    out[5] = PROTOCOL_MINOR;
    Ok(out)
}

/// Decodes a frame body; every byte must belong to the message.
pub fn decode_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, FrameError> {
    Ok(decode_exact(body)?)
}

/// Decodes the first frame of `bytes`; returns it and the bytes it used.
pub fn decode_frame<T: DeserializeOwned>(bytes: &[u8], max: u32) -> Result<(T, usize), FrameError> {
    let header: &[u8; HEADER_LEN] =
        bytes
            .get(..HEADER_LEN)
            .and_then(|h| h.try_into().ok())
            .ok_or_else(|| FrameError::Truncated {
                needed: HEADER_LEN.saturating_sub(bytes.len()),
            })?;
    let header = FrameHeader::parse(header, max)?;
    let end = HEADER_LEN + header.body_len as usize;
    let body = bytes.get(HEADER_LEN..end).ok_or_else(|| FrameError::Truncated {
        needed: end.saturating_sub(bytes.len()),
    })?;
    Ok((decode_body(body)?, end))
}

/// Incremental decoder for a byte stream: push what arrives, pull whole frames.
#[derive(Debug)]
pub struct FrameDecoder {
    buf: Vec<u8>,
    max: u32,
}

impl FrameDecoder {
    pub fn new(max: u32) -> Self {
        FrameDecoder { buf: Vec::new(), max }
    }

    /// Appends received bytes. The buffer never holds more than one frame plus
    /// what has not been pulled yet, because [`FrameDecoder::next_frame`] checks each
    /// header as soon as it is complete.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete frame, `Ok(None)` if more bytes are needed. After an
    /// error the stream is unusable: the caller closes it.
    pub fn next_frame<T: DeserializeOwned>(&mut self) -> Result<Option<T>, FrameError> {
        let Some(header) = self.buf.get(..HEADER_LEN) else {
            return Ok(None);
        };
        let header: [u8; HEADER_LEN] = header
            .try_into()
            .map_err(|_| FrameError::Truncated { needed: HEADER_LEN })?;
        let header = FrameHeader::parse(&header, self.max)?;
        let end = HEADER_LEN + header.body_len as usize;
        if self.buf.len() < end {
            return Ok(None);
        }
        let msg = decode_body(&self.buf[HEADER_LEN..end])?;
        self.buf.drain(..end);
        Ok(Some(msg))
    }

    /// Bytes received but not yet part of a returned frame.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_checks_size_before_anything_else() {
        let mut h = [0xff, 0xff, 0xff, 0xff, PROTOCOL_MAJOR, 0];
        assert_eq!(
            FrameHeader::parse(&h, MAX_AGENT_FRAME),
            Err(FrameError::TooLarge {
                len: u32::MAX.into(),
                max: MAX_AGENT_FRAME
            })
        );
        h[..4].copy_from_slice(&(MAX_AGENT_FRAME + 1).to_be_bytes());
        assert!(matches!(
            FrameHeader::parse(&h, MAX_AGENT_FRAME),
            Err(FrameError::TooLarge { .. })
        ));
        h[..4].copy_from_slice(&8u32.to_be_bytes());
        h[4] = PROTOCOL_MAJOR + 1;
        assert_eq!(
            FrameHeader::parse(&h, MAX_AGENT_FRAME),
            Err(FrameError::UnsupportedVersion {
                major: PROTOCOL_MAJOR + 1,
                ours: PROTOCOL_MAJOR
            })
        );
    }

    #[test]
    fn decoder_reassembles_split_frames() {
        let a = encode_frame(&(1u32, "one".to_string()), MAX_AGENT_FRAME).unwrap();
        let b = encode_frame(&(2u32, "two".to_string()), MAX_AGENT_FRAME).unwrap();
        let all: Vec<u8> = a.iter().chain(b.iter()).copied().collect();
        let mut dec = FrameDecoder::new(MAX_AGENT_FRAME);
        let mut got = Vec::new();
        for byte in all {
            dec.push(&[byte]);
            while let Some(msg) = dec.next_frame::<(u32, String)>().unwrap() {
                got.push(msg);
            }
        }
        assert_eq!(got, vec![(1, "one".into()), (2, "two".into())]);
        assert_eq!(dec.buffered(), 0);
    }

    #[test]
    fn trailing_bytes_in_a_body_are_refused() {
        let mut frame = encode_frame(&7u8, MAX_AGENT_FRAME).unwrap();
        frame.push(0);
        frame[..4].copy_from_slice(&2u32.to_be_bytes());
        assert!(matches!(
            decode_frame::<u8>(&frame, MAX_AGENT_FRAME),
            Err(FrameError::Decode(_))
        ));
    }
}
