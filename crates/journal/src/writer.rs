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
        parts: Vec<Vec<u8>>,
        reply: oneshot::Sender<Result<(), JournalError>>,
    },
    /// Take the turn (see `Store::begin_turn`); the answer is the stored tip, from which the
    /// appends that follow continue.
    BeginTurn {
        reply: oneshot::Sender<Result<u64, JournalError>>,
    },
    EndTurn,
}

impl Request {
    fn records(&self) -> usize {
        match self {
            Request::Append { payloads, .. } => payloads.len(),
            _ => 0,
        }
    }

    fn bytes(&self) -> usize {
        match self {
            Request::Append { payloads, .. } => payloads.iter().map(Vec::len).sum(),
            _ => 0,
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
    /// Whether this writer holds the store's turn.
    pub(crate) in_turn: bool,
}

impl Writer {
    pub(crate) fn run(mut self) {
        let mut carried: Option<Request> = None;
        loop {
            let first = match carried.take() {
                Some(request) => request,
                None => match self.next_request() {
                    Some(request) => request,
                    None => return, // every handle is gone
                },
            };
            let first = match first {
                Request::Snapshot { seq, parts, reply } => {
                    // A snapshot past the tip is the caller's mistake, not a storage failure:
                    // it must not poison the journal.
                    let result = if seq == 0 || seq > self.seq {
                        Err(JournalError::SnapshotBeyondTip { seq, tip: self.seq })
                    } else {
                        self.guarded(|w| w.snapshot(seq, &parts))
                    };
                    let _ = reply.send(result);
                    continue;
                }
                Request::BeginTurn { reply } => {
                    let _ = reply.send(self.begin_turn());
                    continue;
                }
                Request::EndTurn => {
                    self.end_turn();
                    continue;
                }
                append @ Request::Append { .. } => append,
            };
            // Group: everything already queued, up to the record limit; any other request
            // ends the group and is served right after it, keeping order.
            let mut records = first.records();
            let mut bytes = first.bytes();
            let mut group = vec![first];
            while records < self.group_records_max && bytes < self.group_bytes_max {
                match self.receiver.try_recv() {
                    Ok(request @ Request::Append { .. }) => {
                        records += request.records();
                        bytes += request.bytes();
                        group.push(request);
                    }
                    Ok(request) => {
                        carried = Some(request);
                        break;
                    }
                    Err(_) => break,
                }
            }
            let appends: Vec<AppendRequest> = group
                .into_iter()
                .filter_map(|request| match request {
                    Request::Append { payloads, claim, history, reply } => {
                        Some(AppendRequest { payloads, claim, history, reply })
                    }
                    _ => None, // only appends are grouped
                })
                .collect();
            self.commit_group(appends);
        }
    }

    /// The next request; while a turn is held, the store is told the writer is alive whenever
    /// it has waited that long for one. `None`: every handle is gone.
    fn next_request(&mut self) -> Option<Request> {
        loop {
            let every = if self.in_turn { self.store.keep_turn_every() } else { None };
            let Some(every) = every else { return self.receiver.recv().ok() };
            match self.receiver.recv_timeout(every) {
                Ok(request) => return Some(request),
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                    if let Err(error) = self.store.keep_turn() {
                        // The turn is gone with the connection: the next append fails on it
                        // (a store refuses appends out of turn through its tip check).
                        tracing::warn!(%error, "the journal turn could not be kept");
                        self.in_turn = false;
                    }
                }
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return None,
            }
        }
    }

    /// Takes the store's turn and continues the chain from the stored tip. Nothing is
    /// written: a failure is the caller's error, not the journal's poison.
    fn begin_turn(&mut self) -> Result<u64, JournalError> {
        if self.poisoned.load(Ordering::Acquire) {
            return Err(JournalError::Poisoned);
        }
        let (seq, hash) = self.store.begin_turn()?;
        self.in_turn = true;
        if seq < self.seq {
            self.end_turn();
            return Err(JournalError::Storage(format!(
                "the stored journal ends at record {seq}, before record {} this writer appended: not the journal it opened",
                self.seq
            )));
        }
        (self.seq, self.hash) = (seq, hash);
        self.durable_tip.store(seq, Ordering::Release);
        Ok(seq)
    }

    fn end_turn(&mut self) {
        if !std::mem::replace(&mut self.in_turn, false) {
            return;
        }
        if let Err(error) = self.store.end_turn() {
            // A turn that cannot be given back went with its connection.
            tracing::warn!(%error, "the journal turn could not be given back");
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

    fn snapshot(&mut self, seq: u64, parts: &[Vec<u8>]) -> Result<(), JournalError> {
        self.store.write_snapshot(seq, parts, self.snapshots_kept)
    }
}
