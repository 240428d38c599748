//! The HTTP API (axum). The router is built by a function so tests can call it
//! without a socket. Every route but `/healthz` needs a bearer token.

mod actions;
pub mod auth;
mod console;
pub mod error;
pub mod extract;
pub mod feeds;
mod incidents;
mod process_tree;
mod routes;

use std::collections::HashSet;
use std::sync::{Arc, RwLock};

use axum::Router;
use axum::extract::Request;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get, patch, post};
use ward_protocol::DeviceId;

use crate::actions::policy;
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
    /// Incident correlation; analyst changes to incidents go through it.
    pub correlator: Arc<crate::incidents::Correlator>,
    /// Feed import limits and detection thresholds.
    pub feeds: Arc<crate::config::FeedsConfig>,
}

impl std::fmt::Debug for ApiState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiState").finish_non_exhaustive()
    }
}

/// Feed files are larger than other bodies: their own limit.
fn feed_routes(max_import_bytes: usize) -> Router<ApiState> {
    let routes = Router::new()
        .route("/api/v1/feeds/identity", post(feeds::identity))
        .route("/api/v1/feeds/mailbox", post(feeds::mailbox));
    extract::limit_body(routes, max_import_bytes)
}

pub fn router(state: ApiState) -> Router {
    let protected = Router::new()
        .route("/metrics", get(routes::metrics))
        .route("/api/v1/whoami", get(routes::whoami))
        .route("/api/v1/devices", get(routes::list_devices))
        .route("/api/v1/devices/{id}", get(routes::get_device))
        .route("/api/v1/devices/{id}/alerts", get(routes::device_alerts))
        .route("/api/v1/devices/{id}/revoke", post(routes::revoke_device))
        .route("/api/v1/alerts", get(routes::list_alerts))
        .route("/api/v1/alerts/{id}", get(routes::get_alert))
        .merge(workflow_routes())
        .merge(feed_routes(state.feeds.max_import_bytes))
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), auth::authenticate));
    let app = Router::new()
        .route("/", get(console::index))
        .route("/console/{file}", get(console::asset))
        .route("/healthz", get(routes::healthz))
        .merge(protected)
        .fallback(routes::not_found)
        // After every route is added: it applies to the routes present.
        .method_not_allowed_fallback(routes::method_not_allowed);
    extract::limit_body(app, extract::DEFAULT_BODY_LIMIT).with_state(state)
}

/// The response-action and audit routes, built only from the permission table
/// ([`policy::ROUTES`], [`policy::AUDIT_ROUTES`]); each route's least role is
/// enforced here from the table (handlers check again). A table entry without a
/// handler is left out, and a unit test fails.
fn workflow_routes() -> Router<ApiState> {
    let mut router = Router::new();
    for &(method, path, role) in policy::ROUTES
        .iter()
        .chain(policy::AUDIT_ROUTES.iter())
        .chain(policy::INCIDENT_ROUTES.iter())
    {
        let Some(handler) = workflow_handler(method, path) else {
            tracing::error!(method, path, "permission table route without a handler");
            continue;
        };
        let require = move |req: Request, next: Next| async move {
            match req.extensions().get::<auth::Caller>().map(|c| c.require(role)) {
                Some(Ok(())) => next.run(req).await,
                Some(Err(e)) => e.into_response(),
                None => unauthenticated(),
            }
        };
        router = router.route(path, handler.route_layer(axum::middleware::from_fn(require)));
    }
    router
}

fn unauthenticated() -> Response {
    error::ApiError::new(axum::http::StatusCode::UNAUTHORIZED, "not authenticated").into_response()
}

/// The handler of one table route. The only place in this file naming the
/// workflow, audit and incident paths (a unit test counts them).
fn workflow_handler(method: &str, path: &str) -> Option<MethodRouter<ApiState>> {
    Some(match (method, path) {
        ("GET", "/api/v1/incidents") => get(incidents::list),
        ("GET", "/api/v1/incidents/{id}") => get(incidents::get),
        ("GET", "/api/v1/incidents/{id}/alerts") => get(incidents::alerts),
        ("GET", "/api/v1/incidents/{id}/process_tree") => get(incidents::process_tree),
        ("GET", "/api/v1/incidents/{id}/evidence") => get(incidents::evidence),
        ("PATCH", "/api/v1/incidents/{id}") => patch(incidents::patch),
        ("POST", "/api/v1/incidents/{id}/comments") => post(incidents::comment),
        ("POST", "/api/v1/incidents/{id}/merge") => post(incidents::merge),
        ("POST", "/api/v1/incidents/{id}/alerts/{alert_id}/move") => post(incidents::move_alert),
        ("POST", "/api/v1/actions") => post(actions::propose),
        ("GET", "/api/v1/actions") => get(actions::list),
        ("GET", "/api/v1/actions/{id}") => get(actions::get),
        ("POST", "/api/v1/actions/{id}/approve") => post(actions::approve),
        ("POST", "/api/v1/actions/{id}/reject") => post(actions::reject),
        ("POST", "/api/v1/actions/{id}/cancel") => post(actions::cancel),
        ("POST", "/api/v1/actions/{id}/undo") => post(actions::undo),
        ("GET", "/api/v1/actions/{id}/package") => get(actions::package),
        ("GET", "/api/v1/audit") => get(actions::audit),
        ("GET", "/api/v1/audit/verify") => get(actions::verify_audit),
        _ => return None,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn table() -> Vec<(&'static str, &'static str, crate::roles::Role)> {
        policy::ROUTES
            .iter()
            .chain(policy::AUDIT_ROUTES.iter())
            .chain(policy::INCIDENT_ROUTES.iter())
            .copied()
            .collect()
    }

    /// Table to router: every entry has a handler (so it is registered).
    /// Router to table: this file names each workflow path exactly as often as
    /// the table has entries for it (once, in `workflow_handler`), so no route
    /// under /api/v1/actions, /api/v1/audit or /api/v1/incidents is registered around the table.
    #[test]
    fn the_permission_table_is_the_router() {
        for (method, path, _) in table() {
            assert!(
                workflow_handler(method, path).is_some(),
                "{method} {path} is in the permission table but has no handler"
            );
        }
        let source = include_str!("mod.rs");
        let code = &source[..source.find("#[cfg(test)]").unwrap()];
        for prefix in ["\"/api/v1/actions", "\"/api/v1/audit", "\"/api/v1/incidents"] {
            let in_code = code.matches(prefix).count();
            let in_table = table().iter().filter(|(_, p, _)| p.starts_with(&prefix[1..])).count();
            assert_eq!(
                in_code, in_table,
                "api/mod.rs names {prefix}… {in_code} times, the permission table has {in_table} such routes: \
                 register workflow routes only through policy::ROUTES / AUDIT_ROUTES / INCIDENT_ROUTES"
            );
        }
        // Nothing else under those prefixes matches a handler.
        for (method, path, _) in table() {
            let other = if method == "GET" { "POST" } else { "GET" };
            if !table().iter().any(|(m, p, _)| *m == other && *p == path) {
                assert!(workflow_handler(other, path).is_none(), "{other} {path} has a handler");
            }
        }
    }
}
