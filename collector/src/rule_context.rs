//! Rule context at the collector: the versions of every rule it knows (the shipped
//! rules of the `ward-detect` it was built with, and each rule pack pushed through
//! it) recorded once per version, and which version an alert belongs to.
//!
//! Alerts on the wire carry only the rule's id, title, author, level and ATT&CK ids
//! (no description or references: the collector already has them). An alert names
//! no rule version, so the version whose title and level match the alert's, recorded
//! before the alert arrived, is taken; a rule the collector never recorded shows
//! what the alert carries, with a note saying so. No SQL and no HTTP here.

use serde::Serialize;
use ward_detect::context::{ContextStats, RuleContext, pack_contexts, shipped_contexts};
use ward_protocol::RulePack;

use crate::store::{NewRuleContext, RuleContextStore, RuleContextView, StoreError};
use crate::util::sha256;

/// The versions of one rule read for an alert.
pub const MAX_VERSIONS: u32 = 50;

/// A version's identity: SHA-256 over its fields (not over where or when it was
/// first seen), so the same rule pushed again is the same version.
pub fn version_hash(c: &RuleContext) -> String {
    let fields = serde_json::json!([
        c.rule_id,
        c.title,
        c.level,
        c.description,
        c.references,
        c.false_positives,
        c.author,
        c.license,
        c.origin.name(),
        c.file,
        c.source_url,
        c.techniques,
        c.tactics,
    ]);
    hex::encode(sha256(fields.to_string().as_bytes()))
}

/// The rows to keep for `contexts`.
pub fn rows_of(contexts: &[RuleContext]) -> Vec<NewRuleContext> {
    contexts
        .iter()
        .map(|c| NewRuleContext {
            rule_id: c.rule_id.clone(),
            content_sha256: version_hash(c),
            origin: c.origin.name().to_string(),
            pack_version: match c.origin {
                ward_detect::context::Origin::Pushed { pack_version } => Some(pack_version),
                _ => None,
            },
            file: c.file.clone(),
            title: c.title.clone(),
            level: c.level.to_string(),
            description: c.description.clone(),
            references: c.references.clone(),
            false_positives: c.false_positives.clone(),
            author: c.author.clone(),
            license: c.license.clone(),
            source_url: c.source_url.clone(),
            techniques: c.techniques.clone(),
            tactics: c.tactics.clone(),
            notes: c.notes.clone(),
        })
        .collect()
}

/// What recording a set of rules did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Recorded {
    /// Versions not kept before.
    pub new: usize,
    pub stats: ContextStats,
}

impl Recorded {
    /// Fields cut or dropped to fit their limits.
    pub fn limited(&self) -> u64 {
        (self.stats.clipped + self.stats.dropped) as u64
    }
}

/// The rows of every shipped rule, and what the limits changed (parsing 260 rules
/// takes a moment: done off the writer's thread).
pub fn shipped_rows() -> (Vec<NewRuleContext>, ContextStats) {
    let (contexts, stats) = shipped_contexts();
    (rows_of(&contexts), stats)
}

/// The rows of every rule of a pushed pack.
pub fn pack_rows(pack: &RulePack) -> (Vec<NewRuleContext>, ContextStats) {
    let (contexts, stats) = pack_contexts(pack.version, &pack.rules);
    (rows_of(&contexts), stats)
}

/// The rule pack in a stored signed pack (the collector's own signature: stored
/// only after it signed it), or why it does not decode.
pub fn stored_pack(signed: &ward_protocol::Signed) -> Result<RulePack, String> {
    postcard::from_bytes(&signed.payload).map_err(|e| e.to_string())
}

/// Keeps `rows` (idempotent: known versions are skipped).
pub fn record(
    store: &impl RuleContextStore,
    (rows, stats): (Vec<NewRuleContext>, ContextStats),
    now_ms: u64,
) -> Result<Recorded, StoreError> {
    let new = store.record_rule_contexts(&rows, now_ms)?;
    Ok(Recorded { new, stats })
}

/// Keeps the context of every shipped rule.
pub fn record_shipped(store: &impl RuleContextStore, now_ms: u64) -> Result<Recorded, StoreError> {
    record(store, shipped_rows(), now_ms)
}

/// Keeps the context of every rule of a pushed pack.
pub fn record_pack(store: &impl RuleContextStore, pack: &RulePack, now_ms: u64) -> Result<Recorded, StoreError> {
    record(store, pack_rows(pack), now_ms)
}

/// How an alert's rule version was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Match {
    /// A version with the alert's title and level.
    Exact,
    /// No version has the alert's title and level: the newest is shown.
    Newest,
    /// The collector knows no version of the rule.
    Unknown,
}

/// An alert's rule version, with what the analyst should know about the choice.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Resolved {
    #[serde(rename = "match")]
    pub how: Match,
    pub context: Option<RuleContextView>,
    /// How many versions of the rule the collector knows.
    pub versions: usize,
    pub note: Option<String>,
}

/// Picks the version of a rule an alert (with this title and level, received at
/// `received_at_ms`) was raised by, from `versions` (newest first).
pub fn resolve(mut versions: Vec<RuleContextView>, title: &str, level: &str, received_at_ms: i64) -> Resolved {
    let count = versions.len();
    if versions.is_empty() {
        return Resolved {
            how: Match::Unknown,
            context: None,
            versions: 0,
            note: Some(
                "The collector knows no rule with this id (not shipped with this collector's Ward and not pushed \
                 through it): shown is what the alert itself carries."
                    .into(),
            ),
        };
    }
    let same = |v: &RuleContextView| v.rule.title == title && v.rule.level == level;
    // Newest first: the newest matching version recorded before the alert came, or
    // (recorded later, e.g. after an upgrade) the oldest matching one.
    let exact = versions
        .iter()
        .position(|v| same(v) && v.first_seen_ms <= received_at_ms)
        .or_else(|| versions.iter().rposition(same));
    match exact {
        Some(i) => Resolved {
            how: Match::Exact,
            context: Some(versions.swap_remove(i)),
            versions: count,
            note: (count > 1).then(|| {
                format!("{count} versions of this rule are known; shown is the one with the alert's title and level.")
            }),
        },
        None => Resolved {
            how: Match::Newest,
            context: Some(versions.swap_remove(0)),
            versions: count,
            note: Some(
                "The rule changed since this alert (its title or level differ from the alert's): shown is its \
                 newest version."
                    .into(),
            ),
        },
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::store::test_support;
    use ward_protocol::RuleFile;

    fn pack(version: u64, title: &str, level: &str) -> RulePack {
        RulePack {
            version,
            created_at_ms: 1,
            rules: vec![RuleFile {
                name: "ops.yml".into(),
                yaml: format!(
                    "title: {title}\nid: 6f1b5c1e-0c2e-4d7a-9a57-3f1f1c0a9b01\ndescription: d{version}\n\
                     logsource:\n  product: linux\n  category: process_creation\n\
                     detection:\n  sel:\n    Image|endswith: /x\n  condition: sel\nlevel: {level}\n"
                ),
            }],
        }
    }

    const ID: &str = "6f1b5c1e-0c2e-4d7a-9a57-3f1f1c0a9b01";

    #[test]
    fn shipped_rules_are_recorded_once() {
        let (_dir, store) = test_support::open();
        let first = record_shipped(&store, 10).unwrap();
        assert!(first.new > 200, "{first:?}");
        assert_eq!(record_shipped(&store, 20).unwrap().new, 0);
        assert_eq!(store.rule_context_count().unwrap() as usize, first.new);
        let v = store
            .rule_contexts_of("369f7b78-7025-48c6-bd55-07cd0cc75228", 10)
            .unwrap();
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].rule.origin, "builtin");
        assert_eq!(v[0].first_seen_ms, 10);
    }

    #[test]
    fn an_alert_gets_the_version_it_was_raised_by() {
        let (_dir, store) = test_support::open();
        record_pack(&store, &pack(1, "Old", "high"), 100).unwrap();
        // The same rule pushed again unchanged is the same version.
        assert_eq!(record_pack(&store, &pack(1, "Old", "high"), 150).unwrap().new, 0);
        record_pack(&store, &pack(2, "New", "high"), 200).unwrap();
        let versions = || store.rule_contexts_of(ID, MAX_VERSIONS).unwrap();
        assert_eq!(versions().len(), 2);
        let r = resolve(versions(), "Old", "high", 180);
        assert_eq!(r.how, Match::Exact);
        assert_eq!(r.context.as_ref().unwrap().rule.description, "d1");
        assert_eq!(r.context.as_ref().unwrap().rule.pack_version, Some(1));
        assert!(r.note.unwrap().starts_with("2 versions"));
        let r = resolve(versions(), "New", "high", 250);
        assert_eq!(r.context.unwrap().rule.description, "d2");
        // A title no version has: the newest, said so.
        let r = resolve(versions(), "Other", "high", 250);
        assert_eq!(r.how, Match::Newest);
        assert_eq!(r.context.unwrap().rule.description, "d2");
        assert!(r.note.unwrap().contains("changed"));
        // Recorded after the alert came (an upgrade): still the matching one.
        let r = resolve(versions(), "New", "high", 50);
        assert_eq!(
            (r.how, r.context.unwrap().rule.description.as_str()),
            (Match::Exact, "d2")
        );
        let r = resolve(Vec::new(), "x", "high", 1);
        assert_eq!((r.how, r.versions), (Match::Unknown, 0));
        assert!(r.context.is_none() && r.note.is_some());
    }
}
