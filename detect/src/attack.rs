//! One ATT&CK: every rule's technique ids normalised to ATT&CK v19, the newest
//! release in the project's corpus, with names beside ids. The tables are generated
//! from MITRE's STIX data and the v19 technique list (`detect/attack/`, see its
//! ORIGIN.md and `derive.py`) and embedded; parsing them is pure and done once.
//!
//! Old ids (revoked, deprecated with a successor, or moved in v19, such as T1562.*
//! Impair Defenses to T1685 and T1686 under Defense Impairment) become their v19
//! id; an id the tables do not know is kept as written (a newer release's id, or a
//! typo a rule author must fix: `ward-agent rules test` lists them). Tactic ids
//! stay the tag's: the corpus has no ids for v19's `stealth` and
//! `defense-impairment`, which keep TA0005.

use std::collections::HashMap;
use std::sync::OnceLock;

/// The release ids are normalised to.
pub const RELEASE: &str = "ATT&CK v19 (Enterprise)";

const TECHNIQUES_TSV: &str = include_str!("../attack/techniques.tsv");
const MOVED_TSV: &str = include_str!("../attack/moved.tsv");

/// Tactic ids, names and short names (ATT&CK v18.1 STIX `x-mitre-tactic`; TA0005
/// stands for v19's Stealth and Defense Impairment, split from Defense Evasion).
pub const TACTICS: &[(&str, &str, &str)] = &[
    ("TA0043", "reconnaissance", "Reconnaissance"),
    ("TA0042", "resource-development", "Resource Development"),
    ("TA0001", "initial-access", "Initial Access"),
    ("TA0002", "execution", "Execution"),
    ("TA0003", "persistence", "Persistence"),
    ("TA0004", "privilege-escalation", "Privilege Escalation"),
    (
        "TA0005",
        "stealth",
        "Stealth / Defense Impairment (Defense Evasion before v19)",
    ),
    ("TA0006", "credential-access", "Credential Access"),
    ("TA0007", "discovery", "Discovery"),
    ("TA0008", "lateral-movement", "Lateral Movement"),
    ("TA0009", "collection", "Collection"),
    ("TA0010", "exfiltration", "Exfiltration"),
    ("TA0011", "command-and-control", "Command and Control"),
    ("TA0040", "impact", "Impact"),
];

/// A v19 technique.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Technique {
    pub id: &'static str,
    pub name: &'static str,
    /// v19 tactic short names, comma-separated (`stealth,defense-impairment`).
    pub tactics: &'static str,
}

struct Tables {
    techniques: HashMap<&'static str, Technique>,
    /// Old id -> (v19 id, how it was found).
    moved: HashMap<&'static str, (&'static str, &'static str)>,
}

fn rows(tsv: &'static str) -> impl Iterator<Item = Vec<&'static str>> {
    tsv.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| l.split('\t').collect())
}

fn tables() -> &'static Tables {
    static TABLES: OnceLock<Tables> = OnceLock::new();
    TABLES.get_or_init(|| Tables {
        techniques: rows(TECHNIQUES_TSV)
            .filter_map(|r| match r.as_slice() {
                [id, name, tactics, ..] => Some((*id, Technique { id, name, tactics })),
                _ => None,
            })
            .collect(),
        moved: rows(MOVED_TSV)
            .filter_map(|r| match r.as_slice() {
                [old, new, how, ..] => Some((*old, (*new, *how))),
                _ => None,
            })
            .collect(),
    })
}

/// The v19 id for a technique id (upper case, `T1234` or `T1234.001`); unknown ids
/// come back as given.
pub fn normalize_technique(id: &str) -> String {
    let t = tables();
    if t.techniques.contains_key(id) {
        return id.to_string();
    }
    match t.moved.get(id) {
        Some((new, _)) => (*new).to_string(),
        None => id.to_string(),
    }
}

/// Why `id` is not a v19 id and what replaced it: `(v19 id, how)`.
pub fn moved(id: &str) -> Option<(&'static str, &'static str)> {
    tables().moved.get(id).copied()
}

/// The v19 technique with this id.
pub fn technique(id: &str) -> Option<Technique> {
    tables().techniques.get(id).copied()
}

/// A tactic's name by id (`TA0002` -> `Execution`).
pub fn tactic_name(id: &str) -> Option<&'static str> {
    TACTICS.iter().find(|(t, _, _)| *t == id).map(|(_, _, n)| *n)
}

/// `T1059.004 Unix Shell` (or the bare id when unknown), for display.
pub fn describe_technique(id: &str) -> String {
    match technique(id) {
        Some(t) => format!("{id} {}", t.name),
        None => id.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tables_hold_every_v19_technique_and_old_ids() {
        let t = tables();
        assert_eq!(t.techniques.len(), 697);
        assert!(t.moved.len() >= 150);
        // Every mapping lands on a v19 technique.
        for (old, (new, _)) in &t.moved {
            assert!(t.techniques.contains_key(new), "{old} -> {new} is not v19");
        }
    }

    #[test]
    fn old_ids_become_v19_ids() {
        // v19 moved Impair Defenses under Defense Impairment.
        assert_eq!(normalize_technique("T1562.001"), "T1685");
        assert_eq!(normalize_technique("T1562.012"), "T1685.004");
        assert_eq!(normalize_technique("T1070.002"), "T1685.006");
        // Revoked in v18.1 (HISTCONTROL -> Impair Command History Logging -> v19).
        assert_eq!(normalize_technique("T1148"), "T1690");
        // Revoked, found by name in the STIX data (File Deletion).
        assert_eq!(moved("T1107"), Some(("T1070.004", "stix-name")));
        // Live ids and unknown ids stay.
        assert_eq!(normalize_technique("T1059.004"), "T1059.004");
        assert_eq!(normalize_technique("T9999"), "T9999");
    }

    #[test]
    fn names_come_beside_ids() {
        assert_eq!(describe_technique("T1059.004"), "T1059.004 Unix Shell");
        assert_eq!(technique("T1685.004").map(|t| t.tactics), Some("defense-impairment"));
        assert_eq!(tactic_name("TA0002"), Some("Execution"));
        assert_eq!(describe_technique("T9999"), "T9999");
    }
}
