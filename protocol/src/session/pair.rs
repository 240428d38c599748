//! Both machines wired together in memory, on a virtual clock, with minimal
//! drivers: what one side transmits is what the other handles, in order. Each test
//! names the rule it checks and fails if that rule breaks.

#![allow(clippy::unwrap_used)]

use super::agent::{AgentEnd, AgentEvent, AgentSession, AgentTimers, OPEN_TIMEOUT_MS};
use super::collector::{Close, CollectorEvent, CollectorSession, HELLO_TIMEOUT_MS, Start};
use crate::message::{Hello, close_code};
use crate::{AgentMessage, CollectorMessage, DeviceId, Id128, KeyId, Signed};

const DEVICE: DeviceId = DeviceId(Id128([7; 16]));
const TIMERS: AgentTimers = AgentTimers {
    open_timeout_ms: OPEN_TIMEOUT_MS,
    ack_timeout_ms: 10_000,
    heartbeat_interval_ms: 30_000,
    inventory_interval_ms: 60_000,
};

fn signed(n: u8) -> Signed {
    Signed {
        key_id: KeyId([n; 8]),
        payload: vec![n],
        signature: vec![],
    }
}

fn hello(minor: u8, pack: u64) -> Hello {
    Hello {
        device_id: DEVICE,
        agent_version: "t".into(),
        protocol_major: crate::PROTOCOL_MAJOR,
        protocol_minor: minor,
        rule_pack_version: pack,
        last_command_seq: 0,
    }
}

/// The collector's side of the world: what the driver would read from its store.
struct World {
    rollovers: Vec<Signed>,
    command_seq: Option<u64>,
    pack: Option<(u64, Signed)>,
    /// Commands waiting for the device, pushed once the session is ready.
    commands: Vec<Signed>,
}

/// A simulated pair on a virtual clock.
struct Pair {
    now: u64,
    agent: AgentSession,
    collector: CollectorSession,
    world: World,
    /// Everything the agent handled, in order.
    agent_saw: Vec<CollectorMessage>,
    agent_events: Vec<AgentEvent>,
    /// The collector's outbound queue (the machine's transmits, then pushed commands).
    outbound: std::collections::VecDeque<CollectorMessage>,
    collector_events: Vec<CollectorEvent>,
    /// Store batches at once (false: leave them unacknowledged).
    store: bool,
}

impl Pair {
    fn new(minor: u8, pack: u64, world: World) -> Self {
        let mut p = Pair {
            now: 0,
            agent: AgentSession::new(0, TIMERS, hello(minor, pack)),
            collector: CollectorSession::new(0, DEVICE),
            world,
            agent_saw: Vec::new(),
            agent_events: Vec::new(),
            outbound: Default::default(),
            collector_events: Vec::new(),
            store: true,
        };
        p.collector.stream_opened(0);
        p
    }

    /// Moves messages and runs both drivers until neither has anything to do.
    fn settle(&mut self) {
        loop {
            let mut busy = false;
            while let Some(ev) = self.collector.poll_event() {
                busy = true;
                self.collector_drive(ev.clone());
                self.collector_events.push(ev);
            }
            self.outbound
                .extend(std::iter::from_fn(|| self.collector.poll_transmit()));
            while let Some(msg) = self.outbound.pop_front() {
                busy = true;
                self.agent_saw.push(msg.clone());
                self.agent.handle_message(self.now, msg);
            }
            while let Some(ev) = self.agent.poll_event() {
                busy = true;
                if let AgentEvent::Heartbeat { heartbeat: true, .. } = ev {
                    self.agent
                        .send_heartbeat(crate::Heartbeat {
                            sent_at_ms: self.now,
                            inventory: None,
                            isolation: crate::IsolationState::None,
                            outbox_depth: 0,
                            rule_pack_version: 0,
                        })
                        .unwrap();
                }
                self.agent_events.push(ev);
            }
            while let Some(msg) = self.agent.poll_transmit() {
                busy = true;
                self.collector.handle_message(self.now, msg);
            }
            if !busy {
                return;
            }
        }
    }

    fn collector_drive(&mut self, ev: CollectorEvent) {
        match ev {
            CollectorEvent::Hello { wants_command_seq, .. } => {
                let start = Start {
                    server_time_ms: 1,
                    rollovers: self.world.rollovers.clone(),
                    command_seq: self.world.command_seq.filter(|_| wants_command_seq),
                };
                self.collector.welcome(start).unwrap();
                self.collector.ready(self.world.pack.clone()).unwrap();
                // As the live driver: what the machine queued goes to the session's
                // outbound queue first; the deliveries get that queue only once ready.
                assert!(self.collector.is_ready());
                self.outbound
                    .extend(std::iter::from_fn(|| self.collector.poll_transmit()));
                self.outbound
                    .extend(self.world.commands.drain(..).map(CollectorMessage::Command));
            }
            CollectorEvent::Batch { batch_id, alerts } if self.store => {
                self.collector.acknowledge(batch_id, alerts.len() as u32, 0)
            }
            CollectorEvent::Heartbeat(_) => {
                let pack = self.world.pack.clone();
                self.collector.offer_rule_pack(pack);
            }
            _ => {}
        }
    }

    fn advance_to(&mut self, t: u64) {
        while let Some(next) = self.agent.poll_timeout().filter(|&n| n <= t) {
            self.now = next.max(self.now);
            self.agent.handle_timeout(self.now);
            self.settle();
        }
        self.now = t;
        self.collector.handle_timeout(t);
        self.settle();
    }
}

fn kinds(msgs: &[CollectorMessage]) -> Vec<&'static str> {
    msgs.iter()
        .map(|m| match m {
            CollectorMessage::Welcome(_) => "welcome",
            CollectorMessage::KeyRollover(_) => "rollover",
            CollectorMessage::CommandSequence { .. } => "sequence",
            CollectorMessage::RulePack(_) => "pack",
            CollectorMessage::Command(_) => "command",
            CollectorMessage::Ack(_) => "ack",
            CollectorMessage::DropStored { .. } => "drop-stored",
            CollectorMessage::Goodbye { .. } => "goodbye",
            CollectorMessage::Enrolled(_) => "enrolled",
        })
        .collect()
}

fn world() -> World {
    World {
        rollovers: vec![signed(1), signed(2)],
        command_seq: Some(41),
        pack: Some((3, signed(3))),
        commands: vec![signed(4)],
    }
}

#[test]
fn welcome_then_rollovers_then_sequence_then_pack_then_commands() {
    let mut p = Pair::new(crate::PROTOCOL_MINOR, 0, world());
    p.settle();
    assert_eq!(
        kinds(&p.agent_saw)[..6],
        ["welcome", "rollover", "rollover", "sequence", "pack", "command"]
    );
    // The agent applies them in that order too.
    let applied: Vec<_> = p
        .agent_events
        .iter()
        .filter_map(|e| match e {
            AgentEvent::KeyRollover(s) => Some(format!("rollover {}", s.payload[0])),
            AgentEvent::CommandSequence(n) => Some(format!("sequence {n}")),
            AgentEvent::RulePack(_) => Some("pack".into()),
            AgentEvent::Command(_) => Some("command".into()),
            _ => None,
        })
        .collect();
    assert_eq!(applied, ["rollover 1", "rollover 2", "sequence 41", "pack", "command"]);
}

#[test]
fn an_old_agent_gets_no_rollover_or_sequence_it_cannot_read() {
    let mut p = Pair::new(0, 0, world());
    p.settle();
    assert_eq!(kinds(&p.agent_saw)[..3], ["welcome", "pack", "command"]);
    assert!(
        p.collector_events
            .contains(&CollectorEvent::TooOldForRollovers { agent_minor: 0 })
    );
    let mut p = Pair::new(2, 0, world());
    p.settle();
    assert_eq!(
        kinds(&p.agent_saw)[..5],
        ["welcome", "rollover", "rollover", "pack", "command"]
    );
}

#[test]
fn the_pack_the_agent_runs_is_not_sent_again_until_it_says_it_lost_it() {
    let mut p = Pair::new(crate::PROTOCOL_MINOR, 3, world());
    p.settle();
    assert!(!kinds(&p.agent_saw).contains(&"pack"), "the agent runs version 3");
    // Its heartbeats say version 0 (the test driver's): offered again.
    p.advance_to(1);
    assert!(kinds(&p.agent_saw).contains(&"pack"));
    let packs = kinds(&p.agent_saw).iter().filter(|k| **k == "pack").count();
    p.advance_to(30_001);
    let again = kinds(&p.agent_saw).iter().filter(|k| **k == "pack").count();
    assert_eq!(again, packs + 1, "each heartbeat below the sent version re-offers");
}

#[test]
fn nothing_is_sent_before_the_welcome_and_the_collector_refuses_what_is() {
    let mut c = CollectorSession::new(0, DEVICE);
    c.stream_opened(0);
    assert!(
        c.welcome(Start {
            server_time_ms: 0,
            rollovers: vec![],
            command_seq: None
        })
        .is_err()
    );
    assert!(c.ready(None).is_err());
    assert!(!c.is_ready());
    c.handle_message(
        1,
        AgentMessage::Alerts(crate::AlertBatch {
            batch_id: 1,
            alerts: vec![],
        }),
    );
    assert_eq!(
        c.poll_event(),
        Some(CollectorEvent::Closed(Close {
            code: close_code::PROTOCOL,
            reason: "expected hello",
            reject: Some("protocol")
        }))
    );
    assert_eq!(c.poll_transmit(), None, "no ack for a batch before the hello");
}

#[test]
fn a_hello_naming_another_device_is_refused() {
    let mut c = CollectorSession::new(0, DeviceId(Id128([8; 16])));
    c.stream_opened(0);
    c.handle_message(1, AgentMessage::Hello(hello(4, 0)));
    assert_eq!(
        c.poll_event(),
        Some(CollectorEvent::Closed(Close {
            code: close_code::WRONG_DEVICE,
            reason: "hello names another device",
            reject: Some("wrong_device")
        }))
    );
    assert!(c.is_closed());
}

#[test]
fn a_hello_inside_a_session_closes_it() {
    let mut p = Pair::new(crate::PROTOCOL_MINOR, 0, world());
    p.settle();
    p.collector.handle_message(5, AgentMessage::Hello(hello(4, 0)));
    assert_eq!(
        p.collector.poll_event(),
        Some(CollectorEvent::Closed(Close {
            code: close_code::PROTOCOL,
            reason: "unexpected message in session",
            reject: Some("protocol")
        }))
    );
}

#[test]
fn the_collector_waits_ten_seconds_for_the_stream_and_ten_more_for_the_hello() {
    let mut c = CollectorSession::new(1_000, DEVICE);
    assert_eq!(c.poll_timeout(), Some(1_000 + HELLO_TIMEOUT_MS));
    c.handle_timeout(10_999);
    assert_eq!(c.poll_event(), None);
    c.handle_timeout(11_000);
    assert_eq!(
        c.poll_event(),
        Some(CollectorEvent::Closed(Close {
            code: close_code::PROTOCOL,
            reason: "no session stream",
            reject: None
        }))
    );
    let mut c = CollectorSession::new(0, DEVICE);
    c.stream_opened(9_000);
    c.handle_timeout(18_999);
    assert_eq!(c.poll_event(), None, "the hello's ten seconds start with the stream");
    c.handle_timeout(19_000);
    assert!(matches!(
        c.poll_event(),
        Some(CollectorEvent::Closed(Close {
            reason: "expected hello",
            ..
        }))
    ));
    // A stream that fails is closed as its deadline would.
    let mut c = CollectorSession::new(0, DEVICE);
    c.stream_failed();
    assert!(matches!(
        c.poll_event(),
        Some(CollectorEvent::Closed(Close {
            reason: "no session stream",
            ..
        }))
    ));
    let mut c = CollectorSession::new(0, DEVICE);
    c.stream_opened(1);
    c.stream_failed();
    assert!(matches!(
        c.poll_event(),
        Some(CollectorEvent::Closed(Close {
            reason: "expected hello",
            ..
        }))
    ));
    // Once the hello came no deadline is left.
    let mut c = CollectorSession::new(0, DEVICE);
    c.stream_opened(0);
    c.handle_message(1, AgentMessage::Hello(hello(4, 0)));
    assert_eq!(c.poll_timeout(), None);
}

#[test]
fn batches_go_one_at_a_time_and_each_waits_for_its_acknowledgement() {
    let mut p = Pair::new(crate::PROTOCOL_MINOR, 0, world());
    p.settle();
    p.store = false;
    p.agent.send_batch(p.now, 9, 1, vec![signed(5), signed(6)]).unwrap();
    assert!(p.agent.send_batch(p.now, 9, 2, vec![signed(7)]).is_err());
    p.settle();
    // The collector made the epoch current before the batch.
    let tail: Vec<_> = p.collector_events.iter().rev().take(2).rev().cloned().collect();
    assert_eq!(tail[0], CollectorEvent::Epoch(9));
    assert!(matches!(tail[1], CollectorEvent::Batch { batch_id: 1, .. }));
    assert!(!p.agent.batch_slot_free(), "not stored yet: still in flight");
    p.collector.acknowledge(1, 2, 0);
    p.settle();
    assert!(p.agent_events.contains(&AgentEvent::Acked { batch_id: 1, alerts: 2 }));
    assert!(p.agent.batch_slot_free());
    // Same epoch: no second switch.
    p.agent.send_batch(p.now, 9, 2, vec![signed(7)]).unwrap();
    p.settle();
    assert_eq!(
        p.collector_events
            .iter()
            .filter(|e| **e == CollectorEvent::Epoch(9))
            .count(),
        1
    );
}

#[test]
fn an_empty_batch_is_acknowledged_without_the_store() {
    let mut p = Pair::new(crate::PROTOCOL_MINOR, 0, world());
    p.settle();
    p.store = false;
    p.agent.send_batch(p.now, 9, 1, vec![]).unwrap();
    p.settle();
    assert!(
        !p.collector_events
            .iter()
            .any(|e| matches!(e, CollectorEvent::Batch { .. }))
    );
    assert!(p.agent.batch_slot_free());
}

#[test]
fn an_unacknowledged_batch_ends_the_agents_session_at_the_ack_timeout() {
    let mut p = Pair::new(crate::PROTOCOL_MINOR, 0, world());
    p.settle();
    p.store = false;
    p.agent.send_batch(p.now, 9, 1, vec![signed(5)]).unwrap();
    p.settle();
    p.advance_to(9_999);
    assert!(!p.agent.is_ended());
    p.advance_to(10_000);
    assert!(p.agent_events.contains(&AgentEvent::Ended(AgentEnd::NoAck(10_000))));
}

#[test]
fn heartbeats_go_at_once_and_then_every_interval() {
    let mut p = Pair::new(crate::PROTOCOL_MINOR, 0, world());
    p.settle();
    p.advance_to(0);
    let beats = |p: &Pair| {
        p.collector_events
            .iter()
            .filter(|e| matches!(e, CollectorEvent::Heartbeat(_)))
            .count()
    };
    assert_eq!(beats(&p), 1, "one at once");
    p.advance_to(29_999);
    assert_eq!(beats(&p), 1);
    p.advance_to(30_000);
    assert_eq!(beats(&p), 2);
    p.advance_to(90_000);
    assert_eq!(beats(&p), 4);
}

#[test]
fn a_drop_notice_is_acknowledged_once_stored() {
    let mut p = Pair::new(crate::PROTOCOL_MINOR, 0, world());
    p.settle();
    assert_eq!(p.agent.take_drops_due(), Some(u64::MAX));
    let report = crate::DropReport {
        dropped: 2,
        seqs: vec![1, 2],
        reason: "full".into(),
    };
    p.agent.send_drops(6, 9, 9, None, report).unwrap();
    p.settle();
    assert!(
        p.collector_events
            .iter()
            .any(|e| matches!(e, CollectorEvent::DropNotice(n) if n.report_id == 6))
    );
    assert!(!p.agent_events.contains(&AgentEvent::DropStored(6)), "not stored yet");
    p.collector.drop_stored(6);
    p.settle();
    assert!(p.agent_events.contains(&AgentEvent::DropStored(6)));
}

#[test]
fn the_storage_state_is_recorded_when_it_changes() {
    let mut p = Pair::new(crate::PROTOCOL_MINOR, 0, world());
    p.settle();
    let health = |error: Option<&str>| crate::AgentHealth {
        epoch: 9,
        storage_error: error.map(str::to_string),
        alerts_waiting: 1,
        alerts_lost: 0,
    };
    for h in [
        health(None),
        health(None),
        health(Some("disk full")),
        health(Some("disk full")),
        health(None),
    ] {
        p.agent.send_health(h).unwrap();
    }
    p.settle();
    let changes: Vec<_> = p
        .collector_events
        .iter()
        .filter_map(|e| match e {
            CollectorEvent::Storage { error, .. } => Some(error.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(changes, [None, Some("disk full".to_string()), None]);
}
