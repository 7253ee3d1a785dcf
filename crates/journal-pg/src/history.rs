//! The history store on PostgreSQL: reads (by key, by prefix) and the writes of a group.

use journal::HistoryOp;

use crate::{PgError, PgJournal, store};

impl PgJournal {
    /// The values at `keys`, in their order.
    pub fn history_many(&self, keys: &[Vec<u8>]) -> Result<Vec<Option<Vec<u8>>>, PgError> {
        self.with_client(|c| {
            let rows = c.query("SELECT key, value FROM railyard_history WHERE key = ANY($1)", &[&keys])?;
            let mut found: std::collections::HashMap<Vec<u8>, Vec<u8>> =
                rows.into_iter().map(|row| (row.get(0), row.get(1))).collect();
            Ok(keys.iter().map(|key| found.remove(key.as_slice())).collect())
        })
    }

    /// Up to `count_max` entries whose key starts with `prefix` and sorts after `after`.
    pub fn history_scan(
        &self,
        prefix: &[u8],
        after: Option<&[u8]>,
        count_max: usize,
    ) -> Result<Vec<journal::HistoryEntry>, PgError> {
        let limit = i64::try_from(count_max).unwrap_or(i64::MAX);
        let end = store::prefix_end(prefix);
        self.with_client(|c| {
            let rows = c.query(
                "SELECT key, value FROM railyard_history
                 WHERE key >= $1 AND ($2::bytea IS NULL OR key < $2) AND ($3::bytea IS NULL OR key > $3)
                 ORDER BY key LIMIT $4",
                &[&prefix, &end, &after, &limit],
            )?;
            Ok(rows.into_iter().map(|row| (row.get(0), row.get(1))).collect())
        })
    }

    /// For each prefix, up to `count_max` keys that start with it, in key order: one query
    /// for all of them (intake asks for a whole batch's references at once).
    pub fn history_keys_many(&self, prefixes: &[Vec<u8>], count_max: usize) -> Result<Vec<Vec<Vec<u8>>>, PgError> {
        let limit = i64::try_from(count_max).unwrap_or(i64::MAX);
        let ends: Vec<Option<Vec<u8>>> = prefixes.iter().map(|prefix| store::prefix_end(prefix)).collect();
        self.with_client(|c| {
            let rows = c.query(
                "SELECT p.i, k.key
                 FROM unnest($1::bytea[], $2::bytea[]) WITH ORDINALITY AS p(prefix, pend, i)
                 CROSS JOIN LATERAL (
                     SELECT key FROM railyard_history
                     WHERE key >= p.prefix AND (p.pend IS NULL OR key < p.pend)
                     ORDER BY key LIMIT $3
                 ) k
                 ORDER BY p.i, k.key",
                &[&prefixes, &ends, &limit],
            )?;
            let mut out = vec![Vec::new(); prefixes.len()];
            for row in rows {
                let at = usize::try_from(row.get::<_, i64>(0) - 1).expect("ordinality starts at 1");
                out[at].push(row.get(1));
            }
            Ok(out)
        })
    }

    pub fn history(&self, key: &[u8]) -> Result<Option<Vec<u8>>, PgError> {
        self.with_client(|c| {
            Ok(c.query_opt("SELECT value FROM railyard_history WHERE key = $1", &[&key])?.map(|row| row.get(0)))
        })
    }
}

/// The group's history operations in three statements, whatever their number: the counters
/// they add to read at once (`FOR UPDATE`), every operation applied in order in memory, and
/// each key's final value written by one upsert (a statement per operation made the engine's
/// commits on PostgreSQL a hundred times slower than the records alone).
pub(crate) fn write_history(tx: &mut postgres::Transaction<'_>, ops: &[&HistoryOp]) -> Result<(), PgError> {
    if ops.is_empty() {
        return Ok(());
    }
    let added: Vec<&[u8]> = ops
        .iter()
        .filter_map(|op| match op {
            HistoryOp::Add { key, .. } => Some(key.as_slice()),
            HistoryOp::Put { .. } => None,
        })
        .collect();
    let mut values: std::collections::BTreeMap<&[u8], Vec<u8>> = std::collections::BTreeMap::new();
    let mut current: std::collections::HashMap<Vec<u8>, u128> = std::collections::HashMap::new();
    if !added.is_empty() {
        // Sorted, so that concurrent writers lock rows in one order.
        let mut keys = added.clone();
        keys.sort_unstable();
        keys.dedup();
        for row in
            tx.query("SELECT key, value FROM railyard_history WHERE key = ANY($1) ORDER BY key FOR UPDATE", &[&keys])?
        {
            current.insert(row.get(0), counter(row.get(1)));
        }
    }
    for op in ops {
        match op {
            HistoryOp::Put { key, value } => {
                values.insert(key.as_slice(), value.clone());
            }
            HistoryOp::Add { key, amount } => {
                // The latest value of the key in this group (a put or an add), else the stored one.
                let base = match values.get(key.as_slice()) {
                    Some(value) => counter(value.clone()),
                    None => current.get(key.as_slice()).copied().unwrap_or(0),
                };
                values.insert(key.as_slice(), base.saturating_add(*amount).to_le_bytes().to_vec());
            }
        }
    }
    let (keys, values): (Vec<&[u8]>, Vec<Vec<u8>>) = values.into_iter().unzip();
    tx.execute(
        "INSERT INTO railyard_history (key, value) SELECT * FROM unnest($1::bytea[], $2::bytea[])
         ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
        &[&keys, &values],
    )?;
    Ok(())
}

pub(crate) fn counter(value: Vec<u8>) -> u128 {
    value.try_into().map(u128::from_le_bytes).unwrap_or(0)
}
