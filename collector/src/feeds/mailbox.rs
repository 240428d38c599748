//! Email records → [`MailRecord`]: Defender XDR `EmailEvents`, `EmailAttachmentInfo`,
//! `EmailUrlInfo`, `UrlClickEvents` and `EmailPostDeliveryEvents`, as advanced-hunting
//! table rows (JSON or CSV export, with or without a `Type` column) or as streaming-API
//! records (`category` `AdvancedHunting-<Table>` with the row in `properties`);
//! Proofpoint TAP events (`proofpoint`) and Exchange audit records (`inbox_rules`).

use serde_json::Value;

use super::fields::{address, lookup, record_hash, text, time};
use super::{MailKind, MailRecord, Normalized, inbox_rules, proofpoint};

/// Table names and the kinds they hold.
const TABLES: [(&str, MailKind, &str); 5] = [
    ("EmailEvents", MailKind::Email, "defender-emailevents"),
    (
        "EmailAttachmentInfo",
        MailKind::Attachment,
        "defender-emailattachmentinfo",
    ),
    ("EmailUrlInfo", MailKind::Url, "defender-emailurlinfo"),
    ("UrlClickEvents", MailKind::Click, "defender-urlclickevents"),
    (
        "EmailPostDeliveryEvents",
        MailKind::PostDelivery,
        "defender-emailpostdeliveryevents",
    ),
];

pub(crate) fn normalize(v: &Value) -> Normalized<MailRecord> {
    if let Some(n) = proofpoint::normalize(v)
        .or_else(|| super::audit::normalize(v))
        .or_else(|| inbox_rules::normalize(v))
    {
        return n;
    }
    let (row, table) = match (text(v, &["category"]), lookup(v, "properties")) {
        (Some(category), Some(props)) => {
            let Some(table) = category.strip_prefix("AdvancedHunting-") else {
                return Normalized::Bad(format!("category {category:?} is not a Defender streaming record"));
            };
            let Some(t) = TABLES.iter().find(|t| t.0.eq_ignore_ascii_case(table)) else {
                return Normalized::Ignored {
                    kind: "defender-streaming",
                };
            };
            (props.into_owned(), Some(t))
        }
        _ => {
            let named = text(v, &["Type"]).and_then(|ty| TABLES.iter().find(|t| t.0.eq_ignore_ascii_case(&ty)));
            (v.clone(), named.or_else(|| by_columns(v)))
        }
    };
    let Some(&(_, kind, name)) = table else {
        return Normalized::Bad(
            "not a Defender email, attachment, URL, click or post-delivery record, a Proofpoint TAP event or an Exchange audit record"
                .into(),
        );
    };
    match record(&row, kind, v) {
        Ok(item) => Normalized::Record { kind: name, item },
        Err(e) => Normalized::Bad(e),
    }
}

/// A row without a table name, told by its columns.
fn by_columns(v: &Value) -> Option<&'static (&'static str, MailKind, &'static str)> {
    let has = |f: &str| lookup(v, f).is_some();
    // A column that is there, even empty (a click's `AccountUpn` may be).
    let column = |f: &str| v.get(f).is_some();
    let kind = if has("ActionType") && has("Url") && (column("AccountUpn") || has("IsClickedThrough")) {
        MailKind::Click
    } else if has("ActionTrigger") || has("ActionResult") {
        MailKind::PostDelivery
    } else if has("FileName") || has("SHA256") {
        MailKind::Attachment
    } else if has("Url") && (has("UrlLocation") || has("UrlDomain")) {
        MailKind::Url
    } else if has("DeliveryAction") || has("EmailDirection") || (has("Subject") && has("RecipientEmailAddress")) {
        MailKind::Email
    } else {
        return None;
    };
    TABLES.iter().find(|t| t.1 == kind)
}

fn record(row: &Value, kind: MailKind, outer: &Value) -> Result<MailRecord, String> {
    let time_ms = time(row, &["Timestamp", "Timestamp [UTC]", "TimeGenerated"])
        .or_else(|| time(outer, &["time"]))
        .ok_or("no readable Timestamp")?;
    let nmid = text(row, &["NetworkMessageId"]).map(|s| s.to_ascii_lowercase());
    let recipient = address(text(row, &["RecipientEmailAddress", "AccountUpn"]));
    // Credentials in a URL are never stored (nor in the record key): a hash stands in.
    let url = text(row, &["Url"]).map(|u| crate::entity::redact_userinfo(&u).into_owned());
    let sha256 = text(row, &["SHA256"])
        .map(|h| h.to_ascii_lowercase())
        .filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()));
    let file_name = text(row, &["FileName"]);
    let mut action = text(row, &["ActionType"]);
    if kind == MailKind::Click
        && text(row, &["IsClickedThrough"]).is_some_and(|c| c.eq_ignore_ascii_case("true") || c == "1")
    {
        action = Some(format!("{} (clicked through)", action.unwrap_or_default()));
    }
    let need = |what: &Option<String>, name: &str| what.as_deref().map(str::to_string).ok_or(format!("no {name}"));
    let key = match kind {
        MailKind::Email => format!(
            "email:{}:{}",
            need(&nmid, "NetworkMessageId")?,
            need(&recipient, "RecipientEmailAddress")?
        ),
        MailKind::Attachment => format!(
            "attachment:{}:{}:{}",
            need(&nmid, "NetworkMessageId")?,
            recipient.as_deref().unwrap_or(""),
            sha256.clone().or(file_name.clone()).ok_or("no SHA256 or FileName")?
        ),
        MailKind::Url => format!("url:{}:{}", need(&nmid, "NetworkMessageId")?, need(&url, "Url")?),
        // A click with an empty AccountUpn is kept: its message names the recipient
        // (filled in when stored, see `fill_click_recipient`). The key holds only what
        // the row says, so it is the same whenever the message arrives.
        MailKind::Click if recipient.is_none() && nmid.is_none() => {
            return Err("no AccountUpn or NetworkMessageId".into());
        }
        MailKind::Click => format!(
            "click:{}:{}:{}:{time_ms}",
            nmid.as_deref().unwrap_or(""),
            recipient.as_deref().unwrap_or(""),
            need(&url, "Url")?
        ),
        MailKind::PostDelivery => format!(
            "post_delivery:{}:{}:{}:{time_ms}:{}",
            need(&nmid, "NetworkMessageId")?,
            recipient.as_deref().unwrap_or(""),
            action.as_deref().unwrap_or(""),
            // Two post-delivery actions on one message in the same millisecond differ by content.
            &record_hash(row)[..16]
        ),
        // No Defender table holds inbox rules (`inbox_rules` reads them).
        MailKind::InboxRule => return Err("not a Defender table".into()),
    };
    Ok(MailRecord {
        key,
        kind,
        time_ms,
        network_message_id: nmid,
        sender: address(text(row, &["SenderFromAddress", "SenderMailFromAddress"])),
        recipient,
        subject: text(row, &["Subject"]),
        threat_types: text(row, &["ThreatTypes"]),
        detection_methods: text(row, &["DetectionMethods"]),
        delivery_action: text(row, &["DeliveryAction", "Action"]),
        delivery_location: text(row, &["DeliveryLocation"]),
        file_name,
        sha256,
        url,
        action,
        ip: text(row, &["SenderIPv4", "SenderIPv6", "IPAddress"]).and_then(|s| s.parse().ok()),
        rule: None,
        raw: outer.to_string(),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    fn record(v: Value) -> (&'static str, MailRecord) {
        match normalize(&v) {
            Normalized::Record { kind, item } => (kind, item),
            Normalized::Ignored { kind } => panic!("ignored as {kind}"),
            Normalized::Many { kind, .. } => panic!("several records as {kind}"),
            Normalized::Audit { kind, .. } => panic!("an audit event as {kind}"),
            Normalized::Bad(e) => panic!("bad: {e}"),
        }
    }

    #[test]
    fn streaming_records_and_rows_give_the_same_record() {
        let props = json!({"Timestamp": "2026-11-20T09:15:00Z", "NetworkMessageId": "AB-1",
            "SenderFromAddress": "Billing@Evil.example", "RecipientEmailAddress": "Adele@Contoso.com",
            "Subject": "Invoice", "ThreatTypes": "Phish", "DeliveryAction": "Delivered", "DeliveryLocation": "Inbox/folder",
            "SenderIPv4": "203.0.113.9"});
        let (kind, streamed) = record(
            json!({"time": "2026-11-20T09:15:01Z", "category": "AdvancedHunting-EmailEvents",
            "properties": props.clone()}),
        );
        assert_eq!(kind, "defender-emailevents");
        assert_eq!(streamed.key, "email:ab-1:adele@contoso.com");
        assert_eq!(streamed.sender.as_deref(), Some("billing@evil.example"));
        assert_eq!(streamed.ip, Some("203.0.113.9".parse().unwrap()));
        let (_, row) = record(props);
        assert_eq!((row.key, row.kind), (streamed.key, MailKind::Email));
    }

    #[test]
    fn each_table_is_told_by_its_columns() {
        let (kind, a) = record(json!({"Timestamp": "2026-11-20T09:15:00Z", "NetworkMessageId": "m",
            "RecipientEmailAddress": "a@b.c", "FileName": "invoice.docm", "SHA256": "AB".repeat(32), "ThreatTypes": "Malware"}));
        assert_eq!(
            (kind, a.sha256.unwrap()),
            ("defender-emailattachmentinfo", "ab".repeat(32))
        );
        let (kind, u) = record(json!({"Timestamp": "2026-11-20T09:15:00Z", "NetworkMessageId": "m",
            "Url": "https://evil.example/login", "UrlDomain": "evil.example", "UrlLocation": "Body"}));
        assert_eq!(
            (kind, u.key.as_str()),
            ("defender-emailurlinfo", "url:m:https://evil.example/login")
        );
        let (kind, c) = record(json!({"Timestamp": "2026-11-20T09:20:00Z", "NetworkMessageId": "m",
            "Url": "https://evil.example/login", "ActionType": "ClickAllowed", "AccountUpn": "A@B.C", "IsClickedThrough": "true",
            "IPAddress": "198.51.100.7"}));
        assert_eq!(kind, "defender-urlclickevents");
        assert_eq!(c.action.as_deref(), Some("ClickAllowed (clicked through)"));
        assert_eq!(c.recipient.as_deref(), Some("a@b.c"));
        // An empty AccountUpn: kept, keyed by what the row says.
        let (kind, c) = record(json!({"Timestamp": "2026-11-20T09:20:00Z", "NetworkMessageId": "m",
            "Url": "https://evil.example/login", "ActionType": "ClickAllowed", "AccountUpn": ""}));
        assert_eq!(kind, "defender-urlclickevents");
        assert_eq!(
            (c.recipient, c.key.as_str()),
            (None, "click:m::https://evil.example/login:1795166400000")
        );
        let (kind, _) = record(json!({"Timestamp": "2026-11-20T09:30:00Z", "NetworkMessageId": "m",
            "RecipientEmailAddress": "a@b.c", "ActionType": "User reported phish", "ActionTrigger": "User"}));
        assert_eq!(kind, "defender-emailpostdeliveryevents");
    }

    #[test]
    fn incomplete_and_foreign_records_are_explained() {
        let Normalized::Bad(why) = normalize(&json!({"Type": "EmailEvents", "Timestamp": "2026-11-20T09:15:00Z",
            "RecipientEmailAddress": "a@b.c"}))
        else {
            panic!("accepted")
        };
        assert!(why.contains("NetworkMessageId"), "{why}");
        let Normalized::Bad(why) = normalize(&json!({"Timestamp": "2026-11-20T09:20:00Z",
            "Url": "https://evil.example/login", "ActionType": "ClickAllowed", "AccountUpn": ""}))
        else {
            panic!("a click with neither its account nor its message was accepted")
        };
        assert!(why.contains("AccountUpn or NetworkMessageId"), "{why}");
        assert!(matches!(
            normalize(&json!({"category": "AdvancedHunting-DeviceProcessEvents", "properties": {"a": 1}})),
            Normalized::Ignored { .. }
        ));
        assert!(matches!(normalize(&json!({"foo": 1})), Normalized::Bad(_)));
    }
}
