//! Admission of connections that have not proved who they are yet: every
//! accepted connection counts against `ingest.max_connections` from its first
//! packet until it ends (handshaking, enrolling and pre-hello ones included), and
//! unauthenticated ones (a handshake not finished, an enrollment not answered)
//! are bounded per source address and in total, so silent or slow connections
//! from a few places cannot hold the handshake and enrollment paths closed.
//!
//! Pure bookkeeping: no IO, no clock. Each admission is a guard that gives its
//! place back when dropped.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// Most unauthenticated connections from one address (handshaking, or enrolling
/// and not yet answered). A fleet behind one NAT finishes each in milliseconds
/// and its agents retry a refusal with back-off; one host holding many open
/// (silent after the handshake, or never finishing it) is held to this many,
/// which bounds the handshake work any one address can cause.
pub const MAX_UNAUTHENTICATED_PER_ADDRESS: u32 = 16;
/// Most unauthenticated connections in all (the bounded pending queue).
pub const MAX_UNAUTHENTICATED: usize = 1_024;

/// Why a connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Busy {
    /// The address has [`MAX_UNAUTHENTICATED_PER_ADDRESS`] unauthenticated connections.
    Address,
    /// [`MAX_UNAUTHENTICATED`] are unauthenticated.
    Total,
}

impl Busy {
    pub fn as_str(self) -> &'static str {
        match self {
            Busy::Address => "busy_address",
            Busy::Total => "busy_total",
        }
    }
}

#[derive(Debug, Default)]
struct Pending {
    total: usize,
    by_address: HashMap<IpAddr, u32>,
}

/// The counts, shared by the accept loop and the connection tasks.
#[derive(Debug, Default)]
pub struct Admission {
    open: Arc<AtomicUsize>,
    pending: Arc<Mutex<Pending>>,
}

/// One open connection; dropped when its task ends.
#[derive(Debug)]
pub struct OpenGuard(Arc<AtomicUsize>);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One unauthenticated connection; dropped when its handshake authenticated it
/// (a session) or its enrollment was answered or given up.
#[derive(Debug)]
pub struct PendingGuard {
    pending: Arc<Mutex<Pending>>,
    address: IpAddr,
}

impl Drop for PendingGuard {
    fn drop(&mut self) {
        let Ok(mut e) = self.pending.lock() else { return };
        e.total = e.total.saturating_sub(1);
        if let Some(n) = e.by_address.get_mut(&self.address) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                e.by_address.remove(&self.address);
            }
        }
    }
}

impl Admission {
    /// Connections open now (every state).
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// Admits a connection while fewer than `max` are open.
    pub fn try_open(&self, max: usize) -> Option<OpenGuard> {
        self.open
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| (n < max).then_some(n + 1))
            .ok()
            .map(|_| OpenGuard(Arc::clone(&self.open)))
    }

    /// Admits an unauthenticated connection from `address` within both bounds.
    pub fn try_pending(&self, address: IpAddr) -> Result<PendingGuard, Busy> {
        let mut e = self.pending.lock().map_err(|_| Busy::Total)?;
        if e.total >= MAX_UNAUTHENTICATED {
            return Err(Busy::Total);
        }
        if e.by_address.get(&address).copied().unwrap_or(0) >= MAX_UNAUTHENTICATED_PER_ADDRESS {
            return Err(Busy::Address);
        }
        *e.by_address.entry(address).or_insert(0) += 1;
        e.total += 1;
        Ok(PendingGuard {
            pending: Arc::clone(&self.pending),
            address,
        })
    }

    /// Unauthenticated connections now.
    pub fn pending(&self) -> usize {
        self.pending.lock().map(|e| e.total).unwrap_or(0)
    }
}

/// Whether a new connection gets a stateless Retry before any handshake work: when
/// at least `above` connections are unauthenticated and its address is not proven
/// yet (a Retry's token, echoed, proves it; the collector keeps no state meanwhile).
/// Under a flood of spoofed sources only proven addresses reach the handshake's
/// crypto; a real agent pays one round trip.
pub fn should_retry(address_validated: bool, may_retry: bool, pending: usize, above: u32) -> bool {
    !address_validated && may_retry && pending >= above as usize
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn retry_only_unproven_addresses_and_only_under_load() {
        assert!(should_retry(false, true, 128, 128));
        assert!(!should_retry(false, true, 127, 128), "below the threshold");
        assert!(
            !should_retry(true, true, 1_000, 128),
            "a proven address is never retried again"
        );
        assert!(!should_retry(false, false, 1_000, 128), "quinn cannot retry this one");
        assert!(should_retry(false, true, 0, 0), "0: always");
    }

    #[test]
    fn connections_are_capped_and_given_back() {
        let a = Admission::default();
        let g1 = a.try_open(2).unwrap();
        let _g2 = a.try_open(2).unwrap();
        assert!(a.try_open(2).is_none());
        drop(g1);
        assert_eq!(a.open(), 1);
        assert!(a.try_open(2).is_some());
    }

    #[test]
    fn unauthenticated_connections_are_bounded_per_address_and_in_total() {
        let a = Admission::default();
        let one: IpAddr = "192.0.2.1".parse().unwrap();
        let held: Vec<_> = (0..MAX_UNAUTHENTICATED_PER_ADDRESS)
            .map(|_| a.try_pending(one).unwrap())
            .collect();
        assert_eq!(a.try_pending(one).unwrap_err(), Busy::Address);
        // Another address is not held up by the first.
        let other = a.try_pending("192.0.2.2".parse().unwrap()).unwrap();
        drop(held);
        drop(other);
        assert_eq!(a.pending(), 0);
        let many: Vec<_> = (0..MAX_UNAUTHENTICATED)
            .map(|i| {
                a.try_pending(IpAddr::from([10, 0, (i / 250) as u8, (i % 250) as u8]))
                    .unwrap()
            })
            .collect();
        assert_eq!(a.try_pending("192.0.2.3".parse().unwrap()).unwrap_err(), Busy::Total);
        drop(many);
        assert!(a.try_pending(one).is_ok());
    }
}
