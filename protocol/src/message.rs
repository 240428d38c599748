//! The messages of both directions. Variants are only ever appended: postcard
//! encodes the variant index, and frozen golden encodings must keep decoding.

use serde::{Deserialize, Serialize};

use crate::enroll::{EnrollEnvelope, EnrollResponse};
use crate::ids::DeviceId;
use crate::inventory::{Inventory, IsolationState};
use crate::sign::Signed;

/// The first message of a session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// Informational: the collector takes identity from the client certificate
    /// and refuses a session whose hello names another device.
    pub device_id: DeviceId,
    pub agent_version: String,
    pub protocol_major: u8,
    pub protocol_minor: u8,
    pub rule_pack_version: u64,
    /// The last command sequence the agent accepted, so nothing is resent twice.
    pub last_command_seq: u64,
}

/// The collector's answer to [`Hello`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Welcome {
    pub server_time_ms: u64,
    pub protocol_major: u8,
    pub protocol_minor: u8,
}

/// Signed alerts, acknowledged together.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertBatch {
    /// Chosen by the agent; the acknowledgement names it.
    pub batch_id: u64,
    /// Each is an [`crate::Alert`] signed with [`crate::SignatureKind::Alert`].
    pub alerts: Vec<Signed>,
}

/// Sent only after the batch's transaction committed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ack {
    pub batch_id: u64,
    /// Alerts newly stored.
    pub stored: u32,
    /// Alerts already stored before (resent after a lost acknowledgement).
    pub duplicates: u32,
}

/// Liveness and state, sent periodically.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat {
    pub sent_at_ms: u64,
    /// Present at start and whenever it changed.
    pub inventory: Option<Inventory>,
    pub isolation: IsolationState,
    pub outbox_depth: u64,
    pub rule_pack_version: u64,
}

/// Alerts the agent's outbox had to drop when full: lost, and said so.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DropReport {
    pub dropped: u64,
    /// Sequence numbers of dropped alerts (at most a few thousand per report).
    pub seqs: Vec<u64>,
    pub reason: String,
}

/// Signed alerts of one outbox epoch (protocol 1.4): an [`AlertBatch`] that says which
/// outbox numbered them. An outbox that was deleted, zeroed or rolled back starts a new
/// epoch, so the collector never mixes two epochs' sequence numbers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EpochAlertBatch {
    /// Random, chosen when the outbox began; never reused.
    pub epoch: u64,
    pub batch_id: u64,
    pub alerts: Vec<Signed>,
}

/// A drop report the collector acknowledges with [`CollectorMessage::DropStored`] once
/// stored (protocol 1.4); the agent keeps it, and sends it again, until then.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DropNotice {
    /// The epoch of the outbox that holds this report (with `report_id`, what makes a
    /// resend recognisable).
    pub epoch: u64,
    /// The agent's id for this report: the acknowledgement names it, a resend repeats it.
    pub report_id: u64,
    /// The outbox epoch whose sequence numbers `report.seqs` and `lost_range` are (an
    /// older one after a reset or quarantine).
    pub seqs_epoch: u64,
    /// Sequence numbers lost as a whole range, inclusive, when they are not named one
    /// by one (a quarantined outbox file).
    pub lost_range: Option<(u64, u64)>,
    pub report: DropReport,
}

/// How the agent is doing beside its heartbeat (protocol 1.4), sent with every
/// heartbeat: whether its outbox can store alerts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentHealth {
    pub epoch: u64,
    /// Why the outbox cannot store alerts (e.g. the disk is full); `None` when it can.
    pub storage_error: Option<String>,
    /// Alerts waiting in the agent's memory for the outbox.
    pub alerts_waiting: u64,
    /// Alerts dropped from that memory queue, to be reported once storage works.
    pub alerts_lost: u64,
}

/// How far a sensor sees (protocol 1.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Readiness {
    /// Starting: placing its watches, opening its source; what happens now may be missed.
    Starting,
    /// Seeing everything it is meant to.
    Ready,
    /// Seeing part of it (a fallback source, some paths unwatched): `detail` says what not.
    Degraded,
    /// Seeing nothing: `detail` says why (no source, failed and waiting to restart).
    Blind,
    /// Turned off in the agent's configuration.
    Off,
}

impl Readiness {
    pub fn as_str(self) -> &'static str {
        match self {
            Readiness::Starting => "starting",
            Readiness::Ready => "ready",
            Readiness::Degraded => "degraded",
            Readiness::Blind => "blind",
            Readiness::Off => "off",
        }
    }
}

/// One sensor's state (protocol 1.5).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SensorState {
    /// `process`, `process_connector`, `file`, `auth`, `audit`.
    pub name: String,
    pub readiness: Readiness,
    /// What it reads, e.g. `inotify: 11 roots, 5231 watches` or `journal (journald)`.
    pub source: String,
    /// Why it is not ready (what it misses and which fallback runs), if it is not.
    pub detail: Option<String>,
    /// When it entered this state (the agent's clock).
    pub since_ms: u64,
    /// Events it knows it lost since the agent started (e.g. execs gone before
    /// their details could be read).
    pub lost: u64,
}

/// Every sensor's state, sent at session start and whenever one changes
/// (protocol 1.5).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SensorReport {
    pub sensors: Vec<SensorState>,
}

/// Agent to collector.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AgentMessage {
    Enroll(EnrollEnvelope),
    Hello(Hello),
    Alerts(AlertBatch),
    Heartbeat(Heartbeat),
    /// A [`crate::CommandResult`] signed with [`crate::SignatureKind::CommandResult`].
    CommandResult(Signed),
    Dropped(DropReport),
    /// Protocol 1.4.
    EpochAlerts(EpochAlertBatch),
    /// Protocol 1.4; acknowledged by [`CollectorMessage::DropStored`].
    DropNotice(DropNotice),
    /// Protocol 1.4.
    Health(AgentHealth),
    /// Protocol 1.5.
    Sensors(SensorReport),
}

/// Collector to agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CollectorMessage {
    Enrolled(EnrollResponse),
    Welcome(Welcome),
    Ack(Ack),
    /// A [`crate::Command`] signed with [`crate::SignatureKind::Command`].
    Command(Signed),
    /// A [`crate::RulePack`] signed with [`crate::SignatureKind::RulePack`].
    RulePack(Signed),
    /// The collector is closing the session, and why.
    Goodbye {
        reason: String,
    },
    /// A [`crate::KeyRollover`] signed with [`crate::SignatureKind::KeyRollover`];
    /// sent first in a session, before any command signed with the new key.
    KeyRollover(Signed),
    /// The last command sequence the collector assigned this device (protocol
    /// minor 3), sent after the rollovers and before any command: an agent that
    /// lost its own record (`commands.json` missing or corrupt) takes it as the
    /// last one seen, so no command assigned before can be replayed to it.
    CommandSequence {
        last_assigned: u64,
    },
    /// Protocol 1.4: the [`DropNotice`] with this id is stored; the agent may forget it.
    DropStored {
        report_id: u64,
    },
}

/// QUIC application close codes: why the collector (or agent) closed a connection.
pub mod close_code {
    /// Normal end, e.g. shutdown.
    pub const DONE: u32 = 0;
    /// A frame was malformed, oversized, of another version, or out of place.
    pub const PROTOCOL: u32 = 1;
    /// An alert's signature did not verify against the device's key.
    pub const BAD_SIGNATURE: u32 = 2;
    /// The client certificate belongs to no enrolled device.
    pub const UNKNOWN_DEVICE: u32 = 3;
    /// The device was revoked.
    pub const REVOKED: u32 = 4;
    /// A payload named another device than the connection's own.
    pub const WRONG_DEVICE: u32 = 5;
    /// A newer connection of the same device replaced this one.
    pub const SUPERSEDED: u32 = 6;
    /// The collector is shutting down.
    pub const SHUTDOWN: u32 = 7;
    /// The collector is at its connection limit.
    pub const BUSY: u32 = 8;
    /// Enrollment was refused.
    pub const ENROLL_REFUSED: u32 = 9;
}
