//! Ward's end-to-end suites, one module each, in one test binary: they start the real
//! collector and agent binaries (`cargo build --workspace` first) on loopback with
//! temporary directories. One binary links collector and agent once instead of once
//! per suite.
//!
//! - [`privileged`] — suites that need root or unprivileged user namespaces (network
//!   and mount namespaces of their own: nftables, veth pairs, small tmpfs disks);
//!   other suites keep such tests in a `privileged` module of their own.
//! - [`browser`] — the console in a real headless Chromium.
//!
//! `cargo quick` (an alias in `.cargo/config.toml`) runs every test of the workspace
//! but those two kinds: `--skip privileged:: --skip browser::`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod actions_policy;
mod agent;
mod agent_durability;
mod alert_page;
mod api_errors;
mod automation;
mod cli;
mod collector;
mod collector_actions;
mod collector_config_flag;
mod collector_https;
mod export;
mod export_ocsf;
mod feeds;
mod feeds_endpoint;
mod floods;
mod grouping_quality;
mod incidents;
mod key_rotation;
mod lineage;
mod response;
mod rogue_devices;
mod sans_io;
mod security;

/// Suites that need root or unprivileged user namespaces.
mod privileged {
    mod attackbench;
    mod ebpf_sensors;
    mod isolation_three_hosts;
    mod response_isolation;
    mod sensitive_file_access;
    mod storage_failure;
}

/// Suites that drive a real headless Chromium.
mod browser {
    mod alert_page;
    mod console;
    mod devices;
    mod health;
    mod hunt;
    mod layout;
    mod queue;
}
