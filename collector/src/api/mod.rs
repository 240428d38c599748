//! The HTTP API (axum). The router is built by a function so tests can call it
//! without a socket. Every route but `/healthz` needs a bearer token.

mod actions;
mod alert_page;
pub mod auth;
mod console;
mod entity;
pub mod error;
pub mod extract;
pub mod feeds;
mod hunt;
mod incidents;
#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod matrix_tests;
mod process_tree;
mod routes;
mod table;

use std::collections::HashSet;
use std::sync::{Arc, RwLock};

use axum::Router;
use axum::extract::Request;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
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

pub fn router(state: ApiState) -> Router {
    let mut protected = Router::new();
    for route in &table::ROUTES {
        let Some(handler) = route.handler() else {
            tracing::error!(?route, "route table entry with a method axum cannot route");
            continue;
        };
        let role = route.role;
        let require = move |req: Request, next: Next| async move {
            match req.extensions().get::<auth::Caller>().map(|c| c.require(role)) {
                Some(Ok(())) => next.run(req).await,
                Some(Err(e)) => e.into_response(),
                None => unauthenticated(),
            }
        };
        let handler = handler.route_layer(axum::middleware::from_fn(require));
        let handler = match route.body {
            table::BodySize::Default => handler,
            table::BodySize::FeedImport => extract::limit_route_body(handler, state.feeds.max_import_bytes),
        };
        protected = protected.route(route.path, handler);
    }
    let protected = protected.route_layer(axum::middleware::from_fn_with_state(state.clone(), auth::authenticate));
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

fn unauthenticated() -> Response {
    error::ApiError::new(axum::http::StatusCode::UNAUTHORIZED, "not authenticated").into_response()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// The table is the router: every entry has a handler for its method, no
    /// (method, path) is listed twice, and no other file of the API names a path
    /// under /api/v1 or /metrics, so no route is registered around the table.
    #[test]
    fn the_route_table_is_the_router() {
        let mut seen = HashSet::new();
        for route in &table::ROUTES {
            assert!(route.handler().is_some(), "{route:?} has no handler");
            assert!(
                seen.insert((route.method.clone(), route.path)),
                "{route:?} is listed twice"
            );
        }
        let sources = [
            ("mod.rs", include_str!("mod.rs")),
            ("routes.rs", include_str!("routes.rs")),
            ("actions.rs", include_str!("actions.rs")),
            ("incidents.rs", include_str!("incidents.rs")),
            ("feeds.rs", include_str!("feeds.rs")),
            ("auth.rs", include_str!("auth.rs")),
            ("console.rs", include_str!("console.rs")),
            ("extract.rs", include_str!("extract.rs")),
            ("error.rs", include_str!("error.rs")),
            ("process_tree.rs", include_str!("process_tree.rs")),
            ("alert_page.rs", include_str!("alert_page.rs")),
            ("hunt.rs", include_str!("hunt.rs")),
            ("entity.rs", include_str!("entity.rs")),
        ];
        for (file, source) in sources {
            let code = source.find("#[cfg(test)]").map_or(source, |end| &source[..end]);
            for prefix in ["\"/api/v1", "\"/metrics"] {
                assert!(
                    !code.contains(prefix),
                    "api/{file} names a {prefix}… path: add routes to api/table.rs"
                );
            }
        }
    }
}
