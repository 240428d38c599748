//! Route handlers: parse and check input, call the store, shape JSON.

use std::collections::HashMap;

use axum::Json;
use axum::extract::{Extension, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use serde_json::{Value, json};
use ward_protocol::message::close_code;
use ward_protocol::{DeviceId, Severity};

use super::ApiState;
use super::auth::Caller;
use super::error::{ApiError, ApiResult};
use super::extract::{Path, Query};
use crate::roles::Role;
use crate::store::prelude::*;
use crate::store::{AlertFilter, DeviceView};
use crate::util::now_ms;

/// `ok`, or 503 with the storage error while alert commits fail (a full disk, an
/// I/O error): load balancers and monitors see the collector cannot keep what it
/// is sent, though it still answers.
pub async fn healthz(State(state): State<ApiState>) -> (StatusCode, Json<Value>) {
    match state.writer.storage_failure() {
        None => (StatusCode::OK, Json(json!({"status": "ok"}))),
        Some(f) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "failing", "storage": f.error, "since_ms": f.since_ms})),
        ),
    }
}

pub async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "no such route")
}

/// A known route with another method (axum adds the `Allow` header).
pub async fn method_not_allowed() -> ApiError {
    ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method not allowed on this route")
}

pub async fn metrics(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
) -> ApiResult<impl IntoResponse> {
    caller.require(Role::Viewer)?;
    Ok((
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    ))
}

/// The export sinks' health (docs/export.md): state, queue, delivery counts, the
/// oldest unsent record's age and the last error. Admins only: an error as logged
/// may name the receiver's address.
pub async fn export_sinks(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
) -> ApiResult<Json<Value>> {
    caller.require(Role::Admin)?;
    let sinks: Vec<crate::metrics::SinkHealth> = state
        .metrics
        .export
        .get()
        .map(|all| all.iter().map(|m| m.health()).collect())
        .unwrap_or_default();
    Ok(Json(json!({"sinks": sinks, "now_ms": now_ms()})))
}

pub async fn whoami(Extension(caller): Extension<Caller>) -> Json<Value> {
    Json(json!({"name": caller.name, "role": caller.role.to_string()}))
}

fn with_liveness(state: &ApiState, mut d: DeviceView) -> DeviceView {
    let connected =
        d.id.parse::<DeviceId>()
            .map(|id| state.registry.is_online(&id))
            .unwrap_or(false);
    let recent = d
        .last_seen_ms
        .is_some_and(|t| now_ms().saturating_sub(t.max(0) as u64) < state.offline_after_ms);
    d.online = connected && recent && d.revoked_at_ms.is_none();
    d
}

pub async fn list_devices(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
) -> ApiResult<Json<Value>> {
    caller.require(Role::Viewer)?;
    let devices = state.reads.run(|s| s.list_devices()).await??;
    let devices: Vec<DeviceView> = devices.into_iter().map(|d| with_liveness(&state, d)).collect();
    Ok(Json(json!({ "devices": devices })))
}

fn device_id(id: &str) -> ApiResult<DeviceId> {
    id.parse()
        .map_err(|_| ApiError::bad_request("device id must be a 26-character id"))
}

pub async fn get_device(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    caller.require(Role::Viewer)?;
    let id = device_id(&id)?.to_string();
    let lookup = id.clone();
    let device = state
        .reads
        .run(move |s| s.get_device(&lookup))
        .await??
        .ok_or_else(|| ApiError::not_found("device"))?;
    let (gaps, totals, drops) = state
        .reads
        .run(move |s| {
            Ok::<_, crate::store::StoreError>((
                s.sequence_gaps(&id)?,
                s.device_alert_totals(&id)?,
                s.drop_reports(&id)?,
            ))
        })
        .await??;
    let mut body = serde_json::to_value(with_liveness(&state, device)).unwrap_or(Value::Null);
    if let Value::Object(map) = &mut body {
        map.insert(
            "sequence_gaps".into(),
            serde_json::to_value(gaps).unwrap_or(Value::Null),
        );
        map.insert(
            "drop_reports".into(),
            serde_json::to_value(drops).unwrap_or(Value::Null),
        );
        map.insert(
            "alert_totals".into(),
            serde_json::to_value(totals).unwrap_or(Value::Null),
        );
    }
    Ok(Json(body))
}

/// `GET /api/v1/devices/{id}/alerts`: a page of the device's alerts by time (newest
/// first unless `order=oldest`, in `since_ms..until_ms`, after `cursor`), with the
/// range's `total` and the device's `totals`.
pub async fn device_alerts(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Json<Value>> {
    caller.require(Role::Viewer)?;
    let id = device_id(&id)?.to_string();
    let query = super::incidents::alert_page_query(&q)?;
    let (query, page, totals) = state
        .reads
        .run(move |s| -> Result<_, crate::store::StoreError> {
            if s.get_device(&id)?.is_none() {
                return Ok(None);
            }
            let page = s.device_alert_page(&id, &query)?;
            Ok(Some((query, page, s.device_alert_totals(&id)?)))
        })
        .await??
        .ok_or_else(|| ApiError::not_found("device"))?;
    let mut body = super::incidents::page_json(&query, &page);
    if let Value::Object(m) = &mut body {
        let mut alerts = json!(page.items);
        super::alert_page::name_alerts(&mut alerts);
        m.insert("alerts".into(), alerts);
        m.insert("totals".into(), json!(totals));
    }
    Ok(Json(body))
}

pub async fn revoke_device(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    caller.require(Role::Admin)?;
    let device = device_id(&id)?;
    let actor = caller.name.clone();
    let id = device.to_string();
    let found = state
        .writer
        .run(move |s| s.revoke_device(&id, &actor, now_ms()))
        .await
        .map_err(|_| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "collector is shutting down"))??;
    if !found {
        return Err(ApiError::not_found("device"));
    }
    if let Ok(mut set) = state.revoked.write() {
        set.insert(device);
    }
    let was_connected = state.registry.close(&device, close_code::REVOKED, "device revoked");
    Ok(Json(
        json!({"device_id": device.to_string(), "revoked": true, "disconnected": was_connected}),
    ))
}

const DEFAULT_PAGE: u32 = 100;
const MAX_PAGE: u32 = 1000;

fn parse_i64(q: &HashMap<String, String>, name: &str) -> ApiResult<Option<i64>> {
    q.get(name)
        .map(|v| {
            v.parse::<i64>()
                .map_err(|_| ApiError::bad_request(format!("{name} must be an integer")))
        })
        .transpose()
}

pub async fn list_alerts(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Json<Value>> {
    caller.require(Role::Viewer)?;
    const KNOWN: [&str; 7] = ["device", "severity", "rule", "since", "until", "cursor", "limit"];
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
    let filter = AlertFilter {
        device_id: q
            .get("device")
            .map(|d| device_id(d).map(|d| d.to_string()))
            .transpose()?,
        min_severity: q
            .get("severity")
            .map(|s| {
                Severity::parse(s).ok_or_else(|| {
                    ApiError::bad_request("severity must be informational, low, medium, high or critical")
                })
            })
            .transpose()?,
        rule_id: q.get("rule").cloned(),
        since_ms: parse_i64(&q, "since")?,
        until_ms: parse_i64(&q, "until")?,
        before_rowid: parse_i64(&q, "cursor")?,
        limit,
    };
    let alerts = state.reads.run(move |s| s.list_alerts(&filter)).await??;
    let next_cursor = if alerts.len() == limit as usize {
        alerts.last().map(|a| a.rowid.to_string())
    } else {
        None
    };
    let mut alerts = json!(alerts);
    super::alert_page::name_alerts(&mut alerts);
    Ok(Json(json!({ "alerts": alerts, "next_cursor": next_cursor })))
}
