//! Private Postgres and Redis servers, each a child process of the caller on
//! a port of its own, for the runs that stop, kill and restart servers
//! (`just chaos`) or must not share them (`just bench`). The data lives in a
//! temporary directory and goes with the server.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

use crate::{HarnessError, eventually};

/// Where Debian (and most distributions) put the Postgres server programs.
const POSTGRES_BIN_DIRS: &str = "/usr/lib/postgresql";

/// A free port on the loopback interface. Another process could take it
/// before the server binds it; the start then fails and says so.
pub fn free_port() -> Result<u16, HarnessError> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn quiet() -> Stdio {
    if std::env::var_os("TEST_LOG").is_some() { Stdio::inherit() } else { Stdio::null() }
}

/// `POSTGRES_BIN_DIR`, else the newest version under /usr/lib/postgresql.
fn postgres_bin_dir() -> Result<PathBuf, HarnessError> {
    if let Some(dir) = std::env::var_os("POSTGRES_BIN_DIR") {
        return Ok(PathBuf::from(dir));
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir(POSTGRES_BIN_DIRS)?
        .filter_map(Result::ok)
        .filter_map(|entry| Some((entry.file_name().to_str()?.parse().ok()?, entry.path().join("bin"))))
        .filter(|(_, bin)| bin.join("postgres").is_file())
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin).ok_or_else(|| HarnessError::Server {
        name: "postgres",
        reason: format!("no server under {POSTGRES_BIN_DIRS}; set POSTGRES_BIN_DIR"),
    })
}

/// Postgres refuses to run as root; as root, run it as the `postgres` user
/// (the owner of the distribution's own data directory).
fn postgres_user() -> Result<Option<(u32, u32)>, HarnessError> {
    if std::fs::metadata("/proc/self")?.uid() != 0 {
        return Ok(None);
    }
    let passwd = std::fs::read_to_string("/etc/passwd")?;
    passwd
        .lines()
        .map(|line| line.split(':').collect::<Vec<_>>())
        .find(|fields| fields.first() == Some(&"postgres"))
        .and_then(|fields| Some((fields.get(2)?.parse().ok()?, fields.get(3)?.parse().ok()?)))
        .map(Some)
        .ok_or_else(|| HarnessError::Server { name: "postgres", reason: "running as root and no postgres user".into() })
}

/// A private Postgres cluster (fsync on, trust auth on 127.0.0.1).
pub struct PostgresServer {
    bin: PathBuf,
    user: Option<(u32, u32)>,
    port: u16,
    data: tempfile::TempDir,
    settings: Vec<String>,
    child: Option<Child>,
}

impl std::fmt::Debug for PostgresServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresServer").field("port", &self.port).finish_non_exhaustive()
    }
}

impl PostgresServer {
    /// Creates a cluster in a temporary directory and starts it.
    pub async fn start() -> Result<Self, HarnessError> {
        Self::start_with(&[]).await
    }

    /// Like [`PostgresServer::start`], with server settings (`name=value`) on top.
    pub async fn start_with(settings: &[&str]) -> Result<Self, HarnessError> {
        let bin = postgres_bin_dir()?;
        let user = postgres_user()?;
        let data = tempfile::Builder::new().prefix("emporium-pg-").tempdir()?;
        if let Some((uid, gid)) = user {
            std::os::unix::fs::chown(data.path(), Some(uid), Some(gid))?;
        }
        let settings = settings.iter().map(|s| (*s).to_owned()).collect();
        let mut server = Self { bin, user, port: free_port()?, data, settings, child: None };
        let status = server
            .command("initdb")
            .args(["--auth=trust", "--username=postgres", "--encoding=UTF8", "--no-instructions", "-D"])
            .arg(server.cluster())
            .stdout(quiet())
            .stderr(quiet())
            .status()
            .await?;
        if !status.success() {
            return Err(HarnessError::Server { name: "postgres", reason: format!("initdb: {status}") });
        }
        server.launch().await?;
        Ok(server)
    }

    fn cluster(&self) -> PathBuf {
        self.data.path().join("cluster")
    }

    fn command(&self, program: &str) -> Command {
        let mut command = Command::new(self.bin.join(program));
        if let Some((uid, gid)) = self.user {
            command.uid(uid).gid(gid);
        }
        command
    }

    async fn launch(&mut self) -> Result<(), HarnessError> {
        let socket_dir: &Path = self.data.path();
        let child = self
            .command("postgres")
            .arg("-D")
            .arg(self.cluster())
            .args(["-p", &self.port.to_string(), "-c", "listen_addresses=127.0.0.1", "-c"])
            .arg(format!("unix_socket_directories={}", socket_dir.display()))
            // Every service keeps a pool; a bench or chaos run holds a few more.
            .args(["-c", "max_connections=300", "-c", "fsync=on", "-c", "synchronous_commit=on"])
            .args(self.settings.iter().flat_map(|setting| ["-c", setting.as_str()]))
            .stdout(quiet())
            .stderr(quiet())
            .kill_on_drop(true)
            .spawn()?;
        self.child = Some(child);
        let url = self.url();
        let ready = eventually(Duration::from_secs(30), || {
            let url = url.clone();
            async move {
                use sqlx::ConnectOptions;
                let Ok(options) = url.parse::<sqlx::postgres::PgConnectOptions>() else { return false };
                options.connect().await.is_ok()
            }
        })
        .await;
        if ready {
            Ok(())
        } else {
            Err(HarnessError::Server { name: "postgres", reason: format!("not accepting on port {}", self.port) })
        }
    }

    /// The server URL (database `postgres`).
    pub fn url(&self) -> String {
        self.database_url("postgres")
    }

    /// The URL of one database on this server.
    pub fn database_url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// The postmaster's process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(Child::id)
    }

    /// Stops the server the way an operator restarting it would (fast
    /// shutdown: open transactions are rolled back, clients disconnected).
    pub async fn stop(&mut self) -> Result<(), HarnessError> {
        match self.child.take() {
            Some(child) => stop_gracefully(child, "INT").await,
            None => Ok(()),
        }
    }

    /// Stops and starts the server again on the same port with the same data.
    pub async fn restart(&mut self) -> Result<(), HarnessError> {
        self.stop().await?;
        self.launch().await
    }
}

impl Drop for PostgresServer {
    fn drop(&mut self) {
        // The postmaster's children stop when it does; SIGQUIT ends it at once.
        if let Some(pid) = self.child.as_ref().and_then(Child::id) {
            let _ = std::process::Command::new("kill").args(["-QUIT", &pid.to_string()]).status();
        }
    }
}

/// A private `redis-server` that keeps nothing on disk.
pub struct RedisServer {
    port: u16,
    child: Option<Child>,
}

impl std::fmt::Debug for RedisServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisServer").field("port", &self.port).finish_non_exhaustive()
    }
}

impl RedisServer {
    pub async fn start() -> Result<Self, HarnessError> {
        let mut server = Self { port: free_port()?, child: None };
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &server.port.to_string(), "--save", "", "--appendonly", "no"])
            .stdout(quiet())
            .stderr(quiet())
            .kill_on_drop(true)
            .spawn()?;
        server.child = Some(child);
        let addr = format!("127.0.0.1:{}", server.port);
        let ready = eventually(Duration::from_secs(10), || {
            let addr = addr.clone();
            async move { tokio::net::TcpStream::connect(addr).await.is_ok() }
        })
        .await;
        if ready { Ok(server) } else { Err(HarnessError::Server { name: "redis", reason: "did not start".into() }) }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(Child::id)
    }
}

/// Sends `child` the signal `name` (`INT`, `TERM`, …) that asks it to stop
/// and waits for it to exit; kills it if it is still there after 30 s.
pub async fn stop_gracefully(mut child: Child, name: &str) -> Result<(), HarnessError> {
    if let Some(pid) = child.id() {
        Command::new("kill").arg(format!("-{name}")).arg(pid.to_string()).status().await?;
    }
    if tokio::time::timeout(Duration::from_secs(30), child.wait()).await.is_err() {
        child.kill().await?;
    }
    Ok(())
}
