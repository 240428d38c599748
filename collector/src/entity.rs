//! How an alert's entities are normalized for storage, lookup and display: one
//! (kind, value) key per entity for correlation indexes, and a JSON view for the API.

use serde_json::{Value, json};
use ward_protocol::Entity;

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
    }
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
        assert_eq!(
            key(&Entity::Domain {
                name: "Evil.Example.".into()
            })
            .1,
            "evil.example"
        );
    }
}
