//! The PostgreSQL journal against a real PostgreSQL: a throwaway cluster per test
//! (`scripts/pg-cluster`: Debian's server, 127.0.0.1, fsync and synchronous commit on), stopped
//! when the test ends. Two `PgJournal` handles on one database are two railyard nodes.

mod journal;
mod leases;
mod store;

use std::process::Command;

/// A running cluster; stopped and removed on drop.
#[derive(Debug)]
pub struct Cluster {
    pub url: String,
    dir: String,
}

fn script() -> String {
    format!("{}/../../scripts/pg-cluster", env!("CARGO_MANIFEST_DIR"))
}

impl Cluster {
    pub fn start() -> Cluster {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let output =
            Command::new(script()).arg("start").arg(port.to_string()).output().expect("run scripts/pg-cluster");
        assert!(output.status.success(), "pg-cluster start: {}", String::from_utf8_lossy(&output.stderr));
        let line = String::from_utf8(output.stdout).unwrap();
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
        let status = Command::new(script()).arg(command).arg(&self.dir).status().unwrap();
        assert!(status.success(), "pg-cluster {command}");
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = Command::new(script()).arg("stop").arg(&self.dir).status();
    }
}
