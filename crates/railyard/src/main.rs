//! The railyard binary. `serve` runs the engine and its HTTP API on the configuration (the
//! embedded default when `--config` is not given); the client commands (`submit`, `payments`,
//! `rails`, `drain`, `keys`, …) talk to a running server over HTTP. Bad configuration exits
//! with code 64 and a message naming the key; a client request the server refuses exits 1
//! with the server's problem.

mod cli;
mod cluster;
mod devnet;
mod serve;
mod sim;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// jemalloc, not glibc's malloc: a service that runs for months must give back what a busy hour
/// took. glibc's heap returns memory only from its top, and the engine's per-round lists (up to a
/// few MB, freed each round) fragmented it: resident memory kept growing with history while the
/// live heap stayed flat. jemalloc purges freed pages after `dirty_decay_ms` (see
/// .cargo/config.toml); engine_e2e measures the difference.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Parser)]
#[command(name = "railyard", about = "multi-rail payment routing and settlement engine")]
struct Cli {
    /// The configuration file (default: the embedded sandbox configuration);
    /// `RAILYARD__<KEY>__<PATH>` environment variables override it.
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    #[command(flatten)]
    server: cli::Server,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs the engine and its HTTP API until interrupted (Ctrl-C).
    Serve {
        /// Submits this many sandbox demo payments at start (once: the key is idempotent).
        #[arg(long, default_value_t = 0)]
        demo_payments: u64,
        /// Exits when every payment is settled, failed or held (for demos and tests).
        #[arg(long)]
        exit_when_settled: bool,
        /// Where the API listens (overrides api.listen), e.g. 127.0.0.1:0 for a free port.
        #[arg(long)]
        listen: Option<String>,
    },
    /// Starts two local anvil chains, deploys the contracts, funds the hot wallet and the
    /// pools, writes the configuration and serves on it (needs anvil: scripts/install-tools).
    Devnet(devnet::DevnetArgs),
    /// Validates the configuration and prints what it describes.
    CheckConfig,
    /// Adds an admin API key to the journal while no server runs (a lost first key).
    AdminKey,
    /// Runs the deterministic simulator: the real engine on sandbox chains under a seeded
    /// schedule of faults, crashes and operator actions, with invariants after every step.
    Sim(sim::SimArgs),
    #[command(flatten)]
    Client(cli::ClientCommand),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    // Logs go to stderr; RUST_LOG picks the level (default: warnings, and railyard's own info;
    // for the simulator, whose faults make the engine warn and stop on purpose, none).
    let quiet = matches!(cli.command, Command::Sim(_) | Command::Client(_));
    let default = if quiet { "off" } else { "warn,engine=info,railyard=info" };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
    let runtime =
        || tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("tokio runtime");
    let config = match cli.command {
        Command::Sim(args) => return sim::run(&args),
        Command::Client(command) => return runtime().block_on(cli::run(&cli.server, command)),
        Command::Devnet(args) => {
            return match runtime().block_on(devnet::run(&args)) {
                Ok(()) => std::process::ExitCode::SUCCESS,
                Err(error) => {
                    eprintln!("railyard devnet: {error:#}");
                    std::process::ExitCode::FAILURE
                }
            };
        }
        command => command,
    };
    let mut loaded = match serve::load_config(cli.config.as_deref()) {
        Ok(loaded) => loaded,
        Err(error) => {
            eprintln!("railyard: {error:#}");
            return std::process::ExitCode::from(64);
        }
    };
    let outcome = match config {
        Command::CheckConfig => {
            let name = cli.config.map_or_else(|| "embedded default".to_owned(), |p| p.display().to_string());
            println!(
                "{name}: {} rails, {} pools, data in {}, API on {}",
                loaded.rails.len(),
                loaded.engine.state.pools.len(),
                loaded.data_dir.display(),
                loaded.api.listen
            );
            return std::process::ExitCode::SUCCESS;
        }
        Command::AdminKey => runtime().block_on(serve::admin_key(loaded)),
        Command::Serve { demo_payments, exit_when_settled, listen } => {
            if let Some(listen) = listen {
                match listen.parse() {
                    Ok(address) => loaded.api.listen = address,
                    Err(_) => {
                        eprintln!("railyard: --listen {listen:?} is not host:port (for example 127.0.0.1:8080)");
                        return std::process::ExitCode::from(64);
                    }
                }
            }
            runtime().block_on(serve::serve(loaded, demo_payments, exit_when_settled))
        }
        Command::Sim(_) | Command::Client(_) | Command::Devnet(_) => {
            unreachable!("handled before the configuration is read")
        }
    };
    match outcome {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("railyard: {error:#}");
            // A configuration problem found only when acting on it (a missing key variable,
            // limits that contradict each other) is still bad configuration.
            let config = error.downcast_ref::<config::ConfigError>().is_some()
                || matches!(error.downcast_ref::<engine::EngineError>(), Some(engine::EngineError::Config(_)));
            std::process::ExitCode::from(if config { 64 } else { 1 })
        }
    }
}
