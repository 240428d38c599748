//! Detections over newly stored directory and audit events, looking back (and, for
//! sequences, forward) over the stored history within their windows:
//! - an application's new credential, then mailbox access by that application;
//! - consent or a permission grant to an app whose publisher is not verified, or for
//!   permissions that reach mail, files or the directory;
//! - a privileged role or admin privilege given;
//! - an MFA factor removed, then a sign-in of its user;
//! - a user flagged at risk;
//! - bulk mailbox access by one actor.
//!
//! A sequence alert is named by its first step's record, so it is raised once
//! whichever of its steps is imported first (and in whichever file).

use ward_protocol::{Entity, Severity};

use super::alerts::{
    APP_CREDENTIAL_THEN_MAIL_ACCESS, BULK_MAIL_ACCESS, MFA_REMOVED_THEN_SIGN_IN, PRIVILEGED_ROLE_ADDED, RISKY_CONSENT,
    RISKY_USER, Raise, Rule, user,
};
use super::alerts_identity::Raised;
use super::audit::risky_permissions;
use super::{AuditEvent, AuditKind, SignIn, SignInOutcome};
use crate::config::FeedsConfig;
use crate::store::prelude::*;
use crate::store::{AlertSource, FeedTx, SourcedAlert, StoreError};

/// Most records of the other step an alert names.
const MAX_LISTED: u32 = 20;

/// Roles whose holder controls the tenant or its identities.
const TOP_ROLES: [&str; 11] = [
    "global administrator",
    "company administrator",
    "privileged role administrator",
    "privileged authentication administrator",
    "super administrator",
    "organization administrator",
    "super admin",
    "org admin",
    "domain admins",
    "enterprise admins",
    "schema admins",
];

/// Risk states that mean the risk was handled.
const HANDLED_RISK: [&str; 4] = ["dismissed", "remediated", "confirmedsafe", "none"];

pub fn detect(
    tx: &FeedTx<'_>,
    fresh: &[AuditEvent],
    cfg: &FeedsConfig,
    raised: &mut Raised,
) -> Result<Vec<SourcedAlert>, StoreError> {
    let mut out = Vec::new();
    for e in fresh.iter().filter(|e| !e.failed) {
        match e.kind {
            AuditKind::AppCredential => out.extend(credential_first(tx, e, cfg)?),
            AuditKind::MailAccess => {
                out.extend(access_after_credential(tx, e, cfg)?);
                if let Some(actor) = &e.actor {
                    let window = cfg.bulk_mail_access_window_ms.max(1);
                    let key = (BULK_MAIL_ACCESS.id, actor.clone(), e.time_ms / window);
                    if !raised.0.contains(&key)
                        && let Some(a) = bulk_access(tx, e, actor, cfg)?
                    {
                        raised.0.insert(key);
                        out.push(a);
                    }
                }
            }
            AuditKind::Consent | AuditKind::PermissionGrant => out.extend(risky_consent(e)),
            AuditKind::RoleAssigned => out.extend(privileged_role(e)),
            AuditKind::MfaFactorRemoved => out.extend(removal_first(tx, e, cfg)?),
            AuditKind::RiskyUser => out.extend(risky_user(e)),
            _ => {}
        }
    }
    Ok(out)
}

/// An application as an entity: its name as a service principal signs in (the
/// sign-in feed's user for service principal sign-ins), else its app id.
fn app_entity(e: &AuditEvent) -> Option<Entity> {
    e.app_name
        .as_deref()
        .map(str::to_ascii_lowercase)
        .or_else(|| e.app_id.clone())
        .map(|name| Entity::User { name, uid: None })
}

fn base(rule: Rule, source: AlertSource, severity: Severity, e: &AuditEvent) -> Raise {
    let mut r = Raise::new(rule, source, severity, e.time_ms);
    if let Some(a) = e.actor.as_deref() {
        r.entity(user(a));
    }
    if let Some(ip) = e.ip {
        r.entity(Entity::Ip { addr: ip });
    }
    r.field("provider", Some(e.provider))
        .field("operation", Some(&e.operation))
        .field("actor", e.actor.as_ref())
        .field("ip", e.ip)
        .field("time_ms", Some(e.time_ms));
    r
}

fn mailbox(address: &str) -> Entity {
    Entity::Mailbox {
        address: address.to_ascii_lowercase(),
    }
}

/// The alert of a credential and the accesses after it (named by the credential).
fn credential_alert(cred: &AuditEvent, accesses: &[AuditEvent]) -> Option<SourcedAlert> {
    let last = accesses.last()?;
    let mut r = base(
        APP_CREDENTIAL_THEN_MAIL_ACCESS,
        AlertSource::Identity,
        Severity::High,
        cred,
    );
    r.also = Some(("T1114.002", "TA0009"));
    r.last_ms = last.time_ms;
    r.count = 1 + accesses.len() as u32;
    if let Some(app) = app_entity(cred) {
        r.entity(app);
    }
    let mut boxes = Vec::new();
    let mut items = 0u64;
    for a in accesses {
        items = items.saturating_add(a.items);
        if let Some(m) = a.mailbox.as_deref() {
            r.entity(mailbox(m));
            r.entity(user(m));
            if !boxes.contains(&m) {
                boxes.push(m);
            }
        }
        if let Some(ip) = a.ip {
            r.entity(Entity::Ip { addr: ip });
        }
    }
    r.field("app_id", cred.app_id.as_ref())
        .field("app_name", cred.app_name.as_ref())
        .field("credential", cred.detail.as_ref())
        .field("first_access_ms", accesses.first().map(|a| a.time_ms))
        .field("mailboxes", Some(boxes.join(", ")))
        .field("items_accessed", Some(items))
        .field("access_ip", last.ip);
    Some(r.build(cred.time_ms, &[&cred.key]))
}

fn credential_first(tx: &FeedTx<'_>, cred: &AuditEvent, cfg: &FeedsConfig) -> Result<Option<SourcedAlert>, StoreError> {
    if cred.app_id.is_none() && cred.app_name.is_none() {
        return Ok(None);
    }
    let accesses = tx.audit_events_of_app(
        AuditKind::MailAccess,
        cred.app_id.as_deref(),
        cred.app_name.as_deref(),
        cred.time_ms,
        cred.time_ms.saturating_add(cfg.follow_up_window_ms),
        MAX_LISTED,
    )?;
    Ok(credential_alert(cred, &accesses))
}

fn access_after_credential(
    tx: &FeedTx<'_>,
    access: &AuditEvent,
    cfg: &FeedsConfig,
) -> Result<Vec<SourcedAlert>, StoreError> {
    if access.app_id.is_none() && access.app_name.is_none() {
        return Ok(Vec::new());
    }
    let creds = tx.audit_events_of_app(
        AuditKind::AppCredential,
        access.app_id.as_deref(),
        access.app_name.as_deref(),
        access.time_ms.saturating_sub(cfg.follow_up_window_ms),
        access.time_ms,
        MAX_LISTED,
    )?;
    Ok(creds
        .iter()
        .filter_map(|c| credential_alert(c, std::slice::from_ref(access)))
        .collect())
}

fn bulk_access(
    tx: &FeedTx<'_>,
    e: &AuditEvent,
    actor: &str,
    cfg: &FeedsConfig,
) -> Result<Option<SourcedAlert>, StoreError> {
    let window = cfg.bulk_mail_access_window_ms.max(1);
    let (items, records, first, boxes) = tx.mail_items_accessed(
        actor,
        e.time_ms.saturating_sub(window),
        e.time_ms,
        cfg.bulk_mail_access_min_items,
    )?;
    if items < cfg.bulk_mail_access_min_items {
        return Ok(None);
    }
    // Reading mailboxes other than one's own is collection; one's own, a sync client.
    let others = boxes.iter().any(|b| b != actor);
    let severity = if others { Severity::High } else { Severity::Medium };
    let mut r = base(BULK_MAIL_ACCESS, AlertSource::Mailbox, severity, e);
    r.first_ms = first.unwrap_or(e.time_ms);
    r.count = records;
    for b in &boxes {
        r.entity(mailbox(b));
        r.entity(user(b));
    }
    if let Some(app) = app_entity(e) {
        r.entity(app);
    }
    r.field("items_accessed", Some(items))
        .field("records", Some(records))
        .field("mailboxes", Some(boxes.join(", ")))
        .field("window_ms", Some(window))
        .field("app_id", e.app_id.as_ref())
        .field("detail", e.detail.as_ref());
    let bucket = e.time_ms / window;
    Ok(Some(r.build(bucket * window, &[actor, &bucket.to_string()])))
}

fn risky_consent(e: &AuditEvent) -> Option<SourcedAlert> {
    let detail = e.detail.as_deref().unwrap_or("");
    let perms = risky_permissions(detail);
    let unverified = e.publisher_verified == Some(false);
    if perms.is_empty() && !unverified {
        return None;
    }
    let for_all = detail.contains("admin consent");
    let severity = if (unverified && !perms.is_empty()) || (for_all && !perms.is_empty()) {
        Severity::High
    } else {
        Severity::Medium
    };
    let mut r = base(RISKY_CONSENT, AlertSource::Identity, severity, e);
    if let Some(app) = app_entity(e) {
        r.entity(app);
    }
    if let Some(t) = e.target_user.as_deref() {
        r.entity(user(t));
    }
    r.field("app_id", e.app_id.as_ref())
        .field("app_name", e.app_name.as_ref())
        .field("risky_permissions", Some(perms.join(" ")).filter(|p| !p.is_empty()))
        .field(
            "publisher",
            e.publisher_verified.map(|v| if v { "verified" } else { "unverified" }),
        )
        .field("permissions", e.detail.as_ref());
    Some(r.build(e.time_ms, &[&e.key]))
}

fn privileged_role(e: &AuditEvent) -> Option<SourcedAlert> {
    let role = e.detail.as_deref().unwrap_or("").to_ascii_lowercase();
    let top = TOP_ROLES.iter().any(|t| role.contains(t));
    // Entra has many roles; those that administer something are the privileged ones.
    // Okta's grants and Defender for Identity's groups are admin privileges by kind.
    let admin = top || role.contains("admin") || e.provider != "entra";
    if !admin {
        return None;
    }
    let severity = if top { Severity::High } else { Severity::Medium };
    let mut r = base(PRIVILEGED_ROLE_ADDED, AlertSource::Identity, severity, e);
    if let Some(t) = e.target_user.as_deref() {
        r.entity(user(t));
    }
    r.field("role", e.detail.as_ref())
        .field("member", e.target_user.as_ref());
    Some(r.build(e.time_ms, &[&e.key]))
}

fn removal_alert(removal: &AuditEvent, user_name: &str, sign_in_ms: u64, ips: &[String], count: u32) -> SourcedAlert {
    let mut r = base(MFA_REMOVED_THEN_SIGN_IN, AlertSource::Identity, Severity::High, removal);
    r.entity(user(user_name));
    for ip in ips.iter().filter_map(|ip| ip.parse().ok()) {
        r.entity(Entity::Ip { addr: ip });
    }
    r.last_ms = sign_in_ms;
    r.count = 1 + count;
    r.field("user", Some(user_name))
        .field("factor", removal.detail.as_ref())
        .field("sign_in_ms", Some(sign_in_ms))
        .field("sign_in_ips", Some(ips.join(", ")).filter(|s| !s.is_empty()));
    r.build(removal.time_ms, &[&removal.key])
}

fn removal_first(tx: &FeedTx<'_>, e: &AuditEvent, cfg: &FeedsConfig) -> Result<Option<SourcedAlert>, StoreError> {
    let Some(u) = e.target_user.as_deref() else {
        return Ok(None);
    };
    let to = e.time_ms.saturating_add(cfg.follow_up_window_ms);
    let (count, first, ips) = tx.user_outcomes(u, SignInOutcome::Success, e.time_ms, to)?;
    Ok(match (count, first) {
        (1.., Some(at)) => Some(removal_alert(e, u, at, &ips, count)),
        _ => None,
    })
}

/// A successful sign-in after its user's MFA factor was removed (the removal came
/// in an earlier import): the alert of that removal.
pub fn sign_in_after_removal(
    tx: &FeedTx<'_>,
    s: &SignIn,
    cfg: &FeedsConfig,
) -> Result<Option<SourcedAlert>, StoreError> {
    let removals = tx.audit_events_of_user(
        AuditKind::MfaFactorRemoved,
        &s.user,
        s.time_ms.saturating_sub(cfg.follow_up_window_ms),
        s.time_ms,
        1,
    )?;
    let ips: Vec<String> = s.ip.map(|ip| ip.to_string()).into_iter().collect();
    Ok(removals.first().map(|r| removal_alert(r, &s.user, s.time_ms, &ips, 1)))
}

fn risky_user(e: &AuditEvent) -> Option<SourcedAlert> {
    let severity = match e.risk_level.as_deref()? {
        "high" => Severity::High,
        "medium" => Severity::Medium,
        _ => return None,
    };
    let state = e
        .detail
        .as_deref()
        .and_then(|d| d.split(',').next())
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if HANDLED_RISK.contains(&state.as_str()) {
        return None;
    }
    let u = e.target_user.as_deref()?;
    let mut r = base(RISKY_USER, AlertSource::Identity, severity, e);
    r.entity(user(u));
    r.field("user", Some(u))
        .field("risk_level", e.risk_level.as_ref())
        .field("risk", e.detail.as_ref());
    Some(r.build(e.time_ms, &[&e.key]))
}
