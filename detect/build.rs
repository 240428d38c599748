//! Embeds the SigmaHQ Linux rules shipped in `rules/sigmahq/linux/` (the default
//! pack's upstream part): writes `sigmahq.rs` in OUT_DIR with every rule file's
//! relative path, id, level and text, so a new upstream file needs no code change.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

fn collect(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            collect(&p, out);
        } else if matches!(p.extension().and_then(|e| e.to_str()), Some("yml" | "yaml")) {
            out.push(p);
        }
    }
}

/// The value of a top-level `key:` line (rule files put `id:` and `level:` there).
fn top_level(text: &str, key: &str) -> String {
    text.lines()
        .find_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix(':')))
        .map(|v| {
            v.split(" #")
                .next()
                .unwrap_or(v)
                .trim()
                .trim_matches('\'')
                .trim_matches('"')
                .to_string()
        })
        .unwrap_or_default()
}

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap_or_default());
    let root = manifest.join("rules/sigmahq/linux");
    println!("cargo:rerun-if-changed={}", root.display());
    let mut files = Vec::new();
    collect(&root, &mut files);
    files.sort();
    let mut code = String::from(
        "/// Every shipped SigmaHQ Linux rule, sorted by path.\npub const SIGMAHQ_RULES: &[ShippedRule] = &[\n",
    );
    for f in &files {
        println!("cargo:rerun-if-changed={}", f.display());
        let text = std::fs::read_to_string(f).unwrap_or_default();
        let rel = f.strip_prefix(&root).unwrap_or(f).display().to_string();
        let _ = writeln!(
            code,
            "    ShippedRule {{ file: {:?}, id: {:?}, level: {:?}, yaml: include_str!({:?}) }},",
            rel,
            top_level(&text, "id"),
            top_level(&text, "level"),
            f.display().to_string()
        );
    }
    code.push_str("];\n");
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap_or_default()).join("sigmahq.rs");
    if let Err(e) = std::fs::write(&out, code) {
        panic!("cannot write {}: {e}", out.display());
    }
}
