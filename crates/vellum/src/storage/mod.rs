//! The storage trait: every byte Vellum reads or writes goes through it.
//!
//! Keeping file I/O behind two small traits lets the tests swap the real
//! filesystem ([`RealStorage`]) for a simulated one ([`SimStorage`]) that
//! injects failed writes and fsyncs and simulates a crash that drops every
//! write that was not made durable. The engine never touches `std::fs`
//! directly.
//!
//! The contract mirrors POSIX as Vellum relies on it:
//! - `File::write_at` data is durable only after `File::sync_data` on that file;
//! - a created, renamed or removed directory entry is durable only after
//!   `Storage::sync_dir` on the directory that holds it;
//! - `rename` replaces its target atomically.

mod real;
mod sim;

pub use real::RealStorage;
pub use sim::{CrashMode, Fault, FaultKind, SimStorage};

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

/// How to open a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenMode {
    /// Open an existing file for reading only.
    Read,
    /// Open an existing file for reading only, without updating its access time
    /// (`O_NOATIME` where permitted): background scans must not look like use.
    ReadQuietly,
    /// Open an existing file for reading and writing.
    ReadWrite,
    /// Create the file if it is missing, then open it for reading and writing.
    CreateReadWrite,
    /// Create a new file; fail with `AlreadyExists` if it exists.
    CreateNew,
}

/// What `Storage::stat` reports about a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileStat {
    pub len: u64,
    pub modified: SystemTime,
    pub accessed: SystemTime,
    pub is_dir: bool,
}

/// One open file.
#[allow(clippy::len_without_is_empty)]
pub trait StorageFile: Send + Sync {
    /// Reads up to `buf.len()` bytes at `offset`; returns how many were read
    /// (0 at or past the end of the file).
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize>;
    /// Writes all of `buf` at `offset`, extending the file if needed.
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()>;
    /// The file's current length.
    fn len(&self) -> io::Result<u64>;
    /// Truncates or extends the file.
    fn set_len(&self, len: u64) -> io::Result<()>;
    /// Makes the file's data (and its size) durable: `fdatasync`.
    fn sync_data(&self) -> io::Result<()>;

    /// Reads exactly `buf.len()` bytes at `offset`, or fails with `UnexpectedEof`.
    fn read_exact_at(&self, mut buf: &mut [u8], mut offset: u64) -> io::Result<()> {
        while !buf.is_empty() {
            match self.read_at(buf, offset)? {
                0 => return Err(io::ErrorKind::UnexpectedEof.into()),
                n => {
                    buf = &mut buf[n..];
                    offset += n as u64;
                }
            }
        }
        Ok(())
    }
}

/// A filesystem.
pub trait Storage: Send + Sync + 'static {
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Arc<dyn StorageFile>>;
    /// Atomically renames `from` to `to`, replacing `to` if it exists.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Creates `link` as a second name for the file `original`.
    fn hard_link(&self, original: &Path, link: &Path) -> io::Result<()>;
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    /// Creates `path` and its missing parents (no error if it exists).
    fn create_dir_all(&self, path: &Path) -> io::Result<()>;
    /// Makes the entries of directory `path` durable: `fsync` on the directory.
    fn sync_dir(&self, path: &Path) -> io::Result<()>;
    /// Makes everything written on the filesystem holding `path` durable — data and
    /// directory entries, by any process (`syncfs`).
    fn sync_filesystem(&self, path: &Path) -> io::Result<()>;
    /// The names (not paths) of the entries of directory `path`, sorted.
    fn list_dir(&self, path: &Path) -> io::Result<Vec<String>>;
    /// `Ok(None)` when nothing exists at `path`.
    fn stat(&self, path: &Path) -> io::Result<Option<FileStat>>;
    /// Takes an exclusive lock that keeps any other process off `path`
    /// (a lock file) until the returned guard is dropped.
    fn lock_exclusive(&self, path: &Path) -> io::Result<Box<dyn Send + Sync>>;
}

/// A storage shared by the engine's threads.
pub type SharedStorage = Arc<dyn Storage>;

/// `path` with `suffix` appended to its file name (`a/b.vlog` + `.tmp` → `a/b.vlog.tmp`).
pub fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// Copies `[start, end)` of `from` to the start of `to`, in 1 MiB pieces.
pub fn copy_range(
    from: &dyn StorageFile,
    start: u64,
    end: u64,
    to: &dyn StorageFile,
) -> io::Result<()> {
    let mut buf = vec![0u8; 1 << 20];
    let mut at = start;
    while at < end {
        let n = ((end - at) as usize).min(buf.len());
        from.read_exact_at(&mut buf[..n], at)?;
        to.write_all_at(&buf[..n], at - start)?;
        at += n as u64;
    }
    Ok(())
}

/// Creates directory `path` and its missing ancestors, each made durable in its parent
/// (an existing directory is left as it is).
pub fn create_dir_durably(storage: &dyn Storage, path: &Path) -> io::Result<()> {
    let mut missing = Vec::new();
    let mut at = Some(path);
    while let Some(dir) = at {
        if storage.stat(dir)?.is_some() {
            break;
        }
        missing.push(dir);
        at = dir.parent();
    }
    for dir in missing.into_iter().rev() {
        storage.create_dir_all(dir)?;
        let parent = match dir.parent() {
            Some(p) if p.as_os_str().is_empty() => Path::new("."),
            Some(p) => p,
            None => continue,
        };
        storage.sync_dir(parent)?;
    }
    Ok(())
}
