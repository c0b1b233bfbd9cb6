//! Open segment files, at most a configured number (docs/format.md §7.2): a store of a
//! terabyte has tens of thousands of segments, and one descriptor each would exhaust
//! the process's limit. Handles are closed by the clock algorithm (second chance), so
//! a hit costs one hash lookup and a flag, with no list to reorder under the lock.

use crate::storage::StorageFile;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

struct Handle {
    file: Arc<dyn StorageFile>,
    /// Used since the clock hand last passed it.
    used: bool,
}

pub struct SegmentHandles {
    open: HashMap<u32, Handle>,
    /// The clock: every open segment once, in the order the hand visits them (numbers
    /// of segments closed or removed since are skipped when the hand reaches them).
    ring: VecDeque<u32>,
    max: usize,
}

impl SegmentHandles {
    pub fn new(max: usize) -> SegmentHandles {
        assert!(max >= 1, "validated by the options");
        SegmentHandles {
            open: HashMap::new(),
            ring: VecDeque::new(),
            max,
        }
    }

    pub fn len(&self) -> usize {
        self.open.len()
    }

    /// Segment `number`'s open handle, if one is cached.
    pub fn get(&mut self, number: u32) -> Option<Arc<dyn StorageFile>> {
        let handle = self.open.get_mut(&number)?;
        handle.used = true;
        Some(handle.file.clone())
    }

    /// Caches `file` as segment `number`'s handle (keeping one already cached), then
    /// closes others beyond the cap — never `pinned`'s (the segment being written).
    /// A handle still in use elsewhere stays open until that use ends.
    pub fn insert(&mut self, number: u32, file: Arc<dyn StorageFile>, pinned: u32) {
        if self.open.contains_key(&number) {
            return;
        }
        self.open.insert(number, Handle { file, used: true });
        self.ring.push_back(number);
        while self.open.len() > self.max && self.close_one(pinned) {}
        // Skipped numbers are dropped as the hand passes; this bounds them when it rarely does.
        if self.ring.len() > 2 * self.max + 16 {
            let open = &self.open;
            self.ring.retain(|n| open.contains_key(n));
        }
    }

    /// Forgets segment `number` (deleted).
    pub fn remove(&mut self, number: u32) {
        self.open.remove(&number);
    }

    /// Closes the first handle the hand finds unused, giving used ones a second chance.
    /// Returns false when only the pinned one is open.
    fn close_one(&mut self, pinned: u32) -> bool {
        // Two turns at most: the first may only clear flags.
        for _ in 0..2 * self.ring.len() {
            let Some(number) = self.ring.pop_front() else {
                return false;
            };
            let Some(handle) = self.open.get_mut(&number) else {
                continue;
            };
            if number == pinned || std::mem::take(&mut handle.used) {
                self.ring.push_back(number);
                continue;
            }
            self.open.remove(&number);
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::{OpenMode, SimStorage, Storage};
    use std::path::Path;

    fn file(sim: &SimStorage, n: u32) -> Arc<dyn StorageFile> {
        sim.open(Path::new(&format!("/{n}")), OpenMode::CreateReadWrite)
            .unwrap()
    }

    #[test]
    fn never_more_than_the_cap_and_never_the_pinned_one_closed() {
        let sim = SimStorage::new();
        let mut handles = SegmentHandles::new(3);
        handles.insert(1, file(&sim, 1), 1);
        for n in 2..50 {
            handles.insert(n, file(&sim, n), 1);
            assert!(handles.len() <= 3);
            assert!(handles.get(1).is_some(), "the pinned segment stays open");
            assert!(handles.get(n).is_some(), "the newest stays open");
        }
    }

    #[test]
    fn a_recently_used_handle_gets_a_second_chance() {
        let sim = SimStorage::new();
        let mut handles = SegmentHandles::new(3);
        for n in 1..=3 {
            handles.insert(n, file(&sim, n), 0);
        }
        // One turn of the hand clears every flag; 2 is used again, so 3 goes first.
        handles.insert(4, file(&sim, 4), 0);
        assert!(handles.get(1).is_none());
        handles.get(2);
        handles.insert(5, file(&sim, 5), 0);
        assert!(handles.get(2).is_some());
        assert!(handles.get(3).is_none());
    }

    #[test]
    fn removed_segments_free_their_place() {
        let sim = SimStorage::new();
        let mut handles = SegmentHandles::new(2);
        handles.insert(1, file(&sim, 1), 0);
        handles.insert(2, file(&sim, 2), 0);
        handles.remove(1);
        handles.insert(3, file(&sim, 3), 0);
        assert!(handles.get(2).is_some() && handles.get(3).is_some());
        for n in 4..1000 {
            handles.insert(n, file(&sim, n), 0);
            handles.remove(n);
        }
        assert!(handles.ring.len() <= 2 * 2 + 16);
    }
}
