//! What every chaos scenario (`just chaos`) shares: the stack as operators
//! run it, one process per service with the simulated provider in its own;
//! a steady load of checkouts on it; the fault; and at the end the proof:
//! every checkout accepted is an order in a final state and the invariants
//! of [`emporium_system::invariants`] hold, the provider's records read from
//! the provider's own process.
//!
//! Also the faults that are not a process or a server going away: events
//! published again under fresh `Nats-Msg-Id`s, which JetStream's duplicate
//! window cannot catch, and a shorter window for the outbox replay.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use async_nats::HeaderMap;
use async_nats::header::NATS_MESSAGE_ID;
use emporium_nats::topology::{CONTEXTS, event_stream};
use emporium_payment::simulator::remote::RemoteSimulator;
use emporium_system::invariants::{Databases, DeadLetters, System};
use futures::{StreamExt, TryStreamExt};
use tokio::time::Instant;

use crate::shop::Shop;
use crate::stack::{Layout, ProcessStack};
use crate::steady::SteadyLoad;

/// Checkouts per second of the steady load, and the customers sharing them.
const RATE: f64 = 20.0;
const CUSTOMERS: usize = 8;
const PRODUCTS: usize = 20;
/// Checkouts accepted before the fault, so it meets a system at work.
pub const WARM_UP: usize = 40;
/// How long the system may take to settle once the load has stopped.
const SETTLE: Duration = Duration::from_secs(180);
/// How long the load may take to place a number of orders, outages included.
const PLACING: Duration = Duration::from_secs(180);

/// The `emporium` binary the run starts: `EMPORIUM_BIN` (set by `just chaos`).
pub fn emporium_binary() -> anyhow::Result<PathBuf> {
    let path = std::env::var_os("EMPORIUM_BIN").context("EMPORIUM_BIN names the emporium binary; run `just chaos`")?;
    let path = PathBuf::from(path);
    ensure!(path.is_file(), "EMPORIUM_BIN={} is not a file", path.display());
    Ok(path)
}

/// One scenario's run: the stack under a steady load.
pub struct ChaosRun {
    pub stack: ProcessStack,
    /// A client of the stack's NATS (for the faults injected at the broker and the checks).
    pub nats: async_nats::Client,
    name: &'static str,
    load: SteadyLoad,
    started: Instant,
    faulted: Option<Instant>,
}

impl fmt::Debug for ChaosRun {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChaosRun").field("name", &self.name).finish_non_exhaustive()
    }
}

impl ChaosRun {
    /// Starts the stack with `env` on top of its settings, opens a shop,
    /// puts the load on, and returns once it has had [`WARM_UP`] checkouts accepted.
    pub async fn start(name: &'static str, env: &[(&str, &str)]) -> anyhow::Result<Self> {
        let started = Instant::now();
        let mut settings = vec![
            // The customers sign in once, before the run.
            ("IDENTITY_ACCESS_TOKEN_TTL_SECS", "3600"),
            // Provider calls take long enough that a fault finds some in flight.
            ("PAYMENT_PROVIDER_LATENCY_MS", "100"),
        ];
        settings.extend_from_slice(env);
        let stack = ProcessStack::start(&emporium_binary()?, Layout::ProcessPerService, &settings).await?;
        let nats = async_nats::connect(stack.nats.url()).await?;
        let shop = Shop::open(&stack.gateway(), PRODUCTS, 1_000_000).await?;
        let customers = shop.accounts("customer", CUSTOMERS).await?;
        let load = SteadyLoad::start(&shop, customers, RATE);
        let run = Self { stack, nats, name, load, started, faulted: None };
        run.until_placed(WARM_UP).await?;
        Ok(run)
    }

    /// Marks the fault's start (for the timings).
    pub fn fault(&mut self) {
        self.faulted = Some(Instant::now());
    }

    /// Waits until the load has had `more` checkouts accepted from now.
    pub async fn until_placed(&self, more: usize) -> anyhow::Result<()> {
        let target = self.load.accepted() + more;
        let deadline = Instant::now() + PLACING;
        while self.load.accepted() < target {
            if Instant::now() >= deadline {
                bail!("the load placed {} of {more} orders in {PLACING:?}", more + self.load.accepted() - target);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(())
    }

    /// The system as the invariants read it: the services' databases on the
    /// private server, its JetStream, and the provider's records from its process.
    fn system(&self) -> anyhow::Result<System> {
        Ok(System {
            databases: Databases::connect_lazy(|service| self.stack.database_url(service))?,
            jetstream: async_nats::jetstream::new(self.nats.clone()),
            provider: Arc::new(RemoteSimulator::new(self.nats.clone(), Duration::from_secs(10))),
        })
    }

    /// Stops the load, then waits for the system to settle and checks it:
    /// every checkout answered, every order accepted in a final state (those
    /// their customers cancelled: cancelled), and every invariant holding.
    pub async fn finish(self) -> anyhow::Result<Summary> {
        let system = self.system()?;
        let load_stopped = Instant::now();
        let report = self.load.stop().await?;
        let settling = Instant::now();
        let underway = tally(system.check(DeadLetters::None).await?.iter().map(|violation| {
            let name = format!("{violation:?}");
            name.split([' ', '(', '{']).next().unwrap_or_default().to_owned()
        }));
        let violations = system.settle(SETTLE, DeadLetters::None).await?;
        let settled = settling.elapsed();
        let provider_records = system.provider.records().await?.len();

        let mut problems: Vec<String> = report.failures.iter().map(|failure| format!("load: {failure}")).collect();
        problems.extend(violations.iter().map(ToString::to_string));
        let orders = system.orders().await?;
        let cancel_reasons = tally(
            orders
                .values()
                .filter(|order| order.status == "cancelled")
                .map(|order| order.cancel_reason.clone().unwrap_or_default()),
        );
        let status = |order: &str| Some(orders.get(&order.parse::<uuid::Uuid>().ok()?)?.status.as_str());
        for order in &report.accepted {
            if status(order).is_none() {
                problems.push(format!("order {order} was accepted (202) but does not exist"));
            }
        }
        for order in &report.cancelled {
            if let Some(status) = status(order)
                && status != "cancelled"
            {
                problems.push(format!("order {order} was cancelled by its customer but is {status}"));
            }
        }
        let summary = Summary {
            name: self.name,
            accepted: report.accepted.len(),
            confirmed: orders.values().filter(|order| order.status == "confirmed").count(),
            cancel_reasons,
            retries: report.retries,
            underway,
            provider_records,
            start: self.faulted.map_or(Duration::ZERO, |at| at.saturating_duration_since(self.started)),
            fault: self.faulted.map_or(Duration::ZERO, |at| load_stopped.saturating_duration_since(at)),
            settled,
            total: self.started.elapsed(),
        };
        if !problems.is_empty() {
            let logs = self.stack.keep_logs()?;
            bail!(
                "{summary}\n{} problems (the processes' logs are kept in {}):\n{}",
                problems.len(),
                logs.display(),
                problems.join("\n")
            );
        }
        Ok(summary)
    }
}

/// What a scenario's run did, and how long each part took.
#[derive(Debug, Clone)]
pub struct Summary {
    pub name: &'static str,
    pub accepted: usize,
    pub confirmed: usize,
    /// Cancelled orders by reason.
    pub cancel_reasons: Vec<(String, usize)>,
    pub retries: u64,
    /// What was still under way when the load stopped (the invariants not yet holding, by kind).
    pub underway: Vec<(String, usize)>,
    /// The records the provider's process kept.
    pub provider_records: usize,
    /// From the start to the fault: stack, shop, customers, warm-up.
    pub start: Duration,
    /// From the fault to the load's stop: the fault and the recovery under load.
    pub fault: Duration,
    /// From the load's stop until every invariant held.
    pub settled: Duration,
    pub total: Duration,
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list = |counts: &[(String, usize)]| {
            let items: Vec<String> = counts.iter().map(|(name, count)| format!("{name} {count}")).collect();
            if items.is_empty() { "none".to_owned() } else { items.join(", ") }
        };
        write!(
            f,
            "chaos: {}: {} checkouts accepted, {} retries through outages; orders confirmed {}, cancelled: {}; \
             {} provider records; under way at the load's stop: {}; \
             start {:.1} s, fault and recovery under load {:.1} s, settled {:.1} s after the load stopped; total {:.1} s",
            self.name,
            self.accepted,
            self.retries,
            self.confirmed,
            list(&self.cancel_reasons),
            self.provider_records,
            list(&self.underway),
            self.start.as_secs_f64(),
            self.fault.as_secs_f64(),
            self.settled.as_secs_f64(),
            self.total.as_secs_f64()
        )
    }
}

/// How often each name occurs, by name.
fn tally(names: impl Iterator<Item = String>) -> Vec<(String, usize)> {
    let mut counts = std::collections::BTreeMap::new();
    for name in names {
        *counts.entry(name).or_default() += 1;
    }
    counts.into_iter().collect()
}

/// Publishes every event the event streams hold once more, to its subject
/// with its headers but a fresh `Nats-Msg-Id`, so JetStream stores it as a
/// new message and every consumer gets it again. Returns how many.
pub async fn duplicate_published_events(jetstream: &async_nats::jetstream::Context) -> anyhow::Result<u64> {
    let mut published = 0;
    for context in CONTEXTS {
        let mut stream = jetstream.get_stream(event_stream(context)).await?;
        let state = stream.info().await?.state.clone();
        if state.messages == 0 {
            continue;
        }
        let acks = futures::stream::iter(state.first_sequence..=state.last_sequence)
            .map(|sequence| {
                let stream = stream.clone();
                async move {
                    let message = stream.get_raw_message(sequence).await?;
                    let mut headers = HeaderMap::new();
                    let message_id: &str = NATS_MESSAGE_ID.as_ref();
                    for (name, values) in message.headers.iter() {
                        let name_text: &str = name.as_ref();
                        if name_text != message_id {
                            for value in values {
                                headers.append(name.clone(), value.clone());
                            }
                        }
                    }
                    headers.insert(NATS_MESSAGE_ID, uuid::Uuid::now_v7().to_string().as_str());
                    let ack = jetstream.publish_with_headers(message.subject, headers, message.payload).await?;
                    ack.await?;
                    anyhow::Ok(())
                }
            })
            .buffer_unordered(64);
        published += acks.try_fold(0, |count, ()| async move { Ok(count + 1) }).await?;
    }
    Ok(published)
}

/// Sets the event streams' duplicate window to `window`: a replay of events
/// older than it then reaches the consumers, as a replay after the window does.
pub async fn shorten_duplicate_window(
    jetstream: &async_nats::jetstream::Context,
    window: Duration,
) -> anyhow::Result<()> {
    for context in CONTEXTS {
        let mut stream = jetstream.get_stream(event_stream(context)).await?;
        let mut config = stream.info().await?.config.clone();
        config.duplicate_window = window;
        jetstream.update_stream(config).await?;
    }
    Ok(())
}
