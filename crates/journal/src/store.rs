//! Where a journal keeps its records: the interface every store implements (redb, the
//! embedded default; PostgreSQL in `journal-pg`). `Journal` owns what is common — the request
//! queue, grouping, tickets, poisoning, recovery — and asks its store for one durable
//! transaction per group and for reads.

use crate::record::HASH_LEN;
use crate::{Appended, Claim, HistoryEntry, HistoryOp, IdempotencyEntry, JournalError, Record, Snapshot};

/// The chain's end: the last record's sequence number (0: none) and the hash after it.
pub type Tip = (u64, [u8; HASH_LEN]);

/// What one append of a group asks the transaction to do.
#[derive(Clone, Copy, Debug)]
pub struct Write<'a> {
    pub payloads: &'a [Vec<u8>],
    pub claim: Option<&'a Claim>,
    pub history: &'a [HistoryOp],
}

/// A journal's storage. Every method is called from one thread at a time per journal for
/// writes (the writer's), and from any thread for reads: an implementation whose client cannot
/// run on an async runtime's worker thread moves the work to threads of its own.
pub trait Store: Send + Sync + 'static {
    /// The chain's end as stored, its last frame verified.
    fn tip(&self) -> Result<Tip, JournalError>;

    /// One durable transaction for a group of appends, continuing the chain from `tip`: each
    /// write's claim is taken in order (a claim already taken is answered with its entry, and
    /// that write adds nothing), then the records of the others as frames of at most
    /// `frame_bytes_max` encoded bytes, then their history operations (in key order). Returns
    /// each write's outcome and the new tip, only once the transaction is durable.
    fn commit(
        &self,
        tip: Tip,
        writes: &[Write<'_>],
        frame_bytes_max: usize,
    ) -> Result<(Vec<Appended>, Tip), JournalError>;

    /// Takes this writer's turn on a journal several processes append to (PostgreSQL): until
    /// `end_turn` no other writer appends, so what the caller decides from the records up to
    /// the tip returned (others' appends included) is appended right after them. Waiting for
    /// a turn another writer holds is bounded: past the bound this is an error and nothing is
    /// held. A store only one process writes (redb) has no turns: this is its tip.
    fn begin_turn(&self) -> Result<Tip, JournalError> {
        self.tip()
    }

    /// Gives the turn back (nothing is written).
    fn end_turn(&self) -> Result<(), JournalError> {
        Ok(())
    }

    /// How often a writer holding a turn, and given nothing to do, says so (`keep_turn`): a
    /// store may end the turn of a writer silent for longer, as it would a frozen one's.
    /// `None`: never needed.
    fn keep_turn_every(&self) -> Option<std::time::Duration> {
        None
    }

    fn keep_turn(&self) -> Result<(), JournalError> {
        Ok(())
    }

    /// Stores a snapshot of derived state after record `seq` (at most the tip), keeping the
    /// newest `kept`.
    fn write_snapshot(&self, seq: u64, parts: &[Vec<u8>], kept: usize) -> Result<(), JournalError>;

    /// The newest snapshot, verified against its checksum and the record it follows.
    fn latest_snapshot(&self) -> Result<Option<Snapshot>, JournalError>;

    /// Up to `count_max` records from `from` (≥ 1) on, each frame verified against the chain.
    fn read_range(&self, from: u64, count_max: usize) -> Result<Vec<Record>, JournalError>;

    fn idempotency(&self, merchant: &str, key: &str) -> Result<Option<IdempotencyEntry>, JournalError>;

    /// The values at `keys`, in their order.
    fn history_many(&self, keys: &[Vec<u8>]) -> Result<Vec<Option<Vec<u8>>>, JournalError>;

    /// Up to `count_max` entries whose key starts with `prefix` and sorts after `after` (the
    /// whole prefix when `None`), in key order.
    fn history_scan(
        &self,
        prefix: &[u8],
        after: Option<&[u8]>,
        count_max: usize,
    ) -> Result<Vec<HistoryEntry>, JournalError>;

    /// For each prefix, up to `count_max` keys that start with it, in key order.
    fn history_keys_many(&self, prefixes: &[Vec<u8>], count_max: usize) -> Result<Vec<Vec<Vec<u8>>>, JournalError>;
}
