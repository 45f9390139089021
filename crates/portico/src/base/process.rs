//! A process's CPU time and its `status` figures: the gateway's own (the process metrics, the
//! allocator's watch for the end of a burst) and, through `/proc`, another's (the benchmark tool
//! watches the gateway from outside).

/// CPU seconds (user and system) this process has used so far, to the microsecond; 0 when the kernel
/// cannot say. One `getrusage` call: the allocator's watch asks every second, and reading
/// `/proc/self/stat` took nine system calls (open, stat, six growing reads, close).
pub fn own_cpu_seconds() -> f64 {
    // SAFETY: `usage` is a plain C struct the kernel fills; zeroed is a valid value of it.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: RUSAGE_SELF with a valid pointer to a `rusage`.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return 0.0;
    }
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    seconds(usage.ru_utime) + seconds(usage.ru_stime)
}

/// CPU seconds the process `pid` has spent in user space and in the kernel.
pub fn cpu_split(pid: &str) -> (f64, f64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the parenthesised command: utime and stime are the 12th and 13th.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // SAFETY: sysconf has no memory effects.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    (ticks(11) / per_second, ticks(12) / per_second)
}

/// A `/proc/<pid>/status` figure in KiB, e.g. `VmRSS:` or `RssAnon:`; 0 when absent.
pub fn status_kib(pid: &str, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// CPU seconds the calling thread has used.
    fn thread_cpu_seconds() -> f64 {
        let mut now = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: a valid clock id and a valid pointer to a `timespec`.
        unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut now) };
        now.tv_sec as f64 + now.tv_nsec as f64 / 1e9
    }

    #[test]
    fn own_cpu_time_counts_the_work_done_and_agrees_with_proc() {
        let before = own_cpu_seconds();
        let spun_from = thread_cpu_seconds();
        let mut sum = 0u64;
        while thread_cpu_seconds() - spun_from < 0.05 {
            sum = sum.wrapping_add(std::hint::black_box(1));
        }
        let after = own_cpu_seconds();
        assert!(sum > 0);
        assert!(
            after - before >= 0.05,
            "50 ms of this thread's CPU, the process's grew by {:.4} s",
            after - before
        );
        let (user, system) = cpu_split("self");
        let from_proc = user + system;
        let own = own_cpu_seconds();
        assert!(
            (own - from_proc).abs() < 0.1,
            "getrusage {own:.3} s, /proc {from_proc:.3} s"
        );
    }
}
