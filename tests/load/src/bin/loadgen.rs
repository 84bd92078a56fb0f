//! `loadgen`: the checkout benchmark of `just bench`, against the real stack.
//!
//! Starts Emporium as `just up` runs it (the `emporium` binary given by
//! `--emporium`, every service in one process) on private Postgres (fsync
//! on), NATS and Redis servers, opens a shop over the HTTP API, and drives
//! checkouts as signed-in customers: add each line to the cart, `POST
//! /cart/checkout`, learn the outcome from the `order.confirmed` /
//! `order.cancelled` events on NATS. Then it measures, in this order:
//!
//! 1. saturation: every customer checks out in a closed loop; confirmed
//!    checkouts per second, Postgres commits, WAL flushes and CPU time per
//!    process per checkout;
//! 2. latency: an open loop at a fixed rate (a checkout started on schedule,
//!    whatever the earlier ones are doing); p50/p95/p99 from the checkout
//!    request to the order confirmed;
//! 3. lag: how long after the load stops until no consumer has work pending
//!    and every outbox is published;
//! 4. the raw Postgres limit on the same server: two-insert transactions
//!    from 32 clients.
//!
//! Prints `bench: <name> = <value> <unit>` lines. The workload is fixed by
//! flags (defaults are the published figures' workload).

#![allow(clippy::print_stdout, clippy::print_stderr)] // a command-line tool reports on stdout

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, ensure};
use clap::Parser;
use emporium_load::measure;
use emporium_load::shop::{Account, Outcome, Outcomes, Shop};
use emporium_load::stack::{Layout, ProcessStack};
use emporium_system::invariants::Databases;
use futures::StreamExt;
use sqlx::PgPool;
use tokio::time::Instant;

#[derive(Debug, Parser)]
#[command(about = "Emporium's checkout benchmark against the real stack")]
struct Args {
    /// The `emporium` binary to run (a release build).
    #[arg(long)]
    emporium: PathBuf,
    /// Products on sale (each with ample stock).
    #[arg(long, default_value_t = 100)]
    products: usize,
    /// Lines per order (distinct products, one unit each).
    #[arg(long, default_value_t = 2)]
    lines: usize,
    /// Customers checking out at once in the saturation phase.
    #[arg(long, default_value_t = 256)]
    customers: usize,
    /// The simulated payment provider's answer time, per call.
    #[arg(long, default_value_t = 20)]
    provider_latency_ms: u64,
    /// Length of the saturation phase (after 3 s of warm-up).
    #[arg(long, default_value_t = 15)]
    saturation_secs: u64,
    /// The open loop's rate, checkouts per second.
    #[arg(long, default_value_t = 300)]
    rate: u64,
    /// Length of the open-loop phase.
    #[arg(long, default_value_t = 20)]
    open_loop_secs: u64,
    /// Also print where Postgres spends its time in the saturation phase
    /// (pg_stat_statements: the top statements by total time).
    #[arg(long)]
    profile: bool,
}

/// How long any one checkout may take before the run is called broken.
const PATIENCE: Duration = Duration::from_secs(60);

/// One checkout's path: which products, and the outcome with its latency.
struct Checkouts {
    shop: Shop,
    outcomes: Outcomes,
    lines: usize,
    next_line: AtomicU64,
}

impl Checkouts {
    /// Checks out `lines` products (rotating through the catalog) for `customer`;
    /// returns the outcome and the time from the checkout request to it.
    async fn one(&self, customer: &Account) -> anyhow::Result<(bool, Duration)> {
        let start = self.next_line.fetch_add(self.lines as u64, Ordering::Relaxed) as usize;
        let products: Vec<&str> =
            (0..self.lines).map(|n| self.shop.products[(start + n) % self.shop.products.len()].as_str()).collect();
        let (order, sent) = self.shop.checkout(customer, &products).await?;
        let outcome = self.outcomes.of(&order, PATIENCE).await?;
        Ok((matches!(outcome, Outcome::Confirmed(_)), outcome.at().saturating_duration_since(sent)))
    }
}

/// Latencies and counts of a phase.
#[derive(Default)]
struct Tally {
    confirmed: Vec<Duration>,
    cancelled: u64,
}

impl Tally {
    fn add(&mut self, confirmed: bool, latency: Duration) {
        if confirmed { self.confirmed.push(latency) } else { self.cancelled += 1 }
    }

    fn percentile(&mut self, q: f64) -> f64 {
        self.confirmed.sort();
        let n = self.confirmed.len();
        if n == 0 {
            return f64::NAN;
        }
        let index = ((n as f64 * q) as usize).min(n - 1);
        self.confirmed[index].as_secs_f64() * 1_000.0
    }
}

/// Every customer checks out again and again until `until`.
async fn closed_loop(checkouts: &Arc<Checkouts>, customers: &[Account], until: Instant) -> anyhow::Result<Tally> {
    let tasks: Vec<_> = customers
        .iter()
        .cloned()
        .map(|customer| {
            let checkouts = checkouts.clone();
            tokio::spawn(async move {
                let mut tally = Tally::default();
                while Instant::now() < until {
                    let (confirmed, latency) = checkouts.one(&customer).await?;
                    tally.add(confirmed, latency);
                }
                Ok::<_, anyhow::Error>(tally)
            })
        })
        .collect();
    let mut total = Tally::default();
    for task in tasks {
        let tally = task.await??;
        total.confirmed.extend(tally.confirmed);
        total.cancelled += tally.cancelled;
    }
    Ok(total)
}

/// A checkout started every 1/`rate` s for `period`, each by a customer not
/// busy with an earlier one. Returns the tally and how many starts were late
/// because no customer was free.
async fn open_loop(
    checkouts: &Arc<Checkouts>,
    customers: Vec<Account>,
    rate: u64,
    period: Duration,
) -> anyhow::Result<(Tally, u64)> {
    let (free_tx, mut free_rx) = tokio::sync::mpsc::unbounded_channel();
    for customer in customers {
        free_tx.send(customer)?;
    }
    let tally = Arc::new(std::sync::Mutex::new(Tally::default()));
    let mut ticks = tokio::time::interval(Duration::from_secs_f64(1.0 / rate as f64));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let until = Instant::now() + period;
    let mut late = 0;
    let mut running = futures::stream::FuturesUnordered::new();
    while Instant::now() < until {
        ticks.tick().await;
        let customer = match free_rx.try_recv() {
            Ok(customer) => customer,
            Err(_) => {
                late += 1;
                let waited = tokio::time::timeout(PATIENCE, free_rx.recv()).await;
                waited.ok().flatten().context("no customer came free")?
            }
        };
        let (checkouts, tally, free_tx) = (checkouts.clone(), tally.clone(), free_tx.clone());
        running.push(tokio::spawn(async move {
            let outcome = checkouts.one(&customer).await;
            // The customer is free again whatever happened, so the schedule never starves.
            let _ = free_tx.send(customer);
            let (confirmed, latency) = outcome?;
            tally.lock().unwrap_or_else(std::sync::PoisonError::into_inner).add(confirmed, latency);
            Ok::<_, anyhow::Error>(())
        }));
        // Reap finished ones as we go so errors surface early.
        while let Some(Some(done)) = futures::FutureExt::now_or_never(running.next()) {
            done??;
        }
    }
    while let Some(done) = running.next().await {
        done??;
    }
    let tally = std::mem::take(&mut *tally.lock().unwrap_or_else(std::sync::PoisonError::into_inner));
    Ok((tally, late))
}

/// CPU seconds so far of each process the run involves.
fn cpu(stack: &ProcessStack) -> Vec<(&'static str, f64)> {
    let of = |pid: Option<u32>, children: bool| pid.map_or(0.0, |pid| measure::cpu_seconds(pid, children));
    vec![
        ("emporium", of(stack.pid("all"), false)),
        ("postgres", of(stack.postgres.pid(), true)),
        ("nats", of(stack.nats.pid(), false)),
        ("redis", of(stack.redis.pid(), false)),
        ("loadgen", measure::own_cpu_seconds()),
    ]
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // RUST_LOG=debug shows what the run waits for.
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    ensure!(args.lines >= 1 && args.lines <= args.products, "lines must be between 1 and the number of products");
    let latency = args.provider_latency_ms.to_string();
    eprintln!("loadgen: starting the stack ({})", args.emporium.display());
    let postgres_settings: &[&str] = if args.profile {
        &["shared_preload_libraries=pg_stat_statements", "pg_stat_statements.track=all"]
    } else {
        &[]
    };
    let mut stack = ProcessStack::start_with(
        &args.emporium,
        Layout::OneProcess,
        &[("PAYMENT_PROVIDER_LATENCY_MS", &latency)],
        postgres_settings,
    )
    .await?;

    eprintln!("loadgen: opening the shop: {} products, {} customers", args.products, args.customers);
    let shop = Shop::open(&stack.gateway(), args.products, 1_000_000_000).await?;
    let open_loop_customers = usize::try_from(args.rate).unwrap_or(usize::MAX).max(64);
    let wanted = args.customers.max(open_loop_customers);
    let customers = shop.accounts("customer", wanted).await?;
    let nats = async_nats::connect(stack.nats.url()).await?;
    let outcomes = Outcomes::listen(&nats).await?;
    let checkouts = Arc::new(Checkouts { shop, outcomes, lines: args.lines, next_line: AtomicU64::new(0) });
    let server = PgPool::connect(&stack.postgres.url()).await?;

    eprintln!("loadgen: saturation: {} customers for {} s", args.customers, args.saturation_secs);
    // 1. Saturation, after a warm-up.
    let saturating = &customers[..args.customers];
    closed_loop(&checkouts, saturating, Instant::now() + Duration::from_secs(3)).await?;
    if args.profile {
        measure::statements_reset(&server).await?;
    }
    let (commits_before, wal_before, cpu_before) =
        (measure::commits(&server).await?, measure::wal_flushes(&server).await?, cpu(&stack));
    let started = Instant::now();
    let saturation = closed_loop(&checkouts, saturating, started + Duration::from_secs(args.saturation_secs)).await?;
    let elapsed = started.elapsed().as_secs_f64();
    let cpu_after = cpu(&stack);
    // Statistics reach pg_stat_database within a second or so of the commits.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let (commits_after, wal_after) = (measure::commits(&server).await?, measure::wal_flushes(&server).await?);
    let checkouts_done = (saturation.confirmed.len() as u64 + saturation.cancelled) as f64;
    let statements = if args.profile { measure::statements(&server, checkouts_done, 70).await? } else { Vec::new() };

    let jetstream = async_nats::jetstream::new(nats.clone());
    let databases = Databases::connect_lazy(|service| stack.database_url(service))?;
    eprintln!("loadgen: waiting for the stack to drain");
    measure::drained_within(&databases, &jetstream, Duration::from_secs(60)).await?;

    eprintln!("loadgen: open loop: {}/s for {} s", args.rate, args.open_loop_secs);
    // 2. Latency at a fixed rate; 3. lag after it stops.
    let (mut open, late) =
        open_loop(&checkouts, customers, args.rate, Duration::from_secs(args.open_loop_secs)).await?;
    let lag = measure::drained_within(&databases, &jetstream, Duration::from_secs(60)).await?;

    stack.stop().await?;
    eprintln!("loadgen: the raw Postgres limit");
    // 4. The server's own limit, with the stack stopped.
    let raw = measure::raw_postgres(&stack.postgres, 32, Duration::from_secs(5)).await?;

    println!(
        "bench: workload = {} products, {} lines per order, {} customers, provider latency {} ms, auth on, fsync on",
        args.products, args.lines, args.customers, args.provider_latency_ms
    );
    println!(
        "bench: checkouts_confirmed_per_sec (saturation, {} customers) = {:.0} checkouts/s ({} cancelled)",
        args.customers,
        saturation.confirmed.len() as f64 / elapsed,
        saturation.cancelled
    );
    println!(
        "bench: checkout_to_confirmed (open loop {}/s, {} s) = p50 {:.1} ms, p95 {:.1} ms, p99 {:.1} ms ({} confirmed, {} cancelled, {} starts late)",
        args.rate,
        args.open_loop_secs,
        open.percentile(0.50),
        open.percentile(0.95),
        open.percentile(0.99),
        open.confirmed.len(),
        open.cancelled,
        late
    );
    println!(
        "bench: postgres_commits_per_checkout (all services, reads included) = {:.2} commits",
        (commits_after - commits_before) as f64 / checkouts_done
    );
    println!("bench: wal_flushes_per_checkout = {:.2} flushes", (wal_after - wal_before) as f64 / checkouts_done);
    let per_process: Vec<String> = cpu_before
        .iter()
        .zip(&cpu_after)
        .map(|((name, before), (_, after))| format!("{name} {:.2}", (after - before) * 1_000.0 / checkouts_done))
        .collect();
    let total: f64 = cpu_before.iter().zip(&cpu_after).map(|((_, b), (_, a))| a - b).sum();
    println!(
        "bench: cpu_ms_per_checkout (saturation) = {}, total {:.2} ms",
        per_process.join(", "),
        total * 1_000.0 / checkouts_done
    );
    match lag {
        Some(lag) => println!("bench: lag_to_zero_after_load = {:.2} s", lag.as_secs_f64()),
        None => println!("bench: lag_to_zero_after_load = not within 60 s"),
    }
    println!("bench: raw_postgres_two_insert_tx_per_sec (32 clients, fsync on) = {raw:.0} tx/s");
    for line in statements {
        println!("profile: {line}");
    }
    Ok(())
}
