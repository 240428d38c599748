//! Ward's wire protocol, sans-IO: message types, framing, signing and command
//! authorization shared by the agent and the collector.
//!
//! Nothing here opens a socket, reads a clock or touches a file: time is a
//! parameter and randomness comes from the caller's `ring` RNG, so every rule of
//! the protocol can be tested and fuzzed on its own.

pub mod alert;
pub mod auth;
pub mod batch;
pub mod breakglass;
pub mod codec;
pub mod command;
pub mod enroll;
pub mod error;
pub mod fold;
pub mod ids;
pub mod inventory;
pub mod message;
pub mod rollover;
pub mod rulepack;
pub mod session;
pub mod sign;
pub mod version;

pub use alert::{
    Alert, Entity, MAX_ANCESTORS, MAX_CONTEXT_PATH, MAX_CONTEXT_TEXT, MatchedField, ProcessNode, RuleRef, Severity,
};
pub use auth::{CommandPolicy, authorize};
pub use breakglass::{BREAK_GLASS_MAX_VALIDITY_MS, BreakGlassError, BreakGlassToken};
pub use codec::{FrameDecoder, FrameHeader, decode_frame, encode_frame};
pub use command::{Action, ActionKind, Approval, Command, CommandOutcome, CommandResult, Refusal, unread_command_id};
pub use enroll::{EnrollEnvelope, EnrollRequest, EnrollResponse, JoinToken, TokenError};
pub use error::{DecodeError, FrameError, SignatureError};
pub use fold::fold_key;
pub use ids::{AlertId, CommandId, DeviceId, Id128};
pub use inventory::{Inventory, IsolationState};
pub use message::{
    Ack, AgentHealth, AgentMessage, AlertBatch, CollectorMessage, DropNotice, DropReport, EpochAlertBatch, Heartbeat,
    Hello, Readiness, SensorReport, SensorState, Welcome,
};
pub use rollover::KeyRollover;
pub use rulepack::{RuleFile, RulePack};
pub use sign::{KeyId, PublicKey, SignatureKind, Signed, SigningKey};
pub use version::{MINOR_EPOCHS, MINOR_SENSORS, PROTOCOL_MAJOR, PROTOCOL_MINOR};
