//! The open-channel cache: an LRU of loaded channels (each holding one open file)
//! under `open_files_max`. Only idle channels are evicted, so two copies of one
//! channel's state can never exist at once.

use super::id::ChannelId;
use super::log::{Channel, Files};
use parking_lot::Mutex;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

pub struct ChannelCache {
    capacity: usize,
    files: Arc<Files>,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// Each cached channel with the tick of its last use.
    by_id: HashMap<ChannelId, (Arc<Channel>, u64)>,
    /// Insertion tick → id, oldest first. Updated lazily: a hit only bumps the tick in
    /// `by_id`, and eviction re-files an entry whose tick moved on.
    by_age: BTreeMap<u64, ChannelId>,
    tick: u64,
}

impl ChannelCache {
    pub fn new(capacity: usize, files: Arc<Files>) -> Self {
        ChannelCache {
            capacity: capacity.max(1),
            files,
            inner: Mutex::new(Inner::default()),
        }
    }

    /// The channel object for `id`, shared by every caller while it is cached.
    pub fn get(&self, id: &ChannelId) -> Arc<Channel> {
        let mut inner = self.inner.lock();
        inner.tick += 1;
        let tick = inner.tick;
        if let Some((channel, last_used)) = inner.by_id.get_mut(id) {
            *last_used = tick;
            return channel.clone();
        }
        // Down to capacity again after a burst of busy channels pushed it over.
        while inner.by_id.len() >= self.capacity && inner.evict_one(&self.files) {}
        let channel = Arc::new(Channel::new(id.clone()));
        inner.by_id.insert(id.clone(), (channel.clone(), tick));
        inner.by_age.insert(tick, id.clone());
        channel
    }

    /// The channel for `id` if it is cached.
    pub fn peek(&self, id: &ChannelId) -> Option<Arc<Channel>> {
        self.inner.lock().by_id.get(id).map(|(c, _)| c.clone())
    }

    pub fn len(&self) -> usize {
        self.inner.lock().by_id.len()
    }
}

impl Inner {
    /// Drops the least recently used idle channel; false if none is idle.
    fn evict_one(&mut self, files: &Arc<Files>) -> bool {
        // Re-file entries used since they were filed, then take the oldest idle one.
        let mut busy = Vec::new();
        let mut evicted = false;
        while let Some((tick, id)) = self.by_age.pop_first() {
            let (channel, last_used) = &self.by_id[&id];
            if *last_used != tick {
                self.by_age.insert(*last_used, id);
            } else if Arc::strong_count(channel) == 1 && channel.is_idle_and_flushed(files) {
                // Only the cache holds it, and nothing runs or waits on it.
                self.by_id.remove(&id);
                evicted = true;
                break;
            } else {
                busy.push((tick, id));
            }
        }
        self.by_age.extend(busy);
        evicted
    }
}
