//! The protocol and detect crates stay sans-IO: no async runtime, QUIC, socket,
//! TLS or database crate among their normal dependencies (and, for detect, none of
//! the agent's sensor crates), so the collector can link both without the agent.

use std::process::Command;

/// Crates no sans-IO crate may depend on.
const IO_CRATES: [&str; 8] = [
    "tokio",
    "quinn",
    "quinn-proto",
    "mio",
    "socket2",
    "rusqlite",
    "rustls",
    "async-std",
];

/// The normal dependencies of `package`, by name, from `cargo tree`.
fn normal_dependencies(package: &str) -> Vec<String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args([
            "tree",
            "-p",
            package,
            "-e",
            "normal",
            "--prefix",
            "none",
            "--offline",
            "--locked",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo tree runs");
    assert!(
        out.status.success(),
        "cargo tree failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tree = String::from_utf8(out.stdout).unwrap();
    tree.lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

/// Fails naming the first of `banned` that `package` depends on; `expected` proves the
/// tree was read.
fn assert_free_of(package: &str, expected: &str, banned: &[&str]) {
    let crates = normal_dependencies(package);
    assert!(crates.iter().any(|c| c == expected), "unexpected tree: {crates:?}");
    for b in banned {
        assert!(!crates.iter().any(|c| c == b), "{package} depends on {b}:\n{crates:?}");
    }
}

#[test]
fn protocol_depends_on_no_io_crate() {
    assert_free_of("ward-protocol", "ring", &IO_CRATES);
}

#[test]
fn detect_depends_on_no_io_crate() {
    let mut banned = IO_CRATES.to_vec();
    banned.extend(["notify", "sysinfo", "ward-agent"]);
    assert_free_of("ward-detect", "rsigma-eval", &banned);
}
