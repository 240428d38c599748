//! A flood folds, end to end with the real agent and collector: a loop that
//! writes 2,000 EICAR test files into one watched folder becomes one alert row
//! whose count is 2,000 (the agent folds repeats per window, the collector folds
//! the agent's alerts into the first one) and exactly one incident.

use std::time::{Duration, Instant};

use ward_tests::*;

const EICAR: &[u8] = br"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*";
/// The built-in rule for known-bad file hashes (detect/rules/builtin/lnx_ward_known_bad_file_hash.yml).
const KNOWN_BAD_FILE: &str = "39a5ce10-6434-5895-9602-83e385b7aa40";
const FILES: i64 = 2_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn floods_fold_into_one_alert_and_one_incident() {
    let collector = Collector::start().unwrap();
    // A one-second agent window, so the flood crosses several of the agent's
    // windows (each sends its first file at once and the rest as one aggregate).
    let agent = Agent::start_with(&collector, |w| {
        format!("{}\n[detection]\naggregate_window_ms = 1000\n", Agent::test_config(w))
    })
    .unwrap();
    agent.wait_connected(Duration::from_secs(15)).unwrap();
    let dev = agent.device_id.clone();

    let started = Instant::now();
    for i in 0..FILES {
        std::fs::write(agent.watch.join(format!("test-{i:05}.txt")), EICAR).unwrap();
        if i % 200 == 199 {
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    eprintln!("{FILES} files written in {:?}", started.elapsed());

    // (rows, sum of counts, folds recorded) for the flood's rule on this device.
    let tally = || -> (i64, i64, i64) {
        collector
            .db()
            .unwrap()
            .query_row(
                "SELECT COUNT(*), COALESCE(SUM(count), 0), COALESCE(SUM(folds), 0) FROM alerts
                 WHERE device_id = ?1 AND rule_id = ?2",
                [&dev, KNOWN_BAD_FILE],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .unwrap()
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while tally().1 < FILES {
        assert!(Instant::now() < deadline, "counts never reached {FILES}: {:?}", tally());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Every window of the agent has closed and been delivered by now.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (rows, count, folds) = tally();
    eprintln!("{rows} alert row(s), count {count}, {folds} agent alerts folded in");
    assert_eq!((rows, count), (1, FILES), "one row standing for every file");
    assert!(folds >= 1, "the agent's aggregates were folded in");

    // Every alert the agent sent is accounted for: no gaps, no duplicates; the flood's
    // repeats are its folds (the agent also sees other processes on the host, which may
    // raise and fold alerts of other rules).
    let db = collector.db().unwrap();
    let (sent, last_seq, gaps, fold_rows): (i64, i64, i64, i64) = db
        .query_row(
            "SELECT (SELECT COUNT(*) FROM alerts WHERE device_id = ?1) + (SELECT COUNT(*) FROM alert_folds),
                    (SELECT last_seq FROM devices WHERE id = ?1),
                    (SELECT COUNT(*) FROM sequence_gaps WHERE device_id = ?1),
                    (SELECT COUNT(*) FROM alert_folds f JOIN alerts a ON a.rowid = f.into_rowid
                      WHERE a.device_id = ?1 AND a.rule_id = ?2)",
            [&dev, KNOWN_BAD_FILE],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .unwrap();
    assert_eq!((sent, gaps, fold_rows), (last_seq, 0, folds));

    // The API shows the fold: count, first and last observed, and the alerts folded in.
    let (_, body) = collector
        .get(&format!("/api/v1/alerts?device={dev}&rule={KNOWN_BAD_FILE}"))
        .await
        .unwrap();
    let alerts = body["alerts"].as_array().unwrap();
    assert_eq!(alerts.len(), 1, "{body}");
    let a = &alerts[0];
    assert_eq!(
        (a["count"].as_i64(), a["folded_alerts"].as_i64()),
        (Some(FILES), Some(folds))
    );
    assert!(a["last_observed_at_ms"].as_i64() > a["observed_at_ms"].as_i64(), "{a}");
    let metrics = collector.metrics().await.unwrap();
    assert_eq!(metric(&metrics, "ward_alerts_folded_total"), folds as u64);

    // Exactly one incident holds the flood.
    let id = a["id"].as_str().unwrap();
    let (incident, _) = collector.incident_of(id).await;
    let incidents: i64 = db
        .query_row(
            "SELECT COUNT(DISTINCT ia.incident) FROM incident_alerts ia JOIN alerts a ON a.rowid = ia.alert_rowid
             WHERE a.device_id = ?1 AND a.rule_id = ?2",
            [&dev, KNOWN_BAD_FILE],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(incidents, 1, "the flood is in {incident} alone");
}
