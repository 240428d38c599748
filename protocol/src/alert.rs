//! The alert: what an agent (or a feed) saw, which rule judged it, and the typed
//! entities that correlation links on.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::ids::{AlertId, DeviceId};

/// Severity, ordered from least to most severe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Severity {
    Informational,
    Low,
    Medium,
    High,
    Critical,
}

impl Severity {
    pub const ALL: [Severity; 5] = [
        Severity::Informational,
        Severity::Low,
        Severity::Medium,
        Severity::High,
        Severity::Critical,
    ];

    pub fn as_str(&self) -> &'static str {
        match self {
            Severity::Informational => "informational",
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }

    /// Parses Sigma's `level` values (and `info`) case-insensitively.
    pub fn parse(s: &str) -> Option<Severity> {
        match s.to_ascii_lowercase().as_str() {
            "informational" | "info" => Some(Severity::Informational),
            "low" => Some(Severity::Low),
            "medium" => Some(Severity::Medium),
            "high" => Some(Severity::High),
            "critical" => Some(Severity::Critical),
            _ => None,
        }
    }
}

/// The rule that produced an alert. `author` is kept because the Detection Rule
/// License requires every view of a match to credit it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleRef {
    pub id: String,
    pub title: String,
    pub author: String,
    pub severity: Severity,
    /// MITRE ATT&CK technique ids, e.g. `T1059.004`.
    pub techniques: Vec<String>,
    /// MITRE ATT&CK tactic ids, e.g. `TA0002`.
    pub tactics: Vec<String>,
}

/// A typed thing an alert is about. Correlation links alerts through these.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Entity {
    Device {
        hostname: String,
    },
    User {
        name: String,
        uid: Option<u32>,
    },
    Process {
        pid: u32,
        ppid: u32,
        /// Process start, Unix milliseconds; with `pid` it names one process.
        start_time_ms: u64,
        exe: String,
        cmdline: String,
        sha256: Option<[u8; 32]>,
    },
    File {
        path: String,
        sha256: Option<[u8; 32]>,
    },
    Ip {
        addr: IpAddr,
    },
    Domain {
        name: String,
    },
    Url {
        url: String,
    },
    Mailbox {
        address: String,
    },
    /// The process tree an alerted process belongs to (added in protocol 1.2): the
    /// process itself and its ancestors, so correlation can tie `whoami` to the shell
    /// that ran it and to the server that spawned that shell.
    Lineage {
        /// The alerted process.
        process: ProcessNode,
        /// Its ancestors, parent first: at most [`MAX_ANCESTORS`], up to and
        /// including the service or session root when `rooted`.
        ancestors: Vec<ProcessNode>,
        /// The last ancestor is the root of the tree: a service's main process (a
        /// child of init), a session manager (`systemd --user`) or a container shim
        /// (`containerd-shim*`, `conmon`); with no ancestors, the process itself is a
        /// child of init. Without it the chain was cut at [`MAX_ANCESTORS`] or by a
        /// process that had exited.
        rooted: bool,
    },
    /// Where the alerted process runs and for whom (added in protocol 1.6): terminal,
    /// audit login and session, cgroup and container, namespaces. Names its process as
    /// `Process` does (pid and start time). Text is clipped by the agent to the
    /// `MAX_CONTEXT_*` bounds; a receiver must not rely on it.
    ProcessContext {
        pid: u32,
        /// Process start, Unix milliseconds; with `pid` it names one process.
        start_time_ms: u64,
        /// Working directory, at most [`MAX_CONTEXT_PATH`] bytes.
        cwd: String,
        /// Controlling terminal (`pts/3`); empty when none.
        tty: String,
        /// Audit session id; None when unset.
        session_id: Option<u32>,
        /// Audit login uid; None when unset.
        login_uid: Option<u32>,
        /// The login uid's user name.
        login_user: Option<String>,
        /// Cgroup path, at most [`MAX_CONTEXT_PATH`] bytes.
        cgroup: String,
        /// The container id the cgroup names (docker, containerd, CRI-O, podman).
        container_id: Option<String>,
        /// Mount namespace inode number.
        mnt_ns: Option<u32>,
        /// Pid namespace inode number.
        pid_ns: Option<u32>,
        /// Both namespaces are the host's (pid 1's, as the agent reads them); None
        /// when unknown.
        host_namespaces: Option<bool>,
    },
}

/// Longest path (cwd, cgroup) an [`Entity::ProcessContext`] carries, bytes.
pub const MAX_CONTEXT_PATH: usize = 1024;
/// Longest short text (tty, login user, container id) an [`Entity::ProcessContext`]
/// carries, bytes.
pub const MAX_CONTEXT_TEXT: usize = 128;

/// How many ancestors a [`Entity::Lineage`] carries at most.
pub const MAX_ANCESTORS: usize = 8;

/// One process of a lineage, as the agent read it while the process lived.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessNode {
    pub pid: u32,
    pub ppid: u32,
    /// Process start, Unix milliseconds; with `pid` it names one process.
    pub start_time_ms: u64,
    pub exe: String,
    pub cmdline: String,
    /// The effective user's name (or its uid as text when it has no name).
    pub user: Option<String>,
    /// The login user (audit `loginuid`): the human behind `sudo` and `su`.
    pub login_user: Option<String>,
}

impl Entity {
    /// The entity's kind as a lowercase word, for storage and display.
    pub fn kind(&self) -> &'static str {
        match self {
            Entity::Device { .. } => "device",
            Entity::User { .. } => "user",
            Entity::Process { .. } => "process",
            Entity::File { .. } => "file",
            Entity::Ip { .. } => "ip",
            Entity::Domain { .. } => "domain",
            Entity::Url { .. } => "url",
            Entity::Mailbox { .. } => "mailbox",
            Entity::Lineage { .. } => "lineage",
            Entity::ProcessContext { .. } => "process_context",
        }
    }

    /// For a [`Entity::Lineage`], the process that names its tree: below a root, the
    /// root's child on the way to the process (the login shell under sshd, the shell a
    /// web server spawned); the process itself when its parent is the root or it is a
    /// root itself; the topmost ancestor read when the chain was cut. A terminal
    /// emulator or multiplexer hosts many unrelated sessions (every tab, window and
    /// pane of a day): below the nearest one, its child names the tree. `None` for
    /// other kinds.
    pub fn lineage_key(&self) -> Option<&ProcessNode> {
        let Entity::Lineage {
            process,
            ancestors,
            rooted,
        } = self
        else {
            return None;
        };
        if let Some(host) = ancestors.iter().position(ProcessNode::hosts_sessions) {
            return Some(host.checked_sub(1).and_then(|i| ancestors.get(i)).unwrap_or(process));
        }
        let key = if *rooted {
            ancestors.len().checked_sub(2).and_then(|i| ancestors.get(i))
        } else {
            ancestors.last()
        };
        Some(key.unwrap_or(process))
    }
}

/// Terminal emulators and multiplexers, by executable name: each hosts many sessions.
const SESSION_HOSTS: [&str; 16] = [
    "gnome-terminal-server",
    "konsole",
    "xfce4-terminal",
    "mate-terminal",
    "lxterminal",
    "qterminal",
    "tilix",
    "terminator",
    "kitty",
    "alacritty",
    "wezterm-gui",
    "foot",
    "xterm",
    "urxvt",
    "tmux",
    "screen",
];

impl ProcessNode {
    /// Whether the process is a terminal emulator or multiplexer.
    pub fn hosts_sessions(&self) -> bool {
        let name = self.exe.rsplit('/').next().unwrap_or_default();
        SESSION_HOSTS.contains(&name)
    }
}

/// One event field that took part in the match, as the rule saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MatchedField {
    pub name: String,
    pub value: String,
}

/// An alert as signed by the device that raised it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Alert {
    pub id: AlertId,
    pub device_id: DeviceId,
    /// Per-device sequence number, from 1, without gaps unless alerts were dropped.
    pub seq: u64,
    /// When the (first) event was observed, Unix milliseconds.
    pub observed_at_ms: u64,
    /// When the last aggregated repeat was observed, Unix milliseconds.
    pub last_observed_at_ms: u64,
    pub rule: RuleRef,
    pub entities: Vec<Entity>,
    /// How many matching events this alert stands for (repeats are aggregated).
    pub count: u32,
    pub matched: Vec<MatchedField>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(pid: u32) -> ProcessNode {
        ProcessNode {
            pid,
            ppid: pid.saturating_sub(1),
            start_time_ms: u64::from(pid) * 10,
            exe: format!("/bin/p{pid}"),
            cmdline: format!("p{pid}"),
            user: None,
            login_user: None,
        }
    }

    #[test]
    fn lineage_key_is_the_child_of_the_root_or_the_top_of_a_cut_chain() {
        let lineage = |ancestors: &[u32], rooted: bool| Entity::Lineage {
            process: node(100),
            ancestors: ancestors.iter().map(|p| node(*p)).collect(),
            rooted,
        };
        let key = |e: &Entity| e.lineage_key().map(|n| n.pid);
        // whoami <- bash 40 <- sshd session 30 <- sshd 20 (root): the session's process.
        assert_eq!(key(&lineage(&[40, 30, 20], true)), Some(30));
        assert_eq!(key(&lineage(&[20], true)), Some(100));
        assert_eq!(key(&lineage(&[], true)), Some(100));
        assert_eq!(key(&lineage(&[40, 30], false)), Some(30));
        assert_eq!(key(&lineage(&[], false)), Some(100));
        assert_eq!(key(&Entity::Domain { name: "x".into() }), None);
    }

    #[test]
    fn below_a_terminal_the_session_names_the_tree() {
        let mut ancestors: Vec<ProcessNode> = [40, 30, 20, 10].iter().map(|p| node(*p)).collect();
        ancestors[2].exe = "/usr/libexec/gnome-terminal-server".into();
        let tab = Entity::Lineage {
            process: node(100),
            ancestors: ancestors.clone(),
            rooted: true,
        };
        // cargo 100 <- make 40 <- bash 30 <- gnome-terminal-server 20 <- systemd --user 10.
        assert_eq!(tab.lineage_key().map(|n| n.pid), Some(30));
        // The shell of the tab itself names its own tree.
        let shell = Entity::Lineage {
            process: node(30),
            ancestors: ancestors[2..].to_vec(),
            rooted: true,
        };
        assert_eq!(shell.lineage_key().map(|n| n.pid), Some(30));
    }
}
