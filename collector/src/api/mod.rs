//! The HTTP API (axum). The router is built by a function so tests can call it
//! without a socket. Every route but `/healthz` needs a bearer token.

mod actions;
pub mod auth;
mod console;
pub mod error;
pub mod feeds;
mod routes;

use std::collections::HashSet;
use std::sync::{Arc, RwLock};

use axum::Router;
use axum::routing::{get, post};
use ward_protocol::DeviceId;

use crate::ingest::Writer;
use crate::metrics::Metrics;
use crate::readpool::ReadPool;
use crate::transport::Registry;

#[derive(Clone)]
pub struct ApiState {
    pub reads: ReadPool,
    pub writer: Writer,
    pub metrics: Arc<Metrics>,
    pub registry: Arc<Registry>,
    pub revoked: Arc<RwLock<HashSet<DeviceId>>>,
    pub offline_after_ms: u64,
    /// The response-action workflow (proposals, decisions, command dispatch).
    pub actions: Arc<crate::actions::Dispatcher>,
    /// Feed import limits and detection thresholds.
    pub feeds: Arc<crate::config::FeedsConfig>,
}

impl std::fmt::Debug for ApiState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiState").finish_non_exhaustive()
    }
}

/// Request bodies larger than this are refused before they are read.
const MAX_BODY_BYTES: usize = 1 << 20;

/// Feed files are larger than other bodies: their own limit, checked before the body is read.
fn feed_routes(max_import_bytes: usize) -> Router<ApiState> {
    Router::new()
        .route("/api/v1/feeds/identity", post(feeds::identity))
        .route("/api/v1/feeds/mailbox", post(feeds::mailbox))
        .layer(axum::extract::DefaultBodyLimit::max(max_import_bytes))
}

pub fn router(state: ApiState) -> Router {
    let protected = Router::new()
        .route("/metrics", get(routes::metrics))
        .route("/api/v1/whoami", get(routes::whoami))
        .route("/api/v1/devices", get(routes::list_devices))
        .route("/api/v1/devices/{id}", get(routes::get_device))
        .route("/api/v1/devices/{id}/revoke", post(routes::revoke_device))
        .route("/api/v1/alerts", get(routes::list_alerts))
        .route("/api/v1/alerts/{id}", get(routes::get_alert))
        .route("/api/v1/actions", post(actions::propose).get(actions::list))
        .route("/api/v1/actions/{id}", get(actions::get))
        .route("/api/v1/actions/{id}/approve", post(actions::approve))
        .route("/api/v1/actions/{id}/reject", post(actions::reject))
        .route("/api/v1/actions/{id}/cancel", post(actions::cancel))
        .route("/api/v1/actions/{id}/undo", post(actions::undo))
        .route("/api/v1/actions/{id}/package", get(actions::package))
        .route("/api/v1/audit", get(actions::audit))
        .route("/api/v1/audit/verify", get(actions::verify_audit))
        .merge(feed_routes(state.feeds.max_import_bytes))
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), auth::authenticate));
    Router::new()
        .route("/", get(console::index))
        .route("/console/{file}", get(console::asset))
        .route("/healthz", get(routes::healthz))
        .merge(protected)
        .fallback(routes::not_found)
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}
