//! Identity (sign-in) and mailbox (email) feeds: files as the field exports them,
//! recognised by their shape, normalized, stored once, and judged by detections
//! that look back over the stored history.
//!
//! Shapes (`detect`): a JSON array, an object with `records[]` (Entra diagnostic
//! settings, Defender streaming API) or `value[]`, one JSON object, NDJSON, or CSV
//! with a header row (cells holding JSON are read as JSON). The elements of a JSON
//! document are read one at a time (`stream`), each alone, so a bad one is skipped
//! with its line like a bad NDJSON line.
//! - identity: Entra ID `SigninLogs` rows (Log Analytics JSON / CSV export), Entra
//!   diagnostic records (`category` *SignInLogs with `properties`), Okta System Log events.
//! - mailbox: Defender `EmailEvents`, `EmailAttachmentInfo`, `EmailUrlInfo`,
//!   `UrlClickEvents`, `EmailPostDeliveryEvents` rows or streaming records
//!   (`category` `AdvancedHunting-EmailEvents` ... with `properties`); Proofpoint TAP
//!   SIEM API message and click events, one at a time or as the API's batch
//!   (`messagesDelivered`, `messagesBlocked`, `clicksPermitted`, `clicksBlocked`);
//!   Exchange inbox-rule and mailbox-forwarding changes from the Microsoft 365 audit
//!   log (Sentinel `OfficeActivity` rows or Management Activity API records).
//! - directory and audit events, in either feed (`audit`): Entra ID audit logs and
//!   risky users, Okta admin events (MFA factors, admin grants, policies), Microsoft 365
//!   mailbox operations, Defender `CloudAppEvents` and `IdentityDirectoryEvents`. They
//!   are stored in `audit_events` after the file's sign-ins or mail, and judged by
//!   `alerts_audit` (a successful sign-in is also judged against stored MFA removals).
//! - endpoint: other sensors' logs (EVTX files, Sysmon for Linux syslog lines,
//!   evtx-JSON, Winlogbeat and Sentinel rows), read by `endpoint`, judged by SigmaHQ's
//!   rules for their logsource in `endpoint_detect` (alerts with source `endpoint`, the
//!   host as a `Device{hostname}` entity, no device id: the host runs no agent).
//!
//! Alerts are stored with source `identity` or `mailbox`, no device, author "Ward",
//! and an id derived from the records that raised them (a re-import raises nothing twice).
//! Rule ids (MITRE technique / tactic):
//! - `ward-identity-risky-sign-in` (T1078 / TA0001): risk level during sign-in medium or high, risk not dismissed or remediated.
//! - `ward-identity-password-spray` (T1110.003 / TA0006): many users failing from one IP within a window.
//! - `ward-identity-brute-force` (T1110.001 / TA0006): many failures for one user within a window.
//! - `ward-identity-impossible-travel` (T1078 / TA0001): two successful sign-ins further apart than a plane flies.
//! - `ward-identity-mfa-fatigue` (T1621 / TA0006): repeated MFA denials for one user within a window.
//! - `ward-mailbox-malicious-delivered` (T1566.001 attachment, T1566.002 link, else T1566 / TA0001): phish or
//!   malware delivered, naming the message's stored attachments and URLs. Stored alerts never change (the
//!   correlator has placed them), so rows of a message that arrive in a later import raise a further alert
//!   of this rule, its id from the new rows: attachment / URL rows of a copy already alerted on give a
//!   follow-up (`follow_up_of` the first alert; the same recipient and sender entities, so the same
//!   incident); an attachment or URL judged malicious itself on a copy whose verdict is clean alerts when
//!   that copy was delivered, or (medium, `delivery` unknown) when its email row is not stored yet. A part
//!   is new in one import only, so no two of these alerts name it, and a part of a message alerted as
//!   malicious (before or in the same import) raises no alert of its own. For a message judged malicious either order of its
//!   rows names the same entities; the order decides whether as one alert or two (the first of two, raised
//!   before the parts were known, says T1566). A part alerted before its email row lacks what only that
//!   row tells (the sender IP; the recipient, for a URL row).
//! - `ward-mailbox-malicious-url-click` (T1204.001 / TA0002): a click on a URL judged malicious (by the click or its message).
//! - `ward-mailbox-user-reported-phish` (T1566 / TA0001): a user reported a message.
//! - `ward-mailbox-hiding-inbox-rule` (T1564.008 / TA0005): an inbox rule that deletes
//!   mail or moves it out of its owner's sight.
//! - `ward-mailbox-external-forwarding` (T1114.003 / TA0009): an inbox rule or mailbox
//!   setting that forwards or redirects mail outside the organisation.
//! - `ward-identity-app-credential-then-mail-access` (T1098.001 + T1114.002 / TA0003 +
//!   TA0009): a credential added to an application, then mailbox access by it.
//! - `ward-identity-risky-consent` (T1528 / TA0006): consent or a grant to an unverified
//!   app or for permissions reaching mail, files or the directory.
//! - `ward-identity-privileged-role-added` (T1098.003 / TA0003): an admin role or privilege given.
//! - `ward-identity-mfa-removed-then-sign-in` (T1556.006 / TA0005): an MFA factor
//!   removed, then a sign-in of its user.
//! - `ward-identity-risky-user` (T1078 / TA0001): a user at medium or high risk.
//! - `ward-mailbox-bulk-mail-access` (T1114.002 / TA0009): many mail items read by one actor.
//!
//! Import: within `feeds.max_import_bytes` (a file's or a declared Content-Length's
//! size is checked before it is read; a chunked body is refused once it passes it) and
//! `feeds.max_record_bytes` per record, records are handed on one at a time in file
//! order; one that cannot be read is skipped with its line and reason, and records of a
//! known source that are not sign-ins or mail are counted as ignored. The API parses on
//! a blocking thread. On the writer, chunk by chunk ([`Import`]: each chunk one
//! transaction and one writer turn, sized to last about 20 ms, a message's rows never
//! split, agents' batches stored between chunks), records go into `sign_ins` /
//! `mail_events` (then directory events into `audit_events`) under a natural key (Entra id, Okta uuid, message id + recipient +
//! part, the audit record's id + mailbox, else a SHA-256 of the record), and the
//! detections run on the records that were new against everything stored before; the
//! last chunk writes the audit entry. A chunk that fails stores nothing; the chunks
//! before it stay, and the audit entry says where the import stopped. Alert ids are
//! ULID-shaped from the event (or window) time and a hash of rule id and record keys,
//! so a re-import, in any order, raises nothing twice.
//!
//! Entity conventions: `User{name: user principal name lowercased, uid: None}` for
//! the signing-in user and for mail recipients (the recipient address as the user);
//! `Ip` (sign-in client IP, sender IP, clicking IP); `Mailbox{address}` lowercased for
//! recipients and, for delivered mail, the sender; `File{path: attachment file name,
//! sha256}`; `Url`; `Domain` (sender domain, URL host). `matched` holds the key fields
//! as strings (time, ip, location, app, result, risk, message id, subject...).

// Public for the labelled correlation corpus, which builds its feed alerts with these rules.
pub mod alerts;
mod alerts_audit;
mod alerts_identity;
mod alerts_mailbox;
mod audit;
mod detect;
pub mod endpoint;
pub mod endpoint_detect;
mod endpoint_xml;
mod fields;
mod identity;
mod inbox_rules;
mod mailbox;
mod proofpoint;
mod stream;

use serde::Serialize;
use thiserror::Error;
use tracing::{info, warn};

use crate::config::FeedsConfig;
use crate::metrics::Metrics;
pub use crate::model::feed::{AuditEvent, AuditKind, InboxRule, MailKind, MailRecord, SignIn, SignInOutcome};
use crate::store::prelude::*;
use crate::store::{FeedTx, Store, StoreError};

/// Which feed a file belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Feed {
    Identity,
    Mailbox,
    /// Other sensors' logs (Sysmon, Windows event logs) judged by Sigma rules.
    Endpoint,
}

impl Feed {
    pub fn as_str(self) -> &'static str {
        match self {
            Feed::Identity => "identity",
            Feed::Mailbox => "mailbox",
            Feed::Endpoint => "endpoint",
        }
    }
}

/// A record that was not imported, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Skipped {
    /// Line of the file where the record starts, from 1 (also for an element of a
    /// JSON document; for the rest of a broken document, where it breaks).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<u64>,
    /// Position of the record in the file, from 1.
    pub record: u64,
    pub reason: String,
}

/// At most this many skipped records are listed in a report (all are counted).
pub const MAX_SKIPPED_LISTED: usize = 100;

/// What one import did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ImportReport {
    /// The shape recognised, e.g. `entra-signinlogs-csv`, `okta-systemlog-ndjson`.
    pub format: String,
    /// Records found in the file.
    pub records: u64,
    /// Rows stored now (a Proofpoint message stores one per recipient, attachment and URL).
    pub imported: u64,
    /// Rows stored by an earlier import.
    pub duplicates: u64,
    /// Well-formed records of a known source that Ward does not read (an Entra audit
    /// operation it does not judge, a Defender process table).
    pub ignored: u64,
    /// Records that could not be read (all counted; the first ones listed).
    pub skipped_count: u64,
    pub skipped: Vec<Skipped>,
    /// Alerts stored now.
    pub alerts_raised: u64,
}

impl ImportReport {
    fn skip(&mut self, s: Skipped) {
        self.skipped_count += 1;
        if self.skipped.len() < MAX_SKIPPED_LISTED {
            self.skipped.push(s);
        }
    }
}

/// Why a whole file could not be imported.
#[derive(Debug, Error)]
pub enum FeedError {
    #[error("the file is {size} bytes; at most {limit} are accepted")]
    TooLarge { size: usize, limit: usize },
    #[error("nothing could be read: {0}")]
    Unreadable(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Records read from a file, before storage.
#[derive(Debug, Default)]
pub struct Parsed<T> {
    pub report: ImportReport,
    pub items: Vec<T>,
    /// Directory and audit events found in the file (either feed takes them).
    pub audits: Vec<AuditEvent>,
}

/// Reads and normalizes a feed file (no storage). Fails only when nothing in it can be read.
pub fn parse_identity(bytes: &[u8], cfg: &FeedsConfig) -> Result<Parsed<SignIn>, FeedError> {
    parse_with(bytes, cfg, identity::normalize)
}

/// Reads and normalizes a mailbox file (no storage).
pub fn parse_mailbox(bytes: &[u8], cfg: &FeedsConfig) -> Result<Parsed<MailRecord>, FeedError> {
    parse_with(bytes, cfg, mailbox::normalize)
}

/// What a normalizer made of one record.
pub(crate) enum Normalized<T> {
    Record {
        kind: &'static str,
        item: T,
    },
    /// A record that holds several (a Proofpoint message: one per recipient, attachment
    /// and URL; a TAP batch), with the reasons its unreadable parts were left out.
    Many {
        kind: &'static str,
        items: Vec<T>,
        bad: Vec<String>,
    },
    /// A directory or audit event (Entra audit logs, risky users, Okta admin events,
    /// M365 mailbox operations, Defender cloud-app and directory events).
    Audit {
        kind: &'static str,
        item: Box<AuditEvent>,
    },
    /// A record of a known source that is not a sign-in / mail event.
    Ignored {
        kind: &'static str,
    },
    Bad(String),
}

fn parse_with<T>(
    bytes: &[u8],
    cfg: &FeedsConfig,
    normalize: fn(&serde_json::Value) -> Normalized<T>,
) -> Result<Parsed<T>, FeedError> {
    if bytes.len() > cfg.max_import_bytes {
        return Err(FeedError::TooLarge {
            size: bytes.len(),
            limit: cfg.max_import_bytes,
        });
    }
    let mut parsed = Parsed {
        report: ImportReport::default(),
        items: Vec::new(),
        audits: Vec::new(),
    };
    let mut kinds: Vec<&'static str> = Vec::new();
    let r = &mut parsed.report;
    let items = &mut parsed.items;
    let audits = &mut parsed.audits;
    let container = detect::split(bytes, cfg.max_record_bytes, &mut |pos, value| {
        r.records += 1;
        let skipped = |reason| Skipped {
            line: pos.line,
            record: pos.record,
            reason,
        };
        let value = match value {
            Ok(v) => v,
            Err(reason) => return r.skip(skipped(reason)),
        };
        match normalize(&value) {
            Normalized::Record { kind, item } => {
                if !kinds.contains(&kind) {
                    kinds.push(kind);
                }
                items.push(item);
            }
            Normalized::Many { kind, items: many, bad } => {
                if !kinds.contains(&kind) {
                    kinds.push(kind);
                }
                items.extend(many);
                for reason in bad {
                    r.skip(skipped(reason));
                }
            }
            Normalized::Audit { kind, item } => {
                if !kinds.contains(&kind) {
                    kinds.push(kind);
                }
                audits.push(*item);
            }
            Normalized::Ignored { kind } => {
                if !kinds.contains(&kind) {
                    kinds.push(kind);
                }
                r.ignored += 1;
            }
            Normalized::Bad(reason) => r.skip(skipped(reason)),
        }
    })
    .map_err(FeedError::Unreadable)?;
    if kinds.is_empty() {
        kinds.push(if r.records == 0 { "empty" } else { "unrecognised" });
    }
    r.format = format!("{}-{}", kinds.join("+"), container.as_str());
    if parsed.items.is_empty() && parsed.audits.is_empty() && r.ignored == 0 && r.records > 0 {
        let first = r.skipped.first().map(|s| s.reason.clone()).unwrap_or_default();
        return Err(FeedError::Unreadable(format!(
            "none of the {} records is a {}: {first}",
            r.records,
            if kinds == ["unrecognised"] {
                "supported record"
            } else {
                "readable record"
            }
        )));
    }
    Ok(parsed)
}

/// The most records stored per transaction. An import is stored chunk by chunk,
/// each its own transaction (and, through the API, its own turn on the writer), so
/// a file of hundreds of thousands of records never holds the writer long: the
/// alert batches of every agent are stored between its chunks.
pub const IMPORT_CHUNK: usize = 2_000;

/// About how long one chunk may take: chunks are sized from the measured cost per
/// record of the ones before ([`Import::chunk_for`]).
pub const IMPORT_CHUNK_BUDGET: std::time::Duration = std::time::Duration::from_millis(20);

/// The records of a parsed file not stored yet.
#[derive(Debug)]
enum Pending {
    Identity(std::vec::IntoIter<SignIn>),
    /// Grouped by message, so that no chunk ends inside one: a message and its parts
    /// are judged together (one alert), as in one import.
    Mailbox(Box<std::iter::Peekable<std::vec::IntoIter<MailRecord>>>),
    Endpoint(std::vec::IntoIter<JudgedEvent>),
}

/// A parsed file being stored chunk by chunk ([`Import::step`]). Detection judges
/// each chunk against everything stored before it, as it judges a file against the
/// imports before it (streams come in any order): a chunked file raises what its
/// records imported in pieces would. A message's rows stay in one chunk (one alert
/// for a message and its parts); a window alert raised by an earlier chunk is not
/// raised again.
#[derive(Debug)]
pub struct Import {
    feed: Feed,
    actor: String,
    report: ImportReport,
    pending: Pending,
    /// Directory and audit events, stored after the file's sign-ins or mail (so a
    /// sequence whose steps are in one file is judged with both stored).
    audits: std::vec::IntoIter<AuditEvent>,
    raised: alerts_identity::Raised,
    /// Measured cost of a record so far (storing and judging), for sizing chunks.
    per_record: Option<std::time::Duration>,
}

impl Import {
    pub fn new(parsed: ParsedFeed, actor: &str) -> Import {
        let (feed, report, pending, audits) = match parsed {
            ParsedFeed::Identity(p) => (
                Feed::Identity,
                p.report,
                Pending::Identity(p.items.into_iter()),
                p.audits,
            ),
            ParsedFeed::Mailbox(mut p) => {
                // A stable sort: rows of one message together, in file order but its
                // email rows first (a click without its account takes it from them).
                p.items.sort_by(|a, b| {
                    (&a.network_message_id, a.kind != MailKind::Email)
                        .cmp(&(&b.network_message_id, b.kind != MailKind::Email))
                });
                (
                    Feed::Mailbox,
                    p.report,
                    Pending::Mailbox(Box::new(p.items.into_iter().peekable())),
                    p.audits,
                )
            }
            ParsedFeed::Endpoint(p) => (
                Feed::Endpoint,
                p.report,
                Pending::Endpoint(p.items.into_iter()),
                p.audits,
            ),
        };
        Import {
            feed,
            actor: actor.to_string(),
            report,
            pending,
            audits: audits.into_iter(),
            raised: alerts_identity::Raised::default(),
            per_record: None,
        }
    }

    /// How many records the next chunk should take to last about `budget`: a few
    /// at first, then as many as the cost measured so far allows.
    pub fn chunk_for(&self, budget: std::time::Duration) -> usize {
        match self.per_record {
            None => 20,
            Some(cost) => {
                let n = budget.as_nanos() / cost.as_nanos().max(1);
                usize::try_from(n).unwrap_or(IMPORT_CHUNK).clamp(1, IMPORT_CHUNK)
            }
        }
    }

    /// What is stored so far.
    pub fn report(&self) -> &ImportReport {
        &self.report
    }

    /// Stores the next chunk of at most `max` records and raises its alerts in one
    /// transaction; the last chunk's transaction also writes the audit entry. `None`
    /// while records remain, the report when the file is stored.
    pub fn step(
        &mut self,
        store: &mut Store,
        cfg: &FeedsConfig,
        max: usize,
        now_ms: u64,
    ) -> Result<Option<ImportReport>, StoreError> {
        let max = max.max(1);
        let started = std::time::Instant::now();
        let (feed, actor) = (self.feed, self.actor.as_str());
        let Import {
            report,
            pending,
            audits,
            raised,
            ..
        } = self;
        let done = store.feed_import(now_ms, |tx| {
            // Counts go to a copy: a chunk that fails stored nothing.
            let mut r = report.clone();
            let main_left = match pending {
                Pending::Identity(items) => items.len() > 0,
                Pending::Mailbox(items) => items.peek().is_some(),
                Pending::Endpoint(items) => items.len() > 0,
            };
            let (alerts, done) = match pending {
                _ if !main_left && audits.len() > 0 => {
                    let mut fresh = Vec::new();
                    for e in audits.by_ref().take(max) {
                        if tx.insert_audit_event(&e)? {
                            fresh.push(e);
                        } else {
                            r.duplicates += 1;
                        }
                    }
                    r.imported += fresh.len() as u64;
                    (alerts_audit::detect(tx, &fresh, cfg, raised)?, audits.len() == 0)
                }
                Pending::Identity(items) => {
                    let mut fresh = Vec::new();
                    for s in items.by_ref().take(max) {
                        if tx.insert_sign_in(&s)? {
                            fresh.push(s);
                        } else {
                            r.duplicates += 1;
                        }
                    }
                    r.imported += fresh.len() as u64;
                    (
                        alerts_identity::detect(tx, &fresh, cfg, raised)?,
                        items.len() == 0 && audits.len() == 0,
                    )
                }
                Pending::Mailbox(items) => {
                    let mut fresh = Vec::new();
                    let mut taken = 0;
                    let mut last: Option<String> = None;
                    while let Some(m) =
                        items.next_if(|m| taken < max || (last.is_some() && m.network_message_id == last))
                    {
                        taken += 1;
                        last.clone_from(&m.network_message_id);
                        let m = fill_click_recipient(tx, m)?;
                        if tx.insert_mail(&m)? {
                            fresh.push(m);
                        } else {
                            r.duplicates += 1;
                        }
                    }
                    r.imported += fresh.len() as u64;
                    (
                        alerts_mailbox::detect(tx, &fresh)?,
                        items.peek().is_none() && audits.len() == 0,
                    )
                }
                Pending::Endpoint(items) => {
                    // Alerts are stored with their event (judged while parsing).
                    let alerts = Vec::new();
                    for j in items.by_ref().take(max) {
                        let e = &j.event;
                        if tx.insert_endpoint_event(&e.key, &e.host, e.product, e.time_ms)? {
                            r.imported += 1;
                            if !j.alerts.is_empty() {
                                let stored = tx.insert_alerts(&j.alerts)?.stored;
                                r.alerts_raised += u64::from(stored);
                                tx.count_endpoint_alerts(&e.host, u64::from(stored))?;
                            }
                        } else {
                            r.duplicates += 1;
                        }
                    }
                    (alerts, items.len() == 0 && audits.len() == 0)
                }
            };
            r.alerts_raised += u64::from(tx.insert_alerts(&alerts)?.stored);
            if done {
                tx.audit(actor, "feed.import", feed.as_str(), &summary(&r))?;
            }
            Ok((r, done))
        });
        let done = done.map(|(r, done)| {
            let records = (r.imported + r.duplicates).saturating_sub(report.imported + report.duplicates);
            if records > 0 {
                let cost = started.elapsed() / u32::try_from(records).unwrap_or(u32::MAX);
                // Weighted toward the latest chunk: costs grow with the history judged.
                self.per_record = Some(self.per_record.map_or(cost, |old| (old + cost * 3) / 4));
            }
            *report = r;
            done
        });
        match done {
            Ok(true) => Ok(Some(self.report.clone())),
            Ok(false) => Ok(None),
            Err(e) => {
                // What earlier chunks stored stays; the audit log says where it stopped.
                let note = format!("{}; stopped: {e}", summary(&self.report));
                let _ = store.feed_import(now_ms, |tx| {
                    tx.audit(&self.actor, "feed.import", self.feed.as_str(), &note)
                });
                Err(e)
            }
        }
    }
}

/// A click whose row names no account (an empty `AccountUpn`) clicked a message that
/// went to one recipient: that is who clicked. A message to several stays unnamed.
fn fill_click_recipient(tx: &FeedTx<'_>, mut m: MailRecord) -> Result<MailRecord, StoreError> {
    if m.kind == MailKind::Click
        && m.recipient.is_none()
        && let Some(id) = &m.network_message_id
    {
        m.recipient = alerts_mailbox::sole_recipient(&tx.message_records(id)?);
    }
    Ok(m)
}

fn summary(r: &ImportReport) -> String {
    format!(
        "{}: {} records, {} imported, {} duplicates, {} ignored, {} skipped, {} alerts",
        r.format, r.records, r.imported, r.duplicates, r.ignored, r.skipped_count, r.alerts_raised
    )
}

/// Counts and logs an import's outcome (the API's path).
pub fn record_outcome(metrics: &Metrics, feed: Feed, actor: &str, result: &Result<ImportReport, FeedError>) {
    match result {
        Ok(r) => {
            metrics.feed_records_imported.add(r.imported);
            metrics.feed_records_duplicate.add(r.duplicates);
            metrics.feed_records_skipped.add(r.skipped_count);
            metrics.feed_alerts_raised.add(r.alerts_raised);
        }
        Err(_) => metrics.feed_imports_refused.inc(),
    }
    log_outcome(feed, actor, result);
}

/// Logs an import's outcome; the CLI's one-shot process has no metrics to count in.
pub fn log_outcome(feed: Feed, actor: &str, result: &Result<ImportReport, FeedError>) {
    match result {
        Ok(r) => {
            if r.skipped_count > 0 {
                warn!(feed = feed.as_str(), actor, skipped = r.skipped_count, first = ?r.skipped.first(), "feed records skipped");
            }
            info!(feed = feed.as_str(), actor, report = %summary(r), "feed imported");
        }
        Err(e) => warn!(feed = feed.as_str(), actor, error = %e, "feed import refused"),
    }
}

/// A file read and normalized, ready to store.
#[derive(Debug)]
pub enum ParsedFeed {
    Identity(Parsed<SignIn>),
    Mailbox(Parsed<MailRecord>),
    Endpoint(Parsed<JudgedEvent>),
}

/// An endpoint event with the alerts the rules raised on it (judged while parsing,
/// off the writer thread; stored only if the event is new).
#[derive(Debug)]
pub struct JudgedEvent {
    pub event: endpoint::EndpointEvent,
    pub alerts: Vec<crate::store::SourcedAlert>,
}

/// Reads an endpoint file and judges its events (no storage).
pub fn parse_endpoint(bytes: &[u8], cfg: &FeedsConfig) -> Result<Parsed<JudgedEvent>, FeedError> {
    let parsed = endpoint::parse(bytes, cfg)?;
    let detector = &endpoint_detect::rules().detector;
    Ok(Parsed {
        report: parsed.report,
        items: parsed
            .items
            .into_iter()
            .map(|event| JudgedEvent {
                alerts: endpoint_detect::judge(detector, &event),
                event,
            })
            .collect(),
        audits: parsed.audits,
    })
}

/// Reads and normalizes a file of `feed` (no storage; the API runs this off the writer thread).
pub fn parse(feed: Feed, bytes: &[u8], cfg: &FeedsConfig) -> Result<ParsedFeed, FeedError> {
    Ok(match feed {
        Feed::Identity => ParsedFeed::Identity(parse_identity(bytes, cfg)?),
        Feed::Mailbox => ParsedFeed::Mailbox(parse_mailbox(bytes, cfg)?),
        Feed::Endpoint => ParsedFeed::Endpoint(parse_endpoint(bytes, cfg)?),
    })
}

/// Stores a parsed file and raises its alerts, chunk by chunk (see [`Import`]).
pub fn store(
    store: &mut Store,
    parsed: ParsedFeed,
    cfg: &FeedsConfig,
    actor: &str,
    now_ms: u64,
) -> Result<ImportReport, StoreError> {
    let mut import = Import::new(parsed, actor);
    loop {
        let n = import.chunk_for(IMPORT_CHUNK_BUDGET);
        if let Some(report) = import.step(store, cfg, n, now_ms)? {
            return Ok(report);
        }
    }
}

/// Reads, stores and judges one file (the CLI's path: each chunk's transaction is
/// short, so a running collector's writer is not held behind the file).
pub fn import(
    store: &mut Store,
    feed: Feed,
    bytes: &[u8],
    cfg: &FeedsConfig,
    actor: &str,
    now_ms: u64,
) -> Result<ImportReport, FeedError> {
    let parsed = parse(feed, bytes, cfg)?;
    Ok(self::store(store, parsed, cfg, actor, now_ms)?)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests_audit;
