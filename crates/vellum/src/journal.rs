//! The shared journal (docs/format.md §3): the redo log that lets one fdatasync
//! cover writes to many channel files.

use crate::channel::id::ChannelId;
use crate::record::{self, Reader};
use crate::storage::{OpenMode, Storage, StorageFile};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

const MAGIC: &[u8; 8] = b"VELLUMJL";
const VERSION: u32 = 1;
pub const HEADER_BYTES: u64 = 24;
const KIND_CHANNEL_WRITE: u8 = 16;
const SUFFIX: &str = ".wal";
/// A zero-filled, synced journal file waiting to become the next journal file.
pub const PREPARED: &str = "prepared.tmp";
/// A journal file being zero-filled.
pub const PREPARING: &str = "preparing.tmp";

/// "The channel file of `id` holds `bytes` at `offset`."
#[derive(Debug, PartialEq, Eq)]
pub struct Entry<'a> {
    pub id: &'a str,
    pub offset: u64,
    pub bytes: &'a [u8],
}

impl Entry<'_> {
    /// Appends this entry, framed, to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        record::encode_with(out, |b| {
            b.push(KIND_CHANNEL_WRITE);
            b.push(self.id.len() as u8);
            b.extend_from_slice(self.id.as_bytes());
            b.extend_from_slice(&self.offset.to_le_bytes());
            b.extend_from_slice(self.bytes);
        })
    }

    pub fn parse(body: &[u8]) -> Result<Entry<'_>, &'static str> {
        let mut r = Reader::new(body);
        let bad = "truncated journal entry";
        if r.u8().ok_or(bad)? != KIND_CHANNEL_WRITE {
            return Err("unknown journal entry kind");
        }
        let id_len = r.u8().ok_or(bad)? as usize;
        let id = std::str::from_utf8(r.bytes(id_len).ok_or(bad)?)
            .map_err(|_| "channel id is not UTF-8")?;
        ChannelId::new(id).map_err(|_| "invalid channel id in journal")?;
        let offset = r.u64().ok_or(bad)?;
        Ok(Entry {
            id,
            offset,
            bytes: r.rest(),
        })
    }
}

/// The framed size of an entry for `id` carrying `bytes_len` bytes.
#[cfg(test)]
fn entry_bytes(id: &ChannelId, bytes_len: usize) -> usize {
    record::FRAME_BYTES + 1 + 1 + id.as_str().len() + 8 + bytes_len
}

fn file_name(lsn: u64) -> String {
    format!("{lsn:020}{SUFFIX}")
}

/// The journal files in `dir`, oldest first, with the LSN each starts at.
pub fn list_files(storage: &dyn Storage, dir: &Path) -> io::Result<Vec<(u64, PathBuf)>> {
    let mut files: Vec<(u64, PathBuf)> = storage
        .list_dir(dir)?
        .into_iter()
        .filter_map(|name| {
            let lsn = name.strip_suffix(SUFFIX)?.parse().ok()?;
            Some((lsn, dir.join(name)))
        })
        .collect();
    files.sort();
    Ok(files)
}

/// Checks a journal file's header and returns the LSN it claims to start at.
pub fn read_header(file: &dyn StorageFile) -> Result<u64, &'static str> {
    let mut buf = [0u8; HEADER_BYTES as usize];
    file.read_exact_at(&mut buf, 0)
        .map_err(|_| "journal header missing")?;
    if &buf[0..8] != MAGIC {
        return Err("bad journal magic");
    }
    let mut r = Reader::new(&buf[8..]);
    if r.u32() != Some(VERSION) {
        return Err("unsupported journal version");
    }
    let _reserved = r.u32();
    Ok(r.u64().unwrap())
}

/// Appends to the current journal file.
pub struct JournalWriter {
    file: Arc<dyn StorageFile>,
    start_lsn: u64,
    /// Offset in the file where the next entry goes.
    end: u64,
}

impl JournalWriter {
    /// Starts a new, empty journal file at `lsn` and makes it durable. It is the
    /// prepared (zero-filled) file when one is ready: overwriting allocated blocks keeps
    /// the file's size fixed, so each fdatasync writes the data and no inode.
    pub fn create(storage: &dyn Storage, dir: &Path, lsn: u64) -> io::Result<Self> {
        let path = dir.join(file_name(lsn));
        let prepared = dir.join(PREPARED);
        let mut header = Vec::with_capacity(HEADER_BYTES as usize);
        header.extend_from_slice(MAGIC);
        header.extend_from_slice(&VERSION.to_le_bytes());
        header.extend_from_slice(&0u32.to_le_bytes());
        header.extend_from_slice(&lsn.to_le_bytes());
        let file = match storage.open(&prepared, OpenMode::ReadWrite) {
            Ok(file) => {
                file.write_all_at(&header, 0)?;
                file.sync_data()?;
                storage.rename(&prepared, &path)?;
                file
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let file = storage.open(&path, OpenMode::CreateReadWrite)?;
                file.set_len(0)?;
                file.write_all_at(&header, 0)?;
                file.sync_data()?;
                file
            }
            Err(e) => return Err(e),
        };
        storage.sync_dir(dir)?;
        Ok(JournalWriter {
            file,
            start_lsn: lsn,
            end: HEADER_BYTES,
        })
    }

    pub fn append(&mut self, entries: &[u8]) -> io::Result<()> {
        self.file.write_all_at(entries, self.end)?;
        self.end += entries.len() as u64;
        Ok(())
    }

    /// The file, for the thread that syncs it.
    pub fn file(&self) -> Arc<dyn StorageFile> {
        self.file.clone()
    }

    /// The LSN the next entry gets.
    pub fn lsn(&self) -> u64 {
        self.start_lsn + (self.end - HEADER_BYTES)
    }

    /// Bytes of entries in the current file.
    pub fn entry_bytes(&self) -> u64 {
        self.end - HEADER_BYTES
    }
}

/// Zero-fills the next journal file (`entry_bytes` of room after the header), syncs
/// it and names it [`PREPARED`], unless one is ready already.
pub fn prepare(storage: &dyn Storage, dir: &Path, entry_bytes: u64) -> io::Result<()> {
    let prepared = dir.join(PREPARED);
    if storage.stat(&prepared)?.is_some() {
        return Ok(());
    }
    let preparing = dir.join(PREPARING);
    let file = storage.open(&preparing, OpenMode::CreateReadWrite)?;
    file.set_len(0)?;
    let total = HEADER_BYTES + entry_bytes;
    let zeros = vec![0u8; 1 << 20];
    let mut at = 0;
    while at < total {
        let n = ((total - at) as usize).min(zeros.len());
        file.write_all_at(&zeros[..n], at)?;
        at += n as u64;
    }
    file.sync_data()?;
    storage.rename(&preparing, &prepared)?;
    storage.sync_dir(dir)
}

/// Whether `[start, end)` of `file` is all zeros: the unused room of a prepared file.
pub fn is_zero_filled(file: &dyn StorageFile, start: u64, end: u64) -> io::Result<bool> {
    let mut buf = vec![0u8; 1 << 20];
    let mut at = start;
    while at < end {
        let n = ((end - at) as usize).min(buf.len());
        file.read_exact_at(&mut buf[..n], at)?;
        if buf[..n].iter().any(|&b| b != 0) {
            return Ok(false);
        }
        at += n as u64;
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_round_trips() {
        let id = ChannelId::new("abc").unwrap();
        let mut out = Vec::new();
        Entry {
            id: id.as_str(),
            offset: 77,
            bytes: b"payload",
        }
        .encode_into(&mut out);
        assert_eq!(out.len(), entry_bytes(&id, 7));
        let record::Decoded::Record { body, .. } = record::decode(&out) else {
            panic!("not a record")
        };
        let entry = Entry::parse(body).unwrap();
        assert_eq!(
            (entry.id, entry.offset, entry.bytes),
            ("abc", 77, &b"payload"[..])
        );
    }
}
