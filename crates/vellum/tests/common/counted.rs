//! Counting the file handles an engine holds open: a storage wrapper hands out its files
//! through [`Counter::count`], and each one counts until it is dropped.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use vellum::storage::StorageFile;

/// Handles open now, and the most open at once.
#[derive(Default)]
pub struct Counter {
    open: AtomicUsize,
    peak: AtomicUsize,
}

impl Counter {
    pub fn open(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }
    pub fn peak(&self) -> usize {
        self.peak.load(Ordering::SeqCst)
    }
    pub fn reset_peak(&self) {
        self.peak.store(self.open(), Ordering::SeqCst);
    }
    /// `file`, counted while it is open.
    pub fn count(self: &Arc<Self>, file: Arc<dyn StorageFile>) -> Arc<dyn StorageFile> {
        let now = self.open.fetch_add(1, Ordering::SeqCst) + 1;
        self.peak.fetch_max(now, Ordering::SeqCst);
        Arc::new(CountedFile {
            inner: file,
            counter: self.clone(),
        })
    }
}

struct CountedFile {
    inner: Arc<dyn StorageFile>,
    counter: Arc<Counter>,
}

impl Drop for CountedFile {
    fn drop(&mut self) {
        self.counter.open.fetch_sub(1, Ordering::SeqCst);
    }
}

impl StorageFile for CountedFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        self.inner.read_at(buf, offset)
    }
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.inner.write_all_at(buf, offset)
    }
    fn len(&self) -> io::Result<u64> {
        self.inner.len()
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.inner.set_len(len)
    }
    fn sync_data(&self) -> io::Result<()> {
        self.inner.sync_data()
    }
}
