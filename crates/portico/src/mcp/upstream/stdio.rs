//! A target that is a local process speaking newline-delimited JSON-RPC on stdin/stdout.
//!
//! One process per client session, started without a shell, in its own process group so that stopping
//! it also stops whatever it started (`npx` runs the server as a grandchild).

use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};

use super::waiters::Waiters;
use super::{InboundSink, UpstreamError};
use crate::config::runtime::StdioSpec;
use crate::mcp::jsonrpc::Payload;

/// How long a process gets to exit after SIGTERM before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(2);

pub struct StdioUpstream {
    stdin: tokio::sync::Mutex<Option<ChildStdin>>,
    waiters: Waiters,
    child: tokio::sync::Mutex<Option<Child>>,
    pid: Option<u32>,
}

impl StdioUpstream {
    pub fn spawn(name: &str, spec: &StdioSpec, sink: InboundSink) -> Result<Self, UpstreamError> {
        let mut command = Command::new(&spec.cmd);
        command
            .args(&spec.args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .process_group(0);
        if spec.clear_env {
            command.env_clear();
        }
        command.envs(&spec.env);
        // SAFETY: prctl is async-signal-safe; it only asks the kernel to kill the child if Portico dies,
        // so that a crashed gateway leaves no orphan.
        unsafe {
            command.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let mut child = command
            .spawn()
            .map_err(|e| UpstreamError::Start(format!("`{}`: {e}", spec.cmd.display())))?;
        let pid = child.id();
        let (Some(stdin), Some(stdout), Some(stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            return Err(UpstreamError::Start("no stdio pipes".into()));
        };
        let waiters = Waiters::default();
        tokio::spawn(read_stdout(stdout, waiters.clone(), sink));
        tokio::spawn(log_stderr(stderr, name.to_string()));
        Ok(Self {
            stdin: tokio::sync::Mutex::new(Some(stdin)),
            waiters,
            child: tokio::sync::Mutex::new(Some(child)),
            pid,
        })
    }

    pub async fn request(&self, request: Value) -> Result<Payload, UpstreamError> {
        self.waiters.call(&request, self.send(&request)).await
    }

    pub async fn send(&self, message: &Value) -> Result<(), UpstreamError> {
        let mut line =
            serde_json::to_vec(message).map_err(|e| UpstreamError::Protocol(e.to_string()))?;
        line.push(b'\n');
        let mut stdin = self.stdin.lock().await;
        let stdin = stdin.as_mut().ok_or(UpstreamError::Closed)?;
        stdin
            .write_all(&line)
            .await
            .map_err(|_| UpstreamError::Closed)?;
        stdin.flush().await.map_err(|_| UpstreamError::Closed)
    }

    /// Closes stdin, asks the process group to stop, kills it after a grace period, and reaps it.
    pub async fn close(&self) {
        self.stdin.lock().await.take();
        let Some(mut child) = self.child.lock().await.take() else {
            return;
        };
        if let Some(pid) = self.pid {
            signal_group(pid, libc::SIGTERM);
        }
        if tokio::time::timeout(STOP_GRACE, child.wait())
            .await
            .is_err()
        {
            if let Some(pid) = self.pid {
                signal_group(pid, libc::SIGKILL);
            }
            let _ = child.wait().await;
        }
        // The server may have left children of its own in the group.
        if let Some(pid) = self.pid {
            signal_group(pid, libc::SIGKILL);
        }
    }
}

fn signal_group(pid: u32, signal: libc::c_int) {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return;
    };
    // SAFETY: killpg has no memory effects; the group id is the child's pid (process_group(0)).
    unsafe {
        libc::killpg(pid, signal);
    }
}

async fn read_stdout(stdout: tokio::process::ChildStdout, waiters: Waiters, sink: InboundSink) {
    let mut lines = BufReader::new(stdout).lines();
    let reason = loop {
        match lines.next_line().await {
            Ok(Some(line)) => {
                if line.trim().is_empty() {
                    continue;
                }
                waiters.route(&line, &sink, "stdio");
            }
            Ok(None) => break "the process closed its stdout".to_string(),
            Err(e) => break format!("reading stdout failed: {e}"),
        }
    };
    // Dropping the waiters fails every request still in flight.
    waiters.fail_all();
    sink.closed(reason);
}

async fn log_stderr(stderr: tokio::process::ChildStderr, target: String) {
    let mut lines = BufReader::new(stderr).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        tracing::info!(target: "portico::stderr", target = %target, "{line}");
    }
}
