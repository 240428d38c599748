//! Writes the labelled correlation corpus (tests/fixtures/correlation) from its
//! deterministic generator (`ward_tests::corpus::generate`):
//!
//!   cargo run -p ward-tests --bin ward-corpus [DIR [SEED]]
//!
//! Generating again gives the same bytes; `tests/grouping_quality.rs` checks that
//! the committed files are what the generator writes. Another SEED draws another
//! week of the same story (other noise and jitter).

use anyhow::Result;

fn main() -> Result<()> {
    let dir = std::env::args_os()
        .nth(1)
        .map(std::path::PathBuf::from)
        .unwrap_or_else(ward_tests::corpus::fixture_dir);
    let corpus = match std::env::args().nth(2) {
        Some(seed) => ward_tests::corpus::generate::generate_seeded(seed.parse()?),
        None => ward_tests::corpus::generate::generate(),
    };
    corpus.write(&dir)?;
    println!(
        "wrote {} alerts on {} devices to {}",
        corpus.records.len(),
        corpus.devices.len(),
        dir.display()
    );
    Ok(())
}
