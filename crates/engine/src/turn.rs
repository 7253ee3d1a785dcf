//! Turns on a shared journal. Several nodes append to one journal (PostgreSQL): the leader
//! its rounds and commands, any node the merchants' batches it is sent. Each decides from its
//! own copy of the state, so before deciding it takes the journal's turn (no other node
//! appends until it gives the turn back) and applies what the others appended since it last
//! looked; its appends then continue the chain it decided from. Outside its turn a shared
//! engine acts on nothing (`running`). What a turn leaves staged (a round's broadcasts'
//! outcomes) is committed before the turn is given back: no other node's record may ever be
//! applied after events this node holds but has not journaled, or its state would differ from
//! the journal's order.

use model::Event;

use crate::{Engine, EngineError};

/// Records read per query while catching up.
const CHUNK: usize = 4_096;

impl Engine {
    /// Whether other nodes append to this engine's journal (a leader or a standby).
    pub fn is_shared(&self) -> bool {
        self.shared
    }

    /// Takes this node's turn on the shared journal and applies what other nodes appended,
    /// so that what it decides next continues the journal. Nothing is changed when the turn
    /// cannot be taken (another node holds it past the bound, the database is away): the
    /// commands that needed it are answered with why. Engines alone on their journal have no
    /// turns.
    pub async fn begin_turn(&mut self) -> Result<(), EngineError> {
        if !self.shared || self.in_turn {
            return Ok(());
        }
        if let Some(reason) = &self.stopped {
            return Err(EngineError::Stopped(reason.clone()));
        }
        let applied = self.applied();
        match self.journal.begin_turn().await {
            Ok(tip) => {
                self.in_turn = true;
                self.turn_refused = None;
                if let Err(error) = self.catch_up(applied, tip) {
                    self.give_back();
                    return Err(error);
                }
                Ok(())
            }
            Err(error) => {
                self.turn_refused = Some(error.to_string());
                Err(error.into())
            }
        }
    }

    /// Commits what the turn left staged, then gives the turn back.
    pub async fn end_turn(&mut self) -> Result<(), EngineError> {
        if !self.in_turn {
            return Ok(());
        }
        let committed = if self.staged.is_empty() || self.stopped.is_some() { Ok(()) } else { self.commit().await };
        self.give_back();
        committed
    }

    fn give_back(&mut self) {
        self.in_turn = false;
        if let Err(error) = self.journal.end_turn() {
            tracing::warn!(%error, "the journal turn could not be given back (it ends with the connection)");
        }
    }

    /// After a commit of this engine's own: its state is the journal's up to the new tip.
    pub(crate) fn committed_own(&mut self) {
        let tip = self.journal.tip();
        self.applied_seq = tip;
        if let Some(following) = &mut self.standby {
            following.seq = tip;
            following.stored = following.stored.max(tip);
        }
    }

    /// Applies the records after `applied` up to `tip` that other nodes appended, as this
    /// engine would have applied them had it decided them (the waiting payments join
    /// routing; what finished leaves the watch). They are read first: a read that fails
    /// changes nothing. A record the state refuses stops the engine.
    fn catch_up(&mut self, applied: u64, tip: u64) -> Result<(), EngineError> {
        if self.standby.is_some() {
            return self.follow().map(|_| ());
        }
        let mut records = Vec::new();
        let mut next = applied + 1;
        while next <= tip {
            let chunk = self.journal.read_range(next, CHUNK)?;
            let Some(last) = chunk.last() else { break };
            next = last.seq + 1;
            records.extend(chunk.into_iter().filter(|r| r.seq <= tip));
        }
        if next <= tip {
            return Err(EngineError::Journal(journal::JournalError::Storage(format!(
                "records {next} to {tip} of the shared journal could not be read"
            ))));
        }
        for record in records {
            // Others' records count towards this node's next snapshot too: a restart replays them.
            self.bytes_since_snapshot += record.payload.len() as u64;
            let event = Event::decode(&record.payload)
                .map_err(|e| self.stop(format!("catching up with the journal: record {}: {e}", record.seq)))?;
            let queued = self.queued_by(&event);
            self.note_touched(&event);
            self.learn_rail_health(&event, event.at());
            if let Err(error) = self.state.apply(&event) {
                return Err(self.stop(format!("catching up with the journal: record {} refused: {error}", record.seq)));
            }
            if self.coordinates() {
                self.staging.waiting(queued);
            }
            // What finished went to the history store in the other node's commit.
            let retired = self.state.book.take_retired();
            self.unwatch(&retired);
            self.applied_seq = record.seq;
        }
        Ok(())
    }
}

/// Takes the turn for the service loop: one that cannot be taken is logged here, and
/// answered by what needed it.
pub(crate) async fn take(engine: &mut Engine) {
    if let Err(error) = engine.begin_turn().await {
        tracing::warn!(%error, "no turn on the shared journal");
    }
}

pub(crate) async fn give(engine: &mut Engine) {
    if let Err(error) = engine.end_turn().await {
        tracing::error!(%error, "the turn's last commit failed");
    }
}
