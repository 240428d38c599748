//! Authentication events from the auth log (/var/log/auth.log or /var/log/secure), parsed.
//!
//! Tails the log from its end (rotation and truncation survived, see [`super::tail`]) and
//! turns each syslog line into an [`AuthEvent`]: sshd logins and failures, sudo, su, account
//! and group changes, password changes, PAM sessions; any other line becomes action
//! `other` so keyword rules still see it. Without an auth log (journald-only hosts) it
//! follows the journal's auth entries instead (see [`super::journal`]) and parses their
//! messages the same way. Must not drop a line because it is not understood, nor trust
//! the line's content (every field is parsed defensively).

use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use super::journal::{self, JournalEntry, JournalError};
use super::lineage::LineageReader;
use super::{SensorConfig, SensorCtx, SensorError};
use ward_detect::event::{AuthEvent, EventData};

/// journalctl matches for the fallback: what rsyslog writes to auth.log (facilities auth
/// and authpriv), or (`+`) any entry of an auth program, for those that log without one.
const JOURNAL_MATCHES: &[&str] = &[
    "SYSLOG_FACILITY=4",
    "SYSLOG_FACILITY=10",
    "+",
    "_COMM=sshd",
    "_COMM=sshd-session",
    "_COMM=sshd-auth",
    "_COMM=sudo",
    "_COMM=su",
    "_COMM=useradd",
    "_COMM=usermod",
    "_COMM=userdel",
    "_COMM=groupadd",
    "_COMM=groupdel",
    "_COMM=groupmod",
    "_COMM=passwd",
    "_COMM=chpasswd",
    "_COMM=gpasswd",
    "_COMM=chage",
    "_COMM=systemd-logind",
];

/// The parts of a syslog line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyslogLine<'a> {
    pub host: &'a str,
    /// The program, without `[pid]` or a `(module)` suffix.
    pub program: &'a str,
    /// The whole tag, e.g. `su(pam_unix)[23164]`.
    pub tag: &'a str,
    pub message: &'a str,
}

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// Skips the timestamp: `Mon DD HH:MM:SS`, RFC 3339 (`2024-01-15T10:00:00.123+01:00`), or
/// `YYYY-MM-DD HH:MM:SS[.frac][zone]`. Returns the rest of the line.
fn skip_timestamp(line: &str) -> Option<&str> {
    let bytes = line.as_bytes();
    if line.get(..3).is_some_and(|m| MONTHS.contains(&m)) {
        // "Mon DD HH:MM:SS" is 15 bytes; the day may be space-padded.
        let ts = line.get(..15)?;
        if ts.as_bytes().get(6) != Some(&b' ') || ts.as_bytes().get(9) != Some(&b':') {
            return None;
        }
        return line.get(15..);
    }
    if bytes.len() > 19 && bytes.get(4) == Some(&b'-') && bytes.get(7) == Some(&b'-') {
        let (first, rest) = line.split_once(' ')?;
        if first.contains('T') {
            return Some(rest);
        }
        // Date and time as two words.
        let rest = rest.trim_start();
        let (_time, rest) = rest.split_once(' ')?;
        return Some(rest);
    }
    None
}

/// Splits a syslog line into host, program and message; `None` if it is not one.
pub fn parse_syslog(line: &str) -> Option<SyslogLine<'_>> {
    let rest = skip_timestamp(line)?.trim_start();
    let (host, rest) = rest.split_once(' ')?;
    let rest = rest.trim_start();
    let (tag, message) = match rest.split_once(": ") {
        Some((t, m)) if !t.contains(' ') || t.contains('[') => (t, m),
        _ => (rest.strip_suffix(':')?, ""),
    };
    let program = tag.split(['[', '(']).next().unwrap_or(tag);
    if program.is_empty() || program.contains(' ') {
        return None;
    }
    // Solaris-style "[ID 800047 auth.notice] " prefix.
    let message = match message.strip_prefix("[ID ") {
        Some(m) => m.split_once("] ").map(|(_, m)| m).unwrap_or(message),
        None => message,
    };
    Some(SyslogLine {
        host,
        program,
        tag,
        message,
    })
}

/// The word after `marker` in `s`.
fn word_after<'a>(s: &'a str, marker: &str) -> Option<&'a str> {
    let rest = s.get(s.find(marker)? + marker.len()..)?;
    rest.split_whitespace().next()
}

/// An IP address after `marker` (e.g. "from "), if it parses as one.
fn ip_after(s: &str, marker: &str) -> Option<String> {
    let w = word_after(s, marker)?.trim_end_matches([',', ':', ';']);
    w.parse::<IpAddr>().ok().map(|ip| ip.to_string())
}

/// The value of `key=` in a PAM-style message (`user=root`), empty values as none.
fn kv<'a>(s: &'a str, key: &str) -> Option<&'a str> {
    let mut from = 0;
    while let Some(i) = s.get(from..)?.find(key) {
        let at = from + i;
        let before_ok = at == 0 || s.as_bytes().get(at - 1).is_some_and(|b| *b == b' ' || *b == b';');
        if before_ok {
            let v = s.get(at + key.len()..)?.split([' ', ';']).next()?;
            return if v.is_empty() { None } else { Some(v) };
        }
        from = at + key.len();
    }
    None
}

/// A name between single quotes after `marker`: `delete user 'bob'`.
fn quoted_after<'a>(s: &'a str, marker: &str) -> Option<&'a str> {
    let rest = s.get(s.find(marker)? + marker.len()..)?;
    let rest = rest.strip_prefix('\'')?;
    rest.split('\'').next()
}

/// `name=bob,` in useradd/groupadd messages.
fn name_field(s: &str) -> Option<&str> {
    kv(s, "name=").map(|v| v.trim_end_matches(','))
}

/// The user in "for user NAME" / "for NAME", with "invalid user" and a "(uid=N)" suffix removed.
fn user_after_for(msg: &str) -> Option<String> {
    let rest = msg.get(msg.find(" for ")? + 5..)?;
    let rest = rest
        .strip_prefix("invalid user ")
        .or_else(|| rest.strip_prefix("illegal user "))
        .unwrap_or(rest);
    let rest = rest.strip_prefix("user ").unwrap_or(rest);
    let w = rest.split_whitespace().next()?;
    let w = w.split('(').next().unwrap_or(w).trim_matches(['\'', '"', '.']);
    if w.is_empty() { None } else { Some(w.to_string()) }
}

struct Parsed {
    action: &'static str,
    user: Option<String>,
    source_ip: Option<String>,
    success: Option<bool>,
}

impl Parsed {
    fn new(action: &'static str, user: Option<String>, success: Option<bool>) -> Self {
        Parsed {
            action,
            user,
            source_ip: None,
            success,
        }
    }
    fn ip(mut self, ip: Option<String>) -> Self {
        self.source_ip = ip;
        self
    }
}

/// PAM module lines, whatever the program: `pam_unix(sshd:auth): authentication failure; ...`.
fn parse_pam(msg: &str, pam_tag: bool) -> Option<Parsed> {
    if !msg.starts_with("pam_") && !pam_tag {
        return None;
    }
    if msg.contains("authentication failure") {
        let user = kv(msg, "user=").or_else(|| kv(msg, "ruser=")).map(str::to_string);
        return Some(Parsed::new("auth_failure", user, Some(false)).ip(
            kv(msg, "rhost=").and_then(|h| h.parse::<IpAddr>().ok().map(|i| i.to_string()).or(Some(h.to_string()))),
        ));
    }
    if msg.contains("session opened for user") {
        return Some(Parsed::new("session_opened", user_after_for(msg), Some(true)));
    }
    if msg.contains("session closed for user") {
        return Some(Parsed::new("session_closed", user_after_for(msg), None));
    }
    if msg.contains("password changed for") {
        return Some(Parsed::new("password_changed", user_after_for(msg), Some(true)));
    }
    None
}

fn parse_sshd(msg: &str) -> Option<Parsed> {
    let from_ip = || ip_after(msg, " from ").or_else(|| ip_after(msg, "rhost="));
    if msg.starts_with("Accepted ") {
        return Some(Parsed::new("ssh_login", user_after_for(msg), Some(true)).ip(from_ip()));
    }
    if msg.starts_with("Failed ")
        || msg.contains("maximum authentication attempts exceeded")
        || (msg.starts_with("error: PAM: ") && msg.contains(" for "))
    {
        return Some(Parsed::new("ssh_failed", user_after_for(msg), Some(false)).ip(from_ip()));
    }
    if let Some(rest) = msg
        .strip_prefix("Invalid user ")
        .or_else(|| msg.strip_prefix("input_userauth_request: invalid user "))
    {
        let user = if rest.starts_with(' ') || rest.starts_with("from ") {
            None
        } else {
            rest.split_whitespace().next().map(str::to_string)
        };
        return Some(Parsed::new("ssh_invalid_user", user, Some(false)).ip(from_ip()));
    }
    // Pre-auth disconnects and the like: keep user and address when they are there.
    for marker in ["authenticating user ", "invalid user ", "Disconnected from user "] {
        if let Some(rest) = msg
            .get(msg.find(marker).map(|i| i + marker.len())?..)
            .filter(|_| msg.contains(marker))
        {
            let mut words = rest.split_whitespace();
            let user = words.next().map(str::to_string);
            let ip = words
                .next()
                .and_then(|w| w.parse::<IpAddr>().ok())
                .map(|i| i.to_string());
            return Some(Parsed::new("other", user, None).ip(ip));
        }
    }
    None
}

fn parse_sudo(msg: &str) -> Option<Parsed> {
    let (user, rest) = msg.split_once(" : ")?;
    let user = Some(user.trim().to_string());
    if rest.contains("incorrect password attempt") {
        return Some(Parsed::new("sudo_failed", user, Some(false)));
    }
    if rest.contains("NOT in sudoers") || rest.contains("command not allowed") || rest.contains("NOT allowed") {
        return Some(Parsed::new("sudo_denied", user, Some(false)));
    }
    if rest.contains("COMMAND=") {
        return Some(Parsed::new("sudo", user, Some(true)));
    }
    None
}

fn parse_su(msg: &str) -> Option<Parsed> {
    let word = |s: &str| s.split_whitespace().next().map(str::to_string);
    if let Some(rest) = msg
        .strip_prefix("FAILED SU (to ")
        .or_else(|| msg.strip_prefix("FAILED su (to "))
    {
        return Some(Parsed::new(
            "su_failed",
            rest.split_once(") ").and_then(|(_, r)| word(r)),
            Some(false),
        ));
    }
    if let Some(rest) = msg.strip_prefix("(to ") {
        return Some(Parsed::new(
            "su",
            rest.split_once(") ").and_then(|(_, r)| word(r)),
            Some(true),
        ));
    }
    if let Some(rest) = msg.strip_prefix("BAD SU ") {
        return Some(Parsed::new("su_failed", word(rest), Some(false)));
    }
    if msg.starts_with("Successful su for ") {
        return Some(Parsed::new(
            "su",
            word_after(msg, " by ").map(str::to_string),
            Some(true),
        ));
    }
    if msg.starts_with("FAILED su for ") {
        return Some(Parsed::new(
            "su_failed",
            word_after(msg, " by ").map(str::to_string),
            Some(false),
        ));
    }
    if msg.starts_with("failed: ") && msg.contains(" changing from ") {
        return Some(Parsed::new(
            "su_failed",
            word_after(msg, " changing from ").map(str::to_string),
            Some(false),
        ));
    }
    if let Some(rest) = msg.strip_prefix("+ ").or_else(|| msg.strip_prefix("- ")) {
        let who = rest
            .split_whitespace()
            .nth(1)
            .and_then(|w| w.split(':').next())
            .map(str::to_string);
        let ok = msg.starts_with('+');
        return Some(Parsed::new(if ok { "su" } else { "su_failed" }, who, Some(ok)));
    }
    // "dcid to root on /dev/ttyp1"
    let mut words = msg.split_whitespace();
    if let (Some(user), Some("to")) = (words.next(), words.next()) {
        return Some(Parsed::new("su", Some(user.to_string()), Some(true)));
    }
    None
}

fn parse_account(program: &str, msg: &str) -> Option<Parsed> {
    let q = |m: &str| quoted_after(msg, m).map(str::to_string);
    if msg.starts_with("new user: ") {
        return Some(Parsed::new(
            "user_added",
            name_field(msg).map(str::to_string),
            Some(true),
        ));
    }
    if msg.starts_with("new group: ") || msg.starts_with("group added to ") {
        return Some(Parsed::new(
            "group_added",
            name_field(msg).map(str::to_string),
            Some(true),
        ));
    }
    if msg.starts_with("delete user ") {
        return Some(Parsed::new("user_deleted", q("delete user "), Some(true)));
    }
    if msg.starts_with("group '") && msg.contains(" removed") {
        return Some(Parsed::new("group_deleted", q("group "), Some(true)));
    }
    if msg.starts_with("removed group ") {
        return Some(Parsed::new("group_deleted", q("removed group "), Some(true)));
    }
    if msg.starts_with("add '") && msg.contains(" to group ") {
        return Some(Parsed::new("user_modified", q("add "), Some(true)));
    }
    if msg.starts_with("change user ") && msg.ends_with(" password") {
        return Some(Parsed::new("password_changed", q("change user "), Some(true)));
    }
    if msg.starts_with("password for ") && msg.contains(" changed") {
        return Some(Parsed::new("password_changed", q("password for "), Some(true)));
    }
    if msg.starts_with("user ") && msg.contains(" added by ") && msg.contains(" to group ") {
        return Some(Parsed::new(
            "user_modified",
            word_after(msg, "user ").map(str::to_string),
            Some(true),
        ));
    }
    if program == "usermod" {
        // "change user 'bob' shell from ...", "lock user 'bob' password", ...
        let user = msg.split('\'').nth(1).map(str::to_string);
        return Some(Parsed::new("user_modified", user, Some(true)));
    }
    None
}

fn parse_logind(msg: &str) -> Option<Parsed> {
    if msg.starts_with("New session ") {
        let user = word_after(msg, " of user ").map(|u| u.trim_end_matches('.').to_string());
        return Some(Parsed::new("session_opened", user, Some(true)));
    }
    None
}

/// Parses one auth log line. `None` only for lines that are not syslog lines at all.
pub fn parse_auth_line(line: &str) -> Option<AuthEvent> {
    let s = parse_syslog(line)?;
    let mut ev = parse_auth_message(s.host, s.program, s.tag, s.message);
    ev.pid = tag_pid(s.tag);
    Some(ev)
}

/// The pid in a syslog tag: `sshd[811]`, `su(pam_unix)[23164]`.
fn tag_pid(tag: &str) -> Option<u32> {
    let (_, rest) = tag.rsplit_once('[')?;
    rest.strip_suffix(']')?.parse().ok()
}

/// The program that logged an auth event, as its tag names it (`sshd-session`, `su`).
fn tag_program(tag: &str) -> &str {
    tag.split(['[', '(']).next().unwrap_or(tag)
}

/// Attaches the lineage of the logging process, if it still runs the program that logged
/// (its executable's name is the tag's program: a pid reused since is not taken).
pub fn attach_lineage(ev: &mut AuthEvent, program: &str, seen_at_ms: u64, lineage: &LineageReader) {
    let Some(pid) = ev.pid else {
        return;
    };
    ev.lineage = lineage
        .lineage_if_same(pid, seen_at_ms, None)
        .filter(|l| {
            let exe = l.process.exe.rsplit('/').next().unwrap_or_default();
            !program.is_empty() && exe.eq_ignore_ascii_case(program)
        })
        .map(Box::new);
}

/// Parses one journal entry: the program is `SYSLOG_IDENTIFIER` (else `_COMM`), the host
/// `_HOSTNAME`. `None` when the entry names no program.
pub fn parse_journal_entry(entry: &JournalEntry) -> Option<AuthEvent> {
    let tag = entry
        .identifier
        .as_deref()
        .or(entry.comm.as_deref())
        .map(str::trim)
        .filter(|t| !t.is_empty())?;
    let program = tag.split(['[', '(']).next().unwrap_or(tag);
    let mut ev = parse_auth_message(entry.hostname.as_deref().unwrap_or(""), program, tag, &entry.message);
    ev.pid = entry.pid;
    Some(ev)
}

/// The event for `message` logged by `program` (`tag` is the whole syslog tag).
fn parse_auth_message(host: &str, program: &str, tag: &str, msg: &str) -> AuthEvent {
    // OpenSSH 9.8+ logs from "sshd-session"; rules know it as sshd.
    let service = match program {
        "sshd-session" | "sshd-auth" => "sshd",
        p => p,
    };
    let parsed = parse_pam(msg, tag.contains("(pam_")).or_else(|| match service {
        "sshd" => parse_sshd(msg),
        "sudo" => parse_sudo(msg),
        "su" => parse_su(msg),
        "useradd" | "usermod" | "userdel" | "groupadd" | "groupdel" | "groupmod" | "passwd" | "chpasswd"
        | "gpasswd" | "chage" => parse_account(service, msg),
        "systemd-logind" => parse_logind(msg),
        _ => None,
    });
    let Parsed {
        action,
        user,
        source_ip,
        success,
    } = parsed.unwrap_or(Parsed::new("other", None, None));
    AuthEvent {
        service: service.to_string(),
        action: action.to_string(),
        user,
        source_ip,
        success,
        message: msg.to_string(),
        host: host.to_string(),
        pid: None,
        lineage: None,
    }
}

/// journald's socket: absent on a host where journald does not run.
const JOURNALD_SOCKET: &str = "/run/systemd/journal/socket";

/// Tails the auth log until the sensor stops; without one, follows the journal if allowed
/// and journalctl is installed (its failures end the run and the supervisor restarts it).
pub fn run(config: &SensorConfig, lineage: &LineageReader, ctx: &SensorCtx) -> Result<(), SensorError> {
    let interval = Duration::from_millis(config.log_poll_interval_ms.max(10));
    let no_log = !config.auth_log_paths.iter().any(|p| Path::new(p).exists());
    if config.auth_journal_fallback && no_log {
        tracing::info!(paths = ?config.auth_log_paths, "no auth log: following the journal");
        // journalctl runs and reads nothing on a host without journald: said at once,
        // not after the silence it would leave.
        let journald = Path::new(JOURNALD_SOCKET).exists();
        let mut seen_entry = false;
        if journald {
            ctx.ready("journal (journald)");
        } else if !ctx.blind(format!(
            "no auth log among {:?} and journald is not running ({JOURNALD_SOCKET} missing): sign-ins are not seen",
            config.auth_log_paths
        )) {
            return Ok(());
        }
        let followed = journal::follow(ctx, JOURNAL_MATCHES, interval, |entry| {
            if !seen_entry && !journald {
                seen_entry = true;
                ctx.ready("journal");
            }
            match parse_journal_entry(&entry) {
                Some(mut ev) => {
                    let at = entry.realtime_ms.unwrap_or_else(crate::clock::now_ms);
                    let program = entry.identifier.as_deref().or(entry.comm.as_deref()).unwrap_or("");
                    attach_lineage(&mut ev, tag_program(program.trim()), at, lineage);
                    ctx.emit_at(at, EventData::Auth(ev))
                }
                None => true,
            }
        });
        match followed {
            // The log tailer below reports that nothing is observed.
            Err(JournalError::NotInstalled) => {}
            other => return Ok(other?),
        }
    }
    super::tail::follow(ctx, &config.auth_log_paths, interval, |lines| {
        for line in lines {
            let Some(mut ev) = parse_auth_line(&line) else {
                continue;
            };
            if let Some(s) = parse_syslog(&line) {
                attach_lineage(&mut ev, s.program, crate::clock::now_ms(), lineage);
            }
            if !ctx.emit(EventData::Auth(ev)) {
                return false;
            }
        }
        true
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    /// (line, service, action, user, source_ip, success)
    fn check(line: &str, service: &str, action: &str, user: Option<&str>, ip: Option<&str>, success: Option<bool>) {
        let ev = parse_auth_line(line).unwrap_or_else(|| panic!("not parsed: {line}"));
        assert_eq!(
            (
                ev.service.as_str(),
                ev.action.as_str(),
                ev.user.as_deref(),
                ev.source_ip.as_deref(),
                ev.success
            ),
            (service, action, user, ip, success),
            "{line}"
        );
    }

    #[test]
    fn the_logging_process_and_its_lineage() {
        assert_eq!(tag_pid("sshd[811]"), Some(811));
        assert_eq!(tag_pid("su(pam_unix)[23164]"), Some(23164));
        assert_eq!(tag_pid("sshd"), None);
        assert_eq!(tag_program("su(pam_unix)[23164]"), "su");
        let ev = parse_auth_line("Jan 15 10:00:00 web1 sshd[811]: Accepted password for ann from 10.0.0.1 port 5 ssh2")
            .unwrap();
        assert_eq!(ev.pid, Some(811));

        // This test process logging as itself: its lineage; under another name: none.
        let me = std::process::id();
        let exe = std::fs::read_link("/proc/self/exe").unwrap();
        let name = exe.file_name().unwrap().to_str().unwrap().to_string();
        let reader = LineageReader::new();
        let mut ev = parse_auth_line(&format!(
            "Jan 15 10:00:00 web1 {name}[{me}]: session opened for user root"
        ))
        .unwrap();
        attach_lineage(&mut ev, &name, crate::clock::now_ms(), &reader);
        assert_eq!(ev.lineage.as_ref().map(|l| l.process.pid), Some(me));
        let mut ev = parse_auth_line(&format!(
            "Jan 15 10:00:00 web1 sshd[{me}]: session opened for user root"
        ))
        .unwrap();
        attach_lineage(&mut ev, "sshd", crate::clock::now_ms(), &reader);
        assert!(ev.lineage.is_none(), "the pid runs another program");
    }

    #[test]
    fn syslog_header_formats() {
        let s = parse_syslog("Mar  5 09:01:02 web1 sshd[811]: Accepted publickey for ann from 10.1.2.3 port 5 ssh2")
            .unwrap();
        assert_eq!((s.host, s.program), ("web1", "sshd"));
        assert!(s.message.starts_with("Accepted"));
        let s = parse_syslog("2025-01-15T10:00:00.123456+01:00 db2 sudo: pam_unix(sudo:session): x").unwrap();
        assert_eq!((s.host, s.program), ("db2", "sudo"));
        let s = parse_syslog("2021-06-01 07:08:09.101112-0700  box su(pam_unix)[77]: authentication failure;").unwrap();
        assert_eq!((s.host, s.program), ("box", "su"));
        assert!(parse_syslog("hello world").is_none());
        assert!(parse_syslog("").is_none());
        assert!(parse_syslog("Mar").is_none());
    }

    #[test]
    fn sshd_lines() {
        let h = "Oct  9 11:12:13 web1";
        check(
            &format!("{h} sshd[100]: Accepted password for ann from 192.0.2.7 port 40022 ssh2"),
            "sshd",
            "ssh_login",
            Some("ann"),
            Some("192.0.2.7"),
            Some(true),
        );
        check(
            &format!(
                "{h} sshd-session[100]: Accepted publickey for bo from 2001:db8::5 port 1 ssh2: ED25519 SHA256:xx"
            ),
            "sshd",
            "ssh_login",
            Some("bo"),
            Some("2001:db8::5"),
            Some(true),
        );
        check(
            &format!("{h} sshd[100]: Failed password for root from 198.51.100.9 port 2 ssh2"),
            "sshd",
            "ssh_failed",
            Some("root"),
            Some("198.51.100.9"),
            Some(false),
        );
        check(
            &format!("{h} sshd[100]: Failed password for invalid user zed from 198.51.100.9 port 2 ssh2"),
            "sshd",
            "ssh_failed",
            Some("zed"),
            Some("198.51.100.9"),
            Some(false),
        );
        check(
            &format!("{h} sshd[100]: Failed none for root from 198.51.100.9 port 2 ssh2"),
            "sshd",
            "ssh_failed",
            Some("root"),
            Some("198.51.100.9"),
            Some(false),
        );
        check(
            &format!("{h} sshd[100]: Invalid user oracle from 203.0.113.4 port 3"),
            "sshd",
            "ssh_invalid_user",
            Some("oracle"),
            Some("203.0.113.4"),
            Some(false),
        );
        check(
            &format!("{h} sshd[100]: Invalid user  from 203.0.113.4 port 3"),
            "sshd",
            "ssh_invalid_user",
            None,
            Some("203.0.113.4"),
            Some(false),
        );
        check(
            &format!("{h} sshd[100]: error: PAM: Authentication failure for illegal user qa from 203.0.113.4"),
            "sshd",
            "ssh_failed",
            Some("qa"),
            Some("203.0.113.4"),
            Some(false),
        );
        check(
            &format!("{h} sshd[100]: Connection closed by authenticating user root 203.0.113.4 port 22 [preauth]"),
            "sshd",
            "other",
            Some("root"),
            Some("203.0.113.4"),
            None,
        );
        check(
            &format!(
                "{h} sshd[100]: pam_unix(sshd:auth): authentication failure; logname= uid=0 euid=0 tty=ssh ruser= rhost=203.0.113.4  user=root"
            ),
            "sshd",
            "auth_failure",
            Some("root"),
            Some("203.0.113.4"),
            Some(false),
        );
        check(
            &format!("{h} sshd[100]: pam_unix(sshd:session): session opened for user ann(uid=1000) by (uid=0)"),
            "sshd",
            "session_opened",
            Some("ann"),
            None,
            Some(true),
        );
        check(
            &format!("{h} sshd[100]: Received disconnect from 203.0.113.4 port 22:11: bye"),
            "sshd",
            "other",
            None,
            None,
            None,
        );
        check(
            "Aug 18 07:30:25 10.0.0.5 sshd[20247]: [ID 800047 auth.notice] Failed none for root from 10.0.0.1 port 36942 ssh2",
            "sshd",
            "ssh_failed",
            Some("root"),
            Some("10.0.0.1"),
            Some(false),
        );
        check(
            "2024-02-01T01:02:03.000004+00:00 h sshd[1]: Failed keyboard-interactive/pam for invalid user u1 from 10.9.8.7 port 4 ssh2",
            "sshd",
            "ssh_failed",
            Some("u1"),
            Some("10.9.8.7"),
            Some(false),
        );
    }

    #[test]
    fn sudo_and_su_lines() {
        let h = "Jan  2 03:04:05 box";
        check(
            &format!("{h} sudo:    carol : TTY=pts/1 ; PWD=/home/carol ; USER=root ; COMMAND=/usr/bin/id -u"),
            "sudo",
            "sudo",
            Some("carol"),
            None,
            Some(true),
        );
        check(
            &format!(
                "{h} sudo:    carol : 3 incorrect password attempts ; TTY=pts/1 ; PWD=/ ; USER=root ; COMMAND=/bin/sh"
            ),
            "sudo",
            "sudo_failed",
            Some("carol"),
            None,
            Some(false),
        );
        check(
            &format!("{h} sudo:    dave : user NOT in sudoers ; TTY=pts/1 ; PWD=/ ; USER=root ; COMMAND=/bin/ls"),
            "sudo",
            "sudo_denied",
            Some("dave"),
            None,
            Some(false),
        );
        check(
            &format!("{h} sudo: pam_unix(sudo:session): session opened for user root(uid=0) by carol(uid=1000)"),
            "sudo",
            "session_opened",
            Some("root"),
            None,
            Some(true),
        );
        check(
            &format!("{h} su[9]: (to root) carol on pts/2"),
            "su",
            "su",
            Some("carol"),
            None,
            Some(true),
        );
        check(
            &format!("{h} su[9]: FAILED SU (to root) carol on pts/2"),
            "su",
            "su_failed",
            Some("carol"),
            None,
            Some(false),
        );
        check(
            &format!("{h} su: erin to root on /dev/pts/3"),
            "su",
            "su",
            Some("erin"),
            None,
            Some(true),
        );
        check(
            &format!("{h} su[9]: BAD SU erin to ops on /dev/pts/3"),
            "su",
            "su_failed",
            Some("erin"),
            None,
            Some(false),
        );
        check(
            &format!("{h} su[9]: Successful su for root by erin"),
            "su",
            "su",
            Some("erin"),
            None,
            Some(true),
        );
        check(
            &format!("{h} su[9]: failed: pts/4 changing from erin to root"),
            "su",
            "su_failed",
            Some("erin"),
            None,
            Some(false),
        );
        check(
            &format!(
                "{h} su(pam_unix)[9]: authentication failure; logname= uid=1001 euid=0 tty= ruser=erin rhost=  user=root"
            ),
            "su",
            "auth_failure",
            Some("root"),
            None,
            Some(false),
        );
    }

    #[test]
    fn account_lines() {
        let h = "2025-03-04T05:06:07.000000+00:00 host1";
        check(
            &format!(
                "{h} useradd[5]: new user: name=mallory, UID=1005, GID=1005, home=/home/mallory, shell=/bin/bash, from=/dev/pts/0"
            ),
            "useradd",
            "user_added",
            Some("mallory"),
            None,
            Some(true),
        );
        check(
            &format!("{h} useradd[5]: new group: name=mallory, GID=1005"),
            "useradd",
            "group_added",
            Some("mallory"),
            None,
            Some(true),
        );
        check(
            &format!("{h} groupadd[5]: group added to /etc/group: name=ops, GID=1010"),
            "groupadd",
            "group_added",
            Some("ops"),
            None,
            Some(true),
        );
        check(
            &format!("{h} usermod[5]: add 'mallory' to group 'sudo'"),
            "usermod",
            "user_modified",
            Some("mallory"),
            None,
            Some(true),
        );
        check(
            &format!("{h} usermod[5]: change user 'mallory' shell from '/bin/sh' to '/bin/bash'"),
            "usermod",
            "user_modified",
            Some("mallory"),
            None,
            Some(true),
        );
        check(
            &format!("{h} userdel[5]: delete user 'mallory'"),
            "userdel",
            "user_deleted",
            Some("mallory"),
            None,
            Some(true),
        );
        check(
            &format!("{h} groupdel[5]: group 'ops' removed"),
            "groupdel",
            "group_deleted",
            Some("ops"),
            None,
            Some(true),
        );
        check(
            &format!("{h} passwd[5]: pam_unix(passwd:chauthtok): password changed for mallory"),
            "passwd",
            "password_changed",
            Some("mallory"),
            None,
            Some(true),
        );
        check(
            &format!("{h} passwd[5]: password for 'mallory' changed by 'root'"),
            "passwd",
            "password_changed",
            Some("mallory"),
            None,
            Some(true),
        );
        check(
            &format!("{h} gpasswd[5]: user mallory added by root to group sudo"),
            "gpasswd",
            "user_modified",
            Some("mallory"),
            None,
            Some(true),
        );
        check(
            &format!("{h} systemd-logind[5]: New session 12 of user mallory."),
            "systemd-logind",
            "session_opened",
            Some("mallory"),
            None,
            Some(true),
        );
        check(
            &format!("{h} CRON[5]: pam_unix(cron:session): session closed for user root"),
            "CRON",
            "session_closed",
            Some("root"),
            None,
            None,
        );
        check(
            &format!("{h} polkitd[5]: Registered Authentication Agent for unix-process:1:2"),
            "polkitd",
            "other",
            None,
            None,
            None,
        );
    }

    #[test]
    fn journal_entries_parse_like_log_lines() {
        let entry = |json: &str| journal::parse_entry(json).unwrap_or_else(|| panic!("not an entry: {json}"));
        /// (journalctl -o json line, service, action, user, source_ip, success)
        type Case = (
            &'static str,
            &'static str,
            &'static str,
            Option<&'static str>,
            Option<&'static str>,
            Option<bool>,
        );
        let cases: &[Case] = &[
            (
                r#"{"__CURSOR":"s=6f1e;i=1a2b","__REALTIME_TIMESTAMP":"1718000000123456","__MONOTONIC_TIMESTAMP":"5120340","_BOOT_ID":"9e1d","_TRANSPORT":"syslog","PRIORITY":"6","SYSLOG_FACILITY":"4","SYSLOG_IDENTIFIER":"sshd-session","SYSLOG_PID":"4242","SYSLOG_TIMESTAMP":"Jun 10 06:13:20 ","_PID":"4242","_UID":"0","_GID":"0","_COMM":"sshd-session","_EXE":"/usr/lib/openssh/sshd-session","_CMDLINE":"sshd-session: ann [priv]","_SYSTEMD_UNIT":"ssh.service","_HOSTNAME":"web1","MESSAGE":"Accepted publickey for ann from 192.0.2.7 port 40022 ssh2: ED25519 SHA256:abc"}"#,
                "sshd",
                "ssh_login",
                Some("ann"),
                Some("192.0.2.7"),
                Some(true),
            ),
            (
                r#"{"__REALTIME_TIMESTAMP":"1718000001000000","SYSLOG_FACILITY":"4","SYSLOG_IDENTIFIER":"sshd","_COMM":"sshd","_HOSTNAME":"web1","MESSAGE":"Failed password for invalid user oracle from 203.0.113.4 port 5522 ssh2"}"#,
                "sshd",
                "ssh_failed",
                Some("oracle"),
                Some("203.0.113.4"),
                Some(false),
            ),
            (
                r#"{"__REALTIME_TIMESTAMP":"1718000002000000","SYSLOG_FACILITY":"10","SYSLOG_IDENTIFIER":"sudo","_COMM":"sudo","_HOSTNAME":"web1","MESSAGE":"   carol : TTY=pts/1 ; PWD=/home/carol ; USER=root ; COMMAND=/usr/bin/id"}"#,
                "sudo",
                "sudo",
                Some("carol"),
                None,
                Some(true),
            ),
            (
                r#"{"__REALTIME_TIMESTAMP":"1718000003000000","SYSLOG_FACILITY":"10","SYSLOG_IDENTIFIER":"sudo","_COMM":"sudo","_HOSTNAME":"web1","MESSAGE":"pam_unix(sudo:session): session opened for user root(uid=0) by carol(uid=1000)"}"#,
                "sudo",
                "session_opened",
                Some("root"),
                None,
                Some(true),
            ),
            (
                r#"{"__REALTIME_TIMESTAMP":"1718000004000000","SYSLOG_FACILITY":"10","SYSLOG_IDENTIFIER":"useradd","_COMM":"useradd","_HOSTNAME":"web1","MESSAGE":"new user: name=mallory, UID=1005, GID=1005, home=/home/mallory, shell=/bin/bash, from=/dev/pts/0"}"#,
                "useradd",
                "user_added",
                Some("mallory"),
                None,
                Some(true),
            ),
            // Native journal logging, no SYSLOG_IDENTIFIER: the process name is the program.
            (
                r#"{"__REALTIME_TIMESTAMP":"1718000005000000","_COMM":"su","_HOSTNAME":"box","MESSAGE":"FAILED SU (to root) erin on pts/2"}"#,
                "su",
                "su_failed",
                Some("erin"),
                None,
                Some(false),
            ),
            (
                r#"{"__REALTIME_TIMESTAMP":"1718000006000000","SYSLOG_IDENTIFIER":"systemd-logind","_COMM":"systemd-logind","_HOSTNAME":"box","MESSAGE":"New session 12 of user mallory."}"#,
                "systemd-logind",
                "session_opened",
                Some("mallory"),
                None,
                Some(true),
            ),
        ];
        for (json, service, action, user, ip, success) in cases {
            let ev = parse_journal_entry(&entry(json)).unwrap();
            assert_eq!(
                (
                    ev.service.as_str(),
                    ev.action.as_str(),
                    ev.user.as_deref(),
                    ev.source_ip.as_deref(),
                    ev.success
                ),
                (*service, *action, *user, *ip, *success),
                "{json}"
            );
        }
        let first = entry(cases[0].0);
        assert_eq!(first.realtime_ms, Some(1_718_000_000_123));
        let ev = parse_journal_entry(&first).unwrap();
        assert_eq!(ev.host, "web1");
        assert!(ev.message.starts_with("Accepted publickey"));
        // Journal and log line agree.
        let line = format!("Jun 10 06:13:20 web1 sshd-session[4242]: {}", first.message);
        assert_eq!(parse_auth_line(&line), Some(ev));
        // No program at all: not an auth event.
        assert_eq!(parse_journal_entry(&entry(r#"{"MESSAGE":"kernel says hi"}"#)), None);
    }

    #[test]
    fn tails_a_rotating_log_from_its_end() {
        use std::io::Write;
        use std::sync::Arc;
        use std::sync::atomic::{AtomicBool, Ordering};
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("auth.log");
        let append = |s: &str| {
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&log)
                .unwrap();
            f.write_all(s.as_bytes()).unwrap();
        };
        append("Jan  1 00:00:00 h sshd[1]: Accepted password for old from 10.0.0.1 port 1 ssh2\n");
        let (tx, mut rx) = tokio::sync::mpsc::channel(64);
        let stop = Arc::new(AtomicBool::new(false));
        let ctx = SensorCtx::new("auth", tx, stop.clone());
        let config = SensorConfig {
            auth_log_paths: vec![
                dir.path().join("missing").display().to_string(),
                log.display().to_string(),
            ],
            log_poll_interval_ms: 20,
            ..SensorConfig::default()
        };
        let handle = std::thread::spawn(move || run(&config, &LineageReader::new(), &ctx));
        std::thread::sleep(Duration::from_millis(100));
        append("Jan  1 00:00:01 h sshd[1]: Failed password for new1 from 10.0.0.2 port 1 ssh2\n");
        let ev = rx.blocking_recv().unwrap();
        assert!(
            matches!(ev.data, EventData::Auth(ref a) if a.user.as_deref() == Some("new1")),
            "{ev:?}"
        );
        std::fs::rename(&log, dir.path().join("auth.log.1")).unwrap();
        append("Jan  1 00:00:02 h sudo:  new2 : TTY=pts/0 ; PWD=/ ; USER=root ; COMMAND=/bin/id\n");
        let ev = rx.blocking_recv().unwrap();
        assert!(
            matches!(ev.data, EventData::Auth(ref a) if a.user.as_deref() == Some("new2") && a.action == "sudo"),
            "{ev:?}"
        );
        stop.store(true, Ordering::Relaxed);
        handle.join().unwrap().unwrap();
    }
}
