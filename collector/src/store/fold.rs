//! Folding repeats at ingest: an agent alert (or one the collector raises about a
//! device) whose device, rule and fold key ([`ward_protocol::fold_key`]) match a
//! stored alert row observed within the fold window becomes part of that row: the
//! row's count grows by the alert's count, its first and last observed times widen,
//! and no row is added, so the correlator (which tails `alerts` by rowid) never sees
//! the repeat and a flood opens at most one incident.
//!
//! The folded alert is kept in `alert_folds` under its own id with its signed
//! payload and signature (evidence), so a re-delivery is recognized as a duplicate
//! and acknowledged without being counted twice; its sequence number still goes
//! through the device's sequence accounting. Feed alerts (no device) never fold.
//!
//! A row folds repeats observed at most `window_ms` after its last (or before its
//! first) observation, and only while it spans at most `max_span_ms`: a flood that
//! goes on for days shows as one row per span, so the alert list and incidents keep
//! moving. The lookup is in memory ([`FoldCache`]); `alerts.fold_hash` refills it
//! when the writer starts.

use ward_protocol::{Entity, MatchedField};

/// Fold settings (`[ingest] fold_window_ms`, `fold_max_span_ms`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fold {
    /// How close (ms) a repeat must be to a row's observations to fold into it; 0 turns folding off.
    pub window_ms: u64,
    /// Longest span (ms, first to last observation) one row may cover.
    pub max_span_ms: u64,
}

impl Fold {
    /// No folding (re-deliveries of alerts folded earlier are still recognized).
    pub const OFF: Fold = Fold {
        window_ms: 0,
        max_span_ms: 0,
    };

    /// The stored fold hash of an alert of `device_id`: 16 bytes of SHA-256 over
    /// device, rule id and fold key; `None` when folding is off.
    pub fn hash(
        &self,
        device_id: &str,
        rule_id: &str,
        entities: &[Entity],
        matched: &[MatchedField],
    ) -> Option<[u8; 16]> {
        if self.window_ms == 0 {
            return None;
        }
        let key = ward_protocol::fold_key(entities, matched);
        // SHA-256 over device, rule id and key joined by U+001F, fed in parts.
        let mut digest = ring::digest::Context::new(&ring::digest::SHA256);
        for part in [
            device_id.as_bytes(),
            b"\x1f",
            rule_id.as_bytes(),
            b"\x1f",
            key.as_bytes(),
        ] {
            digest.update(part);
        }
        let mut out = [0u8; 16];
        out.copy_from_slice(&digest.finish().as_ref()[..16]);
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::Fold;
    use ward_protocol::{Entity, MatchedField};

    /// The key stored with each row (and loaded again after a restart) is the first
    /// half of SHA-256 over device, rule id and fold key joined by U+001F.
    #[test]
    fn the_fold_hash_is_the_digest_of_device_rule_and_key() {
        let entities = [Entity::File {
            path: "/tmp/a/b".into(),
            sha256: Some([7; 32]),
        }];
        let matched = [MatchedField {
            name: "TargetFilename".into(),
            value: "/tmp/a/b".into(),
        }];
        let key = ward_protocol::fold_key(&entities, &matched);
        let text = format!("dev-1\u{1f}rule-ü\u{1f}{key}");
        let fold = Fold {
            window_ms: 1,
            max_span_ms: 1,
        };
        let hash = fold.hash("dev-1", "rule-ü", &entities, &matched).unwrap();
        assert_eq!(hash[..], crate::util::sha256(text.as_bytes())[..16]);
        assert_ne!(fold.hash("dev-2", "rule-ü", &entities, &matched), Some(hash));
        assert_eq!(Fold::OFF.hash("dev-1", "rule-ü", &entities, &matched), None);
    }
}
