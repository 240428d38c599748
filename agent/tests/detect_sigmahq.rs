//! SigmaHQ's Linux rules load as they are and fire on matching Ward events.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use ward_agent::detect::{Detector, load_dir};

fn sigmahq() -> (Detector, Vec<ward_agent::detect::RuleError>, usize) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sigma/linux");
    let (files, mut errors) = load_dir(&dir).unwrap();
    let n = files.len();
    let (det, e) = Detector::load(&files);
    errors.extend(e);
    (det, errors, n)
}

#[test]
fn all_sigmahq_linux_rules_load() {
    let (det, errors, files) = sigmahq();
    for e in &errors {
        eprintln!("{e}");
    }
    eprintln!("{:?}", det.stats());
    assert_eq!(files, 210);
    assert!(errors.is_empty());
    assert_eq!(det.stats().loaded, 210);
}
