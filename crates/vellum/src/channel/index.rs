//! A loaded channel's in-memory message index: seq → offset, key → message.
//!
//! Costs about 16 bytes per message plus one hash-table slot (a 64-bit key hash and
//! a 32-bit position). Keys are not kept in memory: a key lookup hashes the key,
//! then confirms each candidate by reading only that record's key from the file,
//! so lookups never scan message bodies and hash collisions are never wrong.

use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher, RandomState};

/// Key hashes are already random 64-bit values: the tables below use them as they are
/// instead of hashing them a second time.
#[derive(Default)]
struct AlreadyHashed(u64);

impl Hasher for AlreadyHashed {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, _: &[u8]) {
        unreachable!("only u64 key hashes are keys here")
    }

    fn write_u64(&mut self, hash: u64) {
        self.0 = hash;
    }
}

type ByKeyHash<V> = HashMap<u64, V, BuildHasherDefault<AlreadyHashed>>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    pub seq: u64,
    pub offset: u64,
}

#[derive(Debug, Default)]
pub struct MessageIndex {
    entries: Vec<Entry>,
    /// Key hash → position of the first message with that hash.
    first_by_key: ByKeyHash<u32>,
    /// Later messages whose key hash was already taken (duplicates or collisions).
    more_by_key: ByKeyHash<Vec<u32>>,
    hasher: RandomState,
}

impl MessageIndex {
    pub fn key_hash(&self, key: &[u8]) -> u64 {
        self.hasher.hash_one(key)
    }

    /// Records the next message; seqs and offsets must grow.
    pub fn push(&mut self, seq: u64, offset: u64, key_hash: u64) {
        if let Some(last) = self.entries.last() {
            assert!(seq > last.seq && offset > last.offset, "index must grow");
        }
        let pos =
            u32::try_from(self.entries.len()).expect("over 4 billion messages in one channel");
        self.entries.push(Entry { seq, offset });
        if let Some(_first) = self.first_by_key.get(&key_hash) {
            self.more_by_key.entry(key_hash).or_default().push(pos);
        } else {
            self.first_by_key.insert(key_hash, pos);
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn get(&self, pos: usize) -> Option<Entry> {
        self.entries.get(pos).copied()
    }

    /// The position of the first message whose seq is ≥ `seq`.
    pub fn position_of_seq_at_least(&self, seq: u64) -> usize {
        self.entries.partition_point(|e| e.seq < seq)
    }

    /// The position of the message at exactly `offset`, if one starts there.
    pub fn position_of_offset(&self, offset: u64) -> Option<usize> {
        self.entries
            .binary_search_by_key(&offset, |e| e.offset)
            .ok()
    }

    /// Positions of messages whose key hashes to `hash`, oldest first.
    pub fn candidates(&self, hash: u64) -> impl Iterator<Item = usize> + '_ {
        let first = self.first_by_key.get(&hash).copied();
        let more = self
            .more_by_key
            .get(&hash)
            .map(|v| v.as_slice())
            .unwrap_or(&[]);
        first
            .into_iter()
            .chain(more.iter().copied())
            .map(|p| p as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicate_keys_keep_every_candidate_in_order() {
        let mut index = MessageIndex::default();
        let h = index.key_hash(b"k");
        index.push(0, 10, h);
        index.push(1, 20, index.key_hash(b"other"));
        index.push(2, 30, h);
        assert_eq!(index.candidates(h).collect::<Vec<_>>(), vec![0, 2]);
        assert_eq!(index.position_of_seq_at_least(1), 1);
        assert_eq!(index.position_of_offset(30), Some(2));
        assert_eq!(index.position_of_offset(25), None);
    }
}
