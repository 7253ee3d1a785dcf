//! Reads of the history store: finished work, indexes and counters, written by appends in the
//! same transaction as their records.

use crate::{HistoryEntry, Journal, JournalError};

impl Journal {
    /// The history store's value at `key`.
    pub fn history(&self, key: &[u8]) -> Result<Option<Vec<u8>>, JournalError> {
        Ok(self.inner.store.history_many(&[key.to_vec()])?.pop().flatten())
    }

    /// Several history values in one read, in the order of `keys`.
    pub fn history_many(&self, keys: &[Vec<u8>]) -> Result<Vec<Option<Vec<u8>>>, JournalError> {
        self.inner.store.history_many(keys)
    }

    /// Up to `count_max` history entries whose key starts with `prefix` and sorts after
    /// `after` (the whole prefix when `None`), in key order: for listings and rolling scans.
    pub fn history_scan(
        &self,
        prefix: &[u8],
        after: Option<&[u8]>,
        count_max: usize,
    ) -> Result<Vec<HistoryEntry>, JournalError> {
        self.inner.store.history_scan(prefix, after, count_max)
    }

    /// The history store's u128 counter at `key` (0 when absent).
    pub fn history_counter(&self, key: &[u8]) -> Result<u128, JournalError> {
        Ok(self.history(key)?.map_or(0, |v| crate::decode_counter(&v)))
    }

    /// For each prefix, whether any history key starts with it: one read for all (intake
    /// checks a whole batch's references at once).
    pub fn history_prefixes_used(&self, prefixes: &[Vec<u8>]) -> Result<Vec<bool>, JournalError> {
        Ok(self.inner.store.history_keys_many(prefixes, 1)?.iter().map(|keys| !keys.is_empty()).collect())
    }

    /// For each prefix, up to `count_max` keys that start with it, in one read (the guards
    /// look up a batch's destinations at once).
    pub fn history_keys_many(&self, prefixes: &[Vec<u8>], count_max: usize) -> Result<Vec<Vec<Vec<u8>>>, JournalError> {
        self.inner.store.history_keys_many(prefixes, count_max)
    }
}
