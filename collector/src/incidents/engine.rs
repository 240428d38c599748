//! The correlation engine: pure and in memory, no I/O, no clock. Given alerts in
//! arrival (rowid) order with their keys, it decides whether each one opens an
//! incident, joins one, or bridges several (merging them), and says why. The same
//! alerts in the same order give the same incidents; the state it needs is saved
//! as rows ([`IncidentRow`], [`KeyRow`], prevalence) so a restarted collector
//! loads it and goes on exactly where it stopped.
//!
//! Rules:
//! - An alert joins an open incident (active or in progress) when it shares a
//!   strong key with it (a process tree, a file hash, a person, a mailbox, a URL, a
//!   domain, an uncommon IP, a device named by a connection from its address) and its
//!   time is within `window_ms` of the incident's activity (before its first or after
//!   its last), or when it shares only its device and is within `proximity_ms` of the
//!   nearest alert of that incident on that device (a busy host's unrelated alerts do
//!   not pile into one incident).
//! - An incident spans at most `max_span_ms` from its first alert to its last; an
//!   alert that would stretch it further opens a new incident that names the one it
//!   continues, and two incidents that together would span more are not merged.
//! - An informational alert never opens an incident by itself (it may join one).
//! - Reach is judged from each alert's own time: an old alert (a backlog, a backfill,
//!   a replay) joins the incidents of its time. Memory holds the open incidents whose
//!   last activity is within `2 × window_ms` of the newest alert time; an older alert's
//!   incidents are loaded from the store first ([`Engine::needs_history`],
//!   [`Engine::load_history`]). Alert times reach the engine already disciplined (a
//!   device's clock ahead of the collector's is replaced by the arrival time), so no
//!   device clock can move the engine's.
//! - A key seen on more than `prevalence_threshold` distinct devices (and, for keys
//!   other than users, distinct users), or shared by more than that many reachable
//!   incidents, no longer links (system binaries, resolvers, mass mailers).
//! - An alert that matches several incidents joins the oldest; each other one is
//!   merged into it unless their assignees or classifications differ (both set). The
//!   survivor takes the assignee, classification and "in progress" it lacks from each
//!   incident it absorbs, so the next one is judged against those.
//!
//! Ties are ranked (`Tie`): strong ties before weak ones (the device alone, or a
//! person on a device the incident already covers), which count only when there is no
//! strong one and never merge; then a tie that could merge, the best key's kind (a
//! process tree first), also near on the device, more kinds shared, the more severe
//! incident, nearer in time, the older. A file's hash or a person alone joins but never
//! merges two incidents (unrelated attacks use the same tools; a person's own harmless
//! alerts name them). The process tree, user and image hash of an alert that came in on
//! the device alone are held weakly (`incident_entities.flags`): they tie no more than
//! the device, so one build near an attack does not pull in that shell's day; the files
//! it wrote and the addresses it names stay strong. The device alone does not tie an
//! alert whose origin differs from the incident's there (another process tree while the
//! incident holds trees on that device, or other remote addresses). An alert naming
//! many people (a spray) is not tied through them. Below a terminal emulator or
//! multiplexer, the tab's shell names the process tree (`Entity::lineage_key`).
//!
//! Representation: every key is interned once as a number ([`KeyId`]) in one table
//! that also holds its prevalence and the incidents holding it; incidents refer to
//! keys by number, and the strings they share (alert ids, labels, reasons quoted
//! from elsewhere) are reference-counted. Correlation is mostly lookups then, not
//! allocation: an alert costs a few allocations, not one per key and copy.

use std::collections::BTreeSet;
use std::sync::Arc;

// Fx: a fixed, fast hash for the engine's lookup tables (none of them is iterated in an
// order that reaches results), instead of SipHash, a measurable share of the engine's time.
use rustc_hash::{FxHashMap as HashMap, FxHashSet as HashSet};
use smallvec::SmallVec;

use ward_protocol::Severity;
use ward_protocol::ids::Id128;

use super::keys::LinkKey;
use super::severity::incident_severity;
pub use crate::model::correlation::{Changes, Incident, IncidentRow, KeyKind, KeyRow, Link, Merge};
use crate::model::incident::{self as triage, Classification, Status, TACTICS, tactic_rank};

#[derive(Debug, Clone, Copy)]
pub struct EngineConfig {
    pub window_ms: u64,
    pub prevalence_threshold: usize,
    /// How near an alert sharing only the device must be to the incident's alerts there.
    pub proximity_ms: u64,
    /// The longest an incident may span, first alert to last.
    pub max_span_ms: u64,
}

/// One alert as correlation sees it.
#[derive(Debug, Clone)]
pub struct AlertIn {
    pub rowid: i64,
    pub id: String,
    /// The time correlation uses: the observed time, or the arrival time when the
    /// observed time was too far ahead of it (then `clock_note` says so).
    pub at_ms: u64,
    pub clock_note: Option<String>,
    pub severity: Severity,
    pub tactics: Vec<String>,
    pub source: String,
    pub title: String,
    /// The device the alert came from (agent and collector alerts).
    pub device: Option<String>,
    pub keys: Vec<LinkKey>,
}

/// A key's number in the engine's key table.
type KeyId = u32;

/// Everything the engine knows of one key, whichever incidents hold it.
#[derive(Debug)]
struct KeyEntry {
    name: Arc<str>,
    kind: KeyKind,
    /// Distinct contexts it was seen with (interned `d:<device id>` / `user:<name>`),
    /// at most threshold + 1: its prevalence.
    contexts: SmallVec<[u32; 2]>,
    /// Its contexts changed since the store last saw them.
    contexts_dirty: bool,
    /// The incidents in memory (seq) that hold it: exact, kept as incidents come and go.
    holders: SmallVec<[u64; 1]>,
}

/// A key within one incident.
#[derive(Debug, Clone)]
struct Seen {
    label: Option<Arc<str>>,
    via: Option<Arc<str>>,
    first_ms: u64,
    last_ms: u64,
    last_alert: Arc<str>,
    /// Device keys only: see [`KeyRow::runs`].
    runs: SmallVec<[(u64, u64); 1]>,
    /// See [`KeyRow::weakly_held`].
    weakly_held: bool,
    /// See [`KeyRow::on_device`].
    on_device: bool,
    /// Added or updated since the store last saw this incident.
    touched: bool,
}

/// Adds a time to sorted runs whose gaps exceed `gap_ms`, joining the runs it bridges.
fn add_run(runs: &mut SmallVec<[(u64, u64); 1]>, t: u64, gap_ms: u64) {
    let near = |&(s, e): &(u64, u64)| t.saturating_add(gap_ms) >= s && t <= e.saturating_add(gap_ms);
    match runs.iter().position(near) {
        None => {
            let at = runs.partition_point(|&(s, _)| s < t);
            runs.insert(at, (t, t));
        }
        Some(i) => {
            let last = runs.iter().rposition(near).unwrap_or(i);
            let start = runs[i].0.min(t);
            let end = runs[last].1.max(t);
            runs.drain(i + 1..=last);
            runs[i] = (start, end);
        }
    }
}

/// A key that names only the alert's own device: it links within the proximity window.
fn weak(k: &LinkKey) -> bool {
    k.kind == KeyKind::Device && k.via.is_none()
}

/// How far `t` is from the nearest time in the runs (0 inside one).
fn run_distance(runs: &[(u64, u64)], t: u64) -> u64 {
    runs.iter()
        .map(|&(s, e)| if t < s { s - t } else { t.saturating_sub(e) })
        .min()
        .unwrap_or(u64::MAX)
}

/// How strongly a key ties an alert to an incident.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Strength {
    /// A strong entity within the incident's window.
    Strong,
    /// The device alone (or a person on the same device) within the proximity window.
    Weak,
}

/// An alert's tie to one incident: its best key and the kinds of all its strong keys.
#[derive(Debug, Clone, Copy)]
struct Tie {
    seq: u64,
    /// Index in the alert's keys of the best key (strong before weak, in kind order).
    best: usize,
    strength: Strength,
    /// The kinds of the strong keys shared, one bit each.
    kinds: u16,
    /// Also near the incident's alerts on the alert's device.
    near: bool,
    /// How far the alert is from the nearest sighting of a shared key there.
    gap_ms: u64,
    /// The incident's severity.
    severity: Severity,
}

impl Tie {
    fn new(seq: u64, i: usize, kind: KeyKind, strength: Strength, gap_ms: u64, severity: Severity) -> Tie {
        let mut t = Tie {
            severity,
            seq,
            best: i,
            strength,
            kinds: 0,
            near: false,
            gap_ms,
        };
        t.add(i, kind, strength, gap_ms);
        t
    }

    /// Adds a key; keys come strong first, then in kind order.
    fn add(&mut self, i: usize, kind: KeyKind, strength: Strength, gap_ms: u64) {
        self.gap_ms = self.gap_ms.min(gap_ms);
        if strength == Strength::Strong {
            if self.strength == Strength::Weak {
                (self.best, self.strength) = (i, Strength::Strong);
            }
            self.kinds |= 1 << kind as u16;
        } else {
            self.near = true;
        }
    }

    /// The order ties are preferred in: a tie that could merge before a person's or a
    /// file's alone (a brute force from the sprayer's address joins the spray, not the
    /// person's own incident), then the best key's kind, then also near on the
    /// device, then more kinds shared, then the more severe incident (a risky
    /// sign-in of a person tied only by the person joins the attack on their laptop,
    /// not their builds), then nearer in time (the person's incident of that morning,
    /// not the one of the day before), then the older incident.
    fn rank(&self, best: KeyKind) -> impl Ord + use<> {
        (
            self.too_common_to_merge().is_some(),
            best,
            !self.near,
            std::cmp::Reverse(self.kinds.count_ones()),
            std::cmp::Reverse(self.severity),
            self.gap_ms,
            self.seq,
        )
    }

    /// Why this tie alone cannot merge its incident with another, if it cannot: a
    /// file's hash (unrelated attacks use the same tools) or a person (everyone's
    /// own harmless alerts name them) says that an alert belongs with an incident, not
    /// that two stories are one. Two kinds, or an attacker's address, domain, URL or
    /// sender, or a process tree, do.
    fn too_common_to_merge(&self) -> Option<&'static str> {
        const PERSON: u16 = 1 << KeyKind::User as u16 | 1 << KeyKind::Mailbox as u16;
        if self.kinds.count_ones() > 1 {
            return None;
        }
        if self.kinds == 1 << KeyKind::File as u16 {
            return Some("a file alone does not merge incidents: unrelated attacks use the same tools");
        }
        (self.kinds & PERSON != 0)
            .then_some("a person alone does not merge incidents: their own harmless alerts name them too")
    }
}

/// An incident in memory.
#[derive(Debug)]
struct Live {
    id: Arc<str>,
    seq: u64,
    status: Status,
    assignee: Option<String>,
    classification: Option<Classification>,
    first_ms: u64,
    last_ms: u64,
    alert_severity: Severity,
    /// Kill-chain ranks of its tactics, one bit each.
    tactics: u32,
    /// Sorted, distinct.
    sources: SmallVec<[Arc<str>; 2]>,
    alert_count: u64,
    first_title: Arc<str>,
    several_titles: bool,
    keys: HashMap<KeyId, Seen>,
    /// Keys with `touched` set, in the order they were touched.
    touched: Vec<KeyId>,
    /// Keys per kind, and the key of each kind with the lowest name (for titles);
    /// kept as keys are added so a large incident is summed up without a scan.
    counts: [usize; KeyKind::ALL.len()],
    first_of: [Option<KeyId>; KeyKind::ALL.len()],
    /// The devices (their keys) on which it holds a process tree.
    tree_devices: SmallVec<[KeyId; 2]>,
    /// How many remote addresses named by devices' alerts it holds.
    device_addresses: usize,
}

impl Live {
    fn new(id: Arc<str>, seq: u64, at_ms: u64, severity: Severity, first_title: Arc<str>) -> Live {
        Live {
            id,
            seq,
            status: Status::Active,
            assignee: None,
            classification: None,
            first_ms: at_ms,
            last_ms: at_ms,
            alert_severity: severity,
            tactics: 0,
            sources: SmallVec::new(),
            alert_count: 0,
            first_title,
            several_titles: false,
            keys: HashMap::default(),
            touched: Vec::new(),
            counts: [0; KeyKind::ALL.len()],
            first_of: [None; KeyKind::ALL.len()],
            tree_devices: SmallVec::new(),
            device_addresses: 0,
        }
    }

    fn add_source(&mut self, source: &Arc<str>) {
        if let Err(at) = self.sources.binary_search(source) {
            self.sources.insert(at, Arc::clone(source));
        }
    }

    /// Counts a key new to this incident.
    fn note(&mut self, table: &[KeyEntry], id: KeyId) {
        let entry = &table[id as usize];
        let k = entry.kind as usize;
        self.counts[k] += 1;
        if self.first_of[k].is_none_or(|first| entry.name < table[first as usize].name) {
            self.first_of[k] = Some(id);
        }
    }

    fn touch(&mut self, id: KeyId) {
        if let Some(seen) = self.keys.get_mut(&id)
            && !seen.touched
        {
            seen.touched = true;
            self.touched.push(id);
        }
    }

    fn clear_touched(&mut self) {
        for id in std::mem::take(&mut self.touched) {
            if let Some(seen) = self.keys.get_mut(&id) {
                seen.touched = false;
            }
        }
    }

    /// Takes in an alert whose keys are `ids` (`ids[i]` is `a.keys[i]`'s); returns
    /// the keys new to this incident. Only an alert that opened the incident or joined
    /// it through a strong tie (`strong`) extends its device runs or holds its keys
    /// strongly: alerts that came in on the device alone never widen the reach of the
    /// next one (a steady stream of a busy host's alerts, or every later alert of a
    /// shell that once ran near an attack, would otherwise chain into one incident).
    fn absorb(
        &mut self,
        ctx: &mut Shared<'_>,
        a: &AlertIn,
        ids: &[KeyId],
        alert_id: &Arc<str>,
        strong: bool,
    ) -> SmallVec<[KeyId; 8]> {
        let extend_runs = strong;
        self.first_ms = self.first_ms.min(a.at_ms);
        self.last_ms = self.last_ms.max(a.at_ms);
        self.alert_severity = self.alert_severity.max(a.severity);
        for t in a.tactics.iter().filter_map(|t| tactic_rank(t)) {
            self.tactics |= 1 << t;
        }
        if !self.sources.iter().any(|s| **s == *a.source) {
            let source = ctx.intern(&a.source);
            self.add_source(&source);
        }
        self.several_titles |= *a.title != *self.first_title;
        self.alert_count += 1;
        let mut new = SmallVec::new();
        if strong
            && a.keys.iter().any(|k| k.kind == KeyKind::Process)
            && let Some(own) = a.keys.iter().position(weak)
        {
            self.add_tree_device(ids[own]);
        }
        let people = a.keys.iter().filter(|k| k.kind == KeyKind::User).count();
        let process = a.keys.iter().any(|k| k.kind == KeyKind::Process);
        let on_device = a.device.is_some();
        for (k, &id) in a.keys.iter().zip(ids) {
            // What an alert that came in on the device alone says of its process (its
            // tree, its user, the image that ran: a build's test binary runs again and
            // again) is held weakly; so are the people of an alert naming several (a
            // spray's targets). A file it wrote and the addresses and URLs it names are
            // the attack's artifacts and stay strong.
            let weakly_held = match k.kind {
                KeyKind::User => !strong || people > 1,
                KeyKind::Process => !strong,
                KeyKind::File => !strong && process,
                _ => false,
            };
            let address = k.kind == KeyKind::Ip && on_device;
            match self.keys.get_mut(&id) {
                Some(seen) => {
                    seen.first_ms = seen.first_ms.min(a.at_ms);
                    if a.at_ms >= seen.last_ms {
                        seen.last_ms = a.at_ms;
                        seen.last_alert = Arc::clone(alert_id);
                    }
                    if k.via.is_none() {
                        seen.via = None;
                    }
                    seen.weakly_held &= weakly_held;
                    if address && !seen.on_device {
                        self.device_addresses += 1;
                    }
                    seen.on_device |= on_device;
                    if k.kind == KeyKind::Device && extend_runs {
                        add_run(&mut seen.runs, a.at_ms, ctx.proximity_ms);
                    }
                }
                None => {
                    let mut runs = SmallVec::new();
                    if k.kind == KeyKind::Device && extend_runs {
                        runs.push((a.at_ms, a.at_ms));
                    }
                    let seen = Seen {
                        label: (k.label != k.value).then(|| ctx.intern(&k.label)),
                        via: k.via.as_deref().map(|v| ctx.intern(v)),
                        first_ms: a.at_ms,
                        last_ms: a.at_ms,
                        last_alert: Arc::clone(alert_id),
                        runs,
                        weakly_held,
                        on_device,
                        touched: false,
                    };
                    self.device_addresses += usize::from(address);
                    self.keys.insert(id, seen);
                    self.note(ctx.table, id);
                    new.push(id);
                }
            }
            self.touch(id);
        }
        new
    }

    /// Takes in everything of a merged incident; returns the keys new here.
    fn absorb_incident(&mut self, table: &[KeyEntry], other: &Live, proximity_ms: u64) -> Vec<KeyId> {
        // Triage the survivor lacks comes along (`model::incident`, as in the store's merge).
        triage::take_missing(&mut self.assignee, other.assignee.as_ref());
        triage::take_missing(&mut self.classification, other.classification.as_ref());
        self.status = triage::merged_status(self.status, other.status);
        self.first_ms = self.first_ms.min(other.first_ms);
        self.last_ms = self.last_ms.max(other.last_ms);
        self.alert_severity = self.alert_severity.max(other.alert_severity);
        self.tactics |= other.tactics;
        for s in &other.sources {
            self.add_source(s);
        }
        self.several_titles |= other.several_titles || other.first_title != self.first_title;
        self.alert_count += other.alert_count;
        for &d in &other.tree_devices {
            self.add_tree_device(d);
        }
        let mut new = Vec::new();
        for (&id, k) in &other.keys {
            match self.keys.get_mut(&id) {
                Some(seen) => {
                    seen.first_ms = seen.first_ms.min(k.first_ms);
                    if k.last_ms > seen.last_ms {
                        seen.last_ms = k.last_ms;
                        seen.last_alert = Arc::clone(&k.last_alert);
                    }
                    for &(s, e) in &k.runs {
                        add_run(&mut seen.runs, s, proximity_ms);
                        add_run(&mut seen.runs, e, proximity_ms);
                    }
                    seen.weakly_held &= k.weakly_held;
                    if k.on_device && !seen.on_device && table[id as usize].kind == KeyKind::Ip {
                        self.device_addresses += 1;
                    }
                    seen.on_device |= k.on_device;
                }
                None => {
                    self.device_addresses += usize::from(k.on_device && table[id as usize].kind == KeyKind::Ip);
                    self.keys.insert(
                        id,
                        Seen {
                            touched: false,
                            ..k.clone()
                        },
                    );
                    self.note(table, id);
                    new.push(id);
                }
            }
            self.touch(id);
        }
        new
    }

    fn add_tree_device(&mut self, device: KeyId) {
        if !self.tree_devices.contains(&device) {
            self.tree_devices.push(device);
        }
    }

    fn count(&self, kind: KeyKind) -> usize {
        self.counts[kind as usize]
    }

    fn tactic_ranks(&self) -> impl Iterator<Item = usize> + '_ {
        (0..TACTICS.len()).filter(|&t| self.tactics & (1 << t) != 0)
    }

    /// The severity shown: highest alert, raised for breadth.
    fn severity(&self) -> Severity {
        incident_severity(
            self.alert_severity,
            self.tactics.count_ones() as usize,
            self.sources.len(),
        )
    }

    /// A title made from its alerts: what happened, then where and to whom.
    fn title(&self, table: &[KeyEntry]) -> String {
        let base = if !self.several_titles {
            self.first_title.to_string()
        } else if self.tactics.count_ones() >= 2 {
            let first = self.tactic_ranks().next().map(|i| TACTICS[i].1).unwrap_or("");
            let last = self.tactic_ranks().last().map(|i| TACTICS[i].1).unwrap_or("");
            format!("Multi-stage incident involving {first} & {last}")
        } else {
            format!("{} and related alerts", self.first_title)
        };
        let label = |kind: KeyKind, many: &str| match (self.count(kind), self.first_of[kind as usize]) {
            (0, _) | (_, None) => None,
            (1, Some(id)) => self
                .keys
                .get(&id)
                .map(|seen| key_row(table, id, seen).label().to_string()),
            (n, Some(_)) => Some(format!("{n} {many}")),
        };
        let mut title = base;
        if let Some(d) = label(KeyKind::Device, "devices") {
            title.push_str(&format!(" on {d}"));
        }
        if let Some(u) = label(KeyKind::User, "users") {
            title.push_str(&format!(" for {u}"));
        }
        if self.sources.len() >= 2 {
            title.push_str(&format!(" reported by {} sources", self.sources.len()));
        }
        title
    }

    /// Its row, with all keys or only those touched since the last save.
    fn row(&self, table: &[KeyEntry], all_keys: bool) -> IncidentRow {
        let keys = if all_keys {
            self.keys.iter().map(|(&id, seen)| key_row(table, id, seen)).collect()
        } else {
            self.touched
                .iter()
                .filter_map(|&id| self.keys.get(&id).map(|seen| key_row(table, id, seen)))
                .collect()
        };
        IncidentRow {
            id: Arc::clone(&self.id),
            seq: self.seq,
            title: self.title(table),
            severity: self.severity(),
            alert_severity: self.alert_severity,
            sources: self.sources.to_vec(),
            tactics: self.tactic_ranks().map(|i| TACTICS[i].0).collect(),
            first_title: Arc::clone(&self.first_title),
            several_titles: self.several_titles,
            first_ms: self.first_ms,
            last_ms: self.last_ms,
            alert_count: self.alert_count,
            devices: self.count(KeyKind::Device),
            users: self.count(KeyKind::User),
            mailboxes: self.count(KeyKind::Mailbox),
            keys,
        }
    }
}

fn key_row(table: &[KeyEntry], id: KeyId, seen: &Seen) -> KeyRow {
    let entry = &table[id as usize];
    KeyRow {
        key: Arc::clone(&entry.name),
        kind: entry.kind,
        label: seen.label.clone(),
        via: seen.via.clone(),
        first_ms: seen.first_ms,
        last_ms: seen.last_ms,
        last_alert: Arc::clone(&seen.last_alert),
        runs: seen.runs.to_vec(),
        weakly_held: seen.weakly_held,
        on_device: seen.on_device,
    }
}

/// What absorbing an alert needs besides the incident: the key table and the
/// shared strings.
struct Shared<'a> {
    table: &'a [KeyEntry],
    strings: &'a mut HashSet<Arc<str>>,
    proximity_ms: u64,
}

impl Shared<'_> {
    /// One shared copy of a string that recurs (labels, vias, sources).
    fn intern(&mut self, s: &str) -> Arc<str> {
        if let Some(a) = self.strings.get(s) {
            return Arc::clone(a);
        }
        let a: Arc<str> = Arc::from(s);
        self.strings.insert(Arc::clone(&a));
        a
    }
}

/// The in-memory correlation state.
#[derive(Debug)]
pub struct Engine {
    cfg: EngineConfig,
    incidents: HashMap<u64, Live>,
    by_id: HashMap<Arc<str>, u64>,
    /// Every key seen, by number; numbers by name.
    table: Vec<KeyEntry>,
    key_ids: HashMap<Arc<str>, KeyId>,
    /// Prevalence contexts by number; numbers by name.
    context_names: Vec<Arc<str>>,
    context_ids: HashMap<Arc<str>, u32>,
    /// Labels, vias and sources, one copy each (they recur across incidents).
    strings: HashSet<Arc<str>>,
    /// Reused to build key and context names without allocating.
    scratch: String,
    first_reason: Arc<str>,
    next_seq: u64,
    /// Newest alert time seen.
    high_ms: u64,
    dirty: BTreeSet<u64>,
    dirty_prevalence: Vec<KeyId>,
    changes: Changes,
    since_sweep: usize,
}

impl Engine {
    pub fn new(cfg: EngineConfig) -> Engine {
        Engine {
            cfg,
            incidents: HashMap::default(),
            by_id: HashMap::default(),
            table: Vec::new(),
            key_ids: HashMap::default(),
            context_names: Vec::new(),
            context_ids: HashMap::default(),
            strings: HashSet::default(),
            scratch: String::new(),
            first_reason: Arc::from("first alert of the incident"),
            next_seq: 1,
            high_ms: 0,
            dirty: BTreeSet::new(),
            dirty_prevalence: Vec::new(),
            changes: Changes::default(),
            since_sweep: 0,
        }
    }

    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }
    pub fn high_ms(&self) -> u64 {
        self.high_ms
    }
    pub fn incident_count(&self) -> usize {
        self.incidents.len()
    }

    /// Restores the counters saved with the state.
    pub fn restore_counters(&mut self, next_seq: u64, high_ms: u64) {
        self.next_seq = self.next_seq.max(next_seq);
        self.high_ms = self.high_ms.max(high_ms);
    }

    /// Incidents older than this (last activity) are out of reach.
    pub fn horizon_ms(&self) -> u64 {
        self.high_ms.saturating_sub(self.cfg.window_ms.saturating_mul(2))
    }

    /// The number of a key named `kind:value`, added to the table when new.
    fn key_id(&mut self, kind: KeyKind, value: &str) -> KeyId {
        let mut name = std::mem::take(&mut self.scratch);
        name.clear();
        name.push_str(kind.as_str());
        name.push(':');
        name.push_str(value);
        let id = match self.key_ids.get(name.as_str()) {
            Some(&id) => id,
            None => self.add_key(Arc::from(name.as_str()), kind),
        };
        self.scratch = name;
        id
    }

    /// The number of a key by its stored name.
    fn key_id_of(&mut self, name: &Arc<str>, kind: KeyKind) -> KeyId {
        match self.key_ids.get(&**name) {
            Some(&id) => id,
            None => self.add_key(Arc::clone(name), kind),
        }
    }

    fn add_key(&mut self, name: Arc<str>, kind: KeyKind) -> KeyId {
        // Key numbers are u32 to keep the tables small: four billion distinct keys
        // would need hundreds of gigabytes of names first.
        let id = self.table.len() as KeyId;
        self.key_ids.insert(Arc::clone(&name), id);
        self.table.push(KeyEntry {
            name,
            kind,
            contexts: SmallVec::new(),
            contexts_dirty: false,
            holders: SmallVec::new(),
        });
        id
    }

    fn context_id(&mut self, name: &str) -> u32 {
        if let Some(&c) = self.context_ids.get(name) {
            return c;
        }
        let c = self.context_names.len() as u32;
        let name: Arc<str> = Arc::from(name);
        self.context_names.push(Arc::clone(&name));
        self.context_ids.insert(name, c);
        c
    }

    fn device_context(&mut self, device: &str) -> u32 {
        let mut name = std::mem::take(&mut self.scratch);
        name.clear();
        name.push_str("d:");
        name.push_str(device);
        let c = self.context_id(&name);
        self.scratch = name;
        c
    }

    /// Restores the distinct devices a key was seen on.
    pub fn load_prevalence(&mut self, key: String, devices: &[String]) {
        let Some(kind) = key.split_once(':').and_then(|(kind, _)| KeyKind::parse(kind)) else {
            return;
        };
        let id = self.key_id_of(&Arc::from(key), kind);
        let contexts = devices.iter().map(|d| self.context_id(d)).collect();
        self.table[id as usize].contexts = contexts;
    }

    /// Puts an incident (from the store) in memory, replacing any copy; incidents
    /// that are not open or out of reach are only forgotten.
    pub fn load(&mut self, inc: Incident) {
        self.forget(&inc.id);
        self.next_seq = self.next_seq.max(inc.seq + 1);
        if !inc.status.is_open() || inc.last_ms < self.horizon_ms() {
            return;
        }
        self.load_live(inc);
    }

    fn load_live(&mut self, inc: Incident) {
        let mut live = Live::new(
            Arc::from(inc.id),
            inc.seq,
            inc.first_ms,
            inc.alert_severity,
            Arc::from(inc.first_title),
        );
        live.status = inc.status;
        live.assignee = inc.assignee;
        live.classification = inc.classification;
        live.last_ms = inc.last_ms;
        live.tactics = inc
            .tactics
            .iter()
            .filter(|&&t| t < TACTICS.len())
            .fold(0, |bits, t| bits | 1 << t);
        let mut shared = Shared {
            table: &self.table,
            strings: &mut self.strings,
            proximity_ms: self.cfg.proximity_ms,
        };
        let sources: Vec<Arc<str>> = inc.sources.iter().map(|s| shared.intern(s)).collect();
        for s in &sources {
            live.add_source(s);
        }
        live.alert_count = inc.alert_count;
        live.several_titles = inc.several_titles;
        for k in inc.keys {
            if k.kind == KeyKind::Process
                && !k.weakly_held
                && let Some((device, _)) = k.value().split_once('/')
            {
                live.add_tree_device(self.key_id(KeyKind::Device, device));
            }
            live.device_addresses += usize::from(k.kind == KeyKind::Ip && k.on_device);
            let id = self.key_id_of(&k.key, k.kind);
            live.keys.insert(
                id,
                Seen {
                    label: k.label,
                    via: k.via,
                    first_ms: k.first_ms,
                    last_ms: k.last_ms,
                    last_alert: k.last_alert,
                    runs: k.runs.into_iter().collect(),
                    weakly_held: k.weakly_held,
                    on_device: k.on_device,
                    touched: false,
                },
            );
            live.note(&self.table, id);
        }
        self.install(live);
    }

    /// Makes an incident reachable: in the index and the tables.
    fn install(&mut self, live: Live) {
        for &id in live.keys.keys() {
            self.table[id as usize].holders.push(live.seq);
        }
        self.by_id.insert(Arc::clone(&live.id), live.seq);
        self.incidents.insert(live.seq, live);
    }

    /// Drops an incident from memory, with its index entries.
    pub fn forget(&mut self, id: &str) {
        if let Some(seq) = self.by_id.remove(id) {
            self.drop_incident(seq);
        }
    }

    /// Removes an incident (already out of `by_id`) and its index entries; returns it.
    fn drop_incident(&mut self, seq: u64) -> Option<Live> {
        self.dirty.remove(&seq);
        let inc = self.incidents.remove(&seq)?;
        for &id in inc.keys.keys() {
            self.table[id as usize].holders.retain(|s| *s != seq);
        }
        Some(inc)
    }

    /// An incident's current row with all its keys.
    pub fn get(&self, id: &str) -> Option<IncidentRow> {
        let inc = self.by_id.get(id).and_then(|s| self.incidents.get(s))?;
        Some(inc.row(&self.table, true))
    }

    /// Analyst changes that decide joins and merges.
    pub fn set_triage(
        &mut self,
        id: &str,
        status: Status,
        assignee: Option<String>,
        classification: Option<Classification>,
    ) {
        if let Some(inc) = self.by_id.get(id).and_then(|s| self.incidents.get_mut(s)) {
            inc.assignee = assignee;
            inc.classification = classification;
            inc.status = status;
        }
        if !status.is_open() {
            self.forget(id);
        }
    }

    /// Rebuilds an incident's summary and keys from its alerts alone (after an
    /// analyst moved alerts), keeping its triage; puts it in memory like [`Engine::load`]
    /// and returns its row with all keys. Without alerts it is loaded as it is.
    pub fn rebuild(&mut self, current: Incident, alerts: &[AlertIn]) -> Option<IncidentRow> {
        let Some(first) = alerts.first() else {
            self.load(current);
            return None;
        };
        let mut live = Live::new(
            Arc::from(current.id.as_str()),
            current.seq,
            first.at_ms,
            first.severity,
            Arc::from(first.title.as_str()),
        );
        live.status = current.status;
        live.assignee = current.assignee;
        live.classification = current.classification;
        for a in alerts {
            let ids = self.key_ids_of(a);
            let mut shared = Shared {
                table: &self.table,
                strings: &mut self.strings,
                proximity_ms: self.cfg.proximity_ms,
            };
            live.absorb(&mut shared, a, &ids, &Arc::from(a.id.as_str()), true);
        }
        let row = live.row(&self.table, true);
        live.clear_touched();
        self.forget(&current.id);
        self.next_seq = self.next_seq.max(live.seq + 1);
        if live.status.is_open() && live.last_ms >= self.horizon_ms() {
            self.install(live);
        }
        Some(row)
    }

    /// Assigns the next creation number (for incidents analysts open by hand).
    pub fn take_seq(&mut self) -> u64 {
        let s = self.next_seq;
        self.next_seq += 1;
        s
    }

    fn key_ids_of(&mut self, a: &AlertIn) -> SmallVec<[KeyId; 8]> {
        a.keys.iter().map(|k| self.key_id(k.kind, &k.value)).collect()
    }

    /// How key `i` of `a` ties the alert to `inc`, if it does by its time: strongly
    /// within the window of the incident for a strong key; weakly, within the
    /// proximity window of the incident's alerts on the device, for a device-only link.
    ///
    /// A person shared by two alerts of the same device says no more than the device
    /// (a developer's own builds and tests on their laptop): when the incident already
    /// holds alerts of the alert's device, a user link is judged like the device's.
    fn tie(&self, inc: &Live, a: &AlertIn, ids: &[KeyId], i: usize) -> Option<Strength> {
        if !inc.status.is_open() {
            return None;
        }
        let near = |id: KeyId| {
            inc.keys
                .get(&id)
                .map(|seen| run_distance(&seen.runs, a.at_ms) <= self.cfg.proximity_ms)
        };
        let weakly = |close: bool| (close && !self.origins_differ(inc, a, ids)).then_some(Strength::Weak);
        if weak(&a.keys[i]) {
            return weakly(near(ids[i]).unwrap_or(false));
        }
        let own = a.keys.iter().position(weak).and_then(|own| near(ids[own]));
        if a.keys[i].kind == KeyKind::User
            && let Some(close) = own
        {
            return weakly(close);
        }
        // A key only weakly joined alerts brought says no more than their device.
        if inc.keys.get(&ids[i]).is_some_and(|seen| seen.weakly_held) {
            return weakly(own.unwrap_or(false));
        }
        (a.at_ms.saturating_add(self.cfg.window_ms) >= inc.first_ms
            && a.at_ms <= inc.last_ms.saturating_add(self.cfg.window_ms))
        .then_some(Strength::Strong)
    }

    /// Whether the alert and the incident each name where they come from, and it
    /// differs: the alert runs in a process tree the incident does not hold while it
    /// holds trees on that device (a developer's build in another terminal, an
    /// admin's session, a cron job), or it names remote addresses and the incident
    /// holds others its devices named (the internet's scanners beside one attacker;
    /// a sign-in's address says nothing of what a device talks to). Then the device
    /// alone does not tie them.
    fn origins_differ(&self, inc: &Live, a: &AlertIn, ids: &[KeyId]) -> bool {
        let own_device = a.keys.iter().position(weak).map(|i| ids[i]);
        let other_tree = a.keys.iter().zip(ids).any(|(k, id)| {
            k.kind == KeyKind::Process
                && !inc.keys.contains_key(id)
                && own_device.is_some_and(|d| inc.tree_devices.contains(&d))
        });
        let other_address = inc.device_addresses > 0
            && a.keys
                .iter()
                .zip(ids)
                .any(|(k, id)| k.kind == KeyKind::Ip && !inc.keys.contains_key(id));
        other_tree || other_address
    }

    /// Whether taking in an alert at `at_ms` keeps the incident within its maximum span.
    fn within_span(&self, inc: &Live, at_ms: u64) -> bool {
        inc.last_ms.max(at_ms) - inc.first_ms.min(at_ms) <= self.cfg.max_span_ms
    }

    /// Whether an alert's incidents may lie outside memory: it is older than what
    /// memory is sure to hold (open incidents active within `2 × window` of the newest
    /// alert). The caller then loads them with [`Engine::load_history`] first.
    pub fn needs_history(&self, a: &AlertIn) -> bool {
        let horizon = self.horizon_ms();
        horizon > 0 && a.at_ms.saturating_sub(self.cfg.window_ms) < horizon
    }

    /// The stored names of an alert's keys (to find its incidents in the store).
    pub fn key_names(a: &AlertIn) -> Vec<String> {
        a.keys.iter().map(LinkKey::id).collect()
    }

    /// Puts an incident an old alert may join in memory, unless it is there already
    /// (memory is newer than the store within a step); it stays until swept.
    pub fn load_history(&mut self, inc: Incident) {
        if self.by_id.contains_key(inc.id.as_str()) || !inc.status.is_open() {
            return;
        }
        self.next_seq = self.next_seq.max(inc.seq + 1);
        self.load_live(inc);
    }

    /// Whether a key is too common to link.
    fn is_common(&self, id: KeyId) -> bool {
        let entry = &self.table[id as usize];
        // Device and process-tree keys name one thing on one device: never common.
        if matches!(entry.kind, KeyKind::Device | KeyKind::Process) {
            return false;
        }
        let t = self.cfg.prevalence_threshold;
        if entry.contexts.len() > t {
            return true;
        }
        let horizon = self.horizon_ms();
        let live = entry
            .holders
            .iter()
            .filter(|s| {
                self.incidents
                    .get(s)
                    .is_some_and(|i| i.status.is_open() && i.last_ms >= horizon)
            })
            .count();
        live > t
    }

    /// Prevalence: the distinct devices and users each key of the alert was seen
    /// with. A user counts only its devices (a person may get mail from many senders).
    fn count_contexts(&mut self, a: &AlertIn, ids: &[KeyId]) {
        let device = a.device.as_deref().map(|d| self.device_context(d));
        // An alert naming several people (a spray's targets) is one sighting of its
        // other keys, not one per person.
        let people = a.keys.iter().filter(|k| k.kind == KeyKind::User).count();
        let users: SmallVec<[(KeyId, u32); 2]> = a
            .keys
            .iter()
            .zip(ids)
            .filter(|(k, _)| k.kind == KeyKind::User && people == 1)
            .map(|(_, &id)| {
                let name = Arc::clone(&self.table[id as usize].name);
                (id, self.context_id(&name))
            })
            .collect();
        let cap = self.cfg.prevalence_threshold + 1;
        for (k, &id) in a.keys.iter().zip(ids).filter(|(k, _)| k.kind != KeyKind::Device) {
            let contexts = device.into_iter().chain(
                users
                    .iter()
                    .filter(|_| k.kind != KeyKind::User)
                    .filter(|(u, _)| *u != id)
                    .map(|(_, c)| *c),
            );
            let entry = &mut self.table[id as usize];
            for c in contexts {
                if entry.contexts.len() < cap && !entry.contexts.contains(&c) {
                    entry.contexts.push(c);
                    if !entry.contexts_dirty {
                        entry.contexts_dirty = true;
                        self.dirty_prevalence.push(id);
                    }
                }
            }
        }
    }

    /// Correlates one alert; `None` when it is informational and joins nothing.
    ///
    /// The alert joins the incident it is tied to most strongly (by the kind of the
    /// key: a process tree first), and merges the others it is strongly tied to,
    /// unless a blocker keeps them apart. Weak ties (the device alone) count only
    /// when there is no strong one, and never merge: they pull an alert that has no
    /// other home into a story nearby, but a busy host's alerts with a home of their
    /// own stay in it.
    pub fn correlate(&mut self, a: &AlertIn) -> Option<Link> {
        self.high_ms = self.high_ms.max(a.at_ms);
        let ids = self.key_ids_of(a);
        self.count_contexts(a, &ids);
        // An alert naming several people (a password spray, a bulk mail) says nothing
        // about how they relate to other stories: it is not tied through its people.
        let people = a.keys.iter().filter(|k| k.kind == KeyKind::User).count();
        let mut order: SmallVec<[usize; 8]> = (0..ids.len())
            .filter(|&i| !(people > 1 && a.keys[i].kind == KeyKind::User))
            .collect();
        order.sort_by_key(|&i| (weak(&a.keys[i]), a.keys[i].kind));
        // Ties to the incidents in reach. Incidents in reach but at their maximum
        // span are only continued.
        let mut ties: SmallVec<[Tie; 4]> = SmallVec::new();
        let mut full: Option<u64> = None;
        for i in order {
            let id = ids[i];
            if self.table[id as usize].holders.is_empty() || self.is_common(id) {
                continue;
            }
            for &seq in &self.table[id as usize].holders {
                let Some(inc) = self.incidents.get(&seq) else {
                    continue;
                };
                let Some(strength) = self.tie(inc, a, &ids, i) else {
                    continue;
                };
                if !self.within_span(inc, a.at_ms) {
                    full = Some(full.map_or(seq, |f| f.min(seq)));
                    continue;
                }
                let gap = inc
                    .keys
                    .get(&id)
                    .map_or(u64::MAX, |seen| run_distance(&[(seen.first_ms, seen.last_ms)], a.at_ms));
                match ties.iter_mut().find(|t| t.seq == seq) {
                    Some(t) => t.add(i, a.keys[i].kind, strength, gap),
                    None => ties.push(Tie::new(seq, i, a.keys[i].kind, strength, gap, inc.severity())),
                }
            }
        }
        // The strongest tie first; weak ties only when there is no strong one, and then
        // only the best (the device alone merges nothing).
        ties.sort_by_key(|t| (t.strength == Strength::Weak, t.rank(a.keys[t.best].kind)));
        if let Some(first) = ties.iter().position(|t| t.strength == Strength::Weak) {
            ties.truncate(first.max(1));
        }
        let alert_id: Arc<str> = Arc::from(a.id.as_str());
        let clock_note = a.clock_note.as_deref().map(Arc::from);
        let link = if let Some(first) = ties.first() {
            let (mut target, best) = (first.seq, first.best);
            let mut reason = self.describe(target, best, &ids, a);
            for t in &ties[1..] {
                let why = self.describe(t.seq, t.best, &ids, a);
                let other_id = self
                    .incidents
                    .get(&t.seq)
                    .map(|i| Arc::clone(&i.id))
                    .unwrap_or_default();
                let blocker = self
                    .merge_blocker(target, t.seq)
                    .or_else(|| t.too_common_to_merge().or_else(|| first.too_common_to_merge()));
                match blocker {
                    None => {
                        // The older incident survives.
                        let (into, from) = (target.min(t.seq), target.max(t.seq));
                        self.merge(into, from, format!("alert {} bridges them: {why}", a.id));
                        target = into;
                        let merged = if from == t.seq {
                            "merged incident"
                        } else {
                            "merged into incident"
                        };
                        reason.push_str(&format!("; {why} ({merged} {other_id})"));
                    }
                    Some(blocker) => reason.push_str(&format!("; {why} (incident {other_id} not merged: {blocker})")),
                }
            }
            self.add(target, a, &ids, &alert_id, first.strength == Strength::Strong);
            Link {
                alert_rowid: a.rowid,
                alert_id,
                incident_id: self
                    .incidents
                    .get(&target)
                    .map(|i| Arc::clone(&i.id))
                    .unwrap_or_default(),
                reason: Arc::from(reason),
                created: false,
                at_ms: a.at_ms,
                clock_note,
                continues: None,
            }
        } else if a.severity == Severity::Informational {
            return None;
        } else {
            let seq = self.take_seq();
            let id: Arc<str> = Arc::from(incident_id_for(a));
            let inc = Live::new(Arc::clone(&id), seq, a.at_ms, a.severity, Arc::from(a.title.as_str()));
            self.by_id.insert(Arc::clone(&id), seq);
            self.incidents.insert(seq, inc);
            self.add(seq, a, &ids, &alert_id, true);
            let continues = full.and_then(|f| self.incidents.get(&f)).map(|f| Arc::clone(&f.id));
            let reason = match &continues {
                Some(old) => Arc::from(format!(
                    "first alert of the incident; continues incident {old}, which reached its maximum span of {}",
                    human(self.cfg.max_span_ms)
                )),
                None => Arc::clone(&self.first_reason),
            };
            Link {
                alert_rowid: a.rowid,
                alert_id,
                incident_id: id,
                reason,
                created: true,
                at_ms: a.at_ms,
                clock_note,
                continues,
            }
        };
        self.changes.links.push(link.clone());
        self.since_sweep += 1;
        // Sweeping costs the size of the state: do it as often as that is cheap.
        if self.since_sweep >= 4096.max(self.incidents.len()) {
            self.sweep();
        }
        Some(link)
    }

    fn add(&mut self, seq: u64, a: &AlertIn, ids: &[KeyId], alert_id: &Arc<str>, extend_runs: bool) {
        let Some(inc) = self.incidents.get_mut(&seq) else {
            return;
        };
        let mut shared = Shared {
            table: &self.table,
            strings: &mut self.strings,
            proximity_ms: self.cfg.proximity_ms,
        };
        for id in inc.absorb(&mut shared, a, ids, alert_id, extend_runs) {
            self.table[id as usize].holders.push(seq);
        }
        self.dirty.insert(seq);
    }

    /// Why two incidents must stay apart, if they must.
    fn merge_blocker(&self, a: u64, b: u64) -> Option<&'static str> {
        let (a, b) = (self.incidents.get(&a)?, self.incidents.get(&b)?);
        if !a.status.is_open() || !b.status.is_open() {
            return Some("resolved");
        }
        if let (Some(x), Some(y)) = (&a.assignee, &b.assignee)
            && x != y
        {
            return Some("different assignees");
        }
        if let (Some(x), Some(y)) = (a.classification, b.classification)
            && x != y
        {
            return Some("different classifications");
        }
        if a.last_ms.max(b.last_ms) - a.first_ms.min(b.first_ms) > self.cfg.max_span_ms {
            return Some("together they would span more than the maximum");
        }
        None
    }

    /// Merges incident `from` into `into` (both in memory).
    fn merge(&mut self, into: u64, from: u64, reason: String) {
        if !self.incidents.contains_key(&into) {
            return;
        }
        let Some(other) = self.drop_incident(from) else {
            return;
        };
        self.by_id.remove(&other.id);
        let Some(target) = self.incidents.get_mut(&into) else {
            return;
        };
        let new_keys = target.absorb_incident(&self.table, &other, self.cfg.proximity_ms);
        self.changes.merges.push(Merge {
            from: Arc::clone(&other.id),
            into: Arc::clone(&target.id),
            reason,
        });
        for id in new_keys {
            self.table[id as usize].holders.push(into);
        }
        self.changes.merged_away.push(other.row(&self.table, false));
        self.dirty.insert(into);
    }

    /// Why alert `a` matches incident `seq` through its key `a.keys[i]`.
    fn describe(&self, seq: u64, i: usize, ids: &[KeyId], a: &AlertIn) -> String {
        let key = &a.keys[i];
        let Some(seen) = self.incidents.get(&seq).and_then(|inc| inc.keys.get(&ids[i])) else {
            return format!("shares {} {}", key.kind.as_str(), key.label);
        };
        let other = &seen.last_alert;
        let base = match key.kind {
            KeyKind::Process => format!("same process tree: {}", key.label),
            KeyKind::Device if key.via.is_none() => format!(
                "same device {} within {} of this incident's alerts there",
                key.label,
                human(run_distance(&seen.runs, a.at_ms))
            ),
            KeyKind::Device => format!("same device {} as alert {other}", key.label),
            KeyKind::File => format!("shares file {} with alert {other}", key.value),
            KeyKind::Mailbox => format!("same mailbox {} as alert {other}", key.label),
            KeyKind::Sender => format!("same sender {} as alert {other}", key.label),
            KeyKind::User => {
                let gap = a.at_ms.abs_diff(seen.last_ms).min(a.at_ms.abs_diff(seen.first_ms));
                format!("same user {} within {} of alert {other}", key.label, human(gap))
            }
            KeyKind::Url => format!("shares URL {} with alert {other}", key.label),
            KeyKind::Domain => format!("shares domain {} with alert {other}", key.label),
            KeyKind::Ip => format!("shares IP {} with alert {other}", key.label),
        };
        match key.via.as_deref().or(seen.via.as_deref()) {
            Some(via) => format!("{via}: {base}"),
            None => base,
        }
    }

    /// Drops unreachable incidents (with their index entries).
    fn sweep(&mut self) {
        self.since_sweep = 0;
        let horizon = self.horizon_ms();
        let gone: Vec<u64> = self
            .incidents
            .iter()
            .filter(|(s, i)| (!i.status.is_open() || i.last_ms < horizon) && !self.dirty.contains(s))
            .map(|(s, _)| *s)
            .collect();
        for seq in gone {
            if let Some(inc) = self.drop_incident(seq) {
                self.by_id.remove(&inc.id);
            }
        }
    }

    /// What changed since the last call, for the store.
    pub fn take_changes(&mut self) -> Changes {
        let mut changes = std::mem::take(&mut self.changes);
        for seq in std::mem::take(&mut self.dirty) {
            if let Some(inc) = self.incidents.get_mut(&seq) {
                changes.incidents.push(inc.row(&self.table, false));
                inc.clear_touched();
            }
        }
        for id in std::mem::take(&mut self.dirty_prevalence) {
            let entry = &mut self.table[id as usize];
            entry.contexts_dirty = false;
            let names = entry
                .contexts
                .iter()
                .filter_map(|&c| self.context_names.get(c as usize).cloned())
                .collect();
            changes.prevalence.push((Arc::clone(&entry.name), names));
        }
        changes
    }
}

/// An incident opened by an alert gets an id made from the alert: its time and a
/// hash of its id, in the ULID layout (so ids sort by time and a replay gives the same).
pub fn incident_id_for(a: &AlertIn) -> String {
    let h = crate::util::sha256(format!("incident:{}", a.id).as_bytes());
    let mut rand = [0u8; 16];
    rand[6..].copy_from_slice(&h[..10]);
    let r = u128::from_be_bytes(rand);
    let t = u128::from(a.at_ms.min((1u64 << 48) - 1));
    Id128::from_u128((t << 80) | r).to_string()
}

/// "2 h", "15 min", "40 s".
pub fn human(ms: u64) -> String {
    let s = ms / 1000;
    if s >= 2 * 86_400 {
        format!("{} d", s / 86_400)
    } else if s >= 3600 {
        format!("{} h", s.div_ceil(3600))
    } else if s >= 60 {
        format!("{} min", s.div_ceil(60))
    } else {
        format!("{} s", s.max(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: u64 = 3_600_000;

    fn key(kind: KeyKind, value: &str) -> LinkKey {
        LinkKey {
            kind,
            value: value.into(),
            label: value.into(),
            via: None,
        }
    }

    fn alert(rowid: i64, at_ms: u64, device: Option<&str>, keys: Vec<LinkKey>) -> AlertIn {
        AlertIn {
            rowid,
            id: format!("A{rowid}"),
            at_ms,
            severity: Severity::Medium,
            tactics: vec!["TA0002".into()],
            source: "agent".into(),
            title: format!("rule {rowid}"),
            device: device.map(str::to_string),
            keys,
            clock_note: None,
        }
    }

    impl Engine {
        /// Correlates an alert that must land somewhere.
        fn link(&mut self, a: &AlertIn) -> Link {
            self.correlate(a).expect("a linked alert")
        }
    }

    fn engine() -> Engine {
        Engine::new(EngineConfig {
            window_ms: 24 * H,
            prevalence_threshold: 3,
            proximity_ms: H / 2,
            max_span_ms: 72 * H,
        })
    }

    #[test]
    fn shared_hash_joins_with_its_reason_and_strangers_stay_out() {
        let mut e = engine();
        let first = e.link(&alert(1, 1_000, Some("D1"), vec![key(KeyKind::File, "aa")]));
        assert!(first.created);
        assert_eq!(&*first.reason, "first alert of the incident");
        let second = e.link(&alert(2, 2_000, Some("D2"), vec![key(KeyKind::File, "aa")]));
        assert_eq!(second.incident_id, first.incident_id);
        assert_eq!(&*second.reason, "shares file aa with alert A1");
        let stranger = e.link(&alert(3, 3_000, Some("D3"), vec![key(KeyKind::File, "bb")]));
        assert!(stranger.created);
        assert_ne!(stranger.incident_id, first.incident_id);
    }

    #[test]
    fn users_link_within_the_window_only() {
        let mut e = engine();
        let a = e.link(&alert(1, 10 * H, None, vec![key(KeyKind::User, "alice")]));
        let b = e.link(&alert(2, 12 * H, None, vec![key(KeyKind::User, "alice")]));
        assert_eq!(b.incident_id, a.incident_id);
        assert_eq!(&*b.reason, "same user alice within 2 h of alert A1");
        // More than 24 h after the incident's last activity: a new incident.
        let c = e.link(&alert(3, 12 * H + 25 * H, None, vec![key(KeyKind::User, "alice")]));
        assert!(c.created);
    }

    #[test]
    fn prevalent_entities_stop_linking() {
        let mut e = engine();
        // A system binary's hash on four devices (threshold 3): the fourth no longer links.
        let mut incidents = BTreeSet::new();
        for (i, d) in ["D1", "D2", "D3", "D4", "D5"].iter().enumerate() {
            let l = e.link(&alert(
                i as i64 + 1,
                1_000 + i as u64,
                Some(d),
                vec![key(KeyKind::File, "ls")],
            ));
            incidents.insert(l.incident_id);
        }
        // D1..D3 share one incident; D4 and D5 each get their own.
        assert_eq!(incidents.len(), 3);
    }

    #[test]
    fn a_sender_mailing_many_users_stops_linking() {
        let mut e = engine();
        let mut incidents = BTreeSet::new();
        for (i, u) in ["ann", "ben", "cat", "dan", "eve", "fay"].iter().enumerate() {
            let keys = vec![key(KeyKind::User, u), key(KeyKind::Sender, "spam@bulk.example")];
            incidents.insert(e.link(&alert(i as i64 + 1, 1_000 + i as u64, None, keys)).incident_id);
        }
        // Three recipients share one incident; from the fourth on the sender is too common.
        assert_eq!(incidents.len(), 4);
        // The recipients themselves stay strong.
        let again = e.link(&alert(9, 2_000, None, vec![key(KeyKind::User, "fay")]));
        assert!(!again.created);
    }

    #[test]
    fn a_bridging_alert_merges_into_the_older_incident() {
        let mut e = engine();
        let a = e.link(&alert(1, 1_000, Some("D1"), vec![key(KeyKind::Ip, "198.51.100.7")]));
        let b = e.link(&alert(2, 2_000, Some("D2"), vec![key(KeyKind::Domain, "evil.example")]));
        e.take_changes();
        let bridge = e.link(&alert(
            3,
            3_000,
            Some("D3"),
            vec![key(KeyKind::Domain, "evil.example"), key(KeyKind::Ip, "198.51.100.7")],
        ));
        assert_eq!(bridge.incident_id, a.incident_id, "the older survives");
        // Joined on the domain (the better key), then that incident went into the older.
        assert!(
            bridge
                .reason
                .contains(&format!("(merged into incident {})", a.incident_id)),
            "{}",
            bridge.reason
        );
        let changes = e.take_changes();
        assert_eq!(changes.merges.len(), 1);
        assert_eq!(
            (&*changes.merges[0].from, &*changes.merges[0].into),
            (&*b.incident_id, &*a.incident_id)
        );
        assert_eq!(e.incident_count(), 1);
        let inc = e.get(&a.incident_id).unwrap();
        assert_eq!(inc.alert_count, 3);
        // Later alerts of the merged incident's entities land in the survivor.
        let later = e.link(&alert(4, 4_000, Some("D4"), vec![key(KeyKind::Domain, "evil.example")]));
        assert_eq!(later.incident_id, a.incident_id);
    }

    fn bridged(triage: impl Fn(&mut Engine, &str, &str)) -> (Link, Link, Link, Changes) {
        let mut e = engine();
        let a = e.link(&alert(1, 1_000, Some("D1"), vec![key(KeyKind::Url, "http://x/a")]));
        let b = e.link(&alert(2, 2_000, Some("D2"), vec![key(KeyKind::Ip, "198.51.100.7")]));
        triage(&mut e, &a.incident_id, &b.incident_id);
        e.take_changes();
        let bridge = e.link(&alert(
            3,
            3_000,
            Some("D3"),
            vec![key(KeyKind::Ip, "198.51.100.7"), key(KeyKind::Url, "http://x/a")],
        ));
        (a, b, bridge, e.take_changes())
    }

    #[test]
    fn resolved_incidents_are_not_merged_or_joined() {
        let (a, b, bridge, changes) = bridged(|e, _, b| e.set_triage(b, Status::Resolved, None, None));
        assert!(changes.merges.is_empty());
        assert_eq!(bridge.incident_id, a.incident_id);
        assert_ne!(bridge.incident_id, b.incident_id);
    }

    #[test]
    fn different_assignees_are_not_merged() {
        let (a, b, bridge, changes) = bridged(|e, a, b| {
            e.set_triage(a, Status::InProgress, Some("ann".into()), None);
            e.set_triage(b, Status::Active, Some("ben".into()), None);
        });
        assert!(changes.merges.is_empty());
        assert_eq!(bridge.incident_id, a.incident_id);
        assert!(
            bridge
                .reason
                .contains(&format!("incident {} not merged: different assignees", b.incident_id)),
            "{}",
            bridge.reason
        );
    }

    #[test]
    fn a_bridge_over_three_incidents_keeps_different_assignees_apart() {
        let mut e = engine();
        let a = e.link(&alert(1, 1_000, Some("D1"), vec![key(KeyKind::Url, "u")]));
        let b = e.link(&alert(2, 2_000, Some("D2"), vec![key(KeyKind::Domain, "d.example")]));
        let c = e.link(&alert(3, 2_500, Some("D3"), vec![key(KeyKind::Ip, "198.51.100.7")]));
        e.set_triage(&b.incident_id, Status::InProgress, Some("ann".into()), None);
        e.set_triage(&c.incident_id, Status::Active, Some("ben".into()), None);
        e.take_changes();
        let bridge = e.link(&alert(
            4,
            3_000,
            Some("D4"),
            vec![
                key(KeyKind::Domain, "d.example"),
                key(KeyKind::Url, "u"),
                key(KeyKind::Ip, "198.51.100.7"),
            ],
        ));
        let changes = e.take_changes();
        // The unassigned oldest takes ann's incident and her triage; ben's stays apart.
        assert_eq!(changes.merges.len(), 1, "{}", bridge.reason);
        assert_eq!(changes.merges[0].from, b.incident_id);
        assert!(
            bridge
                .reason
                .contains(&format!("incident {} not merged: different assignees", c.incident_id)),
            "{}",
            bridge.reason
        );
        let survivor = e.by_id.get(&a.incident_id).and_then(|s| e.incidents.get(s)).unwrap();
        assert_eq!(
            (survivor.assignee.as_deref(), survivor.status),
            (Some("ann"), Status::InProgress)
        );
    }

    #[test]
    fn different_classifications_are_not_merged() {
        let (a, _, bridge, changes) = bridged(|e, a, b| {
            e.set_triage(a, Status::Active, None, Some(Classification::TruePositive));
            e.set_triage(b, Status::Active, None, Some(Classification::FalsePositive));
        });
        assert!(changes.merges.is_empty());
        assert_eq!(bridge.incident_id, a.incident_id);
        assert!(bridge.reason.contains("different classifications"), "{}", bridge.reason);
        // Same assignee and one classification unset: they merge.
        let (_, _, _, merged) = bridged(|e, a, b| {
            e.set_triage(
                a,
                Status::Active,
                Some("ann".into()),
                Some(Classification::TruePositive),
            );
            e.set_triage(b, Status::Active, Some("ann".into()), None);
        });
        assert_eq!(merged.merges.len(), 1);
    }

    #[test]
    fn severity_tactics_and_title_follow_the_alerts() {
        let mut e = engine();
        let mut mail = alert(1, 1_000, None, vec![key(KeyKind::User, "alice")]);
        mail.source = "mailbox".into();
        mail.tactics = vec!["TA0001".into()];
        mail.title = "Phishing".into();
        let l = e.link(&mail);
        let mut shell = alert(
            2,
            2_000,
            Some("D1"),
            vec![key(KeyKind::Device, "D1"), key(KeyKind::User, "alice")],
        );
        shell.tactics = vec!["TA0011".into(), "TA0002".into()];
        shell.severity = Severity::High;
        e.link(&shell);
        let inc = e.get(&l.incident_id).unwrap();
        assert_eq!(inc.tactics, ["TA0001", "TA0002", "TA0011"]);
        assert_eq!(
            inc.severity,
            Severity::Critical,
            "high, raised for three stages and two sources"
        );
        assert_eq!(
            inc.title,
            "Multi-stage incident involving Initial Access & Command and Control on D1 for alice reported by 2 sources"
        );
    }

    #[test]
    fn ids_are_ulids_made_from_the_opening_alert() {
        let a = alert(1, 1_700_000_000_000, None, Vec::new());
        let id = incident_id_for(&a);
        assert_eq!(id.len(), 26);
        assert_eq!(id.parse::<Id128>().unwrap().timestamp_ms(), 1_700_000_000_000);
        assert_eq!(id, incident_id_for(&a));
    }

    const MIN: u64 = 60_000;

    fn dev(d: &str) -> LinkKey {
        key(KeyKind::Device, d)
    }

    #[test]
    fn device_only_links_stay_within_the_proximity_of_the_nearest_alert() {
        let mut e = engine();
        let a = e.link(&alert(1, 10 * H, Some("D1"), vec![dev("D1")]));
        // 20 min later: near enough (proximity 30 min).
        let b = e.link(&alert(2, 10 * H + 20 * MIN, Some("D1"), vec![dev("D1")]));
        assert_eq!(b.incident_id, a.incident_id);
        assert_eq!(
            &*b.reason,
            "same device D1 within 20 min of this incident's alerts there"
        );
        // 2 h later, well inside the 24 h window but far from any alert on D1: apart.
        let c = e.link(&alert(3, 12 * H, Some("D1"), vec![dev("D1")]));
        assert!(c.created, "{}", c.reason);
        // A strong key keeps the long window: the same file 5 h later joins the first.
        let d = e.link(&alert(4, 15 * H, Some("D2"), vec![key(KeyKind::File, "ff")]));
        let f = e.link(&alert(
            5,
            15 * H + MIN,
            Some("D1"),
            vec![dev("D1"), key(KeyKind::File, "ff")],
        ));
        assert_eq!(f.incident_id, d.incident_id, "{}", f.reason);
    }

    #[test]
    fn a_device_alert_between_two_far_apart_alerts_of_an_incident_stays_out() {
        let mut e = engine();
        // One incident on D1 at 10:00 and 20:00, tied by a file.
        let alice = || key(KeyKind::File, "ff");
        let a = e.link(&alert(1, 10 * H, Some("D1"), vec![dev("D1"), alice()]));
        let b = e.link(&alert(2, 20 * H, Some("D1"), vec![dev("D1"), alice()]));
        assert_eq!(b.incident_id, a.incident_id);
        // At 15:00 the nearest of its alerts on D1 is 5 h away.
        let c = e.link(&alert(3, 15 * H, Some("D1"), vec![dev("D1")]));
        assert!(c.created, "{}", c.reason);
        // Near the 20:00 one it joins.
        let d = e.link(&alert(4, 20 * H + 10 * MIN, Some("D1"), vec![dev("D1")]));
        assert_eq!(d.incident_id, a.incident_id);
    }

    #[test]
    fn runs_join_what_a_time_bridges() {
        let mut runs: SmallVec<[(u64, u64); 1]> = SmallVec::new();
        for t in [100, 10, 300, 50] {
            add_run(&mut runs, t, 60);
        }
        assert_eq!(runs.as_slice(), [(10, 100), (300, 300)]);
        add_run(&mut runs, 200, 100);
        assert_eq!(runs.as_slice(), [(10, 300)]);
        assert_eq!(run_distance(&runs, 5), 5);
        assert_eq!(run_distance(&runs, 150), 0);
        assert_eq!(run_distance(&runs, 400), 100);
    }

    #[test]
    fn an_incident_spans_at_most_its_maximum_and_the_next_one_says_whose_story_it_continues() {
        let mut e = engine();
        let bob = || vec![key(KeyKind::User, "bob")];
        let first = e.link(&alert(1, 0, None, bob()));
        for (i, h) in [20, 40, 60, 72].into_iter().enumerate() {
            let l = e.link(&alert(i as i64 + 2, h * H, None, bob()));
            assert_eq!(l.incident_id, first.incident_id, "at {h} h");
        }
        let next = e.link(&alert(9, 73 * H, None, bob()));
        assert!(next.created);
        assert_eq!(next.continues.as_deref(), Some(&*first.incident_id));
        assert!(next.reason.contains("continues incident"), "{}", next.reason);
        // Later alerts of bob join the continuation.
        let later = e.link(&alert(10, 74 * H, None, bob()));
        assert_eq!(later.incident_id, next.incident_id);
        assert_eq!(e.get(&first.incident_id).unwrap().last_ms, 72 * H);
    }

    #[test]
    fn incidents_that_together_would_span_too_long_are_not_merged() {
        let mut e = engine();
        let a = e.link(&alert(1, 0, None, vec![key(KeyKind::User, "ann")]));
        for (i, h) in [20, 40, 60].into_iter().enumerate() {
            e.link(&alert(i as i64 + 10, h * H, None, vec![key(KeyKind::User, "ann")]));
        }
        let b = e.link(&alert(3, 70 * H, None, vec![key(KeyKind::Ip, "198.51.100.7")]));
        e.link(&alert(4, 80 * H, None, vec![key(KeyKind::Ip, "198.51.100.7")]));
        e.take_changes();
        let bridge = e.link(&alert(
            5,
            70 * H + 1,
            None,
            vec![key(KeyKind::User, "ann"), key(KeyKind::Ip, "198.51.100.7")],
        ));
        // It joins the address's incident, the person's stays apart.
        assert_eq!(bridge.incident_id, b.incident_id);
        assert!(e.take_changes().merges.is_empty());
        assert!(
            bridge.reason.contains(&format!(
                "incident {} not merged: together they would span more than the maximum",
                a.incident_id
            )),
            "{}",
            bridge.reason
        );
    }

    #[test]
    fn informational_alerts_never_open_an_incident_but_may_join_one() {
        let mut e = engine();
        let mut info = alert(1, 10 * H, Some("D1"), vec![dev("D1")]);
        info.severity = Severity::Informational;
        assert!(e.correlate(&info).is_none());
        assert!(e.take_changes().links.is_empty());
        let shell = e.link(&alert(2, 10 * H + MIN, Some("D1"), vec![dev("D1")]));
        assert!(shell.created);
        info.rowid = 3;
        info.id = "A3".into();
        info.at_ms = 10 * H + 2 * MIN;
        assert_eq!(e.correlate(&info).map(|l| l.incident_id), Some(shell.incident_id));
    }

    fn tree(device: &str, pid: u32) -> LinkKey {
        key(KeyKind::Process, &format!("{device}/{pid}@1000"))
    }

    #[test]
    fn a_file_alone_does_not_merge_two_stories() {
        let mut e = engine();
        // The same miner build on two hosts, each in its own story.
        let laptop = e.link(&alert(
            1,
            H,
            Some("D1"),
            vec![dev("D1"), tree("D1", 10), key(KeyKind::File, "xmrig")],
        ));
        let bastion = e.link(&alert(
            2,
            2 * H,
            Some("D2"),
            vec![dev("D2"), tree("D2", 20), key(KeyKind::Ip, "198.51.100.7")],
        ));
        let again = e.link(&alert(
            3,
            3 * H,
            Some("D2"),
            vec![dev("D2"), tree("D2", 20), key(KeyKind::File, "xmrig")],
        ));
        assert_eq!(again.incident_id, bastion.incident_id, "{}", again.reason);
        assert!(
            again.reason.contains(&format!(
                "incident {} not merged: a file alone does not merge incidents",
                laptop.incident_id
            )),
            "{}",
            again.reason
        );
        assert_eq!(e.incident_count(), 2);
        // With no other home, the file still joins.
        let third = e.link(&alert(
            4,
            4 * H,
            Some("D3"),
            vec![dev("D3"), key(KeyKind::File, "xmrig")],
        ));
        assert!(!third.created, "{}", third.reason);
    }

    #[test]
    fn the_device_alone_merges_nothing_and_yields_to_a_strong_tie() {
        let mut e = engine();
        let build = e.link(&alert(1, H, Some("D1"), vec![dev("D1"), tree("D1", 10)]));
        let attack = e.link(&alert(2, H + 60_000, Some("D1"), vec![dev("D1"), tree("D1", 20)]));
        assert!(attack.created, "another tree on the device: {}", attack.reason);
        // The build's next alert, near the attack on the device, stays with its tree.
        let next = e.link(&alert(3, H + 120_000, Some("D1"), vec![dev("D1"), tree("D1", 10)]));
        assert_eq!(next.incident_id, build.incident_id);
        assert!(!next.reason.contains("merged"), "{}", next.reason);
        // A file alert of no process joins the nearest story on the device, merging none.
        let file = e.link(&alert(4, H + 180_000, Some("D1"), vec![dev("D1")]));
        assert!(!file.created);
        assert_eq!(e.incident_count(), 2);
        assert!(e.take_changes().merges.is_empty());
    }

    #[test]
    fn what_came_in_on_the_device_alone_ties_no_more_than_the_device() {
        let mut e = engine();
        let first = e.link(&alert(1, H, Some("D1"), vec![dev("D1"), key(KeyKind::File, "payload")]));
        // A shell nearby joins on the device; its tree is held weakly.
        let shell = e.link(&alert(2, H + 60_000, Some("D1"), vec![dev("D1"), tree("D1", 30)]));
        assert_eq!(shell.incident_id, first.incident_id);
        // The same shell within the proximity: still in.
        let near = e.link(&alert(3, H + 20 * 60_000, Some("D1"), vec![dev("D1"), tree("D1", 30)]));
        assert_eq!(near.incident_id, first.incident_id);
        // Hours later its tree no longer reaches back: a day of that shell's builds
        // stays out of the story.
        let later = e.link(&alert(4, 5 * H, Some("D1"), vec![dev("D1"), tree("D1", 30)]));
        assert!(later.created, "{}", later.reason);
        // An artifact a weak joiner brought stays strong (the implant it wrote runs later).
        let implant = e.link(&alert(
            5,
            6 * H,
            Some("D1"),
            vec![dev("D1"), key(KeyKind::File, "payload")],
        ));
        assert_eq!(implant.incident_id, first.incident_id);
    }

    #[test]
    fn a_test_binary_that_came_in_on_the_device_alone_does_not_chain_its_reruns() {
        let mut e = engine();
        let story = e.link(&alert(1, H, Some("D1"), vec![dev("D1"), key(KeyKind::File, "payload")]));
        // A developer's test binary runs near it: in, on the device.
        let run = |e: &mut Engine, n: i64, at: u64| {
            e.link(&alert(
                n,
                at,
                Some("D1"),
                vec![dev("D1"), tree("D1", 100 + n as u32), key(KeyKind::File, "test-bin")],
            ))
        };
        assert_eq!(run(&mut e, 2, H + 60_000).incident_id, story.incident_id);
        // The same binary runs again all afternoon: its hash does not pull the reruns in.
        let rerun = run(&mut e, 3, 3 * H);
        assert_ne!(rerun.incident_id, story.incident_id, "{}", rerun.reason);
        assert_eq!(run(&mut e, 4, 4 * H).incident_id, rerun.incident_id);
    }

    #[test]
    fn a_sign_in_address_does_not_keep_a_device_alert_out() {
        let mut e = engine();
        let sign_in = e.link(&alert(
            1,
            H,
            None,
            vec![key(KeyKind::User, "alice"), key(KeyKind::Ip, "198.51.100.7")],
        ));
        let file = e.link(&alert(
            2,
            H + 60_000,
            Some("D1"),
            vec![dev("D1"), key(KeyKind::User, "alice")],
        ));
        assert_eq!(file.incident_id, sign_in.incident_id);
        // The reverse shell's address is not the sign-in's: still the same story on D1.
        let shell = e.link(&alert(
            3,
            H + 120_000,
            Some("D1"),
            vec![dev("D1"), key(KeyKind::Ip, "203.0.113.50")],
        ));
        assert_eq!(shell.incident_id, sign_in.incident_id, "{}", shell.reason);
    }

    #[test]
    fn different_remote_addresses_are_not_tied_by_the_device_alone() {
        let mut e = engine();
        let attacker = e.link(&alert(
            1,
            H,
            Some("D1"),
            vec![dev("D1"), key(KeyKind::Ip, "198.51.100.7")],
        ));
        let scanner = e.link(&alert(
            2,
            H + 60_000,
            Some("D1"),
            vec![dev("D1"), key(KeyKind::Ip, "203.0.113.9")],
        ));
        assert!(scanner.created, "{}", scanner.reason);
        let login = e.link(&alert(
            3,
            H + 120_000,
            Some("D1"),
            vec![dev("D1"), key(KeyKind::Ip, "198.51.100.7")],
        ));
        assert_eq!(login.incident_id, attacker.incident_id);
    }

    #[test]
    fn a_person_tied_only_by_the_person_joins_their_most_severe_incident() {
        let mut e = engine();
        let mut attack = alert(
            1,
            H,
            Some("D1"),
            vec![dev("D1"), key(KeyKind::User, "alice"), tree("D1", 10)],
        );
        attack.severity = Severity::Critical;
        let attack = e.link(&attack);
        let mut build = alert(
            2,
            2 * H,
            Some("D1"),
            vec![dev("D1"), key(KeyKind::User, "alice"), tree("D1", 20)],
        );
        build.severity = Severity::Low;
        let build = e.link(&build);
        assert_ne!(build.incident_id, attack.incident_id);
        // A risky sign-in nearer the build than the attack still joins the attack.
        let sign_in = e.link(&alert(3, 2 * H + 60_000, None, vec![key(KeyKind::User, "alice")]));
        assert_eq!(sign_in.incident_id, attack.incident_id, "{}", sign_in.reason);
        assert!(
            sign_in.reason.contains("a person alone does not merge"),
            "{}",
            sign_in.reason
        );
    }

    #[test]
    fn a_process_tree_is_a_strong_device_local_link_and_reads_as_one() {
        let mut e = engine();
        let tree = || LinkKey {
            kind: KeyKind::Process,
            value: "D1/17794@1000".into(),
            label: "bash 17794 started 1970-01-01 00:00:01 UTC by java (tomcat) 4410".into(),
            via: None,
        };
        let a = e.link(&alert(1, 10 * H, Some("D1"), vec![dev("D1"), tree()]));
        // 5 h later, beyond the device proximity: the process tree still ties them.
        let b = e.link(&alert(2, 15 * H, Some("D1"), vec![dev("D1"), tree()]));
        assert_eq!(b.incident_id, a.incident_id);
        assert_eq!(
            &*b.reason,
            "same process tree: bash 17794 started 1970-01-01 00:00:01 UTC by java (tomcat) 4410"
        );
    }

    #[test]
    fn an_old_alert_joins_the_incidents_of_its_own_time() {
        let mut e = engine();
        let old = e.link(&alert(1, 10 * H, None, vec![key(KeyKind::User, "carl")]));
        e.take_changes();
        // Current alerts move the newest time three years on; the old incident leaves memory.
        for i in 0..5000 {
            e.link(&alert(
                10 + i,
                26_000 * H + i as u64,
                None,
                vec![key(KeyKind::User, "u")],
            ));
        }
        assert!(e.get(&old.incident_id).is_none(), "swept from memory");
        let late = alert(2, 10 * H + 5 * MIN, None, vec![key(KeyKind::User, "carl")]);
        assert!(e.needs_history(&late));
        let fresh = alert(3, 26_000 * H, None, vec![key(KeyKind::User, "carl")]);
        assert!(!e.needs_history(&fresh));
    }

    #[test]
    fn a_steady_stream_of_device_only_alerts_does_not_chain_into_one_incident() {
        let mut e = engine();
        let story = e.link(&alert(1, 10 * H, Some("D1"), vec![dev("D1"), key(KeyKind::File, "ff")]));
        let mut joined = 0;
        for i in 1..=30u64 {
            let l = e.link(&alert(1 + i as i64, 10 * H + i * 10 * MIN, Some("D1"), vec![dev("D1")]));
            joined += u64::from(l.incident_id == story.incident_id);
        }
        // Only the build noise within 30 min of the story's own alert joins it.
        assert_eq!(joined, 3);
        // A strong link further on widens its reach again.
        let later = e.link(&alert(
            99,
            16 * H,
            Some("D1"),
            vec![dev("D1"), key(KeyKind::File, "ff")],
        ));
        assert_eq!(later.incident_id, story.incident_id);
        let near = e.link(&alert(100, 16 * H + 5 * MIN, Some("D1"), vec![dev("D1")]));
        assert_eq!(near.incident_id, story.incident_id);
    }

    #[test]
    fn a_person_on_the_same_device_links_like_the_device() {
        let mut e = engine();
        let alice = || key(KeyKind::User, "alice");
        let mail = e.link(&alert(1, 10 * H, None, vec![alice()]));
        // Her laptop 3 h later: a person across sources keeps the long window.
        let shell = e.link(&alert(2, 13 * H, Some("D1"), vec![dev("D1"), alice()]));
        assert_eq!(shell.incident_id, mail.incident_id);
        // Her own builds on that laptop 2 h after the shell: no closer than the device.
        let build = e.link(&alert(3, 15 * H, Some("D1"), vec![dev("D1"), alice()]));
        assert!(build.created, "{}", build.reason);
        // Within the proximity of the shell they do join.
        let near = e.link(&alert(4, 13 * H + 10 * MIN, Some("D1"), vec![dev("D1"), alice()]));
        assert_eq!(near.incident_id, mail.incident_id);
    }

    #[test]
    fn an_alert_naming_several_people_is_not_tied_through_them() {
        let mut e = engine();
        let ann = e.link(&alert(1, 10 * H, None, vec![key(KeyKind::User, "ann")]));
        let ben = e.link(&alert(2, 11 * H, None, vec![key(KeyKind::User, "ben")]));
        let spray_keys = vec![
            key(KeyKind::User, "ann"),
            key(KeyKind::User, "ben"),
            key(KeyKind::Ip, "203.0.113.9"),
        ];
        let spray = e.link(&alert(3, 12 * H, None, spray_keys));
        // The people it names are its targets: it joins neither person's incident.
        assert!(spray.created, "{}", spray.reason);
        assert_ne!(spray.incident_id, ann.incident_id);
        assert_ne!(spray.incident_id, ben.incident_id);
        // A later alert of ann alone stays with ann; the sprayer's address joins the spray.
        let later = e.link(&alert(4, 13 * H, None, vec![key(KeyKind::User, "ann")]));
        assert_eq!(later.incident_id, ann.incident_id);
        let brute = e.link(&alert(
            5,
            13 * H,
            None,
            vec![key(KeyKind::User, "ben"), key(KeyKind::Ip, "203.0.113.9")],
        ));
        assert_eq!(brute.incident_id, spray.incident_id, "{}", brute.reason);
        // Tied to ben's incident by ben alone: joined by the address, not merged.
        assert!(
            brute.reason.contains("a person alone does not merge"),
            "{}",
            brute.reason
        );
    }
}
