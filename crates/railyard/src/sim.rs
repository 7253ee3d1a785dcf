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
    /// Instead of seeds: routing quality. railyard's router against an oracle that knows the
    /// outage schedule and a single-rail router, on each schedule of a fixed set.
    #[arg(long, conflicts_with_all = ["seed", "deep_reorgs"])]
    quality: bool,
    /// With --quality: payments submitted per simulated second (for 40 minutes).
    #[arg(long, default_value_t = 2, requires = "quality")]
    per_second: u64,
}

pub(crate) fn run(args: &SimArgs) -> std::process::ExitCode {
    if args.quality {
        return quality(args.per_second);
    }
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

/// Prints each schedule's on-time rates and fees, and the ratios against the oracle; fails if
/// railyard misses the goal (at least 98 % of the oracle's on-time rate at most 105 % of its
/// fees) on any schedule.
fn quality(per_second: u64) -> std::process::ExitCode {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime");
    let started = Instant::now();
    println!(
        "{:<36} {:>9} {:>9} {:>9} | {:>12} {:>12} {:>12} | {:>9} {:>9} | {:>9} {:>9}",
        "schedule",
        "on-time",
        "oracle",
        "naive",
        "fees",
        "oracle",
        "naive",
        "on-time×",
        "fees×",
        "naive ot×",
        "naive f×"
    );
    let mut met = true;
    for schedule in sim::quality::schedules() {
        let c = match runtime.block_on(sim::quality::compare(&schedule, per_second)) {
            Ok(c) => c,
            Err(error) => {
                println!("{}: {error}", schedule.name);
                return std::process::ExitCode::FAILURE;
            }
        };
        let pct = |s: &sim::quality::Score| {
            let ppm = s.on_time_ppm();
            format!("{}.{:02}%", ppm / 10_000, ppm % 10_000 / 100)
        };
        let (r, n) = (&c.railyard, &c.naive);
        println!(
            "{:<36} {:>9} {:>9} {:>9} | {:>12} {:>12} {:>12} | {:>9} {:>9} | {:>9} {:>9}",
            c.schedule,
            pct(r),
            pct(&c.oracle),
            pct(n),
            r.fees,
            c.oracle.fees,
            n.fees,
            c.on_time_vs_oracle(r).to_string(),
            c.fees_vs_oracle(r).to_string(),
            c.on_time_vs_oracle(n).to_string(),
            c.fees_vs_oracle(n).to_string()
        );
        met &= c.meets_goal();
    }
    println!(
        "goal (on-time ≥ 0.98× the oracle's at fees ≤ 1.05× its): {}; {:.1} s",
        if met { "met on every schedule" } else { "MISSED" },
        started.elapsed().as_secs_f64()
    );
    if met { std::process::ExitCode::SUCCESS } else { std::process::ExitCode::FAILURE }
}
