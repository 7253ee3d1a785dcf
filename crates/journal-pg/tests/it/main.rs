//! The PostgreSQL journal against a real PostgreSQL: a throwaway cluster per test
//! (`scripts/pg-cluster`: Debian's server, 127.0.0.1, fsync and synchronous commit on), stopped
//! when the test ends. Two `PgJournal` handles on one database are two railyard nodes.

mod journal;
mod leases;
mod store;

pub use journal_pg::cluster::Cluster;
