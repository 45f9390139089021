//! What `/proc` says about a process (`self`, or a pid): its CPU time and its `status` figures. Used by
//! the process metrics, by the allocator's watch for the end of a burst, and by the benchmark tool,
//! which watches the gateway from outside.

/// CPU seconds (user and system) the process has used so far; 0 when `/proc` cannot say.
pub fn cpu_seconds(pid: &str) -> f64 {
    let (user, system) = cpu_split(pid);
    user + system
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
