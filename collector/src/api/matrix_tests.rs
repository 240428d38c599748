//! The API's role and error matrix, in process: the real router on a real store in a
//! temporary directory, called with `tower::ServiceExt::oneshot` (no socket). Every
//! route of the table is called by no one, a stranger, and each role: the role check
//! answers 401 or 403 exactly where the table says, and no route answers 5xx to a
//! request that reaches its handler with ids that do not exist and empty bodies.

use std::collections::HashSet;
use std::sync::{Arc, RwLock};

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use ring::rand::SystemRandom;
use tower::ServiceExt;
use ward_protocol::SigningKey;

use super::{ApiState, router, table};
use crate::actions::delivery::{Deliveries, Outbound};
use crate::actions::policy::Policy;
use crate::config::Config;
use crate::ingest::Writer;
use crate::metrics::Metrics;
use crate::readpool::ReadPool;
use crate::roles::Role;
use crate::store::Store;
use crate::store::prelude::*;
use crate::transport::Registry;
use crate::util::sha256;

pub(super) struct Api {
    _dir: tempfile::TempDir,
    pub(super) state: ApiState,
}

const ROLES: [Role; 4] = [Role::Viewer, Role::Analyst, Role::Approver, Role::Admin];

pub(super) fn token(role: Role) -> String {
    format!("ward_test_{role}")
}

pub(super) fn api() -> Api {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("ward.db");
    let store = Store::open(&db).unwrap();
    for role in ROLES {
        store
            .add_user(
                &format!("{role}-user"),
                &role.to_string(),
                &sha256(token(role).as_bytes()),
                1,
            )
            .unwrap();
    }
    drop(store);
    let config = Config::default();
    let metrics = Arc::new(Metrics::default());
    let (writer, _thread) = Writer::start(&db, 1000, config.ingest.fold(), 8, Arc::clone(&metrics)).unwrap();
    let reads = ReadPool::open(&db, 2).unwrap();
    let registry = Arc::new(Registry::default());
    let deliveries = Arc::new(Deliveries::new(
        reads.clone(),
        Arc::clone(&registry) as Arc<dyn Outbound>,
        1,
    ));
    let (key, _) = SigningKey::generate(&SystemRandom::new()).unwrap();
    let dispatcher = Arc::new(crate::actions::Dispatcher::new(
        writer.clone(),
        reads.clone(),
        deliveries,
        key,
        Policy::default(),
    ));
    let correlator = crate::incidents::Correlator::new(
        crate::incidents::Settings::from_config(&config.correlation),
        Arc::clone(&metrics),
    );
    let state = ApiState {
        reads,
        writer,
        metrics,
        registry,
        revoked: Arc::new(RwLock::new(HashSet::new())),
        offline_after_ms: config.devices.offline_after_ms,
        actions: dispatcher,
        correlator,
        feeds: Arc::new(config.feeds.clone()),
    };
    Api { _dir: dir, state }
}

/// A path of the table with each `{…}` filled by a well-formed id nothing has.
fn concrete(path: &str) -> String {
    path.replace("{id}", "01JX0000000000000000000000")
        .replace("{alert_id}", "01JX0000000000000000000001")
}

pub(super) async fn call(
    api: &Api,
    method: Method,
    path: &str,
    bearer: Option<&str>,
    body: &str,
) -> (StatusCode, String) {
    let mut req = Request::builder().method(method).uri(path);
    if let Some(t) = bearer {
        req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
    }
    if !body.is_empty() {
        req = req.header(header::CONTENT_TYPE, "application/json");
    }
    let resp = router(api.state.clone())
        .oneshot(req.body(Body::from(body.to_string())).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20).await.unwrap();
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

fn body_for(method: &Method) -> &'static str {
    if *method == Method::GET { "" } else { "{}" }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_answers_its_roles_and_nothing_else() {
    let api = api();
    for route in &table::ROUTES {
        let path = concrete(route.path);
        let body = body_for(&route.method);
        for (who, bearer) in [("no token", None), ("an unknown token", Some("ward_nobody"))] {
            let (status, text) = call(&api, route.method.clone(), &path, bearer, body).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{route:?} by {who}: {text}");
            assert!(
                text.contains("\"error\""),
                "{route:?} by {who}: not a JSON error: {text}"
            );
        }
        for role in ROLES {
            let (status, text) = call(&api, route.method.clone(), &path, Some(&token(role)), body).await;
            if role < route.role {
                assert_eq!(status, StatusCode::FORBIDDEN, "{route:?} as {role}: {text}");
            } else {
                assert!(
                    status != StatusCode::UNAUTHORIZED && status != StatusCode::FORBIDDEN,
                    "{route:?} as {role} was refused: {status} {text}"
                );
                assert!(!status.is_server_error(), "{route:?} as {role}: {status} {text}");
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_are_json_with_their_status() {
    let api = api();
    let admin = token(Role::Admin);
    let (status, text) = call(&api, Method::GET, "/api/v1/nothing-here", Some(&admin), "").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{text}");
    assert!(text.contains("\"error\""), "{text}");
    // A method the table does not list for a path it has.
    let paths: HashSet<&str> = table::ROUTES.iter().map(|r| r.path).collect();
    for path in paths {
        let listed: Vec<&Method> = table::ROUTES
            .iter()
            .filter(|r| r.path == path)
            .map(|r| &r.method)
            .collect();
        let other = [Method::DELETE, Method::PUT]
            .into_iter()
            .find(|m| !listed.contains(&m))
            .unwrap();
        let (status, text) = call(&api, other.clone(), &concrete(path), Some(&admin), "").await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{other} {path}: {text}");
    }
    // A body that is not JSON, and one over the default limit.
    let (status, text) = call(&api, Method::POST, "/api/v1/actions", Some(&admin), "{not json").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{text}");
    let big = format!(
        "{{\"reason\": \"{}\"}}",
        "x".repeat(super::extract::DEFAULT_BODY_LIMIT + 1)
    );
    let (status, text) = call(&api, Method::POST, "/api/v1/actions", Some(&admin), &big).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{text}");
    // Feed imports take files up to their own, larger limit.
    let feed = "x".repeat(super::extract::DEFAULT_BODY_LIMIT + 1);
    let (status, text) = call(&api, Method::POST, "/api/v1/feeds/identity", Some(&admin), &feed).await;
    assert_ne!(status, StatusCode::PAYLOAD_TOO_LARGE, "{text}");
    assert!(!status.is_server_error(), "{status} {text}");
}
