//! What an analyst reads about a rule beside its alert: description, references,
//! false-positive notes, level, author, license and where the rule comes from,
//! taken from the rule files of a pack (shipped or pushed). Alerts carry only the
//! rule's id, title, author, level and ATT&CK ids; the collector keeps one context
//! per rule version and links alerts to it.
//!
//! Pure: parses rule texts, no IO. Rule files are untrusted (an operator's push):
//! every field is cut to a size limit, references are kept when they are `http(s)`
//! URLs or plain words with no scheme ("Internal Research", shown as text) and
//! dropped otherwise (a console must never get a `javascript:` link), and each cut
//! or drop is counted and named in the context's `notes`. Nothing here panics on
//! any input.

use rsigma_parser::{Level, SigmaCollection};
use ward_protocol::RuleFile;

use crate::defaultpack::{SIGMAHQ_RULES, ShippedRule};
use crate::engine::MAX_RULE_FILE_BYTES;
use crate::entities::attack_ids;

/// The SigmaHQ commit the shipped rules were copied from (`rules/sigmahq/ORIGIN.md`).
pub const SIGMAHQ_COMMIT: &str = "8eaafff1f2845a696050e05e72ba1140ee190698";
/// The license of the SigmaHQ rules, kept wherever one is shown.
pub const SIGMAHQ_LICENSE: &str = "Detection Rule License (DRL) 1.1";
/// Where Ward's own rules are published.
pub const WARD_RULES_URL: &str = "https://github.com/ward-edr/ward/blob/main/detect/rules/builtin/";
/// Ward's own rules are under the project's license.
pub const WARD_LICENSE: &str = "Apache-2.0";

/// Limits on each field, in characters (bytes for the whole file, see
/// [`MAX_RULE_FILE_BYTES`]).
pub const MAX_TITLE_CHARS: usize = 256;
pub const MAX_DESCRIPTION_CHARS: usize = 4096;
pub const MAX_AUTHOR_CHARS: usize = 512;
pub const MAX_LICENSE_CHARS: usize = 256;
pub const MAX_LIST_ITEMS: usize = 32;
pub const MAX_ITEM_CHARS: usize = 512;
pub const MAX_ATTACK_IDS: usize = 32;

/// Where a rule came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// Ward's built-in rules (`detect/rules/builtin/`).
    Builtin,
    /// The shipped SigmaHQ rules (`detect/rules/sigmahq/linux/`).
    SigmaHq,
    /// A rule pack an operator pushed through the collector.
    Pushed { pack_version: u64 },
}

impl Origin {
    /// `builtin`, `sigmahq` or `pushed`.
    pub fn name(&self) -> &'static str {
        match self {
            Origin::Builtin => "builtin",
            Origin::SigmaHq => "sigmahq",
            Origin::Pushed { .. } => "pushed",
        }
    }
}

/// One rule's context, every field bounded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleContext {
    /// The id alerts carry (as the engine names it: the rule's `id`, or
    /// `file#index` when it has none).
    pub rule_id: String,
    pub title: String,
    /// `informational` … `critical`; `medium` when the rule names none (as alerts).
    pub level: &'static str,
    pub description: String,
    pub references: Vec<String>,
    pub false_positives: Vec<String>,
    pub author: String,
    pub license: String,
    pub origin: Origin,
    /// The rule file's name in its pack (`sigmahq/process_creation/x.yml`).
    pub file: String,
    /// Where to read the rule's source, when it is published.
    pub source_url: Option<String>,
    /// ATT&CK ids as alerts carry them (normalised to v19).
    pub techniques: Vec<String>,
    pub tactics: Vec<String>,
    /// What was cut or dropped to fit the limits, for the analyst.
    pub notes: Vec<String>,
}

/// Counts of what the limits changed, over a set of files.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ContextStats {
    pub rules: usize,
    /// Fields cut to their limit (a description, an author, one list item...).
    pub clipped: usize,
    /// References dropped because they are not `http(s)` URLs, and list items over
    /// the count limit.
    pub dropped: usize,
    /// Files that did not parse (or were too large): their rules get no context.
    pub unreadable_files: usize,
}

fn level_name(level: Option<Level>) -> &'static str {
    match level {
        Some(Level::Informational) => "informational",
        Some(Level::Low) => "low",
        Some(Level::Medium) | None => "medium",
        Some(Level::High) => "high",
        Some(Level::Critical) => "critical",
    }
}

/// `s` cut to `max` characters; whether it was cut.
fn clip(s: &str, max: usize) -> (String, bool) {
    let s = s.trim();
    match s.char_indices().nth(max) {
        Some((i, _)) => (format!("{}…", &s[..i]), true),
        None => (s.to_string(), false),
    }
}

struct Bounder<'a> {
    stats: &'a mut ContextStats,
    notes: Vec<String>,
}

impl Bounder<'_> {
    fn text(&mut self, field: &str, s: Option<&str>, max: usize) -> String {
        let (out, cut) = clip(s.unwrap_or_default(), max);
        if cut {
            self.stats.clipped += 1;
            self.notes.push(format!("{field} cut to {max} characters"));
        }
        out
    }

    fn list(&mut self, field: &str, items: &[String], keep: impl Fn(&str) -> bool) -> Vec<String> {
        let mut out = Vec::new();
        let (mut cut, mut refused, mut over) = (0, 0, 0);
        for item in items {
            let item = item.trim();
            if item.is_empty() {
                continue;
            }
            if !keep(item) {
                refused += 1;
                continue;
            }
            if out.len() >= MAX_LIST_ITEMS {
                over += 1;
                continue;
            }
            let (s, c) = clip(item, MAX_ITEM_CHARS);
            cut += usize::from(c);
            out.push(s);
        }
        self.stats.clipped += cut;
        self.stats.dropped += refused + over;
        if cut > 0 {
            self.notes
                .push(format!("{cut} {field} cut to {MAX_ITEM_CHARS} characters"));
        }
        if refused > 0 {
            self.notes
                .push(format!("{refused} {field} dropped: not an http(s) URL"));
        }
        if over > 0 {
            self.notes
                .push(format!("{over} {field} dropped over the limit of {MAX_LIST_ITEMS}"));
        }
        out
    }
}

/// Whether `s` is an `http(s)` URL with no spaces or control characters: the only
/// references shown as links.
pub fn is_web_url(s: &str) -> bool {
    let lower = s.get(..8).map(str::to_ascii_lowercase).unwrap_or_default();
    let rest = if lower.starts_with("https://") {
        &s[8..]
    } else if lower.starts_with("http://") {
        &s[7..]
    } else {
        return false;
    };
    !rest.is_empty()
        && !s
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '"' || c == '<' || c == '>')
}

/// The fields one Sigma rule (detection or correlation) has for a context.
struct Fields<'a> {
    id: Option<&'a str>,
    title: &'a str,
    level: Option<Level>,
    description: Option<&'a str>,
    references: &'a [String],
    falsepositives: &'a [String],
    author: Option<&'a str>,
    license: Option<&'a str>,
    tags: &'a [String],
}

/// Where a rule file comes from and what it defaults to.
struct Source<'a> {
    file: &'a str,
    origin: &'a Origin,
    url: Option<String>,
    license: &'a str,
}

fn context_of(f: &Fields<'_>, src: &Source<'_>, index: usize, stats: &mut ContextStats) -> RuleContext {
    let rule_id = match f.id.map(str::trim).filter(|s| !s.is_empty()) {
        Some(id) => id.to_string(),
        None => format!("{}#{index}", src.file),
    };
    let mut b = Bounder {
        stats,
        notes: Vec::new(),
    };
    let title = b.text("title", Some(f.title), MAX_TITLE_CHARS);
    let description = b.text("description", f.description, MAX_DESCRIPTION_CHARS);
    let author = b.text("author", f.author, MAX_AUTHOR_CHARS);
    let license = b.text("license", Some(f.license.unwrap_or(src.license)), MAX_LICENSE_CHARS);
    let references = b.list("references", f.references, |r| is_web_url(r) || !r.contains(':'));
    let false_positives = b.list("false-positive notes", f.falsepositives, |_| true);
    let (mut techniques, mut tactics) = attack_ids(f.tags);
    if techniques.len() > MAX_ATTACK_IDS || tactics.len() > MAX_ATTACK_IDS {
        techniques.truncate(MAX_ATTACK_IDS);
        tactics.truncate(MAX_ATTACK_IDS);
        b.stats.dropped += 1;
        b.notes.push(format!("ATT&CK ids over {MAX_ATTACK_IDS} dropped"));
    }
    let notes = b.notes;
    stats.rules += 1;
    RuleContext {
        rule_id,
        title,
        level: level_name(f.level),
        description,
        references,
        false_positives,
        author,
        license,
        origin: src.origin.clone(),
        file: src.file.to_string(),
        source_url: src.url.clone(),
        techniques,
        tactics,
        notes,
    }
}

fn parse(yaml: &str) -> Option<SigmaCollection> {
    if yaml.len() > MAX_RULE_FILE_BYTES {
        return None;
    }
    std::panic::catch_unwind(|| rsigma_parser::parse_sigma_yaml(yaml))
        .ok()
        .and_then(Result::ok)
}

fn file_contexts(yaml: &str, src: &Source<'_>, stats: &mut ContextStats, out: &mut Vec<RuleContext>) {
    let Some(c) = parse(yaml).filter(|c| !c.rules.is_empty() || !c.correlations.is_empty()) else {
        stats.unreadable_files += 1;
        return;
    };
    // Detection and correlation rules name these fields alike but are two types.
    macro_rules! fields {
        ($r:expr) => {
            Fields {
                id: $r.id.as_deref(),
                title: &$r.title,
                level: $r.level,
                description: $r.description.as_deref(),
                references: &$r.references,
                falsepositives: &$r.falsepositives,
                author: $r.author.as_deref(),
                license: $r.license.as_deref(),
                tags: &$r.tags,
            }
        };
    }
    for (i, r) in c.rules.iter().enumerate() {
        out.push(context_of(&fields!(r), src, i, stats));
    }
    for (i, r) in c.correlations.iter().enumerate() {
        out.push(context_of(&fields!(r), src, c.rules.len() + i, stats));
    }
}

/// A built-in file is Ward's unless it is a tuned SigmaHQ rule (`related: derived`
/// to an upstream id), which stays under the DRL with its author.
fn builtin_license(yaml: &str) -> &'static str {
    if yaml.lines().any(|l| l.trim() == "type: derived") {
        SIGMAHQ_LICENSE
    } else {
        WARD_LICENSE
    }
}

fn sigmahq_url(r: &ShippedRule) -> String {
    format!(
        "https://github.com/SigmaHQ/sigma/blob/{SIGMAHQ_COMMIT}/rules/linux/{}",
        r.file
    )
}

/// The context of every shipped rule (built-in and SigmaHQ, on by default or not).
pub fn shipped_contexts() -> (Vec<RuleContext>, ContextStats) {
    let mut out = Vec::new();
    let mut stats = ContextStats::default();
    for (name, yaml) in crate::BUILTIN_RULES {
        let file = format!("builtin/{name}");
        let src = Source {
            file: &file,
            origin: &Origin::Builtin,
            url: Some(format!("{WARD_RULES_URL}{name}")),
            license: builtin_license(yaml),
        };
        file_contexts(yaml, &src, &mut stats, &mut out);
    }
    for r in SIGMAHQ_RULES {
        let file = format!("sigmahq/{}", r.file);
        let src = Source {
            file: &file,
            origin: &Origin::SigmaHq,
            url: Some(sigmahq_url(r)),
            license: SIGMAHQ_LICENSE,
        };
        file_contexts(r.yaml, &src, &mut stats, &mut out);
    }
    (out, stats)
}

/// The context of every rule in a pushed pack. Pushed rules have no published
/// source; their license is the rule's own `license:` or "not stated".
pub fn pack_contexts(pack_version: u64, files: &[RuleFile]) -> (Vec<RuleContext>, ContextStats) {
    let mut out = Vec::new();
    let mut stats = ContextStats::default();
    let origin = Origin::Pushed { pack_version };
    for f in files {
        let src = Source {
            file: &f.name,
            origin: &origin,
            url: None,
            license: "not stated",
        };
        file_contexts(&f.yaml, &src, &mut stats, &mut out);
    }
    (out, stats)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn pushed(yaml: &str) -> (Vec<RuleContext>, ContextStats) {
        pack_contexts(
            3,
            &[RuleFile {
                name: "ops/x.yml".into(),
                yaml: yaml.into(),
            }],
        )
    }

    const RULE: &str = "title: Pushed\nid: 6f1b5c1e-0c2e-4d7a-9a57-3f1f1c0a9b01\ndescription: Finds x.\nauthor: Ops\nreferences:\n  - https://example.org/a\nfalsepositives:\n  - admins\ntags:\n  - attack.execution\n  - attack.t1059.004\nlogsource:\n  product: linux\n  category: process_creation\ndetection:\n  sel:\n    Image|endswith: /x\n  condition: sel\nlevel: high\n";

    #[test]
    fn every_shipped_rule_has_a_context_with_its_license_and_link() {
        let (all, stats) = shipped_contexts();
        assert_eq!(stats.unreadable_files, 0);
        // Shipped content needs no cut: plain-word references ("Internal Research")
        // are kept as text, so a collector's start has nothing to warn about.
        assert_eq!((stats.clipped, stats.dropped), (0, 0));
        assert!(
            all.iter()
                .any(|c| c.references.iter().any(|r| r == "Internal Research"))
        );
        assert_eq!(all.len(), crate::BUILTIN_RULES.len() + SIGMAHQ_RULES.len());
        let (det, _) = crate::Detector::load(&crate::shipped_rule_files());
        for r in det.rules() {
            let c = all.iter().find(|c| c.rule_id == r.id).expect(&r.id);
            // What the alert carries and what the context says agree.
            assert_eq!(c.title, r.title);
            assert_eq!(c.level, r.severity.as_str(), "{}", r.id);
            assert_eq!(c.techniques, r.techniques, "{}", r.id);
            assert!(c.source_url.as_deref().is_some_and(is_web_url), "{}", r.id);
            assert!(!c.description.is_empty(), "{} has no description", r.id);
        }
        let sigma = all.iter().find(|c| c.origin == Origin::SigmaHq).unwrap();
        assert_eq!(sigma.license, SIGMAHQ_LICENSE);
        assert!(sigma.source_url.as_deref().unwrap().contains(SIGMAHQ_COMMIT));
        let ward = all.iter().find(|c| c.file == "builtin/lnx_ward_at_job.yml").unwrap();
        assert_eq!(ward.license, WARD_LICENSE);
        assert_eq!(ward.false_positives, vec!["Administrators scheduling one-off jobs"]);
        let tuned = all.iter().find(|c| c.file.ends_with("_tuned.yml")).unwrap();
        assert_eq!(tuned.license, SIGMAHQ_LICENSE, "a tuned SigmaHQ rule keeps the DRL");
    }

    #[test]
    fn a_pushed_rule_keeps_its_fields() {
        let (c, stats) = pushed(RULE);
        assert_eq!(stats.rules, 1);
        let c = &c[0];
        assert_eq!(c.rule_id, "6f1b5c1e-0c2e-4d7a-9a57-3f1f1c0a9b01");
        assert_eq!(c.level, "high");
        assert_eq!(c.description, "Finds x.");
        assert_eq!(c.references, vec!["https://example.org/a"]);
        assert_eq!(c.false_positives, vec!["admins"]);
        assert_eq!(c.license, "not stated");
        assert_eq!(c.origin, Origin::Pushed { pack_version: 3 });
        assert_eq!(c.source_url, None);
        assert_eq!(c.techniques, vec!["T1059.004"]);
        assert_eq!(c.tactics, vec!["TA0002"]);
        assert!(c.notes.is_empty());
    }

    #[test]
    fn huge_fields_and_bad_references_are_bounded_and_counted() {
        let refs: String = (0..40).map(|i| format!("  - https://example.org/{i}\n")).collect();
        let yaml = RULE
            .replace("Finds x.", &"d".repeat(100_000))
            .replace("author: Ops", &format!("author: {}", "é".repeat(600)))
            .replace(
                "  - https://example.org/a\n",
                &format!("  - javascript:alert(1)\n  - 'https://a.org/x\" onclick=y'\n  - ftp://x\n{refs}"),
            );
        let (c, stats) = pushed(&yaml);
        let c = &c[0];
        assert_eq!(c.description.chars().count(), MAX_DESCRIPTION_CHARS + 1);
        assert!(c.author.ends_with('…') && c.author.chars().count() == MAX_AUTHOR_CHARS + 1);
        assert_eq!(c.references.len(), MAX_LIST_ITEMS);
        assert!(c.references.iter().all(|r| r.starts_with("https://example.org/")));
        assert_eq!(stats.clipped, 2);
        assert_eq!(stats.dropped, 3 + 8);
        assert!(
            c.notes.iter().any(|n| n == "3 references dropped: not an http(s) URL"),
            "{:?}",
            c.notes
        );
        assert!(c.notes.iter().any(|n| n.contains("description cut")));
    }

    #[test]
    fn unreadable_files_are_counted_and_rules_without_ids_named_as_the_engine_names_them() {
        let (c, stats) = pushed("title: [unclosed\n");
        assert!(c.is_empty());
        assert_eq!(stats.unreadable_files, 1);
        let (c, _) = pushed(&"x".repeat(MAX_RULE_FILE_BYTES + 1));
        assert!(c.is_empty());
        let no_id = RULE.replace("id: 6f1b5c1e-0c2e-4d7a-9a57-3f1f1c0a9b01\n", "");
        let (c, _) = pushed(&no_id);
        let (det, errors) = crate::Detector::load(&[RuleFile {
            name: "ops/x.yml".into(),
            yaml: no_id,
        }]);
        assert!(errors.is_empty());
        assert_eq!(c[0].rule_id, det.rules().next().unwrap().id);
    }

    #[test]
    fn only_web_urls_are_references() {
        for good in ["https://a.org", "HTTP://a.org/x?y=1#z"] {
            assert!(is_web_url(good), "{good}");
        }
        for bad in [
            "javascript:alert(1)",
            "https://",
            "https://a b",
            "data:text/html,x",
            "http://a\"b",
            "",
            "https:/x",
        ] {
            assert!(!is_web_url(bad), "{bad}");
        }
    }
}
