//! Signature verification on all cores. Sessions hand whole batches to a fixed
//! pool of threads (one per core by default) through a bounded queue; a full
//! queue makes the sending session wait, which slows that agent by flow control.
//! Verification happens on the signed bytes before anything is decoded.

use std::sync::{Arc, Mutex};

use thiserror::Error;
use tokio::sync::{mpsc, oneshot};
use ward_protocol::codec::decode_body;
use ward_protocol::{Alert, DeviceId, PublicKey, SignatureKind, Signed, sign};

use crate::store::VerifiedAlert;

/// Why a batch was refused. The whole batch is refused: nothing of it is stored.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum Rejection {
    #[error("alert {index}: signature does not verify")]
    BadSignature { index: usize },
    #[error("alert {index}: payload does not decode: {detail}")]
    Malformed { index: usize, detail: String },
    #[error("alert {index}: names device {named}, not the connection's own")]
    WrongDevice { index: usize, named: String },
    #[error("alert {index}: {detail}")]
    Invalid { index: usize, detail: &'static str },
}

impl Rejection {
    /// The metric label for this reason.
    pub fn label(&self) -> &'static str {
        match self {
            Rejection::BadSignature { .. } => "bad_signature",
            Rejection::Malformed { .. } => "malformed",
            Rejection::WrongDevice { .. } => "wrong_device",
            Rejection::Invalid { .. } => "invalid_field",
        }
    }
}

/// Checks one batch: signatures first, then decoding, then attribution.
pub fn verify_batch(device: DeviceId, key: &PublicKey, alerts: Vec<Signed>) -> Result<Vec<VerifiedAlert>, Rejection> {
    let refs: Vec<&Signed> = alerts.iter().collect();
    sign::verify_batch(SignatureKind::Alert, key, &refs).map_err(|(index, _)| Rejection::BadSignature { index })?;
    let mut out = Vec::with_capacity(alerts.len());
    for (index, signed) in alerts.into_iter().enumerate() {
        let alert: Alert = decode_body(&signed.payload).map_err(|e| Rejection::Malformed {
            index,
            detail: e.to_string(),
        })?;
        if alert.device_id != device {
            return Err(Rejection::WrongDevice {
                index,
                named: alert.device_id.to_string(),
            });
        }
        check_fields(&alert).map_err(|detail| Rejection::Invalid { index, detail })?;
        out.push(VerifiedAlert { alert, signed });
    }
    Ok(out)
}

/// Values SQLite and the API must be able to hold.
fn check_fields(a: &Alert) -> Result<(), &'static str> {
    let max = i64::MAX as u64;
    if a.seq == 0 || a.seq > max {
        return Err("sequence number out of range");
    }
    if a.observed_at_ms > max || a.last_observed_at_ms > max {
        return Err("timestamp out of range");
    }
    if a.count == 0 {
        return Err("count must be at least 1");
    }
    Ok(())
}

struct Job {
    device: DeviceId,
    key: PublicKey,
    alerts: Vec<Signed>,
    reply: oneshot::Sender<Result<Vec<VerifiedAlert>, Rejection>>,
}

/// The pool; cheap to clone.
#[derive(Clone)]
pub struct VerifyPool {
    jobs: mpsc::Sender<Job>,
}

impl std::fmt::Debug for VerifyPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifyPool").finish_non_exhaustive()
    }
}

/// The pool is gone (shutdown); the caller should stop.
#[derive(Debug, Error)]
#[error("verification pool stopped")]
pub struct PoolStopped;

impl VerifyPool {
    /// Starts `threads` workers (0: one per core). Workers exit when every handle is dropped.
    pub fn start(threads: usize) -> std::io::Result<VerifyPool> {
        let threads = if threads == 0 {
            std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2)
        } else {
            threads
        };
        let (tx, rx) = mpsc::channel::<Job>(threads * 4);
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..threads {
            let rx = Arc::clone(&rx);
            std::thread::Builder::new()
                .name(format!("ward-verify-{i}"))
                .spawn(move || {
                    loop {
                        // Holding the lock while waiting is fine: whoever holds it takes the next job.
                        let job = match rx.lock() {
                            Ok(mut guard) => guard.blocking_recv(),
                            Err(_) => None,
                        };
                        let Some(job) = job else { break };
                        let result = verify_batch(job.device, &job.key, job.alerts);
                        let _ = job.reply.send(result);
                    }
                })?;
        }
        Ok(VerifyPool { jobs: tx })
    }

    pub async fn verify(
        &self,
        device: DeviceId,
        key: PublicKey,
        alerts: Vec<Signed>,
    ) -> Result<Result<Vec<VerifiedAlert>, Rejection>, PoolStopped> {
        let (reply, rx) = oneshot::channel();
        self.jobs
            .send(Job {
                device,
                key,
                alerts,
                reply,
            })
            .await
            .map_err(|_| PoolStopped)?;
        rx.await.map_err(|_| PoolStopped)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use ring::rand::SystemRandom;
    use ward_protocol::{AlertId, Id128, RuleRef, Severity, SigningKey};

    fn alert(device: DeviceId, seq: u64) -> Alert {
        Alert {
            id: AlertId(Id128::from_u128(seq as u128)),
            device_id: device,
            seq,
            observed_at_ms: 1,
            last_observed_at_ms: 1,
            rule: RuleRef {
                id: "r".into(),
                title: "t".into(),
                author: "a".into(),
                severity: Severity::Low,
                techniques: vec![],
                tactics: vec![],
            },
            entities: vec![],
            count: 1,
            matched: vec![],
        }
    }

    #[tokio::test]
    async fn pool_verifies_and_refuses_with_reasons() {
        let pool = VerifyPool::start(2).unwrap();
        let (key, _) = SigningKey::generate(&SystemRandom::new()).unwrap();
        let me = DeviceId(Id128::from_u128(1));
        let other = DeviceId(Id128::from_u128(2));
        let good = key.sign_value(SignatureKind::Alert, &alert(me, 1)).unwrap();
        let ok = pool
            .verify(me, key.public_key(), vec![good.clone()])
            .await
            .unwrap()
            .unwrap();
        assert_eq!(ok.len(), 1);

        let mut tampered = good.clone();
        tampered.payload[0] ^= 1;
        let r = pool
            .verify(me, key.public_key(), vec![good.clone(), tampered])
            .await
            .unwrap();
        assert_eq!(r.unwrap_err(), Rejection::BadSignature { index: 1 });

        let foreign = key.sign_value(SignatureKind::Alert, &alert(other, 1)).unwrap();
        let r = pool.verify(me, key.public_key(), vec![foreign]).await.unwrap();
        assert!(matches!(r, Err(Rejection::WrongDevice { index: 0, .. })));

        let zero = key.sign_value(SignatureKind::Alert, &alert(me, 0)).unwrap();
        let r = pool.verify(me, key.public_key(), vec![zero]).await.unwrap();
        assert!(matches!(r, Err(Rejection::Invalid { index: 0, .. })));

        let junk = key.sign(SignatureKind::Alert, vec![1, 2, 3]);
        let r = pool.verify(me, key.public_key(), vec![junk]).await.unwrap();
        assert!(matches!(r, Err(Rejection::Malformed { index: 0, .. })));
    }
}
