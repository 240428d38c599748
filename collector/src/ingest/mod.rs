//! Ingest: verification of signed alerts on all cores, then durable storage by
//! the single writer. Sessions (transport) drive it; nothing here does network IO.

pub mod checkpoint;
pub mod verify;
pub mod writer;

pub use verify::{Rejection, VerifyPool};
pub use writer::{WriteError, Writer};
