//! Helpers shared by railyard's end-to-end tests and the driver binaries they run.

pub mod btc;
pub mod kill;

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
