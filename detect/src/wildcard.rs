//! Rewrites Sigma wildcard values before rsigma compiles them, for two reasons:
//!
//! - **Correctness.** rsigma-eval 0.23 anchors a wildcard value under `|startswith`
//!   at the end and under `|endswith` at the start (the anchors are swapped), so
//!   `CommandLine|startswith: 'curl *http'` matched `xcurl -s http` and missed
//!   `curl -s http://x`. Such a value is rewritten to the modifier-free form, where
//!   rsigma anchors both ends correctly: `curl *http*`.
//! - **Memory.** rsigma compiles every wildcard value into a regex. The common
//!   shapes `*x*`, `x*` and `*x` (with or without modifiers) mean contains,
//!   starts-with and ends-with of plain text, which rsigma matches without one.
//!
//! Sigma's meaning is kept exactly: a value is a pattern over the whole field, a
//! string modifier adds a `*` on its open side(s); the rewrite only changes how
//! that pattern is spelt. Items with other modifiers (`re`, `base64`, `windash`,
//! `cidr`, comparisons, ...) and keyword lists are left as they are.

use rsigma_parser::value::{SigmaString, SigmaValue, SpecialChar, StringPart};
use rsigma_parser::{Detection, DetectionItem, Modifier, SigmaRule};

/// What the rewrite did to one rule (or a whole pack, summed).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct WildcardStats {
    /// Wildcard values now matched as plain contains / starts-with / ends-with.
    pub plain: usize,
    /// Wildcard values under `|startswith` or `|endswith` respelt so rsigma anchors them right.
    pub reanchored: usize,
}

/// How one value is matched once its modifier is folded into it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Form {
    /// No wildcard and no string modifier: the whole field.
    Exact(String),
    Contains(String),
    StartsWith(String),
    EndsWith(String),
    /// A wildcard pattern over the whole field (the modifier-free spelling).
    Pattern(Vec<StringPart>),
}

impl Form {
    fn modifier(&self) -> Option<Modifier> {
        match self {
            Form::Exact(_) | Form::Pattern(_) => None,
            Form::Contains(_) => Some(Modifier::Contains),
            Form::StartsWith(_) => Some(Modifier::StartsWith),
            Form::EndsWith(_) => Some(Modifier::EndsWith),
        }
    }

    fn same_kind(&self, other: &Form) -> bool {
        std::mem::discriminant(self) == std::mem::discriminant(other)
    }

    /// The pattern this form stands for, over the whole field.
    fn into_pattern(self) -> Vec<StringPart> {
        let star = || StringPart::Special(SpecialChar::WildcardMulti);
        match self {
            Form::Exact(s) => vec![StringPart::Plain(s)],
            Form::Contains(s) => vec![star(), StringPart::Plain(s), star()],
            Form::StartsWith(s) => vec![StringPart::Plain(s), star()],
            Form::EndsWith(s) => vec![star(), StringPart::Plain(s)],
            Form::Pattern(p) => p,
        }
    }

    fn into_value(self) -> SigmaValue {
        let parts = match self {
            Form::Exact(s) | Form::Contains(s) | Form::StartsWith(s) | Form::EndsWith(s) => {
                vec![StringPart::Plain(s)]
            }
            Form::Pattern(p) => p,
        };
        SigmaValue::String(SigmaString {
            original: spell(&parts),
            parts,
        })
    }
}

/// Rewrites every eligible detection item of `rule` in place.
pub fn normalise(rule: &mut SigmaRule) -> WildcardStats {
    let mut stats = WildcardStats::default();
    for detection in rule.detection.named.values_mut() {
        walk(detection, &mut stats);
    }
    stats
}

fn walk(detection: &mut Detection, stats: &mut WildcardStats) {
    match detection {
        Detection::AllOf(items) => items.iter_mut().for_each(|i| rewrite_item(i, stats)),
        Detection::AnyOf(subs) | Detection::And(subs) => subs.iter_mut().for_each(|d| walk(d, stats)),
        Detection::ArrayMatch { body, .. } => walk(body, stats),
        Detection::Conditional { named, .. } => named.values_mut().for_each(|d| walk(d, stats)),
        Detection::Keywords(_) => {}
    }
}

fn rewrite_item(item: &mut DetectionItem, stats: &mut WildcardStats) {
    let string_mods: Vec<&Modifier> = item
        .field
        .modifiers
        .iter()
        .filter(|m| matches!(m, Modifier::Contains | Modifier::StartsWith | Modifier::EndsWith))
        .collect();
    let only_simple = item.field.modifiers.iter().all(|m| {
        matches!(
            m,
            Modifier::Contains | Modifier::StartsWith | Modifier::EndsWith | Modifier::All | Modifier::Cased
        )
    });
    if !only_simple || string_mods.len() > 1 || item.field.name.is_none() {
        return;
    }
    let modifier = string_mods.first().map(|m| **m);
    let has_wildcard = |v: &SigmaValue| matches!(v, SigmaValue::String(s) if !s.is_plain());
    if !item.values.iter().any(has_wildcard) || !item.values.iter().all(|v| matches!(v, SigmaValue::String(_))) {
        return;
    }
    let forms: Vec<Form> = item
        .values
        .iter()
        .filter_map(|v| match v {
            SigmaValue::String(s) => Some(form(&s.parts, modifier.as_ref())),
            _ => None,
        })
        .collect();
    let wildcards = item.values.iter().filter(|v| has_wildcard(v)).count();
    let uniform = forms.windows(2).all(|w| w[0].same_kind(&w[1]));
    let swapped_anchors = matches!(modifier, Some(Modifier::StartsWith | Modifier::EndsWith));
    let (forms, new_modifier) = if uniform {
        let m = forms.first().and_then(Form::modifier);
        if !matches!(forms.first(), Some(Form::Pattern(_))) {
            stats.plain += wildcards;
        } else if swapped_anchors {
            stats.reanchored += wildcards;
        }
        (forms, m)
    } else if swapped_anchors {
        // Mixed shapes under a modifier rsigma anchors wrongly: every value spelt as
        // a whole-field pattern (values are matched one by one, so `|all` still holds).
        stats.reanchored += wildcards;
        let patterns = forms.into_iter().map(|f| Form::Pattern(f.into_pattern())).collect();
        (patterns, None)
    } else {
        // Mixed shapes under no modifier or `|contains`: rsigma is right; keep them.
        return;
    };
    item.field
        .modifiers
        .retain(|m| !matches!(m, Modifier::Contains | Modifier::StartsWith | Modifier::EndsWith));
    if let Some(m) = new_modifier {
        item.field.modifiers.insert(0, m);
    }
    item.values = forms.into_iter().map(Form::into_value).collect();
}

/// The form of one value's parts under the item's string modifier.
fn form(parts: &[StringPart], modifier: Option<&Modifier>) -> Form {
    let is_star = |p: &StringPart| matches!(p, StringPart::Special(SpecialChar::WildcardMulti));
    let open_start = matches!(modifier, Some(Modifier::Contains | Modifier::EndsWith));
    let open_end = matches!(modifier, Some(Modifier::Contains | Modifier::StartsWith));
    let lead = parts.iter().take_while(|p| is_star(p)).count();
    let trail = parts[lead..].iter().rev().take_while(|p| is_star(p)).count();
    let middle = &parts[lead..parts.len() - trail];
    let starts_open = open_start || lead > 0;
    let ends_open = open_end || trail > 0;
    let plain: Option<String> = middle
        .iter()
        .map(|p| match p {
            StringPart::Plain(s) => Some(s.as_str()),
            StringPart::Special(_) => None,
        })
        .collect();
    match plain {
        Some(text) if !text.is_empty() => match (starts_open, ends_open) {
            (true, true) => Form::Contains(text),
            (true, false) => Form::EndsWith(text),
            (false, true) => Form::StartsWith(text),
            (false, false) => Form::Exact(text),
        },
        // `*` alone, or wildcards inside: a pattern with the modifier's stars added.
        _ => {
            let star = || StringPart::Special(SpecialChar::WildcardMulti);
            let mut p = Vec::with_capacity(middle.len() + 2);
            if starts_open {
                p.push(star());
            }
            p.extend_from_slice(middle);
            if ends_open {
                p.push(star());
            }
            Form::Pattern(p)
        }
    }
}

/// Sigma's spelling of parts: wildcards bare, literal `*`, `?` and `\` escaped.
fn spell(parts: &[StringPart]) -> String {
    let mut s = String::new();
    for p in parts {
        match p {
            StringPart::Plain(t) => {
                for c in t.chars() {
                    if matches!(c, '*' | '?' | '\\') {
                        s.push('\\');
                    }
                    s.push(c);
                }
            }
            StringPart::Special(SpecialChar::WildcardMulti) => s.push('*'),
            StringPart::Special(SpecialChar::WildcardSingle) => s.push('?'),
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(s: &str) -> Vec<StringPart> {
        SigmaString::new(s).parts
    }

    fn f(s: &str, m: Option<Modifier>) -> Form {
        form(&parts(s), m.as_ref())
    }

    #[test]
    fn simple_shapes_become_plain_matchers() {
        assert_eq!(f("*curl*", None), Form::Contains("curl".into()));
        assert_eq!(f("/tmp/*", None), Form::StartsWith("/tmp/".into()));
        assert_eq!(f("*/bash", None), Form::EndsWith("/bash".into()));
        assert_eq!(f("**x**", None), Form::Contains("x".into()));
        assert_eq!(f("x*", Some(Modifier::EndsWith)), Form::Contains("x".into()));
        assert_eq!(f("*x", Some(Modifier::StartsWith)), Form::Contains("x".into()));
        assert_eq!(f("x*", Some(Modifier::StartsWith)), Form::StartsWith("x".into()));
    }

    #[test]
    fn inner_wildcards_become_whole_field_patterns_with_the_modifier_stars() {
        assert_eq!(
            f("curl *http", Some(Modifier::StartsWith)),
            Form::Pattern(parts("curl *http*"))
        );
        assert_eq!(f("a?b", Some(Modifier::EndsWith)), Form::Pattern(parts("*a?b")));
        assert_eq!(f("a*b", None), Form::Pattern(parts("a*b")));
        assert_eq!(f("*", None), Form::Pattern(parts("*")));
    }

    #[test]
    fn escaped_wildcards_stay_literal_in_the_spelling() {
        let p = vec![
            StringPart::Plain("a*b\\c".into()),
            StringPart::Special(SpecialChar::WildcardMulti),
        ];
        assert_eq!(spell(&p), "a\\*b\\\\c*");
        assert_eq!(SigmaString::new(&spell(&p)).parts, p);
    }
}
