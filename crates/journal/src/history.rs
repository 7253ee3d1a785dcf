//! Reads of the history store (the `HISTORY` table in the journal's redb file): finished
//! work, indexes and counters, written by appends in the same transaction as their records.

use redb::ReadableDatabase;

use crate::{HISTORY, HistoryEntry, Journal, JournalError, writer};

impl Journal {
    /// The history store's value at `key`.
    pub fn history(&self, key: &[u8]) -> Result<Option<Vec<u8>>, JournalError> {
        let txn = self.inner.db.begin_read()?;
        let table = txn.open_table(HISTORY)?;
        Ok(table.get(key)?.map(|v| v.value().to_vec()))
    }

    /// Several history values in one read transaction, in the order of `keys`.
    pub fn history_many(&self, keys: &[Vec<u8>]) -> Result<Vec<Option<Vec<u8>>>, JournalError> {
        let txn = self.inner.db.begin_read()?;
        let table = txn.open_table(HISTORY)?;
        keys.iter().map(|key| Ok(table.get(key.as_slice())?.map(|v| v.value().to_vec()))).collect()
    }

    /// Up to `count_max` history entries whose key starts with `prefix` and sorts after
    /// `after` (the whole prefix when `None`), in key order: for listings and rolling scans.
    pub fn history_scan(
        &self,
        prefix: &[u8],
        after: Option<&[u8]>,
        count_max: usize,
    ) -> Result<Vec<HistoryEntry>, JournalError> {
        let txn = self.inner.db.begin_read()?;
        let table = txn.open_table(HISTORY)?;
        let mut out = Vec::new();
        let range = match after {
            Some(after) => table.range::<&[u8]>((std::ops::Bound::Excluded(after), std::ops::Bound::Unbounded))?,
            None => table.range::<&[u8]>(prefix..)?,
        };
        for entry in range {
            let (key, value) = entry?;
            if !key.value().starts_with(prefix) || out.len() >= count_max {
                break;
            }
            out.push((key.value().to_vec(), value.value().to_vec()));
        }
        Ok(out)
    }

    /// The history store's u128 counter at `key` (0 when absent).
    pub fn history_counter(&self, key: &[u8]) -> Result<u128, JournalError> {
        Ok(self.history(key)?.map_or(0, |v| writer::decode_counter(&v)))
    }

    /// For each prefix, whether any history key starts with it: one read transaction for all
    /// (intake checks a whole batch's references at once).
    pub fn history_prefixes_used(&self, prefixes: &[Vec<u8>]) -> Result<Vec<bool>, JournalError> {
        let txn = self.inner.db.begin_read()?;
        let table = txn.open_table(HISTORY)?;
        prefixes
            .iter()
            .map(|prefix| {
                let mut range = table.range::<&[u8]>(prefix.as_slice()..)?;
                Ok(match range.next() {
                    Some(entry) => entry?.0.value().starts_with(prefix),
                    None => false,
                })
            })
            .collect()
    }

    /// For each prefix, up to `count_max` keys that start with it, in one read transaction
    /// (the guards look up a batch's destinations at once).
    pub fn history_keys_many(&self, prefixes: &[Vec<u8>], count_max: usize) -> Result<Vec<Vec<Vec<u8>>>, JournalError> {
        let txn = self.inner.db.begin_read()?;
        let table = txn.open_table(HISTORY)?;
        prefixes
            .iter()
            .map(|prefix| {
                let mut keys = Vec::new();
                for entry in table.range::<&[u8]>(prefix.as_slice()..)? {
                    let key = entry?.0.value().to_vec();
                    if !key.starts_with(prefix) || keys.len() >= count_max {
                        break;
                    }
                    keys.push(key);
                }
                Ok(keys)
            })
            .collect()
    }
}
