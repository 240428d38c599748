//! Proofpoint Targeted Attack Protection (TAP) SIEM API events → [`MailRecord`]s:
//! a message event becomes one `Email` row per recipient, one `Attachment` row per
//! attached part (and per attachment threat) and one `Url` row per URL threat, all
//! under the message's id, so the mailbox detections see it as they see Defender's
//! tables; a click event becomes a `Click` row. Events come one at a time (a SIEM
//! forwarder's NDJSON, Panther's `Proofpoint.Event`) or as the API's batch object,
//! whose list names say whether a message was delivered and a click permitted.

use serde_json::Value;

use super::fields::{address, list, lookup, number, scalar, text, time};
use super::{MailKind, MailRecord, Normalized};

/// Proofpoint scores run 0-100; at or above these the message counts as phish /
/// malware / impostor (BEC) even when no threat is listed (Panther's thresholds).
const PHISH_SCORE: f64 = 90.0;
const MALWARE_SCORE: f64 = 90.0;
const IMPOSTOR_SCORE: f64 = 50.0;

/// The batch lists of `/v2/siem/*` and what each says.
const MESSAGE_LISTS: [(&str, bool); 2] = [("messagesDelivered", false), ("messagesBlocked", true)];
const CLICK_LISTS: [(&str, bool); 2] = [("clicksPermitted", true), ("clicksBlocked", false)];

/// A TAP event or batch: `Some` with what it holds, `None` when `v` is not one.
pub(crate) fn normalize(v: &Value) -> Option<Normalized<MailRecord>> {
    if is_batch(v) {
        return Some(batch(v));
    }
    if text(v, &["messageTime"]).is_some() && (has(v, "recipient") || has(v, "toAddresses")) {
        return Some(match message(v, None) {
            Ok(items) => Normalized::Many {
                kind: "proofpoint-message",
                items,
                bad: Vec::new(),
            },
            Err(e) => Normalized::Bad(e),
        });
    }
    if text(v, &["clickTime"]).is_some() && has(v, "url") {
        return Some(match click(v, None) {
            Ok(item) => Normalized::Record {
                kind: "proofpoint-click",
                item,
            },
            Err(e) => Normalized::Bad(e),
        });
    }
    None
}

fn has(v: &Value, field: &str) -> bool {
    lookup(v, field).is_some()
}

fn is_batch(v: &Value) -> bool {
    MESSAGE_LISTS
        .iter()
        .chain(&CLICK_LISTS)
        .any(|(name, _)| v.get(name).is_some_and(Value::is_array))
}

fn batch(v: &Value) -> Normalized<MailRecord> {
    let (mut items, mut bad) = (Vec::new(), Vec::new());
    let list = |name: &str| v.get(name).and_then(Value::as_array).into_iter().flatten().enumerate();
    for (name, blocked) in MESSAGE_LISTS {
        for (i, m) in list(name) {
            match message(m, Some(blocked)) {
                Ok(rows) => items.extend(rows),
                Err(e) => bad.push(format!("{name}[{i}]: {e}")),
            }
        }
    }
    for (name, permitted) in CLICK_LISTS {
        for (i, c) in list(name) {
            match click(c, Some(permitted)) {
                Ok(row) => items.push(row),
                Err(e) => bad.push(format!("{name}[{i}]: {e}")),
            }
        }
    }
    Normalized::Many {
        kind: "proofpoint-siem",
        items,
        bad,
    }
}

/// Strings of a field that is a list in message events and a string in click events.
fn strings(v: &Value, field: &str) -> Vec<String> {
    list(v, field).iter().filter_map(scalar).collect()
}

/// The message id clicks and messages share: the TAP GUID, else the Message-ID header.
fn message_id(v: &Value) -> Option<String> {
    text(v, &["GUID", "messageID"]).map(|s| s.to_ascii_lowercase())
}

/// A threat still in force: not cleared and not a false positive.
fn active(threat: &Value) -> bool {
    text(threat, &["threatStatus"])
        .is_none_or(|s| !s.eq_ignore_ascii_case("cleared") && !s.eq_ignore_ascii_case("falsePositive"))
}

/// "Phish", "Malware", "Spam", "Impostor" as Defender spells its threat types.
fn verdict_name(classification: &str) -> Option<&'static str> {
    let c = classification.to_ascii_lowercase();
    if c.contains("phish") {
        Some("Phish")
    } else if c.contains("malware") || c.contains("virus") {
        Some("Malware")
    } else if c.contains("impostor") {
        Some("Impostor")
    } else if c.contains("spam") {
        Some("Spam")
    } else {
        None
    }
}

fn is_sha256(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

fn message(m: &Value, blocked_list: Option<bool>) -> Result<Vec<MailRecord>, String> {
    let time_ms = time(m, &["messageTime"]).ok_or("no readable messageTime")?;
    let id = message_id(m).ok_or("no GUID or messageID")?;
    let mut recipients: Vec<String> = strings(m, "recipient");
    if recipients.is_empty() {
        recipients = strings(m, "toAddresses");
    }
    let recipients: Vec<String> = recipients.into_iter().filter_map(|r| address(Some(r))).collect();
    if recipients.is_empty() {
        return Err("no recipient".into());
    }
    let sender = address(
        strings(m, "fromAddress")
            .into_iter()
            .next()
            .or_else(|| text(m, &["sender"])),
    );
    let threats = list(m, "threatsInfoMap");
    let score = |name: &str| number(m, &[name]).unwrap_or(0.0);
    let quarantine = text(m, &["quarantineRule"]).or_else(|| text(m, &["quarantineFolder"]));

    let mut verdicts: Vec<&str> = Vec::new();
    let mut add = |v: Option<&'static str>| {
        if let Some(v) = v.filter(|v| !verdicts.contains(v)) {
            verdicts.push(v);
        }
    };
    for t in threats.iter().filter(|t| active(t)) {
        add(text(t, &["classification"]).as_deref().and_then(verdict_name));
    }
    add((score("phishScore") >= PHISH_SCORE).then_some("Phish"));
    add((score("malwareScore") >= MALWARE_SCORE).then_some("Malware"));
    add((score("impostorScore") >= IMPOSTOR_SCORE).then_some("Impostor"));
    add(quarantine.as_deref().and_then(verdict_name));

    let mut methods = format!(
        "Proofpoint TAP scores: phish {}, malware {}, impostor {}, spam {}",
        score("phishScore"),
        score("malwareScore"),
        score("impostorScore"),
        score("spamScore")
    );
    if let Some(q) = &quarantine {
        methods.push_str(&format!("; quarantine rule {q}"));
    }
    let listed: Vec<String> = threats
        .iter()
        .filter(|t| active(t))
        .filter_map(|t| {
            let class = text(t, &["classification"])?;
            let kind = text(t, &["threatType"]).unwrap_or_default();
            Some(format!("{class} {kind}").trim().to_string())
        })
        .collect();
    if !listed.is_empty() {
        methods.push_str(&format!("; active threats: {}", listed.join(", ")));
    }
    let blocked = blocked_list.unwrap_or(false) || text(m, &["quarantineFolder"]).is_some();
    let base = MailRecord {
        key: String::new(),
        kind: MailKind::Email,
        time_ms,
        network_message_id: Some(id.clone()),
        sender,
        recipient: None,
        subject: text(m, &["subject"]),
        threat_types: (!verdicts.is_empty()).then(|| verdicts.join(", ")),
        detection_methods: Some(methods),
        delivery_action: Some(if blocked { "Blocked" } else { "Delivered" }.into()),
        delivery_location: text(m, &["quarantineFolder"]).map(|f| format!("Quarantine: {f}")),
        file_name: None,
        sha256: None,
        url: None,
        action: None,
        ip: text(m, &["senderIP"]).and_then(|s| s.parse().ok()),
        rule: None,
        raw: m.to_string(),
    };

    let mut rows: Vec<MailRecord> = recipients
        .iter()
        .map(|r| MailRecord {
            key: format!("email:{id}:{r}"),
            recipient: Some(r.clone()),
            ..base.clone()
        })
        .collect();
    let part = |kind: MailKind, key: String| MailRecord {
        key,
        kind,
        threat_types: None,
        delivery_action: None,
        delivery_location: None,
        ..base.clone()
    };
    let mut hashes: Vec<String> = Vec::new();
    for p in &list(m, "messageParts") {
        let attached = text(p, &["disposition"]).is_some_and(|d| d.eq_ignore_ascii_case("attached"));
        let Some(sha) = text(p, &["sha256"]).map(|h| h.to_ascii_lowercase()) else {
            continue;
        };
        if attached && is_sha256(&sha) && !hashes.contains(&sha) {
            let mut row = part(MailKind::Attachment, format!("attachment:{id}::{sha}"));
            row.file_name = text(p, &["filename"]);
            row.sha256 = Some(sha.clone());
            hashes.push(sha);
            rows.push(row);
        }
    }
    for t in &threats {
        let kind = text(t, &["threatType"]).unwrap_or_default().to_ascii_lowercase();
        let Some(threat) = text(t, &["threat"]) else {
            continue;
        };
        let verdict = active(t)
            .then(|| text(t, &["classification"]).as_deref().and_then(verdict_name))
            .flatten()
            .map(str::to_string);
        if kind == "url" {
            // Credentials in a URL are never stored (nor in the record key).
            let threat = crate::entity::redact_userinfo(&threat).into_owned();
            let mut row = part(MailKind::Url, format!("url:{id}:{threat}"));
            row.url = Some(threat);
            row.threat_types = verdict;
            rows.push(row);
        } else if kind == "attachment" {
            let sha = threat.to_ascii_lowercase();
            if is_sha256(&sha) && !hashes.contains(&sha) {
                let mut row = part(MailKind::Attachment, format!("attachment:{id}::{sha}"));
                row.sha256 = Some(sha.clone());
                row.threat_types = verdict;
                hashes.push(sha);
                rows.push(row);
            }
        }
    }
    Ok(rows)
}

fn click(c: &Value, permitted: Option<bool>) -> Result<MailRecord, String> {
    let time_ms = time(c, &["clickTime"]).ok_or("no readable clickTime")?;
    let url = crate::entity::redact_userinfo(&text(c, &["url"]).ok_or("no url")?).into_owned();
    let recipient = address(strings(c, "recipient").into_iter().next()).ok_or("no recipient")?;
    let nmid = message_id(c);
    let threat = active(c)
        .then(|| text(c, &["classification"]).as_deref().and_then(verdict_name))
        .flatten();
    Ok(MailRecord {
        key: format!("click:{}:{recipient}:{url}:{time_ms}", nmid.as_deref().unwrap_or("")),
        kind: MailKind::Click,
        time_ms,
        network_message_id: nmid,
        sender: address(text(c, &["sender"])),
        recipient: Some(recipient),
        subject: None,
        threat_types: threat.map(str::to_string),
        detection_methods: text(c, &["threatID"]).map(|t| format!("Proofpoint TAP threat {t}")),
        delivery_action: None,
        delivery_location: None,
        file_name: None,
        sha256: None,
        url: Some(url),
        action: permitted.map(|p| if p { "ClickAllowed" } else { "ClickBlocked" }.to_string()),
        ip: text(c, &["clickIP"]).and_then(|s| s.parse().ok()),
        rule: None,
        raw: c.to_string(),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rows(v: Value) -> (&'static str, Vec<MailRecord>, Vec<String>) {
        match normalize(&v) {
            Some(Normalized::Many { kind, items, bad }) => (kind, items, bad),
            Some(Normalized::Record { kind, item }) => (kind, vec![item], Vec::new()),
            Some(Normalized::Bad(e)) => panic!("bad: {e}"),
            _ => panic!("not a TAP record"),
        }
    }

    fn message_event() -> Value {
        json!({"messageTime": "2026-01-08T10:00:00Z", "GUID": "G-1", "messageID": "<m1@evil.example>",
            "sender": "bounce@evil.example", "fromAddress": ["Billing@Evil.example"], "senderIP": "192.0.2.100",
            "recipient": ["Adele@Contoso.com", "bob@contoso.com"], "subject": "Invoice",
            "phishScore": 20, "malwareScore": 95, "impostorScore": 0, "spamScore": 5,
            "messageParts": [
                {"disposition": "inline", "filename": "text.txt", "sha256": "11".repeat(32)},
                {"disposition": "attached", "filename": "invoice.docm", "sha256": "AB".repeat(32)}],
            "threatsInfoMap": [
                {"threatType": "url", "classification": "phish", "threatStatus": "active", "threat": "http://evil.example/login"},
                {"threatType": "url", "classification": "phish", "threatStatus": "cleared", "threat": "http://old.example/"}]})
    }

    #[test]
    fn a_message_is_one_row_per_recipient_attachment_and_url() {
        let (kind, rows, bad) = rows(message_event());
        assert_eq!((kind, bad.len()), ("proofpoint-message", 0));
        let keys: Vec<&str> = rows.iter().map(|r| r.key.as_str()).collect();
        let ab = "ab".repeat(32);
        assert_eq!(
            keys,
            [
                "email:g-1:adele@contoso.com".to_string(),
                "email:g-1:bob@contoso.com".into(),
                format!("attachment:g-1::{ab}"),
                "url:g-1:http://evil.example/login".into(),
                "url:g-1:http://old.example/".into(),
            ]
        );
        let email = &rows[0];
        assert_eq!(email.sender.as_deref(), Some("billing@evil.example"));
        assert_eq!(email.threat_types.as_deref(), Some("Phish, Malware"));
        assert_eq!(email.delivery_action.as_deref(), Some("Delivered"));
        assert_eq!(rows[2].file_name.as_deref(), Some("invoice.docm"));
        assert_eq!(rows[3].threat_types.as_deref(), Some("Phish"));
        assert_eq!(rows[4].threat_types, None, "a cleared threat is no verdict");
    }

    #[test]
    fn quarantine_and_the_batch_lists_say_blocked_or_permitted() {
        let mut quarantined = message_event();
        quarantined["quarantineFolder"] = json!("Phish");
        let (_, blocked, _) = rows(quarantined);
        assert_eq!(blocked[0].delivery_action.as_deref(), Some("Blocked"));
        assert_eq!(blocked[0].delivery_location.as_deref(), Some("Quarantine: Phish"));

        let click = json!({"clickTime": "2026-01-08T10:05:00Z", "url": "http://evil.example/login",
            "recipient": "Adele@Contoso.com", "clickIP": "198.51.100.7", "classification": "phish",
            "threatStatus": "active", "GUID": "G-1", "messageID": "<m1@evil.example>"});
        let batch = json!({"queryEndTime": "2026-01-08T11:00:00Z", "messagesDelivered": [message_event()],
            "messagesBlocked": [{"messageTime": "2026-01-08T10:00:00Z"}],
            "clicksPermitted": [click.clone()], "clicksBlocked": [click]});
        let (kind, rows, bad) = rows(batch);
        assert_eq!(kind, "proofpoint-siem");
        assert_eq!(bad.len(), 1);
        assert!(bad[0].starts_with("messagesBlocked[0]: "), "{}", bad[0]);
        let clicks: Vec<&MailRecord> = rows.iter().filter(|r| r.kind == MailKind::Click).collect();
        assert_eq!(clicks.len(), 2);
        assert_eq!(clicks[0].action.as_deref(), Some("ClickAllowed"));
        assert_eq!(clicks[1].action.as_deref(), Some("ClickBlocked"));
        assert_eq!(clicks[0].network_message_id.as_deref(), Some("g-1"));
        assert_eq!(clicks[0].threat_types.as_deref(), Some("Phish"));
    }

    #[test]
    fn low_scores_and_foreign_records_are_no_verdict() {
        let clean = json!({"messageTime": "2026-01-08T14:00:00Z", "messageID": "<ok@contoso.com>",
            "recipient": ["employee@company.com"], "phishScore": 89, "malwareScore": 0, "impostorScore": 49});
        let (_, clean, _) = rows(clean);
        assert_eq!(clean.len(), 1);
        assert_eq!(clean[0].threat_types, None);
        assert!(normalize(&json!({"Timestamp": "2026-01-08T14:00:00Z", "Subject": "x"})).is_none());
    }
}
