//! Follows a growing log file line by line, across rotation and truncation (like `tail -F`).
//!
//! Shared by the auth and audit sensors. Must not read more than a bounded amount per poll,
//! keep unbounded partial lines, or lose the end of a file rotated away (the old file is read
//! to its end before the new one is opened).

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Most bytes read in one [`Tailer::poll`].
const MAX_READ_PER_POLL_BYTES: usize = 4 * 1024 * 1024;
/// Longest line kept; a longer one is cut and the rest of it is dropped.
pub const MAX_LINE_BYTES: usize = 64 * 1024;

/// Why the log could not be followed.
#[derive(Debug, thiserror::Error)]
pub enum TailError {
    #[error("cannot read {path}: {source}")]
    Io { path: String, source: io::Error },
}

/// Where a tailer starts in the first file it opens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartAt {
    /// At the end: only lines written after the first open (what an agent wants on start).
    End,
    /// At the beginning.
    Beginning,
}

/// What happened during a poll besides lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PollNotes {
    pub rotated: bool,
    pub truncated: bool,
    /// The file does not exist (nothing is open yet).
    pub missing: bool,
}

/// Follows one path.
#[derive(Debug)]
pub struct Tailer {
    path: PathBuf,
    file: Option<File>,
    id: (u64, u64),
    pos: u64,
    partial: Vec<u8>,
    skipping_long_line: bool,
    start_at: StartAt,
}

impl Tailer {
    /// A tailer of `path`; nothing is opened until the first poll.
    pub fn new(path: impl Into<PathBuf>, start_at: StartAt) -> Self {
        Tailer {
            path: path.into(),
            file: None,
            id: (0, 0),
            pos: 0,
            partial: Vec::new(),
            skipping_long_line: false,
            start_at,
        }
    }

    /// The followed path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn err(&self, source: io::Error) -> TailError {
        TailError::Io {
            path: self.path.display().to_string(),
            source,
        }
    }

    fn open(&mut self, at_end: bool) -> Result<bool, TailError> {
        let mut f = match File::open(&self.path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(self.err(e)),
        };
        let meta = f.metadata().map_err(|e| self.err(e))?;
        self.id = (meta.dev(), meta.ino());
        self.pos = if at_end {
            f.seek(SeekFrom::End(0)).map_err(|e| self.err(e))?
        } else {
            0
        };
        self.partial.clear();
        self.skipping_long_line = false;
        self.file = Some(f);
        Ok(true)
    }

    /// Reads the complete lines written since the last poll (the trailing newline removed,
    /// invalid UTF-8 replaced).
    pub fn poll(&mut self, lines: &mut Vec<String>) -> Result<PollNotes, TailError> {
        let mut notes = PollNotes::default();
        if self.file.is_none() {
            let opened = self.open(self.start_at == StartAt::End)?;
            // Only a file present at the first look starts at the end; later ones (after
            // rotation, or a file that appeared later) are new and read from the beginning.
            self.start_at = StartAt::Beginning;
            if !opened {
                notes.missing = true;
                return Ok(notes);
            }
        }
        // Truncated in place (copytruncate)?
        if let Some(f) = &self.file {
            let len = f.metadata().map_err(|e| self.err(e))?.len();
            if len < self.pos {
                self.pos = 0;
                self.partial.clear();
                notes.truncated = true;
            }
        }
        let budget = self.read_available(lines)?;
        // Rotated: the path now names another file. The old one was just read to its end.
        if budget > 0
            && let Ok(meta) = std::fs::metadata(&self.path)
            && (meta.dev(), meta.ino()) != self.id
        {
            self.flush_partial(lines);
            if self.open(false)? {
                notes.rotated = true;
                self.read_available(lines)?;
            }
        }
        Ok(notes)
    }

    /// Reads up to the per-poll budget; returns the budget left (0: stopped early).
    fn read_available(&mut self, lines: &mut Vec<String>) -> Result<usize, TailError> {
        let mut budget = MAX_READ_PER_POLL_BYTES;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let Some(f) = self.file.as_mut() else { return Ok(budget) };
            if let Err(e) = f.seek(SeekFrom::Start(self.pos)) {
                return Err(self.err(e));
            }
            let want = buf.len().min(budget);
            let n = match f.read(buf.get_mut(..want).unwrap_or_default()) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(self.err(e)),
            };
            if n == 0 {
                return Ok(budget);
            }
            self.pos += n as u64;
            budget -= n;
            self.split(buf.get(..n).unwrap_or_default(), lines);
            if budget == 0 {
                return Ok(0);
            }
        }
    }

    fn split(&mut self, mut chunk: &[u8], lines: &mut Vec<String>) {
        while let Some(i) = chunk.iter().position(|&b| b == b'\n') {
            let (head, rest) = chunk.split_at(i);
            if !self.skipping_long_line {
                self.push_partial(head, lines);
            }
            if !self.skipping_long_line {
                let line = std::mem::take(&mut self.partial);
                lines.push(String::from_utf8_lossy(&line).trim_end_matches('\r').to_string());
            }
            self.skipping_long_line = false;
            chunk = rest.get(1..).unwrap_or_default();
        }
        if !self.skipping_long_line {
            self.push_partial(chunk, lines);
        }
    }

    fn push_partial(&mut self, bytes: &[u8], lines: &mut Vec<String>) {
        let room = MAX_LINE_BYTES.saturating_sub(self.partial.len());
        if bytes.len() > room {
            self.partial.extend_from_slice(bytes.get(..room).unwrap_or_default());
            lines.push(String::from_utf8_lossy(&std::mem::take(&mut self.partial)).into_owned());
            self.skipping_long_line = true;
        } else {
            self.partial.extend_from_slice(bytes);
        }
    }

    fn flush_partial(&mut self, lines: &mut Vec<String>) {
        if !self.partial.is_empty() && !self.skipping_long_line {
            lines.push(String::from_utf8_lossy(&std::mem::take(&mut self.partial)).into_owned());
        }
        self.partial.clear();
    }
}

/// Follows the first existing file among `candidates` until the sensor stops, calling
/// `handle(lines)` after every poll (with no lines when nothing new was written, so a caller
/// can act on time passing). `handle` returns false to stop.
///
/// Reports as gaps: no candidate exists (once, until one appears), the file is unreadable
/// (once per streak of failures). Neither ends the sensor.
pub fn follow(
    ctx: &super::SensorCtx,
    candidates: &[String],
    interval: std::time::Duration,
    mut handle: impl FnMut(Vec<String>) -> bool,
) -> Result<(), super::SensorError> {
    let mut reported_missing = false;
    let path = loop {
        if let Some(p) = candidates.iter().find(|p| Path::new(p).exists()) {
            break p.clone();
        }
        if !reported_missing {
            reported_missing = true;
            if !ctx.blind(format!(
                "no log file found among {candidates:?}: not observed until one appears"
            )) {
                return Ok(());
            }
        }
        if !ctx.sleep(interval.max(std::time::Duration::from_secs(5))) {
            return Ok(());
        }
    };
    let mut tailer = Tailer::new(
        &path,
        if reported_missing {
            StartAt::Beginning
        } else {
            StartAt::End
        },
    );
    let mut failing = false;
    let source = format!("tailing {path}");
    ctx.ready(source.clone());
    loop {
        let mut lines = Vec::new();
        match tailer.poll(&mut lines) {
            Ok(_) => {
                if failing {
                    ctx.ready(source.clone());
                }
                failing = false;
            }
            Err(e) => {
                if !failing {
                    failing = true;
                    if !ctx.blind(format!("{e}: lines are not observed until it is readable again")) {
                        return Ok(());
                    }
                }
            }
        }
        if !handle(lines) {
            return Ok(());
        }
        if !ctx.sleep(interval) {
            return Ok(());
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use std::io::Write;

    fn append(p: &Path, s: &str) {
        let mut f = std::fs::OpenOptions::new().create(true).append(true).open(p).unwrap();
        f.write_all(s.as_bytes()).unwrap();
    }

    fn poll(t: &mut Tailer) -> Vec<String> {
        let mut v = Vec::new();
        t.poll(&mut v).unwrap();
        v
    }

    #[test]
    fn starts_at_end_follows_rotation_and_truncation() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("log");
        append(&p, "old line\n");
        let mut t = Tailer::new(&p, StartAt::End);
        assert!(poll(&mut t).is_empty());
        append(&p, "one\ntw");
        assert_eq!(poll(&mut t), vec!["one"]);
        append(&p, "o\r\n");
        assert_eq!(poll(&mut t), vec!["two"]);
        // Rotation: the last line of the old file is still read, then the new file from its start.
        append(&p, "last of old\n");
        std::fs::rename(&p, dir.path().join("log.1")).unwrap();
        append(&p, "first of new\n");
        let mut v = Vec::new();
        let notes = t.poll(&mut v).unwrap();
        assert!(notes.rotated);
        assert_eq!(v, vec!["last of old", "first of new"]);
        // Truncation in place.
        std::fs::write(&p, "").unwrap();
        append(&p, "after\n");
        let mut v = Vec::new();
        assert!(t.poll(&mut v).unwrap().truncated);
        assert_eq!(v, vec!["after"]);
    }

    #[test]
    fn missing_file_then_appearing_is_read_from_start() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("later");
        let mut t = Tailer::new(&p, StartAt::Beginning);
        let mut v = Vec::new();
        assert!(t.poll(&mut v).unwrap().missing);
        append(&p, "hello\n");
        assert_eq!(poll(&mut t), vec!["hello"]);
    }

    #[test]
    fn long_lines_are_cut() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("long");
        let mut t = Tailer::new(&p, StartAt::Beginning);
        append(&p, &format!("{}\nshort\n", "x".repeat(MAX_LINE_BYTES + 10)));
        let v = poll(&mut t);
        assert_eq!(v.len(), 2);
        assert_eq!(v.first().unwrap().len(), MAX_LINE_BYTES);
        assert_eq!(v.get(1).unwrap(), "short");
    }
}
