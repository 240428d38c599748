//! Per-device budgets for every kind of message an agent sends, kept across
//! reconnects (one entry per device that has connected since start): alert
//! batches (by alert, plus a batch rate, since an empty batch costs the writer a
//! round too), heartbeats, and drop reports with command results (one budget of
//! writer transactions; an empty batch is answered without the writer). Over a budget the
//! session sleeps before handling the message: the device is slowed by QUIC flow
//! control and nothing it sent is lost, while other devices' messages go on.
//! Audit rows a device's messages cause (results for no command, refused
//! results) have their own small budget: past it they are counted, not written.
//!
//! Must not drop a message: a sleep is the only penalty (drop reports and results
//! must arrive at least once).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ward_protocol::DeviceId;

use crate::config::IngestConfig;

/// Heartbeats a device may send per second, and in a burst (agents send one
/// every few seconds at most).
pub const HEARTBEATS_PER_SEC: f64 = 1.0;
pub const HEARTBEAT_BURST: f64 = 10.0;
/// Drop reports and command results together, per second and in a burst: each
/// is a writer transaction of its own (a synced commit), which every device's
/// alerts wait behind. Agents send either rarely (an outbox that overflowed, a
/// command that finished).
pub const WRITES_PER_SEC: f64 = 1.0;
pub const WRITE_BURST: f64 = 5.0;
/// Most sequence numbers of one drop report written.
pub const MAX_DROP_SEQS: usize = 1_000;
/// Alert batches per second (at least; a tenth of the alert rate when that is
/// higher) and in a burst: each is a writer round even when empty.
pub const MIN_BATCHES_PER_SEC: f64 = 100.0;
/// Audit rows a device's own messages may cause: a burst, then one a minute.
pub const AUDIT_BURST: f64 = 20.0;
pub const AUDIT_PER_SEC: f64 = 1.0 / 60.0;

/// Token bucket. Over the rate, [`Bucket::take`] says how long to wait.
#[derive(Debug, Clone)]
pub struct Bucket {
    per_sec: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl Bucket {
    pub fn new(per_sec: f64, burst: f64) -> Self {
        let burst = burst.max(per_sec).max(1.0);
        Bucket {
            per_sec,
            burst,
            tokens: burst,
            last: Instant::now(),
        }
    }

    fn refill(&mut self) {
        let now = Instant::now();
        self.tokens = (self.tokens + now.duration_since(self.last).as_secs_f64() * self.per_sec).min(self.burst);
        self.last = now;
    }

    /// Takes `n` tokens; returns how long to wait before they are paid for.
    pub fn take(&mut self, n: f64) -> Duration {
        self.refill();
        self.tokens -= n;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / self.per_sec)
        }
    }

    /// Takes one token if there is one; never goes into debt.
    pub fn try_take(&mut self) -> bool {
        self.refill();
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// What a message costs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Alerts(usize),
    Heartbeat,
    Dropped,
    Result,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Alerts(_) => "alerts",
            Kind::Heartbeat => "heartbeat",
            Kind::Dropped => "drop_report",
            Kind::Result => "command_result",
        }
    }
}

/// One device's budgets.
#[derive(Debug)]
pub struct DeviceLimits {
    alerts: Bucket,
    batches: Bucket,
    heartbeats: Bucket,
    writes: Bucket,
    audit: Bucket,
}

impl DeviceLimits {
    pub fn new(ingest: &IngestConfig) -> Self {
        let per_sec = f64::from(ingest.max_alerts_per_second_per_agent);
        let batches = MIN_BATCHES_PER_SEC.max(per_sec / 10.0);
        DeviceLimits {
            alerts: Bucket::new(per_sec, f64::from(ingest.burst_alerts_per_agent)),
            batches: Bucket::new(batches, batches * 2.0),
            heartbeats: Bucket::new(HEARTBEATS_PER_SEC, HEARTBEAT_BURST),
            writes: Bucket::new(WRITES_PER_SEC, WRITE_BURST),
            audit: Bucket::new(AUDIT_PER_SEC, AUDIT_BURST),
        }
    }

    /// How long to wait before handling a message of `kind`.
    pub fn take(&mut self, kind: Kind) -> Duration {
        match kind {
            Kind::Alerts(n) => self.alerts.take(n as f64).max(self.batches.take(1.0)),
            Kind::Heartbeat => self.heartbeats.take(1.0),
            Kind::Dropped | Kind::Result => self.writes.take(1.0),
        }
    }

    /// Whether the device may cause one more audit row now.
    pub fn audit(&mut self) -> bool {
        self.audit.try_take()
    }
}

/// Every connected device's budgets.
#[derive(Debug, Default)]
pub struct Limits {
    devices: Mutex<HashMap<DeviceId, Arc<Mutex<DeviceLimits>>>>,
}

impl Limits {
    /// The device's budgets, created on its first session.
    pub fn of(&self, device: DeviceId, ingest: &IngestConfig) -> Arc<Mutex<DeviceLimits>> {
        let mut map = match self.devices.lock() {
            Ok(m) => m,
            Err(p) => p.into_inner(),
        };
        Arc::clone(
            map.entry(device)
                .or_insert_with(|| Arc::new(Mutex::new(DeviceLimits::new(ingest)))),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_allows_the_burst_then_paces() {
        let mut l = Bucket::new(1000.0, 2000.0);
        assert_eq!(l.take(2000.0), Duration::ZERO);
        let wait = l.take(500.0);
        assert!(
            wait > Duration::from_millis(400) && wait <= Duration::from_millis(501),
            "{wait:?}"
        );
    }

    #[test]
    fn every_kind_has_its_own_budget() {
        let mut d = DeviceLimits::new(&IngestConfig::default());
        for _ in 0..WRITE_BURST as usize {
            assert_eq!(d.take(Kind::Dropped), Duration::ZERO);
        }
        assert!(d.take(Kind::Dropped) > Duration::from_millis(900), "drop reports paced");
        assert!(
            d.take(Kind::Result) > Duration::from_millis(1_900),
            "results share the budget"
        );
        // Other kinds are not held up by them.
        assert_eq!(d.take(Kind::Heartbeat), Duration::ZERO);
        assert_eq!(d.take(Kind::Alerts(10)), Duration::ZERO);
        // Empty batches cost a batch each (500/s, burst 1,000 at the default alert rate).
        let mut waited = Duration::ZERO;
        for _ in 0..3_000 {
            waited = waited.max(d.take(Kind::Alerts(0)));
        }
        assert!(waited > Duration::from_secs(1), "{waited:?}");
    }

    #[test]
    fn audit_rows_have_a_burst_then_one_a_minute() {
        let mut d = DeviceLimits::new(&IngestConfig::default());
        let allowed = (0..100).filter(|_| d.audit()).count();
        assert_eq!(allowed, AUDIT_BURST as usize);
    }
}
