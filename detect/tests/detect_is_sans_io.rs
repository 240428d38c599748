//! The detect crate stays free of IO crates: no async runtime, QUIC, socket, TLS,
//! database, file-watching or system-information crate among its normal dependencies,
//! so the collector can validate rule packs with it without linking the agent's sensors.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

#[test]
fn detect_depends_on_no_io_crate() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args([
            "tree",
            "-p",
            "ward-detect",
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
    let crates: Vec<&str> = tree.lines().filter_map(|l| l.split_whitespace().next()).collect();
    // The tree was read: the engine it wraps is there.
    assert!(crates.contains(&"rsigma-eval"), "unexpected tree: {tree}");
    for banned in [
        "tokio",
        "quinn",
        "quinn-proto",
        "mio",
        "socket2",
        "rusqlite",
        "rustls",
        "async-std",
        "notify",
        "sysinfo",
        "ward-agent",
    ] {
        assert!(!crates.contains(&banned), "ward-detect depends on {banned}:\n{tree}");
    }
}
