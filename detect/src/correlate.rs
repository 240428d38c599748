//! Sigma correlation rules (event_count, value_count, temporal...) over the
//! detector's matches: the one stateful part of detection. Time is the event's
//! `now_ms` passed in, never the clock; state is bounded (rsigma's
//! `max_state_entries` and `max_group_entries`); no IO.

use rsigma_eval::CorrelationEngine;

use super::engine::{Detection, Detector};
use super::mapping::SigmaView;
use super::memo::VerdictMemo;
use crate::event::Event;

/// Correlation state for one [`Detector`]; make it with [`Detector::correlator`]
/// and make a new one when the detector is replaced.
pub struct Correlator {
    engine: CorrelationEngine,
}

impl std::fmt::Debug for Correlator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Correlator")
            .field("states", &self.engine.state_count())
            .finish_non_exhaustive()
    }
}

impl Correlator {
    pub(crate) fn new(engine: CorrelationEngine) -> Self {
        Correlator { engine }
    }

    /// Everything [`Detector::evaluate`] returns for `event`, plus the correlation
    /// rules it completes. `now_ms` places the event in the correlation windows.
    pub fn process(&mut self, detector: &Detector, event: &Event, now_ms: u64) -> Vec<Detection> {
        self.run(detector, event, None, now_ms)
    }

    /// As [`Correlator::process`], the detection rules' verdicts taken from `memo`
    /// when the event's rule-visible fields repeat. Every event's detections still
    /// enter the correlation windows: only the stateless part is remembered.
    pub fn process_with(
        &mut self,
        detector: &Detector,
        memo: &mut VerdictMemo,
        event: &Event,
        now_ms: u64,
    ) -> Vec<Detection> {
        self.run(detector, event, Some(memo), now_ms)
    }

    fn run(
        &mut self,
        detector: &Detector,
        event: &Event,
        memo: Option<&mut VerdictMemo>,
        now_ms: u64,
    ) -> Vec<Detection> {
        let view = SigmaView::new(event);
        let raw = detector.evaluate_raw(&view, event, memo);
        let secs = i64::try_from(now_ms / 1000).unwrap_or(i64::MAX);
        self.engine
            .process_with_detections(&view, raw, secs)
            .iter()
            .filter_map(|r| detector.detection(r, event))
            .collect()
    }

    /// Drops windows that ended before `now_ms`.
    pub fn evict_expired(&mut self, now_ms: u64) {
        self.engine
            .evict_expired(i64::try_from(now_ms / 1000).unwrap_or(i64::MAX));
    }

    /// How many correlation windows are open.
    pub fn open_windows(&self) -> usize {
        self.engine.state_count()
    }
}
