//! The analyst console: static HTML, CSS and JavaScript compiled into the binary
//! and served with their content types and a strict Content-Security-Policy (no
//! inline script or style, same-origin requests only). The console holds no
//! secrets and no logic the API does not check again: it signs in with an API
//! token kept in the browser tab and reads the same API as everyone else.
//!
//! State that should survive a reload (the view, the queue's filters, the incident
//! tab) is in the URL hash. Views poll (queue and incident every 3 s, action centre
//! 2 s) and redraw only when the answer changed, so typing is never interrupted.
//! Every value put into HTML goes through `esc()`; the CSP forbids inline code, so a
//! missed escape cannot run script. The story graph is laid out deterministically
//! (alerts in time order, repeats of a rule on one entity grouped into a counted
//! node, entities in a lane per kind), drawn as one SVG string, zoomed and panned
//! through one transform.
//! An incident page never loads a whole incident's alerts: totals and evidence come
//! from SQL aggregates (`store/incident_view`), alerts a page at a time, the process
//! tree when its tab opens.

use super::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::error::ApiError;

/// What the browser may load: only this origin's scripts, styles and API; no
/// inline code, no plugins, no framing.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
     connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

const INDEX: &str = include_str!("../console/index.html");

/// The assets under `/console/`, with their content types.
const ASSETS: [(&str, &str, &str); 9] = [
    ("app.css", "text/css; charset=utf-8", include_str!("../console/app.css")),
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_str!("../console/app.js"),
    ),
    (
        "util.js",
        "text/javascript; charset=utf-8",
        include_str!("../console/util.js"),
    ),
    (
        "views.js",
        "text/javascript; charset=utf-8",
        include_str!("../console/views.js"),
    ),
    (
        "incident.js",
        "text/javascript; charset=utf-8",
        include_str!("../console/incident.js"),
    ),
    (
        "alert.js",
        "text/javascript; charset=utf-8",
        include_str!("../console/alert.js"),
    ),
    (
        "graph.js",
        "text/javascript; charset=utf-8",
        include_str!("../console/graph.js"),
    ),
    (
        "hunt.js",
        "text/javascript; charset=utf-8",
        include_str!("../console/hunt.js"),
    ),
    (
        "entity.js",
        "text/javascript; charset=utf-8",
        include_str!("../console/entity.js"),
    ),
];

fn respond(content_type: &'static str, body: &'static str) -> Response {
    let mut resp = (StatusCode::OK, body).into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}

/// `GET /`: the console's page.
pub async fn index() -> Response {
    respond("text/html; charset=utf-8", INDEX)
}

/// `GET /console/{file}`: one of the console's scripts or its style sheet.
pub async fn asset(Path(file): Path<String>) -> Response {
    match ASSETS.iter().find(|(name, _, _)| *name == file) {
        Some((_, content_type, body)) => respond(content_type, body),
        None => ApiError::not_found("console file").into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_has_no_inline_code_and_every_asset_it_names_is_served() {
        assert!(!INDEX.contains("<style"), "inline style is blocked by the CSP");
        assert!(
            !INDEX.contains("style="),
            "inline style attributes are blocked by the CSP"
        );
        for (i, _) in INDEX.match_indices("<script") {
            let tag = &INDEX[i..INDEX[i..].find('>').map_or(INDEX.len(), |e| i + e)];
            assert!(tag.contains("src=\"/console/"), "inline script: {tag}");
        }
        for attr in [" onclick=", " onload=", " onsubmit=", "javascript:"] {
            assert!(!INDEX.contains(attr), "inline handler {attr}");
        }
        for (name, _, body) in ASSETS {
            assert!(!body.is_empty(), "{name} is empty");
        }
        // Every module a script imports is one of the served assets.
        for (name, _, body) in ASSETS.iter().filter(|(n, _, _)| n.ends_with(".js")) {
            for (i, _) in body.match_indices("from \"./") {
                let file = body[i + 8..].split('"').next().unwrap_or("");
                assert!(
                    ASSETS.iter().any(|(n, _, _)| *n == file),
                    "{name} imports {file:?}, which is not served"
                );
            }
        }
        for linked in ["/console/app.css", "/console/app.js"] {
            assert!(INDEX.contains(linked), "index.html does not load {linked}");
        }
    }
}
