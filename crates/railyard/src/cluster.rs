//! `railyard serve` on a shared PostgreSQL journal, as one node of several.
//!
//! Each node keeps the engine lease's row in PostgreSQL with a `LeaseKeeper` (renewed every
//! quarter of its time; a node that cannot prove it still holds it stops acting at once). The
//! holder runs the engine: opened exactly as a restart opens it (recovery re-broadcasts the
//! same signed bytes, tells each rail its journaled spends), every commit fenced by the
//! lease's token, every round and broadcast checked against the lease. The others run a
//! standby engine that follows the journal and answers queries; their API forwards changes
//! to the holder. When the holder's lease ends — it died, paused, lost its database — another
//! node takes it after expiry and opens the engine; the old holder, if it comes back, finds
//! its lease gone and stands by.
//!
//! The node's engine is replaced, never converted: standby → leader and leader → standby are
//! both a fresh open on the journal behind the same handle, so the API never sees a gap
//! longer than one open.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use config::Loaded;
use engine::Engine;
use engine::service::{self, Inbox, ServiceConfig};
use journal::Journal;
use journal_pg::{LeaseKeeper, PgStore};
use tokio::sync::watch;

use crate::serve::{now, prepare};

/// The lease the engine acts under: one holder drives every rail.
pub const ENGINE_LEASE: &str = "engine";

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
        let keeper = blocking(move || LeaseKeeper::start(&owned, &name, vec![ENGINE_LEASE.into()], ttl))
            .await?
            .map_err(|e| anyhow::anyhow!("cannot keep the engine lease in PostgreSQL: {e}"))?;
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

    fn leads(&self) -> bool {
        self.keeper.fence(ENGINE_LEASE).is_some()
    }

    /// The engine this node should run now: under the lease when it holds it, else a standby.
    pub async fn open(&mut self) -> anyhow::Result<Engine> {
        let config = self.loaded.engine.clone();
        if !self.leads() {
            let reads = self.reads.clone();
            let rails = self.rails.clone();
            return blocking(move || Engine::open_standby(reads, config, rails, now())).await?.map_err(Into::into);
        }
        let (url, keeper) = (self.url.clone(), Arc::clone(&self.keeper));
        let store = blocking(move || PgStore::connect_fenced(&url, keeper, ENGINE_LEASE))
            .await?
            .map_err(|e| anyhow::anyhow!("cannot open the PostgreSQL journal: {e}"))?;
        let journal = Journal::with_store(Arc::new(store), config.journal.clone())?;
        let keeper = Arc::clone(&self.keeper);
        let guard = Box::new(move || keeper.fence(ENGINE_LEASE).is_some());
        let engine = Engine::open_leased(journal, config, self.rails.clone(), now(), guard).await?;
        self.promotions += 1;
        tracing::info!(node = %self.holder, promotions = self.promotions, "this node holds the engine lease: acting");
        Ok(engine)
    }

    fn view(&self, leader: bool) -> api::node::NodeView {
        let token = self.keeper.held().into_iter().find(|(name, _)| name == ENGINE_LEASE).map(|(_, token)| token);
        api::node::NodeView {
            node: self.holder.clone(),
            leader,
            leader_url: self.keeper.holder(ENGINE_LEASE),
            token: token.filter(|_| leader),
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
            let leader = !engine.is_standby();
            let opened_at = std::time::Instant::now();
            service::attach(&mut engine, &inbox, now());
            api.set_node(self.view(leader));
            let changed = {
                let (stop, api, keeper, this) = (stop.clone(), api.clone(), Arc::clone(&self.keeper), &self);
                async move {
                    loop {
                        tokio::time::sleep(LOOK_EVERY).await;
                        let holds = keeper.fence(ENGINE_LEASE).is_some();
                        if *stop.borrow() || holds != leader || api.handle.read(|m| m.stopped.is_some()) {
                            return;
                        }
                        api.set_node(this.view(leader));
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
                        if !opened.is_standby() {
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
                        api.set_node(self.view(false));
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            };
        }
    }
}
