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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::super::test_support::{enrolled_device, open};
    use crate::store::prelude::*;

    #[test]
    fn events_are_taken_once_and_hosts_say_whether_a_device_carries_their_name() {
        let (_d, mut s) = open();
        let device = enrolled_device(&mut s, 7, 1_000);
        let (first, again) = s
            .feed_import(2_000, |tx| {
                let a = tx.insert_endpoint_event("host-7|security|1", "HOST-7", "windows", 5_000)?;
                tx.insert_endpoint_event("web|sysmon|1", "web", "linux", 4_000)?;
                tx.insert_endpoint_event("web|sysmon|2", "web", "linux", 6_000)?;
                tx.count_endpoint_alerts("WEB", 2)?;
                let b = tx.insert_endpoint_event("host-7|security|1", "HOST-7", "windows", 5_000)?;
                Ok((a, b))
            })
            .unwrap();
        assert!(first && !again, "a key is taken once");
        let hosts = s.endpoint_hosts(10).unwrap();
        assert_eq!(hosts.len(), 2);
        // Most recently seen first.
        let (web, none) = &hosts[0];
        assert_eq!((web.hostname.as_str(), web.events, web.alerts), ("web", 2, 2));
        assert_eq!((web.first_seen_ms, web.last_seen_ms), (4_000, 6_000));
        assert!(!web.enrolled && none.is_none());
        // An enrolled device named host-7 (case aside): the host is that device.
        let (h7, id) = &hosts[1];
        assert_eq!((h7.hostname.as_str(), h7.events), ("HOST-7", 1));
        assert!(h7.enrolled);
        assert_eq!(id.as_deref(), Some(device.to_string().as_str()));
    }
}
