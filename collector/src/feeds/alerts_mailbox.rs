//! Mailbox detections over newly stored mail records; what else is known about
//! the same message (its attachments, URLs, verdict) is read from the store.
//!
//! Stored alerts are never changed (the correlator has already placed them), so
//! when a message's rows come in several imports, what an earlier alert could not
//! name is raised as a further `ward-mailbox-malicious-delivered` alert, its id
//! from the rows that are new (see [`part_alerts`]).

use std::collections::{BTreeMap, HashSet};

use ward_protocol::{Entity, Severity};

use super::alerts::{
    EXTERNAL_FORWARDING, HIDING_INBOX_RULE, MALICIOUS_DELIVERED, MALICIOUS_URL_CLICK, Raise, Rule, USER_REPORTED_PHISH,
    alert_id, domain_of_address, host_of_url, user,
};
use super::{MailKind, MailRecord};
use crate::store::prelude::*;
use crate::store::{AlertSource, FeedTx, SourcedAlert, StoreError};

/// Most attachments or URLs of one message named as entities.
const MAX_PARTS: usize = 20;

pub fn detect(tx: &FeedTx<'_>, fresh: &[MailRecord]) -> Result<Vec<SourcedAlert>, StoreError> {
    let fresh_keys: HashSet<&str> = fresh.iter().map(|m| m.key.as_str()).collect();
    // New attachment and URL rows by message, judged once all of the import is stored.
    let mut parts: BTreeMap<&str, Vec<&MailRecord>> = BTreeMap::new();
    let mut out = Vec::new();
    for m in fresh {
        match m.kind {
            MailKind::Email if malicious(m.threat_types.as_deref()) => {
                if delivered(m) {
                    out.push(delivered_alert(tx, m)?);
                }
                // Clicks stored before the message's verdict arrived (streams come in any order).
                for click in related(tx, m)?.iter().filter(|p| p.kind == MailKind::Click) {
                    out.extend(click_alert(tx, click)?);
                }
            }
            MailKind::Attachment | MailKind::Url => {
                if let Some(id) = &m.network_message_id {
                    parts.entry(id).or_default().push(m);
                }
            }
            MailKind::Click => out.extend(click_alert(tx, m)?),
            MailKind::PostDelivery if user_reported(m) => out.push(reported_alert(tx, m)?),
            MailKind::InboxRule => out.extend(inbox_rule_alerts(m)),
            _ => {}
        }
    }
    for (id, new_parts) in parts {
        out.extend(part_alerts(tx, id, &new_parts, &fresh_keys)?);
    }
    Ok(out)
}

/// Phish, malware or impersonation in a verdict ("Phish", "Malware, Phish", Proofpoint's "Impostor").
fn malicious(threat_types: Option<&str>) -> bool {
    threat_types.is_some_and(|t| {
        let t = t.to_ascii_lowercase();
        t.contains("phish") || t.contains("malware") || t.contains("impostor")
    })
}

fn delivered(m: &MailRecord) -> bool {
    let action = m.delivery_action.as_deref().unwrap_or("");
    let location = m.delivery_location.as_deref().unwrap_or("").to_ascii_lowercase();
    action.eq_ignore_ascii_case("Delivered") || location.starts_with("inbox")
}

fn malicious_delivered(m: &MailRecord) -> bool {
    malicious(m.threat_types.as_deref()) && delivered(m)
}

/// Whether an attachment or URL row belongs to the copy of the message an email row
/// describes: attachment rows name their recipient, URL rows (and Proofpoint parts) none.
fn concerns(email: &MailRecord, part: &MailRecord) -> bool {
    part.recipient.is_none() || email.recipient.is_none() || part.recipient == email.recipient
}

/// Reported by the user: Defender names it in the post-delivery action type or action.
fn user_reported(m: &MailRecord) -> bool {
    [m.action.as_deref(), m.delivery_action.as_deref()]
        .into_iter()
        .flatten()
        .map(str::to_ascii_lowercase)
        .any(|a| a.contains("reported") || a.contains("user submission") || a.contains("usersubmission"))
}

fn recipient_entities(r: &mut Raise, m: &MailRecord) {
    if let Some(rcpt) = &m.recipient {
        r.entity(user(rcpt)).entity(Entity::Mailbox { address: rcpt.clone() });
    }
}

fn sender_entities(r: &mut Raise, sender: Option<&String>) {
    if let Some(s) = sender {
        r.entity(Entity::Mailbox { address: s.clone() });
        if let Some(d) = domain_of_address(s) {
            r.entity(d);
        }
    }
}

fn message_fields(r: &mut Raise, m: &MailRecord) {
    r.field("network_message_id", m.network_message_id.as_ref())
        .field("recipient", m.recipient.as_ref())
        .field("sender", m.sender.as_ref())
        .field("subject", m.subject.as_ref())
        .field("threat_types", m.threat_types.as_ref())
        .field("detection_methods", m.detection_methods.as_ref())
        .field("delivery_action", m.delivery_action.as_ref())
        .field("delivery_location", m.delivery_location.as_ref())
        .field("time_ms", Some(m.time_ms));
}

fn related(tx: &FeedTx<'_>, m: &MailRecord) -> Result<Vec<MailRecord>, StoreError> {
    match &m.network_message_id {
        Some(id) => tx.message_records(id),
        None => Ok(Vec::new()),
    }
}

fn delivered_alert(tx: &FeedTx<'_>, m: &MailRecord) -> Result<SourcedAlert, StoreError> {
    let stored = related(tx, m)?;
    let parts: Vec<&MailRecord> = stored
        .iter()
        .filter(|p| matches!(p.kind, MailKind::Attachment | MailKind::Url) && concerns(m, p))
        .collect();
    let mut r = Raise::new(MALICIOUS_DELIVERED, AlertSource::Mailbox, Severity::High, m.time_ms);
    recipient_entities(&mut r, m);
    sender_entities(&mut r, m.sender.as_ref());
    if let Some(ip) = m.ip {
        r.entity(Entity::Ip { addr: ip });
    }
    message_fields(&mut r, m);
    part_entities(&mut r, &parts);
    r.field("sender_ip", m.ip);
    Ok(r.build(m.time_ms, &[&m.key]))
}

/// Names attachments (file and hash) and URLs (and their hosts), at most
/// [`MAX_PARTS`] of each, and sets the technique: T1566.001 for an attachment,
/// else T1566.002 for a link.
fn part_entities(r: &mut Raise, parts: &[&MailRecord]) {
    let attachments: Vec<&MailRecord> = parts
        .iter()
        .copied()
        .filter(|p| p.kind == MailKind::Attachment)
        .take(MAX_PARTS)
        .collect();
    let urls: Vec<&MailRecord> = parts
        .iter()
        .copied()
        .filter(|p| p.kind == MailKind::Url)
        .take(MAX_PARTS)
        .collect();
    for a in &attachments {
        let sha256 = a
            .sha256
            .as_deref()
            .and_then(|h| hex::decode(h).ok())
            .and_then(|b| b.try_into().ok());
        r.entity(Entity::File {
            path: a.file_name.clone().unwrap_or_default(),
            sha256,
        });
    }
    for u in &urls {
        if let Some(url) = &u.url {
            r.entity(Entity::Url { url: url.clone() });
            if let Some(d) = host_of_url(url) {
                r.entity(d);
            }
        }
    }
    r.technique = if !attachments.is_empty() {
        Some("T1566.001")
    } else if !urls.is_empty() {
        Some("T1566.002")
    } else {
        None
    };
    let names: Vec<&str> = attachments.iter().filter_map(|a| a.file_name.as_deref()).collect();
    r.field("attachments", (!names.is_empty()).then(|| names.join(", ")))
        .field("urls", Some(urls.len()).filter(|n| *n > 0));
}

/// Attachment and URL rows new in this import, for one message. Alerts already
/// stored cannot take them in, so:
/// - a copy of the message that an earlier import alerted on as malicious and
///   delivered gets a follow-up alert naming the new parts (`follow_up_of` the
///   message's alert); a copy whose email row is new now is covered by its own
///   alert, which reads the parts from the store;
/// - a part judged malicious itself (its own ThreatTypes) on a copy whose verdict is
///   clean alerts when that copy was delivered, or when no email row for it is
///   stored yet (delivery unknown: the email row may come in a later import).
///
/// The id comes from the new rows, so a re-import raises nothing again; a part is
/// new in one import only, so no two of these alerts name it.
fn part_alerts(
    tx: &FeedTx<'_>,
    message_id: &str,
    new_parts: &[&MailRecord],
    fresh_keys: &HashSet<&str>,
) -> Result<Vec<SourcedAlert>, StoreError> {
    let stored = tx.message_records(message_id)?;
    let emails: Vec<&MailRecord> = stored.iter().filter(|r| r.kind == MailKind::Email).collect();
    let mut follow_up: Vec<&MailRecord> = Vec::new();
    let mut alerted: Vec<&MailRecord> = Vec::new();
    let mut hostile: Vec<&MailRecord> = Vec::new();
    let mut delivered_to: Vec<&MailRecord> = Vec::new();
    for &p in new_parts {
        let copies: Vec<&MailRecord> = emails.iter().copied().filter(|e| concerns(e, p)).collect();
        if copies.iter().any(|e| malicious_delivered(e)) {
            let earlier: Vec<&MailRecord> = copies
                .iter()
                .copied()
                .filter(|e| malicious_delivered(e) && !fresh_keys.contains(e.key.as_str()))
                .collect();
            if !earlier.is_empty() {
                follow_up.push(p);
                for e in earlier {
                    push(&mut alerted, e);
                }
            }
        } else if malicious(p.threat_types.as_deref()) {
            let reached: Vec<&MailRecord> = copies.iter().copied().filter(|e| delivered(e)).collect();
            if copies.is_empty() || !reached.is_empty() {
                hostile.push(p);
                for e in reached {
                    push(&mut delivered_to, e);
                }
            }
        }
    }
    let mut out = Vec::new();
    if let Some(first) = alerted.first() {
        let mut r = Raise::new(MALICIOUS_DELIVERED, AlertSource::Mailbox, Severity::High, first.time_ms);
        for e in &alerted {
            recipient_entities(&mut r, e);
        }
        sender_entities(&mut r, first.sender.as_ref());
        if let Some(ip) = first.ip {
            r.entity(Entity::Ip { addr: ip });
        }
        message_fields(&mut r, first);
        part_entities(&mut r, &follow_up);
        let earlier_ids: Vec<String> = alerted
            .iter()
            .map(|e| alert_id(e.time_ms, MALICIOUS_DELIVERED.id, &[&e.key]))
            .collect();
        r.field("sender_ip", first.ip)
            .field("follow_up_of", Some(earlier_ids.join(", ")));
        out.push(build_for_parts(r, &follow_up));
    }
    out.extend(hostile_parts_alert(&hostile, &delivered_to));
    Ok(out)
}

fn push<'a>(list: &mut Vec<&'a MailRecord>, e: &'a MailRecord) {
    if !list.iter().any(|x| x.key == e.key) {
        list.push(e);
    }
}

/// Malicious parts on a message not alerted as malicious: `delivered_to` holds the
/// delivered copies' email rows, empty when none is stored yet.
fn hostile_parts_alert(parts: &[&MailRecord], delivered_to: &[&MailRecord]) -> Option<SourcedAlert> {
    let first_part = *parts.first()?;
    let known = delivered_to.first().copied();
    let time_ms = known.map_or_else(|| parts.iter().map(|p| p.time_ms).min().unwrap_or(0), |e| e.time_ms);
    // Without the email row, whether it reached the mailbox is not known yet.
    let severity = if known.is_some() {
        Severity::High
    } else {
        Severity::Medium
    };
    let mut r = Raise::new(MALICIOUS_DELIVERED, AlertSource::Mailbox, severity, time_ms);
    for e in delivered_to {
        recipient_entities(&mut r, e);
    }
    for p in parts {
        recipient_entities(&mut r, p);
    }
    // Defender attachment rows and Proofpoint parts carry the sender themselves.
    let sender = known
        .and_then(|e| e.sender.as_ref())
        .or_else(|| parts.iter().find_map(|p| p.sender.as_ref()));
    sender_entities(&mut r, sender);
    let ip = known.and_then(|e| e.ip).or_else(|| parts.iter().find_map(|p| p.ip));
    if let Some(ip) = ip {
        r.entity(Entity::Ip { addr: ip });
    }
    part_entities(&mut r, parts);
    let mut verdicts: Vec<&str> = Vec::new();
    for v in parts.iter().filter_map(|p| p.threat_types.as_deref()) {
        if !verdicts.contains(&v) {
            verdicts.push(v);
        }
    }
    r.field("network_message_id", first_part.network_message_id.as_ref())
        .field(
            "recipient",
            known
                .and_then(|e| e.recipient.as_ref())
                .or(first_part.recipient.as_ref()),
        )
        .field("sender", sender)
        .field("subject", known.and_then(|e| e.subject.as_ref()))
        .field("threat_types", Some(verdicts.join(", ")))
        .field("message_threat_types", known.and_then(|e| e.threat_types.as_ref()))
        .field("delivery_action", known.and_then(|e| e.delivery_action.as_ref()))
        .field("delivery_location", known.and_then(|e| e.delivery_location.as_ref()))
        .field(
            "delivery",
            Some(if known.is_some() {
                "delivered"
            } else {
                "unknown: no email row for the message is stored yet"
            }),
        )
        .field("sender_ip", ip)
        .field("time_ms", Some(time_ms));
    Some(build_for_parts(r, parts))
}

/// The id of an alert raised for parts: their earliest time and their keys, sorted.
fn build_for_parts(r: Raise, parts: &[&MailRecord]) -> SourcedAlert {
    let mut keys: Vec<&str> = parts.iter().map(|p| p.key.as_str()).collect();
    keys.sort_unstable();
    let id_time = parts.iter().map(|p| p.time_ms).min().unwrap_or(r.first_ms);
    r.build(id_time, &keys)
}

/// The one recipient a message's email rows name, if they name exactly one.
pub fn sole_recipient(records: &[MailRecord]) -> Option<String> {
    let mut recipients = records
        .iter()
        .filter(|r| r.kind == MailKind::Email)
        .filter_map(|r| r.recipient.as_ref());
    let first = recipients.next()?;
    recipients.all(|r| r == first).then(|| first.clone())
}

fn click_alert(tx: &FeedTx<'_>, m: &MailRecord) -> Result<Option<SourcedAlert>, StoreError> {
    let parts = related(tx, m)?;
    // A click stored before its message named no account: the message names it now.
    let filled;
    let m = if m.recipient.is_none()
        && let Some(rcpt) = sole_recipient(&parts)
    {
        filled = MailRecord {
            recipient: Some(rcpt),
            ..m.clone()
        };
        &filled
    } else {
        m
    };
    let email = parts
        .iter()
        .find(|p| p.kind == MailKind::Email && p.recipient == m.recipient)
        .or_else(|| parts.iter().find(|p| p.kind == MailKind::Email));
    let message_verdict = email.and_then(|e| e.threat_types.as_deref());
    if !malicious(m.threat_types.as_deref()) && !malicious(message_verdict) {
        return Ok(None);
    }
    let action = m.action.as_deref().unwrap_or("");
    let went_through = action.contains("Allowed") || action.contains("clicked through");
    let severity = if went_through { Severity::High } else { Severity::Medium };
    let mut r = Raise::new(MALICIOUS_URL_CLICK, AlertSource::Mailbox, severity, m.time_ms);
    recipient_entities(&mut r, m);
    if let Some(url) = &m.url {
        r.entity(Entity::Url { url: url.clone() });
        if let Some(d) = host_of_url(url) {
            r.entity(d);
        }
    }
    if let Some(ip) = m.ip {
        r.entity(Entity::Ip { addr: ip });
    }
    if let Some(e) = email {
        sender_entities(&mut r, e.sender.as_ref());
    }
    r.field("url", m.url.as_ref())
        .field("click_action", m.action.as_ref())
        .field("account", m.recipient.as_ref())
        .field("ip", m.ip)
        .field("threat_types", m.threat_types.as_ref())
        .field("message_threat_types", message_verdict)
        .field("network_message_id", m.network_message_id.as_ref())
        .field("subject", email.and_then(|e| e.subject.as_ref()))
        .field("time_ms", Some(m.time_ms));
    Ok(Some(r.build(m.time_ms, &[&m.key])))
}

fn reported_alert(tx: &FeedTx<'_>, m: &MailRecord) -> Result<SourcedAlert, StoreError> {
    let parts = related(tx, m)?;
    let email = parts
        .iter()
        .find(|p| p.kind == MailKind::Email && p.recipient == m.recipient)
        .or_else(|| parts.iter().find(|p| p.kind == MailKind::Email));
    let mut r = Raise::new(USER_REPORTED_PHISH, AlertSource::Mailbox, Severity::Medium, m.time_ms);
    recipient_entities(&mut r, m);
    if let Some(e) = email {
        sender_entities(&mut r, e.sender.as_ref());
        r.field("sender", e.sender.as_ref())
            .field("subject", e.subject.as_ref())
            .field("message_threat_types", e.threat_types.as_ref());
    }
    r.field("network_message_id", m.network_message_id.as_ref())
        .field("recipient", m.recipient.as_ref())
        .field("action_type", m.action.as_ref())
        .field("action", m.delivery_action.as_ref())
        .field("time_ms", Some(m.time_ms));
    Ok(r.build(m.time_ms, &[&m.key]))
}

/// An inbox rule that hides mail from its owner, and one that forwards it outside
/// the organisation: each its own alert (a rule doing both raises both).
fn inbox_rule_alerts(m: &MailRecord) -> Vec<SourcedAlert> {
    let Some(rule) = &m.rule else {
        return Vec::new();
    };
    let external = rule.external_targets();
    let mut out = Vec::new();
    let mut raise = |r: Rule, severity: Severity| {
        let mut a = Raise::new(r, AlertSource::Mailbox, severity, m.time_ms);
        recipient_entities(&mut a, m);
        if let Some(actor) = &m.sender {
            a.entity(user(actor));
        }
        if let Some(ip) = m.ip {
            a.entity(Entity::Ip { addr: ip });
        }
        for target in &external {
            sender_entities(&mut a, Some(&target.to_string()));
        }
        a.field("operation", Some(&rule.operation))
            .field("mailbox", m.recipient.as_ref())
            .field("changed_by", m.sender.as_ref())
            .field("rule_name", rule.name.as_ref())
            .field("what_it_does", m.delivery_action.as_ref())
            .field("conditions", m.detection_methods.as_ref())
            .field("forwards_outside", (!external.is_empty()).then(|| external.join(", ")))
            .field("client_ip", m.ip)
            .field("time_ms", Some(m.time_ms));
        out.push(a.build(m.time_ms, &[&m.key]));
    };
    if !rule.hides.is_empty() {
        raise(HIDING_INBOX_RULE, Severity::Medium);
    }
    if !external.is_empty() {
        raise(EXTERNAL_FORWARDING, Severity::High);
    }
    out
}
