//! Response actions at the collector: analysts propose, approvers decide, the
//! collector signs the command and pushes it to the device, the device's signed
//! result closes the action. Everything is audited in the same transaction.
//!
//! - [`workflow`] — the state machine, pure and table-tested.
//! - [`transitions`] — the workflow applied to stored actions, one store transaction each.
//! - [`policy`] — the permission matrix: every action kind and workflow route.
//! - [`dispatch`] — signing and storing commands; results; expiry.
//! - [`delivery`] — pushing stored commands to sessions, in order, once per connection.
//! - [`automation`] — config rules that propose (and may auto-approve) actions from alerts.
//!
//! Carrying commands out is the agent's job; it authorizes each one again with
//! `ward_protocol::authorize` before anything happens.

pub mod automation;
pub mod delivery;
pub mod dispatch;
pub mod policy;
pub mod silence;
pub mod transitions;
pub mod workflow;

pub use dispatch::Dispatcher;

use crate::config::Config;

/// A parsed config's response settings checked against the domain's rules: the
/// permission table and the automation rules, compiled.
pub fn check_config(config: &Config) -> Result<(policy::Policy, Vec<automation::Rule>), String> {
    let policy = policy::Policy::from_config(&config.actions)?;
    let rules = automation::compile(&config.automation, &policy)?;
    Ok((policy, rules))
}
