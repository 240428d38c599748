//! Every API error is the API's JSON (`{"error": ...}`) against the real collector,
//! also where axum refuses before a handler runs: bodies over the limit (declared or
//! chunked), a path that is not UTF-8, a method the route does not take.

use serde_json::{Value, json};
use ward_tests::Collector;

/// Any incident id: bodies are refused for size before the incident is looked up.
const INCIDENT: &str = "/api/v1/incidents/01HZZZZZZZZZZZZZZZZZZZZZZZ";

fn error_of(body: &Value) -> &str {
    body["error"]
        .as_str()
        .unwrap_or_else(|| panic!("not the API's JSON error: {body}"))
}

#[tokio::test]
async fn refusals_before_the_handler_are_json() {
    let c = Collector::start().unwrap();
    let token = c.admin_token.clone();
    let too_large = json!({"error": "request body is larger than the 1048576 bytes this route accepts"});
    let big = json!({"text": "x".repeat(1 << 20)});

    let (status, body) = c.patch_as(INCIDENT, &token, big.clone()).await.unwrap();
    assert_eq!((status, &body), (413, &too_large));
    let (status, body) = c
        .post_as(&format!("{INCIDENT}/comments"), &token, big.clone())
        .await
        .unwrap();
    assert_eq!((status, &body), (413, &too_large));
    let chunked = big.to_string().into_bytes();
    let (status, body) = c
        .raw_request(
            "POST",
            &format!("{INCIDENT}/comments"),
            &token,
            Some((&chunked, 65_536)),
        )
        .await
        .unwrap();
    assert_eq!((status, &body), (413, &too_large));
    // Within the limit the handler runs, and says what it found.
    let (status, body) = c
        .post_as(&format!("{INCIDENT}/comments"), &token, json!({"text": "hi"}))
        .await
        .unwrap();
    assert_eq!(status, 404, "{body}");
    error_of(&body);

    let (status, body) = c.get("/api/v1/incidents?limit=abc").await.unwrap();
    assert_eq!((status, error_of(&body)), (400, "limit must be an integer"));
    let (status, body) = c.get("/api/v1/alerts?limit=abc").await.unwrap();
    assert_eq!((status, error_of(&body)), (400, "limit must be an integer"));
    let (status, body) = c
        .raw_request("GET", "/api/v1/incidents/%FF", &token, None)
        .await
        .unwrap();
    assert_eq!(status, 400, "{body}");
    assert!(error_of(&body).contains("UTF-8"), "{body}");
    let resp = ward_tests::http_client()
        .delete(format!("http://{}/api/v1/incidents", c.http))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 405);
    assert_eq!(resp.headers()["allow"], "GET,HEAD");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(error_of(&body), "method not allowed on this route");
    let (status, body) = c.get("/api/v1/nothing-here").await.unwrap();
    assert_eq!((status, error_of(&body)), (404, "no such route"));
}
