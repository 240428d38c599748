//! Frame decoding plus signature verification on arbitrary bytes: must never
//! panic, whatever arrives.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ward_protocol::codec::{MAX_AGENT_FRAME, MAX_COLLECTOR_FRAME};
use ward_protocol::*;

const KEY: PublicKey = PublicKey([0x11; 32]);

fuzz_target!(|data: &[u8]| {
    let mut dec = FrameDecoder::new(MAX_AGENT_FRAME);
    dec.push(data);
    while let Ok(Some(msg)) = dec.next_frame::<AgentMessage>() {
        match msg {
            AgentMessage::Alerts(batch) => {
                for signed in &batch.alerts {
                    let _ = signed.open::<Alert>(SignatureKind::Alert, &KEY);
                }
            }
            AgentMessage::CommandResult(signed) => {
                let _ = signed.open::<CommandResult>(SignatureKind::CommandResult, &KEY);
            }
            AgentMessage::Enroll(env) => {
                let _ = env.request.open::<EnrollRequest>(SignatureKind::Enrollment, &env.signing_key);
            }
            _ => {}
        }
    }
    if let Ok((CollectorMessage::Command(signed), _)) = decode_frame::<CollectorMessage>(data, MAX_COLLECTOR_FRAME) {
        let _ = authorize(&signed, &[KEY], DeviceId::default(), 0, 0, &CommandPolicy::default());
    }
});
