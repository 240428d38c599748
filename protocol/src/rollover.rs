//! Command-key rollover: the collector's command key is replaced without
//! re-enrolling anyone. A [`KeyRollover`] names the new key and is signed with
//! [`crate::SignatureKind::KeyRollover`] by a key the agent already pins, so only
//! the holder of the current key can introduce the next one. The agent pins the
//! new key at once and keeps accepting the keys it pinned before until
//! `retire_at_ms` (the overlap window), then refuses them. Rollovers carry a serial:
//! an agent applies each one once, in order, and an agent that was offline through
//! several rotations follows the chain, each step signed by the key before it.

use serde::{Deserialize, Serialize};

use crate::sign::PublicKey;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRollover {
    /// 1 for the first rotation, one more for each after it.
    pub serial: u64,
    /// The key that signs commands, rule packs and break-glass tokens from now on.
    pub new_key: PublicKey,
    /// When the keys pinned before stop being accepted (epoch ms). An agent that
    /// learns of the rollover later retires them at once.
    pub retire_at_ms: u64,
    pub created_at_ms: u64,
}
