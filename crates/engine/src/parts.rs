//! A snapshot's bytes in parts (see `journal::Replica::encode`): postcard flavors that write
//! the state into parts of about `journal::SNAPSHOT_PART_BYTES` and read it back from them,
//! so that no buffer of the whole state's size is ever allocated (and freed).
//!
//! The writer never splits a run of bytes postcard writes at once (a string's or byte
//! string's bytes, a varint) across two parts, so the reader can lend any such run from one
//! part. The parts' concatenation is exactly `postcard::to_stdvec`'s output.

use postcard::{Error, de_flavors, ser_flavors};
use serde::{Deserialize, Serialize};

/// `value` in parts after the bytes of `head`.
pub(crate) fn to_parts<T: Serialize + ?Sized>(head: &[u8], value: &T) -> Vec<Vec<u8>> {
    let mut writer = PartsWriter { parts: Vec::new(), limit: journal::SNAPSHOT_PART_BYTES };
    writer.room(head.len()).extend_from_slice(head);
    postcard::serialize_with_flavor(value, writer).expect("state serializes")
}

/// The value whose bytes start `skip` bytes into `parts`' first part.
pub(crate) fn from_parts<'de, T: Deserialize<'de>>(parts: &'de [Vec<u8>], skip: usize) -> postcard::Result<T> {
    let mut deserializer = postcard::Deserializer::from_flavor(PartsReader { parts, part: 0, at: skip });
    T::deserialize(&mut deserializer)
}

struct PartsWriter {
    parts: Vec<Vec<u8>>,
    limit: usize,
}

impl PartsWriter {
    /// The part `len` more bytes go into: the last, or a new one when they would not fit.
    fn room(&mut self, len: usize) -> &mut Vec<u8> {
        let full = self.parts.last().is_none_or(|part| !part.is_empty() && part.len() + len > self.limit);
        if full {
            self.parts.push(Vec::with_capacity(self.limit.max(len)));
        }
        self.parts.last_mut().expect("a part was just made")
    }
}

impl ser_flavors::Flavor for PartsWriter {
    type Output = Vec<Vec<u8>>;

    fn try_push(&mut self, byte: u8) -> postcard::Result<()> {
        self.room(1).push(byte);
        Ok(())
    }

    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        self.room(data.len()).extend_from_slice(data);
        Ok(())
    }

    fn finalize(self) -> postcard::Result<Vec<Vec<u8>>> {
        Ok(self.parts)
    }
}

struct PartsReader<'de> {
    parts: &'de [Vec<u8>],
    part: usize,
    at: usize,
}

impl<'de> PartsReader<'de> {
    /// The unread rest of the current part, moving past parts read to their end.
    fn rest(&mut self) -> postcard::Result<&'de [u8]> {
        loop {
            let part = self.parts.get(self.part).ok_or(Error::DeserializeUnexpectedEnd)?;
            if let Some(rest) = part.get(self.at..).filter(|rest| !rest.is_empty()) {
                return Ok(rest);
            }
            self.part += 1;
            self.at = 0;
        }
    }
}

impl<'de> de_flavors::Flavor<'de> for PartsReader<'de> {
    type Remainder = ();
    type Source = &'de [Vec<u8>];

    fn pop(&mut self) -> postcard::Result<u8> {
        let byte = self.rest()?[0];
        self.at += 1;
        Ok(byte)
    }

    fn try_take_n(&mut self, count: usize) -> postcard::Result<&'de [u8]> {
        if count == 0 {
            return Ok(&[]);
        }
        // The writer kept every run in one part: one that spans two is damage.
        let run = self.rest()?.get(..count).ok_or(Error::DeserializeUnexpectedEnd)?;
        self.at += count;
        Ok(run)
    }

    fn finalize(self) -> postcard::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Sample {
        names: Vec<String>,
        numbers: Vec<u128>,
        blobs: Vec<Vec<u8>>,
        text: Vec<(u64, String)>,
    }

    fn sample() -> Sample {
        Sample {
            names: (0..5_000).map(|i| format!("name-{i}-{}", "x".repeat(i % 97))).collect(),
            numbers: (0..20_000u128).map(|i| i * 0x1234_5678_9abc_def1).collect(),
            blobs: (0..50u8).map(|i| vec![i; 1_000 * usize::from(i)]).collect(),
            text: vec![(7, "y".repeat(200_000))],
        }
    }

    #[test]
    fn parts_are_the_plain_encoding_cut_without_splitting_a_run_and_read_back() {
        let value = sample();
        let parts = to_parts(&[9], &value);
        assert!(parts.len() > 10, "a large value is cut into parts ({})", parts.len());
        let mut plain = vec![9];
        plain.extend(postcard::to_stdvec(&value).unwrap());
        assert_eq!(parts.concat(), plain, "the parts join into postcard's own encoding");
        // Every part but one holding a single run longer than the limit stays within it.
        let oversized = parts.iter().filter(|p| p.len() > journal::SNAPSHOT_PART_BYTES).count();
        assert_eq!(oversized, 1, "only the 200,000-byte string's part is over the limit");
        assert_eq!(from_parts::<Sample>(&parts, 1).unwrap(), value);
    }

    #[test]
    fn a_run_cut_across_two_parts_or_cut_short_is_an_error_not_a_panic() {
        let value = sample();
        let plain = postcard::to_stdvec(&value).unwrap();
        // Cut where the writer would not: inside the first name's bytes.
        let cut = vec![plain[..4].to_vec(), plain[4..].to_vec()];
        assert!(from_parts::<Sample>(&cut, 0).is_err());
        let short = vec![plain[..plain.len() / 2].to_vec()];
        assert!(from_parts::<Sample>(&short, 0).is_err());
        assert!(from_parts::<Sample>(&[], 0).is_err());
    }
}
