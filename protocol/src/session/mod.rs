//! The session rules, sans-IO: one state machine for each end of an enrolled
//! agent's session ([`agent::AgentSession`], [`collector::CollectorSession`]).
//! Neither reads a socket or a clock: the driver passes in each decoded message
//! (`handle_message(now, msg)`) and wakes the machine at `poll_timeout()`
//! (`handle_timeout(now)`); it writes what `poll_transmit()` gives, in order, and acts
//! on what `poll_event()` gives (store a batch, apply a rollover, run a command...).
//! `now` is milliseconds on any monotonic clock the driver likes; tests use a
//! virtual one. Frames, QUIC streams and close frames stay with the drivers (the
//! agent's `link/`, the collector's `transport/`).
//!
//! # The rules
//!
//! One long-lived bidirectional stream per connection, opened by the agent.
//!
//! **Start.** The agent sends [`Hello`](crate::Hello) and nothing else until a
//! [`Welcome`](crate::Welcome) comes; a [`Goodbye`](crate::CollectorMessage::Goodbye)
//! instead ends the attempt with its reason, anything else is a protocol error.
//! Connecting plus hello/welcome must finish within [`agent::OPEN_TIMEOUT_MS`].
//! The collector (after identifying the device by its client certificate) waits
//! [`collector::HELLO_TIMEOUT_MS`] for the stream and again for the hello; a hello
//! naming another device closes with `WRONG_DEVICE`, anything but a hello with
//! `PROTOCOL`. It then sends, in this order and before any command:
//! 1. `Welcome` (its wall time, for the agent's clock skew, and its minor version);
//! 2. every command-key rollover, oldest first, to agents of minor ≥ 1 (older ones
//!    cannot decode them: the collector warns), so whatever follows may be signed
//!    with a rolled-over key;
//! 3. `CommandSequence` (the last command number it assigned the device) to agents
//!    of minor ≥ 3, when it could read it, so an agent that lost its record refuses
//!    replays before the first command;
//! 4. the newest rule pack, if newer than the one the hello names;
//! 5. only then may commands flow (the collector's deliveries push them in sequence
//!    order once the session is ready).
//!
//! **Agent, once welcomed.** With a collector of minor ≥ 4 ([`crate::MINOR_EPOCHS`]) it
//! sends its health first, alert batches as `EpochAlerts`, drop reports as
//! acknowledged `DropNotice`s; with an older one `Alerts` and fire-and-forget
//! `Dropped`. At most one alert batch is in flight; the next goes when its `Ack`
//! (naming its id) comes; an ack naming another batch is ignored. At most one drop
//! notice is in flight; `DropStored` naming it lets the next go at once. Drop reports
//! are looked at when the session opens, after each `DropStored` and at every
//! heartbeat. A heartbeat (with health, from minor 4) goes at once and every
//! heartbeat interval; the inventory is looked at at once and every inventory
//! interval (the driver sends a heartbeat carrying it when it changed).
//!
//! **Acknowledgement deadline.** A batch not acknowledged within the ack timeout is
//! given another ack timeout, with a heartbeat as probe, while the collector's QUIC
//! stack shows it alive (it acknowledged packets since the last look) — reconnecting
//! would resend the batch and throw its work away — up to [`agent::SLOW_ACK_LIMIT`]
//! timeouts in all; a silent peer, or the limit, ends the session ("no
//! acknowledgement within N ms") and everything unacknowledged goes again on the
//! next one. A `Goodbye` ends it with its reason.
//!
//! **Collector, once open.** Messages are handled one at a time, in order. A batch is
//! verified and stored, and only then acknowledged (an empty one at once); an
//! epoch batch or health first makes its epoch current (once per change). A drop
//! notice is acknowledged with `DropStored` once stored. A heartbeat whose rule-pack
//! version is below what was sent means the agent did not take it: it is offered
//! again. Health is recorded when its storage state changes; sensor states (minor 5)
//! whenever they arrive. A `Hello` or `Enroll`
//! inside a session closes it with `PROTOCOL`. Revocation, rate limits, frame
//! deadlines and signatures are the driver's (they need the store and the pools).
//!
//! Close codes are [`crate::message::close_code`]; each end reason says which.

pub mod agent;
pub mod collector;

pub use agent::{AgentEnd, AgentEvent, AgentSession, AgentTimers, NotOpen};
pub use collector::{Close, CollectorEvent, CollectorSession, Start};

/// A QUIC + TLS handshake not finished by then is given up at both ends: the
/// collector drops it (it held a place among the pending ones), and the agent,
/// whose attempt is then dead, tries again after its back-off instead of waiting
/// out [`agent::OPEN_TIMEOUT_MS`] (a lost close left it waiting 15 s in storms).
pub const HANDSHAKE_TIMEOUT_MS: u64 = 5_000;

/// `a - b`, or zero when `b` is later.
fn since(a: u64, b: u64) -> u64 {
    a.saturating_sub(b)
}

#[cfg(test)]
mod pair;
