//! The embedded store: one redb file holding the records (as frames), the snapshots, the
//! idempotency index and the history store. Commits use `Durability::Immediate`.

use std::path::Path;
use std::sync::Arc;

use redb::{
    Database, Durability, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition, WriteTransaction,
};

use crate::record::{self, Frame, GENESIS, HASH_LEN};
use crate::store::{Store, Tip, Write};
use crate::{Appended, Claim, HistoryEntry, HistoryOp, IdempotencyEntry, JournalError, Record, Snapshot};

const RECORDS: TableDefinition<u64, &[u8]> = TableDefinition::new("records");
/// A snapshot's header (see `record::encode_snapshot_header`), by the record it follows.
const SNAPSHOTS: TableDefinition<u64, &[u8]> = TableDefinition::new("snapshots");
/// A snapshot's parts, by (the record it follows, part number).
const SNAPSHOT_PARTS: TableDefinition<(u64, u32), &[u8]> = TableDefinition::new("snapshot_parts");
const IDEMPOTENCY: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("idempotency");
const HISTORY: TableDefinition<&[u8], &[u8]> = TableDefinition::new("history");

macro_rules! storage_error {
    ($($ty:ty),*) => {$(
        impl From<$ty> for JournalError {
            fn from(error: $ty) -> JournalError {
                JournalError::Storage(error.to_string())
            }
        }
    )*};
}
storage_error!(
    redb::Error,
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError,
    redb::SetDurabilityError
);

#[derive(Debug)]
pub(crate) struct RedbStore {
    db: Arc<Database>,
}

impl RedbStore {
    /// Opens (or creates) the file at `path`, its tables made, with `cache_bytes` of cache.
    pub(crate) fn open(path: &Path, cache_bytes: usize) -> Result<RedbStore, JournalError> {
        let db = Arc::new(redb::Builder::new().set_cache_size(cache_bytes).create(path)?);
        let txn = db.begin_write()?;
        txn.open_table(RECORDS)?;
        txn.open_table(SNAPSHOTS)?;
        txn.open_table(SNAPSHOT_PARTS)?;
        txn.open_table(IDEMPOTENCY)?;
        txn.open_table(HISTORY)?;
        txn.commit()?;
        Ok(RedbStore { db })
    }
}

impl Store for RedbStore {
    fn tip(&self) -> Result<Tip, JournalError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(RECORDS)?;
        let Some((key, value)) = table.last()? else { return Ok((0, GENESIS)) };
        let frame = Frame::open(key.value(), None, value.value())?;
        Ok((frame.last_seq(), frame.hash()))
    }

    fn commit(
        &self,
        tip: Tip,
        writes: &[Write<'_>],
        frame_bytes_max: usize,
    ) -> Result<(Vec<Appended>, Tip), JournalError> {
        let mut txn = self.db.begin_write()?;
        txn.set_durability(Durability::Immediate)?;
        let first = tip.0 + 1;
        let mut next = first;
        let mut outcomes = Vec::with_capacity(writes.len());
        let mut frame: Vec<&[u8]> = Vec::new();
        {
            let mut claims = txn.open_table(IDEMPOTENCY)?;
            // History writes of the whole group, applied in key order below (stable, so writes
            // to one key keep their order): neighbouring keys share B-tree pages.
            let mut group_ops: Vec<&HistoryOp> = Vec::new();
            for Write { payloads, claim, history: ops } in writes {
                if let Some(claim) = claim {
                    let key = (claim.merchant.as_str(), claim.key.as_str());
                    let existing = claims.get(key)?.map(|v| decode_claim(v.value())).transpose()?;
                    if let Some(entry) = existing {
                        outcomes.push(Appended::Duplicate(entry));
                        continue;
                    }
                    claims.insert(key, encode_claim(claim).as_slice())?;
                }
                group_ops.extend(ops.iter());
                let count = payloads.len() as u64;
                outcomes.push(Appended::Committed { first: next, last: next + count - 1 });
                next += count;
                frame.extend(payloads.iter().map(Vec::as_slice));
            }
            group_ops.sort_by(|a, b| a.key().cmp(b.key()));
            apply_history(&txn, &group_ops)?;
        }
        let mut hash = tip.1;
        {
            let mut table = txn.open_table(RECORDS)?;
            let mut frame_first = first;
            for chunk in record::frames(&frame, frame_bytes_max) {
                // Encoded straight into the page redb reserves: no intermediate buffer or copy.
                let mut slot = table.insert_reserve(frame_first, record::frame_len(chunk))?;
                hash = record::write_frame(slot.as_mut(), frame_first, &hash, chunk);
                frame_first += chunk.len() as u64;
            }
        }
        txn.commit()?;
        Ok((outcomes, (next - 1, hash)))
    }

    fn write_snapshot(&self, seq: u64, parts: &[Vec<u8>], kept: usize) -> Result<(), JournalError> {
        let mut txn = self.db.begin_write()?;
        txn.set_durability(Durability::Immediate)?;
        {
            let record_hash = hash_at(&txn.open_table(RECORDS)?, seq)?;
            let mut snapshots = txn.open_table(SNAPSHOTS)?;
            let mut stored = txn.open_table(SNAPSHOT_PARTS)?;
            // Written again at the same record (after a failed write, say): no stale parts.
            stored.retain_in((seq, 0)..=(seq, u32::MAX), |_, _| false)?;
            for (number, part) in (0u32..).zip(parts) {
                stored.insert((seq, number), part.as_slice())?;
            }
            snapshots.insert(seq, record::encode_snapshot_header(&record_hash, parts).as_slice())?;
            while snapshots.len()? > kept as u64 {
                if let Some((old, _)) = snapshots.pop_first()? {
                    let old = old.value();
                    stored.retain_in((old, 0)..=(old, u32::MAX), |_, _| false)?;
                }
            }
        }
        txn.commit()?;
        Ok(())
    }

    fn latest_snapshot(&self) -> Result<Option<Snapshot>, JournalError> {
        let txn = self.db.begin_read()?;
        let headers = txn.open_table(SNAPSHOTS)?;
        let Some((seq, header)) = headers.last()? else { return Ok(None) };
        let seq = seq.value();
        let (checksum, record_hash, count) = record::decode_snapshot_header(seq, header.value())?;
        let mut parts = Vec::with_capacity(count as usize);
        for entry in txn.open_table(SNAPSHOT_PARTS)?.range((seq, 0)..=(seq, u32::MAX))? {
            let (key, value) = entry?;
            if key.value().1 as usize != parts.len() {
                let reason = "a part is missing".to_owned();
                return Err(JournalError::CorruptSnapshot { seq, reason });
            }
            parts.push(value.value().to_vec());
        }
        record::check_snapshot_parts(seq, &checksum, count, &parts)?;
        if hash_at(&txn.open_table(RECORDS)?, seq)? != record_hash {
            return Err(JournalError::CorruptSnapshot {
                seq,
                reason: "it does not follow the journal's record".into(),
            });
        }
        Ok(Some(Snapshot { seq, parts }))
    }

    fn read_range(&self, from: u64, count_max: usize) -> Result<Vec<Record>, JournalError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(RECORDS)?;
        let Some(start) = table.range(..=from)?.next_back().transpose()?.map(|(key, _)| key.value()) else {
            return Ok(Vec::new());
        };
        let mut reader = record::RangeReader::new(start, hash_before(&table, start)?, from, count_max);
        for entry in table.range(start..)? {
            let (key, value) = entry?;
            if reader.frame(key.value(), value.value())? {
                break;
            }
        }
        Ok(reader.records())
    }

    fn idempotency(&self, merchant: &str, key: &str) -> Result<Option<IdempotencyEntry>, JournalError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(IDEMPOTENCY)?;
        let value = table.get((merchant, key))?;
        value.map(|v| decode_claim(v.value())).transpose()
    }

    fn history_many(&self, keys: &[Vec<u8>]) -> Result<Vec<Option<Vec<u8>>>, JournalError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(HISTORY)?;
        keys.iter().map(|key| Ok(table.get(key.as_slice())?.map(|v| v.value().to_vec()))).collect()
    }

    fn history_scan(
        &self,
        prefix: &[u8],
        after: Option<&[u8]>,
        count_max: usize,
    ) -> Result<Vec<HistoryEntry>, JournalError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(HISTORY)?;
        let mut out = Vec::new();
        let range = match after {
            Some(after) => table.range::<&[u8]>((std::ops::Bound::Excluded(after), std::ops::Bound::Unbounded))?,
            None => table.range::<&[u8]>(prefix..)?,
        };
        for entry in range {
            let (key, value) = entry?;
            if !key.value().starts_with(prefix) || out.len() >= count_max {
                break;
            }
            out.push((key.value().to_vec(), value.value().to_vec()));
        }
        Ok(out)
    }

    /// The prefixes are looked up in key order by one cursor that walks forward a few keys to
    /// the next prefix and seeks only when that is further: a batch's references (one merchant,
    /// often numbered) sit close together, so most lookups cost a step in a leaf, not a descent
    /// from the root.
    fn history_keys_many(&self, prefixes: &[Vec<u8>], count_max: usize) -> Result<Vec<Vec<Vec<u8>>>, JournalError> {
        /// Keys walked past before a seek is cheaper.
        const WALK_MAX: usize = 8;
        let txn = self.db.begin_read()?;
        let table = txn.open_table(HISTORY)?;
        let seek = |prefix: &[u8]| -> Result<Cursor, JournalError> {
            let mut range = table.range::<&[u8]>(prefix..)?;
            let at = next_key(&mut range)?;
            Ok(Cursor { range, at })
        };
        let mut order: Vec<usize> = (0..prefixes.len()).collect();
        order.sort_unstable_by(|a, b| prefixes[*a].cmp(&prefixes[*b]));
        let mut found = vec![Vec::new(); prefixes.len()];
        let mut cursor: Option<Cursor> = None;
        let mut previous: Option<usize> = None;
        for i in order {
            let prefix = prefixes[i].as_slice();
            if let Some(p) = previous
                && prefixes[p] == prefix
            {
                found[i] = found[p].clone();
                continue;
            }
            let mut walk = match cursor.take() {
                // Unless the previous prefix starts this one: its keys, taken, may start with it too.
                Some(walk) if previous.is_some_and(|p| !prefix.starts_with(&prefixes[p])) => walk,
                _ => seek(prefix)?,
            };
            let mut steps = 0;
            while walk.at.as_deref().is_some_and(|key| key < prefix) {
                if steps == WALK_MAX {
                    walk = seek(prefix)?;
                    break;
                }
                walk.at = next_key(&mut walk.range)?;
                steps += 1;
            }
            while let Some(key) = walk.at.take_if(|key| key.starts_with(prefix) && found[i].len() < count_max) {
                found[i].push(key);
                walk.at = next_key(&mut walk.range)?;
            }
            cursor = Some(walk);
            previous = Some(i);
        }
        Ok(found)
    }
}

/// A forward walk over the history table and the key it stands on (`None`: past the end).
struct Cursor {
    range: redb::Range<'static, &'static [u8], &'static [u8]>,
    at: Option<Vec<u8>>,
}

fn next_key(range: &mut redb::Range<'static, &'static [u8], &'static [u8]>) -> Result<Option<Vec<u8>>, JournalError> {
    Ok(match range.next() {
        Some(entry) => Some(entry?.0.value().to_vec()),
        None => None,
    })
}

fn apply_history(txn: &WriteTransaction, ops: &[&HistoryOp]) -> Result<(), JournalError> {
    let mut history = txn.open_table(HISTORY)?;
    for op in ops {
        match op {
            HistoryOp::Put { key, value } => {
                history.insert(key.as_slice(), value.as_slice())?;
            }
            HistoryOp::Add { key, amount } => {
                let current = history.get(key.as_slice())?.map_or(0, |v| crate::decode_counter(v.value()));
                let sum = current.saturating_add(*amount).to_le_bytes();
                history.insert(key.as_slice(), sum.as_slice())?;
            }
        }
    }
    Ok(())
}

fn encode_claim(claim: &Claim) -> Vec<u8> {
    let mut value = Vec::with_capacity(48);
    value.extend_from_slice(&claim.batch.to_le_bytes());
    value.extend_from_slice(&claim.body_hash);
    value
}

fn decode_claim(value: &[u8]) -> Result<IdempotencyEntry, JournalError> {
    let corrupt = || JournalError::Storage("idempotency entry has the wrong length".into());
    let batch = value.get(..16).and_then(|b| b.try_into().ok()).map(u128::from_le_bytes).ok_or_else(corrupt)?;
    let body_hash = value.get(16..48).and_then(|b| b.try_into().ok()).ok_or_else(corrupt)?;
    Ok(IdempotencyEntry { batch, body_hash })
}

fn missing(seq: u64) -> JournalError {
    JournalError::Corrupt { seq, reason: "record is missing from the chain".into() }
}

/// The chain hash just before the frame that starts at `start`: the genesis hash, or the last
/// hash of the frame before it (whose own records are verified on the way).
fn hash_before(table: &impl ReadableTable<u64, &'static [u8]>, start: u64) -> Result<[u8; HASH_LEN], JournalError> {
    if start == 1 {
        return Ok(GENESIS);
    }
    let (key, value) = table.range(..start)?.next_back().transpose()?.ok_or_else(|| missing(start - 1))?;
    let frame = Frame::open(key.value(), None, value.value())?;
    if frame.last_seq() != start - 1 {
        return Err(missing(start - 1));
    }
    Ok(frame.hash())
}

/// The hash of the frame holding record `seq`: what a snapshot taken after `seq` is tied to.
fn hash_at(table: &impl ReadableTable<u64, &'static [u8]>, seq: u64) -> Result<[u8; HASH_LEN], JournalError> {
    let (key, value) = table.range(..=seq)?.next_back().transpose()?.ok_or_else(|| missing(seq))?;
    let frame = Frame::open(key.value(), None, value.value())?;
    if frame.last_seq() < seq {
        return Err(missing(seq));
    }
    Ok(frame.hash())
}
