//! Remembered verdicts: the detection rules' results for an event whose rule-visible
//! fields repeat (the same exe connecting to the same port, the same command run from
//! the same parent) are taken from a small bounded memo instead of evaluating every
//! rule again. It must not change what detection decides: the key is made of exactly
//! the values the bucket's rules can read, compared byte for byte (no hash collision
//! can hand one event another's verdict), and only the stateless part is remembered.
//!
//! Why this is exact. rsigma's `Engine::evaluate` takes `&self` and keeps no state
//! between events (its only interior mutability is statistics counters), so its
//! results are a function of the values `get_field` returns for the field names its
//! rules name, plus the strings keyword rules search. [`Reads`] collects those names
//! from each compiled rule: every detection item's field, the other field of a
//! `fieldref`, the placeholders of an `expand`. A bucket with a rule whose reads
//! cannot be listed (array scopes, `rsigma.include_event`, which copies the whole
//! event into its result) is never memoized. Keyword rules add the strings
//! `visit_string_values` offers to the key.
//!
//! What is not remembered: correlations. [`crate::Correlator::process_with`] still
//! feeds every event's detections, memoized or not, into its windows, so a count
//! or a temporal rule sees each repeat. Aggregation, entities and the alert's time
//! are made from the event itself afterwards.
//!
//! A bucket whose events rarely repeat (file events: every path differs) would only
//! pay for keys: after [`PROBE_LOOKUPS`] lookups with fewer than one hit in
//! [`MIN_HIT_RATIO`], the bucket is evaluated directly for the next
//! [`REST_EVALUATIONS`] events, then probed again.
//!
//! Bounds: two generations of at most [`GENERATION_ENTRIES`] keys each (a hit in
//! the old one moves to the young one; when the young one is full the old one is
//! dropped), keys of at most [`MAX_KEY_BYTES`] (a longer one is evaluated, not
//! remembered). A memo belongs to one [`crate::Detector`]; given another, it empties
//! itself. No IO, no clock.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use rsigma_eval::compiler::{CompiledDetection, CompiledRule};
use rsigma_eval::event::{Event as SigmaEventTrait, EventValue};
use rsigma_eval::matcher::{CompiledMatcher, ExpandPart};
use rsigma_eval::result::EvaluationResult;

use crate::mapping::{Bucket, SigmaView};

/// Keys remembered per generation.
pub const GENERATION_ENTRIES: usize = 512;
/// A key longer than this (long command lines) is not remembered.
pub const MAX_KEY_BYTES: usize = 2048;
/// Lookups of a bucket before its hit rate is judged.
pub const PROBE_LOOKUPS: u32 = 256;
/// A bucket with fewer hits than one in this many lookups rests.
pub const MIN_HIT_RATIO: u32 = 8;
/// Events of a resting bucket evaluated without the memo.
pub const REST_EVALUATIONS: u32 = 4096;

/// A bucket's recent lookups and hits, or how long it still rests.
#[derive(Debug, Clone, Copy, Default)]
struct Probe {
    lookups: u32,
    hits: u32,
    resting: u32,
}

/// What the rules of one bucket read from an event.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reads {
    /// Field names, sorted.
    pub fields: BTreeSet<String>,
    /// A keyword rule searches the event's strings.
    pub keywords: bool,
    /// A rule reads something that cannot be listed: never memoize this bucket.
    pub opaque: bool,
}

impl Reads {
    /// Adds what `rule` reads.
    pub fn add_rule(&mut self, rule: &CompiledRule) {
        if rule.include_event {
            self.opaque = true;
        }
        for d in rule.detections.values() {
            self.add_detection(d);
        }
    }

    fn add_detection(&mut self, d: &CompiledDetection) {
        match d {
            CompiledDetection::AllOf(items) => {
                for item in items {
                    match &item.field {
                        Some(f) => {
                            self.fields.insert(f.clone());
                        }
                        None => self.keywords = true,
                    }
                    self.add_matcher(&item.matcher);
                }
            }
            CompiledDetection::AnyOf(ds) | CompiledDetection::And(ds) => ds.iter().for_each(|d| self.add_detection(d)),
            CompiledDetection::Keywords(m) => {
                self.keywords = true;
                self.add_matcher(m);
            }
            CompiledDetection::ArrayMatch { .. } | CompiledDetection::Conditional { .. } => self.opaque = true,
        }
    }

    fn add_matcher(&mut self, m: &CompiledMatcher) {
        match m {
            CompiledMatcher::FieldRef { field, .. } => {
                self.fields.insert(field.clone());
            }
            CompiledMatcher::Expand { template, .. } => {
                for part in template {
                    if let ExpandPart::Placeholder(f) = part {
                        self.fields.insert(f.clone());
                    }
                }
            }
            CompiledMatcher::TimestampPart { inner, .. } | CompiledMatcher::Not(inner) => self.add_matcher(inner),
            CompiledMatcher::AnyOf(ms)
            | CompiledMatcher::AllOf(ms)
            | CompiledMatcher::CaseInsensitiveGroup { children: ms, .. } => ms.iter().for_each(|m| self.add_matcher(m)),
            // Every other matcher reads only its item's own field (or, for keywords,
            // the strings already counted).
            _ => {}
        }
    }
}

/// Hits and misses, for health reporting and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MemoStats {
    /// Buckets answered from the memo.
    pub hits: u64,
    /// Buckets evaluated and remembered.
    pub misses: u64,
    /// Buckets evaluated and not remembered (key too long, bucket opaque).
    pub skipped: u64,
}

/// The memo: see the module doc. Make one with [`crate::Detector::memo`].
#[derive(Debug, Default)]
pub struct VerdictMemo {
    detector: u64,
    young: HashMap<Box<[u8]>, Arc<[EvaluationResult]>>,
    old: HashMap<Box<[u8]>, Arc<[EvaluationResult]>>,
    key: Vec<u8>,
    stats: MemoStats,
    /// Per bucket (by [`bucket_tag`]).
    probes: [Probe; 11],
}

impl VerdictMemo {
    pub(crate) fn new(detector: u64) -> Self {
        VerdictMemo {
            detector,
            ..VerdictMemo::default()
        }
    }

    /// Hits and misses so far.
    pub fn stats(&self) -> MemoStats {
        self.stats
    }

    /// Keys remembered now (both generations).
    pub fn len(&self) -> usize {
        self.young.len() + self.old.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Forgets everything remembered for another detector.
    pub(crate) fn bind(&mut self, detector: u64) {
        if self.detector != detector {
            self.detector = detector;
            self.young.clear();
            self.old.clear();
        }
    }

    /// The results for `bucket` from the memo, or from `evaluate` (then remembered
    /// when the key allows it), appended to `out`.
    pub(crate) fn results(
        &mut self,
        bucket: Bucket,
        reads: Option<&Reads>,
        view: &SigmaView<'_>,
        out: &mut Vec<EvaluationResult>,
        evaluate: impl FnOnce() -> Vec<EvaluationResult>,
    ) {
        let probe = self.probes.get_mut(usize::from(bucket_tag(bucket)));
        let resting = probe.is_some_and(|p| {
            if p.resting > 0 {
                p.resting -= 1;
                true
            } else {
                false
            }
        });
        let Some(reads) = reads.filter(|r| !r.opaque && !resting) else {
            self.stats.skipped += 1;
            out.extend(evaluate());
            return;
        };
        let mut key = std::mem::take(&mut self.key);
        key.clear();
        if !build_key(&mut key, bucket, reads, view) {
            self.key = key;
            self.stats.skipped += 1;
            out.extend(evaluate());
            return;
        }
        let hit = if let Some(found) = self.young.get(key.as_slice()) {
            out.extend(found.iter().cloned());
            true
        } else if let Some((k, found)) = self.old.remove_entry(key.as_slice()) {
            out.extend(found.iter().cloned());
            self.insert(k, found);
            true
        } else {
            false
        };
        if let Some(p) = self.probes.get_mut(usize::from(bucket_tag(bucket))) {
            p.lookups += 1;
            p.hits += u32::from(hit);
            if p.lookups >= PROBE_LOOKUPS {
                if p.hits.saturating_mul(MIN_HIT_RATIO) < p.lookups {
                    p.resting = REST_EVALUATIONS;
                }
                (p.lookups, p.hits) = (0, 0);
            }
        }
        if hit {
            self.stats.hits += 1;
        } else {
            let results: Arc<[EvaluationResult]> = evaluate().into();
            out.extend(results.iter().cloned());
            self.stats.misses += 1;
            self.insert(key.as_slice().into(), results);
        }
        self.key = key;
    }

    fn insert(&mut self, key: Box<[u8]>, results: Arc<[EvaluationResult]>) {
        if self.young.len() >= GENERATION_ENTRIES {
            self.old = std::mem::take(&mut self.young);
        }
        self.young.insert(key, results);
    }
}

fn bucket_tag(b: Bucket) -> u8 {
    match b {
        Bucket::Process => 1,
        Bucket::FileEvent => 2,
        Bucket::FileDelete => 3,
        Bucket::FileRename => 4,
        Bucket::FileAccess => 5,
        Bucket::Network => 6,
        Bucket::AuthGeneric => 7,
        Bucket::AuthService => 8,
        Bucket::Audit => 9,
        Bucket::Dns => 10,
    }
}

fn put_bytes(key: &mut Vec<u8>, b: &[u8]) {
    // Lengths make the encoding unambiguous: no value can end where another begins.
    key.extend_from_slice(&(b.len() as u64).to_le_bytes());
    key.extend_from_slice(b);
}

fn put_value(key: &mut Vec<u8>, v: &EventValue<'_>) {
    match v {
        EventValue::Str(s) => {
            key.push(1);
            put_bytes(key, s.as_bytes());
        }
        EventValue::Int(n) => {
            key.push(2);
            key.extend_from_slice(&n.to_le_bytes());
        }
        EventValue::Float(f) => {
            key.push(3);
            key.extend_from_slice(&f.to_bits().to_le_bytes());
        }
        EventValue::Bool(b) => key.extend_from_slice(&[4, u8::from(*b)]),
        EventValue::Null => key.push(5),
        EventValue::Array(items) => {
            key.push(6);
            key.extend_from_slice(&(items.len() as u64).to_le_bytes());
            items.iter().for_each(|i| put_value(key, i));
        }
        EventValue::Map(entries) => {
            key.push(7);
            key.extend_from_slice(&(entries.len() as u64).to_le_bytes());
            for (k, v) in entries {
                put_bytes(key, k.as_bytes());
                put_value(key, v);
            }
        }
    }
}

/// Writes the key of `view` for a bucket's reads: every field's value (or its
/// absence) in the order of the sorted names, then the keyword strings. False when
/// the key would be longer than [`MAX_KEY_BYTES`].
fn build_key(key: &mut Vec<u8>, bucket: Bucket, reads: &Reads, view: &SigmaView<'_>) -> bool {
    // A bucket takes one kind of event (`mapping::buckets`), so the bucket names
    // which `get_field` answers.
    key.push(bucket_tag(bucket));
    for name in &reads.fields {
        match view.get_field(name) {
            Some(v) => put_value(key, &v),
            None => key.push(0),
        }
        if key.len() > MAX_KEY_BYTES {
            return false;
        }
    }
    if reads.keywords {
        key.push(0xff);
        view.visit_string_values(&mut |s| {
            if key.len() <= MAX_KEY_BYTES {
                put_bytes(key, s.as_bytes());
            }
        });
    }
    key.len() <= MAX_KEY_BYTES
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::Detector;
    use crate::event::{Event, EventData, ProcessEvent};
    use ward_protocol::RuleFile;

    const MARK_RULE: &str = r#"
title: Memo mark
id: 6a1f3c3e-0000-4000-8000-000000000001
logsource: {product: linux, category: process_creation}
detection:
    sel:
        CommandLine|contains: memo-mark
    condition: sel
level: medium
"#;

    /// Three matches of the mark rule by one user within a minute.
    const COUNT_RULE: &str = r#"
title: Memo mark three times
id: 6a1f3c3e-0000-4000-8000-000000000002
correlation:
    type: event_count
    rules:
        - 6a1f3c3e-0000-4000-8000-000000000001
    group-by:
        - User
    timespan: 1m
    condition:
        gte: 3
level: high
"#;

    const KEYWORD_RULE: &str = r#"
title: Memo keyword
id: 6a1f3c3e-0000-4000-8000-000000000003
logsource: {product: linux}
detection:
    keywords:
        - memo-keyword
    condition: keywords
level: low
"#;

    fn detector(rules: &[&str]) -> Detector {
        let files: Vec<RuleFile> = rules
            .iter()
            .enumerate()
            .map(|(i, y)| RuleFile {
                name: format!("r{i}.yml"),
                yaml: (*y).to_string(),
            })
            .collect();
        let (det, errors) = Detector::load(&files);
        assert!(errors.is_empty(), "{errors:?}");
        det
    }

    fn exec(pid: u32, cmdline: &str) -> Event {
        Event {
            observed_at_ms: 1_700_000_000_000 + u64::from(pid),
            data: EventData::Process(ProcessEvent {
                pid,
                exe: "/usr/bin/true".into(),
                cmdline: cmdline.into(),
                user: "alice".into(),
                ..ProcessEvent::default()
            }),
        }
    }

    fn ids(d: &[crate::Detection]) -> Vec<&str> {
        d.iter().map(|d| d.rule.id.as_str()).collect()
    }

    #[test]
    fn the_reads_are_the_fields_the_rules_name() {
        let det = detector(&[MARK_RULE, KEYWORD_RULE]);
        let process = det.reads(Bucket::Process).unwrap();
        assert!(process.fields.contains("CommandLine"));
        assert!(!process.fields.contains("ProcessId"));
        assert!(process.keywords, "the keyword rule lives in the process bucket too");
        assert!(!process.opaque);
        let file = det.reads(Bucket::FileEvent).unwrap();
        assert!(file.keywords && file.fields.is_empty(), "{file:?}");
        assert!(det.reads(Bucket::Network).is_none());
    }

    #[test]
    fn a_correlation_counts_every_repeat_when_the_verdict_is_remembered() {
        let det = detector(&[MARK_RULE, COUNT_RULE]);
        let mut corr = det.correlator().unwrap();
        let mut memo = det.memo();
        let now = 1_700_000_000_000;
        // The same command three times (different pids: a field no rule reads).
        let first = corr.process_with(&det, &mut memo, &exec(1, "run memo-mark"), now);
        let second = corr.process_with(&det, &mut memo, &exec(2, "run memo-mark"), now + 1_000);
        let third = corr.process_with(&det, &mut memo, &exec(3, "run memo-mark"), now + 2_000);
        assert_eq!(memo.stats().hits, 2, "the second and third verdicts came from the memo");
        assert_eq!(ids(&first), ["6a1f3c3e-0000-4000-8000-000000000001"]);
        assert_eq!(ids(&second), ["6a1f3c3e-0000-4000-8000-000000000001"]);
        assert!(
            ids(&third).contains(&"6a1f3c3e-0000-4000-8000-000000000002"),
            "the count rule fires on the third repeat: {:?}",
            ids(&third)
        );
        // Each detection is about its own event, not the one first remembered.
        assert_eq!(second[0].observed_at_ms, exec(2, "").observed_at_ms);
        let pid_of = |d: &crate::Detection| {
            d.entities.iter().find_map(|e| match e {
                ward_protocol::Entity::Process { pid, .. } => Some(*pid),
                _ => None,
            })
        };
        assert_eq!(pid_of(&third[0]), Some(3));
    }

    #[test]
    fn a_field_a_rule_reads_splits_the_key_and_one_no_rule_reads_does_not() {
        let det = detector(&[MARK_RULE]);
        let mut memo = det.memo();
        assert_eq!(ids(&det.evaluate_with(&mut memo, &exec(1, "a memo-mark"))).len(), 1);
        assert_eq!(ids(&det.evaluate_with(&mut memo, &exec(2, "a memo-mark"))).len(), 1);
        assert_eq!(memo.stats().hits, 1);
        // Another command line is another key, and its own verdict.
        assert!(det.evaluate_with(&mut memo, &exec(3, "a harmless")).is_empty());
        assert_eq!(memo.stats().misses, 2);
        assert_eq!(ids(&det.evaluate_with(&mut memo, &exec(4, "b memo-mark"))).len(), 1);
        assert_eq!(memo.stats().misses, 3);
    }

    #[test]
    fn a_bucket_whose_events_never_repeat_rests_then_is_probed_again() {
        let det = detector(&[MARK_RULE]);
        let mut memo = det.memo();
        let n = PROBE_LOOKUPS;
        for i in 0..n {
            assert!(det.evaluate_with(&mut memo, &exec(i, &format!("cmd {i}"))).is_empty());
        }
        assert_eq!(memo.stats().misses, u64::from(n));
        // Resting: evaluated directly (still right), neither remembered nor looked up.
        for i in 0..REST_EVALUATIONS {
            let cmd = if i == 7 {
                "x memo-mark".to_string()
            } else {
                format!("again {i}")
            };
            let fired = det.evaluate_with(&mut memo, &exec(i, &cmd));
            assert_eq!(fired.len(), usize::from(i == 7));
        }
        assert_eq!(memo.stats().skipped, u64::from(REST_EVALUATIONS));
        assert_eq!(memo.stats().misses, u64::from(n));
        // Then probed again: a repeat of a remembered event is a hit.
        det.evaluate_with(&mut memo, &exec(1, "cmd 1"));
        assert_eq!(memo.stats().hits, 1);
    }

    #[test]
    fn keyword_rules_put_the_searched_strings_in_the_key() {
        let det = detector(&[KEYWORD_RULE]);
        let mut memo = det.memo();
        assert!(det.evaluate_with(&mut memo, &exec(1, "x")).is_empty());
        assert_eq!(det.evaluate_with(&mut memo, &exec(2, "x memo-keyword")).len(), 1);
        assert!(det.evaluate_with(&mut memo, &exec(3, "x")).is_empty());
        assert_eq!(memo.stats().hits, 1);
    }

    #[test]
    fn the_memo_is_bounded_and_forgets_another_detectors_verdicts() {
        let det = detector(&[MARK_RULE]);
        let mut memo = det.memo();
        // Each event twice, so the bucket's hit rate keeps it memoized.
        for i in 0..(3 * GENERATION_ENTRIES as u32) {
            det.evaluate_with(&mut memo, &exec(i, &format!("cmd {i}")));
            det.evaluate_with(&mut memo, &exec(i, &format!("cmd {i}")));
        }
        assert!(memo.len() <= 2 * GENERATION_ENTRIES, "{}", memo.len());
        // The newest are still remembered.
        let before = memo.stats().hits;
        let last = 3 * GENERATION_ENTRIES as u32 - 1;
        det.evaluate_with(&mut memo, &exec(last, &format!("cmd {last}")));
        assert_eq!(memo.stats().hits, before + 1);
        // A key over the bound is evaluated, not remembered.
        let long = format!("memo-mark {}", "x".repeat(MAX_KEY_BYTES));
        assert_eq!(det.evaluate_with(&mut memo, &exec(1, &long)).len(), 1);
        assert_eq!(memo.stats().skipped, 1);
        // Another detector (another pack: the rule now absent) is not answered from
        // this one's verdicts.
        let other = detector(&[KEYWORD_RULE]);
        det.evaluate_with(&mut memo, &exec(1, "x memo-mark"));
        assert!(other.evaluate_with(&mut memo, &exec(1, "x memo-mark")).is_empty());
        assert!(memo.len() <= 1);
    }
}
