//! Values every floor shares: what a response action is and the statuses it
//! passes through. Plain data with their encodings; no rules, no storage, no IO.
//! The store persists them; the domain decides how they change.

pub mod action;
