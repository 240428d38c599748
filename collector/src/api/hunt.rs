//! Hunting: `GET /api/v1/hunt` runs one query (`model::hunt` grammar) over stored
//! alerts, sign-ins or mail records, a page at a time as JSON or up to
//! [`MAX_EXPORT_ROWS`] rows as CSV; `/api/v1/hunt/saved` keeps each analyst's
//! saved hunts. Every limit (query length, conditions, rows, time) is refused with
//! a 400 that says which; the query text never reaches SQL (the store binds
//! values). Routes and roles: `api/table.rs`.

use std::collections::HashMap;
use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Extension, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use super::ApiState;
use super::auth::Caller;
use super::error::{ApiError, ApiResult, text};
use super::extract::{Body, Path, Query};
use crate::model::hunt::{
    self, DEFAULT_PAGE_ROWS, HuntCursor, HuntPage, HuntQuery, HuntSource, MAX_EXPORT_ROWS, MAX_PAGE_ROWS, TIME_LIMIT_MS,
};
use crate::roles::Role;
use crate::store::NewSavedHunt;
use crate::store::prelude::*;
use crate::util::now_ms;

/// Saved hunts one analyst may keep.
pub const MAX_SAVED_PER_USER: u32 = 100;
/// The longest name of a saved hunt, in bytes.
const MAX_NAME_BYTES: usize = 100;
/// The widest relative window a saved hunt may name: ten years.
const MAX_WINDOW_MS: i64 = 10 * 366 * 86_400_000;

const KNOWN: [&str; 7] = ["source", "q", "since_ms", "until_ms", "limit", "cursor", "format"];

fn int(q: &HashMap<String, String>, name: &str) -> ApiResult<Option<i64>> {
    q.get(name)
        .filter(|v| !v.is_empty())
        .map(|v| {
            v.parse::<i64>()
                .map_err(|_| ApiError::bad_request(format!("{name} must be an integer (ms since the epoch)")))
        })
        .transpose()
}

fn source_of(s: Option<&str>) -> ApiResult<HuntSource> {
    let names = || HuntSource::ALL.map(HuntSource::as_str).join(", ");
    let s = s.ok_or_else(|| ApiError::bad_request(format!("source is required: one of {}", names())))?;
    HuntSource::parse(s).ok_or_else(|| ApiError::bad_request(format!("source must be one of {}", names())))
}

/// The checked query of a request, and whether it asks for CSV.
fn hunt_query(q: &HashMap<String, String>) -> ApiResult<(HuntQuery, bool)> {
    if let Some(unknown) = q.keys().find(|k| !KNOWN.contains(&k.as_str())) {
        return Err(ApiError::bad_request(format!(
            "unknown parameter {unknown:?}; known: {}",
            KNOWN.join(", ")
        )));
    }
    let csv = match q.get("format").map(String::as_str) {
        None | Some("json") => false,
        Some("csv") => true,
        Some(_) => return Err(ApiError::bad_request("format must be json or csv")),
    };
    let source = source_of(q.get("source").map(String::as_str))?;
    let filters =
        hunt::parse(source, q.get("q").map_or("", String::as_str)).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let max = if csv { MAX_EXPORT_ROWS } else { MAX_PAGE_ROWS };
    let limit = match int(q, "limit")? {
        None if csv => MAX_EXPORT_ROWS,
        None => DEFAULT_PAGE_ROWS,
        Some(n) if (1..=i64::from(max)).contains(&n) => n as u32,
        Some(_) => {
            return Err(ApiError::bad_request(format!(
                "limit must be 1..={MAX_PAGE_ROWS} ({MAX_EXPORT_ROWS} with format=csv)"
            )));
        }
    };
    let since_ms = int(q, "since_ms")?;
    let until_ms = int(q, "until_ms")?;
    if let (Some(s), Some(u)) = (since_ms, until_ms)
        && s >= u
    {
        return Err(ApiError::bad_request("since_ms must be before until_ms"));
    }
    let cursor = q
        .get("cursor")
        .filter(|c| !c.is_empty())
        .map(|c| HuntCursor::parse(c).ok_or_else(|| ApiError::bad_request("cursor is not one this API gave out")))
        .transpose()?;
    Ok((
        HuntQuery {
            source,
            filters,
            since_ms,
            until_ms,
            cursor,
            limit,
        },
        csv,
    ))
}

/// `GET /api/v1/hunt?source=&q=&since_ms=&until_ms=&limit=&cursor=&format=`.
pub async fn run(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Response> {
    caller.require(Role::Analyst)?;
    let (query, csv) = hunt_query(&q)?;
    let asked = query.clone();
    let page = state
        .reads
        .run(move |s| s.hunt(&asked, Duration::from_millis(TIME_LIMIT_MS)))
        .await??;
    let Some(page) = page else {
        tracing::warn!(user = %caller.name, source = query.source.as_str(), query = %hunt::render(&query.filters), "hunt stopped at its time limit");
        return Err(ApiError::bad_request(format!(
            "the hunt ran longer than {} s and was stopped: narrow the time range or add conditions",
            TIME_LIMIT_MS / 1000
        )));
    };
    if csv {
        return Ok(csv_response(query.source, &page));
    }
    // ATT&CK names of the techniques in the rows, so the console shows them beside the ids.
    let mut attack = Map::new();
    if let Some(at) = page.columns.iter().position(|c| *c == "techniques") {
        for id in page
            .rows
            .iter()
            .filter_map(|r| r.get(at)?.as_str())
            .flat_map(|t| t.split(','))
        {
            if let (false, Some(t)) = (attack.contains_key(id), ward_detect::attack::technique(id)) {
                attack.insert(id.to_string(), Value::String(t.name.to_string()));
            }
        }
    }
    Ok(Json(json!({
        "source": query.source.as_str(),
        "query": hunt::render(&query.filters),
        "since_ms": query.since_ms,
        "until_ms": query.until_ms,
        "limit": query.limit,
        "columns": page.columns,
        "rows": page.rows,
        "total": page.total,
        "total_capped": page.total_capped,
        "next_cursor": page.next_cursor,
        "attack": attack,
    }))
    .into_response())
}

/// A text cell as a spreadsheet should read it: one starting with a formula
/// character gets a leading apostrophe, so an exported mail subject such as
/// `=HYPERLINK(...)` is shown, never evaluated.
fn csv_text(s: &str) -> String {
    if s.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{s}")
    } else {
        s.to_string()
    }
}

fn csv_response(source: HuntSource, page: &HuntPage) -> Response {
    let mut w = csv::Writer::from_writer(Vec::new());
    let mut ok = w.write_record(page.columns).is_ok();
    for row in &page.rows {
        let cells = row.iter().zip(page.columns).map(|(v, col)| match v {
            Value::Null => String::new(),
            Value::Number(n) if *col == "time" => n
                .as_i64()
                .and_then(chrono::DateTime::from_timestamp_millis)
                .map(|t| t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
                .unwrap_or_else(|| n.to_string()),
            Value::Number(n) => n.to_string(),
            Value::String(s) => csv_text(s),
            other => csv_text(&other.to_string()),
        });
        ok &= w.write_record(cells).is_ok();
    }
    let body = match (ok, w.into_inner()) {
        (true, Ok(b)) => b,
        _ => return ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "export failed").into_response(),
    };
    let disposition = format!("attachment; filename=\"ward-hunt-{}.csv\"", source.as_str());
    (
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_string()),
            (header::CONTENT_DISPOSITION, disposition),
        ],
        body,
    )
        .into_response()
}

/// `GET /api/v1/hunt/saved`: the caller's saved hunts.
pub async fn saved(State(state): State<ApiState>, Extension(caller): Extension<Caller>) -> ApiResult<Json<Value>> {
    caller.require(Role::Analyst)?;
    let owner = caller.name.clone();
    let list = state.reads.run(move |s| s.saved_hunts(&owner)).await??;
    Ok(Json(json!({ "saved": list })))
}

fn body_object(raw: &Bytes) -> ApiResult<Map<String, Value>> {
    match serde_json::from_slice::<Value>(raw) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(ApiError::bad_request("body must be a JSON object")),
        Err(e) => Err(ApiError::bad_request(format!("body: {e}"))),
    }
}

fn stopped<E>(_: E) -> ApiError {
    ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "collector is shutting down")
}

/// `POST /api/v1/hunt/saved` `{name, source, query, window_ms?}`: saves (or
/// replaces, by name) one of the caller's hunts; the query must parse.
pub async fn save(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Body(raw): Body,
) -> ApiResult<(StatusCode, Json<Value>)> {
    caller.require(Role::Analyst)?;
    let m = body_object(&raw)?;
    const FIELDS: [&str; 4] = ["name", "source", "query", "window_ms"];
    if let Some(k) = m.keys().find(|k| !FIELDS.contains(&k.as_str())) {
        return Err(ApiError::bad_request(format!(
            "unknown field {k:?}; known: {}",
            FIELDS.join(", ")
        )));
    }
    let str_of = |k: &str| m.get(k).and_then(Value::as_str);
    let name = text("name", str_of("name").unwrap_or(""), true, MAX_NAME_BYTES)?;
    let source = source_of(str_of("source"))?;
    let query = str_of("query").unwrap_or("");
    let filters = hunt::parse(source, query).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let window_ms = match m.get("window_ms") {
        None | Some(Value::Null) => None,
        Some(v) => match v.as_i64() {
            Some(n) if (1..=MAX_WINDOW_MS).contains(&n) => Some(n),
            _ => {
                return Err(ApiError::bad_request(format!(
                    "window_ms must be 1..={MAX_WINDOW_MS} (ms before the hunt is run) or null"
                )));
            }
        },
    };
    let hunt = NewSavedHunt {
        name,
        source: source.as_str().to_string(),
        query: hunt::render(&filters),
        window_ms,
    };
    let owner = caller.name.clone();
    let stored = state
        .writer
        .run(move |s| s.save_hunt(&owner, &hunt, MAX_SAVED_PER_USER, now_ms()))
        .await
        .map_err(stopped)??;
    match stored {
        Some(h) => Ok((StatusCode::CREATED, Json(json!({ "saved": h })))),
        None => Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("you have {MAX_SAVED_PER_USER} saved hunts: delete one first"),
        )),
    }
}

/// `DELETE /api/v1/hunt/saved/{id}`: deletes one of the caller's saved hunts.
pub async fn delete(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    caller.require(Role::Analyst)?;
    let id: i64 = id
        .parse()
        .map_err(|_| ApiError::bad_request("saved hunt id must be an integer"))?;
    let owner = caller.name.clone();
    let found = state
        .writer
        .run(move |s| s.delete_saved_hunt(&owner, id))
        .await
        .map_err(stopped)??;
    if !found {
        return Err(ApiError::not_found("saved hunt"));
    }
    Ok(Json(json!({ "deleted": id })))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use axum::http::{Method, StatusCode};
    use serde_json::Value;
    use ward_protocol::{Entity, RuleRef, Severity};

    use super::super::matrix_tests::{api, call, token};
    use super::*;
    use crate::store::{AlertSource, SourcedAlert};

    fn enc(s: &str) -> String {
        let mut out = String::new();
        for b in s.bytes() {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                out.push(b as char);
            } else {
                out.push_str(&format!("%{b:02X}"));
            }
        }
        out
    }

    async fn seed(api: &super::super::matrix_tests::Api) {
        let alerts: Vec<SourcedAlert> = (0..5u64)
            .map(|i| SourcedAlert {
                id: format!("a{i}"),
                source: AlertSource::Mailbox,
                device_id: None,
                observed_at_ms: 1_000 + i,
                last_observed_at_ms: 1_000 + i,
                rule: RuleRef {
                    id: "r".into(),
                    title: if i == 4 {
                        "=cmd|' /C calc'!A0".into()
                    } else {
                        format!("Phish {i}")
                    },
                    author: "t".into(),
                    severity: Severity::High,
                    techniques: vec![],
                    tactics: vec![],
                },
                entities: vec![Entity::Mailbox {
                    address: format!("user{}@contoso.com", i % 2),
                }],
                count: 1,
                matched: Default::default(),
            })
            .collect();
        api.state
            .writer
            .run(move |s| s.insert_sourced_alerts(&alerts, 1).unwrap())
            .await
            .unwrap();
    }

    async fn get(api: &super::super::matrix_tests::Api, query: &str) -> (StatusCode, String) {
        call(
            api,
            Method::GET,
            &format!("/api/v1/hunt?{query}"),
            Some(&token(Role::Analyst)),
            "",
        )
        .await
    }

    fn json(s: &str) -> Value {
        serde_json::from_str(s).unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_hunt_answers_a_page_and_csv() {
        let api = api();
        seed(&api).await;
        let (status, body) = get(
            &api,
            &format!("source=alerts&q={}&limit=2", enc("mailbox = USER0@contoso.com")),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let v = json(&body);
        assert_eq!(v["total"], 3);
        assert_eq!(v["query"], "mailbox = USER0@contoso.com");
        assert_eq!(v["rows"].as_array().unwrap().len(), 2);
        assert_eq!(v["rows"][0][1], "a4");
        let cursor = v["next_cursor"].as_str().unwrap().to_string();
        let (_, body) = get(
            &api,
            &format!(
                "source=alerts&q={}&limit=2&cursor={cursor}",
                enc("mailbox = user0@contoso.com")
            ),
        )
        .await;
        let v = json(&body);
        assert_eq!(v["rows"][0][1], "a0");
        assert!(v["next_cursor"].is_null());
        // CSV: a header, dates, and a formula-looking title made inert.
        let (status, csv) = get(&api, "source=alerts&format=csv").await;
        assert_eq!(status, StatusCode::OK);
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(
            lines[0],
            "time,id,host,severity,rule,rule_id,source,count,techniques,entities"
        );
        assert_eq!(lines.len(), 6);
        assert_eq!(
            lines[1],
            "1970-01-01T00:00:01.004Z,a4,,high,'=cmd|' /C calc'!A0,r,mailbox,1,,mailbox=user0@contoso.com"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn bad_and_oversized_hunts_are_a_clear_400() {
        let api = api();
        seed(&api).await;
        let long = "a".repeat(hunt::MAX_QUERY_BYTES);
        let many = vec!["rule ~ a"; hunt::MAX_CONDITIONS + 1].join(" and ");
        for (query, expected) in [
            ("q=x", "source is required: one of alerts, sign_ins, mail, directory"),
            (
                "source=processes",
                "source must be one of alerts, sign_ins, mail, directory",
            ),
            ("source=alerts&q=nope%3D1", "unknown field \"nope\" for alerts; known:"),
            (
                &format!("source=alerts&q={}", enc(&format!("rule ~ {long}"))),
                "the query is 1031 bytes; at most 1024",
            ),
            (&format!("source=alerts&q={}", enc(&many)), "more than 16 conditions"),
            (
                "source=alerts&limit=501",
                "limit must be 1..=500 (10000 with format=csv)",
            ),
            (
                "source=alerts&limit=10001&format=csv",
                "limit must be 1..=500 (10000 with format=csv)",
            ),
            ("source=alerts&limit=0", "limit must be 1..=500"),
            ("source=alerts&format=xml", "format must be json or csv"),
            (
                "source=alerts&since_ms=5&until_ms=5",
                "since_ms must be before until_ms",
            ),
            ("source=alerts&since_ms=yesterday", "since_ms must be an integer"),
            ("source=alerts&cursor=%27%3B--", "cursor is not one this API gave out"),
            ("source=alerts&order=rowid", "unknown parameter \"order\""),
            (
                &format!("source=alerts&q={}", enc("rule = x' OR 1=1 --")),
                "expected \"and\" at position 10",
            ),
        ] {
            let (status, body) = get(&api, query).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {body}");
            let msg = json(&body)["error"].as_str().unwrap().to_string();
            assert!(msg.contains(expected), "{query}: {msg}");
        }
        // An injection attempt that parses is a value: it matches nothing, and every row is still there.
        let (status, body) = get(
            &api,
            &format!("source=alerts&q={}", enc("rule = \"x' OR 1=1; DROP TABLE alerts; --\"")),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(json(&body)["total"], 0);
        assert_eq!(json(&get(&api, "source=alerts").await.1)["total"], 5);
        // Viewers do not hunt.
        let (status, _) = call(
            &api,
            Method::GET,
            "/api/v1/hunt?source=alerts",
            Some(&token(Role::Viewer)),
            "",
        )
        .await;
        assert_eq!(status, StatusCode::FORBIDDEN);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn saved_hunts_belong_to_their_analyst() {
        let api = api();
        let analyst = token(Role::Analyst);
        let admin = token(Role::Admin);
        let body = r#"{"name": "spray", "source": "sign_ins", "query": "OUTCOME=failure", "window_ms": 86400000}"#;
        let (status, text) = call(&api, Method::POST, "/api/v1/hunt/saved", Some(&analyst), body).await;
        assert_eq!(status, StatusCode::CREATED, "{text}");
        let saved = json(&text)["saved"].clone();
        assert_eq!(saved["query"], "outcome = failure", "stored in its canonical spelling");
        for (bad, expected) in [
            (r#"{"name": "", "source": "alerts", "query": ""}"#, "name is required"),
            (
                r#"{"name": "x", "source": "alerts", "query": "rule"}"#,
                "expected an operator",
            ),
            (
                r#"{"name": "x", "source": "alerts", "query": "", "window_ms": -1}"#,
                "window_ms must be",
            ),
            (
                r#"{"name": "x", "source": "alerts", "query": "", "owner": "bob"}"#,
                "unknown field \"owner\"",
            ),
        ] {
            let (status, text) = call(&api, Method::POST, "/api/v1/hunt/saved", Some(&analyst), bad).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {text}");
            let msg = json(&text)["error"].as_str().unwrap().to_string();
            assert!(msg.contains(expected), "{bad}: {msg}");
        }
        let (_, text) = call(&api, Method::GET, "/api/v1/hunt/saved", Some(&admin), "").await;
        assert_eq!(json(&text)["saved"], json("[]"), "another user's list is their own");
        let path = format!("/api/v1/hunt/saved/{}", saved["id"]);
        let (status, _) = call(&api, Method::DELETE, &path, Some(&admin), "").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let (status, _) = call(&api, Method::DELETE, &path, Some(&analyst), "").await;
        assert_eq!(status, StatusCode::OK);
        let (_, text) = call(&api, Method::GET, "/api/v1/hunt/saved", Some(&analyst), "").await;
        assert_eq!(json(&text)["saved"], json("[]"));
    }
}
