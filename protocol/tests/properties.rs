//! Property tests: round trips, tamper evidence, domain separation, and hostile
//! frames that must give typed errors and never panic.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use proptest::prelude::*;
use ring::rand::SystemRandom;
use ward_protocol::codec::{MAX_AGENT_FRAME, MAX_COLLECTOR_FRAME};
use ward_protocol::*;

fn key() -> SigningKey {
    // A fresh key per case would spend the test's time in key generation.
    thread_local!(static PKCS8: Vec<u8> = SigningKey::generate(&SystemRandom::new()).unwrap().1);
    PKCS8.with(|p| SigningKey::from_pkcs8(p).unwrap())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn agent_messages_round_trip(msg in agent_message()) {
        let frame = encode_frame(&msg, MAX_AGENT_FRAME).unwrap();
        let (back, used) = decode_frame::<AgentMessage>(&frame, MAX_AGENT_FRAME).unwrap();
        prop_assert_eq!(used, frame.len());
        prop_assert_eq!(back, msg);
    }

    #[test]
    fn collector_messages_round_trip(msg in collector_message()) {
        let frame = encode_frame(&msg, MAX_COLLECTOR_FRAME).unwrap();
        let (back, _) = decode_frame::<CollectorMessage>(&frame, MAX_COLLECTOR_FRAME).unwrap();
        prop_assert_eq!(back, msg);
    }

    #[test]
    fn signed_alerts_commands_and_results_round_trip(a in alert(), c in command(), r in command_result()) {
        let k = key();
        let sa = k.sign_value(SignatureKind::Alert, &a).unwrap();
        prop_assert_eq!(sa.open::<Alert>(SignatureKind::Alert, &k.public_key()).unwrap(), a);
        let sc = k.sign_value(SignatureKind::Command, &c).unwrap();
        prop_assert_eq!(sc.open::<Command>(SignatureKind::Command, &k.public_key()).unwrap(), c);
        let sr = k.sign_value(SignatureKind::CommandResult, &r).unwrap();
        prop_assert_eq!(sr.open::<CommandResult>(SignatureKind::CommandResult, &k.public_key()).unwrap(), r);
    }

    #[test]
    fn flipping_any_byte_breaks_the_signature(a in alert(), pos in any::<prop::sample::Index>(), flip in 1u8..=255) {
        let k = key();
        let signed = k.sign_value(SignatureKind::Alert, &a).unwrap();
        let total = signed.payload.len() + signed.signature.len();
        let i = pos.index(total);
        let mut bad = signed.clone();
        if i < bad.payload.len() {
            bad.payload[i] ^= flip;
        } else {
            bad.signature[i - signed.payload.len()] ^= flip;
        }
        prop_assert_eq!(sign::verify(SignatureKind::Alert, &k.public_key(), &bad), Err(SignatureError::Invalid));
        prop_assert!(bad.open::<Alert>(SignatureKind::Alert, &k.public_key()).is_err());
    }

    #[test]
    fn a_signature_of_one_kind_never_verifies_as_another(payload in proptest::collection::vec(any::<u8>(), 0..256), a in 0usize..SignatureKind::ALL.len(), b in 0usize..SignatureKind::ALL.len()) {
        prop_assume!(a != b);
        let k = key();
        let signed = k.sign(SignatureKind::ALL[a], payload);
        prop_assert_eq!(sign::verify(SignatureKind::ALL[b], &k.public_key(), &signed), Err(SignatureError::Invalid));
    }

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let _ = decode_frame::<AgentMessage>(&bytes, MAX_AGENT_FRAME);
        let _ = decode_frame::<CollectorMessage>(&bytes, MAX_COLLECTOR_FRAME);
        let mut dec = FrameDecoder::new(MAX_AGENT_FRAME);
        dec.push(&bytes);
        let _ = dec.next_frame::<AgentMessage>();
        let signed = Signed { key_id: KeyId::default(), payload: bytes.clone(), signature: bytes };
        let _ = signed.open::<Alert>(SignatureKind::Alert, &key().public_key());
    }

    #[test]
    fn random_bodies_behind_a_valid_header_give_typed_errors(body in proptest::collection::vec(any::<u8>(), 1..2048)) {
        let mut frame = (body.len() as u32).to_be_bytes().to_vec();
        frame.extend_from_slice(&[PROTOCOL_MAJOR, PROTOCOL_MINOR]);
        frame.extend_from_slice(&body);
        match decode_frame::<AgentMessage>(&frame, MAX_AGENT_FRAME) {
            Ok(_) | Err(FrameError::Decode(_)) => {}
            Err(e) => prop_assert!(false, "unexpected error {e:?}"),
        }
    }

    #[test]
    fn truncated_frames_say_so(msg in agent_message(), cut in any::<prop::sample::Index>()) {
        let frame = encode_frame(&msg, MAX_AGENT_FRAME).unwrap();
        let short = &frame[..cut.index(frame.len())];
        let ok = matches!(decode_frame::<AgentMessage>(short, MAX_AGENT_FRAME), Err(FrameError::Truncated { .. }));
        prop_assert!(ok);
        let mut dec = FrameDecoder::new(MAX_AGENT_FRAME);
        dec.push(short);
        prop_assert_eq!(dec.next_frame::<AgentMessage>(), Ok(None));
    }

    #[test]
    fn oversized_frames_are_refused_from_the_header(len in (MAX_AGENT_FRAME + 1)..=u32::MAX) {
        let mut frame = len.to_be_bytes().to_vec();
        frame.extend_from_slice(&[PROTOCOL_MAJOR, PROTOCOL_MINOR, 0, 0]);
        let ok = matches!(decode_frame::<AgentMessage>(&frame, MAX_AGENT_FRAME), Err(FrameError::TooLarge { .. }));
        prop_assert!(ok);
        let mut dec = FrameDecoder::new(MAX_AGENT_FRAME);
        dec.push(&frame);
        let ok = matches!(dec.next_frame::<AgentMessage>(), Err(FrameError::TooLarge { .. }));
        prop_assert!(ok);
    }
}

#[test]
fn encoding_refuses_to_build_an_oversized_frame() {
    let batch = AgentMessage::Alerts(ward_protocol::message::AlertBatch {
        batch_id: 1,
        alerts: vec![Signed {
            key_id: KeyId::default(),
            payload: vec![0; 1 << 20],
            signature: vec![0; 64],
        }],
    });
    assert!(matches!(
        encode_frame(&batch, MAX_AGENT_FRAME),
        Err(FrameError::TooLarge { .. })
    ));
}
