//! End-to-end tests with real processes and real files.

mod book_replay;
mod btc_cpfp;
mod btc_kill;
mod engine_kill;
mod journal_crash;
