//! How an alert's entities are normalized for storage, lookup and display: one
//! (kind, value) key per entity for correlation indexes, and a JSON view for the API.

use serde_json::{Value, json};
use ward_protocol::{Entity, ProcessNode};

/// The lookup key of an entity: names that mean the same thing compare equal.
pub fn key(entity: &Entity) -> (&'static str, String) {
    let value = match entity {
        Entity::Device { hostname } => hostname.to_ascii_lowercase(),
        Entity::User { name, .. } => name.to_ascii_lowercase(),
        Entity::Process { pid, start_time_ms, .. } => format!("{pid}@{start_time_ms}"),
        Entity::File { path, sha256 } => match sha256 {
            Some(h) => hex::encode(h),
            None => path.clone(),
        },
        Entity::Ip { addr } => addr.to_string(),
        Entity::Domain { name } => name.trim_end_matches('.').to_ascii_lowercase(),
        Entity::Url { url } => url.clone(),
        Entity::Mailbox { address } => address.to_ascii_lowercase(),
        Entity::Lineage { process, .. } => format!("{}@{}", process.pid, process.start_time_ms),
    };
    (entity.kind(), value)
}

/// The entity as the API shows it: a flat object with a `kind`.
pub fn to_json(entity: &Entity) -> Value {
    let hash = |h: &Option<[u8; 32]>| h.as_ref().map(hex::encode);
    match entity {
        Entity::Device { hostname } => json!({"kind": "device", "hostname": hostname}),
        Entity::User { name, uid } => json!({"kind": "user", "name": name, "uid": uid}),
        Entity::Process {
            pid,
            ppid,
            start_time_ms,
            exe,
            cmdline,
            sha256,
        } => json!({
            "kind": "process", "pid": pid, "ppid": ppid, "start_time_ms": start_time_ms,
            "exe": exe, "cmdline": cmdline, "sha256": hash(sha256),
        }),
        Entity::File { path, sha256 } => json!({"kind": "file", "path": path, "sha256": hash(sha256)}),
        Entity::Ip { addr } => json!({"kind": "ip", "addr": addr.to_string()}),
        Entity::Domain { name } => json!({"kind": "domain", "name": name}),
        Entity::Url { url } => json!({"kind": "url", "url": url}),
        Entity::Mailbox { address } => json!({"kind": "mailbox", "address": address}),
        Entity::Lineage {
            process,
            ancestors,
            rooted,
        } => json!({
            "kind": "lineage", "process": node_json(process),
            "ancestors": ancestors.iter().map(node_json).collect::<Vec<_>>(), "rooted": rooted,
        }),
    }
}

fn node_json(n: &ProcessNode) -> Value {
    json!({
        "pid": n.pid, "ppid": n.ppid, "start_time_ms": n.start_time_ms, "exe": n.exe,
        "cmdline": n.cmdline, "user": n.user, "login_user": n.login_user,
    })
}

fn node_from_json(v: &Value) -> Option<ProcessNode> {
    let s = |name: &str| v.get(name).and_then(Value::as_str).map(str::to_string);
    let int = |name: &str| v.get(name).and_then(Value::as_u64);
    Some(ProcessNode {
        pid: u32::try_from(int("pid")?).ok()?,
        ppid: int("ppid").and_then(|u| u32::try_from(u).ok()).unwrap_or(0),
        start_time_ms: int("start_time_ms").unwrap_or(0),
        exe: s("exe").unwrap_or_default(),
        cmdline: s("cmdline").unwrap_or_default(),
        user: s("user"),
        login_user: s("login_user"),
    })
}

/// The entity back from its JSON view (as stored with an alert); `None` for
/// anything malformed, which then simply takes no part in correlation.
pub fn from_json(v: &Value) -> Option<Entity> {
    let s = |name: &str| v.get(name).and_then(Value::as_str).map(str::to_string);
    let hash = |name: &str| -> Option<Option<[u8; 32]>> {
        match v.get(name) {
            None | Some(Value::Null) => Some(None),
            Some(Value::String(h)) => {
                let bytes = hex::decode(h).ok()?;
                Some(Some(<[u8; 32]>::try_from(bytes.as_slice()).ok()?))
            }
            Some(_) => None,
        }
    };
    let int = |name: &str| v.get(name).and_then(Value::as_u64);
    Some(match v.get("kind")?.as_str()? {
        "device" => Entity::Device {
            hostname: s("hostname")?,
        },
        "user" => Entity::User {
            name: s("name")?,
            uid: int("uid").and_then(|u| u32::try_from(u).ok()),
        },
        "process" => Entity::Process {
            pid: u32::try_from(int("pid")?).ok()?,
            ppid: int("ppid").and_then(|u| u32::try_from(u).ok()).unwrap_or(0),
            start_time_ms: int("start_time_ms").unwrap_or(0),
            exe: s("exe").unwrap_or_default(),
            cmdline: s("cmdline").unwrap_or_default(),
            sha256: hash("sha256")?,
        },
        "file" => Entity::File {
            path: s("path").unwrap_or_default(),
            sha256: hash("sha256")?,
        },
        "ip" => Entity::Ip {
            addr: s("addr")?.parse().ok()?,
        },
        "domain" => Entity::Domain { name: s("name")? },
        "url" => Entity::Url { url: s("url")? },
        "mailbox" => Entity::Mailbox { address: s("address")? },
        "lineage" => Entity::Lineage {
            process: node_from_json(v.get("process")?)?,
            ancestors: v
                .get("ancestors")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(node_from_json).collect())
                .unwrap_or_default(),
            rooted: v.get("rooted").and_then(Value::as_bool).unwrap_or(false),
        },
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_normalize_case_and_prefer_hashes() {
        assert_eq!(
            key(&Entity::User {
                name: "Alice".into(),
                uid: None
            }),
            ("user", "alice".into())
        );
        assert_eq!(
            key(&Entity::File {
                path: "/tmp/x".into(),
                sha256: Some([0xab; 32])
            })
            .1,
            "ab".repeat(32)
        );
        let all = [
            Entity::Device { hostname: "h".into() },
            Entity::User {
                name: "alice".into(),
                uid: Some(1000),
            },
            Entity::Process {
                pid: 5,
                ppid: 1,
                start_time_ms: 9,
                exe: "/bin/sh".into(),
                cmdline: "sh -i".into(),
                sha256: Some([1; 32]),
            },
            Entity::File {
                path: "/x".into(),
                sha256: None,
            },
            Entity::Ip {
                addr: "10.0.0.5".parse().unwrap(),
            },
            Entity::Domain {
                name: "evil.example".into(),
            },
            Entity::Url {
                url: "https://evil.example/a".into(),
            },
            Entity::Mailbox {
                address: "a@b.c".into(),
            },
        ];
        for e in all {
            assert_eq!(from_json(&to_json(&e)), Some(e));
        }
        assert_eq!(
            key(&Entity::Domain {
                name: "Evil.Example.".into()
            })
            .1,
            "evil.example"
        );
    }
}
