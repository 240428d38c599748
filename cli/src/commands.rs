//! The commands, their flags, and how each answer is shown.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use serde_json::{Value, json};

use crate::client::Client;
use crate::config;
use crate::table::render;

#[derive(Parser, Debug)]
#[command(name = "ward", version, about = "Command line for a Ward collector's API")]
pub struct Cli {
    /// Collector API URL, e.g. http://127.0.0.1:8080.
    #[arg(long, env = "WARD_URL", global = true)]
    url: Option<String>,
    /// API token (`ward-collector user add` prints one).
    #[arg(long, env = "WARD_TOKEN", global = true, hide_env_values = true)]
    token: Option<String>,
    /// PEM file of the CA that signed the API's HTTPS certificate (default: the system's).
    #[arg(long, env = "WARD_CA_CERT", global = true)]
    ca_cert: Option<PathBuf>,
    /// Print the API's JSON instead of a table.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Incidents: list, show, update, comment, merge.
    #[command(subcommand)]
    Incidents(Incidents),
    /// Response actions: list, propose, approve, reject.
    #[command(subcommand)]
    Actions(Actions),
    /// Enrolled devices: list, show.
    #[command(subcommand)]
    Devices(Devices),
    /// Hunting over stored alerts, sign-ins and mail records; your saved hunts.
    #[command(subcommand)]
    Hunt(crate::hunt::Hunt),
}

#[derive(Subcommand, Debug)]
enum Incidents {
    /// The incident queue (the API's filters and sorts).
    List(IncidentFilter),
    /// One incident: summary, alerts, entities, actions, comments.
    Show { id: String },
    /// Changes status, assignee, classification, determination, tags, title or severity.
    Update(IncidentUpdate),
    /// Adds a comment.
    Comment { id: String, text: String },
    /// Merges the `--from` incidents into ID.
    Merge {
        id: String,
        #[arg(long, required = true, num_args = 1..)]
        from: Vec<String>,
    },
}

#[derive(Args, Debug)]
struct IncidentFilter {
    /// Comma-separated: active, in_progress, resolved, redirected.
    #[arg(long)]
    status: Option<String>,
    /// Minimum severity.
    #[arg(long)]
    severity: Option<String>,
    #[arg(long)]
    assignee: Option<String>,
    #[arg(long)]
    tag: Option<String>,
    /// agent, collector, identity or mailbox.
    #[arg(long)]
    source: Option<String>,
    /// Device id or hostname.
    #[arg(long)]
    device: Option<String>,
    #[arg(long)]
    user: Option<String>,
    /// ATT&CK tactic id, e.g. TA0001.
    #[arg(long)]
    tactic: Option<String>,
    #[arg(long)]
    since_ms: Option<i64>,
    #[arg(long)]
    until_ms: Option<i64>,
    /// last_activity (default) or severity.
    #[arg(long)]
    sort: Option<String>,
    #[arg(long)]
    limit: Option<u32>,
    #[arg(long)]
    cursor: Option<String>,
}

#[derive(Args, Debug)]
struct IncidentUpdate {
    id: String,
    /// active, in_progress or resolved.
    #[arg(long)]
    status: Option<String>,
    #[arg(long, conflicts_with = "unassign")]
    assignee: Option<String>,
    /// Clears the assignee.
    #[arg(long)]
    unassign: bool,
    /// true_positive, informational_expected_activity or false_positive.
    #[arg(long)]
    classification: Option<String>,
    #[arg(long)]
    determination: Option<String>,
    /// Replaces the tags (repeat for several; `--tags ""` clears them).
    #[arg(long = "tags", value_delimiter = ',', num_args = 0..)]
    tags: Option<Vec<String>>,
    #[arg(long)]
    title: Option<String>,
    #[arg(long)]
    severity: Option<String>,
}

#[derive(Subcommand, Debug)]
enum Actions {
    /// Actions, newest first.
    List {
        /// pending_approval, approved, dispatched, succeeded, failed, refused, rejected, expired, cancelled.
        #[arg(long)]
        status: Option<String>,
        /// Device id.
        #[arg(long)]
        device: Option<String>,
        #[arg(long)]
        limit: Option<u32>,
    },
    /// Proposes an action on a device; an approver other than you must approve it.
    Propose {
        /// Device id or hostname.
        #[arg(long)]
        device: String,
        /// Why (kept in the audit log).
        #[arg(long)]
        reason: String,
        /// Incident the action belongs to.
        #[arg(long)]
        incident: Option<String>,
        #[command(subcommand)]
        action: ProposeKind,
    },
    /// Approves a pending action.
    Approve {
        id: String,
        #[arg(long, default_value = "")]
        comment: String,
    },
    /// Rejects a pending action (a comment is required).
    Reject {
        id: String,
        #[arg(long)]
        comment: String,
    },
}

#[derive(Subcommand, Debug)]
enum ProposeKind {
    /// Cut the device off the network (the collector stays reachable).
    Isolate {
        /// Addresses or names still allowed (repeat).
        #[arg(long)]
        allow: Vec<String>,
    },
    /// Lift isolation.
    Release,
    /// Move a file (bound to its SHA-256) into quarantine.
    QuarantineFile {
        #[arg(long)]
        path: String,
        #[arg(long)]
        sha256: String,
    },
    /// Put a quarantined file back.
    RestoreFile {
        #[arg(long)]
        quarantine_id: String,
    },
    /// Delete a file (bound to its SHA-256).
    DeleteFile {
        #[arg(long)]
        path: String,
        #[arg(long)]
        sha256: String,
    },
    /// Kill a process (bound to its pid, start time and executable).
    KillProcess {
        #[arg(long)]
        pid: u32,
        #[arg(long)]
        start_time_ms: u64,
        #[arg(long)]
        exe: String,
        /// Its children too.
        #[arg(long)]
        tree: bool,
    },
    /// Collect an investigation package.
    CollectPackage,
}

#[derive(Subcommand, Debug)]
enum Devices {
    /// Enrolled devices.
    List,
    /// One device (by id or hostname), with its latest alerts.
    Show { device: String },
}

fn client(cli: &Cli) -> Result<Client> {
    let file = config::load()?;
    let url = cli
        .url
        .clone()
        .or(file.url)
        .context("no collector URL: pass --url, set WARD_URL, or put url in ~/.config/ward/cli.toml")?;
    let token = cli
        .token
        .clone()
        .or(file.token)
        .context("no API token: pass --token, set WARD_TOKEN, or put token in ~/.config/ward/cli.toml")?;
    Client::new(&url, &token, cli.ca_cert.as_deref().or(file.ca_cert.as_deref()))
}

/// Runs the command; returns what to print.
pub async fn run(cli: Cli) -> Result<String> {
    let c = client(&cli)?;
    let json = cli.json;
    let out = |v: Value, table: fn(&Value) -> String| {
        if json {
            serde_json::to_string_pretty(&v).unwrap_or_default()
        } else {
            table(&v)
        }
    };
    Ok(match cli.command {
        Command::Incidents(Incidents::List(f)) => {
            let mut q: Vec<(&str, String)> = Vec::new();
            let text = [
                ("status", f.status),
                ("severity", f.severity),
                ("assignee", f.assignee),
                ("tag", f.tag),
                ("source", f.source),
                ("device", f.device),
                ("user", f.user),
                ("tactic", f.tactic),
                ("sort", f.sort),
                ("cursor", f.cursor),
            ];
            q.extend(text.into_iter().filter_map(|(k, v)| v.map(|v| (k, v))));
            let nums = [
                ("since_ms", f.since_ms),
                ("until_ms", f.until_ms),
                ("limit", f.limit.map(i64::from)),
            ];
            q.extend(nums.into_iter().filter_map(|(k, v)| v.map(|v| (k, v.to_string()))));
            out(c.get("/api/v1/incidents", &q).await?, incident_table)
        }
        Command::Incidents(Incidents::Show { id }) => out(c.get(&incident_path(&id)?, &[]).await?, incident_detail),
        Command::Incidents(Incidents::Update(u)) => {
            let body = update_body(
                u.status,
                u.assignee,
                u.unassign,
                u.classification,
                u.determination,
                u.tags,
                u.title,
                u.severity,
            )?;
            out(c.patch(&incident_path(&u.id)?, &body).await?, incident_detail)
        }
        Command::Incidents(Incidents::Comment { id, text }) => {
            let v = c
                .post(&format!("{}/comments", incident_path(&id)?), &json!({"text": text}))
                .await?;
            out(v, |v| format!("comment {} added", s(&v["comment"]["id"])))
        }
        Command::Incidents(Incidents::Merge { id, from }) => {
            let v = c
                .post(&format!("{}/merge", incident_path(&id)?), &json!({"from": from}))
                .await?;
            out(v, incident_detail)
        }
        Command::Actions(Actions::List { status, device, limit }) => {
            let mut q: Vec<(&str, String)> = Vec::new();
            if let Some(s) = status {
                q.push(("status", s));
            }
            if let Some(d) = device {
                q.push(("device", device_id(&c, &d).await?));
            }
            if let Some(l) = limit {
                q.push(("limit", l.to_string()));
            }
            out(c.get("/api/v1/actions", &q).await?, |v| action_table(&v["actions"]))
        }
        Command::Actions(Actions::Propose {
            device,
            reason,
            incident,
            action,
        }) => {
            let mut body =
                json!({"device_id": device_id(&c, &device).await?, "action": action_json(action), "reason": reason});
            if let Some(i) = incident {
                body["incident_id"] = Value::String(i);
            }
            out(c.post("/api/v1/actions", &body).await?, action_line)
        }
        Command::Actions(Actions::Approve { id, comment }) => out(
            c.post(&action_path(&id, "approve")?, &json!({"comment": comment}))
                .await?,
            action_line,
        ),
        Command::Actions(Actions::Reject { id, comment }) => out(
            c.post(&action_path(&id, "reject")?, &json!({"comment": comment}))
                .await?,
            action_line,
        ),
        Command::Devices(Devices::List) => out(c.get("/api/v1/devices", &[]).await?, |v| device_table(&v["devices"])),
        Command::Devices(Devices::Show { device }) => {
            let id = device_id(&c, &device).await?;
            let mut d = c.get(&format!("/api/v1/devices/{id}"), &[]).await?;
            let alerts = c
                .get(&format!("/api/v1/devices/{id}/alerts"), &[("limit", "20".into())])
                .await?;
            d["latest_alerts"] = alerts["alerts"].clone();
            out(d, device_detail)
        }
        Command::Hunt(h) => crate::hunt::run(&c, h, json).await?,
    })
}

/// Ids go into URL paths: only the 26-character id alphabet is accepted.
fn checked_id(id: &str) -> Result<&str> {
    if id.len() != 26 || !id.bytes().all(|b| b.is_ascii_alphanumeric()) {
        bail!("{id:?} is not a 26-character id");
    }
    Ok(id)
}

fn incident_path(id: &str) -> Result<String> {
    Ok(format!("/api/v1/incidents/{}", checked_id(id)?))
}

fn action_path(id: &str, verb: &str) -> Result<String> {
    Ok(format!("/api/v1/actions/{}/{verb}", checked_id(id)?))
}

/// A device id as given, or the id of the one device with that hostname.
async fn device_id(c: &Client, device: &str) -> Result<String> {
    if checked_id(device).is_ok() {
        return Ok(device.to_string());
    }
    let list = c.get("/api/v1/devices", &[]).await?;
    let matches: Vec<&Value> = list["devices"]
        .as_array()
        .map(|d| d.iter().filter(|d| d["hostname"] == device).collect())
        .unwrap_or_default();
    match matches.as_slice() {
        [one] => Ok(s(&one["id"])),
        [] => bail!("no device with the id or hostname {device:?}"),
        _ => bail!("{} devices are called {device:?}: give the id", matches.len()),
    }
}

#[allow(clippy::too_many_arguments)]
fn update_body(
    status: Option<String>,
    assignee: Option<String>,
    unassign: bool,
    classification: Option<String>,
    determination: Option<String>,
    tags: Option<Vec<String>>,
    title: Option<String>,
    severity: Option<String>,
) -> Result<Value> {
    let mut body = serde_json::Map::new();
    let mut put = |k: &str, v: Option<String>| {
        if let Some(v) = v {
            body.insert(k.into(), Value::String(v));
        }
    };
    put("status", status);
    put("assignee", assignee);
    put("classification", classification);
    put("determination", determination);
    put("title", title);
    put("severity", severity);
    if unassign {
        body.insert("assignee".into(), Value::Null);
    }
    if let Some(tags) = tags {
        let tags: Vec<Value> = tags.into_iter().filter(|t| !t.is_empty()).map(Value::String).collect();
        body.insert("tags".into(), Value::Array(tags));
    }
    if body.is_empty() {
        bail!(
            "nothing to change: give at least one of --status --assignee --unassign --classification --determination --tags --title --severity"
        );
    }
    Ok(Value::Object(body))
}

fn action_json(a: ProposeKind) -> Value {
    match a {
        ProposeKind::Isolate { allow } => json!({"kind": "isolate", "allow": allow}),
        ProposeKind::Release => json!({"kind": "release"}),
        ProposeKind::QuarantineFile { path, sha256 } => {
            json!({"kind": "quarantine_file", "path": path, "sha256": sha256})
        }
        ProposeKind::RestoreFile { quarantine_id } => json!({"kind": "restore_file", "quarantine_id": quarantine_id}),
        ProposeKind::DeleteFile { path, sha256 } => json!({"kind": "delete_file", "path": path, "sha256": sha256}),
        ProposeKind::KillProcess {
            pid,
            start_time_ms,
            exe,
            tree,
        } => {
            json!({"kind": "kill_process", "pid": pid, "start_time_ms": start_time_ms, "exe": exe, "tree": tree})
        }
        ProposeKind::CollectPackage => json!({"kind": "collect_package"}),
    }
}

// ---- output ----

/// A JSON value as plain text ("" for null).
pub(crate) fn s(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn join(v: &Value, field: Option<&str>) -> String {
    v.as_array()
        .map(|a| {
            a.iter()
                .map(|x| field.map_or_else(|| s(x), |f| s(&x[f])))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default()
}

/// Milliseconds since the epoch as "YYYY-MM-DD HH:MM:SS" UTC.
pub(crate) fn when(v: &Value) -> String {
    v.as_i64()
        .and_then(chrono::DateTime::from_timestamp_millis)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_default()
}

fn incident_table(v: &Value) -> String {
    let rows: Vec<Vec<String>> = v["incidents"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|i| {
                    vec![
                        s(&i["id"]),
                        s(&i["severity"]),
                        s(&i["status"]),
                        s(&i["title"]),
                        s(&i["assignee"]),
                        join(&i["sources"], None),
                        s(&i["device_count"]),
                        s(&i["user_count"]),
                        join(&i["tactics"], Some("name")),
                        when(&i["last_activity_ms"]),
                    ]
                })
                .collect()
        })
        .unwrap_or_default();
    let mut t = render(
        &[
            "id",
            "severity",
            "status",
            "title",
            "assignee",
            "sources",
            "devices",
            "users",
            "tactics",
            "last activity",
        ],
        &rows,
    );
    if let Some(next) = v["next_cursor"].as_str() {
        t.push_str(&format!("\n(more: --cursor {next})"));
    }
    t
}

fn incident_detail(v: &Value) -> String {
    let i = &v["incident"];
    let mut out = vec![
        format!(
            "{}  {}  [{}] {}",
            s(&i["id"]),
            s(&i["severity"]),
            s(&i["status"]),
            s(&i["title"])
        ),
        format!(
            "assignee: {}  classification: {}  determination: {}  tags: {}",
            if i["assignee"].is_null() {
                "-".into()
            } else {
                s(&i["assignee"])
            },
            if i["classification"].is_null() {
                "-".into()
            } else {
                s(&i["classification"])
            },
            if i["determination"].is_null() {
                "-".into()
            } else {
                s(&i["determination"])
            },
            join(&i["tags"], None),
        ),
        format!(
            "tactics: {}  sources: {}",
            join(&i["tactics"], Some("name")),
            join(&i["sources"], None)
        ),
        format!(
            "activity: {} .. {}",
            when(&i["first_activity_ms"]),
            when(&i["last_activity_ms"])
        ),
    ];
    if let Some(to) = i["redirected_to"].as_str() {
        out.push(format!("merged into {to}"));
    }
    let alerts: Vec<Vec<String>> = v["alerts"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|l| {
                    let a = &l["alert"];
                    vec![
                        when(&a["observed_at_ms"]),
                        s(&a["severity"]),
                        s(&a["rule"]["title"]),
                        attack_words(&a["rule"]),
                        folded(a),
                        s(&a["source"]),
                        s(&l["reason"]),
                    ]
                })
                .collect()
        })
        .unwrap_or_default();
    let page = &v["alerts_page"];
    out.push(match page["total"].as_u64() {
        Some(total) if total > alerts.len() as u64 => format!(
            "\nALERTS ({} of {total}, {} first; --json and the API's /alerts pages give the rest)",
            alerts.len(),
            page["order"].as_str().unwrap_or("newest")
        ),
        _ => format!("\nALERTS ({})", alerts.len()),
    });
    out.push(render(
        &[
            "observed",
            "severity",
            "rule",
            "att&ck",
            "repeats",
            "source",
            "why linked",
        ],
        &alerts,
    ));
    let entities: Vec<Vec<String>> = v["entities"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|e| {
                    vec![
                        s(&e["kind"]),
                        entity_words(e),
                        s(&e["verdict"]),
                        s(&e["remediation"]),
                        e["alert_count"].as_i64().unwrap_or(0).to_string(),
                    ]
                })
                .collect()
        })
        .unwrap_or_default();
    let all: u64 = v["entity_totals"]
        .as_object()
        .map_or(0, |m| m.values().filter_map(Value::as_u64).sum());
    out.push(if all > entities.len() as u64 {
        format!("\nENTITIES ({} most alerted of {all})", entities.len())
    } else {
        format!("\nENTITIES ({})", entities.len())
    });
    out.push(render(
        &["kind", "value", "verdict", "remediation", "alerts"],
        &entities,
    ));
    if v["actions"].as_array().is_some_and(|a| !a.is_empty()) {
        out.push("\nACTIONS".into());
        out.push(action_table(&v["actions"]));
    }
    if let Some(comments) = v["comments"].as_array().filter(|c| !c.is_empty()) {
        out.push("\nCOMMENTS".into());
        for c in comments {
            out.push(format!("{}  {}: {}", when(&c["at_ms"]), s(&c["author"]), s(&c["text"])));
        }
    }
    out.join("\n")
}

/// An entity as an analyst names it: a process by its program, pid and command line
/// (not its `pid@start` key), a file by its path, a user by name; the key otherwise.
fn entity_words(e: &Value) -> String {
    let v = &e["value"];
    let process = |p: &Value| {
        let exe = p["exe"].as_str().unwrap_or_default();
        let cmd: String = p["cmdline"].as_str().unwrap_or_default().chars().take(60).collect();
        let more = if p["cmdline"].as_str().is_some_and(|c| c.chars().count() > 60) {
            "…"
        } else {
            ""
        };
        let name = if exe.is_empty() { "(exited)" } else { exe };
        format!("{name} (pid {}): {cmd}{more}", p["pid"].as_u64().unwrap_or(0))
    };
    let text = match e["kind"].as_str().unwrap_or_default() {
        "process" => process(v),
        "lineage" => process(&v["process"]),
        "file" => s(&v["path"]),
        "user" => s(&v["name"]),
        "device" => s(&v["hostname"]),
        "ip" => s(&v["addr"]),
        "domain" => s(&v["name"]),
        "url" => s(&v["url"]),
        "mailbox" => s(&v["address"]),
        "process_context" => context_words(v),
        _ => String::new(),
    };
    if text.is_empty() { s(&e["key"]) } else { text }
}

/// Where a process ran and for whom: working directory, terminal, login, session,
/// container (its first 12 characters, as docker shows it).
fn context_words(v: &Value) -> String {
    let mut parts = Vec::new();
    let text = |k: &str| v[k].as_str().filter(|t| !t.is_empty());
    if let Some(cwd) = text("cwd") {
        parts.push(format!("cwd {cwd}"));
    }
    if let Some(tty) = text("tty") {
        parts.push(format!("tty {tty}"));
    }
    if let Some(user) = text("login_user") {
        parts.push(format!("login {user}"));
    }
    if let Some(session) = v["session_id"].as_u64() {
        parts.push(format!("session {session}"));
    }
    if let Some(id) = text("container_id") {
        parts.push(format!("container {}", id.chars().take(12).collect::<String>()));
    }
    parts.join(", ")
}

/// A rule's ATT&CK techniques with their names ("T1059.004 Unix Shell"), as the
/// API names them; bare ids from a collector that does not.
fn attack_words(rule: &Value) -> String {
    let named = rule["attack"]["techniques"].as_array();
    let words: Vec<String> = match named {
        Some(list) => list
            .iter()
            .map(|t| match t["name"].as_str() {
                Some(name) => format!("{} {name}", s(&t["id"])),
                None => s(&t["id"]),
            })
            .collect(),
        None => rule["techniques"].as_array().into_iter().flatten().map(s).collect(),
    };
    if words.is_empty() { "-".into() } else { words.join(", ") }
}

/// "x40 until <time>" for an alert standing for several detections, else "-".
fn folded(a: &Value) -> String {
    match a["count"].as_i64() {
        Some(n) if n > 1 => format!("x{n} until {}", when(&a["last_observed_at_ms"])),
        _ => "-".into(),
    }
}

fn action_table(actions: &Value) -> String {
    let rows: Vec<Vec<String>> = actions
        .as_array()
        .map(|a| {
            a.iter()
                .map(|a| {
                    vec![
                        s(&a["id"]),
                        s(&a["status"]),
                        s(&a["kind"]),
                        s(&a["device_hostname"]),
                        s(&a["requested_by"]),
                        s(&a["decided_by"]),
                        result_words(a),
                    ]
                })
                .collect()
        })
        .unwrap_or_default();
    render(
        &["id", "status", "kind", "device", "requested by", "decided by", "result"],
        &rows,
    )
}

/// What an action's result says happened, in words: the agent reports a quarantine,
/// restore, delete or kill as a JSON record, a package and an isolation as a
/// sentence. A detail that is not the expected record is printed as it came.
fn result_words(a: &Value) -> String {
    let r = &a["result"];
    if r.is_null() {
        return String::new();
    }
    if r["outcome"] != "succeeded" {
        let why = [&r["reason"], &r["detail"], &r["outcome"]]
            .into_iter()
            .filter_map(Value::as_str)
            .find(|t| !t.is_empty())
            .unwrap_or_default();
        return format!("{}: {why}", s(&r["outcome"]));
    }
    let detail = r["detail"].as_str().unwrap_or_default();
    let d: Value = serde_json::from_str(detail).unwrap_or(Value::Null);
    let n = |v: &Value| v.as_u64().unwrap_or(0);
    let links = |v: &Value| match n(v) {
        0 => String::new(),
        1 => "; 1 other hard link to the same content still on disk".into(),
        k => format!("; {k} other hard links to the same content still on disk"),
    };
    match a["kind"].as_str().unwrap_or_default() {
        "quarantine_file" if d["id"].is_string() => format!(
            "file {} moved to quarantine id {} ({} bytes){}",
            s(&d["original_path"]),
            s(&d["id"]),
            n(&d["size"]),
            links(&d["other_links"])
        ),
        "restore_file" if d["original_path"].is_string() => format!(
            "file restored from quarantine id {} to {}",
            s(&d["id"]),
            s(&d["original_path"])
        ),
        "delete_file" if d["path"].is_string() => format!(
            "file {} deleted ({} bytes){}",
            s(&d["path"]),
            n(&d["size"]),
            links(&d["other_links"])
        ),
        "kill_process" if d["killed"].is_array() => {
            let killed: Vec<String> = d["killed"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|k| {
                    let exe = k["exe"].as_str().unwrap_or("?");
                    let name = exe.rsplit('/').next().unwrap_or(exe);
                    let gone = if k["exited"] == true { " had already exited" } else { "" };
                    format!("{name} (pid {}){gone}", n(&k["pid"]))
                })
                .collect();
            let what = if a["action"]["tree"] == true {
                "process tree killed"
            } else {
                "process killed"
            };
            let skipped = d["skipped"].as_array().map_or(0, Vec::len);
            let skipped = if skipped > 0 {
                format!("; {skipped} skipped")
            } else {
                String::new()
            };
            format!(
                "{what}: {}{skipped}",
                if killed.is_empty() {
                    "none".into()
                } else {
                    killed.join(", ")
                }
            )
        }
        "collect_package" => format!(
            "{detail}: ready to download (GET /api/v1/actions/{}/package)",
            s(&a["id"])
        ),
        _ => detail.to_string(),
    }
}

fn action_line(a: &Value) -> String {
    format!("{}  {}  {}", s(&a["id"]), s(&a["status"]), s(&a["summary"]))
}

fn device_state(d: &Value) -> &'static str {
    if !d["revoked_at_ms"].is_null() {
        "revoked"
    } else if d["online"] == true {
        "online"
    } else {
        "offline"
    }
}

/// A device's clock against the collector's; `!` beyond the 2 min agents allow for
/// commands (they refuse them then).
fn skew(v: &Value) -> String {
    let Some(ms) = v.as_i64() else {
        return "-".into();
    };
    let secs = ms.unsigned_abs() as f64 / 1000.0;
    if secs < 1.0 {
        return "in step".into();
    }
    let side = if ms > 0 { "ahead" } else { "behind" };
    let flag = if ms.unsigned_abs() > 120_000 { " !" } else { "" };
    format!("{secs:.1} s {side}{flag}")
}

fn device_table(devices: &Value) -> String {
    let rows: Vec<Vec<String>> = devices
        .as_array()
        .map(|a| {
            a.iter()
                .map(|d| {
                    vec![
                        s(&d["id"]),
                        s(&d["hostname"]),
                        device_state(d).into(),
                        s(&d["isolation"]),
                        when(&d["last_seen_ms"]),
                        skew(&d["clock_skew_ms"]),
                        s(&d["agent_version"]),
                        s(&d["os"]),
                    ]
                })
                .collect()
        })
        .unwrap_or_default();
    render(
        &[
            "id",
            "hostname",
            "state",
            "isolation",
            "last seen",
            "clock",
            "agent",
            "os",
        ],
        &rows,
    )
}

fn device_detail(d: &Value) -> String {
    let mut out = vec![
        format!("{}  {}  {}", s(&d["id"]), s(&d["hostname"]), device_state(d)),
        format!(
            "isolation: {}  last seen: {}",
            s(&d["isolation"]),
            when(&d["last_seen_ms"])
        ),
        format!(
            "agent: {}  os: {} {}",
            s(&d["agent_version"]),
            s(&d["os"]),
            s(&d["kernel"])
        ),
        format!(
            "addresses: {}  users: {}",
            join(&d["addresses"], None),
            join(&d["logged_on_users"], None)
        ),
        format!(
            "outbox: {}  missing alerts: {}  dropped by the agent: {}  clock: {}",
            s(&d["outbox_depth"]),
            s(&d["missing_alerts"]),
            s(&d["dropped_total"]),
            skew(&d["clock_skew_ms"])
        ),
    ];
    if let Some(e) = d["storage_error"].as_str() {
        out.push(format!("storage: FAILING: {e}"));
    }
    let alerts: Vec<Vec<String>> = d["latest_alerts"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|a| vec![when(&a["observed_at_ms"]), s(&a["severity"]), s(&a["rule"]["title"])])
                .collect()
        })
        .unwrap_or_default();
    out.push(match d["alert_totals"]["alerts"].as_u64() {
        Some(total) if total > alerts.len() as u64 => format!("\nLATEST ALERTS ({} of {total})", alerts.len()),
        _ => format!("\nLATEST ALERTS ({})", alerts.len()),
    });
    out.push(render(&["observed", "severity", "rule"], &alerts));
    let gaps: Vec<Vec<String>> = d["sequence_gaps"]
        .as_array()
        .map(|g| {
            g.iter()
                .map(|g| {
                    vec![
                        s(&g["epoch"]),
                        format!("{}..{}", s(&g["first_seq"]), s(&g["last_seq"])),
                        s(&g["reason"]),
                    ]
                })
                .collect()
        })
        .unwrap_or_default();
    if !gaps.is_empty() {
        out.push(format!("\nSEQUENCE GAPS ({})", gaps.len()));
        out.push(render(&["epoch", "seqs", "reason"], &gaps));
    }
    let drops: Vec<Vec<String>> = d["drop_reports"]
        .as_array()
        .map(|r| {
            r.iter()
                .map(|r| {
                    let range = match (r["first_seq"].as_i64(), r["last_seq"].as_i64()) {
                        (Some(a), Some(b)) => format!("{a}..{b}"),
                        (Some(a), None) => format!("{a}.."),
                        _ => String::new(),
                    };
                    vec![when(&r["received_at_ms"]), s(&r["dropped"]), range, s(&r["reason"])]
                })
                .collect()
        })
        .unwrap_or_default();
    if !drops.is_empty() {
        out.push(format!("\nDROP REPORTS ({}, newest first)", drops.len()));
        out.push(render(&["received", "dropped", "seqs", "reason"], &drops));
    }
    out.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_utc_dates() {
        assert_eq!(when(&json!(0)), "1970-01-01 00:00:00");
        assert_eq!(when(&json!(1_795_392_000_000_i64)), "2026-11-23 00:00:00");
        assert_eq!(when(&json!(951_782_400_000_i64 + 3_661_000)), "2000-02-29 01:01:01");
        assert_eq!(when(&Value::Null), "");
    }

    #[test]
    fn ids_in_paths_are_checked() {
        assert!(incident_path("01JABCDEFGHJKMNPQRSTVWXYZ0").is_ok());
        assert!(incident_path("../../metrics").is_err());
        assert!(action_path("01JABCDEFGHJKMNPQRSTVWXYZ0/x", "approve").is_err());
    }

    #[test]
    fn an_update_needs_a_change_and_unassign_sends_null() {
        assert!(update_body(None, None, false, None, None, None, None, None).is_err());
        let b = update_body(None, None, true, None, None, Some(vec![]), None, None).unwrap_or_default();
        assert_eq!(b, json!({"assignee": null, "tags": []}));
    }

    #[test]
    fn action_results_and_attack_ids_are_put_in_words() {
        let quarantine = json!({"kind": "quarantine_file", "id": "a1", "result": {"outcome": "succeeded",
            "detail": "{\"id\":\"c4b0\",\"original_path\":\"/tmp/x\",\"size\":68,\"other_links\":0}"}});
        assert_eq!(
            result_words(&quarantine),
            "file /tmp/x moved to quarantine id c4b0 (68 bytes)"
        );
        let kill = json!({"kind": "kill_process", "action": {"tree": true}, "result": {"outcome": "succeeded",
            "detail": "{\"killed\":[{\"pid\":7,\"exe\":\"/bin/sh\",\"exited\":false}],\"skipped\":[]}"}});
        assert_eq!(result_words(&kill), "process tree killed: sh (pid 7)");
        let failed =
            json!({"kind": "delete_file", "result": {"outcome": "failed", "reason": "hash differs", "detail": ""}});
        assert_eq!(result_words(&failed), "failed: hash differs");
        let isolate = json!({"kind": "isolate", "result": {"outcome": "succeeded", "detail": "isolated"}});
        assert_eq!(result_words(&isolate), "isolated");
        assert_eq!(result_words(&json!({"kind": "isolate", "result": null})), "");
        let rule =
            json!({"techniques": ["T1059.004"], "attack": {"techniques": [{"id": "T1059.004", "name": "Unix Shell"}]}});
        assert_eq!(attack_words(&rule), "T1059.004 Unix Shell");
        assert_eq!(attack_words(&json!({"techniques": ["T9"]})), "T9");
    }

    #[test]
    fn entities_are_named_in_words_not_keys() {
        let process = json!({"kind": "process", "key": "1430@1796519849350",
            "value": {"kind": "process", "pid": 1430, "exe": "/usr/bin/bash", "cmdline": "bash -i"}});
        assert_eq!(entity_words(&process), "/usr/bin/bash (pid 1430): bash -i");
        let lineage = json!({"kind": "lineage", "key": "1430@1796519849350",
            "value": {"kind": "lineage", "process": {"pid": 7, "exe": "", "cmdline": "x".repeat(80)}}});
        assert_eq!(entity_words(&lineage), format!("(exited) (pid 7): {}…", "x".repeat(60)));
        let file = json!({"kind": "file", "key": "/tmp/a", "value": {"kind": "file", "path": "/tmp/a"}});
        assert_eq!(entity_words(&file), "/tmp/a");
        let context = json!({"kind": "process_context", "key": "4f1c0de2a9b8e7d6",
            "value": {"kind": "process_context", "pid": 7, "cwd": "/srv", "tty": "pts/3",
                "login_user": "alice", "session_id": 4, "container_id": "4f1c0de2a9b8e7d6"}});
        assert_eq!(
            entity_words(&context),
            "cwd /srv, tty pts/3, login alice, session 4, container 4f1c0de2a9b8"
        );
        let bare =
            json!({"kind": "process_context", "key": "7@1", "value": {"kind": "process_context", "pid": 7, "tty": ""}});
        assert_eq!(entity_words(&bare), "7@1");
        assert_eq!(
            entity_words(&json!({"kind": "odd", "key": "k"})),
            "k",
            "the key when nothing else"
        );
    }
}
