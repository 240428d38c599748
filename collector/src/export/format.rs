//! How a record is written for a receiver: Ward's own JSON, OCSF (Detection
//! Finding for alerts, Incident Finding for incident changes), and Elastic Common
//! Schema documents. Pure: the same record always gives the same bytes.

use serde_json::{Value, json};
use ward_protocol::Severity;

use super::record::{AlertRecord, IncidentRecord, Record};

/// The OCSF schema version the records follow (and are tested against:
/// tests/fixtures/ocsf).
pub const OCSF_VERSION: &str = "1.9.0-dev";

/// Ward's version, as the product in every record.
pub const PRODUCT_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Ward's own schema: the alert as the API shows it, or the incident with its changes.
pub fn ward_json(r: &Record) -> Value {
    match r {
        Record::Alert(a) => json!({
            "schema": "ward.alert/1",
            "id": a.id,
            "alert": a.alert,
            "hostname": a.hostname,
        }),
        Record::Incident(i) => json!({
            "schema": "ward.incident_change/1",
            "id": i.id,
            "incident": i.incident,
            "changes": i.changes,
            "omitted_changes": i.omitted_changes,
        }),
    }
}

fn ocsf_severity(s: Severity) -> (u8, &'static str) {
    match s {
        Severity::Informational => (1, "Informational"),
        Severity::Low => (2, "Low"),
        Severity::Medium => (3, "Medium"),
        Severity::High => (4, "High"),
        Severity::Critical => (5, "Critical"),
    }
}

fn metadata(uid: &str, logged_ms: i64, profiles: &[&str]) -> Value {
    json!({
        "version": OCSF_VERSION,
        "uid": uid,
        "logged_time": logged_ms,
        "profiles": profiles,
        "product": {"name": "Ward", "vendor_name": "Ward", "version": PRODUCT_VERSION},
    })
}

/// ATT&CK ids as OCSF attacks: one per technique (a sub-technique with its
/// parent) and one per tactic.
fn attacks(techniques: &Value, tactics: &Value) -> Vec<Value> {
    let strings = |v: &Value| -> Vec<String> {
        v.as_array()
            .map(|a| a.iter().filter_map(|x| x.as_str().map(str::to_string)).collect())
            .unwrap_or_default()
    };
    let mut out: Vec<Value> = strings(techniques)
        .into_iter()
        .map(|t| match t.split_once('.') {
            Some((parent, _)) => json!({"technique": {"uid": parent}, "sub_technique": {"uid": t}}),
            None => json!({"technique": {"uid": t}}),
        })
        .collect();
    out.extend(strings(tactics).into_iter().map(|t| json!({"tactic": {"uid": t}})));
    out
}

/// An alert as an OCSF Detection Finding (class 2004), activity Create.
fn ocsf_alert(a: &AlertRecord) -> Value {
    let (severity_id, severity) = ocsf_severity(Severity::parse(a.alert.severity).unwrap_or(Severity::Informational));
    let mut v = json!({
        "class_uid": 2004,
        "class_name": "Detection Finding",
        "category_uid": 2,
        "category_name": "Findings",
        "activity_id": 1,
        "activity_name": "Create",
        "type_uid": 200401,
        "type_name": "Detection Finding: Create",
        "severity_id": severity_id,
        "severity": severity,
        "status_id": 1,
        "status": "New",
        "time": a.alert.observed_at_ms,
        "count": a.alert.count,
        "is_alert": true,
        "message": a.alert.rule.title,
        "metadata": metadata(&a.id, a.alert.received_at_ms, &[]),
        "finding_info": {
            "uid": a.alert.id,
            "title": a.alert.rule.title,
            "created_time": a.alert.received_at_ms,
            "first_seen_time": a.alert.observed_at_ms,
            "last_seen_time": a.alert.last_observed_at_ms,
            "analytic": {"uid": a.alert.rule.id, "name": a.alert.rule.title, "type_id": 1, "type": "Rule"},
            "attacks": attacks(&a.alert.rule.techniques, &a.alert.rule.tactics),
        },
        "unmapped": {
            "source": a.alert.source,
            "rule_author": a.alert.rule.author,
            "entities": a.alert.entities,
            "matched": a.alert.matched,
        },
    });
    if let Some(device) = &a.alert.device_id {
        let mut d = json!({"type_id": 0, "type": "Unknown", "uid": device});
        if let Some(h) = &a.hostname {
            d["hostname"] = json!(h);
        }
        v["device"] = d;
    }
    v
}

/// An incident change as an OCSF Incident Finding (class 2005): Create when the
/// incident opened, Close when it is resolved or merged away, Update otherwise.
fn ocsf_incident(i: &IncidentRecord) -> Value {
    let inc = &i.incident;
    let (activity_id, activity) = match inc.status.as_str() {
        "resolved" | "redirected" => (3, "Close"),
        _ if i.opened() => (1, "Create"),
        _ => (2, "Update"),
    };
    let (status_id, status) = match inc.status.as_str() {
        "active" => (1, "New"),
        "in_progress" => (2, "In Progress"),
        "resolved" => (4, "Resolved"),
        _ => (5, "Closed"),
    };
    let (severity_id, severity) = ocsf_severity(Severity::parse(inc.severity).unwrap_or(Severity::Informational));
    let tactics: Vec<Value> = inc
        .tactics
        .iter()
        .map(|t| json!({"tactic": {"uid": t.id, "name": t.name}}))
        .collect();
    let mut v = json!({
        "class_uid": 2005,
        "class_name": "Incident Finding",
        "category_uid": 2,
        "category_name": "Findings",
        "activity_id": activity_id,
        "activity_name": activity,
        "type_uid": 200500 + activity_id,
        "type_name": format!("Incident Finding: {activity}"),
        "severity_id": severity_id,
        "severity": severity,
        "status_id": status_id,
        "status": status,
        "time": i.at_ms(),
        "start_time": inc.first_activity_ms,
        "end_time": inc.last_activity_ms,
        "message": inc.title,
        "desc": inc.title,
        "metadata": metadata(&i.id, inc.updated_at_ms, &[]),
        "finding_info_list": [{
            "uid": inc.id,
            "title": inc.title,
            "created_time": inc.created_at_ms,
            "first_seen_time": inc.first_activity_ms,
            "last_seen_time": inc.last_activity_ms,
            "modified_time": inc.updated_at_ms,
        }],
        "unmapped": {
            "status": inc.status,
            "redirected_to": inc.redirected_to,
            "classification": inc.classification,
            "determination": inc.determination,
            "tags": inc.tags,
            "sources": inc.sources,
            "alert_count": inc.alert_count,
            "device_count": inc.device_count,
            "user_count": inc.user_count,
            "mailbox_count": inc.mailbox_count,
            "changes": i.changes,
            "omitted_changes": i.omitted_changes,
        },
    });
    if !tactics.is_empty() {
        v["attacks"] = Value::Array(tactics);
    }
    // The class needs an assignee or an assignee group: without an analyst on it,
    // the incident is with the (only) group, the unassigned queue.
    match &inc.assignee {
        Some(a) => v["assignee"] = json!({"name": a}),
        None => v["assignee_group"] = json!({"name": "unassigned"}),
    }
    v
}

/// OCSF: Detection Finding for an alert, Incident Finding for an incident change.
pub fn ocsf(r: &Record) -> Value {
    match r {
        Record::Alert(a) => ocsf_alert(a),
        Record::Incident(i) => ocsf_incident(i),
    }
}

fn iso_ms(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|d| d.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_else(|| "1970-01-01T00:00:00.000Z".into())
}

/// ECS risk score for a severity (Elastic Security's 21/47/73/99 bands).
fn risk_score(s: Severity) -> u8 {
    match s {
        Severity::Informational => 1,
        Severity::Low => 21,
        Severity::Medium => 47,
        Severity::High => 73,
        Severity::Critical => 99,
    }
}

/// An Elastic Common Schema document (`event.kind: alert`).
pub fn ecs(r: &Record) -> Value {
    let severity = r.severity();
    match r {
        Record::Alert(a) => {
            let techniques: Vec<&str> = a
                .alert
                .rule
                .techniques
                .as_array()
                .map(|t| t.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            let tactics: Vec<&str> = a
                .alert
                .rule
                .tactics
                .as_array()
                .map(|t| t.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            json!({
                "@timestamp": iso_ms(a.alert.observed_at_ms),
                "ecs": {"version": "8.11.0"},
                "message": a.alert.rule.title,
                "event": {
                    "kind": "alert",
                    "category": ["intrusion_detection"],
                    "type": ["info"],
                    "id": a.alert.id,
                    "created": iso_ms(a.alert.received_at_ms),
                    "start": iso_ms(a.alert.observed_at_ms),
                    "end": iso_ms(a.alert.last_observed_at_ms),
                    "severity": risk_score(severity),
                    "risk_score": risk_score(severity),
                    "module": "ward",
                    "dataset": "ward.alert",
                    "provider": a.alert.source,
                },
                "log": {"level": severity.as_str()},
                "rule": {"id": a.alert.rule.id, "name": a.alert.rule.title, "author": [a.alert.rule.author]},
                "threat": {
                    "framework": "MITRE ATT&CK",
                    "technique": {"id": techniques},
                    "tactic": {"id": tactics},
                },
                "host": {"id": a.alert.device_id, "hostname": a.hostname},
                "observer": {"vendor": "Ward", "product": "Ward", "version": PRODUCT_VERSION, "type": "edr"},
                "ward": {"record_id": a.id, "entities": a.alert.entities, "matched": a.alert.matched, "count": a.alert.count},
            })
        }
        Record::Incident(i) => json!({
            "@timestamp": iso_ms(i.at_ms()),
            "ecs": {"version": "8.11.0"},
            "message": i.incident.title,
            "event": {
                "kind": "alert",
                "category": ["intrusion_detection"],
                "type": [if i.opened() { "creation" } else { "change" }],
                "id": i.incident.id,
                "created": iso_ms(i.incident.created_at_ms),
                "start": iso_ms(i.incident.first_activity_ms),
                "end": iso_ms(i.incident.last_activity_ms),
                "severity": risk_score(severity),
                "risk_score": risk_score(severity),
                "module": "ward",
                "dataset": "ward.incident",
            },
            "log": {"level": severity.as_str()},
            "threat": {"framework": "MITRE ATT&CK", "tactic": {"id": i.incident.tactics.iter().map(|t| &t.id).collect::<Vec<_>>()}},
            "observer": {"vendor": "Ward", "product": "Ward", "version": PRODUCT_VERSION, "type": "edr"},
            "ward": {"record_id": i.id, "incident": i.incident, "changes": i.changes, "omitted_changes": i.omitted_changes},
        }),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::export::record::tests::{alert, incident};
    use crate::export::record::{AlertRecord, Change, IncidentRecord};

    pub fn alert_record() -> Record {
        Record::Alert(AlertRecord {
            id: "alert-01ALERT0001".into(),
            alert: alert(1, "high", "agent"),
            hostname: Some("host-1".into()),
        })
    }

    fn incident_record(status: &str, opened: bool) -> Record {
        let mut inc = incident("01INC", "critical", &["agent"]);
        inc.status = status.into();
        Record::Incident(IncidentRecord {
            id: "incident-01INC-3-0".into(),
            incident: inc,
            changes: vec![Change {
                kind: if opened { "created" } else { "status" }.into(),
                at_ms: 1_700_000_003_000,
                actor: "correlation".into(),
                detail: String::new(),
                alert_id: None,
            }],
            omitted_changes: 0,
        })
    }

    #[test]
    fn ocsf_alert_is_a_detection_finding_with_its_attacks() {
        let v = ocsf(&alert_record());
        assert_eq!(v["class_uid"], 2004);
        assert_eq!(v["type_uid"], 200401);
        assert_eq!(v["severity_id"], 4);
        assert_eq!(v["finding_info"]["uid"], "01ALERT0001");
        assert_eq!(v["finding_info"]["analytic"]["uid"], "rule-1");
        assert_eq!(
            v["finding_info"]["attacks"],
            json!([{"technique": {"uid": "T1059"}, "sub_technique": {"uid": "T1059.004"}}, {"tactic": {"uid": "TA0002"}}])
        );
        assert_eq!(v["device"]["hostname"], "host-1");
        assert_eq!(v["metadata"]["uid"], "alert-01ALERT0001");
    }

    #[test]
    fn ocsf_incident_activity_follows_its_lifecycle() {
        let check = |status: &str, opened: bool, activity: u64, status_id: u64| {
            let v = ocsf(&incident_record(status, opened));
            assert_eq!(v["class_uid"], 2005);
            assert_eq!(v["activity_id"], activity, "{status} {opened}");
            assert_eq!(v["type_uid"], 200500 + activity);
            assert_eq!(v["status_id"], status_id, "{status}");
            assert_eq!(v["severity_id"], 5);
        };
        check("active", true, 1, 1);
        check("in_progress", false, 2, 2);
        check("resolved", false, 3, 4);
        check("redirected", false, 3, 5);
    }

    #[test]
    fn ecs_alert_names_its_kind_rule_and_host() {
        let v = ecs(&alert_record());
        assert_eq!(v["event"]["kind"], "alert");
        assert_eq!(v["@timestamp"], "2023-11-14T22:13:20.001Z");
        assert_eq!(v["rule"]["id"], "rule-1");
        assert_eq!(v["host"]["hostname"], "host-1");
        assert_eq!(v["threat"]["technique"]["id"], json!(["T1059.004"]));
        let i = ecs(&incident_record("active", true));
        assert_eq!(i["event"]["kind"], "alert");
        assert_eq!(i["event"]["type"], json!(["creation"]));
    }
}
