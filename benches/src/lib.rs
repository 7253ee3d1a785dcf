//! shared helpers for railyard benchmarks
