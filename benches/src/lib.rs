//! Shared helpers for railyard's benchmarks: every benchmark prints its numbers next to a
//! baseline measured in the same run, as a ratio.

use std::path::{Path, PathBuf};

/// Where the benchmarks keep criterion's output, so that they can read their estimates back.
pub fn output_dir(bench: &str) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| {
        Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("benches sits in the workspace").join("target")
    });
    target.join("railyard-bench").join(bench)
}

/// The mean time of one iteration of `group/id`, in nanoseconds, from criterion's estimates.
pub fn mean_ns(dir: &Path, group: &str, id: &str) -> Option<f64> {
    let path = dir.join(group).join(id).join("new").join("estimates.json");
    let text = std::fs::read_to_string(path).ok()?;
    let json: serde_json::Value = serde_json::from_str(&text).ok()?;
    json["mean"]["point_estimate"].as_f64()
}

/// Resident memory of this process in bytes (Linux), for memory-per-item estimates.
pub fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}
