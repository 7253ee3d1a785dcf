//! A node's copy of the state, kept by tailing a journal another node writes (the shared
//! PostgreSQL journal): every record applied in order exactly as recovery applies it, so at
//! the same sequence number its state — and its state hash — is the writer's. The first part
//! of scale-out (issue 14): a follower answers queries; acting is the lease holders' business.

use journal::Journal;

use crate::EngineError;
use crate::state::{EngineState, Replayed, StateConfig};

/// Records read per query while catching up.
const CHUNK: usize = 4_096;

pub struct Follower {
    journal: Journal,
    state: Replayed,
    seq: u64,
}

impl std::fmt::Debug for Follower {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Follower").field("seq", &self.seq).finish_non_exhaustive()
    }
}

impl Follower {
    /// The state as of `journal`'s last record (its newest snapshot, then the records after).
    pub fn open(journal: Journal, config: &StateConfig) -> Result<Follower, EngineError> {
        let recovered = journal.recover_with::<Replayed>(config)?;
        Ok(Follower { journal, state: recovered.state, seq: recovered.seq })
    }

    /// Applies every record appended since the last call; returns how many. A record the
    /// state refuses is a journal that is not this configuration's (or a bug): an error, and
    /// the follower stays at the record before it.
    pub fn catch_up(&mut self) -> Result<u64, EngineError> {
        use journal::Replica;
        let mut applied = 0;
        loop {
            let records = self.journal.read_range(self.seq + 1, CHUNK)?;
            if records.is_empty() {
                return Ok(applied);
            }
            for record in records {
                self.state
                    .apply(record.seq, &record.payload)
                    .map_err(|e| EngineError::Invariant(format!("following the journal: {e}")))?;
                self.seq = record.seq;
                applied += 1;
            }
        }
    }

    /// The last record applied.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    pub fn state(&self) -> &EngineState {
        &self.state.0
    }
}
