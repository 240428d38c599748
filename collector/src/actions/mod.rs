//! Response actions at the collector: analysts propose, approvers decide, the
//! collector signs the command and pushes it to the device, the device's signed
//! result closes the action. Everything is audited in the same transaction.
//!
//! - [`workflow`] — the state machine, pure and table-tested.
//! - [`transitions`] — the workflow applied to stored actions, one store transaction each.
//! - [`policy`] — the permission matrix: who may propose and decide each kind, approvals, expiry.
//! - [`dispatch`] — signing and storing commands; results; expiry.
//! - [`delivery`] — pushing stored commands to sessions, in order, once per connection.
//! - [`automation`] — config rules that propose (and may auto-approve) actions from alerts.
//!
//! The flow: an analyst proposes (`POST /api/v1/actions`, optionally naming an
//! incident); approvers other than the requester (unless the kind allows it) approve
//! until the kind's number of distinct approvers is reached; in one transaction the
//! collector takes the device's next command sequence, signs the command (its
//! approval lists every approver) with the command key, stores and audits it; then
//! it is pushed on the device's session, or when the device reconnects, until it
//! expires (3 days by default; proposals expire after 7). Before welcoming a session
//! the collector moves the device's sequence up to the last one the agent says it
//! accepted, if that is ahead (a database restored from an older backup), so new
//! commands are not refused as replays.
//!
//! Carrying commands out is the agent's job; it authorizes each one again with
//! `ward_protocol::authorize` (its own per-kind minimum of approvers other than the
//! requester) before anything happens, persists the sequence, acts, and sends a result
//! signed by the device key, which the collector verifies before storing it.

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
