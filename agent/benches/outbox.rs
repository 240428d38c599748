//! Throughput of the outbox with durable commits: appends per second (each one an
//! fsynced WAL commit), group commits of 64 and 512 appends (one fsync each), and a
//! lease + ack cycle of 100 entries. Run with
//! `cargo bench -p ward-agent --bench outbox`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ward_agent::outbox::Outbox;
use ward_protocol::{AlertId, Id128, KeyId, Severity, Signed};

#[derive(Debug)]
struct Never;
impl std::fmt::Display for Never {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("never")
    }
}
impl std::error::Error for Never {}

/// About the size of a typical signed process alert.
fn fake(seq: u64) -> (AlertId, Signed) {
    let mut payload = seq.to_le_bytes().to_vec();
    payload.resize(600, 0x11);
    let signed = Signed {
        key_id: KeyId([5; 8]),
        payload,
        signature: vec![6; 64],
    };
    (AlertId(Id128::from_u128(u128::from(seq))), signed)
}

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let mut ob = Outbox::open(&dir.path().join("outbox.db"), 256 << 20).unwrap();
    let mut g = c.benchmark_group("outbox");
    g.throughput(Throughput::Elements(1));
    g.bench_function("append_durable", |b| {
        b.iter(|| {
            ob.append_with(Severity::Medium, |seq| Ok::<_, Never>(fake(seq)))
                .unwrap()
        })
    });
    // Group commit, as the detection task does during a burst: one transaction (one
    // fsync) for every alert judged since the last commit.
    for group in [64usize, 512] {
        let sevs = vec![Severity::Medium; group];
        g.throughput(Throughput::Elements(group as u64));
        g.bench_function(format!("append_group_{group}_durable"), |b| {
            b.iter(|| ob.append_many(&sevs, |_, seq| Ok::<_, Never>(fake(seq))).unwrap())
        });
        // Keep the file from growing across groups: what a steady collector does.
        ob.release_leases();
        while let Some(l) = ob.lease(10_000, 64 << 20).unwrap() {
            ob.ack(l.batch_id).unwrap();
        }
    }
    g.throughput(Throughput::Elements(100));
    g.bench_function("append_100_lease_ack", |b| {
        b.iter(|| {
            for _ in 0..100 {
                ob.append_with(Severity::Medium, |seq| Ok::<_, Never>(fake(seq)))
                    .unwrap();
            }
            ob.release_leases();
            while let Some(l) = ob.lease(100, 1 << 20).unwrap() {
                ob.ack(l.batch_id).unwrap();
            }
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
