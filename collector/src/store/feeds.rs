//! Identity and mailbox feed records: one transaction per import stores the
//! normalized records, answers the detections' window queries, stores the alerts
//! they raise and the audit entry, and commits them together.

use std::net::IpAddr;

use super::{InsertOutcome, SourcedAlert, StoreError};
use crate::model::feed::{AuditEvent, AuditKind, MailRecord, SignIn, SignInOutcome};

/// A successful sign-in with coordinates, as impossible travel compares them.
#[derive(Debug, Clone, PartialEq)]
pub struct LocatedSignIn {
    pub key: String,
    pub time_ms: u64,
    pub ip: Option<String>,
    pub location: Option<String>,
    pub latitude: f64,
    pub longitude: f64,
}

/// Identity and mailbox feed imports, each in one transaction ([`FeedOps`]).
pub trait FeedStore {
    /// One open transaction of this store.
    type FeedTx<'a>: FeedOps
    where
        Self: 'a;

    /// Runs `f` in one transaction and commits when it returns Ok.
    fn feed_import<R>(
        &mut self,
        now_ms: u64,
        f: impl FnOnce(&Self::FeedTx<'_>) -> Result<R, StoreError>,
    ) -> Result<R, StoreError>;
}

/// One open feed-import transaction: records stored, the detections' window queries
/// answered, the alerts they raise and the audit entry, committed together.
pub trait FeedOps {
    /// Stores a sign-in; false when a record with its key is already stored.
    fn insert_sign_in(&self, s: &SignIn) -> Result<bool, StoreError>;

    /// Users with a sign-in of `outcome` from `ip` in `[from_ms, to_ms]`: how many
    /// distinct ones, the first of them (sorted, at most `limit`), and the time of the
    /// first such sign-in.
    fn users_from_ip(
        &self,
        ip: IpAddr,
        outcome: SignInOutcome,
        from_ms: u64,
        to_ms: u64,
        limit: u32,
    ) -> Result<(u32, Vec<String>, Option<u64>), StoreError>;

    /// Sign-ins of `user` with `outcome` in `[from_ms, to_ms]`: how many, the first's
    /// time, and their distinct IPs (at most 20).
    fn user_outcomes(
        &self,
        user: &str,
        outcome: SignInOutcome,
        from_ms: u64,
        to_ms: u64,
    ) -> Result<(u32, Option<u64>, Vec<String>), StoreError>;

    /// The user's successful sign-ins with coordinates just before and just after `time_ms`
    /// (ties broken by key), other than the one named `key`.
    fn located_neighbours(
        &self,
        user: &str,
        time_ms: u64,
        key: &str,
    ) -> Result<(Option<LocatedSignIn>, Option<LocatedSignIn>), StoreError>;

    /// Stores a mail record; false when a record with its key is already stored.
    fn insert_mail(&self, m: &MailRecord) -> Result<bool, StoreError>;

    /// Every stored record of one message (email rows, attachments, URLs, clicks,
    /// post-delivery events), oldest first, at most 200; `raw` is left empty.
    fn message_records(&self, network_message_id: &str) -> Result<Vec<MailRecord>, StoreError>;

    /// Stores a directory / audit event; false when a record with its key is already stored.
    fn insert_audit_event(&self, e: &AuditEvent) -> Result<bool, StoreError>;

    /// Successful events of `kind` in `[from_ms, to_ms]` about one application: its
    /// app id, or (when given) its name without case. Oldest first, at most `limit`;
    /// `raw` is left empty.
    fn audit_events_of_app(
        &self,
        kind: AuditKind,
        app_id: Option<&str>,
        app_name: Option<&str>,
        from_ms: u64,
        to_ms: u64,
        limit: u32,
    ) -> Result<Vec<AuditEvent>, StoreError>;

    /// Successful events of `kind` in `[from_ms, to_ms]` whose target user is `user`,
    /// oldest first, at most `limit`; `raw` is left empty.
    fn audit_events_of_user(
        &self,
        kind: AuditKind,
        user: &str,
        from_ms: u64,
        to_ms: u64,
        limit: u32,
    ) -> Result<Vec<AuditEvent>, StoreError>;

    /// Mail items `actor` accessed in `[from_ms, to_ms]` (successful `MailItemsAccessed`):
    /// the items, the records, the first record's time and, when the items reach
    /// `min_items`, the mailboxes (at most 20; none below it, which saves the query).
    fn mail_items_accessed(
        &self,
        actor: &str,
        from_ms: u64,
        to_ms: u64,
        min_items: u64,
    ) -> Result<(u64, u32, Option<u64>, Vec<String>), StoreError>;

    /// Stores feed alerts; ids already stored are counted as duplicates.
    fn insert_alerts(&self, alerts: &[SourcedAlert]) -> Result<InsertOutcome, StoreError>;

    /// Appends the import's audit entry.
    fn audit(&self, actor: &str, action: &str, target: &str, detail: &str) -> Result<(), StoreError>;
}
