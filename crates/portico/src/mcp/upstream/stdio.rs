//! A target that is a local process speaking newline-delimited JSON-RPC on stdin/stdout.
//!
//! One process per client session, started without a shell (`base::spawn`), in its own process group
//! so that stopping it also stops whatever it started (`npx` runs the server as a grandchild), and
//! killed by the kernel if the gateway dies.

use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{ChildStdin, ChildStdout};

use super::waiters::Waiters;
use super::{InboundSink, UpstreamError};
use crate::base::spawn::{self, Child, Spawn};
use crate::config::runtime::StdioSpec;
use crate::mcp::jsonrpc::Payload;
use crate::mcp::list_result;
use crate::mcp::message::Message;

/// How long a process gets to exit after SIGTERM before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(2);

pub struct StdioUpstream {
    stdin: tokio::sync::Mutex<Option<ChildStdin>>,
    waiters: Waiters,
    child: tokio::sync::Mutex<Option<Child>>,
}

/// A started target process whose stdout nobody reads yet: a warm one waiting in a pool
/// ([`super::stdio_pool`]), or one about to become a session's connection.
pub struct Process {
    child: Child,
    stdin: ChildStdin,
    stdout: ChildStdout,
}

impl Process {
    /// Starts `spec` without a shell, in its own process group; its stderr goes to the log under
    /// `name` from now on.
    pub fn start(name: &str, spec: &StdioSpec) -> Result<Self, UpstreamError> {
        let started = spawn::spawn(&Spawn {
            program: &spec.cmd,
            args: &spec.args,
            env: &spec.env,
            clear_env: spec.clear_env,
        })
        .map_err(|e| UpstreamError::Start(format!("`{}`: {e}", spec.cmd.display())))?;
        tokio::spawn(log_stderr(started.stderr, name.to_string()));
        Ok(Self {
            child: started.child,
            stdin: started.stdin,
            stdout: started.stdout,
        })
    }

    /// Whether the process is still running (a warm one may have died while it waited).
    pub fn is_running(&mut self) -> bool {
        self.child.is_running()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Process {
    /// Stops the process and what it started, at once (a warm one nobody took).
    pub fn kill(&mut self) {
        if self.child.is_running() {
            signal_group(self.pid(), libc::SIGKILL);
        }
    }
}

impl StdioUpstream {
    /// Makes a started process the session's connection: its stdout is read from now on; a line
    /// longer than `max_line` bytes ends the connection.
    pub fn attach(process: Process, sink: InboundSink, max_line: usize) -> Self {
        let Process {
            child,
            stdin,
            stdout,
        } = process;
        let waiters = Waiters::default();
        tokio::spawn(read_stdout(stdout, waiters.clone(), sink, max_line));
        Self {
            stdin: tokio::sync::Mutex::new(Some(stdin)),
            waiters,
            child: tokio::sync::Mutex::new(Some(child)),
        }
    }

    pub async fn request(&self, request: Message) -> Result<Payload, UpstreamError> {
        let line = request.to_bytes();
        let page = list_result::shape(request.method());
        self.waiters
            .call(request.sent_id(), page, self.write_line(line))
            .await
    }

    pub async fn send(&self, message: &Value) -> Result<(), UpstreamError> {
        let line =
            serde_json::to_vec(message).map_err(|e| UpstreamError::Protocol(e.to_string()))?;
        self.write_line(line).await
    }

    /// Writes one message, and the newline that ends it.
    async fn write_line(&self, mut line: Vec<u8>) -> Result<(), UpstreamError> {
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
        let pid = child.id();
        signal_group(pid, libc::SIGTERM);
        if tokio::time::timeout(STOP_GRACE, child.wait())
            .await
            .is_err()
        {
            signal_group(pid, libc::SIGKILL);
            child.wait().await;
        }
        // The server may have left children of its own in the group.
        signal_group(pid, libc::SIGKILL);
    }
}

fn signal_group(pid: u32, signal: libc::c_int) {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return;
    };
    // SAFETY: killpg has no memory effects; the group id is the child's pid (the child leads its own
    // group, `base::spawn`).
    unsafe {
        libc::killpg(pid, signal);
    }
}

async fn read_stdout(stdout: ChildStdout, waiters: Waiters, sink: InboundSink, max_line: usize) {
    let mut stdout = BufReader::new(stdout);
    let mut line = Vec::new();
    let reason = loop {
        line.clear();
        match read_line(&mut stdout, &mut line, max_line).await {
            Ok(Line::Complete) => {
                let text = String::from_utf8_lossy(&line);
                if !text.trim().is_empty() {
                    waiters.route(&text, &sink, "stdio");
                }
            }
            Ok(Line::TooLong) => {
                waiters.fail_all(|| UpstreamError::TooLarge(max_line));
                sink.closed(format!(
                    "the process wrote a line longer than {max_line} bytes (config.limits.upstreamResponse)"
                ));
                return;
            }
            Ok(Line::End) => break "the process closed its stdout".to_string(),
            Err(e) => break format!("reading stdout failed: {e}"),
        }
    };
    waiters.fail_all(|| UpstreamError::Closed);
    sink.closed(reason);
}

enum Line {
    Complete,
    TooLong,
    End,
}

/// Reads up to the next `\n` into `line` (without it), holding no more than `max` bytes: past that,
/// `line` has the first `max` and the rest of the line is left unread.
async fn read_line<R: tokio::io::AsyncBufRead + Unpin>(
    reader: &mut R,
    line: &mut Vec<u8>,
    max: usize,
) -> std::io::Result<Line> {
    loop {
        let available = reader.fill_buf().await?;
        if available.is_empty() {
            return Ok(if line.is_empty() {
                Line::End
            } else {
                Line::Complete
            });
        }
        let (taken, done) = match available.iter().position(|b| *b == b'\n') {
            Some(end) => (end, true),
            None => (available.len(), false),
        };
        if line.len() + taken > max {
            let room = max - line.len();
            line.extend_from_slice(&available[..room]);
            reader.consume(room);
            return Ok(Line::TooLong);
        }
        line.extend_from_slice(&available[..taken]);
        reader.consume(taken + usize::from(done));
        if done {
            return Ok(Line::Complete);
        }
    }
}

/// Longest stderr line logged whole; longer ones are cut there.
const MAX_STDERR_LINE: usize = 16 * 1024;

async fn log_stderr(stderr: tokio::process::ChildStderr, target: String) {
    let mut stderr = BufReader::new(stderr);
    let mut line = Vec::new();
    loop {
        line.clear();
        let cut = match read_line(&mut stderr, &mut line, MAX_STDERR_LINE).await {
            Ok(Line::Complete) => false,
            Ok(Line::TooLong) => true,
            Ok(Line::End) | Err(_) => return,
        };
        let text = String::from_utf8_lossy(&line);
        tracing::info!(target: "portico::stderr", target = %target, cut, "{text}");
        if cut && skip_line(&mut stderr).await.is_err() {
            return;
        }
    }
}

/// Discards the rest of the current line.
async fn skip_line<R: tokio::io::AsyncBufRead + Unpin>(reader: &mut R) -> std::io::Result<()> {
    loop {
        let available = reader.fill_buf().await?;
        if available.is_empty() {
            return Ok(());
        }
        match available.iter().position(|b| *b == b'\n') {
            Some(end) => {
                reader.consume(end + 1);
                return Ok(());
            }
            None => {
                let all = available.len();
                reader.consume(all);
            }
        }
    }
}
