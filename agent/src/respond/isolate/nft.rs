//! The `nft` driver: runs the binary with fixed arguments and the ruleset on stdin
//! (never a shell), applies in one kernel transaction, lists, fingerprints and
//! deletes exactly `table inet ward_isolation`.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::TABLE;

/// Deletes our table if present, in one transaction (creating an empty table is a
/// no-op when it exists, so the delete never fails on absence). nft 1.0.6 has no
/// `destroy table`.
pub(super) const DELETE_IF_PRESENT: &str = "table inet ward_isolation {}\ndelete table inet ward_isolation\n";

#[derive(Debug, Error)]
pub enum NftError {
    #[error("cannot run {program}: {source}")]
    Spawn { program: PathBuf, source: std::io::Error },
    #[error("`nft {args}` failed ({status}): {stderr}")]
    Failed {
        args: String,
        status: String,
        stderr: String,
    },
    #[error("`nft {args}` printed output that is not UTF-8")]
    NotUtf8 { args: String },
}

/// A SHA-256 of the normalised `nft list table inet ward_isolation`, taken right
/// after applying; a later listing with another digest means the table changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fingerprint(pub String);

impl Fingerprint {
    pub fn of_listing(listing: &str) -> Fingerprint {
        let normalised = normalise_listing(listing);
        let d = ring::digest::digest(&ring::digest::SHA256, normalised.as_bytes());
        Fingerprint(hex::encode(d.as_ref()))
    }
}

/// Trims lines, drops blank ones and `# handle` annotations.
fn normalise_listing(listing: &str) -> String {
    listing
        .lines()
        .map(|l| match l.find("# handle") {
            Some(i) => l[..i].trim(),
            None => l.trim(),
        })
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("\n")
}

/// How the live table compares with what we applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableStatus {
    Intact,
    Missing,
    Changed,
}

/// Runs the `nft` binary: no shell, fixed arguments, rulesets on stdin, a clean
/// environment (`LC_ALL=C`).
#[derive(Debug, Clone)]
pub struct Nft {
    program: PathBuf,
}

impl Default for Nft {
    fn default() -> Self {
        Nft::new()
    }
}

impl Nft {
    /// The system `nft`, looked up in the usual sbin directories (not `$PATH`,
    /// which a tampered environment could point elsewhere); plain `nft` if none exists.
    pub fn new() -> Nft {
        let program = ["/usr/sbin/nft", "/sbin/nft", "/usr/bin/nft", "/bin/nft"]
            .iter()
            .map(PathBuf::from)
            .find(|p| p.is_file())
            .unwrap_or_else(|| PathBuf::from("nft"));
        Nft { program }
    }

    pub fn with_program(program: impl Into<PathBuf>) -> Nft {
        Nft {
            program: program.into(),
        }
    }

    pub fn program(&self) -> &Path {
        &self.program
    }

    fn run(&self, args: &[&str], stdin: Option<&str>) -> Result<String, NftError> {
        let joined = args.join(" ");
        let mut cmd = Command::new(&self.program);
        cmd.args(args)
            .env_clear()
            .env("LC_ALL", "C")
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let spawn_err = |source| NftError::Spawn {
            program: self.program.clone(),
            source,
        };
        let mut child = cmd.spawn().map_err(spawn_err)?;
        // Written from a thread so a large ruleset cannot deadlock against nft's output.
        let writer = match (stdin, child.stdin.take()) {
            (Some(text), Some(mut pipe)) => {
                let text = text.to_string();
                Some(std::thread::spawn(move || pipe.write_all(text.as_bytes())))
            }
            _ => None,
        };
        let out = child.wait_with_output().map_err(spawn_err)?;
        let stdin_written = writer.is_none_or(|w| matches!(w.join(), Ok(Ok(()))));
        if !out.status.success() {
            return Err(NftError::Failed {
                args: joined,
                status: out.status.to_string(),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
        if !stdin_written {
            return Err(NftError::Failed {
                args: joined,
                status: out.status.to_string(),
                stderr: "the ruleset was not fully written to nft's stdin".to_string(),
            });
        }
        String::from_utf8(out.stdout).map_err(|_| NftError::NotUtf8 { args: joined })
    }

    /// `nft --version`, e.g. "nftables v1.0.6 (Lester Gooch #5)".
    pub fn version(&self) -> Result<String, NftError> {
        self.run(&["--version"], None).map(|s| s.trim().to_string())
    }

    /// Validates a ruleset without applying it (`nft -c -f -`).
    pub fn check(&self, ruleset: &str) -> Result<(), NftError> {
        self.run(&["-c", "-f", "-"], Some(ruleset)).map(|_| ())
    }

    /// Loads a ruleset in one transaction (`nft -f -`) and returns the fingerprint
    /// of the table as the kernel now holds it.
    pub fn apply(&self, ruleset: &str) -> Result<Fingerprint, NftError> {
        self.run(&["-f", "-"], Some(ruleset))?;
        let listing = self.listing()?.ok_or_else(|| NftError::Failed {
            args: "-f -".to_string(),
            status: "applied".to_string(),
            stderr: format!("table inet {TABLE} is absent right after applying"),
        })?;
        Ok(Fingerprint::of_listing(&listing))
    }

    /// Deletes `table inet ward_isolation` and nothing else; absent is fine.
    pub fn release(&self) -> Result<(), NftError> {
        self.run(&["-f", "-"], Some(DELETE_IF_PRESENT)).map(|_| ())
    }

    /// Whether our table exists (`nft list tables`).
    pub fn table_exists(&self) -> Result<bool, NftError> {
        let tables = self.run(&["list", "tables"], None)?;
        let ours = format!("table inet {TABLE}");
        Ok(tables.lines().any(|l| l.trim() == ours))
    }

    /// The listing of our table, `None` if it does not exist.
    pub fn listing(&self) -> Result<Option<String>, NftError> {
        if !self.table_exists()? {
            return Ok(None);
        }
        self.run(&["list", "table", "inet", TABLE], None).map(Some)
    }

    /// Compares the live table with the fingerprint taken when it was applied.
    pub fn status(&self, expected: &Fingerprint) -> Result<TableStatus, NftError> {
        Ok(match self.listing()? {
            None => TableStatus::Missing,
            Some(l) if Fingerprint::of_listing(&l) == *expected => TableStatus::Intact,
            Some(_) => TableStatus::Changed,
        })
    }

    /// True when the table exists and matches `expected`.
    pub fn is_intact(&self, expected: &Fingerprint) -> Result<bool, NftError> {
        self.status(expected).map(|s| s == TableStatus::Intact)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn listing_fingerprint_ignores_whitespace_and_handles() {
        let a = "table inet ward_isolation {\n\tchain input {\n\t\tiif \"lo\" accept\n\t}\n}\n";
        let b = "table inet ward_isolation { # handle 7\n  chain input { # handle 1\n iif \"lo\" accept # handle 3\n\n }\n}";
        assert_eq!(Fingerprint::of_listing(a), Fingerprint::of_listing(b));
        let c = a.replace("accept", "drop");
        assert_ne!(Fingerprint::of_listing(a), Fingerprint::of_listing(&c));
    }
}
