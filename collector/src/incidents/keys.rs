//! From an alert's entities to the keys correlation links on. Only strong
//! entities become keys: a device, a user who is a person (not a system account),
//! a file or process image with a hash, a recipient's mailbox, another mail address
//! (a sender), a URL, a domain, and an IP that is routable and not one of our own
//! devices' addresses (that one names the device). A hostname names a device only
//! when exactly one enrolled device carries it.
//! A user principal name ("alice@contoso.com", as sign-ins and mail recipients name
//! users) is mapped to the device-local account names it stands for, so sign-ins,
//! mail and shells meet.

use std::collections::HashMap;
use std::net::IpAddr;

use ward_protocol::{Entity, ProcessNode};

pub use crate::model::correlation::{KeyKind, KnownDevice};

/// One correlation key of an alert.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkKey {
    pub kind: KeyKind,
    /// Normalized value: a device id, a local account name, a hex SHA-256, an address...
    pub value: String,
    /// How a person reads it in a reason ("laptop-alice", "alice").
    pub label: String,
    /// Set when the key was found through another entity, e.g. "connection from
    /// 10.0.0.5, the address of laptop-alice"; reasons quote it.
    pub via: Option<String>,
}

impl LinkKey {
    /// `kind:value`, the key's identity in indexes and the store.
    pub fn id(&self) -> String {
        format!("{}:{}", self.kind.as_str(), self.value)
    }
}

/// What key derivation needs besides the alert: the user map and the devices.
#[derive(Debug, Clone, Default)]
pub struct KeyContext {
    /// User principal name (lowercase) → local account names.
    pub user_map: HashMap<String, Vec<String>>,
    devices: HashMap<String, KnownDevice>,
    /// Lowercase hostname → the devices that carry it (cloned images and default
    /// names repeat): a hostname names a device only when exactly one has it.
    by_hostname: HashMap<String, Vec<String>>,
    by_address: HashMap<IpAddr, String>,
}

/// Accounts that exist on every system and say nothing about a person.
const SYSTEM_ACCOUNTS: [&str; 14] = [
    "root",
    "nobody",
    "daemon",
    "bin",
    "sys",
    "system",
    "admin",
    "administrator",
    "guest",
    "www-data",
    "systemd-network",
    "sshd",
    "messagebus",
    "syslog",
];

impl KeyContext {
    pub fn new(user_map: HashMap<String, Vec<String>>, devices: Vec<KnownDevice>) -> KeyContext {
        let mut ctx = KeyContext {
            user_map: user_map
                .into_iter()
                .map(|(k, v)| {
                    (
                        k.to_ascii_lowercase(),
                        v.into_iter().map(|n| n.to_ascii_lowercase()).collect(),
                    )
                })
                .collect(),
            ..KeyContext::default()
        };
        for d in devices {
            ctx.add_device(d);
        }
        ctx
    }

    /// Adds or replaces a device (inventory changes its addresses).
    pub fn add_device(&mut self, d: KnownDevice) {
        ctx_remove(self, &d.id);
        self.by_hostname
            .entry(d.hostname.to_ascii_lowercase())
            .or_default()
            .push(d.id.clone());
        for a in &d.addresses {
            if routable(a) {
                // An address claimed by two devices names neither.
                match self.by_address.get(a) {
                    Some(other) if *other != d.id => {
                        self.by_address.insert(*a, String::new());
                    }
                    _ => {
                        self.by_address.insert(*a, d.id.clone());
                    }
                }
            }
        }
        self.devices.insert(d.id.clone(), d);
    }

    pub fn hostname(&self, device_id: &str) -> Option<&str> {
        self.devices.get(device_id).map(|d| d.hostname.as_str())
    }

    fn device_key(&self, id: &str, via: Option<String>) -> LinkKey {
        LinkKey {
            kind: KeyKind::Device,
            value: id.to_string(),
            label: self.hostname(id).unwrap_or(id).to_string(),
            via,
        }
    }

    /// The local account names a user name or mail address stands for; empty for
    /// system accounts.
    pub fn local_users(&self, name: &str, uid: Option<u32>) -> Vec<String> {
        let name = name.trim().to_ascii_lowercase();
        if uid.is_some_and(|u| u < 1000) {
            return Vec::new();
        }
        let locals = if let Some(mapped) = self.user_map.get(&name) {
            mapped.clone()
        } else if let Some((local, _)) = name.split_once('@') {
            vec![local.to_string()]
        } else if let Some((_, local)) = name.rsplit_once('\\') {
            vec![local.to_string()]
        } else {
            vec![name]
        };
        locals
            .into_iter()
            .filter(|l| !l.is_empty() && !SYSTEM_ACCOUNTS.contains(&l.as_str()))
            .collect()
    }

    /// The strong keys of an alert, deduplicated, in a stable order.
    pub fn keys(&self, device_id: Option<&str>, entities: &[Entity]) -> Vec<LinkKey> {
        let mut keys = Vec::new();
        if let Some(id) = device_id {
            keys.push(self.device_key(id, None));
        }
        for e in entities {
            match e {
                Entity::Device { hostname } => {
                    let host = hostname.to_ascii_lowercase();
                    match self.by_hostname.get(&host).map(Vec::as_slice) {
                        Some([id]) => keys.push(self.device_key(id, None)),
                        // Several devices carry it: it names none of them (the alert's
                        // own device is keyed by its id above).
                        Some(_) => {}
                        None if !host.is_empty() => keys.push(LinkKey {
                            kind: KeyKind::Device,
                            value: format!("host/{host}"),
                            label: hostname.clone(),
                            via: None,
                        }),
                        None => {}
                    }
                }
                // On a device, an account without a uid does not exist there (a name an
                // SSH scanner tried): it names no person.
                Entity::User { uid: None, name } if device_id.is_some() && !name.contains('@') => {}
                Entity::User { name, uid } => {
                    for local in self.local_users(name, *uid) {
                        keys.push(user_key(local, name));
                    }
                }
                Entity::Mailbox { address } => {
                    let addr = address.trim().to_ascii_lowercase();
                    if addr.is_empty() {
                        continue;
                    }
                    // The feeds name a recipient as a user too, a sender not.
                    let recipient = entities
                        .iter()
                        .any(|e| matches!(e, Entity::User { name, .. } if name.trim().eq_ignore_ascii_case(&addr)));
                    keys.push(LinkKey {
                        kind: if recipient { KeyKind::Mailbox } else { KeyKind::Sender },
                        label: addr.clone(),
                        value: addr,
                        via: None,
                    });
                }
                // A packaged system binary (bash, id, uname) is on every host of a
                // release and in every admin's and build's alerts: its hash names no attack.
                Entity::File { path, .. } | Entity::Process { exe: path, .. } if system_binary(path) => {}
                Entity::File { sha256: Some(h), .. } | Entity::Process { sha256: Some(h), .. } => {
                    let hex = hex::encode(h);
                    keys.push(LinkKey {
                        kind: KeyKind::File,
                        label: hex.clone(),
                        value: hex,
                        via: None,
                    });
                }
                Entity::File { sha256: None, .. } | Entity::Process { sha256: None, .. } => {}
                // Where a process runs links nothing by itself: its process tree
                // (Lineage, rooted at the container's shim) already ties a container's
                // processes together on its device, and a container id (or a tty, a
                // namespace) is local to one device, while one long-lived container
                // (a web application) raises unrelated alerts for weeks.
                Entity::ProcessContext { .. } => {}
                lineage @ Entity::Lineage { ancestors, rooted, .. } => {
                    if let (Some(device), Some(node)) = (device_id, lineage.lineage_key()) {
                        // The tree's parent is named in the label: the service (or the
                        // terminal) the tree hangs from.
                        let below = ancestors.iter().position(|n| n.pid == node.pid).map_or(0, |i| i + 1);
                        let root = ancestors.get(below).filter(|r| *rooted || r.hosts_sessions());
                        keys.push(lineage_key(device, node, root));
                    }
                }
                Entity::Ip { addr } => {
                    if !routable(addr) {
                        continue;
                    }
                    match self.by_address.get(addr).filter(|id| !id.is_empty()) {
                        Some(id) => {
                            let host = self.hostname(id).unwrap_or(id);
                            let via = format!("connection from {addr}, the address of {host}");
                            keys.push(self.device_key(id, Some(via)));
                        }
                        None => keys.push(LinkKey {
                            kind: KeyKind::Ip,
                            value: addr.to_string(),
                            label: addr.to_string(),
                            via: None,
                        }),
                    }
                }
                Entity::Domain { name } => {
                    let d = name.trim().trim_end_matches('.').to_ascii_lowercase();
                    if !d.is_empty() {
                        keys.push(LinkKey {
                            kind: KeyKind::Domain,
                            label: d.clone(),
                            value: d,
                            via: None,
                        });
                    }
                }
                Entity::Url { url } => {
                    if !url.trim().is_empty() {
                        keys.push(LinkKey {
                            kind: KeyKind::Url,
                            value: url.trim().to_string(),
                            label: url.trim().to_string(),
                            via: None,
                        });
                    }
                }
            }
        }
        // One key per identity; a plain sighting wins over one found through another entity.
        let mut out: Vec<LinkKey> = Vec::with_capacity(keys.len());
        for k in keys {
            match out.iter_mut().find(|o| o.kind == k.kind && o.value == k.value) {
                Some(o) => {
                    if k.via.is_none() {
                        o.via = None;
                    }
                }
                None => out.push(k),
            }
        }
        out
    }
}

/// Whether a path is in the directories the distribution's packages own.
fn system_binary(path: &str) -> bool {
    const DIRS: [&str; 9] = [
        "/usr/bin/",
        "/usr/sbin/",
        "/bin/",
        "/sbin/",
        "/usr/lib/",
        "/usr/lib64/",
        "/usr/libexec/",
        "/lib/",
        "/lib64/",
    ];
    DIRS.iter().any(|d| path.starts_with(d))
}

/// The key of a process tree ([`Entity::lineage_key`] names its node) on a device.
fn lineage_key(device: &str, node: &ProcessNode, root: Option<&ProcessNode>) -> LinkKey {
    let name = |n: &ProcessNode| {
        let exe = n.exe.rsplit('/').next().unwrap_or_default();
        if exe.is_empty() {
            n.cmdline.split_whitespace().next().unwrap_or("process").to_string()
        } else {
            exe.to_string()
        }
    };
    let mut label = format!(
        "{} {} started {}",
        name(node),
        node.pid,
        crate::util::show_ms(node.start_time_ms)
    );
    if let Some(root) = root {
        label.push_str(&format!(" by {}", name(root)));
        if let Some(user) = &root.user {
            label.push_str(&format!(" ({user})"));
        }
        label.push_str(&format!(" {}", root.pid));
    }
    LinkKey {
        kind: KeyKind::Process,
        value: format!("{device}/{}@{}", node.pid, node.start_time_ms),
        label,
        via: None,
    }
}

fn ctx_remove(ctx: &mut KeyContext, id: &str) {
    if let Some(old) = ctx.devices.remove(id) {
        let host = old.hostname.to_ascii_lowercase();
        if let Some(ids) = ctx.by_hostname.get_mut(&host) {
            ids.retain(|v| v != id);
            if ids.is_empty() {
                ctx.by_hostname.remove(&host);
            }
        }
        for a in old.addresses {
            if ctx.by_address.get(&a).is_some_and(|v| v == id) {
                ctx.by_address.remove(&a);
            }
        }
    }
}

fn user_key(local: String, seen_as: &str) -> LinkKey {
    LinkKey {
        kind: KeyKind::User,
        label: local.clone(),
        via: (!seen_as.eq_ignore_ascii_case(&local)).then(|| format!("{seen_as} is the user {local}")),
        value: local,
    }
}

/// Whether an address can name one host: not loopback, unspecified, multicast,
/// link-local or broadcast.
pub fn routable(a: &IpAddr) -> bool {
    match a {
        IpAddr::V4(v) => {
            !(v.is_loopback() || v.is_unspecified() || v.is_multicast() || v.is_link_local() || v.is_broadcast())
        }
        IpAddr::V6(v) => {
            let link_local = (v.segments()[0] & 0xffc0) == 0xfe80;
            !(v.is_loopback() || v.is_unspecified() || v.is_multicast() || link_local)
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn ctx() -> KeyContext {
        KeyContext::new(
            HashMap::from([("a.smith@contoso.com".to_string(), vec!["asmith".to_string()])]),
            vec![KnownDevice {
                id: "D1".into(),
                hostname: "laptop-alice".into(),
                addresses: vec!["10.0.0.5".parse().unwrap(), "127.0.0.1".parse().unwrap()],
            }],
        )
    }

    fn ids(keys: &[LinkKey]) -> Vec<String> {
        keys.iter().map(LinkKey::id).collect()
    }

    #[test]
    fn users_map_to_local_accounts_and_system_accounts_are_weak() {
        let c = ctx();
        let user = |name: &str, uid| Entity::User { name: name.into(), uid };
        assert_eq!(ids(&c.keys(None, &[user("Alice@Contoso.com", None)])), ["user:alice"]);
        assert_eq!(
            ids(&c.keys(None, &[user("a.smith@contoso.com", None)])),
            ["user:asmith"]
        );
        assert_eq!(ids(&c.keys(None, &[user("CONTOSO\\bob", None)])), ["user:bob"]);
        assert!(
            c.keys(
                None,
                &[user("root", Some(0)), user("svc", Some(998)), user("nobody", None)]
            )
            .is_empty()
        );
        // Feeds name a recipient as a user and a mailbox; a sender only as a mailbox,
        // which makes it a sender key (not an impacted mailbox).
        let mail = c.keys(
            None,
            &[
                user("alice@contoso.com", None),
                Entity::Mailbox {
                    address: "alice@contoso.com".into(),
                },
                Entity::Mailbox {
                    address: "billing@invoices.example".into(),
                },
            ],
        );
        assert_eq!(
            ids(&mail),
            [
                "user:alice",
                "mailbox:alice@contoso.com",
                "sender:billing@invoices.example"
            ]
        );
    }

    #[test]
    fn a_hostname_two_devices_carry_names_neither() {
        let device = |id: &str, host: &str| KnownDevice {
            id: id.into(),
            hostname: host.into(),
            addresses: Vec::new(),
        };
        let mut c = KeyContext::new(HashMap::new(), vec![device("D1", "ubuntu"), device("D2", "Ubuntu")]);
        let host = |h: &str| Entity::Device { hostname: h.into() };
        // Each alert names its own device by id; the shared name adds no other device.
        assert_eq!(ids(&c.keys(Some("D1"), &[host("ubuntu")])), ["device:D1"]);
        assert!(c.keys(None, &[host("UBUNTU")]).is_empty());
        // Renamed: the name is unique again and names its one device.
        c.add_device(device("D2", "build-7"));
        assert_eq!(ids(&c.keys(None, &[host("ubuntu")])), ["device:D1"]);
        assert_eq!(ids(&c.keys(None, &[host("build-7")])), ["device:D2"]);
    }

    #[test]
    fn device_addresses_name_the_device_and_weak_ips_are_dropped() {
        let c = ctx();
        let ip = |s: &str| Entity::Ip {
            addr: s.parse().unwrap(),
        };
        let keys = c.keys(
            Some("D2"),
            &[
                ip("10.0.0.5"),
                ip("127.0.0.1"),
                ip("fe80::1"),
                ip("224.0.0.1"),
                ip("203.0.113.9"),
            ],
        );
        assert_eq!(ids(&keys), ["device:D2", "device:D1", "ip:203.0.113.9"]);
        assert_eq!(
            keys[1].via.as_deref(),
            Some("connection from 10.0.0.5, the address of laptop-alice")
        );
        let files = c.keys(
            None,
            &[
                Entity::File {
                    path: "/tmp/x".into(),
                    sha256: None,
                },
                Entity::File {
                    path: "/tmp/y".into(),
                    sha256: Some([1; 32]),
                },
            ],
        );
        assert_eq!(ids(&files), [format!("file:{}", "01".repeat(32))]);
    }

    fn node(pid: u32, ppid: u32, exe: &str, cmdline: &str, user: &str) -> ProcessNode {
        ProcessNode {
            pid,
            ppid,
            start_time_ms: 1_795_000_000_000 + u64::from(pid),
            exe: exe.into(),
            cmdline: cmdline.into(),
            user: Some(user.into()),
            login_user: None,
        }
    }

    fn tree_key(ancestors: Vec<ProcessNode>, rooted: bool) -> LinkKey {
        let whoami = node(17801, 17800, "/usr/bin/whoami", "whoami", "tomcat");
        let keys = ctx().keys(
            Some("D1"),
            &[Entity::Lineage {
                process: whoami,
                ancestors,
                rooted,
            }],
        );
        keys.into_iter().find(|k| k.kind == KeyKind::Process).unwrap()
    }

    #[test]
    fn a_process_tree_is_keyed_by_the_ancestor_below_its_root() {
        let web_shell = vec![
            node(17800, 17794, "/usr/bin/bash", "bash -i", "tomcat"),
            node(17794, 4410, "/usr/bin/bash", "bash -c bash -i", "tomcat"),
            node(
                4410,
                1,
                "/usr/lib/jvm/java-17/bin/java",
                "java -jar tomcat.jar",
                "tomcat",
            ),
        ];
        let k = tree_key(web_shell.clone(), true);
        assert_eq!(k.value, "D1/17794@1795000017794");
        assert_eq!(
            k.label,
            "bash 17794 started 2026-11-18 11:06:57 UTC by java (tomcat) 4410"
        );
        // Cut short (no root known): the topmost ancestor known.
        assert_eq!(tree_key(web_shell[..2].to_vec(), false).value, "D1/17794@1795000017794");
        // The root's own child: the process itself; no ancestors: the process.
        assert_eq!(tree_key(web_shell[2..].to_vec(), true).value, "D1/17801@1795000017801");
        assert_eq!(tree_key(Vec::new(), true).value, "D1/17801@1795000017801");
    }

    #[test]
    fn system_binaries_and_accounts_a_device_does_not_have_name_nothing() {
        let c = ctx();
        let bash = Entity::Process {
            pid: 7,
            ppid: 1,
            start_time_ms: 1,
            exe: "/usr/bin/bash".into(),
            cmdline: "bash".into(),
            sha256: Some([1; 32]),
        };
        let dropped = Entity::File {
            path: "/tmp/x".into(),
            sha256: Some([2; 32]),
        };
        let scanner = Entity::User {
            name: "oracle".into(),
            uid: None,
        };
        let keys = c.keys(Some("D1"), &[bash, dropped, scanner.clone()]);
        let kinds: Vec<_> = keys.iter().map(|k| (k.kind, k.value.as_str())).collect();
        assert_eq!(
            kinds,
            [(KeyKind::Device, "D1"), (KeyKind::File, hex::encode([2; 32]).as_str())]
        );
        // A feed's user without a uid is a person.
        assert_eq!(c.keys(None, &[scanner])[0].kind, KeyKind::User);
    }
}
