//! Crash-test child: appends to a journal from several threads and prints every acknowledged
//! append as `ACK <first> <last> <id>... END`, until the parent kills it with SIGKILL.
//!
//! Usage: journal-crash-child <journal path> <run number>

use std::io::Write;

use journal::{Appended, Claim, Config, Journal};

const THREADS: u64 = 4;

fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(path), Some(run)) = (args.next(), args.next().and_then(|r| r.parse::<u64>().ok())) else {
        eprintln!("usage: journal-crash-child <journal path> <run number>");
        std::process::exit(64);
    };
    let journal = match Journal::open(&path, Config::default()) {
        Ok(journal) => journal,
        Err(error) => {
            eprintln!("cannot open journal: {error}");
            std::process::exit(1);
        }
    };
    println!("READY END");
    std::thread::scope(|scope| {
        for thread in 0..THREADS {
            let journal = journal.clone();
            scope.spawn(move || append_forever(&journal, run, thread));
        }
    });
}

/// Thread 0 appends single records with an idempotency claim; the others append batches of
/// 1 to 4 records, so commits group requests of different sizes.
fn append_forever(journal: &Journal, run: u64, thread: u64) {
    let mut rng = fastrand::Rng::with_seed(run * 31 + thread);
    let mut counter = 0u64;
    loop {
        let size = if thread == 0 { 1 } else { rng.u64(1..=4) };
        let ids: Vec<u64> = (counter..counter + size).collect();
        counter += size;
        let payloads = ids.iter().map(|c| integration_tests::crash_payload(run, thread, *c)).collect();
        let claim = (thread == 0).then(|| Claim {
            merchant: "crash".into(),
            key: format!("r{run}-c{}", ids[0]),
            batch: u128::from(run) << 64 | u128::from(ids[0]),
            body_hash: [0; 32],
        });
        let outcome = journal.submit(payloads, claim).and_then(|ticket| ticket.wait());
        let (first, last) = match outcome {
            Ok(Appended::Committed { first, last }) => (first, last),
            Ok(Appended::Duplicate(_)) => panic!("fresh keys are never duplicates"),
            Err(error) => panic!("append failed: {error}"),
        };
        let names: Vec<String> = ids.iter().map(|c| format!("r{run}-t{thread}-c{c}")).collect();
        let mut out = std::io::stdout().lock();
        writeln!(out, "ACK {first} {last} {} END", names.join(" ")).expect("parent reads stdout");
        out.flush().expect("parent reads stdout");
    }
}
