//! The SQLite side of [`crate::store::feeds`].

use std::net::IpAddr;

use rusqlite::{OptionalExtension, Transaction, params};

use super::audit::append_audit;
use super::sourced::insert_sourced;
use super::{InsertOutcome, SqliteStore, StoreError, i64_of};
use crate::model::feed::{AuditEvent, AuditKind, MailKind, MailRecord, SignIn, SignInOutcome};
use crate::store::feeds::*;
use crate::store::*;

/// An open feed-import transaction.
pub struct FeedTx<'a> {
    pub(super) tx: Transaction<'a>,
    now_ms: u64,
}

impl std::fmt::Debug for FeedTx<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FeedTx").finish_non_exhaustive()
    }
}

fn ms(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

impl FeedStore for SqliteStore {
    type FeedTx<'a> = FeedTx<'a>;

    fn feed_import<R>(
        &mut self,
        now_ms: u64,
        f: impl FnOnce(&FeedTx<'_>) -> Result<R, StoreError>,
    ) -> Result<R, StoreError> {
        let feed = FeedTx {
            tx: self.conn.transaction()?,
            now_ms,
        };
        let out = f(&feed)?;
        feed.tx.commit()?;
        Ok(out)
    }
}

impl FeedOps for FeedTx<'_> {
    fn insert_sign_in(&self, s: &SignIn) -> Result<bool, StoreError> {
        let n = self
            .tx
            .prepare_cached(
                "INSERT INTO sign_ins (record_key, provider, time_ms, user, ip, location, latitude, longitude, app,
                     client, outcome, result, result_detail, risk_level, risk_state, conditional_access, mfa, device,
                     raw, imported_at_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20)
                 ON CONFLICT(record_key) DO NOTHING",
            )?
            .execute(params![
                s.key,
                s.provider,
                i64_of(s.time_ms),
                s.user,
                s.ip.map(|ip| ip.to_string()),
                s.location,
                s.coords.map(|c| c.0),
                s.coords.map(|c| c.1),
                s.app,
                s.client,
                s.outcome.as_str(),
                s.result,
                s.result_detail,
                s.risk_level,
                s.risk_state,
                s.conditional_access,
                s.mfa,
                s.device,
                s.raw,
                i64_of(self.now_ms),
            ])?;
        Ok(n == 1)
    }

    fn users_from_ip(
        &self,
        ip: IpAddr,
        outcome: SignInOutcome,
        from_ms: u64,
        to_ms: u64,
        limit: u32,
    ) -> Result<(u32, Vec<String>, Option<u64>), StoreError> {
        let args = params![ip.to_string(), outcome.as_str(), i64_of(from_ms), i64_of(to_ms)];
        let users = self
            .tx
            .prepare_cached(
                "SELECT DISTINCT user FROM sign_ins WHERE ip = ?1 AND outcome = ?2 AND time_ms BETWEEN ?3 AND ?4
                 ORDER BY user LIMIT ?5",
            )?
            .query_map(
                params![ip.to_string(), outcome.as_str(), i64_of(from_ms), i64_of(to_ms), limit],
                |r| r.get(0),
            )?
            .collect::<Result<Vec<String>, _>>()?;
        let (count, first): (u32, Option<i64>) = self
            .tx
            .prepare_cached(
                "SELECT COUNT(DISTINCT user), MIN(time_ms) FROM sign_ins
                 WHERE ip = ?1 AND outcome = ?2 AND time_ms BETWEEN ?3 AND ?4",
            )?
            .query_row(args, |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok((count, users, first.map(ms)))
    }

    fn user_outcomes(
        &self,
        user: &str,
        outcome: SignInOutcome,
        from_ms: u64,
        to_ms: u64,
    ) -> Result<(u32, Option<u64>, Vec<String>), StoreError> {
        let args = params![user, outcome.as_str(), i64_of(from_ms), i64_of(to_ms)];
        let (count, first): (u32, Option<i64>) = self
            .tx
            .prepare_cached(
                "SELECT COUNT(*), MIN(time_ms) FROM sign_ins
                 WHERE user = ?1 AND outcome = ?2 AND time_ms BETWEEN ?3 AND ?4",
            )?
            .query_row(args, |r| Ok((r.get(0)?, r.get(1)?)))?;
        let ips = self
            .tx
            .prepare_cached(
                "SELECT DISTINCT ip FROM sign_ins WHERE user = ?1 AND outcome = ?2 AND time_ms BETWEEN ?3 AND ?4
                   AND ip IS NOT NULL ORDER BY ip LIMIT 20",
            )?
            .query_map(args, |r| r.get(0))?
            .collect::<Result<Vec<String>, _>>()?;
        Ok((count, first.map(ms), ips))
    }

    fn located_neighbours(
        &self,
        user: &str,
        time_ms: u64,
        key: &str,
    ) -> Result<(Option<LocatedSignIn>, Option<LocatedSignIn>), StoreError> {
        let row = |r: &rusqlite::Row<'_>| {
            Ok(LocatedSignIn {
                key: r.get(0)?,
                time_ms: ms(r.get(1)?),
                ip: r.get(2)?,
                location: r.get(3)?,
                latitude: r.get(4)?,
                longitude: r.get(5)?,
            })
        };
        let cols = "SELECT record_key, time_ms, ip, location, latitude, longitude FROM sign_ins
             WHERE user = ?1 AND outcome = 'success' AND latitude IS NOT NULL AND longitude IS NOT NULL
               AND record_key <> ?3";
        let before = self
            .tx
            .prepare_cached(&format!(
                "{cols} AND (time_ms < ?2 OR (time_ms = ?2 AND record_key < ?3))
                 ORDER BY time_ms DESC, record_key DESC LIMIT 1"
            ))?
            .query_row(params![user, i64_of(time_ms), key], row)
            .optional()?;
        let after = self
            .tx
            .prepare_cached(&format!(
                "{cols} AND (time_ms > ?2 OR (time_ms = ?2 AND record_key > ?3))
                 ORDER BY time_ms ASC, record_key ASC LIMIT 1"
            ))?
            .query_row(params![user, i64_of(time_ms), key], row)
            .optional()?;
        Ok((before, after))
    }

    fn insert_mail(&self, m: &MailRecord) -> Result<bool, StoreError> {
        let n = self
            .tx
            .prepare_cached(
                "INSERT INTO mail_events (record_key, kind, time_ms, network_message_id, sender, recipient, subject,
                     threat_types, detection_methods, delivery_action, delivery_location, file_name, sha256, url,
                     action, ip, raw, imported_at_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18)
                 ON CONFLICT(record_key) DO NOTHING",
            )?
            .execute(params![
                m.key,
                m.kind.as_str(),
                i64_of(m.time_ms),
                m.network_message_id,
                m.sender,
                m.recipient,
                m.subject,
                m.threat_types,
                m.detection_methods,
                m.delivery_action,
                m.delivery_location,
                m.file_name,
                m.sha256,
                m.url,
                m.action,
                m.ip.map(|ip| ip.to_string()),
                crate::entity::redact_userinfo(&m.raw),
                i64_of(self.now_ms),
            ])?;
        Ok(n == 1)
    }

    fn message_records(&self, network_message_id: &str) -> Result<Vec<MailRecord>, StoreError> {
        let mut stmt = self.tx.prepare_cached(
            "SELECT record_key, kind, time_ms, network_message_id, sender, recipient, subject, threat_types,
                    detection_methods, delivery_action, delivery_location, file_name, sha256, url, action, ip
             FROM mail_events WHERE network_message_id = ?1 ORDER BY time_ms, rowid LIMIT 200",
        )?;
        let rows = stmt
            .query_map(params![network_message_id], |r| {
                let kind: String = r.get(1)?;
                let ip: Option<String> = r.get(15)?;
                Ok(MailRecord {
                    key: r.get(0)?,
                    kind: MailKind::parse(&kind).unwrap_or(MailKind::Email),
                    time_ms: ms(r.get(2)?),
                    network_message_id: r.get(3)?,
                    sender: r.get(4)?,
                    recipient: r.get(5)?,
                    subject: r.get(6)?,
                    threat_types: r.get(7)?,
                    detection_methods: r.get(8)?,
                    delivery_action: r.get(9)?,
                    delivery_location: r.get(10)?,
                    file_name: r.get(11)?,
                    sha256: r.get(12)?,
                    url: r.get(13)?,
                    action: r.get(14)?,
                    ip: ip.and_then(|s| s.parse().ok()),
                    rule: None,
                    raw: String::new(),
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    fn insert_audit_event(&self, e: &AuditEvent) -> Result<bool, StoreError> {
        let n = self
            .tx
            .prepare_cached(
                "INSERT INTO audit_events (record_key, provider, kind, time_ms, operation, actor, target_user, app_id,
                     app_name, mailbox, ip, detail, items, failed, risk_level, publisher_verified, raw, imported_at_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18)
                 ON CONFLICT(record_key) DO NOTHING",
            )?
            .execute(params![
                e.key,
                e.provider,
                e.kind.as_str(),
                i64_of(e.time_ms),
                e.operation,
                e.actor,
                e.target_user,
                e.app_id,
                e.app_name,
                e.mailbox,
                e.ip.map(|ip| ip.to_string()),
                e.detail,
                i64_of(e.items),
                e.failed,
                e.risk_level,
                e.publisher_verified,
                e.raw,
                i64_of(self.now_ms),
            ])?;
        Ok(n == 1)
    }

    fn audit_events_of_app(
        &self,
        kind: AuditKind,
        app_id: Option<&str>,
        app_name: Option<&str>,
        from_ms: u64,
        to_ms: u64,
        limit: u32,
    ) -> Result<Vec<AuditEvent>, StoreError> {
        let name = app_name.map(str::to_lowercase);
        let mut stmt = self.tx.prepare_cached(&format!(
            "{AUDIT_COLUMNS} WHERE kind = ?1 AND failed = 0 AND time_ms BETWEEN ?2 AND ?3
               AND ((?4 IS NOT NULL AND app_id = ?4) OR (?5 IS NOT NULL AND lower(app_name) = ?5))
             ORDER BY time_ms, rowid LIMIT ?6"
        ))?;
        let rows = stmt
            .query_map(
                params![kind.as_str(), i64_of(from_ms), i64_of(to_ms), app_id, name, limit],
                audit_row,
            )?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    fn audit_events_of_user(
        &self,
        kind: AuditKind,
        user: &str,
        from_ms: u64,
        to_ms: u64,
        limit: u32,
    ) -> Result<Vec<AuditEvent>, StoreError> {
        let mut stmt = self.tx.prepare_cached(&format!(
            "{AUDIT_COLUMNS} WHERE kind = ?1 AND failed = 0 AND target_user = ?2 AND time_ms BETWEEN ?3 AND ?4
             ORDER BY time_ms, rowid LIMIT ?5"
        ))?;
        let rows = stmt
            .query_map(
                params![kind.as_str(), user, i64_of(from_ms), i64_of(to_ms), limit],
                audit_row,
            )?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    fn mail_items_accessed(
        &self,
        actor: &str,
        from_ms: u64,
        to_ms: u64,
        min_items: u64,
    ) -> Result<(u64, u32, Option<u64>, Vec<String>), StoreError> {
        let args = params![AuditKind::MailAccess.as_str(), actor, i64_of(from_ms), i64_of(to_ms)];
        let (items, records, first): (Option<i64>, u32, Option<i64>) = self
            .tx
            .prepare_cached(
                "SELECT SUM(items), COUNT(*), MIN(time_ms) FROM audit_events
                 WHERE kind = ?1 AND failed = 0 AND actor = ?2 AND time_ms BETWEEN ?3 AND ?4",
            )?
            .query_row(args, |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
        let items = items.map_or(0, ms);
        if items < min_items {
            return Ok((items, records, first.map(ms), Vec::new()));
        }
        let mailboxes = self
            .tx
            .prepare_cached(
                "SELECT DISTINCT mailbox FROM audit_events
                 WHERE kind = ?1 AND failed = 0 AND actor = ?2 AND time_ms BETWEEN ?3 AND ?4 AND mailbox IS NOT NULL
                 ORDER BY mailbox LIMIT 20",
            )?
            .query_map(args, |r| r.get(0))?
            .collect::<Result<Vec<String>, _>>()?;
        Ok((items, records, first.map(ms), mailboxes))
    }

    fn insert_alerts(&self, alerts: &[SourcedAlert]) -> Result<InsertOutcome, StoreError> {
        insert_sourced(
            &self.tx,
            alerts,
            self.now_ms,
            super::Fold::OFF,
            &mut super::fold::FoldCache::default(),
        )
    }

    fn audit(&self, actor: &str, action: &str, target: &str, detail: &str) -> Result<(), StoreError> {
        append_audit(&self.tx, self.now_ms, actor, action, target, detail)
    }
}

const AUDIT_COLUMNS: &str =
    "SELECT record_key, provider, kind, time_ms, operation, actor, target_user, app_id, app_name,
    mailbox, ip, detail, items, failed, risk_level, publisher_verified FROM audit_events";

fn audit_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<AuditEvent> {
    let provider: String = r.get(1)?;
    let kind: String = r.get(2)?;
    let ip: Option<String> = r.get(10)?;
    Ok(AuditEvent {
        key: r.get(0)?,
        provider: ["entra", "okta", "m365", "defender-cloudapps", "defender-identity"]
            .into_iter()
            .find(|p| *p == provider)
            .unwrap_or("other"),
        kind: AuditKind::parse(&kind).unwrap_or(AuditKind::Other),
        time_ms: ms(r.get(3)?),
        operation: r.get(4)?,
        actor: r.get(5)?,
        target_user: r.get(6)?,
        app_id: r.get(7)?,
        app_name: r.get(8)?,
        mailbox: r.get(9)?,
        ip: ip.and_then(|s| s.parse().ok()),
        detail: r.get(11)?,
        items: ms(r.get(12)?),
        failed: r.get(13)?,
        risk_level: r.get(14)?,
        publisher_verified: r.get(15)?,
        raw: String::new(),
    })
}
