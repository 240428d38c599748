//! Operator commands that prepare and administer a data dir while the server may
//! or may not be running: init, join tokens, users, device revocation.

use std::fs;
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::rand::SystemRandom;
use thiserror::Error;
use ward_protocol::{JoinToken, PublicKey, SignatureKind, SigningKey};

use crate::config::{Config, ConfigError};
use crate::pki::{self, CA_CERT, CA_KEY, PkiError, SERVER_CERT, SERVER_KEY};
use crate::store::prelude::*;
use crate::store::{AuditChainReport, Store, StoreError};
use crate::util::{now_ms, random_secret, sha256};

pub const DB_FILE: &str = "ward.db";
pub const COMMAND_KEY: &str = "command.key";

#[derive(Debug, Error)]
pub enum SetupError {
    #[error("{0} already exists and is not empty; refusing to overwrite a collector's data")]
    NotEmpty(PathBuf),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    Pki(#[from] PkiError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("{0}")]
    Invalid(String),
    #[error("the system random source failed")]
    Random,
}

/// Reads the settings file and checks its response settings against the domain's
/// rules (permission table, automation rules): every command refuses a config `serve`
/// would refuse.
pub fn load_config(path: &Path) -> Result<Config, ConfigError> {
    let config = Config::load_file(path)?;
    crate::actions::check_config(&config).map_err(|message| ConfigError::Invalid {
        path: path.to_path_buf(),
        message,
    })?;
    Ok(config)
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SetupError + '_ {
    move |source| SetupError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Writes a file readable by its owner only.
fn write_private(path: &Path, bytes: &[u8]) -> Result<(), SetupError> {
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io(path))?;
    f.write_all(bytes).map_err(io(path))?;
    f.sync_all().map_err(io(path))
}

/// A fresh API token: 32 random bytes, URL-safe.
fn new_api_token() -> Result<String, SetupError> {
    Ok(format!(
        "ward_{}",
        URL_SAFE_NO_PAD.encode(random_secret().map_err(|_| SetupError::Random)?)
    ))
}

/// The address `init` writes into a new config when none is given.
pub const DEFAULT_PUBLIC_ADDR: &str = "127.0.0.1:4433";

/// Creates a collector's data dir; returns the admin API token (shown once).
///
/// When `config_path` exists (the Debian package's /etc/ward/collector.toml) its
/// settings are used and it is left alone; its `public_addr` is then the one to edit,
/// so a `public_addr` argument is refused. Otherwise the documented template is written
/// there with `public_addr` (default [`DEFAULT_PUBLIC_ADDR`]).
pub fn init(data_dir: &Path, config_path: &Path, public_addr: Option<&str>) -> Result<String, SetupError> {
    if data_dir.exists() && fs::read_dir(data_dir).map_err(io(data_dir))?.next().is_some() {
        return Err(SetupError::NotEmpty(data_dir.to_path_buf()));
    }
    let existing = config_path.exists();
    let (config, new_config_text) = if existing {
        if public_addr.is_some() {
            return Err(SetupError::Invalid(format!(
                "{} exists: set public_addr there instead of --public-addr",
                config_path.display()
            )));
        }
        (load_config(config_path)?, None)
    } else {
        let text = Config::template(public_addr.unwrap_or(DEFAULT_PUBLIC_ADDR));
        (Config::parse(&text).map_err(SetupError::Invalid)?, Some(text))
    };
    let public_addr = config.public_addr.as_str();
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(data_dir)
        .map_err(io(data_dir))?;

    let host = public_addr
        .rsplit_once(':')
        .map(|(h, _)| h.trim_matches(['[', ']']))
        .unwrap_or("");
    let generated = pki::generate(&config.server_name, host)?;
    write_private(&data_dir.join(CA_KEY), &generated.ca_key_pkcs8)?;
    write_private(&data_dir.join(CA_CERT), &generated.ca_cert_der)?;
    write_private(&data_dir.join(SERVER_KEY), &generated.server_key_pkcs8)?;
    write_private(&data_dir.join(SERVER_CERT), &generated.server_cert_der)?;
    let (_, command_pkcs8) = SigningKey::generate(&SystemRandom::new()).map_err(|_| SetupError::Random)?;
    write_private(&data_dir.join(COMMAND_KEY), &command_pkcs8)?;
    if let Some(text) = new_config_text {
        write_private(config_path, text.as_bytes())?;
    }

    // An empty file is a new database to SQLite; made here so that it, and the -wal and
    // -shm files SQLite gives the same mode, are the owner's only whatever the umask.
    write_private(&data_dir.join(DB_FILE), b"")?;
    let store = Store::open(&data_dir.join(DB_FILE))?;
    let token = new_api_token()?;
    store.add_user("admin", "admin", &sha256(token.as_bytes()), now_ms())?;
    Ok(token)
}

/// Creates a join token valid for `uses` enrollments until `ttl_ms` from now.
pub fn create_join_token(
    data_dir: &Path,
    config_path: &Path,
    uses: u32,
    ttl_ms: u64,
    addr: Option<&str>,
) -> Result<String, SetupError> {
    if uses == 0 {
        return Err(SetupError::Invalid("--uses must be at least 1".into()));
    }
    let config = load_config(config_path)?;
    let ca = fs::read(data_dir.join(CA_CERT)).map_err(io(&data_dir.join(CA_CERT)))?;
    let secret = random_secret().map_err(|_| SetupError::Random)?;
    let now = now_ms();
    let store = Store::open(&data_dir.join(DB_FILE))?;
    store.create_enroll_token(&sha256(&secret), uses, now, now.saturating_add(ttl_ms))?;
    let token = JoinToken {
        collector_addr: addr.unwrap_or(&config.public_addr).to_string(),
        server_name: config.server_name,
        ca_sha256: pki::fingerprint(&ca),
        secret,
    };
    Ok(token.to_string())
}

/// Adds (or re-keys) an API user; returns the new token (shown once).
pub fn add_user(data_dir: &Path, name: &str, role: &str) -> Result<String, SetupError> {
    role.parse::<crate::roles::Role>().map_err(SetupError::Invalid)?;
    if name.is_empty() || name.len() > 64 || !name.chars().all(|c| c.is_ascii_alphanumeric() || "._-@".contains(c)) {
        return Err(SetupError::Invalid(
            "user names are 1-64 characters of letters, digits and . _ - @".into(),
        ));
    }
    let store = Store::open(&data_dir.join(DB_FILE))?;
    let token = new_api_token()?;
    store.add_user(name, role, &sha256(token.as_bytes()), now_ms())?;
    Ok(token)
}

/// Every user with their role and when they were added (`ward-collector user list`).
pub fn list_users(data_dir: &Path) -> Result<Vec<(String, String, i64)>, SetupError> {
    let store = Store::open(&data_dir.join(DB_FILE))?;
    Ok(store.list_users()?)
}

/// Recomputes the audit log's hash chain (`ward-collector audit verify`).
pub fn verify_audit(data_dir: &Path) -> Result<AuditChainReport, SetupError> {
    let store = Store::open(&data_dir.join(DB_FILE))?;
    Ok(store.verify_audit_chain()?)
}

/// Revokes a device; a running collector closes its connection within its poll interval.
pub fn revoke_device(data_dir: &Path, id: &str) -> Result<(), SetupError> {
    let id: ward_protocol::DeviceId = id
        .parse()
        .map_err(|_| SetupError::Invalid(format!("{id:?} is not a device id")))?;
    let store = Store::open(&data_dir.join(DB_FILE))?;
    if store.revoke_device(&id.to_string(), "cli", now_ms())? {
        Ok(())
    } else {
        Err(SetupError::Invalid(format!("no device {id}")))
    }
}

/// Validates every rule in `dir`, signs them as the next rule pack with the
/// command key and stores it; a running collector pushes it to agents. Any rule
/// that does not load refuses the whole push, with every reason listed.
pub fn push_rules(data_dir: &Path, dir: &Path) -> Result<PushedPack, SetupError> {
    let (files, mut errors) =
        ward_detect::load_dir(dir).map_err(|e| SetupError::Invalid(format!("{}: {e}", dir.display())))?;
    if files.is_empty() && errors.is_empty() {
        return Err(SetupError::Invalid(format!(
            "{} holds no .yml or .yaml rules",
            dir.display()
        )));
    }
    // Compiled by the agent's engine together with every shipped rule (on by default
    // or not) before anything is signed: duplicates of shipped ids and compile
    // failures count as much as parse errors.
    let mut all = ward_detect::shipped_rule_files();
    all.extend(files.iter().cloned());
    errors.extend(ward_detect::Detector::validate(&all));
    if !errors.is_empty() {
        let list: Vec<String> = errors.iter().map(|e| format!("  {e}")).collect();
        return Err(SetupError::Invalid(format!(
            "{} rule(s) refused, nothing pushed:\n{}",
            errors.len(),
            list.join("\n")
        )));
    }
    let key_pkcs8 = fs::read(data_dir.join(COMMAND_KEY)).map_err(io(&data_dir.join(COMMAND_KEY)))?;
    let key = SigningKey::from_pkcs8(&key_pkcs8).map_err(|e| SetupError::Invalid(format!("command key: {e}")))?;
    let store = Store::open(&data_dir.join(DB_FILE))?;
    let version = store.next_rule_pack_version()?;
    let pack = ward_protocol::RulePack {
        version,
        created_at_ms: now_ms(),
        rules: files,
    };
    let signed = key
        .sign_value(ward_protocol::SignatureKind::RulePack, &pack)
        .map_err(|e| SetupError::Invalid(format!("rule pack does not encode: {e}")))?;
    let bytes = postcard::to_stdvec(&signed).map_err(|e| SetupError::Invalid(e.to_string()))?;
    if bytes.len() as u64 > u64::from(ward_protocol::codec::MAX_COLLECTOR_FRAME) / 2 {
        return Err(SetupError::Invalid(format!(
            "rule pack of {} bytes is too large",
            bytes.len()
        )));
    }
    store.add_rule_pack(version, pack.rules.len(), &bytes, "cli", now_ms())?;
    // The rules' descriptions, references... for the alert page (the running
    // collector records them too when it sees the pack).
    let context = crate::rule_context::record_pack(&store, &pack, now_ms())?;
    Ok(PushedPack {
        version,
        rules: pack.rules.len(),
        context,
    })
}

/// What `rules push` did.
#[derive(Debug)]
pub struct PushedPack {
    pub version: u64,
    /// Rule files in the pack.
    pub rules: usize,
    /// The rules' context as recorded for the alert page, with what was cut.
    pub context: crate::rule_context::Recorded,
}

/// What a rotation did.
#[derive(Debug)]
pub struct Rotation {
    pub serial: u64,
    pub new_key: PublicKey,
    pub retire_at_ms: u64,
    /// The rule pack signed again with the new key, if one had been pushed.
    pub pack_version: Option<u64>,
}

/// Replaces the command key: a new key, announced to agents by a rollover signed
/// with the current one (sent at the start of every session), with the current
/// rule pack signed again by the new key. Agents accept the keys they pinned
/// before until `overlap_ms` from now. The running collector goes on signing with
/// the old key until it is restarted. Order: the new key goes to `command.key.next`
/// first, then the rollover into the database, then the rename; a failure before
/// the rename leaves the old key in charge.
pub fn rotate_command_key(data_dir: &Path, overlap_ms: u64) -> Result<Rotation, SetupError> {
    if overlap_ms == 0 {
        return Err(SetupError::Invalid("--overlap must be above zero".into()));
    }
    let key_path = data_dir.join(COMMAND_KEY);
    let old = SigningKey::from_pkcs8(&fs::read(&key_path).map_err(io(&key_path))?)
        .map_err(|e| SetupError::Invalid(format!("command key: {e}")))?;
    let rng = SystemRandom::new();
    let (new, new_pkcs8) = SigningKey::generate(&rng).map_err(|_| SetupError::Random)?;
    let store = Store::open(&data_dir.join(DB_FILE))?;
    let now = now_ms();
    let rollover = ward_protocol::KeyRollover {
        serial: store.next_key_serial()?,
        new_key: new.public_key(),
        retire_at_ms: now.saturating_add(overlap_ms),
        created_at_ms: now,
    };
    let signed = old
        .sign_value(SignatureKind::KeyRollover, &rollover)
        .and_then(|s| Ok(postcard::to_stdvec(&s)?))
        .map_err(|e| SetupError::Invalid(format!("rollover does not encode: {e}")))?;
    let pack = match store.latest_rule_pack()? {
        Some((_, bytes)) => {
            let signed: ward_protocol::Signed = ward_protocol::codec::decode_body(&bytes)
                .map_err(|e| SetupError::Invalid(format!("stored rule pack: {e}")))?;
            let mut pack: ward_protocol::RulePack = signed
                .open(SignatureKind::RulePack, &old.public_key())
                .map_err(|e| SetupError::Invalid(format!("stored rule pack is not signed by the command key: {e}")))?;
            pack.version = store.next_rule_pack_version()?;
            pack.created_at_ms = now;
            let resigned = new
                .sign_value(SignatureKind::RulePack, &pack)
                .and_then(|s| Ok(postcard::to_stdvec(&s)?))
                .map_err(|e| SetupError::Invalid(format!("rule pack does not encode: {e}")))?;
            Some((pack.version, pack.rules.len(), resigned))
        }
        None => None,
    };
    let next_path = data_dir.join(format!("{COMMAND_KEY}.next"));
    let _ = fs::remove_file(&next_path);
    write_private(&next_path, &new_pkcs8)?;
    if let Err(e) = store.add_key_rollover(
        &rollover,
        &signed,
        pack.as_ref().map(|(v, n, b)| (*v, *n, b.as_slice())),
    ) {
        let _ = fs::remove_file(&next_path);
        return Err(e.into());
    }
    fs::rename(&next_path, &key_path).map_err(|e| {
        SetupError::Invalid(format!(
            "the rollover is stored but {} could not replace {}: {e}; move it there by hand before restarting",
            next_path.display(),
            key_path.display()
        ))
    })?;
    Ok(Rotation {
        serial: rollover.serial,
        new_key: rollover.new_key,
        retire_at_ms: rollover.retire_at_ms,
        pack_version: pack.map(|(v, _, _)| v),
    })
}

/// A one-time token that lifts isolation on one device at its console, valid for
/// `ttl_ms` (at most 7 days), signed with the command key.
pub fn break_glass_token(data_dir: &Path, id: &str, ttl_ms: u64) -> Result<String, SetupError> {
    use ward_protocol::{BREAK_GLASS_MAX_VALIDITY_MS, BreakGlassToken};
    let device: ward_protocol::DeviceId = id
        .parse()
        .map_err(|_| SetupError::Invalid(format!("{id:?} is not a device id")))?;
    if ttl_ms == 0 || ttl_ms > BREAK_GLASS_MAX_VALIDITY_MS {
        return Err(SetupError::Invalid("--ttl must be above zero and at most 7d".into()));
    }
    let store = Store::open(&data_dir.join(DB_FILE))?;
    if store.get_device(&device.to_string())?.is_none() {
        return Err(SetupError::Invalid(format!("no device {device}")));
    }
    let key_pkcs8 = fs::read(data_dir.join(COMMAND_KEY)).map_err(io(&data_dir.join(COMMAND_KEY)))?;
    let key = SigningKey::from_pkcs8(&key_pkcs8).map_err(|e| SetupError::Invalid(format!("command key: {e}")))?;
    let secret = random_secret().map_err(|_| SetupError::Random)?;
    let mut nonce = [0u8; 16];
    nonce.copy_from_slice(&secret[..16]);
    let token = BreakGlassToken::new(device, now_ms().saturating_add(ttl_ms), nonce)
        .sign(&key)
        .map_err(|e| SetupError::Invalid(e.to_string()))?;
    store.audit(
        "cli",
        "device.break_glass_issued",
        &device.to_string(),
        &format!("valid {ttl_ms} ms"),
        now_ms(),
    )?;
    Ok(token)
}

/// Imports an identity or mailbox feed file into the data dir's database
/// (`ward-collector import identity|mailbox FILE`) with the limits of the config at
/// `config_path` (as `serve` resolves it); the file's size is checked before it is
/// read. The outcome is logged as the API's import logs it.
pub fn import_feed(
    data_dir: &Path,
    config_path: &Path,
    feed: crate::feeds::Feed,
    file: &Path,
) -> Result<crate::feeds::ImportReport, SetupError> {
    use crate::feeds::FeedError;
    const ACTOR: &str = "cli";
    let config = load_config(config_path)?;
    let limit = config.feeds.max_import_bytes;
    let size = fs::metadata(file).map_err(io(file))?.len();
    let result = if size > limit as u64 {
        Err(FeedError::TooLarge {
            size: usize::try_from(size).unwrap_or(usize::MAX),
            limit,
        })
    } else {
        let bytes = fs::read(file).map_err(io(file))?;
        let mut store = Store::open(&data_dir.join(DB_FILE))?;
        crate::feeds::import(&mut store, feed, &bytes, &config.feeds, ACTOR, now_ms())
    };
    crate::feeds::log_outcome(feed, ACTOR, &result);
    result.map_err(|e| match e {
        FeedError::Store(e) => SetupError::Store(e),
        FeedError::TooLarge { .. } => SetupError::Invalid(format!(
            "{}: {e} (feeds.max_import_bytes in {})",
            file.display(),
            config_path.display()
        )),
        other => SetupError::Invalid(format!("{}: {other}", file.display())),
    })
}

pub fn list_devices(data_dir: &Path) -> Result<Vec<crate::store::DeviceView>, SetupError> {
    Ok(Store::open(&data_dir.join(DB_FILE))?.list_devices()?)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::config::CONFIG_FILE;

    #[test]
    fn init_uses_an_existing_config_outside_the_data_dir_and_leaves_it_alone() {
        let dir = tempfile::tempdir().unwrap();
        let etc = dir.path().join("collector.toml");
        let text = Config::template("collector.example:4433");
        fs::write(&etc, &text).unwrap();
        let data = dir.path().join("data");
        let refused = init(&data, &etc, Some("10.0.0.1:4433")).unwrap_err();
        assert!(refused.to_string().contains("set public_addr there"), "{refused}");
        assert!(!data.exists(), "a refused init must not create the data dir");

        init(&data, &etc, None).unwrap();
        assert_eq!(fs::read_to_string(&etc).unwrap(), text);
        assert!(!data.join(CONFIG_FILE).exists());
        let token: JoinToken = create_join_token(&data, &etc, 1, 60_000, None)
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(token.collector_addr, "collector.example:4433");
        // The server certificate names the configured public host, so agents can verify it.
        let cert = fs::read(data.join(SERVER_CERT)).unwrap();
        assert!(
            cert.windows(b"collector.example".len())
                .any(|w| w == b"collector.example")
        );
    }

    #[test]
    fn init_writes_a_missing_config_where_it_is_told() {
        let dir = tempfile::tempdir().unwrap();
        let etc = dir.path().join("etc-collector.toml");
        init(&dir.path().join("data"), &etc, None).unwrap();
        assert_eq!(fs::read_to_string(&etc).unwrap(), Config::template(DEFAULT_PUBLIC_ADDR));
    }

    #[test]
    fn init_refuses_to_overwrite_and_tokens_parse() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("c");
        let config = data.join(CONFIG_FILE);
        let admin = init(&data, &config, Some("127.0.0.1:4433")).unwrap();
        assert!(admin.starts_with("ward_"));
        assert!(matches!(init(&data, &config, None), Err(SetupError::NotEmpty(_))));
        for private in [CA_KEY, COMMAND_KEY, DB_FILE] {
            let mode = fs::metadata(data.join(private)).unwrap().permissions();
            assert_eq!(
                std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
                0o600,
                "{private}"
            );
        }

        let token: JoinToken = create_join_token(&data, &config, 2, 60_000, None)
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(token.collector_addr, "127.0.0.1:4433");
        assert_eq!(
            token.ca_sha256,
            pki::fingerprint(&fs::read(data.join(CA_CERT)).unwrap())
        );
        assert!(create_join_token(&data, &config, 0, 60_000, None).is_err());
        assert!(add_user(&data, "eve", "root").is_err());
        assert!(add_user(&data, "alice", "analyst").unwrap().starts_with("ward_"));
    }

    #[test]
    fn import_uses_the_config_it_is_given_not_the_data_dirs() {
        let dir = tempfile::tempdir().unwrap();
        let etc = dir.path().join("etc-collector.toml");
        let text = Config::template("collector.example:4433")
            .replace("max_import_bytes = 67108864", "max_import_bytes = 2000")
            .replace("max_record_bytes = 1048576", "max_record_bytes = 2000");
        fs::write(&etc, text).unwrap();
        let data = dir.path().join("data");
        init(&data, &etc, None).unwrap();
        let file = dir.path().join("okta.json");
        let event = serde_json::json!({"uuid": "e1", "published": "2024-05-01T10:00:00.000Z",
            "eventType": "user.session.start", "actor": {"alternateId": "bob@contoso.com", "type": "User"},
            "outcome": {"result": "SUCCESS"}, "client": {"ipAddress": "203.0.113.7"}});
        fs::write(&file, event.to_string()).unwrap();
        let report = import_feed(&data, &etc, crate::feeds::Feed::Identity, &file).unwrap();
        assert_eq!(report.imported, 1);

        // The limit is the given config's, and the error names where it is set.
        fs::write(&file, vec![b' '; 2001]).unwrap();
        let err = import_feed(&data, &etc, crate::feeds::Feed::Identity, &file)
            .unwrap_err()
            .to_string();
        assert!(err.contains("2001 bytes; at most 2000"), "{err}");
        assert!(
            err.contains(&format!("feeds.max_import_bytes in {}", etc.display())),
            "{err}"
        );

        // There is no collector.toml in the data dir to fall back on.
        let missing = import_feed(&data, &data.join(CONFIG_FILE), crate::feeds::Feed::Identity, &file).unwrap_err();
        assert!(
            matches!(missing, SetupError::Config(ConfigError::Read { .. })),
            "{missing}"
        );
    }
}
