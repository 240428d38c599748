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
//!
//! Steps go ahead of the writer's queue and are sized to take about
//! [`STEP_BUDGET`], so during an ingest burst correlation and ingest rounds
//! alternate. After a start the engine is loaded from a read-only snapshot off the
//! writer thread; analysts' changes made before it is in place go to the store and
//! are reloaded into it when it arrives.

pub mod engine;
pub mod keys;
pub mod severity;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ring::rand::SystemRandom;
use tokio::sync::watch;
use tracing::{debug, warn};
use ward_protocol::Id128;

use crate::ingest::Writer;
use crate::metrics::Metrics;
use crate::readpool::ReadPool;
use crate::store::prelude::*;
use crate::store::{CorrelationCounters, IncidentPatch, IncidentRefusal, Store, StoreError, StoredAlert};
use crate::util::now_ms;
use engine::{AlertIn, Changes, Engine, EngineConfig};
use keys::KeyContext;

/// Alerts in the first step, before steps are sized by their measured cost (and the
/// engine benchmark's batch).
pub const STEP_ALERTS: u32 = 2_000;

/// About how long one step holds the writer: every ingest round waits for at most
/// one step, and a long step spreads its commit and its rewrites of hot incident
/// pages over many alerts.
pub const STEP_BUDGET: Duration = Duration::from_millis(500);

/// Bounds of a step, whatever its measured cost per alert.
const STEP_MIN_ALERTS: u32 = 500;
const STEP_MAX_ALERTS: u32 = 50_000;

/// Correlation settings (`[correlation]` in the config).
#[derive(Debug, Clone)]
pub struct Settings {
    pub window_ms: u64,
    pub prevalence_threshold: usize,
    pub user_map: HashMap<String, Vec<String>>,
    /// An alert observed further than this ahead of its arrival is correlated at its arrival.
    pub max_clock_skew_ms: u64,
    pub device_proximity_ms: u64,
    pub max_span_ms: u64,
}

impl Settings {
    pub fn from_config(c: &crate::config::CorrelationConfig) -> Settings {
        Settings {
            window_ms: c.window_ms,
            prevalence_threshold: c.prevalence_threshold,
            user_map: c.user_map.clone(),
            max_clock_skew_ms: c.max_clock_skew_ms,
            device_proximity_ms: c.device_proximity_ms,
            max_span_ms: c.max_span_ms,
        }
    }
}

struct Running {
    engine: Engine,
    ctx: KeyContext,
    fingerprint: i64,
    watermark: i64,
}

/// The correlator: engine state behind a lock only the writer thread takes.
pub struct Correlator {
    settings: Settings,
    metrics: Arc<Metrics>,
    users: KeyContext,
    state: Mutex<Option<Running>>,
    /// Incidents analysts changed while no engine was running (taken under `state`).
    touched: Mutex<Vec<String>>,
    /// How long the last step waited for the write lock held by another process
    /// (nanoseconds): not the step's own cost, so steps are not sized by it.
    lock_wait_ns: AtomicU64,
}

/// An engine loaded off the writer thread, waiting to be installed there.
pub struct Prepared(Running);

impl std::fmt::Debug for Correlator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Correlator").finish_non_exhaustive()
    }
}

/// An alert from the store as the engine takes it. Its time is the one it was
/// observed at, unless that is more than `max_skew_ms` ahead of its arrival (the
/// collector's own clock): then the arrival, with a note saying why, so one device's
/// clock can never move correlation's.
pub fn alert_in(ctx: &KeyContext, a: StoredAlert, max_skew_ms: u64) -> AlertIn {
    let (at_ms, clock_note) = disciplined_time(a.at_ms, a.received_ms, max_skew_ms);
    AlertIn {
        keys: ctx.keys(a.device_id.as_deref(), &a.entities),
        rowid: a.rowid,
        id: a.id,
        at_ms,
        clock_note,
        severity: a.severity,
        tactics: a.tactics,
        source: a.source,
        title: a.title,
        device: a.device_id,
    }
}

/// The time to correlate an alert at, and why when it is not the observed one.
pub fn disciplined_time(observed_ms: u64, received_ms: u64, max_skew_ms: u64) -> (u64, Option<String>) {
    if observed_ms <= received_ms.saturating_add(max_skew_ms) {
        return (observed_ms, None);
    }
    let note = format!(
        "observed at {} by the device's clock, {} ahead of its arrival at the collector ({}); correlated and sorted at its arrival",
        crate::util::show_ms(observed_ms),
        engine::human(observed_ms - received_ms),
        crate::util::show_ms(received_ms),
    );
    (received_ms, Some(note))
}

impl Correlator {
    pub fn new(settings: Settings, metrics: Arc<Metrics>) -> Arc<Correlator> {
        Arc::new(Correlator {
            users: KeyContext::new(settings.user_map.clone(), Vec::new()),
            settings,
            metrics,
            state: Mutex::new(None),
            touched: Mutex::new(Vec::new()),
            lock_wait_ns: AtomicU64::new(0),
        })
    }

    fn is_running(&self) -> bool {
        self.state.lock().is_ok_and(|s| s.is_some())
    }

    /// Loads the engine from one snapshot of the store; for a read-only connection
    /// off the writer thread (about a second of CPU for a million alerts).
    pub fn prepare(&self, store: &Store) -> Result<Prepared, StoreError> {
        store.read_snapshot(|s| self.rebuild(s)).map(Prepared)
    }

    /// Puts a prepared engine in place (on the writer thread) with the incidents
    /// analysts changed since; false if an engine was rebuilt here meanwhile (it is newer).
    pub fn install(&self, store: &Store, prepared: Prepared) -> Result<bool, StoreError> {
        let mut guard = self
            .state
            .lock()
            .map_err(|_| StoreError::Corrupt("correlator state poisoned".into()))?;
        if guard.is_some() {
            return Ok(false);
        }
        let mut running = prepared.0;
        for id in self.take_touched() {
            Self::reload(&mut running, store, &id)?;
        }
        *guard = Some(running);
        Ok(true)
    }

    fn take_touched(&self) -> Vec<String> {
        self.touched
            .lock()
            .map(|mut t| std::mem::take(&mut *t))
            .unwrap_or_default()
    }

    /// Puts an incident back in the engine as the store has it.
    fn reload(r: &mut Running, store: &Store, id: &str) -> Result<(), StoreError> {
        match store.load_incident(id)? {
            Some(inc) => r.engine.load(inc),
            None => r.engine.forget(id),
        }
        Ok(())
    }

    fn engine_config(&self) -> EngineConfig {
        EngineConfig {
            window_ms: self.settings.window_ms,
            prevalence_threshold: self.settings.prevalence_threshold,
            proximity_ms: self.settings.device_proximity_ms,
            max_span_ms: self.settings.max_span_ms,
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

    fn key_context(&self, store: &Store) -> Result<KeyContext, StoreError> {
        Ok(KeyContext::new(self.settings.user_map.clone(), store.known_devices()?))
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
            ctx: self.key_context(store)?,
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
            // Everything analysts changed is in the store this reads.
            self.take_touched();
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
        self.lock_wait_ns.store(0, Ordering::Relaxed);
        self.with_running(store, |r, store| {
            let alerts = store.alerts_after(r.watermark, max)?;
            let Some(last) = alerts.last().map(|a| a.rowid) else {
                self.metrics.correlation_backlog.set(0);
                return Ok(0);
            };
            let fingerprint = store.devices_fingerprint()?;
            if fingerprint != r.fingerprint {
                r.ctx = self.key_context(store)?;
                r.fingerprint = fingerprint;
            }
            let received: Vec<u64> = alerts.iter().map(|a| a.received_ms).collect();
            let mut skewed = 0;
            for a in alerts {
                let a = alert_in(&r.ctx, a, self.settings.max_clock_skew_ms);
                skewed += u64::from(a.clock_note.is_some());
                if r.engine.needs_history(&a) {
                    // An old alert (backlog, backfill, replay): its incidents first.
                    let from = a.at_ms.saturating_sub(self.settings.window_ms);
                    let to = a.at_ms.saturating_add(self.settings.window_ms);
                    for inc in store.incidents_holding(&Engine::key_names(&a), from, to)? {
                        r.engine.load_history(inc);
                    }
                }
                r.engine.correlate(&a);
            }
            self.metrics.alerts_clock_skewed.add(skewed);
            let changes = r.engine.take_changes();
            let counters = CorrelationCounters {
                watermark: last,
                next_seq: r.engine.next_seq(),
                high_ms: r.engine.high_ms(),
            };
            let waited = store.apply_correlation(&changes, counters, now_ms())?;
            self.lock_wait_ns
                .store(u64::try_from(waited.as_nanos()).unwrap_or(u64::MAX), Ordering::Relaxed);
            r.watermark = last;
            let backlog = store.last_alert_rowid()?.saturating_sub(last);
            self.record(&changes, &received, backlog);
            debug!(
                alerts = received.len(),
                incidents = changes.incidents.len(),
                "correlated"
            );
            Ok(received.len())
        })
    }

    /// How long the last step waited for another process's write lock.
    pub fn last_lock_wait(&self) -> Duration {
        Duration::from_nanos(self.lock_wait_ns.load(Ordering::Relaxed))
    }

    fn record(&self, changes: &Changes, received: &[u64], backlog: i64) {
        let m = &self.metrics;
        let now = now_ms();
        m.alerts_correlated.add(received.len() as u64);
        m.incidents_opened
            .add(changes.links.iter().filter(|l| l.created).count() as u64);
        m.incidents_merged.add(changes.merges.len() as u64);
        for &at in received {
            m.alert_to_incident
                .observe(Duration::from_millis(now.saturating_sub(at)));
        }
        m.correlation_backlog.set(backlog.max(0) as u64);
    }

    /// Rebuilds an incident's summary and keys from its alerts, saves it, and
    /// puts it back in the engine.
    fn replay(&self, r: &mut Running, store: &mut Store, id: &str) -> Result<(), StoreError> {
        let Some(current) = store.load_incident(id)? else {
            r.engine.forget(id);
            return Ok(());
        };
        let alerts: Vec<AlertIn> = store
            .incident_stored_alerts(id)?
            .into_iter()
            .map(|a| alert_in(&r.ctx, a, self.settings.max_clock_skew_ms))
            .collect();
        if let Some(row) = r.engine.rebuild(current, &alerts) {
            store.replace_incident_state(&row, now_ms())?;
        }
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
        // A patch needs no engine: without one (just started), the store takes it and
        // the engine reloads the incident when it is installed.
        let mut guard = self
            .state
            .lock()
            .map_err(|_| StoreError::Corrupt("correlator state poisoned".into()))?;
        let out = store.patch_incident(id, patch, actor, now_ms()).and_then(|out| {
            if out.is_ok() {
                match guard.as_mut() {
                    Some(r) => Self::reload(r, store, id)?,
                    None => {
                        if let Ok(mut t) = self.touched.lock() {
                            t.push(id.to_string());
                        }
                    }
                }
            }
            Ok(out)
        });
        if out.is_err() {
            *guard = None;
        }
        out
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
                self.replay(r, store, into)?;
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
                self.replay(r, store, from)?;
                self.replay(r, store, dest)?;
            }
            Ok(out)
        })
    }
}

/// Sizes steps to take about [`STEP_BUDGET`] from what recent steps cost per alert.
#[derive(Debug)]
struct Pace {
    /// Smoothed writer time per alert; None before a step big enough to tell.
    per_alert: Option<Duration>,
}

impl Pace {
    fn step_alerts(&self) -> u32 {
        let Some(per) = self.per_alert else {
            return STEP_ALERTS;
        };
        let n = STEP_BUDGET.as_nanos() / per.as_nanos().max(1);
        u32::try_from(n)
            .unwrap_or(u32::MAX)
            .clamp(STEP_MIN_ALERTS, STEP_MAX_ALERTS)
    }

    fn record(&mut self, alerts: usize, took: Duration) {
        // Small steps are mostly the commit's fixed cost and say little per alert.
        if alerts < STEP_MIN_ALERTS as usize {
            return;
        }
        let sample = took / u32::try_from(alerts).unwrap_or(u32::MAX);
        self.per_alert = Some(match self.per_alert {
            Some(old) => (old * 3 + sample) / 4,
            None => sample,
        });
    }
}

/// Loads the engine on a read connection and installs it on the writer, which
/// serves ingest and analysts meanwhile. False if the writer stopped.
async fn prepare(correlator: &Arc<Correlator>, writer: &Writer, reads: &ReadPool) -> bool {
    let c = Arc::clone(correlator);
    let prepared = match reads.run(move |store| c.prepare(store)).await {
        Ok(Ok(p)) => p,
        Ok(Err(e)) | Err(e) => {
            // The step rebuilds on the writer instead.
            warn!(error = %e, "cannot load the correlation engine from a read connection");
            return true;
        }
    };
    let c = Arc::clone(correlator);
    match writer.run_next(move |store| c.install(store, prepared)).await {
        Ok(Ok(_)) => true,
        Ok(Err(e)) => {
            warn!(error = %e, "cannot install the correlation engine; rebuilding on the writer");
            true
        }
        Err(_) => false,
    }
}

/// Tails the alerts table until shutdown: woken after alert commits and every second
/// (alerts written by another process, feed imports).
pub async fn run(correlator: Arc<Correlator>, writer: Writer, reads: ReadPool, mut shutdown: watch::Receiver<bool>) {
    let wake = writer.alerts_committed();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut pace = Pace { per_alert: None };
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = wake.notified() => {}
            _ = shutdown.changed() => return,
        }
        if !correlator.is_running() && !prepare(&correlator, &writer, &reads).await {
            return;
        }
        loop {
            let c = Arc::clone(&correlator);
            let max = pace.step_alerts();
            let step = writer.run_next(move |store| {
                let started = Instant::now();
                (c.step(store, max), started.elapsed())
            });
            match step.await {
                Ok((Ok(n), took)) => {
                    // Waiting for another process's transaction is not the step's cost:
                    // counted, it shrank steps (more commits) while that process wrote.
                    pace.record(n, took.saturating_sub(correlator.last_lock_wait()));
                    if n as u32 >= max {
                        continue;
                    }
                    break;
                }
                Ok((Err(e), _)) => {
                    correlator.metrics.correlation_failures.inc();
                    warn!(error = %e, "correlation step failed; retrying from the store");
                    break;
                }
                Err(_) => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::incident::Status;
    use crate::store::{AlertSource, DeviceState, NewDevice, SourcedAlert};
    use std::collections::BTreeSet;
    use ward_protocol::{DeviceId, Entity, Inventory, PublicKey, RuleRef, Severity};

    const H: u64 = 3_600_000;

    fn settings() -> Settings {
        Settings {
            window_ms: 24 * H,
            prevalence_threshold: 3,
            user_map: HashMap::new(),
            max_clock_skew_ms: 5 * 60_000,
            device_proximity_ms: H / 2,
            max_span_ms: 72 * H,
        }
    }

    fn open(dir: &tempfile::TempDir) -> Store {
        Store::open(&dir.path().join("ward.db")).unwrap()
    }

    fn enroll(store: &mut Store, n: u8, hostname: &str, address: &str) -> String {
        let secret = [n; 32];
        store.create_enroll_token(&secret, 1, 0, u64::MAX / 2).unwrap();
        let id = DeviceId(ward_protocol::Id128::from_u128((u128::from(n) << 80) | 7));
        let device = NewDevice {
            id,
            signing_key: PublicKey([n; 32]),
            cert_sha256: [n; 32],
            inventory: Inventory {
                hostname: hostname.into(),
                os: "Linux".into(),
                kernel: "6".into(),
                addresses: vec![address.into()],
                logged_on_users: vec![],
                agent_version: "t".into(),
            },
        };
        store.enroll(&secret, &device, 1).unwrap().unwrap();
        id.to_string()
    }

    fn sourced(
        id: String,
        source: AlertSource,
        device: Option<&str>,
        at: u64,
        tactic: &str,
        entities: Vec<Entity>,
    ) -> SourcedAlert {
        SourcedAlert {
            id,
            source,
            device_id: device.map(str::to_string),
            observed_at_ms: at,
            last_observed_at_ms: at,
            rule: RuleRef {
                id: "r".into(),
                title: format!("rule {tactic}"),
                author: "tests".into(),
                severity: Severity::Medium,
                techniques: vec![],
                tactics: vec![tactic.into()],
            },
            entities,
            count: 1,
            matched: serde_json::Map::new(),
        }
    }

    fn user(name: &str) -> Entity {
        Entity::User {
            name: name.into(),
            uid: Some(1000),
        }
    }

    fn file(h: u8) -> Entity {
        Entity::File {
            path: format!("/tmp/{h}"),
            sha256: Some([h; 32]),
        }
    }

    fn drain(c: &Correlator, store: &mut Store) {
        while c.step(store, 7).unwrap() > 0 {}
    }

    /// A process tree: `pid` under a shell under sshd (the root).
    fn tree(pid: u64) -> Entity {
        let node = |pid: u64, exe: &str| ward_protocol::ProcessNode {
            pid: pid as u32,
            ppid: 1,
            start_time_ms: pid * 1_000,
            exe: exe.into(),
            cmdline: exe.into(),
            user: None,
            login_user: None,
        };
        Entity::Lineage {
            process: node(pid * 10, "/tmp/tool"),
            ancestors: vec![node(pid, "/usr/bin/bash"), node(1, "/usr/sbin/sshd")],
            rooted: true,
        }
    }

    /// A seeded mix of feed and device alerts over several days, so windows,
    /// prevalence, merges (through addresses), weak device ties, process trees and the
    /// reach horizon all come into play.
    fn story(devices: &[String]) -> Vec<SourcedAlert> {
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = |n: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % n
        };
        (0..400)
            .map(|i| {
                let at = 1_000 * H + i * H / 3 + next(H);
                let u = format!("user{}", next(12));
                let mut entities = vec![user(&u)];
                if next(3) == 0 {
                    entities.push(file(next(30) as u8));
                }
                if next(3) == 0 {
                    entities.push(tree(100 + next(8)));
                }
                if next(3) == 0 {
                    entities.push(Entity::Ip {
                        addr: format!("198.51.100.{}", next(12)).parse().unwrap(),
                    });
                }
                let tactic = ["TA0001", "TA0002", "TA0003", "TA0011"][next(4) as usize];
                // Every 100 alerts a bridge: a process tree on one device, an address
                // on another, then an alert of that tree naming that address.
                let bridge = |k: u64, on: usize| {
                    let d = &devices[(k as usize + on) % devices.len()];
                    let addr = Entity::Ip {
                        addr: format!("192.0.2.{k}").parse().unwrap(),
                    };
                    let entities = match i % 100 {
                        50 => vec![tree(900 + k)],
                        51 => vec![addr],
                        _ => vec![tree(900 + k), addr],
                    };
                    sourced(format!("s{i}"), AlertSource::Collector, Some(d), at, tactic, entities)
                };
                match i % 100 {
                    50 | 52 => return bridge(i / 100, 0),
                    51 => return bridge(i / 100, 1),
                    _ => {}
                }
                if next(4) == 0 {
                    entities = vec![
                        Entity::User {
                            name: format!("{u}@contoso.com"),
                            uid: None,
                        },
                        Entity::Ip {
                            addr: format!("203.0.113.{}", next(5)).parse().unwrap(),
                        },
                    ];
                    sourced(format!("s{i}"), AlertSource::Identity, None, at, tactic, entities)
                } else {
                    let d = &devices[next(devices.len() as u64) as usize];
                    sourced(format!("s{i}"), AlertSource::Collector, Some(d), at, tactic, entities)
                }
            })
            .collect()
    }

    fn outcome(store: &Store) -> Vec<(String, String, String)> {
        store
            .alerts_after(0, 10_000)
            .unwrap()
            .into_iter()
            .map(|a| {
                let inc = store.incident_alerts_of(&a.id).unwrap();
                (a.id, inc.0, inc.1)
            })
            .collect()
    }

    #[test]
    fn a_restart_gives_the_same_incidents() {
        let run = |restart_every: Option<usize>| {
            let dir = tempfile::tempdir().unwrap();
            let mut store = open(&dir);
            let devices: Vec<String> = (1..=6)
                .map(|n| enroll(&mut store, n, &format!("host{n}"), "10.0.0.1"))
                .collect();
            let alerts = story(&devices);
            let mut c = Correlator::new(settings(), Arc::default());
            for (i, chunk) in alerts.chunks(restart_every.unwrap_or(alerts.len())).enumerate() {
                store.insert_sourced_alerts(chunk, 5).unwrap();
                if i > 0 {
                    // A new process: only what the store holds.
                    drop(store);
                    store = open(&dir);
                    c = Correlator::new(settings(), Arc::default());
                }
                drain(&c, &mut store);
            }
            let incidents: Vec<_> = store
                .list_incidents(&IncidentFilterAll::all())
                .unwrap()
                .into_iter()
                .map(|s| (s.id, s.status, s.redirected_to, s.alert_count, s.title, s.severity))
                .collect();
            (outcome(&store), incidents)
        };
        let one = run(None);
        assert!(one.1.len() > 5 && one.1.len() < 300, "{} incidents", one.1.len());
        assert!(
            one.1.iter().any(|i| i.1 == "redirected"),
            "the story merges some incidents"
        );
        for every in [37, 100, 211] {
            let split = run(Some(every));
            assert_eq!(split.0, one.0, "links differ with a restart every {every} alerts");
            assert_eq!(split.1, one.1, "incidents differ with a restart every {every} alerts");
        }
    }

    #[test]
    fn a_changed_device_address_is_seen_by_the_next_alert() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = open(&dir);
        let laptop = enroll(&mut store, 1, "laptop", "10.0.0.5");
        let c = Correlator::new(settings(), Arc::default());
        let ip = |s: &str| Entity::Ip {
            addr: s.parse().unwrap(),
        };
        let shell = sourced(
            "a1".into(),
            AlertSource::Collector,
            Some(&laptop),
            10 * H,
            "TA0002",
            vec![],
        );
        store.insert_sourced_alerts(&[shell], 5).unwrap();
        drain(&c, &mut store);

        // DHCP gives the laptop another address of the same length; a heartbeat
        // without an inventory changes nothing.
        let id = laptop.parse::<DeviceId>().unwrap();
        let state = |inventory: Option<Inventory>| DeviceState {
            seen_at_ms: 11 * H,
            inventory,
            isolation: ward_protocol::IsolationState::None,
            outbox_depth: 0,
            rule_pack_version: 0,
            clock_skew_ms: 0,
        };
        let before = store.devices_fingerprint().unwrap();
        store.update_device_states(&[(id, state(None))]).unwrap();
        assert_eq!(store.devices_fingerprint().unwrap(), before);
        let moved = Inventory {
            hostname: "laptop".into(),
            os: "Linux".into(),
            kernel: "6".into(),
            addresses: vec!["10.0.0.9".into()],
            logged_on_users: vec![],
            agent_version: "t".into(),
        };
        store.update_device_states(&[(id, state(Some(moved)))]).unwrap();
        assert_ne!(store.devices_fingerprint().unwrap(), before);

        // A connection from the new address is the laptop.
        let ssh = sourced(
            "a2".into(),
            AlertSource::Collector,
            None,
            12 * H,
            "TA0008",
            vec![ip("10.0.0.9")],
        );
        store.insert_sourced_alerts(&[ssh], 5).unwrap();
        drain(&c, &mut store);
        let (inc1, _) = store.incident_alerts_of("a1").unwrap();
        let (inc2, reason) = store.incident_alerts_of("a2").unwrap();
        assert_eq!(inc1, inc2, "{reason}");
        assert!(reason.contains("the address of laptop"), "{reason}");
    }

    #[test]
    fn a_severity_raised_by_correlation_is_in_the_activity_log() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = open(&dir);
        let laptop = enroll(&mut store, 1, "laptop", "10.0.0.5");
        let c = Correlator::new(settings(), Arc::default());
        let signin = sourced(
            "a1".into(),
            AlertSource::Identity,
            None,
            10 * H,
            "TA0001",
            vec![user("ann")],
        );
        store.insert_sourced_alerts(&[signin], 1).unwrap();
        drain(&c, &mut store);
        let (id, _) = store.incident_alerts_of("a1").unwrap();
        let shell = sourced(
            "a2".into(),
            AlertSource::Collector,
            Some(&laptop),
            11 * H,
            "TA0002",
            vec![user("ann")],
        );
        store.insert_sourced_alerts(&[shell], 2).unwrap();
        drain(&c, &mut store);
        assert_eq!(store.incident_alerts_of("a2").unwrap().0, id);
        let raised: Vec<String> = store
            .incident_activity(&id)
            .unwrap()
            .into_iter()
            .filter(|a| a.kind == "severity_raised")
            .map(|a| a.detail)
            .collect();
        assert_eq!(
            raised,
            [
                "severity raised from medium to high: highest alert medium, raised because its alerts come from collector, identity"
            ]
        );
    }

    /// A step that waits for another process's write lock says how long, so the
    /// pace sizes steps by their own cost (counting the wait shrank them to a few
    /// hundred alerts while a feed import or the benchmark wrote).
    #[test]
    fn a_step_reports_how_long_it_waited_for_another_writer() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = open(&dir);
        let dev = enroll(&mut store, 1, "laptop", "10.0.0.5");
        let alerts: Vec<SourcedAlert> = (0..20)
            .map(|i| {
                sourced(
                    format!("a{i}"),
                    AlertSource::Collector,
                    Some(&dev),
                    1_000 + i,
                    "TA0002",
                    vec![user("alice")],
                )
            })
            .collect();
        store.insert_sourced_alerts(&alerts, 2_000).unwrap();
        let c = Correlator::new(settings(), Arc::new(Metrics::default()));
        let other = rusqlite::Connection::open(dir.path().join("ward.db")).unwrap();
        other.execute_batch("BEGIN IMMEDIATE").unwrap();
        let held = Duration::from_millis(300);
        let release = std::thread::spawn(move || {
            std::thread::sleep(held);
            other.execute_batch("COMMIT").unwrap();
        });
        assert_eq!(c.step(&mut store, 100).unwrap(), 20);
        release.join().unwrap();
        let waited = c.last_lock_wait();
        assert!(waited >= held / 2 && waited < Duration::from_secs(5), "{waited:?}");
        // With nobody else writing, the next step waits for nobody.
        store
            .insert_sourced_alerts(
                &[sourced(
                    "b".into(),
                    AlertSource::Collector,
                    Some(&dev),
                    3_000,
                    "TA0002",
                    vec![],
                )],
                4_000,
            )
            .unwrap();
        assert_eq!(c.step(&mut store, 100).unwrap(), 1);
        assert!(c.last_lock_wait() < held / 2, "{:?}", c.last_lock_wait());
    }

    #[test]
    fn steps_are_sized_to_the_budget_from_their_cost() {
        let mut pace = Pace { per_alert: None };
        assert_eq!(pace.step_alerts(), STEP_ALERTS);
        // A few alerts cost mostly the commit: they do not size the steps.
        pace.record(3, Duration::from_millis(30));
        assert_eq!(pace.step_alerts(), STEP_ALERTS);
        pace.record(2_000, Duration::from_millis(200));
        assert_eq!(pace.step_alerts(), 5_000);
        // Cheaper steps grow them, smoothed, up to the cap.
        pace.record(5_000, Duration::from_millis(100));
        assert_eq!(pace.step_alerts(), 6_250);
        for _ in 0..50 {
            pace.record(50_000, Duration::from_millis(1));
        }
        assert_eq!(pace.step_alerts(), STEP_MAX_ALERTS);
        for _ in 0..50 {
            pace.record(1_000, Duration::from_secs(20));
        }
        assert_eq!(pace.step_alerts(), STEP_MIN_ALERTS);
    }

    /// After a start the engine is loaded off the writer thread; an analyst's change
    /// made before it is installed is in it all the same.
    #[test]
    fn a_patch_before_the_engine_is_installed_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = open(&dir);
        let ann = |id: &str, at| sourced(id.into(), AlertSource::Identity, None, at, "TA0001", vec![user("ann")]);
        store.insert_sourced_alerts(&[ann("a1", 10 * H)], 1).unwrap();
        drain(&Correlator::new(settings(), Arc::default()), &mut store);
        let (id, _) = store.incident_alerts_of("a1").unwrap();

        // A restart: the snapshot is taken, then an analyst resolves the incident.
        let c = Correlator::new(settings(), Arc::default());
        let reader = Store::open_readonly(&dir.path().join("ward.db")).unwrap();
        let prepared = c.prepare(&reader).unwrap();
        let resolve = IncidentPatch {
            status: Some(Status::Resolved),
            ..Default::default()
        };
        c.patch(&mut store, &id, &resolve, "eve").unwrap().unwrap();
        assert!(!c.is_running(), "the patch did not wait for an engine");
        assert!(c.install(&store, prepared).unwrap());

        // A later alert of ann does not join the resolved incident.
        store.insert_sourced_alerts(&[ann("a2", 11 * H)], 2).unwrap();
        drain(&c, &mut store);
        assert_ne!(store.incident_alerts_of("a2").unwrap().0, id);
        // An engine rebuilt here first wins over one prepared before.
        let c = Correlator::new(settings(), Arc::default());
        let prepared = c.prepare(&reader).unwrap();
        drain(&c, &mut store);
        assert!(!c.install(&store, prepared).unwrap());
    }

    struct IncidentFilterAll;
    impl IncidentFilterAll {
        fn all() -> crate::store::IncidentFilter {
            crate::store::IncidentFilter {
                text: None,
                statuses: vec![Status::Active, Status::InProgress, Status::Resolved, Status::Redirected],
                since_ms: 0,
                limit: 10_000,
                ..Default::default()
            }
        }
    }

    #[test]
    fn a_bridge_merge_moves_comments_tags_and_activity() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = open(&dir);
        let c = Correlator::new(settings(), Arc::default());
        store
            .insert_sourced_alerts(
                &[
                    sourced(
                        "a1".into(),
                        AlertSource::Identity,
                        None,
                        10 * H,
                        "TA0001",
                        vec![
                            user("ann"),
                            Entity::Domain {
                                name: "evil.example".into(),
                            },
                        ],
                    ),
                    sourced(
                        "a2".into(),
                        AlertSource::Identity,
                        None,
                        11 * H,
                        "TA0002",
                        vec![Entity::Ip {
                            addr: "198.51.100.7".parse().unwrap(),
                        }],
                    ),
                ],
                1,
            )
            .unwrap();
        drain(&c, &mut store);
        let (older, _) = store.incident_alerts_of("a1").unwrap();
        let (newer, _) = store.incident_alerts_of("a2").unwrap();
        assert_ne!(older, newer);
        let patch = IncidentPatch {
            tags: Some(vec!["phish".into()]),
            status: Some(Status::InProgress),
            assignee: Some(Some("eve".into())),
            ..Default::default()
        };
        c.patch(&mut store, &newer, &patch, "eve").unwrap().unwrap();
        store
            .add_incident_comment(&newer, "C1", "look at this", "eve", 2)
            .unwrap()
            .unwrap();
        store
            .insert_sourced_alerts(
                &[sourced(
                    "a3".into(),
                    AlertSource::Identity,
                    None,
                    12 * H,
                    "TA0002",
                    vec![
                        user("ann"),
                        Entity::Domain {
                            name: "evil.example".into(),
                        },
                        Entity::Ip {
                            addr: "198.51.100.7".parse().unwrap(),
                        },
                    ],
                )],
                3,
            )
            .unwrap();
        drain(&c, &mut store);
        let (into, reason) = store.incident_alerts_of("a3").unwrap();
        assert_eq!(into, older, "the older incident survives");
        assert!(reason.contains(&format!("merged incident {newer}")), "{reason}");
        assert_eq!(store.incident_alerts_of("a2").unwrap().0, older, "alerts move along");
        let merged = store.incident_summary(&newer).unwrap().unwrap();
        assert_eq!(
            (merged.status.as_str(), merged.redirected_to.as_deref()),
            ("redirected", Some(older.as_str()))
        );
        let survivor = store.incident_summary(&older).unwrap().unwrap();
        assert_eq!(survivor.tags, ["phish"]);
        assert_eq!(survivor.alert_count, 3);
        // The unassigned survivor takes the triage, so eve's work is not lost.
        assert_eq!(
            (survivor.status.as_str(), survivor.assignee.as_deref()),
            ("in_progress", Some("eve"))
        );
        assert_eq!(store.incident_comments(&older).unwrap()[0].text, "look at this");
        let kinds: Vec<String> = store
            .incident_activity(&older)
            .unwrap()
            .into_iter()
            .map(|a| a.kind)
            .collect();
        assert!(
            ["tags", "merged", "triage_inherited"]
                .iter()
                .all(|k| kinds.contains(&k.to_string())),
            "{kinds:?}"
        );
        // Both incidents' openings are in the survivor's log, read from the
        // incidents (no activity row written for them).
        let log = store.incident_activity(&older).unwrap();
        let created: Vec<&str> = log
            .iter()
            .filter(|a| a.kind == "created")
            .map(|a| a.detail.as_str())
            .collect();
        assert_eq!(created.len(), 2, "{log:?}");
        assert!(created.iter().all(|d| d.starts_with("opened by alert ")), "{created:?}");
        assert_eq!(
            crate::store::sqlite::test_support::written_activity(&store, "created"),
            0
        );
    }

    #[test]
    fn analysts_merge_and_move_by_hand() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = open(&dir);
        let c = Correlator::new(settings(), Arc::default());
        store
            .insert_sourced_alerts(
                &[
                    sourced(
                        "b1".into(),
                        AlertSource::Mailbox,
                        None,
                        10 * H,
                        "TA0001",
                        vec![user("bob")],
                    ),
                    sourced(
                        "b2".into(),
                        AlertSource::Mailbox,
                        None,
                        10 * H + 5,
                        "TA0001",
                        vec![user("bob")],
                    ),
                    sourced(
                        "c1".into(),
                        AlertSource::Identity,
                        None,
                        11 * H,
                        "TA0006",
                        vec![user("carol")],
                    ),
                ],
                1,
            )
            .unwrap();
        drain(&c, &mut store);
        let (bob, _) = store.incident_alerts_of("b1").unwrap();
        let (carol, _) = store.incident_alerts_of("c1").unwrap();
        c.merge(&mut store, &bob, std::slice::from_ref(&carol), "eve")
            .unwrap()
            .unwrap();
        assert_eq!(store.incident_alerts_of("c1").unwrap().0, bob);
        let s = store.incident_summary(&bob).unwrap().unwrap();
        assert_eq!((s.alert_count, s.user_count), (3, 2));
        assert_eq!(s.tactics.len(), 2);
        // Merging a redirected incident is refused.
        let again = c.merge(&mut store, &bob, std::slice::from_ref(&carol), "eve").unwrap();
        assert!(matches!(again, Err(IncidentRefusal::Redirected(..))), "{again:?}");
        // Move an alert out into a new incident.
        let dest = c
            .move_alert(&mut store, &bob, "c1", None, "not related", "eve")
            .unwrap()
            .unwrap();
        assert_ne!(dest, bob);
        let (now_in, reason) = store.incident_alerts_of("c1").unwrap();
        assert_eq!(now_in, dest);
        assert_eq!(reason, format!("moved by eve from incident {bob}: not related"));
        assert_eq!(store.incident_summary(&bob).unwrap().unwrap().alert_count, 2);
        let moved = store.incident_summary(&dest).unwrap().unwrap();
        assert_eq!((moved.alert_count, moved.user_count), (1, 1));
        // A later carol alert joins the incident the alert was moved to.
        store
            .insert_sourced_alerts(
                &[sourced(
                    "c2".into(),
                    AlertSource::Identity,
                    None,
                    12 * H,
                    "TA0006",
                    vec![user("carol")],
                )],
                3,
            )
            .unwrap();
        drain(&c, &mut store);
        assert_eq!(store.incident_alerts_of("c2").unwrap().0, dest);

        // Both sides of each change say so in their activity logs.
        fn logged(store: &Store, id: &str, kind: &str, detail: &str) {
            let log: Vec<(String, String)> = store
                .incident_activity(id)
                .unwrap()
                .into_iter()
                .map(|a| (a.kind, a.detail))
                .collect();
            assert!(
                log.iter().any(|(k, d)| k == kind && d.contains(detail)),
                "{id} has no {kind} naming {detail}: {log:?}"
            );
        }
        logged(
            &store,
            &bob,
            "merged",
            &format!("incident {carol} merged into this one"),
        );
        logged(&store, &carol, "redirected", &format!("merged into incident {bob}"));
        logged(
            &store,
            &bob,
            "alert_moved",
            &format!("alert c1 moved to incident {dest}"),
        );
        logged(&store, &dest, "created", "opened by hand for alert c1");
        logged(
            &store,
            &dest,
            "alert_moved",
            &format!("alert c1 moved here from incident {bob}"),
        );

        // Moving the last alert out redirects the emptied incident, and its comments
        // and tags go along.
        store
            .add_incident_comment(&dest, "C9", "carol's laptop is clean", "eve", 4)
            .unwrap()
            .unwrap();
        let tag = IncidentPatch {
            tags: Some(vec!["carol".into()]),
            ..Default::default()
        };
        c.patch(&mut store, &dest, &tag, "eve").unwrap().unwrap();
        for alert in ["c1", "c2"] {
            c.move_alert(&mut store, &dest, alert, Some(&bob), "", "eve")
                .unwrap()
                .unwrap();
        }
        let emptied = store.incident_summary(&dest).unwrap().unwrap();
        assert_eq!(
            (emptied.status.as_str(), emptied.redirected_to.as_deref()),
            ("redirected", Some(bob.as_str()))
        );
        let survivor = store.incident_summary(&bob).unwrap().unwrap();
        assert!(survivor.tags.contains(&"carol".to_string()), "{:?}", survivor.tags);
        assert!(
            store
                .incident_comments(&bob)
                .unwrap()
                .iter()
                .any(|c| c.text == "carol's laptop is clean")
        );
        logged(
            &store,
            &dest,
            "redirected",
            &format!("merged into incident {bob}: its last alert c2 moved"),
        );
    }

    const NOW: u64 = 1_800_000_000_000;
    const YEAR: u64 = 365 * 24 * H;

    #[test]
    fn a_chain_dated_years_back_is_one_incident_on_a_busy_collector() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = open(&dir);
        let host = enroll(&mut store, 1, "web01", "10.0.0.5");
        let other = enroll(&mut store, 2, "web02", "10.0.0.6");
        // Today's alerts: many incidents, the newest time correlated is now.
        let current: Vec<SourcedAlert> = (0..300)
            .map(|i| {
                let d = if i % 2 == 0 { &host } else { &other };
                let entities = vec![user(&format!("u{}", i % 40)), file((i % 200) as u8)];
                sourced(
                    format!("now{i}"),
                    AlertSource::Collector,
                    Some(d),
                    NOW + i * 60_000,
                    "TA0002",
                    entities,
                )
            })
            .collect();
        store.insert_sourced_alerts(&current, NOW + 300 * 60_000).unwrap();
        let c = Correlator::new(settings(), Arc::default());
        drain(&c, &mut store);
        // A chain recorded three years ago, replayed now, one alert at a time with a
        // restart in the middle: every part joins the incident of its own time.
        let then = NOW - 3 * YEAR;
        let mut c = c;
        for k in 0..5u64 {
            let a = sourced(
                format!("old{k}"),
                AlertSource::Collector,
                Some(&host),
                then + k * 7 * 60_000,
                ["TA0001", "TA0002", "TA0007", "TA0011", "TA0010"][k as usize],
                vec![user("mallory")],
            );
            store.insert_sourced_alerts(&[a], NOW + H + k).unwrap();
            if k == 2 {
                c = Correlator::new(settings(), Arc::default());
            }
            drain(&c, &mut store);
        }
        let incidents: BTreeSet<String> = (0..5)
            .map(|k| store.incident_alerts_of(&format!("old{k}")).unwrap().0)
            .collect();
        assert_eq!(incidents.len(), 1, "{incidents:?}");
        let inc = store.incident_summary(incidents.first().unwrap()).unwrap().unwrap();
        assert_eq!((inc.alert_count, inc.tactics.len()), (5, 5));
        assert_eq!(inc.first_activity_ms, then as i64);
    }

    #[test]
    fn a_device_clock_years_ahead_moves_no_other_devices_incidents() {
        let run = |with_skewed: bool| {
            let dir = tempfile::tempdir().unwrap();
            let mut store = open(&dir);
            let fast = enroll(&mut store, 1, "fast", "10.0.0.5");
            let other = enroll(&mut store, 2, "other", "10.0.0.6");
            let metrics = Arc::new(Metrics::default());
            let c = Correlator::new(settings(), Arc::clone(&metrics));
            let mut ids = Vec::new();
            for k in 0..6u64 {
                let at = NOW + k * 5 * 60_000;
                if with_skewed {
                    let future = sourced(
                        format!("fast{k}"),
                        AlertSource::Collector,
                        Some(&fast),
                        at + 3 * YEAR,
                        "TA0002",
                        vec![user("fred")],
                    );
                    store.insert_sourced_alerts(&[future], at).unwrap();
                    drain(&c, &mut store);
                }
                let id = format!("other{k}");
                let a = sourced(
                    id.clone(),
                    AlertSource::Collector,
                    Some(&other),
                    at,
                    "TA0007",
                    vec![user("olga")],
                );
                store.insert_sourced_alerts(&[a], at + 1000).unwrap();
                drain(&c, &mut store);
                ids.push(store.incident_alerts_of(&id).unwrap().0);
            }
            let high = store.correlation_counters().unwrap().high_ms;
            (ids, high, metrics.alerts_clock_skewed.get(), store)
        };
        let (alone, _, _, _) = run(false);
        let (beside, high, skewed, store) = run(true);
        assert_eq!(alone, beside, "the other device's incidents are the same");
        assert_eq!(beside.iter().collect::<BTreeSet<_>>().len(), 1, "one incident for olga");
        assert!(
            high < NOW + 12 * H,
            "correlation's clock stayed with the collector's: {high}"
        );
        assert_eq!(skewed, 6);
        // The skewed alerts sit at their arrival, with the reason.
        let (fast_inc, _) = store.incident_alerts_of("fast0").unwrap();
        let query = crate::store::AlertPageQuery {
            order: crate::store::AlertOrder::Oldest,
            limit: 10,
            ..Default::default()
        };
        let alerts = store.incident_alert_page(&fast_inc, &query, None).unwrap().items;
        assert_eq!(alerts[0].correlated_at_ms, NOW as i64);
        let note = alerts[0].clock_note.as_deref().unwrap_or_default();
        assert!(note.contains("ahead of its arrival"), "{note}");
        assert_eq!(
            alerts[0].alert.observed_at_ms,
            (NOW + 3 * YEAR) as i64,
            "the claimed time is kept"
        );
    }
}
