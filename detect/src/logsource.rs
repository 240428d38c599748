//! Sigma over other sensors' logs (the collector's endpoint feed: Sysmon, Windows
//! Security): rules placed by their whole logsource (product, category, service),
//! events given as flat objects of Sigma's own field names (`Image`, `CommandLine`,
//! `EventID`...) with the logsource they belong to. The same rsigma engines, wildcard
//! respelling and rule metadata as [`crate::Detector`], which judges Ward's own events.
//! Pure: no IO, no clock.

use std::collections::HashMap;
use std::sync::Arc;

use rsigma_eval::Engine;
use rsigma_eval::event::JsonEvent;
use rsigma_parser::SigmaRule;
use ward_protocol::{MatchedField, RuleFile, RuleRef};

use crate::engine::{MAX_RULES, RuleError, RuleErrorKind, new_engine, panic_message, severity};
use crate::entities::attack_ids;

/// Where an event comes from, in Sigma's terms. An event may belong to several
/// categories (a Sysmon registry value set is `registry_set` and `registry_event`).
#[derive(Debug, Clone, Copy)]
pub struct EventSource<'a> {
    /// `windows`, `linux`.
    pub product: &'a str,
    pub categories: &'a [&'a str],
    /// `security`, `sysmon`, `system`... (from the event's channel).
    pub service: Option<&'a str>,
}

/// One rule that matched one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceMatch {
    pub rule: RuleRef,
    pub matched: Vec<MatchedField>,
}

/// Counts for the collector's start-up log.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SourceStats {
    pub loaded: usize,
    /// Distinct logsources (one engine each).
    pub logsources: usize,
}

/// (product, category, service), lowercase, "" for absent.
type Key = (String, String, String);

/// Rules compiled per logsource. Cheap to share (`Arc`) across threads.
#[derive(Default)]
pub struct SourceDetector {
    engines: HashMap<Key, Engine>,
    rules: HashMap<String, Arc<RuleRef>>,
    stats: SourceStats,
}

impl std::fmt::Debug for SourceDetector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SourceDetector")
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

fn lower(s: Option<&str>) -> String {
    s.map(|s| s.trim().to_ascii_lowercase()).unwrap_or_default()
}

impl SourceDetector {
    /// Compiles rule files; every rule that cannot be loaded is reported and
    /// skipped. Rules without a product, correlations and filters are refused: an
    /// event of another sensor always names its product.
    pub fn load(files: &[RuleFile]) -> (SourceDetector, Vec<RuleError>) {
        let mut det = SourceDetector::default();
        let mut errors = Vec::new();
        for file in files {
            let err = |rule: Option<String>, kind| RuleError {
                file: file.name.clone(),
                rule,
                kind,
            };
            let Some(collection) = crate::engine::parse_rule_file(file, &mut errors) else {
                continue;
            };
            for c in &collection.correlations {
                errors.push(err(
                    Some(c.title.clone()),
                    RuleErrorKind::Unsupported("correlation rules".into()),
                ));
            }
            for f in &collection.filters {
                errors.push(err(
                    Some(f.title.clone()),
                    RuleErrorKind::Unsupported("filter rules".into()),
                ));
            }
            for (i, rule) in collection.rules.into_iter().enumerate() {
                let title = rule.id.clone().unwrap_or_else(|| rule.title.clone());
                if det.rules.len() >= MAX_RULES {
                    errors.push(err(Some(title), RuleErrorKind::TooManyRules { max: MAX_RULES }));
                    continue;
                }
                if let Err(kind) = det.add_rule(rule, &file.name, i) {
                    errors.push(err(Some(title), kind));
                }
            }
        }
        det.engines.values_mut().for_each(crate::engine::finish_index);
        (det, errors)
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
        let key = (
            lower(rule.logsource.product.as_deref()),
            lower(rule.logsource.category.as_deref()),
            lower(rule.logsource.service.as_deref()),
        );
        if key.0.is_empty() {
            return Err(RuleErrorKind::Unsupported("a rule without a logsource product".into()));
        }
        crate::wildcard::normalise(&mut rule);
        let compiled = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| rsigma_eval::compile_rule(&rule)));
        let compiled = match compiled {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => return Err(RuleErrorKind::Compile(e.to_string())),
            Err(p) => return Err(RuleErrorKind::Panicked(panic_message(p.as_ref()))),
        };
        self.engines
            .entry(key)
            .or_insert_with(new_engine)
            .add_compiled_rule(compiled);
        let (techniques, tactics) = attack_ids(&rule.tags);
        self.rules.insert(
            id.clone(),
            Arc::new(RuleRef {
                id,
                title: rule.title.clone(),
                author: rule.author.clone().unwrap_or_default(),
                severity: severity(rule.level),
                techniques,
                tactics,
            }),
        );
        self.stats.loaded += 1;
        self.stats.logsources = self.engines.len();
        Ok(())
    }

    pub fn stats(&self) -> SourceStats {
        self.stats
    }

    /// The ids of the loaded rules.
    pub fn rule_ids(&self) -> impl Iterator<Item = &str> {
        self.rules.keys().map(String::as_str)
    }

    /// Whether any loaded rule is written for this product.
    pub fn has_product(&self, product: &str) -> bool {
        self.engines.keys().any(|k| k.0.eq_ignore_ascii_case(product))
    }

    /// Every rule that matches `fields` (a JSON object of Sigma field names): the
    /// rules of the event's product whose category is one of the event's (or none)
    /// and whose service is the event's (or none). A rule matches an event once.
    /// Pure: never fails.
    pub fn evaluate(&self, source: &EventSource<'_>, fields: &serde_json::Value) -> Vec<SourceMatch> {
        let product = source.product.to_ascii_lowercase();
        let service = lower(source.service);
        let mut categories: Vec<String> = source.categories.iter().map(|c| c.to_ascii_lowercase()).collect();
        categories.push(String::new());
        let mut services = vec![String::new()];
        if !service.is_empty() {
            services.push(service);
        }
        let event = JsonEvent::borrow(fields);
        let mut out: Vec<SourceMatch> = Vec::new();
        for category in &categories {
            for service in &services {
                let key = (product.clone(), category.clone(), service.clone());
                let Some(engine) = self.engines.get(&key) else {
                    continue;
                };
                for r in engine.evaluate(&event) {
                    let Some(rule) = r.header.rule_id.as_deref().and_then(|id| self.rules.get(id)) else {
                        continue;
                    };
                    if out.iter().any(|m| m.rule.id == rule.id) {
                        continue;
                    }
                    let matched = crate::engine::matched_fields(&r);
                    out.push(SourceMatch {
                        rule: rule.as_ref().clone(),
                        matched,
                    });
                }
            }
        }
        out
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn file(name: &str, yaml: &str) -> RuleFile {
        RuleFile {
            name: name.into(),
            yaml: yaml.into(),
        }
    }

    const PROC: &str = "title: Whoami\nid: 11111111-1111-1111-1111-111111111111\nauthor: Someone\nlevel: high\ntags: [attack.discovery, attack.t1033]\nlogsource: {product: windows, category: process_creation}\ndetection:\n  sel:\n    Image|endswith: '\\whoami.exe'\n  condition: sel\n";
    const SEC: &str = "title: Log cleared\nid: 22222222-2222-2222-2222-222222222222\nlevel: medium\nlogsource: {product: windows, service: security}\ndetection:\n  sel:\n    EventID: 1102\n  condition: sel\n";

    #[test]
    fn rules_match_only_events_of_their_logsource() {
        let (det, errors) = SourceDetector::load(&[file("a.yml", PROC), file("b.yml", SEC)]);
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(det.stats().loaded, 2);
        let ev = serde_json::json!({"Image": "C:\\Windows\\System32\\whoami.exe", "EventID": 1});
        let proc = EventSource {
            product: "windows",
            categories: &["process_creation"],
            service: Some("sysmon"),
        };
        let m = det.evaluate(&proc, &ev);
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].rule.author, "Someone");
        assert_eq!(m[0].rule.techniques, vec!["T1033".to_string()]);
        assert_eq!(m[0].matched[0].name, "Image");
        // The same fields under another category or product match nothing.
        let file_ev = EventSource {
            product: "windows",
            categories: &["file_event"],
            service: Some("sysmon"),
        };
        assert!(det.evaluate(&file_ev, &ev).is_empty());
        let linux = EventSource {
            product: "linux",
            categories: &["process_creation"],
            service: None,
        };
        assert!(det.evaluate(&linux, &ev).is_empty());
        let sec = EventSource {
            product: "windows",
            categories: &[],
            service: Some("security"),
        };
        let cleared = serde_json::json!({"EventID": 1102});
        assert_eq!(det.evaluate(&sec, &cleared)[0].rule.title, "Log cleared");
        assert!(det.evaluate(&proc, &cleared).is_empty());
    }

    #[test]
    fn rules_without_a_product_or_broken_are_reported() {
        let no_product = PROC.replace("product: windows, ", "");
        let (det, errors) = SourceDetector::load(&[file("a.yml", &no_product), file("b.yml", "title: [")]);
        assert_eq!(det.stats().loaded, 0);
        assert_eq!(errors.len(), 2, "{errors:?}");
    }
}
