//! Hunting queries: what an analyst may ask of the stored alerts, sign-ins and
//! mail events, parsed from text into typed filters. The grammar is small on
//! purpose: conditions `field op value` joined by `and`, where `field` is one of
//! the source's fields below (a closed list), `op` one of `= != ~ !~ >= > <= <`
//! (`~` is "contains", case-insensitive; the ordered ones only on severity and
//! counts) and `value` a bare word or a double-quoted string (`\"` and `\\`
//! inside). Nothing of the text ever becomes SQL: the store turns each [`Filter`]
//! into a fragment of its own, with the value bound as a parameter.
//!
//! Pure: no IO, no clock. Every limit is checked here, before the store is asked.

use serde::Serialize;
use thiserror::Error;
use ward_protocol::Severity;

/// The longest query text, in bytes.
pub const MAX_QUERY_BYTES: usize = 1024;
/// The most conditions in one query.
pub const MAX_CONDITIONS: usize = 16;
/// The longest value of one condition, in bytes.
pub const MAX_VALUE_BYTES: usize = 256;
/// The most rows of one page of results (the console and `ward hunt` tables).
pub const MAX_PAGE_ROWS: u32 = 500;
/// The rows of a page when the caller names none.
pub const DEFAULT_PAGE_ROWS: u32 = 100;
/// The most rows of one CSV export.
pub const MAX_EXPORT_ROWS: u32 = 10_000;
/// Matching rows are counted up to this many; past it the total says "at least".
pub const MAX_COUNTED: u32 = 10_000;
/// How long one hunt may run in the store (the count and the page together)
/// before it is stopped and refused.
pub const TIME_LIMIT_MS: u64 = 5_000;

/// What a hunt searches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HuntSource {
    /// Stored alerts, of agents, the collector and the feeds.
    Alerts,
    /// Sign-in records of the identity feed.
    SignIns,
    /// Mail records of the mailbox feed (messages, attachments, URLs, clicks, post-delivery events).
    Mail,
    /// Directory and audit events of the feeds (Entra audit logs and risky users, Okta
    /// admin events, M365 mailbox operations, Defender cloud-app and directory events).
    Directory,
}

impl HuntSource {
    pub const ALL: [HuntSource; 4] = [
        HuntSource::Alerts,
        HuntSource::SignIns,
        HuntSource::Mail,
        HuntSource::Directory,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            HuntSource::Alerts => "alerts",
            HuntSource::SignIns => "sign_ins",
            HuntSource::Mail => "mail",
            HuntSource::Directory => "directory",
        }
    }

    pub fn parse(s: &str) -> Option<HuntSource> {
        HuntSource::ALL.into_iter().find(|h| h.as_str() == s)
    }

    /// The fields a query of this source may name.
    pub fn fields(self) -> &'static [FieldDef] {
        match self {
            HuntSource::Alerts => ALERT_FIELDS,
            HuntSource::SignIns => SIGN_IN_FIELDS,
            HuntSource::Mail => MAIL_FIELDS,
            HuntSource::Directory => DIRECTORY_FIELDS,
        }
    }

    /// The columns of a result row, in order (the store returns them so).
    pub fn columns(self) -> &'static [&'static str] {
        match self {
            HuntSource::Alerts => &[
                "time",
                "id",
                "host",
                "severity",
                "rule",
                "rule_id",
                "source",
                "count",
                "techniques",
                "entities",
            ],
            HuntSource::SignIns => &[
                "time",
                "user",
                "ip",
                "location",
                "app",
                "client",
                "outcome",
                "result",
                "risk_level",
                "mfa",
                "device",
                "provider",
            ],
            HuntSource::Mail => &[
                "time",
                "kind",
                "sender",
                "recipient",
                "subject",
                "threat_types",
                "delivery_action",
                "delivery_location",
                "file_name",
                "sha256",
                "url",
                "action",
                "ip",
                "network_message_id",
            ],
            HuntSource::Directory => &[
                "time",
                "kind",
                "operation",
                "actor",
                "target_user",
                "app_name",
                "app_id",
                "mailbox",
                "ip",
                "detail",
                "items",
                "provider",
            ],
        }
    }
}

/// How a field compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldKind {
    /// Text: equality (ASCII case-insensitive) and contains.
    Text,
    /// A whole number: every operator but contains.
    Number,
    /// An alert's severity, by name; ordered by level.
    Severity,
    /// One of the alert's entities of this kind (as stored for lookups: user,
    /// host and domain names in lower case, a file by its SHA-256 when hashed).
    Entity(&'static str),
    /// A JSON list of text (ATT&CK ids): equality with an element, or contains.
    List,
}

/// One field a query may name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FieldDef {
    pub name: &'static str,
    pub kind: FieldKind,
    /// What it holds, for the docs and error messages.
    pub about: &'static str,
}

const fn f(name: &'static str, kind: FieldKind, about: &'static str) -> FieldDef {
    FieldDef { name, kind, about }
}

use FieldKind::{Entity, List, Number, Text};

const ALERT_FIELDS: &[FieldDef] = &[
    f("id", Text, "the alert's id"),
    f("host", Text, "the device's hostname (agent alerts)"),
    f("device", Text, "the device's id"),
    f(
        "severity",
        FieldKind::Severity,
        "informational, low, medium, high or critical",
    ),
    f("rule", Text, "the rule's title"),
    f("rule_id", Text, "the rule's id"),
    f("author", Text, "the rule's author"),
    f("source", Text, "agent, collector, identity or mailbox"),
    f("count", Number, "how many detections were folded into the alert"),
    f("technique", List, "an ATT&CK technique id (T1059.004)"),
    f("tactic", List, "an ATT&CK tactic id (TA0002)"),
    f("user", Entity("user"), "a user entity"),
    f("ip", Entity("ip"), "an IP address entity"),
    f("domain", Entity("domain"), "a domain entity"),
    f("mailbox", Entity("mailbox"), "a mailbox entity"),
    f("url", Entity("url"), "a URL entity"),
    f(
        "file",
        Entity("file"),
        "a file entity: its SHA-256, or its path when not hashed",
    ),
    f(
        "entities",
        Text,
        "the alert's entities as JSON (paths, command lines, ...)",
    ),
    f("matched", Text, "the fields the rule matched, as JSON"),
];

const SIGN_IN_FIELDS: &[FieldDef] = &[
    f("user", Text, "who signed in"),
    f("ip", Text, "from which address"),
    f("location", Text, "where (as the provider says)"),
    f("app", Text, "to which application"),
    f("client", Text, "with which client"),
    f("outcome", Text, "success, failure or interrupted"),
    f("result", Text, "the provider's result code"),
    f("result_detail", Text, "the provider's reason"),
    f("risk_level", Text, "the provider's risk level"),
    f("risk_state", Text, "the provider's risk state"),
    f("conditional_access", Text, "conditional access result"),
    f("mfa", Text, "the second factor used"),
    f("device", Text, "the device signed in from"),
    f("provider", Text, "entra or okta"),
];

const MAIL_FIELDS: &[FieldDef] = &[
    f("kind", Text, "email, attachment, url, click or post_delivery"),
    f("sender", Text, "the sender's address"),
    f("recipient", Text, "the recipient's address"),
    f("subject", Text, "the subject"),
    f("threat_types", Text, "the verdicts (Phish, Malware, ...)"),
    f("detection_methods", Text, "how the threat was found"),
    f("delivery_action", Text, "delivered, blocked, ..."),
    f("delivery_location", Text, "inbox, junk, quarantine, ..."),
    f("file_name", Text, "an attachment's name"),
    f("sha256", Text, "an attachment's SHA-256"),
    f("url", Text, "a URL in the message or clicked"),
    f("action", Text, "a click's or post-delivery event's action"),
    f("ip", Text, "a click's or sender's address"),
    f("network_message_id", Text, "the message's id"),
];

const DIRECTORY_FIELDS: &[FieldDef] = &[
    f(
        "kind",
        Text,
        "app_credential, consent, permission_grant, role_assigned, risky_user, mfa_factor_removed, policy_changed, mail_access, mail_send, mail_delete, mailbox_permission or other",
    ),
    f("operation", Text, "the operation as the source names it"),
    f("actor", Text, "who did it"),
    f("target_user", Text, "the user acted on"),
    f("app_name", Text, "the application acted on or acting"),
    f("app_id", Text, "its app id"),
    f("mailbox", Text, "the mailbox acted on"),
    f("ip", Text, "the actor's address"),
    f("detail", Text, "the role, permissions, factor, folders or risk"),
    f("items", Number, "mail items the event covers"),
    f(
        "provider",
        Text,
        "entra, okta, m365, defender-cloudapps or defender-identity",
    ),
];

/// A comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Eq,
    Ne,
    Contains,
    NotContains,
    Ge,
    Gt,
    Le,
    Lt,
}

impl Op {
    /// Spellings, the two-character ones first so they are matched first.
    const SPELLINGS: [(&'static str, Op); 8] = [
        ("!=", Op::Ne),
        ("!~", Op::NotContains),
        (">=", Op::Ge),
        ("<=", Op::Le),
        ("=", Op::Eq),
        ("~", Op::Contains),
        (">", Op::Gt),
        ("<", Op::Lt),
    ];

    pub fn as_str(self) -> &'static str {
        Op::SPELLINGS.iter().find(|(_, o)| *o == self).map_or("?", |(s, _)| s)
    }

    fn ordered(self) -> bool {
        matches!(self, Op::Ge | Op::Gt | Op::Le | Op::Lt)
    }

    fn contains(self) -> bool {
        matches!(self, Op::Contains | Op::NotContains)
    }
}

/// A condition's value, typed by its field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FilterValue {
    Text(String),
    /// A number, or a severity's level.
    Number(i64),
}

/// One typed condition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    pub field: FieldDef,
    pub op: Op,
    pub value: FilterValue,
}

/// Where the next page starts: after the row at this time and rowid (rows come
/// newest first).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HuntCursor {
    pub time_ms: i64,
    pub rowid: i64,
}

impl HuntCursor {
    /// `"<time_ms>.<rowid>"`, as results hand it out.
    pub fn parse(s: &str) -> Option<HuntCursor> {
        let (t, r) = s.split_once('.')?;
        Some(HuntCursor {
            time_ms: t.parse().ok()?,
            rowid: r.parse().ok()?,
        })
    }
}

impl std::fmt::Display for HuntCursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.time_ms, self.rowid)
    }
}

/// A whole hunt, checked: what the store runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HuntQuery {
    pub source: HuntSource,
    pub filters: Vec<Filter>,
    /// Rows at or after this time (ms since the epoch).
    pub since_ms: Option<i64>,
    /// Rows before this time.
    pub until_ms: Option<i64>,
    pub cursor: Option<HuntCursor>,
    /// At most [`MAX_EXPORT_ROWS`].
    pub limit: u32,
}

/// One page of results: cells in [`HuntSource::columns`] order.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HuntPage {
    pub columns: &'static [&'static str],
    pub rows: Vec<Vec<serde_json::Value>>,
    /// Matching rows in the whole range, counted up to [`MAX_COUNTED`].
    pub total: u64,
    /// True when there are more than `total`.
    pub total_capped: bool,
    pub next_cursor: Option<String>,
}

/// Why a query was refused; each says what to change.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum HuntError {
    #[error("the query is {0} bytes; at most {MAX_QUERY_BYTES} are accepted")]
    TooLong(usize),
    #[error("the query has more than {MAX_CONDITIONS} conditions")]
    TooManyConditions,
    #[error("a value is longer than {MAX_VALUE_BYTES} bytes")]
    ValueTooLong,
    #[error("the query contains control characters")]
    ControlCharacters,
    #[error("expected a field name at position {0}")]
    ExpectedField(usize),
    #[error("unknown field {field:?} for {searched}; known: {known}")]
    UnknownField {
        field: String,
        searched: &'static str,
        known: String,
    },
    #[error("expected an operator (=, !=, ~, !~, >=, >, <=, <) after {0:?}")]
    ExpectedOp(String),
    #[error("expected a value after {field} {op}")]
    ExpectedValue { field: String, op: &'static str },
    #[error("a quoted value is not closed")]
    UnclosedQuote,
    #[error("expected \"and\" at position {0} (conditions are joined by and)")]
    ExpectedAnd(usize),
    #[error("{field} cannot be compared with {op}")]
    BadOp { field: &'static str, op: &'static str },
    #[error("{field} takes {expected}, not {value:?}")]
    BadValue {
        field: &'static str,
        expected: &'static str,
        value: String,
    },
}

/// Parses `text` into the conditions of a query of `source`.
pub fn parse(source: HuntSource, text: &str) -> Result<Vec<Filter>, HuntError> {
    if text.len() > MAX_QUERY_BYTES {
        return Err(HuntError::TooLong(text.len()));
    }
    if text.chars().any(|c| c.is_control() && !matches!(c, '\n' | '\t' | '\r')) {
        return Err(HuntError::ControlCharacters);
    }
    let mut p = Parser { s: text, at: 0 };
    let mut filters = Vec::new();
    p.skip_ws();
    if p.done() {
        return Ok(filters);
    }
    loop {
        if filters.len() == MAX_CONDITIONS {
            return Err(HuntError::TooManyConditions);
        }
        filters.push(p.condition(source)?);
        p.skip_ws();
        if p.done() {
            return Ok(filters);
        }
        let at = p.at;
        let word = p.word();
        if !word.eq_ignore_ascii_case("and") || !(p.done() || p.rest().starts_with(char::is_whitespace)) {
            return Err(HuntError::ExpectedAnd(at));
        }
        p.skip_ws();
    }
}

/// The query text of `filters`, one canonical spelling (values quoted when needed).
pub fn render(filters: &[Filter]) -> String {
    filters
        .iter()
        .map(|f| {
            let value = match &f.value {
                FilterValue::Number(n) if f.field.kind == FieldKind::Severity => {
                    Severity::ALL.get(*n as usize).map_or("?", Severity::as_str).to_string()
                }
                FilterValue::Number(n) => n.to_string(),
                FilterValue::Text(t) => quote(t),
            };
            format!("{} {} {}", f.field.name, f.op.as_str(), value)
        })
        .collect::<Vec<_>>()
        .join(" and ")
}

fn quote(t: &str) -> String {
    let bare = !t.is_empty() && !t.chars().any(|c| c.is_whitespace() || c == '"' || c == '\\');
    if bare {
        t.to_string()
    } else {
        format!("\"{}\"", t.replace('\\', "\\\\").replace('"', "\\\""))
    }
}

struct Parser<'a> {
    s: &'a str,
    at: usize,
}

impl<'a> Parser<'a> {
    fn rest(&self) -> &'a str {
        &self.s[self.at..]
    }
    fn done(&self) -> bool {
        self.at >= self.s.len()
    }
    fn skip_ws(&mut self) {
        let rest = self.rest();
        self.at += rest.len() - rest.trim_start().len();
    }
    /// A run of letters, digits and underscores.
    fn word(&mut self) -> &'a str {
        let rest = self.rest();
        let n = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        self.at += n;
        &rest[..n]
    }

    fn condition(&mut self, source: HuntSource) -> Result<Filter, HuntError> {
        let at = self.at;
        let name = self.word();
        if name.is_empty() {
            return Err(HuntError::ExpectedField(at));
        }
        let field = source
            .fields()
            .iter()
            .find(|d| d.name.eq_ignore_ascii_case(name))
            .copied()
            .ok_or_else(|| HuntError::UnknownField {
                field: name.to_string(),
                searched: source.as_str(),
                known: source.fields().iter().map(|d| d.name).collect::<Vec<_>>().join(", "),
            })?;
        self.skip_ws();
        let rest = self.rest();
        let (spelling, op) = Op::SPELLINGS
            .iter()
            .find(|(s, _)| rest.starts_with(s))
            .copied()
            .ok_or_else(|| HuntError::ExpectedOp(name.to_string()))?;
        self.at += spelling.len();
        self.skip_ws();
        let raw = self.value().map_err(|e| match e {
            None => HuntError::ExpectedValue {
                field: name.to_string(),
                op: spelling,
            },
            Some(e) => e,
        })?;
        typed(field, op, raw)
    }

    /// A quoted or bare value; `Err(None)` when there is none.
    fn value(&mut self) -> Result<String, Option<HuntError>> {
        let rest = self.rest();
        if let Some(quoted) = rest.strip_prefix('"') {
            let mut out = String::new();
            let mut chars = quoted.char_indices();
            while let Some((i, c)) = chars.next() {
                match c {
                    '"' => {
                        self.at += 1 + i + 1;
                        return Ok(out);
                    }
                    '\\' => match chars.next() {
                        Some((_, e)) => out.push(e),
                        None => break,
                    },
                    c => out.push(c),
                }
                if out.len() > MAX_VALUE_BYTES {
                    return Err(Some(HuntError::ValueTooLong));
                }
            }
            return Err(Some(HuntError::UnclosedQuote));
        }
        let n = rest.find(char::is_whitespace).unwrap_or(rest.len());
        if n == 0 {
            return Err(None);
        }
        self.at += n;
        Ok(rest[..n].to_string())
    }
}

fn typed(field: FieldDef, op: Op, raw: String) -> Result<Filter, HuntError> {
    if raw.len() > MAX_VALUE_BYTES {
        return Err(HuntError::ValueTooLong);
    }
    let bad_op = || HuntError::BadOp {
        field: field.name,
        op: op.as_str(),
    };
    let value = match field.kind {
        FieldKind::Number => {
            if op.contains() {
                return Err(bad_op());
            }
            let n = raw.parse::<i64>().map_err(|_| HuntError::BadValue {
                field: field.name,
                expected: "a whole number",
                value: raw.clone(),
            })?;
            FilterValue::Number(n)
        }
        FieldKind::Severity => {
            if op.contains() {
                return Err(bad_op());
            }
            let s = Severity::parse(&raw).ok_or_else(|| HuntError::BadValue {
                field: field.name,
                expected: "informational, low, medium, high or critical",
                value: raw.clone(),
            })?;
            FilterValue::Number(s as i64)
        }
        FieldKind::Text | FieldKind::Entity(_) | FieldKind::List => {
            if op.ordered() {
                return Err(bad_op());
            }
            FilterValue::Text(raw)
        }
    };
    Ok(Filter { field, op, value })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// Parses and renders back: the canonical text, or the error's message.
    fn check(source: HuntSource, text: &str, expected: &str) {
        let got = match parse(source, text) {
            Ok(f) => render(&f),
            Err(e) => format!("error: {e}"),
        };
        assert_eq!(got, expected, "{text:?}");
    }

    #[test]
    fn conditions_are_parsed_into_typed_filters() {
        use HuntSource::*;
        check(Alerts, "", "");
        check(Alerts, "   ", "");
        check(Alerts, "user = root", "user = root");
        check(Alerts, "USER=root AND rule~ssh", "user = root and rule ~ ssh");
        check(Alerts, "severity >= High", "severity >= high");
        check(Alerts, "count > 3", "count > 3");
        check(Alerts, r#"rule ~ "new ssh key""#, r#"rule ~ "new ssh key""#);
        check(Alerts, r#"entities ~ "a \"b\" \\c""#, r#"entities ~ "a \"b\" \\c""#);
        check(
            SignIns,
            "ip != 10.0.0.1 and outcome = failure",
            "ip != 10.0.0.1 and outcome = failure",
        );
        check(Mail, "url !~ https://x.example/?a=b", "url !~ https://x.example/?a=b");
    }

    #[test]
    fn bad_queries_say_what_to_change() {
        use HuntSource::*;
        check(
            Alerts,
            "nope = 1",
            &format!(
                "error: unknown field \"nope\" for alerts; known: {}",
                ALERT_FIELDS.iter().map(|d| d.name).collect::<Vec<_>>().join(", ")
            ),
        );
        check(
            Mail,
            "severity = high",
            "error: unknown field \"severity\" for mail; known: kind, sender, recipient, subject, threat_types, detection_methods, delivery_action, delivery_location, file_name, sha256, url, action, ip, network_message_id",
        );
        check(
            Alerts,
            "user root",
            "error: expected an operator (=, !=, ~, !~, >=, >, <=, <) after \"user\"",
        );
        check(Alerts, "user =", "error: expected a value after user =");
        check(Alerts, "user = \"root", "error: a quoted value is not closed");
        check(
            Alerts,
            "user = a b = c",
            "error: expected \"and\" at position 9 (conditions are joined by and)",
        );
        check(
            Alerts,
            "user = a or b = c",
            "error: expected \"and\" at position 9 (conditions are joined by and)",
        );
        check(Alerts, "user = a and", "error: expected a field name at position 12");
        check(Alerts, "= a", "error: expected a field name at position 0");
        check(Alerts, "user >= a", "error: user cannot be compared with >=");
        check(Alerts, "severity ~ hi", "error: severity cannot be compared with ~");
        check(
            Alerts,
            "severity = huge",
            "error: severity takes informational, low, medium, high or critical, not \"huge\"",
        );
        check(
            Alerts,
            "count = many",
            "error: count takes a whole number, not \"many\"",
        );
        check(Alerts, "user = a\u{0}b", "error: the query contains control characters");
    }

    #[test]
    fn sql_in_a_query_is_only_ever_a_value() {
        // What an injection attempt becomes: a field name it cannot be, or a value.
        check(HuntSource::Alerts, "user = \"x' OR 1=1 --\"", "user = \"x' OR 1=1 --\"");
        check(
            HuntSource::Alerts,
            "user = x';DROP/**/TABLE/**/alerts;--",
            "user = x';DROP/**/TABLE/**/alerts;--",
        );
        // Unquoted, a space ends the value: the rest is not "and ...".
        assert_eq!(
            parse(HuntSource::Alerts, "user = x'; DROP TABLE alerts"),
            Err(HuntError::ExpectedAnd(11))
        );
        assert!(matches!(
            parse(HuntSource::Alerts, "rowid = 1"),
            Err(HuntError::UnknownField { .. })
        ));
        assert!(matches!(
            parse(HuntSource::Alerts, "user/**/= 1"),
            Err(HuntError::ExpectedOp(_))
        ));
    }

    #[test]
    fn limits_are_checked_before_anything_else() {
        let long = format!("rule ~ \"{}\"", "a".repeat(MAX_QUERY_BYTES));
        assert_eq!(parse(HuntSource::Alerts, &long), Err(HuntError::TooLong(long.len())));
        let value = format!("rule ~ {}", "a".repeat(MAX_VALUE_BYTES + 1));
        assert_eq!(parse(HuntSource::Alerts, &value), Err(HuntError::ValueTooLong));
        let quoted = format!("rule ~ \"{}\"", "a".repeat(MAX_VALUE_BYTES + 1));
        assert_eq!(parse(HuntSource::Alerts, &quoted), Err(HuntError::ValueTooLong));
        let many = vec!["user = a"; MAX_CONDITIONS + 1].join(" and ");
        assert_eq!(parse(HuntSource::Alerts, &many), Err(HuntError::TooManyConditions));
        let enough = vec!["user = a"; MAX_CONDITIONS].join(" and ");
        assert_eq!(parse(HuntSource::Alerts, &enough).unwrap().len(), MAX_CONDITIONS);
    }

    #[test]
    fn cursors_round_trip_and_junk_is_refused() {
        let c = HuntCursor {
            time_ms: 1_700_000_000_000,
            rowid: 42,
        };
        assert_eq!(HuntCursor::parse(&c.to_string()), Some(c));
        for junk in ["", "1", "a.b", "1.2.3", ".1"] {
            assert_eq!(HuntCursor::parse(junk), None, "{junk}");
        }
    }
}
