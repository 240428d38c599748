//! From events to stored alerts: detection (with correlation and aggregation),
//! then the alert builder, which numbers, signs and appends each alert to the
//! durable outbox before the link is told there is something to send.

use std::sync::{Arc, Mutex};

use ring::rand::SystemRandom;
use tokio::sync::{Notify, mpsc, watch};
use tracing::{error, warn};
use ward_protocol::{Alert, AlertId, DeviceId, Entity, SignatureKind, SigningKey};

use crate::detect::{AggregatedDetection, Aggregator, AggregatorConfig, Correlator, Detector};
use crate::event::Event;
use crate::outbox::Outbox;
use crate::sensor::now_ms;
use crate::status::Status;

/// A compiled rule set and the pack version it came from.
pub struct Rules {
    pub version: u64,
    pub detector: Detector,
}

/// What the pipeline shares with the link and the status writer.
pub struct Shared {
    pub outbox: Mutex<Outbox>,
    pub new_alerts: Notify,
    pub status: Mutex<Status>,
    /// Recent file changes, for investigation packages.
    pub recent: crate::commands::RecentChanges,
}

/// Turns detections into signed alerts in the outbox.
pub struct AlertBuilder {
    pub device_id: DeviceId,
    pub hostname: String,
    pub key: SigningKey,
    rng: SystemRandom,
}

impl AlertBuilder {
    pub fn new(device_id: DeviceId, hostname: String, key: SigningKey) -> Self {
        AlertBuilder {
            device_id,
            hostname,
            key,
            rng: SystemRandom::new(),
        }
    }

    /// The alert for an aggregated detection, numbered `seq`.
    pub fn alert(
        &self,
        agg: &AggregatedDetection,
        seq: u64,
        now_ms: u64,
    ) -> Result<Alert, ward_protocol::ids::RandomError> {
        let d = &agg.detection;
        let mut entities = Vec::with_capacity(d.entities.len() + 1);
        entities.push(Entity::Device {
            hostname: self.hostname.clone(),
        });
        entities.extend(d.entities.iter().cloned());
        Ok(Alert {
            id: AlertId::generate(now_ms, &self.rng)?,
            device_id: self.device_id,
            seq,
            observed_at_ms: agg.first_observed_ms,
            last_observed_at_ms: agg.last_observed_ms,
            rule: d.rule.clone(),
            entities,
            count: agg.count.max(1),
            matched: d.matched.clone(),
        })
    }

    /// Signs and stores one alert durably. Returns false if it could not be stored.
    pub fn store(&self, outbox: &mut Outbox, agg: &AggregatedDetection) -> bool {
        let now = now_ms();
        let result = outbox.append_with(agg.detection.rule.severity, |seq| {
            let alert = self.alert(agg, seq, now).map_err(BuildError::Random)?;
            let signed = self
                .key
                .sign_value(SignatureKind::Alert, &alert)
                .map_err(BuildError::Encode)?;
            Ok::<_, BuildError>((alert.id, signed))
        });
        match result {
            Ok(a) => {
                if a.dropped > 0 {
                    warn!(
                        dropped = a.dropped,
                        "outbox full: alerts dropped (reported to the collector)"
                    );
                }
                a.stored
            }
            Err(e) => {
                error!(error = %e, rule = %agg.detection.rule.id, "cannot store alert");
                false
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("random source failed")]
    Random(ward_protocol::ids::RandomError),
    #[error("alert does not encode: {0}")]
    Encode(ward_protocol::DecodeError),
}

/// Runs detection until the event channel closes or shutdown flips. New rule sets
/// arrive on `rules_rx` and replace the running one between two events.
pub async fn run_detection(
    mut rules: Rules,
    mut rules_rx: mpsc::Receiver<Rules>,
    mut events: mpsc::Receiver<Event>,
    builder: AlertBuilder,
    shared: Arc<Shared>,
    window_ms: u64,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut aggregator = Aggregator::new(AggregatorConfig {
        window_ms,
        ..AggregatorConfig::default()
    });
    let mut correlator: Option<Correlator> = rules.detector.correlator();
    loop {
        let deadline = aggregator.next_deadline_ms();
        let sleep_ms = deadline.map(|d| d.saturating_sub(now_ms())).unwrap_or(3_600_000);
        let ready = tokio::select! {
            ev = events.recv() => match ev {
                Some(ev) => {
                    remember_change(&shared, &ev);
                    let now = now_ms();
                    let detections = match correlator.as_mut() {
                        Some(c) => c.process(&rules.detector, &ev, now),
                        None => rules.detector.evaluate(&ev),
                    };
                    let mut out = Vec::new();
                    for d in detections {
                        out.extend(aggregator.push(d, now));
                    }
                    out
                }
                None => break,
            },
            new = rules_rx.recv() => {
                if let Some(new) = new {
                    correlator = new.detector.correlator();
                    rules = new;
                }
                continue;
            }
            _ = tokio::time::sleep(std::time::Duration::from_millis(sleep_ms)) => aggregator.flush(now_ms()),
            _ = shutdown.changed() => break,
        };
        if !ready.is_empty() {
            store_all(&builder, &shared, &ready);
        }
    }
    // Repeats still being counted are not lost at shutdown.
    let rest = aggregator.flush_all();
    if !rest.is_empty() {
        store_all(&builder, &shared, &rest);
    }
}

fn remember_change(shared: &Shared, event: &Event) {
    if let Some(change) = crate::respond::package::RecentChange::from_event(event)
        && let Ok(mut recent) = shared.recent.lock()
    {
        if recent.len() >= crate::commands::RECENT_CHANGES {
            recent.pop_front();
        }
        recent.push_back(change);
    }
}

fn store_all(builder: &AlertBuilder, shared: &Shared, ready: &[AggregatedDetection]) {
    // Appends fsync: keep them off the async worker's critical path.
    tokio::task::block_in_place(|| {
        let Ok(mut outbox) = shared.outbox.lock() else { return };
        let stored = ready.iter().filter(|agg| builder.store(&mut outbox, agg)).count() as u64;
        if let Ok(mut s) = shared.status.lock() {
            s.alerts_raised += stored;
        }
    });
    shared.new_alerts.notify_one();
}
