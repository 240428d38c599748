//! The endpoint feed's event keys and hosts (`store::endpoint`).

use rusqlite::{OptionalExtension, params};

use super::feeds::FeedTx;
use super::{SqliteStore, StoreError, i64_of};
use crate::store::endpoint::{EndpointHost, EndpointOps, EndpointStore};

fn ms(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

impl EndpointOps for FeedTx<'_> {
    fn insert_endpoint_event(&self, key: &str, host: &str, product: &str, time_ms: u64) -> Result<bool, StoreError> {
        let t = i64_of(time_ms);
        let new = self.tx.prepare_cached(
            "INSERT INTO endpoint_events (record_key, host, time_ms) VALUES (?1, lower(?2), ?3) ON CONFLICT DO NOTHING",
        )?
        .execute(params![key, host, t])?
            == 1;
        if new {
            self.tx
                .prepare_cached(
                    "INSERT INTO endpoint_hosts (host, hostname, product, first_seen_ms, last_seen_ms, events, alerts)
                     VALUES (lower(?1), ?1, ?2, ?3, ?3, 1, 0)
                     ON CONFLICT(host) DO UPDATE SET first_seen_ms = min(first_seen_ms, excluded.first_seen_ms),
                        last_seen_ms = max(last_seen_ms, excluded.last_seen_ms), events = events + 1",
                )?
                .execute(params![host, product, t])?;
        }
        Ok(new)
    }

    fn count_endpoint_alerts(&self, host: &str, alerts: u64) -> Result<(), StoreError> {
        self.tx
            .prepare_cached("UPDATE endpoint_hosts SET alerts = alerts + ?2 WHERE host = lower(?1)")?
            .execute(params![host, i64_of(alerts)])?;
        Ok(())
    }
}

impl EndpointStore for SqliteStore {
    fn endpoint_hosts(&self, limit: u32) -> Result<Vec<(EndpointHost, Option<String>)>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT hostname, product, first_seen_ms, last_seen_ms, events, alerts, host FROM endpoint_hosts
             ORDER BY last_seen_ms DESC, host LIMIT ?1",
        )?;
        let rows = stmt
            .query_map([limit], |r| {
                Ok((
                    EndpointHost {
                        hostname: r.get(0)?,
                        product: r.get(1)?,
                        enrolled: false,
                        first_seen_ms: ms(r.get(2)?),
                        last_seen_ms: ms(r.get(3)?),
                        events: ms(r.get(4)?),
                        alerts: ms(r.get(5)?),
                    },
                    r.get::<_, String>(6)?,
                ))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        let mut device = self.conn.prepare_cached(
            "SELECT id FROM devices WHERE lower(hostname) = ?1 AND revoked_at_ms IS NULL ORDER BY enrolled_at_ms LIMIT 1",
        )?;
        let mut out = Vec::with_capacity(rows.len());
        for (mut h, key) in rows {
            let id: Option<String> = device.query_row([&key], |r| r.get(0)).optional()?;
            h.enrolled = id.is_some();
            out.push((h, id));
        }
        Ok(out)
    }
}
