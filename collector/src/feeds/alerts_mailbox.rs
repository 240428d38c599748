//! Mailbox detections over newly stored mail records; what else is known about
//! the same message (its attachments, URLs, verdict) is read from the store.

use ward_protocol::{Entity, Severity};

use super::alerts::{
    EXTERNAL_FORWARDING, HIDING_INBOX_RULE, MALICIOUS_DELIVERED, MALICIOUS_URL_CLICK, Raise, Rule, USER_REPORTED_PHISH,
    domain_of_address, host_of_url, user,
};
use super::{MailKind, MailRecord};
use crate::store::{AlertSource, FeedTx, SourcedAlert, StoreError};

/// Most attachments or URLs of one message named as entities.
const MAX_PARTS: usize = 20;

pub fn detect(tx: &FeedTx<'_>, fresh: &[MailRecord]) -> Result<Vec<SourcedAlert>, StoreError> {
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
            MailKind::Click => out.extend(click_alert(tx, m)?),
            MailKind::PostDelivery if user_reported(m) => out.push(reported_alert(tx, m)?),
            MailKind::InboxRule => out.extend(inbox_rule_alerts(m)),
            _ => {}
        }
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
    let parts = related(tx, m)?;
    let mut r = Raise::new(MALICIOUS_DELIVERED, AlertSource::Mailbox, Severity::High, m.time_ms);
    recipient_entities(&mut r, m);
    sender_entities(&mut r, m.sender.as_ref());
    if let Some(ip) = m.ip {
        r.entity(Entity::Ip { addr: ip });
    }
    message_fields(&mut r, m);
    let attachments: Vec<&MailRecord> = parts
        .iter()
        .filter(|p| p.kind == MailKind::Attachment && (p.recipient.is_none() || p.recipient == m.recipient))
        .take(MAX_PARTS)
        .collect();
    let urls: Vec<&MailRecord> = parts
        .iter()
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
        .field("urls", Some(urls.len()).filter(|n| *n > 0))
        .field("sender_ip", m.ip);
    Ok(r.build(m.time_ms, &[&m.key]))
}

fn click_alert(tx: &FeedTx<'_>, m: &MailRecord) -> Result<Option<SourcedAlert>, StoreError> {
    let parts = related(tx, m)?;
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
