//! `emporium`: one binary for every service and the operator commands.
//!
//! - `emporium run [SERVICE…|all]`: host the named services in this process.
//! - `emporium provision`: create what the services need on the servers (idempotent).
//! - `emporium watch <key>`: print one order's (or any entity's) events live.

mod host;
mod provision;
mod watch;

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
}

/// A service name on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ServiceArg {
    All,
    Gateway,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let settings = Settings::from_env()?;
    telemetry::init(settings.log_format);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async move {
        match cli.command {
            Commands::Run { services } => host::run(settings, &selected(&services)).await,
            Commands::Provision => provision::run(&settings).await,
            Commands::Watch { key } => watch::run(&settings, key).await,
        }
    })
}

/// The services named on the command line, `all` (or nothing) meaning every one.
fn selected(args: &[ServiceArg]) -> Vec<host::Service> {
    if args.is_empty() || args.contains(&ServiceArg::All) {
        return host::Service::ALL.to_vec();
    }
    let mut services: Vec<host::Service> = args
        .iter()
        .filter_map(|arg| match arg {
            ServiceArg::All => None,
            ServiceArg::Gateway => Some(host::Service::Gateway),
        })
        .collect();
    services.dedup();
    services
}
