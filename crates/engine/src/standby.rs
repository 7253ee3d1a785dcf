//! Several nodes on one shared journal (PostgreSQL): one leader acts, the others stand by.
//!
//! A standby is an engine opened without recovery (it acts on nothing: no rail call, no
//! append). Each `tick` applies what the leader appended since — every record in order, as
//! recovery applies it — so its state, and the read model it publishes, is the journal's, and
//! any node answers queries. Every command it is given is refused with `EngineError::Standby`.
//! When the node takes the lease it does not turn this engine into a leader: it opens a new
//! one on the journal, which recovers exactly as a restart does (re-broadcasting the same
//! signed bytes, telling each rail its journaled spends) and acts under the lease's fence.
//!
//! A leader is given a `LeaseGuard`: before every round and every broadcast it checks that its
//! lease is surely still held, and stops when it is not. The journal fences its appends in the
//! database too (an append under an older token is refused in its own transaction), so a node
//! paused past its lease can neither journal nor, since effects follow commits, broadcast.

use model::Event;

use crate::{Engine, EngineConfig, EngineError, LeaseGuard};

/// Records read per query while following.
const CHUNK: usize = 4_096;

/// Where a standby is in the shared journal.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Following {
    /// The last record applied.
    pub(crate) seq: u64,
    /// The store's tip at the last look.
    pub(crate) stored: u64,
}

impl Engine {
    /// Opens `journal` as a standby: the state rebuilt (newest snapshot, then the records
    /// after), nothing acted on.
    pub fn open_standby(
        journal: journal::Journal,
        config: EngineConfig,
        rails: Vec<std::sync::Arc<dyn rails::Rail>>,
        now: model::Timestamp,
    ) -> Result<Engine, EngineError> {
        let (mut engine, seq) = Engine::build(journal, config, rails, now)?;
        engine.standby = Some(Following { seq, stored: seq });
        engine.shared = true;
        Ok(engine)
    }

    /// Opens `journal` to act under leases: recovery exactly as a restart (for the rails it
    /// drives), acting only while `guard` says its leases are all surely held (recovery's own
    /// broadcasts included), on what `acting` names (`None`: everything; see `partition`).
    pub async fn open_acting(
        journal: journal::Journal,
        config: EngineConfig,
        rails: Vec<std::sync::Arc<dyn rails::Rail>>,
        now: model::Timestamp,
        acting: Option<crate::Acting>,
        guard: LeaseGuard,
    ) -> Result<Engine, EngineError> {
        let (mut engine, _) = Engine::build(journal, config, rails, now)?;
        engine.acting = acting;
        engine.lease_guard = Some(guard);
        engine.shared = true;
        engine.check_lease()?;
        // Recovery decides and appends like a round: in a turn, after what others appended.
        engine.begin_turn().await?;
        let resumed = engine.resume(now).await;
        let ended = engine.end_turn().await;
        resumed?;
        ended?;
        Ok(engine)
    }

    pub fn is_standby(&self) -> bool {
        self.standby.is_some()
    }

    /// The last record the state holds: the journal's tip, or on a standby the last record
    /// it applied.
    pub fn applied(&self) -> u64 {
        match self.standby {
            Some(following) => following.seq,
            None if self.shared => self.applied_seq,
            None => self.journal.tip(),
        }
    }

    /// On a standby, records the journal held past what it applied at the last look.
    pub fn lag(&self) -> u64 {
        self.standby.map_or(0, |f| f.stored.saturating_sub(f.seq))
    }

    /// Stops the engine when its lease is lost: the next holder does what it would have done.
    pub(crate) fn check_lease(&mut self) -> Result<(), EngineError> {
        match &self.lease_guard {
            Some(guard) if !guard() => Err(self
                .stop("this node's lease is lost (expired or taken by another node): it acts on nothing more".into())),
            _ => Ok(()),
        }
    }

    /// A standby's round: applies every record appended since the last one; returns how
    /// many. A store that cannot be read is an error for this round (the next tries again);
    /// a record the state refuses is a journal that is not this configuration's (or a bug):
    /// the engine stops.
    pub(crate) fn follow(&mut self) -> Result<u64, EngineError> {
        let Some(mut following) = self.standby else { return Ok(0) };
        if let Some(reason) = &self.stopped {
            return Err(EngineError::Stopped(reason.clone()));
        }
        following.stored = self.journal.stored_tip()?;
        let mut applied = 0;
        while following.seq < following.stored {
            let records = self.journal.read_range(following.seq + 1, CHUNK)?;
            if records.is_empty() {
                break;
            }
            for record in records {
                let event = Event::decode(&record.payload)
                    .map_err(|e| self.stop(format!("following the journal: record {}: {e}", record.seq)))?;
                self.note_touched(&event);
                if let Err(error) = self.state.apply(&event) {
                    return Err(self.stop(format!("following the journal: record {} refused: {error}", record.seq)));
                }
                // What finished went to the history store in the leader's commit.
                self.state.book.take_retired();
                following.seq = record.seq;
                following.stored = following.stored.max(record.seq);
                applied += 1;
            }
            self.standby = Some(following);
        }
        self.standby = Some(following);
        Ok(applied)
    }
}
