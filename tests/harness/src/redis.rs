//! A Redis client with a key prefix of its own per test.

use fred::prelude::{ClientLike, Config, KeysInterface};
use testcontainers::{ContainerAsync, GenericImage};

use crate::{HarnessError, containers, init_tracing, unique_name};

/// A connected client; every key a test writes should start with [`TestRedis::prefix`].
pub struct TestRedis {
    client: fred::clients::Client,
    prefix: String,
    url: String,
    _container: Option<ContainerAsync<GenericImage>>,
}

impl std::fmt::Debug for TestRedis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestRedis").field("prefix", &self.prefix).finish_non_exhaustive()
    }
}

impl TestRedis {
    /// Connects to `REDIS_URL` (or a container).
    pub async fn connect() -> Result<Self, HarnessError> {
        init_tracing();
        let (url, container) = containers::url_or_container("REDIS_URL", containers::redis).await?;
        let client = fred::types::Builder::from_config(Config::from_url(&url)?).build()?;
        client.init().await?;
        Ok(Self { client, prefix: format!("{}:", unique_name("test")), url, _container: container })
    }

    pub fn client(&self) -> &fred::clients::Client {
        &self.client
    }

    /// `test_<unique>:`, the start of every key this test owns.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// Deletes every key under this test's prefix.
    pub async fn clear(&self) -> Result<(), HarnessError> {
        // KEYS is fine on a test server with a handful of keys.
        let keys: Vec<String> = self.client.custom(fred::cmd!("KEYS"), vec![format!("{}*", self.prefix)]).await?;
        if !keys.is_empty() {
            let _: i64 = self.client.del(keys).await?;
        }
        Ok(())
    }
}
