//! The journal's single writer thread: it drains the append queue, groups what it finds into
//! one durable transaction of its store, and only then answers each caller.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::Receiver;

use crate::record::HASH_LEN;
use crate::store::{Store, Write};
use crate::{Appended, Claim, HistoryOp, JournalError};

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

pub(crate) struct Writer {
    pub(crate) store: Arc<dyn Store>,
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

    /// Writes one group in one durable transaction of the store; claims already taken are
    /// answered with the original entry and add no records.
    fn write_group(&mut self, requests: &[Write<'_>]) -> Result<Vec<Appended>, JournalError> {
        self.injected_failure()?;
        let (outcomes, tip) = self.store.commit((self.seq, self.hash), requests, self.frame_bytes_max)?;
        (self.seq, self.hash) = tip;
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
        self.store.write_snapshot(seq, state, self.snapshots_kept)
    }
}
