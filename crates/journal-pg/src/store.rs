//! `PgStore`: the PostgreSQL journal behind `journal::Journal` (the `Store` interface), so the
//! engine runs on it as on redb. The `postgres` client blocks on a runtime of its own, which
//! must never happen on an async runtime's worker thread: commits run on the journal's writer
//! thread (a thread of its own), and every other call — reads, the tip, even connecting — runs
//! on the store's reader thread, its caller waiting for the answer.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, mpsc};

use journal::store::{Store, Tip, Write};
use journal::{Appended, HistoryEntry, IdempotencyEntry, JournalError, Record, Snapshot};

use crate::{Conditions, LeaseKeeper, PgError, PgJournal};

type Job = Box<dyn FnOnce(&PgJournal) + Send>;

/// The journal on PostgreSQL as a `journal::Store`. Its commits are conditioned on the tip
/// its writer knows (another writer makes them fail rather than interleave) and, on a node
/// acting under a lease (`connect_fenced`), on the lease's token.
pub struct PgStore {
    /// Taken only by `drop`.
    writer: Option<PgJournal>,
    jobs: mpsc::Sender<Job>,
    /// The leases every commit is made under, when the node acts under some.
    fenced: Option<(Arc<LeaseKeeper>, Vec<String>)>,
}

/// Commits refused because the lease they were made under was lost (locally, before the
/// database was asked, or by the database in the commit's transaction), since the process
/// started.
pub fn fencing_refusals() -> u64 {
    REFUSALS.load(Ordering::Relaxed)
}

static REFUSALS: AtomicU64 = AtomicU64::new(0);

impl Drop for PgStore {
    /// The client's drop closes its connection by blocking on its runtime: done on a thread
    /// of its own, since the last handle may be dropped on an async runtime's worker.
    fn drop(&mut self) {
        if let Some(writer) = self.writer.take() {
            let _ = std::thread::spawn(move || drop(writer)).join();
        }
    }
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore").field("journal", &self.writer).finish_non_exhaustive()
    }
}

fn storage(error: PgError) -> JournalError {
    match error {
        PgError::Journal(error) => error,
        other => JournalError::Storage(other.to_string()),
    }
}

impl PgStore {
    /// Connects (and migrates) from threads of its own, so that it may be called anywhere.
    pub fn connect(url: &str) -> Result<PgStore, PgError> {
        PgStore::connect_writer(url, None, 1)
    }

    /// `connect` with `readers` connections serving reads at once (queries from many API
    /// requests on a node), 1 to 64.
    pub fn connect_pooled(url: &str, readers: usize) -> Result<PgStore, PgError> {
        PgStore::connect_writer(url, None, readers)
    }

    /// `connect_pooled` for a node of several sharing the journal: its writer's connection
    /// holds nothing (a transaction, the journal's turn) for longer than `bound` once its
    /// node stops answering, and waits for a lock at most that long.
    pub fn connect_node(url: &str, readers: usize, bound: std::time::Duration) -> Result<PgStore, PgError> {
        PgStore::connect_writer(url, Some(bound), readers)
    }

    fn connect_writer(url: &str, idle: Option<std::time::Duration>, readers: usize) -> Result<PgStore, PgError> {
        if !(1..=64).contains(&readers) {
            return Err(PgError::Invalid(format!("{readers} reader connections: 1 to 64")));
        }
        let owned = url.to_owned();
        let connect = || match idle {
            Some(idle) => PgJournal::connect_bounded(&owned, idle),
            None => PgJournal::connect(&owned),
        };
        let writer = std::thread::scope(|scope| scope.spawn(connect).join())
            .map_err(|_| PgError::Unavailable("the connecting thread panicked".into()))??;
        let (jobs, queue) = mpsc::channel::<Job>();
        // The readers take jobs from one queue: whichever is free answers the next read.
        let queue = Arc::new(std::sync::Mutex::new(queue));
        let (ready, connected) = mpsc::sync_channel(readers);
        for n in 0..readers {
            let (owned, queue, ready) = (url.to_owned(), Arc::clone(&queue), ready.clone());
            std::thread::Builder::new()
                .name(format!("journal-pg-reader-{n}"))
                .spawn(move || match PgJournal::connect(&owned) {
                    Ok(reader) => {
                        let _ = ready.send(Ok(()));
                        drop(ready);
                        loop {
                            let job = queue.lock().unwrap_or_else(std::sync::PoisonError::into_inner).recv();
                            match job {
                                Ok(job) => job(&reader),
                                Err(_) => break,
                            }
                        }
                    }
                    Err(error) => {
                        let _ = ready.send(Err(error));
                    }
                })
                .map_err(|e| PgError::Unavailable(format!("cannot start a reader thread: {e}")))?;
        }
        for _ in 0..readers {
            connected.recv().map_err(|_| PgError::Unavailable("a reader thread ended".into()))??;
        }
        Ok(PgStore { writer: Some(writer), jobs, fenced: None })
    }

    /// A store whose every commit is made under lease `lease`, kept by `keeper`: refused
    /// before the database is asked once the keeper cannot prove the lease is still held,
    /// and by the database when its token is no longer the lease's.
    /// The writer's transactions left idle for the lease's time (its node frozen mid-append)
    /// are ended by the server, so they hold up no other node's appends for longer.
    pub fn connect_fenced(url: &str, keeper: Arc<LeaseKeeper>, lease: &str) -> Result<PgStore, PgError> {
        PgStore::connect_fenced_all(url, keeper, vec![lease.to_owned()], 1)
    }

    /// `connect_fenced` under every lease of `leases` at once (a node acting as coordinator
    /// and for some rails), with `readers` reader connections.
    pub fn connect_fenced_all(
        url: &str,
        keeper: Arc<LeaseKeeper>,
        leases: Vec<String>,
        readers: usize,
    ) -> Result<PgStore, PgError> {
        let mut store = PgStore::connect_writer(url, Some(keeper.ttl()), readers)?;
        store.fenced = Some((keeper, leases));
        Ok(store)
    }

    /// Runs `read` on the reader thread and waits for its answer.
    fn writer(&self) -> &PgJournal {
        self.writer.as_ref().expect("taken only by drop")
    }

    /// A read that fails because the connection broke (the server restarted) is made once
    /// more on a new connection: reads change nothing, so trying again is safe.
    fn read<T: Send + 'static>(
        &self,
        read: impl Fn(&PgJournal) -> Result<T, PgError> + Send + 'static,
    ) -> Result<T, JournalError> {
        let (answer, answered) = mpsc::sync_channel(1);
        self.jobs
            .send(Box::new(move |journal: &PgJournal| {
                let outcome = match read(journal) {
                    Err(PgError::Unavailable(_)) => read(journal),
                    outcome => outcome,
                };
                let _ = answer.send(outcome);
            }))
            .map_err(|_| JournalError::Closed)?;
        answered.recv().map_err(|_| JournalError::Closed)?.map_err(storage)
    }
}

impl Store for PgStore {
    fn tip(&self) -> Result<Tip, JournalError> {
        self.read(PgJournal::tip)
    }

    /// On the journal's writer thread: conditioned on the tip the writer knows.
    fn commit(
        &self,
        tip: Tip,
        writes: &[Write<'_>],
        frame_bytes_max: usize,
    ) -> Result<(Vec<Appended>, Tip), JournalError> {
        let mut fences = Vec::new();
        for lease in self.fenced.iter().flat_map(|(_, leases)| leases) {
            let keeper = &self.fenced.as_ref().expect("leases come with their keeper").0;
            match keeper.fence(lease) {
                Some(fence) => fences.push(fence),
                None => {
                    REFUSALS.fetch_add(1, Ordering::Relaxed);
                    return Err(JournalError::Storage(format!(
                        "fenced: this node no longer surely holds lease {lease}; nothing was appended"
                    )));
                }
            }
        }
        let conditions = Conditions { fences: &fences, expected_tip: Some(tip.0) };
        let outcome = self.writer().commit_group(&conditions, writes, frame_bytes_max);
        if let Err(PgError::Fenced { .. }) = &outcome {
            REFUSALS.fetch_add(1, Ordering::Relaxed);
        }
        outcome.map_err(storage)
    }

    /// On the journal's writer thread, on the writer's connection (the turn is its session's).
    fn begin_turn(&self) -> Result<Tip, JournalError> {
        self.writer().begin_turn().map_err(storage)
    }

    fn end_turn(&self) -> Result<(), JournalError> {
        self.writer().end_turn().map_err(storage)
    }

    /// A third of the connection's bound: a holder waiting for its engine stays well clear
    /// of being taken for a frozen one.
    fn keep_turn_every(&self) -> Option<std::time::Duration> {
        self.writer().bound().map(|bound| bound / 3)
    }

    fn keep_turn(&self) -> Result<(), JournalError> {
        self.writer().keep_turn().map_err(storage)
    }

    fn write_snapshot(&self, seq: u64, parts: &[Vec<u8>], kept: usize) -> Result<(), JournalError> {
        let kept = i64::try_from(kept).unwrap_or(i64::MAX);
        self.writer().write_snapshot_keeping(seq, parts, kept).map_err(storage)
    }

    fn latest_snapshot(&self) -> Result<Option<Snapshot>, JournalError> {
        self.read(PgJournal::latest_snapshot)
    }

    fn read_range(&self, from: u64, count_max: usize) -> Result<Vec<Record>, JournalError> {
        self.read(move |journal| journal.read_range(from, count_max))
    }

    fn idempotency(&self, merchant: &str, key: &str) -> Result<Option<IdempotencyEntry>, JournalError> {
        let (merchant, key) = (merchant.to_owned(), key.to_owned());
        self.read(move |journal| journal.idempotency(&merchant, &key))
    }

    fn history_many(&self, keys: &[Vec<u8>]) -> Result<Vec<Option<Vec<u8>>>, JournalError> {
        let keys = keys.to_vec();
        self.read(move |journal| journal.history_many(&keys))
    }

    fn history_scan(
        &self,
        prefix: &[u8],
        after: Option<&[u8]>,
        count_max: usize,
    ) -> Result<Vec<HistoryEntry>, JournalError> {
        let (prefix, after) = (prefix.to_vec(), after.map(<[u8]>::to_vec));
        self.read(move |journal| journal.history_scan(&prefix, after.as_deref(), count_max))
    }

    fn history_keys_many(&self, prefixes: &[Vec<u8>], count_max: usize) -> Result<Vec<Vec<Vec<u8>>>, JournalError> {
        let prefixes = prefixes.to_vec();
        self.read(move |journal| journal.history_keys_many(&prefixes, count_max))
    }
}

/// The smallest key above every key starting with `prefix` (`None`: there is none).
pub(crate) fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_prefix_ends_before_the_next_prefix() {
        assert_eq!(super::prefix_end(b"p\x01"), Some(b"p\x02".to_vec()));
        assert_eq!(super::prefix_end(b"p\xff\xff"), Some(b"q".to_vec()));
        assert_eq!(super::prefix_end(b"\xff"), None);
        assert_eq!(super::prefix_end(b""), None);
    }
}
