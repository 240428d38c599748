//! Network isolation: one nftables table that belongs to Ward alone.
//!
//! An [`IsolationPlan`] (pinned collector addresses, DNS resolvers, extra allowed
//! destinations, DHCP on or off) is rendered by [`render`] into a ruleset for
//! `table inet ward_isolation` and loaded by [`Nft::apply`] with `nft -f -` in one
//! kernel transaction: the file deletes the table if present and creates it again,
//! so there is never a moment with half a ruleset. Base chains `input`, `output`
//! and `forward` hook at priority [`PRIORITY`] (-10, before the usual filter
//! tables at 0) with policy drop; a drop in any base chain is final in nftables,
//! so another table's `accept` cannot reopen what this one drops.
//!
//! What stays allowed: loopback; UDP (QUIC) to each pinned collector `IP:port`,
//! and back from exactly that tuple only as `ct state established`; DHCPv4
//! (67/68) and DHCPv6 (546/547) when enabled; DNS (UDP and TCP 53) to the
//! configured resolvers only; ICMPv6 neighbour discovery (inbound only with hop
//! limit 255, so off-link hosts cannot forge it); the extra allowed destinations
//! (out, and back as `ct state established`). There is no blanket
//! `ct state established,related accept`: sessions open before isolation (an
//! attacker's shell) die. The forward chain drops everything, so containers and
//! VMs routed through the host are isolated too.
//!
//! Lifecycle: [`isolate`] validates, checks (`nft -c`), applies, self-tests (the
//! caller's fresh authenticated collector round-trip must succeed within a
//! timeout, and a blocked address must not answer) and only then persists
//! [`IsolationState`] (`isolation.json` in the state dir); if the collector does
//! not answer it rolls back and says why. [`restore`] makes the kernel match the
//! state file on agent start (re-applies, or removes a leftover table). The
//! [`Guard`] returned by both is re-asserted every few seconds: a missing or
//! changed table is put back and reported as [`Reassert::Tampered`], so the
//! caller raises an alert. [`release`] and the offline [`break_glass_release`]
//! record the release first, then delete the table; a guard that finds the state
//! released (even by another process) stands down instead of re-applying.
//!
//! What this module must never do:
//! - touch any table other than `inet ward_isolation` (no `flush ruleset`, no
//!   edits to the host's firewall; release deletes exactly our table);
//! - spawn a shell: `nft` is run with [`std::process::Command`] and fixed
//!   arguments, the ruleset goes in on stdin;
//! - put user-controlled text into the ruleset: the renderer only takes parsed
//!   IP addresses, CIDRs and ports; domain names are resolved by the caller and
//!   never rendered.
//!
//! Not done here (by design or yet): `NFT_TABLE_F_OWNER`/persist flags (nft 1.0.6
//! on Debian 12 cannot set them); detecting another table that drops our
//! collector flow (the self-test catches its effect); keeping resolved domain
//! names current (the caller re-resolves and calls [`isolate`] with a new plan).

use std::collections::BTreeSet;
use std::fmt;
use std::fs;
use std::future::Future;
use std::io::{ErrorKind, Write as _};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::str::FromStr;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use thiserror::Error;
use ward_protocol::{BreakGlassToken, CommandId, DeviceId, PublicKey};

use crate::identity::{IdentityError, write_atomic};

/// The one table Ward owns. Nothing else is ever touched.
pub const TABLE: &str = "ward_isolation";
/// Base chain priority: before the conventional filter priority (0), so our drops
/// come first; a drop is final whatever the order.
pub const PRIORITY: i32 = -10;
/// The isolation state file in the agent's state dir.
pub const STATE_FILE: &str = "isolation.json";
/// Used break-glass nonces, so a token works once.
pub const BREAK_GLASS_USED_FILE: &str = "break_glass_used.json";

/// Deletes our table if present, in one transaction (creating an empty table is a
/// no-op when it exists, so the delete never fails on absence). nft 1.0.6 has no
/// `destroy table`.
const DELETE_IF_PRESENT: &str = "table inet ward_isolation {}\ndelete table inet ward_isolation\n";

// ---------------------------------------------------------------------------
// Plan
// ---------------------------------------------------------------------------

/// An IP network (address and prefix length), host bits cleared on construction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct IpNet {
    addr: IpAddr,
    prefix: u8,
}

impl IpNet {
    /// A network; `addr` is canonicalised (v4-mapped v6 becomes v4) and masked.
    pub fn new(addr: IpAddr, prefix: u8) -> Result<IpNet, PlanError> {
        let addr = addr.to_canonical();
        let (addr, prefix) = match addr {
            IpAddr::V4(a) => {
                if prefix > 32 {
                    return Err(PlanError::BadPrefix(prefix));
                }
                let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
                (IpAddr::V4((u32::from(a) & mask).into()), prefix)
            }
            IpAddr::V6(a) => {
                if prefix > 128 {
                    return Err(PlanError::BadPrefix(prefix));
                }
                let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
                (IpAddr::V6((u128::from(a) & mask).into()), prefix)
            }
        };
        Ok(IpNet { addr, prefix })
    }

    /// A single host (/32 or /128).
    pub fn host(addr: IpAddr) -> IpNet {
        let addr = addr.to_canonical();
        let prefix = if addr.is_ipv4() { 32 } else { 128 };
        IpNet { addr, prefix }
    }

    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    fn is_host(&self) -> bool {
        self.prefix == if self.addr.is_ipv4() { 32 } else { 128 }
    }
}

impl fmt::Display for IpNet {
    /// A host prints as its address, a network as `addr/prefix`: both valid nft syntax.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_host() {
            write!(f, "{}", self.addr)
        } else {
            write!(f, "{}/{}", self.addr, self.prefix)
        }
    }
}

impl FromStr for IpNet {
    type Err = PlanError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.split_once('/') {
            Some((a, p)) => {
                let addr: IpAddr = a.parse().map_err(|_| PlanError::BadAddress(s.to_string()))?;
                let prefix: u8 = p.parse().map_err(|_| PlanError::BadAddress(s.to_string()))?;
                IpNet::new(addr, prefix)
            }
            None => s
                .parse::<IpAddr>()
                .map(IpNet::host)
                .map_err(|_| PlanError::BadAddress(s.to_string())),
        }
    }
}

impl Serialize for IpNet {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{}/{}", self.addr, self.prefix))
    }
}

impl<'de> Deserialize<'de> for IpNet {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// An extra allowed destination. Domain names are resolved by the caller; only
/// the addresses are rendered, never the name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AllowEntry {
    Ip(IpAddr),
    Net(IpNet),
    Domain { name: String, addrs: Vec<IpAddr> },
}

impl AllowEntry {
    /// Parses an entry as the `Isolate` action carries it: an IP, a CIDR, or a
    /// domain name (returned with no addresses; the caller resolves it).
    pub fn parse(s: &str) -> Result<AllowEntry, PlanError> {
        let s = s.trim();
        if let Ok(ip) = s.parse::<IpAddr>() {
            return Ok(AllowEntry::Ip(ip));
        }
        if s.contains('/') {
            return s.parse::<IpNet>().map(AllowEntry::Net);
        }
        if is_domain_name(s) {
            return Ok(AllowEntry::Domain {
                name: s.trim_end_matches('.').to_ascii_lowercase(),
                addrs: Vec::new(),
            });
        }
        Err(PlanError::BadAllowEntry(s.to_string()))
    }

    fn nets(&self) -> Vec<IpNet> {
        match self {
            AllowEntry::Ip(ip) => vec![IpNet::host(*ip)],
            AllowEntry::Net(n) => vec![*n],
            AllowEntry::Domain { addrs, .. } => addrs.iter().map(|a| IpNet::host(*a)).collect(),
        }
    }
}

fn is_domain_name(s: &str) -> bool {
    let s = s.strip_suffix('.').unwrap_or(s);
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// What stays reachable while isolated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IsolationPlan {
    /// The collector's addresses, resolved before isolating and pinned (both families).
    pub collector: Vec<SocketAddr>,
    /// DNS is allowed to these resolvers only (none: no DNS at all).
    pub resolvers: Vec<IpAddr>,
    /// Extra allowed destinations.
    pub allow: Vec<AllowEntry>,
    /// Keep DHCP (v4 and v6) working so the lease does not expire.
    pub allow_dhcp: bool,
}

impl IsolationPlan {
    /// Refuses a plan that would lock the agent out or cannot be rendered meaningfully.
    pub fn validate(&self) -> Result<(), PlanError> {
        if self.collector.is_empty() {
            return Err(PlanError::NoCollector);
        }
        for c in &self.collector {
            if c.ip().is_unspecified() || c.port() == 0 {
                return Err(PlanError::BadCollector(*c));
            }
        }
        for r in &self.resolvers {
            if r.is_unspecified() {
                return Err(PlanError::BadAddress(r.to_string()));
            }
        }
        for a in &self.allow {
            if let AllowEntry::Domain { name, addrs } = a
                && addrs.is_empty()
            {
                return Err(PlanError::Unresolved(name.clone()));
            }
            // A /0 allow entry would undo the isolation.
            if a.nets().iter().any(|n| n.prefix == 0 || n.addr.is_unspecified()) {
                return Err(PlanError::TooBroad(format!("{a:?}")));
            }
        }
        Ok(())
    }
}

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum PlanError {
    #[error("the plan names no collector address: applying it would lock the agent out")]
    NoCollector,
    #[error("collector address {0} is unusable (unspecified address or port 0)")]
    BadCollector(SocketAddr),
    #[error("not an IP address or CIDR: {0:?}")]
    BadAddress(String),
    #[error("prefix length {0} is too long for the address family")]
    BadPrefix(u8),
    #[error("not an IP, CIDR or domain name: {0:?}")]
    BadAllowEntry(String),
    #[error("allowed domain {0:?} was not resolved to any address")]
    Unresolved(String),
    #[error("allow entry {0} would allow everything")]
    TooBroad(String),
}

// ---------------------------------------------------------------------------
// Render
// ---------------------------------------------------------------------------

fn family(a: &IpAddr) -> &'static str {
    if a.is_ipv4() { "ip" } else { "ip6" }
}

/// Renders the whole nft file: delete our table if present, then create it.
///
/// Deterministic: inputs are canonicalised, sorted and deduplicated, so equal
/// plans render to equal text whatever their order. Only parsed addresses and
/// ports reach the output.
pub fn render(plan: &IsolationPlan) -> String {
    let collectors: BTreeSet<(IpAddr, u16)> = plan
        .collector
        .iter()
        .map(|c| (c.ip().to_canonical(), c.port()))
        .collect();
    let resolvers: BTreeSet<IpAddr> = plan.resolvers.iter().map(|r| r.to_canonical()).collect();
    let allow: BTreeSet<IpNet> = plan.allow.iter().flat_map(AllowEntry::nets).collect();

    let mut input = vec!["iif \"lo\" accept".to_string()];
    let mut output = vec!["oif \"lo\" accept".to_string()];

    for (ip, port) in &collectors {
        let f = family(ip);
        output.push(format!("{f} daddr {ip} udp dport {port} accept"));
        input.push(format!("{f} saddr {ip} udp sport {port} ct state established accept"));
    }
    if plan.allow_dhcp {
        output.push("meta nfproto ipv4 udp sport 68 udp dport 67 accept".to_string());
        input.push("meta nfproto ipv4 udp sport 67 udp dport 68 accept".to_string());
        output.push("meta nfproto ipv6 udp sport 546 udp dport 547 accept".to_string());
        input.push("meta nfproto ipv6 udp sport 547 udp dport 546 accept".to_string());
    }
    for ip in &resolvers {
        let f = family(ip);
        for proto in ["udp", "tcp"] {
            output.push(format!("{f} daddr {ip} {proto} dport 53 accept"));
            input.push(format!("{f} saddr {ip} {proto} sport 53 ct state established accept"));
        }
    }
    output.push("icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert, nd-router-solicit } accept".to_string());
    input.push(
        "icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert, nd-router-advert } ip6 hoplimit 255 accept".to_string(),
    );
    for net in &allow {
        let f = family(&net.addr);
        output.push(format!("{f} daddr {net} accept"));
        input.push(format!("{f} saddr {net} ct state established accept"));
    }

    let mut out = String::new();
    out.push_str("# Ward network isolation, generated by ward-agent: do not edit, the agent re-applies it.\n");
    out.push_str(DELETE_IF_PRESENT);
    out.push_str(&format!("table inet {TABLE} {{\n"));
    for (name, hook, rules) in [("input", "input", &input), ("output", "output", &output)] {
        out.push_str(&format!("\tchain {name} {{\n"));
        out.push_str(&format!(
            "\t\ttype filter hook {hook} priority {PRIORITY}; policy drop;\n"
        ));
        for r in rules {
            out.push_str(&format!("\t\t{r}\n"));
        }
        out.push_str("\t}\n");
    }
    out.push_str("\tchain forward {\n");
    out.push_str(&format!(
        "\t\ttype filter hook forward priority {PRIORITY}; policy drop;\n"
    ));
    out.push_str("\t}\n");
    out.push_str("}\n");
    out
}

// ---------------------------------------------------------------------------
// nft runner
// ---------------------------------------------------------------------------

#[derive(Debug, Error)]
pub enum NftError {
    #[error("cannot run {program}: {source}")]
    Spawn { program: PathBuf, source: std::io::Error },
    #[error("`nft {args}` failed ({status}): {stderr}")]
    Failed {
        args: String,
        status: String,
        stderr: String,
    },
    #[error("`nft {args}` printed output that is not UTF-8")]
    NotUtf8 { args: String },
}

/// A SHA-256 of the normalised `nft list table inet ward_isolation`, taken right
/// after applying; a later listing with another digest means the table changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fingerprint(pub String);

impl Fingerprint {
    pub fn of_listing(listing: &str) -> Fingerprint {
        let normalised = normalise_listing(listing);
        let d = ring::digest::digest(&ring::digest::SHA256, normalised.as_bytes());
        Fingerprint(hex::encode(d.as_ref()))
    }
}

/// Trims lines, drops blank ones and `# handle` annotations.
fn normalise_listing(listing: &str) -> String {
    listing
        .lines()
        .map(|l| match l.find("# handle") {
            Some(i) => l[..i].trim(),
            None => l.trim(),
        })
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("\n")
}

/// How the live table compares with what we applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableStatus {
    Intact,
    Missing,
    Changed,
}

/// Runs the `nft` binary: no shell, fixed arguments, rulesets on stdin, a clean
/// environment (`LC_ALL=C`).
#[derive(Debug, Clone)]
pub struct Nft {
    program: PathBuf,
}

impl Default for Nft {
    fn default() -> Self {
        Nft::new()
    }
}

impl Nft {
    /// The system `nft`, looked up in the usual sbin directories (not `$PATH`,
    /// which a tampered environment could point elsewhere); plain `nft` if none exists.
    pub fn new() -> Nft {
        let program = ["/usr/sbin/nft", "/sbin/nft", "/usr/bin/nft", "/bin/nft"]
            .iter()
            .map(PathBuf::from)
            .find(|p| p.is_file())
            .unwrap_or_else(|| PathBuf::from("nft"));
        Nft { program }
    }

    pub fn with_program(program: impl Into<PathBuf>) -> Nft {
        Nft {
            program: program.into(),
        }
    }

    pub fn program(&self) -> &Path {
        &self.program
    }

    fn run(&self, args: &[&str], stdin: Option<&str>) -> Result<String, NftError> {
        let joined = args.join(" ");
        let mut cmd = Command::new(&self.program);
        cmd.args(args)
            .env_clear()
            .env("LC_ALL", "C")
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let spawn_err = |source| NftError::Spawn {
            program: self.program.clone(),
            source,
        };
        let mut child = cmd.spawn().map_err(spawn_err)?;
        // Written from a thread so a large ruleset cannot deadlock against nft's output.
        let writer = match (stdin, child.stdin.take()) {
            (Some(text), Some(mut pipe)) => {
                let text = text.to_string();
                Some(std::thread::spawn(move || pipe.write_all(text.as_bytes())))
            }
            _ => None,
        };
        let out = child.wait_with_output().map_err(spawn_err)?;
        let stdin_written = writer.is_none_or(|w| matches!(w.join(), Ok(Ok(()))));
        if !out.status.success() {
            return Err(NftError::Failed {
                args: joined,
                status: out.status.to_string(),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
        if !stdin_written {
            return Err(NftError::Failed {
                args: joined,
                status: out.status.to_string(),
                stderr: "the ruleset was not fully written to nft's stdin".to_string(),
            });
        }
        String::from_utf8(out.stdout).map_err(|_| NftError::NotUtf8 { args: joined })
    }

    /// `nft --version`, e.g. "nftables v1.0.6 (Lester Gooch #5)".
    pub fn version(&self) -> Result<String, NftError> {
        self.run(&["--version"], None).map(|s| s.trim().to_string())
    }

    /// Validates a ruleset without applying it (`nft -c -f -`).
    pub fn check(&self, ruleset: &str) -> Result<(), NftError> {
        self.run(&["-c", "-f", "-"], Some(ruleset)).map(|_| ())
    }

    /// Loads a ruleset in one transaction (`nft -f -`) and returns the fingerprint
    /// of the table as the kernel now holds it.
    pub fn apply(&self, ruleset: &str) -> Result<Fingerprint, NftError> {
        self.run(&["-f", "-"], Some(ruleset))?;
        let listing = self.listing()?.ok_or_else(|| NftError::Failed {
            args: "-f -".to_string(),
            status: "applied".to_string(),
            stderr: format!("table inet {TABLE} is absent right after applying"),
        })?;
        Ok(Fingerprint::of_listing(&listing))
    }

    /// Deletes `table inet ward_isolation` and nothing else; absent is fine.
    pub fn release(&self) -> Result<(), NftError> {
        self.run(&["-f", "-"], Some(DELETE_IF_PRESENT)).map(|_| ())
    }

    /// Whether our table exists (`nft list tables`).
    pub fn table_exists(&self) -> Result<bool, NftError> {
        let tables = self.run(&["list", "tables"], None)?;
        let ours = format!("table inet {TABLE}");
        Ok(tables.lines().any(|l| l.trim() == ours))
    }

    /// The listing of our table, `None` if it does not exist.
    pub fn listing(&self) -> Result<Option<String>, NftError> {
        if !self.table_exists()? {
            return Ok(None);
        }
        self.run(&["list", "table", "inet", TABLE], None).map(Some)
    }

    /// Compares the live table with the fingerprint taken when it was applied.
    pub fn status(&self, expected: &Fingerprint) -> Result<TableStatus, NftError> {
        Ok(match self.listing()? {
            None => TableStatus::Missing,
            Some(l) if Fingerprint::of_listing(&l) == *expected => TableStatus::Intact,
            Some(_) => TableStatus::Changed,
        })
    }

    /// True when the table exists and matches `expected`.
    pub fn is_intact(&self, expected: &Fingerprint) -> Result<bool, NftError> {
        self.status(expected).map(|s| s == TableStatus::Intact)
    }
}

// ---------------------------------------------------------------------------
// State
// ---------------------------------------------------------------------------

/// What `isolation.json` holds. No file means not isolated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IsolationState {
    pub isolated: bool,
    pub plan: IsolationPlan,
    pub applied_at_ms: u64,
    pub command_id: Option<CommandId>,
}

impl IsolationState {
    /// Reads the state file; `None` when it does not exist.
    pub fn load(state_dir: &Path) -> Result<Option<IsolationState>, IsolateError> {
        let path = state_dir.join(STATE_FILE);
        match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| IsolateError::Corrupt {
                    path,
                    detail: e.to_string(),
                }),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(source) => Err(IsolateError::Io { path, source }),
        }
    }

    /// Writes the state file atomically (mode 0600).
    pub fn store(&self, state_dir: &Path) -> Result<(), IsolateError> {
        let path = state_dir.join(STATE_FILE);
        let json = serde_json::to_vec_pretty(self).map_err(|e| IsolateError::Corrupt {
            path: path.clone(),
            detail: e.to_string(),
        })?;
        write_atomic(&path, &json, 0o600)?;
        Ok(())
    }

    /// What the heartbeat reports.
    pub fn heartbeat_state(state: Option<&IsolationState>) -> ward_protocol::IsolationState {
        match state {
            Some(s) if s.isolated => ward_protocol::IsolationState::Isolated,
            _ => ward_protocol::IsolationState::None,
        }
    }
}

#[derive(Debug, Error)]
pub enum IsolateError {
    #[error("invalid isolation plan: {0}")]
    Plan(#[from] PlanError),
    #[error(transparent)]
    Nft(#[from] NftError),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path} is corrupt: {detail}")]
    Corrupt { path: PathBuf, detail: String },
    #[error(transparent)]
    State(#[from] IdentityError),
    /// The dead-man switch fired: the previous state is back in force.
    #[error("isolation rolled back: {reason}")]
    RolledBack { reason: String },
    /// The self-test failed and so did the rollback: the table may still be in place.
    #[error("isolation self-test failed ({reason}) and the rollback failed too: {rollback}")]
    RollbackFailed { reason: String, rollback: String },
    /// A destination that must be blocked answered. The table stays in place
    /// (failing closed) and the state is persisted; the caller reports the failure.
    #[error("isolation is not enforced: blocked address {0} answered")]
    NotEnforced(SocketAddr),
    #[error("a blocking task failed: {0}")]
    Task(String),
}

// ---------------------------------------------------------------------------
// Guard
// ---------------------------------------------------------------------------

/// Result of one [`Guard::reassert`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reassert {
    Intact,
    /// The state file says released (e.g. a break-glass release run from the
    /// console by another process): nothing was touched; drop the guard.
    Released,
    /// The table was missing or changed and has been put back: raise an alert.
    Tampered(TableStatus),
}

/// Keeps an applied isolation in force: call [`Guard::reassert`] every few seconds.
#[derive(Debug, Clone)]
pub struct Guard {
    nft: Nft,
    state_dir: PathBuf,
    ruleset: String,
    fingerprint: Fingerprint,
}

impl Guard {
    pub fn new(nft: Nft, state_dir: PathBuf, ruleset: String, fingerprint: Fingerprint) -> Guard {
        Guard {
            nft,
            state_dir,
            ruleset,
            fingerprint,
        }
    }

    pub fn ruleset(&self) -> &str {
        &self.ruleset
    }

    pub fn fingerprint(&self) -> &Fingerprint {
        &self.fingerprint
    }

    /// Re-applies the ruleset if the table is missing or differs from what was
    /// applied, unless the state file says the device was released meanwhile.
    /// Blocking (reads the state file, runs `nft` two or three times: milliseconds).
    pub fn reassert(&mut self) -> Result<Reassert, IsolateError> {
        if !IsolationState::load(&self.state_dir)?.is_some_and(|s| s.isolated) {
            return Ok(Reassert::Released);
        }
        reassert(&self.nft, &self.ruleset, &mut self.fingerprint)
    }
}

/// The check behind [`Guard::reassert`]: updates `fingerprint` after a re-apply.
pub fn reassert(nft: &Nft, ruleset: &str, fingerprint: &mut Fingerprint) -> Result<Reassert, IsolateError> {
    match nft.status(fingerprint)? {
        TableStatus::Intact => Ok(Reassert::Intact),
        other => {
            *fingerprint = nft.apply(ruleset)?;
            Ok(Reassert::Tampered(other))
        }
    }
}

// ---------------------------------------------------------------------------
// Isolate, self-test, restore, release
// ---------------------------------------------------------------------------

/// The dead-man switch's settings.
#[derive(Debug, Clone)]
pub struct SelfTest {
    /// The collector round-trip must complete within this time.
    pub collector_timeout: Duration,
    /// An address that must not answer while isolated (a TCP connect is tried).
    pub blocked: Option<SocketAddr>,
    pub blocked_timeout: Duration,
}

impl Default for SelfTest {
    fn default() -> Self {
        SelfTest {
            collector_timeout: Duration::from_secs(60),
            blocked: Some(SocketAddr::from(([1, 1, 1, 1], 443))),
            blocked_timeout: Duration::from_secs(3),
        }
    }
}

/// How the blocked-address probe went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlockedProbe {
    Skipped,
    /// No answer within the timeout, or the local stack refused to send.
    Blocked(String),
    /// A connection or a refusal (RST) came back: packets got through.
    Reachable,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SelfTestReport {
    pub collector_round_trip: Duration,
    pub blocked: BlockedProbe,
}

/// What [`isolate`] returns on success.
#[derive(Debug)]
pub struct Isolated {
    pub guard: Guard,
    pub report: SelfTestReport,
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, IsolateError> + Send + 'static,
) -> Result<T, IsolateError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| IsolateError::Task(e.to_string()))?
}

/// Tries a TCP connect to `addr`; anything that comes back means not blocked.
pub async fn probe_blocked(addr: SocketAddr, timeout: Duration) -> BlockedProbe {
    match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(addr)).await {
        Err(_) => BlockedProbe::Blocked(format!("no answer within {timeout:?}")),
        Ok(Ok(_)) => BlockedProbe::Reachable,
        Ok(Err(e)) if e.kind() == ErrorKind::ConnectionRefused => BlockedProbe::Reachable,
        Ok(Err(e)) => BlockedProbe::Blocked(e.to_string()),
    }
}

/// Isolates the device: validate, `nft -c`, apply in one transaction, self-test,
/// then persist. `probe_collector` must perform a *fresh authenticated*
/// round-trip with the collector (not reuse a cached answer).
///
/// If the probe fails or times out, the previous state is restored (the previous
/// isolation re-applied, or the table deleted) and
/// [`IsolateError::RolledBack`] says why. If the blocked address answers,
/// [`IsolateError::NotEnforced`] is returned with the table kept in place and
/// the state persisted ([`restore`] gives its guard).
///
/// The caller serialises isolate, release and the guard's reassert (one task owns
/// them): a guard for the previous plan reasserted while this runs would put the
/// previous ruleset back. Replace the old guard with the returned one.
pub async fn isolate<F, Fut, E>(
    state_dir: &Path,
    nft: &Nft,
    plan: IsolationPlan,
    command_id: Option<CommandId>,
    now_ms: u64,
    self_test: &SelfTest,
    probe_collector: F,
) -> Result<Isolated, IsolateError>
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<(), E>>,
    E: fmt::Display,
{
    plan.validate()?;
    let previous = IsolationState::load(state_dir)?.filter(|s| s.isolated);
    let ruleset = render(&plan);
    let fingerprint = {
        let (nft, ruleset) = (nft.clone(), ruleset.clone());
        blocking(move || {
            nft.check(&ruleset)?;
            Ok(nft.apply(&ruleset)?)
        })
        .await?
    };

    let started = Instant::now();
    let probe = tokio::time::timeout(self_test.collector_timeout, probe_collector()).await;
    let failure = match probe {
        Ok(Ok(())) => None,
        Ok(Err(e)) => Some(format!("collector unreachable: {e}")),
        Err(_) => Some(format!(
            "collector unreachable: no round-trip within {:?}",
            self_test.collector_timeout
        )),
    };
    if let Some(reason) = failure {
        let nft = nft.clone();
        let rollback = blocking(move || {
            match previous {
                Some(prev) => {
                    nft.apply(&render(&prev.plan))?;
                }
                None => nft.release()?,
            }
            Ok(())
        })
        .await;
        return Err(match rollback {
            Ok(()) => IsolateError::RolledBack { reason },
            Err(e) => IsolateError::RollbackFailed {
                reason,
                rollback: e.to_string(),
            },
        });
    }
    let collector_round_trip = started.elapsed();

    let blocked = match self_test.blocked {
        Some(addr) => probe_blocked(addr, self_test.blocked_timeout).await,
        None => BlockedProbe::Skipped,
    };
    let state = IsolationState {
        isolated: true,
        plan,
        applied_at_ms: now_ms,
        command_id,
    };
    state.store(state_dir)?;
    if let (Some(addr), BlockedProbe::Reachable) = (self_test.blocked, &blocked) {
        return Err(IsolateError::NotEnforced(addr));
    }
    Ok(Isolated {
        guard: Guard::new(nft.clone(), state_dir.to_path_buf(), ruleset, fingerprint),
        report: SelfTestReport {
            collector_round_trip,
            blocked,
        },
    })
}

/// On agent start: makes the kernel match the state file. Isolated: re-applies
/// (atomic, so an existing table is simply replaced) and returns the guard. Not
/// isolated: removes a table left behind (e.g. a crash during a self-test).
pub fn restore(state_dir: &Path) -> Result<Option<Guard>, IsolateError> {
    restore_with(state_dir, &Nft::new())
}

/// [`restore`] with a given `nft`.
pub fn restore_with(state_dir: &Path, nft: &Nft) -> Result<Option<Guard>, IsolateError> {
    match IsolationState::load(state_dir)? {
        Some(state) if state.isolated => {
            let ruleset = render(&state.plan);
            let fingerprint = nft.apply(&ruleset)?;
            Ok(Some(Guard::new(
                nft.clone(),
                state_dir.to_path_buf(),
                ruleset,
                fingerprint,
            )))
        }
        _ => match nft.release() {
            Ok(()) => Ok(None),
            // Never isolated and no nft on this host: nothing can be left over.
            Err(NftError::Spawn { source, .. }) if source.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        },
    }
}

/// Releases isolation: records "not isolated" first (so a crash cannot bring the
/// table back on restart), then deletes exactly Ward's table.
pub fn release(state_dir: &Path, nft: &Nft) -> Result<(), IsolateError> {
    if let Some(mut state) = IsolationState::load(state_dir)?
        && state.isolated
    {
        state.isolated = false;
        state.store(state_dir)?;
    }
    nft.release()?;
    Ok(())
}

// ---------------------------------------------------------------------------
// Break-glass
// ---------------------------------------------------------------------------

/// Why an offline break-glass release was refused or failed.
#[derive(Debug, Error)]
pub enum BreakGlassError {
    /// Not a valid token for this device now (see [`BreakGlassToken::verify`]).
    #[error(transparent)]
    Token(#[from] ward_protocol::BreakGlassError),
    #[error("break-glass token was already used")]
    Reused,
    #[error("release failed: {0}")]
    Release(#[from] IsolateError),
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct UsedNonces {
    /// Hex nonce and the token's expiry; pruned once long expired.
    used: Vec<(String, u64)>,
}

/// Verifies an offline break-glass token and releases isolation.
///
/// Order: decode, verify the signature against `command_keys`, check the magic,
/// the device, the expiry and the validity cap, refuse a used nonce; then the
/// nonce is recorded as used (before anything else, so a crash cannot make it
/// reusable) and the isolation released.
pub fn break_glass_release(
    state_dir: &Path,
    token_text: &str,
    device_id: DeviceId,
    command_keys: &[PublicKey],
    now_ms: u64,
) -> Result<(), BreakGlassError> {
    break_glass_release_with(state_dir, &Nft::new(), token_text, device_id, command_keys, now_ms)
}

/// [`break_glass_release`] with a given `nft`.
pub fn break_glass_release_with(
    state_dir: &Path,
    nft: &Nft,
    token_text: &str,
    device_id: DeviceId,
    command_keys: &[PublicKey],
    now_ms: u64,
) -> Result<(), BreakGlassError> {
    let token = BreakGlassToken::verify(token_text, device_id, command_keys, now_ms)?;
    let path = state_dir.join(BREAK_GLASS_USED_FILE);
    let mut used: UsedNonces = match fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| IsolateError::Corrupt {
            path: path.clone(),
            detail: e.to_string(),
        })?,
        Err(e) if e.kind() == ErrorKind::NotFound => UsedNonces::default(),
        Err(source) => return Err(IsolateError::Io { path, source }.into()),
    };
    let nonce = hex::encode(token.nonce);
    if used.used.iter().any(|(n, _)| *n == nonce) {
        return Err(BreakGlassError::Reused);
    }
    // An expired token is refused anyway; keep a day's margin for clock steps.
    used.used
        .retain(|(_, exp)| exp.saturating_add(24 * 3600 * 1000) > now_ms);
    used.used.push((nonce, token.expires_at_ms));
    let json = serde_json::to_vec_pretty(&used).map_err(|e| IsolateError::Corrupt {
        path: path.clone(),
        detail: e.to_string(),
    })?;
    write_atomic(&path, &json, 0o600).map_err(IsolateError::from)?;
    release(state_dir, nft)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use ring::rand::SystemRandom;
    use ward_protocol::{BreakGlassError as TokenError, Id128, SignatureError, SigningKey};

    fn plan() -> IsolationPlan {
        IsolationPlan {
            collector: vec![
                "[2001:db8::10]:4433".parse().unwrap(),
                "203.0.113.10:4433".parse().unwrap(),
            ],
            resolvers: vec!["192.0.2.53".parse().unwrap(), "2001:db8::53".parse().unwrap()],
            allow: vec![
                AllowEntry::parse("198.51.100.7").unwrap(),
                AllowEntry::parse("10.1.2.3/8").unwrap(),
                AllowEntry::Domain {
                    name: "updates.example.com".to_string(),
                    addrs: vec!["2001:db8:1::1".parse().unwrap()],
                },
            ],
            allow_dhcp: true,
        }
    }

    const GOLDEN: &str = "\
# Ward network isolation, generated by ward-agent: do not edit, the agent re-applies it.
table inet ward_isolation {}
delete table inet ward_isolation
table inet ward_isolation {
\tchain input {
\t\ttype filter hook input priority -10; policy drop;
\t\tiif \"lo\" accept
\t\tip saddr 203.0.113.10 udp sport 4433 ct state established accept
\t\tip6 saddr 2001:db8::10 udp sport 4433 ct state established accept
\t\tmeta nfproto ipv4 udp sport 67 udp dport 68 accept
\t\tmeta nfproto ipv6 udp sport 547 udp dport 546 accept
\t\tip saddr 192.0.2.53 udp sport 53 ct state established accept
\t\tip saddr 192.0.2.53 tcp sport 53 ct state established accept
\t\tip6 saddr 2001:db8::53 udp sport 53 ct state established accept
\t\tip6 saddr 2001:db8::53 tcp sport 53 ct state established accept
\t\ticmpv6 type { nd-neighbor-solicit, nd-neighbor-advert, nd-router-advert } ip6 hoplimit 255 accept
\t\tip saddr 10.0.0.0/8 ct state established accept
\t\tip saddr 198.51.100.7 ct state established accept
\t\tip6 saddr 2001:db8:1::1 ct state established accept
\t}
\tchain output {
\t\ttype filter hook output priority -10; policy drop;
\t\toif \"lo\" accept
\t\tip daddr 203.0.113.10 udp dport 4433 accept
\t\tip6 daddr 2001:db8::10 udp dport 4433 accept
\t\tmeta nfproto ipv4 udp sport 68 udp dport 67 accept
\t\tmeta nfproto ipv6 udp sport 546 udp dport 547 accept
\t\tip daddr 192.0.2.53 udp dport 53 accept
\t\tip daddr 192.0.2.53 tcp dport 53 accept
\t\tip6 daddr 2001:db8::53 udp dport 53 accept
\t\tip6 daddr 2001:db8::53 tcp dport 53 accept
\t\ticmpv6 type { nd-neighbor-solicit, nd-neighbor-advert, nd-router-solicit } accept
\t\tip daddr 10.0.0.0/8 accept
\t\tip daddr 198.51.100.7 accept
\t\tip6 daddr 2001:db8:1::1 accept
\t}
\tchain forward {
\t\ttype filter hook forward priority -10; policy drop;
\t}
}
";

    /// `nft -c` where nft exists and may check (root or CAP_NET_ADMIN); otherwise says why it skipped.
    fn nft_check(ruleset: &str) {
        let nft = Nft::new();
        if nft.version().is_err() {
            eprintln!("nft not installed: syntax check skipped");
            return;
        }
        match nft.check(ruleset) {
            Ok(()) => {}
            Err(NftError::Failed { stderr, .. }) if stderr.contains("Operation not permitted") => {
                eprintln!("nft -c not permitted here: syntax check skipped");
            }
            Err(e) => panic!("nft -c refused the ruleset: {e}\n{ruleset}"),
        }
    }

    #[test]
    fn render_golden_v4_v6() {
        let text = render(&plan());
        assert_eq!(text, GOLDEN, "got:\n{text}");
        nft_check(&text);
    }

    #[test]
    fn render_is_deterministic_and_order_independent() {
        let mut p = plan();
        let a = render(&p);
        p.collector.reverse();
        p.resolvers.reverse();
        p.allow.reverse();
        p.collector.push(p.collector[0]);
        assert_eq!(render(&p), a);
        // v4-mapped v6 renders as v4.
        let mut q = plan();
        q.collector = vec!["[::ffff:203.0.113.10]:4433".parse().unwrap()];
        assert!(render(&q).contains("ip daddr 203.0.113.10 udp dport 4433 accept"));
    }

    #[test]
    fn no_blanket_established_and_dns_only_to_resolvers() {
        let text = render(&plan());
        assert!(!text.contains("established,related"));
        assert!(!text.contains("related"));
        for line in text.lines().filter(|l| l.contains("ct state")) {
            assert!(
                line.contains(" saddr "),
                "every established match is scoped to a source: {line}"
            );
        }
        for line in text.lines().filter(|l| l.contains("port 53")) {
            assert!(
                line.contains("192.0.2.53") || line.contains("2001:db8::53"),
                "DNS rule not scoped to a resolver: {line}"
            );
        }
        let mut none = plan();
        none.resolvers.clear();
        let text = render(&none);
        assert!(!text.contains("53 "), "no resolvers: no DNS at all\n{text}");
        nft_check(&text);
    }

    #[test]
    fn minimal_plan_without_dhcp_checks() {
        let p = IsolationPlan {
            collector: vec!["127.0.0.1:4433".parse().unwrap()],
            resolvers: vec![],
            allow: vec![],
            allow_dhcp: false,
        };
        let text = render(&p);
        assert!(!text.contains("dport 67"));
        assert!(!text.contains("dport 547"));
        assert!(text.contains("chain forward"));
        nft_check(&text);
    }

    #[test]
    fn plan_validation() {
        let mut p = plan();
        p.validate().unwrap();
        p.collector.clear();
        assert_eq!(p.validate(), Err(PlanError::NoCollector));
        let mut p = plan();
        p.collector = vec!["0.0.0.0:4433".parse().unwrap()];
        assert!(matches!(p.validate(), Err(PlanError::BadCollector(_))));
        let mut p = plan();
        p.allow.push(AllowEntry::parse("0.0.0.0/0").unwrap());
        assert!(matches!(p.validate(), Err(PlanError::TooBroad(_))));
        let mut p = plan();
        p.allow.push(AllowEntry::parse("Example.COM.").unwrap());
        assert_eq!(p.validate(), Err(PlanError::Unresolved("example.com".to_string())));
    }

    #[test]
    fn allow_entries_parse_strictly() {
        assert_eq!(
            AllowEntry::parse("10.9.8.7/16").unwrap(),
            AllowEntry::Net(IpNet::new("10.9.0.0".parse().unwrap(), 16).unwrap())
        );
        assert_eq!(
            AllowEntry::parse("2001:db8::1").unwrap(),
            AllowEntry::Ip("2001:db8::1".parse().unwrap())
        );
        for bad in [
            "10.0.0.0/33",
            "::/129",
            "a b",
            "x;flush ruleset",
            "evil\"}",
            "",
            "-a.com",
            "1.2.3.4/x",
        ] {
            assert!(AllowEntry::parse(bad).is_err(), "{bad:?} accepted");
        }
        let n: IpNet = "2001:db8::ff/32".parse().unwrap();
        assert_eq!(n.to_string(), "2001:db8::/32");
        let json = serde_json::to_string(&n).unwrap();
        assert_eq!(serde_json::from_str::<IpNet>(&json).unwrap(), n);
        assert!(serde_json::from_str::<IpNet>("\"1.2.3.4/40\"").is_err());
    }

    #[test]
    fn listing_fingerprint_ignores_whitespace_and_handles() {
        let a = "table inet ward_isolation {\n\tchain input {\n\t\tiif \"lo\" accept\n\t}\n}\n";
        let b = "table inet ward_isolation { # handle 7\n  chain input { # handle 1\n iif \"lo\" accept # handle 3\n\n }\n}";
        assert_eq!(Fingerprint::of_listing(a), Fingerprint::of_listing(b));
        let c = a.replace("accept", "drop");
        assert_ne!(Fingerprint::of_listing(a), Fingerprint::of_listing(&c));
    }

    #[test]
    fn state_round_trips_and_missing_means_not_isolated() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(IsolationState::load(dir.path()).unwrap(), None);
        assert_eq!(
            IsolationState::heartbeat_state(None),
            ward_protocol::IsolationState::None
        );
        let state = IsolationState {
            isolated: true,
            plan: plan(),
            applied_at_ms: 1_700_000_000_000,
            command_id: Some(CommandId(Id128([7; 16]))),
        };
        state.store(dir.path()).unwrap();
        let back = IsolationState::load(dir.path()).unwrap().unwrap();
        assert_eq!(back, state);
        assert_eq!(
            IsolationState::heartbeat_state(Some(&back)),
            ward_protocol::IsolationState::Isolated
        );
        fs::write(dir.path().join(STATE_FILE), b"{not json").unwrap();
        assert!(matches!(
            IsolationState::load(dir.path()),
            Err(IsolateError::Corrupt { .. })
        ));
    }

    fn keys() -> (SigningKey, SigningKey) {
        let rng = SystemRandom::new();
        (
            SigningKey::generate(&rng).unwrap().0,
            SigningKey::generate(&rng).unwrap().0,
        )
    }

    const NOW: u64 = 1_800_000_000_000;
    const DAY: u64 = 24 * 3600 * 1000;

    /// A stand-in for `nft -f -` without root: `sort -f -` (ignore case, read
    /// stdin) drains the ruleset and exits 0. An existing binary, so no freshly
    /// written executable races with other tests' forks (ETXTBSY).
    fn fake_nft() -> Nft {
        Nft::with_program("sort")
    }

    #[test]
    fn break_glass_works_once_for_its_device_before_expiry() {
        let (key, other_key) = keys();
        let dir = tempfile::tempdir().unwrap();
        let nft = fake_nft();
        let device = DeviceId(Id128([1; 16]));
        let other_device = DeviceId(Id128([2; 16]));
        let pins = [key.public_key()];
        IsolationState {
            isolated: true,
            plan: plan(),
            applied_at_ms: NOW - DAY,
            command_id: None,
        }
        .store(dir.path())
        .unwrap();
        let release =
            |text: &str, dev: DeviceId, now: u64| break_glass_release_with(dir.path(), &nft, text, dev, &pins, now);

        let token = BreakGlassToken::new(device, NOW + 3 * DAY, [9; 16]).sign(&key).unwrap();
        assert!(matches!(
            release(&token, other_device, NOW),
            Err(BreakGlassError::Token(TokenError::WrongDevice { .. }))
        ));
        assert!(matches!(
            release(&token, device, NOW + 3 * DAY),
            Err(BreakGlassError::Token(TokenError::Expired { .. }))
        ));
        let foreign = BreakGlassToken::new(device, NOW + DAY, [8; 16])
            .sign(&other_key)
            .unwrap();
        assert!(matches!(
            release(&foreign, device, NOW),
            Err(BreakGlassError::Token(TokenError::Signature(
                SignatureError::UnknownKey
            )))
        ));
        let long = BreakGlassToken::new(device, NOW + 30 * DAY, [6; 16])
            .sign(&key)
            .unwrap();
        assert!(matches!(
            release(&long, device, NOW),
            Err(BreakGlassError::Token(TokenError::TooLongLived { .. }))
        ));
        assert!(matches!(
            release("not a token!", device, NOW),
            Err(BreakGlassError::Token(TokenError::Malformed(_)))
        ));
        let mut tampered = token.clone().into_bytes();
        let mid = tampered.len() / 2;
        tampered[mid] = if tampered[mid] == b'A' { b'B' } else { b'A' };
        assert!(release(std::str::from_utf8(&tampered).unwrap(), device, NOW).is_err());

        // Refusals left the device isolated.
        assert!(IsolationState::load(dir.path()).unwrap().unwrap().isolated);
        release(&token, device, NOW).unwrap();
        assert!(!IsolationState::load(dir.path()).unwrap().unwrap().isolated);
        assert!(matches!(release(&token, device, NOW + 1), Err(BreakGlassError::Reused)));
    }
}
