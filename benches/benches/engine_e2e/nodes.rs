//! `engine_e2e` on PostgreSQL (`RAILYARD_BENCH_PG`): the throwaway cluster, the journals on
//! it, and several engines sharing one journal as `railyard serve` nodes do.

use std::sync::Arc;

use engine::Engine;
use rails::sandbox::SandboxRail;

use super::{CHAINS, T0, config, name, rails_of};

/// The PostgreSQL cluster the run uses when `RAILYARD_BENCH_PG` is set (started on first
/// use; `stop_cluster` stops it).
static CLUSTER: std::sync::Mutex<Option<journal_pg::cluster::Cluster>> = std::sync::Mutex::new(None);

pub(crate) fn cluster_url() -> Option<String> {
    std::env::var_os("RAILYARD_BENCH_PG")?;
    let mut cluster = CLUSTER.lock().unwrap();
    Some(cluster.get_or_insert_with(journal_pg::cluster::Cluster::start).url.clone())
}

pub(crate) fn stop_cluster() {
    drop(CLUSTER.lock().unwrap().take());
}

/// The journal at `path`: its redb file, or, on PostgreSQL, a database named after it.
pub(crate) fn journal_at(path: &std::path::Path, config: journal::Config) -> journal::Journal {
    match cluster_url() {
        None => journal::Journal::open(path, config).unwrap(),
        Some(admin) => {
            let hash = blake3::hash(path.to_string_lossy().as_bytes());
            let url = journal_pg::database(&admin, &format!("bench_{}", &hash.to_hex()[..16])).unwrap();
            journal::Journal::with_store(Arc::new(journal_pg::PgStore::connect(&url).unwrap()), config).unwrap()
        }
    }
}

/// `nodes` engines sharing the work on one journal, as `railyard serve` nodes do: the first
/// coordinates, and rail `i` is driven by node `i` mod `nodes` (leases are not taken: these
/// engines are trusted to keep to their parts, and decide in turns).
pub(crate) async fn open_nodes(
    path: &std::path::Path,
    sandboxes: &[Arc<SandboxRail>],
    nodes: usize,
) -> (Engine, Vec<Engine>) {
    let mut engines = Vec::new();
    for node in 0..nodes {
        let rails = CHAINS.iter().enumerate().filter(|(i, _)| i % nodes == node).map(|(_, (r, _))| name(r)).collect();
        let acting = engine::Acting { coordinator: node == 0, rails };
        let journal = journal_at(path, config().journal);
        let guard: engine::LeaseGuard = Box::new(|| true);
        let opened = Engine::open_acting(journal, config(), rails_of(sandboxes), T0, Some(acting), guard);
        engines.push(opened.await.unwrap());
    }
    let coordinator = engines.remove(0);
    (coordinator, engines)
}
