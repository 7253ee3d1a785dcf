//! The on-disk form of journal records and snapshots, and the checks that make corruption
//! visible.
//!
//! Records are stored in frames, one frame per commit, keyed by the frame's first sequence
//! number (one B-tree insert and one contiguous write for a commit of a thousand records):
//!
//! ```text
//! frame  = previous hash (32) ‖ count (u32) ‖ record* ‖ frame hash (32)
//! record = payload length (u32) ‖ crc32c(seq ‖ length ‖ payload) (u32) ‖ payload
//! frame hash = blake3(first seq ‖ every byte of the frame before the frame hash)
//! ```
//!
//! Each record carries its own checksum (naming the exact sequence number of a damaged
//! record), and each frame carries the hash of everything before it: the frame hash covers the
//! previous hash, so the whole journal is one hash chain, and a changed, missing or reordered
//! record breaks it. Hashing a frame at once (rather than each record) lets blake3 use its
//! wide SIMD path; it was a fifth of the commit time when done per record.

use crate::JournalError;

pub const HASH_LEN: usize = 32;
pub const GENESIS: [u8; HASH_LEN] = [0; HASH_LEN];
const FRAME_HEADER: usize = HASH_LEN + 4;
pub(crate) const RECORD_HEADER: usize = 8;

/// One journal record, verified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub seq: u64,
    pub payload: Vec<u8>,
}

fn record_crc(seq: u64, payload: &[u8]) -> u32 {
    let len = u32::try_from(payload.len()).expect("records are far below 4 GiB");
    let crc = crc32c::crc32c(&seq.to_le_bytes());
    let crc = crc32c::crc32c_append(crc, &len.to_le_bytes());
    crc32c::crc32c_append(crc, payload)
}

fn frame_hash(first: u64, body: &[u8]) -> [u8; HASH_LEN] {
    let mut hasher = blake3::Hasher::new();
    hasher.update(&first.to_le_bytes());
    hasher.update(body);
    *hasher.finalize().as_bytes()
}

pub fn frame_len(payloads: &[&[u8]]) -> usize {
    FRAME_HEADER + payloads.iter().map(|p| RECORD_HEADER + p.len()).sum::<usize>() + HASH_LEN
}

/// Writes the frame into `out` (exactly `frame_len` bytes, so that it can be written straight
/// into the storage page) and returns its frame hash, the chain's new head.
pub fn write_frame(out: &mut [u8], first: u64, prev: &[u8; HASH_LEN], payloads: &[&[u8]]) -> [u8; HASH_LEN] {
    assert_eq!(out.len(), frame_len(payloads), "frame buffer has the wrong size");
    let count = u32::try_from(payloads.len()).expect("frames hold fewer than 2^32 records");
    out[..HASH_LEN].copy_from_slice(prev);
    out[HASH_LEN..FRAME_HEADER].copy_from_slice(&count.to_le_bytes());
    let mut at = FRAME_HEADER;
    for (seq, payload) in (first..).zip(payloads) {
        let len = u32::try_from(payload.len()).expect("records are far below 4 GiB");
        out[at..at + 4].copy_from_slice(&len.to_le_bytes());
        out[at + 4..at + RECORD_HEADER].copy_from_slice(&record_crc(seq, payload).to_le_bytes());
        at += RECORD_HEADER;
        out[at..at + payload.len()].copy_from_slice(payload);
        at += payload.len();
    }
    let hash = frame_hash(first, &out[..at]);
    out[at..].copy_from_slice(&hash);
    hash
}

/// The frame of `payloads` starting at `first` after `prev`, and its hash (the chain's new
/// head): for a store that cannot write into its own page.
pub fn encode_frame(first: u64, prev: &[u8; HASH_LEN], payloads: &[&[u8]]) -> (Vec<u8>, [u8; HASH_LEN]) {
    let mut value = vec![0; frame_len(payloads)];
    let hash = write_frame(&mut value, first, prev, payloads);
    (value, hash)
}

/// A verified frame, yielding its records in order.
pub struct Frame<'a> {
    next_seq: u64,
    left: u32,
    rest: &'a [u8],
    hash: [u8; HASH_LEN],
}

impl std::fmt::Debug for Frame<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Frame").field("next_seq", &self.next_seq).field("left", &self.left).finish()
    }
}

impl<'a> Frame<'a> {
    /// Opens and verifies the frame stored under `first`. `expected_prev` is the hash the chain
    /// ended with before it, or `None` to take the frame's word for it (its content is still
    /// verified). On damage, the error names the first record whose checksum fails, or the
    /// frame's first record when the damage is in the frame's own header or hash.
    pub fn open(
        first: u64,
        expected_prev: Option<&[u8; HASH_LEN]>,
        value: &'a [u8],
    ) -> Result<Frame<'a>, JournalError> {
        let corrupt = |seq: u64, reason: &str| JournalError::Corrupt { seq, reason: reason.to_owned() };
        if value.len() < FRAME_HEADER + HASH_LEN {
            return Err(corrupt(first, "frame is shorter than its header"));
        }
        let (body, stored) = value.split_at(value.len() - HASH_LEN);
        let hash = frame_hash(first, body);
        let mut frame = Frame {
            next_seq: first,
            left: u32::from_le_bytes(body[HASH_LEN..FRAME_HEADER].try_into().expect("length checked")),
            rest: &body[FRAME_HEADER..],
            hash,
        };
        if hash != stored {
            // Find the record to blame; if every record checks out, the frame header is damaged.
            let mut probe = Frame { hash, ..frame };
            while probe.next_record()?.is_some() {}
            return Err(corrupt(first, "frame hash mismatch: the frame changed after it was written"));
        }
        if frame.left == 0 {
            return Err(corrupt(first, "frame holds no records"));
        }
        if expected_prev.is_some_and(|expected| expected != &body[..HASH_LEN]) {
            return Err(corrupt(
                first,
                "previous hash does not match the chain: a record before it is missing or changed",
            ));
        }
        frame.hash = hash;
        Ok(frame)
    }

    /// The sequence number of the frame's last record.
    pub fn last_seq(&self) -> u64 {
        self.next_seq + u64::from(self.left) - 1
    }

    /// The frame hash: the chain's head after this frame's last record.
    pub fn hash(&self) -> [u8; HASH_LEN] {
        self.hash
    }

    /// The next record, its checksum verified; `Ok(None)` at the end of a well-formed frame.
    pub fn next_record(&mut self) -> Result<Option<Record>, JournalError> {
        let seq = self.next_seq;
        let corrupt = |reason: &str| JournalError::Corrupt { seq, reason: reason.to_owned() };
        if self.left == 0 {
            return if self.rest.is_empty() {
                Ok(None)
            } else {
                Err(corrupt("trailing bytes after the frame's last record"))
            };
        }
        if self.rest.len() < RECORD_HEADER {
            return Err(corrupt("record header is cut short"));
        }
        let len = u32::from_le_bytes(self.rest[..4].try_into().expect("length checked")) as usize;
        let crc = u32::from_le_bytes(self.rest[4..RECORD_HEADER].try_into().expect("length checked"));
        let payload = self
            .rest
            .get(RECORD_HEADER..RECORD_HEADER + len)
            .ok_or_else(|| corrupt("record length runs past the frame"))?;
        if record_crc(seq, payload) != crc {
            return Err(corrupt("checksum mismatch: the record's bytes changed after it was written"));
        }
        self.rest = &self.rest[RECORD_HEADER + len..];
        self.left -= 1;
        self.next_seq += 1;
        Ok(Some(Record { seq, payload: payload.to_vec() }))
    }
}

/// Cuts a commit's records into runs whose encoded frame is at most `bytes_max` (at least one
/// record each).
pub fn frames<'a, 'b>(records: &'b [&'a [u8]], bytes_max: usize) -> impl Iterator<Item = &'b [&'a [u8]]> {
    let mut rest = records;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let mut bytes = frame_len(&[]);
        let mut take = 0;
        while take < rest.len() {
            let next = bytes + RECORD_HEADER + rest[take].len();
            if take > 0 && next > bytes_max {
                break;
            }
            bytes = next;
            take += 1;
        }
        let (chunk, tail) = rest.split_at(take);
        rest = tail;
        Some(chunk)
    })
}

/// Collects records from consecutive frames read in order: each frame verified against the
/// chain and required to start where the last ended; records before `from` skipped, at most
/// `count_max` kept. Shared by the journal's stores.
#[derive(Debug)]
pub struct RangeReader {
    prev: [u8; HASH_LEN],
    expected: u64,
    from: u64,
    count_max: usize,
    out: Vec<Record>,
}

impl RangeReader {
    /// A read from `from` whose first frame starts at `start`, after the chain's hash `prev`.
    pub fn new(start: u64, prev: [u8; HASH_LEN], from: u64, count_max: usize) -> RangeReader {
        RangeReader { prev, expected: start, from, count_max, out: Vec::new() }
    }

    /// Takes the next frame (stored under `first`); `true` once `count_max` records are in.
    pub fn frame(&mut self, first: u64, value: &[u8]) -> Result<bool, JournalError> {
        if first != self.expected {
            return Err(JournalError::Corrupt {
                seq: self.expected,
                reason: "record is missing: the chain has a gap".into(),
            });
        }
        let mut frame = Frame::open(first, Some(&self.prev), value)?;
        (self.expected, self.prev) = (frame.last_seq() + 1, frame.hash());
        while let Some(record) = frame.next_record()? {
            if record.seq >= self.from {
                self.out.push(record);
                if self.out.len() >= self.count_max {
                    return Ok(true);
                }
            }
        }
        Ok(false)
    }

    pub fn records(self) -> Vec<Record> {
        self.out
    }

    /// The sequence number the next frame must start at.
    pub fn next_seq(&self) -> u64 {
        self.expected
    }

    /// The chain's hash after the last frame taken.
    pub fn head(&self) -> [u8; HASH_LEN] {
        self.prev
    }
}

/// The checksum of a snapshot's state: blake3 over its parts in order (the same as over
/// their concatenation, which is never built).
pub fn snapshot_checksum(parts: &[Vec<u8>]) -> [u8; HASH_LEN] {
    let mut hasher = blake3::Hasher::new();
    for part in parts {
        hasher.update(part);
    }
    *hasher.finalize().as_bytes()
}

/// A stored snapshot's header: checksum of the state ‖ hash of the record it follows ‖ the
/// number of parts (u32 LE). The parts are stored beside it.
pub fn encode_snapshot_header(record_hash: &[u8; HASH_LEN], parts: &[Vec<u8>]) -> Vec<u8> {
    let count = u32::try_from(parts.len()).expect("a snapshot has fewer than 2^32 parts");
    let mut value = Vec::with_capacity(SNAPSHOT_HEADER);
    value.extend_from_slice(&snapshot_checksum(parts));
    value.extend_from_slice(record_hash);
    value.extend_from_slice(&count.to_le_bytes());
    value
}

/// A snapshot as one value, for a store that keeps it in one place: its header, then each
/// part's length (u32 LE) and bytes.
pub fn encode_snapshot_blob(record_hash: &[u8; HASH_LEN], parts: &[Vec<u8>]) -> Vec<u8> {
    let mut value = encode_snapshot_header(record_hash, parts);
    value.reserve(parts.iter().map(|p| 4 + p.len()).sum());
    for part in parts {
        let len = u32::try_from(part.len()).expect("a part is far below 4 GiB");
        value.extend_from_slice(&len.to_le_bytes());
        value.extend_from_slice(part);
    }
    value
}

/// The record hash a snapshot blob claims to follow and its parts, after checking its checksum.
pub fn decode_snapshot_blob(seq: u64, value: &[u8]) -> Result<([u8; HASH_LEN], Vec<Vec<u8>>), JournalError> {
    let corrupt = |reason: &str| JournalError::CorruptSnapshot { seq, reason: reason.to_owned() };
    let header = value.get(..SNAPSHOT_HEADER).ok_or_else(|| corrupt("snapshot is shorter than its header"))?;
    let (checksum, record_hash, count) = decode_snapshot_header(seq, header)?;
    let mut rest = &value[SNAPSHOT_HEADER..];
    let mut parts = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let (len, after) = rest.split_at_checked(4).ok_or_else(|| corrupt("a part is cut short"))?;
        let len = u32::from_le_bytes(len.try_into().expect("four bytes")) as usize;
        let (part, after) = after.split_at_checked(len).ok_or_else(|| corrupt("a part is cut short"))?;
        parts.push(part.to_vec());
        rest = after;
    }
    if !rest.is_empty() {
        return Err(corrupt("bytes after its last part"));
    }
    check_snapshot_parts(seq, &checksum, count, &parts)?;
    Ok((record_hash, parts))
}

/// Checks a snapshot's parts, as read, against its header's part count and checksum.
pub fn check_snapshot_parts(
    seq: u64,
    checksum: &[u8; HASH_LEN],
    count: u32,
    parts: &[Vec<u8>],
) -> Result<(), JournalError> {
    let corrupt = |reason: &str| JournalError::CorruptSnapshot { seq, reason: reason.to_owned() };
    if parts.len() != count as usize {
        return Err(corrupt("a part is missing"));
    }
    if snapshot_checksum(parts) != *checksum {
        return Err(corrupt("checksum mismatch"));
    }
    Ok(())
}

/// A stored snapshot header's length.
pub const SNAPSHOT_HEADER: usize = 2 * HASH_LEN + 4;

/// A snapshot header's checksum, the record hash it claims to follow and its part count.
pub fn decode_snapshot_header(seq: u64, value: &[u8]) -> Result<([u8; HASH_LEN], [u8; HASH_LEN], u32), JournalError> {
    if value.len() != SNAPSHOT_HEADER {
        let reason = "its header is not a snapshot header of this railyard version (a journal written by \
                      another version, or damage)";
        return Err(JournalError::CorruptSnapshot { seq, reason: reason.to_owned() });
    }
    let checksum = value[..HASH_LEN].try_into().expect("length checked");
    let record_hash = value[HASH_LEN..2 * HASH_LEN].try_into().expect("length checked");
    let count = u32::from_le_bytes(value[2 * HASH_LEN..].try_into().expect("length checked"));
    Ok((checksum, record_hash, count))
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn frames_respect_the_size_limit_and_keep_every_record_in_order() {
        let records: Vec<Vec<u8>> = (0..50).map(|i| vec![0; (i * 37) % 300]).collect();
        let refs: Vec<&[u8]> = records.iter().map(Vec::as_slice).collect();
        for limit in [1, 100, 500, 4096] {
            let chunks: Vec<_> = frames(&refs, limit).collect();
            assert_eq!(chunks.concat(), refs, "limit {limit}");
            for chunk in &chunks {
                assert!(chunk.len() == 1 || frame_len(chunk) <= limit, "limit {limit}");
            }
        }
    }

    fn decode_all(first: u64, prev: &[u8; HASH_LEN], value: &[u8]) -> Result<Vec<Record>, JournalError> {
        let mut frame = Frame::open(first, Some(prev), value)?;
        let mut out = Vec::new();
        while let Some(record) = frame.next_record()? {
            out.push(record);
        }
        Ok(out)
    }

    #[test]
    fn frames_round_trip() {
        let payloads: [&[u8]; 3] = [b"a", b"", b"ccc"];
        let (value, hash) = encode_frame(7, &GENESIS, &payloads);
        let records = decode_all(7, &GENESIS, &value).unwrap();
        assert_eq!(records.iter().map(|r| r.seq).collect::<Vec<_>>(), [7, 8, 9]);
        assert_eq!(records.iter().map(|r| r.payload.as_slice()).collect::<Vec<_>>(), payloads);
        let frame = Frame::open(7, None, &value).unwrap();
        assert_eq!((frame.last_seq(), frame.hash()), (9, hash));
        let (next, _) = encode_frame(10, &hash, &payloads);
        assert!(decode_all(10, &hash, &next).is_ok());
        assert!(decode_all(10, &GENESIS, &next).is_err(), "a frame that does not follow the chain is refused");
    }

    #[test]
    fn any_changed_byte_is_detected_and_blamed_on_its_record() {
        let payloads: [&[u8]; 3] = [b"first", b"second", b"third"];
        let (value, _) = encode_frame(7, &GENESIS, &payloads);
        let second_payload = value.windows(6).position(|w| w == b"second").unwrap();
        for i in 0..value.len() {
            let mut bad = value.clone();
            bad[i] ^= 0x01;
            let error = decode_all(7, &GENESIS, &bad).unwrap_err();
            assert!(matches!(error, JournalError::Corrupt { seq: 7..=10, .. }), "byte {i}: {error}");
            if (second_payload..second_payload + 6).contains(&i) {
                assert!(matches!(error, JournalError::Corrupt { seq: 8, .. }), "byte {i}: {error}");
            }
        }
        assert!(decode_all(8, &GENESIS, &value).is_err(), "a frame moved to another sequence number is detected");
        let mut longer = value.clone();
        longer.insert(40, 0);
        assert!(decode_all(7, &GENESIS, &longer).is_err(), "inserted bytes are detected");
    }

    #[test]
    fn a_snapshot_blob_keeps_its_parts_and_refuses_damage_and_other_layouts() {
        let parts = vec![b"first".to_vec(), Vec::new(), b"third part".to_vec()];
        let blob = encode_snapshot_blob(&[7; HASH_LEN], &parts);
        assert_eq!(decode_snapshot_blob(3, &blob).unwrap(), ([7; HASH_LEN], parts.clone()));
        let mut flipped = blob.clone();
        *flipped.last_mut().unwrap() ^= 1;
        assert!(decode_snapshot_blob(3, &flipped).is_err(), "a changed byte");
        assert!(decode_snapshot_blob(3, &blob[..blob.len() - 1]).is_err(), "a part cut short");
        let mut longer = blob.clone();
        longer.push(0);
        assert!(decode_snapshot_blob(3, &longer).is_err(), "bytes after the last part");
        // The layout before parts: checksum, record hash, then the state itself.
        let mut old = blake3::hash(b"state").as_bytes().to_vec();
        old.extend_from_slice(&[7; HASH_LEN]);
        old.extend_from_slice(b"state");
        let error = decode_snapshot_header(3, &old).unwrap_err().to_string();
        assert!(error.contains("another version"), "{error}");
    }
}
