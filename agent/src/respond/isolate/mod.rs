//! Network isolation: one nftables table that belongs to Ward alone.
//!
//! An [`IsolationPlan`] (pinned collector addresses, DNS resolvers, extra allowed
//! destinations, DHCP on or off) is rendered by [`render`] into a ruleset for
//! `table inet ward_isolation` and loaded by [`Nft::apply`] with `nft -f -` in one
//! kernel transaction: the file deletes the table if present and creates it again,
//! so there is never a moment with half a ruleset. Base chains `input`, `output`
//! and `forward` hook at priority [`PRIORITY`] (-10, before the usual filter
//! tables at 0) with policy drop; a drop in any base chain is final in nftables,
//! so another table's `accept` cannot reopen what this one drops.
//!
//! What stays allowed: loopback; UDP (QUIC) to each pinned collector `IP:port`,
//! and back from exactly that tuple only as `ct state established`; DHCPv4
//! (67/68) and DHCPv6 (546/547) when enabled; DNS (UDP and TCP 53) to the
//! configured resolvers only; ICMPv6 neighbour discovery (inbound only with hop
//! limit 255, so off-link hosts cannot forge it); the extra allowed destinations
//! (out, and back as `ct state established`). There is no blanket
//! `ct state established,related accept`: sessions open before isolation (an
//! attacker's shell) die. The forward chain drops everything, so containers and
//! VMs routed through the host are isolated too.
//!
//! Lifecycle: [`isolate`] validates, checks (`nft -c`), applies, self-tests (the
//! caller's fresh authenticated collector round-trip must succeed within a
//! timeout, and a blocked address must not answer) and only then persists
//! [`IsolationState`] (`isolation.json` in the state dir); if the collector does
//! not answer it rolls back and says why. [`restore`] makes the kernel match the
//! state file on agent start (re-applies, or removes a leftover table). The
//! [`Guard`] returned by both is re-asserted every few seconds: a missing or
//! changed table is put back and reported as [`Reassert::Tampered`], so the
//! caller raises an alert. [`release`] and the offline [`break_glass_release`]
//! record the release first, then delete the table; a guard that finds the state
//! released (even by another process) stands down instead of re-applying.
//!
//! What this module must never do:
//! - touch any table other than `inet ward_isolation` (no `flush ruleset`, no
//!   edits to the host's firewall; release deletes exactly our table);
//! - spawn a shell: `nft` is run with [`std::process::Command`] and fixed
//!   arguments, the ruleset goes in on stdin;
//! - put user-controlled text into the ruleset: the renderer only takes parsed
//!   IP addresses, CIDRs and ports; domain names are resolved by the caller and
//!   never rendered.
//!
//! Not done here (by design or yet): `NFT_TABLE_F_OWNER`/persist flags (nft 1.0.6
//! on Debian 12 cannot set them); detecting another table that drops our
//! collector flow (the self-test catches its effect); keeping resolved domain
//! names current (the caller re-resolves and calls [`isolate`] with a new plan).
//!
//! Modules: [`cidr`] and [`plan`] (what stays reachable, and the renderer; pure),
//! [`nft`] (the driver), [`state`] (`isolation.json`), [`guard`], [`selftest`],
//! [`lifecycle`] (isolate, restore, release), [`breakglass`] (the offline release).

pub mod breakglass;
pub mod cidr;
pub mod guard;
pub mod lifecycle;
pub mod nft;
pub mod plan;
pub mod selftest;
pub mod state;

pub use breakglass::{BREAK_GLASS_USED_FILE, BreakGlassError, break_glass_release, break_glass_release_with};
pub use cidr::IpNet;
pub use guard::{Guard, Reassert, reassert};
pub use lifecycle::{Isolated, isolate, release, restore, restore_with};
pub use nft::{Fingerprint, Nft, NftError, TableStatus};
pub use plan::{AllowEntry, IsolationPlan, PlanError, render};
pub use selftest::{BlockedProbe, SelfTest, SelfTestReport, probe_blocked};
pub use state::{IsolateError, IsolationState, STATE_FILE};

/// The one table Ward owns. Nothing else is ever touched.
pub const TABLE: &str = "ward_isolation";
/// Base chain priority: before the conventional filter priority (0), so our drops
/// come first; a drop is final whatever the order.
pub const PRIORITY: i32 = -10;
