//! railyard's durable event journal, on redb.
//!
//! Appends from many callers are grouped into one redb write transaction committed with
//! `Durability::Immediate` (group commit); each caller learns its sequence numbers only after
//! that commit returned, so an acknowledged record survives a crash. Records are hash-chained
//! (see `record`), reads verify the chain and fail loudly with the sequence number of the first
//! bad record, snapshots of derived state shorten recovery, and an idempotency index maps
//! (merchant, key) to a batch in the same commit as the batch's records.
//!
//! The journal stores opaque bytes: what a payload means is the caller's business.

mod history;
pub mod record;
mod redb_store;
pub mod store;
mod writer;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, SyncSender, TrySendError};
use std::thread::JoinHandle;

pub use record::Record;
pub use store::Store;
use writer::{Request, Writer};

/// Limits; every one of them is a bound that gives backpressure or a clear error when reached.
#[derive(Clone, Debug)]
pub struct Config {
    /// Append requests waiting for the writer; a full queue makes `try_submit` say `Busy`.
    pub queue_depth: usize,
    /// Most records one commit groups together.
    pub group_records_max: usize,
    /// Most payload bytes one commit groups together (a single larger append commits alone).
    pub group_bytes_max: usize,
    /// Encoded bytes per stored frame: a commit is cut into frames of at most this size (a
    /// record larger than it gets a frame of its own). The default fills a 64 KiB redb page:
    /// one frame per commit (256 KiB at batch 1000) made redb allocate and zero a fresh buffer
    /// from the kernel on every commit, and frames of a 4 KiB page cost a B-tree insert and a
    /// hash finalisation each; 64 KiB frames measured best (see benches/journal_append).
    pub frame_bytes_max: usize,
    /// Most records in one append request.
    pub append_records_max: usize,
    /// Largest payload of one record.
    pub record_bytes_max: usize,
    /// Snapshots kept; older ones are deleted when a new one is written.
    pub snapshots_kept: usize,
    /// Records read per read transaction while replaying or verifying.
    pub read_chunk: usize,
    /// Bytes of the file redb keeps cached in memory. redb's own default (1 GiB) would let
    /// resident memory grow with the journal and history for as long as the service runs.
    /// The operating system's page cache sits behind it: at 1,000,000 payments the engine
    /// benchmark ran as fast with 4 MiB as with 16 or 64 MiB, and a cache fills as the file
    /// grows (16 MiB was a third of the engine's resident memory after a million payments).
    pub cache_bytes: usize,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            queue_depth: 4096,
            group_records_max: 8192,
            group_bytes_max: 8 << 20,
            frame_bytes_max: (64 << 10) - 128,
            append_records_max: 100_000,
            record_bytes_max: 1 << 20,
            snapshots_kept: 3,
            read_chunk: 4096,
            cache_bytes: 4 << 20,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum JournalError {
    #[error("journal record {seq} is corrupt: {reason}; restore the journal from a replica or backup")]
    Corrupt { seq: u64, reason: String },
    #[error("journal snapshot at {seq} is corrupt: {reason}")]
    CorruptSnapshot { seq: u64, reason: String },
    #[error("journal storage error: {0}")]
    Storage(String),
    #[error("a journal commit failed; the journal refuses writes until it is reopened and recovered")]
    Poisoned,
    #[error("the journal is closed")]
    Closed,
    #[error("the journal's append queue is full; retry later")]
    Busy,
    #[error("invalid append: {0}")]
    Invalid(String),
    #[error("snapshot at {seq} is beyond the journal tip {tip}")]
    SnapshotBeyondTip { seq: u64, tip: u64 },
}

/// An idempotency claim: the first append with this (merchant, key) records the batch; any
/// later one is answered with the original batch and body hash and appends nothing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claim {
    pub merchant: String,
    pub key: String,
    pub batch: u128,
    pub body_hash: [u8; 32],
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IdempotencyEntry {
    pub batch: u128,
    pub body_hash: [u8; 32],
}

/// A write to the history store, made in the same commit as the records it comes with: the
/// caller keeps there what has left its memory (finished work), keyed as it likes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HistoryOp {
    /// Sets `key` to `value`.
    Put { key: Vec<u8>, value: Vec<u8> },
    /// Adds `amount` to the little-endian u128 counter at `key` (absent counts as 0; a sum past
    /// u128::MAX saturates, which a caller adding money amounts never reaches).
    Add { key: Vec<u8>, amount: u128 },
}

impl HistoryOp {
    pub fn key(&self) -> &[u8] {
        match self {
            HistoryOp::Put { key, .. } | HistoryOp::Add { key, .. } => key,
        }
    }
}

/// A history store entry: key and value.
pub type HistoryEntry = (Vec<u8>, Vec<u8>);

/// One append: records, an optional idempotency claim, and history writes, all in one commit.
#[derive(Clone, Debug, Default)]
pub struct Append {
    pub payloads: Vec<Vec<u8>>,
    pub claim: Option<Claim>,
    pub history: Vec<HistoryOp>,
}

/// The outcome of an append, known only once it is durable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Appended {
    /// The records were committed with these sequence numbers (inclusive).
    Committed { first: u64, last: u64 },
    /// The claim's key was already taken; nothing was appended.
    Duplicate(IdempotencyEntry),
}

/// A pending append: wait for it on a thread, or `.await` it.
#[derive(Debug)]
pub struct Ticket(oneshot::Receiver<Result<Appended, JournalError>>);

impl Ticket {
    pub fn wait(self) -> Result<Appended, JournalError> {
        self.0.recv().map_err(|_| JournalError::Closed)?
    }
}

impl std::future::IntoFuture for Ticket {
    type Output = Result<Appended, JournalError>;
    type IntoFuture = std::pin::Pin<Box<dyn std::future::Future<Output = Self::Output> + Send>>;
    fn into_future(self) -> Self::IntoFuture {
        Box::pin(async move { self.0.await.map_err(|_| JournalError::Closed)? })
    }
}

/// The size a snapshot's part is best kept under (see `Replica::encode`): below glibc's
/// default mmap threshold (128 KiB) and within one 64 KiB store page.
pub const SNAPSHOT_PART_BYTES: usize = 60 << 10;

/// A snapshot of derived state taken after applying every record up to `seq`: its bytes in
/// parts, in order (see `Replica::encode`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    pub seq: u64,
    pub parts: Vec<Vec<u8>>,
}

/// Derived state that can be rebuilt from the journal: replaying the same records gives the
/// same state, so `encode` must be deterministic.
pub trait Replica: Sized {
    type Error: std::fmt::Display;
    /// What building the state needs besides the journal (its configuration); `()` if nothing.
    type Context;
    fn empty(context: &Self::Context) -> Self;
    fn apply(&mut self, seq: u64, payload: &[u8]) -> Result<(), Self::Error>;
    /// The state's bytes in parts, in order, each best kept under `SNAPSHOT_PART_BYTES`: a large
    /// state is then never one allocation of its whole size. (glibc's allocator raises its mmap
    /// threshold to the size of each large block freed, after which blocks up to that size come
    /// from the heap and fragment it: a service's resident memory then grows for ever.)
    fn encode(&self) -> Vec<Vec<u8>>;
    fn decode(parts: &[Vec<u8>], context: &Self::Context) -> Result<Self, Self::Error>;
}

#[derive(Debug, thiserror::Error)]
pub enum RecoverError {
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error("replaying record {seq} failed: {reason}")]
    Apply { seq: u64, reason: String },
    #[error("snapshot at {seq} does not decode: {reason}")]
    Snapshot { seq: u64, reason: String },
}

/// The result of recovery: the state after every record, and how it was reached.
#[derive(Debug)]
pub struct Recovered<R> {
    pub state: R,
    /// The last record applied (0 for an empty journal).
    pub seq: u64,
    pub snapshot_seq: Option<u64>,
    pub replayed: u64,
    /// The payload bytes of the records replayed after the snapshot.
    pub replayed_bytes: u64,
}

struct Inner {
    store: Arc<dyn Store>,
    config: Config,
    sender: Option<SyncSender<Request>>,
    writer: Option<JoinHandle<()>>,
    tip: Arc<AtomicU64>,
    poisoned: Arc<AtomicBool>,
    commits_until_failure: Arc<AtomicU64>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Closing the queue ends the writer once it has answered every queued request.
        self.sender.take();
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

/// A handle to an open journal; clones share the one writer.
#[derive(Clone)]
pub struct Journal {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal").field("tip", &self.tip()).finish_non_exhaustive()
    }
}

impl Journal {
    /// Opens (or creates) the journal in the redb file at `path` and checks its last record.
    pub fn open(path: impl AsRef<Path>, config: Config) -> Result<Journal, JournalError> {
        let store = redb_store::RedbStore::open(path.as_ref(), config.cache_bytes)?;
        Journal::with_store(Arc::new(store), config)
    }

    /// A journal on `store` (redb, PostgreSQL), its last record checked.
    pub fn with_store(store: Arc<dyn Store>, config: Config) -> Result<Journal, JournalError> {
        let (tip_seq, tip_hash) = store.tip()?;
        let tip = Arc::new(AtomicU64::new(tip_seq));
        let poisoned = Arc::new(AtomicBool::new(false));
        let commits_until_failure = Arc::new(AtomicU64::new(u64::MAX));
        let (sender, receiver) = mpsc::sync_channel(config.queue_depth);
        let writer = Writer {
            store: Arc::clone(&store),
            receiver,
            seq: tip_seq,
            hash: tip_hash,
            group_records_max: config.group_records_max,
            group_bytes_max: config.group_bytes_max,
            frame_bytes_max: config.frame_bytes_max,
            snapshots_kept: config.snapshots_kept,
            durable_tip: Arc::clone(&tip),
            poisoned: Arc::clone(&poisoned),
            commits_until_failure: Arc::clone(&commits_until_failure),
            in_turn: false,
        };
        let handle = std::thread::Builder::new()
            .name("journal-writer".into())
            .spawn(move || writer.run())
            .map_err(|error| JournalError::Storage(format!("cannot start the journal writer: {error}")))?;
        let inner =
            Inner { store, config, sender: Some(sender), writer: Some(handle), tip, poisoned, commits_until_failure };
        Ok(Journal { inner: Arc::new(inner) })
    }

    /// The highest durable sequence number (0 when empty).
    pub fn tip(&self) -> u64 {
        self.inner.tip.load(Ordering::Acquire)
    }

    /// Fault injection (for the simulator and fault tests): the commit after the next `commits`
    /// ones fails as a failed fsync would — nothing of it is written and the journal is
    /// poisoned until reopened.
    pub fn fail_after(&self, commits: u64) {
        self.inner.commits_until_failure.store(commits, Ordering::Release);
    }

    /// Whether a commit failed: every later write is refused until the journal is reopened.
    pub fn is_poisoned(&self) -> bool {
        self.inner.poisoned.load(Ordering::Acquire)
    }

    /// Appends one record and waits until it is durable.
    pub fn append(&self, payload: Vec<u8>) -> Result<u64, JournalError> {
        match self.submit(vec![payload], None)?.wait()? {
            Appended::Committed { first, .. } => Ok(first),
            Appended::Duplicate(_) => unreachable!("no claim was made"),
        }
    }

    /// Appends records atomically (all in one commit, consecutive sequence numbers) and waits.
    pub fn append_batch(&self, payloads: Vec<Vec<u8>>) -> Result<(u64, u64), JournalError> {
        match self.submit(payloads, None)?.wait()? {
            Appended::Committed { first, last } => Ok((first, last)),
            Appended::Duplicate(_) => unreachable!("no claim was made"),
        }
    }

    /// Queues an append, waiting for room in the queue; the ticket resolves once it is durable.
    pub fn submit(&self, payloads: Vec<Vec<u8>>, claim: Option<Claim>) -> Result<Ticket, JournalError> {
        self.submit_append(Append { payloads, claim, history: Vec::new() })
    }

    /// Queues an append with its history writes; they commit together or not at all (and
    /// not at all when the claim was already taken).
    pub fn submit_append(&self, append: Append) -> Result<Ticket, JournalError> {
        let (request, ticket) = self.request(append)?;
        self.sender()?.send(request).map_err(|_| JournalError::Closed)?;
        Ok(ticket)
    }

    /// Queues an append without waiting for room: a full queue is `Busy` (backpressure).
    pub fn try_submit(&self, payloads: Vec<Vec<u8>>, claim: Option<Claim>) -> Result<Ticket, JournalError> {
        let (request, ticket) = self.request(Append { payloads, claim, history: Vec::new() })?;
        self.sender()?.try_send(request).map_err(|error| match error {
            TrySendError::Full(_) => JournalError::Busy,
            TrySendError::Disconnected(_) => JournalError::Closed,
        })?;
        Ok(ticket)
    }

    fn sender(&self) -> Result<&SyncSender<Request>, JournalError> {
        if self.inner.poisoned.load(Ordering::Acquire) {
            return Err(JournalError::Poisoned);
        }
        self.inner.sender.as_ref().ok_or(JournalError::Closed)
    }

    fn request(&self, append: Append) -> Result<(Request, Ticket), JournalError> {
        let Append { payloads, claim, history } = append;
        let config = &self.inner.config;
        if payloads.is_empty() || payloads.len() > config.append_records_max {
            let max = config.append_records_max;
            return Err(JournalError::Invalid(format!("an append carries 1 to {max} records")));
        }
        if let Some(too_big) = payloads.iter().find(|p| p.len() > config.record_bytes_max) {
            let (len, max) = (too_big.len(), config.record_bytes_max);
            return Err(JournalError::Invalid(format!("a record of {len} bytes exceeds the {max}-byte limit")));
        }
        let (reply, receiver) = oneshot::channel();
        Ok((Request::Append { payloads, claim, history, reply }, Ticket(receiver)))
    }

    /// The tip as the store has it now: past `tip` when another node appended to a shared
    /// store (PostgreSQL) since this journal's last commit.
    pub fn stored_tip(&self) -> Result<u64, JournalError> {
        Ok(self.inner.store.tip()?.0)
    }

    /// Reads and verifies one record.
    pub fn read(&self, seq: u64) -> Result<Record, JournalError> {
        let mut records = self.read_range(seq, 1)?;
        records.pop().ok_or(JournalError::Invalid(format!("no record {seq}: the tip is {}", self.tip())))
    }

    /// Reads up to `count_max` records from `from` on, verifying each against the chain.
    pub fn read_range(&self, from: u64, count_max: usize) -> Result<Vec<Record>, JournalError> {
        if from == 0 {
            return Err(JournalError::Invalid("sequence numbers start at 1".into()));
        }
        self.inner.store.read_range(from, count_max)
    }

    /// Verifies the whole chain, from the first record to the tip; returns the record count.
    pub fn verify(&self) -> Result<u64, JournalError> {
        let mut next = 1;
        loop {
            let records = self.read_range(next, self.inner.config.read_chunk)?;
            let Some(last) = records.last() else { break };
            next = last.seq + 1;
        }
        let count = next - 1;
        let tip = self.inner.store.tip()?.0;
        if count != tip {
            return Err(missing(count + 1));
        }
        Ok(count)
    }

    /// The batch a (merchant, key) was first used for, if any.
    pub fn idempotency(&self, merchant: &str, key: &str) -> Result<Option<IdempotencyEntry>, JournalError> {
        self.inner.store.idempotency(merchant, key)
    }

    /// Stores a snapshot of derived state after record `seq`, and drops the oldest beyond
    /// `snapshots_kept`.
    pub fn write_snapshot(&self, seq: u64, parts: Vec<Vec<u8>>) -> Result<(), JournalError> {
        let (reply, receiver) = oneshot::channel();
        self.sender()?.send(Request::Snapshot { seq, parts, reply }).map_err(|_| JournalError::Closed)?;
        receiver.recv().map_err(|_| JournalError::Closed)?
    }

    /// `write_snapshot` for async callers: waits for the writer without blocking a thread.
    pub async fn write_snapshot_async(&self, seq: u64, parts: Vec<Vec<u8>>) -> Result<(), JournalError> {
        let (reply, receiver) = oneshot::channel();
        self.sender()?.send(Request::Snapshot { seq, parts, reply }).map_err(|_| JournalError::Closed)?;
        receiver.await.map_err(|_| JournalError::Closed)?
    }

    /// Takes this journal's turn on a store several processes append to (see
    /// `Store::begin_turn`) and returns the stored tip, which `tip` reports from now on: the
    /// caller applies the records up to it before deciding. A store one process writes has
    /// no turns (its tip, at once). Nothing is written; a failure does not poison the journal.
    pub async fn begin_turn(&self) -> Result<u64, JournalError> {
        let (reply, receiver) = oneshot::channel();
        self.sender()?.send(Request::BeginTurn { reply }).map_err(|_| JournalError::Closed)?;
        receiver.await.map_err(|_| JournalError::Closed)?
    }

    /// Gives the turn back, after the appends already asked for.
    pub fn end_turn(&self) -> Result<(), JournalError> {
        // Given back even from a poisoned journal: another writer may go on.
        let sender = self.inner.sender.as_ref().ok_or(JournalError::Closed)?;
        sender.send(Request::EndTurn).map_err(|_| JournalError::Closed)
    }

    /// The newest snapshot, verified against its checksum and against the record it follows.
    pub fn latest_snapshot(&self) -> Result<Option<Snapshot>, JournalError> {
        self.inner.store.latest_snapshot()
    }

    /// Rebuilds derived state: the latest snapshot, then every record after it, in order.
    pub fn recover<R: Replica<Context = ()>>(&self) -> Result<Recovered<R>, RecoverError> {
        self.recover_with(&())
    }

    /// `recover` for a state that needs a context (its configuration) to be built.
    pub fn recover_with<R: Replica>(&self, context: &R::Context) -> Result<Recovered<R>, RecoverError> {
        let (mut state, snapshot_seq) = match self.latest_snapshot()? {
            Some(snapshot) => {
                let state = R::decode(&snapshot.parts, context)
                    .map_err(|error| RecoverError::Snapshot { seq: snapshot.seq, reason: error.to_string() })?;
                (state, Some(snapshot.seq))
            }
            None => (R::empty(context), None),
        };
        let mut seq = snapshot_seq.unwrap_or(0);
        let (mut replayed, mut replayed_bytes) = (0, 0);
        loop {
            let records = self.read_range(seq + 1, self.inner.config.read_chunk)?;
            if records.is_empty() {
                break;
            }
            for record in records {
                state
                    .apply(record.seq, &record.payload)
                    .map_err(|error| RecoverError::Apply { seq: record.seq, reason: error.to_string() })?;
                seq = record.seq;
                replayed += 1;
                replayed_bytes += record.payload.len() as u64;
            }
        }
        Ok(Recovered { state, seq, snapshot_seq, replayed, replayed_bytes })
    }
}

fn missing(seq: u64) -> JournalError {
    JournalError::Corrupt { seq, reason: "record is missing from the chain".into() }
}

/// A history counter's value (a little-endian u128; anything else reads as 0).
pub(crate) fn decode_counter(value: &[u8]) -> u128 {
    value.try_into().map(u128::from_le_bytes).unwrap_or(0)
}
