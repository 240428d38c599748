//! Counters and gauges the collector exports in Prometheus text format at
//! `/metrics`. Lock-free atomics: updating a metric never blocks ingest.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn inc(&self) {
        self.add(1);
    }
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

#[derive(Debug, Default)]
pub struct Gauge(AtomicU64);

impl Gauge {
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
    pub fn dec(&self) {
        let _ = self
            .0
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| Some(v.saturating_sub(1)));
    }
    pub fn set(&self, v: u64) {
        self.0.store(v, Ordering::Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Upper bounds, in seconds, of the latency histograms' buckets.
const BUCKETS: [f64; 10] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0];

#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [AtomicU64; 10],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        for (i, le) in BUCKETS.iter().enumerate() {
            if secs <= *le {
                self.buckets[i].fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros
            .fetch_add(u64::try_from(d.as_micros()).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = write!(out, "# HELP {name} {help}\n# TYPE {name} histogram\n");
        for (i, le) in BUCKETS.iter().enumerate() {
            let _ = writeln!(
                out,
                "{name}_bucket{{le=\"{le}\"}} {}",
                self.buckets[i].load(Ordering::Relaxed)
            );
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(
            out,
            "{name}_sum {}",
            self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6
        );
        let _ = writeln!(out, "{name}_count {count}");
    }
}

/// Reasons a frame, batch or connection is refused; each has its own counter.
pub const REJECT_REASONS: [&str; 13] = [
    "bad_signature",
    "malformed",
    "wrong_device",
    "invalid_field",
    "bad_frame",
    "unknown_device",
    "revoked",
    "too_many_connections",
    "protocol",
    "busy_address",
    "busy_total",
    "handshake_timeout",
    "enroll_request_timeout",
];

/// Message kinds other than alert batches that a device's budget can delay.
pub const THROTTLED_KINDS: [&str; 3] = ["heartbeat", "drop_report", "command_result"];

#[derive(Debug, Default)]
pub struct Metrics {
    pub alerts_received: Counter,
    pub alerts_stored: Counter,
    pub alerts_duplicate: Counter,
    pub alerts_folded: Counter,
    rejected: [Counter; REJECT_REASONS.len()],
    pub connected_agents: Gauge,
    pub identity_conflicts: Counter,
    pub enrollments_accepted: Counter,
    pub enrollments_refused: Counter,
    pub commit_failures: Counter,
    pub batch_commit: Histogram,
    pub throttled_batches: Counter,
    /// Messages of other kinds delayed, by [`THROTTLED_KINDS`].
    throttled_messages: [Counter; THROTTLED_KINDS.len()],
    /// Audit rows a device's messages would have caused past its audit budget.
    pub device_audit_suppressed: Counter,
    pub https_handshake_failures: Counter,
    pub feed_records_imported: Counter,
    pub feed_records_duplicate: Counter,
    pub feed_records_skipped: Counter,
    pub feed_alerts_raised: Counter,
    pub feed_imports_refused: Counter,
    pub alerts_correlated: Counter,
    pub alerts_clock_skewed: Counter,
    pub incidents_opened: Counter,
    pub incidents_merged: Counter,
    pub correlation_failures: Counter,
    pub correlation_backlog: Gauge,
    pub alert_to_incident: Histogram,
    /// Rule-context fields cut or dropped to fit their limits (`ward_detect::context`).
    pub rule_context_limited: Counter,
    /// Stateless Retry packets sent to unproven addresses under load.
    pub quic_retries: Counter,
    /// Agents' TLS session tickets opened: handshakes resumed without signatures.
    pub tls_resumptions: Counter,
    /// One entry per `[[export]]` sink, set once at start (`export::run`).
    pub export: std::sync::OnceLock<Vec<std::sync::Arc<SinkMetrics>>>,
}

/// One export sink's delivery figures.
#[derive(Debug, Default)]
pub struct SinkMetrics {
    pub name: String,
    /// Records in its spool.
    pub queued: Gauge,
    /// Age of its oldest spooled record, in milliseconds (0 when empty).
    pub oldest_age_ms: Gauge,
    pub sent: Counter,
    /// Delivery attempts that failed (each retried).
    pub failed: Counter,
    /// Records not spooled because its spool was full.
    pub dropped: Counter,
    /// Records the receiver refused as malformed (dropped: sending again cannot help).
    pub refused: Counter,
    /// What it is, for the console: `syslog-tls`, `webhook`, `splunk-hec`, `elasticsearch`...
    pub kind: String,
    /// How its records are written: `rfc5424`, `cef`, `ward`, `ocsf`, `ecs`...
    pub format: String,
    /// Whether its delivery task runs (a sender that cannot start leaves its records spooled).
    pub running: std::sync::atomic::AtomicBool,
    /// Delivery attempts that failed in a row (0 once one succeeds).
    pub failures_in_row: Gauge,
    /// When it last delivered, Unix ms (0: not since the collector started).
    pub last_sent_ms: Gauge,
    /// The last failure or refusal: when (Unix ms) and why, as logged.
    pub last_error: std::sync::Mutex<Option<(u64, String)>>,
}

impl SinkMetrics {
    /// Notes a failed or refused delivery (the console's "last error").
    pub fn note_error(&self, now_ms: u64, why: &str) {
        if let Ok(mut e) = self.last_error.lock() {
            *e = Some((now_ms, why.chars().take(500).collect()));
        }
    }

    /// Its state and figures now, as the API reports them.
    pub fn health(&self) -> SinkHealth {
        let failures_in_row = self.failures_in_row.get();
        let queued = self.queued.get();
        let state = if !self.running.load(Ordering::Relaxed) {
            "stopped"
        } else if failures_in_row > 0 {
            "retrying"
        } else if queued > 0 {
            "delivering"
        } else {
            "idle"
        };
        let last_error = self.last_error.lock().ok().and_then(|e| e.clone());
        SinkHealth {
            name: self.name.clone(),
            kind: self.kind.clone(),
            format: self.format.clone(),
            state,
            queued,
            oldest_unsent_age_ms: self.oldest_age_ms.get(),
            sent: self.sent.get(),
            failed: self.failed.get(),
            dropped: self.dropped.get(),
            refused: self.refused.get(),
            failures_in_row,
            last_sent_ms: Some(self.last_sent_ms.get()).filter(|t| *t > 0),
            last_error_ms: last_error.as_ref().map(|e| e.0),
            last_error: last_error.map(|e| e.1),
        }
    }
}

/// One export sink's health: `running` false is `stopped`; failures in a row make
/// it `retrying`; else `delivering` while records wait, `idle` when none do.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SinkHealth {
    pub name: String,
    pub kind: String,
    pub format: String,
    pub state: &'static str,
    pub queued: u64,
    pub oldest_unsent_age_ms: u64,
    pub sent: u64,
    pub failed: u64,
    pub dropped: u64,
    pub refused: u64,
    pub failures_in_row: u64,
    pub last_sent_ms: Option<u64>,
    pub last_error_ms: Option<u64>,
    pub last_error: Option<String>,
}

impl Metrics {
    pub fn reject(&self, reason: &str) {
        if let Some(i) = REJECT_REASONS.iter().position(|r| *r == reason) {
            self.rejected[i].inc();
        }
    }

    /// A message of `kind` delayed by its device's budget (alert batches keep
    /// their own counter).
    pub fn throttled(&self, kind: &str) {
        if kind == "alerts" {
            self.throttled_batches.inc();
        } else if let Some(i) = THROTTLED_KINDS.iter().position(|k| *k == kind) {
            self.throttled_messages[i].inc();
        }
    }

    pub fn rejected(&self, reason: &str) -> u64 {
        REJECT_REASONS
            .iter()
            .position(|r| *r == reason)
            .map(|i| self.rejected[i].get())
            .unwrap_or(0)
    }

    /// The export sinks' figures, labelled by sink.
    fn render_export(&self, out: &mut String) {
        let sinks = self.export.get().map(Vec::as_slice).unwrap_or_default();
        type Get = fn(&SinkMetrics) -> u64;
        let rows: [(&str, &str, &str, Get); 6] = [
            (
                "ward_export_queued",
                "gauge",
                "Records waiting in an export sink's spool.",
                |m| m.queued.get(),
            ),
            (
                "ward_export_oldest_age_seconds",
                "gauge",
                "Age of the oldest record in an export sink's spool (0 when empty).",
                |m| m.oldest_age_ms.get() / 1000,
            ),
            (
                "ward_export_sent_total",
                "counter",
                "Records an export sink delivered.",
                |m| m.sent.get(),
            ),
            (
                "ward_export_failed_total",
                "counter",
                "Delivery attempts of an export sink that failed (retried with back-off).",
                |m| m.failed.get(),
            ),
            (
                "ward_export_dropped_total",
                "counter",
                "Records an export sink did not take because its spool was full.",
                |m| m.dropped.get(),
            ),
            (
                "ward_export_refused_total",
                "counter",
                "Records an export sink's receiver refused as malformed (dropped).",
                |m| m.refused.get(),
            ),
        ];
        for (name, kind, help, get) in rows {
            let _ = write!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n");
            for m in sinks {
                let _ = writeln!(out, "{name}{{sink=\"{}\"}} {}", m.name, get(m));
            }
        }
    }

    /// Prometheus text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let mut counter = |name: &str, help: &str, v: u64| {
            let _ = write!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}\n");
        };
        counter(
            "ward_alerts_received_total",
            "Alerts received from agents.",
            self.alerts_received.get(),
        );
        counter(
            "ward_alerts_stored_total",
            "Alerts durably stored.",
            self.alerts_stored.get(),
        );
        counter(
            "ward_alerts_duplicate_total",
            "Alerts received again and not stored twice.",
            self.alerts_duplicate.get(),
        );
        counter(
            "ward_alerts_folded_total",
            "Alerts folded into a stored alert with the same device, rule and key entity (no new row).",
            self.alerts_folded.get(),
        );
        counter(
            "ward_identity_conflicts_total",
            "Connections that replaced a live connection of the same device.",
            self.identity_conflicts.get(),
        );
        counter(
            "ward_enrollments_accepted_total",
            "Devices enrolled.",
            self.enrollments_accepted.get(),
        );
        counter(
            "ward_enrollments_refused_total",
            "Enrollments refused.",
            self.enrollments_refused.get(),
        );
        counter(
            "ward_commit_failures_total",
            "Alert transactions that failed (batches not acknowledged).",
            self.commit_failures.get(),
        );
        counter(
            "ward_throttled_batches_total",
            "Batches delayed because their agent was over its rate.",
            self.throttled_batches.get(),
        );
        counter(
            "ward_quic_retries_total",
            "Stateless Retry packets sent to agents' addresses not proven yet, while many handshakes were in flight.",
            self.quic_retries.get(),
        );
        counter(
            "ward_tls_resumptions_total",
            "Agents' TLS session tickets accepted: reconnects resumed without a full handshake.",
            self.tls_resumptions.get(),
        );
        counter(
            "ward_https_handshake_failures_total",
            "API connections whose TLS handshake failed or timed out.",
            self.https_handshake_failures.get(),
        );
        counter(
            "ward_feed_records_imported_total",
            "Identity and mailbox feed records stored.",
            self.feed_records_imported.get(),
        );
        counter(
            "ward_feed_records_duplicate_total",
            "Feed records imported again and not stored twice.",
            self.feed_records_duplicate.get(),
        );
        counter(
            "ward_feed_records_skipped_total",
            "Feed records that could not be read (malformed, too large, incomplete).",
            self.feed_records_skipped.get(),
        );
        counter(
            "ward_feed_alerts_raised_total",
            "Alerts raised by the identity and mailbox feed detections.",
            self.feed_alerts_raised.get(),
        );
        counter(
            "ward_alerts_correlated_total",
            "Alerts correlated into incidents.",
            self.alerts_correlated.get(),
        );
        counter(
            "ward_alerts_clock_skewed_total",
            "Alerts observed further ahead of their arrival than correlation.max_clock_skew_ms, correlated at their arrival.",
            self.alerts_clock_skewed.get(),
        );
        counter(
            "ward_incidents_opened_total",
            "Incidents opened by correlation.",
            self.incidents_opened.get(),
        );
        counter(
            "ward_incidents_merged_total",
            "Incidents merged into another by a bridging alert.",
            self.incidents_merged.get(),
        );
        counter(
            "ward_correlation_failures_total",
            "Correlation steps that failed and were retried from the store.",
            self.correlation_failures.get(),
        );
        counter(
            "ward_feed_imports_refused_total",
            "Feed imports refused whole (too large, nothing readable).",
            self.feed_imports_refused.get(),
        );
        counter(
            "ward_device_audit_suppressed_total",
            "Audit rows a device's messages would have caused past its audit budget.",
            self.device_audit_suppressed.get(),
        );
        counter(
            "ward_rule_context_limited_total",
            "Rule-context fields cut or dropped to fit their limits.",
            self.rule_context_limited.get(),
        );
        let _ = write!(
            out,
            "# HELP ward_throttled_messages_total Heartbeats, drop reports and command results delayed because their device was over its budget, by kind.\n# TYPE ward_throttled_messages_total counter\n"
        );
        for (i, kind) in THROTTLED_KINDS.iter().enumerate() {
            let _ = writeln!(
                out,
                "ward_throttled_messages_total{{kind=\"{kind}\"}} {}",
                self.throttled_messages[i].get()
            );
        }
        let _ = write!(
            out,
            "# HELP ward_rejected_total Frames, alerts or connections refused, by reason.\n# TYPE ward_rejected_total counter\n"
        );
        for (i, reason) in REJECT_REASONS.iter().enumerate() {
            let _ = writeln!(
                out,
                "ward_rejected_total{{reason=\"{reason}\"}} {}",
                self.rejected[i].get()
            );
        }
        let _ = write!(
            out,
            "# HELP ward_connected_agents Agents with an open session.\n# TYPE ward_connected_agents gauge\nward_connected_agents {}\n",
            self.connected_agents.get()
        );
        let _ = write!(
            out,
            "# HELP ward_correlation_backlog_alerts Alerts stored and not yet correlated.\n# TYPE ward_correlation_backlog_alerts gauge\nward_correlation_backlog_alerts {}\n",
            self.correlation_backlog.get()
        );
        self.render_export(&mut out);
        self.batch_commit.render(
            &mut out,
            "ward_batch_commit_seconds",
            "Time to commit one round of alert batches.",
        );
        self.alert_to_incident.render(
            &mut out,
            "ward_alert_to_incident_seconds",
            "Time from an alert stored to its incident committed.",
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sinks_state_follows_its_delivery() {
        let m = SinkMetrics {
            name: "siem".into(),
            kind: "syslog-tls".into(),
            format: "cef".into(),
            ..Default::default()
        };
        assert_eq!(m.health().state, "stopped");
        m.running.store(true, Ordering::Relaxed);
        assert_eq!(m.health().state, "idle");
        m.queued.set(3);
        m.oldest_age_ms.set(4_000);
        assert_eq!(m.health().state, "delivering");
        m.failures_in_row.set(2);
        m.failed.add(2);
        m.note_error(1_000, &"x".repeat(600));
        let h = m.health();
        assert_eq!(
            (h.state, h.queued, h.oldest_unsent_age_ms, h.failed),
            ("retrying", 3, 4_000, 2)
        );
        assert_eq!(
            (h.last_error_ms, h.last_error.map(|e| e.len())),
            (Some(1_000), Some(500))
        );
        assert_eq!(h.last_sent_ms, None);
        m.failures_in_row.set(0);
        m.queued.set(0);
        m.last_sent_ms.set(2_000);
        let h = m.health();
        assert_eq!((h.state, h.last_sent_ms), ("idle", Some(2_000)));
    }

    /// docs/metrics.md explains every metric and every refusal reason to operators; a
    /// metric added here without a line there fails this test.
    #[test]
    fn every_metric_and_reason_is_documented() {
        let docs = include_str!("../../docs/metrics.md");
        let rendered = Metrics::default().render();
        let names: Vec<&str> = rendered
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.split_whitespace().next())
            .collect();
        assert!(names.len() >= 10, "render() lists its metrics: {names:?}");
        for name in names {
            assert!(
                docs.contains(&format!("`{name}`")),
                "docs/metrics.md does not explain {name}"
            );
        }
        for reason in REJECT_REASONS {
            assert!(
                docs.contains(&format!("| `{reason}` |")),
                "docs/metrics.md does not explain ward_rejected_total{{reason=\"{reason}\"}}"
            );
        }
    }
}
