//! How the gateway uses glibc's allocator: large buffers mapped on their own, the heap kept for the
//! next request while traffic flows, and given back to the system once a burst is over.

use std::time::Duration;

use crate::base::http_client::POOL_IDLE_TIMEOUT;
use crate::base::process::own_cpu_seconds;

/// Buffers from this size up are mapped and unmapped on their own, so that memory a large request or
/// reply took goes back to the system when it is freed. glibc's default threshold rises after the
/// first large free, after which such buffers stay in the heap and the gateway's RSS only grows
/// (measured in docs/performance.md, "hostile input").
const MMAP_THRESHOLD: libc::c_int = 128 * 1024;

/// Free memory at the top of the heap up to this size stays for the next request. Fixing the mmap
/// threshold also fixes this one at glibc's 128 KiB, under what one `tools/list` of ten targets
/// takes for a moment (~300 KiB): the heap was shrunk after every list and grown again by the next,
/// 2 `brk` calls and 8–9 page faults per list (docs/performance.md).
const TRIM_THRESHOLD: libc::c_int = 1024 * 1024;

/// How often the gateway's CPU time is looked at to find the end of a burst.
const LOOK_EVERY: Duration = Duration::from_secs(1);

/// Less CPU than this in one [`LOOK_EVERY`] (seconds) is a quiet second: the timers and the config
/// file's watch spend well under a millisecond.
const QUIET: f64 = 0.005;

/// More CPU than this since the last trim (seconds) is a burst worth trimming after.
const BUSY: f64 = 0.050;

/// After this many quiet seconds in a row, once more: the connections a burst left idle in a target's
/// pool are closed by then (the pool's sweep, every [`POOL_IDLE_TIMEOUT`], closes those idle longer
/// than that), and so is a process that has just started.
const AGAIN_AFTER_QUIET_SECONDS: u64 = 2 * POOL_IDLE_TIMEOUT.as_secs() + 1;

/// Sets the thresholds above. Call first thing in `main`, before any thread starts.
pub fn tune() {
    // SAFETY: mallopt only changes allocator tuning; called once, before any thread starts.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
        libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD);
    }
}

/// Gives free memory back to the system (`malloc_trim`) in the first quiet second after a burst, and
/// again after [`AGAIN_AFTER_QUIET_SECONDS`] quiet seconds.
///
/// A burst (10,000 sessions, a corpus of bad requests, large replies) leaves its high-water mark in
/// the heap as free chunks between live ones, which glibc keeps. Trimming while requests flow would
/// take the arenas' locks from them (~1 ms per 20 MiB of fragmented heap) for memory the next
/// request wants again, so it waits until the process has been nearly idle for a second: a thread
/// that reads the process's CPU time once a second, and costs the request path nothing.
pub fn return_memory_after_bursts() {
    let spawned = std::thread::Builder::new()
        .name("portico-memory".into())
        .stack_size(64 * 1024)
        .spawn(|| {
            let (mut last, mut busy, mut quiet_seconds) = (own_cpu_seconds(), 0.0, 0);
            loop {
                std::thread::sleep(LOOK_EVERY);
                let now = own_cpu_seconds();
                let spent = (now - last).max(0.0);
                last = now;
                busy += spent;
                if spent >= QUIET {
                    quiet_seconds = 0;
                    continue;
                }
                quiet_seconds += 1;
                if busy > BUSY {
                    busy = 0.0;
                    quiet_seconds = 1;
                    trim();
                } else if quiet_seconds == AGAIN_AFTER_QUIET_SECONDS {
                    trim();
                }
            }
        });
    if let Err(e) = spawned {
        tracing::warn!(target: "portico::server", error = %e, "cannot start the thread that returns memory after bursts; memory a burst took stays with the process");
    }
}

fn trim() {
    // SAFETY: malloc_trim only returns free pages; it takes the allocator's locks.
    unsafe { libc::malloc_trim(0) };
}
