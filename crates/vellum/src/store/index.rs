//! The store's in-memory index (docs/format.md §7.2): id → (segment, offset, size,
//! refcount) in 32-byte entries kept in a dense, chunked array, found through a hash
//! table of 4-byte positions. About 37–43 bytes per message in all.

use super::MsgId;
use hashbrown::HashTable;
use std::hash::{BuildHasher, RandomState};

/// Entries per chunk: growth allocates one more chunk and never copies the others.
const CHUNK_ENTRIES: usize = 4096;

/// Where a message's record is, and how many references it has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    pub id: MsgId,
    pub segment: u32,
    pub offset: u32,
    /// The framed record's size.
    pub size: u32,
    pub refs: u32,
}

#[derive(Default)]
pub struct Index {
    /// Positions into `chunks`, hashed by the id they hold.
    table: HashTable<u32>,
    chunks: Vec<Vec<Entry>>,
    len: usize,
    hasher: RandomState,
}

/// Ids hash as one 128-bit integer (no length prefix, unlike a byte array).
fn hash_id(hasher: &RandomState, id: &MsgId) -> u64 {
    hasher.hash_one(u128::from_le_bytes(id.0))
}

fn at(chunks: &[Vec<Entry>], pos: u32) -> &Entry {
    let pos = pos as usize;
    &chunks[pos / CHUNK_ENTRIES][pos % CHUNK_ENTRIES]
}

impl Index {
    /// An index with room for `entries` without growing its table.
    pub fn with_capacity(entries: usize) -> Index {
        Index {
            table: HashTable::with_capacity(entries),
            chunks: Vec::with_capacity(entries.div_ceil(CHUNK_ENTRIES)),
            ..Index::default()
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    fn hash(&self, id: &MsgId) -> u64 {
        hash_id(&self.hasher, id)
    }

    fn position(&self, id: &MsgId) -> Option<u32> {
        let chunks = &self.chunks;
        self.table
            .find(self.hash(id), |&pos| at(chunks, pos).id == *id)
            .copied()
    }

    pub fn get(&self, id: &MsgId) -> Option<&Entry> {
        self.position(id).map(|pos| at(&self.chunks, pos))
    }

    pub fn get_mut(&mut self, id: &MsgId) -> Option<&mut Entry> {
        let pos = self.position(id)? as usize;
        Some(&mut self.chunks[pos / CHUNK_ENTRIES][pos % CHUNK_ENTRIES])
    }

    /// Adds `entry`, whose id must not be in the index yet.
    pub fn insert(&mut self, entry: Entry) {
        let added = self.insert_new(entry);
        debug_assert!(added, "id indexed twice");
    }

    /// Adds `entry` unless its id is indexed already; returns whether it was added.
    pub fn insert_new(&mut self, entry: Entry) -> bool {
        let pos = u32::try_from(self.len).expect("over 4 billion messages in one store");
        let hash = self.hash(&entry.id);
        let (chunks, hasher) = (&mut self.chunks, &self.hasher);
        let slot = self.table.entry(
            hash,
            |&p| at(chunks, p).id == entry.id,
            |&p| hash_id(hasher, &at(chunks, p).id),
        );
        let hashbrown::hash_table::Entry::Vacant(slot) = slot else {
            return false;
        };
        slot.insert(pos);
        if chunks.last().is_none_or(|c| c.len() == CHUNK_ENTRIES) {
            chunks.push(Vec::with_capacity(CHUNK_ENTRIES));
        }
        chunks.last_mut().unwrap().push(entry);
        self.len += 1;
        true
    }

    /// Removes `id`'s entry and returns it. The last entry moves into its place.
    pub fn remove(&mut self, id: &MsgId) -> Option<Entry> {
        let chunks = &self.chunks;
        let hash = hash_id(&self.hasher, id);
        let slot = self
            .table
            .find_entry(hash, |&pos| at(chunks, pos).id == *id)
            .ok()?;
        let (pos, _) = slot.remove();
        let last_pos = (self.len - 1) as u32;
        let last_chunk = self.chunks.last_mut().unwrap();
        let last = last_chunk.pop().unwrap();
        if last_chunk.is_empty() {
            self.chunks.pop();
        }
        self.len -= 1;
        if pos == last_pos {
            return Some(last);
        }
        let p = pos as usize;
        let removed =
            std::mem::replace(&mut self.chunks[p / CHUNK_ENTRIES][p % CHUNK_ENTRIES], last);
        let moved = self
            .table
            .find_mut(hash_id(&self.hasher, &last.id), |&q| q == last_pos)
            .expect("every entry has a slot");
        *moved = pos;
        Some(removed)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Entry> {
        self.chunks.iter().flatten()
    }

    /// Bytes the index holds on the heap: the table, the chunks and the chunk list.
    pub fn heap_bytes(&self) -> usize {
        self.table.allocation_size()
            + self.chunks.len() * CHUNK_ENTRIES * size_of::<Entry>()
            + self.chunks.capacity() * size_of::<Vec<Entry>>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u32) -> MsgId {
        let mut b = [0u8; 16];
        b[..4].copy_from_slice(&n.to_le_bytes());
        MsgId(b)
    }

    fn entry(n: u32) -> Entry {
        Entry {
            id: id(n),
            segment: n,
            offset: n * 2,
            size: 40,
            refs: 1,
        }
    }

    #[test]
    fn inserts_finds_and_removes_with_the_last_entry_moving_in() {
        let mut index = Index::default();
        for n in 0..10_000 {
            index.insert(entry(n));
        }
        assert_eq!(index.len(), 10_000);
        assert_eq!(index.remove(&id(3)), Some(entry(3)));
        assert_eq!(index.remove(&id(3)), None);
        assert_eq!(index.get(&id(9_999)), Some(&entry(9_999)));
        for n in (0..10_000).filter(|n| n % 2 == 0 && *n != 3) {
            assert_eq!(index.remove(&id(n)), Some(entry(n)), "{n}");
        }
        for n in 0..10_000 {
            let expected = (n % 2 == 1 && n != 3).then(|| entry(n));
            assert_eq!(index.get(&id(n)).copied(), expected, "{n}");
        }
        assert_eq!(index.len(), 4_999);
        assert_eq!(index.iter().count(), 4_999);
        index.get_mut(&id(5)).unwrap().refs = 9;
        assert_eq!(index.get(&id(5)).unwrap().refs, 9);
    }

    #[test]
    fn an_entry_is_32_bytes() {
        assert_eq!(size_of::<Entry>(), 32);
    }
}
