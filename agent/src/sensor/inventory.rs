//! The device's inventory: host name, OS, kernel, addresses, logged-on users, agent version.
//!
//! Cheap enough to call every minute and compare with the last one. Must not run external
//! commands or change anything; every source may be missing (the field is then empty).

use std::collections::BTreeSet;
use std::path::Path;

use ward_protocol::Inventory;

use crate::procfs::parse_utmp;

/// The PRETTY_NAME of an os-release file's content (quotes removed).
pub fn parse_os_release(content: &str) -> Option<String> {
    content.lines().find_map(|l| {
        let v = l.trim().strip_prefix("PRETTY_NAME=")?;
        Some(v.trim_matches(['"', '\'']).to_string())
    })
}

/// Non-loopback addresses of all interfaces, sorted.
pub fn addresses() -> Vec<String> {
    let Ok(networks) = sysinfo::Networks::new_with_refreshed_list() else {
        return Vec::new();
    };
    let mut out = BTreeSet::new();
    for (_name, data) in &networks {
        for ip in data.ip_networks() {
            if !ip.addr.is_loopback() && !ip.addr.is_unspecified() {
                out.insert(ip.addr.to_string());
            }
        }
    }
    out.into_iter().collect()
}

/// Collects the inventory from the running system.
pub fn collect(agent_version: &str) -> Inventory {
    collect_from(Path::new("/etc/os-release"), Path::new("/var/run/utmp"), agent_version)
}

/// Like [`collect`], with the os-release and utmp files named (for tests).
pub fn collect_from(os_release: &Path, utmp: &Path, agent_version: &str) -> Inventory {
    let os = std::fs::read_to_string(os_release)
        .ok()
        .and_then(|c| parse_os_release(&c))
        .or_else(|| sysinfo::System::long_os_version().ok())
        .unwrap_or_default();
    Inventory {
        hostname: sysinfo::System::host_name().unwrap_or_default(),
        os,
        kernel: sysinfo::System::kernel_version().unwrap_or_default(),
        addresses: addresses(),
        logged_on_users: std::fs::read(utmp).map(|b| parse_utmp(&b)).unwrap_or_default(),
        agent_version: agent_version.to_string(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::procfs::{USER_PROCESS, UT_USER_AT, UTMP_RECORD_BYTES};

    fn utmp_record(ty: i16, user: &str) -> Vec<u8> {
        let mut r = vec![0u8; UTMP_RECORD_BYTES];
        r.get_mut(0..2).unwrap().copy_from_slice(&ty.to_ne_bytes());
        r.get_mut(UT_USER_AT..UT_USER_AT + user.len())
            .unwrap()
            .copy_from_slice(user.as_bytes());
        r
    }

    #[test]
    fn parses_os_release_and_utmp() {
        let c = "NAME=\"Debian GNU/Linux\"\nPRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nID=debian\n";
        assert_eq!(parse_os_release(c).as_deref(), Some("Debian GNU/Linux 12 (bookworm)"));
        assert_eq!(parse_os_release("ID=x"), None);
        let mut u = utmp_record(2, "reboot");
        u.extend(utmp_record(USER_PROCESS, "alice"));
        u.extend(utmp_record(USER_PROCESS, "bob"));
        u.extend(utmp_record(USER_PROCESS, "alice"));
        u.extend(utmp_record(8, "gone"));
        u.extend([1, 2, 3]); // a torn last record is ignored
        assert_eq!(parse_utmp(&u), vec!["alice", "bob"]);
    }

    #[test]
    fn collects_from_files() {
        let dir = tempfile::tempdir().unwrap();
        let osr = dir.path().join("os-release");
        std::fs::write(&osr, "PRETTY_NAME='Test OS 1'\n").unwrap();
        let utmp = dir.path().join("utmp");
        std::fs::write(&utmp, utmp_record(USER_PROCESS, "carol")).unwrap();
        let inv = collect_from(&osr, &utmp, "9.9.9");
        assert_eq!(inv.os, "Test OS 1");
        assert_eq!(inv.logged_on_users, vec!["carol"]);
        assert_eq!(inv.agent_version, "9.9.9");
        assert!(!inv.hostname.is_empty());
        assert!(!inv.kernel.is_empty());
        assert!(inv.addresses.iter().all(|a| a != "127.0.0.1" && a != "::1"));
        let real = collect("0.1.0");
        assert_eq!(real.agent_version, "0.1.0");
    }
}
