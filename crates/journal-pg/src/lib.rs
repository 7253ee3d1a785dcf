//! railyard's journal on PostgreSQL, for several nodes sharing one journal of record.
//!
//! The records are the redb journal's frames (`journal::record`): one frame per append, each
//! carrying the hash of everything before it, so the journal is one totally ordered,
//! hash-chained sequence exactly as on redb, and `verify` checks it the same way. What
//! PostgreSQL adds is the arbitration between nodes, in each append's own transaction:
//!
//! - **Order.** The append locks the one tip row (`SELECT … FOR UPDATE`), continues the chain
//!   from it and moves it: appends from every node are serialized by PostgreSQL, never by a
//!   protocol of ours. `expected_tip` lets a node append only if nothing was appended since the
//!   state it decided on (else `Behind`: it must catch up first).
//! - **Idempotency.** A claim is a row under a primary key: of two nodes taking the same
//!   (merchant, key), one commits its records and the other is told the original entry and
//!   appends nothing.
//! - **Fencing.** A lease (`acquire_lease`) is a row with a holder, an expiry on PostgreSQL's
//!   clock and a token that only grows. An append carrying a `Fence` commits only while its
//!   token is the lease's current one and the lease is unexpired: a node paused past its expiry,
//!   or partitioned, can never journal again under the old token — and so never broadcast.
//!
//! The client is `postgres` (synchronous): call it from a thread of its own, never from inside
//! an async runtime's worker. A connection that fails is dropped and made again on the next
//! call, so a PostgreSQL restart is a run of `Unavailable` errors, then service again.

pub mod cluster;
mod history;
mod lease;
mod schema;
mod store;
mod tail;
mod turn;

use std::sync::Mutex;

use journal::record::{self, GENESIS, HASH_LEN};
use journal::store::{Tip, Write};
use journal::{Appended, Claim, HistoryOp, IdempotencyEntry, JournalError, Record, Snapshot};
use postgres::{Client, NoTls};

pub use lease::LeaseKeeper;
pub use schema::SCHEMA_VERSION;
pub use store::{PgStore, fencing_refusals};
pub use tail::Tail;

/// Snapshots kept; older ones are deleted when a newer one is written.
const SNAPSHOTS_KEPT: i64 = 3;

/// Frames read per query when scanning the whole journal.
const SCAN_FRAMES: i64 = 512;

#[derive(Debug, thiserror::Error)]
pub enum PgError {
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error("PostgreSQL is unreachable or the connection failed: {0}")]
    Unavailable(String),
    #[error("PostgreSQL refused the statement: {0}")]
    Sql(String),
    #[error(
        "fenced: lease {lease} is at token {current:?} (or expired), this append carried {token}; the lease was lost, so nothing was appended"
    )]
    Fenced { lease: String, token: i64, current: Option<i64> },
    #[error(
        "behind: the journal's tip is {tip}, the append was decided at {expected}; apply the records since, then decide again"
    )]
    Behind { expected: u64, tip: u64 },
    #[error("schema: {0}")]
    Schema(String),
    #[error("invalid append: {0}")]
    Invalid(String),
}

impl From<postgres::Error> for PgError {
    fn from(error: postgres::Error) -> PgError {
        match error.as_db_error() {
            Some(db) => PgError::Sql(format!("{} ({})", db.message(), db.code().code())),
            None => PgError::Unavailable(error.to_string()),
        }
    }
}

/// The lease an append is made under: committed only while `token` is the lease's current,
/// unexpired token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fence {
    pub lease: String,
    pub token: i64,
}

/// One append: records, an optional idempotency claim, history writes, and the conditions it
/// commits under — all one transaction.
#[derive(Clone, Debug, Default)]
pub struct PgAppend {
    pub payloads: Vec<Vec<u8>>,
    pub claim: Option<Claim>,
    pub history: Vec<HistoryOp>,
    pub fence: Option<Fence>,
    /// Commit only if the journal's tip is still this (the state the append was decided on).
    pub expected_tip: Option<u64>,
}

/// What a commit is made under: the fences of the leases its writes were decided under (all
/// must hold), and the tip they were decided at.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Conditions<'a> {
    pub(crate) fences: &'a [Fence],
    pub(crate) expected_tip: Option<u64>,
}

/// A lease held: `token` fences every append made under it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lease {
    pub name: String,
    pub holder: String,
    pub token: i64,
}

impl Lease {
    pub fn fence(&self) -> Fence {
        Fence { lease: self.name.clone(), token: self.token }
    }
}

/// The journal on one PostgreSQL database.
pub struct PgJournal {
    url: String,
    client: Mutex<Option<Client>>,
    /// PostgreSQL ends this connection's session when a transaction of it sits idle longer
    /// (see `connect_bounded`).
    idle_in_transaction_ms: Option<u64>,
}

impl std::fmt::Debug for PgJournal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may hold a password: only where it points.
        let host = self.url.rsplit('@').next().unwrap_or("");
        f.debug_struct("PgJournal").field("at", &host).finish()
    }
}

fn seq_of(value: i64) -> u64 {
    u64::try_from(value).expect("sequence numbers are positive")
}

fn sql_seq(seq: u64) -> Result<i64, PgError> {
    i64::try_from(seq).map_err(|_| PgError::Invalid(format!("sequence number {seq} is past PostgreSQL's BIGINT")))
}

fn hash_of(bytes: &[u8], seq: u64) -> Result<[u8; HASH_LEN], PgError> {
    bytes
        .try_into()
        .map_err(|_| JournalError::Corrupt { seq, reason: "stored hash has the wrong length".into() }.into())
}

impl PgJournal {
    /// Connects to `url` (a `postgres://` URL) and migrates the schema to this build's version.
    pub fn connect(url: &str) -> Result<PgJournal, PgError> {
        let journal = PgJournal { url: url.to_owned(), client: Mutex::new(None), idle_in_transaction_ms: None };
        journal.with_client(schema::migrate)?;
        Ok(journal)
    }

    /// `connect`, with PostgreSQL ending the session when one of its transactions sits idle
    /// for `idle_in_transaction`: a node frozen (SIGSTOP, a long pause) in the middle of an
    /// append holds the tip row's lock, and every other node's appends would wait for it; the
    /// server drops that transaction instead (the frozen node, woken, finds its connection
    /// gone and its append not made). The session itself ends when idle that long (a frozen
    /// node holding the journal's turn, see `turn`), and waits for a lock are bounded so.
    pub fn connect_bounded(url: &str, idle_in_transaction: std::time::Duration) -> Result<PgJournal, PgError> {
        let ms = u64::try_from(idle_in_transaction.as_millis()).unwrap_or(u64::MAX).max(1);
        let journal = PgJournal { url: url.to_owned(), client: Mutex::new(None), idle_in_transaction_ms: Some(ms) };
        journal.with_client(schema::migrate)?;
        Ok(journal)
    }

    /// Runs `f` on the connection, making it first if there is none; a connection that failed
    /// is dropped, to be made again next call.
    fn with_client<T>(&self, f: impl FnOnce(&mut Client) -> Result<T, PgError>) -> Result<T, PgError> {
        let mut slot = self.client.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if slot.as_ref().is_none_or(Client::is_closed) {
            let mut client = Client::connect(&self.url, NoTls).map_err(|e| PgError::Unavailable(e.to_string()))?;
            if let Some(ms) = self.idle_in_transaction_ms {
                // A frozen writer holds nothing for longer: not the tip row in a transaction,
                // not the journal's turn between two (see `turn`); and a wait for either is
                // bounded the same.
                client.batch_execute(&format!(
                    "SET idle_in_transaction_session_timeout = {ms}; SET idle_session_timeout = {ms}; SET lock_timeout = {ms}"
                ))?;
            }
            *slot = Some(client);
        }
        let client = slot.as_mut().expect("connected above");
        let result = f(client);
        if client.is_closed() {
            // The server ended the connection (a restart sends a FATAL error first): the
            // connection failed, whatever the error said.
            *slot = None;
            return result.map_err(|error| match error {
                PgError::Sql(message) => PgError::Unavailable(message),
                other => other,
            });
        }
        result
    }

    /// The schema version the database is at.
    pub fn schema_version(&self) -> Result<i32, PgError> {
        self.with_client(|c| Ok(c.query_one("SELECT max(version) FROM railyard_schema", &[])?.get(0)))
    }

    /// The last record's sequence number (0: empty) and the chain's head.
    pub fn tip(&self) -> Result<(u64, [u8; HASH_LEN]), PgError> {
        self.with_client(|c| {
            let row = c.query_one("SELECT seq, hash FROM railyard_tip", &[])?;
            let seq = seq_of(row.get(0));
            Ok((seq, hash_of(row.get(1), seq)?))
        })
    }

    /// Appends in one transaction, durable when it returns (`synchronous_commit` on).
    pub fn append(&self, append: &PgAppend) -> Result<Appended, PgError> {
        if append.payloads.is_empty() {
            return Err(PgError::Invalid("an append needs at least one record".into()));
        }
        let write = Write { payloads: &append.payloads, claim: append.claim.as_ref(), history: &append.history };
        let conditions = Conditions { fences: append.fence.as_slice(), expected_tip: append.expected_tip };
        let (mut outcomes, _) = self.commit_group(&conditions, &[write], usize::MAX)?;
        Ok(outcomes.pop().expect("one outcome per write"))
    }

    /// One transaction for a group of writes under `conditions`: the tip row locked (every
    /// node's appends are serialized by it), the fence and expected tip checked, each write's
    /// claim taken in order (a taken claim answers with its entry and that write adds
    /// nothing), the others' records as frames of at most `frame_bytes_max` bytes continuing
    /// the chain, their history operations in key order, the tip moved, a notice sent.
    pub(crate) fn commit_group(
        &self,
        conditions: &Conditions<'_>,
        writes: &[Write<'_>],
        frame_bytes_max: usize,
    ) -> Result<(Vec<Appended>, Tip), PgError> {
        self.with_client(|client| {
            let mut tx = client.transaction()?;
            let row = tx.query_one("SELECT seq, hash FROM railyard_tip FOR UPDATE", &[])?;
            let tip = seq_of(row.get(0));
            let prev = hash_of(row.get(1), tip)?;
            for fence in conditions.fences {
                let lease = tx.query_opt(
                    "SELECT token, expires_at > now() FROM railyard_leases WHERE name = $1 FOR SHARE",
                    &[&fence.lease],
                )?;
                let current = lease.as_ref().map(|row| row.get::<_, i64>(0));
                let live = lease.as_ref().is_some_and(|row| row.get::<_, bool>(1));
                if current != Some(fence.token) || !live {
                    return Err(PgError::Fenced { lease: fence.lease.clone(), token: fence.token, current });
                }
            }
            if let Some(expected) = conditions.expected_tip
                && expected != tip
            {
                return Err(PgError::Behind { expected, tip });
            }
            let mut outcomes = Vec::with_capacity(writes.len());
            let mut payloads: Vec<&[u8]> = Vec::new();
            let mut ops: Vec<&HistoryOp> = Vec::new();
            let mut next = tip + 1;
            for write in writes {
                if let Some(claim) = write.claim {
                    let batch = claim.batch.to_le_bytes();
                    let taken = tx.execute(
                        "INSERT INTO railyard_idempotency (merchant, key, batch, body_hash) VALUES ($1, $2, $3, $4)
                         ON CONFLICT (merchant, key) DO NOTHING",
                        &[&claim.merchant, &claim.key, &batch.as_slice(), &claim.body_hash.as_slice()],
                    )?;
                    if taken == 0 {
                        let row = tx.query_one(
                            "SELECT batch, body_hash FROM railyard_idempotency WHERE merchant = $1 AND key = $2",
                            &[&claim.merchant, &claim.key],
                        )?;
                        outcomes.push(Appended::Duplicate(entry(row.get(0), row.get(1))?));
                        continue;
                    }
                }
                let count = write.payloads.len() as u64;
                outcomes.push(Appended::Committed { first: next, last: next + count - 1 });
                next += count;
                payloads.extend(write.payloads.iter().map(Vec::as_slice));
                ops.extend(write.history.iter());
            }
            let fences: Option<String> = (!conditions.fences.is_empty()).then(|| {
                let named: Vec<String> = conditions.fences.iter().map(|f| format!("{}={}", f.lease, f.token)).collect();
                named.join(",")
            });
            let mut hash = prev;
            let mut first = tip + 1;
            for chunk in record::frames(&payloads, frame_bytes_max) {
                let (frame, frame_hash) = record::encode_frame(first, &hash, chunk);
                let last = first + chunk.len() as u64 - 1;
                tx.execute(
                    "INSERT INTO railyard_frames (first_seq, last_seq, hash, body, token, fences) VALUES ($1, $2, $3, $4, $5, $6)",
                    &[
                        &sql_seq(first)?,
                        &sql_seq(last)?,
                        &frame_hash.as_slice(),
                        &frame,
                        &conditions.fences.first().map(|f| f.token),
                        &fences,
                    ],
                )?;
                (hash, first) = (frame_hash, last + 1);
            }
            history::write_history(&mut tx, &ops)?;
            let last = next - 1;
            if last > tip {
                tx.execute("UPDATE railyard_tip SET seq = $1, hash = $2", &[&sql_seq(last)?, &hash.as_slice()])?;
                // Nodes tailing the journal wake on this (delivered at commit).
                tx.execute("SELECT pg_notify('railyard_journal', $1)", &[&last.to_string()])?;
            }
            tx.commit()?;
            Ok((outcomes, (last, hash)))
        })
    }

    /// Up to `count_max` records from `from` on, in order, each frame verified against the
    /// chain.
    pub fn read_range(&self, from: u64, count_max: usize) -> Result<Vec<Record>, PgError> {
        if from == 0 {
            return Err(JournalError::Invalid("sequence numbers start at 1".into()).into());
        }
        let limit = i64::try_from(count_max.min(1 << 20)).unwrap_or(i64::MAX);
        self.with_client(|c| {
            let rows = c.query(
                "SELECT first_seq, body FROM railyard_frames WHERE last_seq >= $1 ORDER BY first_seq LIMIT $2",
                &[&sql_seq(from)?, &limit],
            )?;
            let Some(start) = rows.first().map(|row| seq_of(row.get(0))) else { return Ok(Vec::new()) };
            let mut reader = record::RangeReader::new(start, hash_before(c, start)?, from, count_max);
            for row in &rows {
                if reader.frame(seq_of(row.get(0)), row.get(1))? {
                    break;
                }
            }
            Ok(reader.records())
        })
    }

    /// Reads the whole journal, checking every record's checksum and the hash chain from the
    /// first frame to the tip row; returns the number of records.
    pub fn verify(&self) -> Result<u64, PgError> {
        self.with_client(|c| {
            // Every frame checked, no record kept (none is at or past u64::MAX).
            let mut reader = record::RangeReader::new(1, GENESIS, u64::MAX, usize::MAX);
            loop {
                let rows = c.query(
                    "SELECT first_seq, body FROM railyard_frames WHERE first_seq >= $1 ORDER BY first_seq LIMIT $2",
                    &[&sql_seq(reader.next_seq())?, &SCAN_FRAMES],
                )?;
                for row in &rows {
                    reader.frame(seq_of(row.get(0)), row.get(1))?;
                }
                if (rows.len() as i64) < SCAN_FRAMES {
                    break;
                }
            }
            let (expected, prev) = (reader.next_seq(), reader.head());
            let tip = c.query_one("SELECT seq, hash FROM railyard_tip", &[])?;
            let tip_seq = seq_of(tip.get(0));
            if tip_seq != expected - 1 || hash_of(tip.get(1), tip_seq)? != prev {
                return Err(JournalError::Corrupt {
                    seq: tip_seq,
                    reason: "the tip row does not match the last frame".into(),
                }
                .into());
            }
            Ok(expected - 1)
        })
    }

    pub fn idempotency(&self, merchant: &str, key: &str) -> Result<Option<IdempotencyEntry>, PgError> {
        self.with_client(|c| {
            c.query_opt(
                "SELECT batch, body_hash FROM railyard_idempotency WHERE merchant = $1 AND key = $2",
                &[&merchant, &key],
            )?
            .map(|row| entry(row.get(0), row.get(1)))
            .transpose()
        })
    }

    /// Stores derived state taken after record `seq`, bound to the chain's hash there; keeps
    /// the newest few.
    pub fn write_snapshot(&self, seq: u64, parts: &[Vec<u8>]) -> Result<(), PgError> {
        self.write_snapshot_keeping(seq, parts, SNAPSHOTS_KEPT)
    }

    /// `write_snapshot`, keeping the newest `kept`.
    pub fn write_snapshot_keeping(&self, seq: u64, parts: &[Vec<u8>], kept: i64) -> Result<(), PgError> {
        self.with_client(|c| {
            let tip = seq_of(c.query_one("SELECT seq FROM railyard_tip", &[])?.get(0));
            if seq == 0 || seq > tip {
                return Err(JournalError::SnapshotBeyondTip { seq, tip }.into());
            }
            let hash = hash_at(c, seq)?;
            let mut tx = c.transaction()?;
            tx.execute(
                "INSERT INTO railyard_snapshots (seq, body) VALUES ($1, $2) ON CONFLICT (seq) DO UPDATE SET body = EXCLUDED.body",
                &[&sql_seq(seq)?, &record::encode_snapshot_blob(&hash, parts)],
            )?;
            tx.execute(
                "DELETE FROM railyard_snapshots WHERE seq NOT IN (SELECT seq FROM railyard_snapshots ORDER BY seq DESC LIMIT $1)",
                &[&kept],
            )?;
            tx.commit()?;
            Ok(())
        })
    }

    /// The newest snapshot whose checksum holds and whose record hash is the chain's.
    pub fn latest_snapshot(&self) -> Result<Option<Snapshot>, PgError> {
        self.with_client(|c| {
            for row in c.query("SELECT seq, body FROM railyard_snapshots ORDER BY seq DESC", &[])? {
                let seq = seq_of(row.get(0));
                let Ok((hash, parts)) = record::decode_snapshot_blob(seq, row.get(1)) else { continue };
                if hash_at(c, seq).is_ok_and(|chain| chain == hash) {
                    return Ok(Some(Snapshot { seq, parts }));
                }
            }
            Ok(None)
        })
    }
}

/// The URL of database `name` on the server `admin_url` points to, created when missing
/// (tests give every journal a database of its own on one server). Runs on a thread of its
/// own, so it may be called from async code.
pub fn database(admin_url: &str, name: &str) -> Result<String, PgError> {
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_') {
        return Err(PgError::Invalid(format!("database name {name:?}: lowercase letters, digits and _ only")));
    }
    let (base, _) = admin_url
        .rsplit_once('/')
        .ok_or_else(|| PgError::Invalid("the URL names no database (postgres://user@host:port/db)".into()))?;
    let url = format!("{base}/{name}");
    let (admin, name) = (admin_url.to_owned(), name.to_owned());
    std::thread::spawn(move || -> Result<(), PgError> {
        let mut client = Client::connect(&admin, NoTls).map_err(|e| PgError::Unavailable(e.to_string()))?;
        let exists = client.query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&name])?.is_some();
        if !exists {
            // The name was checked above: only [a-z0-9_].
            client.batch_execute(&format!("CREATE DATABASE {name}"))?;
        }
        Ok(())
    })
    .join()
    .map_err(|_| PgError::Unavailable("the connecting thread panicked".into()))??;
    Ok(url)
}

fn entry(batch: Vec<u8>, body_hash: Vec<u8>) -> Result<IdempotencyEntry, PgError> {
    let corrupt = || PgError::Journal(JournalError::Storage("idempotency entry has the wrong length".into()));
    let batch: [u8; 16] = batch.try_into().map_err(|_| corrupt())?;
    let body_hash: [u8; 32] = body_hash.try_into().map_err(|_| corrupt())?;
    Ok(IdempotencyEntry { batch: u128::from_le_bytes(batch), body_hash })
}

fn missing(seq: u64) -> PgError {
    JournalError::Corrupt { seq, reason: "record is missing: the chain has a gap".into() }.into()
}

/// The chain's hash after record `seq` (the hash of the frame holding it, at its end).
fn hash_at(c: &mut Client, seq: u64) -> Result<[u8; HASH_LEN], PgError> {
    let row = c
        .query_opt(
            "SELECT last_seq, hash FROM railyard_frames WHERE first_seq <= $1 AND last_seq >= $1",
            &[&sql_seq(seq)?],
        )?
        .ok_or_else(|| missing(seq))?;
    if seq_of(row.get(0)) != seq {
        return Err(PgError::Invalid(format!("record {seq} is inside a frame; snapshots follow a whole append")));
    }
    hash_of(row.get(1), seq)
}

/// The chain's hash before the frame starting at `first`.
fn hash_before(c: &mut Client, first: u64) -> Result<[u8; HASH_LEN], PgError> {
    if first == 1 {
        return Ok(GENESIS);
    }
    let row = c
        .query_opt("SELECT hash FROM railyard_frames WHERE last_seq = $1", &[&sql_seq(first - 1)?])?
        .ok_or_else(|| missing(first - 1))?;
    hash_of(row.get(0), first - 1)
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::{PgAppend, PgJournal};

    /// A node frozen in the middle of an append holds the tip row's lock; on a bounded
    /// connection the server ends that transaction after the bound, and another node's append
    /// goes through (without the bound it would wait until the frozen node woke).
    #[test]
    fn a_transaction_left_idle_by_a_frozen_node_holds_up_no_other_append() {
        let cluster = crate::cluster::Cluster::start();
        let frozen = PgJournal::connect_bounded(&cluster.url, Duration::from_millis(300)).unwrap();
        let other = PgJournal::connect(&cluster.url).unwrap();
        let held = frozen.with_client(|c| {
            let mut tx = c.transaction()?;
            tx.query_one("SELECT seq FROM railyard_tip FOR UPDATE", &[])?;
            // Frozen here, the tip row locked, while another node appends.
            let (done, appended) = std::sync::mpsc::channel();
            let started = Instant::now();
            let url = cluster.url.clone();
            std::thread::spawn(move || {
                let other = PgJournal::connect(&url).unwrap();
                let _ = done.send(other.append(&PgAppend { payloads: vec![b"x".to_vec()], ..PgAppend::default() }));
            });
            let outcome = appended.recv_timeout(Duration::from_secs(10)).expect("the other append waits no longer");
            assert!(outcome.is_ok(), "{outcome:?}");
            assert!(started.elapsed() >= Duration::from_millis(250), "it did wait for the lock first");
            Ok(tx.commit())
        });
        assert!(matches!(held, Ok(Err(_)) | Err(_)), "the frozen transaction was ended: {held:?}");
        // Woken, the frozen node connects again and sees the other node's record.
        assert_eq!(frozen.tip().unwrap().0, 1);
        assert_eq!(other.tip().unwrap().0, 1);
    }
}
