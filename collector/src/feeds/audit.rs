//! Directory, audit and cloud-app records → [`AuditEvent`], recognised by shape:
//! - Entra ID audit logs: `AuditLogs` table rows (Log Analytics JSON or CSV export,
//!   `InitiatedBy` / `TargetResources` / `AdditionalDetails` as JSON cells),
//!   diagnostic-settings records (`properties` with `activityDisplayName` and
//!   `targetResources`) and Graph `directoryAudits` objects: application and service
//!   principal credentials, consents, permission grants, role assignments, deleted
//!   authentication methods, policy changes. Other operations are ignored.
//! - Entra ID Protection: `AADRiskyUsers` / `AADUserRiskEvents` rows, `RiskyUsers` /
//!   `UserRiskEvents` diagnostic records, Graph `riskyUsers` objects.
//! - Okta System Log events that are not sign-ins: MFA factors removed
//!   (`user.mfa.factor.deactivate`, `reset_all`, `suspend`), admin privileges granted
//!   (`user.account.privilege.grant`, `group.privilege.grant`), policy changes
//!   (`policy.lifecycle.*`, `policy.rule.*`). Other events are ignored.
//! - Microsoft 365 audit log mailbox operations (`MailItemsAccessed`, `Send`,
//!   `SendAs`, `SendOnBehalf`, `HardDelete`, `SoftDelete`, `MoveToDeletedItems`,
//!   mailbox and folder permission changes) as `OfficeActivity` rows or Management
//!   Activity API records, and its Entra ID events (`Workload: AzureActiveDirectory`,
//!   the operations above with a trailing period).
//! - Defender XDR `CloudAppEvents` and `IdentityDirectoryEvents` rows or streaming
//!   records: every row is stored (a known action with its kind, the rest as `other`).

use serde_json::Value;

use super::Normalized;
use super::fields::{address, list, lookup, number, record_hash, text, time};
use crate::model::feed::{AuditEvent, AuditKind};

/// What this module made of a record: `None` when it is not one of its shapes.
pub(crate) fn normalize<T>(v: &Value) -> Option<Normalized<T>> {
    let (row, outer_category) = match (text(v, &["category"]), lookup(v, "properties")) {
        (Some(c), Some(p)) if p.is_object() => (p.into_owned(), Some(c)),
        _ => (v.clone(), None),
    };
    let table = text(&row, &["Type"]).or_else(|| text(v, &["Type"]));
    let streamed = outer_category
        .as_deref()
        .and_then(|c| c.strip_prefix("AdvancedHunting-"))
        .map(str::to_string);
    let named = |n: &str| {
        table.as_deref().is_some_and(|t| t.eq_ignore_ascii_case(n))
            || streamed.as_deref().is_some_and(|t| t.eq_ignore_ascii_case(n))
    };
    let category = |n: &[&str]| {
        outer_category
            .as_deref()
            .is_some_and(|c| n.iter().any(|x| x.eq_ignore_ascii_case(c)))
    };
    // A row or streaming record of another table is another reader's.
    if let Some(t) = table.as_deref().or(streamed.as_deref())
        && !TABLES.iter().any(|n| n.eq_ignore_ascii_case(t))
    {
        return None;
    }
    let unnamed = table.is_none() && streamed.is_none();
    let (name, result) = if named("CloudAppEvents") || (unnamed && cloud_app_shaped(&row)) {
        (
            "defender-cloudappevents",
            defender(&row, v, "defender-cloudappevents", cloud_app),
        )
    } else if named("IdentityDirectoryEvents") || (unnamed && identity_directory_shaped(&row)) {
        (
            "defender-identitydirectoryevents",
            defender(&row, v, "defender-identitydirectoryevents", identity_directory),
        )
    } else if named("AADRiskyUsers")
        || named("AADUserRiskEvents")
        || category(&["RiskyUsers", "UserRiskEvents", "RiskyServicePrincipals"])
        || risky_user_shaped(&row)
    {
        ("entra-riskyusers", risky_user(&row, v))
    } else if named("AuditLogs") || category(&["AuditLogs"]) || entra_audit_shaped(&row) {
        ("entra-auditlogs", entra_audit(&row, v))
    } else if okta_shaped(v) && text(v, &["eventType"]).is_some_and(|t| okta_kind(&t).is_some()) {
        ("okta-systemlog", okta(v))
    } else if m365_shaped(v) && text(v, &["Operation"]).is_some_and(|o| mailbox_kind(&o).is_some()) {
        ("m365-audit-mailbox", m365(v))
    } else if m365_shaped(v)
        && text(v, &["Workload", "OfficeWorkload"]).is_some_and(|w| w.eq_ignore_ascii_case("AzureActiveDirectory"))
        && text(v, &["Operation"]).is_some_and(|o| entra_kind(o.trim_end_matches('.')).is_some())
    {
        ("m365-audit-directory", m365_directory(v))
    } else {
        return None;
    };
    Some(match result {
        Ok(Some((kind, item))) => Normalized::Audit {
            kind,
            item: Box::new(item),
        },
        Ok(None) => Normalized::Ignored { kind: name },
        Err(e) => Normalized::Bad(e),
    })
}

/// Table names (`Type` column, `AdvancedHunting-<Table>` category) this module reads.
const TABLES: [&str; 6] = [
    "CloudAppEvents",
    "IdentityDirectoryEvents",
    "AADRiskyUsers",
    "AADUserRiskEvents",
    "AuditLogs",
    "OfficeActivity",
];

type Made = Result<Option<(&'static str, AuditEvent)>, String>;

fn event(provider: &'static str, kind: AuditKind, time_ms: u64, operation: String, raw: &Value) -> AuditEvent {
    AuditEvent {
        key: String::new(),
        provider,
        kind,
        time_ms,
        operation,
        actor: None,
        target_user: None,
        app_id: None,
        app_name: None,
        mailbox: None,
        ip: None,
        detail: None,
        items: 1,
        failed: false,
        risk_level: None,
        publisher_verified: None,
        raw: raw.to_string(),
    }
}

fn lower(s: Option<String>) -> Option<String> {
    s.map(|s| s.to_ascii_lowercase()).filter(|s| !s.is_empty())
}

/// A client address as the logs write it: `1.2.3.4`, `1.2.3.4:5678`, `[v6]:port`.
fn ip_of(s: Option<String>) -> Option<std::net::IpAddr> {
    let s = s?;
    let s = s.trim();
    if let Ok(ip) = s.parse() {
        return Some(ip);
    }
    if let Some(rest) = s.strip_prefix('[') {
        return rest.split(']').next()?.parse().ok();
    }
    s.rsplit_once(':')?.0.parse().ok()
}

fn is_guid(s: &str) -> bool {
    let s = s.trim_matches(|c| c == '"' || c == ' ');
    s.len() == 36
        && s.bytes().filter(|b| *b == b'-').count() == 4
        && s.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-')
}

fn first_guid(s: &str) -> Option<String> {
    s.split(|c: char| !(c.is_ascii_hexdigit() || c == '-'))
        .find(|w| is_guid(w))
        .map(str::to_ascii_lowercase)
}

// ---- Entra ID audit logs ----

/// A `directoryAudits` object or `AuditLogs` row without its table name.
fn entra_audit_shaped(v: &Value) -> bool {
    text(v, &["activityDisplayName", "OperationName"]).is_some()
        && lookup(v, "targetResources").is_some()
        && (lookup(v, "initiatedBy").is_some() || text(v, &["loggedByService"]).is_some())
}

/// The kind of an Entra audit operation, when Ward reads it.
fn entra_kind(op: &str) -> Option<AuditKind> {
    let o = op.to_ascii_lowercase();
    // "Update application – Certificates and secrets management" (an en dash in the
    // portal's name; a hyphen in some exports).
    if o.contains("certificates and secrets management")
        || (o.contains("service principal credentials") && !o.starts_with("remove"))
    {
        Some(AuditKind::AppCredential)
    } else if o.starts_with("consent to application") {
        Some(AuditKind::Consent)
    } else if o.starts_with("add delegated permission grant")
        || o.starts_with("add app role assignment to service principal")
    {
        Some(AuditKind::PermissionGrant)
    } else if o.starts_with("add member to role") || o.starts_with("add eligible member to role") {
        // PIM's "requested" is not the grant; its "completed" is.
        (!o.contains("requested")).then_some(AuditKind::RoleAssigned)
    } else if o.contains("deleted security info") || o.starts_with("delete authentication method") {
        Some(AuditKind::MfaFactorRemoved)
    } else if o.contains("conditional access policy") || o == "update policy" || o == "added policy" {
        Some(AuditKind::PolicyChanged)
    } else {
        None
    }
}

/// Permissions that give an application mail, files or the directory.
const RISKY_PERMISSIONS: [&str; 14] = [
    "mail.read",
    "mail.readwrite",
    "mail.send",
    "mailboxsettings.readwrite",
    "full_access_as_app",
    "full_access_as_user",
    "ews.accessasuser.all",
    "files.read.all",
    "files.readwrite.all",
    "sites.readwrite.all",
    "directory.readwrite.all",
    "approleassignment.readwrite.all",
    "application.readwrite.all",
    "rolemanagement.readwrite.directory",
];

/// The risky permissions named in `text` (scopes are space, comma or bracket separated).
pub fn risky_permissions(text: &str) -> Vec<&'static str> {
    let words: Vec<String> = text
        .split(|c: char| c.is_whitespace() || matches!(c, ',' | ';' | '[' | ']' | '"' | '\'' | ':' | '='))
        .map(str::to_ascii_lowercase)
        .collect();
    RISKY_PERMISSIONS
        .into_iter()
        .filter(|p| words.iter().any(|w| w == p))
        .collect()
}

fn entra_audit(row: &Value, outer: &Value) -> Made {
    let op = text(row, &["activityDisplayName", "OperationName", "operationName"])
        .or_else(|| text(outer, &["operationName"]))
        .ok_or("no activityDisplayName / OperationName")?;
    let Some(kind) = entra_kind(&op) else {
        return Ok(None);
    };
    let time_ms = time(
        row,
        &[
            "activityDateTime",
            "ActivityDateTime",
            "TimeGenerated",
            "TimeGenerated [UTC]",
        ],
    )
    .or_else(|| time(outer, &["time"]))
    .ok_or("no readable activityDateTime / TimeGenerated")?;
    let mut e = event("entra", kind, time_ms, op, outer);
    e.failed = text(row, &["result", "Result"]).is_some_and(|r| r.eq_ignore_ascii_case("failure"));
    e.actor = address(text(row, &["initiatedBy.user.userPrincipalName"])).or_else(|| {
        lower(text(
            row,
            &["initiatedBy.app.displayName", "initiatedBy.app.servicePrincipalName"],
        ))
    });
    e.ip = ip_of(text(row, &["initiatedBy.user.ipAddress"]))
        .or_else(|| ip_of(text(outer, &["callerIpAddress"])))
        .or_else(|| {
            list(row, "additionalDetails")
                .iter()
                .find(|d| text(d, &["key"]).is_some_and(|k| k.eq_ignore_ascii_case("ipaddr")))
                .and_then(|d| ip_of(text(d, &["value"])))
        });
    let targets = list(row, "targetResources");
    // Modified properties of every target, (name, new value) with the JSON quotes off.
    let modified: Vec<(String, String)> = targets
        .iter()
        .flat_map(|t| list(t, "modifiedProperties"))
        .filter_map(|m| {
            let name = text(&m, &["displayName"])?;
            let value = text(&m, &["newValue"]).unwrap_or_default();
            Some((name, value.trim().trim_matches('"').to_string()))
        })
        .collect();
    let prop = |name: &str| {
        modified
            .iter()
            .find(|(n, v)| n.eq_ignore_ascii_case(name) && !v.is_empty())
            .map(|(_, v)| v.clone())
    };
    let of_type = |types: &[&str]| {
        targets
            .iter()
            .find(|t| text(t, &["type"]).is_some_and(|ty| types.iter().any(|x| x.eq_ignore_ascii_case(&ty))))
            .cloned()
    };
    let user = of_type(&["User"]);
    e.target_user = user
        .as_ref()
        .and_then(|u| address(text(u, &["userPrincipalName"])).or_else(|| lower(text(u, &["displayName"]))));
    let app = of_type(&["ServicePrincipal", "Application"]);
    match kind {
        AuditKind::AppCredential => {
            e.app_name = app.as_ref().and_then(|a| text(a, &["displayName"]));
            // The app id (client id) that sign-ins and mailbox audit records name: in
            // AdditionalDetails or a modified property; else the target's object id.
            e.app_id = detail_value(row, "AppId")
                .or_else(|| prop("AppId"))
                .and_then(|s| first_guid(&s))
                .or_else(|| app.as_ref().and_then(|a| lower(text(a, &["appId", "id"]))));
            e.detail = [prop("KeyDescription"), prop("KeyType")]
                .into_iter()
                .flatten()
                .reduce(|a, b| format!("{a}, {b}"))
                .or_else(|| prop("Included Updated Properties"));
        }
        AuditKind::Consent | AuditKind::PermissionGrant => {
            // An app role assignment names the client in ServicePrincipal.*; the
            // target of a consent is the client itself.
            e.app_name =
                prop("ServicePrincipal.DisplayName").or_else(|| app.as_ref().and_then(|a| text(a, &["displayName"])));
            e.app_id = prop("ServicePrincipal.AppId")
                .or_else(|| prop("TargetId.ServicePrincipalNames"))
                .and_then(|s| first_guid(&s))
                .or_else(|| app.as_ref().and_then(|a| lower(text(a, &["appId", "id"]))));
            e.detail = consent_detail(&prop);
            e.publisher_verified = verified(row, &modified);
        }
        AuditKind::RoleAssigned => {
            e.detail = of_type(&["Role"])
                .and_then(|r| text(&r, &["displayName"]))
                .or_else(|| prop("Role.DisplayName"));
        }
        _ => {
            e.detail =
                prop("Included Updated Properties").or_else(|| targets.first().and_then(|t| text(t, &["displayName"])));
        }
    }
    e.key = match text(row, &["id", "Id"]) {
        Some(id) => format!("entra-audit:{}", id.to_ascii_lowercase()),
        None => format!("entra-audit:sha256:{}", record_hash(outer)),
    };
    // PIM writes one id for the request's steps: the operation keeps them apart.
    if e.key.starts_with("entra-audit:pim_") {
        e.key = format!("{}:{}", e.key, e.operation.to_ascii_lowercase());
    }
    Ok(Some(("entra-auditlogs", e)))
}

/// What a consent or grant gave: its permissions, and whether an admin consented
/// (for all users).
fn consent_detail(prop: &dyn Fn(&str) -> Option<String>) -> Option<String> {
    let perms: Vec<String> = [
        "ConsentAction.Permissions",
        "DelegatedPermissionGrant.Scope",
        "AppRole.Value",
        "AppRole.DisplayName",
    ]
    .iter()
    .filter_map(|n| prop(n))
    .collect();
    let admin = prop("ConsentContext.IsAdminConsent").is_some_and(|v| v.eq_ignore_ascii_case("true"));
    let all = prop("ConsentContext.OnBehalfOfAll").is_some_and(|v| v.eq_ignore_ascii_case("true"));
    let mut detail = perms.join(" ");
    if admin || all {
        detail = format!("{detail} (admin consent{})", if all { " for all users" } else { "" });
    }
    Some(detail).filter(|d| !d.trim().is_empty())
}

/// An Entra ID event of the Microsoft 365 audit log (Management Activity API,
/// `Workload: AzureActiveDirectory`; operations end with a period): the same
/// operations as the Entra audit log, with `Actor[]`, `Target[]` (type 5: a user
/// principal name; 1: a name) and `ModifiedProperties[]` instead of its columns.
fn m365_directory(v: &Value) -> Made {
    let op = text(v, &["Operation"]).unwrap_or_default();
    let Some(kind) = entra_kind(op.trim_end_matches('.')) else {
        return Ok(None);
    };
    let time_ms = time(v, &["CreationTime", "TimeGenerated"]).ok_or("no readable CreationTime or TimeGenerated")?;
    let mut e = event("entra", kind, time_ms, op.trim_end_matches('.').to_string(), v);
    e.failed = text(v, &["ResultStatus"])
        .is_some_and(|s| s.eq_ignore_ascii_case("failure") || s.eq_ignore_ascii_case("false"));
    let ids = |name: &str, ty: i64| -> Vec<String> {
        list(v, name)
            .iter()
            .filter(|x| number(x, &["Type"]) == Some(ty as f64))
            .filter_map(|x| text(x, &["ID"]))
            .collect()
    };
    e.actor = address(text(v, &["UserId"]).filter(|u| u.contains('@')))
        .or_else(|| address(ids("Actor", 5).into_iter().next()))
        .or_else(|| lower(ids("Actor", 1).into_iter().next()))
        .or_else(|| lower(text(v, &["UserId"])));
    e.ip = ip_of(text(v, &["ActorIpAddress", "ClientIP"]));
    let modified: Vec<(String, String)> = list(v, "ModifiedProperties")
        .iter()
        .filter_map(|m| {
            let name = text(m, &["Name"])?;
            let value = text(m, &["NewValue"]).unwrap_or_default();
            Some((name, value.trim().trim_matches('"').to_string()))
        })
        .collect();
    let prop = |name: &str| {
        modified
            .iter()
            .find(|(n, v)| n.eq_ignore_ascii_case(name) && !v.is_empty())
            .map(|(_, v)| v.clone())
    };
    // ExtendedProperties' additionalDetails holds the AppId of credential changes.
    let extended = list(v, "ExtendedProperties")
        .iter()
        .find(|p| text(p, &["Name"]).is_some_and(|n| n.eq_ignore_ascii_case("additionalDetails")))
        .and_then(|p| text(p, &["Value"]))
        .and_then(|t| serde_json::from_str::<Value>(&t).ok());
    e.target_user = address(ids("Target", 5).into_iter().next());
    let name = ids("Target", 1).into_iter().next();
    match kind {
        AuditKind::AppCredential => {
            e.app_name = name;
            e.app_id = extended
                .as_ref()
                .and_then(|x| text(x, &["AppId"]))
                .or_else(|| prop("AppId"))
                .and_then(|s| first_guid(&s));
            e.detail = prop("KeyDescription").or_else(|| prop("Included Updated Properties"));
        }
        AuditKind::Consent | AuditKind::PermissionGrant => {
            e.app_name = prop("ServicePrincipal.DisplayName").or(name);
            e.app_id = prop("ServicePrincipal.AppId")
                .or_else(|| prop("TargetId.ServicePrincipalNames"))
                .and_then(|s| first_guid(&s));
            e.detail = consent_detail(&prop);
            e.publisher_verified = verified(v, &modified);
        }
        AuditKind::RoleAssigned => e.detail = prop("Role.DisplayName").or(name),
        _ => e.detail = prop("Included Updated Properties").or(name),
    }
    e.key = match text(v, &["Id"]) {
        Some(id) => format!("m365:{}:", id.to_ascii_lowercase()),
        None => format!("m365:sha256:{}", record_hash(v)),
    };
    Ok(Some(("m365-audit-directory", e)))
}

/// The value of `key` in the record's `additionalDetails` (`[{"key", "value"}]`).
fn detail_value(row: &Value, key: &str) -> Option<String> {
    list(row, "additionalDetails")
        .iter()
        .find(|d| text(d, &["key"]).is_some_and(|k| k.eq_ignore_ascii_case(key)))
        .and_then(|d| text(d, &["value"]))
}

/// Whether the application's publisher is verified, when the record says so.
fn verified(row: &Value, modified: &[(String, String)]) -> Option<bool> {
    let truth = |s: &str| match s.trim().to_ascii_lowercase().as_str() {
        "true" | "verified" => Some(true),
        "false" | "unverified" | "notverified" => Some(false),
        _ => None,
    };
    let named = |n: &str| {
        let n = n.to_ascii_lowercase();
        n.contains("verifiedpublisher") || n.contains("publisherverified") || n == "appverified"
    };
    modified
        .iter()
        .find(|(n, _)| named(n))
        .and_then(|(_, v)| truth(v).or_else(|| Some(!v.trim().is_empty() && v != "{}")))
        .or_else(|| {
            list(row, "additionalDetails")
                .iter()
                .find(|d| text(d, &["key"]).is_some_and(|k| named(&k)))
                .and_then(|d| truth(&text(d, &["value"]).unwrap_or_default()))
        })
}

// ---- Entra ID Protection ----

fn risky_user_shaped(v: &Value) -> bool {
    text(v, &["riskLevel", "RiskLevel"]).is_some()
        && text(v, &["riskState", "RiskState"]).is_some()
        && text(v, &["userPrincipalName", "UserPrincipalName"]).is_some()
        && text(
            v,
            &[
                "riskLastUpdatedDateTime",
                "RiskLastUpdatedDateTime",
                "detectedDateTime",
                "DetectedDateTime",
                "riskEventType",
                "RiskEventType",
            ],
        )
        .is_some()
}

fn risky_user(row: &Value, outer: &Value) -> Made {
    let time_ms = time(
        row,
        &[
            "riskLastUpdatedDateTime",
            "detectedDateTime",
            "activityDateTime",
            "TimeGenerated",
            "TimeGenerated [UTC]",
        ],
    )
    .or_else(|| time(outer, &["time"]))
    .ok_or("no readable riskLastUpdatedDateTime / detectedDateTime")?;
    let user = address(text(row, &["userPrincipalName"])).ok_or("no userPrincipalName")?;
    let operation = text(row, &["riskEventType"]).unwrap_or_else(|| "riskyUser".into());
    let mut e = event("entra", AuditKind::RiskyUser, time_ms, operation, outer);
    e.target_user = Some(user.clone());
    e.risk_level = lower(text(row, &["riskLevel"]));
    e.ip = ip_of(text(row, &["ipAddress"]));
    e.detail = [text(row, &["riskState"]), text(row, &["riskDetail"])]
        .into_iter()
        .flatten()
        .reduce(|a, b| format!("{a}, {b}"));
    // A user's risk changes over time: each change is its own record.
    e.key = match text(row, &["id", "Id"]) {
        Some(id) => format!("entra-risk:{}:{time_ms}", id.to_ascii_lowercase()),
        None => format!("entra-risk:sha256:{}", record_hash(row)),
    };
    Ok(Some(("entra-riskyusers", e)))
}

// ---- Okta ----

/// An Okta System Log event (as `identity::okta_shaped`).
fn okta_shaped(v: &Value) -> bool {
    let object = |name: &str| lookup(v, name).is_some_and(|o| o.is_object());
    text(v, &["eventType"]).is_some() && (text(v, &["uuid"]).is_some() || object("actor") || object("outcome"))
}

fn okta_kind(event_type: &str) -> Option<AuditKind> {
    match event_type {
        "user.mfa.factor.deactivate"
        | "user.mfa.factor.reset_all"
        | "user.mfa.factor.suspend"
        | "system.mfa.factor.deactivate" => Some(AuditKind::MfaFactorRemoved),
        "user.account.privilege.grant" | "group.privilege.grant" => Some(AuditKind::RoleAssigned),
        t if t.starts_with("policy.lifecycle.") || t.starts_with("policy.rule.") => Some(AuditKind::PolicyChanged),
        _ => None,
    }
}

fn okta(v: &Value) -> Made {
    let event_type = text(v, &["eventType"]).unwrap_or_default();
    let Some(kind) = okta_kind(&event_type) else {
        return Ok(None);
    };
    let time_ms = time(v, &["published"]).ok_or("Okta event without a published time")?;
    let mut e = event("okta", kind, time_ms, event_type, v);
    e.failed = text(v, &["outcome.result"])
        .is_some_and(|r| r.eq_ignore_ascii_case("FAILURE") || r.eq_ignore_ascii_case("DENY"));
    e.actor = address(text(v, &["actor.alternateId"]));
    e.ip = ip_of(text(v, &["client.ipAddress"]));
    let targets = list(v, "target");
    let target = |ty: &str| {
        targets
            .iter()
            .find(|t| text(t, &["type"]).is_some_and(|x| x.eq_ignore_ascii_case(ty)))
            .cloned()
    };
    e.target_user = target("User")
        .and_then(|u| address(text(&u, &["alternateId"])))
        // A system event about a user's factor names the user as the actor.
        .or_else(|| (kind == AuditKind::MfaFactorRemoved).then(|| e.actor.clone()).flatten());
    e.detail = match kind {
        AuditKind::RoleAssigned => {
            let group = target("UserGroup")
                .and_then(|g| text(&g, &["displayName"]))
                .map(|g| format!("group {g}"));
            [text(v, &["debugContext.debugData.privilegeGranted"]), group]
                .into_iter()
                .flatten()
                .reduce(|a, b| format!("{a}; {b}"))
        }
        AuditKind::MfaFactorRemoved => text(v, &["debugContext.debugData.factor", "outcome.reason"]).or_else(|| {
            targets.iter().find_map(|t| {
                text(t, &["displayName"]).filter(|_| text(t, &["type"]).is_some_and(|x| x.contains("Factor")))
            })
        }),
        _ => targets
            .iter()
            .find(|t| text(t, &["type"]).is_some_and(|x| x.to_ascii_lowercase().contains("policy")))
            .and_then(|t| text(t, &["displayName"])),
    }
    .or_else(|| text(v, &["displayMessage"]));
    // The event type too: exports were seen reusing one uuid and time for different events.
    e.key = match text(v, &["uuid"]) {
        Some(id) => format!("okta:{}:{time_ms}:{}", id.to_ascii_lowercase(), e.operation),
        None => format!("okta:sha256:{}", record_hash(v)),
    };
    Ok(Some(("okta-systemlog", e)))
}

// ---- Microsoft 365 audit log (Exchange mailbox operations) ----

/// Sentinel `OfficeActivity` rows and Management Activity API records.
fn m365_shaped(v: &Value) -> bool {
    text(v, &["Operation"]).is_some()
        && (text(v, &["Type"]).is_some_and(|t| t.eq_ignore_ascii_case("OfficeActivity"))
            || (text(v, &["Workload", "OfficeWorkload"]).is_some() && text(v, &["RecordType"]).is_some()))
}

fn mailbox_kind(op: &str) -> Option<AuditKind> {
    let o = op.to_ascii_lowercase();
    Some(match o.as_str() {
        "mailitemsaccessed" => AuditKind::MailAccess,
        "send" | "sendas" | "sendonbehalf" => AuditKind::MailSend,
        "harddelete" | "softdelete" | "movetodeleteditems" => AuditKind::MailDelete,
        "add-mailboxpermission"
        | "add-mailboxfolderpermission"
        | "set-mailboxfolderpermission"
        | "add-recipientpermission"
        | "addfolderpermissions"
        | "modifyfolderpermissions"
        | "updatefolderpermissions" => AuditKind::MailboxPermission,
        _ => return None,
    })
}

/// Mail items an audit record covers: the items listed per folder, else its
/// `OperationCount` (aggregated MailItemsAccessed records), else 1.
fn items_of(v: &Value) -> u64 {
    let listed: u64 = list(v, "Folders")
        .iter()
        .map(|f| list(f, "FolderItems").len() as u64)
        .sum::<u64>()
        + list(v, "AffectedItems").len() as u64;
    let count = number(v, &["OperationCount"])
        .filter(|n| *n >= 1.0)
        .map(|n| n.min(1e9) as u64);
    count.unwrap_or(0).max(listed).max(1)
}

fn folders_of(v: &Value) -> Option<String> {
    let mut paths: Vec<String> = list(v, "Folders").iter().filter_map(|f| text(f, &["Path"])).collect();
    paths.extend(text(v, &["Folder.Path", "DestFolder.Path"]));
    paths.dedup();
    (!paths.is_empty()).then(|| paths.join(", "))
}

fn m365(v: &Value) -> Made {
    let op = text(v, &["Operation"]).unwrap_or_default();
    let Some(kind) = mailbox_kind(&op) else {
        return Ok(None);
    };
    let time_ms = time(v, &["CreationTime", "TimeGenerated", "TimeGenerated [UTC]"])
        .ok_or("no readable CreationTime or TimeGenerated")?;
    let mut e = event("m365", kind, time_ms, op, v);
    e.failed =
        text(v, &["ResultStatus"]).is_some_and(|s| s.eq_ignore_ascii_case("false") || s.eq_ignore_ascii_case("failed"));
    e.actor = address(text(v, &["UserId"]));
    e.mailbox = address(text(v, &["MailboxOwnerUPN"]));
    e.ip = ip_of(text(
        v,
        &["ClientIPAddress", "ClientIP", "Client_IPAddress", "ActorIpAddress"],
    ));
    e.app_id = text(v, &["ClientAppId", "AppId"]).and_then(|s| first_guid(&s));
    e.app_name = text(v, &["ClientAppName", "AppDisplayName"]);
    e.items = items_of(v);
    let params: Vec<(String, String)> = list(v, "Parameters")
        .iter()
        .filter_map(|p| Some((text(p, &["Name"])?, text(p, &["Value"]).unwrap_or_default())))
        .collect();
    let param = |n: &str| {
        params
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(n))
            .map(|(_, v)| v.clone())
    };
    e.detail = match kind {
        AuditKind::MailAccess => {
            let mode = text(v, &["OperationProperties.MailAccessType"]).or_else(|| {
                list(v, "OperationProperties")
                    .iter()
                    .find(|p| text(p, &["Name"]).is_some_and(|n| n == "MailAccessType"))
                    .and_then(|p| text(p, &["Value"]))
            });
            [mode, folders_of(v)]
                .into_iter()
                .flatten()
                .reduce(|a, b| format!("{a}: {b}"))
        }
        AuditKind::MailSend => {
            let as_whom = text(v, &["SendAsUserSmtp", "SendOnBehalfOfUserSmtp"]).map(|a| format!("as {a}"));
            [as_whom, text(v, &["Item.Subject"])]
                .into_iter()
                .flatten()
                .reduce(|a, b| format!("{a}: {b}"))
        }
        AuditKind::MailDelete => folders_of(v),
        _ => {
            // Add-MailboxPermission -Identity <mailbox> -User <grantee> -AccessRights FullAccess
            if e.mailbox.is_none() {
                e.mailbox = address(param("Identity")).filter(|m| m.contains('@'));
            }
            e.target_user = address(param("User").or_else(|| param("Trustee")))
                .or_else(|| address(text(v, &["Item.ParentFolder.MemberUpn", "MemberUpn"])));
            [
                param("AccessRights"),
                text(v, &["Item.ParentFolder.MemberRights", "MemberRights"]),
            ]
            .into_iter()
            .flatten()
            .reduce(|a, b| format!("{a}, {b}"))
        }
    };
    if e.mailbox.is_none()
        && matches!(
            kind,
            AuditKind::MailSend | AuditKind::MailDelete | AuditKind::MailAccess
        )
    {
        e.mailbox = e.actor.clone().filter(|a| a.contains('@'));
    }
    e.key = match text(v, &["Id", "OfficeId"]) {
        Some(id) => format!(
            "m365:{}:{}",
            id.to_ascii_lowercase(),
            e.mailbox.as_deref().unwrap_or("")
        ),
        None => format!("m365:sha256:{}", record_hash(v)),
    };
    Ok(Some(("m365-audit-mailbox", e)))
}

// ---- Defender XDR ----

/// A `CloudAppEvents` row without its table name.
fn cloud_app_shaped(v: &Value) -> bool {
    text(v, &["ActionType"]).is_some()
        && text(v, &["Application"]).is_some()
        && text(v, &["ApplicationId"]).is_some()
        && (lookup(v, "RawEventData").is_some() || text(v, &["ActivityType"]).is_some())
}

/// An `IdentityDirectoryEvents` row without its table name.
fn identity_directory_shaped(v: &Value) -> bool {
    // IdentityLogonEvents has these columns too, with a logon type and logon actions.
    text(v, &["LogonType"]).is_none()
        && text(v, &["ActionType"]).is_some_and(|a| a != "LogonSuccess" && a != "LogonFailed")
        && text(v, &["Application"]).is_some()
        && lookup(v, "AdditionalFields").is_some()
        && text(
            v,
            &["TargetAccountUpn", "TargetAccountDisplayName", "DestinationDeviceName"],
        )
        .is_some()
}

fn defender(row: &Value, outer: &Value, name: &'static str, read: fn(&Value, u64, &Value) -> AuditEvent) -> Made {
    let time_ms = time(row, &["Timestamp", "Timestamp [UTC]", "TimeGenerated"])
        .or_else(|| time(outer, &["time"]))
        .ok_or("no readable Timestamp")?;
    let mut e = read(row, time_ms, outer);
    e.key = match text(row, &["ReportId"]) {
        Some(id) => format!("{}:{}:{time_ms}", e.provider, id.to_ascii_lowercase()),
        None => format!("{}:sha256:{}", e.provider, record_hash(row)),
    };
    Ok(Some((name, e)))
}

/// The kind of a CloudAppEvents action (Exchange and Entra actions as the unified
/// audit log names them, sometimes with a trailing period).
fn cloud_app_kind(action: &str) -> AuditKind {
    let a = action.trim_end_matches('.');
    mailbox_kind(a).or_else(|| entra_kind(a)).unwrap_or(AuditKind::Other)
}

fn cloud_app(row: &Value, time_ms: u64, outer: &Value) -> AuditEvent {
    let action = text(row, &["ActionType"]).unwrap_or_default();
    let kind = cloud_app_kind(&action);
    let raw = lookup(row, "RawEventData")
        .map(|r| r.into_owned())
        .unwrap_or(Value::Null);
    let mut e = event("defender-cloudapps", kind, time_ms, action, outer);
    e.actor = address(text(&raw, &["UserId"]))
        .or_else(|| address(text(row, &["AccountId"])).filter(|a| a.contains('@')))
        .or_else(|| lower(text(row, &["AccountDisplayName"])));
    e.ip = ip_of(text(row, &["IPAddress"]));
    e.mailbox = address(text(&raw, &["MailboxOwnerUPN"]));
    e.app_id = text(row, &["OAuthAppId"])
        .or_else(|| text(&raw, &["ClientAppId", "AppId"]))
        .and_then(|s| first_guid(&s));
    e.app_name =
        text(&raw, &["ClientAppName"]).or_else(|| text(row, &["ObjectName"]).filter(|_| kind == AuditKind::Consent));
    e.items = if kind == AuditKind::MailAccess {
        items_of(&raw)
    } else {
        1
    };
    e.detail = match kind {
        AuditKind::MailAccess | AuditKind::MailDelete => folders_of(&raw),
        _ => [text(row, &["Application"]), text(row, &["ObjectName"])]
            .into_iter()
            .flatten()
            .reduce(|a, b| format!("{a}: {b}")),
    };
    if e.mailbox.is_none()
        && matches!(
            kind,
            AuditKind::MailAccess | AuditKind::MailSend | AuditKind::MailDelete
        )
    {
        e.mailbox = e.actor.clone().filter(|a| a.contains('@'));
    }
    e
}

/// Groups whose members administer the domain (on-premises Active Directory).
const PRIVILEGED_GROUPS: [&str; 9] = [
    "domain admins",
    "enterprise admins",
    "schema admins",
    "administrators",
    "account operators",
    "backup operators",
    "server operators",
    "group policy creator owners",
    "dnsadmins",
];

fn identity_directory(row: &Value, time_ms: u64, outer: &Value) -> AuditEvent {
    let action = text(row, &["ActionType"]).unwrap_or_default();
    // AdditionalFields' keys hold dots (`TO.GROUP`): read them whole, not as a path.
    let fields = lookup(row, "AdditionalFields").and_then(|f| super::fields::as_json(&f).map(|j| j.into_owned()));
    let field = |names: &[&str]| {
        let map = fields.as_ref()?.as_object()?;
        names.iter().find_map(|n| {
            map.iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(n))
                .and_then(|(_, v)| super::fields::scalar(v))
        })
    };
    let group = field(&["TO.GROUP", "TO GROUP"]);
    let added = group.is_some() && field(&["FROM.GROUP", "FROM GROUP"]).is_none();
    let privileged = group
        .as_deref()
        .is_some_and(|g| PRIVILEGED_GROUPS.contains(&g.to_ascii_lowercase().as_str()));
    let kind = if action.eq_ignore_ascii_case("Group Membership changed") && added && privileged {
        AuditKind::RoleAssigned
    } else {
        AuditKind::Other
    };
    let mut e = event("defender-identity", kind, time_ms, action, outer);
    e.actor = address(text(row, &["AccountUpn"])).or_else(|| {
        let name = text(row, &["AccountName"])?;
        Some(match text(row, &["AccountDomain"]) {
            Some(d) => format!("{d}\\{name}").to_ascii_lowercase(),
            None => name.to_ascii_lowercase(),
        })
    });
    e.target_user =
        address(text(row, &["TargetAccountUpn"])).or_else(|| lower(text(row, &["TargetAccountDisplayName"])));
    e.ip = ip_of(text(row, &["IPAddress"]));
    e.detail = group.map(|g| format!("added to {g}")).or_else(|| {
        lookup(row, "AdditionalFields").map(|f| match f.as_ref() {
            Value::Object(_) => f.to_string(),
            other => other.to_string(),
        })
    });
    e
}
