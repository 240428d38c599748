//! The periodic check for isolated devices that went silent: an isolated
//! device that stops reporting may have had its agent killed or its network cut
//! by other means, so the collector raises an alert (one per silence, see
//! [`crate::store::Store::raise_silent_isolated_alerts`]).

use std::time::Duration;

use ring::rand::SystemRandom;
use tokio::sync::watch;
use tracing::{info, warn};
use ward_protocol::AlertId;

use crate::ingest::Writer;
use crate::readpool::ReadPool;
use crate::store::prelude::*;
use crate::util::now_ms;

/// How often the check runs at most; short offline thresholds are checked faster.
pub const SILENCE_CHECK: Duration = Duration::from_secs(5);

/// Checks every [`SILENCE_CHECK`] (or a quarter of `offline_after_ms`, if
/// shorter) until `shutdown` flips. Each tick is one cheap read; the writer is
/// used only when an alert is due.
pub async fn run_silence_watch(
    writer: Writer,
    reads: ReadPool,
    offline_after_ms: u64,
    mut shutdown: watch::Receiver<bool>,
) {
    let every = SILENCE_CHECK.min(Duration::from_millis((offline_after_ms / 4).max(100)));
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
        }
        let since = now_ms().saturating_sub(offline_after_ms);
        if !matches!(reads.run(move |s| s.silent_isolated_due(since)).await, Ok(Ok(true))) {
            continue;
        }
        let raised = writer
            .run(move |s| {
                let rng = SystemRandom::new();
                let now = now_ms();
                s.raise_silent_isolated_alerts(now, offline_after_ms, &mut || AlertId::generate(now, &rng).ok())
            })
            .await;
        match raised {
            Ok(Ok(alerts)) => {
                for a in alerts {
                    warn!(device = %a.device_id, alert = %a.alert_id, "isolated device went silent: alert raised");
                }
            }
            Ok(Err(e)) => warn!(error = %e, "cannot raise alerts for silent isolated devices"),
            Err(_) => {
                info!("silence watch stopped: the writer is gone");
                return;
            }
        }
    }
}
