//! The one table of the API's authenticated routes: method, path, the least role
//! that may call it, and its handler. The router is built from it and enforces each
//! role from it (handlers check again); no other file names an `/api/v1` path or
//! `/metrics` (a unit test in `api` fails otherwise).
//!
//! Beyond its role, a decision on an action also needs the caller not to be the
//! requester unless the kind allows it, and cancelling needs the caller to be the
//! requester or allowed to decide on the kind (`actions::policy`).

use axum::http::Method;
use axum::routing::{MethodFilter, MethodRouter, on};

use super::ApiState;
use super::{actions, alert_page, entity, feeds, hunt, incidents, routes};
use crate::roles::Role;

/// Which body limit a route's requests get.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodySize {
    /// The API's default limit.
    Default,
    /// `feeds.max_import_bytes`: feed files are larger than other bodies.
    FeedImport,
}

/// One authenticated route.
#[derive(Clone)]
pub struct Route {
    pub method: Method,
    pub path: &'static str,
    pub role: Role,
    pub body: BodySize,
    handler: fn(MethodFilter) -> MethodRouter<ApiState>,
}

impl std::fmt::Debug for Route {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {} ({})", self.method, self.path, self.role)
    }
}

impl Route {
    /// The handler, bound to the route's method.
    pub fn handler(&self) -> Option<MethodRouter<ApiState>> {
        let filter = MethodFilter::try_from(self.method.clone()).ok()?;
        Some((self.handler)(filter))
    }
}

const fn route(
    method: Method,
    path: &'static str,
    role: Role,
    handler: fn(MethodFilter) -> MethodRouter<ApiState>,
) -> Route {
    Route {
        method,
        path,
        role,
        body: BodySize::Default,
        handler,
    }
}

const fn feed(path: &'static str, handler: fn(MethodFilter) -> MethodRouter<ApiState>) -> Route {
    Route {
        method: Method::POST,
        path,
        role: Role::Analyst,
        body: BodySize::FeedImport,
        handler,
    }
}

use Role::{Admin, Analyst, Approver, Viewer};

/// Every authenticated route. `/healthz` and the console's static files need no token.
pub static ROUTES: [Route; 37] = [
    route(Method::GET, "/metrics", Viewer, |m| on(m, routes::metrics)),
    route(Method::GET, "/api/v1/whoami", Viewer, |m| on(m, routes::whoami)),
    route(Method::GET, "/api/v1/devices", Viewer, |m| on(m, routes::list_devices)),
    route(Method::GET, "/api/v1/devices/{id}", Viewer, |m| {
        on(m, routes::get_device)
    }),
    route(Method::GET, "/api/v1/devices/{id}/alerts", Viewer, |m| {
        on(m, routes::device_alerts)
    }),
    route(Method::POST, "/api/v1/devices/{id}/revoke", Admin, |m| {
        on(m, routes::revoke_device)
    }),
    route(Method::GET, "/api/v1/alerts", Viewer, |m| on(m, routes::list_alerts)),
    route(Method::GET, "/api/v1/alerts/{id}", Viewer, |m| on(m, alert_page::get)),
    route(Method::GET, "/api/v1/incidents", Viewer, |m| on(m, incidents::list)),
    route(Method::GET, "/api/v1/incidents/{id}", Viewer, |m| on(m, incidents::get)),
    route(Method::GET, "/api/v1/incidents/{id}/alerts", Viewer, |m| {
        on(m, incidents::alerts)
    }),
    route(Method::GET, "/api/v1/incidents/{id}/process_tree", Viewer, |m| {
        on(m, incidents::process_tree)
    }),
    route(Method::GET, "/api/v1/incidents/{id}/evidence", Viewer, |m| {
        on(m, incidents::evidence)
    }),
    route(Method::PATCH, "/api/v1/incidents/{id}", Analyst, |m| {
        on(m, incidents::patch)
    }),
    route(Method::POST, "/api/v1/incidents/{id}/comments", Analyst, |m| {
        on(m, incidents::comment)
    }),
    route(Method::POST, "/api/v1/incidents/{id}/merge", Analyst, |m| {
        on(m, incidents::merge)
    }),
    route(
        Method::POST,
        "/api/v1/incidents/{id}/alerts/{alert_id}/move",
        Analyst,
        |m| on(m, incidents::move_alert),
    ),
    route(Method::POST, "/api/v1/actions", Analyst, |m| on(m, actions::propose)),
    route(Method::GET, "/api/v1/actions", Viewer, |m| on(m, actions::list)),
    route(Method::GET, "/api/v1/actions/{id}", Viewer, |m| on(m, actions::get)),
    route(Method::POST, "/api/v1/actions/{id}/approve", Approver, |m| {
        on(m, actions::approve)
    }),
    route(Method::POST, "/api/v1/actions/{id}/reject", Approver, |m| {
        on(m, actions::reject)
    }),
    route(Method::POST, "/api/v1/actions/{id}/cancel", Analyst, |m| {
        on(m, actions::cancel)
    }),
    route(Method::POST, "/api/v1/actions/{id}/undo", Analyst, |m| {
        on(m, actions::undo)
    }),
    // An investigation package holds the device's processes, logins, files and
    // network state: approvers (who decide what runs on devices) and admins only.
    route(Method::GET, "/api/v1/actions/{id}/package", Approver, |m| {
        on(m, actions::package)
    }),
    route(Method::GET, "/api/v1/audit", Admin, |m| on(m, actions::audit)),
    route(Method::GET, "/api/v1/audit/verify", Admin, |m| {
        on(m, actions::verify_audit)
    }),
    feed("/api/v1/feeds/identity", |m| on(m, feeds::identity)),
    feed("/api/v1/feeds/mailbox", |m| on(m, feeds::mailbox)),
    feed("/api/v1/feeds/endpoint", |m| on(m, feeds::endpoint)),
    route(Method::GET, "/api/v1/feeds/endpoint/hosts", Analyst, |m| {
        on(m, feeds::endpoint_hosts)
    }),
    // Hunting reads raw sign-in and mail records: analysts and up.
    route(Method::GET, "/api/v1/hunt", Analyst, |m| on(m, hunt::run)),
    route(Method::GET, "/api/v1/hunt/saved", Analyst, |m| on(m, hunt::saved)),
    route(Method::POST, "/api/v1/hunt/saved", Analyst, |m| on(m, hunt::save)),
    route(Method::DELETE, "/api/v1/hunt/saved/{id}", Analyst, |m| {
        on(m, hunt::delete)
    }),
    route(Method::GET, "/api/v1/entities/{kind}", Analyst, |m| on(m, entity::get)),
    route(Method::GET, "/api/v1/export/sinks", Admin, |m| {
        on(m, routes::export_sinks)
    }),
];
