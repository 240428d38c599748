//! From events to stored alerts: detection (with correlation and aggregation),
//! then the alert builder ([`crate::alert`]), which numbers, signs and appends each
//! alert to the durable outbox before the link is told there is something to send.

use std::sync::Arc;

use tokio::sync::{mpsc, watch};
use tracing::{error, warn};

use crate::alert::AlertBuilder;
use crate::clock::now_ms;
use crate::record::EventRecorder;
use crate::shared::Shared;
use ward_detect::event::Event;
use ward_detect::{AggregatedDetection, Aggregator, AggregatorConfig, Correlator, Detector, VerdictMemo};

/// A compiled rule set and the pack version it came from.
pub struct Rules {
    pub version: u64,
    pub detector: Detector,
}

/// The most events judged before their alerts are committed together.
const GROUP_MAX_EVENTS: usize = 4096;
/// The most alerts committed in one transaction.
const GROUP_MAX_ALERTS: usize = 2048;
/// Files remembered for the judged record while storage fails.
const PENDING_MAX_FILES: usize = 20_000;
const RETRY_MIN_MS: u64 = 100;
const RETRY_MAX_MS: u64 = 5_000;

/// What detection has judged but the outbox has not yet stored: normally one group,
/// kept across retries when storage fails.
#[derive(Default)]
struct Pending {
    /// `outbox.memory_queue_max_alerts`: past this, alerts are dropped and counted.
    max_alerts: usize,
    alerts: Vec<AggregatedDetection>,
    files: Vec<(String, u64)>,
    through_ms: u64,
    /// Alerts dropped from this queue while storage failed, not yet recorded.
    lost: u64,
    /// Why storage last failed; `None` while it works.
    failing: Option<String>,
    retry_at: Option<tokio::time::Instant>,
    backoff_ms: u64,
}

impl Pending {
    fn judge(
        &mut self,
        shared: &Shared,
        ev: &Event,
        rules: &Rules,
        correlator: &mut Option<Correlator>,
        memo: &mut VerdictMemo,
        aggregator: &mut Aggregator,
    ) {
        self.through_ms = self.through_ms.max(ev.observed_at_ms);
        remember_change(shared, ev);
        if let ward_detect::event::EventData::File(f) = &ev.data
            && let Some(changed) = f.changed_ms
            && self.files.len() < PENDING_MAX_FILES
        {
            self.files.push((f.path.clone(), changed));
        }
        let now = now_ms();
        let detections = match correlator.as_mut() {
            Some(c) => c.process_with(&rules.detector, memo, ev, now),
            None => rules.detector.evaluate_with(memo, ev),
        };
        for d in detections {
            self.push(aggregator.push(d, now));
        }
    }

    fn push(&mut self, ready: Vec<AggregatedDetection>) {
        self.alerts.extend(ready);
        // While storage works a group is stored as soon as it is judged (and is bounded
        // by GROUP_MAX_ALERTS); the memory queue's bound is for while it fails.
        while self.failing.is_some() && self.alerts.len() > self.max_alerts {
            // The lowest severity goes first, the oldest among equals (as in the outbox).
            let victim = self
                .alerts
                .iter()
                .enumerate()
                .min_by_key(|(i, a)| (a.detection.rule.severity, *i))
                .map(|(i, _)| i)
                .unwrap_or(0);
            self.alerts.remove(victim);
            self.lost += 1;
        }
    }

    fn due(&self) -> bool {
        self.retry_at.is_none_or(|t| t <= tokio::time::Instant::now())
    }

    /// Stores what is pending in one transaction; on a storage error keeps it and
    /// schedules a retry with back-off.
    fn flush(&mut self, builder: &AlertBuilder, shared: &Shared) {
        if self.alerts.is_empty() && self.lost == 0 {
            // Files that raised nothing need no record (judging them again raises
            // nothing); the judging point rides on the next commit.
            self.files.clear();
            return;
        }
        let result = tokio::task::block_in_place(|| {
            let Ok(mut outbox) = shared.outbox.lock() else {
                return Err(crate::outbox::OutboxError::Io(std::io::Error::other(
                    "outbox lock poisoned",
                )));
            };
            if self.lost > 0 {
                let reason = format!(
                    "outbox storage failed ({}): {} alerts dropped from the agent's memory queue (limit {})",
                    self.failing.as_deref().unwrap_or("unknown error"),
                    self.lost,
                    self.max_alerts
                );
                outbox.report_loss(self.lost, &reason)?;
                warn!(
                    lost = self.lost,
                    "storage is back: alerts dropped meanwhile recorded for the collector"
                );
                self.lost = 0;
            }
            let progress = crate::outbox::Progress {
                through_ms: self.through_ms,
                files: &self.files,
            };
            builder.store_many(&mut outbox, &self.alerts, progress)
        });
        match result {
            Ok(stored) => {
                self.alerts.clear();
                self.files.clear();
                self.retry_at = None;
                self.backoff_ms = 0;
                if let Ok(mut s) = shared.status.lock() {
                    s.alerts_raised += stored;
                    s.storage_error = None;
                    s.alerts_waiting = 0;
                }
                if self.failing.take().is_some() {
                    tracing::info!("outbox storage works again");
                }
                shared.new_alerts.notify_one();
            }
            Err(e) => {
                let retryable = e.is_retryable();
                let why = e.to_string();
                if !retryable {
                    // Retrying cannot help (a corrupt file is quarantined at the next
                    // start): these alerts are lost, and counted.
                    error!(error = %e, alerts = self.alerts.len(), "cannot store alerts");
                    self.lost += self.alerts.len() as u64;
                    self.alerts.clear();
                }
                self.backoff_ms = (self.backoff_ms * 2).clamp(RETRY_MIN_MS, RETRY_MAX_MS);
                self.retry_at = Some(tokio::time::Instant::now() + std::time::Duration::from_millis(self.backoff_ms));
                if self.failing.as_deref() != Some(why.as_str()) {
                    error!(error = %why, waiting = self.alerts.len(), retry_in_ms = self.backoff_ms, "outbox cannot store: alerts wait in memory");
                }
                if let Ok(mut s) = shared.status.lock() {
                    s.storage_error = Some(why.clone());
                    s.alerts_waiting = self.alerts.len() as u64;
                }
                self.failing = Some(why);
            }
        }
        if let Ok(mut s) = shared.status.lock() {
            s.alerts_lost_in_memory = self.lost;
        }
    }
}

/// Runs detection until the event channel closes or shutdown flips. New rule sets
/// arrive on `rules_rx` and replace the running one between two events.
///
/// Group commit: everything already waiting on the channel (up to a bound) is judged,
/// then its alerts are stored in ONE outbox transaction, so a burst is on disk within
/// one fsync instead of one per alert. When the outbox cannot store (disk full), the
/// alerts wait in memory (bounded) and storing is retried with back-off.
#[allow(clippy::too_many_arguments)]
pub async fn run_detection(
    mut rules: Rules,
    mut rules_rx: mpsc::Receiver<Rules>,
    mut events: mpsc::Receiver<Event>,
    builder: AlertBuilder,
    shared: Arc<Shared>,
    aggregation: AggregatorConfig,
    memory_queue_max_alerts: usize,
    mut recorder: Option<EventRecorder>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut aggregator = Aggregator::new(aggregation);
    let mut correlator: Option<Correlator> = rules.detector.correlator();
    // The rules' verdicts for events whose rule-visible fields repeat (bounded; see
    // `ward_detect::memo`): correlation and aggregation still see every event.
    let mut memo = rules.detector.memo();
    // The memo's counts of the rule sets replaced since start, for status.
    let (mut remembered_before, mut evaluated_before) = (0u64, 0u64);
    let mut pending = Pending {
        max_alerts: memory_queue_max_alerts,
        ..Pending::default()
    };
    loop {
        let deadline = aggregator.next_deadline_ms();
        let sleep_ms = deadline.map(|d| d.saturating_sub(now_ms())).unwrap_or(3_600_000);
        let retry = pending.retry_at;
        tokio::select! {
            ev = events.recv() => match ev {
                Some(ev) => {
                    record(&mut recorder, &ev);
                    pending.judge(&shared, &ev, &rules, &mut correlator, &mut memo, &mut aggregator);
                    let mut taken = 1;
                    while taken < GROUP_MAX_EVENTS && pending.alerts.len() < GROUP_MAX_ALERTS {
                        let Ok(ev) = events.try_recv() else { break };
                        record(&mut recorder, &ev);
                        pending.judge(&shared, &ev, &rules, &mut correlator, &mut memo, &mut aggregator);
                        taken += 1;
                    }
                    if let Some(r) = recorder.as_mut() {
                        r.flush();
                    }
                    let m = memo.stats();
                    if let Ok(mut s) = shared.status.lock() {
                        s.verdicts_remembered = remembered_before + m.hits;
                        s.verdicts_evaluated = evaluated_before + m.misses + m.skipped;
                    }
                }
                None => break,
            },
            new = rules_rx.recv() => {
                if let Some(new) = new {
                    correlator = new.detector.correlator();
                    let m = memo.stats();
                    remembered_before += m.hits;
                    evaluated_before += m.misses + m.skipped;
                    memo = new.detector.memo();
                    rules = new;
                }
                continue;
            }
            _ = tokio::time::sleep(std::time::Duration::from_millis(sleep_ms)) => pending.push(aggregator.flush(now_ms())),
            _ = tokio::time::sleep_until(retry.unwrap_or_else(tokio::time::Instant::now)), if retry.is_some() => {}
            _ = shutdown.changed() => break,
        }
        if pending.due() {
            pending.flush(&builder, &shared);
        }
    }
    // A clean stop judges what is already waiting, so it is not left to the rescan.
    while let Ok(ev) = events.try_recv() {
        record(&mut recorder, &ev);
        pending.judge(&shared, &ev, &rules, &mut correlator, &mut memo, &mut aggregator);
    }
    if let Some(r) = recorder.as_mut() {
        r.flush();
    }
    // Repeats still being counted are not lost at shutdown.
    pending.push(aggregator.flush_all());
    pending.retry_at = None;
    pending.flush(&builder, &shared);
    if !pending.alerts.is_empty() {
        error!(
            lost = pending.alerts.len(),
            "stopping with alerts the outbox could not store"
        );
    }
}

fn record(recorder: &mut Option<EventRecorder>, event: &Event) {
    if let Some(r) = recorder.as_mut() {
        r.record(event);
    }
}

fn remember_change(shared: &Shared, event: &Event) {
    if let Some(change) = crate::respond::package::RecentChange::from_event(event)
        && let Ok(mut recent) = shared.recent.lock()
    {
        if recent.len() >= crate::respond::package::RECENT_CHANGES {
            recent.pop_front();
        }
        recent.push_back(change);
    }
}
