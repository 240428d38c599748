//! The agent-side command check, one case per refusal reason.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use ring::rand::SystemRandom;
use ward_protocol::*;

const NOW: u64 = 1_800_000_000_000;

struct Setup {
    key: SigningKey,
    other_key: SigningKey,
    device: DeviceId,
    policy: CommandPolicy,
}

fn setup() -> Setup {
    let rng = SystemRandom::new();
    Setup {
        key: SigningKey::generate(&rng).unwrap().0,
        other_key: SigningKey::generate(&rng).unwrap().0,
        device: DeviceId(Id128::from_u128(7)),
        policy: CommandPolicy::default(),
    }
}

fn command(s: &Setup) -> Command {
    Command {
        id: CommandId(Id128::from_u128(1)),
        device_id: s.device,
        seq: 5,
        issued_at_ms: NOW - 1_000,
        expires_at_ms: NOW + 60_000,
        action: Action::Isolate { allow: vec![] },
        approval: Approval {
            requested_by: "alice".into(),
            approved_by: vec!["bob".into()],
            reason: "test".into(),
        },
    }
}

fn check(s: &Setup, signed: &Signed, last_seq: u64) -> Result<Command, Refusal> {
    authorize(signed, &[s.key.public_key()], s.device, last_seq, NOW, &s.policy)
}

#[test]
fn a_valid_command_is_authorized() {
    let s = setup();
    let c = command(&s);
    let signed = s.key.sign_value(SignatureKind::Command, &c).unwrap();
    assert_eq!(check(&s, &signed, 4), Ok(c));
}

#[test]
fn every_refusal_has_its_reason() {
    let mut s = setup();
    let sign = |s: &Setup, c: &Command| s.key.sign_value(SignatureKind::Command, c).unwrap();

    let unpinned = s.other_key.sign_value(SignatureKind::Command, &command(&s)).unwrap();
    assert_eq!(check(&s, &unpinned, 0), Err(Refusal::UnknownKey));

    let mut altered = sign(&s, &command(&s));
    let last = altered.payload.len() - 1;
    altered.payload[last] ^= 1;
    assert_eq!(check(&s, &altered, 0), Err(Refusal::BadSignature));

    let as_alert = s.key.sign_value(SignatureKind::Alert, &command(&s)).unwrap();
    assert_eq!(check(&s, &as_alert, 0), Err(Refusal::BadSignature));

    let garbage = s.key.sign(SignatureKind::Command, vec![0xff; 3]);
    assert_eq!(check(&s, &garbage, 0), Err(Refusal::Malformed));

    let mut other_device = command(&s);
    other_device.device_id = DeviceId(Id128::from_u128(8));
    assert!(matches!(
        check(&s, &sign(&s, &other_device), 0),
        Err(Refusal::WrongDevice(_))
    ));

    let mut expired = command(&s);
    expired.expires_at_ms = NOW - s.policy.clock_skew_ms - 1;
    assert!(matches!(
        check(&s, &sign(&s, &expired), 0),
        Err(Refusal::Expired { .. })
    ));

    let mut within_skew = command(&s);
    within_skew.expires_at_ms = NOW - s.policy.clock_skew_ms;
    assert!(check(&s, &sign(&s, &within_skew), 0).is_ok());

    let mut future = command(&s);
    future.issued_at_ms = NOW + s.policy.clock_skew_ms + 1;
    assert!(matches!(
        check(&s, &sign(&s, &future), 0),
        Err(Refusal::NotYetValid { .. })
    ));

    let c = sign(&s, &command(&s));
    assert_eq!(check(&s, &c, 5), Err(Refusal::Replayed { seq: 5, last_seq: 5 }));
    assert_eq!(check(&s, &c, 9), Err(Refusal::Replayed { seq: 5, last_seq: 9 }));

    let mut self_approved = command(&s);
    self_approved.approval.approved_by = vec!["alice".into()];
    assert_eq!(
        check(&s, &sign(&s, &self_approved), 0),
        Err(Refusal::InsufficientApprovals {
            kind: ActionKind::Isolate,
            needed: 1,
            got: 0
        })
    );

    s.policy.min_approvals.insert(ActionKind::Isolate, 2);
    let mut twice = command(&s);
    twice.approval.approved_by = vec!["bob".into(), "bob".into()];
    assert_eq!(
        check(&s, &sign(&s, &twice), 0),
        Err(Refusal::InsufficientApprovals {
            kind: ActionKind::Isolate,
            needed: 2,
            got: 1
        })
    );
    twice.approval.approved_by = vec!["bob".into(), "carol".into()];
    assert!(check(&s, &sign(&s, &twice), 0).is_ok());

    s.policy.disabled.push(ActionKind::Isolate);
    assert_eq!(
        check(&s, &sign(&s, &twice), 0),
        Err(Refusal::ActionDisabled(ActionKind::Isolate))
    );
}
