//! Incidents: alerts from agents, the collector and the identity and mailbox feeds
//! correlated into incidents (see `engine` for the rules).
//!
//! The correlator tails the `alerts` table by rowid from a saved watermark, so it
//! sees alerts however they were written (agent ingest, feeds, the CLI in another
//! process). It runs on the single writer thread: each step reads the next alerts,
//! correlates them in memory and commits the incident changes together with the
//! new watermark, so a crash never leaves an alert half-correlated. Analyst changes
//! run on the same thread and reload the incidents they touch, so the engine always
//! matches the store, and a restart rebuilds the same state from it.

pub mod engine;
pub mod keys;
pub mod model;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ring::rand::SystemRandom;
use tokio::sync::watch;
use tracing::{debug, warn};
use ward_protocol::Id128;

use crate::ingest::Writer;
use crate::store::{CorrelationCounters, IncidentPatch, IncidentRefusal, Store, StoreError, StoredAlert};
use crate::util::now_ms;
use engine::{AlertIn, Engine, EngineConfig};
use keys::KeyContext;

/// Alerts correlated per writer task, so ingest waits at most one step.
pub const STEP_ALERTS: u32 = 2_000;

/// Correlation settings (`[correlation]` in the config).
#[derive(Debug, Clone)]
pub struct Settings {
    pub window_ms: u64,
    pub prevalence_threshold: usize,
    pub user_map: HashMap<String, Vec<String>>,
}

struct Running {
    engine: Engine,
    ctx: KeyContext,
    fingerprint: (i64, i64),
    watermark: i64,
}

/// The correlator: engine state behind a lock only the writer thread takes.
pub struct Correlator {
    settings: Settings,
    users: KeyContext,
    state: Mutex<Option<Running>>,
}

impl std::fmt::Debug for Correlator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Correlator").finish_non_exhaustive()
    }
}

/// An alert from the store as the engine takes it.
pub fn alert_in(ctx: &KeyContext, a: &StoredAlert) -> AlertIn {
    AlertIn {
        rowid: a.rowid,
        id: a.id.clone(),
        at_ms: a.at_ms,
        severity: a.severity,
        tactics: a.tactics.clone(),
        source: a.source.clone(),
        title: a.title.clone(),
        device: a.device_id.clone(),
        keys: ctx.keys(a.device_id.as_deref(), &a.entities),
    }
}

impl Correlator {
    pub fn new(settings: Settings) -> Arc<Correlator> {
        Arc::new(Correlator {
            users: KeyContext::new(settings.user_map.clone(), Vec::new()),
            settings,
            state: Mutex::new(None),
        })
    }

    fn engine_config(&self) -> EngineConfig {
        EngineConfig {
            window_ms: self.settings.window_ms,
            prevalence_threshold: self.settings.prevalence_threshold,
        }
    }

    /// The `user:` keys a user filter stands for (UPN or local account name).
    pub fn user_filter_keys(&self, name: &str) -> Vec<String> {
        self.users
            .local_users(name, None)
            .into_iter()
            .map(|u| format!("user:{u}"))
            .collect()
    }

    /// Loads the engine from the store: counters, prevalence, reachable open incidents.
    fn rebuild(&self, store: &Store) -> Result<Running, StoreError> {
        let counters = store.correlation_counters()?;
        let mut engine = Engine::new(self.engine_config());
        engine.restore_counters(counters.next_seq, counters.high_ms);
        for (key, devices) in store.key_prevalence()? {
            engine.load_prevalence(key, &devices);
        }
        for inc in store.open_incidents(engine.horizon_ms())? {
            engine.load(inc);
        }
        Ok(Running {
            engine,
            ctx: KeyContext::new(self.settings.user_map.clone(), store.known_devices()?),
            fingerprint: store.devices_fingerprint()?,
            watermark: counters.watermark,
        })
    }

    fn with_running<R>(
        &self,
        store: &mut Store,
        f: impl FnOnce(&mut Running, &mut Store) -> Result<R, StoreError>,
    ) -> Result<R, StoreError> {
        let mut guard = self
            .state
            .lock()
            .map_err(|_| StoreError::Corrupt("correlator state poisoned".into()))?;
        if guard.is_none() {
            *guard = Some(self.rebuild(store)?);
        }
        let Some(running) = guard.as_mut() else {
            return Err(StoreError::Corrupt("correlator state missing".into()));
        };
        let out = f(running, store);
        if out.is_err() {
            // The store may not hold what the engine decided: start again from the store.
            *guard = None;
        }
        out
    }

    /// Correlates up to `max` new alerts and commits the result; returns how many.
    /// Runs on the writer thread.
    pub fn step(&self, store: &mut Store, max: u32) -> Result<usize, StoreError> {
        self.with_running(store, |r, store| {
            let alerts = store.alerts_after(r.watermark, max)?;
            let Some(last) = alerts.last().map(|a| a.rowid) else {
                return Ok(0);
            };
            let fingerprint = store.devices_fingerprint()?;
            if fingerprint != r.fingerprint {
                r.ctx = KeyContext::new(self.settings.user_map.clone(), store.known_devices()?);
                r.fingerprint = fingerprint;
            }
            for a in &alerts {
                r.engine.correlate(&alert_in(&r.ctx, a));
            }
            let changes = r.engine.take_changes();
            let counters = CorrelationCounters {
                watermark: last,
                next_seq: r.engine.next_seq(),
                high_ms: r.engine.high_ms(),
            };
            store.apply_correlation(&changes, counters, now_ms())?;
            r.watermark = last;
            debug!(alerts = alerts.len(), incidents = changes.incidents.len(), "correlated");
            Ok(alerts.len())
        })
    }

    /// Rebuilds an incident's summary and keys from its alerts, saves it, and
    /// puts it back in the engine.
    fn replay(r: &mut Running, store: &mut Store, id: &str) -> Result<(), StoreError> {
        let Some(mut current) = store.load_incident(id)? else {
            r.engine.forget(id);
            return Ok(());
        };
        let alerts: Vec<AlertIn> = store
            .incident_stored_alerts(id)?
            .iter()
            .map(|a| alert_in(&r.ctx, a))
            .collect();
        if let Some(fresh) = Engine::replay(id.to_string(), current.seq, &alerts) {
            current = engine::Incident {
                status: current.status,
                assignee: current.assignee,
                classification: current.classification,
                ..fresh
            };
            store.replace_incident_state(&current, now_ms())?;
        }
        r.engine.load(current);
        Ok(())
    }

    /// An analyst's change (PATCH).
    pub fn patch(
        &self,
        store: &mut Store,
        id: &str,
        patch: &IncidentPatch,
        actor: &str,
    ) -> Result<Result<(), IncidentRefusal>, StoreError> {
        self.with_running(store, |r, store| {
            let out = store.patch_incident(id, patch, actor, now_ms())?;
            if out.is_ok() {
                match store.load_incident(id)? {
                    Some(inc) => r.engine.load(inc),
                    None => r.engine.forget(id),
                }
            }
            Ok(out)
        })
    }

    /// Merges incidents by hand.
    pub fn merge(
        &self,
        store: &mut Store,
        into: &str,
        from: &[String],
        actor: &str,
    ) -> Result<Result<(), IncidentRefusal>, StoreError> {
        self.with_running(store, |r, store| {
            let out = store.merge_incidents_by_hand(into, from, actor, now_ms())?;
            if out.is_ok() {
                for f in from {
                    r.engine.forget(f);
                }
                Self::replay(r, store, into)?;
            }
            Ok(out)
        })
    }

    /// Moves an alert to another incident, or to a new one (`to` = None); returns the destination.
    pub fn move_alert(
        &self,
        store: &mut Store,
        from: &str,
        alert_id: &str,
        to: Option<&str>,
        reason: &str,
        actor: &str,
    ) -> Result<Result<String, IncidentRefusal>, StoreError> {
        self.with_running(store, |r, store| {
            let now = now_ms();
            let new_id = Id128::generate(now, &SystemRandom::new())
                .map_err(|_| StoreError::Corrupt("no randomness for an incident id".into()))?
                .to_string();
            let seq = r.engine.take_seq();
            store.save_next_seq(r.engine.next_seq())?;
            let out = store.move_incident_alert(from, alert_id, to, (&new_id, seq), reason, actor, now)?;
            if let Ok(dest) = &out {
                Self::replay(r, store, from)?;
                Self::replay(r, store, dest)?;
            }
            Ok(out)
        })
    }
}

/// Tails the alerts table until shutdown: woken after alert commits and every second
/// (alerts written by another process, feed imports).
pub async fn run(correlator: Arc<Correlator>, writer: Writer, mut shutdown: watch::Receiver<bool>) {
    let wake = writer.alerts_committed();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = wake.notified() => {}
            _ = shutdown.changed() => return,
        }
        loop {
            let c = Arc::clone(&correlator);
            match writer.run(move |store| c.step(store, STEP_ALERTS)).await {
                Ok(Ok(n)) if n as u32 >= STEP_ALERTS => continue,
                Ok(Ok(_)) => break,
                Ok(Err(e)) => {
                    warn!(error = %e, "correlation step failed; retrying from the store");
                    break;
                }
                Err(_) => return,
            }
        }
    }
}
