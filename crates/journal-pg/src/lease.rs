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
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
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
    /// Who held each lease this node does not, at the last look.
    others: Mutex<BTreeMap<String, String>>,
    stop: AtomicBool,
    /// Rounds of renewals and takes completed.
    rounds: AtomicU64,
    /// Wakes the keeper from its wait between rounds (to stop); signalled with `released`
    /// set once the leases are given up.
    wake: Condvar,
    released: Mutex<bool>,
}

impl Shared {
    fn held(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Held>> {
        self.held.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Keeps the leases `names` for `holder`.
#[derive(Debug)]
pub struct LeaseKeeper {
    ttl: Duration,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl LeaseKeeper {
    /// Starts keeping the leases `names` on `url` for `holder`, each for `ttl`, renewed every
    /// quarter of it.
    pub fn start(url: &str, holder: &str, names: Vec<String>, ttl: Duration) -> Result<LeaseKeeper, PgError> {
        let shared = Arc::new(Shared::default());
        let keeper = Arc::clone(&shared);
        let (holder, url) = (holder.to_owned(), url.to_owned());
        // Connected on its own thread (the client blocks: never on an async runtime's worker).
        let (ready, connected) = std::sync::mpsc::sync_channel(1);
        let thread = std::thread::Builder::new()
            .name(format!("leases-{holder}"))
            .spawn(move || match PgJournal::connect(&url) {
                Ok(journal) => {
                    let _ = ready.send(Ok(()));
                    keep(&journal, &holder, &names, ttl, &keeper);
                }
                Err(error) => {
                    let _ = ready.send(Err(error));
                }
            })
            .map_err(|e| PgError::Unavailable(format!("cannot start the lease thread: {e}")))?;
        connected.recv().map_err(|_| PgError::Unavailable("the lease thread ended".into()))??;
        Ok(LeaseKeeper { ttl, shared, thread: Some(thread) })
    }

    /// How long a lease lasts unrenewed.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// The fence to append under for lease `name`, while this node surely holds it.
    pub fn fence(&self, name: &str) -> Option<Fence> {
        let held = self.shared.held();
        held.get(name).filter(|h| h.valid_until > Instant::now()).map(|h| h.lease.fence())
    }

    /// Who holds lease `name`: this node's holder name while it surely holds it, else the
    /// holder another node registered at the last look (`None`: no one, or not known yet).
    pub fn holder(&self, name: &str) -> Option<String> {
        if let Some(held) = self.shared.held().get(name).filter(|h| h.valid_until > Instant::now()) {
            return Some(held.lease.holder.clone());
        }
        self.shared.others.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get(name).cloned()
    }

    /// Waits (blocking, at most `wait`) until the keeper has tried every lease once, so the
    /// node knows whether it starts as a holder.
    pub fn first_round(&self, wait: Duration) -> bool {
        let released = self.shared.released.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let _unused =
            self.shared.wake.wait_timeout_while(released, wait, |_| self.shared.rounds.load(Ordering::Acquire) == 0);
        self.shared.rounds.load(Ordering::Acquire) > 0
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
        self.stop();
        drop(self.thread.take());
    }
}

impl LeaseKeeper {
    /// Stops renewing and gives the leases up now (see `drop`); `fence` answers `None` from
    /// here on.
    pub fn stop(&self) {
        self.shared.stop.store(true, Ordering::Release);
        self.shared.held().clear();
        // Waits a moment for the release (a process exiting right after would otherwise cut
        // it off, and the next node would wait for the expiry), never for a hung database.
        let released = self.shared.released.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        self.shared.wake.notify_all();
        let _ = self.shared.wake.wait_timeout_while(released, Duration::from_secs(1), |done| !*done);
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
                    drop(held);
                    let holder = journal.lease_holder(name).ok().flatten().map(|(holder, _)| holder);
                    let mut others = shared.others.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                    match holder {
                        Some(holder) => others.insert(name.clone(), holder),
                        None => others.remove(name),
                    };
                }
                // Unknown: it stays until its local deadline, which `fence` enforces.
                Err(_) => {}
            }
        }
        last = shared.held().values().map(|h| h.lease.clone()).collect();
        {
            // Counted under the lock `first_round` waits with, so its wake-up is not lost.
            let _held = shared.released.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            shared.rounds.fetch_add(1, Ordering::AcqRel);
        }
        shared.wake.notify_all();
        next += ttl / 4;
        let now = Instant::now();
        if next > now {
            let released = shared.released.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let _ = shared.wake.wait_timeout_while(released, next - now, |_| !shared.stop.load(Ordering::Acquire));
        } else {
            next = now;
        }
    }
    // What was held when asked to stop (`drop` cleared the map for `fence`; the loop's own
    // copy is the last renewed).
    for lease in last {
        if let Err(error) = journal.release_lease(&lease) {
            tracing::warn!(lease = %lease.name, %error, "lease not released; it expires on its own");
        }
    }
    *shared.released.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = true;
    shared.wake.notify_all();
}
