//! Exchange inbox-rule and mailbox-forwarding changes from the Microsoft 365 unified
//! audit log → [`MailRecord`]s of kind `InboxRule`: Sentinel `OfficeActivity` rows
//! (CSV or JSON export, `Parameters` as JSON in a cell) and Management Activity API
//! records (`Operation`, `Workload`, `Parameters[]`). Other audit operations are
//! recognised and ignored.

use std::net::IpAddr;

use serde_json::Value;

use super::fields::{address, list, record_hash, text, time};
use super::{InboxRule, MailKind, MailRecord, Normalized};

/// Operations that create or change what happens to a mailbox's incoming mail.
const RULE_OPERATIONS: [&str; 5] = [
    "New-InboxRule",
    "Set-InboxRule",
    "Enable-InboxRule",
    "Set-Mailbox",
    "New-TransportRule",
];

/// Parameters that name where mail goes.
const FORWARD_PARAMETERS: [&str; 5] = [
    "ForwardTo",
    "ForwardAsAttachmentTo",
    "RedirectTo",
    "ForwardingSmtpAddress",
    "ForwardingAddress",
];

/// Parameters that are neither a condition nor an action.
const OTHER_PARAMETERS: [&str; 9] = [
    "Name",
    "Identity",
    "Mailbox",
    "Force",
    "AlwaysDeleteOutlookRulesBlob",
    "StopProcessingRules",
    "DeliverToMailboxAndForward",
    "Priority",
    "Confirm",
];

/// Folders a rule moves mail to so its owner does not see it.
const HIDING_FOLDERS: [&str; 7] = [
    "junk",
    "deleted",
    "rss",
    "conversation history",
    "archive",
    "notes",
    "sync issues",
];

/// An audit record: `Some` with what it holds, `None` when `v` is not one.
pub(crate) fn normalize(v: &Value) -> Option<Normalized<MailRecord>> {
    let operation = text(v, &["Operation"])?;
    let workload = text(v, &["Workload", "OfficeWorkload"]);
    let is_audit = text(v, &["Type"]).is_some_and(|t| t.eq_ignore_ascii_case("OfficeActivity"))
        || (workload.is_some() && text(v, &["RecordType"]).is_some());
    if !is_audit {
        return None;
    }
    let failed =
        text(v, &["ResultStatus"]).is_some_and(|s| s.eq_ignore_ascii_case("false") || s.eq_ignore_ascii_case("failed"));
    if failed || !RULE_OPERATIONS.iter().any(|o| o.eq_ignore_ascii_case(&operation)) {
        return Some(Normalized::Ignored { kind: "m365-audit" });
    }
    Some(match record(v, operation) {
        Ok(Some(item)) => Normalized::Record {
            kind: "m365-audit-inbox-rule",
            item,
        },
        // A Set-Mailbox that does not touch forwarding.
        Ok(None) => Normalized::Ignored { kind: "m365-audit" },
        Err(e) => Normalized::Bad(e),
    })
}

/// `Parameters` as (name, value) pairs.
fn parameters(v: &Value) -> Vec<(String, String)> {
    list(v, "Parameters")
        .iter()
        .filter_map(|p| Some((text(p, &["Name"])?, text(p, &["Value"]).unwrap_or_default())))
        .collect()
}

/// Addresses of a forwarding parameter: `a@x;b@y`, `smtp:a@x`, `"Name" [SMTP:a@x]`.
fn addresses(value: &str) -> Vec<String> {
    value
        .split([';', ','])
        .filter_map(|part| {
            let part = part.trim();
            let inner = match (part.rfind('['), part.rfind(']')) {
                (Some(a), Some(b)) if a < b => &part[a + 1..b],
                _ => part,
            };
            let bare = inner
                .split_once(':')
                .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("smtp"))
                .map_or(inner, |(_, rest)| rest);
            address(Some(bare.to_string())).filter(|a| a.contains('@'))
        })
        .collect()
}

/// The client address as the audit log writes it: `1.2.3.4`, `1.2.3.4:5678`, `[v6]:port`.
fn client_ip(s: &str) -> Option<IpAddr> {
    let s = s.trim();
    if let Ok(ip) = s.parse() {
        return Some(ip);
    }
    if let Some(rest) = s.strip_prefix('[') {
        return rest.split(']').next()?.parse().ok();
    }
    s.rsplit_once(':')?.0.parse().ok()
}

fn domain(address: &str) -> Option<String> {
    address.rsplit_once('@').map(|(_, d)| d.to_string())
}

fn record(v: &Value, operation: String) -> Result<Option<MailRecord>, String> {
    let time_ms = time(
        v,
        &[
            "CreationTime",
            "TimeGenerated",
            "TimeGenerated [UTC]",
            "Start_Time [UTC]",
            "ElevationTime [UTC]",
        ],
    )
    .ok_or("no readable CreationTime or TimeGenerated")?;
    let params = parameters(v);
    let param = |name: &str| {
        params
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.clone())
    };
    let is_true = |name: &str| param(name).is_some_and(|x| x.eq_ignore_ascii_case("true"));
    let actor = address(text(v, &["UserId"]));
    let identity = param("Identity");
    let mailbox_op = operation.eq_ignore_ascii_case("Set-Mailbox");
    // The mailbox the rule belongs to: named in the parameters, else the actor's own.
    let owner = address(param("Mailbox"))
        .or_else(|| address(identity.clone().filter(|i| mailbox_op && i.contains('@'))))
        .or_else(|| actor.clone())
        .ok_or("no UserId or Mailbox")?;

    let forward_to: Vec<String> = FORWARD_PARAMETERS
        .iter()
        .filter_map(|p| param(p))
        .flat_map(|value| addresses(&value))
        .collect();
    if mailbox_op && forward_to.is_empty() {
        return Ok(None);
    }
    let mut hides = Vec::new();
    if is_true("DeleteMessage") || is_true("SoftDeleteMessage") {
        hides.push("deletes it".to_string());
    }
    if let Some(folder) = param("MoveToFolder").or_else(|| param("CopyToFolder")) {
        let lower = folder.to_ascii_lowercase();
        if HIDING_FOLDERS.iter().any(|h| lower.contains(h)) {
            hides.push(format!("moves it to {folder}"));
        }
    }
    if is_true("MarkAsRead") {
        hides.push("marks it read".to_string());
    }
    let conditions: Vec<String> = params
        .iter()
        .filter(|(n, _)| {
            let known = |list: &[&str]| list.iter().any(|k| k.eq_ignore_ascii_case(n));
            !known(&OTHER_PARAMETERS)
                && !known(&FORWARD_PARAMETERS)
                && !known(&[
                    "DeleteMessage",
                    "SoftDeleteMessage",
                    "MoveToFolder",
                    "CopyToFolder",
                    "MarkAsRead",
                ])
        })
        .map(|(n, value)| format!("{n}={value}"))
        .collect();
    let name = param("Name")
        .or_else(|| identity.filter(|_| !mailbox_op))
        .or_else(|| text(v, &["OfficeObjectId"]).and_then(|o| o.rsplit('\\').next().map(str::to_string)));
    let mut own_domains: Vec<String> = [domain(&owner), actor.as_deref().and_then(domain)]
        .into_iter()
        .flatten()
        .collect();
    own_domains.extend(text(v, &["OrganizationName"]).map(|o| o.to_ascii_lowercase()));
    own_domains.sort();
    own_domains.dedup();

    let mut actions: Vec<String> = hides.clone();
    if !forward_to.is_empty() {
        actions.push(format!("forwards it to {}", forward_to.join(", ")));
    }
    let key = text(v, &["Id", "OfficeId", "SourceRecordId"]).unwrap_or_else(|| record_hash(v));
    Ok(Some(MailRecord {
        key: format!("inbox_rule:{}:{owner}", key.to_ascii_lowercase()),
        kind: MailKind::InboxRule,
        time_ms,
        network_message_id: None,
        sender: actor.filter(|a| *a != owner),
        recipient: Some(owner),
        subject: name.clone(),
        threat_types: None,
        detection_methods: (!conditions.is_empty()).then(|| conditions.join("; ")),
        delivery_action: (!actions.is_empty()).then(|| actions.join("; ")),
        delivery_location: param("MoveToFolder"),
        file_name: None,
        sha256: None,
        url: None,
        action: Some(operation.clone()),
        ip: text(v, &["ClientIP", "ClientIPAddress", "ActorIpAddress"]).and_then(|s| client_ip(&s)),
        rule: Some(Box::new(InboxRule {
            operation,
            name,
            forward_to,
            hides,
            conditions,
            own_domains,
        })),
        raw: v.to_string(),
    }))
}

impl InboxRule {
    /// Forwarding targets outside the owner's organisation: not one of its domains
    /// or their subdomains, and not the tenant's own name (`contoso.com` for
    /// `contoso.onmicrosoft.com`).
    pub fn external_targets(&self) -> Vec<&str> {
        let own = |d: &str| {
            self.own_domains.iter().any(|o| {
                let tenant = o.strip_suffix(".onmicrosoft.com");
                d == o || d.ends_with(&format!(".{o}")) || tenant.is_some_and(|t| d.split('.').rev().nth(1) == Some(t))
            })
        };
        self.forward_to
            .iter()
            .filter(|a| domain(a).is_none_or(|d| !own(&d)))
            .map(String::as_str)
            .collect()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rule(v: Value) -> MailRecord {
        match normalize(&v) {
            Some(Normalized::Record { item, .. }) => item,
            Some(Normalized::Bad(e)) => panic!("bad: {e}"),
            _ => panic!("not an inbox-rule record"),
        }
    }

    #[test]
    fn a_sentinel_row_with_parameters_in_a_cell_is_read() {
        let r = rule(
            json!({"Type": "OfficeActivity", "Operation": "New-InboxRule", "OfficeWorkload": "Exchange",
            "UserId": "AdeleV@contoso.OnMicrosoft.com", "ClientIP": "[2a01:110:8068:7:9bf8:aa87:e00a:5f1f]:36185",
            "OfficeId": "D28096BA", "Start_Time [UTC]": "4/26/2021, 7:17:10.000 AM", "ResultStatus": "TRUE",
            "Parameters": "[{\"Name\":\"MoveToFolder\",\"Value\":\"Junk Email\"},{\"Name\":\"Name\",\"Value\":\"rule2\"},{\"Name\":\"SubjectContainsWords\",\"Value\":\"do not open\"},{\"Name\":\"StopProcessingRules\",\"Value\":\"True\"}]"}),
        );
        assert_eq!(r.key, "inbox_rule:d28096ba:adelev@contoso.onmicrosoft.com");
        assert_eq!(r.subject.as_deref(), Some("rule2"));
        assert_eq!(r.ip, Some("2a01:110:8068:7:9bf8:aa87:e00a:5f1f".parse().unwrap()));
        let rule = r.rule.unwrap();
        assert_eq!(rule.hides, ["moves it to Junk Email"]);
        assert_eq!(rule.conditions, ["SubjectContainsWords=do not open"]);
        assert!(rule.forward_to.is_empty());
    }

    #[test]
    fn forwarding_targets_are_read_and_judged_against_the_organisation() {
        let set_mailbox = |target: &str| {
            json!({"Operation": "Set-Mailbox", "Workload": "Exchange", "RecordType": 1, "Id": "1",
                "CreationTime": "2022-12-12 22:19:00", "UserId": "homer@simpsons.onmicrosoft.com",
                "OrganizationName": "simpsons.onmicrosoft.com", "ClientIP": "1.2.3.4:443",
                "Parameters": [{"Name": "Identity", "Value": "marge@simpsons.onmicrosoft.com"},
                    {"Name": "ForwardingSmtpAddress", "Value": target}]})
        };
        let r = rule(set_mailbox("smtp:Peter@FamilyGuy.com"));
        assert_eq!(r.recipient.as_deref(), Some("marge@simpsons.onmicrosoft.com"));
        assert_eq!(r.sender.as_deref(), Some("homer@simpsons.onmicrosoft.com"));
        assert_eq!(r.ip, Some("1.2.3.4".parse().unwrap()));
        assert_eq!(r.rule.unwrap().external_targets(), ["peter@familyguy.com"]);
        for internal in ["smtp:marge@simpsons.com", "bart@mail.simpsons.onmicrosoft.com"] {
            assert!(
                rule(set_mailbox(internal)).rule.unwrap().external_targets().is_empty(),
                "{internal}"
            );
        }
        assert_eq!(
            addresses("a@x.com;\"B\" [SMTP:b@y.com], nobody"),
            ["a@x.com", "b@y.com"]
        );
    }

    #[test]
    fn other_operations_and_failures_are_ignored() {
        let login = json!({"Operation": "UserLoginFailed", "Workload": "AzureActiveDirectory", "RecordType": 15,
            "CreationTime": "2022-12-12 15:57:57", "UserId": "a@b.c"});
        assert!(matches!(normalize(&login), Some(Normalized::Ignored { .. })));
        let no_forwarding = json!({"Operation": "Set-Mailbox", "Workload": "Exchange", "RecordType": 1,
            "CreationTime": "2022-12-12 15:57:57", "UserId": "a@b.c",
            "Parameters": [{"Name": "Identity", "Value": "a@b.c"}, {"Name": "RetainDeletedItemsFor", "Value": "30"}]});
        assert!(matches!(normalize(&no_forwarding), Some(Normalized::Ignored { .. })));
        assert!(normalize(&json!({"Operation": "x"})).is_none());
    }
}
