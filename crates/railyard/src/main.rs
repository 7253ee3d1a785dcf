//! The railyard binary: parses the configuration, builds the rails, opens the engine on its
//! journal and drives it with the real clock. Bad configuration exits with code 64 and a
//! message naming the key.

mod serve;
mod sim;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "railyard", about = "multi-rail payment routing and settlement engine")]
struct Cli {
    /// The configuration file; `RAILYARD__<KEY>__<PATH>` environment variables override it.
    #[arg(long, global = true, default_value = "config/default.toml")]
    config: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs the engine until interrupted (Ctrl-C).
    Serve {
        /// Submits this many sandbox demo payments at start (once: the key is idempotent).
        #[arg(long, default_value_t = 0)]
        demo_payments: u64,
        /// Exits when every payment is settled, failed or held (for demos and tests).
        #[arg(long)]
        exit_when_settled: bool,
    },
    /// Validates the configuration and prints what it describes.
    CheckConfig,
    /// Runs the deterministic simulator: the real engine on sandbox chains under a seeded
    /// schedule of faults, crashes and operator actions, with invariants after every step.
    Sim(sim::SimArgs),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    // Logs go to stderr; RUST_LOG picks the level (default: warnings, and railyard's own info;
    // for the simulator, whose faults make the engine warn and stop on purpose, none).
    let default = if matches!(cli.command, Command::Sim(_)) { "off" } else { "warn,engine=info,railyard=info" };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
    if let Command::Sim(args) = &cli.command {
        return sim::run(args);
    }
    let loaded = match serve::load_config(&cli.config) {
        Ok(loaded) => loaded,
        Err(error) => {
            eprintln!("railyard: {error:#}");
            return std::process::ExitCode::from(64);
        }
    };
    match cli.command {
        Command::CheckConfig => {
            println!(
                "{}: {} rails, {} pools, data in {}",
                cli.config.display(),
                loaded.rails.len(),
                loaded.engine.state.pools.len(),
                loaded.data_dir.display()
            );
            std::process::ExitCode::SUCCESS
        }
        Command::Sim(_) => unreachable!("handled before the configuration is read"),
        Command::Serve { demo_payments, exit_when_settled } => {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("tokio runtime");
            match runtime.block_on(serve::serve(loaded, demo_payments, exit_when_settled)) {
                Ok(()) => std::process::ExitCode::SUCCESS,
                Err(error) => {
                    eprintln!("railyard: {error:#}");
                    // A configuration problem found only when acting on it (a missing key
                    // variable, limits that contradict each other) is still bad configuration.
                    let config = error.downcast_ref::<config::ConfigError>().is_some()
                        || matches!(error.downcast_ref::<engine::EngineError>(), Some(engine::EngineError::Config(_)));
                    std::process::ExitCode::from(if config { 64 } else { 1 })
                }
            }
        }
    }
}
