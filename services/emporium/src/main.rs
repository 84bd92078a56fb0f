//! `emporium`: one binary for every service and the operator commands.
//!
//! - `emporium run [SERVICE…|all]`: host the named services in this process.
//! - `emporium provision`: create what the services need on the servers (idempotent).
//! - `emporium watch <key>`: print one order's (or any entity's) events live.
//! - `emporium dlq list|replay`, `emporium outbox replay --since <time>`: operate
//!   the messaging backbone.
//! - `emporium provider`: the simulated payment provider as a process of its own.

mod host;
mod operator;
mod provider;
mod provision;
mod watch;

use std::sync::LazyLock;

use clap::builder::PossibleValue;
use clap::{Parser, Subcommand, ValueEnum};
use emporium_platform::{Settings, telemetry};

#[derive(Debug, Parser)]
#[command(name = "emporium", version, about = "Emporium: an e-commerce backend on NATS JetStream")]
struct Cli {
    #[command(subcommand)]
    command: Commands,
}

#[derive(Debug, Subcommand)]
enum Commands {
    /// Host services in this process until SIGINT/SIGTERM (all of them by default).
    Run {
        /// Which services; `all` or none means every service.
        #[arg(value_enum)]
        services: Vec<ServiceArg>,
    },
    /// Create databases (and, as services arrive, streams, buckets and consumers). Idempotent.
    Provision,
    /// Print the events of one order (or any entity key) as they are published.
    Watch {
        /// The saga or entity key: for a checkout, the order id.
        key: String,
    },
    /// Inspect and replay dead letters.
    Dlq {
        #[command(subcommand)]
        command: DlqCommand,
    },
    /// Operate the services' transactional outboxes.
    Outbox {
        #[command(subcommand)]
        command: OutboxCommand,
    },
    /// Run the simulated payment provider on its own, answering over NATS
    /// (for payment with PAYMENT_SIMULATOR=remote), until SIGINT/SIGTERM.
    Provider,
}

#[derive(Debug, Subcommand)]
enum DlqCommand {
    /// Print dead letters, oldest first: DLQ sequence, time, consumer, subject, attempts, reason.
    List {
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Republish dead letters to their original subjects and remove them from the DLQ.
    Replay {
        /// DLQ sequences, as `dlq list` prints them.
        sequences: Vec<u64>,
        /// Replay every dead letter.
        #[arg(long, conflicts_with = "sequences")]
        all: bool,
    },
}

#[derive(Debug, Subcommand)]
enum OutboxCommand {
    /// Republish every event written since a time; consumers ignore what they already applied.
    Replay {
        /// RFC 3339 (2026-11-21T09:00:00Z) or an age (90s, 15m, 1h, 2d).
        #[arg(long)]
        since: String,
        /// Only this service's outbox.
        #[arg(long, value_enum)]
        service: Option<ServiceArg>,
    },
}

/// A service named on the command line (as the service calls itself), or
/// `all` (`None`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ServiceArg(Option<host::Service>);

impl ValueEnum for ServiceArg {
    fn value_variants<'a>() -> &'a [Self] {
        static VARIANTS: LazyLock<Vec<ServiceArg>> = LazyLock::new(|| {
            std::iter::once(ServiceArg(None)).chain(host::Service::ALL.iter().map(|s| ServiceArg(Some(*s)))).collect()
        });
        &VARIANTS
    }

    fn to_possible_value(&self) -> Option<PossibleValue> {
        Some(PossibleValue::new(self.0.map_or("all", host::Service::name)))
    }
}

/// jemalloc returns the memory of passivated entities to the OS (glibc's
/// malloc keeps it: measured in `actors/tests/host.rs`).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let settings = Settings::from_env()?;
    telemetry::init(settings.log_format);
    // Background threads purge freed pages after jemalloc's decay time.
    if let Err(error) = tikv_jemalloc_ctl::background_thread::write(true) {
        tracing::warn!(%error, "jemalloc background threads unavailable; freed memory returns more slowly");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async move {
        match cli.command {
            Commands::Run { services } => host::run(settings, &selected(&services)).await,
            Commands::Provision => provision::run(&settings).await,
            Commands::Watch { key } => watch::run(&settings, key).await,
            Commands::Dlq { command: DlqCommand::List { limit } } => operator::dlq_list(&settings, limit).await,
            Commands::Dlq { command: DlqCommand::Replay { sequences, all } } => {
                operator::dlq_replay(&settings, sequences, all).await
            }
            Commands::Outbox { command: OutboxCommand::Replay { since, service } } => {
                let since = operator::parse_since(&since, chrono::Utc::now()).map_err(anyhow::Error::msg)?;
                let only = service.and_then(|arg| arg.0);
                operator::outbox_replay(&settings, since, only).await
            }
            Commands::Provider => provider::run(&settings).await,
        }
    })
}

/// The services named on the command line, `all` (or nothing) meaning every one.
fn selected(args: &[ServiceArg]) -> Vec<host::Service> {
    if args.is_empty() || args.contains(&ServiceArg(None)) {
        return host::Service::ALL.to_vec();
    }
    // Each named service once, in the order first named (`dedup` alone would
    // only drop adjacent repeats: `run order payment order` started order twice).
    let mut services: Vec<host::Service> = Vec::new();
    for service in args.iter().filter_map(|arg| arg.0) {
        if !services.contains(&service) {
            services.push(service);
        }
    }
    services
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_named_service_runs_once_in_the_order_first_named() {
        let (order, payment) = (ServiceArg(Some(host::Service::Order)), ServiceArg(Some(host::Service::Payment)));
        assert_eq!(selected(&[order, payment, order]), [host::Service::Order, host::Service::Payment]);
        assert_eq!(selected(&[]), host::Service::ALL);
        assert_eq!(selected(&[payment, ServiceArg(None)]), host::Service::ALL);
    }
}
