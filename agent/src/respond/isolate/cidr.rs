//! CIDR parsing for isolation plans: [`IpNet`], an address and prefix length with the
//! host bits cleared, parsed strictly (only parsed networks ever reach the ruleset).

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::plan::PlanError;

/// An IP network (address and prefix length), host bits cleared on construction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct IpNet {
    addr: IpAddr,
    prefix: u8,
}

impl IpNet {
    /// A network; `addr` is canonicalised (v4-mapped v6 becomes v4) and masked.
    pub fn new(addr: IpAddr, prefix: u8) -> Result<IpNet, PlanError> {
        let addr = addr.to_canonical();
        let (addr, prefix) = match addr {
            IpAddr::V4(a) => {
                if prefix > 32 {
                    return Err(PlanError::BadPrefix(prefix));
                }
                let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
                (IpAddr::V4((u32::from(a) & mask).into()), prefix)
            }
            IpAddr::V6(a) => {
                if prefix > 128 {
                    return Err(PlanError::BadPrefix(prefix));
                }
                let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
                (IpAddr::V6((u128::from(a) & mask).into()), prefix)
            }
        };
        Ok(IpNet { addr, prefix })
    }

    /// A single host (/32 or /128).
    pub fn host(addr: IpAddr) -> IpNet {
        let addr = addr.to_canonical();
        let prefix = if addr.is_ipv4() { 32 } else { 128 };
        IpNet { addr, prefix }
    }

    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    fn is_host(&self) -> bool {
        self.prefix == if self.addr.is_ipv4() { 32 } else { 128 }
    }
}

impl fmt::Display for IpNet {
    /// A host prints as its address, a network as `addr/prefix`: both valid nft syntax.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_host() {
            write!(f, "{}", self.addr)
        } else {
            write!(f, "{}/{}", self.addr, self.prefix)
        }
    }
}

impl FromStr for IpNet {
    type Err = PlanError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.split_once('/') {
            Some((a, p)) => {
                let addr: IpAddr = a.parse().map_err(|_| PlanError::BadAddress(s.to_string()))?;
                let prefix: u8 = p.parse().map_err(|_| PlanError::BadAddress(s.to_string()))?;
                IpNet::new(addr, prefix)
            }
            None => s
                .parse::<IpAddr>()
                .map(IpNet::host)
                .map_err(|_| PlanError::BadAddress(s.to_string())),
        }
    }
}

impl Serialize for IpNet {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{}/{}", self.addr, self.prefix))
    }
}

impl<'de> Deserialize<'de> for IpNet {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}
