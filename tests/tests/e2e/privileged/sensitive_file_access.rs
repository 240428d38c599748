//! A real agent watching the host's sensitive files (fanotify, which needs root in
//! the host's own namespaces): a shell reading `/etc/shadow` with a builtin, no
//! command line naming the file, raises the built-in alert with the shell as the
//! process, and the device record says the access sensor is ready.

use std::time::{Duration, Instant};

use ward_tests::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shell_reading_the_shadow_file_raises_an_alert_naming_it() {
    // fanotify marks need CAP_SYS_ADMIN in the initial user namespace, which no
    // namespace of the test's own gives: this suite needs real root.
    assert!(is_root(), "fanotify needs root: run this suite as root (CI does)");
    let collector = Collector::start().unwrap();
    let agent = Agent::start_with(&collector, |w| {
        Agent::test_config(w).replace(
            "access_enabled = false\n",
            "access_enabled = true\naccess_watch_paths = [\"/etc/shadow\"]\n",
        )
    })
    .unwrap();
    agent.wait_connected(Duration::from_secs(15)).unwrap();
    let dev = agent.device_id.clone();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (_, device) = collector.get(&format!("/api/v1/devices/{dev}")).await.unwrap();
        let ready = device["sensors"].as_array().is_some_and(|s| {
            s.iter()
                .any(|s| s["name"] == "access" && s["readiness"] == "ready" && s["source"] == "fanotify: 1 paths")
        });
        if ready {
            break;
        }
        assert!(Instant::now() < deadline, "access sensor not ready: {device}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let marker = format!("ward-e2e-{}", std::process::id());
    let script = format!("read line < /etc/shadow; : {marker}; sleep 0.5");
    let out = std::process::Command::new("sh").args(["-c", &script]).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let alert = collector
        .wait_alert(&dev, Duration::from_secs(10), |a| {
            a["rule"]["title"] == "Password Hashes Read By An Unexpected Program"
                && a["entities"].as_array().is_some_and(|e| {
                    e.iter()
                        .any(|e| e["cmdline"].as_str().is_some_and(|c| c.contains(&marker)))
                })
        })
        .await
        .unwrap_or_else(|e| panic!("no alert for the shadow read: {e}"));
    let entities = alert["entities"].as_array().unwrap();
    assert!(
        entities
            .iter()
            .any(|e| e["kind"] == "file" && e["path"] == "/etc/shadow"),
        "{alert}"
    );
    assert!(
        entities
            .iter()
            .any(|e| e["kind"] == "process" && e["exe"].as_str().is_some_and(|x| x.ends_with("sh"))),
        "{alert}"
    );
}
