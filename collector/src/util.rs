//! Small shared helpers: wall-clock time, secrets and their hashes.

use ring::digest;
use ring::rand::{SecureRandom, SystemRandom};

/// Unix milliseconds now. Only edges of the collector read the clock; the
/// protocol and storage take time as a parameter.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// A Unix-millisecond time as people read it in notes: `2026-12-06 10:00:00 UTC`.
pub fn show_ms(ms: u64) -> String {
    chrono::DateTime::from_timestamp_millis(i64::try_from(ms).unwrap_or(i64::MAX))
        .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_else(|| format!("{ms} ms"))
}

/// The most of a device's own text kept in an audit row or a log line.
pub const MAX_DEVICE_TEXT: usize = 256;

/// `text` cut to at most `max` bytes on a character boundary.
pub fn clip(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// `text` cut to at most `max` bytes on a character boundary, marked with `…` when cut.
pub fn clip_marked(text: &str, max: usize) -> String {
    let kept = clip(text, max);
    if kept.len() == text.len() {
        text.to_string()
    } else {
        format!("{kept}…")
    }
}

/// A device's own text cut to [`MAX_DEVICE_TEXT`] bytes, for logs and audit rows.
pub fn clip_device_text(text: &str) -> &str {
    clip(text, MAX_DEVICE_TEXT)
}

pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(digest::digest(&digest::SHA256, bytes).as_ref());
    out
}

/// 32 random bytes from the system's secure source.
pub fn random_secret() -> Result<[u8; 32], ring::error::Unspecified> {
    let mut s = [0u8; 32];
    SystemRandom::new().fill(&mut s)?;
    Ok(s)
}

/// Parses `30s`, `15m`, `24h`, `7d` (or plain seconds) into milliseconds.
pub fn parse_duration_ms(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num
        .parse()
        .map_err(|_| format!("not a duration: {s:?} (use e.g. 30m, 24h, 7d)"))?;
    let factor = match unit {
        "" | "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(format!("unknown unit in {s:?} (use s, m, h or d)")),
    };
    n.checked_mul(factor).ok_or_else(|| format!("duration too long: {s:?}"))
}

/// Writes `bytes` to `path` readable by its owner only, through a temporary file
/// renamed over it: a reader sees the old content or the new, never a part.
pub fn replace_private_file(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clip_keeps_whole_characters() {
        let long = "é".repeat(200);
        let c = clip_device_text(&long);
        assert!(c.len() <= MAX_DEVICE_TEXT && c.chars().all(|ch| ch == 'é'));
        assert_eq!(clip_device_text("short"), "short");
        assert_eq!(clip("aé", 2), "a");
        assert_eq!(clip_marked("aé", 2), "a…");
        assert_eq!(clip_marked("ab", 2), "ab");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration_ms("90"), Ok(90_000));
        assert_eq!(parse_duration_ms("15m"), Ok(900_000));
        assert_eq!(parse_duration_ms("7d"), Ok(604_800_000));
        assert!(parse_duration_ms("7y").is_err());
        assert!(parse_duration_ms("h").is_err());
    }
}
