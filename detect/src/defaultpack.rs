//! The default pack a user gets with no rule on disk: Ward's built-in rules plus the
//! vetted SigmaHQ Linux rules (`detect/rules/sigmahq/`, Detection Rule License 1.1;
//! each rule keeps its `author`, which every alert carries). Content and choice
//! only, no IO: the rule texts are embedded at build time (`build.rs`).
//!
//! A SigmaHQ rule is on by default when its level is medium or above and it is not
//! in [`SIGMAHQ_EXCLUDED`]. Low and informational rules describe everyday
//! administration (`uname`, `rm`, `curl`): they are shipped for hunting and turned on
//! one by one with `[detection] enabled_rules`. Every exclusion, its reason and its
//! measured noise are in docs/detection-content.md; `disabled_rules` turns any
//! shipped rule off on one device.

use ward_protocol::RuleFile;

use crate::builtin::BUILTIN_RULES;

/// One SigmaHQ rule file embedded in the binary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShippedRule {
    /// Path under `rules/sigmahq/linux/`.
    pub file: &'static str,
    pub id: &'static str,
    /// The rule's `level` as written (may be empty).
    pub level: &'static str,
    pub yaml: &'static str,
}

include!(concat!(env!("OUT_DIR"), "/sigmahq.rs"));

/// SigmaHQ rules at medium or above that are shipped but off by default, with the
/// reason (figures in docs/detection-content.md, measured by `ward-noisebench`).
pub const SIGMAHQ_EXCLUDED: &[(&str, &str)] = &[
    (
        "312b42b1-bded-4441-8b58-163a3af58775",
        "Potentially Suspicious Execution From Tmp Folder: every program under /tmp, build trees included; Ward's tuned rule f6a75cc7 covers /tmp, /var/tmp and /dev/shm without them",
    ),
    (
        "2aa1440c-9ae9-4d92-84a7-a9e5f5e31695",
        "Suspicious Activity in Shell Commands (high): its keywords '*base64 -d /tmp/*' and '* /tmp/*.b64 *' fire on any base64 file decoded in /tmp; replaced by the tuned copy 7c0f4e55 without them",
    ),
    (
        "e4ffe466-6ff8-48d4-94bd-e32d1a6061e2",
        "Nohup Execution: every nohup, an everyday developer command; Suspicious Nohup Execution (457df417, high: nohup of a program in /tmp) stays on",
    ),
    (
        "6419afd1-3742-47a5-a7e6-b50386cd15f8",
        "Chmod Targeting Sensitive Directories: any chmod of a path in /tmp, /etc or /opt (chmod +x of a script in /tmp); Ward's setuid/setgid rules cover the dangerous modes",
    ),
];

/// Why a shipped SigmaHQ rule is off by default, or `None` when it is on.
pub fn sigmahq_off_reason(rule: &ShippedRule) -> Option<&'static str> {
    if let Some((_, why)) = SIGMAHQ_EXCLUDED.iter().find(|(id, _)| *id == rule.id) {
        return Some(why);
    }
    match rule.level.to_ascii_lowercase().as_str() {
        "medium" | "high" | "critical" => None,
        _ => Some("level below medium: a hunting rule for everyday administration, off by default"),
    }
}

/// Which shipped rules a device runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackChoice {
    /// Run the SigmaHQ part at all.
    pub sigmahq: bool,
    /// Shipped rule ids turned on although off by default.
    pub enabled: Vec<String>,
    /// Shipped rule ids (built-in or SigmaHQ) turned off.
    pub disabled: Vec<String>,
}

impl Default for PackChoice {
    fn default() -> Self {
        PackChoice {
            sigmahq: true,
            enabled: Vec::new(),
            disabled: Vec::new(),
        }
    }
}

/// The value of a rule file's top-level `id:` line (all shipped files have one).
pub fn rule_file_id(yaml: &str) -> &str {
    yaml.lines()
        .find_map(|l| l.strip_prefix("id:"))
        .map(|v| v.trim().trim_matches('\'').trim_matches('"'))
        .unwrap_or_default()
}

fn builtin_file(name: &str, yaml: &str) -> RuleFile {
    RuleFile {
        name: format!("builtin/{name}"),
        yaml: yaml.to_string(),
    }
}

fn sigmahq_file(r: &ShippedRule) -> RuleFile {
    RuleFile {
        name: format!("sigmahq/{}", r.file),
        yaml: r.yaml.to_string(),
    }
}

/// The rule files a device runs by default (with `choice`'s changes), built-in first.
pub fn default_rule_files(choice: &PackChoice) -> Vec<RuleFile> {
    let off = |id: &str| choice.disabled.iter().any(|d| d == id);
    let mut files: Vec<RuleFile> = BUILTIN_RULES
        .iter()
        .filter(|(_, yaml)| !off(rule_file_id(yaml)))
        .map(|(name, yaml)| builtin_file(name, yaml))
        .collect();
    if choice.sigmahq {
        files.extend(
            SIGMAHQ_RULES
                .iter()
                .filter(|r| !off(r.id))
                .filter(|r| sigmahq_off_reason(r).is_none() || choice.enabled.iter().any(|e| e == r.id))
                .map(sigmahq_file),
        );
    }
    files
}

/// Every shipped rule file, on by default or not: what pushed rules are checked
/// against (an id taken by any shipped rule is refused, so turning a shipped rule on
/// later never collides with a pushed one).
pub fn shipped_rule_files() -> Vec<RuleFile> {
    let mut files: Vec<RuleFile> = BUILTIN_RULES.iter().map(|(n, y)| builtin_file(n, y)).collect();
    files.extend(SIGMAHQ_RULES.iter().map(sigmahq_file));
    files
}

/// Ids in `ids` that name no shipped rule (for config checks).
pub fn unknown_ids(ids: &[String]) -> Vec<&str> {
    ids.iter()
        .map(String::as_str)
        .filter(|id| {
            !BUILTIN_RULES.iter().any(|(_, y)| rule_file_id(y) == *id) && !SIGMAHQ_RULES.iter().any(|r| r.id == *id)
        })
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::Detector;

    #[test]
    fn every_sigmahq_rule_is_embedded_with_its_id_and_level() {
        assert_eq!(SIGMAHQ_RULES.len(), 210);
        for r in SIGMAHQ_RULES {
            assert_eq!(r.id.len(), 36, "{}", r.file);
            assert!(
                ["informational", "low", "medium", "high", "critical"].contains(&r.level),
                "{}: level {:?}",
                r.file,
                r.level
            );
            assert!(!r.level.is_empty(), "{}", r.file);
            assert!(r.yaml.contains("author:"), "{}: the DRL needs the author", r.file);
        }
    }

    #[test]
    fn the_default_pack_loads_whole_and_runs_sigmahq_rules() {
        let files = default_rule_files(&PackChoice::default());
        let (det, errors) = Detector::load(&files);
        assert!(errors.is_empty(), "{errors:#?}");
        let on = SIGMAHQ_RULES.iter().filter(|r| sigmahq_off_reason(r).is_none()).count();
        assert!(on >= 100, "only {on} SigmaHQ rules on by default");
        assert_eq!(det.stats().loaded, BUILTIN_RULES.len() + on);
        let shipped = shipped_rule_files();
        assert!(Detector::validate(&shipped).is_empty());
        assert!(
            det.rules()
                .any(|r| r.author.contains("Florian Roth") || r.author.contains("Nasreddine")),
            "SigmaHQ authors are kept"
        );
    }

    #[test]
    fn every_shipped_rule_names_v19_techniques_only() {
        let (det, _) = Detector::load(&shipped_rule_files());
        let mut old = Vec::new();
        for r in det.rules() {
            for t in &r.techniques {
                if crate::attack::technique(t).is_none() {
                    old.push(format!("{}: {t}", r.title));
                }
            }
        }
        assert!(old.is_empty(), "not ATT&CK v19: {old:#?}");
        // A pushed rule still tagged with v18 ids is normalised when it loads.
        let old = "title: t\nid: 6f1b5c1e-0c2e-4d7a-9a57-3f1f1c0a9b01\ntags:\n  - attack.t1562.012\n  - attack.t1148\nlogsource:\n  product: linux\n  category: process_creation\ndetection:\n  sel:\n    Image|endswith: /auditctl\n  condition: sel\n";
        let (det, errors) = Detector::load(&[RuleFile {
            name: "old.yml".into(),
            yaml: old.into(),
        }]);
        assert!(errors.is_empty());
        let r = det.rules().next().unwrap();
        assert_eq!(r.techniques, vec!["T1685.004".to_string(), "T1690".to_string()]);
    }

    #[test]
    fn the_whole_pack_matches_what_each_rule_matches_alone() {
        // The default pack, and the 197-rule pack of 2026-12-06 (before the last
        // exclusions) with which rsigma's bloom pre-filter lost these matches.
        let before = PackChoice {
            sigmahq: true,
            enabled: [
                "2aa1440c-9ae9-4d92-84a7-a9e5f5e31695",
                "e4ffe466-6ff8-48d4-94bd-e32d1a6061e2",
                "6419afd1-3742-47a5-a7e6-b50386cd15f8",
            ]
            .map(String::from)
            .to_vec(),
            disabled: vec!["7c0f4e55-2f2b-4d8e-9a57-5b8d9c1e2a31".into()],
        };
        for choice in [PackChoice::default(), before] {
            let files = default_rule_files(&choice);
            let (whole, _) = Detector::load(&files);
            let alone: Vec<Detector> = files
                .iter()
                .map(|f| Detector::load(std::slice::from_ref(f)).0)
                .collect();
            for (exe, cmd) in [
                ("/usr/bin/nohup", "nohup sleep 1"),
                ("/usr/bin/nohup", "nohup /tmp/x/run.sh"),
                ("/usr/bin/hostname", "hostname"),
                ("/usr/bin/chmod", "chmod +x /tmp/a/h.sh"),
                ("/usr/bin/chmod", "chmod u+s /tmp/bash"),
                ("/tmp/.x/kworker", "[kworker/0:1]"),
            ] {
                let v =
                    serde_json::json!({"kind": "process", "exe": exe, "cmdline": cmd, "parent_exe": "/usr/bin/bash"});
                let serde_json::Value::Object(m) = v else {
                    unreachable!()
                };
                let e = crate::rulestest::event_from_partial(1, m).unwrap();
                let mut want: Vec<String> = alone.iter().flat_map(|d| d.evaluate(&e)).map(|d| d.rule.id).collect();
                let mut got: Vec<String> = whole.evaluate(&e).into_iter().map(|d| d.rule.id).collect();
                want.sort();
                got.sort();
                assert_eq!(got, want, "{} rules, {cmd}", files.len());
            }
        }
    }

    #[test]
    fn exclusions_name_shipped_rules_and_tuned_copies_replace_their_upstream() {
        for (id, why) in SIGMAHQ_EXCLUDED {
            let r = SIGMAHQ_RULES.iter().find(|r| r.id == *id);
            assert!(r.is_some_and(|r| sigmahq_off_reason(r) == Some(why)), "{id}");
        }
        // A tuned copy (built-in, `related: derived`) never runs beside its upstream rule.
        let on: Vec<String> = default_rule_files(&PackChoice::default())
            .iter()
            .map(|f| rule_file_id(&f.yaml).to_string())
            .collect();
        let mut tuned = 0;
        for (name, yaml) in BUILTIN_RULES.iter().filter(|(n, _)| n.ends_with("_tuned.yml")) {
            let upstream = yaml
                .lines()
                .skip_while(|l| !l.starts_with("related:"))
                .find_map(|l| l.trim().strip_prefix("- id:"))
                .map(str::trim)
                .unwrap_or_else(|| panic!("{name} names no related rule"));
            assert!(!on.iter().any(|id| id == upstream), "{name}: {upstream} still on");
            tuned += 1;
        }
        assert!(tuned >= 1);
        assert!(!on.iter().any(|id| id == "e4ffe466-6ff8-48d4-94bd-e32d1a6061e2"));
    }

    #[test]
    fn choices_turn_shipped_rules_on_and_off() {
        let low = SIGMAHQ_RULES.iter().find(|r| r.level == "low").unwrap();
        let builtin_id = rule_file_id(BUILTIN_RULES[0].1).to_string();
        let has = |files: &[RuleFile], id: &str| files.iter().any(|f| rule_file_id(&f.yaml) == id);
        let default = default_rule_files(&PackChoice::default());
        assert!(!has(&default, low.id));
        assert!(has(&default, &builtin_id));
        let choice = PackChoice {
            sigmahq: true,
            enabled: vec![low.id.to_string()],
            disabled: vec![builtin_id.clone()],
        };
        let changed = default_rule_files(&choice);
        assert!(has(&changed, low.id));
        assert!(!has(&changed, &builtin_id));
        let none = default_rule_files(&PackChoice {
            sigmahq: false,
            ..PackChoice::default()
        });
        assert_eq!(none.len(), BUILTIN_RULES.len());
        assert_eq!(unknown_ids(&["nope".to_string(), builtin_id]), vec!["nope"]);
    }
}
