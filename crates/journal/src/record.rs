//! The on-disk form of a journal record and of a snapshot, and the hashes that make corruption
//! visible: each record commits to its sequence number, its payload and the previous record's
//! hash, so a changed byte or a missing record breaks the chain at a known sequence number.

use crate::JournalError;

pub(crate) const HASH_LEN: usize = 32;
pub(crate) const GENESIS: [u8; HASH_LEN] = [0; HASH_LEN];

/// One journal record, verified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub seq: u64,
    /// This record's chain hash: blake3(seq ‖ previous hash ‖ payload).
    pub hash: [u8; HASH_LEN],
    pub payload: Vec<u8>,
}

pub(crate) fn chain_hash(seq: u64, prev: &[u8; HASH_LEN], payload: &[u8]) -> [u8; HASH_LEN] {
    let mut hasher = blake3::Hasher::new();
    hasher.update(&seq.to_le_bytes());
    hasher.update(prev);
    hasher.update(payload);
    *hasher.finalize().as_bytes()
}

/// Stored value: previous hash ‖ own hash ‖ payload.
pub(crate) fn encode(seq: u64, prev: &[u8; HASH_LEN], payload: &[u8]) -> (Vec<u8>, [u8; HASH_LEN]) {
    let hash = chain_hash(seq, prev, payload);
    let mut value = Vec::with_capacity(2 * HASH_LEN + payload.len());
    value.extend_from_slice(prev);
    value.extend_from_slice(&hash);
    value.extend_from_slice(payload);
    (value, hash)
}

/// Decodes and verifies a stored value against the hash the previous record ended with.
pub(crate) fn decode(seq: u64, expected_prev: &[u8; HASH_LEN], value: &[u8]) -> Result<Record, JournalError> {
    let corrupt = |reason: &str| JournalError::Corrupt { seq, reason: reason.to_owned() };
    if value.len() < 2 * HASH_LEN {
        return Err(corrupt("record is shorter than its header"));
    }
    let (prev, rest) = value.split_at(HASH_LEN);
    let (hash, payload) = rest.split_at(HASH_LEN);
    if prev != expected_prev {
        return Err(corrupt("previous-record hash does not match the chain"));
    }
    let computed = chain_hash(seq, expected_prev, payload);
    if computed != hash {
        return Err(corrupt("checksum mismatch: the record's bytes changed after it was written"));
    }
    Ok(Record { seq, hash: computed, payload: payload.to_vec() })
}

/// Reads the previous hash a stored value claims, without verifying it.
pub(crate) fn claimed_prev(seq: u64, value: &[u8]) -> Result<[u8; HASH_LEN], JournalError> {
    value
        .get(..HASH_LEN)
        .and_then(|bytes| bytes.try_into().ok())
        .ok_or_else(|| JournalError::Corrupt { seq, reason: "record is shorter than its header".into() })
}

/// Stored snapshot: blake3(state) ‖ hash of the record it follows ‖ state.
pub(crate) fn encode_snapshot(record_hash: &[u8; HASH_LEN], state: &[u8]) -> Vec<u8> {
    let mut value = Vec::with_capacity(2 * HASH_LEN + state.len());
    value.extend_from_slice(blake3::hash(state).as_bytes());
    value.extend_from_slice(record_hash);
    value.extend_from_slice(state);
    value
}

/// Returns the state and the record hash it claims to follow, after checking its checksum.
pub(crate) fn decode_snapshot(seq: u64, value: &[u8]) -> Result<([u8; HASH_LEN], Vec<u8>), JournalError> {
    let corrupt = |reason: &str| JournalError::CorruptSnapshot { seq, reason: reason.to_owned() };
    if value.len() < 2 * HASH_LEN {
        return Err(corrupt("snapshot is shorter than its header"));
    }
    let (checksum, rest) = value.split_at(HASH_LEN);
    let (record_hash, state) = rest.split_at(HASH_LEN);
    if blake3::hash(state).as_bytes() != checksum {
        return Err(corrupt("checksum mismatch"));
    }
    Ok((record_hash.try_into().expect("split at HASH_LEN"), state.to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_changed_byte_is_detected() {
        let (value, hash) = encode(7, &GENESIS, b"payload");
        assert_eq!(decode(7, &GENESIS, &value).unwrap().hash, hash);
        for i in 0..value.len() {
            let mut bad = value.clone();
            bad[i] ^= 0x01;
            let error = decode(7, &GENESIS, &bad).unwrap_err();
            assert!(matches!(error, JournalError::Corrupt { seq: 7, .. }), "byte {i}: {error}");
        }
        assert!(decode(8, &GENESIS, &value).is_err(), "a record moved to another sequence number is detected");
    }
}
