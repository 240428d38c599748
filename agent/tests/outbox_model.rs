//! Model test of the outbox: random sequences of append, lease, ack (current and stale
//! batches), release, crash-and-reopen and drop-report hand-off, run against the real
//! SQLite outbox and a plain in-memory model of the specification in
//! `ward_agent::outbox`. Any difference, or a broken invariant, fails the case.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use proptest::prelude::*;
use ward_agent::outbox::{Appended, MAX_ENTRY_BYTES, Outbox, RECORD_OVERHEAD};
use ward_protocol::{AlertId, Id128, KeyId, Severity, Signed};

#[derive(Debug, thiserror::Error)]
#[error("never")]
struct Never;

fn fake(seq: u64, pad: usize) -> (AlertId, Signed) {
    let mut payload = seq.to_le_bytes().to_vec();
    payload.resize(pad.max(8), 0x3c);
    let signed = Signed {
        key_id: KeyId([9; 8]),
        payload,
        signature: vec![2; 64],
    };
    (AlertId(Id128::from_u128(u128::from(seq))), signed)
}

fn size_for(pad: usize) -> u64 {
    (pad.max(8) + 64 + 8 + 16) as u64 + RECORD_OVERHEAD
}

#[derive(Debug, Clone)]
enum Op {
    Append {
        sev: Severity,
        pad: usize,
    },
    /// A group commit: several appends in one transaction, where the `Some(i)`-th
    /// alert's build fails (it takes no seq, the others are stored as usual).
    AppendMany {
        alerts: Vec<(Severity, usize)>,
        failing: Option<usize>,
    },
    Lease {
        max_entries: usize,
        max_bytes: u64,
    },
    /// Ack the i-th outstanding lease (mod their number).
    Ack(usize),
    /// Ack the i-th batch id ever seen (mod their number): often stale.
    AckAny(usize),
    Release,
    Crash,
    TakeDrops,
}

fn severity() -> impl Strategy<Value = Severity> {
    prop::sample::select(Severity::ALL.to_vec())
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (severity(), prop_oneof![9 => 8usize..400, 1 => 1500usize..6000]).prop_map(|(sev, pad)| Op::Append { sev, pad }),
        3 => (prop::collection::vec((severity(), prop_oneof![9 => 8usize..400, 1 => 1500usize..6000]), 1..12), prop::option::of(0usize..12))
            .prop_map(|(alerts, failing)| Op::AppendMany { alerts, failing }),
        3 => (1usize..6, prop_oneof![Just(u64::MAX), 100u64..1500]).prop_map(|(max_entries, max_bytes)| Op::Lease { max_entries, max_bytes }),
        3 => any::<usize>().prop_map(Op::Ack),
        1 => any::<usize>().prop_map(Op::AckAny),
        1 => Just(Op::Release),
        1 => Just(Op::Crash),
        1 => Just(Op::TakeDrops),
    ]
}

#[derive(Debug, Default)]
struct Model {
    max_bytes: u64,
    next_seq: u64,
    /// seq -> (severity, size)
    entries: BTreeMap<u64, (Severity, u64)>,
    /// batch id -> seqs, in the order granted
    leases: Vec<(u64, Vec<u64>)>,
    /// drop records not yet cleared: (seq, reason)
    drops: Vec<(u64, &'static str)>,
    acked: BTreeSet<u64>,
    dropped: BTreeSet<u64>,
}

impl Model {
    fn bytes(&self) -> u64 {
        self.entries.values().map(|&(_, s)| s).sum()
    }

    fn append(&mut self, sev: Severity, size: u64) -> Appended {
        let seq = self.next_seq;
        self.next_seq += 1;
        if size > self.max_bytes.min(MAX_ENTRY_BYTES) {
            self.drops.push((seq, "entry too large"));
            self.dropped.insert(seq);
            return Appended {
                seq,
                stored: false,
                dropped: 1,
            };
        }
        let need = (self.bytes() + size).saturating_sub(self.max_bytes);
        let mut ranked: Vec<(Severity, u64, u64)> = self
            .entries
            .iter()
            .filter(|(_, (s, _))| *s <= sev)
            .map(|(&q, &(s, z))| (s, q, z))
            .collect();
        ranked.sort();
        let mut victims = Vec::new();
        let mut freed = 0;
        for (_, q, z) in ranked {
            if freed >= need {
                break;
            }
            victims.push(q);
            freed += z;
        }
        if freed < need {
            self.drops.push((seq, "outbox full"));
            self.dropped.insert(seq);
            return Appended {
                seq,
                stored: false,
                dropped: 1,
            };
        }
        for &v in &victims {
            // The drop order: each victim ranks below the new entry and below every survivor
            // of no higher severity.
            let (vs, _) = self.entries.remove(&v).unwrap();
            assert!(vs <= sev);
            self.drops.push((v, "outbox full"));
            self.dropped.insert(v);
        }
        self.entries.insert(seq, (sev, size));
        Appended {
            seq,
            stored: true,
            dropped: victims.len() as u64,
        }
    }

    fn lease(&self, max_entries: usize, max_bytes: u64) -> Vec<u64> {
        let leased: BTreeSet<u64> = self.leases.iter().flat_map(|(_, s)| s.iter().copied()).collect();
        let mut out = Vec::new();
        let mut total = 0;
        for (&seq, &(_, size)) in self.entries.iter().filter(|(q, _)| !leased.contains(q)) {
            if out.len() >= max_entries || (!out.is_empty() && total + size > max_bytes) {
                break;
            }
            out.push(seq);
            total += size;
        }
        out
    }

    fn ack(&mut self, batch: u64) -> usize {
        let Some(i) = self.leases.iter().position(|(b, _)| *b == batch) else {
            return 0;
        };
        let (_, seqs) = self.leases.remove(i);
        let mut n = 0;
        for s in seqs {
            if self.entries.remove(&s).is_some() {
                self.acked.insert(s);
                n += 1;
            }
        }
        n
    }

    fn check_partition(&self) {
        // Every seq ever handed out is exactly one of: stored, acked, dropped.
        for seq in 1..self.next_seq {
            let n = usize::from(self.entries.contains_key(&seq))
                + usize::from(self.acked.contains(&seq))
                + usize::from(self.dropped.contains(&seq));
            assert_eq!(n, 1, "seq {seq} is in {n} of stored/acked/dropped");
        }
    }
}

fn check_same(real: &Outbox, model: &Model) {
    assert_eq!(real.depth(), model.entries.len() as u64, "depth");
    assert_eq!(real.bytes(), model.bytes(), "bytes");
    assert!(real.bytes() <= real.max_bytes(), "over the cap");
    assert_eq!(real.next_seq(), model.next_seq, "next seq");
    model.check_partition();
}

fn run(path: &Path, max_bytes: u64, ops: Vec<Op>) {
    let mut real = Some(Outbox::open(path, max_bytes).unwrap());
    let mut model = Model {
        max_bytes,
        next_seq: 1,
        ..Model::default()
    };
    let mut seen_batches: Vec<u64> = Vec::new();
    let mut last_seq = 0;
    for op in ops {
        let ob = real.as_mut().unwrap();
        match op {
            Op::Append { sev, pad } => {
                let got = ob.append_with(sev, |seq| Ok::<_, Never>(fake(seq, pad))).unwrap();
                assert!(got.seq > last_seq, "seq must strictly increase, across crashes too");
                last_seq = got.seq;
                assert_eq!(got, model.append(sev, size_for(pad)));
            }
            Op::AppendMany { alerts, failing } => {
                let sevs: Vec<Severity> = alerts.iter().map(|&(s, _)| s).collect();
                let got = ob
                    .append_many(&sevs, |i, seq| {
                        if Some(i) == failing {
                            Err(Never)
                        } else {
                            Ok(fake(seq, alerts[i].1))
                        }
                    })
                    .unwrap();
                assert_eq!(got.len(), alerts.len());
                for (i, (got, &(sev, pad))) in got.into_iter().zip(&alerts).enumerate() {
                    if Some(i) == failing {
                        assert!(got.is_err(), "the failing build must fail alone");
                        continue;
                    }
                    let got = got.unwrap();
                    assert!(got.seq > last_seq, "seq must strictly increase within a group");
                    last_seq = got.seq;
                    assert_eq!(got, model.append(sev, size_for(pad)), "group append {i}");
                }
            }
            Op::Lease { max_entries, max_bytes } => {
                let want = model.lease(max_entries, max_bytes);
                match ob.lease(max_entries, max_bytes).unwrap() {
                    None => assert!(want.is_empty(), "real leased nothing, model wanted {want:?}"),
                    Some(l) => {
                        assert_eq!(l.seqs, want);
                        for (seq, s) in l.seqs.iter().zip(&l.entries) {
                            assert_eq!(&fake(*seq, s.payload.len()).1, s, "entry {seq} came back different");
                            assert!(!model.acked.contains(seq), "acked entry {seq} came back");
                        }
                        assert!(!seen_batches.contains(&l.batch_id), "batch id reused");
                        seen_batches.push(l.batch_id);
                        model.leases.push((l.batch_id, l.seqs));
                    }
                }
            }
            Op::Ack(i) => {
                if !model.leases.is_empty() {
                    let batch = model.leases[i % model.leases.len()].0;
                    assert_eq!(ob.ack(batch).unwrap(), model.ack(batch));
                }
            }
            Op::AckAny(i) => {
                if !seen_batches.is_empty() {
                    let batch = seen_batches[i % seen_batches.len()];
                    assert_eq!(ob.ack(batch).unwrap(), model.ack(batch));
                }
            }
            Op::Release => {
                ob.release_leases();
                model.leases.clear();
            }
            Op::Crash => {
                // No cleanup: leases are forgotten, committed state must be all there is.
                drop(real.take());
                real = Some(Outbox::open(path, max_bytes).unwrap());
                model.leases.clear();
            }
            Op::TakeDrops => match ob.pending_drops().unwrap() {
                None => assert!(model.drops.is_empty()),
                Some(p) => {
                    let reason = model.drops[0].1;
                    let n = model.drops.iter().take_while(|(_, r)| *r == reason).count();
                    let want: Vec<u64> = model.drops[..n].iter().map(|(s, _)| *s).collect();
                    assert_eq!(p.report.reason, reason);
                    assert_eq!(p.report.seqs, want);
                    assert_eq!(p.report.dropped, n as u64);
                    ob.clear_drops(p.upto).unwrap();
                    model.drops.drain(..n);
                }
            },
        }
        check_same(real.as_ref().unwrap(), &model);
    }

    // Final audit after one more crash: exactly the model's entries are left, and every
    // drop not yet handed off is still reported.
    drop(real);
    let mut ob = Outbox::open(path, max_bytes).unwrap();
    check_same(&ob, &model);
    let mut left = Vec::new();
    while let Some(l) = ob.lease(1000, u64::MAX).unwrap() {
        left.extend(l.seqs);
    }
    assert_eq!(left, model.entries.keys().copied().collect::<Vec<_>>());
    let mut reported = Vec::new();
    while let Some(p) = ob.pending_drops().unwrap() {
        reported.extend(p.report.seqs);
        ob.clear_drops(p.upto).unwrap();
    }
    assert_eq!(reported, model.drops.iter().map(|(s, _)| *s).collect::<Vec<_>>());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn outbox_matches_model(max_bytes in 600u64..4000, ops in prop::collection::vec(op(), 1..80)) {
        let dir = tempfile::tempdir().unwrap();
        run(&dir.path().join("outbox.db"), max_bytes, ops);
    }
}

/// A fixed scenario the random cases might take a while to find: fill with mixed
/// severities, crash with a lease outstanding, and check what survives.
#[test]
fn fill_crash_and_drain() {
    let dir = tempfile::tempdir().unwrap();
    let mut ops = Vec::new();
    for i in 0..40 {
        ops.push(Op::Append {
            sev: Severity::ALL[i % 5],
            pad: 100 + i * 7,
        });
        if i % 9 == 0 {
            ops.push(Op::Lease {
                max_entries: 3,
                max_bytes: u64::MAX,
            });
        }
        if i % 13 == 0 {
            ops.push(Op::Crash);
        }
        if i % 11 == 0 {
            ops.push(Op::Ack(i));
        }
    }
    ops.push(Op::TakeDrops);
    run(&dir.path().join("outbox.db"), 2500, ops);
}
