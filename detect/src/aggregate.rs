//! Folds repeats of one rule on the same entities into one alert with a count.
//! The first occurrence passes through at once (latency matters); repeats within
//! the window are counted and come out once, as one aggregated detection, when the
//! window closes ([`Aggregator::flush`]). Memory is bounded: when `max_keys` keys
//! are tracked, the key whose window closes first is emitted early to make room;
//! nothing is dropped. Pure: `now_ms` is a parameter; no IO, no clock.
//!
//! The key is the rule id plus the alert's key entity ([`ward_protocol::fold_key`],
//! the same key the collector folds by again at ingest): for a file its folder (and
//! the writing process), for a process its image and process tree (or command line),
//! for auth and network alerts the IP. So a loop that writes 10,000 test files into
//! one folder, or runs one command again and again, becomes one alert per window.
//! The aggregate keeps the first repeat's entities; the count and the first and last
//! times say how many there were.
//!
//! Per-rule rate limit: a rule passes at most `max_new_per_rule` first occurrences
//! per window (the window starts at the rule's first pass). Past that, new keys of
//! that rule fold into one overflow aggregate per rule and window (its first
//! detection, a count and the times), so a flood spread over many folders or
//! process trees still gives a bounded number of alerts, with counts.

use std::collections::{BTreeMap, HashMap};

use ward_protocol::fold_key;

use super::engine::Detection;

/// Aggregation settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AggregatorConfig {
    /// How long after a first occurrence repeats are folded, milliseconds.
    pub window_ms: u64,
    /// At most this many (rule, entities) keys are tracked at once.
    pub max_keys: usize,
    /// At most this many first occurrences of one rule pass per window; the rest
    /// fold into one overflow alert. 0 means no limit.
    pub max_new_per_rule: u32,
}

impl Default for AggregatorConfig {
    fn default() -> Self {
        AggregatorConfig {
            window_ms: 60_000,
            max_keys: 10_000,
            max_new_per_rule: 20,
        }
    }
}

/// A detection that stands for `count` matching events observed between
/// `first_observed_ms` and `last_observed_ms`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AggregatedDetection {
    /// The first event's detection (for repeats: the first repeat's).
    pub detection: Detection,
    pub count: u32,
    pub first_observed_ms: u64,
    pub last_observed_ms: u64,
}

impl AggregatedDetection {
    fn single(detection: Detection) -> Self {
        let t = detection.observed_at_ms;
        AggregatedDetection {
            detection,
            count: 1,
            first_observed_ms: t,
            last_observed_ms: t,
        }
    }
}

#[derive(Debug)]
struct Slot {
    deadline_ms: u64,
    seq: u64,
    /// The repeats folded so far (none yet: only the first occurrence was seen).
    repeats: Option<AggregatedDetection>,
}

/// Repeat folding state. See the module doc.
#[derive(Debug)]
pub struct Aggregator {
    config: AggregatorConfig,
    slots: HashMap<String, Slot>,
    by_deadline: BTreeMap<(u64, u64), String>,
    next_seq: u64,
    /// Per rule id: when its rate window ends and how many first occurrences passed.
    /// Bounded by the number of loaded rules.
    rule_windows: HashMap<String, (u64, u32)>,
}

fn key(d: &Detection) -> String {
    let mut k = d.rule.id.clone();
    k.push('\u{1f}');
    k.push_str(&fold_key(&d.entities, &d.matched));
    k
}

impl Aggregator {
    pub fn new(config: AggregatorConfig) -> Self {
        Aggregator {
            config: AggregatorConfig {
                window_ms: config.window_ms,
                max_keys: config.max_keys.max(1),
                max_new_per_rule: config.max_new_per_rule,
            },
            slots: HashMap::new(),
            by_deadline: BTreeMap::new(),
            next_seq: 0,
            rule_windows: HashMap::new(),
        }
    }

    /// How many keys are tracked now.
    pub fn tracked(&self) -> usize {
        self.slots.len()
    }

    /// Takes one detection seen at `now_ms`. Returns what must be sent now: the
    /// detection itself if it is a first occurrence, plus any aggregate pushed out
    /// early to stay within `max_keys` or whose window had already closed.
    pub fn push(&mut self, detection: Detection, now_ms: u64) -> Vec<AggregatedDetection> {
        let mut out = Vec::new();
        let mut k = key(&detection);
        let over = self.over_rule_limit(&detection.rule.id, &k, now_ms);
        if over {
            // Past the rule's limit: the new key joins the rule's overflow aggregate.
            k = format!("{}\u{1f}\u{1f}overflow", detection.rule.id);
        }
        if let Some(slot) = self.slots.get_mut(&k) {
            if now_ms < slot.deadline_ms {
                match &mut slot.repeats {
                    Some(agg) => {
                        agg.count = agg.count.saturating_add(1);
                        agg.first_observed_ms = agg.first_observed_ms.min(detection.observed_at_ms);
                        agg.last_observed_ms = agg.last_observed_ms.max(detection.observed_at_ms);
                    }
                    None => slot.repeats = Some(AggregatedDetection::single(detection)),
                }
                return out;
            }
            // The window closed but flush was not called yet: close it now.
            if let Some(slot) = self.slots.remove(&k) {
                self.by_deadline.remove(&(slot.deadline_ms, slot.seq));
                out.extend(slot.repeats);
            }
        }
        while self.slots.len() >= self.config.max_keys {
            let Some(((deadline, seq), oldest)) = self.by_deadline.pop_first() else {
                break;
            };
            if let Some(slot) = self.slots.remove(&oldest) {
                debug_assert_eq!((slot.deadline_ms, slot.seq), (deadline, seq));
                out.extend(slot.repeats);
            }
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        let deadline_ms = now_ms.saturating_add(self.config.window_ms);
        self.by_deadline.insert((deadline_ms, seq), k.clone());
        // An overflow aggregate is never sent at once: the rule already passed its
        // quota of first occurrences in this window.
        let (repeats, first) = if over {
            (Some(AggregatedDetection::single(detection)), None)
        } else {
            (None, Some(AggregatedDetection::single(detection)))
        };
        self.slots.insert(
            k,
            Slot {
                deadline_ms,
                seq,
                repeats,
            },
        );
        out.extend(first);
        out
    }

    /// Whether a detection of `rule` with key `k` is over the rule's limit of first
    /// occurrences in its current window; counts it when it is a new pass.
    fn over_rule_limit(&mut self, rule: &str, k: &str, now_ms: u64) -> bool {
        let limit = self.config.max_new_per_rule;
        if limit == 0 || self.config.window_ms == 0 || self.slots.get(k).is_some_and(|s| now_ms < s.deadline_ms) {
            return false;
        }
        let window = self.config.window_ms;
        let entry = self.rule_windows.entry(rule.to_string()).or_insert((0, 0));
        if now_ms >= entry.0 {
            *entry = (now_ms.saturating_add(window), 0);
        }
        if entry.1 >= limit {
            return true;
        }
        entry.1 += 1;
        false
    }

    /// Closes every window that ended at or before `now_ms`; returns the aggregates
    /// of those that saw repeats.
    pub fn flush(&mut self, now_ms: u64) -> Vec<AggregatedDetection> {
        let mut out = Vec::new();
        while let Some(entry) = self.by_deadline.first_entry() {
            if entry.key().0 > now_ms {
                break;
            }
            let k = entry.remove();
            if let Some(slot) = self.slots.remove(&k) {
                out.extend(slot.repeats);
            }
        }
        out
    }

    /// Closes every window (shutdown).
    pub fn flush_all(&mut self) -> Vec<AggregatedDetection> {
        self.flush(u64::MAX)
    }

    /// When the next window closes, so the caller knows when to call `flush`.
    pub fn next_deadline_ms(&self) -> Option<u64> {
        self.by_deadline.keys().next().map(|(d, _)| *d)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use std::net::{IpAddr, Ipv4Addr};
    use ward_protocol::{Entity, MatchedField, RuleRef, Severity};

    fn det(rule: &str, ip: u8, t: u64) -> Detection {
        Detection {
            rule: RuleRef {
                id: rule.into(),
                title: rule.into(),
                author: "Ward".into(),
                severity: Severity::Low,
                techniques: vec![],
                tactics: vec![],
            },
            entities: vec![Entity::Ip {
                addr: IpAddr::V4(Ipv4Addr::new(10, 0, 0, ip)),
            }],
            matched: vec![],
            observed_at_ms: t,
        }
    }

    fn counts(v: &[AggregatedDetection]) -> Vec<(String, u32, u64, u64)> {
        v.iter()
            .map(|a| {
                (
                    a.detection.rule.id.clone(),
                    a.count,
                    a.first_observed_ms,
                    a.last_observed_ms,
                )
            })
            .collect()
    }

    #[test]
    fn first_passes_repeats_fold_until_window_closes() {
        let mut a = Aggregator::new(AggregatorConfig::default());
        assert_eq!(
            counts(&a.push(det("r", 1, 1000), 1000)),
            vec![("r".into(), 1, 1000, 1000)]
        );
        for t in [2000, 3000, 4000] {
            assert!(a.push(det("r", 1, t), t).is_empty());
        }
        // another entity is another key
        assert_eq!(a.push(det("r", 2, 5000), 5000).len(), 1);
        assert!(a.flush(60_999).is_empty());
        assert_eq!(counts(&a.flush(61_000)), vec![("r".into(), 3, 2000, 4000)]);
        // the entity with no repeats closes silently
        assert!(a.flush(65_000).is_empty());
        assert_eq!(a.tracked(), 0);
        // after the window, the next one is a first occurrence again
        assert_eq!(a.push(det("r", 1, 70_000), 70_000).len(), 1);
    }

    /// `whoami` (a new pid each time) under `parents`, pids from the top down.
    fn in_tree(pid: u32, parents: &[u32], t: u64) -> Detection {
        let node = |pid: u32| ward_protocol::ProcessNode {
            pid,
            ppid: 0,
            start_time_ms: u64::from(pid) * 7,
            exe: "/usr/bin/whoami".into(),
            cmdline: "whoami".into(),
            user: None,
            login_user: None,
        };
        let mut d = det("r", 1, t);
        d.entities.push(Entity::Process {
            pid,
            ppid: 0,
            start_time_ms: t,
            exe: "/usr/bin/whoami".into(),
            cmdline: "whoami".into(),
            sha256: None,
        });
        d.entities.push(Entity::Lineage {
            process: node(pid),
            ancestors: parents.iter().rev().map(|p| node(*p)).collect(),
            rooted: true,
        });
        d
    }

    fn file_in(rule: &str, folder: usize, t: u64) -> Detection {
        let mut d = det(rule, 1, t);
        d.entities = vec![Entity::File {
            path: format!("/tmp/f{folder}/eicar.txt"),
            sha256: None,
        }];
        d
    }

    #[test]
    fn a_flood_over_many_keys_gives_a_bounded_number_of_alerts_with_counts() {
        let mut a = Aggregator::new(AggregatorConfig::default());
        let mut out = Vec::new();
        // 10,000 known-bad files, each in its own folder, within one window.
        for i in 0..10_000u64 {
            out.extend(a.push(file_in("bad", i as usize, 1000 + i), 1000 + i));
        }
        // Another rule keeps its own quota.
        out.extend(a.push(file_in("other", 0, 5000), 5000));
        assert_eq!(out.len(), 21, "20 first occurrences of `bad`, 1 of `other`");
        out.extend(a.flush_all());
        let bad: Vec<_> = out.iter().filter(|d| d.detection.rule.id == "bad").collect();
        assert_eq!(bad.len(), 21, "plus one overflow aggregate");
        assert_eq!(bad.iter().map(|d| u64::from(d.count)).sum::<u64>(), 10_000);
        let overflow = bad.iter().find(|d| d.count > 1).unwrap();
        assert_eq!((overflow.count, overflow.first_observed_ms), (9_980, 1020));
        // The next window has a fresh quota.
        assert_eq!(a.push(file_in("bad", 1, 200_000), 200_000).len(), 1);
    }

    #[test]
    fn no_rule_limit_when_it_is_zero() {
        let mut a = Aggregator::new(AggregatorConfig {
            max_new_per_rule: 0,
            ..AggregatorConfig::default()
        });
        let passed: usize = (0..100).map(|i| a.push(file_in("bad", i, 1000), 1000).len()).sum();
        assert_eq!(passed, 100);
    }

    #[test]
    fn repeats_fold_within_one_process_tree_only() {
        let mut a = Aggregator::new(AggregatorConfig::default());
        // A loop in one login shell (sshd 10 > session 20 > bash 30): one alert.
        assert_eq!(a.push(in_tree(100, &[10, 20, 30], 1000), 1000).len(), 1);
        assert!(a.push(in_tree(101, &[10, 20, 30], 1100), 1100).is_empty());
        // Each under a new shell of the same session: still the session's tree.
        assert!(a.push(in_tree(103, &[10, 20, 31], 1200), 1200).is_empty());
        // Another session is another tree.
        assert_eq!(a.push(in_tree(104, &[10, 21, 32], 1300), 1300).len(), 1);
        // Direct children of a service fold under the service.
        assert_eq!(a.push(in_tree(105, &[10], 1400), 1400).len(), 1);
        assert!(a.push(in_tree(106, &[10], 1500), 1500).is_empty());
        assert_eq!(a.push(in_tree(107, &[11], 1600), 1600).len(), 1);
    }

    #[test]
    fn late_repeat_without_flush_closes_the_old_window() {
        let mut a = Aggregator::new(AggregatorConfig::default());
        a.push(det("r", 1, 0), 0);
        a.push(det("r", 1, 10), 10);
        let out = counts(&a.push(det("r", 1, 90_000), 90_000));
        assert_eq!(out, vec![("r".into(), 1, 10, 10), ("r".into(), 1, 90_000, 90_000)]);
    }

    #[test]
    fn full_table_emits_instead_of_dropping() {
        let mut a = Aggregator::new(AggregatorConfig {
            window_ms: 60_000,
            max_keys: 2,
            max_new_per_rule: 0,
        });
        a.push(det("r", 1, 0), 0);
        a.push(det("r", 1, 1), 1);
        a.push(det("r", 2, 2), 2);
        let out = counts(&a.push(det("r", 3, 3), 3));
        assert_eq!(out, vec![("r".into(), 1, 1, 1), ("r".into(), 1, 3, 3)]);
        assert_eq!(a.tracked(), 2);
        assert_eq!(a.next_deadline_ms(), Some(60_002));
        assert!(a.flush_all().is_empty());
    }

    fn file_det(rule: &str, path: &str, t: u64) -> Detection {
        Detection {
            entities: vec![Entity::File {
                path: path.into(),
                sha256: Some([7; 32]),
            }],
            matched: vec![MatchedField {
                name: "sha256".into(),
                value: "07".repeat(32),
            }],
            ..det(rule, 0, t)
        }
    }

    /// A loop writes 10,000 files with the same content into one folder (one every
    /// 10 ms, 100 s in all): one alert at once, then one per window with the count
    /// of the repeats; every file is counted once, with nothing tracked afterwards.
    #[test]
    fn a_flood_of_files_in_one_folder_folds_into_one_alert_per_window() {
        let mut a = Aggregator::new(AggregatorConfig::default());
        let mut out = Vec::new();
        for i in 0..10_000u64 {
            let t = 1_000_000 + i * 10;
            out.extend(a.flush(t));
            out.extend(a.push(file_det("eicar", &format!("/srv/tests/f{i:05}.txt"), t), t));
            // Another folder and another rule are other keys, alerted at once.
            if i == 5_000 {
                out.extend(a.push(file_det("eicar", "/home/alice/x.txt", t), t));
                out.extend(a.push(file_det("other", "/srv/tests/y.txt", t), t));
            }
        }
        out.extend(a.flush_all());
        assert_eq!(a.tracked(), 0);
        let flood: Vec<_> = counts(&out).into_iter().filter(|(rule, ..)| rule == "eicar").collect();
        // 100 s of writes with a 60 s window: the first file, the repeats of the
        // first window, the first file after it and the repeats of the second.
        assert_eq!(
            flood,
            vec![
                ("eicar".into(), 1, 1_000_000, 1_000_000),
                ("eicar".into(), 1, 1_050_000, 1_050_000),
                ("eicar".into(), 5_999, 1_000_010, 1_059_990),
                ("eicar".into(), 1, 1_060_000, 1_060_000),
                ("eicar".into(), 3_999, 1_060_010, 1_099_990),
            ]
        );
        let total: u32 = out
            .iter()
            .filter(|a| a.detection.rule.id == "eicar")
            .map(|a| a.count)
            .sum();
        assert_eq!(total, 10_001);
        assert_eq!(out.len(), 6);
        // The aggregate keeps the entities of the first file it folded.
        assert!(matches!(&out[3].detection.entities[0], Entity::File { path, .. } if path == "/srv/tests/f00001.txt"));
    }

    /// Distinct files with distinct content for a rule that matched on the hash stay apart.
    #[test]
    fn different_known_bad_contents_in_one_folder_stay_apart() {
        let mut a = Aggregator::new(AggregatorConfig::default());
        let mut other = file_det("bad-hash", "/srv/b", 2);
        other.entities = vec![Entity::File {
            path: "/srv/b".into(),
            sha256: Some([8; 32]),
        }];
        assert_eq!(a.push(file_det("bad-hash", "/srv/a", 1), 1).len(), 1);
        assert_eq!(a.push(other, 2).len(), 1);
        assert!(a.push(file_det("bad-hash", "/srv/c", 3), 3).is_empty());
    }
}
