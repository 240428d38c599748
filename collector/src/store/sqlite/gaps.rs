//! The SQLite side of [`crate::store::gaps`].

use rusqlite::{OptionalExtension, Transaction, params};
use ward_protocol::{DeviceId, DropNotice};

use super::audit::append_audit;
use super::{SqliteStore, StoreError, i64_of};
use crate::store::gaps::*;

pub(super) fn bounded_reason(reason: &str) -> String {
    reason.chars().take(MAX_DROP_REASON_CHARS).collect()
}

/// Epochs are random 63-bit values; SQLite keeps them as the same bits, signed.
fn epoch_of(epoch: u64) -> i64 {
    i64::from_ne_bytes(epoch.to_ne_bytes())
}

impl GapStore for SqliteStore {
    fn switch_epoch(&self, device: DeviceId, epoch: u64, now_ms: u64) -> Result<bool, StoreError> {
        let id = device.to_string();
        let tx = self.conn.unchecked_transaction()?;
        let Some((old, last_seq)): Option<(i64, i64)> = tx
            .query_row(
                "SELECT outbox_epoch, last_seq FROM devices WHERE id = ?1",
                params![id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?
        else {
            return Ok(false);
        };
        let epoch = epoch_of(epoch);
        if old == epoch {
            return Ok(false);
        }
        if old == 0 {
            // The first epoch this device names (new, or upgraded from before protocol
            // 1.4): its numbers continue.
            tx.execute("UPDATE devices SET outbox_epoch = ?2 WHERE id = ?1", params![id, epoch])?;
            tx.commit()?;
            return Ok(true);
        }
        let reason = format!(
            "outbox epoch changed from {old:016x} to {epoch:016x}: the agent's outbox was reset or rolled back; \
             undelivered alerts after seq {last_seq} of the old epoch are lost unless the agent reports them; \
             numbering restarts"
        );
        tx.execute(
            "INSERT INTO drop_reports (device_id, epoch, report_id, seqs_epoch, dropped, first_seq, last_seq, reason, received_at_ms)
             VALUES (?1, ?2, NULL, ?3, 0, ?4, NULL, ?5, ?6)",
            params![id, epoch, old, last_seq + 1, reason, i64_of(now_ms)],
        )?;
        tx.execute(
            "UPDATE devices SET outbox_epoch = ?2, last_seq = 0 WHERE id = ?1",
            params![id, epoch],
        )?;
        append_audit(&tx, now_ms, &id, "device.outbox_epoch_changed", &id, &reason)?;
        tx.commit()?;
        Ok(true)
    }

    fn record_drop_notice(&self, device: DeviceId, notice: &DropNotice, now_ms: u64) -> Result<bool, StoreError> {
        let id = device.to_string();
        let reason = bounded_reason(&notice.report.reason);
        let seqs: Vec<u64> = notice.report.seqs.iter().copied().take(MAX_REPORT_SEQS).collect();
        let (first, last) = match (notice.lost_range, seqs.iter().min(), seqs.iter().max()) {
            (Some((a, b)), _, _) => (Some(a.min(b)), Some(a.max(b))),
            (None, Some(&a), Some(&b)) => (Some(a), Some(b)),
            _ => (None, None),
        };
        let tx = self.conn.unchecked_transaction()?;
        let inserted = tx.execute(
            "INSERT INTO drop_reports (device_id, epoch, report_id, seqs_epoch, dropped, first_seq, last_seq, reason, received_at_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
             ON CONFLICT DO NOTHING",
            params![
                id,
                epoch_of(notice.epoch),
                i64_of(notice.report_id),
                epoch_of(notice.seqs_epoch),
                i64_of(notice.report.dropped),
                first.map(i64_of),
                last.map(i64_of),
                reason,
                i64_of(now_ms)
            ],
        )?;
        if inserted == 0 {
            return Ok(false);
        }
        self.apply_drops(
            &tx,
            device,
            epoch_of(notice.seqs_epoch),
            &seqs,
            notice.lost_range,
            &reason,
            now_ms,
        )?;
        tx.execute(
            "UPDATE devices SET dropped_total = dropped_total + ?2 WHERE id = ?1",
            params![id, i64_of(notice.report.dropped)],
        )?;
        append_audit(
            &tx,
            now_ms,
            &id,
            "device.dropped_alerts",
            &id,
            &format!("{}: {reason}", notice.report.dropped),
        )?;
        tx.commit()?;
        Ok(true)
    }

    fn set_storage_error(&self, device: DeviceId, error: Option<&str>, now_ms: u64) -> Result<(), StoreError> {
        let id = device.to_string();
        let error = error.map(bounded_reason);
        let tx = self.conn.unchecked_transaction()?;
        tx.execute(
            "UPDATE devices SET storage_error = ?2 WHERE id = ?1",
            params![id, error],
        )?;
        let detail = error.as_deref().unwrap_or("storage works again");
        append_audit(&tx, now_ms, &id, "device.storage", &id, detail)?;
        tx.commit()?;
        Ok(())
    }

    fn drop_reports(&self, device_id: &str) -> Result<Vec<DropReportView>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT received_at_ms, seqs_epoch, dropped, first_seq, last_seq, reason FROM drop_reports
             WHERE device_id = ?1 ORDER BY id DESC LIMIT ?2",
        )?;
        let rows = stmt
            .query_map(params![device_id, DROP_REPORTS_SHOWN], |r| {
                Ok(DropReportView {
                    received_at_ms: r.get(0)?,
                    epoch: epoch_hex(r.get(1)?),
                    dropped: r.get(2)?,
                    first_seq: r.get(3)?,
                    last_seq: r.get(4)?,
                    reason: r.get(5)?,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }
}

impl SqliteStore {
    /// Marks the named seqs (and range) of `epoch` as dropped with `reason`: gaps that
    /// exist are explained, numbers beyond the newest stored open an explained gap at
    /// once (and move the device's high mark, so the next alert does not reopen them
    /// as `missing`).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn apply_drops(
        &self,
        tx: &Transaction<'_>,
        device: DeviceId,
        epoch: i64,
        seqs: &[u64],
        range: Option<(u64, u64)>,
        reason: &str,
        now_ms: u64,
    ) -> Result<(), StoreError> {
        let id = device.to_string();
        let Some((current, high)): Option<(i64, i64)> = tx
            .query_row(
                "SELECT outbox_epoch, last_seq FROM devices WHERE id = ?1",
                params![id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?
        else {
            return Ok(());
        };
        let why = format!("dropped by agent: {reason}");
        // The high mark of the epoch named: the device's for the current one; for an
        // earlier one, the mark it had when it ended (kept with the epoch change), so
        // a named loss beyond it opens an explained gap there too.
        let mut mark: Option<i64> = if epoch == current {
            Some(high)
        } else {
            tx.query_row(
                "SELECT first_seq - 1 FROM drop_reports
                 WHERE device_id = ?1 AND seqs_epoch = ?2 AND epoch != ?2 AND report_id IS NULL
                 ORDER BY id DESC LIMIT 1",
                params![id, epoch],
                |r| r.get(0),
            )
            .optional()?
        };
        let mut ranges: Vec<(i64, i64)> = seqs.iter().map(|&s| (i64_of(s), i64_of(s))).collect();
        if let Some((a, b)) = range {
            ranges.push((i64_of(a.min(b)), i64_of(a.max(b))));
        }
        ranges.sort_unstable();
        for (a, b) in ranges {
            // Gaps already open in that epoch: explained.
            tx.prepare_cached(
                "UPDATE sequence_gaps SET reason = ?5
                 WHERE device_id = ?1 AND epoch = ?2 AND first_seq <= ?4 AND last_seq >= ?3",
            )?
            .execute(params![id, epoch, a, b, why])?;
            let Some(m) = mark.filter(|&m| b > m) else { continue };
            let from = a.max(m + 1);
            if from > m + 1 {
                tx.prepare_cached(
                    "INSERT OR REPLACE INTO sequence_gaps (device_id, epoch, first_seq, last_seq, reason, recorded_at_ms)
                     VALUES (?1, ?2, ?3, ?4, 'missing', ?5)",
                )?
                .execute(params![id, epoch, m + 1, from - 1, i64_of(now_ms)])?;
            }
            tx.prepare_cached(
                "INSERT OR REPLACE INTO sequence_gaps (device_id, epoch, first_seq, last_seq, reason, recorded_at_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?
            .execute(params![id, epoch, from, b, why, i64_of(now_ms)])?;
            mark = Some(b);
        }
        if epoch == current
            && let Some(m) = mark
        {
            tx.execute(
                "UPDATE devices SET last_seq = MAX(last_seq, ?2) WHERE id = ?1",
                params![id, m],
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use crate::store::prelude::*;
    use ward_protocol::{
        Alert, AlertId, DropReport, Entity, Id128, Inventory, KeyId, PublicKey, RuleRef, Severity, Signed,
    };

    use super::*;
    use crate::store::{Fold, NewDevice, VerifiedAlert};

    fn store(dir: &tempfile::TempDir) -> (SqliteStore, DeviceId) {
        let mut store = SqliteStore::open(&dir.path().join("ward.db")).unwrap();
        store.set_fold(Fold::OFF).unwrap();
        store.create_enroll_token(&[1; 32], 1, 0, u64::MAX / 2).unwrap();
        let id = DeviceId(Id128::from_u128(1 << 80));
        let device = NewDevice {
            id,
            signing_key: PublicKey([1; 32]),
            cert_sha256: [1; 32],
            inventory: Inventory {
                hostname: "host".into(),
                os: "Linux".into(),
                kernel: "6".into(),
                addresses: vec![],
                logged_on_users: vec![],
                agent_version: "t".into(),
            },
        };
        store.enroll(&[1; 32], &device, 1).unwrap().unwrap();
        (store, id)
    }

    /// Alert `n` (its id) numbered `seq`.
    fn send(store: &mut SqliteStore, device: DeviceId, n: u128, seq: u64) {
        let alert = Alert {
            id: AlertId(Id128::from_u128(n)),
            device_id: device,
            seq,
            observed_at_ms: 1_000 + seq,
            last_observed_at_ms: 1_000 + seq,
            rule: RuleRef {
                id: "r".into(),
                title: "R".into(),
                author: "Ward".into(),
                severity: Severity::High,
                techniques: vec![],
                tactics: vec![],
            },
            entities: vec![Entity::File {
                path: format!("/w/{n}"),
                sha256: None,
            }],
            count: 1,
            matched: vec![],
        };
        let v = VerifiedAlert {
            signed: Signed {
                key_id: KeyId([0; 8]),
                payload: format!("payload {n}").into_bytes(),
                signature: vec![1; 64],
            },
            alert,
        };
        store.insert_alert_batches(&[(device, &[v])], 9).unwrap();
    }

    fn gaps(store: &SqliteStore, device: DeviceId) -> Vec<(i64, i64, i64, String)> {
        store
            .sequence_gaps(&device.to_string())
            .unwrap()
            .into_iter()
            .map(|g| {
                (
                    i64::from_str_radix(&g.epoch, 16).unwrap(),
                    g.first_seq,
                    g.last_seq,
                    g.reason,
                )
            })
            .collect()
    }

    fn notice(epoch: u64, report_id: u64, seqs_epoch: u64, seqs: Vec<u64>, range: Option<(u64, u64)>) -> DropNotice {
        DropNotice {
            epoch,
            report_id,
            seqs_epoch,
            lost_range: range,
            report: DropReport {
                dropped: seqs.len() as u64,
                seqs,
                reason: "outbox full".into(),
            },
        }
    }

    #[test]
    fn a_drop_of_the_newest_seq_creates_its_gap_and_stays_explained() {
        let dir = tempfile::tempdir().unwrap();
        let (mut s, dev) = store(&dir);
        assert!(s.switch_epoch(dev, 7, 1).unwrap(), "the first epoch is taken");
        send(&mut s, dev, 1, 1);
        // The report of seq 2 arrives before anything numbered after it.
        assert!(s.record_drop_notice(dev, &notice(7, 1, 7, vec![2], None), 2).unwrap());
        send(&mut s, dev, 3, 3);
        assert_eq!(gaps(&s, dev), vec![(7, 2, 2, "dropped by agent: outbox full".into())]);
        // Sent again (no acknowledgement reached the agent): stored once, counted once.
        assert!(!s.record_drop_notice(dev, &notice(7, 1, 7, vec![2], None), 3).unwrap());
        assert_eq!(s.drop_reports(&dev.to_string()).unwrap().len(), 1);
        assert_eq!(s.get_device(&dev.to_string()).unwrap().unwrap().dropped_total, 1);
    }

    #[test]
    fn an_epoch_change_is_explained_and_the_epochs_numbers_never_mix() {
        let dir = tempfile::tempdir().unwrap();
        let (mut s, dev) = store(&dir);
        s.switch_epoch(dev, 7, 1).unwrap();
        for (n, seq) in [(1, 1), (2, 2), (3, 3), (5, 5)] {
            send(&mut s, dev, n, seq);
        }
        assert_eq!(gaps(&s, dev), vec![(7, 4, 4, "missing".into())]);
        // The outbox was reset: a new epoch numbers from 1 again.
        assert!(s.switch_epoch(dev, 9, 2).unwrap());
        let reports = s.drop_reports(&dev.to_string()).unwrap();
        assert_eq!(
            (reports[0].epoch.as_str(), reports[0].first_seq),
            ("0000000000000007", Some(6))
        );
        assert!(reports[0].reason.contains("epoch changed"), "{}", reports[0].reason);
        send(&mut s, dev, 10, 1);
        send(&mut s, dev, 11, 2);
        assert_eq!(
            gaps(&s, dev),
            vec![(7, 4, 4, "missing".into())],
            "seqs 1, 2 of the new epoch close nothing of the old"
        );
        // The agent names what the old epoch lost: 4 (a gap) and 6..8 (after its end).
        assert!(
            s.record_drop_notice(dev, &notice(9, 1, 7, vec![], Some((4, 8))), 3)
                .unwrap()
        );
        let why = "dropped by agent: outbox full".to_string();
        assert_eq!(gaps(&s, dev), vec![(7, 4, 4, why.clone()), (7, 6, 8, why)]);
        send(&mut s, dev, 12, 3);
        assert_eq!(gaps(&s, dev).len(), 2, "the new epoch has no gap");
        assert_eq!(s.get_device(&dev.to_string()).unwrap().unwrap().last_seq, 3);
    }
}
