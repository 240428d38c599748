//! The process tree of an incident: the lineages of its alerted processes merged by
//! (device, pid, start time) into one tree per root, chains of processes without
//! alerts folded ("… 3 more"), alerted processes marked with their alerts. Pure: the
//! caller reads the processes from the store; the output is bounded by `max_nodes`.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use serde_json::{Value, json};
use ward_protocol::{Entity, ProcessNode};

/// One alerted process as the store gives it.
#[derive(Debug, Clone)]
pub struct AlertedProcess {
    pub device_id: Option<String>,
    /// The process and its ancestors, parent first.
    pub process: ProcessNode,
    pub ancestors: Vec<ProcessNode>,
    pub rooted: bool,
    pub alert_count: i64,
    /// The first few alerts, as JSON for the page.
    pub alerts: Vec<Value>,
}

impl AlertedProcess {
    /// The process an alert's entities name: its lineage, else its process entity.
    pub fn from_entities(
        device_id: Option<String>,
        entities: &[Entity],
        alert_count: i64,
        alerts: Vec<Value>,
    ) -> Option<Self> {
        let lineage = entities.iter().find_map(|e| match e {
            Entity::Lineage {
                process,
                ancestors,
                rooted,
            } => Some((process.clone(), ancestors.clone(), *rooted)),
            _ => None,
        });
        let (process, ancestors, rooted) = lineage.or_else(|| {
            entities.iter().find_map(|e| match e {
                Entity::Process {
                    pid,
                    ppid,
                    start_time_ms,
                    exe,
                    cmdline,
                    ..
                } => Some((
                    ProcessNode {
                        pid: *pid,
                        ppid: *ppid,
                        start_time_ms: *start_time_ms,
                        exe: exe.clone(),
                        cmdline: cmdline.clone(),
                        user: None,
                        login_user: None,
                    },
                    Vec::new(),
                    false,
                )),
                _ => None,
            })
        })?;
        Some(AlertedProcess {
            device_id,
            process,
            ancestors,
            rooted,
            alert_count,
            alerts,
        })
    }
}

type Key = (Option<String>, u32, u64);

struct Node {
    process: ProcessNode,
    device_id: Option<String>,
    parent: Option<Key>,
    children: BTreeSet<(u64, u32, Key)>,
    alert_count: i64,
    alerts: Vec<Value>,
    /// The top of a chain that reached its service or session root.
    rooted: bool,
}

/// Deepest nesting drawn; lineages are at most 9 deep, so only a merge of
/// contradictory chains could go further.
const MAX_DEPTH: usize = 64;

/// Builds the trees. Returns `{trees, nodes, nodes_shown, truncated}`: each tree node
/// has the process, `alert_count` and `alerts`, `children`, and `folded` (the
/// processes without alerts hidden between it and the node above, as `{count, exes}`).
pub fn build(processes: &[AlertedProcess], max_nodes: usize) -> Value {
    let mut nodes: BTreeMap<Key, Node> = BTreeMap::new();
    for p in processes {
        let key_of = |n: &ProcessNode| (p.device_id.clone(), n.pid, n.start_time_ms);
        // Root first, the alerted process last.
        let chain: Vec<&ProcessNode> = p.ancestors.iter().rev().chain(std::iter::once(&p.process)).collect();
        let mut above: Option<Key> = None;
        for (i, n) in chain.iter().enumerate() {
            let key = key_of(n);
            let node = nodes.entry(key.clone()).or_insert_with(|| Node {
                process: (*n).clone(),
                device_id: p.device_id.clone(),
                parent: None,
                children: BTreeSet::new(),
                alert_count: 0,
                alerts: Vec::new(),
                rooted: false,
            });
            if i == 0 && p.rooted && !p.ancestors.is_empty() {
                node.rooted = true;
            }
            // The first chain to name a parent decides it; a process is its own
            // parent only in forged data.
            if node.parent.is_none()
                && let Some(up) = above.as_ref().filter(|up| **up != key)
            {
                node.parent = Some(up.clone());
            }
            let sort = (n.start_time_ms, n.pid, key.clone());
            if let Some(up) = &above
                && nodes.get(&key).and_then(|c| c.parent.as_ref()) == Some(up)
                && let Some(parent) = nodes.get_mut(up)
            {
                parent.children.insert(sort);
            }
            above = Some(key);
        }
        if let Some(node) = nodes.get_mut(&key_of(&p.process)) {
            node.alert_count += p.alert_count;
            node.alerts.extend(p.alerts.iter().cloned());
        }
    }
    let total = nodes.len();
    let mut roots: Vec<(u64, u32, Key)> = nodes
        .iter()
        .filter(|(_, n)| n.parent.is_none())
        .map(|(k, n)| (n.process.start_time_ms, n.process.pid, k.clone()))
        .collect();
    roots.sort();
    let mut out = Emit {
        nodes: &nodes,
        seen: HashSet::new(),
        shown: 0,
        max: max_nodes,
        cut: 0,
    };
    let mut trees: Vec<Value> = Vec::new();
    for (_, _, k) in &roots {
        if let Some(t) = out.node(k, Vec::new(), 0) {
            trees.push(t);
        }
    }
    // Alerted processes in a cycle of forged parents reach no root: shown on their own.
    let unreached: Vec<Key> = nodes
        .iter()
        .filter(|(k, n)| n.alert_count > 0 && !out.seen.contains(*k))
        .map(|(k, _)| k.clone())
        .collect();
    for k in unreached {
        if !out.seen.contains(&k)
            && let Some(t) = out.node(&k, Vec::new(), 0)
        {
            trees.push(t);
        }
    }
    let unshown = total.saturating_sub(out.seen.len());
    json!({
        "trees": trees, "nodes": total, "nodes_shown": out.shown,
        "truncated": out.cut > 0 || unshown > 0, "nodes_not_shown": unshown,
    })
}

struct Emit<'a> {
    nodes: &'a BTreeMap<Key, Node>,
    seen: HashSet<Key>,
    shown: usize,
    max: usize,
    cut: usize,
}

impl Emit<'_> {
    /// A node without alerts with one child that has none either is folded into
    /// the node below (roots, branches and the parents of alerted processes stay).
    fn foldable(&self, n: &Node, depth: usize) -> bool {
        depth > 0
            && n.alert_count == 0
            && n.children.len() == 1
            && n.children
                .iter()
                .next()
                .and_then(|(_, _, c)| self.nodes.get(c))
                .is_some_and(|c| c.alert_count == 0)
    }

    fn node(&mut self, key: &Key, mut folded: Vec<String>, depth: usize) -> Option<Value> {
        let n = self.nodes.get(key)?;
        if !self.seen.insert(key.clone()) {
            return None;
        }
        if self.foldable(n, depth) && depth < MAX_DEPTH {
            folded.push(n.process.exe.clone());
            let (_, _, child) = n.children.iter().next()?;
            return self.node(child, folded, depth + 1);
        }
        if self.shown >= self.max {
            self.cut += 1;
            return None;
        }
        self.shown += 1;
        let mut children = Vec::new();
        let mut more = 0usize;
        for (_, _, c) in &n.children {
            if depth + 1 >= MAX_DEPTH || self.shown >= self.max {
                more += 1;
                continue;
            }
            if let Some(v) = self.node(c, Vec::new(), depth + 1) {
                children.push(v);
            }
        }
        let p = &n.process;
        Some(json!({
            "device_id": n.device_id, "pid": p.pid, "ppid": p.ppid, "start_time_ms": p.start_time_ms,
            "exe": p.exe, "cmdline": p.cmdline, "user": p.user, "login_user": p.login_user,
            "rooted": n.rooted, "alert_count": n.alert_count, "alerts": n.alerts,
            "folded": {"count": folded.len(), "exes": folded},
            "children": children, "children_not_shown": more,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(pid: u32, exe: &str) -> ProcessNode {
        ProcessNode {
            pid,
            ppid: 0,
            start_time_ms: u64::from(pid) * 10,
            exe: exe.into(),
            cmdline: exe.into(),
            user: None,
            login_user: None,
        }
    }

    fn alerted(pid: u32, exe: &str, ancestors: &[(u32, &str)]) -> AlertedProcess {
        AlertedProcess {
            device_id: Some("d1".into()),
            process: node(pid, exe),
            ancestors: ancestors.iter().map(|(p, e)| node(*p, e)).collect(),
            rooted: true,
            alert_count: 1,
            alerts: vec![json!({"id": format!("a{pid}")})],
        }
    }

    /// The tree as text: one line per node, indented, with alerts and folds.
    fn outline(v: &Value) -> Vec<String> {
        fn walk(n: &Value, depth: usize, out: &mut Vec<String>) {
            let folded = n["folded"]["count"].as_u64().unwrap_or(0);
            out.push(format!(
                "{}{}{}{}",
                "  ".repeat(depth),
                if folded > 0 {
                    format!("(… {folded} more) ")
                } else {
                    String::new()
                },
                n["exe"].as_str().unwrap_or(""),
                match n["alert_count"].as_i64() {
                    Some(0) | None => String::new(),
                    Some(c) => format!(" [{c}]"),
                }
            ));
            for c in n["children"].as_array().into_iter().flatten() {
                walk(c, depth + 1, out);
            }
        }
        let mut out = Vec::new();
        for t in v["trees"].as_array().into_iter().flatten() {
            walk(t, 0, &mut out);
        }
        out
    }

    #[test]
    fn merges_lineages_and_folds_quiet_chains() {
        // systemd-user > tomcat > java > sh > bash -c > bash -i (alert) > whoami (alert),
        // and a second alert from a sibling under java.
        let root = [(5, "bash -i"), (4, "bash -c"), (3, "sh"), (2, "java"), (1, "tomcat")];
        let tree = build(
            &[
                alerted(
                    6,
                    "whoami",
                    &[(5, "bash -i"), (4, "bash -c"), (3, "sh"), (2, "java"), (1, "tomcat")],
                ),
                alerted(5, "bash -i", &root[1..]),
                alerted(7, "curl", &[(2, "java"), (1, "tomcat")]),
            ],
            100,
        );
        assert_eq!(
            outline(&tree),
            [
                "tomcat",
                "  java",
                "    (… 1 more) bash -c",
                "      bash -i [1]",
                "        whoami [1]",
                "    curl [1]",
            ],
            "{tree}"
        );
        assert_eq!(
            (tree["nodes"].as_u64(), tree["truncated"].as_bool()),
            (Some(7), Some(false))
        );
    }

    #[test]
    fn processes_on_two_devices_never_merge_and_output_is_capped() {
        let mut a = alerted(6, "whoami", &[(1, "sshd")]);
        let mut b = a.clone();
        b.device_id = Some("d2".into());
        a.alert_count = 4;
        let tree = build(&[a.clone(), b], 100);
        assert_eq!(outline(&tree), ["sshd", "  whoami [4]", "sshd", "  whoami [1]"]);
        let many: Vec<AlertedProcess> = (10..60).map(|pid| alerted(pid, "x", &[(1, "sshd")])).collect();
        let tree = build(&many, 20);
        assert_eq!(tree["nodes_shown"], 20);
        assert_eq!(tree["nodes"], 51);
        assert_eq!(tree["truncated"], true);
        assert_eq!(tree["trees"][0]["children_not_shown"], 31);
    }

    #[test]
    fn forged_cycles_end() {
        // 2 says its parent is 3, 3 says its parent is 2: no root; both still shown.
        let tree = build(&[alerted(2, "a", &[(3, "b")]), alerted(3, "b", &[(2, "a")])], 100);
        assert_eq!(tree["nodes_shown"], 2, "{tree}");
    }
}
