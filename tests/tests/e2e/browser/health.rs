//! The export sinks' health in a real headless Chromium (issue 22: "the console
//! shows sink health"): a collector with two webhook sinks, one to a receiver that
//! takes everything and one to a port nothing listens on. After alerts are stored,
//! an admin's Health view lists both: the first idle with every record sent, the
//! second retrying with its records queued, an oldest-unsent age, failed attempts
//! and the connection error; the Health link carries a badge with the number of
//! failing sinks. An analyst has no Health link and the API refuses them.
//! Takes a screenshot (docs/screenshots/health.png with `WARD_UPDATE_SCREENSHOTS=1`).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::time::Duration;

use serde_json::Value;
use ward_protocol::{Entity, Severity};
use ward_tests::browser::{Browser, chromium_path};
use ward_tests::{Collector, now_ms};

use crate::browser::console::{screenshot, sign_in};
use crate::incidents::{feed, import, rule};
use ward_collector::store::AlertSource;

/// Answers every HTTP request on `listener` with 200 (keep-alive), counting them.
fn accept_all(listener: TcpListener) -> std::sync::Arc<std::sync::atomic::AtomicUsize> {
    let seen = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = seen.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { return };
            let counter = counter.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                let mut writer = conn;
                loop {
                    let mut length = 0usize;
                    let mut line = String::new();
                    // Headers up to the blank line.
                    loop {
                        line.clear();
                        if reader.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        if line == "\r\n" {
                            break;
                        }
                        if let Some((k, v)) = line.split_once(':')
                            && k.eq_ignore_ascii_case("content-length")
                        {
                            length = v.trim().parse().unwrap_or(0);
                        }
                    }
                    let mut body = vec![0; length];
                    if reader.read_exact(&mut body).is_err() {
                        return;
                    }
                    counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    if writer
                        .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                        .is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sink_health_shows_a_working_and_a_failing_sink_in_a_real_browser() {
    // Fails (never skips) with the reason when Chromium is missing.
    chromium_path().unwrap();
    let up = TcpListener::bind("127.0.0.1:0").unwrap();
    let up_addr = up.local_addr().unwrap();
    let received = accept_all(up);
    // A port that was free a moment ago: connections to it are refused.
    let down_addr = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let collector = Collector::start_with(move |c| {
        c.push_str(&format!(
            "\n[[export]]\nname = \"soar\"\nkind = \"webhook\"\nurl = \"http://{up_addr}/ward\"\nsecrets = [\"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"]\nrecords = [\"alerts\"]\nretry_initial_ms = 100\nretry_max_ms = 400\n\
             \n[[export]]\nname = \"siem-down\"\nkind = \"webhook\"\nformat = \"ocsf\"\nurl = \"http://{down_addr}/ocsf\"\nrecords = [\"alerts\"]\nsecrets = [\"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"]\nretry_initial_ms = 100\nretry_max_ms = 400\n"
        ));
    })
    .unwrap();
    let admin = collector.user("ada", "admin").unwrap();
    let ann = collector.user("ann", "analyst").unwrap();
    // The spool starts at the newest stored entries: give it a moment to be created.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let t0 = now_ms() - 60_000;
    let alerts: Vec<_> = (0..3)
        .map(|i| {
            feed(
                AlertSource::Identity,
                t0 + i * 1_000,
                rule("spray", "Password spray", Severity::High, "T1110.003", &["TA0006"]),
                vec![Entity::User {
                    name: format!("user{i}@contoso.com"),
                    uid: None,
                }],
            )
        })
        .collect();
    import(&collector, &alerts);

    // The API first: what the console reads.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let sinks = loop {
        let (status, body) = collector.get_as("/api/v1/export/sinks", &admin).await.unwrap();
        assert_eq!(status, 200, "{body}");
        let sinks: Vec<Value> = body["sinks"].as_array().unwrap().clone();
        let by = |n: &str| sinks.iter().find(|s| s["name"] == n).unwrap().clone();
        if by("soar")["sent"].as_u64() >= Some(3) && by("siem-down")["failed"].as_u64() >= Some(2) {
            break sinks;
        }
        assert!(std::time::Instant::now() < deadline, "sinks never settled: {sinks:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(received.load(std::sync::atomic::Ordering::SeqCst) >= 3);
    let down = sinks.iter().find(|s| s["name"] == "siem-down").unwrap();
    assert_eq!(down["state"], "retrying", "{down}");
    assert_eq!(down["queued"], 3, "{down}");
    assert_eq!(
        (down["kind"].as_str(), down["format"].as_str()),
        (Some("webhook"), Some("ocsf"))
    );
    // The cause, not only "error sending request".
    assert!(
        down["last_error"]
            .as_str()
            .is_some_and(|e| e.to_ascii_lowercase().contains("connection refused")),
        "{down}"
    );
    let (status, _) = collector.get_as("/api/v1/export/sinks", &ann).await.unwrap();
    assert_eq!(status, 403, "an analyst reads sink health");

    let base = format!("http://{}", collector.http);
    let mut b = Browser::launch().unwrap();
    sign_in(&mut b, &base, &ann, "ann · analyst");
    assert_eq!(
        b.eval("document.querySelector('#nav [data-nav=health]').hidden")
            .unwrap(),
        Value::Bool(true),
        "an analyst sees the Health link"
    );
    let mut b = Browser::launch().unwrap();
    sign_in(&mut b, &base, &admin, "ada · admin");
    // The Health link says one sink is failing, from any page.
    b.wait_for(
        "the failing-sinks badge",
        "!document.querySelector('#sinks-failing').hidden && document.querySelector('#sinks-failing').innerText === '1'",
        Duration::from_secs(20),
    )
    .unwrap();
    b.eval("document.querySelector('#nav [data-nav=health]').click(); true")
        .unwrap();
    b.wait_for(
        "both sinks, one idle and one retrying",
        "document.querySelector('tr.sink[data-sink=soar]')?.dataset.state === 'idle'
         && document.querySelector('tr.sink[data-sink=soar] .sink-sent')?.innerText === '3'
         && document.querySelector('tr.sink[data-sink=soar] .sink-queued')?.innerText === '0'
         && document.querySelector('tr.sink[data-sink=\"siem-down\"]')?.dataset.state === 'retrying'
         && document.querySelector('tr.sink[data-sink=\"siem-down\"] .sink-queued')?.innerText === '3'
         && document.querySelector('tr.sink[data-sink=\"siem-down\"] .sink-sent')?.innerText === '0'
         && document.querySelector('tr.sink[data-sink=\"siem-down\"] .sink-oldest')?.innerText !== '—'
         && Number(document.querySelector('tr.sink[data-sink=\"siem-down\"] .sink-failed')?.innerText) >= 2
         && document.querySelector('tr.sink[data-sink=\"siem-down\"] .sink-error .error')?.innerText.length > 0",
        Duration::from_secs(20),
    )
    .unwrap();
    let soar_error = b
        .eval("document.querySelector('tr.sink[data-sink=soar] .sink-error').innerText")
        .unwrap();
    assert_eq!(soar_error, "—", "the working sink shows an error");
    // Fits at 1,280 px, keyboard-reachable with a focus ring, AA contrast (the
    // layout suite's checks; its approver cannot open this admins' page).
    crate::browser::layout::check_view(&mut b, "health");
    screenshot(&mut b, "health.png");
}
