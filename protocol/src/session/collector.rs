//! The collector's end of a session (rules in [`super`]).
//!
//! ```text
//!   awaiting stream ──stream_opened──► awaiting hello ──Hello (this device)──► starting
//!         │                                 │                                    │ welcome()
//!         └──deadline──► closed             ├──Hello (another device)──► closed  ▼
//!                                           ├──other message──► closed        welcomed
//!                                           └──deadline──► closed                │ ready()
//!                                                                                ▼
//!                                      closed ◄──Hello | Enroll── open (commands may flow)
//! ```
//!
//! The driver identifies the device (client certificate, revocation) before the
//! machine exists, and does the work the events ask for with the store and pools,
//! answering through [`CollectorSession::acknowledge`] and
//! [`CollectorSession::drop_stored`]. It reads the next message only once the
//! previous one's events are done, so one batch is handled at a time.

use std::collections::VecDeque;

use thiserror::Error;

use crate::message::{Ack, DropNotice, DropReport, Heartbeat, Welcome, close_code};
use crate::{AgentMessage, CollectorMessage, DeviceId, PROTOCOL_MAJOR, PROTOCOL_MINOR, SensorReport, Signed};

/// How long the agent has to open its stream, and then to send its hello.
pub const HELLO_TIMEOUT_MS: u64 = 10_000;
/// The protocol minor version that added [`CollectorMessage::KeyRollover`].
pub const ROLLOVER_MINOR: u8 = 1;
/// The protocol minor version that added [`CollectorMessage::CommandSequence`].
pub const COMMAND_SEQUENCE_MINOR: u8 = 3;

/// Close the connection: the QUIC application code, the reason sent with it, and
/// the rejection counter to count it under (if any).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Close {
    pub code: u32,
    pub reason: &'static str,
    pub reject: Option<&'static str>,
}

/// What the collector sends once it has handled the hello.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Start {
    /// The collector's wall clock, for the agent's clock skew.
    pub server_time_ms: u64,
    /// Every command-key rollover, oldest first.
    pub rollovers: Vec<Signed>,
    /// The last command sequence assigned the device, if it could be read.
    pub command_seq: Option<u64>,
}

/// What the driver must do, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CollectorEvent {
    /// The device's hello: check the command sequence it reports, then
    /// [`CollectorSession::welcome`]. `wants_command_seq` says whether the agent
    /// reads the collector's (read it for [`Start::command_seq`]).
    Hello {
        agent_version: String,
        agent_minor: u8,
        rule_pack_version: u64,
        last_command_seq: u64,
        wants_command_seq: bool,
    },
    /// The agent predates rollovers and was sent none although some exist.
    TooOldForRollovers {
        agent_minor: u8,
    },
    /// Make this the device's outbox epoch before anything numbered in it is stored.
    Epoch(u64),
    /// Verify and store, then [`CollectorSession::acknowledge`].
    Batch {
        batch_id: u64,
        alerts: Vec<Signed>,
    },
    /// Record it; then offer a rule pack ([`CollectorSession::offer_rule_pack`]).
    Heartbeat(Heartbeat),
    /// An older agent's unacknowledged drop report.
    Dropped(DropReport),
    /// Store, then [`CollectorSession::drop_stored`].
    DropNotice(DropNotice),
    /// The agent's storage state changed (`error` is why it cannot store alerts).
    Storage {
        error: Option<String>,
        waiting: u64,
        lost: u64,
    },
    CommandResult(Signed),
    /// Record the agent's sensor states (minor 5).
    Sensors(SensorReport),
    /// Close the connection; the session is over.
    Closed(Close),
}

/// A call made in the wrong phase (a driver bug, never the peer's doing).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[error("session call out of order: {0}")]
pub struct OutOfOrder(&'static str);

#[derive(Debug)]
struct Open {
    agent_minor: u8,
    /// The newest rule-pack version sent (or that the agent said it runs).
    pack_sent: u64,
    /// `pack_sent` before the last offer, restored if that offer could not be queued.
    pack_before: u64,
    ready: bool,
    /// The epoch this session made current.
    epoch: Option<u64>,
    /// The storage state last recorded.
    storage: Option<Option<String>>,
}

#[derive(Debug)]
enum Phase {
    AwaitingStream { deadline: u64 },
    AwaitingHello { deadline: u64 },
    Starting { agent_minor: u8, rule_pack_version: u64 },
    Open(Open),
    Closed,
}

/// One device's session, from its connection to its end.
#[derive(Debug)]
pub struct CollectorSession {
    device: DeviceId,
    phase: Phase,
    transmits: VecDeque<CollectorMessage>,
    events: VecDeque<CollectorEvent>,
}

impl CollectorSession {
    /// The authenticated `device` connected at `now`; its stream is awaited.
    pub fn new(now: u64, device: DeviceId) -> Self {
        Self {
            device,
            phase: Phase::AwaitingStream {
                deadline: now.saturating_add(HELLO_TIMEOUT_MS),
            },
            transmits: VecDeque::new(),
            events: VecDeque::new(),
        }
    }

    /// The agent opened its stream: its hello is awaited.
    pub fn stream_opened(&mut self, now: u64) {
        if matches!(self.phase, Phase::AwaitingStream { .. }) {
            self.phase = Phase::AwaitingHello {
                deadline: now.saturating_add(HELLO_TIMEOUT_MS),
            };
        }
    }

    pub fn handle_message(&mut self, _now: u64, msg: AgentMessage) {
        match &mut self.phase {
            Phase::Closed => {}
            Phase::AwaitingStream { .. } | Phase::AwaitingHello { .. } => match msg {
                AgentMessage::Hello(h) if h.device_id == self.device => {
                    self.phase = Phase::Starting {
                        agent_minor: h.protocol_minor,
                        rule_pack_version: h.rule_pack_version,
                    };
                    self.events.push_back(CollectorEvent::Hello {
                        agent_version: h.agent_version,
                        agent_minor: h.protocol_minor,
                        rule_pack_version: h.rule_pack_version,
                        last_command_seq: h.last_command_seq,
                        wants_command_seq: h.protocol_minor >= COMMAND_SEQUENCE_MINOR,
                    });
                }
                AgentMessage::Hello(_) => {
                    self.close(close_code::WRONG_DEVICE, "hello names another device", "wrong_device")
                }
                _ => self.close(close_code::PROTOCOL, "expected hello", "protocol"),
            },
            // The agent speaks only after the welcome.
            Phase::Starting { .. } => self.close(close_code::PROTOCOL, "message before welcome", "protocol"),
            Phase::Open(open) => match msg {
                AgentMessage::Alerts(b) => {
                    if b.alerts.is_empty() {
                        // Nothing to store: answered at once.
                        self.transmits.push_back(ack(b.batch_id, 0, 0));
                    } else {
                        self.events.push_back(CollectorEvent::Batch {
                            batch_id: b.batch_id,
                            alerts: b.alerts,
                        });
                    }
                }
                AgentMessage::EpochAlerts(b) => {
                    if open.epoch != Some(b.epoch) {
                        open.epoch = Some(b.epoch);
                        self.events.push_back(CollectorEvent::Epoch(b.epoch));
                    }
                    if b.alerts.is_empty() {
                        self.transmits.push_back(ack(b.batch_id, 0, 0));
                    } else {
                        self.events.push_back(CollectorEvent::Batch {
                            batch_id: b.batch_id,
                            alerts: b.alerts,
                        });
                    }
                }
                AgentMessage::Heartbeat(hb) => {
                    if hb.rule_pack_version < open.pack_sent {
                        // The agent did not take the pack it was sent (or lost it): offered again.
                        open.pack_sent = hb.rule_pack_version;
                    }
                    self.events.push_back(CollectorEvent::Heartbeat(hb));
                }
                AgentMessage::Health(h) => {
                    if open.epoch != Some(h.epoch) {
                        open.epoch = Some(h.epoch);
                        self.events.push_back(CollectorEvent::Epoch(h.epoch));
                    }
                    if open.storage.as_ref() != Some(&h.storage_error) {
                        open.storage = Some(h.storage_error.clone());
                        self.events.push_back(CollectorEvent::Storage {
                            error: h.storage_error,
                            waiting: h.alerts_waiting,
                            lost: h.alerts_lost,
                        });
                    }
                }
                AgentMessage::Dropped(r) => self.events.push_back(CollectorEvent::Dropped(r)),
                AgentMessage::DropNotice(n) => self.events.push_back(CollectorEvent::DropNotice(n)),
                AgentMessage::CommandResult(s) => self.events.push_back(CollectorEvent::CommandResult(s)),
                AgentMessage::Sensors(r) => self.events.push_back(CollectorEvent::Sensors(r)),
                AgentMessage::Hello(_) | AgentMessage::Enroll(_) => {
                    self.close(close_code::PROTOCOL, "unexpected message in session", "protocol")
                }
            },
        }
    }

    /// The stream could not be opened or the hello not read (the peer went away,
    /// finished the stream, or sent a bad frame): closed as its deadline would.
    pub fn stream_failed(&mut self) {
        match self.phase {
            Phase::AwaitingStream { deadline } | Phase::AwaitingHello { deadline } => self.handle_timeout(deadline),
            _ => {}
        }
    }

    pub fn handle_timeout(&mut self, now: u64) {
        match self.phase {
            Phase::AwaitingStream { deadline } if now >= deadline => {
                self.closed(Close {
                    code: close_code::PROTOCOL,
                    reason: "no session stream",
                    reject: None,
                });
            }
            Phase::AwaitingHello { deadline } if now >= deadline => {
                self.close(close_code::PROTOCOL, "expected hello", "protocol")
            }
            _ => {}
        }
    }

    /// When [`CollectorSession::handle_timeout`] is next due, if ever.
    pub fn poll_timeout(&self) -> Option<u64> {
        match self.phase {
            Phase::AwaitingStream { deadline } | Phase::AwaitingHello { deadline } => Some(deadline),
            _ => None,
        }
    }

    pub fn poll_transmit(&mut self) -> Option<CollectorMessage> {
        self.transmits.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<CollectorEvent> {
        self.events.pop_front()
    }

    pub fn is_closed(&self) -> bool {
        matches!(self.phase, Phase::Closed)
    }

    /// Whether commands may be sent: everything that must precede them is queued.
    pub fn is_ready(&self) -> bool {
        matches!(&self.phase, Phase::Open(o) if o.ready)
    }

    /// Answers the hello: the welcome, the rollovers the agent can read, then the
    /// command sequence if it reads one.
    pub fn welcome(&mut self, start: Start) -> Result<(), OutOfOrder> {
        let Phase::Starting {
            agent_minor,
            rule_pack_version,
        } = self.phase
        else {
            return Err(OutOfOrder("welcome before hello"));
        };
        self.transmits.push_back(CollectorMessage::Welcome(Welcome {
            server_time_ms: start.server_time_ms,
            protocol_major: PROTOCOL_MAJOR,
            protocol_minor: PROTOCOL_MINOR,
        }));
        // Agents of minor 0 predate rollovers and could not decode one.
        if agent_minor < ROLLOVER_MINOR {
            if !start.rollovers.is_empty() {
                self.events
                    .push_back(CollectorEvent::TooOldForRollovers { agent_minor });
            }
        } else {
            self.transmits
                .extend(start.rollovers.into_iter().map(CollectorMessage::KeyRollover));
        }
        if agent_minor >= COMMAND_SEQUENCE_MINOR
            && let Some(last_assigned) = start.command_seq
        {
            self.transmits
                .push_back(CollectorMessage::CommandSequence { last_assigned });
        }
        self.phase = Phase::Open(Open {
            agent_minor,
            pack_sent: rule_pack_version,
            pack_before: rule_pack_version,
            ready: false,
            epoch: None,
            storage: None,
        });
        Ok(())
    }

    /// Offers the newest rule pack, then opens the session to commands.
    pub fn ready(&mut self, newest_pack: Option<(u64, Signed)>) -> Result<(), OutOfOrder> {
        if !matches!(self.phase, Phase::Open(_)) {
            return Err(OutOfOrder("ready before welcome"));
        }
        self.offer_rule_pack(newest_pack);
        if let Phase::Open(open) = &mut self.phase {
            open.ready = true;
        }
        Ok(())
    }

    /// The newest rule-pack version sent so far (or that the agent runs).
    pub fn pack_sent(&self) -> u64 {
        match &self.phase {
            Phase::Open(o) => o.pack_sent,
            Phase::Starting { rule_pack_version, .. } => *rule_pack_version,
            _ => 0,
        }
    }

    /// Queues `pack` if it is newer than the one sent.
    pub fn offer_rule_pack(&mut self, pack: Option<(u64, Signed)>) {
        if let Phase::Open(open) = &mut self.phase
            && let Some((version, signed)) = pack
            && version > open.pack_sent
        {
            open.pack_before = open.pack_sent;
            open.pack_sent = version;
            self.transmits.push_back(CollectorMessage::RulePack(signed));
        }
    }

    /// The rule pack last offered could not be queued (the session's queue was
    /// full): it is offered again at the next heartbeat.
    pub fn rule_pack_not_queued(&mut self, version: u64) {
        if let Phase::Open(open) = &mut self.phase
            && open.pack_sent == version
        {
            open.pack_sent = open.pack_before;
        }
    }

    /// The agent's protocol minor version, once its hello came.
    pub fn agent_minor(&self) -> Option<u8> {
        match &self.phase {
            Phase::Open(o) => Some(o.agent_minor),
            Phase::Starting { agent_minor, .. } => Some(*agent_minor),
            _ => None,
        }
    }

    /// The batch is stored (`stored` newly, `duplicates` had been).
    pub fn acknowledge(&mut self, batch_id: u64, stored: u32, duplicates: u32) {
        if matches!(self.phase, Phase::Open(_)) {
            self.transmits.push_back(ack(batch_id, stored, duplicates));
        }
    }

    /// Drop notice `report_id` is stored: the agent may forget it.
    pub fn drop_stored(&mut self, report_id: u64) {
        if matches!(self.phase, Phase::Open(_)) {
            self.transmits.push_back(CollectorMessage::DropStored { report_id });
        }
    }

    fn close(&mut self, code: u32, reason: &'static str, reject: &'static str) {
        self.closed(Close {
            code,
            reason,
            reject: Some(reject),
        });
    }

    fn closed(&mut self, close: Close) {
        self.phase = Phase::Closed;
        self.transmits.clear();
        self.events.push_back(CollectorEvent::Closed(close));
    }
}

fn ack(batch_id: u64, stored: u32, duplicates: u32) -> CollectorMessage {
    CollectorMessage::Ack(Ack {
        batch_id,
        stored,
        duplicates,
    })
}
