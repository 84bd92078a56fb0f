//! Containers for servers the environment does not name (Docker users).

use testcontainers::core::{IntoContainerPort, WaitFor};
use testcontainers::runners::AsyncRunner;
use testcontainers::{ContainerAsync, GenericImage, ImageExt};

use crate::HarnessError;

/// A started container and the URL to reach its server.
pub(crate) struct Started {
    pub(crate) url: String,
    pub(crate) container: ContainerAsync<GenericImage>,
}

/// Whether a Docker engine looks reachable (a socket or `DOCKER_HOST`).
pub(crate) fn docker_available() -> bool {
    std::env::var_os("DOCKER_HOST").is_some() || std::path::Path::new("/var/run/docker.sock").exists()
}

/// The server URL from `variable`, or a container when it is unset and Docker is there.
pub(crate) async fn url_or_container(
    variable: &'static str,
    start: impl AsyncFnOnce() -> Result<Started, HarnessError>,
) -> Result<(String, Option<ContainerAsync<GenericImage>>), HarnessError> {
    if let Ok(url) = std::env::var(variable) {
        return Ok((url, None));
    }
    if !docker_available() {
        return Err(HarnessError::NoServer { variable });
    }
    let started = start().await?;
    Ok((started.url, Some(started.container)))
}

pub(crate) async fn postgres() -> Result<Started, HarnessError> {
    let container = GenericImage::new("postgres", "16-alpine")
        .with_exposed_port(5432.tcp())
        .with_wait_for(WaitFor::message_on_stderr("database system is ready to accept connections"))
        .with_env_var("POSTGRES_PASSWORD", "postgres")
        .start()
        .await?;
    let port = container.get_host_port_ipv4(5432).await?;
    Ok(Started { url: format!("postgres://postgres:postgres@127.0.0.1:{port}/postgres"), container })
}

pub(crate) async fn redis() -> Result<Started, HarnessError> {
    let container = GenericImage::new("redis", "7-alpine")
        .with_exposed_port(6379.tcp())
        .with_wait_for(WaitFor::message_on_stdout("Ready to accept connections"))
        .start()
        .await?;
    let port = container.get_host_port_ipv4(6379).await?;
    Ok(Started { url: format!("redis://127.0.0.1:{port}"), container })
}

pub(crate) async fn nats() -> Result<Started, HarnessError> {
    let container = GenericImage::new("nats", "2.9-alpine")
        .with_exposed_port(4222.tcp())
        .with_wait_for(WaitFor::message_on_stderr("Server is ready"))
        .with_cmd(["-js"])
        .start()
        .await?;
    let port = container.get_host_port_ipv4(4222).await?;
    Ok(Started { url: format!("nats://127.0.0.1:{port}"), container })
}
