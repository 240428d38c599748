//! Routes of the response-action workflow and the audit log. Roles follow the
//! route table (`api/table.rs`); per-kind rules and four eyes come from the workflow. Bodies are parsed here so
//! every malformed one is a JSON 400, never a 500.

use std::collections::HashMap;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Extension, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use ward_protocol::{CommandId, DeviceId};

use super::ApiState;
use super::auth::Caller;
use super::error::{ApiError, ApiResult, text};
use super::extract::{Body, Path, Query};
use crate::actions::dispatch::{DispatchError, Links};
use crate::actions::transitions::{self, CancelError, DecideError, Decision};
use crate::actions::workflow::{self, Actor, WorkflowError};
use crate::model::action::ActionSpec;
use crate::model::action::Status;
use crate::roles::Role;
use crate::store::prelude::*;
use crate::store::{ActionFilter, TargetRefusal};

const MAX_TEXT: usize = 4096;
const DEFAULT_PAGE: u32 = 100;
const MAX_PAGE: u32 = 1000;

impl From<DispatchError> for ApiError {
    fn from(e: DispatchError) -> Self {
        match e {
            DispatchError::Store(e) => e.into(),
            DispatchError::Stopped => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "collector is shutting down"),
            DispatchError::Random(_) => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "try again"),
        }
    }
}

impl From<WorkflowError> for ApiError {
    fn from(e: WorkflowError) -> Self {
        let status = match e {
            WorkflowError::Forbidden { .. } | WorkflowError::OwnRequest(_) | WorkflowError::NeedsPeople { .. } => {
                StatusCode::FORBIDDEN
            }
            WorkflowError::AlreadyApproved(_) | WorkflowError::WrongState { .. } => StatusCode::CONFLICT,
        };
        ApiError::new(status, e.to_string())
    }
}

fn actor(caller: &Caller) -> Actor {
    Actor {
        name: caller.name.clone(),
        role: caller.role,
    }
}

fn body<T: DeserializeOwned>(bytes: &Bytes, empty_ok: bool) -> ApiResult<T> {
    let bytes: &[u8] = if bytes.is_empty() && empty_ok { b"{}" } else { bytes };
    serde_json::from_slice(bytes).map_err(|e| ApiError::bad_request(format!("body: {e}")))
}

fn action_id(id: &str) -> ApiResult<String> {
    id.parse::<CommandId>()
        .map(|id| id.to_string())
        .map_err(|_| ApiError::bad_request("action id must be a 26-character id"))
}

/// Longest incident id accepted.
const MAX_INCIDENT_ID: usize = 64;

/// An incident id: 1..=64 characters of `[A-Za-z0-9_-]`. Incidents are
/// stored elsewhere, so only the form is checked.
fn incident_id(id: &str) -> ApiResult<String> {
    if id.is_empty()
        || id.len() > MAX_INCIDENT_ID
        || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(ApiError::bad_request(format!(
            "incident_id must be 1..={MAX_INCIDENT_ID} characters of letters, digits, '-' and '_'"
        )));
    }
    Ok(id.to_string())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ProposeBody {
    device_id: String,
    action: Value,
    reason: String,
    #[serde(default)]
    incident_id: Option<String>,
}

/// `POST /api/v1/actions`: propose an action (analyst and above), optionally
/// as part of an incident (`incident_id`).
pub async fn propose(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Body(raw): Body,
) -> ApiResult<impl IntoResponse> {
    caller.require(Role::Analyst)?;
    let b: ProposeBody = body(&raw, false)?;
    let device: DeviceId = b
        .device_id
        .parse()
        .map_err(|_| ApiError::bad_request("device_id must be a 26-character id"))?;
    let action = ActionSpec::parse(b.action).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let reason = text("reason", &b.reason, true, MAX_TEXT)?;
    let links = Links {
        undo_of: None,
        incident_id: b.incident_id.as_deref().map(incident_id).transpose()?,
    };
    let actor = actor(&caller);
    workflow::may_propose(state.actions.policy().for_kind(action.kind()), &actor)?;
    match state.actions.propose(&actor, device, action, reason, links).await? {
        Ok(view) => Ok((
            StatusCode::CREATED,
            Json(serde_json::to_value(view).unwrap_or(Value::Null)),
        )),
        Err(TargetRefusal::UnknownDevice) => Err(ApiError::not_found("device")),
        Err(TargetRefusal::RevokedDevice) => Err(ApiError::new(StatusCode::CONFLICT, "device is revoked")),
    }
}

/// `GET /api/v1/actions?status=&device=&incident_id=&limit=&cursor=`.
pub async fn list(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Json<Value>> {
    caller.require(Role::Viewer)?;
    const KNOWN: [&str; 5] = ["status", "device", "incident_id", "limit", "cursor"];
    if let Some(unknown) = q.keys().find(|k| !KNOWN.contains(&k.as_str())) {
        return Err(ApiError::bad_request(format!(
            "unknown filter {unknown:?}; known: {}",
            KNOWN.join(", ")
        )));
    }
    let limit = match q.get("limit").map(|l| l.parse::<u32>()) {
        None => DEFAULT_PAGE,
        Some(Ok(n)) if (1..=MAX_PAGE).contains(&n) => n,
        Some(_) => return Err(ApiError::bad_request(format!("limit must be 1..={MAX_PAGE}"))),
    };
    let filter = ActionFilter {
        status: q
            .get("status")
            .map(|s| s.parse::<Status>().map_err(ApiError::bad_request))
            .transpose()?,
        device_id: q
            .get("device")
            .map(|d| {
                d.parse::<DeviceId>()
                    .map(|d| d.to_string())
                    .map_err(|_| ApiError::bad_request("device must be a 26-character id"))
            })
            .transpose()?,
        incident_id: q.get("incident_id").map(|i| incident_id(i)).transpose()?,
        before_id: q.get("cursor").map(|c| action_id(c)).transpose()?,
        limit,
    };
    let actions = state.reads.run(move |s| s.list_actions(&filter)).await??;
    let next_cursor = if actions.len() == limit as usize {
        actions.last().map(|a| a.id.clone())
    } else {
        None
    };
    Ok(Json(json!({ "actions": actions, "next_cursor": next_cursor })))
}

/// `GET /api/v1/actions/{id}`.
pub async fn get(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    caller.require(Role::Viewer)?;
    let id = action_id(&id)?;
    let view = state
        .reads
        .run(move |s| s.get_action(&id))
        .await??
        .ok_or_else(|| ApiError::not_found("action"))?;
    Ok(Json(serde_json::to_value(view).unwrap_or(Value::Null)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DecisionBody {
    #[serde(default)]
    comment: String,
}

async fn decide(state: ApiState, caller: Caller, id: String, raw: Bytes, decision: Decision) -> ApiResult<Json<Value>> {
    caller.require(Role::Approver)?;
    let id = action_id(&id)?;
    let b: DecisionBody = body(&raw, true)?;
    let comment = text("comment", &b.comment, decision == Decision::Reject, MAX_TEXT)?;
    let (outcome, delivered) = match state.actions.decide(id, actor(&caller), decision, comment).await? {
        Ok(o) => o,
        Err(DecideError::NotFound) => return Err(ApiError::not_found("action")),
        Err(DecideError::Workflow(e)) => return Err(e.into()),
        Err(e @ DecideError::DeviceRevoked) => return Err(ApiError::new(StatusCode::CONFLICT, e.to_string())),
        Err(e @ DecideError::Sign(_)) => {
            tracing::error!(error = %e, "command signing failed");
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "cannot sign the command",
            ));
        }
    };
    let mut v = serde_json::to_value(outcome.view).unwrap_or(Value::Null);
    if let Value::Object(map) = &mut v {
        map.insert("delivered".into(), Value::Bool(delivered));
    }
    Ok(Json(v))
}

/// `POST /api/v1/actions/{id}/approve` {comment}: approver and above, not the requester.
pub async fn approve(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    Body(raw): Body,
) -> ApiResult<Json<Value>> {
    decide(state, caller, id, raw, Decision::Approve).await
}

/// `POST /api/v1/actions/{id}/reject` {comment}: approver and above, not the requester.
pub async fn reject(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    Body(raw): Body,
) -> ApiResult<Json<Value>> {
    decide(state, caller, id, raw, Decision::Reject).await
}

/// `POST /api/v1/actions/{id}/cancel` {comment}: the requester, or approver and
/// above; before dispatch, or after it while the command never left the collector.
pub async fn cancel(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    Body(raw): Body,
) -> ApiResult<Json<Value>> {
    caller.require(Role::Analyst)?;
    let id = action_id(&id)?;
    let b: DecisionBody = body(&raw, true)?;
    let comment = text("comment", &b.comment, false, MAX_TEXT)?;
    match state.actions.cancel(id, actor(&caller), comment).await? {
        Ok(view) => Ok(Json(serde_json::to_value(view).unwrap_or(Value::Null))),
        Err(CancelError::NotFound) => Err(ApiError::not_found("action")),
        Err(CancelError::Workflow(e)) => Err(e.into()),
        Err(e @ CancelError::MayBeDelivered) => Err(ApiError::new(StatusCode::CONFLICT, e.to_string())),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UndoBody {
    #[serde(default)]
    reason: String,
}

/// `POST /api/v1/actions/{id}/undo` {reason}: proposes the action that undoes a
/// succeeded one (release for isolate, restore for quarantine), linked to it by
/// `undo_of` (and to its incident, if any); it waits for approval like any
/// proposal (analyst and above).
pub async fn undo(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    Body(raw): Body,
) -> ApiResult<impl IntoResponse> {
    caller.require(Role::Analyst)?;
    let id = action_id(&id)?;
    let b: UndoBody = body(&raw, true)?;
    let reason = match text("reason", &b.reason, false, MAX_TEXT)? {
        r if r.is_empty() => format!("undo of {id}"),
        r => r,
    };
    let lookup = id.clone();
    let (device, action) = match state.reads.run(move |s| transitions::undo_target(s, &lookup)).await?? {
        None => return Err(ApiError::not_found("action")),
        Some(Err(e)) => return Err(ApiError::new(StatusCode::CONFLICT, e.to_string())),
        Some(Ok(t)) => t,
    };
    let actor = actor(&caller);
    workflow::may_propose(state.actions.policy().for_kind(action.kind()), &actor)?;
    // The undo belongs to the undone action's incident.
    let lookup = id.clone();
    let incident_id = state
        .reads
        .run(move |s| s.get_action(&lookup))
        .await??
        .and_then(|v| v.incident_id);
    let links = Links {
        undo_of: Some(id),
        incident_id,
    };
    match state.actions.propose(&actor, device, action, reason, links).await? {
        Ok(view) => Ok((
            StatusCode::CREATED,
            Json(serde_json::to_value(view).unwrap_or(Value::Null)),
        )),
        Err(TargetRefusal::UnknownDevice) => Err(ApiError::not_found("device")),
        Err(TargetRefusal::RevokedDevice) => Err(ApiError::new(StatusCode::CONFLICT, "device is revoked")),
    }
}

/// `GET /api/v1/actions/{id}/package`: the attachment a device returned.
pub async fn package(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    caller.require(Role::Viewer)?;
    let id = action_id(&id)?;
    let lookup = id.clone();
    let bytes = state
        .reads
        .run(move |s| s.action_attachment(&lookup))
        .await??
        .ok_or_else(|| ApiError::not_found("package"))?;
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"ward-package-{id}.bin\""),
            ),
        ],
        bytes,
    ))
}

/// `GET /api/v1/audit?limit=&cursor=`: the audit log, newest first (admin).
pub async fn audit(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Json<Value>> {
    caller.require(Role::Admin)?;
    let limit = match q.get("limit").map(|l| l.parse::<u32>()) {
        None => DEFAULT_PAGE,
        Some(Ok(n)) if (1..=MAX_PAGE).contains(&n) => n,
        Some(_) => return Err(ApiError::bad_request(format!("limit must be 1..={MAX_PAGE}"))),
    };
    let before = q
        .get("cursor")
        .map(|c| {
            c.parse::<i64>()
                .map_err(|_| ApiError::bad_request("cursor must be an integer"))
        })
        .transpose()?;
    let entries = state.reads.run(move |s| s.list_audit(before, limit)).await??;
    let next_cursor = if entries.len() == limit as usize {
        entries.last().map(|e| e.id.to_string())
    } else {
        None
    };
    Ok(Json(json!({ "entries": entries, "next_cursor": next_cursor })))
}

/// `GET /api/v1/audit/verify`: recomputes the audit hash chain (admin).
pub async fn verify_audit(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
) -> ApiResult<Json<Value>> {
    caller.require(Role::Admin)?;
    let report = state.reads.run(|s| s.verify_audit_chain()).await??;
    let mut v = serde_json::to_value(&report).unwrap_or(Value::Null);
    if let Value::Object(map) = &mut v {
        map.insert("ok".into(), Value::Bool(report.ok()));
    }
    Ok(Json(v))
}
