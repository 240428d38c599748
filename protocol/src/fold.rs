//! Which alerts are repeats of one another: the fold key. The agent folds repeats
//! of one rule with the same key within its aggregation window, and the collector
//! folds again at ingest by the same key, so a flood (10,000 test files written into
//! one folder) becomes one alert with a count. Pure: no IO, no clock.
//!
//! The key is the alert's key entity, chosen by what the alert is about:
//! - a file (a `File` entity that is not the image of the alert's process): its parent
//!   folder and the writing process's image when the alert has one; plus the file's
//!   content hash when the rule matched on it (`sha256` / `Hashes`), so a folder of
//!   identical test files folds while a different known-bad file dropped beside them
//!   stays an alert of its own;
//! - a process: its image and, when the alert carries its lineage, its process tree
//!   (the ancestor just below the service or session root, by pid and start time), so
//!   a build that runs one compiler a thousand times with different arguments folds
//!   while the same image in another session or service stays apart; without a
//!   lineage (or when the process is that ancestor itself) image and command line;
//! - otherwise the IP addresses (auth and network alerts: guesses from one address
//!   against many users fold);
//! - otherwise every entity.
//!
//! `Device` entities never take part: the agent adds its own to every alert and the
//! collector keys by the device the connection proved. The rule is not part of the
//! key either; callers pair it with the rule id (and the collector with the device).

use std::fmt::Write;
use std::net::IpAddr;

use crate::alert::{Entity, MatchedField};

/// Separates the parts of a key (a control character no path or command line
/// written by a sensor contains unescaped, so parts cannot run into each other).
const SEP: char = '\u{1f}';

/// The fold key of an alert with these entities and matched fields. See the module doc.
pub fn fold_key(entities: &[Entity], matched: &[MatchedField]) -> String {
    let process = alerted_process(entities);
    let file = entities.iter().find_map(|e| match e {
        Entity::File { path, sha256 } if process.as_ref().is_none_or(|p| p.exe != path.as_str()) => {
            Some((path.as_str(), sha256))
        }
        _ => None,
    });
    let mut key = String::new();
    if let Some((path, sha256)) = file {
        key.push_str("file");
        key.push(SEP);
        key.push_str(parent_folder(path));
        key.push(SEP);
        if let Some(p) = &process {
            key.push_str(p.exe);
        }
        let on_content = matched
            .iter()
            .any(|m| m.name.eq_ignore_ascii_case("sha256") || m.name.eq_ignore_ascii_case("hashes"));
        if on_content && let Some(h) = sha256 {
            key.push(SEP);
            for b in h {
                let _ = write!(key, "{b:02x}");
            }
        }
        return key;
    }
    if let Some(p) = process {
        key.push_str("process");
        key.push(SEP);
        key.push_str(p.exe);
        key.push(SEP);
        if let Some((pid, start)) = p.tree {
            let _ = write!(key, "tree{SEP}{pid}{SEP}{start}{SEP}");
        }
        if p.tree.is_none() || p.tree_is_parent {
            key.push_str(p.cmdline);
        }
        return key;
    }
    let mut ips: Vec<IpAddr> = entities
        .iter()
        .filter_map(|e| match e {
            Entity::Ip { addr } => Some(*addr),
            _ => None,
        })
        .collect();
    if !ips.is_empty() {
        ips.sort_unstable();
        ips.dedup();
        key.push_str("ip");
        for ip in ips {
            let _ = write!(key, "{SEP}{ip}");
        }
        return key;
    }
    key.push_str("entities");
    for e in entities {
        if !matches!(e, Entity::Device { .. }) {
            let _ = write!(key, "{SEP}{e:?}");
        }
    }
    key
}

/// The process an alert is about, as far as its key needs it.
struct Alerted<'a> {
    exe: &'a str,
    cmdline: &'a str,
    /// The process tree (pid and start time of its key node, or of the parent when
    /// that node is the process itself) when known.
    tree: Option<(u32, u64)>,
    /// The tree is the parent's (the process is itself the key node): the command
    /// line tells its repeats apart from the service's other children.
    tree_is_parent: bool,
}

fn alerted_process(entities: &[Entity]) -> Option<Alerted<'_>> {
    let lineage = entities.iter().find_map(|e| match e {
        Entity::Lineage { process, ancestors, .. } => Some((process, ancestors, e.lineage_key()?)),
        _ => None,
    });
    if let Some((process, ancestors, node)) = lineage {
        // The tree is named by its key node; when that is the repeated process itself
        // (a service's direct children), by its parent, so the loop folds under it.
        let itself = node.pid == process.pid && node.start_time_ms == process.start_time_ms;
        let tree = if itself { ancestors.first() } else { Some(node) };
        return Some(Alerted {
            exe: &process.exe,
            cmdline: &process.cmdline,
            tree: tree.map(|n| (n.pid, n.start_time_ms)),
            tree_is_parent: itself,
        });
    }
    entities.iter().find_map(|e| match e {
        Entity::Process { exe, cmdline, .. } => Some(Alerted {
            exe,
            cmdline,
            tree: None,
            tree_is_parent: false,
        }),
        _ => None,
    })
}

/// The folder a path is in (`/` for a file at the root, empty for a bare name).
fn parent_folder(path: &str) -> &str {
    match path.trim_end_matches('/').rsplit_once('/') {
        Some(("", _)) => "/",
        Some((dir, _)) => dir,
        None => "",
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::alert::ProcessNode;

    fn file(path: &str, h: u8) -> Entity {
        Entity::File {
            path: path.into(),
            sha256: Some([h; 32]),
        }
    }

    fn process(pid: u32, exe: &str, cmdline: &str) -> Entity {
        Entity::Process {
            pid,
            ppid: 1,
            start_time_ms: u64::from(pid) * 10,
            exe: exe.into(),
            cmdline: cmdline.into(),
            sha256: None,
        }
    }

    fn node(pid: u32, exe: &str, cmdline: &str) -> ProcessNode {
        ProcessNode {
            pid,
            ppid: 0,
            start_time_ms: u64::from(pid) * 10,
            exe: exe.into(),
            cmdline: cmdline.into(),
            user: None,
            login_user: None,
        }
    }

    /// `[gcc, sh -c gcc…, make, bash (tree), systemd --user (root)]`, for a compile
    /// numbered `n` under the interactive shell `shell`.
    fn compile(n: u32, shell: u32) -> Vec<Entity> {
        vec![
            Entity::Lineage {
                process: node(1000 + n, "/tmp/tc/bin/gcc", &format!("/tmp/tc/bin/gcc -c f{n}.c")),
                ancestors: vec![
                    node(900 + n, "/bin/sh", &format!("/bin/sh -c gcc -c f{n}.c")),
                    node(800, "/usr/bin/make", "make -j2"),
                    node(shell, "/bin/bash", "bash"),
                    node(2, "/usr/lib/systemd/systemd", "/lib/systemd/systemd --user"),
                ],
                rooted: true,
            },
            process(1000 + n, "/tmp/tc/bin/gcc", &format!("/tmp/tc/bin/gcc -c f{n}.c")),
        ]
    }

    fn m(name: &str) -> Vec<MatchedField> {
        vec![MatchedField {
            name: name.into(),
            value: "x".into(),
        }]
    }

    fn same(a: (&[Entity], &[MatchedField]), b: (&[Entity], &[MatchedField])) -> bool {
        fold_key(a.0, a.1) == fold_key(b.0, b.1)
    }

    #[test]
    fn files_fold_by_folder_writer_and_matched_content() {
        let device = Entity::Device { hostname: "h".into() };
        let no = &[][..];
        // One folder, any name; the device entity does not count.
        assert!(same(
            (&[file("/w/a.bin", 1)], no),
            (&[device.clone(), file("/w/b.bin", 2)], no)
        ));
        // Another folder is another key.
        assert!(!same((&[file("/w/a.bin", 1)], no), (&[file("/w/sub/a.bin", 1)], no)));
        // The writing process's image counts, its arguments do not.
        let cp = |n: u32| {
            vec![
                process(n, "/bin/cp", &format!("cp x /w/f{n}")),
                file(&format!("/w/f{n}"), 1),
            ]
        };
        assert!(same((&cp(1), no), (&cp(2), no)));
        let curl = vec![process(9, "/usr/bin/curl", "curl -o /w/f9 http://x"), file("/w/f9", 1)];
        assert!(!same((&cp(1), no), (&curl, no)));
        // A rule that matched on the hash keeps different contents apart.
        let hash = m("sha256");
        assert!(same((&[file("/w/a", 1)], &hash), (&[file("/w/b", 1)], &hash)));
        assert!(!same((&[file("/w/a", 1)], &hash), (&[file("/w/b", 2)], &hash)));
        assert!(!same(
            (&[file("/w/a", 1)], &m("Hashes")),
            (&[file("/w/b", 2)], &m("Hashes"))
        ));
        assert_eq!(parent_folder("/a"), "/");
        assert_eq!(parent_folder("a"), "");
        assert_eq!(parent_folder("/a/b/"), "/a");
    }

    #[test]
    fn processes_fold_by_image_and_tree_or_command_line() {
        let no = &[][..];
        // The image's own file entity does not make it a file alert.
        let exec = |n: u32, cmd: &str| vec![process(n, "/tmp/x", cmd), file("/tmp/x", 3)];
        assert!(same((&exec(1, "/tmp/x a"), no), (&exec(2, "/tmp/x a"), no)));
        // Without a lineage the command line counts.
        assert!(!same((&exec(1, "/tmp/x a"), no), (&exec(2, "/tmp/x b"), no)));
        // With one, a build's compiles under one shell fold whatever their arguments...
        assert!(same((&compile(1, 700), no), (&compile(2, 700), no)));
        // ...and stay apart from the same compiler in another session.
        assert!(!same((&compile(1, 700), no), (&compile(1, 701), no)));
        // A process that is itself the node below the root keys by its parent and
        // command line.
        let lone = |cmd: &str| {
            vec![Entity::Lineage {
                process: node(5, "/bin/sh", cmd),
                ancestors: vec![node(1, "/usr/sbin/cron", "cron -f")],
                rooted: true,
            }]
        };
        assert!(!same((&lone("sh -c a"), no), (&lone("sh -c b"), no)));
        assert!(same((&lone("sh -c a"), no), (&lone("sh -c a"), no)));
    }

    #[test]
    fn auth_and_other_alerts() {
        let no = &[][..];
        let user = |u: &str| Entity::User {
            name: u.into(),
            uid: None,
        };
        let ip = |s: &str| Entity::Ip {
            addr: s.parse().unwrap(),
        };
        // Guesses from one address against many users fold.
        assert!(same(
            (&[user("root"), ip("10.0.0.9")], no),
            (&[user("admin"), ip("10.0.0.9")], no)
        ));
        assert!(!same(
            (&[user("root"), ip("10.0.0.9")], no),
            (&[user("root"), ip("10.0.0.8")], no)
        ));
        // Without a key entity, all entities count.
        assert!(same((&[user("a")], no), (&[user("a")], no)));
        assert!(!same((&[user("a")], no), (&[user("b")], no)));
    }
}
