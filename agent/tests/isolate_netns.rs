//! Isolation for real, in namespaces: the test re-executes itself in a fresh
//! network + mount namespace (plus a user namespace when not root), the "agent
//! host". A helper process (this binary again) runs in a second network namespace
//! joined by a veth pair: the collector (UDP echo), an "other host" (TCP echo), a
//! resolver and a non-resolver (UDP echo on 53), and an allowed exception (TCP).
//!
//! If the namespaces cannot be created the test fails with the reason; it never
//! passes without having run.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ring::rand::SystemRandom;
use ward_agent::respond::isolate::{
    self, AllowEntry, BlockedProbe, BreakGlassError, IsolateError, IsolationPlan, IsolationState, Nft, Reassert,
    SelfTest, TableStatus,
};
use ward_protocol::{BreakGlassToken, DeviceId, Id128, SigningKey};

const IN_NS: &str = "WARD_ISOLATE_TEST_IN_NS";
const PEER: &str = "WARD_ISOLATE_TEST_PEER";

const COLLECTOR: &str = "10.77.0.2";
const COLLECTOR6: &str = "fd77::2";
const OTHER: &str = "10.77.0.3";
const RESOLVER: &str = "10.77.0.4";
const ALLOWED: &str = "10.77.0.5";
const QUIC_PORT: u16 = 4433;
const TCP_PORT: u16 = 9000;

fn sa(ip: &str, port: u16) -> SocketAddr {
    SocketAddr::new(ip.parse::<IpAddr>().unwrap(), port)
}

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

fn nft_stdin(ruleset: &str) {
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(ruleset.as_bytes()).unwrap();
    assert!(child.wait().unwrap().success(), "nft -f - failed for {ruleset}");
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|euid| euid == "0"))
        })
        .unwrap_or(false)
}

/// Needs root or unprivileged user namespaces; `cargo quick` skips it.
mod privileged {
    use super::*;

    /// The entry point: re-executes this test inside new namespaces and reports its result.
    #[test]
    fn isolation_in_namespaces() {
        if std::env::var_os(IN_NS).is_some() {
            agent_host();
            return;
        }
        let exe = std::env::current_exe().unwrap();
        let mut ns_args = vec!["--net", "--mount"];
        if !is_root() {
            ns_args.insert(0, "--map-root-user");
            ns_args.insert(0, "--user");
        }
        let out = Command::new("unshare")
            .args(&ns_args)
            .arg(&exe)
            .args([
                "--exact",
                "privileged::isolation_in_namespaces",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(IN_NS, "1")
            .output()
            .unwrap_or_else(|e| panic!("cannot run unshare to create the test namespaces: {e}"));
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "isolation test in namespaces failed (unshare {}: {}).\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
            ns_args.join(" "),
            out.status
        );
        // Guard against a child that exited 0 without running the scenario.
        assert!(
            stdout.contains("AGENT HOST SCENARIO COMPLETE"),
            "the scenario did not run to the end:\n{stdout}\n{stderr}"
        );
    }

    /// Not a test on its own: the peer namespace's servers when started by
    /// [`isolation_in_namespaces`] (with the marker variable); returns at once otherwise.
    #[test]
    fn peer_helper_process() {
        if std::env::var_os(PEER).is_some() {
            peer();
        }
    }
}

// ---------------------------------------------------------------------------
// Peer side
// ---------------------------------------------------------------------------

fn udp_echo(addr: SocketAddr) {
    let sock = UdpSocket::bind(addr).unwrap_or_else(|e| panic!("bind {addr}: {e}"));
    std::thread::spawn(move || {
        let mut buf = [0u8; 1500];
        while let Ok((n, from)) = sock.recv_from(&mut buf) {
            let _ = sock.send_to(&buf[..n], from);
        }
    });
}

fn tcp_echo(addr: SocketAddr) {
    let listener = TcpListener::bind(addr).unwrap_or_else(|e| panic!("bind {addr}: {e}"));
    std::thread::spawn(move || {
        for mut conn in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut buf = [0u8; 1500];
                while let Ok(n) = conn.read(&mut buf) {
                    if n == 0 || conn.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            });
        }
    });
}

fn peer() {
    let mut line = String::new();
    let mut stdin = std::io::stdin().lock();
    stdin.read_line(&mut line).unwrap(); // "go": addresses are configured
    udp_echo(sa(COLLECTOR, QUIC_PORT));
    udp_echo(sa(COLLECTOR6, QUIC_PORT));
    udp_echo(sa(RESOLVER, 53));
    udp_echo(sa(OTHER, 53));
    tcp_echo(sa(OTHER, TCP_PORT));
    tcp_echo(sa(ALLOWED, TCP_PORT));
    println!("PEER READY");
    std::io::stdout().flush().unwrap();
    let mut rest = Vec::new();
    let _ = stdin.read_to_end(&mut rest); // until the agent side closes stdin
    std::process::exit(0);
}

struct PeerNs(Child);

impl Drop for PeerNs {
    fn drop(&mut self) {
        drop(self.0.stdin.take());
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_peer() -> PeerNs {
    let exe = std::env::current_exe().unwrap();
    let mut child = Command::new("unshare")
        .arg("--net")
        .arg(&exe)
        .args([
            "--exact",
            "privileged::peer_helper_process",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(PEER, "1")
        .env_remove(IN_NS)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("cannot start the peer namespace with unshare --net");
    let pid = child.id().to_string();
    // unshare execs the program in place, so the pid is the peer's.
    run("ip", &["link", "set", "lo", "up"]);
    run(
        "ip",
        &[
            "link", "add", "ward0", "type", "veth", "peer", "name", "ward1", "netns", &pid,
        ],
    );
    run("ip", &["addr", "add", "10.77.0.1/24", "dev", "ward0"]);
    run("ip", &["-6", "addr", "add", "fd77::1/64", "dev", "ward0", "nodad"]);
    run("ip", &["link", "set", "ward0", "up"]);
    let peer_ip = |args: &[&str]| {
        let mut all = vec!["-t", pid.as_str(), "-n", "ip"];
        all.extend_from_slice(args);
        run("nsenter", &all);
    };
    for ip in [COLLECTOR, OTHER, RESOLVER, ALLOWED] {
        peer_ip(&["addr", "add", &format!("{ip}/24"), "dev", "ward1"]);
    }
    peer_ip(&["-6", "addr", "add", "fd77::2/64", "dev", "ward1", "nodad"]);
    peer_ip(&["link", "set", "ward1", "up"]);
    peer_ip(&["link", "set", "lo", "up"]);
    child.stdin.as_mut().unwrap().write_all(b"go\n").unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    loop {
        match lines.next() {
            Some(Ok(l)) if l.contains("PEER READY") => break,
            Some(Ok(_)) => continue,
            other => panic!("peer namespace did not start: {other:?}"),
        }
    }
    // Keep draining so the peer never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    PeerNs(child)
}

// ---------------------------------------------------------------------------
// Agent side probes
// ---------------------------------------------------------------------------

fn udp_round_trip(to: SocketAddr, timeout: Duration) -> Result<(), String> {
    let bind = if to.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" };
    let sock = UdpSocket::bind(bind).map_err(|e| e.to_string())?;
    sock.set_read_timeout(Some(timeout)).map_err(|e| e.to_string())?;
    sock.connect(to).map_err(|e| e.to_string())?;
    sock.send(b"ping").map_err(|e| format!("send: {e}"))?;
    let mut buf = [0u8; 16];
    let n = sock.recv(&mut buf).map_err(|e| format!("recv: {e}"))?;
    if &buf[..n] == b"ping" {
        Ok(())
    } else {
        Err("wrong echo".to_string())
    }
}

fn tcp_round_trip(to: SocketAddr, timeout: Duration) -> Result<(), String> {
    let mut s = TcpStream::connect_timeout(&to, timeout).map_err(|e| format!("connect: {e}"))?;
    echo_on(&mut s, timeout)
}

fn echo_on(s: &mut TcpStream, timeout: Duration) -> Result<(), String> {
    s.set_read_timeout(Some(timeout)).map_err(|e| e.to_string())?;
    s.write_all(b"hello").map_err(|e| format!("write: {e}"))?;
    let mut buf = [0u8; 5];
    s.read_exact(&mut buf).map_err(|e| format!("read: {e}"))?;
    Ok(())
}

const SHORT: Duration = Duration::from_millis(700);

fn tables() -> String {
    run("nft", &["list", "tables"])
}

fn assert_open_network(loopback: SocketAddr) {
    udp_round_trip(sa(COLLECTOR, QUIC_PORT), SHORT).expect("collector v4");
    udp_round_trip(sa(COLLECTOR6, QUIC_PORT), SHORT).expect("collector v6");
    tcp_round_trip(sa(OTHER, TCP_PORT), SHORT).expect("other host");
    udp_round_trip(sa(OTHER, 53), SHORT).expect("DNS to a non-resolver");
    tcp_round_trip(loopback, SHORT).expect("loopback");
}

fn assert_isolated(loopback: SocketAddr) {
    udp_round_trip(sa(COLLECTOR, QUIC_PORT), SHORT).expect("collector v4 must stay reachable");
    udp_round_trip(sa(COLLECTOR6, QUIC_PORT), SHORT).expect("collector v6 must stay reachable");
    tcp_round_trip(loopback, SHORT).expect("loopback must work");
    udp_round_trip(sa(RESOLVER, 53), SHORT).expect("DNS to the resolver must work");
    tcp_round_trip(sa(ALLOWED, TCP_PORT), SHORT).expect("the allowed exception must work");
    assert!(
        tcp_round_trip(sa(OTHER, TCP_PORT), SHORT).is_err(),
        "a new TCP connection to the other host got through"
    );
    assert!(
        udp_round_trip(sa(OTHER, 53), SHORT).is_err(),
        "DNS to a non-resolver got through"
    );
    assert!(
        udp_round_trip(sa(OTHER, QUIC_PORT), SHORT).is_err(),
        "UDP to the collector's port on another host got through"
    );
}

fn plan() -> IsolationPlan {
    IsolationPlan {
        collector: vec![sa(COLLECTOR, QUIC_PORT), sa(COLLECTOR6, QUIC_PORT)],
        resolvers: vec![RESOLVER.parse().unwrap()],
        allow: vec![AllowEntry::parse(ALLOWED).unwrap()],
        allow_dhcp: true,
    }
}

fn self_test(collector_timeout: Duration) -> SelfTest {
    SelfTest {
        collector_timeout,
        blocked: Some(sa(OTHER, TCP_PORT)),
        blocked_timeout: SHORT,
    }
}

async fn probe(to: SocketAddr) -> Result<(), String> {
    tokio::task::spawn_blocking(move || udp_round_trip(to, Duration::from_millis(500)))
        .await
        .map_err(|e| e.to_string())?
}

// ---------------------------------------------------------------------------
// The scenario
// ---------------------------------------------------------------------------

fn agent_host() {
    let started = Instant::now();
    let nft = Nft::new();
    let version = nft
        .version()
        .unwrap_or_else(|e| panic!("nft is required for this test (apt-get install nftables): {e}"));
    println!("{version}");
    let _peer = start_peer();
    let state = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();

    // The host's own firewall, which Ward must never touch.
    nft_stdin("table inet host_fw {\n chain input { type filter hook input priority 0; policy accept; }\n}\n");
    let host_fw_before = run("nft", &["list", "table", "inet", "host_fw"]);

    let lo = TcpListener::bind("127.0.0.1:0").unwrap();
    let loopback = lo.local_addr().unwrap();
    drop(lo);
    tcp_echo(loopback);

    // The veth link and IPv6 neighbour discovery take a moment after setup.
    let deadline = Instant::now() + Duration::from_secs(5);
    while udp_round_trip(sa(COLLECTOR6, QUIC_PORT), Duration::from_millis(200)).is_err() && Instant::now() < deadline {}
    assert_open_network(loopback);
    let mut pre = TcpStream::connect_timeout(&sa(OTHER, TCP_PORT), SHORT).unwrap();
    echo_on(&mut pre, SHORT).expect("pre-existing session works before isolation");

    // Isolate, with the dead-man switch.
    let isolated = rt
        .block_on(isolate::isolate(
            state.path(),
            &nft,
            plan(),
            None,
            1,
            &self_test(Duration::from_secs(2)),
            || probe(sa(COLLECTOR, QUIC_PORT)),
        ))
        .unwrap_or_else(|e| panic!("isolate failed: {e}"));
    assert!(
        matches!(isolated.report.blocked, BlockedProbe::Blocked(_)),
        "{:?}",
        isolated.report
    );
    let mut guard = isolated.guard;
    assert!(IsolationState::load(state.path()).unwrap().unwrap().isolated);
    assert!(tables().contains("table inet ward_isolation"));

    assert_isolated(loopback);
    let t = Instant::now();
    assert!(
        echo_on(&mut pre, Duration::from_millis(1500)).is_err(),
        "the session opened before isolation is still alive"
    );
    assert!(t.elapsed() < Duration::from_secs(2));
    println!("isolated: ok");

    // Tamper: deleted table, then an added accept rule.
    assert_eq!(guard.reassert().unwrap(), Reassert::Intact);
    run("nft", &["delete", "table", "inet", "ward_isolation"]);
    tcp_round_trip(sa(OTHER, TCP_PORT), SHORT).expect("deleting the table opens the network");
    assert_eq!(guard.reassert().unwrap(), Reassert::Tampered(TableStatus::Missing));
    assert_eq!(guard.reassert().unwrap(), Reassert::Intact);
    assert_isolated(loopback);
    run("nft", &["insert", "rule", "inet", "ward_isolation", "output", "accept"]);
    assert_eq!(guard.reassert().unwrap(), Reassert::Tampered(TableStatus::Changed));
    assert!(nft.is_intact(guard.fingerprint()).unwrap());
    assert_isolated(loopback);
    println!("tamper: ok");

    // A restart (or reboot: table gone) restores from the state file.
    run("nft", &["delete", "table", "inet", "ward_isolation"]);
    let restored = isolate::restore_with(state.path(), &nft)
        .unwrap()
        .expect("state says isolated");
    assert!(nft.is_intact(restored.fingerprint()).unwrap());
    assert_isolated(loopback);

    // A new plan whose collector does not answer rolls back to the previous isolation.
    let mut bad = plan();
    bad.collector = vec![sa(COLLECTOR, 4999)];
    let err = rt
        .block_on(isolate::isolate(
            state.path(),
            &nft,
            bad.clone(),
            None,
            2,
            &self_test(Duration::from_secs(1)),
            || probe(sa(COLLECTOR, 4999)),
        ))
        .unwrap_err();
    assert!(
        matches!(&err, IsolateError::RolledBack { reason } if reason.starts_with("collector unreachable")),
        "{err}"
    );
    assert!(
        err.to_string()
            .starts_with("isolation rolled back: collector unreachable")
    );
    assert_eq!(IsolationState::load(state.path()).unwrap().unwrap().plan, plan());
    assert!(
        nft.is_intact(restored.fingerprint()).unwrap(),
        "previous isolation is back"
    );
    assert_isolated(loopback);
    println!("restore and rollback to previous: ok");

    // Release: everything works again, only Ward's table is gone.
    isolate::release(state.path(), &nft).unwrap();
    assert!(!IsolationState::load(state.path()).unwrap().unwrap().isolated);
    let listed = tables();
    assert!(!listed.contains("ward_isolation"), "{listed}");
    assert_eq!(run("nft", &["list", "table", "inet", "host_fw"]), host_fw_before);
    assert_open_network(loopback);
    isolate::release(state.path(), &nft).expect("releasing twice is fine");
    println!("release: ok");

    // Not isolated + a collector that does not answer: rolled back to open.
    let err = rt
        .block_on(isolate::isolate(
            state.path(),
            &nft,
            bad,
            None,
            3,
            &self_test(Duration::from_secs(1)),
            || probe(sa(COLLECTOR, 4999)),
        ))
        .unwrap_err();
    assert!(matches!(err, IsolateError::RolledBack { .. }), "{err}");
    assert!(!tables().contains("ward_isolation"));
    assert!(!IsolationState::load(state.path()).unwrap().unwrap().isolated);
    assert_open_network(loopback);
    println!("rollback to open: ok");

    // Break-glass: isolate again, release with a signed one-time token (as the
    // console command would, from another process: the agent's guard stands down).
    let mut guard = rt
        .block_on(isolate::isolate(
            state.path(),
            &nft,
            plan(),
            None,
            4,
            &self_test(Duration::from_secs(2)),
            || probe(sa(COLLECTOR, QUIC_PORT)),
        ))
        .unwrap()
        .guard;
    let (key, _) = SigningKey::generate(&SystemRandom::new()).unwrap();
    let device = DeviceId(Id128([5; 16]));
    let now = 1_800_000_000_000;
    let token = BreakGlassToken::new(device, now + 3_600_000, [1; 16])
        .sign(&key)
        .unwrap();
    let release =
        |text: &str| isolate::break_glass_release_with(state.path(), &nft, text, device, &[key.public_key()], now);
    release(&token).unwrap();
    assert!(!tables().contains("ward_isolation"));
    assert_eq!(run("nft", &["list", "table", "inet", "host_fw"]), host_fw_before);
    assert_open_network(loopback);
    assert!(matches!(release(&token), Err(BreakGlassError::Reused)));
    assert_eq!(guard.reassert().unwrap(), Reassert::Released);
    assert!(!tables().contains("ward_isolation"), "the guard must not re-isolate");
    assert!(isolate::restore_with(state.path(), &nft).unwrap().is_none());
    assert!(!tables().contains("ward_isolation"));
    println!("break-glass: ok");

    assert_no_leftovers(state.path());
    println!("AGENT HOST SCENARIO COMPLETE in {:?}", started.elapsed());
}

fn assert_no_leftovers(state_dir: &Path) {
    let names: Vec<String> = std::fs::read_dir(state_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().all(|n| !n.ends_with(".tmp")), "{names:?}");
}
