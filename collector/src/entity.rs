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
        Entity::Url { url } => redact_userinfo(url).into_owned(),
        Entity::Mailbox { address } => address.to_ascii_lowercase(),
        Entity::Lineage { process, .. } => format!("{}@{}", process.pid, process.start_time_ms),
        // A container names where alerts ran (its alerts meet under it on the
        // incident page); else the process, as `Process` does.
        Entity::ProcessContext {
            container_id: Some(id), ..
        } => id.to_ascii_lowercase(),
        Entity::ProcessContext { pid, start_time_ms, .. } => format!("{pid}@{start_time_ms}"),
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
            "exe": exe, "cmdline": redact_userinfo(cmdline), "sha256": hash(sha256),
        }),
        Entity::File { path, sha256 } => json!({"kind": "file", "path": path, "sha256": hash(sha256)}),
        Entity::Ip { addr } => json!({"kind": "ip", "addr": addr.to_string()}),
        Entity::Domain { name } => json!({"kind": "domain", "name": name}),
        Entity::Url { url } => json!({"kind": "url", "url": redact_userinfo(url)}),
        Entity::Mailbox { address } => json!({"kind": "mailbox", "address": address}),
        Entity::Lineage {
            process,
            ancestors,
            rooted,
        } => json!({
            "kind": "lineage", "process": node_json(process),
            "ancestors": ancestors.iter().map(node_json).collect::<Vec<_>>(), "rooted": rooted,
        }),
        Entity::ProcessContext {
            pid,
            start_time_ms,
            cwd,
            tty,
            session_id,
            login_uid,
            login_user,
            cgroup,
            container_id,
            mnt_ns,
            pid_ns,
            host_namespaces,
        } => json!({
            "kind": "process_context", "pid": pid, "start_time_ms": start_time_ms, "cwd": cwd,
            "tty": tty, "session_id": session_id, "login_uid": login_uid, "login_user": login_user,
            "cgroup": cgroup, "container_id": container_id, "mnt_ns": mnt_ns, "pid_ns": pid_ns,
            "host_namespaces": host_namespaces,
        }),
    }
}

fn node_json(n: &ProcessNode) -> Value {
    json!({
        "pid": n.pid, "ppid": n.ppid, "start_time_ms": n.start_time_ms, "exe": n.exe,
        "cmdline": redact_userinfo(&n.cmdline), "user": n.user, "login_user": n.login_user,
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
        "process_context" => {
            let u32_of = |name: &str| int(name).and_then(|u| u32::try_from(u).ok());
            Entity::ProcessContext {
                pid: u32_of("pid")?,
                start_time_ms: int("start_time_ms").unwrap_or(0),
                cwd: s("cwd").unwrap_or_default(),
                tty: s("tty").unwrap_or_default(),
                session_id: u32_of("session_id"),
                login_uid: u32_of("login_uid"),
                login_user: s("login_user"),
                cgroup: s("cgroup").unwrap_or_default(),
                container_id: s("container_id"),
                mnt_ns: u32_of("mnt_ns"),
                pid_ns: u32_of("pid_ns"),
                host_namespaces: v.get("host_namespaces").and_then(Value::as_bool),
            }
        }
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all_context(container_id: Option<&str>) -> Entity {
        Entity::ProcessContext {
            pid: 5,
            start_time_ms: 9,
            cwd: String::new(),
            tty: String::new(),
            session_id: None,
            login_uid: None,
            login_user: None,
            cgroup: String::new(),
            container_id: container_id.map(str::to_string),
            mnt_ns: None,
            pid_ns: None,
            host_namespaces: None,
        }
    }

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
            Entity::ProcessContext {
                pid: 5,
                start_time_ms: 9,
                cwd: "/srv".into(),
                tty: "pts/3".into(),
                session_id: Some(4),
                login_uid: Some(1000),
                login_user: Some("alice".into()),
                cgroup: "/docker/AB12AB12AB12".into(),
                container_id: Some("AB12AB12AB12".into()),
                mnt_ns: Some(4_026_532_301),
                pid_ns: None,
                host_namespaces: Some(false),
            },
        ];
        for e in all {
            assert_eq!(from_json(&to_json(&e)), Some(e));
        }
        // A container names the context; without one, the process does.
        assert_eq!(
            key(&all_context(Some("AB12AB12AB12"))),
            ("process_context", "ab12ab12ab12".into())
        );
        assert_eq!(key(&all_context(None)), ("process_context", "5@9".into()));
        // Unset ids stay unset; a malformed one is dropped, not the entity.
        let mut v = to_json(&all_context(None));
        v["login_uid"] = serde_json::json!(-3);
        assert!(matches!(
            from_json(&v),
            Some(Entity::ProcessContext { login_uid: None, .. })
        ));
        assert_eq!(
            key(&Entity::Domain {
                name: "Evil.Example.".into()
            })
            .1,
            "evil.example"
        );
    }
}

/// What replaces the user information (`user:password@`) of a URL: a short
/// SHA-256 of it, so the same credentials can still be matched across alerts
/// without being shown (48 bits: a match aid, not a secure digest).
fn userinfo_mark(userinfo: &str) -> String {
    let h = crate::util::sha256(userinfo.as_bytes());
    format!("redacted-{}", &hex::encode(h)[..12])
}

/// `text` with the user information of every URL in it (`scheme://user:pass@host`)
/// replaced by [`userinfo_mark`]; unchanged (borrowed) when it has none. Applied
/// at ingest to URLs, command lines and matched values, so credentials in URLs
/// are never stored in the alert's fields nor shown (the agent's signed payload
/// is kept as received, for verification, and not served by the API).
pub fn redact_userinfo(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.contains("://") || !text.contains('@') {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    let mut changed = false;
    while let Some(i) = rest.find("://") {
        let (head, tail) = rest.split_at(i + 3);
        out.push_str(head);
        // The authority ends at the path, query, fragment, or anything that ends a URL in text.
        let end = tail
            .find(|c: char| matches!(c, '/' | '?' | '#' | '"' | '\'' | '<' | '>' | '`') || c.is_whitespace())
            .unwrap_or(tail.len());
        let authority = &tail[..end];
        match authority.rfind('@') {
            Some(at) if at > 0 => {
                out.push_str(&userinfo_mark(&authority[..at]));
                out.push_str(&authority[at..]);
                changed = true;
            }
            _ => out.push_str(authority),
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    if changed {
        std::borrow::Cow::Owned(out)
    } else {
        std::borrow::Cow::Borrowed(text)
    }
}

#[cfg(test)]
mod redaction_tests {
    use super::*;

    #[test]
    fn userinfo_in_urls_is_replaced_by_a_hash() {
        let r = redact_userinfo("curl -s https://alice:S3cret!@files.example/x.sh?a=b@c | sh");
        assert!(!r.contains("S3cret"), "{r}");
        assert!(r.starts_with("curl -s https://redacted-"), "{r}");
        assert!(r.ends_with("@files.example/x.sh?a=b@c | sh"), "{r}");
        // The same credentials give the same mark; others another.
        assert_eq!(
            r,
            redact_userinfo("curl -s https://alice:S3cret!@files.example/x.sh?a=b@c | sh")
        );
        assert_ne!(redact_userinfo("ftp://bob:pw@h/"), redact_userinfo("ftp://bob:pw2@h/"));
        // Nothing to redact: borrowed as is (a mail address, a URL without userinfo).
        for plain in ["mailto alice@example.com", "https://example.com/a@b", "no url"] {
            assert!(
                matches!(redact_userinfo(plain), std::borrow::Cow::Borrowed(_)),
                "{plain}"
            );
        }
        let two = redact_userinfo("a http://u:p@h1 b https://x@h2/");
        assert_eq!(two.matches("redacted-").count(), 2, "{two}");
        assert!(!two.contains("u:p") && !two.contains("x@"), "{two}");
    }

    #[test]
    fn stored_views_of_entities_are_redacted() {
        let url = Entity::Url {
            url: "https://svc:hunter2@intranet.example/login".into(),
        };
        assert!(!to_json(&url).to_string().contains("hunter2"));
        assert!(!key(&url).1.contains("hunter2"));
        let p = Entity::Process {
            pid: 1,
            ppid: 0,
            start_time_ms: 0,
            exe: "/usr/bin/wget".into(),
            cmdline: "wget http://u:hunter2@h/x".into(),
            sha256: None,
        };
        assert!(!to_json(&p).to_string().contains("hunter2"));
    }
}
