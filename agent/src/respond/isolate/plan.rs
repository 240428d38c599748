//! What stays reachable while isolated ([`IsolationPlan`], its [`AllowEntry`]s and
//! their validation) and [`render`], which turns a plan into the nft file for
//! `table inet ward_isolation`. Pure: no IO; only parsed addresses, networks and
//! ports reach the text.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};

use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::cidr::IpNet;
use super::nft::DELETE_IF_PRESENT;
use super::{PRIORITY, TABLE};

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
            if a.nets().iter().any(|n| n.prefix() == 0 || n.addr().is_unspecified()) {
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
        let f = family(&net.addr());
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

/// The plan the unit tests of the isolation modules share: v4 and v6 collectors,
/// resolvers, an address, a network and a resolved domain, DHCP on.
#[cfg(test)]
pub(crate) fn example_plan() -> IsolationPlan {
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::respond::isolate::nft::{Nft, NftError};

    fn plan() -> IsolationPlan {
        example_plan()
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
}
