//! The alert builder: turns an aggregated detection into an `Alert` (the next
//! sequence number, a fresh id, the device entity first), signs it with the device
//! key and appends it to the durable outbox, many in one transaction.

use ring::rand::SystemRandom;
use tracing::{error, warn};
use ward_detect::AggregatedDetection;
use ward_protocol::{Alert, AlertId, DeviceId, Entity, SignatureKind, SigningKey};

use crate::clock::now_ms;
use crate::outbox::Outbox;

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
        match self.store_many(outbox, std::slice::from_ref(agg), crate::outbox::Progress::default()) {
            Ok(n) => n == 1,
            Err(e) => {
                error!(error = %e, rule = %agg.detection.rule.id, "cannot store alert");
                false
            }
        }
    }

    /// Signs and stores alerts durably in one transaction (group commit: one fsync for
    /// the lot), with the judging progress. Returns how many were stored; an error
    /// means nothing was written.
    pub fn store_many(
        &self,
        outbox: &mut Outbox,
        ready: &[AggregatedDetection],
        progress: crate::outbox::Progress<'_>,
    ) -> Result<u64, crate::outbox::OutboxError> {
        let now = now_ms();
        let severities: Vec<_> = ready.iter().map(|agg| agg.detection.rule.severity).collect();
        let results = outbox.append_many_judged(
            &severities,
            |i, seq| {
                let agg = &ready[i];
                let alert = self.alert(agg, seq, now).map_err(BuildError::Random)?;
                let signed = self
                    .key
                    .sign_value(SignatureKind::Alert, &alert)
                    .map_err(BuildError::Encode)?;
                Ok::<_, BuildError>((alert.id, signed))
            },
            progress,
        )?;
        let mut stored = 0;
        let mut dropped = 0;
        for (agg, r) in ready.iter().zip(results) {
            match r {
                Ok(a) => {
                    dropped += a.dropped;
                    stored += u64::from(a.stored);
                }
                Err(e) => error!(error = %e, rule = %agg.detection.rule.id, "cannot build alert"),
            }
        }
        if dropped > 0 {
            warn!(dropped, "outbox full: alerts dropped (reported to the collector)");
        }
        Ok(stored)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("random source failed")]
    Random(ward_protocol::ids::RandomError),
    #[error("alert does not encode: {0}")]
    Encode(ward_protocol::DecodeError),
}
