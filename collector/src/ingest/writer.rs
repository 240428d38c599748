//! The single writer: one thread owns the read-write database connection. Alert
//! batches from all sessions are grouped into one transaction per round (up to a
//! cap) and every batch's reply is sent only after that transaction committed:
//! an acknowledgement always means the alerts are on disk.
//!
//! The queue is bounded; when it is full, sessions wait to hand over their
//! batch, which stops them reading and slows their agents by flow control.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use thiserror::Error;
use tokio::sync::{Notify, mpsc, oneshot, watch};
use tracing::error;
use ward_protocol::DeviceId;

use crate::metrics::Metrics;
use crate::store::{Fold, InsertOutcome, Store, StoreError, VerifiedAlert};
use crate::util::now_ms;

/// Other work that needs the writable connection; runs in its own transaction.
pub type Task = Box<dyn FnOnce(&mut Store) + Send>;

enum Job {
    Alerts {
        device: DeviceId,
        alerts: Vec<VerifiedAlert>,
        reply: oneshot::Sender<Result<InsertOutcome, String>>,
    },
    Task(Task),
}

/// The writer's queue; cheap to clone. The thread ends when every clone is dropped,
/// after finishing what was queued.
#[derive(Clone)]
pub struct Writer {
    jobs: mpsc::Sender<Job>,
    /// Counts rounds committed (alerts or tasks), for tasks that follow new rows.
    rounds: watch::Receiver<u64>,
    /// Notified after each commit that stored alerts (the correlator waits on it).
    committed: Arc<Notify>,
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

impl Writer {
    /// Opens the database and starts the writer thread.
    /// Repeats fold as `fold` says (`[ingest] fold_window_ms`, see `store::fold`).
    pub fn start(
        db_path: &Path,
        max_batch_alerts: usize,
        fold: Fold,
        metrics: Arc<Metrics>,
    ) -> Result<(Writer, std::thread::JoinHandle<()>), StoreError> {
        let mut store = Store::open(db_path)?;
        store.set_fold(fold)?;
        let (tx, mut rx) = mpsc::channel::<Job>(1024);
        let (rounds_tx, rounds) = watch::channel(0u64);
        let committed = Arc::new(Notify::new());
        let notify = Arc::clone(&committed);
        let handle = std::thread::Builder::new()
            .name("ward-writer".into())
            .spawn(move || {
                while let Some(first) = rx.blocking_recv() {
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
                    if run_round(&mut store, round, &metrics) {
                        notify.notify_one();
                    }
                    rounds_tx.send_modify(|n| *n = n.wrapping_add(1));
                }
            })
            .map_err(|e| StoreError::Corrupt(format!("cannot start writer thread: {e}")))?;
        Ok((
            Writer {
                jobs: tx,
                rounds,
                committed,
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

    /// Stores a verified batch; returns once it has been committed.
    pub async fn store_alerts(
        &self,
        device: DeviceId,
        alerts: Vec<VerifiedAlert>,
    ) -> Result<InsertOutcome, WriteError> {
        let (reply, rx) = oneshot::channel();
        self.jobs
            .send(Job::Alerts { device, alerts, reply })
            .await
            .map_err(|_| WriteError::Stopped)?;
        rx.await.map_err(|_| WriteError::Stopped)?.map_err(WriteError::Commit)
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
fn run_round(store: &mut Store, round: Vec<Job>, metrics: &Metrics) -> bool {
    let mut batches = Vec::new();
    let mut replies = Vec::new();
    for job in round {
        match job {
            Job::Alerts { device, alerts, reply } => {
                batches.push((device, alerts));
                replies.push(reply);
            }
            Job::Task(task) => task(store),
        }
    }
    if batches.is_empty() {
        return false;
    }
    let started = Instant::now();
    let refs: Vec<(DeviceId, &[VerifiedAlert])> = batches.iter().map(|(d, a)| (*d, a.as_slice())).collect();
    match store.insert_alert_batches(&refs, now_ms()) {
        Ok(outcomes) => {
            metrics.batch_commit.observe(started.elapsed());
            let mut stored = false;
            for (outcome, reply) in outcomes.into_iter().zip(replies) {
                stored |= outcome.stored > 0;
                metrics.alerts_stored.add(u64::from(outcome.stored));
                metrics.alerts_folded.add(u64::from(outcome.folded));
                metrics.alerts_duplicate.add(u64::from(outcome.duplicates));
                let _ = reply.send(Ok(outcome));
            }
            stored
        }
        Err(e) => {
            error!(error = %e, "alert commit failed; batches not acknowledged");
            metrics.commit_failures.inc();
            for reply in replies {
                let _ = reply.send(Err(e.to_string()));
            }
            false
        }
    }
}
