//! What the HTTP sinks send, apart from the sending: Standard Webhooks signatures,
//! Splunk HTTP Event Collector batches and Elasticsearch `_bulk` bodies. Pure: the
//! sending time is a parameter.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ring::hmac;
use serde_json::json;

/// A webhook signing secret: `whsec_` and the base64 of the key.
#[derive(Clone)]
pub struct WebhookSecret(hmac::Key);

impl std::fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WebhookSecret(..)")
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    #[error("a webhook secret starts with whsec_")]
    Prefix,
    #[error("a webhook secret is whsec_ and base64: {0}")]
    Base64(String),
    #[error("a webhook secret holds 24 to 64 bytes")]
    Length,
}

impl WebhookSecret {
    pub fn parse(s: &str) -> Result<WebhookSecret, SecretError> {
        let b64 = s.strip_prefix("whsec_").ok_or(SecretError::Prefix)?;
        let key = B64.decode(b64).map_err(|e| SecretError::Base64(e.to_string()))?;
        // The scheme's secrets are 24 to 64 bytes.
        if !(24..=64).contains(&key.len()) {
            return Err(SecretError::Length);
        }
        Ok(WebhookSecret(hmac::Key::new(hmac::HMAC_SHA256, &key)))
    }
}

/// The `webhook-signature` header: `v1,<base64 HMAC-SHA256 of "id.timestamp.body">`
/// for each secret, separated by spaces (Standard Webhooks 1.0).
pub fn webhook_signature(secrets: &[WebhookSecret], id: &str, timestamp_s: u64, body: &[u8]) -> String {
    let mut signed = Vec::with_capacity(id.len() + 24 + body.len());
    signed.extend_from_slice(id.as_bytes());
    signed.push(b'.');
    signed.extend_from_slice(timestamp_s.to_string().as_bytes());
    signed.push(b'.');
    signed.extend_from_slice(body);
    secrets
        .iter()
        .map(|s| format!("v1,{}", B64.encode(hmac::sign(&s.0, &signed).as_ref())))
        .collect::<Vec<_>>()
        .join(" ")
}

/// A Splunk HEC batch: event objects one after another (HEC takes them
/// concatenated in one request to `/services/collector/event`).
pub fn hec_batch<'a>(events: impl Iterator<Item = &'a [u8]>) -> Vec<u8> {
    let mut out = Vec::new();
    for e in events {
        out.extend_from_slice(e);
        out.push(b'\n');
    }
    out
}

/// One HEC event around a record: time in seconds, Ward as the source.
pub fn hec_event(time_ms: i64, host: &str, sourcetype: &str, event: &serde_json::Value) -> Vec<u8> {
    json!({
        "time": time_ms as f64 / 1000.0,
        "host": host,
        "source": "ward",
        "sourcetype": sourcetype,
        "event": event,
    })
    .to_string()
    .into_bytes()
}

/// An Elasticsearch `_bulk` body: a `create` action with the record's id (a
/// redelivered record is refused as a conflict, never stored twice) before each
/// document, every line ending in a newline.
pub fn bulk_body<'a>(index: &str, docs: impl Iterator<Item = (&'a str, &'a [u8])>) -> Vec<u8> {
    let mut out = Vec::new();
    for (id, doc) in docs {
        out.extend_from_slice(json!({"create": {"_index": index, "_id": id}}).to_string().as_bytes());
        out.push(b'\n');
        out.extend_from_slice(doc);
        out.push(b'\n');
    }
    out
}

/// What a `_bulk` response says about each item: `Ok` when every item was stored
/// or already there (409, a redelivery), else the first other error.
pub fn bulk_outcome(response: &serde_json::Value) -> Result<(), String> {
    if response["errors"].as_bool() != Some(true) {
        return Ok(());
    }
    let items = response["items"].as_array().map(Vec::as_slice).unwrap_or_default();
    for item in items {
        let Some(op) = item.as_object().and_then(|o| o.values().next()) else {
            continue;
        };
        let status = op["status"].as_u64().unwrap_or(0);
        if !(200..300).contains(&status) && status != 409 {
            return Err(format!("item {}: status {status}: {}", op["_id"], op["error"]));
        }
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn signature_matches_the_standard_webhooks_example() {
        // The example in the Standard Webhooks specification (spec/standard-webhooks.md).
        let secret = WebhookSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let body = br#"{"test": 2432232314}"#;
        assert_eq!(
            webhook_signature(&[secret], "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn each_secret_signs() {
        let a = WebhookSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let b = WebhookSecret::parse(&format!("whsec_{}", B64.encode([7u8; 32]))).unwrap();
        let sig = webhook_signature(&[a, b], "id", 1, b"{}");
        assert_eq!(sig.split(' ').count(), 2);
        assert!(sig.split(' ').all(|s| s.starts_with("v1,")));
    }

    #[test]
    fn bad_secrets_are_refused() {
        assert_eq!(
            WebhookSecret::parse("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap_err(),
            SecretError::Prefix
        );
        assert!(matches!(WebhookSecret::parse("whsec_!!"), Err(SecretError::Base64(_))));
        assert_eq!(WebhookSecret::parse("whsec_AAAA").unwrap_err(), SecretError::Length);
    }

    #[test]
    fn bulk_body_is_ndjson_with_create_actions() {
        let body = bulk_body(
            "ward-alerts",
            [("a-1", &b"{\"x\":1}"[..]), ("a-2", &b"{\"x\":2}"[..])].into_iter(),
        );
        assert_eq!(
            String::from_utf8(body).unwrap(),
            "{\"create\":{\"_id\":\"a-1\",\"_index\":\"ward-alerts\"}}\n{\"x\":1}\n{\"create\":{\"_id\":\"a-2\",\"_index\":\"ward-alerts\"}}\n{\"x\":2}\n"
        );
    }

    #[test]
    fn bulk_conflicts_are_redeliveries_other_errors_fail() {
        let ok = json!({"errors": true, "items": [{"create": {"_id": "a", "status": 409}}, {"create": {"_id": "b", "status": 201}}]});
        assert!(bulk_outcome(&ok).is_ok());
        let bad = json!({"errors": true, "items": [{"create": {"_id": "a", "status": 400, "error": {"type": "mapper_parsing_exception"}}}]});
        assert!(bulk_outcome(&bad).unwrap_err().contains("400"));
        assert!(bulk_outcome(&json!({"errors": false, "items": []})).is_ok());
    }

    #[test]
    fn hec_event_time_is_seconds_with_milliseconds() {
        let e: serde_json::Value =
            serde_json::from_slice(&hec_event(1_700_000_000_001, "c", "ward:alert", &json!({"a": 1}))).unwrap();
        assert_eq!(e["time"].as_f64(), Some(1_700_000_000.001));
        assert_eq!(e["sourcetype"], "ward:alert");
    }
}
