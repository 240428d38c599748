//! Automation rules (`[[automation]]` in the collector's config): an alert that
//! matches a rule's condition proposes a response action by itself, as actor
//! `automation:<rule name>`. The proposal waits for approval like any other,
//! unless the rule says `auto_approve`: then the rule approves it at once and the
//! command is signed and dispatched as after a human approval (the approval
//! record names `automation:<rule name>`). Agents count only approvers other
//! than the requester, so a device accepts auto-approved commands only for
//! kinds its `[response]` config sets to 0 approvals.
//!
//! The runner tails the `alerts` table by rowid from a persisted watermark, so
//! alerts from agents, feeds, the collector itself and other processes are all
//! seen, once. It is woken after every writer commit and on a timer (for other
//! processes' commits); each wake is one cheap read, and the writer is used only
//! when there are new alerts. On first start the watermark is the newest alert:
//! rules act on alerts that arrive after automation was first enabled.
//!
//! Deduplication: one proposal per rule and alert; no proposal identical to one
//! of the same rule still waiting or running on the device; and no isolate of a
//! device with an isolate pending or in force (whoever proposed it).
//!
//! Conditions are a closed set ([`Trigger`]): alerts, or incidents. Incident
//! rules are evaluated when alerts join an incident: a second watermark tails
//! `incident_alerts` by alert rowid (links are written by the correlator in
//! rowid order), and each incident touched is checked in its current state
//! (open, minimum incident severity, any of the tactics, all of the sources).
//! A matching incident proposes the action for each target among its alerts
//! (each device; each alert's process or file on its device), with the
//! proposal's `incident_id` set, once per rule, incident and target, but only
//! on a device for which the condition holds by its own evidence (its alerts,
//! plus device-less alerts of a source the rule names in `sources_all`): an
//! alert from one device never triggers an action on another, however the
//! incident was joined ([`IncidentMatch::matches_on`]). A third
//! watermark tails `incident_activity`: an analyst's change that can make an
//! incident match (reopened, severity set, merged into, alerts moved) has it
//! checked again the same way.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio::sync::watch;
use tracing::{debug, info, warn};
use ward_protocol::{Action, ActionKind, DeviceId, Entity, Severity};

use super::dispatch::Dispatcher;
use super::policy::{Policy, kind_named};
use super::transitions::{self, Decision, Rules};
use super::workflow::{AUTOMATION_PREFIX, Actor};
use crate::config::{AlertCondition, IncidentCondition, RuleConfig};
use crate::incidents::severity::incident_severity;
use crate::model::action::ActionSpec;
use crate::model::action::Status;
use crate::model::incident::tactic_rank;
use crate::roles::Role;
use crate::store::prelude::*;
use crate::store::{AutomationAlert, AutomationIncident, NewAction, Store, StoreError};
use crate::util::now_ms;

/// How often the runner looks for alerts committed by other processes.
pub const AUTOMATION_POLL: Duration = Duration::from_secs(1);
/// Most alerts evaluated in one writer task.
pub const BATCH: u32 = 256;
/// Most rules in a config.
pub const MAX_RULES: usize = 64;
/// Longest rule name.
const MAX_NAME: usize = 48;
/// Most entries in one condition list.
const MAX_LIST: usize = 64;

/// What a rule reacts to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trigger {
    Alert(AlertMatch),
    Incident(IncidentMatch),
}

/// A validated incident condition, normalized for matching.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IncidentMatch {
    pub min_severity: Option<Severity>,
    pub tactics: Vec<String>,
    pub sources_all: Vec<String>,
}

/// A validated alert condition, normalized for matching.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertMatch {
    pub min_severity: Option<Severity>,
    pub rule_ids: Vec<String>,
    pub techniques: Vec<String>,
    pub tactics: Vec<String>,
    pub sources: Vec<String>,
    pub devices: Vec<String>,
}

/// A validated rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub name: String,
    pub kind: ActionKind,
    pub auto_approve: bool,
    pub allow: Vec<String>,
    pub trigger: Trigger,
}

impl Rule {
    /// The actor the rule proposes (and auto-approves) as.
    pub fn actor(&self) -> Actor {
        Actor {
            name: format!("{AUTOMATION_PREFIX}{}", self.name),
            role: Role::Approver,
        }
    }
}

const SOURCES: [&str; 5] = ["agent", "identity", "mailbox", "collector", "endpoint"];
const KINDS: [ActionKind; 4] = [
    ActionKind::Isolate,
    ActionKind::KillProcess,
    ActionKind::QuarantineFile,
    ActionKind::CollectPackage,
];

fn list(at: &str, field: &str, v: &[String], lower: bool) -> Result<Vec<String>, String> {
    if v.len() > MAX_LIST {
        return Err(format!("{at}.{field} has more than {MAX_LIST} entries"));
    }
    v.iter()
        .map(|s| {
            let s = s.trim();
            if s.is_empty() || s.len() > 256 || s.chars().any(char::is_control) {
                return Err(format!("{at}.{field}: {s:?} is not a valid entry"));
            }
            Ok(if lower { s.to_ascii_lowercase() } else { s.to_string() })
        })
        .collect()
}

/// Validates the configured rules against the permission table in force.
pub fn compile(configs: &[RuleConfig], policy: &Policy) -> Result<Vec<Rule>, String> {
    if configs.len() > MAX_RULES {
        return Err(format!("at most {MAX_RULES} [[automation]] rules"));
    }
    let mut rules: Vec<Rule> = Vec::with_capacity(configs.len());
    for c in configs {
        let at = format!("automation {:?}", c.name);
        if c.name.is_empty()
            || c.name.len() > MAX_NAME
            || !c.name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        {
            return Err(format!(
                "{at}: a name is 1..={MAX_NAME} characters of letters, digits, '-', '_' and '.'"
            ));
        }
        if rules.iter().any(|r| r.name == c.name) {
            return Err(format!("{at}: two rules have this name"));
        }
        let kind = kind_named(&c.action).filter(|k| KINDS.contains(k)).ok_or_else(|| {
            format!("{at}: action must be one of isolate, kill_process, quarantine_file, collect_package")
        })?;
        if !c.allow.is_empty() && kind != ActionKind::Isolate {
            return Err(format!("{at}: allow is only for isolate"));
        }
        if kind == ActionKind::Isolate {
            ActionSpec::parse(json!({"kind": "isolate", "allow": c.allow})).map_err(|e| format!("{at}.allow: {e}"))?;
        }
        let needed = policy.for_kind(kind).approvals_needed;
        if c.auto_approve && needed > 1 {
            return Err(format!(
                "{at}: auto_approve is refused for {}: the actions policy needs {needed} approvers",
                kind.as_str()
            ));
        }
        let trigger = match (&c.alert, &c.incident) {
            (Some(cond), None) => Trigger::Alert(alert_match(&at, cond)?),
            (None, Some(cond)) => Trigger::Incident(incident_match(&at, cond)?),
            (None, None) => {
                return Err(format!(
                    "{at}: needs a condition ([automation.alert] or [automation.incident])"
                ));
            }
            (Some(_), Some(_)) => {
                return Err(format!(
                    "{at}: has both [automation.alert] and [automation.incident]; a rule has exactly one condition"
                ));
            }
        };
        rules.push(Rule {
            name: c.name.clone(),
            kind,
            auto_approve: c.auto_approve,
            allow: c.allow.clone(),
            trigger,
        });
    }
    Ok(rules)
}

fn severity(at: &str, field: &str, s: Option<&str>) -> Result<Option<Severity>, String> {
    s.map(|s| Severity::parse(s).ok_or_else(|| format!("{at}.{field}: unknown severity {s:?}")))
        .transpose()
}

fn sources(at: &str, field: &str, v: &[String]) -> Result<Vec<String>, String> {
    let sources = list(at, field, v, true)?;
    if let Some(bad) = sources.iter().find(|s| !SOURCES.contains(&s.as_str())) {
        return Err(format!(
            "{at}.{field}: unknown source {bad:?}; known: {}",
            SOURCES.join(", ")
        ));
    }
    Ok(sources)
}

fn alert_match(at: &str, cond: &AlertCondition) -> Result<AlertMatch, String> {
    let m = AlertMatch {
        min_severity: severity(at, "alert.min_severity", cond.min_severity.as_deref())?,
        rule_ids: list(at, "alert.rule_ids", &cond.rule_ids, false)?,
        techniques: list(at, "alert.techniques", &cond.techniques, true)?,
        tactics: list(at, "alert.tactics", &cond.tactics, true)?,
        sources: sources(at, "alert.sources", &cond.sources)?,
        devices: list(at, "alert.devices", &cond.devices, true)?,
    };
    if m == (AlertMatch {
        min_severity: None,
        rule_ids: vec![],
        techniques: vec![],
        tactics: vec![],
        sources: vec![],
        devices: vec![],
    }) {
        return Err(format!(
            "{at}.alert: an empty condition would match every alert; name at least one criterion"
        ));
    }
    Ok(m)
}

fn incident_match(at: &str, cond: &IncidentCondition) -> Result<IncidentMatch, String> {
    let tactics = list(at, "incident.tactics", &cond.tactics, false)?;
    if let Some(bad) = tactics.iter().find(|t| tactic_rank(t).is_none()) {
        return Err(format!(
            "{at}.incident.tactics: {bad:?} is not an ATT&CK Enterprise tactic id (TA0001 ... TA0043)"
        ));
    }
    let m = IncidentMatch {
        min_severity: severity(at, "incident.min_severity", cond.min_severity.as_deref())?,
        tactics: tactics.iter().map(|t| t.to_ascii_uppercase()).collect(),
        sources_all: sources(at, "incident.sources_all", &cond.sources_all)?,
    };
    if m == IncidentMatch::default() {
        return Err(format!(
            "{at}.incident: an empty condition would match every incident; name at least one criterion"
        ));
    }
    Ok(m)
}

impl IncidentMatch {
    /// Open incidents only: redirected (merged) and resolved ones never match.
    pub fn matches(&self, i: &AutomationIncident) -> bool {
        self.matches_view(&i.status, i.severity, &i.tactics, &i.sources)
    }

    fn matches_view(&self, status: &str, severity: Severity, tactics: &[String], sources: &[String]) -> bool {
        matches!(status, "active" | "in_progress")
            && self.min_severity.is_none_or(|min| severity >= min)
            && (self.tactics.is_empty()
                || self
                    .tactics
                    .iter()
                    .any(|t| tactics.iter().any(|h| h.eq_ignore_ascii_case(t))))
            && self
                .sources_all
                .iter()
                .all(|s| sources.iter().any(|h| h.eq_ignore_ascii_case(s)))
    }

    /// Whether the condition holds for `device` on the evidence that counts for
    /// it: the incident's alerts from that device, and alerts with no device
    /// (identity, mailbox) from a source the rule names in `sources_all`. Another
    /// device's alerts never count, so a device that joined an incident only
    /// through an entity another device's alert claimed (a rogue agent naming a
    /// user, say) is not acted on because of that alert, and a rogue device's
    /// alert acts only on the rogue device. The severity is the incident's rule
    /// (highest alert, raised for breadth) over that evidence, unless an analyst
    /// set the incident's severity: that judgment covers the incident.
    pub fn matches_on(&self, i: &AutomationIncident, device: &str) -> bool {
        let mut own = false;
        let mut max = Severity::Informational;
        let mut tactics: Vec<String> = Vec::new();
        let mut sources: Vec<String> = Vec::new();
        for a in &i.alerts {
            let counts = match &a.device_id {
                Some(d) => d == device,
                None => self.sources_all.iter().any(|s| s.eq_ignore_ascii_case(&a.source)),
            };
            if !counts {
                continue;
            }
            own |= a.device_id.is_some();
            max = max.max(a.severity);
            for t in &a.tactics {
                if tactic_rank(t).is_some() && !tactics.contains(t) {
                    tactics.push(t.clone());
                }
            }
            if !sources.contains(&a.source) {
                sources.push(a.source.clone());
            }
        }
        if !own {
            return false;
        }
        let severity = if i.severity_manual {
            i.severity
        } else {
            incident_severity(max, tactics.len(), sources.len())
        };
        self.matches_view(&i.status, severity, &tactics, &sources)
    }
}

impl AlertMatch {
    pub fn matches(&self, a: &AutomationAlert) -> bool {
        let any = |want: &[String], have: &[String], eq: &dyn Fn(&str, &str) -> bool| {
            want.is_empty() || want.iter().any(|w| have.iter().any(|h| eq(w, h)))
        };
        let same = |w: &str, h: &str| w.eq_ignore_ascii_case(h);
        // A technique matches itself and its sub-techniques.
        let technique = |w: &str, h: &str| {
            let h = h.to_ascii_lowercase();
            h == w || h.strip_prefix(w).is_some_and(|rest| rest.starts_with('.'))
        };
        let device: Vec<String> = a.device_id.iter().chain(a.hostname.iter()).cloned().collect();
        self.min_severity.is_none_or(|min| a.severity >= min)
            && (self.rule_ids.is_empty() || self.rule_ids.contains(&a.rule_id))
            && any(&self.techniques, &a.techniques, &technique)
            && any(&self.tactics, &a.tactics, &same)
            && (self.sources.is_empty() || self.sources.iter().any(|s| s == &a.source))
            && any(&self.devices, &device, &same)
    }
}

/// The action `rule` proposes for alert `a`, on which device, or why none.
pub fn action_for(rule: &Rule, a: &AutomationAlert) -> Result<(DeviceId, Action), String> {
    let device: DeviceId = a
        .device_id
        .as_deref()
        .ok_or("the alert names no enrolled device")?
        .parse()
        .map_err(|_| "the alert's device id does not parse")?;
    Ok((device, action_on(rule, &a.entities)?))
}

/// The action `rule` proposes on a device, from one alert's `entities`.
fn action_on(rule: &Rule, entities: &[Entity]) -> Result<Action, String> {
    let spec = match rule.kind {
        ActionKind::Isolate => json!({"kind": "isolate", "allow": rule.allow}),
        ActionKind::CollectPackage => json!({"kind": "collect_package"}),
        ActionKind::KillProcess => {
            let Some(Entity::Process {
                pid,
                start_time_ms,
                exe,
                ..
            }) = entities.iter().find(|e| matches!(e, Entity::Process { .. }))
            else {
                return Err("the alert names no process".into());
            };
            json!({"kind": "kill_process", "pid": pid, "start_time_ms": start_time_ms, "exe": exe})
        }
        ActionKind::QuarantineFile => {
            let Some((path, sha256)) = entities.iter().find_map(|e| match e {
                Entity::File { path, sha256: Some(h) } => Some((path, h)),
                _ => None,
            }) else {
                return Err("the alert names no file with a SHA-256".into());
            };
            json!({"kind": "quarantine_file", "path": path, "sha256": hex::encode(sha256)})
        }
        other => return Err(format!("{} is not an automation action", other.as_str())),
    };
    ActionSpec::parse(spec).map_err(|e| format!("the alert's target is not usable: {e}"))
}

/// One proposal an incident rule makes: the subject it is recorded under
/// (`incident:<id>:<device>[:<target>]`), the device and the action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IncidentTarget {
    pub subject: String,
    pub device: DeviceId,
    pub action: Action,
}

/// What `rule` proposes for incident `i`: for isolate and collect_package each
/// device of its alerts; for kill_process and quarantine_file each alert's
/// process or file on that alert's device. Only devices on which the rule's
/// condition holds by their own evidence ([`IncidentMatch::matches_on`]).
/// Distinct, in the alerts' order.
pub fn incident_targets(rule: &Rule, i: &AutomationIncident) -> Vec<IncidentTarget> {
    let Trigger::Incident(m) = &rule.trigger else {
        return Vec::new();
    };
    let mut out: Vec<IncidentTarget> = Vec::new();
    let mut judged: Vec<(&str, bool)> = Vec::new();
    for alert in &i.alerts {
        let Some(device) = alert.device_id.as_deref() else {
            continue;
        };
        let Ok(parsed) = device.parse::<DeviceId>() else {
            continue;
        };
        let holds = match judged.iter().find(|(d, _)| *d == device) {
            Some((_, holds)) => *holds,
            None => {
                let holds = m.matches_on(i, device);
                judged.push((device, holds));
                holds
            }
        };
        if !holds {
            continue;
        }
        let Ok(action) = action_on(rule, &alert.entities) else {
            continue;
        };
        let subject = match &action {
            Action::KillProcess { pid, start_time_ms, .. } => {
                format!("incident:{}:{device}:process:{pid}:{start_time_ms}", i.id)
            }
            Action::QuarantineFile { path, sha256 } => {
                format!("incident:{}:{device}:file:{}:{path}", i.id, hex::encode(sha256))
            }
            _ => format!("incident:{}:{device}", i.id),
        };
        if !out.iter().any(|t| t.subject == subject) {
            out.push(IncidentTarget {
                subject,
                device: parsed,
                action,
            });
        }
    }
    out
}

/// What one pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Pass {
    pub alerts: usize,
    /// Alert links to incidents read (the incident stream's batch).
    pub links: usize,
    /// Incident activity entries read (analysts' changes among them).
    pub changes: usize,
    pub proposed: usize,
    pub auto_approved: usize,
    pub skipped: usize,
}

/// What became of one rule matching one alert.
enum Handled {
    Skipped,
    Proposed,
    /// Proposed and auto-approved; the command for this device is dispatched.
    Dispatched(DeviceId),
}

/// Proposes `rule`'s action for alert `a` (and approves it if the rule says
/// so), on the writer's store.
fn handle_match(s: &mut Store, rule: &Rule, a: &AutomationAlert, rules: Rules<'_>) -> Result<Handled, String> {
    let (device, action) = match action_for(rule, a) {
        Ok(t) => t,
        Err(why) => {
            debug!(rule = %rule.name, alert = %a.id, %why, "automation rule matched, nothing to propose");
            return Ok(Handled::Skipped);
        }
    };
    let reason = format!(
        "automation rule {}: alert {} ({}, {}) {}",
        rule.name,
        a.rule_id,
        a.severity.as_str(),
        a.source,
        a.id
    );
    let proposal = Proposal {
        subject: &a.id,
        device,
        action,
        reason,
        incident_id: None,
    };
    propose(s, rule, proposal, rules)
}

/// What a rule proposes, under which subject.
struct Proposal<'a> {
    subject: &'a str,
    device: DeviceId,
    action: Action,
    reason: String,
    incident_id: Option<String>,
}

/// What became of a rule's match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AutomationOutcome {
    Proposed,
    /// Not proposed, and why (already proposed for this subject, or a duplicate).
    Skipped(String),
}

/// Stores `new`, proposed by automation rule `rule` for `subject` (an alert id, or
/// `incident:<id>:<device>[:<target>]`), unless the rule already proposed for that
/// subject, the same rule has the same action waiting or running on the device, or
/// (for an isolate) the device has an isolate pending or in force. The proposal,
/// its record and its audit entry are one transaction.
pub fn propose_once(
    store: &mut Store,
    rule: &str,
    subject: &str,
    new: &NewAction,
) -> Result<AutomationOutcome, StoreError> {
    let tx = store.action_tx()?;
    if let Some(outcome) = tx.automation_record(rule, subject)? {
        return Ok(AutomationOutcome::Skipped(format!(
            "already handled for {subject}: {outcome}"
        )));
    }
    let open: Vec<Status> = Status::ALL.into_iter().filter(|s| !s.is_final()).collect();
    let same = tx.same_action(new.device_id, &new.requested_by, &new.action, &open)?;
    let isolated = if new.action.kind() == ActionKind::Isolate {
        tx.isolation_evidence(new.device_id, &open)?
    } else {
        None
    };
    let skipped = match (isolated, same) {
        (Some(by), _) => Some(format!("the device is already isolated or being isolated ({by})")),
        (None, Some(id)) => Some(format!("the same action {id} is already waiting or running")),
        (None, None) => None,
    };
    let (action_id, outcome) = match skipped {
        Some(why) => (None, AutomationOutcome::Skipped(why)),
        None => match tx.insert(new)? {
            Ok(()) => (Some(new.id.to_string()), AutomationOutcome::Proposed),
            Err(refusal) => (None, AutomationOutcome::Skipped(refusal.to_string())),
        },
    };
    let text = match &outcome {
        AutomationOutcome::Proposed => "proposed".to_string(),
        AutomationOutcome::Skipped(why) => format!("skipped: {why}"),
    };
    tx.set_automation_record(rule, subject, action_id.as_deref(), &text, new.now_ms)?;
    tx.commit()?;
    Ok(outcome)
}

/// Stores `p` as `rule`'s proposal (once per rule and subject) and approves it
/// if the rule says so.
fn propose(s: &mut Store, rule: &Rule, p: Proposal<'_>, rules: Rules<'_>) -> Result<Handled, String> {
    let Proposal {
        subject,
        device,
        action,
        reason,
        incident_id,
    } = p;
    let actor = rule.actor();
    let now = now_ms();
    let id = ward_protocol::CommandId::generate(now, &ring::rand::SystemRandom::new())
        .map_err(|e| format!("cannot create an id: {e:?}"))?;
    let new = NewAction {
        id,
        device_id: device,
        action,
        reason,
        requested_by: actor.name.clone(),
        now_ms: now,
        undo_of: None,
        expires_at_ms: now.saturating_add(rules.policy.pending_ttl_ms),
        incident_id,
    };
    if let AutomationOutcome::Skipped(why) = propose_once(s, &rule.name, subject, &new).map_err(|e| e.to_string())? {
        debug!(rule = %rule.name, %subject, %why, "automation proposal skipped");
        return Ok(Handled::Skipped);
    }
    info!(rule = %rule.name, %subject, action = %id, kind = rule.kind.as_str(), "automation proposed an action");
    if !rule.auto_approve {
        return Ok(Handled::Proposed);
    }
    let comment = format!("auto-approved by automation rule {}", rule.name);
    match transitions::decide(
        s,
        &id.to_string(),
        &actor,
        Decision::AutoApprove,
        &comment,
        now_ms(),
        rules,
    ) {
        Ok(Ok(outcome)) => Ok(outcome
            .dispatched
            .map_or(Handled::Proposed, |(d, _)| Handled::Dispatched(d))),
        Ok(Err(e)) => {
            // Stays pending for people (e.g. the device was revoked meanwhile).
            warn!(rule = %rule.name, action = %id, error = %e, "automation could not approve");
            Ok(Handled::Proposed)
        }
        Err(e) => Err(e.to_string()),
    }
}

/// Evaluates the alerts above the watermark (one batch) with `rules` on the
/// writer; returns what it did and the devices with new commands to push.
async fn pass(dispatcher: &Dispatcher, rules: &Arc<Vec<Rule>>) -> Result<(Pass, Vec<DeviceId>), String> {
    let rules = Arc::clone(rules);
    let policy = Arc::clone(&dispatcher.policy);
    let key = Arc::clone(&dispatcher.key);
    dispatcher
        .writer
        .run(move |s| {
            let sign = move |c: &ward_protocol::Command| {
                key.sign_value(ward_protocol::SignatureKind::Command, c)
                    .map_err(|e| e.to_string())
            };
            let signing = Rules {
                policy: &policy,
                sign: &sign,
            };
            let mut done = Pass::default();
            let mut devices = Vec::new();
            let mut tally = |h: Handled, done: &mut Pass| match h {
                Handled::Skipped => done.skipped += 1,
                Handled::Proposed => done.proposed += 1,
                Handled::Dispatched(device) => {
                    done.proposed += 1;
                    done.auto_approved += 1;
                    devices.push(device);
                }
            };
            let alert_rules: Vec<(&Rule, &AlertMatch)> = rules
                .iter()
                .filter_map(|r| match &r.trigger {
                    Trigger::Alert(m) => Some((r, m)),
                    Trigger::Incident(_) => None,
                })
                .collect();
            let incident_rules: Vec<(&Rule, &IncidentMatch)> = rules
                .iter()
                .filter_map(|r| match &r.trigger {
                    Trigger::Incident(m) => Some((r, m)),
                    Trigger::Alert(_) => None,
                })
                .collect();
            if !alert_rules.is_empty() {
                let alerts = s.automation_alerts(BATCH).map_err(|e| e.to_string())?;
                done.alerts = alerts.len();
                for a in &alerts {
                    for (rule, m) in &alert_rules {
                        if m.matches(a) {
                            tally(handle_match(s, rule, a, signing)?, &mut done);
                        }
                    }
                }
                if let Some(last) = alerts.last().map(|a| a.rowid) {
                    s.automation_advance(last).map_err(|e| e.to_string())?;
                }
            }
            if !incident_rules.is_empty() {
                let batch = s.automation_incidents(BATCH).map_err(|e| e.to_string())?;
                done.links = batch.links;
                done.changes = batch.changes;
                for i in &batch.incidents {
                    for (rule, m) in &incident_rules {
                        if !m.matches(i) {
                            continue;
                        }
                        for t in incident_targets(rule, i) {
                            let reason = format!(
                                "automation rule {}: incident {} ({}, tactics {}, sources {})",
                                rule.name,
                                i.id,
                                i.severity.as_str(),
                                i.tactics.join(" "),
                                i.sources.join(" ")
                            );
                            let proposal = Proposal {
                                subject: &t.subject,
                                device: t.device,
                                action: t.action,
                                reason,
                                incident_id: Some(i.id.clone()),
                            };
                            tally(propose(s, rule, proposal, signing)?, &mut done);
                        }
                    }
                }
                if let Some(last) = batch.last {
                    s.automation_advance_incidents(last).map_err(|e| e.to_string())?;
                }
                if let Some(last) = batch.last_change {
                    s.automation_advance_changes(last).map_err(|e| e.to_string())?;
                }
            }
            Ok((done, devices))
        })
        .await
        .map_err(|e| e.to_string())?
}

/// Runs `rules` until `shutdown` flips: after every writer commit (`commits`)
/// and every [`AUTOMATION_POLL`], if the alerts table or the incident links grew.
pub async fn run_automation(
    dispatcher: Arc<Dispatcher>,
    rules: Vec<Rule>,
    mut commits: watch::Receiver<u64>,
    mut shutdown: watch::Receiver<bool>,
) {
    if rules.is_empty() {
        return;
    }
    let rules = Arc::new(rules);
    let mut tick = tokio::time::interval(AUTOMATION_POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The newest alert rowid, incident link and incident change already
    // evaluated, as far as this process knows.
    let mut seen: Option<(i64, i64, i64)> = None;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            r = commits.changed() => if r.is_err() { return },
            _ = shutdown.changed() => return,
        }
        let newest = match dispatcher
            .reads
            .run(|s| {
                Ok::<_, crate::store::StoreError>((
                    s.newest_alert_rowid()?,
                    s.newest_incident_link()?,
                    s.newest_incident_change()?,
                ))
            })
            .await
        {
            Ok(Ok(n)) => n,
            Ok(Err(e)) => {
                warn!(error = %e, "automation cannot read the alerts table");
                continue;
            }
            Err(_) => return,
        };
        if seen.is_some_and(|(a, l, c)| a >= newest.0 && l >= newest.1 && c >= newest.2) {
            continue;
        }
        loop {
            match pass(&dispatcher, &rules).await {
                Ok((done, devices)) => {
                    for device in devices {
                        dispatcher.deliveries.push(device).await;
                    }
                    if done.proposed > 0 || done.skipped > 0 {
                        info!(?done, "automation pass");
                    }
                    if done.alerts < BATCH as usize && done.links < BATCH as usize && done.changes < BATCH as usize {
                        seen = Some(newest);
                        break;
                    }
                }
                Err(e) => {
                    // The failed pass was itself a writer round: wait a poll period
                    // rather than be woken by it at once.
                    warn!(error = %e, "automation pass failed; retrying shortly");
                    tokio::select! {
                        _ = tokio::time::sleep(AUTOMATION_POLL) => {}
                        _ = shutdown.changed() => return,
                    }
                    break;
                }
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::store::EvidenceAlert;

    const T0: u64 = 1_700_000_000_000;

    fn new_action(device: DeviceId, action: Action, by: &str) -> NewAction {
        NewAction {
            id: ward_protocol::CommandId::generate(T0, &ring::rand::SystemRandom::new()).unwrap(),
            device_id: device,
            action,
            reason: "r".into(),
            requested_by: by.into(),
            now_ms: T0,
            undo_of: None,
            expires_at_ms: T0 + 1_000_000,
            incident_id: None,
        }
    }

    /// A person rejects every isolate still waiting.
    fn reject_isolates(store: &mut Store) {
        let bob = Actor {
            name: "bob".into(),
            role: Role::Approver,
        };
        let filter = crate::store::ActionFilter {
            status: Some(Status::Requested),
            limit: 100,
            ..Default::default()
        };
        for a in store.list_actions(&filter).unwrap() {
            if a.kind == "isolate" {
                let rules = Rules {
                    policy: &Policy::default(),
                    sign: &|_| Err("no signing in this test".into()),
                };
                transitions::decide(store, &a.id, &bob, Decision::Reject, "no", T0, rules)
                    .unwrap()
                    .unwrap();
            }
        }
    }

    #[test]
    fn one_proposal_per_rule_and_alert_and_no_second_isolate() {
        use ward_protocol::Action;
        let (_dir, mut store) = crate::store::test_support::open();
        let dev = crate::store::test_support::enrolled_device(&mut store, 1, T0);
        let isolate = || Action::Isolate { allow: vec![] };
        let p = |store: &mut Store, rule: &str, alert: &str, action: Action| {
            let new = new_action(dev, action, &format!("automation:{rule}"));
            propose_once(store, rule, alert, &new).unwrap()
        };
        assert_eq!(
            p(&mut store, "pkg", "a1", Action::CollectPackage),
            AutomationOutcome::Proposed
        );
        // The same rule and alert again (a crash before the watermark moved): skipped.
        let again = p(&mut store, "pkg", "a1", Action::CollectPackage);
        assert!(
            matches!(again, AutomationOutcome::Skipped(ref w) if w.contains("already handled")),
            "{again:?}"
        );
        // The same rule, another alert, the same action still waiting: skipped.
        let same = p(&mut store, "pkg", "a2", Action::CollectPackage);
        assert!(
            matches!(same, AutomationOutcome::Skipped(ref w) if w.contains("same action")),
            "{same:?}"
        );
        // An isolate a person proposed is pending: no isolate from a rule.
        store
            .create_action(&new_action(dev, isolate(), "ann"))
            .unwrap()
            .unwrap();
        let iso = p(&mut store, "iso", "a3", isolate());
        assert!(
            matches!(iso, AutomationOutcome::Skipped(ref w) if w.contains("isolated")),
            "{iso:?}"
        );
        // Once nothing is pending and the device does not report isolation, it may.
        reject_isolates(&mut store);
        assert_eq!(p(&mut store, "iso", "a4", isolate()), AutomationOutcome::Proposed);
        reject_isolates(&mut store);
        let isolated = crate::store::DeviceState {
            seen_at_ms: T0,
            inventory: None,
            isolation: ward_protocol::IsolationState::Isolated,
            outbox_depth: 0,
            rule_pack_version: 0,
            clock_skew_ms: 0,
        };
        store.update_device_states(&[(dev, isolated)]).unwrap();
        let reported = p(&mut store, "iso", "a5", isolate());
        assert!(
            matches!(reported, AutomationOutcome::Skipped(ref w) if w.contains("reports")),
            "{reported:?}"
        );
        let tx = store.action_tx().unwrap();
        let recorded = [
            ("pkg", "a1"),
            ("pkg", "a2"),
            ("iso", "a3"),
            ("iso", "a4"),
            ("iso", "a5"),
        ]
        .into_iter()
        .filter(|(rule, alert)| tx.automation_record(rule, alert).unwrap().is_some())
        .count();
        assert_eq!(recorded, 5, "one record each for a1..a5");
    }

    fn rules(toml: &str) -> Result<Vec<Rule>, String> {
        let c = Config::parse(toml)?;
        compile(&c.automation, &Policy::from_config(&c.actions)?)
    }

    fn alert() -> AutomationAlert {
        AutomationAlert {
            rowid: 1,
            id: "A1".into(),
            device_id: Some("01M84H66737TZZBQQJZAPV3RTC".into()),
            hostname: Some("Web-1".into()),
            source: "agent".into(),
            rule_id: "ward-ransom-note".into(),
            severity: Severity::High,
            techniques: vec!["T1486".into(), "T1059.004".into()],
            tactics: vec!["TA0040".into()],
            entities: vec![
                Entity::Process {
                    pid: 42,
                    ppid: 1,
                    start_time_ms: 7,
                    exe: "/usr/bin/evil".into(),
                    cmdline: "evil".into(),
                    sha256: None,
                },
                Entity::File {
                    path: "/tmp/note.txt".into(),
                    sha256: None,
                },
                Entity::File {
                    path: "/tmp/x.bin".into(),
                    sha256: Some([0xab; 32]),
                },
            ],
        }
    }

    #[test]
    fn conditions_match_every_listed_criterion() {
        let r = rules(
            "[[automation]]\nname = \"r\"\naction = \"isolate\"\n[automation.alert]\nmin_severity = \"high\"\n\
             techniques = [\"t1059\"]\ntactics = [\"ta0040\"]\nsources = [\"agent\"]\ndevices = [\"web-1\"]\n",
        )
        .unwrap();
        let Trigger::Alert(m) = &r[0].trigger else {
            panic!("an alert rule")
        };
        let a = alert();
        assert!(m.matches(&a), "sub-technique, case-insensitive tactic and hostname");
        let cases: Vec<(&str, AutomationAlert)> = vec![
            (
                "severity",
                AutomationAlert {
                    severity: Severity::Medium,
                    ..alert()
                },
            ),
            (
                "technique",
                AutomationAlert {
                    techniques: vec!["T10590".into()],
                    ..alert()
                },
            ),
            (
                "tactic",
                AutomationAlert {
                    tactics: vec![],
                    ..alert()
                },
            ),
            (
                "source",
                AutomationAlert {
                    source: "identity".into(),
                    ..alert()
                },
            ),
            (
                "device",
                AutomationAlert {
                    hostname: Some("web-2".into()),
                    device_id: None,
                    ..alert()
                },
            ),
        ];
        for (what, a) in cases {
            assert!(!m.matches(&a), "{what} must not match");
        }
        let by_rule = rules("[[automation]]\nname = \"r\"\naction = \"collect_package\"\n[automation.alert]\nrule_ids = [\"ward-ransom-note\", \"other\"]\n").unwrap();
        let Trigger::Alert(m) = &by_rule[0].trigger else {
            panic!("an alert rule")
        };
        assert!(m.matches(&alert()));
        assert!(!m.matches(&AutomationAlert {
            rule_id: "ward-other".into(),
            ..alert()
        }));
    }

    #[test]
    fn actions_take_their_target_from_the_alert() {
        let compiled = rules(
            "[[automation]]\nname = \"kill\"\naction = \"kill_process\"\n[automation.alert]\nmin_severity = \"low\"\n\
             [[automation]]\nname = \"q\"\naction = \"quarantine_file\"\n[automation.alert]\nmin_severity = \"low\"\n\
             [[automation]]\nname = \"iso\"\naction = \"isolate\"\nallow = [\"10.0.0.53\"]\nauto_approve = true\n[automation.alert]\nmin_severity = \"low\"\n",
        )
        .unwrap();
        let a = alert();
        let (_, kill) = action_for(&compiled[0], &a).unwrap();
        assert_eq!(
            kill,
            Action::KillProcess {
                pid: 42,
                start_time_ms: 7,
                exe: "/usr/bin/evil".into(),
                tree: false
            }
        );
        let (_, q) = action_for(&compiled[1], &a).unwrap();
        assert_eq!(
            q,
            Action::QuarantineFile {
                path: "/tmp/x.bin".into(),
                sha256: [0xab; 32]
            }
        );
        let (_, iso) = action_for(&compiled[2], &a).unwrap();
        assert_eq!(
            iso,
            Action::Isolate {
                allow: vec!["10.0.0.53".into()]
            }
        );
        assert_eq!(compiled[2].actor().name, "automation:iso");
        // No target, no proposal.
        let bare = AutomationAlert {
            entities: vec![],
            device_id: None,
            ..alert()
        };
        for r in &compiled {
            assert!(action_for(r, &bare).is_err());
        }
        let no_hash = AutomationAlert {
            entities: vec![Entity::File {
                path: "/tmp/a".into(),
                sha256: None,
            }],
            ..alert()
        };
        assert!(action_for(&compiled[1], &no_hash).unwrap_err().contains("SHA-256"));
    }

    const DEV_A: &str = "01M84H66737TZZBQQJZAPV3RTC";
    const DEV_B: &str = "01M84H66737TZZBQQJZAPV3RTD";

    fn incident() -> AutomationIncident {
        let process = |pid| Entity::Process {
            pid,
            ppid: 1,
            start_time_ms: 7,
            exe: "/usr/bin/evil".into(),
            cmdline: "evil".into(),
            sha256: None,
        };
        AutomationIncident {
            id: "INC-1".into(),
            status: "active".into(),
            severity: Severity::High,
            tactics: vec!["TA0002".into(), "TA0040".into()],
            sources: vec!["agent".into(), "mailbox".into()],
            severity_manual: false,
            alerts: vec![
                ev(Some(DEV_A), "agent", Severity::High, &["TA0002"], vec![process(42)]),
                ev(Some(DEV_A), "agent", Severity::Medium, &["TA0040"], vec![process(42)]),
                ev(Some(DEV_A), "agent", Severity::Low, &[], vec![process(43)]),
                ev(Some(DEV_B), "agent", Severity::Low, &[], vec![]),
                ev(Some("not-a-device"), "agent", Severity::High, &[], vec![process(44)]),
                ev(None, "mailbox", Severity::Medium, &[], vec![]),
            ],
        }
    }

    fn ev(
        device: Option<&str>,
        source: &str,
        severity: Severity,
        tactics: &[&str],
        entities: Vec<Entity>,
    ) -> EvidenceAlert {
        EvidenceAlert {
            device_id: device.map(str::to_string),
            source: source.into(),
            severity,
            tactics: tactics.iter().map(|t| t.to_string()).collect(),
            entities,
        }
    }

    #[test]
    fn an_incident_rule_acts_only_on_devices_whose_own_evidence_matches() {
        // Two devices share an incident through a user at medium; a rogue device's
        // critical alert naming that user joins it and makes it critical.
        let rogue = "01M84H66737TZZBQQJZAPV3RTE";
        let mut i = AutomationIncident {
            severity: Severity::Critical,
            tactics: vec!["TA0002".into()],
            sources: vec!["agent".into()],
            alerts: vec![
                ev(Some(DEV_A), "agent", Severity::Medium, &["TA0002"], vec![]),
                ev(Some(DEV_B), "agent", Severity::Medium, &["TA0002"], vec![]),
                ev(Some(rogue), "agent", Severity::Critical, &[], vec![]),
            ],
            ..incident()
        };
        let r = incident_rule("min_severity = \"critical\"\n", "collect_package");
        assert!(incident_match(&r).matches(&i), "the incident as a whole matches");
        let devices: Vec<String> = incident_targets(&r, &i).iter().map(|t| t.device.to_string()).collect();
        assert_eq!(devices, vec![rogue.to_string()], "only the device whose evidence it is");
        // Breadth raises a device's severity only from its own alerts: three stages on A.
        i.alerts
            .push(ev(Some(DEV_A), "agent", Severity::High, &["TA0008", "TA0040"], vec![]));
        let devices: Vec<String> = incident_targets(&r, &i).iter().map(|t| t.device.to_string()).collect();
        assert_eq!(devices, vec![DEV_A.to_string(), rogue.to_string()]);
        // An analyst's severity is a judgment on the incident: it covers every device.
        i.severity_manual = true;
        assert_eq!(incident_targets(&r, &i).len(), 3);
    }

    #[test]
    fn alerts_without_a_device_count_only_for_sources_the_rule_names() {
        let i = AutomationIncident {
            severity: Severity::High,
            tactics: vec![],
            sources: vec!["agent".into(), "identity".into()],
            alerts: vec![
                ev(Some(DEV_A), "agent", Severity::Low, &[], vec![]),
                ev(None, "identity", Severity::High, &[], vec![]),
            ],
            ..incident()
        };
        let named = incident_rule(
            "min_severity = \"high\"\nsources_all = [\"agent\", \"identity\"]\n",
            "isolate",
        );
        assert_eq!(incident_targets(&named, &i).len(), 1, "the rule names identity");
        let unnamed = incident_rule("min_severity = \"high\"\n", "isolate");
        assert!(incident_match(&unnamed).matches(&i));
        assert!(incident_targets(&unnamed, &i).is_empty(), "A's own evidence is low");
        // Evidence with no device at all acts on no one.
        let only_feed = AutomationIncident {
            alerts: vec![ev(None, "identity", Severity::Critical, &[], vec![])],
            ..i
        };
        assert!(incident_targets(&named, &only_feed).is_empty());
    }

    fn incident_rule(cond: &str, action: &str) -> Rule {
        rules(&format!(
            "[[automation]]\nname = \"i\"\naction = \"{action}\"\n[automation.incident]\n{cond}"
        ))
        .unwrap()
        .remove(0)
    }

    fn incident_match(r: &Rule) -> &IncidentMatch {
        let Trigger::Incident(m) = &r.trigger else {
            panic!("an incident rule")
        };
        m
    }

    #[test]
    fn incident_conditions_match_open_incidents_only() {
        let r = incident_rule(
            "min_severity = \"high\"\ntactics = [\"ta0040\", \"TA0008\"]\nsources_all = [\"Agent\", \"mailbox\"]\n",
            "isolate",
        );
        let m = incident_match(&r);
        assert!(
            m.matches(&incident()),
            "severity, any tactic (case-insensitive), all sources"
        );
        assert!(m.matches(&AutomationIncident {
            status: "in_progress".into(),
            severity: Severity::Critical,
            ..incident()
        }));
        for (what, i) in [
            (
                "severity",
                AutomationIncident {
                    severity: Severity::Medium,
                    ..incident()
                },
            ),
            (
                "tactics",
                AutomationIncident {
                    tactics: vec!["TA0002".into()],
                    ..incident()
                },
            ),
            (
                "one source missing",
                AutomationIncident {
                    sources: vec!["agent".into()],
                    ..incident()
                },
            ),
            (
                "resolved",
                AutomationIncident {
                    status: "resolved".into(),
                    ..incident()
                },
            ),
            (
                "redirected",
                AutomationIncident {
                    status: "redirected".into(),
                    ..incident()
                },
            ),
        ] {
            assert!(!m.matches(&i), "{what} must not match");
        }
        // A single criterion is enough.
        let only = incident_rule("sources_all = [\"identity\"]\n", "isolate");
        assert!(!incident_match(&only).matches(&incident()));
        assert!(incident_match(&only).matches(&AutomationIncident {
            sources: vec!["identity".into()],
            severity: Severity::Informational,
            ..incident()
        }));
    }

    #[test]
    fn incident_targets_are_each_device_or_each_alert_target() {
        let iso = incident_rule("min_severity = \"low\"\n", "isolate");
        let t = incident_targets(&iso, &incident());
        let subjects: Vec<&str> = t.iter().map(|t| t.subject.as_str()).collect();
        assert_eq!(
            subjects,
            vec![format!("incident:INC-1:{DEV_A}"), format!("incident:INC-1:{DEV_B}")],
            "one isolate per device; an unparsable device is left out"
        );
        assert_eq!(t[1].device.to_string(), DEV_B);
        assert_eq!(t[0].action, Action::Isolate { allow: vec![] });
        let kill = incident_rule("min_severity = \"low\"\n", "kill_process");
        let t = incident_targets(&kill, &incident());
        let subjects: Vec<&str> = t.iter().map(|t| t.subject.as_str()).collect();
        assert_eq!(
            subjects,
            vec![
                format!("incident:INC-1:{DEV_A}:process:42:7"),
                format!("incident:INC-1:{DEV_A}:process:43:7")
            ],
            "each distinct process, on its alert's device; alerts without one give none"
        );
        let q = incident_rule("min_severity = \"low\"\n", "quarantine_file");
        assert!(incident_targets(&q, &incident()).is_empty(), "no file with a hash");
    }

    #[test]
    fn the_template_examples_compile() {
        // The commented `[[automation]]` examples, uncommented, are valid rules.
        let template = Config::template("127.0.0.1:4433");
        let mut examples = String::new();
        let mut inside = false;
        for line in template.lines() {
            if line == "# [[automation]]" {
                inside = true;
            } else if !line.starts_with("# [") && !line.contains(" = ") {
                // Prose or a blank line ends an example.
                inside = false;
            }
            if inside {
                examples.push_str(line.trim_start_matches("# "));
                examples.push('\n');
            }
        }
        let compiled = rules(&examples).unwrap();
        assert_eq!(compiled.len(), 2, "{examples}");
        assert!(matches!(compiled[0].trigger, Trigger::Alert(_)));
        assert!(matches!(compiled[1].trigger, Trigger::Incident(_)));
    }

    #[test]
    fn bad_rules_are_refused_with_a_reason() {
        let ok_cond = "[automation.alert]\nmin_severity = \"high\"\n";
        for (text, needle) in [
            (
                format!("[[automation]]\nname = \"a b\"\naction = \"isolate\"\n{ok_cond}"),
                "a name is",
            ),
            (
                format!("[[automation]]\nname = \"a\"\naction = \"release\"\n{ok_cond}"),
                "action must be one of",
            ),
            (
                "[[automation]]\nname = \"a\"\naction = \"isolate\"\n".to_string(),
                "needs a condition",
            ),
            (
                "[[automation]]\nname = \"a\"\naction = \"isolate\"\n[automation.alert]\n".to_string(),
                "empty condition",
            ),
            (
                "[[automation]]\nname = \"a\"\naction = \"isolate\"\n[automation.incident]\n".to_string(),
                "empty condition would match every incident",
            ),
            (
                format!("[[automation]]\nname = \"a\"\naction = \"isolate\"\n{ok_cond}[automation.incident]\nmin_severity = \"high\"\n"),
                "a rule has exactly one condition",
            ),
            (
                "[[automation]]\nname = \"a\"\naction = \"isolate\"\n[automation.incident]\ntactics = [\"TA9999\"]\n"
                    .to_string(),
                "not an ATT&CK Enterprise tactic",
            ),
            (
                "[[automation]]\nname = \"a\"\naction = \"isolate\"\n[automation.incident]\nsources_all = [\"email\"]\n"
                    .to_string(),
                "incident.sources_all: unknown source",
            ),
            (
                "[[automation]]\nname = \"a\"\naction = \"isolate\"\n[automation.incident]\nmin_severity = \"huge\"\n"
                    .to_string(),
                "incident.min_severity: unknown severity",
            ),
            (
                "[[automation]]\nname = \"a\"\naction = \"isolate\"\n[automation.incident]\nrule_ids = [\"x\"]\n"
                    .to_string(),
                "unknown field",
            ),
            (
                "[[automation]]\nname = \"a\"\naction = \"isolate\"\n[automation.alert]\nmin_severity = \"huge\"\n"
                    .to_string(),
                "unknown severity",
            ),
            (
                "[[automation]]\nname = \"a\"\naction = \"isolate\"\n[automation.alert]\nsources = [\"email\"]\n"
                    .to_string(),
                "unknown source",
            ),
            (
                format!(
                    "[[automation]]\nname = \"a\"\naction = \"isolate\"\n{ok_cond}[[automation]]\nname = \"a\"\naction = \"isolate\"\n{ok_cond}"
                ),
                "two rules",
            ),
            (
                format!("[[automation]]\nname = \"a\"\naction = \"collect_package\"\nallow = [\"1.2.3.4\"]\n{ok_cond}"),
                "only for isolate",
            ),
            (
                format!("[[automation]]\nname = \"a\"\naction = \"isolate\"\nallow = [\"not a host!\"]\n{ok_cond}"),
                "allow",
            ),
            (
                format!("[[automation]]\nname = \"a\"\naction = \"isolate\"\nwhen = 1\n{ok_cond}"),
                "unknown field",
            ),
            (
                format!(
                    "[actions.policy.isolate]\napprovals = 2\n[[automation]]\nname = \"a\"\naction = \"isolate\"\nauto_approve = true\n{ok_cond}"
                ),
                "auto_approve is refused",
            ),
        ] {
            let err = rules(&text).unwrap_err();
            assert!(err.contains(needle), "{text}\n=> {err}");
        }
        // Without auto-approve, a two-person kind is fine: people approve.
        rules(&format!(
            "[actions.policy.isolate]\napprovals = 2\n[[automation]]\nname = \"a\"\naction = \"isolate\"\n{ok_cond}"
        ))
        .unwrap();
    }
}
