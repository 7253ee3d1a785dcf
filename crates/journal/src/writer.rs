//! The journal's single writer thread: it drains the append queue, groups what it finds into
//! one redb transaction, commits it durably, and only then answers each caller.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::Receiver;

use redb::{Database, Durability, ReadableTable, ReadableTableMetadata};

use crate::record::{self, HASH_LEN};
use crate::{Appended, Claim, IDEMPOTENCY, IdempotencyEntry, JournalError, RECORDS, SNAPSHOTS};

pub(crate) enum Request {
    Append { payloads: Vec<Vec<u8>>, claim: Option<Claim>, reply: oneshot::Sender<Result<Appended, JournalError>> },
    Snapshot { seq: u64, state: Vec<u8>, reply: oneshot::Sender<Result<(), JournalError>> },
}

impl Request {
    fn records(&self) -> usize {
        match self {
            Request::Append { payloads, .. } => payloads.len(),
            Request::Snapshot { .. } => 0,
        }
    }
}

type AppendRequest = (Vec<Vec<u8>>, Option<Claim>, oneshot::Sender<Result<Appended, JournalError>>);

pub(crate) struct Writer {
    pub(crate) db: Arc<Database>,
    pub(crate) receiver: Receiver<Request>,
    /// The last durable record: the chain continues from here.
    pub(crate) seq: u64,
    pub(crate) hash: [u8; HASH_LEN],
    pub(crate) group_records_max: usize,
    pub(crate) snapshots_kept: usize,
    pub(crate) durable_tip: Arc<AtomicU64>,
    pub(crate) poisoned: Arc<AtomicBool>,
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
            let mut group = vec![first];
            let mut records = group[0].records();
            while records < self.group_records_max {
                match self.receiver.try_recv() {
                    Ok(request @ Request::Snapshot { .. }) => {
                        carried = Some(request);
                        break;
                    }
                    Ok(request) => {
                        records += request.records();
                        group.push(request);
                    }
                    Err(_) => break,
                }
            }
            let appends: Vec<AppendRequest> = group
                .into_iter()
                .map(|request| match request {
                    Request::Append { payloads, claim, reply } => (payloads, claim, reply),
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
        let requests: Vec<(&[Vec<u8>], Option<&Claim>)> =
            appends.iter().map(|(p, c, _)| (p.as_slice(), c.as_ref())).collect();
        match self.guarded(|w| w.write_group(&requests)) {
            Ok(outcomes) => {
                self.durable_tip.store(self.seq, Ordering::Release);
                for ((_, _, reply), outcome) in appends.into_iter().zip(outcomes) {
                    let _ = reply.send(Ok(outcome));
                }
            }
            Err(error) => {
                (self.seq, self.hash) = (seq_before, hash_before);
                for (_, _, reply) in appends {
                    let _ = reply.send(Err(error.clone()));
                }
            }
        }
    }

    fn write_group(&mut self, requests: &[(&[Vec<u8>], Option<&Claim>)]) -> Result<Vec<Appended>, JournalError> {
        let mut txn = self.db.begin_write()?;
        txn.set_durability(Durability::Immediate)?;
        let mut outcomes = Vec::with_capacity(requests.len());
        {
            let mut table = txn.open_table(RECORDS)?;
            let mut claims = txn.open_table(IDEMPOTENCY)?;
            for (payloads, claim) in requests {
                if let Some(claim) = claim {
                    let key = (claim.merchant.as_str(), claim.key.as_str());
                    let existing = claims.get(key)?.map(|v| decode_claim(v.value())).transpose()?;
                    if let Some(entry) = existing {
                        outcomes.push(Appended::Duplicate(entry));
                        continue;
                    }
                    claims.insert(key, encode_claim(claim).as_slice())?;
                }
                let first = self.seq + 1;
                for payload in payloads.iter() {
                    let seq = self.seq + 1;
                    let (value, hash) = record::encode(seq, &self.hash, payload);
                    table.insert(seq, value.as_slice())?;
                    (self.seq, self.hash) = (seq, hash);
                }
                outcomes.push(Appended::Committed { first, last: self.seq });
            }
        }
        txn.commit()?;
        Ok(outcomes)
    }

    fn snapshot(&mut self, seq: u64, state: &[u8]) -> Result<(), JournalError> {
        let mut txn = self.db.begin_write()?;
        txn.set_durability(Durability::Immediate)?;
        {
            let records = txn.open_table(RECORDS)?;
            let value = records.get(seq)?.ok_or(JournalError::Corrupt { seq, reason: "record is missing".into() })?;
            let prev = record::claimed_prev(seq, value.value())?;
            let record_hash = record::decode(seq, &prev, value.value())?.hash;
            drop(value);
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
