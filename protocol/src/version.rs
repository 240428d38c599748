//! Protocol version numbers and ALPN identifiers; a frame whose major version is
//! not ours is refused before its body is decoded.

/// Incompatible changes bump the major version; peers refuse other majors.
pub const PROTOCOL_MAJOR: u8 = 1;
/// Compatible additions bump the minor version; peers accept any minor.
/// 3 added [`crate::CollectorMessage::CommandSequence`]; 4 outbox epochs, acknowledged
/// drop reports and agent health; 5 sensor readiness; 6 the alert entity
/// [`crate::Entity::ProcessContext`] (a collector older than 6 refuses alerts carrying it:
/// upgrade collectors first).
pub const PROTOCOL_MINOR: u8 = 6;
/// The first minor version with outbox epochs, acknowledged drop reports and agent
/// health ([`crate::message::EpochAlertBatch`], [`crate::message::DropNotice`],
/// [`crate::message::AgentHealth`]): an agent uses them only with a collector at least this new.
pub const MINOR_EPOCHS: u8 = 4;
/// The first minor version with sensor readiness ([`crate::message::SensorReport`]).
pub const MINOR_SENSORS: u8 = 5;

/// ALPN of an enrolled agent's session (mutual TLS).
pub const ALPN_SESSION: &[u8] = b"ward/1";
/// ALPN of an enrollment connection (server-authenticated TLS only).
pub const ALPN_ENROLL: &[u8] = b"ward-enroll/1";
