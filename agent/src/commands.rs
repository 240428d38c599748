//! Commands from the collector. Each is checked with `ward_protocol::authorize`
//! (pinned key, this device, not expired, sequence never reached, approvals)
//! before anything happens; the accepted sequence is persisted before the action
//! runs, so a replay after a restart is refused too; the action is carried out by
//! `respond::*`; and the outcome goes back signed by the device key. There is no
//! way to run anything but the closed set of actions.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tracing::{info, warn};
use ward_protocol::{
    Action, Command, CommandId, CommandOutcome, CommandPolicy, CommandResult, DeviceId, PublicKey, Refusal,
    SignatureKind, Signed, SigningKey, authorize,
};

use crate::identity::write_atomic;
use crate::respond::package::{PackageLimits, RecentChange};
use crate::respond::policy::PathPolicy;
use crate::respond::{file, package, process};
use crate::sensor::now_ms;

const COMMANDS_FILE: &str = "commands.json";
/// An investigation package must fit in one result frame with room to spare.
const MAX_PACKAGE_BYTES: usize = 768 * 1024;
/// Recent file changes kept for investigation packages.
pub const RECENT_CHANGES: usize = 2000;

#[derive(Debug, Default, Serialize, Deserialize)]
struct Persisted {
    last_seq: u64,
}

/// File changes seen lately, for investigation packages (bounded, oldest dropped).
pub type RecentChanges = Arc<Mutex<VecDeque<RecentChange>>>;

pub struct Executor {
    pub device_id: DeviceId,
    pub command_keys: Vec<PublicKey>,
    pub policy: CommandPolicy,
    pub path_policy: PathPolicy,
    pub quarantine_dir: PathBuf,
    pub state_dir: PathBuf,
    pub watched_paths: Vec<PathBuf>,
    pub recent: RecentChanges,
    /// Signs results.
    pub key: SigningKey,
    last_seq: u64,
}

impl std::fmt::Debug for Executor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Executor")
            .field("last_seq", &self.last_seq)
            .finish_non_exhaustive()
    }
}

/// The last accepted command sequence, as persisted in the state dir.
pub fn last_seq(state_dir: &Path) -> u64 {
    std::fs::read(state_dir.join(COMMANDS_FILE))
        .ok()
        .and_then(|b| serde_json::from_slice::<Persisted>(&b).ok())
        .map(|p| p.last_seq)
        .unwrap_or(0)
}

impl Executor {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        device_id: DeviceId,
        command_keys: Vec<PublicKey>,
        policy: CommandPolicy,
        state_dir: PathBuf,
        watched_paths: Vec<PathBuf>,
        recent: RecentChanges,
        key: SigningKey,
    ) -> Executor {
        let quarantine_dir = state_dir.join("quarantine");
        Executor {
            device_id,
            command_keys,
            policy,
            path_policy: PathPolicy::for_agent(&state_dir, &quarantine_dir),
            quarantine_dir,
            last_seq: last_seq(&state_dir),
            state_dir,
            watched_paths,
            recent,
            key,
        }
    }

    /// Checks, records and carries out one command; returns the signed result.
    pub async fn handle(&mut self, signed: &Signed) -> Signed {
        let now = now_ms();
        let result = match authorize(
            signed,
            &self.command_keys,
            self.device_id,
            self.last_seq,
            now,
            &self.policy,
        ) {
            Ok(command) => match self.record(command.seq) {
                Ok(()) => {
                    info!(id = %command.id, seq = command.seq, kind = command.action.kind().as_str(), "executing command");
                    let (outcome, detail, attachment) = self.execute(&command).await;
                    self.result(command.id, command.seq, outcome, detail, attachment)
                }
                Err(e) => self.result(
                    command.id,
                    command.seq,
                    CommandOutcome::Failed {
                        reason: format!("cannot record the command sequence: {e}"),
                    },
                    String::new(),
                    None,
                ),
            },
            Err(refusal) => {
                warn!(%refusal, "command refused");
                // Only a payload whose signature held is decoded, to name the refused command.
                let named: Option<Command> = match refusal {
                    Refusal::UnknownKey | Refusal::BadSignature | Refusal::Malformed => None,
                    _ => signed.open_with(SignatureKind::Command, &self.command_keys).ok(),
                };
                let (id, seq) = named.map(|c| (c.id, c.seq)).unwrap_or((CommandId::default(), 0));
                let detail = refusal.to_string();
                self.result(id, seq, CommandOutcome::Refused { reason: refusal }, detail, None)
            }
        };
        match self.key.sign_value(SignatureKind::CommandResult, &result) {
            Ok(s) => s,
            Err(e) => {
                warn!(error = %e, "result does not encode; sending it without its attachment");
                let mut slim = result;
                slim.attachment = None;
                self.key.sign(SignatureKind::CommandResult, postcard_or_empty(&slim))
            }
        }
    }

    fn record(&mut self, seq: u64) -> Result<(), crate::identity::IdentityError> {
        let bytes = serde_json::to_vec(&Persisted { last_seq: seq }).unwrap_or_default();
        write_atomic(&self.state_dir.join(COMMANDS_FILE), &bytes, 0o600)?;
        self.last_seq = seq;
        Ok(())
    }

    fn result(
        &self,
        command_id: CommandId,
        seq: u64,
        outcome: CommandOutcome,
        detail: String,
        attachment: Option<Vec<u8>>,
    ) -> CommandResult {
        CommandResult {
            command_id,
            device_id: self.device_id,
            seq,
            finished_at_ms: now_ms(),
            outcome,
            detail,
            attachment,
        }
    }

    async fn execute(&mut self, command: &Command) -> (CommandOutcome, String, Option<Vec<u8>>) {
        let policy = self.path_policy.clone();
        let qdir = self.quarantine_dir.clone();
        let action = command.action.clone();
        let watched = self.watched_paths.clone();
        let recent: Vec<RecentChange> = self
            .recent
            .lock()
            .map(|r| r.iter().cloned().collect())
            .unwrap_or_default();
        let run = tokio::task::spawn_blocking(move || -> Result<(String, Option<Vec<u8>>), String> {
            match action {
                Action::QuarantineFile { path, sha256 } => file::quarantine(Path::new(&path), &sha256, &policy, &qdir)
                    .map(|r| (json(&r), None))
                    .map_err(|e| e.to_string()),
                Action::RestoreFile { quarantine_id } => file::restore(&quarantine_id, &qdir, &policy)
                    .map(|r| (json(&r), None))
                    .map_err(|e| e.to_string()),
                Action::DeleteFile { path, sha256 } => file::delete(Path::new(&path), &sha256, &policy)
                    .map(|r| (json(&r), None))
                    .map_err(|e| e.to_string()),
                Action::KillProcess {
                    pid,
                    start_time_ms,
                    exe,
                    tree,
                } => process::kill(pid, start_time_ms, &exe, tree)
                    .map(|r| (json(&r), None))
                    .map_err(|e| e.to_string()),
                Action::CollectPackage => {
                    let limits = PackageLimits {
                        max_section_bytes: 128 * 1024,
                        ..PackageLimits::default()
                    };
                    let bytes = package::collect(&watched, &recent, &limits).map_err(|e| e.to_string())?;
                    if bytes.len() > MAX_PACKAGE_BYTES {
                        return Err(format!("package of {} bytes exceeds {MAX_PACKAGE_BYTES}", bytes.len()));
                    }
                    Ok((format!("investigation package, {} bytes", bytes.len()), Some(bytes)))
                }
                Action::Isolate { .. } | Action::Release => {
                    Err("network isolation is not available in this agent build".to_string())
                }
            }
        });
        match run.await {
            Ok(Ok((detail, attachment))) => (CommandOutcome::Succeeded, detail, attachment),
            Ok(Err(reason)) => (CommandOutcome::Failed { reason: reason.clone() }, reason, None),
            Err(e) => (
                CommandOutcome::Failed {
                    reason: format!("action panicked: {e}"),
                },
                String::new(),
                None,
            ),
        }
    }
}

fn json<T: Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

fn postcard_or_empty<T: Serialize>(v: &T) -> Vec<u8> {
    postcard::to_stdvec(v).unwrap_or_default()
}

/// Runs commands one at a time, in arrival order, sending each signed result on.
pub async fn run(mut executor: Executor, mut commands: mpsc::Receiver<Signed>, results: mpsc::Sender<Signed>) {
    while let Some(signed) = commands.recv().await {
        let result = executor.handle(&signed).await;
        if results.send(result).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use ring::rand::SystemRandom;
    use ward_protocol::{Approval, Id128};

    struct Setup {
        _dir: tempfile::TempDir,
        state: PathBuf,
        work: PathBuf,
        command_key: SigningKey,
        device_key_pkcs8: Vec<u8>,
        device: DeviceId,
    }

    fn setup() -> Setup {
        let dir = tempfile::Builder::new().prefix("ward-cmd").tempdir_in("/tmp").unwrap();
        let state = dir.path().join("state");
        let work = dir.path().join("work");
        std::fs::create_dir_all(&state).unwrap();
        std::fs::create_dir_all(&work).unwrap();
        let rng = SystemRandom::new();
        Setup {
            state,
            work,
            command_key: SigningKey::generate(&rng).unwrap().0,
            device_key_pkcs8: SigningKey::generate(&rng).unwrap().1,
            device: DeviceId(Id128::from_u128(77)),
            _dir: dir,
        }
    }

    fn executor(s: &Setup) -> Executor {
        Executor::new(
            s.device,
            vec![s.command_key.public_key()],
            CommandPolicy::default(),
            s.state.clone(),
            vec![s.work.clone()],
            Arc::new(Mutex::new(VecDeque::new())),
            SigningKey::from_pkcs8(&s.device_key_pkcs8).unwrap(),
        )
    }

    fn command(s: &Setup, seq: u64, action: Action) -> Command {
        let now = now_ms();
        Command {
            id: CommandId(Id128::from_u128(u128::from(seq))),
            device_id: s.device,
            seq,
            issued_at_ms: now,
            expires_at_ms: now + 60_000,
            action,
            approval: Approval {
                requested_by: "ann".into(),
                approved_by: vec!["bob".into()],
                reason: "test".into(),
            },
        }
    }

    fn open(s: &Setup, signed: &Signed) -> CommandResult {
        let device_key = SigningKey::from_pkcs8(&s.device_key_pkcs8).unwrap();
        signed
            .open(SignatureKind::CommandResult, &device_key.public_key())
            .unwrap()
    }

    fn sha(bytes: &[u8]) -> [u8; 32] {
        ring::digest::digest(&ring::digest::SHA256, bytes)
            .as_ref()
            .try_into()
            .unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn quarantine_restore_replay_and_refusals() {
        let s = setup();
        let mut ex = executor(&s);
        let target = s.work.join("payload.bin");
        std::fs::write(&target, b"evil bytes").unwrap();
        let quarantine = Action::QuarantineFile {
            path: target.display().to_string(),
            sha256: sha(b"evil bytes"),
        };
        let signed = s
            .command_key
            .sign_value(SignatureKind::Command, &command(&s, 1, quarantine))
            .unwrap();
        let result = open(&s, &ex.handle(&signed).await);
        assert_eq!(result.outcome, CommandOutcome::Succeeded, "{}", result.detail);
        assert_eq!((result.seq, result.device_id), (1, s.device));
        assert!(!target.exists());
        let record: serde_json::Value = serde_json::from_str(&result.detail).unwrap();

        // The same command again, even after a restart: refused as a replay, nothing happens.
        let mut restarted = executor(&s);
        let again = open(&s, &restarted.handle(&signed).await);
        assert!(matches!(
            again.outcome,
            CommandOutcome::Refused {
                reason: Refusal::Replayed { seq: 1, last_seq: 1 }
            }
        ));
        assert_eq!(again.command_id, CommandId(Id128::from_u128(1)));

        let restore = Action::RestoreFile {
            quarantine_id: record["id"].as_str().unwrap().to_string(),
        };
        let signed = s
            .command_key
            .sign_value(SignatureKind::Command, &command(&s, 2, restore))
            .unwrap();
        let result = open(&s, &restarted.handle(&signed).await);
        assert_eq!(result.outcome, CommandOutcome::Succeeded, "{}", result.detail);
        assert_eq!(std::fs::read(&target).unwrap(), b"evil bytes");

        // Signed by a key this device never pinned: refused without naming the command.
        let (rogue, _) = SigningKey::generate(&SystemRandom::new()).unwrap();
        let forged = rogue
            .sign_value(SignatureKind::Command, &command(&s, 3, Action::CollectPackage))
            .unwrap();
        let result = open(&s, &restarted.handle(&forged).await);
        assert_eq!(
            result.outcome,
            CommandOutcome::Refused {
                reason: Refusal::UnknownKey
            }
        );
        assert_eq!(result.command_id, CommandId::default());

        // A hash that does not match: the file stays where it is.
        let wrong = Action::DeleteFile {
            path: target.display().to_string(),
            sha256: [0; 32],
        };
        let signed = s
            .command_key
            .sign_value(SignatureKind::Command, &command(&s, 4, wrong))
            .unwrap();
        let result = open(&s, &restarted.handle(&signed).await);
        assert!(matches!(result.outcome, CommandOutcome::Failed { .. }), "{result:?}");
        assert!(target.exists());

        // An investigation package comes back as an attachment.
        let signed = s
            .command_key
            .sign_value(SignatureKind::Command, &command(&s, 5, Action::CollectPackage))
            .unwrap();
        let result = open(&s, &restarted.handle(&signed).await);
        assert_eq!(result.outcome, CommandOutcome::Succeeded, "{}", result.detail);
        let package: serde_json::Value = serde_json::from_slice(result.attachment.as_deref().unwrap()).unwrap();
        assert!(package.is_object());
    }
}
