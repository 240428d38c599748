//! Isolation control: carries out isolate and release commands (planning the rule
//! set's addresses: the collector's and the exceptions' names resolved now, the
//! system's resolvers), owns the guard of an applied isolation, re-asserts it between
//! commands and raises the tamper alert when the table was removed or changed.

use std::path::Path;
use std::sync::Arc;

use tracing::warn;
use ward_detect::{AggregatedDetection, Detection};
use ward_protocol::{Action, Command, CommandId, CommandOutcome};

use super::isolate::{self, AllowEntry, Guard, IsolationPlan, Nft, Reassert, SelfTest};
use crate::alert::AlertBuilder;
use crate::clock::now_ms;
use crate::identity::Identity;
use crate::shared::Shared;

/// What isolation needs besides the command.
pub struct IsolationControl {
    pub identity: Identity,
    pub nft: Nft,
    pub guard: Option<Guard>,
    pub self_test: SelfTest,
    pub shared: Arc<Shared>,
    /// Raises the tamper alert.
    pub alerts: AlertBuilder,
}

impl IsolationControl {
    pub(super) async fn execute(
        &mut self,
        state_dir: &Path,
        command: &Command,
    ) -> (CommandOutcome, String, Option<Vec<u8>>) {
        let outcome = match &command.action {
            Action::Isolate { allow } => self.isolate(state_dir, command.id, allow).await,
            _ => {
                let nft = self.nft.clone();
                let dir = state_dir.to_path_buf();
                match tokio::task::spawn_blocking(move || isolate::release(&dir, &nft)).await {
                    Ok(Ok(())) => {
                        self.guard = None;
                        self.set_state("none");
                        Ok("released: Ward's isolation table removed".to_string())
                    }
                    Ok(Err(e)) => Err(e.to_string()),
                    Err(e) => Err(e.to_string()),
                }
            }
        };
        match outcome {
            Ok(detail) => (CommandOutcome::Succeeded, detail, None),
            Err(reason) => (CommandOutcome::Failed { reason: reason.clone() }, reason, None),
        }
    }

    async fn isolate(&mut self, state_dir: &Path, id: CommandId, allow: &[String]) -> Result<String, String> {
        let plan = plan(&self.identity.enrollment.collector_addr, allow).await?;
        let identity = &self.identity;
        let probe = || async move { crate::link::probe(identity).await.map(|_| ()) };
        match isolate::isolate(state_dir, &self.nft, plan, Some(id), now_ms(), &self.self_test, probe).await {
            Ok(isolated) => {
                let detail = format!(
                    "isolated; collector round trip {} ms after applying; blocked-address probe: {:?}",
                    isolated.report.collector_round_trip.as_millis(),
                    isolated.report.blocked
                );
                self.guard = Some(isolated.guard);
                self.set_state("isolated");
                Ok(detail)
            }
            Err(e) => {
                if let Ok(Some(state)) = isolate::IsolationState::load(state_dir) {
                    self.set_state(if state.isolated { "isolated" } else { "none" });
                }
                Err(e.to_string())
            }
        }
    }

    fn set_state(&self, state: &str) {
        if let Ok(mut s) = self.shared.status.lock() {
            s.isolation = state.to_string();
        }
    }

    /// Puts the rule set back if it was removed or changed, and raises an alert.
    pub fn reassert(&mut self) {
        let Some(guard) = self.guard.as_mut() else { return };
        match guard.reassert() {
            Ok(Reassert::Tampered(status)) => {
                warn!(?status, "isolation rule set was tampered with; restored");
                self.tamper_alert(&format!("{status:?}"));
            }
            Ok(Reassert::Released) => {
                // Released from outside (break-glass at the console): stop guarding.
                self.guard = None;
                self.set_state("none");
            }
            Ok(Reassert::Intact) => {}
            Err(e) => warn!(error = %e, "cannot re-assert isolation"),
        }
    }

    fn tamper_alert(&self, status: &str) {
        let now = now_ms();
        let detection = Detection {
            rule: ward_protocol::RuleRef {
                id: "ward-isolation-tamper".into(),
                title: "Ward network isolation removed or changed on an isolated device".into(),
                author: "Ward".into(),
                severity: ward_protocol::Severity::High,
                techniques: vec!["T1562.004".into()],
                tactics: vec!["TA0005".into()],
            },
            entities: vec![],
            matched: vec![ward_protocol::MatchedField {
                name: "nft_table_status".into(),
                value: status.into(),
            }],
            observed_at_ms: now,
        };
        let agg = AggregatedDetection {
            detection,
            count: 1,
            first_observed_ms: now,
            last_observed_ms: now,
        };
        if let Ok(mut outbox) = self.shared.outbox.lock() {
            self.alerts.store(&mut outbox, &agg);
        }
        self.shared.new_alerts.notify_one();
    }
}

/// The rule set's inputs: the collector's addresses (both families, pinned now),
/// the system's resolvers, and the exceptions (domains resolved now).
async fn plan(collector_addr: &str, allow: &[String]) -> Result<IsolationPlan, String> {
    let collector: Vec<std::net::SocketAddr> = tokio::net::lookup_host(collector_addr)
        .await
        .map_err(|e| format!("cannot resolve the collector {collector_addr}: {e}"))?
        .collect();
    let resolvers = std::fs::read_to_string("/etc/resolv.conf")
        .map(|text| {
            text.lines()
                .filter_map(|l| l.trim().strip_prefix("nameserver"))
                .filter_map(|a| a.trim().parse().ok())
                .collect()
        })
        .unwrap_or_default();
    let mut entries = Vec::new();
    for a in allow {
        let entry = AllowEntry::parse(a).map_err(|e| format!("exception {a:?}: {e}"))?;
        entries.push(match entry {
            AllowEntry::Domain { name, .. } => {
                let addrs = tokio::net::lookup_host((name.as_str(), 0))
                    .await
                    .map_err(|e| format!("cannot resolve exception {name}: {e}"))?
                    .map(|s| s.ip())
                    .collect();
                AllowEntry::Domain { name, addrs }
            }
            other => other,
        });
    }
    Ok(IsolationPlan {
        collector,
        resolvers,
        allow: entries,
        allow_dhcp: true,
    })
}
