//! Export: every stored alert and every incident change, offered to each sink
//! configured in `[[export]]` (syslog/CEF, webhooks, Splunk HEC, Elasticsearch).
//!
//! # Delivery (the specification)
//!
//! - **After the store.** The exporter tails what is already committed: alerts by
//!   rowid, incident links by alert rowid and incident activity by id
//!   ([`crate::store::ExportStore`]), woken after every writer round and once a
//!   second (commits of other processes: feed imports, the CLI). It never runs on
//!   the writer thread and never takes the collector database's write lock, so a
//!   sink never delays or fails ingest.
//! - **Spool.** Each read becomes records ([`record`]); each sink's filter picks
//!   its own, written in its format ([`sink::Encoding`]), and they are appended to
//!   the spool (`export.db` in the data dir, its own SQLite file, WAL,
//!   `synchronous=FULL`) *together with the stream positions read*, in one
//!   transaction: a crash before the commit reads the same entries again, a crash
//!   after it finds them spooled. On a new spool the positions start at the newest
//!   entries: sinks receive what is stored after export was first enabled.
//! - **Bounded.** A sink's spool holds at most `spool_max_records`. When full, new
//!   records for that sink are not spooled: they are counted
//!   (`ward_export_dropped_total`) and logged as errors, and the other sinks and
//!   ingest go on. What is already spooled is kept and delivered.
//! - **At least once, in order.** One task per sink sends its oldest records
//!   (`batch_records` at a time) and removes them only after the receiver took
//!   them (HTTP 2xx; syslog: written and flushed on the connection). A failure
//!   keeps them and retries the same records after a jittered exponential
//!   back-off ([`sink::backoff`]), so a sink delivers in spool order: records of
//!   one incident are never reordered, and a sink down for an hour catches up
//!   from where it stopped. A crash between delivery and removal sends records
//!   again: every record carries a stable id ([`record`]) for the receiver to
//!   drop repeats (`webhook-id`, Elasticsearch `_id`, the syslog structured data).
//!   A receiver that refuses records as malformed (HTTP 400, 413, 422, or a
//!   `_bulk` item error) has them dropped and counted (`ward_export_refused_total`):
//!   sending them again cannot help.
//! - **Gaps it cannot close.** UDP syslog has no acknowledgement: a datagram lost
//!   on the way is lost. Over TCP and TLS, bytes written into a connection the
//!   receiver dies on are lost with it (syslog has no application acknowledgement);
//!   the sender checks that the connection is still open before every delivery.
//!
//! The records and formats ([`record`], [`format`], [`syslog`], [`http`]) are pure;
//! [`send`] is the network; this module drives them. Export reads the store and
//! knows nothing of correlation's or the workflow's rules.

pub mod format;
pub mod http;
pub mod record;
pub mod send;
pub mod sink;
pub mod syslog;

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ring::rand::SecureRandom;
use tokio::sync::{Notify, watch};
use tracing::{error, info, warn};

use crate::metrics::{Metrics, SinkMetrics};
use crate::readpool::ReadPool;
use crate::store::prelude::*;
use crate::store::{NewSpooled, Spool, StoreError};
use crate::util::now_ms;
pub use sink::{Sink, check_all as check_config};

/// The spool's file in the data dir.
pub const SPOOL_FILE: &str = "export.db";

/// Entries of each stream read in one step.
const READ_LIMIT: u32 = 2_000;

/// How often the exporter looks for commits of other processes, and how often an
/// idle sink looks at its spool.
const POLL: Duration = Duration::from_secs(1);

type SharedSpool = Arc<Mutex<Spool>>;

async fn with_spool<R: Send + 'static>(
    spool: &SharedSpool,
    f: impl FnOnce(&mut Spool) -> Result<R, StoreError> + Send + 'static,
) -> Result<R, StoreError> {
    let spool = Arc::clone(spool);
    tokio::task::spawn_blocking(move || {
        let mut guard = spool
            .lock()
            .map_err(|_| StoreError::Corrupt("export spool poisoned".into()))?;
        f(&mut guard)
    })
    .await
    .map_err(|e| StoreError::Corrupt(format!("export spool task: {e}")))?
}

/// The exporter, ready to run: the sinks and their spool.
pub struct Exporter {
    sinks: Arc<Vec<Sink>>,
    spool: SharedSpool,
    metrics: Vec<Arc<SinkMetrics>>,
    wake: Vec<Arc<Notify>>,
    hostname: Arc<str>,
}

impl std::fmt::Debug for Exporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Exporter").field("sinks", &self.sinks.len()).finish()
    }
}

impl Exporter {
    /// Opens the spool (records of sinks no longer configured are removed, and
    /// said so) and registers the sinks' metrics. `hostname` names this collector
    /// in syslog headers and HEC events.
    /// Without sinks there is nothing to run (`None`), and no spool file is created.
    pub fn open(
        data_dir: &Path,
        sinks: Vec<Sink>,
        hostname: &str,
        metrics: &Metrics,
    ) -> Result<Option<Exporter>, StoreError> {
        let path = data_dir.join(SPOOL_FILE);
        if sinks.is_empty() && !path.exists() {
            return Ok(None);
        }
        let mut spool = Spool::open(&path)?;
        let names: Vec<String> = sinks.iter().map(|s| s.name.clone()).collect();
        for (sink, n) in spool.spool_forget_others(&names)? {
            warn!(
                sink,
                records = n,
                "export sink no longer configured: its spooled records were removed"
            );
        }
        let per_sink: Vec<Arc<SinkMetrics>> = sinks
            .iter()
            .map(|s| {
                Arc::new(SinkMetrics {
                    name: s.name.clone(),
                    kind: s.destination.label().into(),
                    format: s.encoding.label().into(),
                    ..Default::default()
                })
            })
            .collect();
        for (s, m) in sinks.iter().zip(&per_sink) {
            let (queued, _) = spool.spool_depth(&s.name)?;
            m.queued.set(queued);
        }
        let _ = metrics.export.set(per_sink.clone());
        if sinks.is_empty() {
            return Ok(None);
        }
        Ok(Some(Exporter {
            wake: sinks.iter().map(|_| Arc::new(Notify::new())).collect(),
            sinks: Arc::new(sinks),
            spool: Arc::new(Mutex::new(spool)),
            metrics: per_sink,
            hostname: hostname.into(),
        }))
    }

    /// Runs the tail and one delivery task per sink until `shutdown` flips.
    /// `rounds` changes after every writer round.
    pub async fn run(self, reads: ReadPool, rounds: watch::Receiver<u64>, shutdown: watch::Receiver<bool>) {
        info!(sinks = self.sinks.len(), "export sinks configured");
        let mut tasks = Vec::new();
        for (i, sink) in self.sinks.iter().enumerate() {
            let sender = match send::Sender::new(sink.destination.clone(), sink.timeout) {
                Ok(s) => s,
                Err(e) => {
                    error!(sink = %sink.name, error = %e, "export sink cannot start; its records stay spooled");
                    self.metrics[i].note_error(now_ms(), &format!("cannot start: {e}"));
                    continue;
                }
            };
            self.metrics[i]
                .running
                .store(true, std::sync::atomic::Ordering::Relaxed);
            tasks.push(tokio::spawn(deliver(
                sink.clone(),
                sender,
                Arc::clone(&self.spool),
                Arc::clone(&self.metrics[i]),
                Arc::clone(&self.wake[i]),
                shutdown.clone(),
            )));
        }
        tail(self, reads, rounds, shutdown).await;
        for t in tasks {
            let _ = t.await;
        }
    }
}

/// Reads what was stored since the last step and spools each sink's records;
/// true when there may be more to read at once.
async fn step(ex: &Exporter, reads: &ReadPool) -> Result<bool, StoreError> {
    let Some(from) = with_spool(&ex.spool, |s| s.spool_marks()).await? else {
        let newest = reads.run(|s| s.export_newest()).await??;
        with_spool(&ex.spool, move |s| s.spool_append(&[], newest, &[], now_ms())).await?;
        info!(
            alert = newest.alert,
            link = newest.link,
            activity = newest.activity,
            "export spool created: sinks receive what is stored from now on"
        );
        return Ok(false);
    };
    let batch = reads.run(move |s| s.export_read(from, READ_LIMIT)).await??;
    let full = [batch.alerts.len(), batch.links.len(), batch.activity.len()]
        .iter()
        .any(|n| *n as u32 >= READ_LIMIT);
    let marks = batch.marks;
    if marks == from {
        return Ok(false);
    }
    let sinks = Arc::clone(&ex.sinks);
    let hostname = Arc::clone(&ex.hostname);
    let caps: Vec<(String, u64)> = sinks.iter().map(|s| (s.name.clone(), s.spool_max_records)).collect();
    let gauges = ex.metrics.clone();
    let appended = with_spool(&ex.spool, move |s| {
        // Writing the records is CPU work: it runs here, off the async threads.
        let records = record::records(batch);
        let mut spooled = Vec::new();
        for r in &records {
            for sink in sinks.iter().filter(|k| k.filter.passes(r)) {
                spooled.push(NewSpooled {
                    sink: sink.name.clone(),
                    id: r.id().to_string(),
                    body: sink.encoding.encode(r, &hostname),
                });
            }
        }
        let appended = s.spool_append(&spooled, marks, &caps, now_ms())?;
        // Set under the spool's lock, so a delivery's update cannot be overtaken.
        for (sink, g) in caps.iter().zip(&gauges) {
            g.queued.set(s.spool_depth(&sink.0)?.0);
        }
        Ok(appended)
    })
    .await?;
    for (i, (sink, added, refused)) in appended.per_sink.iter().enumerate() {
        let m = &ex.metrics[i];
        if *added > 0 {
            ex.wake[i].notify_one();
        }
        if *refused > 0 {
            m.dropped.add(*refused);
            error!(
                sink,
                dropped = refused,
                max = ex.sinks[i].spool_max_records,
                "export spool full: records for this sink were dropped (its receiver is down or too slow; see docs/export.md)"
            );
        }
    }
    Ok(full)
}

async fn tail(ex: Exporter, reads: ReadPool, mut rounds: watch::Receiver<u64>, mut shutdown: watch::Receiver<bool>) {
    let mut failing = false;
    loop {
        let more = match step(&ex, &reads).await {
            Ok(more) => {
                if failing {
                    info!("export spool works again");
                    failing = false;
                }
                more
            }
            Err(e) => {
                // Nothing is lost: the stream positions did not move.
                if !failing {
                    error!(error = %e, "export spool failed; retrying every second");
                    failing = true;
                }
                false
            }
        };
        if more {
            continue;
        }
        tokio::select! {
            _ = rounds.changed() => {}
            _ = tokio::time::sleep(POLL) => {}
            _ = shutdown.changed() => return,
        }
        if *shutdown.borrow() {
            return;
        }
    }
}

/// Removes a sink's records through `seq` and sets its queue gauge, under the lock.
async fn ack(spool: &SharedSpool, sink: &str, seq: i64, m: &Arc<SinkMetrics>) -> Result<(), StoreError> {
    let (name, m) = (sink.to_string(), Arc::clone(m));
    with_spool(spool, move |s| {
        s.spool_ack(&name, seq)?;
        m.queued.set(s.spool_depth(&name)?.0);
        Ok(())
    })
    .await
}

fn random_u64() -> u64 {
    let mut b = [0u8; 8];
    let _ = ring::rand::SystemRandom::new().fill(&mut b);
    u64::from_le_bytes(b)
}

/// Delivers one sink's spool, oldest first, until `shutdown` flips.
async fn deliver(
    sink: Sink,
    mut sender: send::Sender,
    spool: SharedSpool,
    m: Arc<SinkMetrics>,
    wake: Arc<Notify>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut failures: u32 = 0;
    loop {
        if *shutdown.borrow() {
            return;
        }
        let name = sink.name.clone();
        let limit = sink.batch_records;
        let gauge = Arc::clone(&m);
        let peeked = with_spool(&spool, move |s| {
            let depth = s.spool_depth(&name)?;
            gauge.queued.set(depth.0);
            Ok((s.spool_peek(&name, limit)?, depth))
        })
        .await;
        let (records, (queued, oldest)) = match peeked {
            Ok(p) => p,
            Err(e) => {
                error!(sink = %sink.name, error = %e, "export spool unreadable; retrying");
                (Vec::new(), (m.queued.get(), None))
            }
        };
        m.oldest_age_ms.set(oldest.map_or(0, |t| now_ms().saturating_sub(t)));
        let Some(last) = records.last().map(|r| r.seq) else {
            tokio::select! {
                _ = wake.notified() => {}
                _ = tokio::time::sleep(POLL) => {}
                _ = shutdown.changed() => {}
            }
            continue;
        };
        let n = records.len() as u64;
        // A webhook sends one request per record, each with its own time limit.
        let limit = if sender.per_record() {
            sink.timeout * records.len() as u32
        } else {
            sink.timeout
        };
        let outcome = tokio::time::timeout(limit, sender.send(&records, now_ms() / 1000)).await;
        let outcome = match outcome {
            Ok(r) => r,
            Err(_) => Err(send::SendError::Retry(format!("no answer within {limit:?}"))),
        };
        // Records the receiver took before a failure are done with (webhooks).
        let taken = if outcome.is_err() {
            sender.delivered_before_failure().min(records.len())
        } else {
            0
        };
        if taken > 0 {
            m.sent.add(taken as u64);
            m.last_sent_ms.set(now_ms());
            if let Err(e) = ack(&spool, &sink.name, records[taken - 1].seq, &m).await {
                error!(sink = %sink.name, error = %e, "cannot remove delivered records from the export spool");
            }
        }
        match outcome {
            Ok(()) => {
                m.sent.add(n);
                m.last_sent_ms.set(now_ms());
                m.failures_in_row.set(0);
                if let Err(e) = ack(&spool, &sink.name, last, &m).await {
                    // They stay spooled and go again: at least once.
                    error!(sink = %sink.name, error = %e, "cannot remove delivered records from the export spool");
                }
                if failures > 0 {
                    info!(sink = %sink.name, after_failures = failures, "export sink delivers again");
                }
                failures = 0;
            }
            Err(send::SendError::Refused(why)) => {
                // A webhook's refusal is of one record (the next after those taken);
                // a batch's, of the whole batch.
                let upto = if sender.per_record() { taken } else { records.len() - 1 };
                let dropped = (upto + 1 - taken) as u64;
                m.refused.add(dropped);
                m.failures_in_row.set(0);
                m.note_error(now_ms(), &format!("refused by the receiver: {why}"));
                error!(sink = %sink.name, records = dropped, first = %records[taken].id, %why, "export receiver refused records; dropped");
                if let Err(e) = ack(&spool, &sink.name, records[upto].seq, &m).await {
                    error!(sink = %sink.name, error = %e, "cannot remove refused records from the export spool");
                }
                failures = 0;
            }
            Err(send::SendError::Retry(why)) => {
                failures = failures.saturating_add(1);
                m.failed.inc();
                m.failures_in_row.set(u64::from(failures));
                m.note_error(now_ms(), &why);
                let wait = sink::backoff(sink.retry_initial, sink.retry_max, failures, random_u64());
                // Loud once, then at every tenth failure in a row.
                if failures == 1 || failures.is_multiple_of(10) {
                    warn!(sink = %sink.name, error = %why, failures, queued, retry_in_ms = wait.as_millis() as u64, "export delivery failed; records kept");
                }
                let name = sink.name.clone();
                let _ = with_spool(&spool, move |s| s.spool_failed(&name, last)).await;
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = shutdown.changed() => {}
                }
            }
        }
    }
}
