//! Sign-in records → [`SignIn`]: Entra ID `SigninLogs` table rows (Log Analytics
//! JSON or CSV export), Entra diagnostic-settings records (`category` + `properties`,
//! as streamed to storage or Event Hubs; Graph `signIns` objects read the same way),
//! and Okta System Log events.

use serde_json::Value;

use super::fields::{address, compact, lookup, number, record_hash, text, time};
use super::{Normalized, SignIn, SignInOutcome};

/// Diagnostic categories that hold sign-ins; audit and risk categories go to `audit`
/// (read before this), others are ignored.
const SIGN_IN_CATEGORIES: [&str; 5] = [
    "SignInLogs",
    "NonInteractiveUserSignInLogs",
    "ServicePrincipalSignInLogs",
    "ManagedIdentitySignInLogs",
    "ADFSSignInLogs",
];

/// Log Analytics table names (`Type` column) of sign-in tables.
const SIGN_IN_TABLES: [&str; 4] = [
    "SigninLogs",
    "AADNonInteractiveUserSignInLogs",
    "AADServicePrincipalSignInLogs",
    "AADManagedIdentitySignInLogs",
];

/// Defender for Identity's logons on domain controllers and identity providers
/// (advanced hunting `IdentityLogonEvents`).
const IDENTITY_LOGONS: &str = "IdentityLogonEvents";

pub(crate) fn normalize(v: &Value) -> Normalized<SignIn> {
    if let Some(n) = super::audit::normalize(v) {
        return n;
    }
    if let (Some(category), Some(props)) = (text(v, &["category"]), lookup(v, "properties")) {
        if !props.is_object() {
            return Normalized::Bad("`properties` is not an object".into());
        }
        if category
            .strip_prefix("AdvancedHunting-")
            .is_some_and(|t| t.eq_ignore_ascii_case(IDENTITY_LOGONS))
        {
            return identity_logon(&props, v);
        }
        if !SIGN_IN_CATEGORIES.iter().any(|c| c.eq_ignore_ascii_case(&category)) {
            return Normalized::Ignored {
                kind: "entra-diagnostic",
            };
        }
        return match entra(&props, v) {
            Ok(s) => Normalized::Record {
                kind: "entra-diagnostic",
                item: s,
            },
            Err(e) => Normalized::Bad(e),
        };
    }
    if okta_shaped(v) {
        // Every System Log event has `published`; without it there is no time to judge by.
        if text(v, &["published"]).is_none() {
            return Normalized::Bad("Okta event without a published time".into());
        }
        return okta(v);
    }
    let table = text(v, &["Type"]);
    if table
        .as_deref()
        .is_some_and(|t| t.eq_ignore_ascii_case(IDENTITY_LOGONS))
        || identity_logon_shaped(v)
    {
        return identity_logon(v, v);
    }
    let is_table = table
        .as_deref()
        .is_some_and(|t| SIGN_IN_TABLES.iter().any(|n| n.eq_ignore_ascii_case(t)));
    // Graph API sign-ins (createdDateTime), and SigninLogs rows exported with a
    // `project` that left out the `Type` column (TimeGenerated + ResultType).
    let graph = text(v, &["userPrincipalName"]).is_some() && text(v, &["createdDateTime"]).is_some();
    let projected_row = text(v, &["UserPrincipalName"]).is_some()
        && text(v, &["TimeGenerated"]).is_some()
        && text(v, &["ResultType"]).is_some();
    // A query over the table that summarised it (`summarize ... by IPAddress`): it
    // names the table but holds no sign-in of its own (no user, no result).
    let summary = is_table
        && text(v, &["UserPrincipalName", "userId", "servicePrincipalName"]).is_none()
        && text(v, &["ResultType", "status.errorCode"]).is_none();
    if summary {
        return Normalized::Ignored {
            kind: "entra-signinlogs-summary",
        };
    }
    if is_table || graph || projected_row {
        return match entra(v, v) {
            Ok(s) => Normalized::Record {
                kind: "entra-signinlogs",
                item: s,
            },
            Err(e) => Normalized::Bad(e),
        };
    }
    Normalized::Bad(
        "not an Entra ID sign-in, an Okta System Log event or a Defender for Identity logon (IdentityLogonEvents)"
            .into(),
    )
}

/// An `IdentityLogonEvents` row without its table name: a logon action with the
/// account and the protocol or logon type that only that table has together.
fn identity_logon_shaped(v: &Value) -> bool {
    text(v, &["ActionType"]).is_some_and(|a| a == "LogonSuccess" || a == "LogonFailed")
        && text(v, &["AccountUpn", "AccountName"]).is_some()
        && text(v, &["Protocol", "LogonType"]).is_some()
}

/// A Defender for Identity logon (`row`: the table row, or a streaming record's
/// `properties`; `outer`: the whole record) as a sign-in, so the same detections
/// (spray, brute force, travel) judge on-premises logons too.
fn identity_logon(row: &Value, outer: &Value) -> Normalized<SignIn> {
    match identity_logon_sign_in(row, outer) {
        Ok(item) => Normalized::Record {
            kind: "defender-identitylogonevents",
            item,
        },
        Err(e) => Normalized::Bad(e),
    }
}

fn identity_logon_sign_in(row: &Value, outer: &Value) -> Result<SignIn, String> {
    let time_ms = time(row, &["Timestamp", "Timestamp [UTC]", "TimeGenerated"])
        .or_else(|| time(outer, &["time"]))
        .ok_or("no readable Timestamp")?;
    // The UPN when the account has one; else DOMAIN\name as Windows writes it.
    let user = address(text(row, &["AccountUpn"]))
        .or_else(|| {
            let name = text(row, &["AccountName"])?;
            Some(match text(row, &["AccountDomain"]) {
                Some(domain) => format!("{domain}\\{name}").to_ascii_lowercase(),
                None => name.to_ascii_lowercase(),
            })
        })
        .ok_or("no AccountUpn or AccountName")?;
    let action = text(row, &["ActionType"]).ok_or("no ActionType")?;
    let outcome = match action.as_str() {
        "LogonSuccess" => SignInOutcome::Success,
        "LogonFailed" => SignInOutcome::Failure,
        other => return Err(format!("ActionType {other:?} is not a logon")),
    };
    let key = match text(row, &["ReportId"]) {
        // A report id numbers events per device: with the time and account it is one logon.
        Some(id) => format!("mdi:{id}:{time_ms}:{user}"),
        None => format!("mdi:sha256:{}", record_hash(row)),
    };
    Ok(SignIn {
        key,
        provider: "defender-identity",
        time_ms,
        user,
        ip: text(row, &["IPAddress"]).and_then(|s| s.parse().ok()),
        location: text(row, &["Location"]),
        coords: None,
        // What was logged on to: the application, else the device that took the logon.
        app: text(row, &["Application", "DestinationDeviceName", "TargetDeviceName"]),
        client: join(&[text(row, &["Protocol"]), text(row, &["LogonType"])]),
        outcome,
        result: action,
        result_detail: text(row, &["FailureReason"]),
        risk_level: None,
        risk_state: None,
        conditional_access: None,
        mfa: None,
        device: text(row, &["DeviceName"]),
        raw: outer.to_string(),
    })
}

/// Entra result types that interrupt a sign-in for more proof rather than refuse it.
const INTERRUPTS: [&str; 10] = [
    "50058", "50072", "50074", "50076", "50079", "50097", "50125", "50140", "50158", "50199",
];
/// Entra result type of a denied or unanswered MFA prompt ("Authentication failed during strong authentication request").
const MFA_DENIED: [&str; 1] = ["500121"];

/// `p` holds the sign-in's fields (a diagnostic record's `properties`, or the row
/// itself); `outer` is the whole record (its `resultType`, `time`, `callerIpAddress`).
fn entra(p: &Value, outer: &Value) -> Result<SignIn, String> {
    let time_ms = time(
        p,
        &[
            "createdDateTime",
            "CreatedDateTime [UTC]",
            "TimeGenerated",
            "TimeGenerated [UTC]",
        ],
    )
    .or_else(|| time(outer, &["time", "TimeGenerated"]))
    .ok_or("no readable createdDateTime")?;
    let user = address(text(
        p,
        &[
            "userPrincipalName",
            "servicePrincipalName",
            "servicePrincipalId",
            "userId",
        ],
    ))
    .ok_or("no userPrincipalName")?;
    let result = text(p, &["status.errorCode", "resultType"])
        .or_else(|| text(outer, &["resultType"]))
        .ok_or("no result type (status.errorCode / ResultType)")?;
    let detail = text(
        p,
        &["status.failureReason", "resultDescription", "status.additionalDetails"],
    )
    .or_else(|| text(outer, &["resultDescription"]));
    // Some exporters write the word instead of the code 0.
    let outcome = if result == "0" || result.eq_ignore_ascii_case("success") {
        SignInOutcome::Success
    } else if MFA_DENIED.contains(&result.as_str())
        || detail
            .as_deref()
            .is_some_and(|d| d.to_ascii_lowercase().contains("mfa denied"))
    {
        SignInOutcome::MfaDenied
    } else if INTERRUPTS.contains(&result.as_str()) {
        SignInOutcome::Interrupted
    } else {
        SignInOutcome::Failure
    };
    // A table row's `Location` is a country code; the details are in LocationDetails.
    let loc_path = if lookup(p, "locationDetails").is_some() {
        "locationDetails"
    } else {
        "location"
    };
    let sub = |f: &str| format!("{loc_path}.{f}");
    let location = join(&[
        text(p, &[&sub("city")]),
        text(p, &[&sub("state")]),
        text(p, &[&sub("countryOrRegion")]),
    ]);
    let coords = number(p, &[&sub("geoCoordinates.latitude")]).zip(number(p, &[&sub("geoCoordinates.longitude")]));
    let key = match text(p, &["id"]).or_else(|| text(p, &["originalRequestId"])) {
        Some(id) => format!("entra:{}", id.to_ascii_lowercase()),
        // The correlation id alone is shared by the steps of one sign-in.
        None => match text(p, &["correlationId"]) {
            Some(c) => format!("entra:{}:{time_ms}:{result}", c.to_ascii_lowercase()),
            None => format!("entra:sha256:{}", record_hash(outer)),
        },
    };
    let mfa = join(&[
        text(p, &["authenticationRequirement"]),
        text(p, &["mfaDetail.authMethod"]),
        text(p, &["mfaDetail.authDetail"]),
    ]);
    Ok(SignIn {
        key,
        provider: "entra",
        time_ms,
        user,
        ip: text(p, &["ipAddress"])
            .or_else(|| text(outer, &["callerIpAddress"]))
            .and_then(|s| s.parse().ok()),
        location,
        coords: coords.filter(|&(lat, lon)| valid_coords(lat, lon)),
        app: text(p, &["appDisplayName", "resourceDisplayName", "appId"]),
        client: text(p, &["clientAppUsed", "userAgent"]),
        outcome,
        result,
        result_detail: detail,
        risk_level: text(p, &["riskLevelDuringSignIn"]).map(|s| s.to_ascii_lowercase()),
        risk_state: text(p, &["riskState"]),
        conditional_access: text(p, &["conditionalAccessStatus"]),
        mfa,
        device: compact(p, &["deviceDetail"]),
        raw: outer.to_string(),
    })
}

/// An Okta System Log event by its shape: an `eventType` with the event's `uuid`,
/// `actor` or `outcome` object (rows of other tools that only borrow Okta's event
/// type names, such as Panther's anomaly summaries, have none of them).
fn okta_shaped(v: &Value) -> bool {
    let object = |name: &str| lookup(v, name).is_some_and(|o| o.is_object());
    text(v, &["eventType"]).is_some() && (text(v, &["uuid"]).is_some() || object("actor") || object("outcome"))
}

/// Okta event types that are sign-ins or MFA prompts; the rest of the System Log is ignored.
fn okta_is_sign_in(event_type: &str) -> bool {
    event_type == "user.session.start"
        || event_type.starts_with("user.authentication.")
        || event_type.starts_with("user.mfa.okta_verify")
        || event_type == "system.push.send_factor_verify_push"
}

fn okta(v: &Value) -> Normalized<SignIn> {
    let event_type = text(v, &["eventType"]).unwrap_or_default();
    if !okta_is_sign_in(&event_type) {
        return Normalized::Ignored { kind: "okta-systemlog" };
    }
    match okta_sign_in(v, &event_type) {
        Ok(item) => Normalized::Record {
            kind: "okta-systemlog",
            item,
        },
        Err(e) => Normalized::Bad(e),
    }
}

fn okta_sign_in(v: &Value, event_type: &str) -> Result<SignIn, String> {
    let time_ms = time(v, &["published"]).ok_or("no readable published time")?;
    let user = address(text(v, &["actor.alternateId"])).ok_or("no actor.alternateId")?;
    let result = text(v, &["outcome.result"])
        .unwrap_or_else(|| "UNKNOWN".into())
        .to_ascii_uppercase();
    let denied = event_type == "user.mfa.okta_verify.deny_push"
        || (event_type == "system.push.send_factor_verify_push" && result == "DENY")
        || (event_type == "user.authentication.auth_via_mfa" && result == "FAILURE");
    let outcome = if denied {
        SignInOutcome::MfaDenied
    } else if event_type.starts_with("user.mfa.") || event_type.starts_with("system.push.") {
        SignInOutcome::Interrupted
    } else {
        match result.as_str() {
            "SUCCESS" | "ALLOW" => SignInOutcome::Success,
            "FAILURE" | "DENY" => SignInOutcome::Failure,
            _ => SignInOutcome::Interrupted,
        }
    };
    let geo = "client.geographicalContext";
    let location = join(&[
        text(v, &[&format!("{geo}.city")]),
        text(v, &[&format!("{geo}.state")]),
        text(v, &[&format!("{geo}.country")]),
    ]);
    let coords = number(v, &[&format!("{geo}.geolocation.lat")]).zip(number(v, &[&format!("{geo}.geolocation.lon")]));
    let app = lookup(v, "target").and_then(|t| {
        t.as_array()?
            .iter()
            .find(|x| text(x, &["type"]).is_some_and(|ty| ty.eq_ignore_ascii_case("AppInstance")))
            .and_then(|x| text(x, &["displayName", "alternateId"]))
    });
    let risk_level = text(v, &["debugContext.debugData.logOnlySecurityData"])
        .and_then(|s| risk_in(&s))
        .or_else(|| text(v, &["debugContext.debugData.risk"]).and_then(|s| risk_in(&s)))
        .or_else(|| text(v, &["securityContext.risk.level"]).map(|s| s.to_ascii_lowercase()));
    // Okta's uuid with the event's time: exports and replays were seen reusing a uuid
    // for different events, which a key on the uuid alone dropped as duplicates.
    let key = match text(v, &["uuid"]) {
        Some(id) => format!("okta:{}:{time_ms}", id.to_ascii_lowercase()),
        None => format!("okta:sha256:{}", record_hash(v)),
    };
    Ok(SignIn {
        key,
        provider: "okta",
        time_ms,
        user,
        ip: text(v, &["client.ipAddress"]).and_then(|s| s.parse().ok()),
        location,
        coords: coords.filter(|&(lat, lon)| valid_coords(lat, lon)),
        app,
        client: text(v, &["client.userAgent.rawUserAgent"]),
        outcome,
        result,
        result_detail: join(&[Some(event_type.to_string()), text(v, &["outcome.reason"])]),
        risk_level,
        risk_state: None,
        conditional_access: None,
        mfa: text(
            v,
            &["debugContext.debugData.factor", "authenticationContext.credentialType"],
        ),
        device: join(&[
            text(v, &["client.device"]),
            text(v, &["client.userAgent.os"]),
            text(v, &["client.userAgent.browser"]),
        ]),
        raw: v.to_string(),
    })
}

/// The level in Okta's risk text: `{reasons=..., level=HIGH}` or JSON `{"level":"HIGH"}`.
fn risk_in(s: &str) -> Option<String> {
    let lower = s.to_ascii_lowercase();
    let at = lower.find("level")?;
    let rest = lower[at + 5..].trim_start_matches(['"', '=', ':', ' ']);
    let word: String = rest.chars().take_while(|c| c.is_ascii_alphabetic()).collect();
    (!word.is_empty()).then_some(word)
}

fn valid_coords(lat: f64, lon: f64) -> bool {
    (-90.0..=90.0).contains(&lat) && (-180.0..=180.0).contains(&lon) && !(lat == 0.0 && lon == 0.0)
}

fn join(parts: &[Option<String>]) -> Option<String> {
    let parts: Vec<&str> = parts.iter().flatten().map(String::as_str).collect();
    (!parts.is_empty()).then(|| parts.join(", "))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    fn record(v: Value) -> (&'static str, SignIn) {
        match normalize(&v) {
            Normalized::Record { kind, item } => (kind, item),
            Normalized::Ignored { kind } => panic!("ignored as {kind}"),
            Normalized::Many { kind, .. } => panic!("several records as {kind}"),
            Normalized::Audit { kind, .. } => panic!("an audit event as {kind}"),
            Normalized::Bad(e) => panic!("bad: {e}"),
        }
    }

    /// Columns as Microsoft documents `IdentityLogonEvents`
    /// (defender-xdr/advanced-hunting-identitylogonevents-table.md).
    fn identity_logon_row() -> Value {
        json!({"Timestamp": "2026-11-20T08:00:00Z", "ActionType": "LogonFailed", "Application": "Active Directory",
            "LogonType": "Resource access", "Protocol": "Kerberos", "FailureReason": "WrongPassword",
            "AccountName": "dana", "AccountDomain": "CONTOSO", "AccountUpn": "Dana@Contoso.com",
            "AccountSid": "S-1-5-21-1-2-3-1104", "DeviceName": "ws-17.contoso.local", "IPAddress": "10.0.4.17",
            "DestinationDeviceName": "dc1.contoso.local", "Location": "Seattle, US", "ReportId": "4242"})
    }

    #[test]
    fn defender_for_identity_logons_are_sign_ins() {
        let mut row = identity_logon_row();
        let (kind, s) = record(row.clone());
        assert_eq!(kind, "defender-identitylogonevents");
        assert_eq!(
            (s.provider, s.user.as_str(), s.outcome, s.result.as_str()),
            (
                "defender-identity",
                "dana@contoso.com",
                SignInOutcome::Failure,
                "LogonFailed"
            )
        );
        assert_eq!(s.ip, Some("10.0.4.17".parse().unwrap()));
        assert_eq!(s.result_detail.as_deref(), Some("WrongPassword"));
        assert_eq!(s.client.as_deref(), Some("Kerberos, Resource access"));
        assert_eq!(s.app.as_deref(), Some("Active Directory"));
        assert_eq!(s.device.as_deref(), Some("ws-17.contoso.local"));
        assert_eq!(s.key, "mdi:4242:1795161600000:dana@contoso.com");
        // With its table name, and as a streaming record.
        row["Type"] = json!("IdentityLogonEvents");
        assert_eq!(record(row.clone()).1.key, s.key);
        let streamed = json!({"time": "2026-11-20T08:00:01Z", "category": "AdvancedHunting-IdentityLogonEvents",
            "properties": identity_logon_row()});
        assert_eq!(record(streamed).1.key, s.key);
        // No UPN (an on-premises account): DOMAIN\name.
        let mut local = identity_logon_row();
        local["AccountUpn"] = json!("");
        local["ActionType"] = json!("LogonSuccess");
        let (_, l) = record(local);
        assert_eq!((l.user.as_str(), l.outcome), ("contoso\\dana", SignInOutcome::Success));
        // Neither account column: explained.
        let mut nobody = identity_logon_row();
        nobody["Type"] = json!("IdentityLogonEvents");
        nobody["AccountUpn"] = Value::Null;
        nobody["AccountName"] = Value::Null;
        let Normalized::Bad(why) = normalize(&nobody) else {
            panic!("accepted without an account")
        };
        assert!(why.contains("AccountUpn or AccountName"), "{why}");
    }

    #[test]
    fn a_diagnostic_record_is_read_from_properties() {
        let (kind, s) = record(json!({
            "category": "SignInLogs", "resultType": "0", "callerIpAddress": "4.4.4.4", "time": "2025-01-15 14:23:10.123",
            "properties": {
                "id": "ABC-1", "userPrincipalName": "John@Justice.org", "createdDateTime": "2025-01-15T14:23:10.1234567Z",
                "ipAddress": "4.4.4.4", "appDisplayName": "Office", "clientAppUsed": "Browser",
                "location": {"city": "Moscow", "countryOrRegion": "RU", "geoCoordinates": {"latitude": 55.75, "longitude": 37.61}},
                "riskLevelDuringSignIn": "High", "riskState": "atRisk", "status": {"errorCode": 0},
                "conditionalAccessStatus": "success", "deviceDetail": {"operatingSystem": "Windows"},
                "authenticationRequirement": "multiFactorAuthentication", "mfaDetail": {"authMethod": "PhoneAppNotification"}
            }
        }));
        assert_eq!(kind, "entra-diagnostic");
        assert_eq!(s.key, "entra:abc-1");
        assert_eq!(s.user, "john@justice.org");
        assert_eq!(s.time_ms, 1_736_950_990_123);
        assert_eq!(s.ip, Some("4.4.4.4".parse().unwrap()));
        assert_eq!(s.location.as_deref(), Some("Moscow, RU"));
        assert_eq!(s.coords, Some((55.75, 37.61)));
        assert_eq!((s.outcome, s.result.as_str()), (SignInOutcome::Success, "0"));
        assert_eq!(s.risk_level.as_deref(), Some("high"));
        assert_eq!(
            s.mfa.as_deref(),
            Some("multiFactorAuthentication, PhoneAppNotification")
        );
        assert_eq!(s.device.as_deref(), Some("{\"operatingSystem\":\"Windows\"}"));
    }

    #[test]
    fn audit_categories_are_ignored_and_broken_records_explained() {
        // Audit operations Ward does not read are ignored; one without its operation is explained.
        assert!(matches!(
            normalize(
                &json!({"category": "AuditLogs", "properties": {"activityDisplayName": "Update user",
                "activityDateTime": "2026-11-20T12:00:00Z", "targetResources": []}})
            ),
            Normalized::Ignored { .. }
        ));
        let Normalized::Bad(why) = normalize(&json!({"category": "AuditLogs", "properties": {"x": 1}})) else {
            panic!("accepted")
        };
        assert!(why.contains("activityDisplayName"), "{why}");
        let Normalized::Bad(why) =
            normalize(&json!({"category": "SignInLogs", "properties": {"userPrincipalName": "a@b"}}))
        else {
            panic!("accepted")
        };
        assert!(why.contains("createdDateTime"), "{why}");
        assert!(matches!(normalize(&json!({"hello": "world"})), Normalized::Bad(_)));
    }

    #[test]
    fn entra_result_types_map_to_outcomes() {
        let row = |code: &str| {
            record(json!({"Type": "SigninLogs", "UserPrincipalName": "a@b.c", "CreatedDateTime [UTC]": "4/28/2021, 2:08:45.221 PM",
                "ResultType": code, "Id": code}))
            .1
            .outcome
        };
        assert_eq!(row("0"), SignInOutcome::Success);
        assert_eq!(row("50126"), SignInOutcome::Failure);
        assert_eq!(row("500121"), SignInOutcome::MfaDenied);
        assert_eq!(row("50074"), SignInOutcome::Interrupted);
    }

    #[test]
    fn okta_events_are_sign_ins_or_ignored() {
        let event = |event_type: &str, result: &str| {
            json!({"uuid": "U-1", "published": "2024-04-02T19:17:37.621Z", "eventType": event_type,
                "actor": {"alternateId": "Casey@Hey.com"}, "outcome": {"result": result},
                "client": {"ipAddress": "99.108.5.25", "geographicalContext": {"city": "Dallas", "country": "United States",
                    "geolocation": {"lat": 32.7, "lon": -96.8}}},
                "debugContext": {"debugData": {"risk": "{reasons=Anomalous Device, level=MEDIUM}"}},
                "target": [{"type": "AppInstance", "displayName": "Salesforce"}]})
        };
        let (kind, s) = record(event("user.session.start", "FAILURE"));
        assert_eq!(
            (kind, s.key.as_str(), s.user.as_str()),
            ("okta-systemlog", "okta:u-1:1712085457621", "casey@hey.com")
        );
        // One uuid at two times is two events; at the same time, one.
        let mut later = event("user.session.start", "FAILURE");
        later["published"] = json!("2024-04-02T19:20:00.000Z");
        assert_ne!(record(later).1.key, s.key);
        assert_eq!(record(event("user.session.start", "FAILURE")).1.key, s.key);
        assert_eq!(s.outcome, SignInOutcome::Failure);
        assert_eq!(s.risk_level.as_deref(), Some("medium"));
        assert_eq!(s.app.as_deref(), Some("Salesforce"));
        assert_eq!(s.coords, Some((32.7, -96.8)));
        assert_eq!(
            record(event("user.mfa.okta_verify.deny_push", "SUCCESS")).1.outcome,
            SignInOutcome::MfaDenied
        );
        assert_eq!(
            record(event("system.push.send_factor_verify_push", "DENY")).1.outcome,
            SignInOutcome::MfaDenied
        );
        assert_eq!(
            record(event("system.push.send_factor_verify_push", "SUCCESS"))
                .1
                .outcome,
            SignInOutcome::Interrupted
        );
        assert!(matches!(
            normalize(&event("system.api_token.create", "SUCCESS")),
            Normalized::Ignored { .. }
        ));
    }

    #[test]
    fn okta_events_without_a_published_time_are_named_as_such() {
        let mut no_time = json!({"uuid": "U-2", "eventType": "user.session.start",
            "actor": {"alternateId": "casey@hey.com"}, "outcome": {"result": "SUCCESS"}});
        let reason = |v: &Value| match normalize(v) {
            Normalized::Bad(why) => why,
            _ => panic!("accepted {v}"),
        };
        assert_eq!(reason(&no_time), "Okta event without a published time");
        // Any one of uuid, actor or outcome makes the shape; a blank time is no time.
        no_time["uuid"] = Value::Null;
        no_time["published"] = json!(" ");
        assert_eq!(reason(&no_time), "Okta event without a published time");
        let borrowed =
            json!({"eventType": "system.api_token.create", "actorId": "a@b.c", "p_event_time": "2024-01-15 14:23:45"});
        assert!(reason(&borrowed).contains("not an Entra ID sign-in"));
    }
}
