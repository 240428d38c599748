//! UDP sockets and DNS lookups from cgroup BPF programs (`agent/bpf/udp.bpf.c`), for
//! the network sensor: loading and attaching them to the root cgroup v2, decoding
//! their records, parsing DNS messages, pairing queries with responses, and the small
//! cache that names a later connection's remote address after the DNS answer that
//! gave it.
//!
//! The programs are cgroup hooks (connect, sendmsg, bind, post_bind, skb egress and
//! ingress) attached beside any others through BPF links this process owns:
//! the kernel detaches them when the agent exits, even when it crashes, and every
//! one of them allows what it sees (returns 1) whatever happens, so an agent that
//! stops, or a bug in a program, never blocks the host's traffic.
//!
//! Only UDP on port 53 is read as DNS: DNS over TCP, DoT and DoH are not seen. A
//! message is read up to its first 512 bytes; a longer response keeps the answers
//! that fit. Malformed messages are counted and dropped, never trusted: every count in
//! a header is checked against the bytes before anything is allocated for it.
//!
//! Decoding and DNS parsing are pure; the loader is the only part that touches the
//! kernel. It must not emit events (the network sensor's loop in `sensor::ebpf` does).

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use aya::programs::{CgroupAttachMode, CgroupSkb, CgroupSkbAttachType, CgroupSock, CgroupSockAddr};
use aya::{Btf, EbpfLoader};

use super::ebpf::{DecodeError, LoadError, NetItem, NetOwner, Probe, addr, decode_net_item, u32_at, u64_at};
#[cfg(test)]
use ward_detect::event::NetOp;

/// The compiled UDP and DNS programs (see agent/bpf/udp.bpf.c).
static UDP_OBJECT: &[u8] = aya::include_bytes_aligned!("../../bpf/udp.bpf.o");

const KIND_DNS: u32 = 5;
// struct dns_event (udp.bpf.c): byte offsets.
const DNS_DATA_AT: usize = 96;
const DNS_MAX: usize = 512;
const DNS_QUERY: u8 = 1;
const DNS_RESPONSE: u8 = 2;

/// The cgroup v2 hierarchy's mount point: the first `cgroup2` mount of its root, from
/// /proc/self/mountinfo's text. None without cgroup v2.
pub fn cgroup2_root(mountinfo: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|line| {
        // id parent major:minor root mountpoint options [optional...] - fstype source ...
        let (before, after) = line.split_once(" - ")?;
        if after.split_whitespace().next() != Some("cgroup2") {
            return None;
        }
        let f: Vec<&str> = before.split_whitespace().collect();
        if f.get(3) != Some(&"/") {
            return None;
        }
        Some(PathBuf::from(unescape_mount(f.get(4)?)))
    })
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape_mount(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = b
            .get(i + 1..i + 4)
            .filter(|d| b[i] == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)))
            .and_then(|d| u8::from_str_radix(std::str::from_utf8(d).ok()?, 8).ok());
        match octal {
            Some(c) => {
                out.push(c);
                i += 4;
            }
            None => {
                out.push(b[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// What to attach.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hooks {
    /// Report UDP connects, sends with an address, and binds to a named port.
    pub udp: bool,
    /// Report DNS messages (UDP port 53).
    pub dns: bool,
    /// The kernel sends a (process, operation, peer) once per this window.
    pub dedup: Duration,
    /// A process whose UDP is not reported: the agent itself (its QUIC link sends a
    /// datagram with an address each time, which would come back as its own events).
    pub ignore_tgid: Option<u32>,
}

/// Loads udp.bpf.o and attaches its programs to the root cgroup v2: the socket hooks
/// (always: the DNS programs name a message's process by what they saw), the
/// packet hooks when `hooks.dns`. The programs stay attached while the probe lives.
/// The UDP of `hooks.ignore_tgid` (the agent's own QUIC link) is not reported; its
/// DNS lookups are.
pub fn load(hooks: Hooks) -> Result<Probe, LoadError> {
    let what = "UDP and DNS programs";
    let err = |detail: String| LoadError::Load { what, detail };
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| err(format!("reading /proc/self/mountinfo: {e}")))?;
    let root = cgroup2_root(&mountinfo).ok_or_else(|| err("no cgroup v2 hierarchy is mounted".into()))?;
    let cgroup = std::fs::File::open(&root).map_err(|e| err(format!("opening {}: {e}", root.display())))?;
    let btf = Btf::from_sys_fs().map_err(|e| LoadError::NoBtf(super::ebpf::chain(&e)))?;
    let dedup_ns = u64::try_from(hooks.dedup.as_nanos()).unwrap_or(u64::MAX);
    let report_udp = u8::from(hooks.udp);
    let mut ebpf = EbpfLoader::new()
        .btf(Some(&btf))
        .set_global("dedup_ns", &dedup_ns, true)
        .set_global("report_udp", &report_udp, true)
        .set_global("self_tgid", &hooks.ignore_tgid.unwrap_or(0), true)
        .set_max_entries("udp_events", super::ebpf::UDP_RING_BYTES)
        .load(UDP_OBJECT)
        .map_err(|e| err(super::ebpf::chain(&e)))?;
    // On the kernels these programs load on (5.17+, for bpf_loop) aya attaches through
    // a BPF link: links never replace or exclude other programs on the cgroup (the
    // kernel refuses any attach flag on them), and close with this process.
    let attach_err = |name: &str, e: &(dyn std::error::Error + 'static)| {
        let mut detail = format!("{name} on {}: {}", root.display(), super::ebpf::chain(e));
        if detail.contains("Operation not permitted") && !detail.contains("needs root") {
            detail.push_str(" (needs root, or CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN)");
        }
        err(detail)
    };
    for name in [
        "ward_udp_connect4",
        "ward_udp_connect6",
        "ward_udp_sendmsg4",
        "ward_udp_sendmsg6",
        "ward_udp_bind4",
        "ward_udp_bind6",
    ] {
        let prog: &mut CgroupSockAddr = ebpf
            .program_mut(name)
            .ok_or_else(|| err(format!("no program {name} in the object")))?
            .try_into()
            .map_err(|e: aya::programs::ProgramError| attach_err(name, &e))?;
        prog.load().map_err(|e| attach_err(name, &e))?;
        prog.attach(&cgroup, CgroupAttachMode::Single)
            .map_err(|e| attach_err(name, &e))?;
    }
    for name in ["ward_udp_post_bind4", "ward_udp_post_bind6"] {
        let prog: &mut CgroupSock = ebpf
            .program_mut(name)
            .ok_or_else(|| err(format!("no program {name} in the object")))?
            .try_into()
            .map_err(|e: aya::programs::ProgramError| attach_err(name, &e))?;
        prog.load().map_err(|e| attach_err(name, &e))?;
        prog.attach(&cgroup, CgroupAttachMode::Single)
            .map_err(|e| attach_err(name, &e))?;
    }
    if hooks.dns {
        for (name, direction) in [
            ("ward_dns_egress", CgroupSkbAttachType::Egress),
            ("ward_dns_ingress", CgroupSkbAttachType::Ingress),
        ] {
            let prog: &mut CgroupSkb = ebpf
                .program_mut(name)
                .ok_or_else(|| err(format!("no program {name} in the object")))?
                .try_into()
                .map_err(|e: aya::programs::ProgramError| attach_err(name, &e))?;
            prog.load().map_err(|e| attach_err(name, &e))?;
            prog.attach(&cgroup, direction, CgroupAttachMode::Single)
                .map_err(|e| attach_err(name, &e))?;
        }
    }
    drop(btf);
    Probe::from_loaded(ebpf, what, "udp_events", "udp_lost")
}

/// A DNS message as the kernel copied it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsRecord {
    /// A response (read coming in from port 53); else a query (going out to it).
    pub response: bool,
    pub source: SocketAddr,
    pub destination: SocketAddr,
    /// The process that last connected or sent on the socket (None: unknown).
    pub owner: Option<NetOwner>,
    /// The socket's cookie: pairs a response with its query.
    pub cookie: u64,
    /// The message's first bytes.
    pub payload: Vec<u8>,
    /// The message was longer than the bytes kept.
    pub cut: bool,
}

/// One record of the UDP ring buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UdpItem {
    /// A UDP connect, sendto or bind ([`super::ebpf::NetRecord`] with `udp` set), or
    /// the executable sent for a socket.
    Net(NetItem),
    Dns(DnsRecord),
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

/// Decodes one record of the UDP ring buffer.
pub fn decode_udp_item(b: &[u8]) -> Result<UdpItem, DecodeError> {
    if u32_at(b, 0) != Some(KIND_DNS) {
        return decode_net_item(b).map(UdpItem::Net);
    }
    let short = || DecodeError::Short(b.len());
    if b.len() < DNS_DATA_AT {
        return Err(short());
    }
    let dir = *b.get(4).ok_or_else(short)?;
    let family = *b.get(5).ok_or_else(short)?;
    let len = usize::from(u16_at(b, 6).ok_or_else(short)?);
    if len > DNS_MAX {
        return Err(DecodeError::Length { field: "dns", len });
    }
    let payload = b
        .get(DNS_DATA_AT..DNS_DATA_AT + len)
        .ok_or(DecodeError::Length { field: "dns", len })?;
    let wire = u32_at(b, 12).ok_or_else(short)? as usize;
    let response = match dir {
        DNS_QUERY => false,
        DNS_RESPONSE => true,
        other => return Err(DecodeError::Op(other)),
    };
    let source = SocketAddr::new(
        addr(family, b.get(16..32).unwrap_or_default())?,
        u16_at(b, 8).ok_or_else(short)?,
    );
    let destination = SocketAddr::new(
        addr(family, b.get(32..48).unwrap_or_default())?,
        u16_at(b, 10).ok_or_else(short)?,
    );
    let tgid = u32_at(b, 52).ok_or_else(short)?;
    let owner = (tgid != 0).then(|| NetOwner {
        pid: u32_at(b, 48).unwrap_or(0),
        tgid,
        uid: u32_at(b, 56).unwrap_or(0),
        start_ns: u64_at(b, 64).unwrap_or(0),
        comm: {
            let c = b.get(72..88).unwrap_or_default();
            let end = c.iter().position(|x| *x == 0).unwrap_or(c.len());
            String::from_utf8_lossy(c.get(..end).unwrap_or_default()).into_owned()
        },
    });
    Ok(UdpItem::Dns(DnsRecord {
        response,
        source,
        destination,
        owner,
        cookie: u64_at(b, 88).ok_or_else(short)?,
        payload: payload.to_vec(),
        cut: wire > len,
    }))
}

/// Why a DNS message was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DnsError {
    #[error("message of {0} bytes is shorter than a DNS header")]
    Short(usize),
    #[error("header counts {0} records that {1} bytes cannot hold")]
    Counts(usize, usize),
    #[error("message has no question")]
    NoQuestion,
    #[error("unparsable message: {0}")]
    Parse(String),
}

/// What Ward keeps of a DNS message.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DnsMessage {
    pub id: u16,
    pub response: bool,
    /// The response code (`NOERROR`, `NXDOMAIN`, ...).
    pub rcode: String,
    /// The first question's name, without the trailing dot.
    pub name: String,
    /// The first question's type (`A`, `AAAA`, ... `TYPE<n>`).
    pub qtype: String,
    /// The answers' data, in order (addresses, names, text).
    pub answers: Vec<String>,
    /// The answers that are addresses, with their TTL in seconds.
    pub addresses: Vec<(IpAddr, u32)>,
}

/// At most this many answers are kept of one message.
const MAX_ANSWERS: usize = 32;
/// A text answer is cut to this many bytes.
const MAX_TEXT: usize = 255;

/// The name of a DNS record type.
pub fn type_name(code: u16) -> String {
    let name = match code {
        1 => "A",
        2 => "NS",
        5 => "CNAME",
        6 => "SOA",
        10 => "NULL",
        12 => "PTR",
        13 => "HINFO",
        15 => "MX",
        16 => "TXT",
        28 => "AAAA",
        33 => "SRV",
        35 => "NAPTR",
        41 => "OPT",
        43 => "DS",
        46 => "RRSIG",
        48 => "DNSKEY",
        64 => "SVCB",
        65 => "HTTPS",
        252 => "AXFR",
        255 => "ANY",
        257 => "CAA",
        other => return format!("TYPE{other}"),
    };
    name.to_string()
}

fn rcode_name(code: u8) -> String {
    let name = match code {
        0 => "NOERROR",
        1 => "FORMERR",
        2 => "SERVFAIL",
        3 => "NXDOMAIN",
        4 => "NOTIMP",
        5 => "REFUSED",
        6 => "YXDOMAIN",
        7 => "YXRRSET",
        8 => "NXRRSET",
        9 => "NOTAUTH",
        10 => "NOTZONE",
        other => return format!("RCODE{other}"),
    };
    name.to_string()
}

/// Parses a DNS message (with simple-dns). `cut`: the message was longer than `b`;
/// then the answers that fit are kept (the sections after them are dropped).
pub fn parse_dns(b: &[u8], cut: bool) -> Result<DnsMessage, DnsError> {
    if b.len() < 12 {
        return Err(DnsError::Short(b.len()));
    }
    let count = |at: usize| usize::from(u16::from_be_bytes([b[at], b[at + 1]]));
    let (qd, an, ns, ar) = (count(4), count(6), count(8), count(10));
    if qd == 0 {
        return Err(DnsError::NoQuestion);
    }
    // The parser reserves room for every counted record before reading any: refuse
    // counts the bytes cannot hold (a question takes 5 bytes at least, a record 11).
    let room = b.len() - 12;
    if !cut && qd * 5 + (an + ns + ar) * 11 > room {
        return Err(DnsError::Counts(qd + an + ns + ar, b.len()));
    }
    if qd * 5 > room {
        return Err(DnsError::Counts(qd, b.len()));
    }
    let parsed = if cut {
        // Keep as many answers as parse: the counts say less, the rest is ignored.
        let mut copy = b.to_vec();
        copy[8..12].fill(0);
        let mut keep = an.min(room / 11);
        loop {
            copy[6..8].copy_from_slice(&u16::try_from(keep).unwrap_or(0).to_be_bytes());
            match simple_dns::Packet::parse(&copy) {
                Ok(p) => break message(&p, b),
                Err(e) if keep == 0 => return Err(DnsError::Parse(e.to_string())),
                Err(_) => keep -= 1,
            }
        }
    } else {
        let p = simple_dns::Packet::parse(b).map_err(|e| DnsError::Parse(e.to_string()))?;
        message(&p, b)
    };
    Ok(parsed)
}

fn message(p: &simple_dns::Packet<'_>, b: &[u8]) -> DnsMessage {
    use simple_dns::rdata::RData;
    let mut m = DnsMessage {
        id: p.id(),
        response: p.has_flags(simple_dns::PacketFlag::RESPONSE),
        rcode: rcode_name(b[3] & 0x0f),
        ..DnsMessage::default()
    };
    if let Some(q) = p.questions.first() {
        m.name = q.qname.to_string();
        m.qtype = type_name(u16::from(q.qtype));
    }
    for rr in p.answers.iter().take(MAX_ANSWERS) {
        let text = match &rr.rdata {
            RData::A(a) => {
                let addr = IpAddr::V4(Ipv4Addr::from(a.address));
                m.addresses.push((addr, rr.ttl));
                addr.to_string()
            }
            RData::AAAA(a) => {
                let addr = IpAddr::V6(Ipv6Addr::from(a.address));
                m.addresses.push((addr, rr.ttl));
                addr.to_string()
            }
            RData::CNAME(n) => n.0.to_string(),
            RData::PTR(n) => n.0.to_string(),
            RData::NS(n) => n.0.to_string(),
            RData::MX(mx) => mx.exchange.to_string(),
            RData::TXT(t) => {
                let mut s = String::new();
                for (k, v) in t.iter_raw() {
                    s.push_str(&String::from_utf8_lossy(k));
                    if let Some(v) = v {
                        s.push('=');
                        s.push_str(&String::from_utf8_lossy(v));
                    }
                    if s.len() >= MAX_TEXT {
                        break;
                    }
                }
                let mut end = s.len().min(MAX_TEXT);
                while !s.is_char_boundary(end) {
                    end -= 1;
                }
                s.truncate(end);
                s
            }
            _ => continue,
        };
        m.answers.push(text);
    }
    m
}

/// A DNS lookup to report: the query, its response when one came, and who asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lookup {
    pub query: DnsMessage,
    pub response: Option<DnsMessage>,
    pub server: SocketAddr,
    pub owner: Option<NetOwner>,
    /// The socket's cookie (to find the executable the kernel sent for it).
    pub cookie: u64,
}

/// Pairs queries with their responses (by socket and message id). A query is
/// reported with its response, or alone once it waited `timeout`.
#[derive(Debug)]
pub struct Lookups {
    timeout: Duration,
    pending: HashMap<(u64, u16), (Instant, Lookup)>,
    order: VecDeque<(Instant, (u64, u16))>,
}

/// Queries waiting for their response at once; beyond it the oldest is reported alone.
const MAX_PENDING: usize = 4096;

impl Lookups {
    pub fn new(timeout: Duration) -> Self {
        Lookups {
            timeout,
            pending: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    /// Takes a parsed message; returns the lookups now complete.
    pub fn message(&mut self, rec: &DnsRecord, msg: DnsMessage, now: Instant) -> Vec<Lookup> {
        let mut done = Vec::new();
        let key = (rec.cookie, msg.id);
        if rec.response {
            match self.pending.remove(&key) {
                Some((_, mut l)) => {
                    l.response = Some(msg);
                    if l.owner.is_none() {
                        l.owner = rec.owner.clone();
                    }
                    done.push(l);
                }
                // Its query was not seen (sent before the sensor started, or lost):
                // the response names it.
                None => done.push(Lookup {
                    query: DnsMessage {
                        response: false,
                        answers: Vec::new(),
                        addresses: Vec::new(),
                        rcode: String::new(),
                        ..msg.clone()
                    },
                    response: Some(msg),
                    server: rec.source,
                    owner: rec.owner.clone(),
                    cookie: rec.cookie,
                }),
            }
            return done;
        }
        if self.pending.len() >= MAX_PENDING {
            while let Some((_, k)) = self.order.pop_front() {
                if let Some((_, l)) = self.pending.remove(&k) {
                    done.push(l);
                    break;
                }
            }
        }
        let lookup = Lookup {
            query: msg,
            response: None,
            server: rec.destination,
            owner: rec.owner.clone(),
            cookie: rec.cookie,
        };
        // A retransmission keeps the first query's time.
        if !self.pending.contains_key(&key) {
            self.order.push_back((now, key));
            self.pending.insert(key, (now, lookup));
        }
        done
    }

    /// The queries that waited `timeout` without a response.
    pub fn expired(&mut self, now: Instant) -> Vec<Lookup> {
        let mut done = Vec::new();
        while let Some((at, key)) = self.order.front().copied() {
            if now.duration_since(at) < self.timeout {
                break;
            }
            self.order.pop_front();
            if let Some((first, l)) = self.pending.remove(&key) {
                if first == at {
                    done.push(l);
                } else {
                    self.pending.insert(key, (first, l));
                }
            }
        }
        done
    }
}

/// The names DNS answers gave addresses, for `DestinationHostname`: bounded, each
/// kept for its TTL (at least a minute, at most an hour), the oldest dropped first.
#[derive(Debug)]
pub struct Hostnames {
    cap: usize,
    names: HashMap<IpAddr, (String, Instant)>,
    order: VecDeque<IpAddr>,
}

impl Hostnames {
    pub fn new(cap: usize) -> Self {
        Hostnames {
            cap,
            names: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    /// `addr` was named `name` by an answer with `ttl_s`, seen at `now`.
    pub fn insert(&mut self, addr: IpAddr, name: &str, ttl_s: u32, now: Instant) {
        if self.cap == 0 || name.is_empty() {
            return;
        }
        let keep = Duration::from_secs(u64::from(ttl_s).clamp(60, 3600));
        if self.names.insert(addr, (name.to_string(), now + keep)).is_none() {
            self.order.push_back(addr);
        }
        while self.names.len() > self.cap {
            match self.order.pop_front() {
                Some(old) => {
                    self.names.remove(&old);
                }
                None => break,
            }
        }
        // The order list keeps an entry per insertion of a new address only; it never
        // outgrows the map by more than the addresses removed since (bounded by cap).
        if self.order.len() > self.cap * 2 {
            let names = &self.names;
            self.order.retain(|a| names.contains_key(a));
        }
    }

    /// The name last given `addr`, while it is fresh.
    pub fn get(&self, addr: &IpAddr, now: Instant) -> Option<&str> {
        self.names
            .get(addr)
            .filter(|(_, until)| now < *until)
            .map(|(n, _)| n.as_str())
    }

    /// Remembers every address a response gave, under the name asked.
    pub fn learn(&mut self, lookup: &Lookup, now: Instant) {
        if let Some(r) = &lookup.response {
            for (addr, ttl) in &r.addresses {
                self.insert(*addr, &lookup.query.name, *ttl, now);
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use simple_dns::rdata::{A, AAAA, CNAME, RData};
    use simple_dns::{CLASS, Name, Packet, PacketFlag, QCLASS, QTYPE, Question, RCODE, ResourceRecord, TYPE};

    fn query(id: u16, name: &str, t: TYPE) -> Vec<u8> {
        let mut p = Packet::new_query(id);
        p.questions.push(Question::new(
            Name::new_unchecked(name),
            QTYPE::TYPE(t),
            QCLASS::CLASS(CLASS::IN),
            false,
        ));
        p.build_bytes_vec().unwrap()
    }

    fn reply(id: u16, name: &str, answers: Vec<RData<'static>>, rcode: RCODE) -> Vec<u8> {
        let mut p = Packet::new_reply(id);
        p.set_flags(PacketFlag::RECURSION_DESIRED);
        *p.rcode_mut() = rcode;
        p.questions.push(Question::new(
            Name::new_unchecked(name),
            QTYPE::TYPE(TYPE::A),
            QCLASS::CLASS(CLASS::IN),
            false,
        ));
        for rdata in answers {
            p.answers
                .push(ResourceRecord::new(Name::new_unchecked(name), CLASS::IN, 300, rdata));
        }
        p.build_bytes_vec().unwrap()
    }

    #[test]
    fn finds_the_cgroup2_mount() {
        let hybrid = "25 30 0:23 / /sys rw - sysfs sysfs rw\n\
                      35 25 0:30 / /sys/fs/cgroup ro - tmpfs tmpfs ro\n\
                      41 35 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n";
        assert_eq!(cgroup2_root(hybrid), Some(PathBuf::from("/sys/fs/cgroup/unified")));
        // A cgroup2 mount of a sub-tree (a container's view) is not the root; an
        // escaped space in the path is unescaped.
        let text = "50 1 0:40 /system.slice /mnt/sub rw - cgroup2 none rw\n\
                    51 1 0:40 / /mnt/cg\\040root rw shared:9 - cgroup2 none rw\n";
        assert_eq!(cgroup2_root(text), Some(PathBuf::from("/mnt/cg root")));
        assert_eq!(cgroup2_root("25 30 0:23 / /sys rw - sysfs sysfs rw\n"), None);
        assert_eq!(cgroup2_root("garbage\n\n - cgroup2"), None);
    }

    #[test]
    fn parses_queries_and_responses() {
        let q = parse_dns(&query(7, "Example.COM", TYPE::TXT), false).unwrap();
        assert_eq!(
            (q.id, q.response, q.name.as_str(), q.qtype.as_str()),
            (7, false, "Example.COM", "TXT")
        );
        assert!(q.answers.is_empty());
        let r = parse_dns(
            &reply(
                7,
                "www.example.com",
                vec![
                    RData::CNAME(CNAME(Name::new_unchecked("edge.example.net"))),
                    RData::A(A { address: 0xc000_0207 }),
                    RData::AAAA(AAAA { address: 1 }),
                ],
                RCODE::NoError,
            ),
            false,
        )
        .unwrap();
        assert!(r.response);
        assert_eq!(r.rcode, "NOERROR");
        assert_eq!(r.name, "www.example.com");
        assert_eq!(r.answers, vec!["edge.example.net", "192.0.2.7", "::1"]);
        assert_eq!(
            r.addresses,
            vec![("192.0.2.7".parse().unwrap(), 300), ("::1".parse().unwrap(), 300)]
        );
        let nx = parse_dns(&reply(8, "nope.example", vec![], RCODE::NameError), false).unwrap();
        assert_eq!((nx.rcode.as_str(), nx.answers.len()), ("NXDOMAIN", 0));
        assert_eq!(type_name(28), "AAAA");
        assert_eq!(type_name(999), "TYPE999");
    }

    #[test]
    fn a_cut_response_keeps_the_answers_that_fit() {
        let answers: Vec<RData<'static>> = (0..40u32)
            .map(|i| {
                RData::A(A {
                    address: 0x0a00_0000 + i,
                })
            })
            .collect();
        let full = reply(9, "many.example", answers, RCODE::NoError);
        assert!(full.len() > DNS_MAX);
        let cut = &full[..DNS_MAX];
        assert!(parse_dns(cut, false).is_err(), "uncut, the counts do not fit");
        let r = parse_dns(cut, true).unwrap();
        assert_eq!(r.name, "many.example");
        // 28 bytes an answer (names not compressed): 17 fit in the 482 after the question.
        assert_eq!(r.answers.len(), 17);
        assert_eq!(r.answers[0], "10.0.0.0");
    }

    #[test]
    fn malformed_messages_are_refused_without_panic_or_large_allocation() {
        assert_eq!(parse_dns(&[0; 5], false), Err(DnsError::Short(5)));
        let mut no_q = query(1, "a.example", TYPE::A);
        no_q[4..6].fill(0);
        assert_eq!(parse_dns(&no_q, false), Err(DnsError::NoQuestion));
        // 65535 answers claimed in 40 bytes: refused before the parser reserves room
        // for them.
        let mut huge = query(1, "a.example", TYPE::A);
        huge[6..8].copy_from_slice(&[0xff, 0xff]);
        assert!(matches!(parse_dns(&huge, false), Err(DnsError::Counts(..))));
        let mut many_q = query(1, "a.example", TYPE::A);
        many_q[4..6].copy_from_slice(&[0xff, 0xff]);
        assert!(matches!(parse_dns(&many_q, true), Err(DnsError::Counts(..))));
        // A compression pointer to itself.
        let mut bad = query(1, "a.example", TYPE::A);
        bad.truncate(12);
        bad.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1]);
        assert!(parse_dns(&bad, false).is_err());
        assert!(parse_dns(&bad, true).is_err());
        // Mutations and cuts of good messages: any result but a panic.
        let good = reply(
            3,
            "www.example.com",
            vec![
                RData::CNAME(CNAME(Name::new_unchecked("edge.example.net"))),
                RData::A(A { address: 1 }),
            ],
            RCODE::NoError,
        );
        let mut x: u32 = 0x9e37_79b9;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            let mut m = good.clone();
            let at = x as usize % m.len();
            m[at] = (x >> 8) as u8;
            let len = (x >> 16) as usize % (m.len() + 1);
            let _ = parse_dns(&m[..len], x & 1 == 0);
            let _ = parse_dns(&m, x & 2 == 0);
        }
    }

    fn dns_bytes(dir: u8, payload: &[u8], wire: u32) -> Vec<u8> {
        let mut b = vec![0u8; DNS_DATA_AT];
        b[0..4].copy_from_slice(&KIND_DNS.to_le_bytes());
        b[4] = dir;
        b[5] = 4;
        b[6..8].copy_from_slice(&(payload.len() as u16).to_le_bytes());
        b[8..10].copy_from_slice(&40000u16.to_le_bytes());
        b[10..12].copy_from_slice(&53u16.to_le_bytes());
        b[12..16].copy_from_slice(&wire.to_le_bytes());
        b[16..20].copy_from_slice(&[10, 0, 0, 5]);
        b[32..36].copy_from_slice(&[10, 0, 0, 53]);
        b[48..52].copy_from_slice(&901u32.to_le_bytes());
        b[52..56].copy_from_slice(&900u32.to_le_bytes());
        b[56..60].copy_from_slice(&1000u32.to_le_bytes());
        b[72..76].copy_from_slice(b"curl");
        b[88..96].copy_from_slice(&42u64.to_le_bytes());
        b.extend_from_slice(payload);
        b
    }

    #[test]
    fn decodes_dns_records_and_refuses_malformed_ones() {
        let q = query(5, "a.example", TYPE::A);
        let UdpItem::Dns(d) = decode_udp_item(&dns_bytes(1, &q, q.len() as u32)).unwrap() else {
            panic!("not a DNS record");
        };
        assert!(!d.response && !d.cut);
        assert_eq!(d.source, "10.0.0.5:40000".parse().unwrap());
        assert_eq!(d.destination, "10.0.0.53:53".parse().unwrap());
        let o = d.owner.unwrap();
        assert_eq!((o.pid, o.tgid, o.uid, o.comm.as_str()), (901, 900, 1000, "curl"));
        assert_eq!((d.cookie, d.payload), (42, q.clone()));
        let UdpItem::Dns(d) = decode_udp_item(&dns_bytes(2, &q, 900)).unwrap() else {
            panic!("not a DNS record");
        };
        assert!(d.response && d.cut);
        let mut unknown = dns_bytes(1, &q, 1);
        unknown[52..56].fill(0);
        assert!(matches!(
            decode_udp_item(&unknown),
            Ok(UdpItem::Dns(DnsRecord { owner: None, .. }))
        ));
        let good = dns_bytes(1, &q, 1);
        assert_eq!(decode_udp_item(&good[..50]), Err(DecodeError::Short(50)));
        let mut b = good.clone();
        b[6..8].copy_from_slice(&600u16.to_le_bytes());
        assert!(matches!(decode_udp_item(&b), Err(DecodeError::Length { .. })));
        let mut b = good.clone();
        b[6..8].copy_from_slice(&(q.len() as u16 + 1).to_le_bytes());
        assert!(matches!(decode_udp_item(&b), Err(DecodeError::Length { .. })));
        let mut b = good.clone();
        b[4] = 7;
        assert_eq!(decode_udp_item(&b), Err(DecodeError::Op(7)));
        let mut b = good;
        b[5] = 3;
        assert_eq!(decode_udp_item(&b), Err(DecodeError::Family(3)));
    }

    fn record(response: bool, cookie: u64, owner: Option<u32>) -> DnsRecord {
        DnsRecord {
            response,
            source: "10.0.0.5:40000".parse().unwrap(),
            destination: "10.0.0.53:53".parse().unwrap(),
            owner: owner.map(|tgid| NetOwner {
                tgid,
                ..NetOwner::default()
            }),
            cookie,
            payload: Vec::new(),
            cut: false,
        }
    }

    #[test]
    fn queries_pair_with_their_responses_or_are_reported_alone() {
        let t0 = Instant::now();
        let mut l = Lookups::new(Duration::from_secs(2));
        let q = parse_dns(&query(5, "a.example", TYPE::A), false).unwrap();
        assert!(l.message(&record(false, 1, Some(900)), q.clone(), t0).is_empty());
        // A retransmission is not a second lookup; another socket's same id is.
        assert!(l.message(&record(false, 1, Some(900)), q.clone(), t0).is_empty());
        assert!(l.message(&record(false, 2, Some(901)), q.clone(), t0).is_empty());
        let r = parse_dns(
            &reply(5, "a.example", vec![RData::A(A { address: 1 })], RCODE::NoError),
            false,
        )
        .unwrap();
        let done = l.message(&record(true, 1, None), r.clone(), t0);
        assert_eq!(done.len(), 1);
        assert_eq!(done[0].owner.as_ref().unwrap().tgid, 900, "the query's process");
        assert_eq!(done[0].response.as_ref().unwrap().answers, vec!["0.0.0.1"]);
        assert_eq!(done[0].server, "10.0.0.53:53".parse().unwrap());
        assert!(l.expired(t0 + Duration::from_secs(1)).is_empty());
        let alone = l.expired(t0 + Duration::from_secs(2));
        assert_eq!(alone.len(), 1);
        assert!(alone[0].response.is_none() && alone[0].owner.as_ref().unwrap().tgid == 901);
        // A response whose query was not seen names the lookup itself.
        let done = l.message(&record(true, 3, Some(902)), r, t0);
        assert_eq!(
            (done[0].query.name.as_str(), done[0].query.response),
            ("a.example", false)
        );
        // Bounded: beyond the cap the oldest query is reported alone.
        for i in 0..MAX_PENDING as u64 + 1 {
            let out = l.message(&record(false, 100 + i, None), q.clone(), t0);
            assert_eq!(out.len(), usize::from(i == MAX_PENDING as u64));
        }
    }

    #[test]
    fn answers_name_addresses_for_their_ttl_within_a_bound() {
        let t0 = Instant::now();
        let mut h = Hostnames::new(2);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let c: IpAddr = "192.0.2.3".parse().unwrap();
        h.insert(a, "a.example", 5, t0);
        assert_eq!(h.get(&a, t0), Some("a.example"));
        assert_eq!(
            h.get(&a, t0 + Duration::from_secs(59)),
            Some("a.example"),
            "at least a minute"
        );
        assert_eq!(h.get(&a, t0 + Duration::from_secs(60)), None);
        h.insert(b, "b.example", 7200, t0);
        assert_eq!(
            h.get(&b, t0 + Duration::from_secs(3599)),
            Some("b.example"),
            "at most an hour"
        );
        assert_eq!(h.get(&b, t0 + Duration::from_secs(3600)), None);
        h.insert(c, "c.example", 300, t0);
        assert_eq!(h.get(&a, t0), None, "the oldest went first");
        assert_eq!((h.get(&b, t0), h.get(&c, t0)), (Some("b.example"), Some("c.example")));
        for i in 0..1000u32 {
            h.insert(IpAddr::V4(Ipv4Addr::from(i)), "x", 60, t0);
        }
        assert!(h.names.len() <= 2 && h.order.len() <= 4);
    }

    /// The real kernel: with the cgroup programs attached, traffic still flows; a
    /// sendto by this process and a connected send by bash to a loopback port, and a
    /// bind to that named port, arrive with their process and executable (a bind to
    /// port 0 does not); a DNS query to a responder on 127.0.83.53:53 and its answer
    /// arrive with the querying process. Needs root: fails saying so.
    #[test]
    fn the_kernel_reports_udp_and_dns_with_their_process() {
        use std::net::UdpSocket;
        assert!(
            crate::sensor::test_is_root(),
            "needs root (CAP_BPF, CAP_PERFMON, CAP_NET_ADMIN) to attach cgroup programs"
        );
        let mut probe = load(Hooks {
            udp: true,
            dns: true,
            dedup: Duration::ZERO,
            ignore_tgid: None,
        })
        .unwrap();
        // Another copy, as the agent loads it: its own process's UDP is not reported.
        let mut as_agent = load(Hooks {
            udp: true,
            dns: false,
            dedup: Duration::ZERO,
            ignore_tgid: Some(std::process::id()),
        })
        .unwrap();
        let me = std::process::id();
        let my_exe = std::fs::read_link("/proc/self/exe").unwrap();
        let port = UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let server = UdpSocket::bind(("127.0.0.1", port)).unwrap();
        server.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let client = UdpSocket::bind("127.0.0.1:0").unwrap();
        let client_port = client.local_addr().unwrap().port();
        client.send_to(b"ward-sendto", ("127.0.0.1", port)).unwrap();
        let mut bash = std::process::Command::new("bash")
            .args(["-c", &format!("echo ward-connected > /dev/udp/127.0.0.1/{port}")])
            .spawn()
            .unwrap();
        let bash_pid = bash.id();
        assert!(bash.wait().unwrap().success());
        // The hooks allow: both datagrams arrive, and TCP still connects.
        let mut arrived = Vec::new();
        for _ in 0..2 {
            let mut buf = [0u8; 64];
            let (n, _) = server
                .recv_from(&mut buf)
                .expect("a datagram blocked with the hooks attached");
            arrived.push(String::from_utf8_lossy(&buf[..n]).trim().to_string());
        }
        arrived.sort();
        assert_eq!(arrived, vec!["ward-connected", "ward-sendto"]);
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let _c = std::net::TcpStream::connect(tcp.local_addr().unwrap()).expect("TCP blocked with the hooks attached");
        tcp.accept().unwrap();

        let dns =
            UdpSocket::bind("127.0.83.53:53").expect("binding 127.0.83.53:53 (needs root, and nothing else there)");
        let responder = std::thread::spawn(move || {
            let mut buf = [0u8; 512];
            let (n, from) = dns.recv_from(&mut buf).unwrap();
            let q = Packet::parse(&buf[..n]).unwrap();
            let name = q.questions[0].qname.to_string();
            let bytes = reply(
                q.id(),
                &name,
                vec![RData::A(A { address: 0xc000_0263 })],
                RCODE::NoError,
            );
            dns.send_to(&bytes, from).unwrap();
        });
        let resolver = UdpSocket::bind("127.0.0.1:0").unwrap();
        resolver.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        resolver.connect("127.0.83.53:53").unwrap();
        resolver.send(&query(0x5757, "ward-test.example", TYPE::A)).unwrap();
        let mut buf = [0u8; 512];
        let n = resolver
            .recv(&mut buf)
            .expect("the DNS answer was blocked with the hooks attached");
        assert!(parse_dns(&buf[..n], false).unwrap().response);
        responder.join().unwrap();
        // The same over IPv6: a bind and a sendto on ::1, a lookup to [::1]:53.
        let port6 = UdpSocket::bind("[::1]:0").unwrap().local_addr().unwrap().port();
        let server6 = UdpSocket::bind(("::1", port6)).unwrap();
        UdpSocket::bind("[::1]:0")
            .unwrap()
            .send_to(b"six", ("::1", port6))
            .unwrap();
        server6.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        server6
            .recv_from(&mut buf)
            .expect("a v6 datagram blocked with the hooks attached");
        let dns6 = UdpSocket::bind("[::1]:53").expect("binding [::1]:53 (needs root, and nothing else there)");
        let responder6 = std::thread::spawn(move || {
            let mut buf = [0u8; 512];
            let (n, from) = dns6.recv_from(&mut buf).unwrap();
            let q = Packet::parse(&buf[..n]).unwrap();
            let name = q.questions[0].qname.to_string();
            let bytes = reply(q.id(), &name, vec![RData::AAAA(AAAA { address: 2 })], RCODE::NoError);
            dns6.send_to(&bytes, from).unwrap();
        });
        let resolver6 = UdpSocket::bind("[::1]:0").unwrap();
        resolver6.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        resolver6.connect("[::1]:53").unwrap();
        resolver6
            .send(&query(0x6666, "ward-test6.example", TYPE::AAAA))
            .unwrap();
        resolver6
            .recv(&mut buf)
            .expect("the v6 DNS answer was blocked with the hooks attached");
        responder6.join().unwrap();

        let (mut nets, mut exes, mut dnss) = (Vec::new(), HashMap::new(), Vec::new());
        let deadline = Instant::now() + Duration::from_secs(5);
        let want = |nets: &Vec<super::super::ebpf::NetRecord>, dnss: &Vec<DnsRecord>| {
            nets.iter()
                .filter(|r| r.remote.port() == port || r.local.port() == port)
                .count()
                >= 3
                && nets
                    .iter()
                    .filter(|r| r.remote.port() == port6 || r.local.port() == port6)
                    .count()
                    >= 2
                && dnss.len() >= 4
        };
        while !want(&nets, &dnss) && Instant::now() < deadline {
            probe.wait(Duration::from_millis(100)).unwrap();
            probe.drain(usize::MAX, |b| {
                match decode_udp_item(b) {
                    Ok(UdpItem::Net(NetItem::Net(r))) => nets.push(r),
                    Ok(UdpItem::Net(NetItem::Exe(e))) => {
                        exes.insert(e.sk, e);
                    }
                    Ok(UdpItem::Dns(d))
                        if ["127.0.83.53", "::1"].contains(&d.destination.ip().to_string().as_str())
                            || ["127.0.83.53", "::1"].contains(&d.source.ip().to_string().as_str()) =>
                    {
                        dnss.push(d)
                    }
                    _ => {}
                }
                true
            });
        }
        assert!(nets.iter().all(|r| r.udp));
        let exe_of = |r: &super::super::ebpf::NetRecord| exes.get(&r.sk).map(|e| PathBuf::from(&e.exe));
        let listen = nets
            .iter()
            .find(|r| r.op == NetOp::Listen && r.local.port() == port)
            .expect("the bind to a named port");
        assert_eq!(listen.owner.as_ref().unwrap().tgid, me);
        assert!(
            !nets
                .iter()
                .any(|r| r.op == NetOp::Listen && r.local.port() == client_port),
            "a bind to port 0 is not a listener"
        );
        let sendto = nets
            .iter()
            .find(|r| r.op == NetOp::Connect && r.remote.port() == port && r.owner.as_ref().unwrap().tgid == me)
            .expect("the sendto");
        assert_eq!(sendto.remote.ip().to_string(), "127.0.0.1");
        assert_eq!(exe_of(sendto), Some(my_exe.clone()));
        let connected = nets
            .iter()
            .find(|r| r.op == NetOp::Connect && r.remote.port() == port && r.owner.as_ref().unwrap().tgid == bash_pid)
            .expect("bash's connected send");
        assert!(
            exe_of(connected).is_some_and(|e| e.ends_with("bash")),
            "{:?}",
            exe_of(connected)
        );
        let q = dnss.iter().find(|d| !d.response).expect("the DNS query");
        assert_eq!(q.destination, "127.0.83.53:53".parse().unwrap());
        assert_eq!(q.owner.as_ref().unwrap().tgid, me);
        let qm = parse_dns(&q.payload, q.cut).unwrap();
        assert_eq!(
            (qm.name.as_str(), qm.qtype.as_str(), qm.id),
            ("ward-test.example", "A", 0x5757)
        );
        let r = dnss.iter().find(|d| d.response).expect("the DNS response");
        assert_eq!(r.cookie, q.cookie, "the response arrives on the querying socket");
        assert_eq!(r.owner.as_ref().unwrap().tgid, me);
        let rm = parse_dns(&r.payload, r.cut).unwrap();
        assert_eq!(
            (rm.rcode.as_str(), rm.answers.clone()),
            ("NOERROR", vec!["192.0.2.99".to_string()])
        );
        let listen6 = nets
            .iter()
            .find(|r| r.op == NetOp::Listen && r.local.port() == port6)
            .expect("the v6 bind");
        assert_eq!(
            (listen6.local.ip().to_string(), listen6.owner.as_ref().unwrap().tgid),
            ("::1".into(), me)
        );
        let sendto6 = nets
            .iter()
            .find(|r| r.op == NetOp::Connect && r.remote.port() == port6)
            .expect("the v6 sendto");
        assert_eq!(
            (sendto6.remote.ip().to_string(), sendto6.owner.as_ref().unwrap().tgid),
            ("::1".into(), me)
        );
        let q6 = dnss
            .iter()
            .find(|d| !d.response && d.destination.ip().is_ipv6())
            .expect("the v6 query");
        assert_eq!(q6.owner.as_ref().unwrap().tgid, me);
        assert_eq!(parse_dns(&q6.payload, q6.cut).unwrap().qtype, "AAAA");
        let r6 = dnss
            .iter()
            .find(|d| d.response && d.source.ip().is_ipv6())
            .expect("the v6 response");
        assert_eq!(parse_dns(&r6.payload, r6.cut).unwrap().answers, vec!["::2"]);
        assert_eq!(probe.newly_lost(), 0);
        let mut seen_by_agent = Vec::new();
        as_agent.drain(usize::MAX, |b| {
            if let Ok(UdpItem::Net(NetItem::Net(r))) = decode_udp_item(b)
                && (r.remote.port() == port || r.local.port() == port)
            {
                seen_by_agent.push(r.owner.map(|o| o.tgid));
            }
            true
        });
        assert_eq!(
            seen_by_agent,
            vec![Some(bash_pid)],
            "only bash's send, not this process's own"
        );
    }
}
