//! Values every floor shares: what a response action is and the statuses it
//! passes through, an incident's statuses, classifications and ATT&CK tactics,
//! the feeds' normalized sign-ins and mail records.
//! Plain data with their encodings; no rules, no storage, no IO.
//! The store persists them; the domain decides how they change.

pub mod action;
pub mod feed;
pub mod incident;
