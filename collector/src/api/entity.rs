//! Entity pages: `GET /api/v1/entities/{kind}?value=…` for a user, an IP address or
//! a file: the incidents that hold it, its newest alerts, the devices they came
//! from, the sign-in and mail records that name it and, for a file, every copy
//! seen (a file on a device at a path, or a mail attachment), each with its own
//! remediation status. Built from the hunting queries (the same limits and time
//! limit) and the incident and action lists. Analysts and up (feed records).
//! `{kind}` is `user`, `ip`, `file` or `mailbox`; the value is a query parameter,
//! so paths need no escaping in the URL's path. A mailbox's page adds what the
//! mailbox feed stored for it: the messages it received with their verdicts and
//! delivery, its URL clicks, its inbox-rule and forwarding changes, and what was
//! done to its mail after delivery (ZAP, moves).

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::time::Duration;

use axum::Json;
use axum::extract::{Extension, State};
use serde_json::{Value, json};

use super::ApiState;
use super::auth::Caller;
use super::error::{ApiError, ApiResult, text};
use super::extract::{Path, Query};
use crate::model::hunt::{Filter, FilterValue, HuntPage, HuntQuery, HuntSource, Op, TIME_LIMIT_MS};
use crate::model::incident::Status;
use crate::roles::Role;
use crate::store::prelude::*;
use crate::store::{ActionFilter, ActionView, FileSighting, IncidentFilter, IncidentSort};

/// Rows of each list on the page (alerts, sign-ins, mail, incidents).
const ROWS: u32 = 50;
/// Alerts read to find a file's copies.
const SIGHTINGS: u32 = 1000;
/// Copies shown.
const MAX_COPIES: usize = 200;

/// What a page is about, normalized as the store keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Subject {
    User(String),
    Ip(IpAddr),
    /// A SHA-256 in lower-case hex.
    FileHash(String),
    /// An absolute path (files the agent did not hash).
    FilePath(String),
    /// A mail address, lower case.
    Mailbox(String),
}

fn subject(kind: &str, value: &str) -> ApiResult<Subject> {
    let value = text("value", value, true, 1024)?;
    match kind {
        "user" => Ok(Subject::User(value.to_ascii_lowercase())),
        "ip" => value
            .parse()
            .map(Subject::Ip)
            .map_err(|_| ApiError::bad_request("value must be an IPv4 or IPv6 address")),
        "file" if value.len() == 64 && value.bytes().all(|b| b.is_ascii_hexdigit()) => {
            Ok(Subject::FileHash(value.to_ascii_lowercase()))
        }
        "file" if value.starts_with('/') => Ok(Subject::FilePath(value)),
        "file" => Err(ApiError::bad_request(
            "value must be a file's SHA-256 (64 hex digits) or its absolute path",
        )),
        "mailbox" if value.contains('@') => Ok(Subject::Mailbox(value.to_ascii_lowercase())),
        "mailbox" => Err(ApiError::bad_request("value must be a mail address")),
        _ => Err(ApiError::bad_request("kind must be user, ip, file or mailbox")),
    }
}

/// A one-condition hunt of `source`: `field = value`.
fn one(source: HuntSource, field: &str, value: &str) -> Option<HuntQuery> {
    let field = *source.fields().iter().find(|f| f.name == field)?;
    Some(HuntQuery {
        source,
        filters: vec![Filter {
            field,
            op: Op::Eq,
            value: FilterValue::Text(value.to_string()),
        }],
        since_ms: None,
        until_ms: None,
        cursor: None,
        limit: ROWS,
    })
}

/// A hunt of `source` where every `field = value` holds.
fn all_of(source: HuntSource, conditions: &[(&str, &str)]) -> Option<HuntQuery> {
    let (first, rest) = conditions.split_first()?;
    let mut q = one(source, first.0, first.1)?;
    for (field, value) in rest {
        q.filters.extend(one(source, field, value)?.filters);
    }
    Some(q)
}

/// Columns shown of a list: (stored column, name shown).
type Shown = &'static [(&'static str, &'static str)];

/// The lists of a mailbox's page: (name in the answer, mail record kind, the
/// columns shown).
const MAILBOX_LISTS: [(&str, &str, Shown); 4] = [
    (
        "messages",
        "email",
        &[
            ("time", "time"),
            ("sender", "sender"),
            ("subject", "subject"),
            ("threat_types", "verdict"),
            ("delivery_action", "delivery"),
            ("delivery_location", "location"),
            ("network_message_id", "message_id"),
        ],
    ),
    (
        "clicks",
        "click",
        &[
            ("time", "time"),
            ("url", "url"),
            ("action", "action"),
            ("ip", "ip"),
            ("network_message_id", "message_id"),
        ],
    ),
    (
        "inbox_rules",
        "inbox_rule",
        &[
            ("time", "time"),
            ("action", "operation"),
            ("subject", "rule"),
            ("detection_methods", "conditions"),
            ("delivery_action", "what_it_does"),
            ("sender", "changed_by"),
            ("ip", "ip"),
        ],
    ),
    (
        "after_delivery",
        "post_delivery",
        &[
            ("time", "time"),
            ("action", "action"),
            ("subject", "subject"),
            ("sender", "sender"),
            ("network_message_id", "message_id"),
        ],
    ),
];

/// A page of mail records with only `columns` (stored name, name shown), in that order.
fn projected(page: Option<HuntPage>, columns: &[(&str, &str)]) -> Value {
    let Some(p) = page else { return page_json(None) };
    let at: Vec<Option<usize>> = columns
        .iter()
        .map(|(c, _)| p.columns.iter().position(|x| x == c))
        .collect();
    let rows: Vec<Vec<Value>> = p
        .rows
        .iter()
        .map(|r| {
            at.iter()
                .map(|i| i.and_then(|i| r.get(i).cloned()).unwrap_or(Value::Null))
                .collect()
        })
        .collect();
    json!({"columns": columns.iter().map(|(_, n)| *n).collect::<Vec<_>>(), "rows": rows, "total": p.total, "total_capped": p.total_capped})
}

fn page_json(page: Option<HuntPage>) -> Value {
    match page {
        Some(p) => json!({"columns": p.columns, "rows": p.rows, "total": p.total, "total_capped": p.total_capped}),
        None => json!({"stopped": format!("took longer than {} s", TIME_LIMIT_MS / 1000)}),
    }
}

/// Where a copy's remediation stands: the newest file action on its device and path.
fn remediation(actions: &[ActionView], device_id: &str, path: &str) -> (String, Option<String>) {
    actions
        .iter()
        .filter(|a| {
            a.device_id == device_id
                && matches!(a.kind.as_str(), "quarantine_file" | "delete_file")
                && a.action.get("path").and_then(Value::as_str) == Some(path)
        })
        .max_by_key(|a| a.requested_at_ms)
        .map(|a| {
            let status = match a.status.as_str() {
                "pending_approval" | "approved" => "pending",
                "dispatched" | "acked" => "in_progress",
                "succeeded" => "remediated",
                "failed" | "refused" => "failed",
                _ => "none",
            };
            (status.to_string(), Some(a.id.clone()))
        })
        .unwrap_or_else(|| ("none".into(), None))
}

/// A file's copies on devices: one per (device, path), from the alerts that name it.
fn copies(subject: &Subject, sightings: &[FileSighting], actions: &[ActionView]) -> Vec<Value> {
    #[derive(Default)]
    struct Copy {
        hostname: String,
        sha256: Option<String>,
        first: i64,
        last: i64,
        alerts: u32,
        last_alert: String,
    }
    let mut by: BTreeMap<(String, String), Copy> = BTreeMap::new();
    for s in sightings {
        let Some(device) = &s.device_id else { continue };
        let entities: Vec<Value> = serde_json::from_str(&s.entities).unwrap_or_default();
        for e in entities.iter().filter(|e| e["kind"] == "file") {
            let (Some(path), sha) = (e["path"].as_str(), e["sha256"].as_str()) else {
                continue;
            };
            let matches = match subject {
                Subject::FileHash(h) => sha == Some(h.as_str()),
                Subject::FilePath(p) => path == p,
                _ => false,
            };
            if !matches {
                continue;
            }
            let c = by.entry((device.clone(), path.to_string())).or_insert_with(|| Copy {
                first: s.observed_at_ms,
                last: s.observed_at_ms,
                last_alert: s.alert_id.clone(),
                ..Copy::default()
            });
            c.hostname = s.hostname.clone().unwrap_or_default();
            c.sha256 = sha.map(str::to_string).or(c.sha256.take());
            c.alerts += 1;
            c.first = c.first.min(s.observed_at_ms);
            if s.observed_at_ms >= c.last {
                c.last = s.observed_at_ms;
                c.last_alert = s.alert_id.clone();
            }
        }
    }
    by.into_iter()
        .take(MAX_COPIES)
        .map(|((device, path), c)| {
            let (status, action) = remediation(actions, &device, &path);
            json!({"where": "device", "device_id": device, "hostname": c.hostname, "path": path, "sha256": c.sha256,
                "first_seen_ms": c.first, "last_seen_ms": c.last, "alert_count": c.alerts, "last_alert": c.last_alert,
                "remediation": status, "action_id": action})
        })
        .collect()
}

/// `GET /api/v1/entities/{kind}?value=`.
pub async fn get(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(kind): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Json<Value>> {
    caller.require(Role::Analyst)?;
    if let Some(k) = q.keys().find(|k| k.as_str() != "value") {
        return Err(ApiError::bad_request(format!("unknown parameter {k:?}; known: value")));
    }
    let subject = subject(&kind, q.get("value").map_or("", String::as_str))?;
    let value = match &subject {
        Subject::User(v) | Subject::FileHash(v) | Subject::FilePath(v) | Subject::Mailbox(v) => v.clone(),
        Subject::Ip(ip) => ip.to_string(),
    };
    let (alert_field, sign_in_field, mail_field, keys) = match &subject {
        Subject::User(u) => {
            let mut keys = state.correlator.user_filter_keys(u);
            if keys.is_empty() {
                keys.push(format!("user:{u}"));
            }
            ("user", Some("user"), Some("recipient"), keys)
        }
        Subject::Ip(_) => ("ip", Some("ip"), Some("ip"), vec![format!("ip:{value}")]),
        Subject::FileHash(h) => ("file", None, Some("sha256"), vec![format!("file:{h}")]),
        Subject::FilePath(_) => ("entities", None, None, Vec::new()),
        // Its own mail is in the lists below; as a sender it is a key of its own.
        Subject::Mailbox(m) => (
            "mailbox",
            None,
            None,
            vec![format!("mailbox:{m}"), format!("sender:{m}")],
        ),
    };
    let mailbox_queries: Vec<Option<HuntQuery>> = match &subject {
        Subject::Mailbox(m) => MAILBOX_LISTS
            .iter()
            .map(|(_, kind, _)| all_of(HuntSource::Mail, &[("kind", kind), ("recipient", m)]))
            .collect(),
        _ => Vec::new(),
    };
    // A path is found in the alerts' entities as JSON writes it.
    let json_path = serde_json::to_string(&value).unwrap_or_default();
    let json_path = json_path.trim_matches('"').to_string();
    let alerts_query = match &subject {
        Subject::FilePath(_) => one(HuntSource::Alerts, alert_field, &json_path).map(|mut q| {
            q.filters[0].op = Op::Contains;
            q
        }),
        _ => one(HuntSource::Alerts, alert_field, &value),
    };
    let queries = (
        alerts_query,
        sign_in_field.and_then(|f| one(HuntSource::SignIns, f, &value)),
        mail_field.and_then(|f| one(HuntSource::Mail, f, &value)),
    );
    // Directory and audit events: by and about a user, of a mailbox, from an address.
    let directory_queries: Vec<Option<HuntQuery>> = match &subject {
        Subject::User(_) => vec![
            one(HuntSource::Directory, "actor", &value),
            one(HuntSource::Directory, "target_user", &value),
        ],
        Subject::Mailbox(_) => vec![one(HuntSource::Directory, "mailbox", &value)],
        Subject::Ip(_) => vec![one(HuntSource::Directory, "ip", &value)],
        _ => Vec::new(),
    };
    let file_key = match &subject {
        Subject::FileHash(h) => Some((h.clone(), false)),
        Subject::FilePath(_) => Some((json_path.clone(), true)),
        _ => None,
    };
    let limit = Duration::from_millis(TIME_LIMIT_MS);
    let (alerts, sign_ins, mail, incidents, sightings, mailbox, directory) = state
        .reads
        .run(move |s| -> Result<_, crate::store::StoreError> {
            let run = |q: Option<HuntQuery>| q.map(|q| s.hunt(&q, limit)).transpose();
            let incidents = if keys.is_empty() {
                Vec::new()
            } else {
                // The filter's keys are correlation keys of any kind (`ip:…`, `file:…`).
                s.list_incidents(&IncidentFilter {
                    statuses: vec![Status::Active, Status::InProgress, Status::Resolved],
                    min_severity: None,
                    assignee: None,
                    tag: None,
                    source: None,
                    device_keys: Vec::new(),
                    user_keys: keys,
                    tactic: None,
                    text: None,
                    since_ms: 0,
                    until_ms: None,
                    sort: IncidentSort::LastActivity,
                    after: None,
                    limit: ROWS,
                })?
            };
            let sightings = match &file_key {
                Some((k, by_path)) => Some(s.file_sightings(k, *by_path, SIGHTINGS, limit)?),
                None => None,
            };
            let mailbox = mailbox_queries.into_iter().map(run).collect::<Result<Vec<_>, _>>()?;
            let directory = directory_queries.into_iter().map(run).collect::<Result<Vec<_>, _>>()?;
            Ok((
                run(queries.0)?,
                run(queries.1)?,
                run(queries.2)?,
                incidents,
                sightings,
                mailbox,
                directory,
            ))
        })
        .await??;
    // The devices of its newest alerts, and (for a file) each copy's remediation.
    let mut devices: BTreeMap<String, u32> = BTreeMap::new();
    if let Some(Some(p)) = &alerts
        && let Some(host) = p.columns.iter().position(|c| *c == "host")
    {
        for h in p.rows.iter().filter_map(|r| r[host].as_str()) {
            *devices.entry(h.to_string()).or_default() += 1;
        }
    }
    let mut body = json!({
        "kind": kind, "value": value,
        "incidents": incidents,
        "alerts": alerts.map(page_json),
        "devices": devices.into_iter().map(|(h, n)| json!({"hostname": h, "alerts": n})).collect::<Vec<_>>(),
        "sign_ins": sign_ins.map(page_json),
        "mail": mail.map(page_json),
    });
    // `directory` (what it did, or what happened to its mailbox or from its address)
    // and, for a user, `directory_about` (what was done to it).
    for (name, page) in ["directory", "directory_about"].iter().zip(directory) {
        body[*name] = page.map_or(Value::Null, page_json);
    }
    for ((name, _, columns), page) in MAILBOX_LISTS.iter().zip(mailbox) {
        body[*name] = page.map_or(Value::Null, |p| projected(p, columns));
    }
    // Outer None: not a file; inner None: the search for copies was stopped.
    if let Some(found) = sightings {
        let list = found.as_deref().unwrap_or_default();
        let mut device_ids: Vec<String> = list.iter().filter_map(|s| s.device_id.clone()).collect();
        device_ids.sort();
        device_ids.dedup();
        let actions = state
            .reads
            .run(move |s| -> Result<Vec<ActionView>, crate::store::StoreError> {
                let mut all = Vec::new();
                for d in device_ids.iter().take(MAX_COPIES) {
                    all.extend(s.list_actions(&ActionFilter {
                        status: None,
                        device_id: Some(d.clone()),
                        incident_id: None,
                        before_id: None,
                        limit: 500,
                    })?);
                }
                Ok(all)
            })
            .await??;
        body["copies"] = json!(copies(&subject, list, &actions));
        if found.is_none() {
            body["copies_stopped"] = json!(format!("took longer than {} s", TIME_LIMIT_MS / 1000));
        }
    }
    // Mail attachments of a hashed file are copies of their own (no Ward action reaches a mailbox).
    if let (Subject::FileHash(_), Some(Some(m))) = (&subject, body.get("mail").map(|m| m.get("rows").cloned())) {
        let cols = HuntSource::Mail.columns();
        let at = |name: &str| cols.iter().position(|c| *c == name);
        let attachments: Vec<Value> = m
            .as_array()
            .into_iter()
            .flatten()
            .filter(|r| at("kind").is_some_and(|i| r[i] == "attachment"))
            .map(|r| {
                let get = |name: &str| at(name).map_or(Value::Null, |i| r[i].clone());
                json!({"where": "mail", "recipient": get("recipient"), "sender": get("sender"), "subject": get("subject"),
                    "file_name": get("file_name"), "network_message_id": get("network_message_id"),
                    "last_seen_ms": get("time"), "remediation": "not_applicable"})
            })
            .collect();
        if let Some(Value::Array(c)) = body.get_mut("copies") {
            c.extend(attachments);
        }
    }
    Ok(Json(body))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use axum::http::{Method, StatusCode};
    use ward_protocol::{Entity, RuleRef, Severity};

    use super::super::matrix_tests::{api, call, token};
    use super::*;
    use crate::model::feed::{MailKind, MailRecord};
    use crate::store::test_support::enrolled_device;
    use crate::store::{AlertSource, SourcedAlert};
    use crate::store::{FeedOps, FeedStore};

    const SHA: &str = "275a021bbfb6489e54d471899f7db9d1663fc695ec2fe2a2c4538aabf651fd0f";

    fn alert(n: u64, device: &str, path: &str) -> SourcedAlert {
        let mut sha = [0u8; 32];
        hex::decode_to_slice(SHA, &mut sha).unwrap();
        SourcedAlert {
            id: format!("e{n}"),
            source: AlertSource::Collector,
            device_id: Some(device.to_string()),
            observed_at_ms: 1_000 + n,
            last_observed_at_ms: 1_000 + n,
            rule: RuleRef {
                id: "bad".into(),
                title: "Known-bad file".into(),
                author: "t".into(),
                severity: Severity::High,
                techniques: vec![],
                tactics: vec![],
            },
            entities: vec![
                Entity::File {
                    path: path.into(),
                    sha256: Some(sha),
                },
                Entity::User {
                    name: "Alice".into(),
                    uid: Some(1000),
                },
                Entity::Ip {
                    addr: "203.0.113.9".parse().unwrap(),
                },
            ],
            count: 1,
            matched: Default::default(),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_file_page_lists_each_copy_with_its_own_remediation() {
        let api = api();
        let device = api
            .state
            .writer
            .run(|s| {
                let id = enrolled_device(s, 1, 1).to_string();
                let alerts = [
                    alert(1, &id, "/tmp/a.exe"),
                    alert(2, &id, "/home/alice/a.exe"),
                    alert(3, &id, "/tmp/a.exe"),
                ];
                s.insert_sourced_alerts(&alerts, 1).unwrap();
                id
            })
            .await
            .unwrap();
        let analyst = token(Role::Analyst);
        let propose = json!({"device_id": device, "reason": "bad",
            "action": {"kind": "quarantine_file", "path": "/tmp/a.exe", "sha256": SHA}});
        let (status, text) = call(
            &api,
            Method::POST,
            "/api/v1/actions",
            Some(&analyst),
            &propose.to_string(),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "{text}");

        let (status, text) = call(
            &api,
            Method::GET,
            &format!("/api/v1/entities/file?value={}", SHA.to_uppercase()),
            Some(&analyst),
            "",
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{text}");
        let v: Value = serde_json::from_str(&text).unwrap();
        let copies: Vec<(String, String, u64)> = v["copies"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| {
                (
                    c["path"].as_str().unwrap().to_string(),
                    c["remediation"].as_str().unwrap().to_string(),
                    c["alert_count"].as_u64().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            copies,
            [
                ("/home/alice/a.exe".into(), "none".into(), 1),
                ("/tmp/a.exe".into(), "pending".into(), 2)
            ],
            "quarantining one copy leaves the other as it was"
        );
        assert_eq!(v["alerts"]["total"], 3);
        assert_eq!(v["devices"], json!([{"hostname": "host-1", "alerts": 3}]));
        // By path: the copies at that path only.
        let (_, text) = call(
            &api,
            Method::GET,
            "/api/v1/entities/file?value=/home/alice/a.exe",
            Some(&analyst),
            "",
        )
        .await;
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["copies"].as_array().unwrap().len(), 1, "{v}");
        // A user and an IP: their alerts.
        for (kind, value) in [("user", "ALICE"), ("ip", "203.0.113.9")] {
            let (status, text) = call(
                &api,
                Method::GET,
                &format!("/api/v1/entities/{kind}?value={value}"),
                Some(&analyst),
                "",
            )
            .await;
            assert_eq!(status, StatusCode::OK, "{text}");
            let v: Value = serde_json::from_str(&text).unwrap();
            assert_eq!(v["alerts"]["total"], 3, "{kind}: {v}");
            assert!(v.get("copies").is_none());
        }
        for (path, expected) in [
            (
                "/api/v1/entities/file?value=a.exe",
                "SHA-256 (64 hex digits) or its absolute path",
            ),
            ("/api/v1/entities/ip?value=nope", "IPv4 or IPv6"),
            (
                "/api/v1/entities/process?value=1",
                "kind must be user, ip, file or mailbox",
            ),
            ("/api/v1/entities/mailbox?value=alice", "a mail address"),
            ("/api/v1/entities/user", "value is required"),
            ("/api/v1/entities/user?value=a&x=1", "unknown parameter"),
        ] {
            let (status, text) = call(&api, Method::GET, path, Some(&analyst), "").await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{path}: {text}");
            assert!(text.contains(expected), "{path}: {text}");
        }
        let (status, _) = call(
            &api,
            Method::GET,
            "/api/v1/entities/user?value=a",
            Some(&token(Role::Viewer)),
            "",
        )
        .await;
        assert_eq!(status, StatusCode::FORBIDDEN);
    }

    fn mail(key: &str, kind: MailKind, recipient: &str, f: impl FnOnce(&mut MailRecord)) -> MailRecord {
        let mut m = MailRecord {
            key: key.into(),
            kind,
            time_ms: 5_000,
            network_message_id: Some("m1".into()),
            sender: Some("billing@invoices.example".into()),
            recipient: Some(recipient.into()),
            subject: None,
            threat_types: None,
            detection_methods: None,
            delivery_action: None,
            delivery_location: None,
            file_name: None,
            sha256: None,
            url: None,
            action: None,
            ip: None,
            rule: None,
            raw: "{}".into(),
        };
        f(&mut m);
        m
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_mailbox_page_lists_its_messages_clicks_and_inbox_rules() {
        let api = api();
        api.state
            .writer
            .run(|s| {
                let records = [
                    mail("e1", MailKind::Email, "alice@contoso.com", |m| {
                        m.subject = Some("Invoice overdue".into());
                        m.threat_types = Some("Phish".into());
                        m.delivery_action = Some("Delivered".into());
                        m.delivery_location = Some("Inbox/folder".into());
                    }),
                    mail("e2", MailKind::Email, "bob@contoso.com", |m| {
                        m.subject = Some("Lunch".into())
                    }),
                    mail("c1", MailKind::Click, "alice@contoso.com", |m| {
                        m.url = Some("https://invoices.example/pay".into());
                        m.action = Some("ClickAllowed".into());
                    }),
                    mail("r1", MailKind::InboxRule, "alice@contoso.com", |m| {
                        m.network_message_id = None;
                        m.sender = None;
                        m.subject = Some("..".into());
                        m.action = Some("New-InboxRule".into());
                        m.delivery_action = Some("forwards it to x@evil.example".into());
                    }),
                ];
                s.feed_import(1, |tx| {
                    for m in &records {
                        tx.insert_mail(m)?;
                    }
                    Ok(())
                })
                .unwrap();
            })
            .await
            .unwrap();
        let (status, text) = call(
            &api,
            Method::GET,
            "/api/v1/entities/mailbox?value=Alice@Contoso.com",
            Some(&token(Role::Analyst)),
            "",
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{text}");
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["value"], "alice@contoso.com");
        let messages = &v["messages"];
        assert_eq!(messages["total"], 1, "only alice's own mail: {v}");
        assert_eq!(messages["columns"][3], "verdict", "{v}");
        assert_eq!(messages["rows"][0][2], "Invoice overdue", "{v}");
        assert_eq!(messages["rows"][0][3], "Phish", "{v}");
        assert_eq!(v["clicks"]["rows"][0][1], "https://invoices.example/pay", "{v}");
        assert_eq!(v["inbox_rules"]["rows"][0][1], "New-InboxRule", "{v}");
        assert_eq!(v["inbox_rules"]["rows"][0][4], "forwards it to x@evil.example", "{v}");
        assert_eq!(v["after_delivery"]["total"], 0, "{v}");
    }
}
