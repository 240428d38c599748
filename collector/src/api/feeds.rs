//! Feed imports: the body is the file as exported (any supported shape). It is
//! read and normalized on a blocking thread, then stored and judged on the single
//! writer in one transaction with its audit entry. Roles: [`FEED_ROUTES`].

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Extension, State};
use axum::http::StatusCode;
use serde_json::{Value, json};

use super::ApiState;
use super::auth::{Caller, Role};
use super::error::{ApiError, ApiResult};
use crate::feeds::{self, Feed, FeedError, ImportReport};
use crate::util::now_ms;

/// The feed routes and the least role each needs.
pub const FEED_ROUTES: [(&str, &str, Role); 2] = [
    ("POST", "/api/v1/feeds/identity", Role::Analyst),
    ("POST", "/api/v1/feeds/mailbox", Role::Analyst),
];

pub async fn identity(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    import(state, caller, Feed::Identity, body).await
}

pub async fn mailbox(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    import(state, caller, Feed::Mailbox, body).await
}

async fn import(state: ApiState, caller: Caller, feed: Feed, body: Bytes) -> ApiResult<Json<Value>> {
    caller.require(Role::Analyst)?;
    let cfg = state.feeds.clone();
    let actor = caller.name.clone();
    let stopped = |_| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "collector is shutting down");
    let result: Result<ImportReport, FeedError> = match feed {
        Feed::Identity => {
            let parse_cfg = cfg.clone();
            match tokio::task::spawn_blocking(move || feeds::parse_identity(&body, &parse_cfg)).await {
                Ok(Ok(parsed)) => state
                    .writer
                    .run(move |s| feeds::store_identity(s, parsed, &cfg, &actor, now_ms()))
                    .await
                    .map_err(stopped)?
                    .map_err(FeedError::from),
                Ok(Err(e)) => Err(e),
                Err(_) => return Err(ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "import failed")),
            }
        }
        Feed::Mailbox => match tokio::task::spawn_blocking(move || feeds::parse_mailbox(&body, &cfg)).await {
            Ok(Ok(parsed)) => state
                .writer
                .run(move |s| feeds::store_mailbox(s, parsed, &actor, now_ms()))
                .await
                .map_err(stopped)?
                .map_err(FeedError::from),
            Ok(Err(e)) => Err(e),
            Err(_) => return Err(ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "import failed")),
        },
    };
    feeds::record_outcome(&state.metrics, feed, &caller.name, &result);
    match result {
        Ok(report) => Ok(Json(json!(report))),
        Err(FeedError::TooLarge { .. }) => Err(ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, result_message(&result))),
        Err(FeedError::Unreadable(_)) => Err(ApiError::new(StatusCode::BAD_REQUEST, result_message(&result))),
        Err(FeedError::Store(e)) => Err(e.into()),
    }
}

fn result_message(r: &Result<ImportReport, FeedError>) -> String {
    r.as_ref().err().map(ToString::to_string).unwrap_or_default()
}
