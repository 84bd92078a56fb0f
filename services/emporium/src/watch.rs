//! `emporium watch <key>`: print one entity's events (one order's whole saga)
//! live, as they are published on `evt.*.*.*.*.<key>`.

use anyhow::Context;
use emporium_platform::Settings;
use emporium_schemas::EntityKey;
use futures::StreamExt;

pub(crate) async fn run(settings: &Settings, key: String) -> anyhow::Result<()> {
    let key = EntityKey::try_from(key)?;
    let client = async_nats::connect(settings.nats_url.as_str()).await.context("connecting to NATS")?;
    let subject = format!("evt.*.*.*.*.{key}");
    let mut events = client.subscribe(subject.clone()).await?;
    tracing::info!(%subject, "watching; Ctrl-C to stop");
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => return Ok(()),
            message = events.next() => {
                let Some(message) = message else { return Ok(()) };
                let body = String::from_utf8_lossy(&message.payload);
                #[allow(clippy::print_stdout)] // this command's output is for people
                {
                    println!("{} {body}", message.subject);
                }
            }
        }
    }
}
