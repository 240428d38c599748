//! Feed imports: the body is the file as exported (any supported shape). It is
//! read and normalized on a blocking thread, then stored and judged on the single
//! writer chunk by chunk ([`feeds::Import`]), one transaction and one turn of the
//! writer each, so agents' alert batches are stored between chunks; the last
//! chunk writes the audit entry. Routes and roles: `api/table.rs`.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Extension, State};
use axum::http::StatusCode;
use serde_json::{Value, json};

use super::ApiState;
use super::auth::Caller;
use super::error::{ApiError, ApiResult};
use super::extract::{Body, BodyRejection};
use crate::feeds::{self, Feed, FeedError, ImportReport};
use crate::roles::Role;
use crate::store::prelude::*;
use crate::util::now_ms;

pub async fn identity(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    body: Result<Body, BodyRejection>,
) -> ApiResult<Json<Value>> {
    import(state, caller, Feed::Identity, body).await
}

pub async fn mailbox(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    body: Result<Body, BodyRejection>,
) -> ApiResult<Json<Value>> {
    import(state, caller, Feed::Mailbox, body).await
}

pub async fn endpoint(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    body: Result<Body, BodyRejection>,
) -> ApiResult<Json<Value>> {
    import(state, caller, Feed::Endpoint, body).await
}

/// The hosts the endpoint feed has seen: devices that run no Ward agent (`enrolled`
/// is true only when an enrolled device carries the same hostname; then `device_id`
/// names it). Never a target for commands: they are not rows of `devices`.
pub async fn endpoint_hosts(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
) -> ApiResult<Json<Value>> {
    caller.require(Role::Analyst)?;
    let hosts = state.reads.run(|s| s.endpoint_hosts(1000)).await??;
    let hosts: Vec<Value> = hosts
        .into_iter()
        .map(|(h, device_id)| {
            let mut v = json!(h);
            v["device_id"] = json!(device_id);
            v
        })
        .collect();
    Ok(Json(json!({ "hosts": hosts })))
}

async fn import(
    state: ApiState,
    caller: Caller,
    feed: Feed,
    body: Result<Body, BodyRejection>,
) -> ApiResult<Json<Value>> {
    caller.require(Role::Analyst)?;
    let body = match body {
        Ok(Body(b)) => b,
        // A file over feeds.max_import_bytes, refused before it was read: a
        // refused import (the extractor logged it with the route, peer and user).
        Err(e @ BodyRejection::TooLarge(_)) => {
            state.metrics.feed_imports_refused.inc();
            return Err(e.into());
        }
        Err(e) => return Err(e.into()),
    };
    let result = run(&state, feed, caller.name.clone(), body).await?;
    feeds::record_outcome(&state.metrics, feed, &caller.name, &result);
    match result {
        Ok(report) => Ok(Json(json!(report))),
        Err(FeedError::Store(e)) => Err(e.into()),
        Err(e @ FeedError::TooLarge { .. }) => Err(ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, e.to_string())),
        Err(e @ FeedError::Unreadable(_)) => Err(ApiError::bad_request(e.to_string())),
    }
}

/// Parses on a blocking thread, then stores on the writer.
async fn run(state: &ApiState, feed: Feed, actor: String, body: Bytes) -> ApiResult<Result<ImportReport, FeedError>> {
    let cfg = Arc::clone(&state.feeds);
    let parse_cfg = Arc::clone(&cfg);
    let parsed = tokio::task::spawn_blocking(move || feeds::parse(feed, &body, &parse_cfg))
        .await
        .map_err(|_| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "import failed"))?;
    let parsed = match parsed {
        Ok(p) => p,
        Err(e) => return Ok(Err(e)),
    };
    // One chunk per turn on the writer: agents' alert batches queued meanwhile are
    // stored between chunks instead of behind the whole file.
    let mut import = feeds::Import::new(parsed, &actor);
    loop {
        let chunk_cfg = Arc::clone(&cfg);
        let (back, stored) = state
            .writer
            .run(move |s| {
                let n = import.chunk_for(feeds::IMPORT_CHUNK_BUDGET);
                let r = import.step(s, &chunk_cfg, n, now_ms());
                (import, r)
            })
            .await
            .map_err(|_| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "collector is shutting down"))?;
        import = back;
        // Alerts stored: the correlator need not wait for its timer.
        state.writer.notify_alerts();
        match stored {
            Ok(None) => continue,
            Ok(Some(report)) => return Ok(Ok(report)),
            Err(e) => return Ok(Err(e.into())),
        }
    }
}
