//! 128-bit identifiers. Alert and command ids are time-ordered (ULID layout: 48
//! bits of Unix milliseconds, then 80 random bits) so that they sort by creation
//! time; all ids print as 26-character Crockford base32, as ULIDs do.

use std::fmt;
use std::str::FromStr;

use ring::rand::SecureRandom;
use serde::{Deserialize, Serialize};
use thiserror::Error;

const CROCKFORD: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/// The raw 128-bit identifier all typed ids wrap.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default)]
pub struct Id128(pub [u8; 16]);

/// An id string that is not 26 Crockford base32 characters.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[error("not a valid id: expected 26 Crockford base32 characters")]
pub struct ParseIdError;

/// The random source failed; callers treat this as fatal for the operation.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[error("the system random source failed")]
pub struct RandomError;

impl Id128 {
    /// A time-ordered id: `now_ms` in the high 48 bits, randomness below.
    pub fn generate(now_ms: u64, rng: &dyn SecureRandom) -> Result<Self, RandomError> {
        let mut bytes = [0u8; 16];
        rng.fill(&mut bytes[6..]).map_err(|_| RandomError)?;
        bytes[..6].copy_from_slice(&now_ms.to_be_bytes()[2..]);
        Ok(Id128(bytes))
    }

    /// The Unix-millisecond timestamp of a time-ordered id.
    pub fn timestamp_ms(&self) -> u64 {
        let mut ts = [0u8; 8];
        ts[2..].copy_from_slice(&self.0[..6]);
        u64::from_be_bytes(ts)
    }

    pub fn as_u128(&self) -> u128 {
        u128::from_be_bytes(self.0)
    }

    pub fn from_u128(v: u128) -> Self {
        Id128(v.to_be_bytes())
    }
}

impl fmt::Display for Id128 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let v = self.as_u128();
        let mut out = [0u8; 26];
        for (i, c) in out.iter_mut().enumerate() {
            let shift = 125 - 5 * i as i32;
            let digit = if shift >= 0 {
                (v >> shift) & 0x1f
            } else {
                (v << -shift) & 0x1f
            };
            *c = CROCKFORD[digit as usize];
        }
        // The alphabet is ASCII, so this cannot fail; fall back to an error rather than panic.
        f.write_str(std::str::from_utf8(&out).map_err(|_| fmt::Error)?)
    }
}

impl fmt::Debug for Id128 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for Id128 {
    type Err = ParseIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bytes = s.as_bytes();
        if bytes.len() != 26 {
            return Err(ParseIdError);
        }
        let mut v: u128 = 0;
        for (i, &b) in bytes.iter().enumerate() {
            let digit = decode_crockford(b).ok_or(ParseIdError)? as u128;
            // The first character carries only 3 bits (26 * 5 = 130 = 128 + 2).
            if i == 0 && digit > 7 {
                return Err(ParseIdError);
            }
            v = (v << 5) | digit;
        }
        Ok(Id128::from_u128(v))
    }
}

fn decode_crockford(b: u8) -> Option<u8> {
    let b = b.to_ascii_uppercase();
    match b {
        b'O' => Some(0),
        b'I' | b'L' => Some(1),
        _ => CROCKFORD.iter().position(|&c| c == b).map(|p| p as u8),
    }
}

macro_rules! typed_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default)]
        pub struct $name(pub Id128);

        impl $name {
            pub fn generate(now_ms: u64, rng: &dyn SecureRandom) -> Result<Self, RandomError> {
                Id128::generate(now_ms, rng).map($name)
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }
        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.0)
            }
        }
        impl FromStr for $name {
            type Err = ParseIdError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                s.parse().map($name)
            }
        }
    };
}

typed_id!(
    /// One alert, unique across all devices; the collector deduplicates by it.
    AlertId
);
typed_id!(
    /// One enrolled device, assigned by the collector at enrollment.
    DeviceId
);
typed_id!(
    /// One response command.
    CommandId
);

#[cfg(test)]
mod tests {
    use super::*;
    use ring::rand::SystemRandom;

    #[test]
    fn display_parse_round_trip_and_order() {
        let rng = SystemRandom::new();
        let a = Id128::generate(1_700_000_000_000, &rng).unwrap();
        let b = Id128::generate(1_700_000_000_001, &rng).unwrap();
        assert!(a < b);
        assert!(a.to_string() < b.to_string());
        assert_eq!(a.to_string().parse::<Id128>().unwrap(), a);
        assert_eq!(a.timestamp_ms(), 1_700_000_000_000);
        assert_eq!(Id128::from_u128(u128::MAX).to_string(), "7ZZZZZZZZZZZZZZZZZZZZZZZZZ");
        assert!("8ZZZZZZZZZZZZZZZZZZZZZZZZZ".parse::<Id128>().is_err());
        assert!("short".parse::<Id128>().is_err());
        assert!("0000000000000000000000000U".parse::<Id128>().is_err());
    }
}
