//! Hunting over what the collector stores (alerts, sign-ins, mail records) and
//! each analyst's saved hunts. A hunt arrives parsed and checked
//! ([`crate::model::hunt::HuntQuery`]); the backend turns each typed filter into
//! a query fragment of its own with the value bound as a parameter, and stops a
//! hunt that runs past its time limit.

use std::time::Duration;

use serde::Serialize;

use super::StoreError;
use crate::model::hunt::{HuntPage, HuntQuery};

/// A hunt an analyst saved under a name (names are per analyst).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SavedHunt {
    pub id: i64,
    pub name: String,
    /// `alerts`, `sign_ins` or `mail`.
    pub source: String,
    pub query: String,
    /// The time range, relative to when it is run: the last this many ms (none: all time).
    pub window_ms: Option<i64>,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

/// What saving asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewSavedHunt {
    pub name: String,
    pub source: String,
    pub query: String,
    pub window_ms: Option<i64>,
}

/// One alert that names a file (an entity page's sighting of it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileSighting {
    pub alert_id: String,
    pub device_id: Option<String>,
    pub hostname: Option<String>,
    pub observed_at_ms: i64,
    /// The alert's entities as stored (JSON), where the file's paths are.
    pub entities: String,
}

pub trait HuntStore {
    /// One page of `q`'s rows, newest first, with the range's count; None when it
    /// ran longer than `time_limit` and was stopped.
    fn hunt(&self, q: &HuntQuery, time_limit: Duration) -> Result<Option<HuntPage>, StoreError>;

    /// The newest `limit` alerts naming a file: by its SHA-256 in hex, or (with
    /// `by_path`) every alert whose entities hold `key` as JSON text (a path, hashed
    /// or not; the caller keeps the exact matches). None when it ran longer than
    /// `time_limit`.
    fn file_sightings(
        &self,
        key: &str,
        by_path: bool,
        limit: u32,
        time_limit: Duration,
    ) -> Result<Option<Vec<FileSighting>>, StoreError>;

    /// `owner`'s saved hunts by name.
    fn saved_hunts(&self, owner: &str) -> Result<Vec<SavedHunt>, StoreError>;

    /// Saves `hunt` for `owner`, replacing theirs of the same name; None when
    /// `owner` already has `max_per_owner` others.
    fn save_hunt(
        &mut self,
        owner: &str,
        hunt: &NewSavedHunt,
        max_per_owner: u32,
        now_ms: u64,
    ) -> Result<Option<SavedHunt>, StoreError>;

    /// Deletes `owner`'s saved hunt `id`; false when they have none of that id.
    fn delete_saved_hunt(&mut self, owner: &str, id: i64) -> Result<bool, StoreError>;
}
