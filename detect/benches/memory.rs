//! Memory of one compiled default pack: the resident-set growth of this process while
//! it holds five `Detector`s of the default pack, per Detector (five, so allocator
//! slack and one-off statics average out). Linux only (reads /proc/self/status).
//!
//!   cargo bench -p ward-detect --bench memory

use ward_detect::{Detector, PackChoice, default_rule_files};

fn rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn main() {
    let files = default_rule_files(&PackChoice::default());
    // One load first: lazily built statics are not a Detector's cost.
    let (warm, errors) = Detector::load(&files);
    assert!(errors.is_empty(), "{errors:?}");
    let rules = warm.stats().loaded;
    drop(warm);
    let Some(before) = rss_kib() else {
        eprintln!("no /proc/self/status: nothing measured");
        return;
    };
    let held: Vec<Detector> = (0..5).map(|_| Detector::load(&files).0).collect();
    let after = rss_kib().unwrap_or(before);
    println!(
        "default pack ({rules} rules): {:.1} MiB resident per Detector ({} Detectors held)",
        after.saturating_sub(before) as f64 / 5.0 / 1024.0,
        held.len()
    );
}
