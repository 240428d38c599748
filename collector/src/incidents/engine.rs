//! The correlation engine: pure and in memory, no I/O, no clock. Given alerts in
//! arrival (rowid) order with their keys, it decides whether each one opens an
//! incident, joins one, or bridges several (merging them), and says why. The same
//! alerts in the same order give the same incidents; the state it needs is saved
//! as rows ([`IncidentRow`], [`EntityRow`], prevalence) so a restarted collector
//! loads it and goes on exactly where it stopped.
//!
//! Rules:
//! - An alert joins an open incident (active or in progress) when it shares a
//!   strong key with it and its time is within `window_ms` of the incident's
//!   activity (before its first or after its last).
//! - Incidents whose last activity is older than `2 × window_ms` before the newest
//!   alert seen are out of reach (and dropped from memory), in one run as after a restart.
//! - A key seen on more than `prevalence_threshold` distinct devices (and, for keys
//!   other than users, distinct users), or shared by more than that many reachable
//!   incidents, no longer links (system binaries, resolvers, mass mailers).
//! - An alert that matches several incidents joins the oldest; each other one is
//!   merged into it unless their assignees or classifications differ (both set).

use std::collections::{BTreeMap, BTreeSet};

// Fx: a fixed, fast hash for the engine's lookup tables (none of them is iterated in an
// order that reaches results), instead of SipHash, a measurable share of the engine's time.
use rustc_hash::FxHashMap as HashMap;

use ward_protocol::Severity;
use ward_protocol::ids::Id128;

use super::keys::{KeyKind, LinkKey};
use super::model::{Classification, Status, TACTICS, incident_severity, tactic_rank};

#[derive(Debug, Clone, Copy)]
pub struct EngineConfig {
    pub window_ms: u64,
    pub prevalence_threshold: usize,
}

/// One alert as correlation sees it.
#[derive(Debug, Clone)]
pub struct AlertIn {
    pub rowid: i64,
    pub id: String,
    pub at_ms: u64,
    pub severity: Severity,
    pub tactics: Vec<String>,
    pub source: String,
    pub title: String,
    /// The device the alert came from (agent and collector alerts).
    pub device: Option<String>,
    pub keys: Vec<LinkKey>,
}

/// A key as seen within one incident.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeySeen {
    pub kind: KeyKind,
    pub value: String,
    pub label: String,
    pub via: Option<String>,
    pub first_ms: u64,
    pub last_ms: u64,
    /// The latest alert (by time) that carried it.
    pub last_alert: String,
}

/// An incident's correlation state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Incident {
    pub id: String,
    /// Creation order: lower is older.
    pub seq: u64,
    pub status: Status,
    pub assignee: Option<String>,
    pub classification: Option<Classification>,
    pub first_ms: u64,
    pub last_ms: u64,
    pub alert_severity: Severity,
    /// Kill-chain ranks of its tactics.
    pub tactics: BTreeSet<usize>,
    pub sources: BTreeSet<String>,
    pub alert_count: u64,
    pub first_title: String,
    pub several_titles: bool,
    pub keys: BTreeMap<String, KeySeen>,
    /// Keys added or updated since the store last saw this incident.
    pub touched: BTreeSet<String>,
    /// Keys per kind, and the lowest key id of each kind with its label (for titles);
    /// kept as keys are added so a large incident is summed up without a scan.
    pub counts: [usize; 7],
    pub first_of: [Option<(String, String)>; 7],
}

/// What the store keeps of an incident: its summary and the keys to save.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IncidentRow {
    pub id: String,
    pub seq: u64,
    pub title: String,
    pub severity: Severity,
    pub alert_severity: Severity,
    pub sources: Vec<String>,
    pub tactics: Vec<&'static str>,
    pub first_title: String,
    pub several_titles: bool,
    pub first_ms: u64,
    pub last_ms: u64,
    pub alert_count: u64,
    pub devices: usize,
    pub users: usize,
    pub mailboxes: usize,
    pub keys: Vec<(String, KeySeen)>,
}

impl Incident {
    /// Its row, with all keys or only those touched since the last save.
    pub fn row(&self, all_keys: bool) -> IncidentRow {
        let keys = if all_keys {
            self.keys.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
        } else {
            self.touched
                .iter()
                .filter_map(|k| self.keys.get(k).map(|v| (k.clone(), v.clone())))
                .collect()
        };
        IncidentRow {
            id: self.id.clone(),
            seq: self.seq,
            title: self.title(),
            severity: self.severity(),
            alert_severity: self.alert_severity,
            sources: self.sources.iter().cloned().collect(),
            tactics: self.tactic_ids(),
            first_title: self.first_title.clone(),
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

    fn note(&mut self, id: &str, kind: KeyKind, label: &str) {
        let k = kind as usize;
        self.counts[k] += 1;
        if self.first_of[k].as_ref().is_none_or(|(first, _)| id < first.as_str()) {
            self.first_of[k] = Some((id.to_string(), label.to_string()));
        }
    }

    /// The same incident with its per-kind counts computed from its keys.
    pub fn recounted(mut self) -> Incident {
        self.recount();
        self
    }

    /// Recomputes the per-kind counts from the keys (after loading).
    pub fn recount(&mut self) {
        self.counts = [0; 7];
        self.first_of = Default::default();
        let keys: Vec<(String, KeyKind, String)> = self
            .keys
            .iter()
            .map(|(id, k)| (id.clone(), k.kind, k.label.clone()))
            .collect();
        for (id, kind, label) in keys {
            self.note(&id, kind, &label);
        }
    }

    fn new(id: String, seq: u64, a: &AlertIn) -> Incident {
        Incident {
            id,
            seq,
            status: Status::Active,
            assignee: None,
            classification: None,
            first_ms: a.at_ms,
            last_ms: a.at_ms,
            alert_severity: a.severity,
            tactics: BTreeSet::new(),
            sources: BTreeSet::new(),
            alert_count: 0,
            first_title: a.title.clone(),
            several_titles: false,
            keys: BTreeMap::new(),
            touched: BTreeSet::new(),
            counts: [0; 7],
            first_of: Default::default(),
        }
    }

    /// Adds an alert's facts; returns the ids of keys new to this incident.
    pub fn absorb(&mut self, a: &AlertIn) -> Vec<String> {
        let ids: Vec<String> = a.keys.iter().map(LinkKey::id).collect();
        self.absorb_keys(a, &ids)
    }

    /// [`Incident::absorb`] with the alert's key ids already made (`ids[i]` is `a.keys[i]`'s).
    fn absorb_keys(&mut self, a: &AlertIn, ids: &[String]) -> Vec<String> {
        self.first_ms = self.first_ms.min(a.at_ms);
        self.last_ms = self.last_ms.max(a.at_ms);
        self.alert_severity = self.alert_severity.max(a.severity);
        self.tactics.extend(a.tactics.iter().filter_map(|t| tactic_rank(t)));
        if !self.sources.contains(&a.source) {
            self.sources.insert(a.source.clone());
        }
        self.several_titles |= a.title != self.first_title;
        self.alert_count += 1;
        let mut new = Vec::new();
        for (k, id) in a.keys.iter().zip(ids) {
            self.touched.insert(id.clone());
            match self.keys.get_mut(id) {
                Some(seen) => {
                    seen.first_ms = seen.first_ms.min(a.at_ms);
                    if a.at_ms >= seen.last_ms {
                        seen.last_ms = a.at_ms;
                        seen.last_alert = a.id.clone();
                    }
                    if k.via.is_none() {
                        seen.via = None;
                    }
                }
                None => {
                    self.note(id, k.kind, &k.label);
                    self.keys.insert(
                        id.clone(),
                        KeySeen {
                            kind: k.kind,
                            value: k.value.clone(),
                            label: k.label.clone(),
                            via: k.via.clone(),
                            first_ms: a.at_ms,
                            last_ms: a.at_ms,
                            last_alert: a.id.clone(),
                        },
                    );
                    new.push(id.clone());
                }
            }
        }
        new
    }

    /// Takes in everything of a merged incident; returns the ids of keys new here.
    fn absorb_incident(&mut self, other: &Incident) -> Vec<String> {
        self.first_ms = self.first_ms.min(other.first_ms);
        self.last_ms = self.last_ms.max(other.last_ms);
        self.alert_severity = self.alert_severity.max(other.alert_severity);
        self.tactics.extend(other.tactics.iter().copied());
        self.sources.extend(other.sources.iter().cloned());
        self.several_titles |= other.several_titles || other.first_title != self.first_title;
        self.alert_count += other.alert_count;
        let mut new = Vec::new();
        for (id, k) in &other.keys {
            self.touched.insert(id.clone());
            match self.keys.get_mut(id) {
                Some(seen) => {
                    seen.first_ms = seen.first_ms.min(k.first_ms);
                    if k.last_ms > seen.last_ms {
                        seen.last_ms = k.last_ms;
                        seen.last_alert = k.last_alert.clone();
                    }
                }
                None => {
                    self.note(id, k.kind, &k.label);
                    self.keys.insert(id.clone(), k.clone());
                    new.push(id.clone());
                }
            }
        }
        new
    }

    pub fn count(&self, kind: KeyKind) -> usize {
        self.counts[kind as usize]
    }

    /// The severity shown: highest alert, raised for breadth.
    pub fn severity(&self) -> Severity {
        incident_severity(self.alert_severity, self.tactics.len(), self.sources.len())
    }

    pub fn tactic_ids(&self) -> Vec<&'static str> {
        self.tactics.iter().map(|&i| TACTICS[i].0).collect()
    }

    /// A title made from its alerts: what happened, then where and to whom.
    pub fn title(&self) -> String {
        let base = if !self.several_titles {
            self.first_title.clone()
        } else if self.tactics.len() >= 2 {
            let first = self.tactics.first().map(|&i| TACTICS[i].1).unwrap_or("");
            let last = self.tactics.last().map(|&i| TACTICS[i].1).unwrap_or("");
            format!("Multi-stage incident involving {first} & {last}")
        } else {
            format!("{} and related alerts", self.first_title)
        };
        let label = |kind: KeyKind, many: &str| match (self.count(kind), &self.first_of[kind as usize]) {
            (0, _) | (_, None) => None,
            (1, Some((_, label))) => Some(label.clone()),
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
}

/// Why an alert went where it went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub alert_rowid: i64,
    pub alert_id: String,
    pub incident_id: String,
    pub reason: String,
    /// True when the alert opened the incident.
    pub created: bool,
}

/// An incident merged into an older one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Merge {
    pub from: String,
    pub into: String,
    pub reason: String,
}

/// What the store must write after some alerts were correlated.
#[derive(Debug, Default)]
pub struct Changes {
    pub links: Vec<Link>,
    pub merges: Vec<Merge>,
    /// Incidents merged away, as they were just before (their rows must exist).
    pub merged_away: Vec<IncidentRow>,
    /// Incidents whose summary or keys changed (current state).
    pub incidents: Vec<IncidentRow>,
    /// Keys whose distinct contexts changed: key id → `d:<device id>` / `user:<name>`.
    pub prevalence: Vec<(String, Vec<String>)>,
}

#[derive(Debug, Default, Clone)]
struct Prevalence {
    /// Interned contexts: `d:<device id>` or `user:<name>`, at most threshold + 1.
    devices: Vec<u32>,
}

/// The in-memory correlation state.
#[derive(Debug)]
pub struct Engine {
    cfg: EngineConfig,
    incidents: HashMap<u64, Incident>,
    by_id: HashMap<String, u64>,
    /// Key id → incidents (seq) holding it.
    index: HashMap<String, Vec<u64>>,
    prevalence: HashMap<String, Prevalence>,
    device_ids: HashMap<String, u32>,
    device_names: Vec<String>,
    next_seq: u64,
    /// Newest alert time seen.
    high_ms: u64,
    dirty: BTreeSet<u64>,
    dirty_prevalence: BTreeSet<String>,
    changes: Changes,
    since_sweep: usize,
}

impl Engine {
    pub fn new(cfg: EngineConfig) -> Engine {
        Engine {
            cfg,
            incidents: HashMap::default(),
            by_id: HashMap::default(),
            index: HashMap::default(),
            prevalence: HashMap::default(),
            device_ids: HashMap::default(),
            device_names: Vec::new(),
            next_seq: 1,
            high_ms: 0,
            dirty: BTreeSet::new(),
            dirty_prevalence: BTreeSet::new(),
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

    /// Restores the distinct devices a key was seen on.
    pub fn load_prevalence(&mut self, key: String, devices: &[String]) {
        let ids = devices.iter().map(|d| self.intern(d)).collect();
        self.prevalence.insert(key, Prevalence { devices: ids });
    }

    /// Puts an incident (from the store, or rebuilt) in memory, replacing any
    /// copy; incidents that are not open or out of reach are only forgotten.
    pub fn load(&mut self, mut inc: Incident) {
        self.forget(&inc.id);
        inc.touched.clear();
        inc.recount();
        self.next_seq = self.next_seq.max(inc.seq + 1);
        if !inc.status.is_open() || inc.last_ms < self.horizon_ms() {
            return;
        }
        for key in inc.keys.keys() {
            self.index.entry(key.clone()).or_default().push(inc.seq);
        }
        self.by_id.insert(inc.id.clone(), inc.seq);
        self.incidents.insert(inc.seq, inc);
    }

    /// Drops an incident from memory, with its index entries.
    pub fn forget(&mut self, id: &str) {
        if let Some(seq) = self.by_id.remove(id) {
            if let Some(inc) = self.incidents.remove(&seq) {
                for key in inc.keys.keys() {
                    if let Some(seqs) = self.index.get_mut(key) {
                        seqs.retain(|s| *s != seq);
                        if seqs.is_empty() {
                            self.index.remove(key);
                        }
                    }
                }
            }
            self.dirty.remove(&seq);
        }
    }

    pub fn get(&self, id: &str) -> Option<&Incident> {
        self.by_id.get(id).and_then(|s| self.incidents.get(s))
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

    /// A fresh incident state from alerts alone (after an analyst moved alerts).
    pub fn replay(id: String, seq: u64, alerts: &[AlertIn]) -> Option<Incident> {
        let first = alerts.first()?;
        let mut inc = Incident::new(id, seq, first);
        for a in alerts {
            inc.absorb(a);
        }
        Some(inc)
    }

    /// Assigns the next creation number (for incidents analysts open by hand).
    pub fn take_seq(&mut self) -> u64 {
        let s = self.next_seq;
        self.next_seq += 1;
        s
    }

    /// Marks an incident for saving.
    pub fn touch(&mut self, id: &str) {
        if let Some(&seq) = self.by_id.get(id) {
            self.dirty.insert(seq);
        }
    }

    fn intern(&mut self, device: &str) -> u32 {
        if let Some(&i) = self.device_ids.get(device) {
            return i;
        }
        let i = u32::try_from(self.device_names.len()).unwrap_or(u32::MAX);
        self.device_names.push(device.to_string());
        self.device_ids.insert(device.to_string(), i);
        i
    }

    fn reachable(&self, inc: &Incident, at_ms: u64) -> bool {
        inc.status.is_open()
            && inc.last_ms >= self.horizon_ms()
            && at_ms.saturating_add(self.cfg.window_ms) >= inc.first_ms
            && at_ms <= inc.last_ms.saturating_add(self.cfg.window_ms)
    }

    /// Whether a key is too common to link.
    fn is_common(&self, key: &str, kind: KeyKind) -> bool {
        if kind == KeyKind::Device {
            return false;
        }
        let t = self.cfg.prevalence_threshold;
        if self.prevalence.get(key).is_some_and(|p| p.devices.len() > t) {
            return true;
        }
        let horizon = self.horizon_ms();
        let live = self.index.get(key).map_or(0, |seqs| {
            seqs.iter()
                .filter(|s| {
                    self.incidents
                        .get(s)
                        .is_some_and(|i| i.status.is_open() && i.last_ms >= horizon)
                })
                .count()
        });
        live > t
    }

    /// Correlates one alert.
    pub fn correlate(&mut self, a: &AlertIn) -> Link {
        self.high_ms = self.high_ms.max(a.at_ms);
        // Prevalence: the distinct devices and users a key was seen with. A user
        // counts only its devices (a person may get mail from many senders).
        let ids: Vec<String> = a.keys.iter().map(LinkKey::id).collect();
        let device = a.device.as_ref().map(|d| self.intern(&format!("d:{d}")));
        let users: Vec<(&str, u32)> = a
            .keys
            .iter()
            .zip(&ids)
            .filter(|(k, _)| k.kind == KeyKind::User)
            .map(|(_, id)| (id.as_str(), self.intern(id)))
            .collect();
        let cap = self.cfg.prevalence_threshold + 1;
        for (k, id) in a.keys.iter().zip(&ids).filter(|(k, _)| k.kind != KeyKind::Device) {
            let contexts = device.into_iter().chain(
                users
                    .iter()
                    .filter(|_| k.kind != KeyKind::User)
                    .filter(|(u, _)| u != id)
                    .map(|(_, i)| *i),
            );
            for c in contexts {
                let p = match self.prevalence.get_mut(id) {
                    Some(p) => p,
                    None => self.prevalence.entry(id.clone()).or_default(),
                };
                if p.devices.len() < cap && !p.devices.contains(&c) {
                    p.devices.push(c);
                    self.dirty_prevalence.insert(id.clone());
                }
            }
        }
        // Candidates: for each reachable incident, the best key it shares (keys in kind order).
        let mut ordered: Vec<(&LinkKey, &String)> = a.keys.iter().zip(&ids).collect();
        ordered.sort_by_key(|(k, _)| k.kind);
        let mut best: BTreeMap<u64, (&LinkKey, String)> = BTreeMap::new();
        for (k, id) in ordered {
            let Some(seqs) = self.index.get(id) else { continue };
            if self.is_common(id, k.kind) {
                continue;
            }
            for seq in seqs {
                if let Some(inc) = self.incidents.get(seq)
                    && inc.keys.contains_key(id)
                    && self.reachable(inc, a.at_ms)
                {
                    best.entry(*seq).or_insert((k, id.clone()));
                }
            }
        }
        let link = if let Some((&target, _)) = best.iter().next() {
            let mut reasons = Vec::new();
            let target_reason = self.describe(target, &best[&target], a);
            reasons.push(target_reason);
            for (&seq, m) in best.iter().skip(1) {
                let why = self.describe(seq, m, a);
                let other_id = self.incidents.get(&seq).map(|i| i.id.clone()).unwrap_or_default();
                match self.merge_blocker(target, seq) {
                    None => {
                        self.merge(target, seq, format!("alert {} bridges them: {why}", a.id));
                        reasons.push(format!("{why} (merged incident {other_id})"));
                    }
                    Some(blocker) => reasons.push(format!("{why} (incident {other_id} not merged: {blocker})")),
                }
            }
            self.add(target, a, &ids);
            Link {
                alert_rowid: a.rowid,
                alert_id: a.id.clone(),
                incident_id: self.incidents.get(&target).map(|i| i.id.clone()).unwrap_or_default(),
                reason: reasons.join("; "),
                created: false,
            }
        } else {
            let seq = self.take_seq();
            let id = incident_id_for(a);
            let inc = Incident::new(id.clone(), seq, a);
            self.by_id.insert(id.clone(), seq);
            self.incidents.insert(seq, inc);
            self.add(seq, a, &ids);
            Link {
                alert_rowid: a.rowid,
                alert_id: a.id.clone(),
                incident_id: id,
                reason: "first alert of the incident".into(),
                created: true,
            }
        };
        self.changes.links.push(link.clone());
        self.since_sweep += 1;
        // Sweeping costs the size of the state: do it as often as that is cheap.
        if self.since_sweep >= 4096.max(self.incidents.len()) {
            self.sweep();
        }
        link
    }

    fn add(&mut self, seq: u64, a: &AlertIn, ids: &[String]) {
        let Some(inc) = self.incidents.get_mut(&seq) else {
            return;
        };
        for key in inc.absorb_keys(a, ids) {
            self.index.entry(key).or_default().push(seq);
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
        None
    }

    /// Merges incident `from` into `into` (both in memory).
    fn merge(&mut self, into: u64, from: u64, reason: String) {
        let Some(other) = self.incidents.remove(&from) else {
            return;
        };
        self.by_id.remove(&other.id);
        self.dirty.remove(&from);
        let Some(target) = self.incidents.get_mut(&into) else {
            return;
        };
        let new_keys = target.absorb_incident(&other);
        for key in new_keys {
            self.index.entry(key).or_default().push(into);
        }
        self.changes.merges.push(Merge {
            from: other.id.clone(),
            into: target.id.clone(),
            reason,
        });
        self.changes.merged_away.push(other.row(false));
        self.dirty.insert(into);
    }

    /// Merges by hand: `from` into `into`, both loaded. False if either is not in memory.
    pub fn merge_by_hand(&mut self, into: &str, from: &str, reason: String) -> bool {
        match (self.by_id.get(into).copied(), self.by_id.get(from).copied()) {
            (Some(i), Some(f)) if i != f => {
                self.merge(i, f, reason);
                true
            }
            _ => false,
        }
    }

    fn describe(&self, seq: u64, (key, id): &(&LinkKey, String), a: &AlertIn) -> String {
        let Some(seen) = self.incidents.get(&seq).and_then(|i| i.keys.get(id)) else {
            return format!("shares {} {}", key.kind.as_str(), key.label);
        };
        let other = &seen.last_alert;
        let base = match key.kind {
            KeyKind::Device => format!("same device {} as alert {other}", key.label),
            KeyKind::File => format!("shares file {} with alert {other}", key.value),
            KeyKind::Mailbox => format!("same mailbox {} as alert {other}", key.label),
            KeyKind::User => {
                let gap = a.at_ms.abs_diff(seen.last_ms).min(a.at_ms.abs_diff(seen.first_ms));
                format!("same user {} within {} of alert {other}", key.label, human(gap))
            }
            KeyKind::Url => format!("shares URL {} with alert {other}", key.label),
            KeyKind::Domain => format!("shares domain {} with alert {other}", key.label),
            KeyKind::Ip => format!("shares IP {} with alert {other}", key.label),
        };
        match key.via.as_ref().or(seen.via.as_ref()) {
            Some(via) => format!("{via}: {base}"),
            None => base,
        }
    }

    /// Drops unreachable incidents and stale index entries.
    pub fn sweep(&mut self) {
        self.since_sweep = 0;
        let horizon = self.horizon_ms();
        let gone: Vec<(u64, String)> = self
            .incidents
            .iter()
            .filter(|(s, i)| (!i.status.is_open() || i.last_ms < horizon) && !self.dirty.contains(s))
            .map(|(s, i)| (*s, i.id.clone()))
            .collect();
        for (seq, id) in gone {
            self.incidents.remove(&seq);
            self.by_id.remove(&id);
        }
        let incidents = &self.incidents;
        self.index.retain(|_, seqs| {
            seqs.retain(|s| incidents.contains_key(s));
            !seqs.is_empty()
        });
    }

    /// What changed since the last call, for the store.
    pub fn take_changes(&mut self) -> Changes {
        let mut changes = std::mem::take(&mut self.changes);
        let dirty = std::mem::take(&mut self.dirty);
        changes.incidents = dirty
            .iter()
            .filter_map(|s| {
                let inc = self.incidents.get_mut(s)?;
                let row = inc.row(false);
                inc.touched.clear();
                Some(row)
            })
            .collect();
        let keys = std::mem::take(&mut self.dirty_prevalence);
        changes.prevalence = keys
            .into_iter()
            .filter_map(|k| {
                let p = self.prevalence.get(&k)?;
                let names = p
                    .devices
                    .iter()
                    .filter_map(|&d| self.device_names.get(d as usize).cloned())
                    .collect();
                Some((k, names))
            })
            .collect();
        changes
    }

    /// Incidents in memory, oldest first (for tests and checks).
    pub fn incidents(&self) -> Vec<&Incident> {
        let mut v: Vec<&Incident> = self.incidents.values().collect();
        v.sort_by_key(|i| i.seq);
        v
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
        }
    }

    fn engine() -> Engine {
        Engine::new(EngineConfig {
            window_ms: 24 * H,
            prevalence_threshold: 3,
        })
    }

    #[test]
    fn shared_hash_joins_with_its_reason_and_strangers_stay_out() {
        let mut e = engine();
        let first = e.correlate(&alert(1, 1_000, Some("D1"), vec![key(KeyKind::File, "aa")]));
        assert!(first.created);
        assert_eq!(first.reason, "first alert of the incident");
        let second = e.correlate(&alert(2, 2_000, Some("D2"), vec![key(KeyKind::File, "aa")]));
        assert_eq!(second.incident_id, first.incident_id);
        assert_eq!(second.reason, "shares file aa with alert A1");
        let stranger = e.correlate(&alert(3, 3_000, Some("D3"), vec![key(KeyKind::File, "bb")]));
        assert!(stranger.created);
        assert_ne!(stranger.incident_id, first.incident_id);
    }

    #[test]
    fn users_link_within_the_window_only() {
        let mut e = engine();
        let a = e.correlate(&alert(1, 10 * H, None, vec![key(KeyKind::User, "alice")]));
        let b = e.correlate(&alert(2, 12 * H, None, vec![key(KeyKind::User, "alice")]));
        assert_eq!(b.incident_id, a.incident_id);
        assert_eq!(b.reason, "same user alice within 2 h of alert A1");
        // More than 24 h after the incident's last activity: a new incident.
        let c = e.correlate(&alert(3, 12 * H + 25 * H, None, vec![key(KeyKind::User, "alice")]));
        assert!(c.created);
    }

    #[test]
    fn prevalent_entities_stop_linking() {
        let mut e = engine();
        // A system binary's hash on four devices (threshold 3): the fourth no longer links.
        let mut incidents = BTreeSet::new();
        for (i, d) in ["D1", "D2", "D3", "D4", "D5"].iter().enumerate() {
            let l = e.correlate(&alert(
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
            let keys = vec![key(KeyKind::User, u), key(KeyKind::Mailbox, "spam@bulk.example")];
            incidents.insert(
                e.correlate(&alert(i as i64 + 1, 1_000 + i as u64, None, keys))
                    .incident_id,
            );
        }
        // Three recipients share one incident; from the fourth on the sender is too common.
        assert_eq!(incidents.len(), 4);
        // The recipients themselves stay strong.
        let again = e.correlate(&alert(9, 2_000, None, vec![key(KeyKind::User, "fay")]));
        assert!(!again.created);
    }

    #[test]
    fn a_bridging_alert_merges_into_the_older_incident() {
        let mut e = engine();
        let a = e.correlate(&alert(1, 1_000, Some("D1"), vec![key(KeyKind::File, "aa")]));
        let b = e.correlate(&alert(2, 2_000, Some("D2"), vec![key(KeyKind::User, "bob")]));
        e.take_changes();
        let bridge = e.correlate(&alert(
            3,
            3_000,
            Some("D3"),
            vec![key(KeyKind::User, "bob"), key(KeyKind::File, "aa")],
        ));
        assert_eq!(bridge.incident_id, a.incident_id, "the older survives");
        assert!(
            bridge.reason.contains(&format!("(merged incident {})", b.incident_id)),
            "{}",
            bridge.reason
        );
        let changes = e.take_changes();
        assert_eq!(changes.merges.len(), 1);
        assert_eq!(
            (changes.merges[0].from.as_str(), changes.merges[0].into.as_str()),
            (b.incident_id.as_str(), a.incident_id.as_str())
        );
        assert_eq!(e.incidents().len(), 1);
        let inc = e.get(&a.incident_id).unwrap();
        assert_eq!(inc.alert_count, 3);
        // Later alerts of the merged incident's entities land in the survivor.
        let later = e.correlate(&alert(4, 4_000, Some("D4"), vec![key(KeyKind::User, "bob")]));
        assert_eq!(later.incident_id, a.incident_id);
    }

    fn bridged(triage: impl Fn(&mut Engine, &str, &str)) -> (Link, Link, Link, Changes) {
        let mut e = engine();
        let a = e.correlate(&alert(1, 1_000, Some("D1"), vec![key(KeyKind::File, "aa")]));
        let b = e.correlate(&alert(2, 2_000, Some("D2"), vec![key(KeyKind::User, "bob")]));
        triage(&mut e, &a.incident_id, &b.incident_id);
        e.take_changes();
        let bridge = e.correlate(&alert(
            3,
            3_000,
            Some("D3"),
            vec![key(KeyKind::User, "bob"), key(KeyKind::File, "aa")],
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
        let l = e.correlate(&mail);
        let mut shell = alert(
            2,
            2_000,
            Some("D1"),
            vec![key(KeyKind::Device, "D1"), key(KeyKind::User, "alice")],
        );
        shell.tactics = vec!["TA0011".into(), "TA0002".into()];
        shell.severity = Severity::High;
        e.correlate(&shell);
        let inc = e.get(&l.incident_id).unwrap();
        assert_eq!(inc.tactic_ids(), ["TA0001", "TA0002", "TA0011"]);
        assert_eq!(
            inc.severity(),
            Severity::Critical,
            "high, raised for three stages and two sources"
        );
        assert_eq!(
            inc.title(),
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
}
