//! A real agent as root with the eBPF sources on (`process_source = "ebpf"`: no
//! fallback, so these tests see eBPF or fail saying why): a thousand execs of
//! `/bin/true` in a tight loop all arrive with their full command line and parent,
//! and a loopback connect by bash and its accept by this test process arrive with the
//! right process, ports and remote address; a DNS lookup by bash and its UDP send to
//! the answered address raise a `dns_query` and a `network_connection` (`Protocol:
//! udp`, `DestinationHostname`) alert naming bash; an agent killed with `kill -9`
//! leaves none of its cgroup programs loaded. The device record and `ward-agent
//! status` name the eBPF sources.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use serde_json::Value;
use ward_tests::*;

/// A rule file for the agent's rules directory.
fn rule(id: &str, title: &str, category: &str, selection: &str) -> String {
    format!(
        "title: {title}\nid: {id}\nstatus: test\nlogsource:\n    product: linux\n    category: {category}\n\
         detection:\n    selection:\n{selection}\n    condition: selection\nlevel: medium\n"
    )
}

/// An agent with `rules` in its rules directory, eBPF only, every match its own alert.
fn start_agent(collector: &Collector, rules: &[(&str, String)]) -> (Agent, tempfile::TempDir) {
    let rules_dir = tempfile::tempdir().unwrap();
    for (name, text) in rules {
        std::fs::write(rules_dir.path().join(name), text).unwrap();
    }
    let dir = rules_dir.path().display().to_string();
    let agent = Agent::start_with(collector, |w| {
        format!(
            "{}\n[detection]\nrules_dir = {dir:?}\naggregate_window_ms = 0\nrule_max_new_alerts_per_window = 0\nsigmahq_enabled = false\n",
            Agent::test_config(w).replace("[sensors]\n", "[sensors]\nprocess_source = \"ebpf\"\nnetwork_dedup_ms = 0\n")
        )
    })
    .unwrap();
    agent.wait_connected(Duration::from_secs(15)).unwrap();
    (agent, rules_dir)
}

/// Waits until the device record says `sensor` is ready reading `source`.
async fn wait_source(collector: &Collector, agent: &Agent, sensor: &str, source: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (_, device) = collector
            .get(&format!("/api/v1/devices/{}", agent.device_id))
            .await
            .unwrap();
        let ready = device["sensors"].as_array().is_some_and(|s| {
            s.iter().any(|s| {
                s["name"] == sensor
                    && s["readiness"] == "ready"
                    && s["source"].as_str().is_some_and(|x| x.contains(source))
            })
        });
        if ready {
            return;
        }
        assert!(Instant::now() < deadline, "{sensor} not ready on {source}: {device}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The entities of every alert of the device whose entities mention `needle`.
fn alert_entities(collector: &Collector, device: &str, needle: &str) -> Vec<Vec<Value>> {
    let db = collector.db().unwrap();
    let mut stmt = db
        .prepare("SELECT entities FROM alerts WHERE device_id = ?1 AND entities LIKE ?2")
        .unwrap();
    stmt.query_map([device, &format!("%{needle}%")], |r| r.get::<_, String>(0))
        .unwrap()
        .map(|e| serde_json::from_str::<Vec<Value>>(&e.unwrap()).unwrap())
        .collect()
}

/// `(entities, matched)` JSON of the device's alerts of one rule.
fn rule_alerts(collector: &Collector, device: &str, rule: &str) -> Vec<(String, String)> {
    let db = collector.db().unwrap();
    let mut stmt = db
        .prepare("SELECT entities, matched FROM alerts WHERE device_id = ?1 AND rule_id = ?2")
        .unwrap();
    stmt.query_map([device, rule], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(|r| r.unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_fast_execs_arrive_with_their_command_line_and_parent() {
    assert!(
        is_root(),
        "loading eBPF programs needs root (CAP_BPF and CAP_PERFMON): run this suite as root (CI does)"
    );
    let collector = Collector::start_with(without_folding).unwrap();
    let marker = format!("ward-ebpf-exec-{}", std::process::id());
    let rules = [(
        "exec.yml",
        rule(
            "6c0b8a9e-2f4d-4c1a-9b7e-0d5f3a2e4b71",
            "e2e exec marker",
            "process_creation",
            &format!("        CommandLine|contains: '{marker}'"),
        ),
    )];
    let (agent, _rules) = start_agent(&collector, &rules);
    wait_source(&collector, &agent, "process", "eBPF").await;
    let status = agent.status().unwrap();
    assert!(status.contains("process: ready (eBPF"), "{status}");

    const N: usize = 1000;
    let script = format!("i=0; while [ $i -lt {N} ]; do /bin/true {marker} $i; i=$((i+1)); done");
    let started = Instant::now();
    let mut sh = std::process::Command::new("/bin/sh")
        .args(["-c", &script])
        .spawn()
        .unwrap();
    let sh_pid = sh.id();
    assert!(sh.wait().unwrap().success());
    eprintln!("{N} execs in {:?}", started.elapsed());

    let deadline = Instant::now() + Duration::from_secs(60);
    let mut seen: HashSet<usize> = HashSet::new();
    let mut incomplete = Vec::new();
    while Instant::now() < deadline {
        seen.clear();
        incomplete.clear();
        for entities in alert_entities(&collector, &agent.device_id, &marker) {
            let Some(p) = entities.iter().find(|e| e["kind"] == "process") else {
                incomplete.push(format!("no process entity: {entities:?}"));
                continue;
            };
            if p["pid"] == sh_pid {
                continue; // the loop's shell: its own command line names the marker
            }
            let cmdline = p["cmdline"].as_str().unwrap_or_default();
            let i = cmdline
                .strip_prefix(&format!("/bin/true {marker} "))
                .and_then(|i| i.parse::<usize>().ok());
            match i {
                Some(i) if p["ppid"] == sh_pid && p["exe"].as_str().is_some_and(|e| e.ends_with("/true")) => {
                    seen.insert(i);
                }
                _ => incomplete.push(format!("{p}")),
            }
        }
        if seen.len() == N {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(
        incomplete.is_empty(),
        "execs without full argv or parent: {incomplete:?}"
    );
    assert_eq!(
        seen.len(),
        N,
        "{} of {N} execs arrived with argv and parent",
        seen.len()
    );
    let status = agent.status().unwrap();
    assert!(!status.contains("events lost"), "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_loopback_connect_and_its_accept_name_their_processes_and_ports() {
    assert!(
        is_root(),
        "loading eBPF programs needs root (CAP_BPF and CAP_PERFMON): run this suite as root (CI does)"
    );
    let collector = Collector::start_with(without_folding).unwrap();
    // The port is chosen first so the rules can name it.
    let listener = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().port()
    };
    let port = listener;
    let rules = [
        (
            "connect.yml",
            rule(
                "1d7e4c2a-8b3f-4e6a-9c5d-2f0a1b3c4d51",
                "e2e outbound connection",
                "network_connection",
                &format!("        Initiated: 'true'\n        DestinationPort: {port}"),
            ),
        ),
        (
            "accept.yml",
            rule(
                "2e8f5d3b-9c4a-4f7b-8d6e-3a1b2c4d5e62",
                "e2e inbound connection",
                "network_connection",
                &format!("        Initiated: 'false'\n        DestinationPort: {port}"),
            ),
        ),
    ];
    let (agent, _rules) = start_agent(&collector, &rules);
    wait_source(&collector, &agent, "network", "eBPF").await;
    let status = agent.status().unwrap();
    assert!(status.contains("network: ready (eBPF"), "{status}");

    // Listen after the sensor is ready, so the listen event names this process.
    let listener = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    let me = std::process::id();
    let my_exe = std::fs::read_link("/proc/self/exe").unwrap().display().to_string();
    let mut bash = std::process::Command::new("bash")
        // bash replaces itself with sleep right after connecting (its last command
        // runs in place): the connection is still bash's.
        .args(["-c", &format!("exec 3<>/dev/tcp/127.0.0.1/{port}; sleep 1")])
        .spawn()
        .unwrap();
    let bash_pid = bash.id();
    let (_conn, peer) = listener.accept().unwrap();
    assert!(bash.wait().unwrap().success());

    let dev = agent.device_id.clone();
    let process_of = |a: &Value| -> Option<Value> {
        a["entities"]
            .as_array()?
            .iter()
            .find(|e| e["kind"] == "process")
            .cloned()
    };
    let has_ip = |a: &Value, ip: &str| {
        a["entities"]
            .as_array()
            .is_some_and(|e| e.iter().any(|e| e["kind"] == "ip" && e["addr"] == ip))
    };
    let connect = collector
        .wait_alert(&dev, Duration::from_secs(15), |a| {
            a["rule"]["title"] == "e2e outbound connection" && process_of(a).is_some_and(|p| p["pid"] == bash_pid)
        })
        .await
        .unwrap_or_else(|e| panic!("no alert for bash's connect: {e}"));
    let p = process_of(&connect).unwrap();
    assert!(p["exe"].as_str().is_some_and(|e| e.ends_with("/bash")), "{connect}");
    assert!(
        has_ip(&connect, "127.0.0.1"),
        "the remote address is an entity: {connect}"
    );
    let matched = connect["matched"].to_string();
    assert!(matched.contains(&port.to_string()), "{connect}");

    let accept = collector
        .wait_alert(&dev, Duration::from_secs(15), |a| {
            a["rule"]["title"] == "e2e inbound connection" && process_of(a).is_some_and(|p| p["pid"] == me)
        })
        .await
        .unwrap_or_else(|e| panic!("no alert for the accept by this test (pid {me}): {e}"));
    let p = process_of(&accept).unwrap();
    assert_eq!(p["exe"], my_exe.as_str(), "{accept}");
    assert!(has_ip(&accept, "127.0.0.1"), "{accept}");
    assert_eq!(peer.ip().to_string(), "127.0.0.1");
}

/// A process run on a pseudo terminal (`script`), in a cgroup named as docker names a
/// container's, in new mount and pid namespaces (`unshare`): a rule on its terminal and
/// container id fires, and the alert at the collector carries its context entity (the
/// API's JSON: working directory, tty, cgroup, container id, namespaces not the host's).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alert_carries_where_its_process_ran() {
    assert!(
        is_root(),
        "loading eBPF programs and making a cgroup need root: run this suite as root (CI does)"
    );
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let cg_root = mountinfo
        .lines()
        .find_map(|l| {
            let (left, right) = l.split_once(" - ")?;
            (right.split_whitespace().next()? == "cgroup2")
                .then(|| left.split_whitespace().nth(4).map(str::to_string))?
        })
        .expect("no cgroup2 hierarchy mounted: this test needs one to put a process in a container's cgroup");
    let collector = Collector::start_with(without_folding).unwrap();
    let marker = format!("ward-ctx-e2e-{}", std::process::id());
    let id = format!("{:064x}", (u128::from(std::process::id()) << 64) | 0xe2e);
    let rules = [(
        "context.yml",
        rule(
            "8f2d4c6e-1a3b-4d5f-9e7c-2b4a6c8e0f13",
            "e2e process context",
            "process_creation",
            &format!(
                "        CommandLine|contains: '{marker}'\n        Terminal|startswith: 'pts/'\n        ContainerId: '{id}'"
            ),
        ),
    )];
    let (agent, _rules) = start_agent(&collector, &rules);
    wait_source(&collector, &agent, "process", "eBPF").await;

    let cg = std::path::Path::new(&cg_root).join(format!("docker-{id}.scope"));
    std::fs::create_dir_all(&cg).unwrap();
    let cwd = tempfile::tempdir().unwrap();
    let script = format!(
        "echo $$ > {procs} && exec script -qec 'exec unshare -mpf /bin/sh -c \"sleep 1\" {marker}' /dev/null",
        procs = cg.join("cgroup.procs").display(),
    );
    let status = std::process::Command::new("/bin/sh")
        .args(["-c", &script])
        .current_dir(cwd.path())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    let alert = collector
        .wait_alert(&agent.device_id, Duration::from_secs(20), |a| {
            a["rule"]["title"] == "e2e process context"
        })
        .await;
    let _ = std::fs::remove_dir(&cg);
    assert!(status.success());
    let alert = alert.unwrap_or_else(|e| panic!("no alert on the terminal and container fields: {e}"));
    let (code, page) = collector
        .get(&format!("/api/v1/alerts/{}", alert["id"].as_str().unwrap()))
        .await
        .unwrap();
    assert_eq!(code, 200, "{page}");
    let ctx = page["entities"]
        .as_array()
        .and_then(|e| e.iter().find(|e| e["kind"] == "process_context"))
        .unwrap_or_else(|| panic!("no process_context entity: {page}"))
        .clone();
    let want_cwd = cwd.path().canonicalize().unwrap().display().to_string();
    assert_eq!(ctx["cwd"], want_cwd.as_str(), "{ctx}");
    assert!(ctx["tty"].as_str().is_some_and(|t| t.starts_with("pts/")), "{ctx}");
    assert_eq!(ctx["cgroup"], format!("/docker-{id}.scope").as_str(), "{ctx}");
    assert_eq!(ctx["container_id"], id.as_str(), "{ctx}");
    assert_eq!(ctx["host_namespaces"], false, "{ctx}");
    let ns = |p: &str| {
        std::fs::read_link(p).ok().and_then(|t| {
            t.to_string_lossy()
                .split_once(":[")?
                .1
                .strip_suffix(']')?
                .parse::<u64>()
                .ok()
        })
    };
    assert!(
        ctx["mnt_ns"].as_u64().is_some() && ctx["mnt_ns"].as_u64() != ns("/proc/1/ns/mnt"),
        "{ctx}"
    );
    assert!(
        ctx["pid_ns"].as_u64().is_some() && ctx["pid_ns"].as_u64() != ns("/proc/1/ns/pid"),
        "{ctx}"
    );
    let process = page["entities"]
        .as_array()
        .and_then(|e| e.iter().find(|e| e["kind"] == "process"))
        .unwrap();
    assert_eq!(
        ctx["pid"], process["pid"],
        "the context names the alerted process: {page}"
    );
}

/// `echo … | base64 -d | bash` run from a script file, so no command line holds the
/// pipeline: the built-in pipe-into-shell rule fires on the end that started second
/// (the inner bash, or base64), naming the other (from the pipe inodes the kernel gave
/// at each exec).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shell_fed_by_a_decoder_through_a_pipe_raises_the_pipe_rule() {
    assert!(
        is_root(),
        "loading eBPF programs needs root (CAP_BPF and CAP_PERFMON): run this suite as root (CI does)"
    );
    const PIPE_RULE: &str = "1ddf3ffc-1977-4ade-a408-4198cea2a98a";
    let collector = Collector::start_with(without_folding).unwrap();
    let (agent, _rules) = start_agent(&collector, &[]);
    wait_source(&collector, &agent, "process", "eBPF").await;
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("decode.sh");
    // base64 of "true\n": the inner bash runs `true`.
    std::fs::write(&script, "echo dHJ1ZQo= | base64 -d | bash\n").unwrap();
    let mut outer = std::process::Command::new("/bin/bash").arg(&script).spawn().unwrap();
    let outer_pid = outer.id();
    assert!(outer.wait().unwrap().success());

    // The pipeline's processes are the script shell's children.
    let deadline = Instant::now() + Duration::from_secs(20);
    let (process, matched) = loop {
        let hits = rule_alerts(&collector, &agent.device_id, PIPE_RULE);
        let ours = hits.into_iter().find_map(|(entities, matched)| {
            let entities: Vec<Value> = serde_json::from_str(&entities).unwrap();
            entities
                .into_iter()
                .find(|e| e["kind"] == "process" && e["ppid"] == outer_pid)
                .map(|p| (p, matched))
        });
        if let Some(hit) = ours {
            break hit;
        }
        assert!(
            Instant::now() < deadline,
            "no pipe-into-shell alert for the children of {outer_pid}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    let exe = process["exe"].as_str().unwrap_or_default();
    let matched: Value = serde_json::from_str(&matched).unwrap();
    if exe.ends_with("/bash") {
        assert_eq!(matched["PipedFromImage"], "/usr/bin/base64", "{matched}");
    } else {
        assert!(exe.ends_with("/base64"), "{process}");
        assert_eq!(matched["PipedToImage"], "/usr/bin/bash", "{matched}");
    }
}

/// `cp /bin/sh DIR/crond; DIR/crond -c true` (Atomic Red Team T1036.003): the
/// built-in renamed-system-binary rule fires, its `OriginalImage` naming the shell the
/// copy was made from (found by size, then SHA-256, among the system binaries).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renamed_copy_of_the_shell_names_its_original() {
    assert!(
        is_root(),
        "loading eBPF programs needs root (CAP_BPF and CAP_PERFMON): run this suite as root (CI does)"
    );
    const RENAMED_RULE: &str = "be562535-458b-4435-a65a-957b9299e75b";
    let collector = Collector::start_with(without_folding).unwrap();
    let (agent, _rules) = start_agent(&collector, &[]);
    wait_source(&collector, &agent, "process", "eBPF").await;
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("crond");
    let original = std::fs::canonicalize("/bin/sh").unwrap();
    std::fs::copy(&original, &copy).unwrap();
    let mut run = std::process::Command::new(&copy).args(["-c", "true"]).spawn().unwrap();
    let pid = run.id();
    assert!(run.wait().unwrap().success());

    let deadline = Instant::now() + Duration::from_secs(20);
    let matched = loop {
        let hits = rule_alerts(&collector, &agent.device_id, RENAMED_RULE);
        let ours = hits.into_iter().find_map(|(entities, matched)| {
            let entities: Vec<Value> = serde_json::from_str(&entities).unwrap();
            entities
                .iter()
                .any(|e| e["kind"] == "process" && e["pid"] == pid)
                .then_some(matched)
        });
        if let Some(matched) = ours {
            break matched;
        }
        assert!(
            Instant::now() < deadline,
            "no renamed-system-binary alert for {} (pid {pid})",
            copy.display()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    let matched: Value = serde_json::from_str(&matched).unwrap();
    let named = matched["OriginalImage"].as_str().unwrap_or_default();
    // The first system binary with the shell's content: the shell itself or a hard
    // link to it, never the copy.
    assert!(
        std::fs::canonicalize(named).is_ok_and(|p| std::fs::read(p).ok() == std::fs::read(&original).ok()),
        "OriginalImage {named:?} is not {}: {matched}",
        original.display()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dns_lookup_and_the_udp_send_it_named_raise_alerts_naming_bash() {
    assert!(
        is_root(),
        "attaching the cgroup programs needs root (CAP_BPF, CAP_PERFMON, CAP_NET_ADMIN): run this suite as root (CI does)"
    );
    let collector = Collector::start_with(without_folding).unwrap();
    let name = format!("ward-e2e-{}.example", std::process::id());
    let rules = [
        (
            "dns.yml",
            rule(
                "3f9a6e4c-0d5b-4a8c-9e7f-4b2c3d5e6f73",
                "e2e dns lookup",
                "dns_query",
                &format!("        QueryName: '{name}'\n        QueryType: 'A'"),
            ),
        ),
        (
            "udp.yml",
            rule(
                "4a0b7f5d-1e6c-4b9d-8f80-5c3d4e6f7a84",
                "e2e udp send",
                "network_connection",
                &format!("        Protocol: 'udp'\n        DestinationHostname: '{name}'"),
            ),
        ),
    ];
    let (agent, _rules) = start_agent(&collector, &rules);
    wait_source(&collector, &agent, "network", "DNS").await;

    // A responder on a loopback address's port 53 (root may bind it) answers the
    // query with 127.0.84.99; bash then sends a datagram there.
    let dns = std::net::UdpSocket::bind("127.0.84.53:53").expect("binding 127.0.84.53:53");
    let sink = std::net::UdpSocket::bind("127.0.84.99:0").unwrap();
    let sink_port = sink.local_addr().unwrap().port();
    let responder = std::thread::spawn(move || {
        let mut buf = [0u8; 512];
        let (n, from) = dns.recv_from(&mut buf).unwrap();
        let mut r = buf[..n].to_vec();
        r[2] |= 0x80; // a response
        r[7] = 1; // one answer: the question's name (compressed), A, IN, TTL 60
        r.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 127, 0, 84, 99]);
        dns.send_to(&r, from).unwrap();
    });
    let mut query = String::from("\\x42\\x43\\x01\\x00\\x00\\x01\\x00\\x00\\x00\\x00\\x00\\x00");
    for label in name.split('.') {
        query.push_str(&format!("\\x{:02x}{label}", label.len()));
    }
    query.push_str("\\x00\\x00\\x01\\x00\\x01");
    let script = format!(
        "exec 3<>/dev/udp/127.0.84.53/53; printf '{query}' >&3; head -c 1 <&3 >/dev/null; echo hi > /dev/udp/127.0.84.99/{sink_port}"
    );
    let mut bash = std::process::Command::new("bash")
        .args(["-c", &script])
        .spawn()
        .unwrap();
    let bash_pid = bash.id();
    assert!(bash.wait().unwrap().success());
    responder.join().unwrap();

    let dev = agent.device_id.clone();
    let process_of = |a: &Value| -> Option<Value> {
        a["entities"]
            .as_array()?
            .iter()
            .find(|e| e["kind"] == "process")
            .cloned()
    };
    let lookup = collector
        .wait_alert(&dev, Duration::from_secs(15), |a| {
            a["rule"]["title"] == "e2e dns lookup" && process_of(a).is_some_and(|p| p["pid"] == bash_pid)
        })
        .await
        .unwrap_or_else(|e| panic!("no dns_query alert naming bash (pid {bash_pid}): {e}"));
    let p = process_of(&lookup).unwrap();
    assert!(p["exe"].as_str().is_some_and(|e| e.ends_with("/bash")), "{lookup}");
    let entities = lookup["entities"].as_array().unwrap();
    assert!(
        entities
            .iter()
            .any(|e| e["kind"] == "domain" && e["name"] == name.as_str()),
        "{lookup}"
    );
    assert!(
        entities.iter().any(|e| e["kind"] == "ip" && e["addr"] == "127.0.84.99"),
        "the answer is an entity: {lookup}"
    );
    let send = collector
        .wait_alert(&dev, Duration::from_secs(15), |a| {
            a["rule"]["title"] == "e2e udp send" && process_of(a).is_some_and(|p| p["pid"] == bash_pid)
        })
        .await
        .unwrap_or_else(|e| panic!("no udp network_connection alert naming bash: {e}"));
    assert!(send["matched"].to_string().contains(&name), "{send}");
    let status = agent.status().unwrap();
    assert!(
        status.contains("network: ready (") && status.contains("DNS"),
        "{status}"
    );
    drop(sink);
}

/// The ids of the BPF programs that `pid`'s cgroup links hold (from its fds' fdinfo).
fn cgroup_link_programs(pid: u32) -> Vec<u32> {
    let mut ids = Vec::new();
    for fd in std::fs::read_dir(format!("/proc/{pid}/fdinfo")).unwrap().flatten() {
        let Ok(text) = std::fs::read_to_string(fd.path()) else {
            continue;
        };
        let field = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name))
                .map(|v| v.trim().to_string())
        };
        if field("link_type:").as_deref() == Some("cgroup")
            && let Some(id) = field("prog_id:").and_then(|v| v.parse().ok())
        {
            ids.push(id);
        }
    }
    ids
}

/// Whether the kernel still has BPF program `id` (BPF_PROG_GET_FD_BY_ID).
fn program_loaded(id: u32) -> bool {
    const BPF_PROG_GET_FD_BY_ID: libc::c_long = 13;
    // union bpf_attr's member for *_GET_FD_BY_ID: the id, next_id, open_flags.
    let attr: [u32; 3] = [id, 0, 0];
    // SAFETY: bpf(2) reads `size_of_val(&attr)` bytes from `attr`, which lives for the
    // call; it returns a new descriptor we close, or -1.
    #[allow(unsafe_code)]
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_GET_FD_BY_ID,
            attr.as_ptr(),
            std::mem::size_of_val(&attr),
        )
    };
    if fd >= 0 {
        // SAFETY: `fd` is the descriptor bpf(2) just gave us, closed once.
        #[allow(unsafe_code)]
        unsafe {
            libc::close(fd as i32);
        }
        return true;
    }
    let err = std::io::Error::last_os_error();
    assert_eq!(
        err.raw_os_error(),
        Some(libc::ENOENT),
        "BPF_PROG_GET_FD_BY_ID {id}: {err}"
    );
    false
}

/// The cgroup programs go with the agent's process: after `kill -9` none of those its
/// links held is loaded any more, and UDP still flows (they allowed everything while
/// they ran, and nothing is left to ask).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_agent_leaves_no_cgroup_program_behind() {
    assert!(
        is_root(),
        "attaching the cgroup programs needs root (CAP_BPF, CAP_PERFMON, CAP_NET_ADMIN): run this suite as root (CI does)"
    );
    let collector = Collector::start_with(without_folding).unwrap();
    let (mut agent, _rules) = start_agent(&collector, &[]);
    wait_source(&collector, &agent, "network", "DNS").await;
    let programs = cgroup_link_programs(agent.pid().unwrap());
    // connect, sendmsg, bind (v4 and v6), post_bind v4 and v6, skb egress and ingress.
    assert_eq!(programs.len(), 10, "the agent's cgroup links: {programs:?}");
    assert!(programs.iter().all(|id| program_loaded(*id)));
    agent.kill9();
    // Programs are freed after the links close and an RCU grace period.
    let deadline = Instant::now() + Duration::from_secs(10);
    while programs.iter().any(|id| program_loaded(*id)) {
        assert!(Instant::now() < deadline, "programs left after kill -9: {programs:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let server = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    server.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let client = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    client.send_to(b"after", server.local_addr().unwrap()).unwrap();
    let mut buf = [0u8; 8];
    let (n, _) = server
        .recv_from(&mut buf)
        .expect("UDP blocked after the agent was killed");
    assert_eq!(&buf[..n], b"after");
}
