//! `emporium provider`: the simulated payment provider as a system of its
//! own, answering payment's calls over NATS (payment with
//! `PAYMENT_SIMULATOR=remote`). Its records live in this process, so they
//! outlive a payment process that is killed and restarted (docs/adr/0013).

use std::sync::Arc;

use anyhow::Context;
use emporium_payment::simulator::remote::Listener;
use emporium_payment::{PaymentSettings, Simulator};
use emporium_platform::connections::{nats_check, open_nats};
use emporium_platform::{Readiness, Settings, ops, shutdown};
use tokio_util::sync::CancellationToken;

/// Takes calls until SIGINT/SIGTERM, with `/readyz` on the ops address
/// ready while NATS is connected. Latency and late settling come from the
/// same `PAYMENT_*` settings as the in-process simulator's.
pub(crate) async fn run(settings: &Settings) -> anyhow::Result<()> {
    let payment = PaymentSettings::from_source(|name| std::env::var(name).ok())?;
    let stop = CancellationToken::new();
    shutdown::cancel_on_signal(stop.clone());
    let nats = open_nats(settings, "emporium-provider")
        .await
        .with_context(|| format!("connecting to NATS at {}", settings.nats_url))?;
    let simulator = Simulator::new((&payment).into(), Arc::new(emporium_nats::SystemClock));
    let listener = Listener::bind(simulator, nats.clone()).await?;
    // Served once the simulator takes calls, so `/readyz` never answers before it does.
    let readiness = Readiness::default();
    readiness.register("nats", nats_check(nats.clone()));
    let ops_stop = CancellationToken::new();
    let (ops_addr, ops_server) = ops::serve(settings.ops_addr, readiness.clone(), ops_stop.clone())
        .await
        .with_context(|| format!("binding the ops address {}", settings.ops_addr))?;
    tracing::info!(ops = %ops_addr, subject = emporium_payment::simulator::remote::SUBJECT, "simulated provider ready");
    listener.serve(stop).await;

    readiness.start_draining();
    if let Err(error) = nats.flush().await {
        tracing::warn!(%error, "NATS flush at shutdown failed");
    }
    ops_stop.cancel();
    let _ = ops_server.await;
    Ok(())
}
