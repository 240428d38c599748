//! Incident routes (listed in the README's API section). Reads go through the read
//! pool; every change goes through the correlator on the writer thread, so the
//! correlation engine and the store never disagree.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Extension, State};
use axum::http::StatusCode;
use serde_json::{Map, Value, json};
use ward_protocol::{Entity, Id128, Severity};

use super::ApiState;
use super::auth::Caller;
use super::error::{ApiError, ApiResult, text};
use super::extract::{Body, Path, Query};
use super::process_tree::{self, AlertedProcess};
use crate::entity;
use crate::model::incident::{Classification, Status};
use crate::roles::Role;
use crate::store::prelude::*;
use crate::store::{
    ActionFilter, ActionView, AlertOrder, AlertPage, AlertPageQuery, AlertTotals, DeviceView, EntityAggregate,
    IncidentAlert, IncidentFilter, IncidentPatch, IncidentRefusal, IncidentSort, IncidentSummary, Store, StoreError,
};
use crate::util::now_ms;

const DEFAULT_PAGE: u32 = 50;
const MAX_PAGE: u32 = 500;
const DEFAULT_RANGE_MS: i64 = 30 * 24 * 3_600_000;
/// Alerts in a page of an incident's or a device's alerts, by default and at most.
const ALERT_PAGE: u32 = 200;
const MAX_ALERT_PAGE: u32 = 1_000;
/// Entities of each kind the incident page lists in full (the most alerted); the
/// totals count them all.
const MAX_ENTITIES_PER_KIND: usize = 100;
/// Devices an entity lists (where its actions go).
const MAX_ENTITY_DEVICES: usize = 20;
/// Devices the incident page lists with their state and actions.
const MAX_DETAIL_DEVICES: u32 = 200;
/// Alerted processes read for the process tree, and tree nodes drawn.
const MAX_TREE_PROCESSES: u32 = 1_000;
const MAX_TREE_NODES: usize = 1_500;
const MAX_TEXT: usize = 4096;
const MAX_TAGS: usize = 50;
const MAX_TAG: usize = 64;
const MAX_MERGE: usize = 50;
/// Longest free-text search of the incident list (`q`).
const MAX_SEARCH_CHARS: usize = 200;

impl From<IncidentRefusal> for ApiError {
    fn from(e: IncidentRefusal) -> Self {
        let status = match e {
            IncidentRefusal::NotFound => StatusCode::NOT_FOUND,
            IncidentRefusal::Redirected(..) => StatusCode::CONFLICT,
            IncidentRefusal::Invalid(_) => StatusCode::BAD_REQUEST,
        };
        ApiError::new(status, e.to_string())
    }
}

fn stopped<E>(_: E) -> ApiError {
    ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "collector is shutting down")
}

fn incident_id(id: &str) -> ApiResult<String> {
    id.parse::<Id128>()
        .map(|i| i.to_string())
        .map_err(|_| ApiError::bad_request("incident id must be a 26-character id"))
}

fn body_object(raw: &Bytes) -> ApiResult<Map<String, Value>> {
    match serde_json::from_slice::<Value>(raw) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(ApiError::bad_request("body must be a JSON object")),
        Err(e) => Err(ApiError::bad_request(format!("body: {e}"))),
    }
}

fn known_fields(m: &Map<String, Value>, known: &[&str]) -> ApiResult<()> {
    match m.keys().find(|k| !known.contains(&k.as_str())) {
        Some(k) => Err(ApiError::bad_request(format!(
            "unknown field {k:?}; known: {}",
            known.join(", ")
        ))),
        None => Ok(()),
    }
}

fn severity_of(s: &str) -> ApiResult<Severity> {
    Severity::parse(s)
        .ok_or_else(|| ApiError::bad_request("severity must be informational, low, medium, high or critical"))
}

fn parse_i64(q: &HashMap<String, String>, name: &str) -> ApiResult<Option<i64>> {
    q.get(name)
        .map(|v| {
            v.parse::<i64>()
                .map_err(|_| ApiError::bad_request(format!("{name} must be an integer")))
        })
        .transpose()
}

fn cursor_of(s: &IncidentSummary) -> String {
    format!("{}.{}.{}", s.severity_num, s.last_activity_ms, s.id)
}

fn parse_cursor(c: &str) -> ApiResult<(i64, i64, String)> {
    let bad = || ApiError::bad_request("cursor is not one this API gave out");
    let mut parts = c.splitn(3, '.');
    let sev = parts.next().and_then(|p| p.parse().ok()).ok_or_else(bad)?;
    let last = parts.next().and_then(|p| p.parse().ok()).ok_or_else(bad)?;
    let id = parts.next().filter(|p| p.len() <= 64).ok_or_else(bad)?;
    Ok((sev, last, id.to_string()))
}

/// `GET /api/v1/incidents`.
pub async fn list(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Json<Value>> {
    caller.require(Role::Viewer)?;
    const KNOWN: [&str; 15] = [
        "status", "severity", "assignee", "tag", "source", "device", "user", "tactic", "since_ms", "until_ms", "sort",
        "cursor", "limit", "since", "q",
    ];
    if let Some(unknown) = q.keys().find(|k| !KNOWN.contains(&k.as_str())) {
        return Err(ApiError::bad_request(format!(
            "unknown filter {unknown:?}; known: {}",
            KNOWN.join(", ")
        )));
    }
    let limit = match parse_i64(&q, "limit")? {
        None => DEFAULT_PAGE,
        Some(n) if (1..=i64::from(MAX_PAGE)).contains(&n) => n as u32,
        Some(_) => return Err(ApiError::bad_request(format!("limit must be 1..={MAX_PAGE}"))),
    };
    let statuses = match q.get("status") {
        None => Vec::new(),
        Some(s) => s
            .split(',')
            .map(|s| {
                Status::parse(s.trim())
                    .ok_or_else(|| ApiError::bad_request("status must be active, in_progress, resolved or redirected"))
            })
            .collect::<ApiResult<Vec<_>>>()?,
    };
    let sort = match q.get("sort").map(String::as_str) {
        None | Some("last_activity") => IncidentSort::LastActivity,
        Some("severity") => IncidentSort::Severity,
        Some(_) => return Err(ApiError::bad_request("sort must be last_activity or severity")),
    };
    let user_keys = match q.get("user") {
        Some(u) => {
            let keys = state.correlator.user_filter_keys(u);
            if keys.is_empty() {
                // A system account never links; nothing is filed under it.
                vec![format!("user:{}", u.to_ascii_lowercase())]
            } else {
                keys
            }
        }
        None => Vec::new(),
    };
    let since_ms = parse_i64(&q, "since_ms")?
        .or(parse_i64(&q, "since")?)
        .unwrap_or_else(|| i64::try_from(now_ms()).unwrap_or(i64::MAX) - DEFAULT_RANGE_MS);
    let mut filter = IncidentFilter {
        statuses,
        min_severity: q.get("severity").map(|s| severity_of(s)).transpose()?,
        assignee: q.get("assignee").cloned(),
        tag: q.get("tag").cloned(),
        source: q.get("source").cloned(),
        device_keys: Vec::new(),
        user_keys,
        tactic: q.get("tactic").map(|t| t.to_ascii_uppercase()),
        text: match q.get("q").map(|t| t.trim()) {
            None | Some("") => None,
            Some(t) if t.chars().count() > MAX_SEARCH_CHARS => {
                return Err(ApiError::bad_request(format!(
                    "q (free text) must be at most {MAX_SEARCH_CHARS} characters"
                )));
            }
            Some(t) => Some(t.to_string()),
        },
        since_ms,
        until_ms: parse_i64(&q, "until_ms")?,
        sort,
        after: q.get("cursor").map(|c| parse_cursor(c)).transpose()?,
        limit,
    };
    let device = q.get("device").cloned();
    let incidents = state
        .reads
        .run(move |s| {
            if let Some(d) = device {
                filter.device_keys = s.device_filter_keys(&d)?;
            }
            s.list_incidents(&filter)
        })
        .await??;
    let next_cursor = if incidents.len() == limit as usize {
        incidents.last().map(cursor_of)
    } else {
        None
    };
    Ok(Json(json!({ "incidents": incidents, "next_cursor": next_cursor })))
}

/// Parses an alert page's query (`order`, `since_ms`, `until_ms`, `cursor`, `limit`),
/// refusing any other parameter.
pub(super) fn alert_page_query(q: &HashMap<String, String>) -> ApiResult<AlertPageQuery> {
    const KNOWN: [&str; 5] = ["order", "since_ms", "until_ms", "cursor", "limit"];
    if let Some(unknown) = q.keys().find(|k| !KNOWN.contains(&k.as_str())) {
        return Err(ApiError::bad_request(format!(
            "unknown parameter {unknown:?}; known: {}",
            KNOWN.join(", ")
        )));
    }
    let order = match q.get("order").map(String::as_str) {
        None | Some("newest") => AlertOrder::Newest,
        Some("oldest") => AlertOrder::Oldest,
        Some(_) => return Err(ApiError::bad_request("order must be newest or oldest")),
    };
    let limit = match parse_i64(q, "limit")? {
        None => ALERT_PAGE,
        Some(n) if (1..=i64::from(MAX_ALERT_PAGE)).contains(&n) => n as u32,
        Some(_) => return Err(ApiError::bad_request(format!("limit must be 1..={MAX_ALERT_PAGE}"))),
    };
    let after = q
        .get("cursor")
        .map(|c| {
            let (t, rowid) = c
                .split_once('.')
                .and_then(|(t, r)| Some((t.parse::<i64>().ok()?, r.parse::<i64>().ok()?)))
                .ok_or_else(|| ApiError::bad_request("cursor is not one this API gave out"))?;
            Ok::<_, ApiError>((t, rowid))
        })
        .transpose()?;
    Ok(AlertPageQuery {
        order,
        since_ms: parse_i64(q, "since_ms")?,
        until_ms: parse_i64(q, "until_ms")?,
        after,
        limit,
    })
}

/// The page an incident shows after a change: its newest alerts.
fn first_page() -> AlertPageQuery {
    AlertPageQuery {
        limit: ALERT_PAGE,
        ..AlertPageQuery::default()
    }
}

/// How a page of alerts is described beside its alerts.
pub(super) fn page_json<T>(q: &AlertPageQuery, page: &AlertPage<T>) -> Value {
    json!({
        "order": match q.order { AlertOrder::Newest => "newest", AlertOrder::Oldest => "oldest" },
        "since_ms": q.since_ms, "until_ms": q.until_ms, "limit": q.limit,
        "total": page.total, "shown": page.items.len(),
        "next_cursor": page.next.map(|(t, rowid)| format!("{t}.{rowid}")),
    })
}

/// Everything the incident page needs, read in one go.
struct DetailRows {
    summary: IncidentSummary,
    query: AlertPageQuery,
    page: AlertPage<IncidentAlert>,
    totals: AlertTotals,
    entities: Vec<EntityAggregate>,
    /// Distinct entities of each kind in the whole incident (`entities` shows the most alerted).
    entity_totals: BTreeMap<String, usize>,
    /// Each shown aggregate's entity in full (from one alert naming it).
    entity_lists: HashMap<i64, Value>,
    devices: Vec<DeviceView>,
    devices_total: i64,
    /// Where `devices` starts among the incident's devices (first seen first).
    device_offset: usize,
    actions: Vec<ActionView>,
    activity: Vec<crate::store::ActivityEntry>,
    /// What the ids in the activity log are: `{id: {kind, title}}`.
    activity_names: BTreeMap<String, Value>,
    comments: Vec<crate::store::CommentView>,
}

/// Ids named in activity entries that are looked up, at most.
const MAX_ACTIVITY_NAMES: usize = 100;

/// The ULIDs (26 Crockford base-32 characters) in an activity entry's text.
fn ulids(text: &str) -> impl Iterator<Item = &str> {
    text.split(|c: char| !c.is_ascii_alphanumeric()).filter(|t| {
        t.len() == 26
            && t.starts_with(|c: char| ('0'..='7').contains(&c))
            && t.bytes()
                .all(|b| b.is_ascii_digit() || (b.is_ascii_uppercase() && !b"ILOU".contains(&b)))
    })
}

/// Names the alerts and incidents the activity log refers to by id (a rule's title,
/// an incident's title), so the console can say them in words.
fn activity_names(s: &Store, activity: &[crate::store::ActivityEntry]) -> Result<BTreeMap<String, Value>, StoreError> {
    let ids: BTreeSet<&str> = activity.iter().flat_map(|a| ulids(&a.detail)).collect();
    let mut names = BTreeMap::new();
    for id in ids.into_iter().take(MAX_ACTIVITY_NAMES) {
        if let Some(a) = s.get_alert(id)? {
            names.insert(id.to_string(), json!({"kind": "alert", "title": a.rule.title}));
        } else if let Some(i) = s.incident_summary(id)? {
            names.insert(id.to_string(), json!({"kind": "incident", "title": i.title}));
        }
    }
    Ok(names)
}

/// The entities the page lists in full: the most alerted of each kind (a partial
/// selection per kind, not a sort of every entity); with `page`, the entities of
/// one kind from an offset instead (and no other kind).
fn shown_entities(all: Vec<EntityAggregate>, page: &EvidencePage) -> (Vec<EntityAggregate>, BTreeMap<String, usize>) {
    let mut by_kind: BTreeMap<String, Vec<EntityAggregate>> = BTreeMap::new();
    for e in all {
        match by_kind.get_mut(&e.kind) {
            Some(v) => v.push(e),
            None => {
                by_kind.insert(e.kind.clone(), vec![e]);
            }
        }
    }
    let mut totals = BTreeMap::new();
    let mut shown = Vec::new();
    let rank = |a: &EntityAggregate, b: &EntityAggregate| {
        (std::cmp::Reverse(a.alert_count), a.first_ms, &a.key).cmp(&(
            std::cmp::Reverse(b.alert_count),
            b.first_ms,
            &b.key,
        ))
    };
    for (kind, mut v) in by_kind {
        totals.insert(kind.clone(), v.len());
        if let Some((k, offset)) = page {
            if *k == kind {
                v.sort_by(rank);
                shown.extend(v.into_iter().skip(*offset).take(MAX_ENTITIES_PER_KIND));
            }
            continue;
        }
        if v.len() > MAX_ENTITIES_PER_KIND {
            v.select_nth_unstable_by(MAX_ENTITIES_PER_KIND, rank);
            v.truncate(MAX_ENTITIES_PER_KIND);
        }
        v.sort_by(rank);
        shown.extend(v);
    }
    (shown, totals)
}

/// One kind of entity from an offset (`/evidence?kind=&offset=`); None: the most
/// alerted of every kind.
type EvidencePage = Option<(String, usize)>;

/// Reads the incident page; without `evidence` the whole incident's entities and the
/// devices of all its alerts are left out (the page's devices are read): the console
/// draws the page at once and asks `/evidence` for the rest.
fn read_detail(
    s: &Store,
    id: &str,
    query: AlertPageQuery,
    evidence: bool,
    evidence_page: &EvidencePage,
    device_offset: usize,
) -> Result<Option<DetailRows>, StoreError> {
    let Some(summary) = s.incident_summary(id)? else {
        return Ok(None);
    };
    let (totals, aggregates) = if evidence {
        s.incident_evidence(id)?
    } else {
        (s.incident_alert_totals(id)?, Vec::new())
    };
    let page = s.incident_alert_page(id, &query, Some(totals.alerts))?;
    let (entities, entity_totals) = shown_entities(aggregates, evidence_page);
    let entity_lists = s.alert_entity_lists(&entities.iter().map(|e| e.sample_rowid).collect::<Vec<_>>())?;
    let mut device_ids: Vec<String> = s.incident_device_ids(id)?;
    let (alert_devices, alert_device_total) = if evidence {
        let upto = u32::try_from(device_offset)
            .unwrap_or(u32::MAX)
            .saturating_add(MAX_DETAIL_DEVICES);
        s.incident_alert_devices(id, upto)?
    } else {
        let mut page_devices: Vec<String> = Vec::new();
        for a in &page.items {
            if let Some(d) = &a.alert.device_id
                && !page_devices.contains(d)
            {
                page_devices.push(d.clone());
            }
        }
        (page_devices, summary.device_count)
    };
    for d in alert_devices {
        if !device_ids.contains(&d) {
            device_ids.push(d);
        }
    }
    let devices_total = alert_device_total.max(i64::try_from(device_ids.len()).unwrap_or(i64::MAX));
    let device_ids: Vec<String> = device_ids
        .into_iter()
        .skip(device_offset)
        .take(MAX_DETAIL_DEVICES as usize)
        .collect();
    let mut devices = Vec::new();
    let mut actions: BTreeMap<String, ActionView> = BTreeMap::new();
    for d in &device_ids {
        if let Some(v) = s.get_device(d)? {
            devices.push(v);
        }
        let filter = ActionFilter {
            device_id: Some(d.clone()),
            limit: 100,
            ..ActionFilter::default()
        };
        for a in s.list_actions(&filter)? {
            actions.insert(a.id.clone(), a);
        }
    }
    for aid in s.incident_action_ids(id)? {
        if let Some(a) = s.get_action(&aid)? {
            actions.insert(a.id.clone(), a);
        }
    }
    let activity = s.incident_activity(id)?;
    Ok(Some(DetailRows {
        summary,
        query,
        page,
        totals,
        entities,
        entity_totals,
        entity_lists,
        devices,
        devices_total,
        device_offset,
        actions: actions.into_values().rev().collect(),
        activity_names: activity_names(s, &activity)?,
        activity,
        comments: s.incident_comments(id)?,
    }))
}

fn remediation_of(status: &str) -> Option<&'static str> {
    match status {
        "pending_approval" | "approved" => Some("pending"),
        "dispatched" | "acked" => Some("in_progress"),
        "succeeded" => Some("remediated"),
        "failed" | "refused" => Some("failed"),
        _ => None,
    }
}

struct EntityAcc {
    kind: &'static str,
    key: String,
    value: Value,
    entity: Entity,
    roles: BTreeSet<&'static str>,
    /// The alerts of the page naming it (page entities only).
    alert_ids: Option<Vec<String>>,
    alert_count: i64,
    first: i64,
    last: i64,
    malicious: bool,
    devices: BTreeSet<String>,
}

/// An entity's role in one alert from its kind, the alert's source and, for a
/// mailbox, whether the same alert names it as a user too (a recipient).
pub(super) fn role(e: &Entity, source: &str, recipient: bool) -> &'static str {
    match (e, source) {
        // The feeds name a recipient as a user and a mailbox, a sender only as a mailbox.
        (Entity::Mailbox { .. }, "mailbox") if recipient => "recipient",
        (Entity::Device { .. }, _) => "impacted device",
        (Entity::User { .. }, "identity") => "signed-in user",
        (Entity::User { .. }, _) => "impacted user",
        (Entity::Mailbox { .. }, "mailbox") => "sender",
        (Entity::Mailbox { .. }, _) => "mailbox",
        (Entity::File { .. }, "mailbox") => "attachment",
        (Entity::File { .. }, _) => "file",
        (Entity::Process { .. }, _) => "process",
        (Entity::Lineage { .. }, _) => "process tree",
        (Entity::ProcessContext { .. }, _) => "process context",
        (Entity::Ip { .. }, "identity") => "sign-in address",
        (Entity::Ip { .. }, _) => "network address",
        (Entity::Domain { .. } | Entity::Url { .. }, _) => "indicator",
    }
}

pub(super) fn is_recipient(e: &Entity, all: &[Entity]) -> bool {
    matches!(e, Entity::Mailbox { address }
        if all.iter().any(|u| matches!(u, Entity::User { name, .. } if name.eq_ignore_ascii_case(address))))
}

/// The entities of the page's alerts, each with the page's alerts naming it (for the graph).
fn page_entities(alerts: &[IncidentAlert], hostnames: &HashMap<&str, &str>) -> Vec<EntityAcc> {
    let mut entities: BTreeMap<(String, String), EntityAcc> = BTreeMap::new();
    for ia in alerts {
        let a = &ia.alert;
        let high = matches!(a.severity, "high" | "critical");
        let mut list: Vec<Entity> = a
            .entities
            .as_array()
            .map(|v| v.iter().filter_map(entity::from_json).collect())
            .unwrap_or_default();
        if let Some(host) = a.device_id.as_deref().and_then(|d| hostnames.get(d)) {
            let device = Entity::Device {
                hostname: (*host).to_string(),
            };
            if !list.contains(&device) {
                list.push(device);
            }
        }
        for e in &list {
            let (kind, key) = entity::key(e);
            let acc = entities
                .entry((kind.to_string(), key.clone()))
                .or_insert_with(|| EntityAcc {
                    kind,
                    key,
                    value: entity::to_json(e),
                    entity: e.clone(),
                    roles: BTreeSet::new(),
                    alert_ids: Some(Vec::new()),
                    alert_count: 0,
                    first: a.observed_at_ms,
                    last: a.observed_at_ms,
                    malicious: false,
                    devices: BTreeSet::new(),
                });
            acc.roles.insert(role(e, &a.source, is_recipient(e, &list)));
            if let Some(ids) = acc.alert_ids.as_mut()
                && !ids.contains(&a.id)
            {
                ids.push(a.id.clone());
                acc.alert_count += 1;
            }
            acc.first = acc.first.min(a.observed_at_ms);
            acc.last = acc.last.max(a.last_observed_at_ms.max(a.observed_at_ms));
            acc.malicious |= high;
            if let Some(d) = &a.device_id {
                acc.devices.insert(d.clone());
            }
        }
    }
    entities.into_values().collect()
}

/// The whole incident's entities (the shown share of them), each in full from one of its alerts.
fn incident_entities(rows: &DetailRows, hostnames: &HashMap<&str, &str>) -> Vec<EntityAcc> {
    let high = Severity::High as i64;
    rows.entities
        .iter()
        .filter_map(|agg| {
            let listed = rows
                .entity_lists
                .get(&agg.sample_rowid)
                .and_then(Value::as_array)
                .and_then(|list| {
                    list.iter()
                        .filter_map(entity::from_json)
                        .find(|e| entity::key(e) == (agg.kind.as_str(), agg.key.clone()))
                });
            // A device named only by the alerts' device: its hostname as the devices table has it.
            let e = listed.or_else(|| {
                (agg.kind == "device").then(|| Entity::Device {
                    hostname: hostnames
                        .values()
                        .find(|h| h.eq_ignore_ascii_case(&agg.key))
                        .map_or_else(|| agg.key.clone(), |h| (*h).to_string()),
                })
            })?;
            let (kind, key) = entity::key(&e);
            Some(EntityAcc {
                kind,
                key,
                value: entity::to_json(&e),
                roles: agg
                    .sources
                    .iter()
                    .map(|src| role(&e, src, agg.recipient && src == "mailbox"))
                    .collect(),
                entity: e,
                alert_ids: None,
                alert_count: agg.alert_count,
                first: agg.first_ms,
                last: agg.last_ms,
                malicious: agg.max_severity >= high,
                devices: agg.device_ids.iter().cloned().collect(),
            })
        })
        .collect()
}

/// Shapes the incident page: the incident with its totals, the page of alerts with
/// reasons and the entities they name (the story graph), every entity of the whole
/// incident with roles, verdicts and remediation, the timeline of the page, tactics,
/// scope, devices, actions, activity and comments.
fn detail_json(state: &ApiState, rows: DetailRows) -> Value {
    let hostnames: HashMap<&str, &str> = rows
        .devices
        .iter()
        .map(|d| (d.id.as_str(), d.hostname.as_str()))
        .collect();
    // The newest action on an entity says where its remediation stands.
    let remediation = |acc: &EntityAcc| -> &'static str {
        let matching = rows.actions.iter().filter(|act| {
            let text = act.action.to_string();
            match &acc.entity {
                Entity::Device { hostname } => {
                    matches!(act.kind.as_str(), "isolate" | "release")
                        && act.device_hostname.eq_ignore_ascii_case(hostname)
                }
                Entity::File { sha256: Some(h), .. } => {
                    matches!(act.kind.as_str(), "quarantine_file" | "delete_file") && text.contains(&hex::encode(h))
                }
                Entity::Process { pid, .. } => {
                    act.kind == "kill_process"
                        && acc.devices.contains(&act.device_id)
                        && text.contains(&format!("\"pid\":{pid}"))
                }
                _ => false,
            }
        });
        matching
            .max_by_key(|act| act.requested_at_ms)
            .and_then(|act| remediation_of(&act.status))
            .unwrap_or("none")
    };
    let entity_json = |acc: &EntityAcc| {
        let mut v = json!({
            "kind": acc.kind, "key": acc.key, "value": acc.value, "roles": acc.roles,
            "alert_count": acc.alert_count, "first_seen_ms": acc.first, "last_seen_ms": acc.last,
            "device_ids": acc.devices.iter().take(MAX_ENTITY_DEVICES).collect::<Vec<_>>(),
            "verdict": if acc.malicious { "malicious" } else { "suspicious" },
            "remediation": remediation(acc),
        });
        if let (Some(ids), Value::Object(m)) = (&acc.alert_ids, &mut v) {
            m.insert("alert_ids".into(), json!(ids));
        }
        v
    };
    let alerts = &rows.page.items;
    let page_list: Vec<Value> = page_entities(alerts, &hostnames).iter().map(entity_json).collect();
    let whole = incident_entities(&rows, &hostnames);
    let entity_list: Vec<Value> = whole.iter().map(entity_json).collect();
    let mut timeline: Vec<(i64, Value)> = Vec::new();
    for ia in alerts {
        let a = &ia.alert;
        timeline.push((
            a.observed_at_ms,
            json!({"at_ms": a.observed_at_ms, "kind": "alert", "summary": format!("{} ({})", a.rule.title, a.severity), "ref": a.id}),
        ));
    }
    for act in &rows.activity {
        timeline.push((
            act.at_ms,
            json!({"at_ms": act.at_ms, "kind": "activity", "summary": format!("{}: {}", act.actor, act.detail), "ref": rows.summary.id}),
        ));
    }
    for act in &rows.actions {
        timeline.push((
            act.requested_at_ms,
            json!({"at_ms": act.requested_at_ms, "kind": "action", "summary": format!("{} ({})", act.summary, act.status), "ref": act.id}),
        ));
    }
    timeline.sort_by_key(|(t, _)| *t);
    let now = now_ms();
    let devices: Vec<Value> = rows
        .devices
        .iter()
        .map(|d| {
            let connected =
                d.id.parse::<ward_protocol::DeviceId>()
                    .map(|id| state.registry.is_online(&id))
                    .unwrap_or(false);
            let recent = d
                .last_seen_ms
                .is_some_and(|t| now.saturating_sub(t.max(0) as u64) < state.offline_after_ms);
            json!({
                "id": d.id, "hostname": d.hostname, "online": connected && recent && d.revoked_at_ms.is_none(),
                "isolation": d.isolation, "last_seen_ms": d.last_seen_ms,
            })
        })
        .collect();
    let s = &rows.summary;
    let n = |k: &str| rows.entity_totals.get(k).copied().unwrap_or(0);
    let mut alerts = json!(alerts);
    super::alert_page::name_alerts(&mut alerts);
    json!({
        "incident": s,
        "totals": rows.totals,
        "alerts": alerts,
        "alerts_page": page_json(&rows.query, &rows.page),
        "page_entities": page_list,
        "entities": entity_list,
        "entity_totals": rows.entity_totals,
        "timeline": timeline.into_iter().map(|(_, v)| v).collect::<Vec<_>>(),
        "tactics": s.tactics,
        "scope": {
            "alerts": rows.totals.alerts, "events": rows.totals.events,
            "devices": s.device_count.max(rows.devices_total), "users": s.user_count, "mailboxes": s.mailbox_count,
            "files": n("file"), "ips": n("ip"), "urls": n("url"), "domains": n("domain"), "processes": n("process"),
        },
        "devices": devices,
        "devices_total": rows.devices_total,
        "device_offset": rows.device_offset,
        "actions": rows.actions,
        "activity": rows.activity,
        "activity_names": rows.activity_names,
        "comments": rows.comments,
    })
}

async fn detail(state: &ApiState, id: String, query: AlertPageQuery) -> ApiResult<Json<Value>> {
    detail_with(state, id, query, true, None, 0).await
}

async fn detail_with(
    state: &ApiState,
    id: String,
    query: AlertPageQuery,
    evidence: bool,
    evidence_page: EvidencePage,
    device_offset: usize,
) -> ApiResult<Json<Value>> {
    let rows = state
        .reads
        .run(move |s| read_detail(s, &id, query, evidence, &evidence_page, device_offset))
        .await??
        .ok_or_else(|| ApiError::not_found("incident"))?;
    Ok(Json(detail_json(state, rows)))
}

/// `GET /api/v1/incidents/{id}`: the whole incident with the first page of its
/// alerts (the alert page parameters choose another); `evidence=deferred` leaves the
/// whole incident's entities to `/evidence`.
pub async fn get(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Json<Value>> {
    caller.require(Role::Viewer)?;
    let id = incident_id(&id)?;
    let mut q = q;
    let evidence = match q.remove("evidence").as_deref() {
        None | Some("whole") => true,
        Some("deferred") => false,
        Some(_) => return Err(ApiError::bad_request("evidence must be whole or deferred")),
    };
    let query = alert_page_query(&q)?;
    let mut body = detail_with(&state, id, query, evidence, None, 0).await?;
    if let Value::Object(m) = &mut body.0 {
        m.insert("evidence".into(), json!(if evidence { "whole" } else { "deferred" }));
    }
    Ok(body)
}

/// `GET /api/v1/incidents/{id}/evidence`: the whole incident's entities, their
/// totals, the scope, totals and devices (what `?evidence=deferred` leaves out): the
/// most alerted 100 of each kind; `?kind=ip&offset=100` the next 100 of one kind
/// (most alerted first), with `kind` and `offset` in the answer; `?device_offset=200`
/// the devices from the 201st (200 at a time, first seen first).
pub async fn evidence(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Json<Value>> {
    caller.require(Role::Viewer)?;
    let id = incident_id(&id)?;
    if let Some(k) = q
        .keys()
        .find(|k| !["kind", "offset", "device_offset"].contains(&k.as_str()))
    {
        return Err(ApiError::bad_request(format!(
            "unknown parameter {k:?}; known: kind, offset, device_offset"
        )));
    }
    let device_offset = match q.get("device_offset") {
        None => 0,
        Some(o) => o
            .parse::<usize>()
            .ok()
            .filter(|o| *o <= 10_000_000)
            .ok_or_else(|| ApiError::bad_request("device_offset must be a whole number up to 10000000"))?,
    };
    let page = match (q.get("kind"), q.get("offset")) {
        (None, None) => None,
        (Some(kind), offset) => {
            let kind = text("kind", kind, true, 32)?;
            let offset = match offset {
                None => 0,
                Some(o) => o
                    .parse::<usize>()
                    .ok()
                    .filter(|o| *o <= 10_000_000)
                    .ok_or_else(|| ApiError::bad_request("offset must be a whole number up to 10000000"))?,
            };
            Some((kind, offset))
        }
        (None, Some(_)) => return Err(ApiError::bad_request("offset needs kind")),
    };
    let query = AlertPageQuery {
        limit: 1,
        ..AlertPageQuery::default()
    };
    let Json(full) = detail_with(&state, id, query, true, page.clone(), device_offset).await?;
    let keep = [
        "totals",
        "entities",
        "entity_totals",
        "scope",
        "devices",
        "devices_total",
        "device_offset",
    ];
    let mut body: Map<String, Value> = keep
        .iter()
        .map(|k| (k.to_string(), full.get(*k).cloned().unwrap_or(Value::Null)))
        .collect();
    if let Some((kind, offset)) = page {
        body.insert("kind".into(), json!(kind));
        body.insert("offset".into(), json!(offset));
    }
    Ok(Json(Value::Object(body)))
}

/// `GET /api/v1/incidents/{id}/alerts`: a page of the incident's alerts (newest
/// first unless `order=oldest`, in `since_ms..until_ms`, after `cursor`) with the
/// entities they name, the range's `total` and the incident's `totals`.
pub async fn alerts(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Json<Value>> {
    caller.require(Role::Viewer)?;
    let id = incident_id(&id)?;
    let query = alert_page_query(&q)?;
    let (page, totals, devices) = state
        .reads
        .run(move |s| -> Result<_, StoreError> {
            if s.incident_summary(&id)?.is_none() {
                return Ok(None);
            }
            let totals = s.incident_alert_totals(&id)?;
            let page = s.incident_alert_page(&id, &query, Some(totals.alerts))?;
            let mut devices = Vec::new();
            let ids: BTreeSet<&String> = page.items.iter().filter_map(|a| a.alert.device_id.as_ref()).collect();
            for d in ids {
                if let Some(v) = s.get_device(d)? {
                    devices.push(v);
                }
            }
            Ok(Some(((query, page), totals, devices)))
        })
        .await??
        .ok_or_else(|| ApiError::not_found("incident"))?;
    let (query, page) = page;
    let hostnames: HashMap<&str, &str> = devices.iter().map(|d| (d.id.as_str(), d.hostname.as_str())).collect();
    let entities: Vec<Value> = page_entities(&page.items, &hostnames)
        .iter()
        .map(|acc| {
            json!({
                "kind": acc.kind, "key": acc.key, "value": acc.value, "roles": acc.roles,
                "alert_ids": acc.alert_ids, "alert_count": acc.alert_count,
                "first_seen_ms": acc.first, "last_seen_ms": acc.last,
                "device_ids": acc.devices.iter().take(MAX_ENTITY_DEVICES).collect::<Vec<_>>(),
                "verdict": if acc.malicious { "malicious" } else { "suspicious" },
            })
        })
        .collect();
    let mut body = page_json(&query, &page);
    if let Value::Object(m) = &mut body {
        let mut alerts = json!(page.items);
        super::alert_page::name_alerts(&mut alerts);
        m.insert("alerts".into(), alerts);
        m.insert("entities".into(), json!(entities));
        m.insert("totals".into(), json!(totals));
    }
    Ok(Json(body))
}

/// `GET /api/v1/incidents/{id}/process_tree`: the processes of the whole incident's
/// alerts as trees (see `process_tree`), at most so many processes and nodes.
pub async fn process_tree(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    caller.require(Role::Viewer)?;
    let id = incident_id(&id)?;
    let (processes, total) = state
        .reads
        .run(move |s| -> Result<_, StoreError> {
            if s.incident_summary(&id)?.is_none() {
                return Ok(None);
            }
            s.incident_processes(&id, MAX_TREE_PROCESSES).map(Some)
        })
        .await??
        .ok_or_else(|| ApiError::not_found("incident"))?;
    let inputs: Vec<AlertedProcess> = processes
        .into_iter()
        .filter_map(|p| {
            let list: Vec<Entity> = p
                .entities
                .as_array()
                .map(|v| v.iter().filter_map(entity::from_json).collect())
                .unwrap_or_default();
            // The entity of this process (an alert may name more than one).
            let mine: Vec<Entity> = list.into_iter().filter(|e| entity::key(e).1 == p.key).collect();
            let alerts = p
                .sample
                .iter()
                .map(|(id, title, severity, at)| json!({"id": id, "title": title, "severity": severity, "observed_at_ms": at}))
                .collect();
            AlertedProcess::from_entities(p.device_id, &mine, p.alert_count, alerts)
        })
        .collect();
    let shown = inputs.len();
    let mut tree = process_tree::build(&inputs, MAX_TREE_NODES);
    if let Value::Object(m) = &mut tree {
        m.insert("alerted_processes".into(), json!(total));
        m.insert("alerted_processes_shown".into(), json!(shown));
    }
    Ok(Json(tree))
}

fn optional_text(v: &Value, name: &str, max: usize) -> ApiResult<Option<String>> {
    match v {
        Value::Null => Ok(None),
        Value::String(s) => {
            let t = text(name, s, false, max)?;
            Ok((!t.is_empty()).then_some(t))
        }
        _ => Err(ApiError::bad_request(format!("{name} must be a string or null"))),
    }
}

fn parse_patch(m: &Map<String, Value>) -> ApiResult<IncidentPatch> {
    known_fields(
        m,
        &[
            "status",
            "assignee",
            "classification",
            "determination",
            "tags",
            "title",
            "severity",
        ],
    )?;
    let mut p = IncidentPatch::default();
    if let Some(v) = m.get("status") {
        let s = v
            .as_str()
            .and_then(Status::parse)
            .filter(|s| *s != Status::Redirected)
            .ok_or_else(|| ApiError::bad_request("status must be active, in_progress or resolved"))?;
        p.status = Some(s);
    }
    if let Some(v) = m.get("assignee") {
        p.assignee = Some(optional_text(v, "assignee", 256)?);
    }
    if let Some(v) = m.get("classification") {
        p.classification = Some(match v {
            Value::Null => None,
            Value::String(s) => Some(Classification::parse(s).ok_or_else(|| {
                ApiError::bad_request(
                    "classification must be true_positive, informational_expected_activity, false_positive or null",
                )
            })?),
            _ => return Err(ApiError::bad_request("classification must be a string or null")),
        });
    }
    if let Some(v) = m.get("determination") {
        p.determination = Some(optional_text(v, "determination", 256)?);
    }
    if let Some(v) = m.get("tags") {
        let arr = v
            .as_array()
            .ok_or_else(|| ApiError::bad_request("tags must be an array of strings"))?;
        if arr.len() > MAX_TAGS {
            return Err(ApiError::bad_request(format!("at most {MAX_TAGS} tags")));
        }
        let mut tags = BTreeSet::new();
        for t in arr {
            let t = t
                .as_str()
                .ok_or_else(|| ApiError::bad_request("tags must be an array of strings"))?;
            tags.insert(text("tag", t, true, MAX_TAG)?);
        }
        p.tags = Some(tags.into_iter().collect());
    }
    if let Some(v) = m.get("title") {
        let t = v
            .as_str()
            .ok_or_else(|| ApiError::bad_request("title must be a string"))?;
        p.title = Some(text("title", t, true, 512)?);
    }
    if let Some(v) = m.get("severity") {
        let s = v
            .as_str()
            .ok_or_else(|| ApiError::bad_request("severity must be a string"))?;
        p.severity = Some(severity_of(s)?);
    }
    Ok(p)
}

/// `PATCH /api/v1/incidents/{id}` (analyst).
pub async fn patch(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    Body(raw): Body,
) -> ApiResult<Json<Value>> {
    caller.require(Role::Analyst)?;
    let id = incident_id(&id)?;
    let patch = parse_patch(&body_object(&raw)?)?;
    let c = state.correlator.clone();
    let (pid, actor) = (id.clone(), caller.name.clone());
    state
        .writer
        .run(move |s| c.patch(s, &pid, &patch, &actor))
        .await
        .map_err(stopped)???;
    detail(&state, id, first_page()).await
}

/// `POST /api/v1/incidents/{id}/comments` (analyst).
pub async fn comment(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    Body(raw): Body,
) -> ApiResult<(StatusCode, Json<Value>)> {
    caller.require(Role::Analyst)?;
    let id = incident_id(&id)?;
    let m = body_object(&raw)?;
    known_fields(&m, &["text"])?;
    let t = m
        .get("text")
        .and_then(Value::as_str)
        .ok_or_else(|| ApiError::bad_request("text is required"))?;
    let t = text("text", t, true, MAX_TEXT)?;
    let now = now_ms();
    let comment_id = Id128::generate(now, &ring::rand::SystemRandom::new())
        .map_err(|_| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "try again"))?
        .to_string();
    let author = caller.name.clone();
    let c = state
        .writer
        .run(move |s| s.add_incident_comment(&id, &comment_id, &t, &author, now))
        .await
        .map_err(stopped)???;
    Ok((StatusCode::CREATED, Json(json!({ "comment": c }))))
}

/// `POST /api/v1/incidents/{id}/merge {"from": [...]}` (analyst).
pub async fn merge(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    Body(raw): Body,
) -> ApiResult<Json<Value>> {
    caller.require(Role::Analyst)?;
    let id = incident_id(&id)?;
    let m = body_object(&raw)?;
    known_fields(&m, &["from"])?;
    let from = m
        .get("from")
        .and_then(Value::as_array)
        .filter(|a| !a.is_empty() && a.len() <= MAX_MERGE)
        .ok_or_else(|| ApiError::bad_request(format!("from must be a list of 1..={MAX_MERGE} incident ids")))?
        .iter()
        .map(|v| {
            v.as_str()
                .ok_or_else(|| ApiError::bad_request("from must hold incident ids"))
                .and_then(incident_id)
        })
        .collect::<ApiResult<BTreeSet<String>>>()?;
    let from: Vec<String> = from.into_iter().collect();
    let c = state.correlator.clone();
    let (into, actor) = (id.clone(), caller.name.clone());
    state
        .writer
        .run(move |s| c.merge(s, &into, &from, &actor))
        .await
        .map_err(stopped)???;
    detail(&state, id, first_page()).await
}

/// `POST /api/v1/incidents/{id}/alerts/{alert_id}/move {"to": id|null, "reason"?}` (analyst).
pub async fn move_alert(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path((id, alert_id)): Path<(String, String)>,
    Body(raw): Body,
) -> ApiResult<Json<Value>> {
    caller.require(Role::Analyst)?;
    let id = incident_id(&id)?;
    if alert_id.is_empty() || alert_id.len() > 128 {
        return Err(ApiError::bad_request("alert id is malformed"));
    }
    let m = if raw.is_empty() { Map::new() } else { body_object(&raw)? };
    known_fields(&m, &["to", "reason"])?;
    let to = match m.get("to") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(incident_id(s)?),
        Some(_) => return Err(ApiError::bad_request("to must be an incident id or null")),
    };
    let reason = match m.get("reason") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => text("reason", s, false, MAX_TEXT)?,
        Some(_) => return Err(ApiError::bad_request("reason must be a string")),
    };
    let c = state.correlator.clone();
    let actor = caller.name.clone();
    let dest = state
        .writer
        .run(move |s| c.move_alert(s, &id, &alert_id, to.as_deref(), &reason, &actor))
        .await
        .map_err(stopped)???;
    let summary = state
        .reads
        .run(move |s| s.incident_summary(&dest))
        .await??
        .ok_or_else(|| ApiError::not_found("incident"))?;
    Ok(Json(json!({ "incident": summary })))
}

#[cfg(test)]
mod tests {
    use super::ulids;

    #[test]
    fn ids_in_activity_text_are_found() {
        let text =
            "merged 01M96MVGCA64BP00EXPGTN0PV5 into 01M96NFVAEF3PNJD2KXWPHGABA: alert 01M96NFVAFVJFJA7TTNNSZVESF → x";
        assert_eq!(
            ulids(text).collect::<Vec<_>>(),
            [
                "01M96MVGCA64BP00EXPGTN0PV5",
                "01M96NFVAEF3PNJD2KXWPHGABA",
                "01M96NFVAFVJFJA7TTNNSZVESF"
            ]
        );
        // Not a ULID: too short, a letter Crockford leaves out, a first character above 7.
        assert_eq!(
            ulids("01M96MVGCA64BP00EXPGTN0PV 01M96MVGCA64BP00EXPGTN0PVI 81M96MVGCA64BP00EXPGTN0PV5").count(),
            0
        );
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod device_paging_tests {
    use axum::http::{Method, StatusCode};
    use serde_json::Value;
    use ward_protocol::{Entity, RuleRef, Severity};

    use super::super::matrix_tests::{api, call, token};
    use crate::roles::Role;
    use crate::store::test_support::enrolled_device;
    use crate::store::{AlertSource, IncidentStore, SourcedAlert, SourcedStore};

    /// Issue 20 item 1: an incident on more devices than one page (a worm) lists them
    /// all, 200 at a time, each once, first seen first.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_incidents_devices_are_paged_past_the_first_200() {
        const DEVICES: u8 = 230;
        let api = api();
        // Prevalence would stop a hash on 230 devices from linking: this incident is a worm.
        let settings = crate::incidents::Settings::from_config(&crate::config::CorrelationConfig {
            prevalence_threshold: 1_000,
            ..Default::default()
        });
        let correlator = crate::incidents::Correlator::new(settings, Default::default());
        let (incident, hosts) = api
            .state
            .writer
            .run(move |s| {
                let devices: Vec<String> = (1..=DEVICES).map(|n| enrolled_device(s, n, 1).to_string()).collect();
                let alerts: Vec<SourcedAlert> = devices
                    .iter()
                    .enumerate()
                    .map(|(i, d)| SourcedAlert {
                        id: format!("w{i}"),
                        source: AlertSource::Collector,
                        device_id: Some(d.clone()),
                        observed_at_ms: 10_000 + i as u64 * 1_000,
                        last_observed_at_ms: 10_000 + i as u64 * 1_000,
                        rule: RuleRef {
                            id: "worm".into(),
                            title: "Worm binary".into(),
                            author: "t".into(),
                            severity: Severity::High,
                            techniques: vec![],
                            tactics: vec![],
                        },
                        entities: vec![Entity::File {
                            path: "/tmp/.w".into(),
                            sha256: Some([7; 32]),
                        }],
                        count: 1,
                        matched: Default::default(),
                    })
                    .collect();
                s.insert_sourced_alerts(&alerts, 1).unwrap();
                while correlator.step(s, 1_000).unwrap() > 0 {}
                let hosts: Vec<String> = (1..=DEVICES).map(|n| format!("host-{n}")).collect();
                (s.incident_alerts_of("w0").unwrap().0, hosts)
            })
            .await
            .unwrap();
        let viewer = token(Role::Viewer);
        let page = |offset: Option<usize>| {
            let path = match offset {
                Some(o) => format!("/api/v1/incidents/{incident}/evidence?device_offset={o}"),
                None => format!("/api/v1/incidents/{incident}/evidence"),
            };
            let (api, viewer) = (&api, viewer.clone());
            async move {
                let (status, text) = call(api, Method::GET, &path, Some(&viewer), "").await;
                assert_eq!(status, StatusCode::OK, "{text}");
                serde_json::from_str::<Value>(&text).unwrap()
            }
        };
        let names = |v: &Value| -> Vec<String> {
            v["devices"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d["hostname"].as_str().unwrap().to_string())
                .collect()
        };
        let first = page(None).await;
        assert_eq!(
            (first["devices_total"].as_u64(), first["device_offset"].as_u64()),
            (Some(230), Some(0))
        );
        let second = page(Some(200)).await;
        assert_eq!(second["device_offset"], 200);
        let mut seen = names(&first);
        assert_eq!(seen.len(), 200);
        seen.extend(names(&second));
        assert_eq!(seen, hosts, "every device once, first seen first");
        assert!(names(&page(Some(400)).await).is_empty());
        let (status, text) = call(
            &api,
            Method::GET,
            &format!("/api/v1/incidents/{incident}/evidence?device_offset=-1"),
            Some(&viewer),
            "",
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{text}");
    }
}
