//! The permission matrix: for every action kind, who may propose it, who may
//! decide on it, how many distinct approvers it needs, whether the requester may
//! decide on their own request, and how long a signed command stays valid.
//! A kind missing from [`MATRIX`] is refused by [`for_kind`], and a unit test
//! fails until it is added. The API routes of the workflow and the role each
//! needs are listed in [`ROUTES`], which the end-to-end role test walks.

use ward_protocol::ActionKind;

use crate::api::auth::Role;

/// Minutes, in milliseconds.
const MIN: u64 = 60_000;
/// How long an isolate or release command may wait for the device.
pub const NETWORK_COMMAND_TTL_MS: u64 = 15 * MIN;
/// How long a file, process or package command may wait for the device.
pub const HOST_COMMAND_TTL_MS: u64 = 5 * MIN;
/// How long a proposal waits for a decision before it expires.
pub const PENDING_APPROVAL_TTL_MS: u64 = 7 * 24 * 60 * MIN;

/// The rules for one action kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KindPolicy {
    pub kind: ActionKind,
    /// Least role that may propose.
    pub propose: Role,
    /// Least role that may approve or reject.
    pub decide: Role,
    /// Distinct approvers (other than the requester) needed.
    pub approvals_needed: u8,
    /// Whether the requester may approve or reject their own request.
    pub requester_may_decide: bool,
    /// Validity of the signed command from its issue.
    pub command_ttl_ms: u64,
}

const fn rule(kind: ActionKind, command_ttl_ms: u64) -> KindPolicy {
    KindPolicy {
        kind,
        propose: Role::Analyst,
        decide: Role::Approver,
        approvals_needed: 1,
        requester_may_decide: false,
        command_ttl_ms,
    }
}

/// Every action kind, exactly once.
pub const MATRIX: [KindPolicy; 7] = [
    rule(ActionKind::Isolate, NETWORK_COMMAND_TTL_MS),
    rule(ActionKind::Release, NETWORK_COMMAND_TTL_MS),
    rule(ActionKind::QuarantineFile, HOST_COMMAND_TTL_MS),
    rule(ActionKind::RestoreFile, HOST_COMMAND_TTL_MS),
    rule(ActionKind::DeleteFile, HOST_COMMAND_TTL_MS),
    rule(ActionKind::KillProcess, HOST_COMMAND_TTL_MS),
    rule(ActionKind::CollectPackage, HOST_COMMAND_TTL_MS),
];

/// The policy of `kind`; `None` (refuse) if the matrix lacks it.
pub fn for_kind(kind: ActionKind) -> Option<&'static KindPolicy> {
    MATRIX.iter().find(|p| p.kind == kind)
}

/// The workflow's API routes and the least role each needs. Decisions also
/// need the caller not to be the requester (see [`KindPolicy::requester_may_decide`]);
/// cancelling needs the caller to be the requester or to hold [`KindPolicy::decide`].
pub const ROUTES: [(&str, &str, Role); 8] = [
    ("POST", "/api/v1/actions", Role::Analyst),
    ("GET", "/api/v1/actions", Role::Viewer),
    ("GET", "/api/v1/actions/{id}", Role::Viewer),
    ("POST", "/api/v1/actions/{id}/approve", Role::Approver),
    ("POST", "/api/v1/actions/{id}/reject", Role::Approver),
    ("POST", "/api/v1/actions/{id}/cancel", Role::Analyst),
    ("POST", "/api/v1/actions/{id}/undo", Role::Analyst),
    ("GET", "/api/v1/actions/{id}/package", Role::Viewer),
];

/// Incident routes and the least role each needs (handlers in `api/incidents`).
pub const INCIDENT_ROUTES: [(&str, &str, Role); 6] = [
    ("GET", "/api/v1/incidents", Role::Viewer),
    ("GET", "/api/v1/incidents/{id}", Role::Viewer),
    ("PATCH", "/api/v1/incidents/{id}", Role::Analyst),
    ("POST", "/api/v1/incidents/{id}/comments", Role::Analyst),
    ("POST", "/api/v1/incidents/{id}/merge", Role::Analyst),
    ("POST", "/api/v1/incidents/{id}/alerts/{alert_id}/move", Role::Analyst),
];

/// Audit routes, admin only.
pub const AUDIT_ROUTES: [(&str, &str, Role); 2] = [
    ("GET", "/api/v1/audit", Role::Admin),
    ("GET", "/api/v1/audit/verify", Role::Admin),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_action_kind_is_in_the_matrix_once() {
        // An exhaustive match: a new Action variant breaks this until it is listed in ALL.
        for kind in ActionKind::ALL {
            match kind {
                ActionKind::Isolate
                | ActionKind::Release
                | ActionKind::QuarantineFile
                | ActionKind::RestoreFile
                | ActionKind::DeleteFile
                | ActionKind::KillProcess
                | ActionKind::CollectPackage => {}
            }
            let n = MATRIX.iter().filter(|p| p.kind == kind).count();
            assert_eq!(n, 1, "{kind:?} appears {n} times in the permission matrix");
        }
        assert_eq!(MATRIX.len(), ActionKind::ALL.len());
    }

    #[test]
    fn the_matrix_is_safe() {
        for p in MATRIX {
            assert!(p.propose >= Role::Analyst, "{:?}: viewers never propose", p.kind);
            assert!(p.decide >= Role::Approver, "{:?}: analysts never decide", p.kind);
            assert!(p.decide >= p.propose, "{:?}", p.kind);
            assert!(p.approvals_needed >= 1, "{:?}: every action needs an approval", p.kind);
            assert!(!p.requester_may_decide, "{:?}: four eyes", p.kind);
            assert!(p.command_ttl_ms > 0 && p.command_ttl_ms <= NETWORK_COMMAND_TTL_MS);
        }
        assert_eq!(for_kind(ActionKind::Isolate).map(|p| p.command_ttl_ms), Some(15 * MIN));
        assert_eq!(
            for_kind(ActionKind::KillProcess).map(|p| p.command_ttl_ms),
            Some(5 * MIN)
        );
    }
}
