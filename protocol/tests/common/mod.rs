//! proptest strategies for every protocol type, shared by the property tests.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::IpAddr;

use proptest::collection::vec;
use proptest::prelude::*;
use ward_protocol::command::CommandOutcome;
use ward_protocol::message::{Ack, AlertBatch, DropReport, Heartbeat, Hello, Welcome};
use ward_protocol::*;

pub fn id128() -> impl Strategy<Value = Id128> {
    any::<u128>().prop_map(Id128::from_u128)
}

pub fn text() -> impl Strategy<Value = String> {
    ".{0,40}"
}

pub fn severity() -> impl Strategy<Value = Severity> {
    prop::sample::select(Severity::ALL.to_vec())
}

pub fn entity() -> impl Strategy<Value = Entity> {
    prop_oneof![
        text().prop_map(|hostname| Entity::Device { hostname }),
        (text(), any::<Option<u32>>()).prop_map(|(name, uid)| Entity::User { name, uid }),
        (
            any::<u32>(),
            any::<u32>(),
            any::<u64>(),
            text(),
            text(),
            any::<Option<[u8; 32]>>()
        )
            .prop_map(|(pid, ppid, start_time_ms, exe, cmdline, sha256)| Entity::Process {
                pid,
                ppid,
                start_time_ms,
                exe,
                cmdline,
                sha256
            }),
        (text(), any::<Option<[u8; 32]>>()).prop_map(|(path, sha256)| Entity::File { path, sha256 }),
        any::<IpAddr>().prop_map(|addr| Entity::Ip { addr }),
        text().prop_map(|name| Entity::Domain { name }),
        text().prop_map(|url| Entity::Url { url }),
        text().prop_map(|address| Entity::Mailbox { address }),
        (process_node(), vec(process_node(), 0..=MAX_ANCESTORS), any::<bool>()).prop_map(
            |(process, ancestors, rooted)| Entity::Lineage {
                process,
                ancestors,
                rooted
            }
        ),
        (
            (any::<u32>(), any::<u64>(), text(), text()),
            (
                any::<Option<u32>>(),
                any::<Option<u32>>(),
                proptest::option::of(text()),
                text(),
                proptest::option::of(text()),
            ),
            (any::<Option<u32>>(), any::<Option<u32>>(), any::<Option<bool>>()),
        )
            .prop_map(
                |(
                    (pid, start_time_ms, cwd, tty),
                    (session_id, login_uid, login_user, cgroup, container_id),
                    (mnt_ns, pid_ns, host_namespaces),
                )| Entity::ProcessContext {
                    pid,
                    start_time_ms,
                    cwd,
                    tty,
                    session_id,
                    login_uid,
                    login_user,
                    cgroup,
                    container_id,
                    mnt_ns,
                    pid_ns,
                    host_namespaces,
                }
            ),
    ]
}

pub fn process_node() -> impl Strategy<Value = ProcessNode> {
    (
        (any::<u32>(), any::<u32>(), any::<u64>()),
        (
            text(),
            text(),
            proptest::option::of(text()),
            proptest::option::of(text()),
        ),
    )
        .prop_map(
            |((pid, ppid, start_time_ms), (exe, cmdline, user, login_user))| ProcessNode {
                pid,
                ppid,
                start_time_ms,
                exe,
                cmdline,
                user,
                login_user,
            },
        )
}

pub fn alert() -> impl Strategy<Value = Alert> {
    (
        (id128(), id128(), any::<u64>(), any::<u64>(), any::<u64>()),
        (text(), text(), text(), severity(), vec(text(), 0..4), vec(text(), 0..3)),
        vec(entity(), 0..6),
        any::<u32>(),
        vec((text(), text()), 0..5),
    )
        .prop_map(
            |((id, dev, seq, t0, t1), (rid, title, author, sev, techniques, tactics), entities, count, matched)| {
                Alert {
                    id: AlertId(id),
                    device_id: DeviceId(dev),
                    seq,
                    observed_at_ms: t0,
                    last_observed_at_ms: t1,
                    rule: RuleRef {
                        id: rid,
                        title,
                        author,
                        severity: sev,
                        techniques,
                        tactics,
                    },
                    entities,
                    count,
                    matched: matched
                        .into_iter()
                        .map(|(name, value)| MatchedField { name, value })
                        .collect(),
                }
            },
        )
}

pub fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        vec(text(), 0..3).prop_map(|allow| Action::Isolate { allow }),
        Just(Action::Release),
        (text(), any::<[u8; 32]>()).prop_map(|(path, sha256)| Action::QuarantineFile { path, sha256 }),
        text().prop_map(|quarantine_id| Action::RestoreFile { quarantine_id }),
        (text(), any::<[u8; 32]>()).prop_map(|(path, sha256)| Action::DeleteFile { path, sha256 }),
        (any::<u32>(), any::<u64>(), text(), any::<bool>()).prop_map(|(pid, start_time_ms, exe, tree)| {
            Action::KillProcess {
                pid,
                start_time_ms,
                exe,
                tree,
            }
        }),
        Just(Action::CollectPackage),
    ]
}

pub fn command() -> impl Strategy<Value = Command> {
    (
        id128(),
        id128(),
        any::<u64>(),
        any::<u64>(),
        any::<u64>(),
        action(),
        text(),
        vec(text(), 0..3),
        text(),
    )
        .prop_map(
            |(id, dev, seq, issued, expires, action, requested_by, approved_by, reason)| Command {
                id: CommandId(id),
                device_id: DeviceId(dev),
                seq,
                issued_at_ms: issued,
                expires_at_ms: expires,
                action,
                approval: Approval {
                    requested_by,
                    approved_by,
                    reason,
                },
            },
        )
}

pub fn signed() -> impl Strategy<Value = Signed> {
    (any::<[u8; 8]>(), vec(any::<u8>(), 0..200), vec(any::<u8>(), 0..70)).prop_map(|(k, payload, signature)| Signed {
        key_id: KeyId(k),
        payload,
        signature,
    })
}

pub fn inventory() -> impl Strategy<Value = Inventory> {
    (text(), text(), text(), vec(text(), 0..3), vec(text(), 0..3), text()).prop_map(
        |(hostname, os, kernel, addresses, logged_on_users, agent_version)| Inventory {
            hostname,
            os,
            kernel,
            addresses,
            logged_on_users,
            agent_version,
        },
    )
}

pub fn agent_message() -> impl Strategy<Value = AgentMessage> {
    prop_oneof![
        (any::<[u8; 32]>(), signed()).prop_map(|(k, request)| AgentMessage::Enroll(EnrollEnvelope {
            signing_key: PublicKey(k),
            request
        })),
        (id128(), text(), any::<u8>(), any::<u8>(), any::<u64>(), any::<u64>()).prop_map(|(d, v, ma, mi, r, s)| {
            AgentMessage::Hello(Hello {
                device_id: DeviceId(d),
                agent_version: v,
                protocol_major: ma,
                protocol_minor: mi,
                rule_pack_version: r,
                last_command_seq: s,
            })
        }),
        (any::<u64>(), vec(signed(), 0..5))
            .prop_map(|(batch_id, alerts)| AgentMessage::Alerts(AlertBatch { batch_id, alerts })),
        (
            any::<u64>(),
            proptest::option::of(inventory()),
            any::<bool>(),
            any::<u64>(),
            any::<u64>()
        )
            .prop_map(
                |(sent_at_ms, inventory, iso, outbox_depth, rule_pack_version)| AgentMessage::Heartbeat(Heartbeat {
                    sent_at_ms,
                    inventory,
                    isolation: if iso {
                        IsolationState::Isolated
                    } else {
                        IsolationState::None
                    },
                    outbox_depth,
                    rule_pack_version,
                })
            ),
        signed().prop_map(AgentMessage::CommandResult),
        (any::<u64>(), vec(any::<u64>(), 0..10), text())
            .prop_map(|(dropped, seqs, reason)| AgentMessage::Dropped(DropReport { dropped, seqs, reason })),
    ]
}

pub fn collector_message() -> impl Strategy<Value = CollectorMessage> {
    prop_oneof![
        (
            id128(),
            vec(any::<u8>(), 0..64),
            vec(any::<u8>(), 0..64),
            vec(any::<[u8; 32]>(), 0..3)
        )
            .prop_map(|(d, client_cert_der, ca_cert_der, keys)| CollectorMessage::Enrolled(
                EnrollResponse::Accepted {
                    device_id: DeviceId(d),
                    client_cert_der,
                    ca_cert_der,
                    command_keys: keys.into_iter().map(PublicKey).collect(),
                }
            )),
        text().prop_map(|reason| CollectorMessage::Enrolled(EnrollResponse::Refused { reason })),
        (any::<u64>(), any::<u8>(), any::<u8>()).prop_map(|(t, ma, mi)| CollectorMessage::Welcome(Welcome {
            server_time_ms: t,
            protocol_major: ma,
            protocol_minor: mi
        })),
        (any::<u64>(), any::<u32>(), any::<u32>()).prop_map(|(batch_id, stored, duplicates)| CollectorMessage::Ack(
            Ack {
                batch_id,
                stored,
                duplicates
            }
        )),
        signed().prop_map(CollectorMessage::Command),
        signed().prop_map(CollectorMessage::RulePack),
        text().prop_map(|reason| CollectorMessage::Goodbye { reason }),
    ]
}

pub fn command_result() -> impl Strategy<Value = CommandResult> {
    (
        id128(),
        id128(),
        any::<u64>(),
        any::<u64>(),
        text(),
        proptest::option::of(vec(any::<u8>(), 0..32)),
    )
        .prop_map(|(c, d, seq, t, detail, attachment)| CommandResult {
            command_id: CommandId(c),
            device_id: DeviceId(d),
            seq,
            finished_at_ms: t,
            outcome: CommandOutcome::Failed { reason: detail.clone() },
            detail,
            attachment,
        })
}
