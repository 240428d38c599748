//! Helpers for the store's and the domain's unit tests: a fresh database and an
//! enrolled device.

use ring::rand::SystemRandom;
use ward_protocol::{DeviceId, Inventory, SigningKey};

use super::{NewDevice, Store};
use crate::store::prelude::*;

/// A fresh store in a temporary directory (kept while the first value lives).
pub fn open() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("ward.db")).unwrap();
    (dir, store)
}

/// Enrolls device number `n` (hostname `host-<n>`) at `at_ms`.
pub fn enrolled_device(store: &mut Store, n: u8, at_ms: u64) -> DeviceId {
    let rng = SystemRandom::new();
    let secret = [n; 32];
    store.create_enroll_token(&secret, 1, at_ms, at_ms + 1000).unwrap();
    let id = DeviceId::generate(at_ms, &rng).unwrap();
    let (key, _) = SigningKey::generate(&rng).unwrap();
    let new = NewDevice {
        id,
        signing_key: key.public_key(),
        cert_sha256: [n; 32],
        inventory: Inventory {
            hostname: format!("host-{n}"),
            os: String::new(),
            kernel: String::new(),
            addresses: vec![],
            logged_on_users: vec![],
            agent_version: String::new(),
        },
    };
    store.enroll(&secret, &new, at_ms).unwrap().unwrap();
    id
}

/// How many activity entries of `kind` are written as rows (some are read from
/// the incidents instead).
pub fn written_activity(store: &Store, kind: &str) -> i64 {
    store
        .conn
        .query_row("SELECT COUNT(*) FROM incident_activity WHERE kind = ?1", [kind], |r| {
            r.get(0)
        })
        .unwrap()
}
