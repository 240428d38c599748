//! `ward hunt`: runs hunts over the collector's stored alerts, sign-ins and mail
//! records (`GET /api/v1/hunt`), as a table, JSON or CSV, and keeps the caller's
//! saved hunts (`/api/v1/hunt/saved`). The query text goes to the API as typed;
//! the collector parses and checks it.

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use serde_json::{Value, json};

use crate::client::Client;
use crate::commands::{s, when};
use crate::table::render;

#[derive(Subcommand, Debug)]
pub enum Hunt {
    /// Runs a hunt: `ward hunt run alerts 'rule ~ ssh and user = root' --since 24h`.
    Run(RunArgs),
    /// Your saved hunts.
    Saved,
    /// Saves a hunt under a name (replacing yours of that name).
    Save {
        name: String,
        /// alerts, sign_ins or mail.
        source: String,
        /// Conditions, e.g. 'outcome = failure and ip ~ 203.0.113.'.
        #[arg(default_value = "")]
        query: String,
        /// The time range when it is run: the last 30m, 24h, 7d...
        #[arg(long)]
        window: Option<String>,
    },
    /// Deletes one of your saved hunts, by name.
    Delete { name: String },
}

#[derive(Args, Debug)]
pub struct RunArgs {
    /// alerts, sign_ins or mail (not with --saved).
    source: Option<String>,
    /// Conditions joined by `and`: `field op value`, op one of = != ~ !~ >= > <= <.
    query: Option<String>,
    /// Runs your saved hunt of this name (its query and window).
    #[arg(long, conflicts_with_all = ["source", "query"])]
    saved: Option<String>,
    /// From: 30m, 24h, 7d (before now), an RFC 3339 time, or ms since the epoch.
    #[arg(long)]
    since: Option<String>,
    /// Until (same forms as --since).
    #[arg(long)]
    until: Option<String>,
    /// Rows: at most 500 (10,000 with --csv).
    #[arg(long)]
    limit: Option<u32>,
    /// The next page, as the previous one printed it.
    #[arg(long)]
    cursor: Option<String>,
    /// Prints CSV (up to 10,000 rows) instead of a table.
    #[arg(long)]
    csv: bool,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// A duration such as `30m`, `24h`, `7d` or `90s`, in ms.
fn duration_ms(s: &str) -> Option<i64> {
    let (n, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit())?);
    let n: i64 = n.parse().ok()?;
    let unit_ms = match unit {
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return None,
    };
    n.checked_mul(unit_ms)
}

/// A time argument in ms since the epoch: a duration before `now_ms`, an RFC 3339
/// time, or a number of ms.
fn time_arg(s: &str, now_ms: i64) -> Result<i64> {
    if let Some(d) = duration_ms(s) {
        return Ok(now_ms - d);
    }
    if let Ok(ms) = s.parse::<i64>() {
        return Ok(ms);
    }
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Ok(t.timestamp_millis());
    }
    bail!("{s:?} is not a time: give 30m, 24h or 7d (before now), an RFC 3339 time, or ms since the epoch")
}

/// Runs one `ward hunt` command; returns what to print.
pub async fn run(c: &Client, cmd: Hunt, json_out: bool) -> Result<String> {
    let now = now_ms();
    match cmd {
        Hunt::Run(a) => {
            let (source, query, window) = match &a.saved {
                Some(name) => {
                    let h = saved_by_name(c, name).await?;
                    (s(&h["source"]), s(&h["query"]), h["window_ms"].as_i64())
                }
                None => (
                    a.source
                        .clone()
                        .context("give a source (alerts, sign_ins or mail) or --saved NAME")?,
                    a.query.clone().unwrap_or_default(),
                    None,
                ),
            };
            let mut q: Vec<(&str, String)> = vec![("source", source), ("q", query)];
            let since = match (&a.since, window) {
                (Some(t), _) => Some(time_arg(t, now)?),
                (None, Some(w)) => Some(now - w),
                (None, None) => None,
            };
            if let Some(t) = since {
                q.push(("since_ms", t.to_string()));
            }
            if let Some(t) = &a.until {
                q.push(("until_ms", time_arg(t, now)?.to_string()));
            }
            if let Some(l) = a.limit {
                q.push(("limit", l.to_string()));
            }
            if let Some(cur) = a.cursor {
                q.push(("cursor", cur));
            }
            if a.csv {
                q.push(("format", "csv".into()));
                // `main` ends what it prints with a newline of its own.
                let csv = c.get_text("/api/v1/hunt", &q).await?;
                return Ok(csv.trim_end_matches(['\r', '\n']).to_string());
            }
            let v = c.get("/api/v1/hunt", &q).await?;
            Ok(if json_out {
                serde_json::to_string_pretty(&v).unwrap_or_default()
            } else {
                results_table(&v)
            })
        }
        Hunt::Saved => {
            let v = c.get("/api/v1/hunt/saved", &[]).await?;
            Ok(if json_out {
                serde_json::to_string_pretty(&v).unwrap_or_default()
            } else {
                saved_table(&v["saved"])
            })
        }
        Hunt::Save {
            name,
            source,
            query,
            window,
        } => {
            let window_ms = window
                .map(|w| duration_ms(&w).with_context(|| format!("{w:?} is not a window: give 30m, 24h, 7d...")))
                .transpose()?;
            let v = c
                .post(
                    "/api/v1/hunt/saved",
                    &json!({"name": name, "source": source, "query": query, "window_ms": window_ms}),
                )
                .await?;
            Ok(if json_out {
                serde_json::to_string_pretty(&v).unwrap_or_default()
            } else {
                format!(
                    "saved {:?}: {} {}",
                    s(&v["saved"]["name"]),
                    s(&v["saved"]["source"]),
                    s(&v["saved"]["query"])
                )
            })
        }
        Hunt::Delete { name } => {
            let h = saved_by_name(c, &name).await?;
            let id = h["id"].as_i64().context("the collector's saved hunt has no id")?;
            c.delete(&format!("/api/v1/hunt/saved/{id}")).await?;
            Ok(format!("deleted {name:?}"))
        }
    }
}

async fn saved_by_name(c: &Client, name: &str) -> Result<Value> {
    let v = c.get("/api/v1/hunt/saved", &[]).await?;
    v["saved"]
        .as_array()
        .and_then(|a| a.iter().find(|h| h["name"] == name))
        .cloned()
        .with_context(|| format!("you have no saved hunt called {name:?} (`ward hunt saved` lists them)"))
}

fn results_table(v: &Value) -> String {
    let columns: Vec<&str> = v["columns"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let rows: Vec<Vec<String>> = v["rows"]
        .as_array()
        .map(|rows| {
            rows.iter()
                .map(|r| {
                    columns
                        .iter()
                        .enumerate()
                        .map(|(i, col)| if *col == "time" { when(&r[i]) } else { s(&r[i]) })
                        .collect()
                })
                .collect()
        })
        .unwrap_or_default();
    let shown = rows.len();
    let total = format!(
        "{}{}",
        v["total"].as_u64().unwrap_or(0),
        if v["total_capped"] == true { "+" } else { "" }
    );
    let mut out = render(&columns, &rows);
    out.push_str(&format!("\n{shown} shown of {total} matching ({})", s(&v["query"])));
    if let Some(next) = v["next_cursor"].as_str() {
        out.push_str(&format!("; next page: --cursor {next}"));
    }
    out
}

fn saved_table(v: &Value) -> String {
    let rows: Vec<Vec<String>> = v
        .as_array()
        .map(|a| {
            a.iter()
                .map(|h| {
                    let window = h["window_ms"]
                        .as_i64()
                        .map(|w| match w {
                            w if w % 86_400_000 == 0 => format!("{}d", w / 86_400_000),
                            w if w % 3_600_000 == 0 => format!("{}h", w / 3_600_000),
                            w if w % 60_000 == 0 => format!("{}m", w / 60_000),
                            w => format!("{}s", w / 1000),
                        })
                        .unwrap_or_else(|| "all time".into());
                    vec![
                        s(&h["name"]),
                        s(&h["source"]),
                        s(&h["query"]),
                        window,
                        when(&h["updated_at_ms"]),
                    ]
                })
                .collect()
        })
        .unwrap_or_default();
    if rows.is_empty() {
        return "no saved hunts".into();
    }
    render(&["name", "source", "query", "window", "saved"], &rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_relative_absolute_or_ms() {
        let now = 1_800_000_000_000;
        assert_eq!(time_arg("24h", now).ok(), Some(now - 86_400_000));
        assert_eq!(time_arg("30m", now).ok(), Some(now - 1_800_000));
        assert_eq!(time_arg("7d", now).ok(), Some(now - 7 * 86_400_000));
        assert_eq!(time_arg("1700000000000", now).ok(), Some(1_700_000_000_000));
        assert_eq!(time_arg("2026-01-01T00:00:00Z", now).ok(), Some(1_767_225_600_000));
        assert!(time_arg("yesterday", now).is_err());
        assert!(time_arg("5y", now).is_err());
        assert_eq!(duration_ms("h"), None);
    }

    #[test]
    fn results_print_as_a_table_with_the_next_cursor() {
        let v = json!({"columns": ["time", "user", "ip"], "rows": [[0, "alice", "203.0.113.7"], [1000, "bob", null]],
            "total": 3, "total_capped": false, "next_cursor": "1000.2", "query": "ip ~ 203."});
        assert_eq!(
            results_table(&v),
            "TIME                 USER   IP\n1970-01-01 00:00:00  alice  203.0.113.7\n1970-01-01 00:00:01  bob\n\
             2 shown of 3 matching (ip ~ 203.); next page: --cursor 1000.2"
        );
    }
}
