//! The Ward collector: enrolls agents, ingests their signed alerts over QUIC,
//! stores them durably and serves the HTTP API. `main.rs` only parses arguments.

pub mod actions;
pub mod api;
pub mod config;
pub mod entity;
pub mod export;
pub mod feeds;
pub mod incidents;
pub mod ingest;
pub mod integrity;
pub mod metrics;
pub mod model;
pub mod pki;
pub mod readpool;
pub mod roles;
pub mod rule_context;
pub mod server;
pub mod setup;
pub mod store;
pub mod transport;
pub mod util;
