//! `railyard serve` on a shared PostgreSQL journal, as one node of several.
//!
//! The work is partitioned by leases, rows in PostgreSQL kept by each node's `LeaseKeeper`
//! (renewed every quarter of their time; a node that cannot prove it still holds one stops
//! acting at once): `coordinator` (routing, the queue, holds, operators' commands) and one
//! `rail:<id>` per rail (signing what was planned on it, broadcasting, watching). They spread
//! over the live nodes, a fair share each. A node holding some opens an engine acting on them
//! (`Engine::open_acting`) exactly as a restart opens it — recovery re-broadcasts the same
//! signed bytes and tells its rails their journaled spends — every commit fenced by all its
//! leases' tokens, every round and broadcast checked against them. A node holding none runs a
//! standby engine. Any node journals the merchants' batches it is sent (in its turn); the
//! API forwards other changes to the coordinator. When a node's leases end — it died, paused,
//! lost its database, or another node joined and took its share — other nodes take them after
//! expiry and reopen on the journal; the old holder, if it comes back, finds them gone.
//!
//! The node's engine is replaced, never converted: whenever the set of leases it holds
//! changes, a fresh engine opens on the journal behind the same handle, so the API never sees
//! a gap longer than one open.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use config::Loaded;
use engine::service::{self, Inbox, ServiceConfig};
use engine::{Acting, Engine};
use journal::Journal;
use journal_pg::{LeaseKeeper, PgStore};
use tokio::sync::watch;

use crate::serve::{now, prepare};

/// The coordinator's lease: routing, the queue, holds and commands.
pub const COORDINATOR: &str = "coordinator";

/// The lease on driving the rails of `network`: rails on one chain are driven by one node,
/// since they may share a hot wallet, whose nonces (or coins) one node must track.
fn rail_lease(network: model::Network) -> String {
    format!("rail:{network}")
}

/// The leases on driving `rails`, each once.
fn rail_leases<'a>(rails: impl Iterator<Item = &'a model::Capabilities>) -> Vec<String> {
    let mut leases: Vec<String> = Vec::new();
    for lease in rails.map(|caps| rail_lease(caps.network)) {
        if !leases.contains(&lease) {
            leases.push(lease);
        }
    }
    leases
}

/// How often a node looks at its lease and its engine while serving.
const LOOK_EVERY: Duration = Duration::from_millis(50);

/// The wait before reopening an engine that stopped, doubled for each stop in a row.
const BACKOFF_FIRST: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// Where a node's journal is and how it keeps its lease.
pub struct NodeSettings<'a> {
    pub url: &'a str,
    pub ttl: Duration,
    /// This node's name in the lease row: the URL other nodes forward to.
    pub holder: &'a str,
    /// Connections serving queries.
    pub readers: usize,
}

pub struct Node {
    url: String,
    keeper: Arc<LeaseKeeper>,
    /// The journal a standby follows and every query's history reads.
    reads: Journal,
    loaded: Loaded,
    rails: Vec<Arc<dyn rails::Rail>>,
    holder: String,
    promotions: u64,
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> anyhow::Result<T> {
    tokio::task::spawn_blocking(f).await.context("a blocking task failed")
}

impl Node {
    /// Starts keeping the lease as `holder` and waits for the first attempt to take it (so a
    /// node alone starts as the leader).
    pub async fn start(
        loaded: &Loaded,
        rails: Vec<Arc<dyn rails::Rail>>,
        settings: &NodeSettings<'_>,
    ) -> anyhow::Result<Node> {
        let NodeSettings { url, ttl, holder, readers } = *settings;
        let (owned, name) = (url.to_owned(), holder.to_owned());
        let mut work = vec![COORDINATOR.to_owned()];
        work.extend(rail_leases(rails.iter().map(|r| r.capabilities())));
        let keeper = blocking(move || LeaseKeeper::start_shared(&owned, &name, work, ttl))
            .await?
            .map_err(|e| anyhow::anyhow!("cannot keep the node's leases in PostgreSQL: {e}"))?;
        let keeper = Arc::new(keeper);
        let waiting = Arc::clone(&keeper);
        blocking(move || waiting.first_round(ttl)).await?;
        let owned = url.to_owned();
        let store = blocking(move || PgStore::connect_node(&owned, readers, ttl))
            .await?
            .map_err(|e| anyhow::anyhow!("cannot open the PostgreSQL journal: {e}"))?;
        let reads = Journal::with_store(Arc::new(store), loaded.engine.journal.clone())?;
        Ok(Node {
            url: url.to_owned(),
            keeper,
            reads,
            loaded: loaded.clone(),
            rails,
            holder: holder.to_owned(),
            promotions: 0,
        })
    }

    pub fn reads(&self) -> &Journal {
        &self.reads
    }

    /// What the leases this node surely holds now let it act on (`None`: nothing).
    fn acting(&self) -> Option<Acting> {
        let held = self.keeper.held();
        let holds = |name: &str| held.iter().any(|(lease, _)| lease == name);
        let acting = Acting {
            coordinator: holds(COORDINATOR),
            rails: self
                .rails
                .iter()
                .map(|r| r.capabilities())
                .filter(|caps| holds(&rail_lease(caps.network)))
                .map(|caps| caps.rail)
                .collect(),
        };
        (acting.coordinator || !acting.rails.is_empty()).then_some(acting)
    }

    /// The engine this node should run now: acting on what its leases name, or a standby.
    pub async fn open(&mut self) -> anyhow::Result<Engine> {
        let config = self.loaded.engine.clone();
        let Some(acting) = self.acting() else {
            let reads = self.reads.clone();
            let rails = self.rails.clone();
            return blocking(move || Engine::open_standby(reads, config, rails, now())).await?.map_err(Into::into);
        };
        let driven = self.rails.iter().map(|r| r.capabilities()).filter(|c| acting.rails.contains(&c.rail));
        let mut leases = rail_leases(driven);
        if acting.coordinator {
            leases.insert(0, COORDINATOR.to_owned());
        }
        let (url, keeper, fenced) = (self.url.clone(), Arc::clone(&self.keeper), leases.clone());
        let store = blocking(move || PgStore::connect_fenced_all(&url, keeper, fenced, 1))
            .await?
            .map_err(|e| anyhow::anyhow!("cannot open the PostgreSQL journal: {e}"))?;
        let journal = Journal::with_store(Arc::new(store), config.journal.clone())?;
        let keeper = Arc::clone(&self.keeper);
        let guard = Box::new(move || leases.iter().all(|lease| keeper.fence(lease).is_some()));
        let engine =
            Engine::open_acting(journal, config, self.rails.clone(), now(), Some(acting.clone()), guard).await?;
        self.promotions += 1;
        tracing::info!(node = %self.holder, promotions = self.promotions, ?acting, "this node acts");
        Ok(engine)
    }

    /// What the API shows of this node; `acting` is what its engine acts on.
    fn view(&self, acting: Option<&Acting>) -> api::node::NodeView {
        let leader = acting.is_some_and(|a| a.coordinator);
        let held = self.keeper.held();
        let token = held.iter().find(|(name, _)| name == COORDINATOR).map(|(_, token)| *token);
        api::node::NodeView {
            node: self.holder.clone(),
            leader,
            leader_url: self.keeper.holder(COORDINATOR),
            token: token.filter(|_| leader),
            rails: acting.map(|a| a.rails.iter().map(ToString::to_string).collect()).unwrap_or_default(),
            fencing_refusals: journal_pg::fencing_refusals(),
            promotions: self.promotions,
        }
    }

    /// Serves until `stop`: runs `engine` until the lease changes hands or it stops, then
    /// opens the next one (retrying while the database is away).
    pub async fn run(
        mut self,
        mut engine: Engine,
        mut inbox: Inbox,
        mut config: ServiceConfig,
        api: api::Api,
        stop: watch::Receiver<bool>,
    ) {
        // Engines that stopped in a row (a database away, or a bug that stops every engine
        // opened): each reopen waits longer, up to `BACKOFF_MAX`.
        let mut stops = 0u32;
        loop {
            let acting = engine.acting().cloned();
            let opened_at = std::time::Instant::now();
            service::attach(&mut engine, &inbox, now());
            api.set_node(self.view(acting.as_ref()));
            let changed = {
                let (stop, api, this, acting) = (stop.clone(), api.clone(), &self, acting.clone());
                async move {
                    loop {
                        tokio::time::sleep(LOOK_EVERY).await;
                        // Leases taken or lost: the engine reopens acting on what is held now.
                        let moved = this.acting() != acting;
                        if *stop.borrow() || moved || api.handle.read(|m| m.stopped.is_some()) {
                            return;
                        }
                        api.set_node(this.view(acting.as_ref()));
                    }
                }
            };
            let finished = service::run_attached(engine, &mut inbox, &mut config, changed).await;
            if let Some(why) = finished.stopped() {
                stops = if opened_at.elapsed() > BACKOFF_MAX { 1 } else { stops.saturating_add(1) };
                let wait = (BACKOFF_FIRST * 2u32.saturating_pow(stops - 1)).min(BACKOFF_MAX);
                tracing::warn!(%why, ?wait, "the engine stopped; this node opens it again");
                let until = std::time::Instant::now() + wait;
                while std::time::Instant::now() < until && !*stop.borrow() {
                    inbox.refuse_waiting(&format!("the engine stopped ({why}); reopening"));
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
            // Dropping closes database connections, which blocks — for as long as a hung
            // database makes it: not waited for (whatever its writer still had in flight is
            // fenced by PostgreSQL, the lease being gone or renewed under a newer token).
            drop(tokio::task::spawn_blocking(move || drop(finished)));
            engine = loop {
                if *stop.borrow() {
                    return;
                }
                match self.open().await {
                    Ok(mut opened) => {
                        if opened.coordinates() && !opened.is_standby() {
                            match prepare(&mut opened, &self.loaded).await {
                                Ok(Some(secret)) => println!("admin API key (shown once, store it now): {secret}"),
                                Ok(None) => {}
                                Err(error) => tracing::warn!(%error, "start-up funding or first key not done"),
                            }
                        }
                        break opened;
                    }
                    Err(error) => {
                        tracing::warn!(%error, "cannot open the engine; trying again in a second");
                        inbox.refuse_waiting(&format!("reopening the engine: {error}"));
                        api.set_node(self.view(None));
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            };
        }
    }
}
