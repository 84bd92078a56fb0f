//! NATS for tests: a private `nats-server -js` per test, or unique names on a shared one.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use testcontainers::{ContainerAsync, GenericImage};
use tokio::process::{Child, Command};

use crate::{HarnessError, containers, eventually, init_tracing, unique_name};

/// A `nats-server` with JetStream that belongs to one test: its own port and
/// store directory, stopped when dropped. Fault tests stop and restart it.
pub struct NatsServer {
    binary: PathBuf,
    port: u16,
    store: tempfile::TempDir,
    child: Option<Child>,
}

impl std::fmt::Debug for NatsServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsServer").field("port", &self.port).finish_non_exhaustive()
    }
}

/// `NATS_SERVER_BIN`, else `nats-server` on the PATH or in /usr/sbin (Debian's package).
fn find_binary() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("NATS_SERVER_BIN") {
        return Some(PathBuf::from(path));
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/local/bin")])
        .map(|dir| dir.join("nats-server"))
        .find(|candidate| candidate.is_file())
}

impl NatsServer {
    /// Whether a private server can be started on this machine.
    pub fn available() -> bool {
        find_binary().is_some()
    }

    /// Starts a private server on a free port and waits until it accepts clients.
    pub async fn start() -> Result<Self, HarnessError> {
        init_tracing();
        let binary = find_binary().ok_or_else(|| HarnessError::Nats("no nats-server binary found".to_owned()))?;
        let store = tempfile::tempdir()?;
        let port = crate::free_port()?;
        let mut server = Self { binary, port, store, child: None };
        server.launch().await?;
        Ok(server)
    }

    async fn launch(&mut self) -> Result<(), HarnessError> {
        let child = Command::new(&self.binary)
            .args(["-a", "127.0.0.1", "-p", &self.port.to_string(), "-js", "-sd"])
            .arg(self.store.path())
            .stdout(Stdio::null())
            .stderr(if std::env::var_os("TEST_LOG").is_some() { Stdio::inherit() } else { Stdio::null() })
            .kill_on_drop(true)
            .spawn()?;
        self.child = Some(child);
        let url = self.url();
        let ready = eventually(Duration::from_secs(10), || {
            let url = url.clone();
            async move { async_nats::connect(url).await.is_ok() }
        })
        .await;
        if ready { Ok(()) } else { Err(HarnessError::Nats(format!("nats-server on port {} did not start", self.port))) }
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The server's process id while it runs (to measure its memory).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(Child::id)
    }

    /// Kills the server (as a crash would); its store stays for [`NatsServer::restart`].
    pub async fn stop(&mut self) -> Result<(), HarnessError> {
        if let Some(mut child) = self.child.take() {
            child.kill().await?;
        }
        Ok(())
    }

    /// Starts the server again on the same port with the same store.
    pub async fn restart(&mut self) -> Result<(), HarnessError> {
        self.stop().await?;
        self.launch().await
    }
}

/// NATS for one test: a private server where possible, else `NATS_URL` (or a
/// container) shared with other tests, where [`TestNats::name`] keeps streams
/// and buckets apart.
pub struct TestNats {
    client: async_nats::Client,
    url: String,
    prefix: String,
    server: Option<NatsServer>,
    _container: Option<ContainerAsync<GenericImage>>,
}

impl std::fmt::Debug for TestNats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestNats").field("url", &self.url).field("private", &self.server.is_some()).finish()
    }
}

impl TestNats {
    pub async fn start() -> Result<Self, HarnessError> {
        init_tracing();
        let (url, server, container) = if NatsServer::available() {
            let server = NatsServer::start().await?;
            (server.url(), Some(server), None)
        } else {
            let (url, container) = containers::url_or_container("NATS_URL", containers::nats).await?;
            (url, None, container)
        };
        let client = async_nats::connect(url.as_str()).await.map_err(HarnessError::nats)?;
        let prefix = unique_name("T").to_uppercase();
        Ok(Self { client, url, prefix, server, _container: container })
    }

    pub fn client(&self) -> &async_nats::Client {
        &self.client
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// `name` made unique to this test (for stream, bucket and consumer names).
    pub fn name(&self, name: &str) -> String {
        format!("{}_{name}", self.prefix)
    }

    /// The private server, for tests that stop and restart it.
    pub fn server(&mut self) -> Option<&mut NatsServer> {
        self.server.as_mut()
    }
}
