//! nginx as the reference proxy of `--goals`: a plain HTTP reverse proxy in C that reads no JSON,
//! measured in the same run as Portico. The CPU and latency goals are absolute figures from
//! another machine; what nginx spends here tells how much of a miss is the machine's.

use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

/// A running nginx proxying one upstream, stopped and its files removed when dropped.
pub struct Nginx {
    master: Child,
    dir: PathBuf,
    /// The worker processes, whose CPU is the proxy's.
    pub workers: Vec<u32>,
    /// The MCP endpoint through nginx.
    pub url: String,
}

impl Nginx {
    /// Starts nginx in front of `upstream` (`http://HOST:PORT/mcp`) as a deployment would for MCP:
    /// a worker per CPU (as Portico's default), keep-alive on both sides, no buffering (SSE), no
    /// access log. `None` when nginx is not installed.
    pub async fn start(upstream: &str) -> anyhow::Result<Option<Self>> {
        let Some(program) = program() else {
            return Ok(None);
        };
        let upstream: hyper::Uri = upstream.parse()?;
        let server = upstream
            .authority()
            .ok_or_else(|| anyhow::anyhow!("no host in {upstream}"))?;
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
            .local_addr()?
            .port();
        let dir = std::env::temp_dir().join(format!("portico-bench-nginx-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join("nginx.conf"), config(&dir, server.as_str(), port))?;
        let master = Command::new(program)
            .arg("-c")
            .arg(dir.join("nginx.conf"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let mut nginx = Self {
            master,
            dir,
            workers: Vec::new(),
            url: format!("http://127.0.0.1:{port}{}", upstream.path()),
        };
        nginx.wait_for_workers(port).await?;
        Ok(Some(nginx))
    }

    async fn wait_for_workers(&mut self, port: u16) -> anyhow::Result<()> {
        let master = self.master.id().unwrap_or(0);
        for _ in 0..100 {
            if let Ok(Some(status)) = self.master.try_wait() {
                let log = std::fs::read_to_string(self.dir.join("error.log")).unwrap_or_default();
                anyhow::bail!("nginx exited ({status}): {log}");
            }
            let children =
                std::fs::read_to_string(format!("/proc/{master}/task/{master}/children"))
                    .unwrap_or_default();
            self.workers = children
                .split_whitespace()
                .filter_map(|pid| pid.parse().ok())
                .collect();
            let listening = tokio::net::TcpStream::connect((Ipv4Addr::LOCALHOST, port))
                .await
                .is_ok();
            if listening && self.workers.len() >= workers() {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        anyhow::bail!("nginx did not start its workers on port {port} within 5 s")
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGTERM, not SIGKILL: the master then stops its workers, which would otherwise keep the port.
        crate::terminate(&self.master);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Debian installs nginx in /usr/sbin, which a non-root PATH often lacks.
fn program() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin")])
        .map(|dir| dir.join("nginx"))
        .find(|candidate| candidate.is_file())
}

fn workers() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

fn config(dir: &Path, upstream: &str, port: u16) -> String {
    let dir = dir.display();
    format!(
        "daemon off;
master_process on;
worker_processes {workers};
pid {dir}/nginx.pid;
error_log {dir}/error.log;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  client_body_temp_path {dir}/body;
  proxy_temp_path {dir}/proxy;
  fastcgi_temp_path {dir}/fastcgi;
  uwsgi_temp_path {dir}/uwsgi;
  scgi_temp_path {dir}/scgi;
  # nginx closes a kept-alive connection after 1,000 requests by default; the load's connections
  # (and Portico's) carry many more.
  keepalive_requests 1000000;
  upstream mcp {{ server {upstream}; keepalive 64; keepalive_requests 1000000; }}
  server {{
    listen 127.0.0.1:{port};
    location / {{
      proxy_pass http://mcp;
      proxy_http_version 1.1;
      proxy_set_header Connection \"\";
      proxy_set_header Host 127.0.0.1;
      proxy_buffering off;
    }}
  }}
}}
",
        workers = workers()
    )
}
