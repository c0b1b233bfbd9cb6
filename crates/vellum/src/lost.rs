//! Bytes that failed their checksum are moved aside to `lost+found/`, never silently
//! dropped, and reported with their exact range.

use crate::storage::{OpenMode, Storage, StorageFile};
use std::io;
use std::path::{Path, PathBuf};

/// A range of bytes that failed its checksum, moved aside instead of silently dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LostRange {
    pub path: PathBuf,
    pub start: u64,
    pub end: u64,
    pub reason: String,
    /// Where the bytes were copied to, under `lost+found/`.
    pub saved_as: Option<PathBuf>,
}

/// Copies `[start, end)` of `file` to `lost+found/<name>.<start>-<end>.bin` and makes it durable.
pub fn save_range(
    storage: &dyn Storage,
    lost_found: &Path,
    path: &Path,
    file: &dyn StorageFile,
    start: u64,
    end: u64,
) -> io::Result<PathBuf> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let target = lost_found.join(format!("{name}.{start}-{end}.bin"));
    let out = storage.open(&target, OpenMode::CreateReadWrite)?;
    out.set_len(0)?;
    crate::storage::copy_range(file, start, end, &*out)?;
    out.sync_data()?;
    storage.sync_dir(lost_found)?;
    Ok(target)
}
