//! A throwaway PostgreSQL cluster for tests and benchmarks: `scripts/pg-cluster` (Debian's
//! server, a data directory under /tmp, 127.0.0.1, fsync and synchronous commit on), stopped
//! and removed when the handle is dropped.

use std::process::Command;

/// A running cluster; stopped and removed on drop.
#[derive(Debug)]
pub struct Cluster {
    /// `postgres://railyard@127.0.0.1:<port>/railyard` (trust auth: loopback only).
    pub url: String,
    dir: String,
}

fn script() -> String {
    format!("{}/../../scripts/pg-cluster", env!("CARGO_MANIFEST_DIR"))
}

impl Cluster {
    /// Starts one on a free port. Panics when it cannot: a test's environment is broken.
    pub fn start() -> Cluster {
        let output = Command::new(script()).args(["start", "auto"]).output().expect("run scripts/pg-cluster");
        assert!(output.status.success(), "pg-cluster start: {}", String::from_utf8_lossy(&output.stderr));
        let line = String::from_utf8(output.stdout).expect("UTF-8");
        let (url, dir) = line.trim().split_once(' ').expect("<url> <dir>");
        Cluster { url: url.to_owned(), dir: dir.to_owned() }
    }

    /// Stops the server at once (as a crash would) and starts it again.
    pub fn restart(&self) {
        self.run("restart");
    }

    /// Freezes the server and its backends (SIGSTOP): a database that hangs.
    pub fn pause(&self) {
        self.run("pause");
    }

    pub fn resume(&self) {
        self.run("resume");
    }

    fn run(&self, command: &str) {
        let status = Command::new(script()).arg(command).arg(&self.dir).status().expect("run scripts/pg-cluster");
        assert!(status.success(), "pg-cluster {command}");
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = Command::new(script()).arg("stop").arg(&self.dir).status();
    }
}
