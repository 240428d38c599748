//! How an incident's severity follows from its alerts.

use ward_protocol::Severity;

/// The incident's severity: the highest of its alerts, one level higher when it
/// spans three or more kill-chain stages or two or more sources (capped at critical).
pub fn incident_severity(max_alert: Severity, tactic_count: usize, source_count: usize) -> Severity {
    let raise = tactic_count >= 3 || source_count >= 2;
    let n = max_alert as usize + usize::from(raise);
    Severity::ALL[n.min(Severity::ALL.len() - 1)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn severity_is_raised_by_breadth() {
        assert_eq!(incident_severity(Severity::Medium, 1, 1), Severity::Medium);
        assert_eq!(incident_severity(Severity::Medium, 3, 1), Severity::High);
        assert_eq!(incident_severity(Severity::High, 1, 2), Severity::Critical);
        assert_eq!(incident_severity(Severity::Critical, 5, 3), Severity::Critical);
    }
}
