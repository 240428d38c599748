//! The approval state machine of a response action, pure: no clock, no storage.
//!
//! ```text
//!   requested ──approve (enough approvers)──► approved ──dispatch──► dispatched ──ack──► acked
//!       │  └─approve (more needed): stays requested          │                      │
//!       ├──reject──► rejected                                 ├──result──► succeeded | failed | refused
//!       └──expire──► expired ◄──expire── approved             └──expire──► expired ──late result──► (outcome)
//!
//!   requested | approved | dispatched ──cancel──► cancelled ──late result──► (outcome)
//! ```
//!
//! Cancelling is open to the requester and to approvers and above. The workflow
//! allows it up to `dispatched`; whether a dispatched command may still be
//! withdrawn (it must never have reached the device) is decided by
//! [`super::dispatch`], which knows what was pushed.
//!
//! Who may do what comes from the permission table in [`super::policy`], handed
//! in with each event that needs it: analyst and above propose, approver and
//! above approve or reject, as many distinct approvers as the kind needs, and
//! nobody approves or rejects their own request unless the kind allows it. An
//! automation rule may approve its own proposal (`AutoApprove`) only for kinds
//! that need a single approval. A late result for an expired command is still
//! recorded: the device reports what it actually did.

use thiserror::Error;
use ward_protocol::ActionKind;

use super::policy::KindPolicy;
use crate::model::action::{Outcome, Status};
use crate::roles::Role;

/// A person acting through the API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    pub name: String,
    pub role: Role,
}

/// What is known about the action when an event arrives.
#[derive(Debug, Clone, Copy)]
pub struct Facts<'a> {
    pub kind: ActionKind,
    pub requested_by: &'a str,
    /// People who approved so far.
    pub approvals: &'a [String],
}

/// Something that happens to an action; decisions carry the kind's rules.
#[derive(Debug, Clone, Copy)]
pub enum Event<'a> {
    Approve(&'a Actor, &'a KindPolicy),
    Reject(&'a Actor, &'a KindPolicy),
    /// An automation rule approving the proposal it made itself.
    AutoApprove(&'a Actor, &'a KindPolicy),
    Dispatch,
    Ack,
    Result(Outcome),
    Expire,
    Cancel(&'a Actor, &'a KindPolicy),
}

impl Event<'_> {
    pub fn name(&self) -> &'static str {
        match self {
            Event::Approve(..) => "approve",
            Event::Reject(..) => "reject",
            Event::AutoApprove(..) => "auto-approve",
            Event::Dispatch => "dispatch",
            Event::Ack => "ack",
            Event::Result(_) => "result",
            Event::Expire => "expire",
            Event::Cancel(..) => "cancel",
        }
    }
}

/// Actor names automation rules act under (`automation:<rule>`); API user
/// names cannot contain ':', so no person can act under one.
pub const AUTOMATION_PREFIX: &str = "automation:";

/// Why an event is not allowed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum WorkflowError {
    #[error("{action} a {kind} action needs the {needed} role; {actor} is {role}")]
    Forbidden {
        action: &'static str,
        kind: &'static str,
        needed: Role,
        actor: String,
        role: Role,
    },
    #[error("{0} requested this action and may not approve or reject it (four eyes)")]
    OwnRequest(String),
    #[error("{kind} actions need {needed} approvals; automation cannot approve them alone")]
    NeedsPeople { kind: &'static str, needed: u8 },
    #[error("{0} has already approved this action")]
    AlreadyApproved(String),
    #[error("cannot {event} an action that is {status}")]
    WrongState { event: &'static str, status: Status },
}

/// What an accepted event does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    pub to: Status,
    /// The approver to add to the approval record, if any.
    pub add_approver: Option<String>,
}

impl Transition {
    fn to(to: Status) -> Self {
        Transition { to, add_approver: None }
    }
}

/// Why an action cannot be undone.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum UndoRefusal {
    #[error("{0} actions have no undo")]
    NoUndo(&'static str),
    #[error("only a succeeded action can be undone; this one is {0}")]
    NotSucceeded(Status),
    #[error("the quarantine result names no quarantine record id")]
    NoQuarantineId,
}

/// The action that undoes `action`, which ended in `status` with the device's
/// result `detail`: a release for an isolation, a restore (of the record the
/// device returned) for a quarantine. Nothing else has an undo.
pub fn undo(
    action: &ward_protocol::Action,
    status: Status,
    detail: Option<&str>,
) -> Result<ward_protocol::Action, UndoRefusal> {
    use ward_protocol::Action;
    let kind = action.kind();
    if !matches!(kind, ActionKind::Isolate | ActionKind::QuarantineFile) {
        return Err(UndoRefusal::NoUndo(kind.as_str()));
    }
    if status != Status::Succeeded {
        return Err(UndoRefusal::NotSucceeded(status));
    }
    match action {
        Action::Isolate { .. } => Ok(Action::Release),
        _ => {
            // The agent's detail is the JSON of its quarantine record; its id is validated as any proposal's.
            let id = detail
                .and_then(|d| serde_json::from_str::<serde_json::Value>(d).ok())
                .and_then(|v| v.get("id").and_then(|id| id.as_str()).map(str::to_string))
                .ok_or(UndoRefusal::NoQuarantineId)?;
            crate::model::action::ActionSpec::parse(serde_json::json!({"kind": "restore_file", "quarantine_id": id}))
                .map_err(|_| UndoRefusal::NoQuarantineId)
        }
    }
}

/// May `actor` propose an action with rules `p`?
pub fn may_propose(p: &KindPolicy, actor: &Actor) -> Result<(), WorkflowError> {
    if actor.role < p.propose {
        return Err(WorkflowError::Forbidden {
            action: "proposing",
            kind: p.kind.as_str(),
            needed: p.propose,
            actor: actor.name.clone(),
            role: actor.role,
        });
    }
    Ok(())
}

/// Applies `event` to an action in `status`: the next status, or why not.
pub fn apply(status: Status, facts: Facts<'_>, event: Event<'_>) -> Result<Transition, WorkflowError> {
    let wrong = || WorkflowError::WrongState {
        event: event.name(),
        status,
    };
    match event {
        Event::Approve(actor, p) | Event::Reject(actor, p) => {
            let approving = matches!(event, Event::Approve(..));
            if actor.role < p.decide {
                return Err(WorkflowError::Forbidden {
                    action: if approving { "approving" } else { "rejecting" },
                    kind: facts.kind.as_str(),
                    needed: p.decide,
                    actor: actor.name.clone(),
                    role: actor.role,
                });
            }
            if status != Status::Requested {
                return Err(wrong());
            }
            if actor.name == facts.requested_by && !p.requester_may_decide {
                return Err(WorkflowError::OwnRequest(actor.name.clone()));
            }
            if !approving {
                return Ok(Transition::to(Status::Rejected));
            }
            if facts.approvals.contains(&actor.name) {
                return Err(WorkflowError::AlreadyApproved(actor.name.clone()));
            }
            let approvals = facts.approvals.len() + 1;
            Ok(Transition {
                to: if approvals >= usize::from(p.approvals_needed) {
                    Status::Approved
                } else {
                    Status::Requested
                },
                add_approver: Some(actor.name.clone()),
            })
        }
        Event::AutoApprove(actor, p) => {
            if status != Status::Requested {
                return Err(wrong());
            }
            if !actor.name.starts_with(AUTOMATION_PREFIX) || actor.name != facts.requested_by {
                return Err(WorkflowError::Forbidden {
                    action: "auto-approving",
                    kind: facts.kind.as_str(),
                    needed: p.decide,
                    actor: actor.name.clone(),
                    role: actor.role,
                });
            }
            if p.approvals_needed > 1 || !facts.approvals.is_empty() {
                return Err(WorkflowError::NeedsPeople {
                    kind: facts.kind.as_str(),
                    needed: p.approvals_needed,
                });
            }
            Ok(Transition {
                to: Status::Approved,
                add_approver: Some(actor.name.clone()),
            })
        }
        Event::Dispatch => match status {
            Status::Approved => Ok(Transition::to(Status::Dispatched)),
            _ => Err(wrong()),
        },
        Event::Ack => match status {
            Status::Dispatched => Ok(Transition::to(Status::Acked)),
            _ => Err(wrong()),
        },
        Event::Result(outcome) => match status {
            Status::Dispatched | Status::Acked | Status::Expired | Status::Cancelled => {
                Ok(Transition::to(outcome.status()))
            }
            _ => Err(wrong()),
        },
        Event::Expire => match status {
            Status::Requested | Status::Approved | Status::Dispatched => Ok(Transition::to(Status::Expired)),
            _ => Err(wrong()),
        },
        Event::Cancel(actor, p) => {
            if actor.name != facts.requested_by && actor.role < p.decide {
                return Err(WorkflowError::Forbidden {
                    action: "cancelling",
                    kind: facts.kind.as_str(),
                    needed: p.decide,
                    actor: actor.name.clone(),
                    role: actor.role,
                });
            }
            match status {
                Status::Requested | Status::Approved | Status::Dispatched => Ok(Transition::to(Status::Cancelled)),
                _ => Err(wrong()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actions::policy::{MATRIX, Policy};

    /// The default rules of an isolation.
    const RULES: &KindPolicy = &MATRIX[0];

    fn actor(name: &str, role: Role) -> Actor {
        Actor {
            name: name.into(),
            role,
        }
    }

    fn facts<'a>(approvals: &'a [String]) -> Facts<'a> {
        Facts {
            kind: ActionKind::Isolate,
            requested_by: "ann",
            approvals,
        }
    }

    #[test]
    fn transition_table() {
        use Status::*;
        let bob = actor("bob", Role::Approver);
        let ev_approve = Event::Approve(&bob, RULES);
        let ev_reject = Event::Reject(&bob, RULES);
        let ok_events: [Event<'_>; 8] = [
            ev_approve,
            ev_reject,
            Event::Dispatch,
            Event::Ack,
            Event::Result(Outcome::Succeeded),
            Event::Result(Outcome::Refused),
            Event::Expire,
            Event::Cancel(&bob, RULES),
        ];
        // (from, event index, expected to) for every allowed transition; everything else is WrongState.
        let allowed: &[(Status, usize, Status)] = &[
            (Requested, 0, Approved),
            (Requested, 1, Rejected),
            (Requested, 6, Expired),
            (Approved, 2, Dispatched),
            (Approved, 6, Expired),
            (Dispatched, 3, Acked),
            (Dispatched, 4, Succeeded),
            (Dispatched, 5, Refused),
            (Dispatched, 6, Expired),
            (Acked, 4, Succeeded),
            (Acked, 5, Refused),
            (Expired, 4, Succeeded),
            (Expired, 5, Refused),
            (Requested, 7, Cancelled),
            (Approved, 7, Cancelled),
            (Dispatched, 7, Cancelled),
            (Cancelled, 4, Succeeded),
            (Cancelled, 5, Refused),
        ];
        for from in Status::ALL {
            for (i, ev) in ok_events.iter().enumerate() {
                let got = apply(from, facts(&[]), *ev);
                match allowed.iter().find(|(f, e, _)| *f == from && *e == i) {
                    Some((_, _, to)) => assert_eq!(got.map(|t| t.to), Ok(*to), "{from} --{}-->", ev.name()),
                    None => assert_eq!(
                        got,
                        Err(WorkflowError::WrongState {
                            event: ev.name(),
                            status: from
                        }),
                        "{from} --{}--> must be refused",
                        ev.name()
                    ),
                }
            }
        }
        assert_eq!(
            apply(Dispatched, facts(&[]), Event::Result(Outcome::Failed)).map(|t| t.to),
            Ok(Failed)
        );
    }

    #[test]
    fn roles_and_four_eyes() {
        let none: [String; 0] = [];
        let cases: &[(&str, Role, bool, Result<Status, &str>)] = &[
            // (actor, role, approve?, expected)
            ("vera", Role::Viewer, true, Err("forbidden")),
            ("carl", Role::Analyst, true, Err("forbidden")),
            ("carl", Role::Analyst, false, Err("forbidden")),
            ("bob", Role::Approver, true, Ok(Status::Approved)),
            ("bob", Role::Approver, false, Ok(Status::Rejected)),
            ("root", Role::Admin, true, Ok(Status::Approved)),
            ("ann", Role::Approver, true, Err("own")),
            ("ann", Role::Admin, false, Err("own")),
        ];
        for (name, role, approve, want) in cases {
            let a = actor(name, *role);
            let ev = if *approve {
                Event::Approve(&a, RULES)
            } else {
                Event::Reject(&a, RULES)
            };
            let got = apply(Status::Requested, facts(&none), ev);
            match (want, got) {
                (Ok(to), Ok(t)) => assert_eq!(t.to, *to),
                (Err("forbidden"), Err(WorkflowError::Forbidden { .. })) => {}
                (Err("own"), Err(WorkflowError::OwnRequest(_))) => {}
                (want, got) => panic!("{name} as {role}: wanted {want:?}, got {got:?}"),
            }
        }
        // Proposing needs analyst.
        let policy = Policy::default();
        assert!(may_propose(RULES, &actor("vera", Role::Viewer)).is_err());
        for kind in ActionKind::ALL {
            assert_eq!(may_propose(policy.for_kind(kind), &actor("ann", Role::Analyst)), Ok(()));
        }
        // The same approver twice does not count twice.
        let bob = actor("bob", Role::Approver);
        let approvals = ["bob".to_string()];
        assert_eq!(
            apply(Status::Requested, facts(&approvals), Event::Approve(&bob, RULES)),
            Err(WorkflowError::AlreadyApproved("bob".into()))
        );
    }

    #[test]
    fn two_person_rule_and_self_approval_when_configured() {
        let two = KindPolicy {
            approvals_needed: 2,
            ..*RULES
        };
        let bob = actor("bob", Role::Approver);
        let cat = actor("cat", Role::Approver);
        let none: [String; 0] = [];
        let first = apply(Status::Requested, facts(&none), Event::Approve(&bob, &two)).unwrap();
        assert_eq!(
            (first.to, first.add_approver.as_deref()),
            (Status::Requested, Some("bob"))
        );
        let one = ["bob".to_string()];
        assert_eq!(
            apply(Status::Requested, facts(&one), Event::Approve(&bob, &two)),
            Err(WorkflowError::AlreadyApproved("bob".into()))
        );
        let second = apply(Status::Requested, facts(&one), Event::Approve(&cat, &two)).unwrap();
        assert_eq!(second.to, Status::Approved);
        // The requester approving counts only where the kind allows it.
        let ann = actor("ann", Role::Approver);
        assert_eq!(
            apply(Status::Requested, facts(&none), Event::Approve(&ann, RULES)),
            Err(WorkflowError::OwnRequest("ann".into()))
        );
        let own_ok = KindPolicy {
            requester_may_decide: true,
            ..*RULES
        };
        assert_eq!(
            apply(Status::Requested, facts(&none), Event::Approve(&ann, &own_ok)).map(|t| t.to),
            Ok(Status::Approved)
        );
    }

    #[test]
    fn automation_approves_only_its_own_single_approval_proposals() {
        let rule = actor("automation:ransomware", Role::Approver);
        let none: [String; 0] = [];
        let mine = Facts {
            kind: ActionKind::Isolate,
            requested_by: "automation:ransomware",
            approvals: &none,
        };
        assert_eq!(
            apply(Status::Requested, mine, Event::AutoApprove(&rule, RULES)).map(|t| t.to),
            Ok(Status::Approved)
        );
        // Not its own proposal, not an automation name, not pending: refused.
        assert!(matches!(
            apply(Status::Requested, facts(&none), Event::AutoApprove(&rule, RULES)),
            Err(WorkflowError::Forbidden { .. })
        ));
        let bob = actor("bob", Role::Admin);
        let bobs = Facts {
            requested_by: "bob",
            ..mine
        };
        assert!(matches!(
            apply(Status::Requested, bobs, Event::AutoApprove(&bob, RULES)),
            Err(WorkflowError::Forbidden { .. })
        ));
        assert!(matches!(
            apply(Status::Approved, mine, Event::AutoApprove(&rule, RULES)),
            Err(WorkflowError::WrongState { .. })
        ));
        // A two-person kind needs people.
        let two = KindPolicy {
            approvals_needed: 2,
            ..*RULES
        };
        assert_eq!(
            apply(Status::Requested, mine, Event::AutoApprove(&rule, &two)),
            Err(WorkflowError::NeedsPeople {
                kind: "isolate",
                needed: 2
            })
        );
    }

    #[test]
    fn who_may_cancel() {
        let none: [String; 0] = [];
        for (name, role, ok) in [
            ("ann", Role::Analyst, true),
            ("carl", Role::Analyst, false),
            ("vera", Role::Viewer, false),
            ("bob", Role::Approver, true),
            ("root", Role::Admin, true),
        ] {
            let a = actor(name, role);
            let got = apply(Status::Requested, facts(&none), Event::Cancel(&a, RULES));
            match (ok, got) {
                (true, Ok(t)) => assert_eq!(t.to, Status::Cancelled),
                (false, Err(WorkflowError::Forbidden { .. })) => {}
                (ok, got) => panic!("{name} as {role}: wanted {ok}, got {got:?}"),
            }
        }
    }

    #[test]
    fn undo_releases_isolations_and_restores_quarantines() {
        use ward_protocol::Action;
        let isolate = Action::Isolate { allow: vec![] };
        assert_eq!(undo(&isolate, Status::Succeeded, None), Ok(Action::Release));
        assert_eq!(
            undo(&isolate, Status::Dispatched, None),
            Err(UndoRefusal::NotSucceeded(Status::Dispatched))
        );
        let quarantine = Action::QuarantineFile {
            path: "/tmp/x".into(),
            sha256: [1; 32],
        };
        assert_eq!(
            undo(
                &quarantine,
                Status::Succeeded,
                Some(r#"{"id": "ab12", "original_path": "/tmp/x"}"#)
            ),
            Ok(Action::RestoreFile {
                quarantine_id: "ab12".into()
            })
        );
        for bad in [None, Some("moved"), Some(r#"{"id": "../x"}"#), Some(r#"{"id": 5}"#)] {
            assert_eq!(
                undo(&quarantine, Status::Succeeded, bad),
                Err(UndoRefusal::NoQuarantineId)
            );
        }
        for action in [Action::Release, Action::CollectPackage] {
            assert!(matches!(
                undo(&action, Status::Succeeded, None),
                Err(UndoRefusal::NoUndo(_))
            ));
        }
    }

    #[test]
    fn statuses_parse_back() {
        for s in Status::ALL {
            assert_eq!(s.as_str().parse::<Status>(), Ok(s));
        }
        assert!("pending".parse::<Status>().is_err());
    }
}
