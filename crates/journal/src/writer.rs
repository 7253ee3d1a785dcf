//! The journal's single writer thread: it drains the append queue, groups what it finds into
//! one redb transaction, commits it durably, and only then answers each caller.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::Receiver;

use redb::{Database, Durability, ReadableTable, ReadableTableMetadata};

use crate::record::{self, HASH_LEN};
use crate::{Appended, Claim, HISTORY, HistoryOp, IDEMPOTENCY, IdempotencyEntry, JournalError, RECORDS, SNAPSHOTS};

pub(crate) enum Request {
    Append {
        payloads: Vec<Vec<u8>>,
        claim: Option<Claim>,
        history: Vec<HistoryOp>,
        reply: oneshot::Sender<Result<Appended, JournalError>>,
    },
    Snapshot {
        seq: u64,
        state: Vec<u8>,
        reply: oneshot::Sender<Result<(), JournalError>>,
    },
}

impl Request {
    fn records(&self) -> usize {
        match self {
            Request::Append { payloads, .. } => payloads.len(),
            Request::Snapshot { .. } => 0,
        }
    }

    fn bytes(&self) -> usize {
        match self {
            Request::Append { payloads, .. } => payloads.iter().map(Vec::len).sum(),
            Request::Snapshot { .. } => 0,
        }
    }
}

struct AppendRequest {
    payloads: Vec<Vec<u8>>,
    claim: Option<Claim>,
    history: Vec<HistoryOp>,
    reply: oneshot::Sender<Result<Appended, JournalError>>,
}

/// What one request of a group asks the write transaction to do.
struct Write<'a> {
    payloads: &'a [Vec<u8>],
    claim: Option<&'a Claim>,
    history: &'a [HistoryOp],
}

pub(crate) struct Writer {
    pub(crate) db: Arc<Database>,
    pub(crate) receiver: Receiver<Request>,
    /// The last durable record: the chain continues from here.
    pub(crate) seq: u64,
    pub(crate) hash: [u8; HASH_LEN],
    pub(crate) group_records_max: usize,
    pub(crate) group_bytes_max: usize,
    pub(crate) frame_bytes_max: usize,
    pub(crate) snapshots_kept: usize,
    pub(crate) durable_tip: Arc<AtomicU64>,
    pub(crate) poisoned: Arc<AtomicBool>,
    /// Commits left before an injected failure (`u64::MAX`: never); see `Journal::fail_after`.
    pub(crate) commits_until_failure: Arc<AtomicU64>,
}

impl Writer {
    pub(crate) fn run(mut self) {
        let mut carried: Option<Request> = None;
        loop {
            let first = match carried.take() {
                Some(request) => request,
                None => match self.receiver.recv() {
                    Ok(request) => request,
                    Err(_) => return, // every handle is gone
                },
            };
            if let Request::Snapshot { seq, state, reply } = first {
                // A snapshot past the tip is the caller's mistake, not a storage failure: it
                // must not poison the journal.
                let result = if seq == 0 || seq > self.seq {
                    Err(JournalError::SnapshotBeyondTip { seq, tip: self.seq })
                } else {
                    self.guarded(|w| w.snapshot(seq, &state))
                };
                let _ = reply.send(result);
                continue;
            }
            // Group: everything already queued, up to the record limit; a snapshot request ends
            // the group and is served right after it, keeping order.
            let mut records = first.records();
            let mut bytes = first.bytes();
            let mut group = vec![first];
            while records < self.group_records_max && bytes < self.group_bytes_max {
                match self.receiver.try_recv() {
                    Ok(request @ Request::Snapshot { .. }) => {
                        carried = Some(request);
                        break;
                    }
                    Ok(request) => {
                        records += request.records();
                        bytes += request.bytes();
                        group.push(request);
                    }
                    Err(_) => break,
                }
            }
            let appends: Vec<AppendRequest> = group
                .into_iter()
                .map(|request| match request {
                    Request::Append { payloads, claim, history, reply } => {
                        AppendRequest { payloads, claim, history, reply }
                    }
                    Request::Snapshot { .. } => unreachable!("snapshots are carried, not grouped"),
                })
                .collect();
            self.commit_group(appends);
        }
    }

    /// Runs a write unless the journal is poisoned; a failure poisons it.
    fn guarded<T>(&mut self, write: impl FnOnce(&mut Self) -> Result<T, JournalError>) -> Result<T, JournalError> {
        if self.poisoned.load(Ordering::Acquire) {
            return Err(JournalError::Poisoned);
        }
        let result = write(self);
        if result.is_err() {
            // After a failed commit nobody knows what reached the disk (fsync errors are not
            // retryable), so refuse every later write; reopening recovers from the file.
            self.poisoned.store(true, Ordering::Release);
        }
        result
    }

    fn commit_group(&mut self, appends: Vec<AppendRequest>) {
        let (seq_before, hash_before) = (self.seq, self.hash);
        let requests: Vec<Write<'_>> = appends
            .iter()
            .map(|a| Write { payloads: &a.payloads, claim: a.claim.as_ref(), history: &a.history })
            .collect();
        let result = self.guarded(|w| w.write_group(&requests));
        drop(requests);
        match result {
            Ok(outcomes) => {
                self.durable_tip.store(self.seq, Ordering::Release);
                for (append, outcome) in appends.into_iter().zip(outcomes) {
                    let _ = append.reply.send(Ok(outcome));
                }
            }
            Err(error) => {
                (self.seq, self.hash) = (seq_before, hash_before);
                for append in appends {
                    let _ = append.reply.send(Err(error.clone()));
                }
            }
        }
    }

    /// Writes one group as one frame in one durable transaction; claims already taken are
    /// answered with the original entry and add no records.
    fn write_group(&mut self, requests: &[Write<'_>]) -> Result<Vec<Appended>, JournalError> {
        self.injected_failure()?;
        let mut txn = self.db.begin_write()?;
        txn.set_durability(Durability::Immediate)?;
        let first = self.seq + 1;
        let mut next = first;
        let mut outcomes = Vec::with_capacity(requests.len());
        let mut frame: Vec<&[u8]> = Vec::new();
        {
            let mut claims = txn.open_table(IDEMPOTENCY)?;
            // History writes of the whole group, applied in key order below (stable, so writes
            // to one key keep their order): neighbouring keys share B-tree pages.
            let mut group_ops: Vec<&HistoryOp> = Vec::new();
            for Write { payloads, claim, history: ops } in requests {
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
            let mut history = txn.open_table(HISTORY)?;
            for op in group_ops {
                match op {
                    HistoryOp::Put { key, value } => {
                        history.insert(key.as_slice(), value.as_slice())?;
                    }
                    HistoryOp::Add { key, amount } => {
                        let current = history.get(key.as_slice())?.map_or(0, |v| decode_counter(v.value()));
                        let sum = current.saturating_add(*amount).to_le_bytes();
                        history.insert(key.as_slice(), sum.as_slice())?;
                    }
                }
            }
        }
        let mut hash = self.hash;
        {
            let mut table = txn.open_table(RECORDS)?;
            let mut frame_first = first;
            for chunk in frames(&frame, self.frame_bytes_max) {
                // Encoded straight into the page redb reserves: no intermediate buffer or copy.
                let mut slot = table.insert_reserve(frame_first, record::frame_len(chunk))?;
                hash = record::write_frame(slot.as_mut(), frame_first, &hash, chunk);
                frame_first += chunk.len() as u64;
            }
        }
        txn.commit()?;
        (self.seq, self.hash) = (next - 1, hash);
        Ok(outcomes)
    }

    /// An injected failure behaves like a failed fsync: nothing of this commit is written and
    /// the journal is poisoned by `guarded`.
    fn injected_failure(&self) -> Result<(), JournalError> {
        let left = self.commits_until_failure.load(Ordering::Acquire);
        if left == u64::MAX {
            return Ok(());
        }
        if left == 0 {
            return Err(JournalError::Storage("injected commit failure".into()));
        }
        self.commits_until_failure.store(left - 1, Ordering::Release);
        Ok(())
    }

    fn snapshot(&mut self, seq: u64, state: &[u8]) -> Result<(), JournalError> {
        let mut txn = self.db.begin_write()?;
        txn.set_durability(Durability::Immediate)?;
        {
            let record_hash = crate::hash_at(&txn.open_table(RECORDS)?, seq)?;
            let mut snapshots = txn.open_table(SNAPSHOTS)?;
            snapshots.insert(seq, record::encode_snapshot(&record_hash, state).as_slice())?;
            while snapshots.len()? > self.snapshots_kept as u64 {
                snapshots.pop_first()?;
            }
        }
        txn.commit()?;
        Ok(())
    }
}

/// Cuts a commit's records into runs whose encoded frame is at most `bytes_max` (at least one
/// record each).
fn frames<'a, 'b>(records: &'b [&'a [u8]], bytes_max: usize) -> impl Iterator<Item = &'b [&'a [u8]]> {
    let mut rest = records;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let mut bytes = record::frame_len(&[]);
        let mut take = 0;
        while take < rest.len() {
            let next = bytes + record::RECORD_HEADER + rest[take].len();
            if take > 0 && next > bytes_max {
                break;
            }
            bytes = next;
            take += 1;
        }
        let (chunk, tail) = rest.split_at(take);
        rest = tail;
        Some(chunk)
    })
}

pub(crate) fn decode_counter(value: &[u8]) -> u128 {
    value.try_into().map(u128::from_le_bytes).unwrap_or(0)
}

fn encode_claim(claim: &Claim) -> Vec<u8> {
    let mut value = Vec::with_capacity(48);
    value.extend_from_slice(&claim.batch.to_le_bytes());
    value.extend_from_slice(&claim.body_hash);
    value
}

pub(crate) fn decode_claim(value: &[u8]) -> Result<IdempotencyEntry, JournalError> {
    let corrupt = || JournalError::Storage("idempotency entry has the wrong length".into());
    let batch = value.get(..16).and_then(|b| b.try_into().ok()).map(u128::from_le_bytes).ok_or_else(corrupt)?;
    let body_hash = value.get(16..48).and_then(|b| b.try_into().ok()).ok_or_else(corrupt)?;
    Ok(IdempotencyEntry { batch, body_hash })
}

#[cfg(test)]
mod tests {
    #[test]
    fn frames_respect_the_size_limit_and_keep_every_record_in_order() {
        let records: Vec<Vec<u8>> = (0..50).map(|i| vec![0; (i * 37) % 300]).collect();
        let refs: Vec<&[u8]> = records.iter().map(Vec::as_slice).collect();
        for limit in [1, 100, 500, 4096] {
            let chunks: Vec<_> = super::frames(&refs, limit).collect();
            assert_eq!(chunks.concat(), refs, "limit {limit}");
            for chunk in &chunks {
                assert!(chunk.len() == 1 || crate::record::frame_len(chunk) <= limit, "limit {limit}");
            }
        }
    }
}
