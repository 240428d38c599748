//! A real agent watching the host's sensitive files (fanotify, which needs root in
//! the host's own namespaces): a shell reading `/etc/shadow` with a builtin, no
//! command line naming the file, raises the built-in alert with the shell as the
//! process, and the device record says the access sensor is ready; a file written
//! into a watched directory names the process that wrote it.

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

/// `cp` drops the EICAR file into a watched directory: the known-bad alert names `cp`
/// (fanotify close-write on the directory's filesystem) as the writing process, with
/// its command line, and Sigma file rules can match the writer's `Image`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_change_names_the_process_that_wrote_it() {
    assert!(
        is_root(),
        "fanotify filesystem marks need root: run this suite as root (CI does)"
    );
    const EICAR: &str = "X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*";
    let collector = Collector::start_with(without_folding).unwrap();
    let rules = tempfile::tempdir().unwrap();
    std::fs::write(
        rules.path().join("writer.yml"),
        "title: File written by cp\nid: 5b0e4d6a-1f7e-4a55-9a53-0c3d2f8e9b11\nstatus: test\nlogsource:\n    product: linux\n    category: file_event\ndetection:\n    selection:\n        Image|endswith: '/cp'\n        TargetFilename|endswith: '.writer-test'\n    condition: selection\nlevel: low\n",
    )
    .unwrap();
    let rules_dir = rules.path().display().to_string();
    let agent = Agent::start_with(&collector, |w| {
        Agent::test_config(w).replace("file_writers_enabled = false\n", "")
            + &format!("\n[detection]\nrules_dir = {rules_dir:?}\n")
    })
    .unwrap();
    agent.wait_connected(Duration::from_secs(15)).unwrap();
    let dev = agent.device_id.clone();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (_, device) = collector.get(&format!("/api/v1/devices/{dev}")).await.unwrap();
        let ready = device["sensors"].as_array().is_some_and(|s| {
            s.iter()
                .any(|s| s["name"] == "file_writers" && s["readiness"] == "ready")
        });
        if ready {
            break;
        }
        assert!(Instant::now() < deadline, "file_writers sensor not ready: {device}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let src = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(src.path(), EICAR).unwrap();
    let dst = agent.watch.join("payload.writer-test");
    let out = std::process::Command::new("cp")
        .arg(src.path())
        .arg(&dst)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");

    let is_cp = |e: &serde_json::Value| e["kind"] == "process" && e["exe"].as_str().is_some_and(|x| x.ends_with("/cp"));
    let known_bad = collector
        .wait_alert(&dev, Duration::from_secs(15), |a| {
            a["rule"]["title"].as_str().is_some_and(|t| t.contains("Known"))
                && a["entities"].to_string().contains("payload.writer-test")
        })
        .await
        .unwrap_or_else(|e| panic!("no known-bad alert for the dropped file: {e}"));
    let entities = known_bad["entities"].as_array().unwrap();
    assert!(entities.iter().any(is_cp), "the writer is not named: {known_bad}");
    assert!(
        entities.iter().any(|e| e["kind"] == "process"
            && e["cmdline"].as_str().is_some_and(|c| c.contains("payload.writer-test"))),
        "{known_bad}"
    );
    collector
        .wait_alert(&dev, Duration::from_secs(10), |a| {
            a["rule"]["title"] == "File written by cp"
        })
        .await
        .unwrap_or_else(|e| panic!("the writer's Image did not reach the Sigma rule: {e}"));
}
