//! Helpers shared by railyard's end-to-end tests and the driver binaries they run.

pub mod btc;
pub mod kill;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use engine::Engine;
use model::{PaymentState, Timestamp};

/// The wall clock, as the drivers give it to the engine.
pub fn now() -> Timestamp {
    Timestamp(
        u64::try_from(SystemTime::now().duration_since(UNIX_EPOCH).expect("after 1970").as_millis())
            .expect("ms fit u64"),
    )
}

/// Ticks `engine` until every payment is settled, printing `PROGRESS <settled> <total>` after
/// each round; panics after `within`.
pub async fn settle_all(engine: &mut Engine, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        engine.tick(now()).await.expect("tick");
        let book = &engine.state().book;
        let settled = book.count(PaymentState::Settled);
        let total: u64 = book.counts().values().sum();
        println!("PROGRESS {settled} {total}");
        if settled == total {
            return;
        }
        assert!(Instant::now() < deadline, "not settled within {within:?}: {:?}", engine.count_by_state());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The payload format of the journal crash test: `run-thread-counter` plus padding to a fixed
/// size, so that a record is recognisable and its identity unique across runs.
pub fn crash_payload(run: u64, thread: u64, counter: u64) -> Vec<u8> {
    let mut payload = format!("r{run}-t{thread}-c{counter}|").into_bytes();
    payload.resize(200, b'.');
    payload
}

/// The identity part of a crash-test payload (before the `|`), or `None` if it is not one.
pub fn crash_payload_id(payload: &[u8]) -> Option<&str> {
    let text = std::str::from_utf8(payload).ok()?;
    let (id, padding) = text.split_once('|')?;
    (payload.len() == 200 && padding.bytes().all(|b| b == b'.')).then_some(id)
}
