//! The schema, created and migrated by the binary: versioned migrations applied in order, each
//! in the same transaction as its version row, under an advisory lock so that nodes starting
//! together migrate once. A database whose version is newer than this build knows is refused.

use postgres::Client;

use crate::PgError;

/// The advisory lock every migrating node takes (an arbitrary constant of railyard's).
const MIGRATION_LOCK: i64 = 0x7261_696c_7961_7264; // "railyard"

/// Every migration, in order. A released migration is never edited: a change is a new one.
const MIGRATIONS: &[(i32, &str)] = &[
    (
        1,
        "CREATE TABLE railyard_frames (
         first_seq BIGINT PRIMARY KEY CHECK (first_seq >= 1),
         last_seq BIGINT NOT NULL UNIQUE CHECK (last_seq >= first_seq),
         hash BYTEA NOT NULL,
         body BYTEA NOT NULL
     );
     CREATE TABLE railyard_tip (
         id BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (id),
         seq BIGINT NOT NULL,
         hash BYTEA NOT NULL
     );
     INSERT INTO railyard_tip (seq, hash) VALUES (0, decode(repeat('00', 32), 'hex'));
     CREATE TABLE railyard_idempotency (
         merchant TEXT NOT NULL,
         key TEXT NOT NULL,
         batch BYTEA NOT NULL,
         body_hash BYTEA NOT NULL,
         PRIMARY KEY (merchant, key)
     );
     CREATE TABLE railyard_history (key BYTEA PRIMARY KEY, value BYTEA NOT NULL);
     CREATE TABLE railyard_snapshots (seq BIGINT PRIMARY KEY, body BYTEA NOT NULL);
     CREATE TABLE railyard_leases (
         name TEXT PRIMARY KEY,
         holder TEXT NOT NULL,
         token BIGINT NOT NULL CHECK (token >= 1),
         expires_at TIMESTAMPTZ NOT NULL
     );",
    ),
    // The lease token each frame was appended under (NULL: no lease), so an audit can show
    // that no frame was written under a token older than one already used.
    (2, "ALTER TABLE railyard_frames ADD COLUMN token BIGINT;"),
    // Every lease a frame was appended under, as `name=token,…` (a node may act under
    // several: the coordinator's and its rails'); `token` keeps the first one's.
    (3, "ALTER TABLE railyard_frames ADD COLUMN fences TEXT;"),
];

/// The schema version this build writes.
pub const SCHEMA_VERSION: i32 = MIGRATIONS[MIGRATIONS.len() - 1].0;

/// Applies the migrations the database lacks; returns the version it is at.
pub(crate) fn migrate(client: &mut Client) -> Result<i32, PgError> {
    let mut tx = client.transaction()?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS railyard_schema (
             version INT PRIMARY KEY,
             applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
         )",
    )?;
    let current: i32 = tx.query_one("SELECT coalesce(max(version), 0) FROM railyard_schema", &[])?.get(0);
    if current > SCHEMA_VERSION {
        return Err(PgError::Schema(format!(
            "the database is at schema version {current}, newer than this railyard's {SCHEMA_VERSION}: run a railyard at least as new as the one that migrated it"
        )));
    }
    for (version, sql) in MIGRATIONS.iter().filter(|(version, _)| *version > current) {
        tx.batch_execute(sql).map_err(|e| PgError::Schema(format!("migration {version}: {e}")))?;
        tx.execute("INSERT INTO railyard_schema (version) VALUES ($1)", &[version])?;
    }
    tx.commit()?;
    Ok(SCHEMA_VERSION)
}
