//! A node's leases, kept on a thread of their own: taken when free, renewed well before they
//! expire, and given up the moment their renewal cannot be proven in time.
//!
//! PostgreSQL's clock decides expiry (`expires_at = now() + ttl`, with `now()` no earlier than
//! the moment the request left this node). So a lease renewed by a request sent at local time
//! `t` is the node's until at least `t + ttl` — less a margin for the two clocks' rates — and
//! `fence` stops answering at that local deadline whether or not the renewal's answer ever
//! came back: a node whose database hangs, or that is partitioned from it, stops acting on the
//! rail within one lease time, without waiting for any timeout. PostgreSQL checks the token
//! again in every append's transaction, so the local deadline is an early stop, not the guard.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::{Fence, Lease, PgError, PgJournal};

#[derive(Debug)]
struct Held {
    lease: Lease,
    /// Local time until which the lease is surely still this node's.
    valid_until: Instant,
}

#[derive(Debug, Default)]
struct Shared {
    held: Mutex<BTreeMap<String, Held>>,
    stop: AtomicBool,
}

impl Shared {
    fn held(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Held>> {
        self.held.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Keeps the leases `names` for `holder`.
#[derive(Debug)]
pub struct LeaseKeeper {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl LeaseKeeper {
    /// Starts keeping the leases `names` on `url` for `holder`, each for `ttl`, renewed every
    /// quarter of it.
    pub fn start(url: &str, holder: &str, names: Vec<String>, ttl: Duration) -> Result<LeaseKeeper, PgError> {
        let journal = PgJournal::connect(url)?;
        let shared = Arc::new(Shared::default());
        let keeper = Arc::clone(&shared);
        let holder = holder.to_owned();
        let thread = std::thread::Builder::new()
            .name(format!("leases-{holder}"))
            .spawn(move || keep(&journal, &holder, &names, ttl, &keeper))
            .map_err(|e| PgError::Unavailable(format!("cannot start the lease thread: {e}")))?;
        Ok(LeaseKeeper { shared, thread: Some(thread) })
    }

    /// The fence to append under for lease `name`, while this node surely holds it.
    pub fn fence(&self, name: &str) -> Option<Fence> {
        let held = self.shared.held();
        held.get(name).filter(|h| h.valid_until > Instant::now()).map(|h| h.lease.fence())
    }

    /// The leases surely held now, with their tokens.
    pub fn held(&self) -> Vec<(String, i64)> {
        let now = Instant::now();
        self.shared
            .held()
            .values()
            .filter(|h| h.valid_until > now)
            .map(|h| (h.lease.name.clone(), h.lease.token))
            .collect()
    }
}

impl Drop for LeaseKeeper {
    /// Stops renewing and gives the leases up (released in PostgreSQL when it answers), so
    /// another node takes them without waiting for their expiry. Not waited for: a renewal
    /// stuck on a hung database would hold the caller too (the leases then simply expire).
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        self.shared.held().clear();
        drop(self.thread.take());
    }
}

/// The keeper's loop: every quarter of `ttl`, renew what is held and try to take what is not.
fn keep(journal: &PgJournal, holder: &str, names: &[String], ttl: Duration, shared: &Shared) {
    let ttl_ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
    // The two clocks may run at slightly different rates: a tenth of the lease is kept back.
    let sure = ttl - ttl / 10;
    let mut next = Instant::now();
    let mut last: Vec<Lease> = Vec::new();
    while !shared.stop.load(Ordering::Acquire) {
        for name in names {
            let current = shared.held().get(name).map(|h| h.lease.clone());
            let sent = Instant::now();
            let outcome = match &current {
                Some(lease) => journal.renew_lease(lease, ttl_ms).map(|renewed| renewed.then(|| lease.clone())),
                None => journal.acquire_lease(name, holder, ttl_ms),
            };
            let mut held = shared.held();
            match outcome {
                Ok(Some(lease)) => {
                    held.insert(name.clone(), Held { lease, valid_until: sent + sure });
                }
                // Lost (another node has it, or it expired): stop acting under it now.
                Ok(None) => {
                    held.remove(name);
                }
                // Unknown: it stays until its local deadline, which `fence` enforces.
                Err(_) => {}
            }
        }
        last = shared.held().values().map(|h| h.lease.clone()).collect();
        next += ttl / 4;
        let now = Instant::now();
        if next > now {
            std::thread::sleep(next - now);
        } else {
            next = now;
        }
    }
    // What was held when asked to stop (`drop` cleared the map for `fence`; the loop's own
    // copy is the last renewed).
    for lease in last {
        let _ = journal.release_lease(&lease);
    }
}
