//! Keeping the agent's resident memory to what it uses (issue 17: an idle agent
//! ≤ 20 MiB). Two things inflate it and neither is memory the agent needs:
//!
//! - glibc gives each thread that allocates its own malloc arena (up to 8 per
//!   core); the agent's sensor threads and tokio workers each kept a few MiB of
//!   freed chunks. [`limit_malloc_arenas`] makes it one arena (small allocations
//!   still come from each thread's lock-free tcache). Measured: idle RSS 45.3 → 33.5
//!   MiB, no CPU difference at 1,000 execs/s + 1,000 connections/s within this
//!   machine's noise (BENCHMARKS.md).
//! - glibc raises its mmap threshold each time a large block is freed (up to 32
//!   MiB), so after start-up (rule compilation frees large blocks) a large
//!   allocation comes from the heap instead of its own mapping. quinn's receive
//!   buffer (2.9 MB: 32 datagrams of 64 GRO segments, zeroed with calloc) was then
//!   zeroed page by page in the heap, all resident, though an agent receives a few
//!   acknowledgements a second. [`limit_malloc_arenas`] also fixes the threshold at
//!   glibc's starting value: a large block is its own mapping whose untouched pages
//!   cost nothing, returned to the system when freed.
//! - Start-up touches much of the executable (rule compilation, TLS set-up, the
//!   eBPF loader) and the kernel maps whole page-cache folios around each fault, so
//!   the image's clean pages stay mapped although the running agent never executes
//!   most of them again. [`release_startup_memory`] unmaps them (they stay in the
//!   page cache; the ones still used fault back in) and returns freed heap to the
//!   system.
//!
//! glibc only: musl has neither arenas nor `malloc_trim`, and its static build maps
//! the same image (the page release applies there too).

use std::path::Path;

/// The allocation size from which glibc maps a block of its own (its default start;
/// fixed, so no longer raised by frees).
#[cfg(target_env = "gnu")]
const MMAP_THRESHOLD_BYTES: libc::c_int = 128 * 1024;

/// One malloc arena for all threads, and a fixed mmap threshold (see the module
/// doc). Call first thing in `main`, before any thread.
pub fn limit_malloc_arenas() {
    #[cfg(target_env = "gnu")]
    {
        // M_ARENA_MAX from glibc's malloc.h (not exported by the libc crate).
        const M_ARENA_MAX: libc::c_int = -8;
        // SAFETY: mallopt only changes malloc's own tuning; it is called before
        // other threads exist, and an unknown parameter is refused, not undefined.
        #[allow(unsafe_code)]
        unsafe {
            libc::mallopt(M_ARENA_MAX, 1);
            libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES);
        }
    }
}

/// Unmaps the pages of the agent's own executable it never wrote and returns
/// free heap to the system. Call once start-up is done (rules compiled, sensors
/// started). Returns the bytes of image mappings released (their resident part was
/// at most that).
pub fn release_startup_memory() -> u64 {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only returns free memory of malloc's own arenas to the
    // kernel; it takes malloc's locks like any allocation.
    #[allow(unsafe_code)]
    unsafe {
        libc::malloc_trim(0);
    }
    let Ok(exe) = std::fs::read_link("/proc/self/exe") else {
        return 0;
    };
    let Ok(smaps) = std::fs::read_to_string("/proc/self/smaps") else {
        return 0;
    };
    let mut released = 0;
    for m in clean_image_mappings(&smaps, &exe) {
        // SAFETY: `m` is a private, non-writable mapping of this process's executable
        // in which /proc/self/smaps counts no anonymous (copied-on-write) page, so each
        // of its pages is the page cache's page of the file (dirty or not: a file just
        // written by the linker has dirty cache pages, still the file's content).
        // MADV_DONTNEED on such a mapping only removes the page-table entries: the next
        // access (an instruction fetch or a read of constant data) faults the same
        // bytes back in from the page cache. Nothing can write into it meanwhile: it
        // has no write permission (only a debugger's ptrace could, which creates
        // anonymous copies, and the check below is then simply stale for those
        // pages, which DONTNEED would revert to the file's bytes: a debugger's
        // breakpoint lost, never the program's data). Relocated data (RELRO) is
        // excluded by the anonymous-page check: the loader's writes made it anonymous.
        #[allow(unsafe_code)]
        let rc = unsafe { libc::madvise(m.start as *mut libc::c_void, m.len, libc::MADV_DONTNEED) };
        if rc == 0 {
            released += m.len as u64;
        }
    }
    released
}

/// A mapping [`release_startup_memory`] may drop.
#[derive(Debug, PartialEq, Eq)]
struct Mapping {
    start: usize,
    len: usize,
}

/// The private, non-writable mappings of `exe` with no anonymous (copied) page, from
/// the text of /proc/self/smaps.
fn clean_image_mappings(smaps: &str, exe: &Path) -> Vec<Mapping> {
    let exe = exe.to_string_lossy();
    let mut out = Vec::new();
    // The current mapping if it qualifies so far, and whether it has no anonymous page.
    let mut current: Option<(Mapping, bool)> = None;
    let mut finish = |current: &mut Option<(Mapping, bool)>| {
        if let Some((m, true)) = current.take() {
            out.push(m);
        }
    };
    for line in smaps.lines() {
        if let Some((range, rest)) = line.split_once(' ')
            && let Some((a, b)) = range.split_once('-')
            && let (Ok(a), Ok(b)) = (usize::from_str_radix(a, 16), usize::from_str_radix(b, 16))
        {
            finish(&mut current);
            let mut fields = rest.split_whitespace();
            let perms = fields.next().unwrap_or("");
            let path = fields.nth(3).unwrap_or("");
            let private_readonly = perms.len() == 4 && !perms.contains('w') && perms.ends_with('p');
            if private_readonly && path == exe && b > a {
                current = Some((Mapping { start: a, len: b - a }, true));
            }
            continue;
        }
        if let Some((_, clean)) = current.as_mut()
            && let Some((key, value)) = line.split_once(':')
            && key == "Anonymous"
        {
            let kb = value.trim().trim_end_matches("kB").trim();
            if kb != "0" {
                *clean = false;
            }
        }
    }
    finish(&mut current);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMAPS: &str = "\
55d000000000-55d000200000 r--p 00000000 fd:01 1234 /usr/sbin/ward-agent
Size:               2048 kB
Rss:                2000 kB
Shared_Dirty:          0 kB
Private_Dirty:         0 kB
Anonymous:             0 kB
55d000200000-55d000c00000 r-xp 00200000 fd:01 1234 /usr/sbin/ward-agent
Size:              10240 kB
Rss:               9900 kB
Shared_Dirty:          0 kB
Private_Dirty:       512 kB
Anonymous:             0 kB
55d000c00000-55d000d00000 r--p 00c00000 fd:01 1234 /usr/sbin/ward-agent
Size:               1024 kB
Rss:               1024 kB
Shared_Dirty:          0 kB
Private_Dirty:      1024 kB
Anonymous:          1024 kB
55d000d00000-55d000d10000 rw-p 00d00000 fd:01 1234 /usr/sbin/ward-agent
Size:                 64 kB
Private_Dirty:         0 kB
Anonymous:             0 kB
7f0000000000-7f0000100000 r-xp 00000000 fd:01 99 /usr/lib/x86_64-linux-gnu/libc.so.6
Size:               1024 kB
Private_Dirty:         0 kB
Anonymous:             0 kB
7f0000200000-7f0000300000 rw-p 00000000 00:00 0
Size:               1024 kB
Anonymous:          1024 kB
";

    #[test]
    fn only_clean_read_only_mappings_of_the_executable_are_chosen() {
        let got = clean_image_mappings(SMAPS, Path::new("/usr/sbin/ward-agent"));
        assert_eq!(
            got,
            vec![
                Mapping {
                    start: 0x55d0_0000_0000,
                    len: 0x20_0000
                },
                Mapping {
                    start: 0x55d0_0020_0000,
                    len: 0xa0_0000
                },
            ],
            "the relocated r--p (anonymous pages), the writable data and other files are left"
        );
        assert!(clean_image_mappings(SMAPS, Path::new("/other")).is_empty());
    }

    #[test]
    fn releasing_keeps_the_program_running_and_lowers_its_resident_image() {
        fn resident_image_kb() -> u64 {
            let exe = std::fs::read_link("/proc/self/exe").unwrap();
            let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
            let mut in_exe = false;
            let mut kb = 0;
            for line in smaps.lines() {
                if line
                    .split(' ')
                    .next()
                    .is_some_and(|r| r.contains('-') && !r.contains(':'))
                {
                    in_exe = line.ends_with(&*exe.to_string_lossy());
                } else if in_exe && let Some(v) = line.strip_prefix("Rss:") {
                    kb += v.trim().trim_end_matches("kB").trim().parse::<u64>().unwrap();
                }
            }
            kb
        }
        let before = resident_image_kb();
        let released = release_startup_memory();
        let after = resident_image_kb();
        assert!(released > 0, "nothing released");
        assert!(after < before, "resident image {before} kB -> {after} kB");
        // The code just released still runs (it faults back in), and so does a lot more.
        let v: Vec<String> = (0..1000).map(|i| format!("{i:x}")).collect();
        assert_eq!(v[255], "ff");
    }
}
