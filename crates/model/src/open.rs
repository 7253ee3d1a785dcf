//! `Payments`: the book's open payments by id. Every arrow of every payment looks its record up
//! two or three times, so this is a hash map (with a fixed hasher: ids are railyard's own, not
//! an adversary's, and a fixed hasher keeps runs repeatable) rather than a B-tree, whose lookups
//! were most of the book's cost. Records are boxed so the table moves pointers when it grows.
//!
//! What reads the whole set sees it in id order (sorted on demand, off the hot path), and it
//! encodes exactly as the ordered map it replaces: equal books encode and hash alike whatever
//! order their payments arrived in, and snapshots keep their format.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::book::PaymentRecord;
use crate::ids::PaymentId;

/// Open payments by id (see the module's note).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Payments(HashMap<PaymentId, Box<PaymentRecord>, BuildHasherDefault<IdHasher>>);

impl Payments {
    pub fn get(&self, id: &PaymentId) -> Option<&PaymentRecord> {
        self.0.get(id).map(|record| &**record)
    }

    pub fn get_mut(&mut self, id: &PaymentId) -> Option<&mut PaymentRecord> {
        self.0.get_mut(id).map(|record| &mut **record)
    }

    pub fn contains_key(&self, id: &PaymentId) -> bool {
        self.0.contains_key(id)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The open payments in id order.
    pub fn iter(&self) -> std::vec::IntoIter<(&PaymentId, &PaymentRecord)> {
        let mut entries: Vec<(&PaymentId, &PaymentRecord)> = self.0.iter().map(|(id, r)| (id, &**r)).collect();
        entries.sort_unstable_by_key(|(id, _)| **id);
        entries.into_iter()
    }

    /// The open payments' records in id order.
    pub fn values(&self) -> impl Iterator<Item = &PaymentRecord> {
        self.iter().map(|(_, record)| record)
    }

    /// The open payments' ids in id order.
    pub fn keys(&self) -> impl Iterator<Item = &PaymentId> {
        self.iter().map(|(id, _)| id)
    }

    pub(crate) fn insert(&mut self, id: PaymentId, record: Box<PaymentRecord>) {
        self.0.insert(id, record);
    }

    pub(crate) fn remove(&mut self, id: &PaymentId) -> Option<Box<PaymentRecord>> {
        self.0.remove(id)
    }
}

impl std::ops::Index<&PaymentId> for Payments {
    type Output = PaymentRecord;

    fn index(&self, id: &PaymentId) -> &PaymentRecord {
        self.get(id).expect("an open payment")
    }
}

impl<'a> IntoIterator for &'a Payments {
    type Item = (&'a PaymentId, &'a PaymentRecord);
    type IntoIter = std::vec::IntoIter<(&'a PaymentId, &'a PaymentRecord)>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

impl std::fmt::Debug for Payments {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl Serialize for Payments {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.iter())
    }
}

impl<'de> Deserialize<'de> for Payments {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Payments, D::Error> {
        HashMap::deserialize(deserializer).map(Payments)
    }
}

/// Hashes a payment id: its two 64-bit halves folded, then mixed (MurmurHash3's finalizer) so
/// the low bits a table indexes by depend on every bit (ids of different batches share rows).
#[derive(Clone, Copy, Debug, Default)]
pub struct IdHasher(u64);

fn mix(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.0 = mix(self.0 ^ u64::from_le_bytes(word));
        }
    }

    fn write_u128(&mut self, n: u128) {
        let bytes = n.to_le_bytes();
        let (low, high) = bytes.split_at(8);
        let low = u64::from_le_bytes(low.try_into().expect("eight bytes"));
        let high = u64::from_le_bytes(high.try_into().expect("eight bytes"));
        self.0 = mix(self.0 ^ low ^ high.rotate_left(32));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{BatchId, MerchantId, Name};
    use crate::network::{ChainId, Network};
    use crate::payment::{Payment, PaymentState};
    use crate::{Address, Amount, Asset};

    #[test]
    fn ids_of_different_batches_with_the_same_row_hash_apart() {
        let hash = |id: u128| {
            let mut hasher = IdHasher::default();
            std::hash::Hash::hash(&PaymentId(id), &mut hasher);
            hasher.finish()
        };
        // The low bits a table of 1,024 slots uses: rows 0..32 of 32 batches spread out.
        let slots: std::collections::BTreeSet<u64> = (0..32u128)
            .flat_map(|batch| (0..32u128).map(move |row| batch << 32 | row))
            .map(|id| hash(id) & 1023)
            .collect();
        assert!(slots.len() > 600, "1,024 ids fall in {} of 1,024 slots", slots.len());
    }

    #[test]
    fn encodes_as_an_ordered_map_whatever_the_insertion_order() {
        let record = |id: u128| {
            let network = Network::Evm(ChainId(1));
            Box::new(PaymentRecord {
                payment: Payment {
                    id: PaymentId(id),
                    batch: BatchId(1),
                    merchant: MerchantId(1),
                    reference: format!("r{id}"),
                    amount: Amount::new(1),
                    asset: Asset::ETH,
                    destination: Address::parse("0x1111111111111111111111111111111111111111", network).unwrap(),
                    networks: vec![network],
                    class: Name::new("standard").unwrap(),
                    deadline: None,
                    metadata: std::collections::BTreeMap::new(),
                },
                state: PaymentState::Accepted,
                attempt: 1,
                settlement: None,
                steps: Vec::new(),
                reason: None,
            })
        };
        // Ids of 200 batches, a few rows each: inserted forwards, backwards, and into a B-tree.
        let ids: Vec<PaymentId> = (0..200u128).map(|n| PaymentId((n << 32) | (n % 7))).collect();
        let (mut forward, mut backward) = (Payments::default(), Payments::default());
        let mut ordered = std::collections::BTreeMap::new();
        for id in &ids {
            forward.insert(*id, record(id.0));
            ordered.insert(*id, record(id.0));
        }
        for id in ids.iter().rev() {
            backward.insert(*id, record(id.0));
        }
        let bytes = |p: &Payments| postcard::to_stdvec(p).expect("encodes");
        assert_eq!(bytes(&forward), bytes(&backward));
        assert_eq!(bytes(&forward), postcard::to_stdvec(&ordered).expect("encodes"));
        let decoded: Payments = postcard::from_bytes(&bytes(&forward)).expect("decodes");
        assert_eq!(decoded, backward);
        assert!(forward.keys().zip(forward.keys().skip(1)).all(|(a, b)| a < b), "iterates in id order");
    }
}
