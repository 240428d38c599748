//! How an alert's entities are normalized for storage, lookup and display: one
//! (kind, value) key per entity for correlation indexes, and a JSON view for the API.

use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::Value;
use ward_protocol::{Entity, ProcessNode};

/// The lookup key of an entity: names that mean the same thing compare equal.
pub fn key(entity: &Entity) -> (&'static str, String) {
    let value = match entity {
        Entity::Device { hostname } => hostname.to_ascii_lowercase(),
        Entity::User { name, .. } => name.to_ascii_lowercase(),
        Entity::Process { pid, start_time_ms, .. } => format!("{pid}@{start_time_ms}"),
        Entity::File { path, sha256 } => match sha256 {
            Some(h) => Hex(h).with_str(str::to_string),
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

/// The entity as the API shows it: a flat object with a `kind` (keys sorted, as
/// [`entities_json`] writes them).
pub fn to_json(entity: &Entity) -> Value {
    // Strings, numbers and options always convert.
    serde_json::to_value(View(entity)).unwrap_or(Value::Null)
}

/// The stored JSON of an alert's entities, written straight from them: the same
/// text as `Value::Array(entities.iter().map(to_json).collect()).to_string()`
/// (each object's keys in the order `serde_json::Map` sorts them), without building
/// a `Value` tree of maps and strings per entity first. Ingest writes it once per
/// alert.
pub fn entities_json(entities: &[Entity]) -> String {
    // Serializing strings, numbers and options to a String cannot fail.
    serde_json::to_string(&Entities(entities)).unwrap_or_else(|_| "[]".into())
}

struct Entities<'a>(&'a [Entity]);

impl Serialize for Entities<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().map(View))
    }
}

/// One entity as [`to_json`] shows it; keys in sorted order.
struct View<'a>(&'a Entity);

impl<'a> Serialize for View<'a> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let hash = |h: &'a Option<[u8; 32]>| h.as_ref().map(Hex);
        match self.0 {
            Entity::Device { hostname } => {
                let mut m = s.serialize_map(Some(2))?;
                m.serialize_entry("hostname", hostname)?;
                m.serialize_entry("kind", "device")?;
                m.end()
            }
            Entity::User { name, uid } => {
                let mut m = s.serialize_map(Some(3))?;
                m.serialize_entry("kind", "user")?;
                m.serialize_entry("name", name)?;
                m.serialize_entry("uid", uid)?;
                m.end()
            }
            Entity::Process {
                pid,
                ppid,
                start_time_ms,
                exe,
                cmdline,
                sha256,
            } => {
                let mut m = s.serialize_map(Some(7))?;
                m.serialize_entry("cmdline", &redact_userinfo(cmdline))?;
                m.serialize_entry("exe", exe)?;
                m.serialize_entry("kind", "process")?;
                m.serialize_entry("pid", pid)?;
                m.serialize_entry("ppid", ppid)?;
                m.serialize_entry("sha256", &hash(sha256))?;
                m.serialize_entry("start_time_ms", start_time_ms)?;
                m.end()
            }
            Entity::File { path, sha256 } => {
                let mut m = s.serialize_map(Some(3))?;
                m.serialize_entry("kind", "file")?;
                m.serialize_entry("path", path)?;
                m.serialize_entry("sha256", &hash(sha256))?;
                m.end()
            }
            Entity::Ip { addr } => {
                let mut m = s.serialize_map(Some(2))?;
                m.serialize_entry("addr", &addr.to_string())?;
                m.serialize_entry("kind", "ip")?;
                m.end()
            }
            Entity::Domain { name } => {
                let mut m = s.serialize_map(Some(2))?;
                m.serialize_entry("kind", "domain")?;
                m.serialize_entry("name", name)?;
                m.end()
            }
            Entity::Url { url } => {
                let mut m = s.serialize_map(Some(2))?;
                m.serialize_entry("kind", "url")?;
                m.serialize_entry("url", &redact_userinfo(url))?;
                m.end()
            }
            Entity::Mailbox { address } => {
                let mut m = s.serialize_map(Some(2))?;
                m.serialize_entry("address", address)?;
                m.serialize_entry("kind", "mailbox")?;
                m.end()
            }
            Entity::Lineage {
                process,
                ancestors,
                rooted,
            } => {
                let mut m = s.serialize_map(Some(4))?;
                m.serialize_entry("ancestors", &Nodes(ancestors))?;
                m.serialize_entry("kind", "lineage")?;
                m.serialize_entry("process", &Node(process))?;
                m.serialize_entry("rooted", rooted)?;
                m.end()
            }
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
            } => {
                let mut m = s.serialize_map(Some(13))?;
                m.serialize_entry("cgroup", cgroup)?;
                m.serialize_entry("container_id", container_id)?;
                m.serialize_entry("cwd", cwd)?;
                m.serialize_entry("host_namespaces", host_namespaces)?;
                m.serialize_entry("kind", "process_context")?;
                m.serialize_entry("login_uid", login_uid)?;
                m.serialize_entry("login_user", login_user)?;
                m.serialize_entry("mnt_ns", mnt_ns)?;
                m.serialize_entry("pid", pid)?;
                m.serialize_entry("pid_ns", pid_ns)?;
                m.serialize_entry("session_id", session_id)?;
                m.serialize_entry("start_time_ms", start_time_ms)?;
                m.serialize_entry("tty", tty)?;
                m.end()
            }
        }
    }
}

/// A SHA-256 in lowercase hex, as `hex::encode` writes it (which pushes one char
/// at a time), without allocating.
struct Hex<'a>(&'a [u8; 32]);

impl Hex<'_> {
    fn with_str<R>(&self, f: impl FnOnce(&str) -> R) -> R {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut out = [0u8; 64];
        for (pair, b) in out.chunks_exact_mut(2).zip(self.0) {
            pair[0] = DIGITS[usize::from(b >> 4)];
            pair[1] = DIGITS[usize::from(b & 0xf)];
        }
        // Only ASCII digits were written.
        f(std::str::from_utf8(&out).unwrap_or_default())
    }
}

impl Serialize for Hex<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.with_str(|h| s.serialize_str(h))
    }
}

struct Nodes<'a>(&'a [ProcessNode]);

impl Serialize for Nodes<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().map(Node))
    }
}

/// A lineage's process in an entity's view; keys in sorted order.
struct Node<'a>(&'a ProcessNode);

impl Serialize for Node<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let n = self.0;
        let mut m = s.serialize_map(Some(7))?;
        m.serialize_entry("cmdline", &redact_userinfo(&n.cmdline))?;
        m.serialize_entry("exe", &n.exe)?;
        m.serialize_entry("login_user", &n.login_user)?;
        m.serialize_entry("pid", &n.pid)?;
        m.serialize_entry("ppid", &n.ppid)?;
        m.serialize_entry("start_time_ms", &n.start_time_ms)?;
        m.serialize_entry("user", &n.user)?;
        m.end()
    }
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
        assert!(!entities_json(&[url, p]).contains("hunter2"));
    }

    fn node(pid: u32, text: &str) -> ProcessNode {
        ProcessNode {
            pid,
            ppid: pid.saturating_sub(1),
            start_time_ms: u64::from(pid) * 1000,
            exe: format!("/usr/bin/{text}"),
            cmdline: format!("{text} --url http://u:p@h/ \"\\"),
            user: pid.is_multiple_of(2).then(|| text.to_string()),
            login_user: None,
        }
    }

    /// Every kind of entity, with text that needs escaping, as the API's view.
    fn escaped_entities(text: &str) -> Vec<Entity> {
        vec![
            Entity::Device { hostname: text.into() },
            Entity::User {
                name: text.into(),
                uid: None,
            },
            Entity::User {
                name: text.into(),
                uid: Some(u32::MAX),
            },
            Entity::Process {
                pid: 5,
                ppid: 1,
                start_time_ms: u64::MAX,
                exe: text.into(),
                cmdline: format!("curl https://user:{text}@h/x {text}"),
                sha256: Some([0xab; 32]),
            },
            Entity::File {
                path: text.into(),
                sha256: None,
            },
            Entity::Ip {
                addr: "fe80::1".parse().unwrap(),
            },
            Entity::Ip {
                addr: "10.0.0.5".parse().unwrap(),
            },
            Entity::Domain { name: text.into() },
            Entity::Url {
                url: format!("https://{text}:pw@evil.example/{text}"),
            },
            Entity::Mailbox { address: text.into() },
            Entity::Lineage {
                process: node(9, text),
                ancestors: vec![node(8, text), node(1, "systemd")],
                rooted: true,
            },
            Entity::Lineage {
                process: node(3, text),
                ancestors: vec![],
                rooted: false,
            },
            Entity::ProcessContext {
                pid: 5,
                start_time_ms: 9,
                cwd: String::new(),
                tty: String::new(),
                session_id: None,
                login_uid: None,
                login_user: None,
                cgroup: String::new(),
                container_id: Some(text.into()),
                mnt_ns: None,
                pid_ns: None,
                host_namespaces: None,
            },
            Entity::ProcessContext {
                pid: 5,
                start_time_ms: 9,
                cwd: text.into(),
                tty: "pts/3".into(),
                session_id: Some(4),
                login_uid: Some(1000),
                login_user: Some(text.into()),
                cgroup: text.into(),
                container_id: None,
                mnt_ns: Some(4_026_532_301),
                pid_ns: Some(0),
                host_namespaces: Some(true),
            },
        ]
    }

    /// The stored text written straight from the entities is, byte for byte, the
    /// API view's array as `serde_json` writes it.
    #[test]
    fn entities_json_is_the_views_text() {
        for text in [
            "",
            "alice",
            "a\"b\\c\n\t\u{1}\u{7f}",
            "Ünïcødé ✓ \u{10ffff}",
            "</script>",
        ] {
            let all = escaped_entities(text);
            let view = Value::Array(all.iter().map(to_json).collect()).to_string();
            assert_eq!(entities_json(&all), view, "{text:?}");
            for e in &all {
                let one = std::slice::from_ref(e);
                assert_eq!(entities_json(one), Value::Array(vec![to_json(e)]).to_string());
            }
        }
        assert_eq!(entities_json(&[]), "[]");
        for h in [[0u8; 32], [0xff; 32], std::array::from_fn(|i| (i * 37) as u8)] {
            assert_eq!(Hex(&h).with_str(str::to_string), hex::encode(h));
        }
    }

    proptest::proptest! {
        #[test]
        fn entities_json_is_the_views_text_for_any_text(text in "\\PC{0,40}", control in proptest::char::range('\u{0}', '\u{1f}')) {
            let text = format!("{text}{control}{text}");
            let all = escaped_entities(&text);
            let view = Value::Array(all.iter().map(to_json).collect()).to_string();
            proptest::prop_assert_eq!(entities_json(&all), view);
        }
    }
}
