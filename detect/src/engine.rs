//! The detector: Sigma rules compiled once (rsigma), then every event matched
//! against the rules of its logsource. Loading reports each bad rule and skips it;
//! matching is pure and infallible. Nothing here reads files or the clock, except
//! [`load_dir`], the one IO helper, kept apart from matching.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;
use std::sync::Arc;

use rsigma_eval::Engine;
use rsigma_eval::event::JsonEvent;
use rsigma_eval::result::EvaluationResult;
use rsigma_eval::{CorrelationConfig, CorrelationEngine};
use rsigma_parser::{CorrelationRule, Level, SigmaRule};
use ward_protocol::{Entity, MatchedField, RuleFile, RuleRef, Severity};

use super::entities::{attack_ids, entities};
use super::mapping::{self, Bucket, Placement, SigmaView};
use super::memo::{Reads, VerdictMemo};
use crate::event::Event;

/// A rule file larger than this is refused whole.
pub const MAX_RULE_FILE_BYTES: usize = 1024 * 1024;
/// At most this many rules are loaded from one set of files; the rest are reported.
pub const MAX_RULES: usize = 4000;
/// A matched value longer than this is cut (at a character boundary).
const MAX_MATCHED_VALUE_CHARS: usize = 1024;

/// Why a rule (or a whole file) was not loaded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleErrorKind {
    #[error("file is {size} bytes, over the {max}-byte limit")]
    FileTooLarge { size: usize, max: usize },
    #[error("over the limit of {max} rules; skipped")]
    TooManyRules { max: usize },
    #[error("cannot parse: {0}")]
    Parse(String),
    #[error("cannot compile: {0}")]
    Compile(String),
    #[error("rule id {0} is already loaded")]
    DuplicateId(String),
    #[error("not supported: {0}")]
    Unsupported(String),
    #[error("the rule loader failed unexpectedly: {0}")]
    Panicked(String),
    #[error("cannot read: {0}")]
    Io(String),
}

/// A rule that failed to load, with the file it came from.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}{}: {kind}", rule.as_deref().map(|r| format!(" ({r})")).unwrap_or_default())]
pub struct RuleError {
    /// The rule file's name as given in [`RuleFile::name`].
    pub file: String,
    /// The rule's title or id when it is known.
    pub rule: Option<String>,
    pub kind: RuleErrorKind,
}

/// One rule match on one event. Repeats are folded by [`super::Aggregator`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Detection {
    pub rule: RuleRef,
    pub entities: Vec<Entity>,
    pub matched: Vec<MatchedField>,
    pub observed_at_ms: u64,
}

/// Counts for health reporting.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DetectorStats {
    /// Rules compiled and loaded.
    pub loaded: usize,
    /// Loaded rules whose logsource Ward has no events for (another product,
    /// `network_connection`...): they never fire.
    pub inactive: usize,
    /// Loaded correlation rules (counted in `loaded` too).
    pub correlations: usize,
    /// Wildcard values matched without a regex or respelt so rsigma anchors them
    /// right (see [`crate::wildcard`]).
    pub wildcards: crate::wildcard::WildcardStats,
}

/// One loaded rule: what an alert says about it, and where it sits.
#[derive(Debug, Clone)]
struct LoadedRule {
    rule_ref: Arc<RuleRef>,
}

/// Sigma rules compiled per logsource bucket. Cheap to share (`Arc`) across threads.
pub struct Detector {
    process: Engine,
    file_event: Engine,
    file_delete: Engine,
    file_rename: Engine,
    file_access: Engine,
    network: Engine,
    auth_generic: Engine,
    auth_service: HashMap<String, Engine>,
    audit: Engine,
    dns: Engine,
    /// Rules for `product: linux` alone (mostly keyword rules), evaluated with
    /// the rules of whichever [`Bucket::PRIMARY`] bucket an event reaches: one
    /// engine, so their keyword automaton is built once, not once per bucket
    /// (about 1.1 MiB each).
    linux_any: Engine,
    rules: HashMap<String, LoadedRule>,
    /// Correlation rules, validated; run by a [`super::Correlator`].
    correlations: Vec<CorrelationRule>,
    /// The parsed detection rules, all of them while loading; once loaded, only
    /// those a correlation names (a correlator registers them).
    sources: Vec<SigmaRule>,
    stats: DetectorStats,
    /// What each bucket's rules read, for [`VerdictMemo`] keys (no entry for
    /// [`Bucket::AuthService`], whose engines are never memoized).
    reads: HashMap<Bucket, Reads>,
    /// Names this detector for a [`VerdictMemo`] (unique in the process).
    id: u64,
}

/// Gives each detector its own id, so a memo never answers for another's rules.
static NEXT_DETECTOR_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

impl fmt::Debug for Detector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Detector")
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

/// An rsigma engine with its bloom pre-filter off. The pre-filter (about 1.6x
/// events/s on the 47 built-in rules) loses matches with the default pack: rsigma-eval
/// 0.23 with the 197 default rules found no rule for `nohup sleep 1`, `hostname` or
/// `chmod +x /tmp/…`, which a rule of the pack alone matches (test
/// `defaultpack::tests::the_whole_pack_matches_what_each_rule_matches_alone`).
///
/// With the pre-filter off its index is never read, yet rsigma builds it anyway
/// (up to 1 MB per engine): a zero budget keeps it empty.
pub(crate) fn new_engine() -> Engine {
    let mut e = Engine::new();
    e.set_bloom_prefilter(false);
    e.set_bloom_max_bytes(0);
    e
}

/// Rebuilds `engine`'s candidate index over all its rules, once they are all in.
/// rsigma folds rules added one at a time into its index incrementally, except a
/// rule whose gate is a substring or keyword: that one is a candidate for every
/// event until the rule count next doubles. Loaded one by one, the last rules of a
/// bucket (up to half of them) were evaluated against every event.
pub(crate) fn finish_index(engine: &mut Engine) {
    // An empty batch: rsigma rebuilds its index at the end of every batch.
    engine.extend_compiled_rules(std::iter::empty());
}

impl Default for Detector {
    fn default() -> Self {
        Detector {
            process: new_engine(),
            file_event: new_engine(),
            file_delete: new_engine(),
            file_rename: new_engine(),
            file_access: new_engine(),
            network: new_engine(),
            auth_generic: new_engine(),
            auth_service: HashMap::new(),
            audit: new_engine(),
            dns: new_engine(),
            linux_any: new_engine(),
            rules: HashMap::new(),
            correlations: Vec::new(),
            sources: Vec::new(),
            stats: DetectorStats::default(),
            reads: HashMap::new(),
            id: NEXT_DETECTOR_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        }
    }
}

pub(crate) fn severity(level: Option<Level>) -> Severity {
    match level {
        Some(Level::Informational) => Severity::Informational,
        Some(Level::Low) => Severity::Low,
        Some(Level::Medium) | None => Severity::Medium,
        Some(Level::High) => Severity::High,
        Some(Level::Critical) => Severity::Critical,
    }
}

pub(crate) fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| (*s).to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "panic".to_string())
}

/// Parses a rule file within its size bound, a panic in the parser caught: the
/// file's collection, its parse errors added to `errors`; `None` (the reason in
/// `errors`) when nothing in it could be read.
pub(crate) fn parse_rule_file(file: &RuleFile, errors: &mut Vec<RuleError>) -> Option<rsigma_parser::SigmaCollection> {
    let err = |kind| RuleError {
        file: file.name.clone(),
        rule: None,
        kind,
    };
    if file.yaml.len() > MAX_RULE_FILE_BYTES {
        errors.push(err(RuleErrorKind::FileTooLarge {
            size: file.yaml.len(),
            max: MAX_RULE_FILE_BYTES,
        }));
        return None;
    }
    let parsed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        rsigma_parser::parse_sigma_yaml(&file.yaml)
    }));
    let collection = match parsed {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => {
            errors.push(err(RuleErrorKind::Parse(e.to_string())));
            return None;
        }
        Err(p) => {
            errors.push(err(RuleErrorKind::Panicked(panic_message(p.as_ref()))));
            return None;
        }
    };
    for e in &collection.errors {
        errors.push(err(RuleErrorKind::Parse(e.clone())));
    }
    Some(collection)
}

/// The fields a detection result matched, as alerts carry them (values cut).
pub(crate) fn matched_fields(result: &EvaluationResult) -> Vec<MatchedField> {
    result
        .as_detection()
        .map(|d| {
            d.matched_fields
                .iter()
                .map(|m| MatchedField {
                    name: m.field.clone(),
                    value: cut(match &m.value {
                        serde_json::Value::String(s) => s.clone(),
                        other => other.to_string(),
                    }),
                })
                .collect()
        })
        .unwrap_or_default()
}

pub(crate) fn cut(mut s: String) -> String {
    if let Some((idx, _)) = s.char_indices().nth(MAX_MATCHED_VALUE_CHARS) {
        s.truncate(idx);
    }
    s
}

impl Detector {
    /// Compiles rule files (the built-in pack, then pushed rules, in that order).
    /// Every rule that cannot be loaded is reported with its file and skipped;
    /// nothing in a rule file can make this panic or fail as a whole.
    pub fn load(files: &[RuleFile]) -> (Detector, Vec<RuleError>) {
        let mut det = Detector::default();
        let mut errors = Vec::new();
        let mut correlations = Vec::new();
        for file in files {
            det.load_file(file, &mut errors, &mut correlations);
        }
        for (file, corr) in correlations {
            if let Err(kind) = det.add_correlation(corr.clone()) {
                errors.push(RuleError {
                    file,
                    rule: Some(corr.id.unwrap_or(corr.title)),
                    kind,
                });
            }
        }
        // Correlations resolve only the rules they name: keep those, drop the rest
        // (the whole pack's parsed rules cost as much memory as its compiled form).
        let named = |s: &SigmaRule| {
            det.correlations.iter().any(|c| {
                c.rules
                    .iter()
                    .any(|r| s.id.as_deref() == Some(r.as_str()) || s.name.as_deref() == Some(r.as_str()))
            })
        };
        let sources = std::mem::take(&mut det.sources);
        det.sources = sources.into_iter().filter(|s| named(s)).collect();
        det.engines_mut().for_each(finish_index);
        (det, errors)
    }

    /// Checks rule files as [`Detector::load`] would, returning only the errors.
    pub fn validate(files: &[RuleFile]) -> Vec<RuleError> {
        Detector::load(files).1
    }

    /// Loaded rule counts.
    pub fn stats(&self) -> DetectorStats {
        self.stats
    }

    /// The loaded rules, as alerts will name them.
    pub fn rules(&self) -> impl Iterator<Item = &RuleRef> {
        self.rules.values().map(|r| r.rule_ref.as_ref())
    }

    fn load_file(
        &mut self,
        file: &RuleFile,
        errors: &mut Vec<RuleError>,
        correlations: &mut Vec<(String, CorrelationRule)>,
    ) {
        let err = |rule: Option<String>, kind| RuleError {
            file: file.name.clone(),
            rule,
            kind,
        };
        let Some(collection) = parse_rule_file(file, errors) else {
            return;
        };
        let had_correlations = !collection.correlations.is_empty();
        for c in collection.correlations {
            correlations.push((file.name.clone(), c));
        }
        for f in &collection.filters {
            errors.push(err(
                Some(f.title.clone()),
                RuleErrorKind::Unsupported("filter rules".into()),
            ));
        }
        if collection.rules.is_empty() && collection.errors.is_empty() && !had_correlations {
            if collection.filters.is_empty() {
                errors.push(err(None, RuleErrorKind::Parse("no Sigma rule in file".into())));
            }
            return;
        }
        for (i, rule) in collection.rules.into_iter().enumerate() {
            if self.rules.len() >= MAX_RULES {
                errors.push(err(Some(rule.title), RuleErrorKind::TooManyRules { max: MAX_RULES }));
                continue;
            }
            if let Err(kind) = self.add_rule(rule.clone(), &file.name, i) {
                errors.push(err(Some(rule.id.clone().unwrap_or(rule.title)), kind));
            }
        }
    }

    fn add_rule(&mut self, mut rule: SigmaRule, file: &str, index: usize) -> Result<(), RuleErrorKind> {
        let id = match rule.id.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
            Some(id) => id.to_string(),
            None => format!("{file}#{index}"),
        };
        if self.rules.contains_key(&id) {
            return Err(RuleErrorKind::DuplicateId(id));
        }
        rule.id = Some(id.clone());
        let place = mapping::placement(
            rule.logsource.category.as_deref(),
            rule.logsource.product.as_deref(),
            rule.logsource.service.as_deref(),
        );
        let rewritten = crate::wildcard::normalise(&mut rule);
        // Compile once, before any engine is touched, so a rule that fails leaves no
        // trace; each engine then takes the compiled rule. `Engine::add_rule` would
        // also keep a copy of the rule's lowered form for a restart cache Ward never
        // writes (about a third of the pack's memory).
        let compiled = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| rsigma_eval::compile_rule(&rule)));
        let compiled = match compiled {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => return Err(RuleErrorKind::Compile(e.to_string())),
            Err(p) => return Err(RuleErrorKind::Panicked(panic_message(p.as_ref()))),
        };
        let buckets: &[Bucket] = match &place {
            Placement::Inactive(_) => &[],
            Placement::One(bucket, _) => std::slice::from_ref(bucket),
            Placement::AllPrimary => &Bucket::PRIMARY,
        };
        for b in buckets {
            self.reads.entry(*b).or_default().add_rule(&compiled);
        }
        let engine = match &place {
            Placement::Inactive(_) => None,
            Placement::One(bucket, service) => Some(self.engine_mut(*bucket, service.as_deref())),
            Placement::AllPrimary => Some(&mut self.linux_any),
        };
        if let Some(engine) = engine {
            engine.add_compiled_rule(compiled);
        }
        if matches!(place, Placement::Inactive(_)) {
            self.stats.inactive += 1;
        }
        self.register(id, &rule.title, rule.author.as_deref(), rule.level, &rule.tags);
        self.sources.push(rule);
        self.stats.loaded += 1;
        self.stats.wildcards.plain += rewritten.plain;
        self.stats.wildcards.reanchored += rewritten.reanchored;
        Ok(())
    }

    /// Records what alerts of a loaded rule carry: title, author, severity, ATT&CK ids.
    fn register(&mut self, id: String, title: &str, author: Option<&str>, level: Option<Level>, tags: &[String]) {
        let (techniques, tactics) = attack_ids(tags);
        let rule_ref = RuleRef {
            id: id.clone(),
            title: title.to_string(),
            author: author.unwrap_or_default().to_string(),
            severity: severity(level),
            techniques,
            tactics,
        };
        self.rules.insert(
            id,
            LoadedRule {
                rule_ref: Arc::new(rule_ref),
            },
        );
    }

    fn add_correlation(&mut self, mut corr: CorrelationRule) -> Result<(), RuleErrorKind> {
        if self.rules.len() >= MAX_RULES {
            return Err(RuleErrorKind::TooManyRules { max: MAX_RULES });
        }
        let id = corr
            .id
            .as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .ok_or_else(|| RuleErrorKind::Unsupported("a correlation rule without an id".into()))?;
        if self.rules.contains_key(&id) {
            return Err(RuleErrorKind::DuplicateId(id));
        }
        corr.id = Some(id.clone());
        for r in &corr.rules {
            let known = self
                .sources
                .iter()
                .any(|s| s.id.as_deref() == Some(r) || s.name.as_deref() == Some(r));
            if !known {
                return Err(RuleErrorKind::Compile(format!(
                    "correlation refers to unknown rule {r}"
                )));
            }
        }
        let checked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            CorrelationEngine::new(CorrelationConfig::default()).add_correlation(&corr)
        }));
        match checked {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(RuleErrorKind::Compile(e.to_string())),
            Err(p) => return Err(RuleErrorKind::Panicked(panic_message(p.as_ref()))),
        }
        self.register(id, &corr.title, corr.author.as_deref(), corr.level, &corr.tags);
        self.correlations.push(corr);
        self.stats.loaded += 1;
        self.stats.correlations += 1;
        Ok(())
    }

    /// A fresh correlation state for this detector's correlation rules, or `None`
    /// when it has none (then [`Detector::evaluate`] is all there is to do).
    pub fn correlator(&self) -> Option<super::Correlator> {
        if self.correlations.is_empty() {
            return None;
        }
        let config = CorrelationConfig {
            timestamp_fields: Vec::new(),
            max_state_entries: 10_000,
            max_group_entries: Some(1_000),
            action_on_match: rsigma_eval::CorrelationAction::Reset,
            ..CorrelationConfig::default()
        };
        let mut engine = CorrelationEngine::new(config);
        // The detection rules are registered so correlations can resolve rule ids
        // and names; they are never evaluated there (detections are fed in).
        for rule in &self.sources {
            if engine.add_rule(rule).is_err() {
                continue;
            }
        }
        for corr in &self.correlations {
            if engine.add_correlation(corr).is_err() {
                continue;
            }
        }
        Some(super::Correlator::new(engine))
    }

    /// The rsigma results for `event` (detection rules only), for correlation;
    /// with a memo, repeats of rule-visible fields are answered from it.
    pub(crate) fn evaluate_raw(
        &self,
        view: &SigmaView<'_>,
        event: &Event,
        mut memo: Option<&mut VerdictMemo>,
    ) -> Vec<EvaluationResult> {
        let (buckets, service) = mapping::buckets(event);
        let mut out = Vec::new();
        for bucket in buckets {
            let engines = self.engines(*bucket, service.as_deref());
            if engines.clone().all(|e| e.rule_count() == 0) {
                continue;
            }
            let evaluate = || engines.clone().flat_map(|e| e.evaluate(view)).collect::<Vec<_>>();
            match memo.as_deref_mut() {
                Some(m) if *bucket != Bucket::AuthService => {
                    m.bind(self.id);
                    m.results(*bucket, self.reads.get(bucket), view, &mut out, evaluate);
                }
                _ => out.extend(evaluate()),
            }
        }
        out
    }

    /// An empty verdict memo for this detector (see [`crate::memo`]).
    pub fn memo(&self) -> VerdictMemo {
        VerdictMemo::new(self.id)
    }

    /// What the rules of `bucket` read (`None` when it has no rules).
    pub fn reads(&self, bucket: Bucket) -> Option<&Reads> {
        self.reads.get(&bucket)
    }

    fn engines_mut(&mut self) -> impl Iterator<Item = &mut Engine> {
        [
            &mut self.process,
            &mut self.file_event,
            &mut self.file_delete,
            &mut self.file_rename,
            &mut self.file_access,
            &mut self.network,
            &mut self.auth_generic,
            &mut self.audit,
            &mut self.dns,
            &mut self.linux_any,
        ]
        .into_iter()
        .chain(self.auth_service.values_mut())
    }

    fn engine_mut(&mut self, bucket: Bucket, service: Option<&str>) -> &mut Engine {
        match bucket {
            Bucket::Process => &mut self.process,
            Bucket::FileEvent => &mut self.file_event,
            Bucket::FileDelete => &mut self.file_delete,
            Bucket::FileRename => &mut self.file_rename,
            Bucket::FileAccess => &mut self.file_access,
            Bucket::Network => &mut self.network,
            Bucket::AuthGeneric => &mut self.auth_generic,
            Bucket::AuthService => self
                .auth_service
                .entry(service.unwrap_or_default().to_string())
                .or_insert_with(new_engine),
            Bucket::Audit => &mut self.audit,
            Bucket::Dns => &mut self.dns,
        }
    }

    /// The engines whose rules judge an event of `bucket`: its own, and for a
    /// primary bucket the rules for `product: linux` alone.
    fn engines(&self, bucket: Bucket, service: Option<&str>) -> impl Iterator<Item = &Engine> + Clone {
        let linux_any = Bucket::PRIMARY.contains(&bucket).then_some(&self.linux_any);
        self.engine(bucket, service).into_iter().chain(linux_any)
    }

    fn engine(&self, bucket: Bucket, service: Option<&str>) -> Option<&Engine> {
        match bucket {
            Bucket::Process => Some(&self.process),
            Bucket::FileEvent => Some(&self.file_event),
            Bucket::FileDelete => Some(&self.file_delete),
            Bucket::FileRename => Some(&self.file_rename),
            Bucket::FileAccess => Some(&self.file_access),
            Bucket::Network => Some(&self.network),
            Bucket::AuthGeneric => Some(&self.auth_generic),
            Bucket::AuthService => self.auth_service.get(service?),
            Bucket::Audit => Some(&self.audit),
            Bucket::Dns => Some(&self.dns),
        }
    }

    /// Every rule that matches `event`. Pure: no IO, no clock, never fails.
    /// Correlation rules need state: use a [`super::Correlator`] for them.
    pub fn evaluate(&self, event: &Event) -> Vec<Detection> {
        let view = SigmaView::new(event);
        self.evaluate_raw(&view, event, None)
            .iter()
            .filter_map(|r| self.detection(r, event))
            .collect()
    }

    /// As [`Detector::evaluate`], the rules' verdicts remembered in `memo` for
    /// events whose rule-visible fields repeat: the same detections, less work.
    pub fn evaluate_with(&self, memo: &mut VerdictMemo, event: &Event) -> Vec<Detection> {
        let view = SigmaView::new(event);
        self.evaluate_raw(&view, event, Some(memo))
            .iter()
            .filter_map(|r| self.detection(r, event))
            .collect()
    }

    /// Matches a flat object of Sigma fields (as Sigma rule tests write events)
    /// against the rules of one logsource bucket; for `ward-agent rules test`.
    /// Returns the matching rules.
    pub fn evaluate_sigma_fields(
        &self,
        fields: &serde_json::Value,
        bucket: Bucket,
        service: Option<&str>,
    ) -> Vec<RuleRef> {
        let event = JsonEvent::borrow(fields);
        self.engines(bucket, service)
            .flat_map(|e| e.evaluate(&event))
            .filter_map(|r| r.header.rule_id.as_deref().and_then(|id| self.rules.get(id)))
            .map(|r| r.rule_ref.as_ref().clone())
            .collect()
    }

    pub(crate) fn detection(&self, result: &EvaluationResult, event: &Event) -> Option<Detection> {
        let rule = self.rules.get(result.header.rule_id.as_deref()?)?;
        let matched = matched_fields(result);
        Some(Detection {
            rule: rule.rule_ref.as_ref().clone(),
            entities: entities(event),
            matched,
            observed_at_ms: event.observed_at_ms,
        })
    }
}

/// Errors reading a rule directory.
#[derive(Debug, thiserror::Error)]
pub enum LoadDirError {
    #[error("cannot read rule directory {path}: {source}")]
    ReadDir { path: String, source: std::io::Error },
}

/// Reads every `*.yml` / `*.yaml` file under `dir` (recursively, sorted by path,
/// symlinks not followed) into rule files named by their path relative to `dir`.
/// Files over [`MAX_RULE_FILE_BYTES`] or unreadable are returned as errors. This is
/// the only IO in detection; pass the result to [`Detector::load`].
pub fn load_dir(dir: &Path) -> Result<(Vec<RuleFile>, Vec<RuleError>), LoadDirError> {
    let mut paths = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    let mut first = true;
    while let Some(d) = stack.pop() {
        let entries = match std::fs::read_dir(&d) {
            Ok(e) => e,
            Err(source) if first => {
                return Err(LoadDirError::ReadDir {
                    path: d.display().to_string(),
                    source,
                });
            }
            Err(_) => continue,
        };
        first = false;
        for entry in entries.flatten() {
            let Ok(ft) = entry.file_type() else { continue };
            let p = entry.path();
            if ft.is_dir() {
                stack.push(p);
            } else if ft.is_file() && matches!(p.extension().and_then(|e| e.to_str()), Some("yml" | "yaml")) {
                paths.push(p);
            }
        }
    }
    paths.sort();
    let mut files = Vec::new();
    let mut errors = Vec::new();
    for p in paths {
        let name = p.strip_prefix(dir).unwrap_or(&p).display().to_string();
        let err = |kind| RuleError {
            file: name.clone(),
            rule: None,
            kind,
        };
        match std::fs::metadata(&p) {
            Ok(m) if m.len() > MAX_RULE_FILE_BYTES as u64 => {
                errors.push(err(RuleErrorKind::FileTooLarge {
                    size: usize::try_from(m.len()).unwrap_or(usize::MAX),
                    max: MAX_RULE_FILE_BYTES,
                }));
                continue;
            }
            Ok(_) => {}
            Err(e) => {
                errors.push(err(RuleErrorKind::Io(e.to_string())));
                continue;
            }
        }
        match std::fs::read_to_string(&p) {
            Ok(yaml) => files.push(RuleFile {
                name: name.clone(),
                yaml,
            }),
            Err(e) => errors.push(err(RuleErrorKind::Io(e.to_string()))),
        }
    }
    Ok((files, errors))
}
