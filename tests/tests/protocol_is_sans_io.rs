//! The protocol crate stays sans-IO: no async runtime, QUIC, socket or database
//! crate among its normal dependencies.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

#[test]
fn protocol_depends_on_no_io_crate() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args([
            "tree",
            "-p",
            "ward-protocol",
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
    assert!(crates.contains(&"ring"), "unexpected tree: {tree}");
    for banned in [
        "tokio",
        "quinn",
        "quinn-proto",
        "mio",
        "socket2",
        "rusqlite",
        "rustls",
        "async-std",
    ] {
        assert!(!crates.contains(&banned), "ward-protocol depends on {banned}:\n{tree}");
    }
}
