//! The agent's end of a session (rules in [`super`]).
//!
//! ```text
//!   opening ──Welcome──► open ──Goodbye | ack deadline (silent peer or limit)──► ended
//!      ├──Goodbye──► ended (Goodbye)
//!      ├──other message──► ended (protocol)
//!      └──open deadline──► ended (timed out)
//! ```
//!
//! While open the machine keeps the batch and the drop notice in flight and three
//! clocks: the batch's ack deadline, the next heartbeat and the next inventory look.
//! The driver supplies what only it can read (the outbox, the device's state, the
//! QUIC stack's count of acknowledged packets) through the `send_*` calls.

use std::collections::VecDeque;

use thiserror::Error;

use super::since;
use crate::message::{AlertBatch, DropNotice, DropReport, EpochAlertBatch, Heartbeat, Hello, Welcome};
use crate::{AgentHealth, AgentMessage, CollectorMessage, MINOR_EPOCHS, MINOR_SENSORS, SensorReport, Signed};

/// How long connecting plus hello/welcome may take.
pub const OPEN_TIMEOUT_MS: u64 = 15_000;
/// How many ack timeouts a live but slow collector is waited for before the batch is
/// sent again on a new connection.
pub const SLOW_ACK_LIMIT: u32 = 12;

/// The agent's session clocks, in milliseconds (from its configuration).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AgentTimers {
    pub open_timeout_ms: u64,
    pub ack_timeout_ms: u64,
    pub heartbeat_interval_ms: u64,
    pub inventory_interval_ms: u64,
}

/// Why a session ended; the text is what the agent logs and shows.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum AgentEnd {
    /// The collector said goodbye (before or after the welcome).
    #[error("{0}")]
    Goodbye(String),
    /// Something other than a welcome answered the hello.
    #[error("expected welcome")]
    ExpectedWelcome,
    /// No welcome within the open timeout.
    #[error("no session within {} s", .0 / 1000)]
    OpenTimedOut(u64),
    /// The batch in flight was not acknowledged in time.
    #[error("no acknowledgement within {0} ms")]
    NoAck(u64),
}

/// Sending is refused: the session is not open, or the slot is taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum NotOpen {
    #[error("the session is not open")]
    NotOpen,
    #[error("a batch is already in flight")]
    BatchInFlight,
}

/// What the driver must do, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentEvent {
    /// The collector welcomed the session (its time gives the clock skew).
    Welcomed(Welcome),
    /// Send a heartbeat (`heartbeat`) and the agent's health (`health`) now, with
    /// [`AgentSession::send_heartbeat`] and [`AgentSession::send_health`].
    Heartbeat {
        heartbeat: bool,
        health: bool,
    },
    /// Look at the inventory; send a heartbeat carrying it if it changed.
    InventoryDue,
    /// The collector is slow to acknowledge `batch_id` but alive: still waiting.
    /// `first` is true for the first such wait of the batch (warn once).
    SlowAck {
        batch_id: u64,
        waited_ms: u64,
        first: bool,
    },
    /// The batch in flight is stored: remove it; `alerts` were stored or duplicates.
    Acked {
        batch_id: u64,
        alerts: u64,
    },
    /// The drop notice with this id is stored: forget it.
    DropStored(u64),
    /// Apply before reading on: what follows may be signed with the new key.
    KeyRollover(Signed),
    /// Record before passing on the next command.
    CommandSequence(u64),
    RulePack(Signed),
    Command(Signed),
    /// The session is over; nothing more is sent or handled.
    Ended(AgentEnd),
}

/// How a handed-over drop report is settled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropDelivery {
    /// Kept until [`AgentEvent::DropStored`] names it.
    AwaitStored,
    /// The collector cannot acknowledge it (older than minor 4): clear it now.
    ClearNow,
}

#[derive(Debug, Clone, Copy)]
struct InFlight {
    batch_id: u64,
    sent: u64,
    deadline: u64,
    /// The peer's QUIC acknowledgement count when last looked at.
    peer_acks: u64,
}

#[derive(Debug)]
struct Open {
    collector_minor: u8,
    in_flight: Option<InFlight>,
    drop_in_flight: Option<u64>,
    drops_due: bool,
    next_heartbeat: u64,
    next_inventory: u64,
}

#[derive(Debug)]
enum Phase {
    Opening { deadline: u64 },
    Open(Open),
    Ended,
}

/// One session, from hello to end.
#[derive(Debug)]
pub struct AgentSession {
    timers: AgentTimers,
    phase: Phase,
    /// The QUIC stack's count of acknowledgements received from the collector.
    peer_acks: u64,
    transmits: VecDeque<AgentMessage>,
    events: VecDeque<AgentEvent>,
}

impl AgentSession {
    /// A session whose connection attempt began at `now`: the hello is the first transmit.
    pub fn new(now: u64, timers: AgentTimers, hello: Hello) -> Self {
        Self {
            timers,
            phase: Phase::Opening {
                deadline: now.saturating_add(timers.open_timeout_ms),
            },
            peer_acks: 0,
            transmits: VecDeque::from([AgentMessage::Hello(hello)]),
            events: VecDeque::new(),
        }
    }

    pub fn handle_message(&mut self, now: u64, msg: CollectorMessage) {
        match &mut self.phase {
            Phase::Ended => {}
            Phase::Opening { .. } => match msg {
                CollectorMessage::Welcome(w) => {
                    let epochs = w.protocol_minor >= MINOR_EPOCHS;
                    self.phase = Phase::Open(Open {
                        collector_minor: w.protocol_minor,
                        in_flight: None,
                        drop_in_flight: None,
                        drops_due: true,
                        // Both go at once, as a fresh interval's first tick does.
                        next_heartbeat: now,
                        next_inventory: now,
                    });
                    self.events.push_back(AgentEvent::Welcomed(w));
                    if epochs {
                        self.events.push_back(AgentEvent::Heartbeat {
                            heartbeat: false,
                            health: true,
                        });
                    }
                }
                CollectorMessage::Goodbye { reason } => self.end(AgentEnd::Goodbye(reason)),
                _ => self.end(AgentEnd::ExpectedWelcome),
            },
            Phase::Open(open) => match msg {
                CollectorMessage::Ack(ack) => {
                    if open.in_flight.is_some_and(|f| f.batch_id == ack.batch_id) {
                        open.in_flight = None;
                        self.events.push_back(AgentEvent::Acked {
                            batch_id: ack.batch_id,
                            alerts: u64::from(ack.stored) + u64::from(ack.duplicates),
                        });
                    }
                }
                CollectorMessage::DropStored { report_id } => {
                    if open.drop_in_flight == Some(report_id) {
                        open.drop_in_flight = None;
                        // The next one, if any, goes at once.
                        open.drops_due = true;
                        self.events.push_back(AgentEvent::DropStored(report_id));
                    }
                }
                CollectorMessage::KeyRollover(s) => self.events.push_back(AgentEvent::KeyRollover(s)),
                CollectorMessage::CommandSequence { last_assigned } => {
                    self.events.push_back(AgentEvent::CommandSequence(last_assigned))
                }
                CollectorMessage::RulePack(s) => self.events.push_back(AgentEvent::RulePack(s)),
                CollectorMessage::Command(s) => self.events.push_back(AgentEvent::Command(s)),
                CollectorMessage::Goodbye { reason } => self.end(AgentEnd::Goodbye(reason)),
                // A second welcome or an enrollment answer means nothing here.
                CollectorMessage::Welcome(_) | CollectorMessage::Enrolled(_) => {}
            },
        }
    }

    pub fn handle_timeout(&mut self, now: u64) {
        let timers = self.timers;
        match &mut self.phase {
            Phase::Ended => {}
            Phase::Opening { deadline } => {
                if now >= *deadline {
                    self.end(AgentEnd::OpenTimedOut(timers.open_timeout_ms));
                }
            }
            Phase::Open(open) => {
                if let Some(f) = open.in_flight.as_mut()
                    && now >= f.deadline
                {
                    let waited = since(now, f.sent);
                    // A slow acknowledgement from a live collector (its writer busy) is
                    // waited for: reconnecting would send the same batch again and throw
                    // the collector's work away, and under load that repeats without end
                    // (the 60 s stall after an agent restart). Live means its QUIC stack
                    // acknowledged packets since the last look; a heartbeat is the next
                    // probe. A dead peer, or no ack within SLOW_ACK_LIMIT timeouts, ends it.
                    let limit = timers.ack_timeout_ms.saturating_mul(u64::from(SLOW_ACK_LIMIT));
                    if self.peer_acks == f.peer_acks || waited >= limit {
                        self.end(AgentEnd::NoAck(waited));
                        return;
                    }
                    f.peer_acks = self.peer_acks;
                    f.deadline = now.saturating_add(timers.ack_timeout_ms);
                    self.events.push_back(AgentEvent::SlowAck {
                        batch_id: f.batch_id,
                        waited_ms: waited,
                        first: waited < timers.ack_timeout_ms.saturating_mul(2),
                    });
                    // The next probe of the peer's liveness.
                    self.events.push_back(AgentEvent::Heartbeat {
                        heartbeat: true,
                        health: false,
                    });
                }
                if now >= open.next_heartbeat {
                    open.next_heartbeat = now.saturating_add(timers.heartbeat_interval_ms);
                    // Unacknowledged reports (and new ones) go again.
                    open.drops_due = true;
                    self.events.push_back(AgentEvent::Heartbeat {
                        heartbeat: true,
                        health: open.collector_minor >= MINOR_EPOCHS,
                    });
                }
                if now >= open.next_inventory {
                    open.next_inventory = now.saturating_add(timers.inventory_interval_ms);
                    self.events.push_back(AgentEvent::InventoryDue);
                }
            }
        }
    }

    /// When [`AgentSession::handle_timeout`] is next due, if ever.
    pub fn poll_timeout(&self) -> Option<u64> {
        match &self.phase {
            Phase::Opening { deadline } => Some(*deadline),
            Phase::Open(open) => {
                let t = open.next_heartbeat.min(open.next_inventory);
                Some(open.in_flight.map_or(t, |f| t.min(f.deadline)))
            }
            Phase::Ended => None,
        }
    }

    pub fn poll_transmit(&mut self) -> Option<AgentMessage> {
        self.transmits.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<AgentEvent> {
        self.events.pop_front()
    }

    /// The QUIC stack's count of acknowledgements from the collector, so far: a
    /// count that moved since the batch was sent shows a live peer.
    pub fn set_peer_acks(&mut self, acks: u64) {
        self.peer_acks = acks;
    }

    pub fn is_open(&self) -> bool {
        matches!(self.phase, Phase::Open(_))
    }

    pub fn is_ended(&self) -> bool {
        matches!(self.phase, Phase::Ended)
    }

    /// Whether the collector reads outbox epochs, drop notices and health (minor ≥ 4).
    pub fn epochs(&self) -> bool {
        matches!(&self.phase, Phase::Open(o) if o.collector_minor >= MINOR_EPOCHS)
    }

    /// Whether a batch may be sent now (the session is open and none is in flight).
    pub fn batch_slot_free(&self) -> bool {
        matches!(&self.phase, Phase::Open(o) if o.in_flight.is_none())
    }

    /// Sends a batch of `epoch`'s outbox, as the collector's version reads it.
    pub fn send_batch(&mut self, now: u64, epoch: u64, batch_id: u64, alerts: Vec<Signed>) -> Result<(), NotOpen> {
        let Phase::Open(open) = &mut self.phase else {
            return Err(NotOpen::NotOpen);
        };
        if open.in_flight.is_some() {
            return Err(NotOpen::BatchInFlight);
        }
        open.in_flight = Some(InFlight {
            batch_id,
            sent: now,
            deadline: now.saturating_add(self.timers.ack_timeout_ms),
            peer_acks: self.peer_acks,
        });
        let msg = if open.collector_minor >= MINOR_EPOCHS {
            AgentMessage::EpochAlerts(EpochAlertBatch {
                epoch,
                batch_id,
                alerts,
            })
        } else {
            AgentMessage::Alerts(AlertBatch { batch_id, alerts })
        };
        self.transmits.push_back(msg);
        Ok(())
    }

    /// If drop reports are due, the bound for the next one to send (the one in
    /// flight is sent again, nothing past it); the due flag is cleared.
    pub fn take_drops_due(&mut self) -> Option<u64> {
        let Phase::Open(open) = &mut self.phase else {
            return None;
        };
        if !open.drops_due {
            return None;
        }
        open.drops_due = false;
        Some(open.drop_in_flight.unwrap_or(u64::MAX))
    }

    /// Sends drop report `id` (the outbox's `upto`) as the collector's version reads it.
    pub fn send_drops(
        &mut self,
        id: u64,
        epoch: u64,
        seqs_epoch: u64,
        lost_range: Option<(u64, u64)>,
        report: DropReport,
    ) -> Result<DropDelivery, NotOpen> {
        let Phase::Open(open) = &mut self.phase else {
            return Err(NotOpen::NotOpen);
        };
        if open.collector_minor >= MINOR_EPOCHS {
            open.drop_in_flight = Some(id);
            self.transmits.push_back(AgentMessage::DropNotice(DropNotice {
                epoch,
                report_id: id,
                seqs_epoch,
                lost_range,
                report,
            }));
            return Ok(DropDelivery::AwaitStored);
        }
        self.transmits.push_back(AgentMessage::Dropped(report));
        Ok(DropDelivery::ClearNow)
    }

    pub fn send_heartbeat(&mut self, hb: Heartbeat) -> Result<(), NotOpen> {
        self.send(AgentMessage::Heartbeat(hb))
    }

    /// Sent only to a collector that reads it (minor ≥ 4); otherwise a no-op.
    pub fn send_health(&mut self, health: AgentHealth) -> Result<(), NotOpen> {
        if !self.is_open() {
            return Err(NotOpen::NotOpen);
        }
        if self.epochs() {
            self.transmits.push_back(AgentMessage::Health(health));
        }
        Ok(())
    }

    /// Sent only to a collector that reads it (minor ≥ 5); false (nothing sent) otherwise.
    pub fn send_sensors(&mut self, report: SensorReport) -> Result<bool, NotOpen> {
        if !self.is_open() {
            return Err(NotOpen::NotOpen);
        }
        let reads = matches!(&self.phase, Phase::Open(o) if o.collector_minor >= MINOR_SENSORS);
        if reads {
            self.transmits.push_back(AgentMessage::Sensors(report));
        }
        Ok(reads)
    }

    pub fn send_result(&mut self, signed: Signed) -> Result<(), NotOpen> {
        self.send(AgentMessage::CommandResult(signed))
    }

    fn send(&mut self, msg: AgentMessage) -> Result<(), NotOpen> {
        if !self.is_open() {
            return Err(NotOpen::NotOpen);
        }
        self.transmits.push_back(msg);
        Ok(())
    }

    fn end(&mut self, why: AgentEnd) {
        self.phase = Phase::Ended;
        self.transmits.clear();
        self.events.push_back(AgentEvent::Ended(why));
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::message::Ack;
    use crate::{DeviceId, Id128};

    pub(crate) const TIMERS: AgentTimers = AgentTimers {
        open_timeout_ms: OPEN_TIMEOUT_MS,
        ack_timeout_ms: 10_000,
        heartbeat_interval_ms: 30_000,
        inventory_interval_ms: 60_000,
    };

    pub(crate) fn signed(n: u8) -> Signed {
        Signed {
            key_id: crate::KeyId([n; 8]),
            payload: vec![n],
            signature: vec![],
        }
    }

    fn hello() -> Hello {
        Hello {
            device_id: DeviceId(Id128([7; 16])),
            agent_version: "t".into(),
            protocol_major: crate::PROTOCOL_MAJOR,
            protocol_minor: crate::PROTOCOL_MINOR,
            rule_pack_version: 0,
            last_command_seq: 0,
        }
    }

    fn welcome(minor: u8) -> CollectorMessage {
        CollectorMessage::Welcome(Welcome {
            server_time_ms: 1,
            protocol_major: 1,
            protocol_minor: minor,
        })
    }

    fn events(s: &mut AgentSession) -> Vec<AgentEvent> {
        std::iter::from_fn(|| s.poll_event()).collect()
    }

    fn open(minor: u8) -> AgentSession {
        let mut s = AgentSession::new(0, TIMERS, hello());
        assert!(matches!(s.poll_transmit(), Some(AgentMessage::Hello(_))));
        s.handle_message(0, welcome(minor));
        s.handle_timeout(0);
        events(&mut s);
        s
    }

    #[test]
    fn the_hello_goes_first_and_nothing_else_before_the_welcome() {
        let mut s = AgentSession::new(0, TIMERS, hello());
        assert_eq!(s.send_batch(0, 1, 1, vec![]), Err(NotOpen::NotOpen));
        assert!(s.send_result(signed(1)).is_err());
        assert!(s.take_drops_due().is_none());
        assert!(matches!(s.poll_transmit(), Some(AgentMessage::Hello(_))));
        assert_eq!(s.poll_transmit(), None);
        s.handle_message(5, welcome(4));
        assert!(s.send_batch(5, 1, 1, vec![]).is_ok());
    }

    #[test]
    fn anything_but_a_welcome_ends_the_opening() {
        let mut s = AgentSession::new(0, TIMERS, hello());
        s.handle_message(1, CollectorMessage::CommandSequence { last_assigned: 3 });
        assert_eq!(events(&mut s), vec![AgentEvent::Ended(AgentEnd::ExpectedWelcome)]);
        let mut s = AgentSession::new(0, TIMERS, hello());
        s.handle_message(
            1,
            CollectorMessage::Goodbye {
                reason: "device revoked".into(),
            },
        );
        assert_eq!(
            events(&mut s),
            vec![AgentEvent::Ended(AgentEnd::Goodbye("device revoked".into()))]
        );
    }

    #[test]
    fn the_opening_times_out_at_the_open_timeout() {
        let mut s = AgentSession::new(1_000, TIMERS, hello());
        assert_eq!(s.poll_timeout(), Some(16_000));
        s.handle_timeout(15_999);
        assert!(events(&mut s).is_empty());
        s.handle_timeout(16_000);
        let ev = events(&mut s);
        assert_eq!(ev, vec![AgentEvent::Ended(AgentEnd::OpenTimedOut(15_000))]);
        assert_eq!(ev[0].clone(), AgentEvent::Ended(AgentEnd::OpenTimedOut(15_000)));
        if let AgentEvent::Ended(e) = &ev[0] {
            assert_eq!(e.to_string(), "no session within 15 s");
        }
        assert_eq!(s.poll_timeout(), None);
    }

    #[test]
    fn a_new_collector_gets_health_first_then_heartbeat_and_inventory_at_once() {
        let mut s = AgentSession::new(0, TIMERS, hello());
        s.handle_message(3, welcome(4));
        assert_eq!(
            events(&mut s)[1..],
            [AgentEvent::Heartbeat {
                heartbeat: false,
                health: true
            }]
        );
        assert_eq!(s.poll_timeout(), Some(3));
        s.handle_timeout(3);
        assert_eq!(
            events(&mut s),
            vec![
                AgentEvent::Heartbeat {
                    heartbeat: true,
                    health: true
                },
                AgentEvent::InventoryDue
            ]
        );
        assert_eq!(s.poll_timeout(), Some(30_003));
        s.handle_timeout(30_002);
        assert!(events(&mut s).is_empty());
        s.handle_timeout(30_003);
        assert_eq!(
            events(&mut s),
            vec![AgentEvent::Heartbeat {
                heartbeat: true,
                health: true
            }]
        );
        s.handle_timeout(60_003);
        assert_eq!(events(&mut s).len(), 2, "heartbeat and inventory at 60 s");
    }

    #[test]
    fn sensor_states_go_only_to_a_collector_that_reads_them() {
        let report = SensorReport { sensors: vec![] };
        for (minor, sent) in [(4, false), (5, true)] {
            let mut s = AgentSession::new(0, TIMERS, hello());
            assert_eq!(s.send_sensors(report.clone()), Err(NotOpen::NotOpen));
            s.poll_transmit();
            s.handle_message(0, welcome(minor));
            assert_eq!(s.send_sensors(report.clone()), Ok(sent));
            let transmitted = std::iter::from_fn(|| s.poll_transmit()).any(|m| matches!(m, AgentMessage::Sensors(_)));
            assert_eq!(transmitted, sent, "minor {minor}");
        }
    }

    #[test]
    fn an_old_collector_gets_no_health_and_old_message_kinds() {
        let mut s = AgentSession::new(0, TIMERS, hello());
        s.poll_transmit();
        s.handle_message(0, welcome(3));
        assert_eq!(events(&mut s).len(), 1, "only the welcome");
        s.handle_timeout(0);
        assert!(events(&mut s).contains(&AgentEvent::Heartbeat {
            heartbeat: true,
            health: false
        }));
        s.send_health(AgentHealth {
            epoch: 1,
            storage_error: None,
            alerts_waiting: 0,
            alerts_lost: 0,
        })
        .unwrap();
        s.send_batch(0, 9, 1, vec![]).unwrap();
        assert!(matches!(s.poll_transmit(), Some(AgentMessage::Alerts(_))));
        assert_eq!(s.poll_transmit(), None, "no health to minor 3");
        let report = DropReport {
            dropped: 1,
            seqs: vec![4],
            reason: "full".into(),
        };
        assert_eq!(s.take_drops_due(), Some(u64::MAX));
        assert_eq!(s.send_drops(7, 9, 9, None, report), Ok(DropDelivery::ClearNow));
        assert!(matches!(s.poll_transmit(), Some(AgentMessage::Dropped(_))));
    }

    #[test]
    fn one_batch_in_flight_until_its_own_ack() {
        let mut s = open(4);
        s.send_batch(0, 9, 1, vec![]).unwrap();
        assert!(!s.batch_slot_free());
        assert_eq!(s.send_batch(0, 9, 2, vec![]), Err(NotOpen::BatchInFlight));
        assert!(matches!(s.poll_transmit(), Some(AgentMessage::EpochAlerts(b)) if b.batch_id == 1 && b.epoch == 9));
        assert_eq!(s.poll_transmit(), None);
        let ack = |batch_id| {
            CollectorMessage::Ack(Ack {
                batch_id,
                stored: 2,
                duplicates: 1,
            })
        };
        s.handle_message(5, ack(2));
        assert!(events(&mut s).is_empty(), "an ack naming another batch is ignored");
        assert!(!s.batch_slot_free());
        s.handle_message(6, ack(1));
        assert_eq!(events(&mut s), vec![AgentEvent::Acked { batch_id: 1, alerts: 3 }]);
        assert!(s.batch_slot_free());
        s.handle_message(7, ack(1));
        assert!(events(&mut s).is_empty(), "a repeated ack is ignored");
    }

    #[test]
    fn a_silent_collector_ends_the_session_at_the_ack_timeout() {
        let mut s = open(4);
        s.set_peer_acks(5);
        s.send_batch(1_000, 9, 1, vec![]).unwrap();
        assert_eq!(s.poll_timeout(), Some(11_000));
        s.handle_timeout(10_999);
        assert!(events(&mut s).is_empty());
        s.handle_timeout(11_000);
        let ev = events(&mut s);
        assert_eq!(ev, vec![AgentEvent::Ended(AgentEnd::NoAck(10_000))]);
        assert_eq!(
            AgentEnd::NoAck(10_000).to_string(),
            "no acknowledgement within 10000 ms"
        );
        assert!(s.is_ended());
    }

    #[test]
    fn a_live_but_slow_collector_is_waited_for_up_to_the_limit() {
        let mut s = open(4);
        s.send_batch(0, 9, 1, vec![]).unwrap();
        s.poll_transmit();
        let mut acks = 0;
        for round in 1..u64::from(SLOW_ACK_LIMIT) {
            acks += 1;
            s.set_peer_acks(acks);
            let at = round * 10_000;
            s.handle_timeout(at);
            let ev = events(&mut s);
            assert!(
                ev.contains(&AgentEvent::SlowAck {
                    batch_id: 1,
                    waited_ms: at,
                    first: round == 1
                }),
                "round {round}: {ev:?}"
            );
            assert!(ev.contains(&AgentEvent::Heartbeat {
                heartbeat: true,
                health: false
            }));
            assert!(
                s.poll_timeout() <= Some(at + 10_000),
                "the next deadline is one ack timeout on"
            );
        }
        acks += 1;
        s.set_peer_acks(acks);
        s.handle_timeout(120_000);
        assert!(events(&mut s).contains(&AgentEvent::Ended(AgentEnd::NoAck(120_000))));
    }

    #[test]
    fn a_slow_collector_that_goes_silent_ends_at_the_next_deadline() {
        let mut s = open(4);
        s.send_batch(0, 9, 1, vec![]).unwrap();
        s.set_peer_acks(1);
        s.handle_timeout(10_000);
        assert!(!s.is_ended());
        s.handle_timeout(19_999);
        assert!(!s.is_ended());
        s.handle_timeout(20_000);
        assert!(events(&mut s).contains(&AgentEvent::Ended(AgentEnd::NoAck(20_000))));
    }

    #[test]
    fn one_drop_notice_in_flight_and_the_next_after_its_acknowledgement() {
        let mut s = open(4);
        let report = || DropReport {
            dropped: 1,
            seqs: vec![1],
            reason: "full".into(),
        };
        assert_eq!(s.take_drops_due(), Some(u64::MAX), "due at open");
        assert_eq!(s.take_drops_due(), None);
        assert_eq!(s.send_drops(4, 9, 9, None, report()), Ok(DropDelivery::AwaitStored));
        assert!(matches!(s.poll_transmit(), Some(AgentMessage::DropNotice(n)) if n.report_id == 4));
        s.handle_message(1, CollectorMessage::DropStored { report_id: 3 });
        assert!(events(&mut s).is_empty());
        assert_eq!(
            s.take_drops_due(),
            None,
            "a DropStored for another report changes nothing"
        );
        s.handle_timeout(30_000);
        events(&mut s);
        assert_eq!(s.take_drops_due(), Some(4), "the heartbeat resends the one in flight");
        s.handle_message(30_001, CollectorMessage::DropStored { report_id: 4 });
        assert_eq!(events(&mut s), vec![AgentEvent::DropStored(4)]);
        assert_eq!(s.take_drops_due(), Some(u64::MAX), "the next goes at once");
    }

    #[test]
    fn a_goodbye_ends_an_open_session_and_drops_what_was_queued() {
        let mut s = open(4);
        s.send_heartbeat(Heartbeat {
            sent_at_ms: 0,
            inventory: None,
            isolation: crate::IsolationState::None,
            outbox_depth: 0,
            rule_pack_version: 0,
        })
        .unwrap();
        s.handle_message(1, CollectorMessage::Goodbye { reason: "bye".into() });
        assert_eq!(events(&mut s), vec![AgentEvent::Ended(AgentEnd::Goodbye("bye".into()))]);
        assert_eq!(s.poll_transmit(), None);
        assert!(
            s.send_heartbeat(Heartbeat {
                sent_at_ms: 0,
                inventory: None,
                isolation: crate::IsolationState::None,
                outbox_depth: 0,
                rule_pack_version: 0,
            })
            .is_err()
        );
    }
}
