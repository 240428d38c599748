//! `serve`: wires storage, ingest, the QUIC endpoint and the HTTP API together,
//! and shuts them down in order: stop reading, finish in-flight commits, close.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use thiserror::Error;
use tokio::sync::{Semaphore, watch};
use tracing::{info, warn};
use ward_protocol::message::close_code;
use ward_protocol::{DeviceId, SigningKey};

use crate::actions;
use crate::api::{self, ApiState};
use crate::config::Config;
use crate::ingest::{VerifyPool, Writer};
use crate::metrics::Metrics;
use crate::pki::{self, Ca};
use crate::readpool::ReadPool;
use crate::rule_context;
use crate::setup::{COMMAND_KEY, DB_FILE};
use crate::store::prelude::*;
use crate::transport::{self, Context, Registry, https, tickets, tls};
use crate::util::now_ms;

#[derive(Debug, Error)]
pub enum ServeError {
    #[error("{0}")]
    Setup(String),
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error(transparent)]
    Https(#[from] https::HttpsError),
}

fn setup<E: std::fmt::Display>(what: &str) -> impl FnOnce(E) -> ServeError + '_ {
    move |e| ServeError::Setup(format!("{what}: {e}"))
}

/// Where the server ended up listening (ports may have been 0 in the config).
#[derive(Debug, Clone, Copy)]
pub struct Bound {
    pub quic: SocketAddr,
    pub http: SocketAddr,
    /// The API is served over TLS (`tls_cert_pem` and `tls_key_pem` are set).
    pub https: bool,
}

/// The database would not open: when it was not checked yet, its check says
/// whether it is damaged (with the way out) before the open's own error is given.
fn opening_failed(data_dir: &Path, db: &Path, checked: bool, skip: bool, e: impl std::fmt::Display) -> ServeError {
    if !checked && let Err(damaged) = crate::integrity::check_now(data_dir, db, skip) {
        return ServeError::Setup(damaged);
    }
    ServeError::Setup(format!("database: {e}"))
}

/// Runs the collector until `shutdown` flips. `on_bound` is told the addresses.
pub async fn run(
    data_dir: &Path,
    config: Config,
    shutdown: watch::Receiver<bool>,
    on_bound: impl FnOnce(Bound),
) -> Result<(), ServeError> {
    tls::install_crypto_provider();
    // Load the API's certificate first: a bad file should stop us before anything opens.
    let https_config = match (&config.tls_cert_pem, &config.tls_key_pem) {
        (Some(cert), Some(key)) => Some(https::server_config(&data_dir.join(cert), &data_dir.join(key))?),
        _ => None,
    };
    // Export sinks are checked (and their CA files read) before anything opens.
    let export_sinks = crate::export::check_config(&config.export, data_dir).map_err(ServeError::Setup)?;
    let db = data_dir.join(DB_FILE);
    // Before listening only when an earlier check failed; otherwise beside serving.
    let checked_first = crate::integrity::check_before_serving(data_dir, &db, config.skip_integrity_check)
        .map_err(ServeError::Setup)?;
    let metrics = Arc::new(Metrics::default());
    let (writer, writer_thread) = Writer::start(
        &db,
        config.ingest.writer_max_batch_alerts,
        config.ingest.fold(),
        config.ingest.writer_cache_mib,
        Arc::clone(&metrics),
    )
    .map_err(|e| opening_failed(data_dir, &db, checked_first.is_some(), config.skip_integrity_check, e))?;
    let reads = ReadPool::open(&db, 4).map_err(setup("database"))?;
    let ca = Ca::load(data_dir).map_err(setup("CA"))?;
    let command_pkcs8 = std::fs::read(data_dir.join(COMMAND_KEY)).map_err(setup("command key"))?;
    let command_signer = SigningKey::from_pkcs8(&command_pkcs8).map_err(setup("command key"))?;
    let command_key = command_signer.public_key();
    let (chain, key) = pki::server_identity(data_dir).map_err(setup("server certificate"))?;
    let ticketer =
        tickets::PersistentTicketer::open(data_dir, Arc::clone(&metrics)).map_err(setup("TLS ticket keys"))?;
    let server_config = tls::server_config(chain, key, &ca.cert_der, Arc::new(ticketer)).map_err(setup("TLS"))?;

    let revoked_ids = reads
        .run(|s| s.revoked_devices())
        .await
        .map_err(setup("database"))?
        .map_err(setup("database"))?;
    let revoked: Arc<RwLock<HashSet<DeviceId>>> = Arc::new(RwLock::new(
        revoked_ids.iter().filter_map(|id| id.parse().ok()).collect(),
    ));
    let registry = Arc::new(Registry::default());
    let key_rollovers = reads
        .run(|s| s.key_rollovers())
        .await
        .map_err(setup("database"))?
        .map_err(setup("database"))?
        .iter()
        .map(|bytes| ward_protocol::codec::decode_body::<ward_protocol::Signed>(bytes))
        .collect::<Result<Vec<_>, _>>()
        .map_err(setup("stored key rollover"))?;

    let (endpoint, quic_addr) = transport::bind(
        transport::reset::endpoint_config(data_dir).map_err(setup("QUIC reset keys"))?,
        server_config,
        config.quic_listen,
        transport::SocketBuffers {
            recv_bytes: config.ingest.udp_recv_buffer_bytes as usize,
            send_bytes: config.ingest.udp_send_buffer_bytes as usize,
        },
    )
    .map_err(|source| ServeError::Bind {
        addr: config.quic_listen,
        source,
    })?;
    let listener = tokio::net::TcpListener::bind(config.http_listen)
        .await
        .map_err(|source| ServeError::Bind {
            addr: config.http_listen,
            source,
        })?;
    let http_addr = listener.local_addr().map_err(|source| ServeError::Bind {
        addr: config.http_listen,
        source,
    })?;

    let (policy, automation_rules) = actions::check_config(&config).map_err(ServeError::Setup)?;
    let deliveries = Arc::new(actions::delivery::Deliveries::new(
        reads.clone(),
        Arc::clone(&registry) as Arc<dyn actions::delivery::Outbound>,
        now_ms(),
    ));
    let dispatcher = Arc::new(actions::Dispatcher::new(
        writer.clone(),
        reads.clone(),
        Arc::clone(&deliveries),
        command_signer,
        policy,
    ));
    let correlator = crate::incidents::Correlator::new(
        crate::incidents::Settings::from_config(&config.correlation),
        Arc::clone(&metrics),
    );
    let api_state = ApiState {
        correlator: Arc::clone(&correlator),
        reads: reads.clone(),
        writer: writer.clone(),
        metrics: Arc::clone(&metrics),
        registry: Arc::clone(&registry),
        revoked: Arc::clone(&revoked),
        offline_after_ms: config.devices.offline_after_ms,
        actions: Arc::clone(&dispatcher),
        feeds: Arc::new(config.feeds.clone()),
    };
    let ctx = Arc::new(Context {
        verify: VerifyPool::start(config.ingest.verify_threads).map_err(setup("verify threads"))?,
        config: config.clone(),
        ca,
        command_key,
        writer: writer.clone(),
        reads: reads.clone(),
        metrics,
        registry: Arc::clone(&registry),
        deliveries,
        revoked: Arc::clone(&revoked),
        enroll_slots: Semaphore::new(16),
        admission: Default::default(),
        limits: Default::default(),
        heartbeats: Default::default(),
        key_rollovers,
        rule_pack: std::sync::RwLock::new(None),
    });
    drop(writer);
    record_shipped_rule_context(&ctx).await;

    let exporter = crate::export::Exporter::open(data_dir, export_sinks, &host_name(), &ctx.metrics)
        .map_err(setup("export spool"))?;
    if checked_first.is_none() {
        crate::integrity::check_beside_serving(data_dir, &db, config.skip_integrity_check)
            .map_err(setup("integrity check"))?;
    }
    info!(%quic_addr, %http_addr, "collector listening");
    on_bound(Bound {
        quic: quic_addr,
        http: http_addr,
        https: https_config.is_some(),
    });

    let expiry = tokio::spawn(actions::dispatch::run_expiry(
        ctx.writer.clone(),
        reads.clone(),
        shutdown.clone(),
    ));
    let silence = tokio::spawn(actions::silence::run_silence_watch(
        ctx.writer.clone(),
        reads.clone(),
        config.devices.offline_after_ms,
        shutdown.clone(),
    ));
    if !automation_rules.is_empty() {
        info!(rules = automation_rules.len(), "automation rules loaded");
    }
    let automation = tokio::spawn(actions::automation::run_automation(
        dispatcher,
        automation_rules,
        ctx.writer.rounds(),
        shutdown.clone(),
    ));
    let correlation = tokio::spawn(crate::incidents::run(
        correlator,
        ctx.writer.clone(),
        reads.clone(),
        shutdown.clone(),
    ));
    let export = exporter.map(|e| tokio::spawn(e.run(reads.clone(), ctx.writer.rounds(), shutdown.clone())));
    let heartbeats = tokio::spawn(transport::write_heartbeats(Arc::clone(&ctx), shutdown.clone()));
    let poller = tokio::spawn(poll_changes(
        reads,
        Arc::clone(&ctx),
        revoked,
        Duration::from_millis(config.devices.revocation_poll_ms),
        shutdown.clone(),
    ));
    let mut http_shutdown = shutdown.clone();
    // The client's address, for the API's logs of refused requests.
    let app = api::router(api_state).into_make_service_with_connect_info::<api::extract::Peer>();
    let stop = async move {
        let _ = http_shutdown.wait_for(|s| *s).await;
    };
    let http = match https_config {
        Some(tls) => {
            let listener = https::TlsListener::new(listener, http_addr, tls, Arc::clone(&ctx.metrics));
            tokio::spawn(async move {
                if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(stop).await {
                    warn!(error = %e, "HTTPS server stopped");
                }
            })
        }
        None => tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(stop).await {
                warn!(error = %e, "HTTP server stopped");
            }
        }),
    };

    transport::serve(endpoint, Arc::clone(&ctx), shutdown).await;
    let _ = heartbeats.await;
    transport::flush_heartbeats(&ctx).await;
    drop(ctx);
    let _ = tokio::time::timeout(Duration::from_secs(5), http).await;
    poller.abort();
    expiry.abort();
    silence.abort();
    automation.abort();
    let _ = automation.await;
    correlation.abort();
    let _ = correlation.await;
    let _ = expiry.await;
    let _ = silence.await;
    // Export stops at shutdown by itself; what it has not delivered stays spooled.
    if let Some(export) = export {
        let _ = tokio::time::timeout(Duration::from_secs(5), export).await;
    }
    // Every writer handle is gone now: the thread finishes what was queued and exits.
    let _ = tokio::task::spawn_blocking(move || writer_thread.join()).await;
    info!("collector stopped");
    Ok(())
}

/// This machine's name, for export records (syslog HOSTNAME, HEC host).
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "ward-collector".into())
}

/// Keeps the context of the shipped rules (descriptions, references... shown on
/// the alert page). A failure is logged: alerts then show what they carry.
async fn record_shipped_rule_context(ctx: &Context) {
    let Ok(rows) = tokio::task::spawn_blocking(rule_context::shipped_rows).await else {
        return;
    };
    let result = ctx.writer.run(move |s| rule_context::record(s, rows, now_ms())).await;
    note_recorded(ctx, "shipped rules", result);
}

/// Keeps the context of a pushed pack's rules (`ward-collector rules push` records
/// them too; this covers packs pushed while the collector was stopped or older).
async fn record_pack_rule_context(ctx: &Context, version: u64, signed: &ward_protocol::Signed) {
    let pack = match rule_context::stored_pack(signed) {
        Ok(p) => p,
        Err(error) => {
            warn!(version, %error, "stored rule pack does not decode; its rules get no context");
            return;
        }
    };
    let Ok(rows) = tokio::task::spawn_blocking(move || rule_context::pack_rows(&pack)).await else {
        return;
    };
    let result = ctx.writer.run(move |s| rule_context::record(s, rows, now_ms())).await;
    note_recorded(ctx, "rule pack", result);
}

fn note_recorded(
    ctx: &Context,
    what: &str,
    result: Result<Result<rule_context::Recorded, crate::store::StoreError>, crate::ingest::WriteError>,
) {
    match result {
        Ok(Ok(r)) => {
            ctx.metrics.rule_context_limited.add(r.limited());
            if r.limited() > 0 || r.stats.unreadable_files > 0 {
                warn!(
                    what,
                    clipped = r.stats.clipped,
                    dropped = r.stats.dropped,
                    unreadable_files = r.stats.unreadable_files,
                    "rule context over its limits was cut (the alert page names what)"
                );
            }
            info!(
                what,
                rules = r.stats.rules,
                new_versions = r.new,
                "rule context recorded"
            );
        }
        Ok(Err(error)) => warn!(what, %error, "cannot record rule context; alerts show what they carry"),
        Err(_) => {}
    }
}

/// Picks up what other processes (the CLI) changed: revocations close those
/// devices' connections; a new rule pack is pushed to every connected agent.
async fn poll_changes(
    reads: ReadPool,
    ctx: Arc<Context>,
    revoked: Arc<RwLock<HashSet<DeviceId>>>,
    every: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(every);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
        }
        if let Ok(Ok(ids)) = reads.run(|s| s.revoked_devices()).await {
            for id in ids.iter().filter_map(|id| id.parse::<DeviceId>().ok()) {
                let newly = revoked.write().map(|mut set| set.insert(id)).unwrap_or(false);
                if newly && ctx.registry.close(&id, close_code::REVOKED, "device revoked") {
                    info!(device = %id, "revoked device disconnected");
                }
            }
        }
        if let Ok(Ok(Some((version, bytes)))) = reads.run(|s| s.latest_rule_pack()).await {
            let current = ctx
                .rule_pack
                .read()
                .map(|p| p.as_ref().map(|(v, _)| *v).unwrap_or(0))
                .unwrap_or(0);
            if version > current {
                match ward_protocol::codec::decode_body::<ward_protocol::Signed>(&bytes) {
                    Ok(signed) => {
                        record_pack_rule_context(&ctx, version, &signed).await;
                        if let Ok(mut slot) = ctx.rule_pack.write() {
                            *slot = Some((version, signed.clone()));
                        }
                        let sent = ctx
                            .registry
                            .broadcast(&ward_protocol::CollectorMessage::RulePack(signed));
                        info!(version, agents = sent, "rule pack pushed");
                    }
                    Err(e) => warn!(version, error = %e, "stored rule pack does not decode"),
                }
            }
        }
    }
}
