//! Grouping quality, measured: the labelled corpus (tests/fixtures/correlation)
//! loaded into a real collector store, correlated with the collector's default
//! settings, and scored against its labels. `ward-corrbench --labelled` prints the
//! report; `tests/grouping_quality.rs` asserts the targets.
//!
//! Scoring (also in the fixture's README):
//! - Every alert is in one cluster: its incident, followed through redirects to
//!   the survivor, or a cluster of its own when no incident holds it.
//! - A pair of alerts is *together* when they share a cluster. Attack pairs are
//!   the pairs of alerts with the same attack label.
//! - recall = attack pairs together / attack pairs.
//! - precision = attack pairs together / pairs together that hold at least one
//!   attack alert. An attack alert together with noise, or with another attack,
//!   is wrong; two noise alerts together are neither right nor wrong (benign
//!   alerts grouped with benign alerts hide no attack), so they count in neither.
//!   Their grouping is reported on its own (noise clusters, the largest one).

pub mod format;
pub mod generate;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use ward_collector::incidents::{Correlator, STEP_ALERTS, Settings};
use ward_collector::store::prelude::*;
use ward_collector::store::sqlite::alert_id::AlertIdText;
use ward_collector::store::{NewDevice, Store};
use ward_protocol::{DeviceId, Id128, Inventory, PublicKey};

pub use format::{Corpus, DeviceSpec, NOISE, Record};

/// The committed corpus.
pub fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/correlation")
}

/// The correlation settings the corpus is scored with: the collector's defaults.
/// The one place to adapt when `Settings` changes.
pub fn settings() -> Settings {
    ward_collector::incidents::Settings::from_config(&ward_collector::config::CorrelationConfig::default())
}

/// Where each alert ended up.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Per record (in corpus order): the surviving incident holding it, if any.
    pub incident: Vec<Option<String>>,
    /// Per record: why it was linked (the incident_alerts reason).
    pub reason: Vec<Option<String>>,
}

fn scratch_dir() -> Result<tempfile::TempDir> {
    // Memory-backed when there is one: the store syncs every commit.
    let shm = Path::new("/dev/shm");
    if shm.is_dir()
        && let Ok(d) = tempfile::tempdir_in(shm)
    {
        return Ok(d);
    }
    Ok(tempfile::tempdir()?)
}

/// Loads the records `keep` accepts into a fresh store in arrival order (each
/// group of equal arrival times in one insert, as the writer commits a round),
/// lets the correlator drain after each, and reads where every alert went.
pub fn correlate(corpus: &Corpus, settings: Settings, keep: impl Fn(&Record) -> bool) -> Result<Outcome> {
    let dir = scratch_dir()?;
    let db = dir.path().join("ward.db");
    let mut store = Store::open(&db)?;
    let mut ids = HashMap::new();
    for (n, d) in corpus.devices.iter().enumerate() {
        let n8 = u8::try_from(n + 1).context("too many devices")?;
        let secret = [n8; 32];
        store.create_enroll_token(&secret, 1, 0, u64::MAX / 2)?;
        let id = DeviceId(Id128::from_u128((u128::from(n8) << 80) | 7));
        let device = NewDevice {
            id,
            signing_key: PublicKey([n8; 32]),
            cert_sha256: [n8; 32],
            inventory: Inventory {
                hostname: d.hostname.clone(),
                os: d.os.clone(),
                kernel: "6.1".into(),
                addresses: d.addresses.clone(),
                logged_on_users: vec![],
                agent_version: "corpus".into(),
            },
        };
        store
            .enroll(&secret, &device, 1)?
            .map_err(|e| anyhow::anyhow!("enrolling {}: {e:?}", d.hostname))?;
        ids.insert(d.hostname.clone(), id.to_string());
    }
    let correlator = Correlator::new(settings, Arc::default());
    let kept: Vec<&Record> = corpus.records.iter().filter(|r| keep(r)).collect();
    let mut i = 0;
    while i < kept.len() {
        let at = kept[i].received_ms;
        let mut batch = Vec::new();
        while i < kept.len() && kept[i].received_ms == at {
            let device = kept[i].device.as_ref().and_then(|h| ids.get(h)).cloned();
            batch.push(kept[i].sourced(device)?);
            i += 1;
        }
        store.insert_sourced_alerts(&batch, at)?;
        while correlator.step(&mut store, STEP_ALERTS)? > 0 {}
    }
    drop(store);

    let conn = rusqlite::Connection::open_with_flags(&db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    let mut redirect = HashMap::new();
    {
        let mut stmt = conn.prepare("SELECT id, redirected_to FROM incidents WHERE redirected_to IS NOT NULL")?;
        for row in stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))? {
            let (from, to) = row?;
            redirect.insert(from, to);
        }
    }
    let survivor = |mut id: String| {
        for _ in 0..1_000 {
            match redirect.get(&id) {
                Some(next) => id = next.clone(),
                None => break,
            }
        }
        id
    };
    let mut placed: HashMap<String, (Option<String>, Option<String>)> = HashMap::new();
    let mut stmt = conn.prepare(
        "SELECT a.id, i.id, ia.reason FROM alerts a
         LEFT JOIN incident_alerts ia ON ia.alert_rowid = a.rowid LEFT JOIN incidents i ON i.seq = ia.incident",
    )?;
    for row in stmt.query_map([], |r| {
        Ok((
            r.get::<_, AlertIdText>(0)?.0,
            r.get::<_, Option<String>>(1)?,
            r.get::<_, Option<String>>(2)?,
        ))
    })? {
        let (id, inc, reason) = row?;
        placed.insert(id, (inc.map(survivor), reason));
    }
    let mut incident = Vec::new();
    let mut reason = Vec::new();
    for r in &corpus.records {
        let (inc, why) = placed.get(&r.alert.id).cloned().unwrap_or((None, None));
        incident.push(inc);
        reason.push(why);
    }
    Ok(Outcome { incident, reason })
}

fn pairs(n: usize) -> u64 {
    (n as u64) * (n as u64).saturating_sub(1) / 2
}

/// One attack's outcome.
#[derive(Debug, Clone)]
pub struct AttackScore {
    pub label: String,
    pub alerts: usize,
    /// Clusters its alerts are spread over (1 is right).
    pub incidents: usize,
    /// Alerts of the cluster holding most of them.
    pub largest: usize,
    /// Noise alerts in the clusters holding its alerts.
    pub noise_pulled: usize,
    /// Alerts of other attacks in those clusters.
    pub other_attacks_pulled: usize,
}

/// The scores of one outcome.
#[derive(Debug, Clone)]
pub struct Score {
    pub alerts: usize,
    pub attack_alerts: usize,
    pub attack_pairs: u64,
    pub attack_pairs_together: u64,
    pub pairs_together_with_attack: u64,
    pub precision: f64,
    pub recall: f64,
    pub attacks: Vec<AttackScore>,
    /// Noise alerts in a cluster with at least one attack alert.
    pub noise_in_attack_incidents: usize,
    pub incidents: usize,
    pub alerts_without_incident: usize,
    /// Clusters holding only noise, and the largest of them.
    pub noise_clusters: usize,
    pub largest_noise_cluster: usize,
    pub largest_incident: usize,
}

/// Scores an outcome against the labels (see the module doc).
pub fn score(corpus: &Corpus, outcome: &Outcome) -> Score {
    // Clusters: the incident, or the alert alone.
    let cluster: Vec<String> = outcome
        .incident
        .iter()
        .enumerate()
        .map(|(i, inc)| inc.clone().unwrap_or_else(|| format!("alone:{i}")))
        .collect();
    let mut table: BTreeMap<&str, BTreeMap<&str, usize>> = BTreeMap::new();
    for (r, c) in corpus.records.iter().zip(&cluster) {
        *table.entry(c).or_default().entry(&r.label).or_default() += 1;
    }
    let mut label_totals: BTreeMap<&str, usize> = BTreeMap::new();
    for r in &corpus.records {
        *label_totals.entry(&r.label).or_default() += 1;
    }
    let attack_pairs: u64 = label_totals
        .iter()
        .filter(|(l, _)| **l != NOISE)
        .map(|(_, n)| pairs(*n))
        .sum();
    let (mut together, mut with_attack, mut noise_in_attack) = (0u64, 0u64, 0usize);
    let (mut noise_clusters, mut largest_noise, mut largest) = (0usize, 0usize, 0usize);
    for labels in table.values() {
        let size: usize = labels.values().sum();
        let noise = labels.get(NOISE).copied().unwrap_or(0);
        largest = largest.max(size);
        if noise == size {
            noise_clusters += 1;
            largest_noise = largest_noise.max(size);
            continue;
        }
        with_attack += pairs(size) - pairs(noise);
        together += labels
            .iter()
            .filter(|(l, _)| **l != NOISE)
            .map(|(_, n)| pairs(*n))
            .sum::<u64>();
        noise_in_attack += noise;
    }
    let attacks = label_totals
        .iter()
        .filter(|(l, _)| **l != NOISE)
        .map(|(label, n)| {
            let held: Vec<&BTreeMap<&str, usize>> = table.values().filter(|t| t.contains_key(label)).collect();
            AttackScore {
                label: label.to_string(),
                alerts: *n,
                incidents: held.len(),
                largest: held.iter().map(|t| t[label]).max().unwrap_or(0),
                noise_pulled: held.iter().map(|t| t.get(NOISE).copied().unwrap_or(0)).sum(),
                other_attacks_pulled: held
                    .iter()
                    .map(|t| {
                        t.iter()
                            .filter(|(l, _)| *l != label && **l != NOISE)
                            .map(|(_, n)| n)
                            .sum::<usize>()
                    })
                    .sum(),
            }
        })
        .collect();
    let ratio = |a: u64, b: u64| if b == 0 { 1.0 } else { a as f64 / b as f64 };
    Score {
        alerts: corpus.records.len(),
        attack_alerts: corpus.records.iter().filter(|r| r.is_attack()).count(),
        attack_pairs,
        attack_pairs_together: together,
        pairs_together_with_attack: with_attack,
        precision: ratio(together, with_attack),
        recall: ratio(together, attack_pairs),
        attacks,
        noise_in_attack_incidents: noise_in_attack,
        incidents: outcome
            .incident
            .iter()
            .flatten()
            .collect::<std::collections::BTreeSet<_>>()
            .len(),
        alerts_without_incident: outcome.incident.iter().filter(|i| i.is_none()).count(),
        noise_clusters,
        largest_noise_cluster: largest_noise,
        largest_incident: largest,
    }
}

/// The alerts of other devices whose grouping (the set of alerts of other devices
/// sharing their cluster) differs between two outcomes of the same corpus: one
/// with the records of `device`, one without.
pub fn others_changed(corpus: &Corpus, with: &Outcome, without: &Outcome, device: &str) -> usize {
    let other: Vec<usize> = (0..corpus.records.len())
        .filter(|&i| corpus.records[i].device.as_deref() != Some(device))
        .collect();
    let groups = |o: &Outcome| {
        let mut by: HashMap<String, Vec<usize>> = HashMap::new();
        for &i in &other {
            let c = o.incident[i].clone().unwrap_or_else(|| format!("alone:{i}"));
            by.entry(c).or_default().push(i);
        }
        let mut of = HashMap::new();
        for members in by.into_values() {
            for &i in &members {
                of.insert(i, members.clone());
            }
        }
        of
    };
    let (a, b) = (groups(with), groups(without));
    other.iter().filter(|i| a.get(i) != b.get(i)).count()
}

/// One correlation run scored and explained.
#[derive(Debug, Clone)]
pub struct Part {
    pub score: Score,
    /// Per attack: the reasons its alerts were linked, most common first.
    pub reasons: BTreeMap<String, Vec<(String, usize)>>,
    /// Per attack: the kinds of noise pulled into its incidents, with counts.
    pub noise_pulled_by: BTreeMap<String, Vec<(String, usize)>>,
    /// Why those noise alerts were linked, by attack, most common first.
    pub noise_pulled_why: BTreeMap<String, Vec<(String, usize)>>,
}

/// Everything `ward-corrbench --labelled` reports.
#[derive(Debug, Clone)]
pub struct Report {
    /// The whole corpus: the figures the targets are about.
    pub full: Part,
    /// The corpus without the skewed device's alerts, so that the other causes
    /// show even while a far-future clock still wrecks everything.
    pub without_skewed: Part,
    pub skewed_device: String,
    pub skewed_alerts: usize,
    /// Alerts of other devices grouped differently with the skewed device than without it.
    pub skew_changed_others: usize,
}

fn explain(corpus: &Corpus, outcome: &Outcome) -> Part {
    let score = score(corpus, outcome);
    let mut reasons: BTreeMap<String, HashMap<String, usize>> = BTreeMap::new();
    let mut pulled: BTreeMap<String, HashMap<String, usize>> = BTreeMap::new();
    let mut pulled_why: BTreeMap<String, HashMap<String, usize>> = BTreeMap::new();
    let mut cluster_labels: HashMap<&str, Vec<&str>> = HashMap::new();
    for (r, inc) in corpus.records.iter().zip(&outcome.incident) {
        if let Some(inc) = inc
            && r.is_attack()
        {
            cluster_labels.entry(inc).or_default().push(&r.label);
        }
    }
    for (i, (r, inc)) in corpus.records.iter().zip(&outcome.incident).enumerate() {
        if r.is_attack() {
            let why = outcome
                .reason
                .get(i)
                .cloned()
                .flatten()
                .unwrap_or_else(|| "(in no incident)".into());
            *reasons
                .entry(r.label.clone())
                .or_default()
                .entry(shape(&why))
                .or_default() += 1;
        } else if let Some(labels) = inc.as_deref().and_then(|i| cluster_labels.get(i)) {
            let mut ls = labels.clone();
            ls.sort();
            ls.dedup();
            let kind = r.episode.split('/').take(2).collect::<Vec<_>>().join("/");
            let host = r.device.clone().unwrap_or_else(|| "feed".into());
            let why = outcome.reason.get(i).cloned().flatten().unwrap_or_default();
            for l in ls {
                *pulled
                    .entry(l.to_string())
                    .or_default()
                    .entry(format!("{kind} on {host}"))
                    .or_default() += 1;
                *pulled_why
                    .entry(l.to_string())
                    .or_default()
                    .entry(shape(&why))
                    .or_default() += 1;
            }
        }
    }
    let sorted = |m: BTreeMap<String, HashMap<String, usize>>| {
        m.into_iter()
            .map(|(k, v)| {
                let mut v: Vec<(String, usize)> = v.into_iter().collect();
                v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
                (k, v)
            })
            .collect()
    };
    Part {
        score,
        reasons: sorted(reasons),
        noise_pulled_by: sorted(pulled),
        noise_pulled_why: sorted(pulled_why),
    }
}

/// Correlates the corpus twice (with and without the skewed device) and scores it.
pub fn evaluate(corpus: &Corpus) -> Result<Report> {
    let full = correlate(corpus, settings(), |_| true)?;
    let skewed: Vec<&str> = corpus
        .records
        .iter()
        .filter(|r| r.time_case.as_deref() == Some("skewed-clock"))
        .filter_map(|r| r.device.as_deref())
        .collect();
    let skewed_device = skewed.first().copied().unwrap_or("");
    let without = correlate(corpus, settings(), |r| r.device.as_deref() != Some(skewed_device))?;
    // Both outcomes are per corpus record; the skipped ones are in no incident.
    let aligned = without;
    Ok(Report {
        skew_changed_others: others_changed(corpus, &full, &aligned, skewed_device),
        full: explain(corpus, &full),
        without_skewed: explain(corpus, &aligned),
        skewed_device: skewed_device.to_string(),
        skewed_alerts: skewed.len(),
    })
}

/// A link reason with its specifics (alert and incident ids) blanked, so that
/// reasons of one kind count together.
fn shape(reason: &str) -> String {
    reason
        .split(' ')
        .map(|w| {
            let core = w.trim_end_matches([',', ':', ';', ')']);
            let id_like = core.len() == 26 && core.bytes().all(|b| b.is_ascii_digit() || b.is_ascii_uppercase());
            if id_like {
                w.replacen(core, "<id>", 1)
            } else {
                w.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

impl Part {
    fn render(&self, o: &mut String) {
        use std::fmt::Write;
        let s = &self.score;
        let _ = writeln!(
            o,
            "  precision {:.3} = {} attack pairs together / {} pairs together holding an attack alert (target >= 0.95)",
            s.precision, s.attack_pairs_together, s.pairs_together_with_attack
        );
        let _ = writeln!(
            o,
            "  recall    {:.3} = {} attack pairs together / {} attack pairs (target >= 0.90)",
            s.recall, s.attack_pairs_together, s.attack_pairs
        );
        let _ = writeln!(
            o,
            "  incidents: {} ({} alerts in none); largest {} alerts; {} clusters of noise only, the largest {} alerts",
            s.incidents, s.alerts_without_incident, s.largest_incident, s.noise_clusters, s.largest_noise_cluster
        );
        let _ = writeln!(
            o,
            "  noise alerts pulled into attack incidents: {}",
            s.noise_in_attack_incidents
        );
        let _ = writeln!(
            o,
            "  {:22} {:>6} {:>9} {:>8} {:>12} {:>13}",
            "attack", "alerts", "incidents", "largest", "noise pulled", "other attacks"
        );
        for a in &s.attacks {
            let _ = writeln!(
                o,
                "  {:22} {:>6} {:>9} {:>8} {:>12} {:>13}",
                a.label, a.alerts, a.incidents, a.largest, a.noise_pulled, a.other_attacks_pulled
            );
        }
        let _ = writeln!(o, "  why attack alerts were linked (most common first):");
        for (label, rs) in &self.reasons {
            let _ = writeln!(o, "    {label}:");
            for (r, n) in rs.iter().take(5) {
                let _ = writeln!(o, "      {n:>4}  {r}");
            }
        }
        if !self.noise_pulled_by.is_empty() {
            let _ = writeln!(o, "  noise pulled into attack incidents, by kind:");
            for (label, rs) in &self.noise_pulled_by {
                let list: Vec<String> = rs.iter().take(8).map(|(k, n)| format!("{n} {k}")).collect();
                let _ = writeln!(o, "    {label}: {}", list.join(", "));
            }
            let _ = writeln!(o, "  why noise was linked (most common first):");
            for (label, rs) in &self.noise_pulled_why {
                let _ = writeln!(o, "    {label}:");
                for (r, n) in rs.iter().take(5) {
                    let _ = writeln!(o, "      {n:>4}  {r}");
                }
            }
        }
    }
}

impl Report {
    /// The report as `ward-corrbench --labelled` prints it.
    pub fn render(&self, corpus: &Corpus) -> String {
        use std::fmt::Write;
        let s = &self.full.score;
        let mut o = String::new();
        let _ = writeln!(
            o,
            "corpus: {} alerts ({} attack, {} noise) on {} devices plus the identity and mailbox feeds",
            s.alerts,
            s.attack_alerts,
            s.alerts - s.attack_alerts,
            corpus.devices.len()
        );
        let _ = writeln!(
            o,
            "scoring: pairs of alerts in one incident (merged ones followed to the survivor; an alert in none is alone); attack pairs = two alerts of the same attack; noise-noise pairs count in neither figure"
        );
        let attack = |l: &str| s.attacks.iter().find(|a| a.label == l);
        let _ = writeln!(o, "time cases:");
        if let Some(a) = attack("log4shell-2022") {
            let _ = writeln!(
                o,
                "  replay-2022 (observed 2022-01-11, arriving after current alerts): {} incident(s), {} foreign alerts in them (expected 1 and 0)",
                a.incidents,
                a.noise_pulled + a.other_attacks_pulled
            );
        }
        if let Some(a) = attack("npm-miner-backlog") {
            let _ = writeln!(
                o,
                "  backlog (laptop-dave delivers 2 days late): the miner chain in {} incident(s), {} foreign alerts in them (expected 1 and 0)",
                a.incidents,
                a.noise_pulled + a.other_attacks_pulled
            );
        }
        let _ = writeln!(
            o,
            "  skewed-clock ({}, 3 years ahead, {} alerts): {} alerts of other devices grouped differently than without it (expected 0)",
            self.skewed_device, self.skewed_alerts, self.skew_changed_others
        );
        let _ = writeln!(o, "whole corpus:");
        self.full.render(&mut o);
        let _ = writeln!(
            o,
            "without {} (the other causes, while a far-future clock still breaks everything):",
            self.skewed_device
        );
        self.without_skewed.render(&mut o);
        o
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn corpus_of(labels: &[&str]) -> Corpus {
        let rule = ward_protocol::RuleRef {
            id: "r".into(),
            title: "r".into(),
            author: "t".into(),
            severity: ward_protocol::Severity::Low,
            techniques: vec![],
            tactics: vec![],
        };
        Corpus {
            devices: vec![],
            records: labels
                .iter()
                .enumerate()
                .map(|(i, l)| Record {
                    label: (*l).into(),
                    episode: String::new(),
                    time_case: None,
                    device: None,
                    received_ms: 0,
                    alert: format::AlertJson {
                        id: format!("a{i}"),
                        source: "agent".into(),
                        observed_at_ms: 0,
                        last_observed_at_ms: 0,
                        rule: rule.clone(),
                        entities: vec![],
                        count: 1,
                        matched: Default::default(),
                    },
                })
                .collect(),
        }
    }

    /// (labels, incidents) -> (together, with_attack, attack_pairs, noise pulled)
    fn check(labels: &[&str], incidents: &[Option<&str>], expected: (u64, u64, u64, usize)) {
        let c = corpus_of(labels);
        let o = Outcome {
            incident: incidents.iter().map(|i| i.map(str::to_string)).collect(),
            reason: vec![None; labels.len()],
        };
        let s = score(&c, &o);
        assert_eq!(
            (
                s.attack_pairs_together,
                s.pairs_together_with_attack,
                s.attack_pairs,
                s.noise_in_attack_incidents
            ),
            expected,
            "{labels:?} in {incidents:?}"
        );
    }

    #[test]
    fn pairs_are_scored_as_documented() {
        // Perfect: each attack alone in its incident, noise grouped with noise.
        check(
            &["a", "a", "b", "b", NOISE, NOISE],
            &[Some("1"), Some("1"), Some("2"), Some("2"), Some("3"), Some("3")],
            (2, 2, 2, 0),
        );
        // One incident for everything: 2 right pairs of 14 holding an attack alert
        // (15 pairs minus the noise-noise one); both noise alerts pulled in.
        check(&["a", "a", "b", "b", NOISE, NOISE], &[Some("1"); 6], (2, 14, 2, 2));
        // Split attack, an alert in no incident is alone.
        check(&["a", "a", "a"], &[Some("1"), Some("2"), None], (0, 0, 3, 0));
    }
}
