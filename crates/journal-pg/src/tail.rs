//! Tailing: a node waits for the journal to pass a sequence number.

use postgres::fallible_iterator::FallibleIterator;
use postgres::{Client, NoTls};

use crate::{PgError, seq_of};

/// A node tailing the journal: its own connection, listening for the notice every append
/// sends at commit.
pub struct Tail {
    client: Client,
}

impl std::fmt::Debug for Tail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tail").finish_non_exhaustive()
    }
}

impl Tail {
    /// Listens on `url`'s journal.
    pub fn listen(url: &str) -> Result<Tail, PgError> {
        let mut client = Client::connect(url, NoTls).map_err(|e| PgError::Unavailable(e.to_string()))?;
        client.batch_execute("LISTEN railyard_journal")?;
        Ok(Tail { client })
    }

    /// Returns the journal's tip once it is past `after`, or after `timeout` whatever it is.
    /// Woken by the appends' notices; the tip row is read again either way, so a notice
    /// missed or merged with another costs at most `timeout`, never a record.
    pub fn wait(&mut self, after: u64, timeout: std::time::Duration) -> Result<u64, PgError> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let tip = seq_of(self.client.query_one("SELECT seq FROM railyard_tip", &[])?.get(0));
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if tip > after || left.is_zero() {
                return Ok(tip);
            }
            let mut notices = self.client.notifications();
            // One notice is enough to read the tip again; the others already queued are
            // dropped without waiting (a blocking drain would wait out the timeout).
            if notices.timeout_iter(left).next()?.is_some() {
                let mut queued = notices.iter();
                while queued.next()?.is_some() {}
            }
        }
    }
}
