//! Starting a stdio target's process the way `posix_spawn` does, plus one step it cannot take: asking
//! the kernel to kill the child when the gateway dies (`PR_SET_PDEATHSIG`).
//!
//! std's `Command` (and tokio's) takes the `posix_spawn` path only without a `pre_exec` hook; with
//! one, it forks. A fork copies the gateway's page tables and marks its memory copy-on-write, so each
//! page the gateway writes afterwards faults once more: ~85 page faults and ~0.35 ms of the
//! gateway's CPU per stdio session, ~0.5 ms of the session's start (docs/performance.md). Here, as in
//! glibc's `posix_spawn`, the child runs on its own small stack in the gateway's memory
//! (`CLONE_VM | CLONE_VFORK`: the calling thread waits until the child has called `execve`), makes
//! only system calls, and reports a failure through that shared memory.
//!
//! The child is followed through a pidfd (Linux 5.3): its exit makes the descriptor readable.

use std::collections::BTreeMap;
use std::ffi::{CString, OsStr, OsString};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::{mem, ptr};

use tokio::io::unix::AsyncFd;
use tokio::process::{ChildStderr, ChildStdin, ChildStdout};

/// What to start.
pub struct Spawn<'a> {
    pub program: &'a Path,
    pub args: &'a [String],
    /// Variables set on top of the gateway's environment (or of none, with `clear_env`).
    pub env: &'a BTreeMap<String, String>,
    pub clear_env: bool,
}

/// A started child and the gateway's ends of its stdin, stdout and stderr pipes.
pub struct Spawned {
    pub child: Child,
    pub stdin: ChildStdin,
    pub stdout: ChildStdout,
    pub stderr: ChildStderr,
}

/// The child's stack while it shares the gateway's memory: it only makes system calls.
const CHILD_STACK: usize = 32 * 1024;

/// The search path of `execvp` when the environment has no `PATH`.
const DEFAULT_PATH: &str = "/bin:/usr/bin";

/// Starts `spawn.program` in a process group of its own (so that stopping it stops what it starts),
/// killed by the kernel if the gateway's thread that started it ends, its stdin, stdout and stderr
/// piped. Must be called inside a tokio runtime.
pub fn spawn(spawn: &Spawn<'_>) -> io::Result<Spawned> {
    let env = environment(spawn);
    let path = find_program(spawn.program, search_path(&env))?;
    let path = c_string(path.into_os_string().into_vec())?;
    let mut argv = vec![c_string(spawn.program.as_os_str().as_bytes().to_vec())?];
    for arg in spawn.args {
        argv.push(c_string(arg.as_bytes().to_vec())?);
    }
    let envp = env
        .into_iter()
        .map(|(name, value)| {
            let mut pair = name.into_vec();
            pair.push(b'=');
            pair.extend_from_slice(value.as_bytes());
            c_string(pair)
        })
        .collect::<io::Result<Vec<_>>>()?;
    let (stdin_read, stdin_write) = pipe()?;
    let (stdout_read, stdout_write) = pipe()?;
    let (stderr_read, stderr_write) = pipe()?;
    let pid = start(
        &path,
        &argv,
        &envp,
        [&stdin_read, &stdout_write, &stderr_write],
    )?;
    // The child's ends are its own now.
    drop((stdin_read, stdout_write, stderr_write));
    let child = Child::adopt(pid)?;
    Ok(Spawned {
        child,
        stdin: ChildStdin::from_std(std::process::ChildStdin::from(stdin_write))?,
        stdout: ChildStdout::from_std(std::process::ChildStdout::from(stdout_read))?,
        stderr: ChildStderr::from_std(std::process::ChildStderr::from(stderr_read))?,
    })
}

/// The child's environment: the gateway's unless cleared, with `spawn.env` over it.
fn environment(spawn: &Spawn<'_>) -> BTreeMap<OsString, OsString> {
    let mut env: BTreeMap<OsString, OsString> = if spawn.clear_env {
        BTreeMap::new()
    } else {
        std::env::vars_os().collect()
    };
    for (name, value) in spawn.env {
        env.insert(name.into(), value.into());
    }
    env
}

/// Where a bare command name is looked for: the child's `PATH`, as `execvp` would.
fn search_path(env: &BTreeMap<OsString, OsString>) -> OsString {
    env.get(OsStr::new("PATH"))
        .cloned()
        .unwrap_or_else(|| DEFAULT_PATH.into())
}

/// `program` itself when it names a path, else the first executable file of that name on `path`.
fn find_program(program: &Path, path: OsString) -> io::Result<PathBuf> {
    if program.as_os_str().as_bytes().contains(&b'/') {
        return Ok(program.to_path_buf());
    }
    let not_found = || io::Error::from_raw_os_error(libc::ENOENT);
    if program.as_os_str().is_empty() {
        return Err(not_found());
    }
    std::env::split_paths(&path)
        .map(|dir| {
            if dir.as_os_str().is_empty() {
                Path::new(".").join(program)
            } else {
                dir.join(program)
            }
        })
        .find(|candidate| is_executable(candidate))
        .ok_or_else(not_found)
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
}

fn c_string(bytes: Vec<u8>) -> io::Result<CString> {
    CString::new(bytes)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "contains a NUL byte"))
}

/// A pipe whose two ends are closed on `execve` and are not 0, 1 or 2 (were the gateway started
/// with those closed, the child's `dup2` onto them would clobber one end with another).
fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: `fds` has room for the two descriptors pipe2 writes.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: pipe2 succeeded: both are open descriptors that nothing else owns.
    let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    Ok((above_stdio(read)?, above_stdio(write)?))
}

fn above_stdio(fd: OwnedFd) -> io::Result<OwnedFd> {
    if fd.as_raw_fd() > 2 {
        return Ok(fd);
    }
    // SAFETY: F_DUPFD_CLOEXEC on an open descriptor returns a new one (or -1).
    let moved = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 3) };
    if moved < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(moved) })
}

/// What the child reads, and where it writes its error, in the memory it shares with the gateway.
struct ChildSetup {
    path: *const libc::c_char,
    argv: *const *const libc::c_char,
    envp: *const *const libc::c_char,
    /// Its stdin, stdout and stderr.
    stdio: [RawFd; 3],
    /// The gateway, whose death ends the child.
    parent: libc::pid_t,
    /// `errno` of the step that failed, or 0.
    error: libc::c_int,
}

/// Starts the child and returns its pid once it has called `execve`.
fn start(
    path: &CString,
    argv: &[CString],
    envp: &[CString],
    stdio: [&OwnedFd; 3],
) -> io::Result<libc::pid_t> {
    let argv: Vec<*const libc::c_char> = argv
        .iter()
        .map(|a| a.as_ptr())
        .chain([ptr::null()])
        .collect();
    let envp: Vec<*const libc::c_char> = envp
        .iter()
        .map(|e| e.as_ptr())
        .chain([ptr::null()])
        .collect();
    let mut setup = ChildSetup {
        path: path.as_ptr(),
        argv: argv.as_ptr(),
        envp: envp.as_ptr(),
        stdio: stdio.map(AsRawFd::as_raw_fd),
        // SAFETY: getpid has no preconditions.
        parent: unsafe { libc::getpid() },
        error: 0,
    };
    let mut stack = vec![0u8; CHILD_STACK];
    // SAFETY: the stack is ours until `clone` returns (CLONE_VFORK: after the child's `execve` or
    // exit); its top, rounded down to 16 bytes, is where the child starts.
    let top = unsafe { stack.as_mut_ptr().add(CHILD_STACK) };
    let top = (top as usize & !15) as *mut libc::c_void;
    // Signals stay blocked on this thread while the child runs in its memory: a handler must not run
    // in the child, which would run it on the gateway's memory.
    // SAFETY: plain sigset manipulation on local values.
    let old_mask = unsafe {
        let mut all: libc::sigset_t = mem::zeroed();
        let mut old: libc::sigset_t = mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
        old
    };
    // SAFETY: `child_main` only reads `setup` and writes its `error`, makes system calls, and ends
    // in `execve` or `_exit`; everything it reads outlives the call (CLONE_VFORK).
    let pid = unsafe {
        libc::clone(
            child_main,
            top,
            libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
            (&raw mut setup).cast(),
        )
    };
    let clone_error = io::Error::last_os_error();
    // SAFETY: restores this thread's mask saved above.
    unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &old_mask, ptr::null_mut()) };
    if pid < 0 {
        return Err(clone_error);
    }
    // SAFETY: the child wrote it (or not) before `clone` returned; read as memory another
    // thread of execution may have written.
    let error = unsafe { ptr::read_volatile(&raw const setup.error) };
    if error != 0 {
        reap(pid);
        return Err(io::Error::from_raw_os_error(error));
    }
    Ok(pid)
}

/// The child, until `execve`. Only system calls here: it runs on the gateway's memory, with
/// the gateway's thread stopped.
extern "C" fn child_main(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` is the `ChildSetup` of `start`, alive until this function execs or exits.
    unsafe {
        let setup = &mut *arg.cast::<ChildSetup>();
        default_signal_handlers();
        for (target, &fd) in setup.stdio.iter().enumerate() {
            if libc::dup2(fd, target as libc::c_int) < 0 {
                fail(setup);
            }
        }
        if libc::setpgid(0, 0) != 0 || libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
            fail(setup);
        }
        // The gateway died before the request above took effect.
        if libc::getppid() != setup.parent {
            libc::_exit(127);
        }
        let mut empty: libc::sigset_t = mem::zeroed();
        libc::sigemptyset(&mut empty);
        libc::sigprocmask(libc::SIG_SETMASK, &empty, ptr::null_mut());
        libc::execve(setup.path, setup.argv, setup.envp);
        fail(setup)
    }
}

/// Leaves the child, its error noted for the gateway.
///
/// # Safety
/// Only in the child, before `execve`.
unsafe fn fail(setup: &mut ChildSetup) -> ! {
    // SAFETY: errno of this thread of execution; `_exit` ends the child without running anything of
    // the gateway's.
    unsafe {
        setup.error = *libc::__errno_location();
        if setup.error == 0 {
            setup.error = libc::ECHILD;
        }
        libc::_exit(127)
    }
}

/// Signals the gateway handles go back to their default action (a handler of the gateway must not
/// run in the child), and SIGPIPE, which Rust programs ignore, too (as std does for its children).
///
/// # Safety
/// Only in the child, before `execve`.
unsafe fn default_signal_handlers() {
    for signal in 1..=libc::SIGRTMAX() {
        if signal == libc::SIGKILL || signal == libc::SIGSTOP {
            continue;
        }
        // SAFETY: sigaction with valid pointers to local values; glibc refuses its internal signals
        // (EINVAL), which are left as they are.
        unsafe {
            let mut action: libc::sigaction = mem::zeroed();
            if libc::sigaction(signal, ptr::null(), &mut action) != 0 {
                continue;
            }
            let handled =
                action.sa_sigaction != libc::SIG_DFL && action.sa_sigaction != libc::SIG_IGN;
            if handled || (signal == libc::SIGPIPE && action.sa_sigaction == libc::SIG_IGN) {
                let mut default: libc::sigaction = mem::zeroed();
                default.sa_sigaction = libc::SIG_DFL;
                libc::sigemptyset(&mut default.sa_mask);
                libc::sigaction(signal, &default, ptr::null_mut());
            }
        }
    }
}

/// Waits for the exited child `pid` (it has already exited or is about to).
fn reap(pid: libc::pid_t) {
    let mut status = 0;
    // SAFETY: waitpid on our own child with a valid status pointer.
    while unsafe { libc::waitpid(pid, &mut status, 0) } < 0
        && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted
    {}
}

/// Ends our child `pid`, not yet reaped, at once, and reaps it.
fn kill_and_reap(pid: libc::pid_t) {
    // SAFETY: not reaped yet, so the pid is still our child's; kill only sends a signal.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    reap(pid);
}

/// A started child process: killed (SIGKILL) and reaped when dropped before it has been waited for.
pub struct Child {
    pid: libc::pid_t,
    /// Readable once the process has exited.
    exited: Option<AsyncFd<OwnedFd>>,
    reaped: bool,
}

impl Child {
    fn adopt(pid: libc::pid_t) -> io::Result<Self> {
        // SAFETY: pidfd_open takes a pid and flags; it returns a new descriptor or -1.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        if fd < 0 {
            let error = io::Error::last_os_error();
            kill_and_reap(pid);
            return Err(io::Error::new(
                error.kind(),
                format!(
                    "cannot follow the started process (pidfd_open, Linux 5.3 or later): {error}"
                ),
            ));
        }
        let fd = RawFd::try_from(fd).map_err(|_| io::Error::other("pidfd out of range"))?;
        // SAFETY: a new descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: the pidfd is owned by the AsyncFd from here on, and neither closed nor replaced
        // while it is.
        let registered =
            unsafe { AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) };
        let exited = match registered {
            Ok(exited) => exited,
            Err(error) => {
                kill_and_reap(pid);
                return Err(error.into());
            }
        };
        Ok(Self {
            pid,
            exited: Some(exited),
            reaped: false,
        })
    }

    /// The process id.
    pub fn id(&self) -> u32 {
        self.pid.unsigned_abs()
    }

    /// Whether the process is still running (reaps it if it has exited).
    pub fn is_running(&mut self) -> bool {
        if self.reaped {
            return false;
        }
        let mut status = 0;
        // SAFETY: waitpid on our own, not yet reaped child.
        let waited = unsafe { libc::waitpid(self.pid, &mut status, libc::WNOHANG) };
        // -1: no such child any more (ECHILD), so nothing to wait for either.
        self.reaped = waited == self.pid || waited < 0;
        !self.reaped
    }

    /// Waits until the process has exited, and reaps it.
    pub async fn wait(&mut self) {
        while self.is_running() {
            let Some(exited) = &self.exited else {
                return;
            };
            match exited.readable().await {
                Ok(mut ready) => ready.clear_ready(),
                // The runtime is going away: no waiting on it, so the process goes now.
                Err(_) => {
                    kill_and_reap(self.pid);
                    self.reaped = true;
                }
            }
        }
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if !self.is_running() {
            return;
        }
        // SAFETY: our own child, not reaped, so the pid is still its.
        unsafe { libc::kill(self.pid, libc::SIGKILL) };
        let (pid, exited) = (self.pid, self.exited.take());
        // Reaped when it is gone, without blocking this thread.
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move {
                    if let Some(exited) = &exited {
                        let _ = exited.readable().await;
                    }
                    reap(pid);
                });
            }
            Err(_) => {
                drop(exited);
                std::thread::spawn(move || reap(pid));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

    use super::*;

    fn start(
        program: &str,
        args: &[&str],
        env: &[(&str, &str)],
        clear_env: bool,
    ) -> io::Result<Spawned> {
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        let env: BTreeMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        spawn(&Spawn {
            program: Path::new(program),
            args: &args,
            env: &env,
            clear_env,
        })
    }

    /// A field of `/proc/<pid>/status`.
    fn status(pid: u32, field: &str) -> Option<String> {
        let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        text.lines()
            .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
            .map(|value| value.trim().to_string())
    }

    /// Waits up to 5 s for `/proc/<pid>` to say the process has ended (gone, or a zombie).
    fn ended(pid: u32) -> bool {
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            match status(pid, "State") {
                None => return true,
                Some(state) if state.starts_with('Z') => return true,
                Some(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
        false
    }

    #[tokio::test]
    async fn the_child_reads_its_stdin_and_writes_its_stdout_and_stderr() {
        let mut started = start(
            "sh",
            &["-c", "read line; echo \"got $line\"; echo oops >&2"],
            &[],
            false,
        )
        .expect("sh on PATH");
        started.stdin.write_all(b"hello\n").await.expect("write");
        drop(started.stdin);
        let mut line = String::new();
        BufReader::new(started.stdout)
            .read_line(&mut line)
            .await
            .expect("read");
        assert_eq!(line, "got hello\n");
        let mut errors = String::new();
        started
            .stderr
            .read_to_string(&mut errors)
            .await
            .expect("read");
        assert_eq!(errors, "oops\n");
        tokio::time::timeout(Duration::from_secs(5), started.child.wait())
            .await
            .expect("exits");
        assert!(!started.child.is_running());
    }

    #[tokio::test]
    async fn the_environment_is_the_gateways_with_the_targets_over_it_or_only_the_targets() {
        let read = |started: Spawned| async move {
            let Spawned {
                mut child, stdout, ..
            } = started;
            let mut out = String::new();
            BufReader::new(stdout)
                .read_to_string(&mut out)
                .await
                .expect("read");
            child.wait().await;
            out
        };
        let inherited =
            start("/usr/bin/env", &[], &[("PORTICO_SPAWN_TEST", "1")], false).expect("env");
        let inherited = read(inherited).await;
        assert!(
            inherited.lines().any(|l| l == "PORTICO_SPAWN_TEST=1"),
            "{inherited}"
        );
        assert!(
            inherited.lines().any(|l| l.starts_with("PATH=")),
            "{inherited}"
        );
        let cleared = start("/usr/bin/env", &[], &[("ONLY", "this")], true).expect("env");
        assert_eq!(read(cleared).await, "ONLY=this\n");
        // A bare name is looked for on the child's PATH: none here, so execvp's default.
        let found = start("env", &[], &[("A", "b")], true).expect("env on /usr/bin");
        assert_eq!(read(found).await, "A=b\n");
    }

    #[tokio::test]
    async fn a_missing_program_is_an_error_and_leaves_nothing_behind() {
        for program in ["/nonexistent/portico-test", "portico-no-such-command"] {
            let error = start(program, &[], &[], false).err().expect("refused");
            assert_eq!(error.kind(), io::ErrorKind::NotFound, "{program}: {error}");
        }
        let not_executable =
            std::env::temp_dir().join(format!("portico-spawn-{}", std::process::id()));
        std::fs::write(&not_executable, "#!/bin/sh\n").expect("write");
        let path = not_executable.to_str().expect("utf-8");
        let error = start(path, &[], &[], false).err().expect("not executable");
        assert_eq!(error.kind(), io::ErrorKind::PermissionDenied, "{error}");
        std::fs::remove_file(&not_executable).expect("remove");
        // No zombie: the failed children were reaped. (Never having run `execve`, they bear the name
        // of the thread that started them; other tests' children run `sleep`.)
        assert_eq!(zombie_children_named_as_this_thread(), 0);
    }

    fn zombie_children_named_as_this_thread() -> usize {
        let me = std::process::id().to_string();
        let name = std::fs::read_to_string("/proc/thread-self/comm").expect("comm");
        let name = format!("({})", name.trim_end());
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return 0;
        };
        entries
            .flatten()
            .filter_map(|entry| std::fs::read_to_string(entry.path().join("stat")).ok())
            .filter(|stat| {
                // `pid (comm) state ppid …`; the name may hold spaces and parentheses.
                let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
                    return false;
                };
                let mut fields = stat[close + 1..].split_whitespace();
                stat[open..=close] == name
                    && fields.next() == Some("Z")
                    && fields.next() == Some(me.as_str())
            })
            .count()
    }

    #[tokio::test]
    async fn the_child_leads_its_own_group_with_default_signals_and_an_empty_mask() {
        // The gateway ignores SIGPIPE (Rust programs do) and may block signals on its threads.
        let started = start("sleep", &["30"], &[], false).expect("sleep");
        let pid = started.child.id();
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
        let pgrp = stat
            .rsplit(')')
            .next()
            .and_then(|rest| rest.split_whitespace().nth(2));
        assert_eq!(pgrp, Some(pid.to_string().as_str()));
        let ignored =
            u64::from_str_radix(&status(pid, "SigIgn").expect("SigIgn"), 16).expect("hex");
        assert_eq!(
            ignored & (1 << (libc::SIGPIPE - 1)),
            0,
            "SIGPIPE ignored: {ignored:x}"
        );
        assert_eq!(status(pid, "SigBlk").as_deref(), Some("0000000000000000"));
        drop(started);
        assert!(ended(pid), "killed when dropped");
    }

    #[test]
    fn the_child_dies_with_the_thread_that_started_it() {
        // What happens to a target when the gateway is killed: the kernel ends it with its parent.
        let pid = std::thread::spawn(|| {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async {
                let started = start("sleep", &["30"], &[], false).expect("sleep");
                let pid = started.child.id();
                // Not dropped (which would kill it): only the parent's end may.
                mem::forget(started);
                pid
            })
        })
        .join()
        .expect("thread");
        assert!(ended(pid), "the child outlived its parent thread");
        reap(i32::try_from(pid).expect("pid"));
    }
}
