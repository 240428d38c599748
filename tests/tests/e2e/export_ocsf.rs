//! An OCSF validator over the schema's own definitions (tests/fixtures/ocsf, see its
//! ORIGIN.md): a class's attributes through `extends` and `$include` (profiles),
//! objects likewise, types from the dictionary, enumerated ids, required attributes,
//! `at_least_one` / `just_one` constraints, and no attribute the class or object does
//! not define (what the schema server's JSON Schema export checks).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

pub struct Schema {
    root: PathBuf,
    dictionary: Value,
    /// Object and class definitions by name.
    objects: HashMap<String, Value>,
    classes: HashMap<String, Value>,
}

fn read(p: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display())))
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            walk(&p, out);
        } else if p.extension().is_some_and(|x| x == "json") {
            out.push(p);
        }
    }
}

/// Merges `over` into `base` attribute by attribute (fields of `over` win).
fn merge_attrs(base: &mut Map<String, Value>, over: &Map<String, Value>) {
    for (k, v) in over {
        if k == "$include" {
            continue;
        }
        match (base.get_mut(k), v) {
            (Some(Value::Object(b)), Value::Object(o)) => {
                for (f, x) in o {
                    b.insert(f.clone(), x.clone());
                }
            }
            _ => {
                base.insert(k.clone(), v.clone());
            }
        }
    }
}

impl Schema {
    pub fn load() -> Schema {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/ocsf");
        let mut objects = HashMap::new();
        let mut classes = HashMap::new();
        for (dir, map) in [("objects", &mut objects), ("events", &mut classes)] {
            let mut files = Vec::new();
            walk(&root.join(dir), &mut files);
            for f in files {
                let v = read(&f);
                if let Some(name) = v["name"].as_str() {
                    map.insert(name.to_string(), v);
                }
            }
        }
        Schema {
            dictionary: read(&root.join("dictionary.json")),
            root,
            objects,
            classes,
        }
    }

    /// A definition's attributes, its parents' and its includes' merged. A profile's
    /// attributes belong to the class only when the record applies the profile
    /// (`metadata.profiles`), as the schema server's export has it.
    fn attributes(&self, def: &Value, table: &HashMap<String, Value>, profiles: &[String]) -> Map<String, Value> {
        let mut out = Map::new();
        if let Some(parent) = def["extends"].as_str().and_then(|p| table.get(p)) {
            out = self.attributes(parent, table, profiles);
        }
        let own = def["attributes"].as_object().cloned().unwrap_or_default();
        for inc in own.get("$include").and_then(Value::as_array).into_iter().flatten() {
            let file = read(&self.root.join(inc.as_str().unwrap_or_default()));
            let is_profile = inc.as_str().is_some_and(|p| p.starts_with("profiles/"));
            if is_profile && !file["name"].as_str().is_some_and(|n| profiles.iter().any(|p| p == n)) {
                continue;
            }
            merge_attrs(&mut out, file["attributes"].as_object().unwrap_or(&Map::new()));
        }
        merge_attrs(&mut out, &own);
        // An attribute the class marks as a profile's is absent without that profile.
        out.retain(|_, a| match a["profile"].as_str() {
            Some(p) => profiles.iter().any(|x| x == p),
            None => true,
        });
        out
    }

    /// The class's computed ids: class_uid = category uid * 1000 + class uid, and
    /// type_uid = class_uid * 100 + activity_id (the schema lists neither as an enum).
    fn check_ids(&self, def: &Value, record: &Value, problems: &mut Vec<String>) {
        let mut category = def["category"].as_str();
        let mut d = def;
        while category.is_none() {
            match d["extends"].as_str().and_then(|p| self.classes.get(p)) {
                Some(parent) => {
                    category = parent["category"].as_str();
                    d = parent;
                }
                None => break,
            }
        }
        let categories = read(&self.root.join("categories.json"));
        let cat_uid = category.and_then(|c| categories["attributes"][c]["uid"].as_u64());
        let class_uid = cat_uid.zip(def["uid"].as_u64()).map(|(c, u)| c * 1000 + u);
        if record["category_uid"].as_u64() != cat_uid {
            problems.push(format!("category_uid {} is not {cat_uid:?}", record["category_uid"]));
        }
        if record["class_uid"].as_u64() != class_uid {
            problems.push(format!("class_uid {} is not {class_uid:?}", record["class_uid"]));
        }
        let type_uid = class_uid.zip(record["activity_id"].as_u64()).map(|(c, a)| c * 100 + a);
        if record["type_uid"].as_u64() != type_uid {
            problems.push(format!("type_uid {} is not {type_uid:?}", record["type_uid"]));
        }
    }

    fn constraints<'a>(&self, def: &'a Value, table: &'a HashMap<String, Value>) -> Vec<&'a Value> {
        let mut out = Vec::new();
        if let Some(parent) = def["extends"].as_str().and_then(|p| table.get(p)) {
            out = self.constraints(parent, table);
        }
        if def["constraints"].is_object() {
            out.push(&def["constraints"]);
        }
        out
    }

    /// The base JSON type of a dictionary type (`timestamp_t` → `long_t` → integer).
    fn base_type(&self, t: &str) -> &'static str {
        match t {
            "string_t" => "string",
            "integer_t" | "long_t" => "integer",
            "float_t" => "number",
            "boolean_t" => "boolean",
            "json_t" => "any",
            "object" => "object",
            other => match self.dictionary["types"]["attributes"][other]["type"].as_str() {
                Some(parent) if parent != other => self.base_type(parent),
                _ => "unknown",
            },
        }
    }

    /// Checks a record of class `class` (`detection_finding`...); every problem found.
    pub fn validate(&self, class: &str, record: &Value) -> Vec<String> {
        let def = self.classes.get(class).unwrap_or_else(|| panic!("no class {class}"));
        let profiles: Vec<String> = record["metadata"]["profiles"]
            .as_array()
            .map(|p| p.iter().filter_map(|x| x.as_str().map(str::to_string)).collect())
            .unwrap_or_default();
        let mut problems = Vec::new();
        self.check_ids(def, record, &mut problems);
        self.check_object(def, &self.classes, record, class, &profiles, &mut problems);
        problems
    }

    fn check_object(
        &self,
        def: &Value,
        table: &HashMap<String, Value>,
        value: &Value,
        path: &str,
        profiles: &[String],
        problems: &mut Vec<String>,
    ) {
        let Some(obj) = value.as_object() else {
            problems.push(format!("{path}: not an object"));
            return;
        };
        let attrs = self.attributes(def, table, profiles);
        for (name, a) in &attrs {
            if a["requirement"] == "required" && !obj.contains_key(name) {
                problems.push(format!("{path}.{name}: required and missing"));
            }
        }
        for c in self.constraints(def, table) {
            if let Some(any) = c["at_least_one"].as_array()
                && !any.iter().any(|k| k.as_str().is_some_and(|k| obj.contains_key(k)))
            {
                problems.push(format!("{path}: needs at least one of {any:?}"));
            }
            if let Some(one) = c["just_one"].as_array() {
                let n = one
                    .iter()
                    .filter(|k| k.as_str().is_some_and(|k| obj.contains_key(k)))
                    .count();
                if n != 1 {
                    problems.push(format!("{path}: needs exactly one of {one:?}"));
                }
            }
        }
        for (name, v) in obj {
            let here = format!("{path}.{name}");
            let Some(a) = attrs.get(name) else {
                problems.push(format!("{here}: not an attribute of {}", def["name"]));
                continue;
            };
            let dict = &self.dictionary["attributes"][name];
            let t = a["type"].as_str().or(dict["type"].as_str()).unwrap_or("unknown");
            let is_array = a["is_array"].as_bool().or(dict["is_array"].as_bool()).unwrap_or(false);
            // The computed ids are checked by `check_ids`.
            let computed = ["class_uid", "category_uid", "type_uid"].contains(&name.as_str());
            // The attribute's own values and the dictionary's (Unknown 0, Other 99).
            let mut enumeration = Value::Null;
            if !computed {
                for e in [&dict["enum"], &a["enum"]] {
                    if let Some(e) = e.as_object() {
                        let mut all = enumeration.as_object().cloned().unwrap_or_default();
                        all.extend(e.clone());
                        enumeration = Value::Object(all);
                    }
                }
            }
            let items: Vec<&Value> = if is_array {
                match v.as_array() {
                    Some(items) => items.iter().collect(),
                    None => {
                        problems.push(format!("{here}: not an array"));
                        continue;
                    }
                }
            } else {
                vec![v]
            };
            for (i, item) in items.into_iter().enumerate() {
                let here = if is_array { format!("{here}[{i}]") } else { here.clone() };
                if let Some(obj_def) = self.objects.get(t).filter(|_| t != "object") {
                    self.check_object(obj_def, &self.objects, item, &here, profiles, problems);
                    continue;
                }
                let ok = match self.base_type(t) {
                    "string" => item.is_string(),
                    "integer" => item.is_i64() || item.is_u64(),
                    "number" => item.is_number(),
                    "boolean" => item.is_boolean(),
                    "object" => item.is_object(),
                    "any" => true,
                    other => {
                        problems.push(format!("{here}: type {t} ({other}) unknown to the validator"));
                        true
                    }
                };
                if !ok {
                    problems.push(format!("{here}: {item} is not of type {t}"));
                }
                if let Some(e) = enumeration.as_object() {
                    let key = match item {
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    };
                    if !e.contains_key(&key) {
                        problems.push(format!(
                            "{here}: {item} is not one of {:?}",
                            e.keys().collect::<Vec<_>>()
                        ));
                    }
                }
            }
        }
    }
}

/// Validates one record by its class_uid; panics with every problem found.
pub fn assert_valid(schema: &Schema, record: &Value) {
    let class = match record["class_uid"].as_u64() {
        Some(2004) => "detection_finding",
        Some(2005) => "incident_finding",
        other => panic!("class_uid {other:?} is not 2004 or 2005: {record}"),
    };
    let problems = schema.validate(class, record);
    assert!(
        problems.is_empty(),
        "OCSF {class} record is invalid: {problems:#?}\n{record:#}"
    );
}

#[test]
fn the_validator_finds_what_is_wrong() {
    let schema = Schema::load();
    let good = serde_json::json!({
        "class_uid": 2004, "category_uid": 2, "activity_id": 1, "type_uid": 200401, "severity_id": 4,
        "time": 1_700_000_000_000_i64,
        "metadata": {"version": "1.9.0-dev", "product": {"name": "Ward"}},
        "finding_info": {"uid": "a", "attacks": [{"technique": {"uid": "T1059"}}]},
    });
    assert_eq!(schema.validate("detection_finding", &good), Vec::<String>::new());
    let broken = |edit: fn(&mut Value), needle: &str| {
        let mut v = good.clone();
        edit(&mut v);
        let problems = schema.validate("detection_finding", &v);
        assert!(
            problems.iter().any(|p| p.contains(needle)),
            "{needle} not in {problems:?}"
        );
    };
    broken(
        |v| drop(v.as_object_mut().unwrap().remove("finding_info")),
        "finding_info: required",
    );
    broken(|v| v["severity_id"] = 9.into(), "severity_id: 9 is not one of");
    broken(|v| v["colour"] = "red".into(), "colour: not an attribute");
    broken(|v| v["time"] = "yesterday".into(), "time: \"yesterday\" is not of type");
    broken(
        |v| v["finding_info"]["attacks"] = serde_json::json!([{}]),
        "needs at least one of",
    );
    broken(
        |v| v["metadata"]["product"]["flavour"] = 1.into(),
        "product.flavour: not an attribute",
    );
    broken(
        |v| v["finding_info"]["attacks"] = serde_json::json!({"technique": {"uid": "T1"}}),
        "not an array",
    );
    broken(|v| v["type_uid"] = 200402.into(), "type_uid 200402 is not Some(200401)");
    broken(|v| v["class_uid"] = 2005.into(), "class_uid 2005 is not Some(2004)");
    // A profile's attributes need the profile applied.
    broken(
        |v| v["cloud"] = serde_json::json!({"provider": "AWS"}),
        "cloud: not an attribute",
    );
    let mut cloud = good.clone();
    cloud["cloud"] = serde_json::json!({"provider": "AWS"});
    cloud["metadata"]["profiles"] = serde_json::json!(["cloud"]);
    assert_eq!(schema.validate("detection_finding", &cloud), Vec::<String>::new());
    broken(
        |v| v["device"] = serde_json::json!({"type_id": 16, "uid": "d"}),
        "device.type_id: 16 is not one of",
    );
}

/// Every shape of record the OCSF format writes validates: alerts with and without
/// a device (feed alerts), each severity, and incident changes through their
/// lifecycle (opened, updated with an assignee and tactics, resolved, merged away).
#[test]
fn every_kind_of_ocsf_record_ward_writes_validates() {
    use ward_collector::export::format::ocsf;
    use ward_collector::export::record::{AlertRecord, Change, IncidentRecord, Record};
    use ward_collector::store::{AlertView, IncidentSummary, RuleView, TacticView};

    let schema = Schema::load();
    let alert = |severity: &'static str, device: bool| AlertView {
        id: "01JALERT".into(),
        device_id: device.then(|| "01JDEVICE".into()),
        seq: 1,
        observed_at_ms: 1_700_000_000_000,
        last_observed_at_ms: 1_700_000_000_500,
        received_at_ms: 1_700_000_001_000,
        rule: RuleView {
            id: "r-1".into(),
            title: "Suspicious | thing".into(),
            author: "Ward".into(),
            techniques: serde_json::json!(["T1059", "T1059.004"]),
            tactics: serde_json::json!(["TA0002"]),
        },
        severity,
        source: if device { "agent" } else { "identity" }.into(),
        count: 3,
        folded_alerts: 2,
        entities: serde_json::json!([{"kind": "user", "name": "alice"}]),
        matched: serde_json::json!({"a": "b"}),
        rowid: 1,
    };
    for severity in ["informational", "low", "medium", "high", "critical"] {
        for device in [true, false] {
            let r = Record::Alert(AlertRecord {
                id: "alert-01JALERT".into(),
                alert: alert(severity, device),
                hostname: device.then(|| "web-1".into()),
            });
            assert_valid(&schema, &ocsf(&r));
        }
    }
    let incident = |status: &str, assignee: Option<&str>| IncidentSummary {
        id: "01JINC".into(),
        title: "Reverse shell on web-1".into(),
        severity: "high",
        status: status.into(),
        redirected_to: (status == "redirected").then(|| "01JOTHER".into()),
        assignee: assignee.map(str::to_string),
        classification: None,
        determination: None,
        tags: vec!["t".into()],
        sources: vec!["agent".into()],
        tactics: vec![TacticView {
            id: "TA0002".into(),
            name: "Execution".into(),
        }],
        first_activity_ms: 1,
        last_activity_ms: 2,
        created_at_ms: 3,
        updated_at_ms: 4,
        alert_count: 2,
        device_count: 1,
        user_count: 1,
        mailbox_count: 0,
        severity_num: 3,
    };
    for (status, kind, assignee, activity) in [
        ("active", "created", None, 1),
        ("in_progress", "assignee", Some("alice"), 2),
        ("resolved", "status", Some("alice"), 3),
        ("redirected", "redirected", None, 3),
    ] {
        let r = Record::Incident(IncidentRecord {
            id: "incident-01JINC-1-0".into(),
            incident: incident(status, assignee),
            changes: vec![Change {
                kind: kind.into(),
                at_ms: 5,
                actor: "alice".into(),
                detail: "x".into(),
                alert_id: None,
            }],
            omitted_changes: 0,
        });
        let v = ocsf(&r);
        assert_eq!(v["activity_id"], activity, "{status}");
        assert_valid(&schema, &v);
    }
}
