//! Incident vocabulary shared by the engine, the store and the API: statuses,
//! classifications, the MITRE ATT&CK tactics in kill-chain order, stored severities,
//! and how a merge combines two incidents' triage (the engine and the store both merge).

use ward_protocol::Severity;

/// The 14 MITRE ATT&CK Enterprise tactics in kill-chain order, hard-coded: the list
/// changes rarely (v8 added the first two in 2020) and the order is what
/// "tactics in kill-chain order" and "several kill-chain stages" mean here.
pub const TACTICS: [(&str, &str); 14] = [
    ("TA0043", "Reconnaissance"),
    ("TA0042", "Resource Development"),
    ("TA0001", "Initial Access"),
    ("TA0002", "Execution"),
    ("TA0003", "Persistence"),
    ("TA0004", "Privilege Escalation"),
    ("TA0005", "Defense Evasion"),
    ("TA0006", "Credential Access"),
    ("TA0007", "Discovery"),
    ("TA0008", "Lateral Movement"),
    ("TA0009", "Collection"),
    ("TA0011", "Command and Control"),
    ("TA0010", "Exfiltration"),
    ("TA0040", "Impact"),
];

/// Position of a tactic id in the kill chain; unknown ids are `None`.
pub fn tactic_rank(id: &str) -> Option<usize> {
    TACTICS.iter().position(|(t, _)| t.eq_ignore_ascii_case(id))
}

/// The tactic's name, for known ids.
pub fn tactic_name(id: &str) -> Option<&'static str> {
    tactic_rank(id).map(|i| TACTICS[i].1)
}

/// Known tactic ids among `ids`, deduplicated, in kill-chain order.
pub fn kill_chain_order<'a>(ids: impl IntoIterator<Item = &'a str>) -> Vec<&'static str> {
    let mut ranks: Vec<usize> = ids.into_iter().filter_map(tactic_rank).collect();
    ranks.sort_unstable();
    ranks.dedup();
    ranks.into_iter().map(|i| TACTICS[i].0).collect()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Status {
    Active,
    InProgress,
    Resolved,
    /// Merged into another incident; `redirected_to` names it.
    Redirected,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Active => "active",
            Status::InProgress => "in_progress",
            Status::Resolved => "resolved",
            Status::Redirected => "redirected",
        }
    }
    pub fn parse(s: &str) -> Option<Status> {
        [Status::Active, Status::InProgress, Status::Resolved, Status::Redirected]
            .into_iter()
            .find(|x| x.as_str() == s)
    }
    /// Open incidents take new alerts.
    pub fn is_open(self) -> bool {
        matches!(self, Status::Active | Status::InProgress)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Classification {
    TruePositive,
    InformationalExpectedActivity,
    FalsePositive,
}

impl Classification {
    pub fn as_str(self) -> &'static str {
        match self {
            Classification::TruePositive => "true_positive",
            Classification::InformationalExpectedActivity => "informational_expected_activity",
            Classification::FalsePositive => "false_positive",
        }
    }
    pub fn parse(s: &str) -> Option<Classification> {
        [
            Classification::TruePositive,
            Classification::InformationalExpectedActivity,
            Classification::FalsePositive,
        ]
        .into_iter()
        .find(|x| x.as_str() == s)
    }
}

/// A severity from its stored number (unknown numbers read as informational).
pub fn severity_from(n: i64) -> Severity {
    usize::try_from(n)
        .ok()
        .and_then(|i| Severity::ALL.get(i).copied())
        .unwrap_or(Severity::Informational)
}

/// A merge's survivor keeps its own triage and takes from the incident it absorbs
/// what it lacks (below); the engine (in memory) and the store (on disk) both merge so.
/// Takes `absorbed`'s value into `survivor` when the survivor has none; says whether it did.
pub fn take_missing<T: Clone>(survivor: &mut Option<T>, absorbed: Option<&T>) -> bool {
    match (survivor.is_none(), absorbed) {
        (true, Some(value)) => {
            *survivor = Some(value.clone());
            true
        }
        _ => false,
    }
}

/// The survivor's status after absorbing an incident of status `absorbed`.
pub fn merged_status(survivor: Status, absorbed: Status) -> Status {
    if survivor == Status::Active && absorbed == Status::InProgress {
        Status::InProgress
    } else {
        survivor
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tactics_sort_in_kill_chain_order() {
        assert_eq!(TACTICS.len(), 14);
        assert_eq!(
            kill_chain_order(["TA0011", "TA0001", "TA9999", "TA0002", "TA0001"]),
            vec!["TA0001", "TA0002", "TA0011"]
        );
        assert_eq!(tactic_name("TA0040"), Some("Impact"));
    }

    #[test]
    fn the_survivor_keeps_its_own_and_takes_what_it_lacks() {
        let mut mine = None;
        assert!(take_missing(&mut mine, Some(&"eve")));
        assert_eq!(mine, Some("eve"));
        assert!(!take_missing(&mut mine, Some(&"bob")), "its own assignee stays");
        assert_eq!(mine, Some("eve"));
        assert!(!take_missing(&mut mine, None));
        assert_eq!(merged_status(Status::Active, Status::InProgress), Status::InProgress);
        assert_eq!(merged_status(Status::InProgress, Status::Active), Status::InProgress);
        assert_eq!(merged_status(Status::Active, Status::Resolved), Status::Active);
    }
}
