//! The permission table: for every action kind, who may propose it, who may
//! decide on it, how many distinct approvers it needs, whether the requester may
//! decide on their own request, and how long a signed command stays valid.
//!
//! [`MATRIX`] holds the defaults, one entry per kind in [`ActionKind::ALL`]
//! order (a unit test fails until a new kind is added). The collector's
//! `[actions]` config section is laid over it at load ([`Policy::from_config`]);
//! roles are not configurable. Which role may call which API route is the API's
//! route table.

use ward_protocol::ActionKind;

use crate::config::{ActionsConfig, COMMAND_TTL_MS, KindOverride, PENDING_APPROVAL_TTL_MS};
use crate::roles::Role;

const MIN: u64 = 60_000;
const DAY: u64 = 24 * 60 * MIN;
/// Longest configurable validity of a proposal or a command.
pub const MAX_TTL_MS: u64 = 90 * DAY;
/// Most distinct approvers a kind can be configured to need.
pub const MAX_APPROVALS: u8 = 10;

/// The rules for one action kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KindPolicy {
    pub kind: ActionKind,
    /// Least role that may propose.
    pub propose: Role,
    /// Least role that may approve or reject.
    pub decide: Role,
    /// Distinct approvers needed (the requester counts only if
    /// `requester_may_decide`; the agent never counts the requester).
    pub approvals_needed: u8,
    /// Whether the requester may approve or reject their own request.
    pub requester_may_decide: bool,
    /// Validity of the signed command from its issue: how long it waits for an
    /// offline device to reconnect.
    pub command_ttl_ms: u64,
}

const fn rule(kind: ActionKind) -> KindPolicy {
    KindPolicy {
        kind,
        propose: Role::Analyst,
        decide: Role::Approver,
        approvals_needed: 1,
        requester_may_decide: false,
        command_ttl_ms: COMMAND_TTL_MS,
    }
}

/// Every action kind, exactly once, in [`ActionKind::ALL`] order: the defaults.
pub const MATRIX: [KindPolicy; 7] = [
    rule(ActionKind::Isolate),
    rule(ActionKind::Release),
    rule(ActionKind::QuarantineFile),
    rule(ActionKind::RestoreFile),
    rule(ActionKind::DeleteFile),
    rule(ActionKind::KillProcess),
    rule(ActionKind::CollectPackage),
];

/// Where `kind` sits in [`MATRIX`] (and [`ActionKind::ALL`]); exhaustive, so a
/// new kind does not compile until it has a place.
const fn index(kind: ActionKind) -> usize {
    match kind {
        ActionKind::Isolate => 0,
        ActionKind::Release => 1,
        ActionKind::QuarantineFile => 2,
        ActionKind::RestoreFile => 3,
        ActionKind::DeleteFile => 4,
        ActionKind::KillProcess => 5,
        ActionKind::CollectPackage => 6,
    }
}

/// The permission table in force: [`MATRIX`] with the config laid over it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    kinds: [KindPolicy; 7],
    /// How long a proposal waits for a decision.
    pub pending_ttl_ms: u64,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            kinds: MATRIX,
            pending_ttl_ms: PENDING_APPROVAL_TTL_MS,
        }
    }
}

impl Policy {
    /// The rules of `kind`.
    pub fn for_kind(&self, kind: ActionKind) -> &KindPolicy {
        &self.kinds[index(kind)]
    }

    /// Every kind's rules, in [`ActionKind::ALL`] order.
    pub fn kinds(&self) -> &[KindPolicy] {
        &self.kinds
    }

    /// The table for a config: section defaults, then per-kind overrides.
    /// Refuses unknown kinds, zero or too many approvals, and zero or too long
    /// validity, with the setting's name in the message.
    pub fn from_config(c: &ActionsConfig) -> Result<Policy, String> {
        check_ttl("actions.pending_ttl_ms", c.pending_ttl_ms)?;
        let defaults = KindOverride {
            approvals: Some(c.approvals),
            requester_may_approve: Some(c.requester_may_approve),
            command_ttl_ms: Some(c.command_ttl_ms),
        };
        let mut policy = Policy {
            kinds: MATRIX,
            pending_ttl_ms: c.pending_ttl_ms,
        };
        for p in &mut policy.kinds {
            apply_override(p, &defaults, "actions")?;
        }
        for (name, o) in &c.policy {
            let kind = kind_named(name).ok_or_else(|| {
                format!(
                    "actions.policy.{name}: unknown action kind; known: {}",
                    ActionKind::ALL.map(|k| k.as_str()).join(", ")
                )
            })?;
            apply_override(&mut policy.kinds[index(kind)], o, &format!("actions.policy.{name}"))?;
        }
        Ok(policy)
    }
}

/// The kind whose config/API name is `name`.
pub fn kind_named(name: &str) -> Option<ActionKind> {
    ActionKind::ALL.into_iter().find(|k| k.as_str() == name)
}

fn check_ttl(name: &str, ms: u64) -> Result<(), String> {
    if ms == 0 || ms > MAX_TTL_MS {
        return Err(format!("{name} must be 1..={MAX_TTL_MS} (90 days)"));
    }
    Ok(())
}

fn apply_override(p: &mut KindPolicy, o: &KindOverride, at: &str) -> Result<(), String> {
    if let Some(n) = o.approvals {
        if n == 0 || n > MAX_APPROVALS {
            return Err(format!(
                "{at}.approvals must be 1..={MAX_APPROVALS}: every action needs an approval \
                 (automation rules with auto_approve supply it)"
            ));
        }
        p.approvals_needed = n;
    }
    if let Some(b) = o.requester_may_approve {
        p.requester_may_decide = b;
    }
    if let Some(ms) = o.command_ttl_ms {
        check_ttl(&format!("{at}.command_ttl_ms"), ms)?;
        p.command_ttl_ms = ms;
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn every_action_kind_is_in_the_matrix_once_in_order() {
        for kind in ActionKind::ALL {
            let n = MATRIX.iter().filter(|p| p.kind == kind).count();
            assert_eq!(n, 1, "{kind:?} appears {n} times in the permission matrix");
            assert_eq!(MATRIX[index(kind)].kind, kind, "{kind:?} is out of place");
            assert_eq!(Policy::default().for_kind(kind).kind, kind);
        }
        assert_eq!(MATRIX.len(), ActionKind::ALL.len());
    }

    #[test]
    fn the_defaults_are_safe() {
        for p in MATRIX {
            assert!(p.propose >= Role::Analyst, "{:?}: viewers never propose", p.kind);
            assert!(p.decide >= Role::Approver, "{:?}: analysts never decide", p.kind);
            assert!(p.decide >= p.propose, "{:?}", p.kind);
            assert!(p.approvals_needed >= 1, "{:?}: every action needs an approval", p.kind);
            assert!(!p.requester_may_decide, "{:?}: four eyes", p.kind);
            assert_eq!(p.command_ttl_ms, 3 * DAY, "{:?}: commands wait 3 days", p.kind);
        }
        assert_eq!(Policy::default().pending_ttl_ms, 7 * DAY);
        // The config's defaults are the matrix.
        let from_defaults = Policy::from_config(&Config::default().actions).unwrap();
        assert_eq!(from_defaults, Policy::default());
    }

    #[test]
    fn config_overrides_per_kind_and_refuses_nonsense() {
        let c = Config::parse(
            "[actions]\ncommand_ttl_ms = 60000\n\n[actions.policy.isolate]\napprovals = 2\n\
             command_ttl_ms = 120000\n\n[actions.policy.collect_package]\nrequester_may_approve = true\n",
        )
        .unwrap();
        let p = Policy::from_config(&c.actions).unwrap();
        let iso = p.for_kind(ActionKind::Isolate);
        assert_eq!(
            (iso.approvals_needed, iso.requester_may_decide, iso.command_ttl_ms),
            (2, false, 120_000)
        );
        let pkg = p.for_kind(ActionKind::CollectPackage);
        assert_eq!(
            (pkg.approvals_needed, pkg.requester_may_decide, pkg.command_ttl_ms),
            (1, true, 60_000)
        );
        assert_eq!(p.for_kind(ActionKind::Release).command_ttl_ms, 60_000);
        // Roles stay those of the matrix.
        assert_eq!(iso.decide, Role::Approver);

        for (text, needle) in [
            (
                "[actions.policy.isolat]\napprovals = 2",
                "actions.policy.isolat: unknown action kind",
            ),
            (
                "[actions.policy.isolate]\napprovals = 0",
                "actions.policy.isolate.approvals must be 1..=",
            ),
            ("[actions]\napprovals = 0", "actions.approvals must be 1..="),
            ("[actions]\napprovals = 11", "actions.approvals must be 1..="),
            ("[actions]\npending_ttl_ms = 0", "actions.pending_ttl_ms must be"),
            (
                "[actions.policy.release]\ncommand_ttl_ms = 0",
                "actions.policy.release.command_ttl_ms",
            ),
            ("[actions.policy.isolate]\napprove = 2", "unknown field"),
        ] {
            let err = Config::parse(text)
                .and_then(|c| Policy::from_config(&c.actions))
                .unwrap_err();
            assert!(err.contains(needle), "{text:?}: {err}");
        }
    }
}
