//! The API's extractors: axum's, with every rejection answered as the API's JSON
//! error (axum's own are plain text), and the body limit set and reported in one place.

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::body::HttpBody as _;
use axum::extract::{ConnectInfo, DefaultBodyLimit, FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::MethodRouter;
use serde::de::DeserializeOwned;
use tracing::{error, warn};

use super::auth::Caller;
use super::error::ApiError;

/// The client's address, when the server was started with connect info (tests
/// calling the router without a socket have none).
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub SocketAddr);

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, tokio::net::TcpListener>> for Peer {
    fn connect_info(stream: axum::serve::IncomingStream<'_, tokio::net::TcpListener>) -> Self {
        Peer(*stream.remote_addr())
    }
}

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, crate::transport::https::TlsListener>>
    for Peer
{
    fn connect_info(stream: axum::serve::IncomingStream<'_, crate::transport::https::TlsListener>) -> Self {
        Peer(*stream.remote_addr())
    }
}

fn peer(extensions: &axum::http::Extensions) -> Option<SocketAddr> {
    extensions.get::<ConnectInfo<Peer>>().map(|c| c.0.0)
}

/// The body limit of routes without one of their own.
pub const DEFAULT_BODY_LIMIT: usize = 1 << 20;

/// How long a refused body is read on (and discarded) so a client still sending
/// it gets the 413: hyper closes a connection whose body was left unread, and
/// the client then sees a reset instead of the answer.
const DRAIN_TIME: Duration = Duration::from_secs(5);

/// The largest body the routes of a router accept, as [`limit_body`] set it.
#[derive(Debug, Clone, Copy)]
struct BodyLimit(usize);

/// Caps request bodies on `router`'s routes at `max` bytes. An inner router's
/// limit wins over an outer one's (both layers run outer first). [`Body`] reads
/// the limit; axum's own body extractors get the same one.
pub fn limit_body<S: Clone + Send + Sync + 'static>(router: Router<S>, max: usize) -> Router<S> {
    router
        .layer(DefaultBodyLimit::max(max))
        .layer(axum::Extension(BodyLimit(max)))
}

/// Caps request bodies of one route at `max` bytes; wins over the router's limit.
pub fn limit_route_body<S: Clone + Send + Sync + 'static>(route: MethodRouter<S>, max: usize) -> MethodRouter<S> {
    route
        .layer::<_, std::convert::Infallible>(DefaultBodyLimit::max(max))
        .layer::<_, std::convert::Infallible>(axum::Extension(BodyLimit(max)))
}

/// A body refused for its size: who sent it where, for the log and the counters.
#[derive(Debug)]
pub struct TooLarge {
    pub route: String,
    pub limit: usize,
    /// The Content-Length the client declared, if it did (chunked bodies do not).
    pub declared: Option<u64>,
    pub peer: Option<SocketAddr>,
    pub user: Option<String>,
}

/// Why a body could not be read.
#[derive(Debug)]
pub enum BodyRejection {
    TooLarge(TooLarge),
    Other(ApiError),
}

impl From<BodyRejection> for ApiError {
    fn from(r: BodyRejection) -> Self {
        match r {
            BodyRejection::TooLarge(t) => ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("request body is larger than the {} bytes this route accepts", t.limit),
            ),
            BodyRejection::Other(e) => e,
        }
    }
}

impl IntoResponse for BodyRejection {
    fn into_response(self) -> Response {
        ApiError::from(self).into_response()
    }
}

/// The request body, at most the route's limit. A declared Content-Length over
/// the limit is refused before anything is kept, a chunked body once it passes
/// it; either way up to the limit again is read and discarded (for at most
/// [`DRAIN_TIME`]) so the client can read the refusal. A refusal for size is
/// logged here, once, for every route.
#[derive(Debug)]
pub struct Body(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for Body {
    type Rejection = BodyRejection;

    async fn from_request(req: Request, _state: &S) -> Result<Self, Self::Rejection> {
        let limit = req.extensions().get::<BodyLimit>().map_or(DEFAULT_BODY_LIMIT, |l| l.0);
        let headers = req.headers();
        let header = |name| headers.get(name).and_then(|v| v.to_str().ok());
        let declared = header(header::CONTENT_LENGTH).and_then(|v| v.parse::<u64>().ok());
        // Reading would have hyper ask for a body the client has not sent yet.
        let waits_for_continue = header(header::EXPECT).is_some_and(|v| v.eq_ignore_ascii_case("100-continue"));
        // Taken now: reading consumes the request.
        let t = TooLarge {
            route: format!("{} {}", req.method(), req.uri().path()),
            limit,
            declared,
            peer: peer(req.extensions()),
            user: req.extensions().get::<Caller>().map(|c| c.name.clone()),
        };
        let refuse = |t: TooLarge| {
            warn!(route = %t.route, limit = t.limit, declared = ?t.declared, peer = ?t.peer, user = ?t.user, "request body refused: too large");
            BodyRejection::TooLarge(t)
        };
        let mut body = req.into_body();
        if let Some(declared) = declared
            && declared > limit as u64
        {
            // Draining is worth it only for a body that ends within its budget (twice the limit).
            if !waits_for_continue && declared - limit as u64 <= limit as u64 {
                drain(body, limit).await;
            }
            return Err(refuse(t));
        }
        // A declared length is exact (hyper refuses a body that differs): no regrowing.
        let mut kept = Vec::with_capacity(declared.map_or(0, |d| d as usize));
        loop {
            match next_data(&mut body).await {
                None => return Ok(Body(Bytes::from(kept))),
                Some(Err(e)) => {
                    return Err(BodyRejection::Other(ApiError::bad_request(format!(
                        "the request body could not be read: {e}"
                    ))));
                }
                Some(Ok(None)) => {}
                Some(Ok(Some(data))) => {
                    if data.len() > limit - kept.len() {
                        drain(body, limit).await;
                        return Err(refuse(t));
                    }
                    kept.extend_from_slice(&data);
                }
            }
        }
    }
}

/// The next frame's data (`Some(None)`: a frame without data, e.g. trailers).
async fn next_data(body: &mut axum::body::Body) -> Option<Result<Option<Bytes>, axum::Error>> {
    std::future::poll_fn(|cx| std::pin::Pin::new(&mut *body).poll_frame(cx))
        .await
        .map(|frame| frame.map(|f| f.into_data().ok()))
}

/// Reads and discards at most `budget` more bytes of a refused body, for at most [`DRAIN_TIME`].
async fn drain(mut body: axum::body::Body, budget: usize) {
    let mut left = budget;
    let _ = tokio::time::timeout(DRAIN_TIME, async {
        while let Some(Ok(data)) = next_data(&mut body).await {
            let n = data.map_or(0, |d| d.len());
            if n > left {
                return;
            }
            left -= n;
        }
    })
    .await;
}

/// The query string, deserialized; a bad one is a 400 in the API's shape.
#[derive(Debug)]
pub struct Query<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Query::from_request_parts(parts, state)
            .await
            .map(|q| Query(q.0))
            .map_err(rejection)
    }
}

/// Path parameters, deserialized; a bad one (e.g. not UTF-8) is a 400 in the API's shape.
#[derive(Debug)]
pub struct Path<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for Path<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Path::from_request_parts(parts, state)
            .await
            .map(|p| Path(p.0))
            .map_err(rejection)
    }
}

/// An axum rejection as the API's error: its status and message for a client's
/// mistake; for a server-side one (a route and handler that disagree), logged
/// and a generic message.
fn rejection<R: IntoResponse + std::fmt::Display>(r: R) -> ApiError {
    let message = r.to_string();
    let status = r.into_response().status();
    if status.is_server_error() {
        error!(error = %message, "request extraction failed");
        ApiError::new(status, "internal error")
    } else {
        ApiError::new(status, message)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use axum::handler::Handler;
    use axum::http::Method;
    use axum::routing::post;

    /// A POST of `len` bytes (`declared`: with a Content-Length header) to a route
    /// limited as `limit_body` does, by an authenticated user.
    async fn post_body(len: usize, declared: bool, limit: usize) -> Response {
        let route: axum::routing::MethodRouter = post(move |body: Result<Body, BodyRejection>| async move {
            match body {
                Ok(Body(b)) => (StatusCode::OK, b.len().to_string()).into_response(),
                Err(BodyRejection::TooLarge(t)) => {
                    assert_eq!(t.limit, limit);
                    assert_eq!(t.declared, declared.then_some(len as u64));
                    assert_eq!(t.user.as_deref(), Some("alice"));
                    assert_eq!(t.route, "POST /api/v1/feeds/identity");
                    BodyRejection::TooLarge(t).into_response()
                }
                Err(e) => e.into_response(),
            }
        })
        .layer::<_, std::convert::Infallible>(DefaultBodyLimit::max(limit))
        .layer::<_, std::convert::Infallible>(axum::Extension(BodyLimit(limit)));
        let mut b = axum::http::Request::builder()
            .method(Method::POST)
            .uri("/api/v1/feeds/identity");
        if declared {
            b = b.header(header::CONTENT_LENGTH, len);
        }
        let mut req = b.body(axum::body::Body::from(vec![b'x'; len])).unwrap();
        req.extensions_mut().insert(Caller {
            name: "alice".into(),
            role: crate::roles::Role::Analyst,
        });
        Handler::call(route, req, ()).await
    }

    async fn json(resp: Response) -> (StatusCode, serde_json::Value) {
        let status = resp.status();
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 16).await.unwrap();
        (status, serde_json::from_slice(&bytes).unwrap_or_default())
    }

    #[tokio::test]
    async fn a_body_over_the_limit_is_a_json_413_with_or_without_a_declared_length() {
        for declared in [true, false] {
            let (status, body) = json(post_body(101, declared, 100).await).await;
            assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "declared {declared}");
            assert_eq!(
                body["error"],
                "request body is larger than the 100 bytes this route accepts"
            );
        }
    }

    #[tokio::test]
    async fn a_body_at_the_limit_is_read() {
        for declared in [true, false] {
            let resp = post_body(100, declared, 100).await;
            assert_eq!(resp.status(), StatusCode::OK);
            let bytes = axum::body::to_bytes(resp.into_body(), 64).await.unwrap();
            assert_eq!(&bytes[..], b"100");
        }
    }

    #[tokio::test]
    async fn a_bad_query_is_a_json_400() {
        #[derive(serde::Deserialize, Debug)]
        struct Q {
            #[allow(dead_code)]
            limit: u32,
        }
        let (mut parts, ()) = axum::http::Request::builder()
            .uri("/api/v1/incidents?limit=abc")
            .body(())
            .unwrap()
            .into_parts();
        let e = Query::<Q>::from_request_parts(&mut parts, &()).await.unwrap_err();
        let (status, body) = json(e.into_response()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        let message = body["error"].as_str().unwrap();
        assert!(message.starts_with("Failed to deserialize query string"), "{message}");
    }

    #[tokio::test]
    async fn a_server_side_extraction_failure_is_a_json_500_without_detail() {
        let (mut parts, ()) = axum::http::Request::builder().uri("/x").body(()).unwrap().into_parts();
        // No route matched, so no path parameters: a handler/route mismatch.
        let e = Path::<String>::from_request_parts(&mut parts, &()).await.unwrap_err();
        let (status, body) = json(e.into_response()).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(body["error"], "internal error");
    }
}
