//! `kill -9` test of the outbox: a child process (this test binary, re-executed with
//! an environment variable) appends, leases and acks in a loop and reports on stdout
//! each call that returned `Ok`; the parent SIGKILLs it at a random point, reopens the
//! file and checks that every reported append is there, every reported ack is gone, an
//! ack in flight is all-or-nothing, and seq numbers keep increasing across kills.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{SystemTime, UNIX_EPOCH};

use ward_agent::outbox::Outbox;
use ward_protocol::{AlertId, Id128, KeyId, Severity, Signed};

const CHILD_ENV: &str = "WARD_OUTBOX_KILL_CHILD";
const MAX_BYTES: u64 = 64 << 20;

#[derive(Debug, thiserror::Error)]
#[error("never")]
struct Never;

fn fake(seq: u64) -> (AlertId, Signed) {
    let mut payload = seq.to_le_bytes().to_vec();
    payload.resize(200 + (seq % 50) as usize, 0x77);
    let signed = Signed {
        key_id: KeyId([3; 8]),
        payload,
        signature: vec![4; 64],
    };
    (AlertId(Id128::from_u128(u128::from(seq))), signed)
}

/// The child: runs only when re-executed by the parent, until it is killed.
#[test]
fn kill_child() {
    let Ok(path) = std::env::var(CHILD_ENV) else {
        return;
    };
    let mut ob = Outbox::open(Path::new(&path), MAX_BYTES).unwrap();
    for i in 0u64.. {
        let a = ob
            .append_with(Severity::Medium, |seq| Ok::<_, Never>(fake(seq)))
            .unwrap();
        println!("APPENDED {}", a.seq);
        if i % 7 == 3
            && let Some(l) = ob.lease(5, u64::MAX).unwrap()
        {
            let (lo, hi) = (l.seqs[0], l.seqs[l.seqs.len() - 1]);
            println!("ACKING {lo} {hi}");
            ob.ack(l.batch_id).unwrap();
            println!("ACKED {lo} {hi}");
        }
    }
}

#[derive(Debug, Default)]
struct Seen {
    appended: Vec<u64>,
    acked: Vec<(u64, u64)>,
    in_flight: Option<(u64, u64)>,
}

fn run_child_and_kill(path: &Path, kill_after: usize) -> Seen {
    let exe = std::env::current_exe().unwrap();
    let mut child = Command::new(exe)
        .args(["kill_child", "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, path)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut seen = Seen::default();
    let mut killed = false;
    for line in BufReader::new(stdout).lines() {
        let line = line.unwrap();
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["APPENDED", s] => seen.appended.push(s.parse().unwrap()),
            ["ACKING", lo, hi] => seen.in_flight = Some((lo.parse().unwrap(), hi.parse().unwrap())),
            ["ACKED", lo, hi] => {
                seen.acked.push((lo.parse().unwrap(), hi.parse().unwrap()));
                seen.in_flight = None;
            }
            _ => {}
        }
        if !killed && seen.appended.len() >= kill_after {
            child.kill().unwrap(); // SIGKILL on Unix
            killed = true;
        }
    }
    let status = child.wait().unwrap();
    assert!(
        killed && !status.success(),
        "the child must die by the signal, not finish: {status:?}"
    );
    seen
}

#[test]
fn kill_minus_nine_loses_nothing_that_returned_ok() {
    if std::env::var(CHILD_ENV).is_ok() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("outbox.db");
    let mut rnd = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().subsec_nanos() as usize;
    let mut last_max_seq = 0;
    let mut all_acked: BTreeSet<u64> = BTreeSet::new();
    for round in 0..4 {
        rnd = rnd.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let kill_after = 20 + (rnd >> 33) % 150;
        let seen = run_child_and_kill(&path, kill_after);
        assert!(seen.appended.len() >= kill_after);
        assert!(
            seen.appended.first().copied().unwrap() > last_max_seq,
            "round {round}: seq went backwards after a kill"
        );
        assert!(seen.appended.windows(2).all(|w| w[0] < w[1]));

        let mut ob = Outbox::open(&path, MAX_BYTES).unwrap();
        let mut present = Vec::new();
        while let Some(l) = ob.lease(1000, u64::MAX).unwrap() {
            for (seq, s) in l.seqs.iter().zip(&l.entries) {
                assert_eq!(&fake(*seq).1, s, "entry {seq} is damaged");
            }
            present.extend(l.seqs);
        }
        ob.release_leases();
        let present: BTreeSet<u64> = present.into_iter().collect();
        assert_eq!(ob.depth(), present.len() as u64);

        for &(lo, hi) in &seen.acked {
            all_acked.extend(lo..=hi);
        }
        for seq in &all_acked {
            assert!(!present.contains(seq), "round {round}: acked seq {seq} came back");
        }
        let in_flight: BTreeSet<u64> = seen.in_flight.map(|(lo, hi)| (lo..=hi).collect()).unwrap_or_default();
        for seq in &seen.appended {
            assert!(
                present.contains(seq) || all_acked.contains(seq) || in_flight.contains(seq),
                "round {round}: seq {seq} returned Ok from append but is gone"
            );
        }
        // An ack cut short by the kill is all or nothing.
        let kept = in_flight.iter().filter(|s| present.contains(s)).count();
        assert!(
            kept == 0 || kept == in_flight.len(),
            "round {round}: half an ack survived"
        );
        if kept == 0 {
            all_acked.extend(&in_flight);
        }
        // At most the one append in flight at the kill may be present without being reported.
        let max_reported = seen.appended.last().copied().unwrap();
        let unreported: Vec<u64> = present.iter().copied().filter(|s| *s > max_reported).collect();
        assert!(
            unreported.len() <= 1,
            "round {round}: unexpected entries {unreported:?}"
        );
        assert!(ob.next_seq() > max_reported);
        assert!(
            ob.pending_drops().unwrap().is_none(),
            "nothing may be dropped below the cap"
        );
        last_max_seq = ob.next_seq() - 1;
    }
}
