//! `GET /api/v1/alerts/{id}`: one alert with everything its page shows. The stored
//! alert (as every list shows it), plus its rule's context (the version it was
//! raised by, see `rule_context`), ATT&CK ids with their names, the incident it is
//! in and why, the process ancestry the agent sent, what was folded into it, and its
//! signed record checked again against the device's key.
//!
//! The signed bytes are not returned: they hold command lines and URLs with their
//! credentials, which the API shows redacted everywhere. The decoded alert is shown
//! in the API's redacted form after its signature is checked, bounded in size.

use axum::Json;
use axum::extract::{Extension, State};
use serde_json::{Value, json};
use ward_detect::attack;
use ward_protocol::{Alert, PublicKey, SignatureKind, Signed};

use super::ApiState;
use super::auth::Caller;
use super::error::{ApiError, ApiResult};
use super::extract::Path;
use crate::roles::Role;
use crate::rule_context::{self, MAX_VERSIONS, Resolved};
use crate::store::prelude::*;
use crate::store::{AlertIncidentLink, AlertView, FoldedRecord, SignedAlertRecord, StoreError};
use crate::util::sha256;

/// Folded deliveries listed on the page (the total is given).
const MAX_FOLDED_LISTED: u32 = 50;
/// The decoded alert is left out above this many bytes of JSON.
pub const MAX_RAW_JSON_BYTES: usize = 256 * 1024;

/// `[{"id": "T1059.004", "name": "Unix Shell"}]` for technique ids (name null when
/// the id is not an ATT&CK v19 technique).
fn technique_names(ids: &Value) -> Value {
    let list = ids.as_array().map(Vec::as_slice).unwrap_or_default();
    Value::Array(
        list.iter()
            .filter_map(Value::as_str)
            .map(|id| json!({"id": id, "name": attack::technique(id).map(|t| t.name)}))
            .collect(),
    )
}

fn tactic_names(ids: &Value) -> Value {
    let list = ids.as_array().map(Vec::as_slice).unwrap_or_default();
    Value::Array(
        list.iter()
            .filter_map(Value::as_str)
            .map(|id| json!({"id": id, "name": attack::tactic_name(id)}))
            .collect(),
    )
}

/// Adds `attack: {techniques: [{id, name}], tactics: [{id, name}]}` beside the ids
/// of a rule object (`{"techniques": [...], "tactics": [...]}`).
fn name_rule(rule: &mut Value) {
    let Value::Object(m) = rule else { return };
    let techniques = technique_names(m.get("techniques").unwrap_or(&Value::Null));
    let tactics = tactic_names(m.get("tactics").unwrap_or(&Value::Null));
    m.insert("attack".into(), json!({"techniques": techniques, "tactics": tactics}));
}

/// Names the ATT&CK ids of every alert in a list of alerts (or of incident links
/// `{"alert": {...}}`), so a console shows "T1059.004 Unix Shell", not bare codes.
pub(super) fn name_alerts(list: &mut Value) {
    let Value::Array(items) = list else { return };
    for item in items {
        let alert = match item.get("alert") {
            Some(_) => item.get_mut("alert"),
            None => Some(item),
        };
        if let Some(rule) = alert.and_then(|a| a.get_mut("rule")) {
            name_rule(rule);
        }
    }
}

/// Adds each entity's `role` in the alert (as the incident page names it:
/// `impacted user`, `sender`, `attachment`, `process tree`...).
fn with_roles(list: &mut [Value], source: &str) {
    let all: Vec<Option<ward_protocol::Entity>> = list.iter().map(crate::entity::from_json).collect();
    let known: Vec<ward_protocol::Entity> = all.iter().flatten().cloned().collect();
    for (v, e) in list.iter_mut().zip(&all) {
        if let (Value::Object(m), Some(e)) = (v, e) {
            let role = super::incidents::role(e, source, super::incidents::is_recipient(e, &known));
            m.insert("role".into(), json!(role));
        }
    }
}

/// The process ancestry the alert carries: the lineage the agent read (alerted
/// process, its ancestors parent first, whether the chain reaches its root), or
/// the process and its parent's pid when no lineage came with it.
fn ancestry(entities: &Value) -> Value {
    let list = entities.as_array().map(Vec::as_slice).unwrap_or_default();
    if let Some(l) = list.iter().find(|e| e["kind"] == "lineage") {
        return json!({
            "source": "lineage", "process": l["process"], "ancestors": l["ancestors"], "rooted": l["rooted"],
        });
    }
    match list.iter().find(|e| e["kind"] == "process") {
        Some(p) => json!({
            "source": "process", "process": p, "ancestors": [], "rooted": false,
            "note": "The agent sent no lineage with this alert: only the parent's pid is known.",
        }),
        None => Value::Null,
    }
}

/// The signed record checked again against the device's key, and the alert it
/// holds in the API's redacted form.
fn raw_json(record: Option<SignedAlertRecord>) -> Value {
    let Some(r) = record else {
        return json!({"signature": "missing", "note": "No signed record is stored for this alert."});
    };
    let meta = |check: &str, note: &str| {
        json!({
            "signature": check, "note": note, "payload_bytes": r.payload.len(),
            "payload_sha256": hex::encode(sha256(&r.payload)), "signature_hex": hex::encode(&r.signature),
        })
    };
    let Some(key) = r.device_key.as_deref() else {
        return meta(
            "unsigned",
            "Raised by the collector itself (or imported from a feed): no device signed it.",
        );
    };
    let Ok(key) = PublicKey::from_slice(key) else {
        return meta("no_key", "The device's stored key is not a valid public key.");
    };
    let signed = Signed {
        key_id: key.key_id(),
        payload: r.payload.clone(),
        signature: r.signature.clone(),
    };
    let alert: Alert = match signed.open(SignatureKind::Alert, &key) {
        Ok(a) => a,
        Err(e) => {
            return meta(
                "failed",
                &format!("The signature does not verify against the device's key: {e}."),
            );
        }
    };
    let decoded = json!({
        "id": alert.id.to_string(), "device_id": alert.device_id.to_string(), "seq": alert.seq,
        "observed_at_ms": alert.observed_at_ms, "last_observed_at_ms": alert.last_observed_at_ms,
        "rule": alert.rule, "count": alert.count,
        "entities": alert.entities.iter().map(crate::entity::to_json).collect::<Vec<_>>(),
        "matched": alert.matched.iter()
            .map(|m| json!({"name": m.name, "value": crate::entity::redact_userinfo(&m.value)}))
            .collect::<Vec<_>>(),
    });
    let mut out = meta("verified", "Verified again now against the device's key.");
    let size = decoded.to_string().len();
    if size > MAX_RAW_JSON_BYTES {
        out["decoded"] = Value::Null;
        out["decoded_omitted"] = json!(format!(
            "{size} bytes of JSON, over the {MAX_RAW_JSON_BYTES}-byte limit"
        ));
    } else {
        out["decoded"] = decoded;
    }
    out
}

struct PageRows {
    alert: AlertView,
    versions: Vec<crate::store::RuleContextView>,
    incident: Option<AlertIncidentLink>,
    folded: (Vec<FoldedRecord>, i64),
    signed: Option<SignedAlertRecord>,
    hostname: Option<String>,
}

fn read_page(s: &crate::store::Store, id: &str) -> Result<Option<PageRows>, StoreError> {
    s.read_snapshot(|s| {
        let Some(alert) = s.get_alert(id)? else {
            return Ok(None);
        };
        let hostname = match &alert.device_id {
            Some(d) => s.get_device(d)?.map(|d| d.hostname),
            None => None,
        };
        Ok(Some(PageRows {
            versions: s.rule_contexts_of(&alert.rule.id, MAX_VERSIONS)?,
            incident: s.alert_incident(alert.rowid)?,
            folded: s.folded_records(alert.rowid, MAX_FOLDED_LISTED)?,
            signed: s.signed_alert(id)?,
            hostname,
            alert,
        }))
    })
}

fn page_json(requested: &str, rows: PageRows) -> Value {
    let PageRows {
        alert,
        versions,
        incident,
        folded,
        signed,
        hostname,
    } = rows;
    let resolved: Resolved = rule_context::resolve(versions, &alert.rule.title, alert.severity, alert.received_at_ms);
    let mut rule = json!({
        "match": resolved.how, "versions": resolved.versions, "note": resolved.note, "context": resolved.context,
    });
    if let Some(ctx) = rule.get_mut("context").filter(|c| c.is_object()) {
        name_rule(ctx);
    }
    let (records, records_total) = folded;
    let mut body = serde_json::to_value(&alert).unwrap_or(Value::Null);
    if let Some(r) = body.get_mut("rule") {
        name_rule(r);
    }
    let Value::Object(m) = &mut body else {
        return body;
    };
    if let Some(Value::Array(list)) = m.get_mut("entities") {
        with_roles(list, &alert.source);
    }
    m.insert("requested_id".into(), json!(requested));
    m.insert(
        "folded_into".into(),
        if requested == alert.id {
            Value::Null
        } else {
            json!(alert.id)
        },
    );
    m.insert("device_hostname".into(), json!(hostname));
    m.insert("rule_context".into(), rule);
    m.insert("incidents".into(), json!(incident.into_iter().collect::<Vec<_>>()));
    m.insert("ancestry".into(), ancestry(&alert.entities));
    m.insert(
        "fold".into(),
        json!({
            "count": alert.count, "first_observed_at_ms": alert.observed_at_ms,
            "last_observed_at_ms": alert.last_observed_at_ms, "folded_alerts": alert.folded_alerts,
            "records": records, "records_total": records_total,
        }),
    );
    m.insert("raw".into(), raw_json(signed));
    body
}

/// `GET /api/v1/alerts/{id}`: the alert page (an id folded into another alert
/// answers with that alert, `folded_into` naming it).
pub async fn get(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    caller.require(Role::Viewer)?;
    let id: ward_protocol::AlertId = id
        .parse()
        .map_err(|_| ApiError::bad_request("alert id must be a 26-character id"))?;
    let id = id.to_string();
    let lookup = id.clone();
    let rows = state
        .reads
        .run(move |s| read_page(s, &lookup))
        .await??
        .ok_or_else(|| ApiError::not_found("alert"))?;
    Ok(Json(page_json(&id, rows)))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn attack_ids_get_their_names() {
        let mut list = json!([{"alert": {"rule": {"techniques": ["T1059.004", "T9999"], "tactics": ["TA0002"]}}},
            {"rule": {"techniques": [], "tactics": ["TA0099"]}}]);
        name_alerts(&mut list);
        assert_eq!(
            list[0]["alert"]["rule"]["attack"],
            json!({"techniques": [{"id": "T1059.004", "name": "Unix Shell"}, {"id": "T9999", "name": null}],
                "tactics": [{"id": "TA0002", "name": "Execution"}]})
        );
        assert_eq!(
            list[1]["rule"]["attack"]["tactics"],
            json!([{"id": "TA0099", "name": null}])
        );
        // Anything else is left alone.
        let mut odd = json!([1, {"rule": 3}, {"alert": null}]);
        name_alerts(&mut odd);
        assert_eq!(odd, json!([1, {"rule": 3}, {"alert": null}]));
    }

    #[test]
    fn ancestry_is_what_the_agent_sent() {
        let lineage = json!([{"kind": "device", "hostname": "h"},
            {"kind": "lineage", "process": {"pid": 9}, "ancestors": [{"pid": 8}, {"pid": 1}], "rooted": true}]);
        let a = ancestry(&lineage);
        assert_eq!(
            (a["source"].as_str(), a["ancestors"][1]["pid"].as_i64()),
            (Some("lineage"), Some(1))
        );
        let a = ancestry(&json!([{"kind": "process", "pid": 9, "ppid": 8}]));
        assert_eq!(a["process"]["ppid"], 8);
        assert!(a["note"].is_string());
        assert_eq!(ancestry(&json!([{"kind": "file"}])), Value::Null);
        assert_eq!(ancestry(&json!("junk")), Value::Null);
    }

    #[test]
    fn the_signed_record_is_checked_and_bounded() {
        use ring::rand::SystemRandom;
        use ward_protocol::{AlertId, DeviceId, Entity, Id128, RuleRef, Severity, SigningKey};
        let (key, _) = SigningKey::generate(&SystemRandom::new()).unwrap();
        let alert = |cmdline: String| Alert {
            id: AlertId(Id128::from_u128(1)),
            device_id: DeviceId(Id128::from_u128(2)),
            seq: 1,
            observed_at_ms: 1,
            last_observed_at_ms: 1,
            rule: RuleRef {
                id: "r".into(),
                title: "t".into(),
                author: "a".into(),
                severity: Severity::High,
                techniques: vec![],
                tactics: vec![],
            },
            entities: vec![Entity::Url {
                url: format!("https://user:secret@example.org/{cmdline}"),
            }],
            count: 1,
            matched: vec![],
        };
        let record = |a: &Alert, device_key: Option<Vec<u8>>| {
            let s = key.sign_value(SignatureKind::Alert, a).unwrap();
            SignedAlertRecord {
                payload: s.payload,
                signature: s.signature,
                device_key,
            }
        };
        let public = key.public_key().0.to_vec();
        let ok = raw_json(Some(record(&alert("x".into()), Some(public.clone()))));
        assert_eq!(ok["signature"], "verified");
        assert!(!ok.to_string().contains("secret"), "credentials are redacted: {ok}");
        let mut bad = record(&alert("x".into()), Some(public.clone()));
        bad.payload[3] ^= 1;
        assert_eq!(raw_json(Some(bad))["signature"], "failed");
        let wrong = SigningKey::generate(&SystemRandom::new())
            .unwrap()
            .0
            .public_key()
            .0
            .to_vec();
        assert_eq!(
            raw_json(Some(record(&alert("x".into()), Some(wrong))))["signature"],
            "failed"
        );
        assert_eq!(
            raw_json(Some(record(&alert("x".into()), Some(vec![1, 2]))))["signature"],
            "no_key"
        );
        assert_eq!(
            raw_json(Some(record(&alert("x".into()), None)))["signature"],
            "unsigned"
        );
        assert_eq!(raw_json(None)["signature"], "missing");
        let huge = raw_json(Some(record(&alert("y".repeat(MAX_RAW_JSON_BYTES)), Some(public))));
        assert_eq!(huge["signature"], "verified");
        assert!(huge["decoded"].is_null() && huge["decoded_omitted"].is_string());
    }

    /// A stored alert of a shipped rule and one of a rule the collector never saw,
    /// read as the page reads them.
    #[test]
    fn the_page_joins_the_rule_version_and_checks_the_signature() {
        use ring::rand::SystemRandom;
        use ward_protocol::{AlertId, DeviceId, Entity, Id128, Inventory, RuleRef, Severity, SigningKey};

        use crate::store::{NewDevice, VerifiedAlert};
        let (_dir, mut store) = crate::store::test_support::open();
        let rng = SystemRandom::new();
        let (key, _) = SigningKey::generate(&rng).unwrap();
        store.create_enroll_token(&[1; 32], 1, 1, 1000).unwrap();
        let device = DeviceId::generate(1, &rng).unwrap();
        let new = NewDevice {
            id: device,
            signing_key: key.public_key(),
            cert_sha256: [1; 32],
            inventory: Inventory {
                hostname: "web-1".into(),
                os: String::new(),
                kernel: String::new(),
                addresses: vec![],
                logged_on_users: vec![],
                agent_version: String::new(),
            },
        };
        store.enroll(&[1; 32], &new, 1).unwrap().unwrap();
        crate::rule_context::record_shipped(&store, 5).unwrap();
        let alert = |n: u128, rule: &str, title: &str| {
            let a = Alert {
                id: AlertId(Id128::from_u128(n)),
                device_id: device,
                seq: n as u64,
                observed_at_ms: 10,
                last_observed_at_ms: 10,
                rule: RuleRef {
                    id: rule.into(),
                    title: title.into(),
                    author: "Ward".into(),
                    severity: Severity::Medium,
                    techniques: vec!["T1053.002".into()],
                    tactics: vec!["TA0002".into()],
                },
                entities: vec![Entity::Process {
                    pid: 9,
                    ppid: 8,
                    start_time_ms: 1,
                    exe: "/usr/bin/at".into(),
                    cmdline: "at now".into(),
                    sha256: None,
                }],
                count: 1,
                matched: vec![],
            };
            VerifiedAlert {
                signed: key.sign_value(SignatureKind::Alert, &a).unwrap(),
                alert: a,
            }
        };
        let known = alert(1, "369f7b78-7025-48c6-bd55-07cd0cc75228", "At Job Scheduled");
        let unknown = alert(2, "not-a-known-rule", "Pushed elsewhere");
        store
            .insert_alert_batches(&[(device, &[known.clone(), unknown.clone()][..])], 20)
            .unwrap();
        let page = |a: &VerifiedAlert| {
            let id = a.alert.id.to_string();
            page_json(&id, read_page(&store, &id).unwrap().unwrap())
        };
        let p = page(&known);
        let ctx = &p["rule_context"];
        assert_eq!(ctx["match"], "exact", "{p:#}");
        assert_eq!(ctx["context"]["level"], "medium");
        assert_eq!(ctx["context"]["license"], ward_detect::context::WARD_LICENSE);
        assert!(ctx["context"]["description"].as_str().unwrap().contains("at or batch"));
        assert!(
            ctx["context"]["source_url"]
                .as_str()
                .unwrap()
                .ends_with("lnx_ward_at_job.yml")
        );
        assert_eq!(ctx["context"]["attack"]["techniques"][0]["name"], "At");
        assert_eq!(p["rule"]["attack"]["tactics"][0]["name"], "Execution");
        assert_eq!(p["device_hostname"], "web-1");
        assert_eq!(p["ancestry"]["process"]["ppid"], 8);
        assert_eq!(p["entities"][0]["role"], "process");
        assert_eq!(p["raw"]["signature"], "verified");
        assert_eq!(p["raw"]["decoded"]["rule"]["title"], "At Job Scheduled");
        assert_eq!(p["incidents"], json!([]));
        assert_eq!(p["fold"]["records_total"], 0);
        let p = page(&unknown);
        assert_eq!(p["rule_context"]["match"], "unknown");
        assert!(p["rule_context"]["context"].is_null());
        assert_eq!(
            p["rule"]["title"], "Pushed elsewhere",
            "what the alert carries is still shown"
        );
    }
}
