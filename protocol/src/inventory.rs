//! What a device is: sent in heartbeats at start and whenever it changes.

use serde::{Deserialize, Serialize};

/// The device's self-description.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Inventory {
    pub hostname: String,
    pub os: String,
    pub kernel: String,
    pub addresses: Vec<String>,
    pub logged_on_users: Vec<String>,
    pub agent_version: String,
}

/// Whether the device's network is isolated by Ward.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum IsolationState {
    #[default]
    None,
    Isolated,
}

impl IsolationState {
    pub fn as_str(&self) -> &'static str {
        match self {
            IsolationState::None => "none",
            IsolationState::Isolated => "isolated",
        }
    }
}
