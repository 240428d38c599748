//! The single writer: one thread owns the read-write database connection. Alert
//! batches from all sessions are grouped into one transaction per round (up to a
//! cap) and every batch's reply is sent only after that transaction committed:
//! an acknowledgement always means the alerts are on disk.
//!
//! The queue is bounded; when it is full, sessions wait to hand over their
//! batch, which stops them reading and slows their agents by flow control.
//!
//! Work that must not wait behind that queue (the correlator's steps) goes ahead of
//! it with [`Writer::run_next`]: it runs before the next round, so correlation and
//! ingest alternate during a burst instead of correlation moving one step per
//! drained queue.
//!
//! The writer's commits do not checkpoint the write-ahead log; `checkpoint` does
//! that on its own thread.

use std::collections::VecDeque;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use thiserror::Error;
use tokio::sync::{Notify, mpsc, oneshot, watch};
use tracing::error;
use ward_protocol::DeviceId;

use super::checkpoint::{Checkpointer, INLINE_FRAMES};
use crate::metrics::Metrics;
use crate::store::prelude::*;
use crate::store::{Fold, InsertOutcome, Store, StoreError, VerifiedAlert};
use crate::util::now_ms;

/// Other work that needs the writable connection; runs in its own transaction.
pub type Task = Box<dyn FnOnce(&mut Store) + Send>;

/// A batch's commit failed: why, and the batch back, for the session to retry.
type Failed = (String, Vec<VerifiedAlert>);

/// A batch's commit succeeded: what happened to it, and the batch back, so that the
/// session's task frees its alerts rather than the writer thread (freeing them was
/// about 8 % of the writer's time, and no other core can take the writer's work).
type Stored = (InsertOutcome, Vec<VerifiedAlert>);

enum Job {
    Alerts {
        device: DeviceId,
        alerts: Vec<VerifiedAlert>,
        reply: oneshot::Sender<Result<Stored, Failed>>,
    },
    Task(Task),
    /// Wakes a writer waiting for jobs to run what [`Writer::run_next`] queued.
    Wake,
}

/// The writer's queue; cheap to clone. The thread ends when every clone is dropped,
/// after finishing what was queued.
#[derive(Clone)]
pub struct Writer {
    jobs: mpsc::Sender<Job>,
    /// Tasks to run before the next round, oldest first.
    next: Arc<Mutex<VecDeque<Task>>>,
    /// Counts rounds committed (alerts or tasks), for tasks that follow new rows.
    rounds: watch::Receiver<u64>,
    /// Notified after each commit that stored alerts (the correlator waits on it).
    committed: Arc<Notify>,
    /// Set while alert commits fail (until one succeeds): `/healthz` reports it.
    failing: Arc<Mutex<Option<StorageFailure>>>,
}

/// Alert commits failing: the storage error and since when (Unix ms).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageFailure {
    pub error: String,
    pub since_ms: u64,
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writer").finish_non_exhaustive()
    }
}

#[derive(Debug, Error)]
pub enum WriteError {
    #[error("writer stopped")]
    Stopped,
    #[error("commit failed: {0}")]
    Commit(String),
}

/// A batch that was not stored: why, and the batch, to offer again.
#[derive(Debug)]
pub struct NotStored {
    pub error: WriteError,
    /// Empty when the writer stopped (nothing to retry).
    pub alerts: Vec<VerifiedAlert>,
}

impl Writer {
    /// Opens the database (with a page cache of `cache_mib`) and starts the writer thread.
    /// Repeats fold as `fold` says (`[ingest] fold_window_ms`, see `store::fold`).
    pub fn start(
        db_path: &Path,
        max_batch_alerts: usize,
        fold: Fold,
        cache_mib: u32,
        metrics: Arc<Metrics>,
    ) -> Result<(Writer, std::thread::JoinHandle<()>), StoreError> {
        let mut store = Store::open(db_path)?;
        store.become_writer(fold, cache_mib)?;
        let checkpointer = Checkpointer::start(db_path, INLINE_FRAMES)?;
        let (tx, mut rx) = mpsc::channel::<Job>(1024);
        let (rounds_tx, rounds) = watch::channel(0u64);
        let committed = Arc::new(Notify::new());
        let notify = Arc::clone(&committed);
        let next: Arc<Mutex<VecDeque<Task>>> = Arc::default();
        let queued = Arc::clone(&next);
        let failing: Arc<Mutex<Option<StorageFailure>>> = Arc::default();
        let health = Arc::clone(&failing);
        let handle = std::thread::Builder::new()
            .name("ward-writer".into())
            .spawn(move || {
                loop {
                    // Whatever went ahead of the queue runs first, one task at a time (a
                    // task may queue the next one).
                    while let Some(task) = queued.lock().ok().and_then(|mut q| q.pop_front()) {
                        task(&mut store);
                        checkpointer.after_commit(&store);
                        rounds_tx.send_modify(|n| *n = n.wrapping_add(1));
                    }
                    let Some(first) = rx.blocking_recv() else { break };
                    let mut round = vec![first];
                    let mut alerts: usize = round_alerts(&round);
                    while alerts < max_batch_alerts {
                        match rx.try_recv() {
                            Ok(job) => {
                                round.push(job);
                                alerts = round_alerts(&round);
                            }
                            Err(_) => break,
                        }
                    }
                    if round.iter().all(|j| matches!(j, Job::Wake)) {
                        continue;
                    }
                    if run_round(&mut store, round, &metrics, &health) {
                        notify.notify_one();
                    }
                    checkpointer.after_commit(&store);
                    rounds_tx.send_modify(|n| *n = n.wrapping_add(1));
                }
            })
            .map_err(|e| StoreError::Corrupt(format!("cannot start writer thread: {e}")))?;
        Ok((
            Writer {
                jobs: tx,
                next,
                rounds,
                committed,
                failing,
            },
            handle,
        ))
    }

    /// Changes after every round the writer finished (its commits are visible).
    pub fn rounds(&self) -> watch::Receiver<u64> {
        let mut r = self.rounds.clone();
        r.mark_unchanged();
        r
    }

    /// Notified after every commit that stored alerts.
    pub fn alerts_committed(&self) -> Arc<Notify> {
        Arc::clone(&self.committed)
    }

    /// Says alerts were stored another way (a task inserting feed alerts).
    pub fn notify_alerts(&self) {
        self.committed.notify_one();
    }

    /// Stores a verified batch; returns once it has been committed, or the batch
    /// back when the commit failed.
    pub async fn store_alerts(&self, device: DeviceId, alerts: Vec<VerifiedAlert>) -> Result<InsertOutcome, NotStored> {
        let stopped = || NotStored {
            error: WriteError::Stopped,
            alerts: Vec::new(),
        };
        let (reply, rx) = oneshot::channel();
        self.jobs
            .send(Job::Alerts { device, alerts, reply })
            .await
            .map_err(|_| stopped())?;
        let (outcome, alerts) = rx.await.map_err(|_| stopped())?.map_err(|(error, alerts)| NotStored {
            error: WriteError::Commit(error),
            alerts,
        })?;
        drop(alerts);
        Ok(outcome)
    }

    /// Whether alert commits are failing now, since when and why.
    pub fn storage_failure(&self) -> Option<StorageFailure> {
        self.failing.lock().ok()?.clone()
    }

    /// Runs `f` on the writable store before the next round of queued work and
    /// returns its result: for work that must keep pace with ingest however long the
    /// queue is. `f` should be bounded in time, as every round waits for it.
    pub async fn run_next<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Store) -> R + Send + 'static,
    ) -> Result<R, WriteError> {
        let (reply, rx) = oneshot::channel();
        let task: Task = Box::new(move |store| {
            let _ = reply.send(f(store));
        });
        self.next.lock().map_err(|_| WriteError::Stopped)?.push_back(task);
        // A writer waiting for jobs needs one to look again; a full queue means it is
        // busy and looks after its round anyway; a closed one, that it stopped.
        if let Err(mpsc::error::TrySendError::Closed(_)) = self.jobs.try_send(Job::Wake) {
            return Err(WriteError::Stopped);
        }
        rx.await.map_err(|_| WriteError::Stopped)
    }

    /// Runs `f` on the writable store and returns its result.
    pub async fn run<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Store) -> R + Send + 'static,
    ) -> Result<R, WriteError> {
        let (reply, rx) = oneshot::channel();
        let task: Task = Box::new(move |store| {
            let _ = reply.send(f(store));
        });
        self.jobs.send(Job::Task(task)).await.map_err(|_| WriteError::Stopped)?;
        rx.await.map_err(|_| WriteError::Stopped)
    }
}

fn round_alerts(round: &[Job]) -> usize {
    round
        .iter()
        .map(|j| {
            if let Job::Alerts { alerts, .. } = j {
                alerts.len()
            } else {
                0
            }
        })
        .sum()
}

/// Runs one round; true if it stored alerts.
fn run_round(store: &mut Store, round: Vec<Job>, metrics: &Metrics, failing: &Mutex<Option<StorageFailure>>) -> bool {
    let mut batches = Vec::new();
    let mut replies = Vec::new();
    for job in round {
        match job {
            Job::Alerts { device, alerts, reply } => {
                batches.push((device, alerts));
                replies.push(reply);
            }
            Job::Task(task) => task(store),
            Job::Wake => {}
        }
    }
    if batches.is_empty() {
        return false;
    }
    let started = Instant::now();
    let refs: Vec<(DeviceId, &[VerifiedAlert])> = batches.iter().map(|(d, a)| (*d, a.as_slice())).collect();
    let result = store.insert_alert_batches(&refs, now_ms());
    drop(refs);
    match result {
        Ok(outcomes) => {
            if let Ok(mut f) = failing.lock() {
                *f = None;
            }
            metrics.batch_commit.observe(started.elapsed());
            let mut stored = false;
            for ((outcome, reply), (_, alerts)) in outcomes.into_iter().zip(replies).zip(batches) {
                stored |= outcome.stored > 0;
                metrics.alerts_stored.add(u64::from(outcome.stored));
                metrics.alerts_folded.add(u64::from(outcome.folded));
                metrics.alerts_duplicate.add(u64::from(outcome.duplicates));
                // Should the session be gone, the batch is freed here after all.
                let _ = reply.send(Ok((outcome, alerts)));
            }
            stored
        }
        Err(e) => {
            error!(error = %e, "alert commit failed; batches not acknowledged");
            metrics.commit_failures.inc();
            if let Ok(mut f) = failing.lock() {
                f.get_or_insert_with(|| StorageFailure {
                    error: e.to_string(),
                    since_ms: now_ms(),
                })
                .error = e.to_string();
            }
            for (reply, (_, alerts)) in replies.into_iter().zip(batches) {
                let _ = reply.send(Err((e.to_string(), alerts)));
            }
            false
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use ward_protocol::{Alert, AlertId, Id128, KeyId, RuleRef, Severity, Signed};

    fn batch(seq: u64) -> Vec<VerifiedAlert> {
        let alert = Alert {
            id: AlertId(Id128::from_u128(u128::from(seq))),
            device_id: DeviceId(Id128::from_u128(1)),
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
        };
        let signed = Signed {
            key_id: KeyId([0; 8]),
            payload: vec![],
            signature: vec![],
        };
        vec![VerifiedAlert { alert, signed }]
    }

    /// Work sent with `run_next` runs after the round in progress, before the
    /// rounds queued behind it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn work_sent_ahead_runs_before_queued_rounds() {
        let dir = tempfile::tempdir().unwrap();
        let (writer, _thread) = Writer::start(
            &dir.path().join("ward.db"),
            1,
            crate::store::Fold::OFF,
            2,
            Arc::default(),
        )
        .unwrap();
        let (started_tx, started) = std::sync::mpsc::channel();
        let (release, released) = std::sync::mpsc::channel::<()>();
        let w = writer.clone();
        let busy = tokio::spawn(async move {
            w.run(move |_| {
                started_tx.send(()).unwrap();
                released.recv().unwrap();
            })
            .await
        });
        tokio::task::spawn_blocking(move || started.recv().unwrap())
            .await
            .unwrap();
        // Three one-alert rounds queue behind the busy writer (the device is unknown,
        // so each fails; each is a round all the same).
        let mut queued = Vec::new();
        for seq in 1..=3 {
            let w = writer.clone();
            queued.push(tokio::spawn(async move {
                w.store_alerts(DeviceId(Id128::from_u128(1)), batch(seq)).await
            }));
        }
        while writer.jobs.capacity() > writer.jobs.max_capacity() - 3 {
            tokio::task::yield_now().await;
        }
        let rounds = writer.rounds();
        let ahead = {
            let w = writer.clone();
            tokio::spawn(async move { w.run_next(move |_| *rounds.borrow()).await })
        };
        while writer.next.lock().unwrap().is_empty() {
            tokio::task::yield_now().await;
        }
        release.send(()).unwrap();
        busy.await.unwrap().unwrap();
        assert_eq!(ahead.await.unwrap().unwrap(), 1, "only the busy round ran before it");
        for q in queued {
            // A failed commit hands the batch back for the session to retry.
            let failed = q.await.unwrap().unwrap_err();
            assert!(matches!(failed.error, WriteError::Commit(_)));
            assert_eq!(failed.alerts.len(), 1);
        }
        // And with nothing queued, it wakes an idle writer.
        assert_eq!(writer.run_next(|_| 7).await.unwrap(), 7);
    }
}
