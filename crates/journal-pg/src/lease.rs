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

use crate::{Fence, Lease, PgError, PgJournal, seq_of};

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
        LeaseKeeper::keeping(url, holder, names, false, ttl)
    }

    /// Keeps a share of the leases `work` for `holder`, spread over the live nodes: each node
    /// keeps its own lease `node:<holder>` (the live nodes are those whose node lease is
    /// unexpired) and takes a free work lease only while it holds fewer than its fair share
    /// (the work leases over the live nodes, rounded up); a node over its share (another one
    /// joined) gives the extra ones up, rails before `work`'s first. So leases follow the
    /// nodes: a node's death frees its share after the lease time, and the others take it.
    pub fn start_shared(url: &str, holder: &str, work: Vec<String>, ttl: Duration) -> Result<LeaseKeeper, PgError> {
        let mut names = vec![format!("{NODE_PREFIX}{holder}")];
        names.extend(work);
        LeaseKeeper::keeping(url, holder, names, true, ttl)
    }

    fn keeping(
        url: &str,
        holder: &str,
        names: Vec<String>,
        spread: bool,
        ttl: Duration,
    ) -> Result<LeaseKeeper, PgError> {
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
                    keep(&journal, &holder, &names, spread, ttl, &keeper);
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

/// What a node's own lease is named after (`start_shared`).
pub const NODE_PREFIX: &str = "node:";

/// Learns who holds lease `name`, this node not holding it.
fn note_other(journal: &PgJournal, name: &str, shared: &Shared) {
    let holder = journal.lease_holder(name).ok().flatten().map(|(holder, _)| holder);
    let mut others = shared.others.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    match holder {
        Some(holder) => others.insert(name.to_owned(), holder),
        None => others.remove(name),
    };
}

/// With `spread`, the first name is the node's own lease and the rest are work leases, kept
/// up to the node's fair share (`start_shared`).
fn share_of(journal: &PgJournal, names: &[String], spread: bool) -> Option<usize> {
    if !spread {
        return None;
    }
    let nodes = journal.live_leases(NODE_PREFIX).unwrap_or(1).max(1);
    Some((names.len() - 1).div_ceil(usize::try_from(nodes).unwrap_or(usize::MAX)))
}

/// The keeper's loop: every quarter of `ttl`, renew what is held and try to take what is not.
fn keep(journal: &PgJournal, holder: &str, names: &[String], spread: bool, ttl: Duration, shared: &Shared) {
    let ttl_ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
    // The two clocks may run at slightly different rates: a tenth of the lease is kept back.
    let sure = ttl - ttl / 10;
    let mut next = Instant::now();
    let mut last: Vec<Lease> = Vec::new();
    while !shared.stop.load(Ordering::Acquire) {
        let mut share = None;
        for (n, name) in names.iter().enumerate() {
            let current = shared.held().get(name).map(|h| h.lease.clone());
            if spread && n == 1 {
                // Counted once the node's own lease is renewed (or taken: it counts itself).
                share = share_of(journal, names, spread);
            }
            let work = spread && n > 0;
            let held_work = || shared.held().keys().filter(|k| !k.starts_with(NODE_PREFIX)).count();
            if work && current.is_none() && share.is_some_and(|share| held_work() >= share) {
                note_other(journal, name, shared);
                continue;
            }
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
                    note_other(journal, name, shared);
                }
                // Unknown: it stays until its local deadline, which `fence` enforces.
                Err(_) => {}
            }
        }
        if let Some(share) = share {
            give_up_extra(journal, names, share, shared);
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
    // All in one statement: a process exiting waits for this only a moment (`stop`), and a
    // node holding several leases must not run out of that moment with some still held.
    if let Err(error) = journal.release_leases(&last) {
        tracing::warn!(leases = last.len(), %error, "leases not released; they expire on their own");
    }
    *shared.released.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = true;
    shared.wake.notify_all();
}

/// A node over its fair share (another joined) gives up work leases, the last of `names`
/// first, until it holds its share: `fence` stops answering for them at once.
fn give_up_extra(journal: &PgJournal, names: &[String], share: usize, shared: &Shared) {
    for name in names[1..].iter().rev() {
        let lease = {
            let mut held = shared.held();
            if held.keys().filter(|k| !k.starts_with(NODE_PREFIX)).count() <= share {
                return;
            }
            match held.remove(name) {
                Some(held) => held.lease,
                None => continue,
            }
        };
        tracing::info!(lease = %lease.name, share, "over this node's share: lease given up for another node");
        if let Err(error) = journal.release_lease(&lease) {
            tracing::warn!(lease = %lease.name, %error, "lease not released; it expires on its own");
        }
        note_other(journal, name, shared);
    }
}

/// The leases a frame was appended under, with their tokens.
pub type FrameFences = Vec<(String, i64)>;

/// The lease rows (`railyard_leases`).
impl PgJournal {
    /// Takes lease `name` for `holder` for `ttl_ms` (PostgreSQL's clock) if no one holds it
    /// unexpired; the token is one more than the last holder's. `None`: someone holds it.
    pub fn acquire_lease(&self, name: &str, holder: &str, ttl_ms: i64) -> Result<Option<Lease>, PgError> {
        self.with_client(|c| {
            let row = c.query_opt(
                "INSERT INTO railyard_leases (name, holder, token, expires_at)
                 VALUES ($1, $2, 1, now() + $3::bigint * interval '1 millisecond')
                 ON CONFLICT (name) DO UPDATE
                     SET holder = EXCLUDED.holder, token = railyard_leases.token + 1, expires_at = EXCLUDED.expires_at
                     WHERE railyard_leases.expires_at <= now()
                 RETURNING token",
                &[&name, &holder, &ttl_ms],
            )?;
            Ok(row.map(|row| Lease { name: name.to_owned(), holder: holder.to_owned(), token: row.get(0) }))
        })
    }

    /// Extends a lease still held (same token, unexpired) by `ttl_ms` from now; `false`: it
    /// was lost, and its holder must stop acting under it at once.
    pub fn renew_lease(&self, lease: &Lease, ttl_ms: i64) -> Result<bool, PgError> {
        self.with_client(|c| {
            let renewed = c.execute(
                "UPDATE railyard_leases SET expires_at = now() + $4::bigint * interval '1 millisecond'
                 WHERE name = $1 AND holder = $2 AND token = $3 AND expires_at > now()",
                &[&lease.name, &lease.holder, &lease.token, &ttl_ms],
            )?;
            Ok(renewed == 1)
        })
    }

    /// Each frame's first record and the lease token it was appended under, in order: a
    /// fenced journal never shows a token below one that came before it.
    /// Each frame's first sequence number and the leases it was appended under, with their
    /// tokens (empty: under none).
    pub fn frame_fences(&self) -> Result<Vec<(u64, FrameFences)>, PgError> {
        self.with_client(|c| {
            let rows = c.query("SELECT first_seq, fences FROM railyard_frames ORDER BY first_seq", &[])?;
            let parse = |text: Option<String>| -> Vec<(String, i64)> {
                text.unwrap_or_default()
                    .split(',')
                    .filter_map(|part| part.rsplit_once('='))
                    .filter_map(|(name, token)| Some((name.to_owned(), token.parse().ok()?)))
                    .collect()
            };
            Ok(rows.iter().map(|row| (seq_of(row.get(0)), parse(row.get(1)))).collect())
        })
    }

    pub fn frame_tokens(&self) -> Result<Vec<(u64, Option<i64>)>, PgError> {
        self.with_client(|c| {
            let rows = c.query("SELECT first_seq, token FROM railyard_frames ORDER BY first_seq", &[])?;
            Ok(rows.iter().map(|row| (seq_of(row.get(0)), row.get(1))).collect())
        })
    }

    /// Who holds lease `name` now (unexpired), and under which token.
    pub fn lease_holder(&self, name: &str) -> Result<Option<(String, i64)>, PgError> {
        self.with_client(|c| {
            let row = c.query_opt(
                "SELECT holder, token FROM railyard_leases WHERE name = $1 AND expires_at > now()",
                &[&name],
            )?;
            Ok(row.map(|row| (row.get(0), row.get(1))))
        })
    }

    /// Gives a lease up at once (a node leaving), so another can take it without waiting.
    pub fn release_lease(&self, lease: &Lease) -> Result<(), PgError> {
        self.with_client(|c| {
            c.execute(
                "UPDATE railyard_leases SET expires_at = now() WHERE name = $1 AND holder = $2 AND token = $3",
                &[&lease.name, &lease.holder, &lease.token],
            )?;
            Ok(())
        })
    }

    /// Gives several leases up at once, in one statement.
    pub fn release_leases(&self, leases: &[Lease]) -> Result<(), PgError> {
        if leases.is_empty() {
            return Ok(());
        }
        let names: Vec<&str> = leases.iter().map(|l| l.name.as_str()).collect();
        let holders: Vec<&str> = leases.iter().map(|l| l.holder.as_str()).collect();
        let tokens: Vec<i64> = leases.iter().map(|l| l.token).collect();
        self.with_client(|c| {
            c.execute(
                "UPDATE railyard_leases l SET expires_at = now()
                 FROM unnest($1::text[], $2::text[], $3::bigint[]) AS r(name, holder, token)
                 WHERE l.name = r.name AND l.holder = r.holder AND l.token = r.token",
                &[&names, &holders, &tokens],
            )?;
            Ok(())
        })
    }

    /// How many leases named with `prefix` someone holds unexpired (the live nodes, by their
    /// `node:` leases).
    pub fn live_leases(&self, prefix: &str) -> Result<u64, PgError> {
        self.with_client(|c| {
            let pattern = format!("{prefix}%");
            let row = c.query_one(
                "SELECT count(*) FROM railyard_leases WHERE name LIKE $1 AND expires_at > now()",
                &[&pattern],
            )?;
            Ok(u64::try_from(row.get::<_, i64>(0)).unwrap_or(0))
        })
    }
}
