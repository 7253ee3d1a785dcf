//! `railyard sim`: runs the deterministic simulator over one seed or a range of seeds and
//! reports each violation with its seed, step and trace (`--seed N` replays one exactly).

use std::time::Instant;

#[derive(clap::Args, Debug)]
pub(crate) struct SimArgs {
    /// Runs this one seed and prints what it did (or the violation, with its trace).
    #[arg(long, conflicts_with = "seeds")]
    seed: Option<u64>,
    /// Runs this many seeds, from --first.
    #[arg(long, default_value_t = 100)]
    seeds: u64,
    #[arg(long, default_value_t = 1)]
    first: u64,
    /// Payments per seed.
    #[arg(long, default_value_t = sim::Options::default().payments)]
    payments: u64,
    /// Steps of the fault schedule per seed.
    #[arg(long, default_value_t = sim::Options::default().steps)]
    steps: u64,
    /// No chain faults.
    #[arg(long)]
    no_faults: bool,
    /// No crashes and no journal failures.
    #[arg(long)]
    no_crashes: bool,
    /// Also reorgs deeper than a chain's finality (a final settlement undone).
    #[arg(long)]
    deep_reorgs: bool,
}

pub(crate) fn run(args: &SimArgs) -> std::process::ExitCode {
    let options = sim::Options {
        payments: args.payments,
        steps: args.steps,
        faults: !args.no_faults,
        crashes: !args.no_crashes,
        deep_reorgs: args.deep_reorgs,
        ..sim::Options::default()
    };
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime");
    let (first, count) = match args.seed {
        Some(seed) => (seed, 1),
        None => (args.first, args.seeds),
    };
    let started = Instant::now();
    let mut failed = 0u64;
    let mut payments = 0u64;
    for seed in first..first.saturating_add(count) {
        match runtime.block_on(sim::run(seed, &options)) {
            Ok(summary) => {
                payments += summary.payments;
                if args.seed.is_some() {
                    println!(
                        "seed {seed}: {} steps, {} payments, {} faults, {} crashes; outcomes {:?}",
                        summary.steps, summary.payments, summary.faults, summary.crashes, summary.outcomes
                    );
                }
            }
            Err(violation) => {
                failed += 1;
                println!("{violation}");
            }
        }
    }
    let tenths = u128::from(count) * 10_000 / started.elapsed().as_millis().max(1);
    println!(
        "{count} seeds from {first}: {} passed, {failed} failed; {payments} payments; {}.{} seeds/s",
        count - failed,
        tenths / 10,
        tenths % 10
    );
    if failed == 0 { std::process::ExitCode::SUCCESS } else { std::process::ExitCode::FAILURE }
}
