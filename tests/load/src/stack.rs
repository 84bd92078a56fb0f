//! Emporium as an operator runs it: the `emporium` binary as real processes,
//! on private Postgres, NATS and Redis servers that belong to this run alone.
//!
//! The services run either all in one process (as `just up` runs them) or
//! one process per service, so that one can be killed and restarted while the
//! others go on; then the simulated payment provider runs in a process of its
//! own too (`emporium provider`), as another system would, so its records
//! outlive payment's. Each process gets its own ops address, and is ready when
//! its `/readyz` answers 200.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use emporium_test_harness::{NatsServer, PostgresServer, RedisServer, free_port, stop_gracefully};
use tokio::process::{Child, Command};

/// Every service `emporium run` knows, in the order a stack starts them.
/// (The binary's own list is `emporium run --help`.)
pub const SERVICES: [&str; 9] =
    ["identity", "catalog", "inventory", "order", "payment", "cart", "shipping", "notification", "gateway"];

/// How the services are spread over processes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// `emporium run all`: one process, named `all`.
    OneProcess,
    /// `emporium run <service>` for each service, each named after its
    /// service, and `emporium provider`, named `provider`, which payment
    /// calls over NATS.
    ProcessPerService,
}

/// One running `emporium` process.
#[derive(Debug)]
struct Process {
    /// The `emporium` subcommand and its arguments.
    args: Vec<&'static str>,
    ops_port: u16,
    child: Option<Child>,
}

/// The stack: private servers and the service processes on them.
pub struct ProcessStack {
    pub postgres: PostgresServer,
    pub nats: NatsServer,
    pub redis: RedisServer,
    binary: PathBuf,
    env: Vec<(String, String)>,
    processes: BTreeMap<String, Process>,
    gateway_port: u16,
    logs: tempfile::TempDir,
    http: reqwest::Client,
}

impl std::fmt::Debug for ProcessStack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcessStack").field("gateway", &self.gateway()).finish_non_exhaustive()
    }
}

impl ProcessStack {
    /// Starts the servers, provisions them (`emporium provision`) and starts
    /// the services as `layout` says, with `env` on top of the stack's own
    /// settings; returns once every process is ready.
    pub async fn start(binary: &Path, layout: Layout, env: &[(&str, &str)]) -> anyhow::Result<Self> {
        Self::start_with(binary, layout, env, &[]).await
    }

    /// Like [`ProcessStack::start`], with Postgres server settings (`name=value`) on top.
    pub async fn start_with(
        binary: &Path,
        layout: Layout,
        env: &[(&str, &str)],
        postgres_settings: &[&str],
    ) -> anyhow::Result<Self> {
        let postgres = PostgresServer::start_with(postgres_settings).await.context("starting a private Postgres")?;
        let nats = NatsServer::start().await.context("starting a private NATS")?;
        let redis = RedisServer::start().await.context("starting a private Redis")?;
        let logs = tempfile::Builder::new().prefix("emporium-stack-").tempdir()?;
        let gateway_port = free_port()?;
        let unlimited = u32::MAX.to_string();
        let mut base = vec![
            ("EMPORIUM_ENV".to_owned(), "development".to_owned()),
            // A run's customers all come from this one address.
            ("GATEWAY_RATE_LIMIT_PER_IP".to_owned(), unlimited.clone()),
            ("GATEWAY_RATE_LIMIT_PER_USER".to_owned(), unlimited.clone()),
            ("GATEWAY_RATE_LIMIT_AUTH_PER_IP".to_owned(), unlimited),
            ("DATABASE_URL".to_owned(), postgres.url()),
            ("NATS_URL".to_owned(), nats.url()),
            ("REDIS_URL".to_owned(), redis.url()),
            ("GATEWAY_ADDR".to_owned(), format!("127.0.0.1:{gateway_port}")),
            ("IDENTITY_SIGNING_KEY_FILE".to_owned(), logs.path().join("identity.pem").display().to_string()),
            ("LOG_FORMAT".to_owned(), "json".to_owned()),
            ("RUST_LOG".to_owned(), "warn".to_owned()),
        ];
        base.extend(env.iter().map(|(name, value)| ((*name).to_owned(), (*value).to_owned())));
        let groups: Vec<(String, Vec<&'static str>)> = match layout {
            Layout::OneProcess => vec![("all".to_owned(), [&["run"][..], &SERVICES].concat())],
            Layout::ProcessPerService => {
                // Before the caller's settings, which win.
                base.insert(0, ("PAYMENT_SIMULATOR".to_owned(), "remote".to_owned()));
                SERVICES
                    .iter()
                    .map(|s| ((*s).to_owned(), vec!["run", *s]))
                    .chain([("provider".to_owned(), vec!["provider"])])
                    .collect()
            }
        };
        let mut processes = BTreeMap::new();
        for (name, args) in groups {
            processes.insert(name, Process { args, ops_port: free_port()?, child: None });
        }
        let mut stack = Self {
            postgres,
            nats,
            redis,
            binary: binary.to_owned(),
            env: base,
            processes,
            gateway_port,
            logs,
            http: reqwest::Client::new(),
        };
        let provision_log = std::fs::File::create(stack.log_path("provision"))?;
        let provisioned = stack
            .command()
            .arg("provision")
            .stderr(provision_log.try_clone()?)
            .stdout(provision_log)
            .status()
            .await
            .context("running emporium provision")?;
        if !provisioned.success() {
            bail!("emporium provision failed ({provisioned}); see {}", stack.log_path("provision").display());
        }
        let names: Vec<String> = stack.processes.keys().cloned().collect();
        for name in &names {
            stack.spawn(name)?;
        }
        for name in &names {
            stack.ready(name).await?;
        }
        Ok(stack)
    }

    fn command(&self) -> Command {
        let mut command = Command::new(&self.binary);
        command.env_clear().envs(self.env.iter().map(|(k, v)| (k, v)));
        if let Some(path) = std::env::var_os("PATH") {
            command.env("PATH", path);
        }
        command.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
        command
    }

    fn log_path(&self, process: &str) -> PathBuf {
        self.logs.path().join(format!("{process}.log"))
    }

    fn spawn(&mut self, name: &str) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.log_path(name))?;
        let process = self.processes.get(name).with_context(|| format!("no process {name}"))?;
        let mut command = self.command();
        command
            .args(&process.args)
            .env("OPS_ADDR", format!("127.0.0.1:{}", process.ops_port))
            .stderr(log.try_clone()?)
            .stdout(log)
            .kill_on_drop(true);
        let child = command.spawn().with_context(|| format!("starting {}", self.binary.display()))?;
        if let Some(process) = self.processes.get_mut(name) {
            process.child = Some(child);
        }
        Ok(())
    }

    /// Waits until the process answers `/readyz` with 200.
    async fn ready(&mut self, name: &str) -> anyhow::Result<()> {
        let url = {
            let process = self.processes.get(name).with_context(|| format!("no process {name}"))?;
            format!("http://127.0.0.1:{}/readyz", process.ops_port)
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(response) = self.http.get(&url).send().await
                && response.status().is_success()
            {
                return Ok(());
            }
            let exited = match self.processes.get_mut(name).and_then(|p| p.child.as_mut()) {
                Some(child) => child.try_wait()?.is_some(),
                None => true,
            };
            if exited || tokio::time::Instant::now() >= deadline {
                bail!("process {name} did not become ready; its log: {}", self.log_path(name).display());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The gateway's base URL.
    pub fn gateway(&self) -> String {
        format!("http://127.0.0.1:{}", self.gateway_port)
    }

    /// The names of the processes (`all`, or one per service and `provider`).
    pub fn processes(&self) -> Vec<String> {
        self.processes.keys().cloned().collect()
    }

    /// A running process's id.
    pub fn pid(&self, name: &str) -> Option<u32> {
        self.processes.get(name)?.child.as_ref()?.id()
    }

    /// A service's own database URL on the private server.
    pub fn database_url(&self, service: &str) -> String {
        self.postgres.database_url(&emporium_platform::connections::database_name(service))
    }

    /// Kills the process at once (SIGKILL), as a crash would.
    pub async fn kill(&mut self, name: &str) -> anyhow::Result<()> {
        if let Some(mut child) = self.processes.get_mut(name).and_then(|p| p.child.take()) {
            child.kill().await?;
        }
        Ok(())
    }

    /// Starts a stopped or killed process again and waits until it is ready.
    pub async fn restart(&mut self, name: &str) -> anyhow::Result<()> {
        self.kill(name).await?;
        self.spawn(name)?;
        self.ready(name).await
    }

    /// Stops every process the way an operator does (SIGTERM: drain, then exit).
    pub async fn stop(&mut self) -> anyhow::Result<()> {
        for process in self.processes.values_mut() {
            if let Some(child) = process.child.take() {
                stop_gracefully(child, "TERM").await?;
            }
        }
        Ok(())
    }

    /// Ends the stack (its processes killed, its servers stopped) but keeps
    /// the processes' logs; returns where they are.
    pub fn keep_logs(self) -> anyhow::Result<PathBuf> {
        Ok(self.logs.keep())
    }

    /// Runs an operator command (`emporium <args>`) against this stack.
    pub async fn operator(&self, args: &[&str]) -> anyhow::Result<String> {
        let output = self.command().args(args).stdout(Stdio::piped()).output().await?;
        if !output.status.success() {
            bail!("emporium {} failed: {}", args.join(" "), output.status);
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }
}
