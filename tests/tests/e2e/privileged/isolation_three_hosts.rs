//! Isolation across three hosts, through the real binaries. The test re-executes
//! itself in a user + network + mount namespace of its own (plain `unshare
//! --net --mount` as root), which is the collector host; two more network
//! namespaces joined to it by veth pairs are the agent host and a third host:
//!
//! ```text
//!   collector host 10.78.1.1 ──veth── 10.78.1.2 agent host 10.78.2.2 ──veth── 10.78.2.1 third host
//!   (ward-collector, the test)                 (ward-agent)                    10.78.2.9 (exception)
//! ```
//!
//! Through the collector's API (on the collector host's address) an analyst
//! proposes and an approver approves an isolate with 10.78.2.9 as exception.
//! Then, from the agent host: the third host is unreachable, the exception is
//! reachable, heartbeats still arrive; the isolation survives an agent restart
//! (even with the table deleted while the agent was down); a table deleted
//! behind the running agent comes back; after an approved release, which reaches
//! the isolated agent, everything is reachable again.
//!
//! Where namespaces, veth pairs or nftables are unavailable the test fails with
//! the reason; it never passes without having run.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;
use ward_tests::*;

const LISTENER: &str = "WARD_THREE_HOSTS_LISTENER";
const PROBE: &str = "WARD_THREE_HOSTS_PROBE";

const COLLECTOR_IP: &str = "10.78.1.1";
const AGENT_TO_COLLECTOR_IP: &str = "10.78.1.2";
const AGENT_TO_THIRD_IP: &str = "10.78.2.2";
const THIRD_IP: &str = "10.78.2.1";
const EXCEPTION_IP: &str = "10.78.2.9";
const PORT: u16 = 9000;
const TABLE: &str = "ward_isolation";

/// Runs `program args`, failing the test with its stderr if it fails.
fn run(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `nsenter -t pid -n -- ...`: the command runs in that process's network namespace.
fn in_ns(pid: u32) -> Vec<String> {
    ["nsenter", "-t", &pid.to_string(), "-n", "--"]
        .iter()
        .map(|s| s.to_string())
        .collect()
}

fn run_in(pid: u32, args: &[&str]) -> String {
    let prefix = in_ns(pid);
    let mut all: Vec<&str> = prefix[1..].iter().map(String::as_str).collect();
    all.extend_from_slice(args);
    run("nsenter", &all)
}

#[test]
fn isolation_across_three_hosts() {
    in_own_namespace(&test_path(module_path!(), "isolation_across_three_hosts"), scenario);
}

/// Not a test on its own: the third host's TCP listeners when started by the
/// scenario (addresses in the marker variable); returns at once otherwise.
#[test]
fn third_host_listener() {
    let Some(addrs) = std::env::var_os(LISTENER) else {
        return;
    };
    for addr in addrs.to_string_lossy().split(',') {
        let addr: SocketAddr = addr.parse().unwrap();
        let listener = TcpListener::bind(addr).unwrap_or_else(|e| panic!("bind {addr}: {e}"));
        std::thread::spawn(move || {
            for mut conn in listener.incoming().flatten() {
                let _ = conn.write_all(b"third host\n");
            }
        });
    }
    println!("LISTENING");
    std::io::stdout().flush().unwrap();
    let mut rest = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut rest); // until the scenario closes stdin
    std::process::exit(0);
}

/// Not a test on its own: one TCP connection attempt (short timeout) when
/// started by the scenario in the agent host; returns at once otherwise.
#[test]
fn reachability_probe() {
    let Some(addr) = std::env::var_os(PROBE) else { return };
    let addr: SocketAddr = addr.to_string_lossy().parse().unwrap();
    let verdict = TcpStream::connect_timeout(&addr, Duration::from_millis(700)).and_then(|mut s| {
        s.set_read_timeout(Some(Duration::from_millis(700)))?;
        let mut line = [0u8; 11];
        s.read_exact(&mut line)
    });
    match verdict {
        Ok(()) => println!("PROBE REACHABLE"),
        Err(e) => println!("PROBE UNREACHABLE: {e}"),
    }
}

/// A process holding a network namespace of its own (`unshare --net sleep`);
/// unshare execs in place, so its pid is the namespace's.
struct Host(Child);

impl Host {
    fn new() -> Host {
        let child = Command::new("unshare")
            .args(["--net", "sleep", "600"])
            .spawn()
            .expect("cannot create a network namespace with unshare --net");
        // Wait until sleep runs in the new namespace.
        let mine = std::fs::read_link("/proc/self/ns/net").unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while std::fs::read_link(format!("/proc/{}/ns/net", child.id())).ok().as_ref() == Some(&mine) {
            assert!(Instant::now() < deadline, "unshare --net did not switch namespaces");
            std::thread::sleep(Duration::from_millis(10));
        }
        Host(child)
    }

    fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Listener(Child);

impl Drop for Listener {
    fn drop(&mut self) {
        drop(self.0.stdin.take());
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_listener(third: &Host) -> Listener {
    let exe = std::env::current_exe().unwrap();
    let mut child = Command::new("nsenter")
        .args(["-t", &third.pid().to_string(), "-n", "--"])
        .arg(exe)
        .args([
            "--exact",
            &test_path(module_path!(), "third_host_listener"),
            "--nocapture",
            "--test-threads=1",
        ])
        .env(LISTENER, format!("{THIRD_IP}:{PORT},{EXCEPTION_IP}:{PORT}"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("cannot start the third host's listeners");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    loop {
        match lines.next() {
            Some(Ok(l)) if l.contains("LISTENING") => break,
            Some(Ok(_)) => continue,
            other => panic!("the third host's listeners did not start: {other:?}"),
        }
    }
    std::thread::spawn(move || for _ in lines {});
    Listener(child)
}

/// Can the agent host open a TCP connection to `ip`:[`PORT`]?
fn reachable_from(agent_host: &Host, ip: &str) -> bool {
    let out = Command::new("nsenter")
        .args(["-t", &agent_host.pid().to_string(), "-n", "--"])
        .arg(std::env::current_exe().unwrap())
        .args([
            "--exact",
            &test_path(module_path!(), "reachability_probe"),
            "--nocapture",
            "--test-threads=1",
        ])
        .env(PROBE, format!("{ip}:{PORT}"))
        .output()
        .expect("cannot run the probe in the agent host");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("PROBE "), "the probe did not run: {stdout}");
    stdout.contains("PROBE REACHABLE")
}

fn table_present(agent_host: &Host) -> bool {
    Command::new("nsenter")
        .args([
            "-t",
            &agent_host.pid().to_string(),
            "-n",
            "--",
            "nft",
            "list",
            "table",
            "inet",
            TABLE,
        ])
        .output()
        .expect("nft runs")
        .status
        .success()
}

async fn wait_for(what: &str, within: Duration, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !check().await {
        assert!(Instant::now() < deadline, "{what} did not happen within {within:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Proposes `action` as `analyst`, approves as `approver`, waits for success.
async fn approved(collector: &Collector, analyst: &str, approver: &str, device: &str, action: serde_json::Value) {
    let (status, body) = collector
        .post_as(
            "/api/v1/actions",
            analyst,
            json!({"device_id": device, "action": action, "reason": "three hosts"}),
        )
        .await
        .unwrap();
    assert_eq!(status, 201, "{body}");
    let id = body["id"].as_str().unwrap().to_string();
    let (status, body) = collector
        .post_as(
            &format!("/api/v1/actions/{id}/approve"),
            approver,
            json!({"comment": "go"}),
        )
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    let done = collector
        .wait_action_status(&id, "succeeded", Duration::from_secs(15))
        .await
        .unwrap();
    println!("{}: {}", done["kind"], done["result"]["detail"]);
}

async fn device_view(collector: &Collector, device: &str) -> serde_json::Value {
    collector.get(&format!("/api/v1/devices/{device}")).await.unwrap().1
}

async fn scenario() {
    let t0 = Instant::now();
    run("nft", &["--version"]);
    run("ip", &["link", "set", "lo", "up"]);
    let agent_host = Host::new();
    let third = Host::new();
    let (a, t) = (agent_host.pid().to_string(), third.pid().to_string());
    // Collector host <-> agent host.
    run(
        "ip",
        &["link", "add", "c0", "type", "veth", "peer", "name", "a0", "netns", &a],
    );
    run("ip", &["addr", "add", &format!("{COLLECTOR_IP}/24"), "dev", "c0"]);
    run("ip", &["link", "set", "c0", "up"]);
    run_in(agent_host.pid(), &["ip", "link", "set", "lo", "up"]);
    run_in(
        agent_host.pid(),
        &["ip", "addr", "add", &format!("{AGENT_TO_COLLECTOR_IP}/24"), "dev", "a0"],
    );
    run_in(agent_host.pid(), &["ip", "link", "set", "a0", "up"]);
    // Agent host <-> third host (which also holds the exception address).
    run_in(
        agent_host.pid(),
        &[
            "ip", "link", "add", "a1", "type", "veth", "peer", "name", "t0", "netns", &t,
        ],
    );
    run_in(
        agent_host.pid(),
        &["ip", "addr", "add", &format!("{AGENT_TO_THIRD_IP}/24"), "dev", "a1"],
    );
    run_in(agent_host.pid(), &["ip", "link", "set", "a1", "up"]);
    run_in(third.pid(), &["ip", "link", "set", "lo", "up"]);
    run_in(
        third.pid(),
        &["ip", "addr", "add", &format!("{THIRD_IP}/24"), "dev", "t0"],
    );
    run_in(
        third.pid(),
        &["ip", "addr", "add", &format!("{EXCEPTION_IP}/24"), "dev", "t0"],
    );
    run_in(third.pid(), &["ip", "link", "set", "t0", "up"]);
    let _listener = start_listener(&third);

    // Before: the agent host reaches both addresses of the third host.
    assert!(reachable_from(&agent_host, THIRD_IP), "third host before isolation");
    assert!(reachable_from(&agent_host, EXCEPTION_IP), "exception before isolation");

    let collector = Collector::start_with(|c| {
        *c = c
            .replace(
                "quic_listen = \"127.0.0.1:0\"",
                &format!("quic_listen = \"{COLLECTOR_IP}:0\""),
            )
            .replace(
                "http_listen = \"127.0.0.1:0\"",
                &format!("http_listen = \"{COLLECTOR_IP}:0\""),
            );
    })
    .unwrap();
    assert_eq!(
        collector.http.ip().to_string(),
        COLLECTOR_IP,
        "the API is on the collector host's address"
    );
    let mut agent = Agent::start_wrapped(&collector, Agent::test_config, in_ns(agent_host.pid())).unwrap();
    agent.wait_connected(Duration::from_secs(15)).unwrap();
    let device = agent.device_id.clone();
    let ann = collector.user("ann", "analyst").unwrap();
    let bob = collector.user("bob", "approver").unwrap();
    println!("hosts, collector and agent up after {:?}", t0.elapsed());

    approved(
        &collector,
        &ann,
        &bob,
        &device,
        json!({"kind": "isolate", "allow": [EXCEPTION_IP]}),
    )
    .await;
    assert!(table_present(&agent_host));
    assert!(!reachable_from(&agent_host, THIRD_IP), "the third host must be cut off");
    assert!(
        reachable_from(&agent_host, EXCEPTION_IP),
        "the exception must stay reachable"
    );
    // Heartbeats keep arriving over the isolated link.
    let seen = device_view(&collector, &device).await["last_seen_ms"].as_i64().unwrap();
    wait_for("a heartbeat reporting isolation", Duration::from_secs(10), async || {
        let v = device_view(&collector, &device).await;
        v["isolation"] == "isolated" && v["last_seen_ms"].as_i64().unwrap() > seen
    })
    .await;
    println!("isolated and heartbeating after {:?}", t0.elapsed());

    // The agent restarts; its table was deleted while it was down: it restores it on start.
    agent.kill9();
    run_in(agent_host.pid(), &["nft", "delete", "table", "inet", TABLE]);
    assert!(reachable_from(&agent_host, THIRD_IP), "the table is really gone");
    agent.run().unwrap();
    wait_for(
        "the restarted agent restoring isolation",
        Duration::from_secs(10),
        async || table_present(&agent_host),
    )
    .await;
    agent.wait_connected(Duration::from_secs(15)).unwrap();
    assert!(!reachable_from(&agent_host, THIRD_IP), "isolation survives the restart");
    assert!(reachable_from(&agent_host, EXCEPTION_IP));
    let seen = device_view(&collector, &device).await["last_seen_ms"].as_i64().unwrap();
    wait_for("a heartbeat after the restart", Duration::from_secs(10), async || {
        let v = device_view(&collector, &device).await;
        v["isolation"] == "isolated" && v["last_seen_ms"].as_i64().unwrap() > seen
    })
    .await;

    // Deleted behind the running agent's back: it comes back, with a tamper alert.
    run_in(agent_host.pid(), &["nft", "delete", "table", "inet", TABLE]);
    wait_for("the deleted table coming back", Duration::from_secs(10), async || {
        table_present(&agent_host)
    })
    .await;
    assert!(!reachable_from(&agent_host, THIRD_IP));
    collector
        .wait_alert(&device, Duration::from_secs(10), |a| {
            a["rule"]["id"] == "ward-isolation-tamper"
        })
        .await
        .unwrap();
    println!("restart and tamper checks done after {:?}", t0.elapsed());

    // The release reaches the isolated agent; everything is reachable again.
    approved(&collector, &ann, &bob, &device, json!({"kind": "release"})).await;
    assert!(!table_present(&agent_host), "Ward's table is gone");
    assert!(
        reachable_from(&agent_host, THIRD_IP),
        "the third host is reachable again"
    );
    assert!(reachable_from(&agent_host, EXCEPTION_IP));
    wait_for("a heartbeat reporting release", Duration::from_secs(10), async || {
        device_view(&collector, &device).await["isolation"] == "none"
    })
    .await;
    println!("released after {:?}", t0.elapsed());
}
