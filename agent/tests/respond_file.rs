//! Quarantine, restore and delete against a real filesystem: byte-for-byte round trips,
//! refusals (hash, `..`, relative, symlinks, protected paths, the agent's own files), shell
//! metacharacters taken literally, a TOCTOU swap race that must never touch a canary
//! outside the allowed roots, and 10,000 generated paths against the policy.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use proptest::prelude::*;
use ward_agent::respond::file::{FileActionError, delete, quarantine, restore};
use ward_agent::respond::policy::{PathPolicy, Refusal};

fn sha(bytes: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, bytes).as_ref());
    out
}

struct Tree {
    _dir: tempfile::TempDir,
    root: PathBuf,
    allowed: PathBuf,
    outside: PathBuf,
    qdir: PathBuf,
    state: PathBuf,
    policy: PathPolicy,
}

fn tree() -> Tree {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().canonicalize().unwrap();
    let allowed = root.join("allowed");
    let outside = root.join("outside");
    let state = allowed.join("state");
    let qdir = root.join("quarantine");
    for d in [&allowed, &outside, &state] {
        std::fs::create_dir_all(d).unwrap();
    }
    let policy = PathPolicy {
        allowed_roots: vec![allowed.clone(), PathBuf::from("/dev/shm")],
        protected: vec![
            PathBuf::from("/proc"),
            PathBuf::from("/sys"),
            PathBuf::from("/dev"),
            PathBuf::from("/boot"),
            state.clone(),
            qdir.clone(),
        ],
    };
    Tree {
        _dir: dir,
        root,
        allowed,
        outside,
        qdir,
        state,
        policy,
    }
}

#[test]
fn quarantine_then_restore_keeps_bytes_owner_and_mode() {
    let t = tree();
    let p = t.allowed.join("dropper");
    let bytes: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(&p, &bytes).unwrap();
    std::os::unix::fs::chown(&p, Some(1234), Some(5678)).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o2750)).unwrap();

    let rec = quarantine(&p, &sha(&bytes), &t.policy, &t.qdir).unwrap();
    assert!(!p.exists());
    assert_eq!(
        (rec.uid, rec.gid, rec.mode, rec.size),
        (1234, 5678, 0o2750, bytes.len() as u64)
    );
    let stored = t.qdir.join(&rec.id);
    assert_eq!(
        std::fs::metadata(&stored).unwrap().mode() & 0o7777,
        0o640,
        "exec bits stripped"
    );
    let json = std::fs::read(t.qdir.join(format!("{}.json", rec.id))).unwrap();
    let on_disk: serde_json::Value = serde_json::from_slice(&json).unwrap();
    assert_eq!(on_disk["original_path"], p.display().to_string());

    restore(&rec.id, &t.qdir, &t.policy).unwrap();
    let meta = std::fs::metadata(&p).unwrap();
    assert_eq!(std::fs::read(&p).unwrap(), bytes);
    assert_eq!((meta.uid(), meta.gid(), meta.mode() & 0o7777), (1234, 5678, 0o2750));
    assert!(!stored.exists());
}

#[test]
fn quarantine_across_filesystems_copies_and_restores() {
    // /dev/shm is a tmpfs; the quarantine directory is not (on most machines).
    let t = tree();
    let shm = tempfile::tempdir_in("/dev/shm").unwrap();
    let p = shm.path().join("payload.sh");
    std::fs::write(&p, b"#!/bin/sh\necho owned\n").unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    let rec = quarantine(&p, &sha(b"#!/bin/sh\necho owned\n"), &t.policy, &t.qdir).unwrap();
    assert!(!p.exists());
    assert_eq!(std::fs::metadata(t.qdir.join(&rec.id)).unwrap().mode() & 0o111, 0);
    restore(&rec.id, &t.qdir, &t.policy).unwrap();
    assert_eq!(std::fs::read(&p).unwrap(), b"#!/bin/sh\necho owned\n");
    assert_eq!(std::fs::metadata(&p).unwrap().mode() & 0o7777, 0o755);
}

#[test]
fn hash_mismatch_refuses_and_changes_nothing() {
    let t = tree();
    let p = t.allowed.join("f");
    std::fs::write(&p, b"content").unwrap();
    let before = std::fs::metadata(&p).unwrap();
    let err = quarantine(&p, &sha(b"other"), &t.policy, &t.qdir).unwrap_err();
    assert!(matches!(err, FileActionError::HashMismatch { .. }), "{err}");
    assert!(err.to_string().contains("nothing was changed"));
    assert!(matches!(
        delete(&p, &sha(b"other"), &t.policy),
        Err(FileActionError::HashMismatch { .. })
    ));
    let after = std::fs::metadata(&p).unwrap();
    assert_eq!((before.ino(), before.mode()), (after.ino(), after.mode()));
    assert_eq!(std::fs::read(&p).unwrap(), b"content");
    assert_eq!(std::fs::read_dir(&t.qdir).unwrap().count(), 0);
}

#[test]
fn bad_paths_are_refused() {
    let t = tree();
    std::fs::write(t.outside.join("secret"), b"s").unwrap();
    std::fs::write(t.state.join("device.key"), b"k").unwrap();
    std::os::unix::fs::symlink(&t.outside, t.allowed.join("escape")).unwrap();
    std::os::unix::fs::symlink(t.outside.join("secret"), t.allowed.join("final-link")).unwrap();
    let h = sha(b"s");
    let a = t.allowed.display().to_string();
    let cases: Vec<(String, &str)> = vec![
        (format!("{a}/../outside/secret"), "dot"),
        ("allowed/secret".into(), "relative"),
        (format!("{a}/escape/secret"), "resolved-outside"),
        (format!("{a}/final-link"), "symlink"),
        ("/proc/self/environ".into(), "outside"),
        ("/proc/self/root/etc/passwd".into(), "outside"),
        ("/dev/sda".into(), "outside"),
        (format!("{a}/state/device.key"), "protected"),
        (t.outside.join("secret").display().to_string(), "outside"),
    ];
    for (path, why) in cases {
        let q = quarantine(Path::new(&path), &h, &t.policy, &t.qdir);
        let d = delete(Path::new(&path), &h, &t.policy);
        for r in [q.map(|_| ()), d.map(|_| ())] {
            let e = r.expect_err(&path);
            let ok = match why {
                "dot" => matches!(e, FileActionError::Refused(Refusal::DotComponent(_))),
                "relative" => matches!(e, FileActionError::Refused(Refusal::Relative(_))),
                "resolved-outside" => {
                    matches!(e, FileActionError::Refused(Refusal::ResolvedOutsideAllowedRoots { .. }))
                }
                "symlink" => matches!(e, FileActionError::Symlink { .. }),
                "outside" => matches!(e, FileActionError::Refused(Refusal::OutsideAllowedRoots(_))),
                "protected" => matches!(e, FileActionError::Refused(Refusal::Protected { .. })),
                _ => false,
            };
            assert!(ok, "{path}: unexpected {e}");
        }
    }
    assert_eq!(std::fs::read(t.outside.join("secret")).unwrap(), b"s");
    assert_eq!(std::fs::read(t.state.join("device.key")).unwrap(), b"k");
}

#[test]
fn the_agents_own_files_are_protected_by_default() {
    // The default roots include /tmp, where the temporary state dir lives.
    let state = tempfile::tempdir_in("/tmp").unwrap();
    let state_dir = state.path().canonicalize().unwrap();
    let qdir = state_dir.join("quarantine");
    let policy = PathPolicy::for_agent(&state_dir, &qdir);
    let key = state_dir.join("device.key");
    std::fs::write(&key, b"k").unwrap();
    assert!(matches!(
        delete(&key, &sha(b"k"), &policy),
        Err(FileActionError::Refused(Refusal::Protected { .. }))
    ));
    // A hard link to a protected file elsewhere is the same file.
    let other = tempfile::tempdir_in("/tmp").unwrap();
    let exe_link = other.path().join("agent-copy");
    let protected_file = state_dir.join("agent-binary");
    std::fs::write(&protected_file, b"elf").unwrap();
    std::fs::hard_link(&protected_file, &exe_link).unwrap();
    let mut policy = policy;
    policy.protected.push(protected_file.clone());
    assert!(matches!(
        delete(&exe_link, &sha(b"elf"), &policy),
        Err(FileActionError::ProtectedObject { .. })
    ));
    assert!(exe_link.exists() && key.exists());
}

#[test]
fn shell_metacharacters_are_taken_literally() {
    let t = tree();
    let cwd_marker = std::env::current_dir().unwrap().join("pwned");
    // With its slash, `; rm -rf /` ends the path in a directory: refused as naming no file.
    let slash = format!("{}/x; rm -rf /", t.allowed.display());
    assert!(matches!(
        delete(Path::new(&slash), &sha(b""), &t.policy),
        Err(FileActionError::Refused(Refusal::NoFileName(_)))
    ));
    // A path that reads like two commands is one path, which does not exist.
    let two = format!("{}/a; rm -rf {}", t.allowed.display(), t.outside.display());
    assert!(matches!(
        delete(Path::new(&two), &sha(b""), &t.policy),
        Err(FileActionError::Refused(Refusal::ParentUnresolvable { .. }))
    ));
    for name in ["x; rm -rf ~", "$(touch pwned)", "`touch pwned`", "a|b&&c>d", "x\ny"] {
        let p = t.allowed.join(name);
        std::fs::write(&p, name.as_bytes()).unwrap();
        let rec = quarantine(&p, &sha(name.as_bytes()), &t.policy, &t.qdir).unwrap();
        assert!(!p.exists());
        assert_eq!(rec.original_path(), Some(p.clone()));
        restore(&rec.id, &t.qdir, &t.policy).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), name.as_bytes());
        delete(&p, &sha(name.as_bytes()), &t.policy).unwrap();
    }
    assert!(!cwd_marker.exists());
    assert!(!t.allowed.join("pwned").exists());
    assert!(!t.root.join("pwned").exists());
}

#[test]
fn toctou_swap_race_never_touches_the_symlink_target() {
    let t = tree();
    let canary = t.outside.join("canary");
    let content = b"same bytes as the target".to_vec();
    std::fs::write(&canary, &content).unwrap();
    let canary_ino = std::fs::metadata(&canary).unwrap().ino();
    let target = t.allowed.join("target");
    let stop = Arc::new(AtomicBool::new(false));

    let swapper = {
        let (stop, allowed, canary, content, target) = (
            stop.clone(),
            t.allowed.clone(),
            canary.clone(),
            content.clone(),
            target.clone(),
        );
        std::thread::spawn(move || {
            let (tmp_file, tmp_link) = (allowed.join(".f"), allowed.join(".l"));
            let mut swaps = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let _ = std::fs::remove_file(&tmp_file);
                std::fs::write(&tmp_file, &content).unwrap();
                std::fs::rename(&tmp_file, &target).unwrap();
                std::thread::sleep(std::time::Duration::from_micros(300));
                let _ = std::fs::remove_file(&tmp_link);
                std::os::unix::fs::symlink(&canary, &tmp_link).unwrap();
                std::fs::rename(&tmp_link, &target).unwrap();
                std::thread::sleep(std::time::Duration::from_micros(100));
                swaps += 1;
            }
            swaps
        })
    };

    let h = sha(&content);
    let (mut ok, mut refused) = (0, 0);
    let mut reasons: std::collections::BTreeMap<String, u32> = Default::default();
    for i in 0..3000 {
        let r = if i % 2 == 0 {
            quarantine(&target, &h, &t.policy, &t.qdir).map(|_| ())
        } else {
            delete(&target, &h, &t.policy).map(|_| ())
        };
        match r {
            Ok(()) => ok += 1,
            Err(e) => {
                refused += 1;
                let key = format!("{e:?}")
                    .split([' ', '(', '{'])
                    .next()
                    .unwrap_or_default()
                    .to_string();
                *reasons.entry(key).or_default() += 1;
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    let swaps = swapper.join().unwrap();

    let meta = std::fs::symlink_metadata(&canary).unwrap();
    assert!(meta.file_type().is_file());
    assert_eq!(meta.ino(), canary_ino);
    assert_eq!(meta.nlink(), 1, "nothing linked to the canary");
    assert_eq!(std::fs::read(&canary).unwrap(), content);
    // Everything in quarantine is a regular file with the verified content, never a symlink.
    for e in std::fs::read_dir(&t.qdir).unwrap() {
        let e = e.unwrap();
        let m = std::fs::symlink_metadata(e.path()).unwrap();
        assert!(m.file_type().is_file(), "{:?}", e.path());
        if !e.file_name().to_string_lossy().ends_with(".json") {
            assert_eq!(std::fs::read(e.path()).unwrap(), content);
            assert_ne!(m.ino(), canary_ino);
        }
    }
    eprintln!("race: {swaps} swaps, {ok} actions done, {refused} refused: {reasons:?}");
    assert!(
        ok > 0 && refused > 0,
        "the race should exercise both outcomes: {ok} ok, {refused} refused"
    );
}

/// Path fragments, hostile and ordinary.
fn segment() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("..".to_string()),
        Just(".".to_string()),
        Just(String::new()),
        Just("allowed".to_string()),
        Just("outside".to_string()),
        Just("state".to_string()),
        Just("escape".to_string()),
        Just("to-proc".to_string()),
        Just("to-root".to_string()),
        Just("sub".to_string()),
        Just("proc".to_string()),
        Just("self".to_string()),
        Just("dev".to_string()),
        Just("shm".to_string()),
        Just("etc".to_string()),
        Just("passwd".to_string()),
        Just("; rm -rf /".to_string()),
        Just("$(x)".to_string()),
        Just("a\0b".to_string()),
        "[a-z.]{1,6}",
    ]
}

#[test]
fn policy_never_accepts_outside_or_protected() {
    let t = tree();
    std::fs::create_dir(t.allowed.join("sub")).unwrap();
    std::os::unix::fs::symlink(&t.outside, t.allowed.join("escape")).unwrap();
    std::os::unix::fs::symlink("/proc/self", t.allowed.join("to-proc")).unwrap();
    std::os::unix::fs::symlink("/", t.allowed.join("sub/to-root")).unwrap();
    std::os::unix::fs::symlink(&t.state, t.allowed.join("sub/state-link")).unwrap();
    let allowed_roots: Vec<PathBuf> = vec![t.allowed.clone(), PathBuf::from("/dev/shm")];
    let protected: Vec<PathBuf> = ["/proc", "/sys", "/boot"]
        .iter()
        .map(PathBuf::from)
        .chain([t.state.clone(), t.qdir.clone()])
        .collect();
    let prefixes = [
        String::new(),
        "/".to_string(),
        format!("{}/", t.root.display()),
        format!("{}/", t.allowed.display()),
        format!("{}/sub/", t.allowed.display()),
        "/dev/".to_string(),
        "/dev/shm/".to_string(),
        "/proc/self/".to_string(),
    ];
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: 10_000,
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    let strategy = (0..prefixes.len(), proptest::collection::vec(segment(), 0..6));
    let accepted = std::sync::atomic::AtomicU32::new(0);
    runner
        .run(&strategy, |(prefix, segs)| {
            let raw = format!("{}{}", prefixes[prefix], segs.join("/"));
            let path = Path::new(&raw);
            if let Ok(c) = t.policy.check(path) {
                accepted.fetch_add(1, Ordering::Relaxed);
                // Independently of the implementation: literal, resolved, inside, not protected.
                prop_assert!(raw.starts_with('/') && !raw.contains('\0'));
                prop_assert!(!raw.split('/').any(|s| s == "." || s == ".."));
                let parent = path.parent().unwrap().canonicalize().unwrap();
                let real = parent.join(path.file_name().unwrap());
                prop_assert_eq!(&real, &c.resolved());
                prop_assert!(
                    allowed_roots.iter().any(|r| real.starts_with(r) && &real != r),
                    "{} resolves outside: {}",
                    raw,
                    real.display()
                );
                prop_assert!(
                    !protected.iter().any(|p| real.starts_with(p) || path.starts_with(p)),
                    "{} is protected",
                    raw
                );
                prop_assert!(
                    !real.starts_with("/dev") || real.starts_with("/dev/shm"),
                    "{} is in /dev",
                    raw
                );
            }
            Ok(())
        })
        .unwrap();
    let accepted = accepted.load(Ordering::Relaxed);
    assert!(
        accepted > 100,
        "the generator should also produce acceptable paths ({accepted})"
    );
}
