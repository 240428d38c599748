//! Which process feeds which through a pipe: `curl … | bash` typed at a prompt gives
//! two execs whose command lines say nothing alone (`curl -s https://x`, `bash`); the
//! pipe between them is what makes it a download run as code.
//!
//! Each exec names the pipe on its stdin and on its stdout (kernel inode numbers, from
//! the exec record or /proc). The book remembers recent writers and readers by pipe, so
//! whichever end starts second is linked to the first: the reader learns what writes
//! into it (`piped_from`), the writer what reads from it (`piped_to`). Must stay small
//! and cheap: bounded entries, forgotten after [`PIPE_MEMORY_MS`], no IO.

use std::collections::{HashMap, VecDeque};

use ward_detect::event::{PipeEnd as PipePeer, PipePeers as PipeLinks};

/// How long an end is remembered: a pipeline's processes start within moments of each
/// other, and a pipe inode is reused only after both ends close.
pub const PIPE_MEMORY_MS: u64 = 30_000;
/// Ends remembered per side at most (the oldest is forgotten first).
pub const PIPE_MEMORY_ENTRIES: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Writer,
    Reader,
}

#[derive(Debug, Default)]
struct Ends {
    /// pipe -> (entry number, recorded at, the process).
    by_pipe: HashMap<u64, (u64, u64, PipePeer)>,
    /// (entry number, recorded at, pipe) in recording order, for expiry and the bound.
    order: VecDeque<(u64, u64, u64)>,
    next: u64,
}

impl Ends {
    fn put(&mut self, now_ms: u64, pipe: u64, peer: PipePeer) {
        self.next += 1;
        self.by_pipe.insert(pipe, (self.next, now_ms, peer));
        self.order.push_back((self.next, now_ms, pipe));
        while self.order.len() > PIPE_MEMORY_ENTRIES {
            self.pop_oldest();
        }
    }

    fn expire(&mut self, now_ms: u64) {
        while self
            .order
            .front()
            .is_some_and(|(_, at, _)| now_ms.saturating_sub(*at) > PIPE_MEMORY_MS)
        {
            self.pop_oldest();
        }
    }

    fn pop_oldest(&mut self) {
        if let Some((n, _, pipe)) = self.order.pop_front() {
            // Only if not recorded again since (a newer entry owns the pipe then).
            if self.by_pipe.get(&pipe).is_some_and(|(m, _, _)| *m == n) {
                self.by_pipe.remove(&pipe);
            }
        }
    }

    fn get(&self, pipe: u64, now_ms: u64) -> Option<&PipePeer> {
        self.by_pipe
            .get(&pipe)
            .filter(|(_, at, _)| now_ms.saturating_sub(*at) <= PIPE_MEMORY_MS)
            .map(|(_, _, p)| p)
    }
}

/// Recent pipe ends, per pipe inode.
#[derive(Debug, Default)]
pub struct PipeBook {
    writers: Ends,
    readers: Ends,
}

impl PipeBook {
    /// Records an exec whose stdin is pipe `stdin` and stdout pipe `stdout` (either may
    /// be absent), and links it to the other ends already seen.
    pub fn record(&mut self, now_ms: u64, me: &PipePeer, stdin: Option<u64>, stdout: Option<u64>) -> PipeLinks {
        self.writers.expire(now_ms);
        self.readers.expire(now_ms);
        let mut links = PipeLinks::default();
        if let Some(pipe) = stdin {
            links.from = self.other(Side::Writer, pipe, now_ms, me.pid);
            self.readers.put(now_ms, pipe, me.clone());
        }
        if let Some(pipe) = stdout {
            links.to = self.other(Side::Reader, pipe, now_ms, me.pid);
            self.writers.put(now_ms, pipe, me.clone());
        }
        links
    }

    fn other(&self, side: Side, pipe: u64, now_ms: u64, me: u32) -> Option<PipePeer> {
        let ends = match side {
            Side::Writer => &self.writers,
            Side::Reader => &self.readers,
        };
        // A process exec'ing again keeps its fds: it is not its own peer.
        ends.get(pipe, now_ms).filter(|p| p.pid != me).cloned()
    }

    /// Ends remembered (writers + readers).
    pub fn len(&self) -> usize {
        self.writers.by_pipe.len() + self.readers.by_pipe.len()
    }

    /// True when nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The pipe inode in a `/proc/PID/fd/N` link (`pipe:[12345]`), if it is a pipe.
pub fn pipe_inode_of_link(link: &str) -> Option<u64> {
    link.strip_prefix("pipe:[")?.strip_suffix(']')?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(pid: u32, exe: &str) -> PipePeer {
        PipePeer {
            pid,
            exe: exe.into(),
            cmdline: exe.rsplit('/').next().unwrap_or_default().into(),
        }
    }

    #[test]
    fn whichever_end_starts_second_is_linked_to_the_first() {
        let mut book = PipeBook::default();
        // curl first, then bash.
        let curl = book.record(1_000, &peer(10, "/usr/bin/curl"), None, Some(77));
        assert_eq!(curl, PipeLinks::default());
        let bash = book.record(1_002, &peer(11, "/usr/bin/bash"), Some(77), None);
        assert_eq!(bash.from, Some(peer(10, "/usr/bin/curl")));
        // bash first, then base64.
        let sh = book.record(2_000, &peer(20, "/usr/bin/sh"), Some(88), None);
        assert_eq!(sh, PipeLinks::default());
        let b64 = book.record(2_001, &peer(21, "/usr/bin/base64"), Some(87), Some(88));
        assert_eq!(b64.to, Some(peer(20, "/usr/bin/sh")));
        assert_eq!(b64.from, None);
    }

    #[test]
    fn old_ends_are_forgotten_and_a_process_is_not_its_own_peer() {
        let mut book = PipeBook::default();
        book.record(0, &peer(10, "/usr/bin/curl"), None, Some(5));
        let late = book.record(PIPE_MEMORY_MS + 1, &peer(11, "/bin/sh"), Some(5), None);
        assert_eq!(late.from, None, "a writer older than the memory is not linked");
        book.record(100_000, &peer(30, "/bin/sh"), Some(6), Some(6));
        let again = book.record(100_001, &peer(30, "/bin/dash"), Some(6), Some(6));
        assert_eq!(again, PipeLinks::default());
    }

    #[test]
    fn the_book_stays_bounded() {
        let mut book = PipeBook::default();
        for i in 0..(PIPE_MEMORY_ENTRIES as u64 * 3) {
            book.record(1, &peer(i as u32, "/bin/x"), Some(i), Some(i + 1_000_000));
        }
        assert!(book.len() <= 2 * PIPE_MEMORY_ENTRIES);
        let newest = PIPE_MEMORY_ENTRIES as u64 * 3 - 1;
        let r = book.record(2, &peer(1, "/bin/y"), None, Some(newest));
        assert!(r.to.is_some(), "the newest ends are kept");
    }

    #[test]
    fn proc_fd_links_name_pipes_only() {
        assert_eq!(pipe_inode_of_link("pipe:[4026532]"), Some(4_026_532));
        assert_eq!(pipe_inode_of_link("/dev/pts/3"), None);
        assert_eq!(pipe_inode_of_link("socket:[12]"), None);
        assert_eq!(pipe_inode_of_link("pipe:[x]"), None);
        assert_eq!(pipe_inode_of_link("pipe:[12"), None);
    }
}
