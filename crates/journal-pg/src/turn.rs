//! The journal's turn. Several nodes append to one journal, each deciding from its copy of
//! the state at the tip; a node's appends must continue the chain it decided from. A writer
//! takes the turn (a session-level advisory lock) before it reads the tip, applies what others
//! appended and decides, and gives it back after its appends: nobody appends in between.
//!
//! Correctness does not rest on the turn: every commit is still conditioned on the tip its
//! writer knows and refused when another writer moved it (`Behind`). The turn is what makes
//! that refusal rare instead of the rule. A frozen holder cannot keep it: on a bounded
//! connection (`connect_bounded`) the server ends a session idle for the bound, releasing its
//! advisory locks, and every wait for a lock is bounded the same; a live holder with nothing
//! to append for a while says so (`keep_turn`, from the journal's writer thread).

use journal::record::HASH_LEN;

use crate::{PgError, PgJournal};

/// The advisory lock that is the turn ("railturn" in ASCII; the migrations take "railyard").
const TURN: i64 = 0x7261_696c_7475_726e;

impl PgJournal {
    /// Takes the turn (waiting at most the connection's lock bound: past it, an error and
    /// nothing held) and reads the tip. A connection the server closed meanwhile (idle past
    /// its bound) is made again once.
    pub fn begin_turn(&self) -> Result<(u64, [u8; HASH_LEN]), PgError> {
        match self.take_turn() {
            Err(PgError::Unavailable(_)) => self.take_turn(),
            outcome => outcome,
        }
    }

    fn take_turn(&self) -> Result<(u64, [u8; HASH_LEN]), PgError> {
        self.with_client(|client| {
            client.execute("SELECT pg_advisory_lock($1)", &[&TURN])?;
            Ok(())
        })?;
        self.tip()
    }

    /// Gives the turn back.
    pub fn end_turn(&self) -> Result<(), PgError> {
        self.with_client(|client| {
            client.execute("SELECT pg_advisory_unlock($1)", &[&TURN])?;
            Ok(())
        })
    }

    /// Tells the server the holder of the turn is alive (its session is not idle).
    pub fn keep_turn(&self) -> Result<(), PgError> {
        self.with_client(|client| Ok(client.batch_execute("SELECT 1")?))
    }

    /// The bound a connection of this journal's writer holds things for, if it has one.
    pub(crate) fn bound(&self) -> Option<std::time::Duration> {
        self.idle_in_transaction_ms.map(std::time::Duration::from_millis)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::PgJournal;
    use crate::cluster::Cluster;

    /// While one writer holds the turn another waits at most its bound and is refused,
    /// holding nothing; a holder that goes silent (a frozen node) loses the turn with its
    /// session after its own bound, and a waiting writer takes it (without the bound it would
    /// wait until the frozen node woke).
    #[test]
    fn a_waiting_writer_is_refused_after_its_bound_and_a_frozen_holder_loses_the_turn() {
        let cluster = Cluster::start();
        let holder = PgJournal::connect_bounded(&cluster.url, Duration::from_secs(2)).unwrap();
        let impatient = PgJournal::connect_bounded(&cluster.url, Duration::from_millis(300)).unwrap();
        holder.begin_turn().unwrap();
        assert!(impatient.begin_turn().is_err(), "the turn is held");
        holder.keep_turn().unwrap();
        // The holder says nothing more: frozen.
        let url = cluster.url.clone();
        let (done, taken) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let patient = PgJournal::connect_bounded(&url, Duration::from_secs(10)).unwrap();
            let outcome = patient.begin_turn();
            let _ = done.send((outcome, patient.end_turn()));
        });
        let (outcome, ended) = taken.recv_timeout(Duration::from_secs(20)).expect("the turn came free");
        assert_eq!(outcome.unwrap().0, 0, "the turn, and the tip with it");
        ended.unwrap();
        // Woken, the frozen node's session is gone: it takes the turn again on a new one.
        holder.begin_turn().unwrap();
        assert!(impatient.begin_turn().is_err(), "held again, by the woken node");
        holder.end_turn().unwrap();
        impatient.begin_turn().unwrap();
        impatient.end_turn().unwrap();
    }
}
