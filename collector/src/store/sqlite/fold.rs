//! The SQLite side of folding ([`crate::store::fold`]): the in-memory lookup of
//! recent rows and where an incoming alert goes.

use std::collections::{HashMap, VecDeque};

use rusqlite::{OptionalExtension, Transaction, params};

use super::alert_id::AlertKey;
use super::i64_of;
use crate::store::{Fold, StoreError, VerifiedAlert};

/// Where an incoming alert goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Placement {
    /// A new row (it may still turn out to be a duplicate of a stored row's id);
    /// [`FoldCache::stored`] records it once inserted.
    NewRow,
    /// Folded into the row with this rowid.
    Folded(i64),
    /// Already stored (as a row or as a fold).
    Duplicate,
}

/// The times and count of one incoming alert.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Observed {
    pub first_ms: u64,
    pub last_ms: u64,
    pub count: u32,
}

/// Fold keys and their newest rows read from the database, oldest first.
pub(crate) type Loaded = Vec<([u8; 16], Head)>;

/// A load of the newest rows' fold keys under way ([`load_in_background`]).
pub(crate) type Loading = std::sync::mpsc::Receiver<Result<Loaded, StoreError>>;

/// Reads the newest rows' fold keys on a read-only connection and thread of their
/// own, so a restarted writer stores (and acknowledges) at once. Until the writer
/// merges the result, a repeat of a key not loaded yet is stored as a row of its own
/// (and later repeats fold into that row): folding is exact again within the load's
/// ~50 ms, and nothing is lost either way.
pub(crate) fn load_in_background(conn: &rusqlite::Connection) -> Result<Loading, StoreError> {
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    let Some(path) = conn.path().filter(|p| !p.is_empty()).map(std::path::PathBuf::from) else {
        // An in-memory database has no other connection to read it: read it here.
        let _ = tx.send(FoldCache::read_newest(conn));
        return Ok(rx);
    };
    std::thread::Builder::new()
        .name("ward-fold-load".into())
        .spawn(move || {
            let read = rusqlite::Connection::open_with_flags(
                &path,
                rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )
            .map_err(StoreError::from)
            .and_then(|c| FoldCache::read_newest(&c));
            let _ = tx.send(read);
        })
        .map_err(|e| StoreError::Corrupt(format!("cannot start the fold cache's load: {e}")))?;
    Ok(rx)
}

/// The newest row of one fold key.
#[derive(Debug, Clone)]
pub(crate) struct Head {
    rowid: i64,
    id: String,
    first_ms: u64,
    last_ms: u64,
}

/// The newest row of each recently seen fold key, in memory on the writer. An
/// index on the hash in the database made every insert touch a random page of a
/// large B-tree (ingest fell from about 22,000 to 10,000 alerts/s with
/// `ward-loadgen ingest`); this map makes the lookup free and keeps the inserts
/// where they were. At most [`FoldCache::CAPACITY`] keys, oldest evicted first (a
/// repeat of an evicted key starts a new row); filled from the newest rows when
/// the writer starts; emptied when a transaction fails (it may hold rows that
/// were rolled back).
#[derive(Debug, Default)]
pub(crate) struct FoldCache {
    heads: HashMap<[u8; 16], Head>,
    order: VecDeque<[u8; 16]>,
}

impl FoldCache {
    pub const CAPACITY: usize = 100_000;

    pub fn clear(&mut self) {
        self.heads.clear();
        self.order.clear();
    }

    /// Reads the fold keys of the newest rows, oldest first (a restarted writer folds
    /// into them). It reads the rows themselves (there is no index on the hash):
    /// about 50 ms for the newest 100,000, so it runs on a connection and thread of
    /// its own ([`load_in_background`]) while the writer already stores.
    pub fn read_newest(conn: &rusqlite::Connection) -> Result<Loaded, StoreError> {
        let mut stmt = conn.prepare(
            "SELECT rowid, id, fold_hash, observed_at_ms, last_observed_at_ms FROM alerts
             WHERE rowid > (SELECT COALESCE(MAX(rowid), 0) FROM alerts) - ?1 AND fold_hash IS NOT NULL
             ORDER BY rowid",
        )?;
        let rows = stmt.query_map(params![Self::CAPACITY as i64], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                super::alert_id::alert_id(r, 1)?,
                r.get::<_, Vec<u8>>(2)?,
                r.get::<_, i64>(3)?,
                r.get::<_, i64>(4)?,
            ))
        })?;
        let mut loaded = Vec::new();
        for row in rows {
            let (rowid, id, hash, first, last) = row?;
            let Ok(hash) = <[u8; 16]>::try_from(hash.as_slice()) else {
                continue;
            };
            let (first_ms, last_ms) = (first.max(0) as u64, last.max(0) as u64);
            loaded.push((
                hash,
                Head {
                    rowid,
                    id,
                    first_ms: first_ms.min(last_ms),
                    last_ms: last_ms.max(first_ms),
                },
            ));
        }
        Ok(loaded)
    }

    /// Adds rows read from the database before this writer stored anything, oldest
    /// first. A key the writer stored since keeps its newer row; the loaded keys are
    /// older than every key already here, so they are evicted first.
    pub fn merge_older(&mut self, loaded: Loaded) {
        let mut older = VecDeque::new();
        let mut merged: HashMap<[u8; 16], Head> = HashMap::new();
        for (hash, head) in loaded {
            if self.heads.contains_key(&hash) {
                continue;
            }
            if merged.insert(hash, head).is_none() {
                older.push_back(hash);
            }
        }
        self.heads.extend(merged);
        older.append(&mut self.order);
        self.order = older;
        while self.heads.len() > Self::CAPACITY {
            let Some(old) = self.order.pop_front() else { break };
            self.heads.remove(&old);
        }
    }

    /// Records a new row as the newest of its key.
    pub fn stored(&mut self, hash: [u8; 16], rowid: i64, id: String, first_ms: u64, last_ms: u64) {
        let head = Head {
            rowid,
            id,
            first_ms: first_ms.min(last_ms),
            last_ms: last_ms.max(first_ms),
        };
        if self.heads.insert(hash, head).is_none() {
            self.order.push_back(hash);
        }
        while self.heads.len() > Self::CAPACITY {
            let Some(old) = self.order.pop_front() else { break };
            self.heads.remove(&old);
        }
    }

    /// The row `seen` folds into: the newest of its key, when `seen` lies within the
    /// window of its observations and the row would still span at most the longest span.
    fn target(&self, hash: &[u8; 16], seen: Observed, fold: Fold) -> Option<&Head> {
        let head = self.heads.get(hash)?;
        let (first, last) = (seen.first_ms.min(seen.last_ms), seen.last_ms.max(seen.first_ms));
        let near = last.saturating_add(fold.window_ms) >= head.first_ms
            && first <= head.last_ms.saturating_add(fold.window_ms);
        let span = head.last_ms.max(last) - head.first_ms.min(first);
        (near && span <= fold.max_span_ms).then_some(head)
    }
}

/// Decides where an alert with id `id` goes, and records it when it folds.
#[allow(clippy::too_many_arguments)]
pub(crate) fn place(
    tx: &Transaction<'_>,
    cache: &mut FoldCache,
    id: &str,
    hash: Option<&[u8; 16]>,
    seen: Observed,
    fold: Fold,
    evidence: Evidence<'_>,
    now_ms: u64,
) -> Result<Placement, StoreError> {
    let folded_before = tx
        .prepare_cached("SELECT 1 FROM alert_folds WHERE alert_id = ?1")?
        .query_row(params![AlertKey::of(id)], |_| Ok(()))
        .optional()?
        .is_some();
    if folded_before {
        return Ok(Placement::Duplicate);
    }
    let Some(hash) = hash else {
        return Ok(Placement::NewRow);
    };
    let Some(head) = cache.target(hash, seen, fold) else {
        return Ok(Placement::NewRow);
    };
    if head.id == id {
        return Ok(Placement::Duplicate);
    }
    let rowid = head.rowid;
    let stored_as_row = tx
        .prepare_cached("SELECT 1 FROM alerts WHERE id = ?1")?
        .query_row(params![AlertKey::of(id)], |_| Ok(()))
        .optional()?
        .is_some();
    if stored_as_row {
        return Ok(Placement::Duplicate);
    }
    let (first, last) = (seen.first_ms.min(seen.last_ms), seen.last_ms.max(seen.first_ms));
    tx.prepare_cached(
        "INSERT INTO alert_folds (alert_id, into_rowid, seq, observed_at_ms, last_observed_at_ms, count,
             received_at_ms, signed_payload, signature)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )?
    .execute(params![
        AlertKey::of(id),
        rowid,
        i64_of(evidence.seq),
        i64_of(seen.first_ms),
        i64_of(seen.last_ms),
        seen.count.max(1),
        i64_of(now_ms),
        evidence.payload,
        evidence.signature,
    ])?;
    tx.prepare_cached(
        "UPDATE alerts SET count = count + ?2, observed_at_ms = MIN(observed_at_ms, ?3),
             last_observed_at_ms = MAX(last_observed_at_ms, ?4), folds = folds + 1
         WHERE rowid = ?1",
    )?
    .execute(params![rowid, seen.count.max(1), i64_of(first), i64_of(last)])?;
    if let Some(head) = cache.heads.get_mut(hash) {
        head.first_ms = head.first_ms.min(first);
        head.last_ms = head.last_ms.max(last);
    }
    Ok(Placement::Folded(rowid))
}

/// What is kept of a folded alert besides its times and count.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Evidence<'a> {
    pub seq: u64,
    /// The signed encoding and its signature (empty for the collector's own alerts).
    pub payload: &'a [u8],
    pub signature: &'a [u8],
}

impl<'a> Evidence<'a> {
    pub fn of(v: &'a VerifiedAlert) -> Evidence<'a> {
        Evidence {
            seq: v.alert.seq,
            payload: &v.signed.payload,
            signature: &v.signed.signature,
        }
    }
}

impl Observed {
    pub fn of(a: &ward_protocol::Alert) -> Observed {
        Observed {
            first_ms: a.observed_at_ms,
            last_ms: a.last_observed_at_ms,
            count: a.count,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use crate::store::prelude::*;
    use ward_protocol::{Alert, AlertId, DeviceId, Id128, Inventory, KeyId, PublicKey, RuleRef, Severity, Signed};

    use super::*;
    use crate::store::sqlite::sourced::insert_sourced;
    use crate::store::{AlertSource, SourcedAlert};
    use crate::store::{InsertOutcome, NewDevice, Store};
    use ward_protocol::{Entity, MatchedField};

    const W: u64 = 300_000;
    const FOLD: Fold = Fold {
        window_ms: W,
        max_span_ms: 3_600_000,
    };

    fn store(dir: &tempfile::TempDir) -> (Store, DeviceId, DeviceId) {
        let mut store = Store::open(&dir.path().join("ward.db")).unwrap();
        store.set_fold(FOLD).unwrap();
        let mut ids = Vec::new();
        for n in 1..=2u8 {
            store.create_enroll_token(&[n; 32], 1, 0, u64::MAX / 2).unwrap();
            let id = DeviceId(Id128::from_u128(u128::from(n) << 80));
            let device = NewDevice {
                id,
                signing_key: PublicKey([n; 32]),
                cert_sha256: [n; 32],
                inventory: Inventory {
                    hostname: format!("host{n}"),
                    os: "Linux".into(),
                    kernel: "6".into(),
                    addresses: vec![],
                    logged_on_users: vec![],
                    agent_version: "t".into(),
                },
            };
            store.enroll(&[n; 32], &device, 1).unwrap().unwrap();
            ids.push(id);
        }
        (store, ids[0], ids[1])
    }

    /// An EICAR-like file alert: `n` names the alert, `path` the file, `at` its time.
    fn alert(device: DeviceId, n: u128, seq: u64, path: &str, at: u64, count: u32) -> VerifiedAlert {
        let alert = Alert {
            id: AlertId(Id128::from_u128(n)),
            device_id: device,
            seq,
            observed_at_ms: at,
            last_observed_at_ms: at,
            rule: RuleRef {
                id: "known-bad-file".into(),
                title: "Known-bad file written".into(),
                author: "Ward".into(),
                severity: Severity::High,
                techniques: vec![],
                tactics: vec!["TA0002".into()],
            },
            entities: vec![
                Entity::Device {
                    hostname: "host".into(),
                },
                Entity::File {
                    path: path.into(),
                    sha256: Some([7; 32]),
                },
            ],
            count,
            matched: vec![MatchedField {
                name: "sha256".into(),
                value: "07".repeat(32),
            }],
        };
        VerifiedAlert {
            signed: Signed {
                key_id: KeyId([0; 8]),
                payload: format!("payload {n}").into_bytes(),
                signature: vec![n as u8; 64],
            },
            alert,
        }
    }

    fn send(store: &mut Store, device: DeviceId, alerts: &[VerifiedAlert]) -> (u32, u32, u32) {
        let InsertOutcome {
            stored,
            folded,
            duplicates,
        } = store.insert_alert_batches(&[(device, alerts)], 9).unwrap()[0];
        (stored, folded, duplicates)
    }

    /// (rows, total count, first, last, folds) of a device's alerts.
    fn rows(store: &Store, device: DeviceId) -> Vec<(i64, i64, i64, i64)> {
        let mut stmt = store
            .conn
            .prepare("SELECT count, observed_at_ms, last_observed_at_ms, folds FROM alerts WHERE device_id = ?1 ORDER BY rowid")
            .unwrap();
        stmt.query_map(params![device.to_string()], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
        })
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
    }

    #[test]
    fn repeats_within_the_window_fold_into_one_row() {
        let dir = tempfile::tempdir().unwrap();
        let (mut s, dev, other) = store(&dir);
        let t = 10_000_000;
        assert_eq!(send(&mut s, dev, &[alert(dev, 1, 1, "/w/a", t, 1)]), (1, 0, 0));
        // The agent's aggregate of the next 59 files, then files before the first
        // (a backlog out of order) and at the edge of the window: all fold.
        let batch = [
            alert(dev, 2, 2, "/w/b", t + 1_000, 59),
            alert(dev, 3, 3, "/w/c", t - 20_000, 1),
            alert(dev, 4, 4, "/w/d", t + 1_000 + W, 1),
        ];
        assert_eq!(send(&mut s, dev, &batch), (0, 3, 0));
        assert_eq!(rows(&s, dev), vec![(62, t as i64 - 20_000, (t + 1_000 + W) as i64, 3)]);
        // Another folder, another device, and a repeat after a longer pause are rows of their own.
        assert_eq!(send(&mut s, dev, &[alert(dev, 5, 5, "/w/sub/e", t, 1)]), (1, 0, 0));
        assert_eq!(send(&mut s, other, &[alert(other, 6, 1, "/w/a", t, 1)]), (1, 0, 0));
        let late = t + 1_000 + 2 * W + 1;
        assert_eq!(send(&mut s, dev, &[alert(dev, 7, 6, "/w/f", late, 1)]), (1, 0, 0));
        assert_eq!(rows(&s, dev).len(), 3);
        // The API shows the fold, and finds a folded alert's id in its row.
        let first = AlertId(Id128::from_u128(1)).to_string();
        let view = s.get_alert(&first).unwrap().unwrap();
        assert_eq!((view.count, view.folded_alerts), (62, 3));
        let folded = s.get_alert(&AlertId(Id128::from_u128(3)).to_string()).unwrap().unwrap();
        assert_eq!(folded.id, first);
        // The evidence is kept.
        let (seq, payload): (i64, Vec<u8>) = s
            .conn
            .query_row(
                "SELECT seq, signed_payload FROM alert_folds WHERE alert_id = ?1",
                params![AlertKey::of(&AlertId(Id128::from_u128(2)).to_string())],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert_eq!((seq, payload), (2, b"payload 2".to_vec()));
    }

    #[test]
    fn a_row_stops_folding_at_its_longest_span() {
        let dir = tempfile::tempdir().unwrap();
        let (mut s, dev, _) = store(&dir);
        // One file a minute for two hours: one row per hour of span.
        let alerts: Vec<_> = (0..120u64)
            .map(|i| {
                alert(
                    dev,
                    u128::from(i) + 1,
                    i + 1,
                    &format!("/w/{i}"),
                    1_000_000 + i * 60_000,
                    1,
                )
            })
            .collect();
        assert_eq!(send(&mut s, dev, &alerts), (2, 118, 0));
        assert_eq!(
            rows(&s, dev),
            vec![(61, 1_000_000, 4_600_000, 60), (59, 4_660_000, 8_140_000, 58)]
        );
    }

    #[test]
    fn re_deliveries_are_duplicates_and_sequence_gaps_stay_true() {
        let dir = tempfile::tempdir().unwrap();
        let (mut s, dev, _) = store(&dir);
        let t = 10_000_000;
        let a1 = alert(dev, 1, 1, "/w/a", t, 1);
        let a3 = alert(dev, 3, 3, "/w/c", t + 10, 1);
        let a2 = alert(dev, 2, 2, "/w/b", t + 5, 1);
        assert_eq!(send(&mut s, dev, std::slice::from_ref(&a1)), (1, 0, 0));
        // seq 3 folds; seq 2 is missing meanwhile.
        assert_eq!(send(&mut s, dev, std::slice::from_ref(&a3)), (0, 1, 0));
        let gaps = |s: &Store| s.sequence_gaps(&dev.to_string()).unwrap();
        assert_eq!(
            gaps(&s).iter().map(|g| (g.first_seq, g.last_seq)).collect::<Vec<_>>(),
            vec![(2, 2)]
        );
        // The late seq 2 folds and closes the gap.
        assert_eq!(send(&mut s, dev, std::slice::from_ref(&a2)), (0, 1, 0));
        assert!(gaps(&s).is_empty());
        // Everything again, after a lost acknowledgement: nothing counted twice.
        assert_eq!(send(&mut s, dev, &[a1.clone(), a2.clone(), a3.clone()]), (0, 0, 3));
        assert_eq!(rows(&s, dev), vec![(3, t as i64, t as i64 + 10, 2)]);
        assert!(gaps(&s).is_empty());
        // Still recognized with folding turned off.
        s.set_fold(Fold::OFF).unwrap();
        assert_eq!(send(&mut s, dev, &[a3, alert(dev, 4, 4, "/w/d", t + 20, 1)]), (1, 0, 1));
        assert_eq!(rows(&s, dev).len(), 2);
    }

    #[test]
    fn the_collectors_own_device_alerts_fold_and_feed_alerts_do_not() {
        let dir = tempfile::tempdir().unwrap();
        let (mut s, dev, _) = store(&dir);
        let raised = |id: &str, device: Option<String>, source: AlertSource, at: u64| SourcedAlert {
            id: id.into(),
            source,
            device_id: device,
            observed_at_ms: at,
            last_observed_at_ms: at,
            rule: RuleRef {
                id: "r".into(),
                title: "r".into(),
                author: "Ward".into(),
                severity: Severity::High,
                techniques: vec![],
                tactics: vec![],
            },
            entities: vec![Entity::Device {
                hostname: "host1".into(),
            }],
            count: 1,
            matched: serde_json::Map::new(),
        };
        let d = Some(dev.to_string());
        let alerts = [
            raised("c1", d.clone(), AlertSource::Collector, 1_000),
            raised("c2", d.clone(), AlertSource::Collector, 2_000),
            raised("f1", None, AlertSource::Identity, 1_000),
            raised("f2", None, AlertSource::Identity, 2_000),
        ];
        let mut cache = FoldCache::default();
        let tx = s.conn.transaction().unwrap();
        let out = insert_sourced(&tx, &alerts, 5, FOLD, &mut cache).unwrap();
        let again = insert_sourced(&tx, &alerts, 6, FOLD, &mut cache).unwrap();
        tx.commit().unwrap();
        assert_eq!((out.stored, out.folded, out.duplicates), (3, 1, 0));
        assert_eq!((again.stored, again.folded, again.duplicates), (0, 0, 4));
        assert_eq!(rows(&s, dev), vec![(2, 1_000, 2_000, 1)]);
    }

    /// Queries that select more after the alert's columns find them where they are.
    #[test]
    fn the_alert_column_count_is_true() {
        assert_eq!(Store::ALERT_COLUMNS.split(',').count(), Store::ALERT_COLUMN_COUNT);
    }

    /// A restarted writer folds into the rows stored before it started.
    #[test]
    fn a_restarted_writer_folds_into_earlier_rows() {
        let dir = tempfile::tempdir().unwrap();
        let (mut s, dev, _) = store(&dir);
        assert_eq!(send(&mut s, dev, &[alert(dev, 1, 1, "/w/a", 5_000, 1)]), (1, 0, 0));
        drop(s);
        let mut s = Store::open(&dir.path().join("ward.db")).unwrap();
        s.set_fold(FOLD).unwrap();
        s.wait_for_fold_load();
        assert_eq!(send(&mut s, dev, &[alert(dev, 2, 2, "/w/b", 6_000, 4)]), (0, 1, 0));
        assert_eq!(rows(&s, dev), vec![(5, 5_000, 6_000, 1)]);
    }

    /// Rows loaded after the writer stored keep out of its way: a key it stored since
    /// keeps its newer row, a loaded key repeated keeps its newest row, and the loaded
    /// keys are evicted before the writer's.
    #[test]
    fn loaded_rows_are_older_than_what_the_writer_stored() {
        let head = |rowid: i64| Head {
            rowid,
            id: rowid.to_string(),
            first_ms: 0,
            last_ms: 0,
        };
        let key = |i: u128| i.to_le_bytes();
        let mut cache = FoldCache::default();
        cache.stored(key(1), 100, "100".into(), 0, 0);
        cache.merge_older(vec![(key(1), head(5)), (key(2), head(6)), (key(2), head(7))]);
        assert_eq!(cache.heads[&key(1)].rowid, 100, "the writer's newer row");
        assert_eq!(cache.heads[&key(2)].rowid, 7, "the newest loaded row of its key");
        assert_eq!(cache.order, VecDeque::from([key(2), key(1)]));
        for i in 3..(FoldCache::CAPACITY as u128 + 2) {
            cache.stored(key(i), i as i64 + 100, String::new(), 0, 0);
        }
        assert!(!cache.heads.contains_key(&key(2)), "the loaded key went first");
        assert!(cache.heads.contains_key(&key(1)));
    }

    /// The cache holds at most its capacity, evicting the oldest keys.
    #[test]
    fn the_cache_is_bounded() {
        let mut cache = FoldCache::default();
        for i in 0..(FoldCache::CAPACITY as u128 + 10) {
            cache.stored(i.to_le_bytes(), i as i64, String::new(), 0, 0);
        }
        assert_eq!(
            (cache.heads.len(), cache.order.len()),
            (FoldCache::CAPACITY, FoldCache::CAPACITY)
        );
        assert!(!cache.heads.contains_key(&0u128.to_le_bytes()));
        assert!(cache.heads.contains_key(&10u128.to_le_bytes()));
    }
}
