//! Values every floor shares: what a response action is and the statuses it
//! passes through, an incident's statuses, classifications and ATT&CK tactics,
//! what correlation saves and loads, the feeds' normalized sign-ins and mail records.
//! Plain data with their encodings, no storage, no IO. The store persists them; the
//! domain decides how they change. The one rule here is how a merge combines two
//! incidents' triage, which the engine and the store both apply.

pub mod action;
pub mod correlation;
pub mod feed;
pub mod hunt;
pub mod incident;
