//! The library behind `ward-agent rules test [RULES_DIR] EVENTS.jsonl`: which rules
//! match which event lines, and per rule its match count and what it cost alone
//! (each rule file compiled by itself and timed over every event), printable as
//! tables. Reading the inputs is the only IO ([`run`], [`run_files`]); the clock is
//! a parameter (`clock_ns`); [`test_rules`], [`rule_costs`] and [`parse_event_line`]
//! are pure. A bad line or a bad rule is reported, never fatal.
//!
//! An event line is one JSON object, in one of three shapes:
//! - a Ward [`Event`]: `{"observed_at_ms": 1, "data": {"kind": "process", ...}}`;
//! - a partial Ward event: `{"kind": "process", "cmdline": "..."}` (or the same
//!   under `"data"`); missing fields take their defaults, and `sha256` may be
//!   written as 64 hex digits;
//! - flat Sigma fields with a logsource hint, as Sigma rule tests write them:
//!   `{"logsource": {"category": "process_creation"}, "CommandLine": "..."}`.
//!
//! Ward events go through correlation rules too, in line order, timed by their
//! `observed_at_ms`; flat Sigma-field lines see detection rules only.

use std::fmt;
use std::io::BufRead;
use std::path::Path;

use serde_json::{Map, Value};
use ward_protocol::{RuleFile, RuleRef};

use super::correlate::Correlator;
use super::engine::{Detector, LoadDirError, RuleError, load_dir};
use super::mapping::{self, Bucket, Placement};
use crate::event::{AuditEvent, AuthEvent, Event, ProcessEvent, SensorGap};

/// A line longer than this is reported, not parsed.
pub const MAX_LINE_BYTES: usize = 1024 * 1024;
/// At most this many events are kept in memory to time each rule over them.
pub const MAX_TIMED_EVENTS: usize = 200_000;
/// A rule costing more than this per event, on its own, is flagged as over budget
/// (the 49 built-in rules together cost about 3.8 us per event in a release build).
pub const RULE_BUDGET_NS_PER_EVENT: u64 = 2_000;

/// One parsed event line.
#[derive(Debug, Clone, PartialEq)]
pub enum EventLine {
    /// A Ward event (boxed: the largest kind by far).
    Ward(Box<Event>),
    /// Flat Sigma fields for one logsource bucket.
    Sigma {
        fields: Value,
        bucket: Bucket,
        service: Option<String>,
    },
}

/// A line that could not be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineError {
    /// 1-based line number.
    pub line: usize,
    pub message: String,
}

/// One rule matching one event line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineMatch {
    /// 1-based line number.
    pub line: usize,
    pub rule: RuleRef,
}

/// What `rules test` found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RulesTestReport {
    pub rules_loaded: usize,
    pub rule_errors: Vec<RuleError>,
    /// Event lines read (not counting blank lines and `#` comments).
    pub events: usize,
    pub line_errors: Vec<LineError>,
    pub matches: Vec<LineMatch>,
    /// Per detection rule: its matches and its time alone, slowest first (empty
    /// when no clock was given).
    pub costs: Vec<RuleCost>,
    /// The events the costs were measured over (at most [`MAX_TIMED_EVENTS`]).
    pub timed_events: usize,
}

/// What one rule file's rules cost on their own over the timed events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleCost {
    /// The file's first rule (`rules_in_file` says when there are more).
    pub rule: RuleRef,
    pub rules_in_file: usize,
    pub matches: usize,
    /// Wall time of evaluating every timed event with this file's rules alone.
    pub nanos: u64,
}

impl RuleCost {
    /// Nanoseconds per event.
    pub fn ns_per_event(&self, events: usize) -> u64 {
        self.nanos / (events.max(1) as u64)
    }
}

/// Errors that stop `rules test` before it starts.
#[derive(Debug, thiserror::Error)]
pub enum RulesTestError {
    #[error(transparent)]
    Rules(#[from] LoadDirError),
    #[error("cannot read events file {path}: {source}")]
    Events { path: String, source: std::io::Error },
}

/// Reads the rules in `rules_dir` and the events in `events_path`, then tests and
/// times each rule with `clock_ns` (a monotonic clock in nanoseconds).
pub fn run(
    rules_dir: &Path,
    events_path: &Path,
    clock_ns: &mut dyn FnMut() -> u64,
) -> Result<RulesTestReport, RulesTestError> {
    let (files, read_errors) = load_dir(rules_dir)?;
    run_files(&files, read_errors, events_path, clock_ns)
}

/// Tests `files` (e.g. the agent's default pack) against the events in
/// `events_path`; `read_errors` are reported with the rules' own errors.
pub fn run_files(
    files: &[RuleFile],
    mut read_errors: Vec<RuleError>,
    events_path: &Path,
    clock_ns: &mut dyn FnMut() -> u64,
) -> Result<RulesTestReport, RulesTestError> {
    let file = std::fs::File::open(events_path).map_err(|source| RulesTestError::Events {
        path: events_path.display().to_string(),
        source,
    })?;
    let (detector, rule_errors) = Detector::load(files);
    read_errors.extend(rule_errors);
    let mut report = RulesTestReport {
        rules_loaded: detector.stats().loaded,
        rule_errors: read_errors,
        ..Default::default()
    };
    let mut correlator = detector.correlator();
    let mut reader = std::io::BufReader::new(file);
    let mut buf = Vec::new();
    let mut line_no = 0;
    let mut timed = Vec::new();
    loop {
        buf.clear();
        line_no += 1;
        match read_capped_line(&mut reader, &mut buf) {
            Ok(None) => break,
            Ok(Some(true)) => match std::str::from_utf8(&buf) {
                Ok(line) => {
                    if let Some(ev) = test_line(&detector, correlator.as_mut(), line_no, line, &mut report)
                        && timed.len() < MAX_TIMED_EVENTS
                    {
                        timed.push(ev);
                    }
                }
                Err(_) => report.line_errors.push(LineError {
                    line: line_no,
                    message: "not UTF-8".into(),
                }),
            },
            Ok(Some(false)) => report.line_errors.push(LineError {
                line: line_no,
                message: format!("line longer than {MAX_LINE_BYTES} bytes"),
            }),
            Err(source) => {
                return Err(RulesTestError::Events {
                    path: events_path.display().to_string(),
                    source,
                });
            }
        }
    }
    report.costs = rule_costs(files, &timed, clock_ns);
    report.timed_events = timed.len();
    Ok(report)
}

/// Compiles each rule file alone and times it over `events` with `clock_ns`;
/// slowest first. Files that do not load alone (a correlation needs the rules it
/// names; their matches are in the report's matches) are left out.
pub fn rule_costs(files: &[RuleFile], events: &[EventLine], clock_ns: &mut dyn FnMut() -> u64) -> Vec<RuleCost> {
    let mut costs = Vec::new();
    for file in files {
        let (det, errors) = Detector::load(std::slice::from_ref(file));
        let Some(first) = det.rules().next().cloned() else {
            continue;
        };
        if !errors.is_empty() || det.stats().correlations > 0 {
            continue;
        }
        // One untimed evaluation first: lazily built matcher state is not the rule's cost.
        if let Some(EventLine::Ward(e)) = events.first() {
            det.evaluate(e);
        }
        let mut matches = 0;
        let start = clock_ns();
        for ev in events {
            matches += match ev {
                EventLine::Ward(e) => det.evaluate(e).len(),
                EventLine::Sigma {
                    fields,
                    bucket,
                    service,
                } => det.evaluate_sigma_fields(fields, *bucket, service.as_deref()).len(),
            };
        }
        let nanos = clock_ns().saturating_sub(start);
        costs.push(RuleCost {
            rule: first,
            rules_in_file: det.stats().loaded,
            matches,
            nanos,
        });
    }
    costs.sort_by(|a, b| b.nanos.cmp(&a.nanos).then_with(|| a.rule.id.cmp(&b.rule.id)));
    costs
}

/// Reads one line into `buf`, keeping at most [`MAX_LINE_BYTES`]. `None` at end of
/// input, `Some(false)` when the line was too long (and was skipped).
fn read_capped_line(r: &mut impl BufRead, buf: &mut Vec<u8>) -> std::io::Result<Option<bool>> {
    let mut any = false;
    let mut fits = true;
    loop {
        let chunk = r.fill_buf()?;
        if chunk.is_empty() {
            return Ok(any.then_some(fits));
        }
        any = true;
        let (part, done) = match chunk.iter().position(|b| *b == b'\n') {
            Some(i) => (&chunk[..i], i + 1),
            None => (chunk, chunk.len()),
        };
        if fits && buf.len() + part.len() <= MAX_LINE_BYTES {
            buf.extend_from_slice(part);
        } else {
            fits = false;
            buf.clear();
        }
        let newline = done > part.len();
        r.consume(done);
        if newline {
            return Ok(Some(fits));
        }
    }
}

/// Tests rule files against JSON-lines text. Pure.
pub fn test_rules(files: &[RuleFile], events_jsonl: &str) -> RulesTestReport {
    let (detector, rule_errors) = Detector::load(files);
    let mut report = RulesTestReport {
        rules_loaded: detector.stats().loaded,
        rule_errors,
        ..Default::default()
    };
    let mut correlator = detector.correlator();
    for (i, line) in events_jsonl.lines().enumerate() {
        if line.len() > MAX_LINE_BYTES {
            report.line_errors.push(LineError {
                line: i + 1,
                message: format!("line longer than {MAX_LINE_BYTES} bytes"),
            });
            continue;
        }
        test_line(&detector, correlator.as_mut(), i + 1, line, &mut report);
    }
    report
}

/// Match counts per rule id (correlations included), most first.
pub fn match_counts(matches: &[LineMatch]) -> Vec<(&RuleRef, usize)> {
    let mut by_id: std::collections::BTreeMap<&str, (&RuleRef, usize)> = std::collections::BTreeMap::new();
    for m in matches {
        by_id.entry(m.rule.id.as_str()).or_insert((&m.rule, 0)).1 += 1;
    }
    let mut out: Vec<(&RuleRef, usize)> = by_id.into_values().collect();
    out.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.id.cmp(&b.0.id)));
    out
}

/// Tests one line; returns the parsed event for timing.
fn test_line(
    detector: &Detector,
    correlator: Option<&mut Correlator>,
    line_no: usize,
    line: &str,
    report: &mut RulesTestReport,
) -> Option<EventLine> {
    let trimmed = line.trim();
    if trimmed.is_empty() || trimmed.starts_with('#') {
        return None;
    }
    report.events += 1;
    match parse_event_line(trimmed) {
        Ok(EventLine::Ward(event)) => {
            let detections = match correlator {
                Some(c) => c.process(detector, &event, event.observed_at_ms),
                None => detector.evaluate(&event),
            };
            for d in detections {
                report.matches.push(LineMatch {
                    line: line_no,
                    rule: d.rule,
                });
            }
            Some(EventLine::Ward(event))
        }
        Ok(EventLine::Sigma {
            fields,
            bucket,
            service,
        }) => {
            for rule in detector.evaluate_sigma_fields(&fields, bucket, service.as_deref()) {
                report.matches.push(LineMatch { line: line_no, rule });
            }
            Some(EventLine::Sigma {
                fields,
                bucket,
                service,
            })
        }
        Err(message) => {
            report.line_errors.push(LineError { line: line_no, message });
            None
        }
    }
}

/// Parses one event line in any of the shapes in the module doc.
pub fn parse_event_line(line: &str) -> Result<EventLine, String> {
    let value: Value = serde_json::from_str(line).map_err(|e| format!("not JSON: {e}"))?;
    let Value::Object(mut obj) = value else {
        return Err("not a JSON object".into());
    };
    if let Some(ls) = obj.remove("logsource") {
        let get = |k: &str| ls.get(k).and_then(Value::as_str).map(str::to_string);
        let (category, product, service) = (get("category"), get("product"), get("service"));
        let place = mapping::placement(category.as_deref(), product.as_deref(), service.as_deref());
        return match place {
            Placement::One(bucket, service) => Ok(EventLine::Sigma {
                fields: Value::Object(obj),
                bucket,
                service,
            }),
            Placement::AllPrimary => Err("logsource needs a category or a service".into()),
            Placement::Inactive(why) => Err(format!("logsource not supported: {why}")),
        };
    }
    let observed_at_ms = obj.get("observed_at_ms").and_then(Value::as_u64).unwrap_or(0);
    let data = match obj.remove("data") {
        Some(Value::Object(d)) => d,
        Some(_) => return Err("`data` is not an object".into()),
        None => {
            obj.remove("observed_at_ms");
            obj
        }
    };
    Ok(EventLine::Ward(Box::new(event_from_partial(observed_at_ms, data)?)))
}

/// Builds a Ward event from a possibly partial `data` object (with `kind`).
pub fn event_from_partial(observed_at_ms: u64, mut data: Map<String, Value>) -> Result<Event, String> {
    let kind = data
        .get("kind")
        .and_then(Value::as_str)
        .ok_or("missing `kind` (process, file, file_access, network, auth, audit or gap)")?
        .to_string();
    let defaults = match kind.as_str() {
        "process" => serde_json::to_value(ProcessEvent::default()),
        "file" => Ok(serde_json::json!({
            "op": "create", "path": "", "from_path": null, "sha256": null,
            "size": null, "mode": null, "uid": null
        })),
        "file_access" => {
            // The opening process is partial too: its fields over a default process.
            let mut process = serde_json::to_value(ProcessEvent::default()).map_err(|e| e.to_string())?;
            if let (Value::Object(p), Some(Value::Object(given))) = (&mut process, data.remove("process")) {
                p.extend(given);
            }
            Ok(serde_json::json!({ "path": "", "process": process }))
        }
        "network" => {
            // The process is partial too, as for file_access.
            let mut process = serde_json::to_value(ProcessEvent::default()).map_err(|e| e.to_string())?;
            if let (Value::Object(p), Some(Value::Object(given))) = (&mut process, data.remove("process")) {
                p.extend(given);
            }
            Ok(serde_json::json!({
                "op": "connect", "protocol": "tcp", "source_ip": "0.0.0.0", "source_port": 0,
                "destination_ip": null, "destination_port": null, "established": true, "process": process
            }))
        }
        "auth" => serde_json::to_value(AuthEvent::default()),
        "audit" => serde_json::to_value(AuditEvent::default()),
        "gap" => serde_json::to_value(SensorGap::default()),
        other => return Err(format!("unknown kind `{other}`")),
    }
    .map_err(|e| e.to_string())?;
    let Value::Object(mut merged) = defaults else {
        return Err("internal: defaults are not an object".into());
    };
    for key in ["sha256"] {
        if let Some(Value::String(h)) = data.get(key) {
            let bytes = hex::decode(h).map_err(|e| format!("`{key}`: {e}"))?;
            if bytes.len() != 32 {
                return Err(format!("`{key}` must be 32 bytes"));
            }
            data.insert(key.into(), Value::Array(bytes.into_iter().map(Value::from).collect()));
        }
    }
    merged.extend(data);
    let event = serde_json::json!({ "observed_at_ms": observed_at_ms, "data": merged });
    serde_json::from_value(event).map_err(|e| format!("not a Ward event: {e}"))
}

impl fmt::Display for RulesTestReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{} rules loaded, {} rule errors; {} events, {} line errors, {} matches",
            self.rules_loaded,
            self.rule_errors.len(),
            self.events,
            self.line_errors.len(),
            self.matches.len()
        )?;
        if !self.matches.is_empty() {
            writeln!(f)?;
            writeln!(f, "{:>6}  {:<9}  {:<36}  title", "line", "severity", "rule id")?;
            for m in &self.matches {
                writeln!(
                    f,
                    "{:>6}  {:<9}  {:<36}  {}",
                    m.line,
                    m.rule.severity.as_str(),
                    m.rule.id,
                    m.rule.title
                )?;
            }
        }
        let counts = match_counts(&self.matches);
        if !counts.is_empty() {
            writeln!(f)?;
            writeln!(f, "matches per rule:")?;
            writeln!(f, "{:>7}  {:<36}  title", "matches", "rule id")?;
            for (rule, n) in counts {
                writeln!(f, "{n:>7}  {:<36}  {}", rule.id, rule.title)?;
            }
        }
        if !self.costs.is_empty() {
            let over = self
                .costs
                .iter()
                .filter(|c| c.ns_per_event(self.timed_events) > RULE_BUDGET_NS_PER_EVENT)
                .count();
            writeln!(f)?;
            writeln!(
                f,
                "time per rule, each alone over {} events (budget {RULE_BUDGET_NS_PER_EVENT} ns/event; {over} over):",
                self.timed_events
            )?;
            writeln!(
                f,
                "{:>10}  {:>8}  {:>7}  {:<36}  title",
                "total us", "ns/event", "matches", "rule id"
            )?;
            for c in &self.costs {
                let per = c.ns_per_event(self.timed_events);
                let more = if c.rules_in_file > 1 {
                    format!(" (+{} more rules in its file)", c.rules_in_file - 1)
                } else {
                    String::new()
                };
                let flag = if per > RULE_BUDGET_NS_PER_EVENT {
                    "  OVER BUDGET"
                } else {
                    ""
                };
                writeln!(
                    f,
                    "{:>10}  {per:>8}  {:>7}  {:<36}  {}{more}{flag}",
                    c.nanos / 1000,
                    c.matches,
                    c.rule.id,
                    c.rule.title
                )?;
            }
        }
        if !self.rule_errors.is_empty() {
            writeln!(f)?;
            writeln!(f, "rule errors:")?;
            for e in &self.rule_errors {
                writeln!(f, "  {e}")?;
            }
        }
        if !self.line_errors.is_empty() {
            writeln!(f)?;
            writeln!(f, "line errors:")?;
            for e in &self.line_errors {
                writeln!(f, "  line {}: {}", e.line, e.message)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    const RULE: &str = r#"
title: Whoami
id: 11111111-1111-1111-1111-111111111111
author: Ward
logsource: {product: linux, category: process_creation}
detection:
  sel: {CommandLine|contains: whoami}
  condition: sel
level: low
"#;

    #[test]
    fn report_lists_matches_and_line_errors() {
        let files = vec![
            RuleFile {
                name: "a.yml".into(),
                yaml: RULE.into(),
            },
            RuleFile {
                name: "bad.yml".into(),
                yaml: "title: [".into(),
            },
        ];
        let events = [
            r#"{"kind":"process","cmdline":"whoami"}"#,
            "",
            "# comment",
            r#"{"logsource":{"category":"process_creation"},"CommandLine":"sh -c whoami"}"#,
            r#"{"kind":"process","cmdline":"ls"}"#,
            "not json",
            r#"{"kind":"teleport"}"#,
            r#"{"observed_at_ms":5,"data":{"kind":"file","op":"create","path":"/x","sha256":"00"}}"#,
        ]
        .join("\n");
        let r = test_rules(&files, &events);
        assert_eq!(r.rules_loaded, 1);
        assert_eq!(r.rule_errors.len(), 1);
        assert_eq!(r.events, 6);
        assert_eq!(r.matches.iter().map(|m| m.line).collect::<Vec<_>>(), vec![1, 4]);
        assert_eq!(r.line_errors.iter().map(|e| e.line).collect::<Vec<_>>(), vec![6, 7, 8]);
        let table = r.to_string();
        assert!(table.contains("11111111-1111-1111-1111-111111111111"), "{table}");
    }

    #[test]
    fn correlation_rules_see_ward_event_lines_in_order() {
        let corr = r#"
title: Three whoami
id: 22222222-2222-2222-2222-222222222222
author: Ward
correlation:
  type: event_count
  rules: [11111111-1111-1111-1111-111111111111]
  group-by: [User]
  timespan: 1m
  condition: {gte: 3}
  generate: true
level: high
"#;
        let files = vec![
            RuleFile {
                name: "a.yml".into(),
                yaml: RULE.into(),
            },
            RuleFile {
                name: "c.yml".into(),
                yaml: corr.into(),
            },
        ];
        let line =
            |t: u64| format!(r#"{{"observed_at_ms":{t},"data":{{"kind":"process","cmdline":"whoami","user":"bob"}}}}"#);
        let events = [line(1_000), line(2_000), line(3_000)].join("\n");
        let r = test_rules(&files, &events);
        assert!(r.rule_errors.is_empty(), "{:?}", r.rule_errors);
        let corr_hits: Vec<usize> = r
            .matches
            .iter()
            .filter(|m| m.rule.id.starts_with("2222"))
            .map(|m| m.line)
            .collect();
        assert_eq!(corr_hits, vec![3]);
    }

    #[test]
    fn each_rule_is_counted_and_timed_alone() {
        let slow = RULE
            .replace(
                "11111111-1111-1111-1111-111111111111",
                "33333333-3333-3333-3333-333333333333",
            )
            .replace("Whoami", "Slow");
        let files = vec![
            RuleFile {
                name: "a.yml".into(),
                yaml: RULE.into(),
            },
            RuleFile {
                name: "s.yml".into(),
                yaml: slow,
            },
        ];
        let events: Vec<EventLine> = ["whoami", "ls", "whoami -a"]
            .iter()
            .map(|c| parse_event_line(&format!(r#"{{"kind":"process","cmdline":"{c}"}}"#)).unwrap())
            .collect();
        // A fake clock: every reading advances 1 us, so each rule's run costs 1 us.
        let mut t = 0;
        let mut clock = || {
            t += 1_000;
            t
        };
        let costs = rule_costs(&files, &events, &mut clock);
        assert_eq!(costs.len(), 2);
        assert!(costs.iter().all(|c| c.matches == 2 && c.nanos == 1_000), "{costs:?}");
        let report = RulesTestReport {
            rules_loaded: 2,
            events: 3,
            matches: vec![
                LineMatch {
                    line: 1,
                    rule: costs[0].rule.clone(),
                },
                LineMatch {
                    line: 3,
                    rule: costs[0].rule.clone(),
                },
            ],
            timed_events: 3,
            costs,
            ..RulesTestReport::default()
        };
        let text = report.to_string();
        assert!(text.contains("matches per rule:"), "{text}");
        assert!(text.contains("      2  11111111"), "{text}");
        assert!(text.contains("ns/event"), "{text}");
        assert!(!text.contains("OVER BUDGET"), "{text}");
    }

    #[test]
    fn capped_line_reader() {
        let data = format!("a\n{}\nb", "x".repeat(MAX_LINE_BYTES + 1));
        let mut r = std::io::BufReader::with_capacity(16, data.as_bytes());
        let mut buf = Vec::new();
        assert_eq!(read_capped_line(&mut r, &mut buf).unwrap(), Some(true));
        assert_eq!(buf, b"a");
        buf.clear();
        assert_eq!(read_capped_line(&mut r, &mut buf).unwrap(), Some(false));
        buf.clear();
        assert_eq!(read_capped_line(&mut r, &mut buf).unwrap(), Some(true));
        assert_eq!(buf, b"b");
        buf.clear();
        assert_eq!(read_capped_line(&mut r, &mut buf).unwrap(), None);
    }
}
