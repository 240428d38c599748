//! Identity detections over newly stored sign-ins, looking back over the stored
//! history within their windows. Window alerts (spray, brute force, MFA fatigue)
//! are keyed by the window-sized time bucket of the triggering sign-in, so one
//! burst gives one alert per bucket however often it is re-imported.

use std::collections::HashSet;
use std::net::IpAddr;

use ward_protocol::{Entity, Severity};

use super::alerts::{BRUTE_FORCE, IMPOSSIBLE_TRAVEL, MFA_FATIGUE, PASSWORD_SPRAY, RISKY_SIGN_IN, Raise, Rule, user};
use super::{SignIn, SignInOutcome};
use crate::config::FeedsConfig;
use crate::store::prelude::*;
use crate::store::{AlertSource, FeedTx, LocatedSignIn, SourcedAlert, StoreError};

/// Risk states that mean the risk was handled.
const HANDLED_RISK: [&str; 3] = ["dismissed", "remediated", "confirmedsafe"];
/// Most users named in a spray alert (all are counted).
const MAX_LISTED_USERS: u32 = 50;

/// The window alerts (rule, subject, bucket) an import raised, carried from chunk
/// to chunk so one burst raises once.
#[derive(Debug, Default)]
pub struct Raised(pub(super) HashSet<(&'static str, String, u64)>);

pub fn detect(
    tx: &FeedTx<'_>,
    fresh: &[SignIn],
    cfg: &FeedsConfig,
    raised: &mut Raised,
) -> Result<Vec<SourcedAlert>, StoreError> {
    let mut out = Vec::new();
    let raised = &mut raised.0;
    let mut once = |rule: Rule,
                    subject: String,
                    window: u64,
                    time_ms: u64,
                    alert: &mut dyn FnMut() -> Result<Option<SourcedAlert>, StoreError>|
     -> Result<Option<SourcedAlert>, StoreError> {
        let key = (rule.id, subject, time_ms / window.max(1));
        if raised.contains(&key) {
            return Ok(None);
        }
        let a = alert()?;
        if a.is_some() {
            raised.insert(key);
        }
        Ok(a)
    };
    for s in fresh {
        if let Some(a) = risky(s) {
            out.push(a);
        }
        match s.outcome {
            SignInOutcome::Failure => {
                if let Some(ip) = s.ip {
                    out.extend(once(
                        PASSWORD_SPRAY,
                        ip.to_string(),
                        cfg.spray_window_ms,
                        s.time_ms,
                        &mut || spray(tx, s, ip, cfg),
                    )?);
                }
                out.extend(once(
                    BRUTE_FORCE,
                    s.user.clone(),
                    cfg.brute_force_window_ms,
                    s.time_ms,
                    &mut || {
                        repeated(
                            tx,
                            s,
                            BRUTE_FORCE,
                            cfg.brute_force_min_failures,
                            cfg.brute_force_window_ms,
                        )
                    },
                )?);
            }
            SignInOutcome::MfaDenied => {
                out.extend(once(
                    MFA_FATIGUE,
                    s.user.clone(),
                    cfg.mfa_fatigue_window_ms,
                    s.time_ms,
                    &mut || {
                        repeated(
                            tx,
                            s,
                            MFA_FATIGUE,
                            cfg.mfa_fatigue_min_denials,
                            cfg.mfa_fatigue_window_ms,
                        )
                    },
                )?);
            }
            SignInOutcome::Success => {
                out.extend(travel(tx, s, cfg)?);
                out.extend(super::alerts_audit::sign_in_after_removal(tx, s, cfg)?);
            }
            SignInOutcome::Interrupted => {}
        }
    }
    Ok(out)
}

fn base(rule: Rule, severity: Severity, s: &SignIn) -> Raise {
    let mut r = Raise::new(rule, AlertSource::Identity, severity, s.time_ms);
    r.entity(user(&s.user));
    if let Some(ip) = s.ip {
        r.entity(Entity::Ip { addr: ip });
    }
    r.field("user", Some(&s.user))
        .field("provider", Some(s.provider))
        .field("ip", s.ip)
        .field("location", s.location.as_ref())
        .field("app", s.app.as_ref())
        .field("client", s.client.as_ref())
        .field("result", Some(&s.result))
        .field("result_detail", s.result_detail.as_ref());
    r
}

fn risky(s: &SignIn) -> Option<SourcedAlert> {
    let level = s.risk_level.as_deref()?;
    let severity = match level {
        "high" => Severity::High,
        "medium" => Severity::Medium,
        _ => return None,
    };
    let state = s.risk_state.as_deref().unwrap_or("").to_ascii_lowercase();
    if HANDLED_RISK.contains(&state.as_str()) {
        return None;
    }
    let mut r = base(RISKY_SIGN_IN, severity, s);
    r.field("risk_level", Some(level))
        .field("risk_state", s.risk_state.as_ref())
        .field("conditional_access", s.conditional_access.as_ref())
        .field("mfa", s.mfa.as_ref())
        .field("device", s.device.as_ref())
        .field("time_ms", Some(s.time_ms));
    Some(r.build(s.time_ms, &[&s.key]))
}

fn spray(tx: &FeedTx<'_>, s: &SignIn, ip: IpAddr, cfg: &FeedsConfig) -> Result<Option<SourcedAlert>, StoreError> {
    let window = cfg.spray_window_ms;
    let from = s.time_ms.saturating_sub(window);
    let (count, users, first) = tx.users_from_ip(ip, SignInOutcome::Failure, from, s.time_ms, MAX_LISTED_USERS)?;
    if count < cfg.spray_min_users {
        return Ok(None);
    }
    let bucket = s.time_ms / window.max(1);
    let mut r = Raise::new(
        PASSWORD_SPRAY,
        AlertSource::Identity,
        Severity::Medium,
        first.unwrap_or(s.time_ms),
    );
    r.last_ms = s.time_ms;
    r.count = count;
    r.entity(Entity::Ip { addr: ip });
    for u in &users {
        r.entity(user(u));
    }
    r.field("ip", Some(ip))
        .field("distinct_users", Some(count))
        .field("users", Some(users.join(", ")))
        .field("window_ms", Some(window))
        .field("location", s.location.as_ref())
        .field("app", s.app.as_ref())
        .field("result", Some(&s.result));
    Ok(Some(r.build(bucket * window, &[&ip.to_string(), &bucket.to_string()])))
}

/// Brute force (failures) or MFA fatigue (denials): at least `min` of the user's
/// sign-ins with the same outcome within `window` up to this one.
fn repeated(
    tx: &FeedTx<'_>,
    s: &SignIn,
    rule: Rule,
    min: u32,
    window: u64,
) -> Result<Option<SourcedAlert>, StoreError> {
    let from = s.time_ms.saturating_sub(window);
    let (count, first, ips) = tx.user_outcomes(&s.user, s.outcome, from, s.time_ms)?;
    if count < min {
        return Ok(None);
    }
    let bucket = s.time_ms / window.max(1);
    let mut r = base(rule, Severity::Medium, s);
    r.first_ms = first.unwrap_or(s.time_ms);
    r.count = count;
    for ip in ips.iter().filter_map(|ip| ip.parse().ok()) {
        r.entity(Entity::Ip { addr: ip });
    }
    r.field("count", Some(count))
        .field("ips", Some(ips.join(", ")))
        .field("window_ms", Some(window))
        .field("mfa", s.mfa.as_ref());
    Ok(Some(r.build(bucket * window, &[&s.user, &bucket.to_string()])))
}

/// Great-circle distance in km (haversine, mean Earth radius).
pub fn distance_km(a: (f64, f64), b: (f64, f64)) -> f64 {
    let (lat1, lon1) = (a.0.to_radians(), a.1.to_radians());
    let (lat2, lon2) = (b.0.to_radians(), b.1.to_radians());
    let h = ((lat2 - lat1) / 2.0).sin().powi(2) + lat1.cos() * lat2.cos() * ((lon2 - lon1) / 2.0).sin().powi(2);
    2.0 * 6371.0 * h.sqrt().min(1.0).asin()
}

fn travel(tx: &FeedTx<'_>, s: &SignIn, cfg: &FeedsConfig) -> Result<Vec<SourcedAlert>, StoreError> {
    let Some(here) = s.coords else { return Ok(Vec::new()) };
    let (before, after) = tx.located_neighbours(&s.user, s.time_ms, &s.key)?;
    let mut out = Vec::new();
    for other in [before, after].into_iter().flatten() {
        let km = distance_km((other.latitude, other.longitude), here);
        if km < cfg.impossible_travel_min_km {
            continue;
        }
        let hours = s.time_ms.abs_diff(other.time_ms) as f64 / 3_600_000.0;
        let kmh = if hours > 0.0 { km / hours } else { f64::INFINITY };
        if kmh <= cfg.impossible_travel_max_kmh {
            continue;
        }
        out.push(travel_alert(s, &other, km, kmh));
    }
    Ok(out)
}

fn travel_alert(s: &SignIn, other: &LocatedSignIn, km: f64, kmh: f64) -> SourcedAlert {
    let (first_ms, last_ms) = (other.time_ms.min(s.time_ms), other.time_ms.max(s.time_ms));
    let mut r = base(IMPOSSIBLE_TRAVEL, Severity::Medium, s);
    r.first_ms = first_ms;
    r.last_ms = last_ms;
    r.count = 2;
    if let Some(ip) = other.ip.as_deref().and_then(|ip| ip.parse().ok()) {
        r.entity(Entity::Ip { addr: ip });
    }
    r.field("other_ip", other.ip.as_ref())
        .field("other_location", other.location.as_ref())
        .field("other_time_ms", Some(other.time_ms))
        .field("time_ms", Some(s.time_ms))
        .field("distance_km", Some(format!("{km:.0}")))
        .field(
            "speed_kmh",
            Some(if kmh.is_finite() {
                format!("{kmh:.0}")
            } else {
                "simultaneous".into()
            }),
        );
    // The pair, in a fixed order, names the alert whichever of the two came last.
    let (k1, k2) = if other.key < s.key {
        (&other.key, &s.key)
    } else {
        (&s.key, &other.key)
    };
    r.build(last_ms, &[k1, k2])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distances_are_great_circle_kilometres() {
        let london = (51.5074, -0.1278);
        let new_york = (40.7128, -74.0060);
        let d = distance_km(london, new_york);
        assert!((5560.0..5580.0).contains(&d), "{d}");
        assert!(distance_km(london, london) < 1e-9);
    }
}
