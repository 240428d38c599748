//! The durable outbox of signed alerts.
