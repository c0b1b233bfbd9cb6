//! The shared journal (docs/format.md §3): the redo log that lets one fdatasync
//! cover writes to many channel files.

use crate::channel::id::ChannelId;
use crate::record::{self, Reader};
use crate::storage::{OpenMode, Storage, StorageFile};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

const MAGIC: &[u8; 8] = b"VELLUMJL";
const VERSION: u32 = 2;
pub const HEADER_BYTES: u64 = 32;
const KIND_CHANNEL_WRITE: u8 = 16;
const KIND_CHANNEL_WRITES: u8 = 17;
const KIND_END: u8 = 18;
const SUFFIX: &str = ".wal";
/// A retired journal file waiting to be deleted.
const RETIRED_SUFFIX: &str = ".retired";
/// A zero-filled, synced journal file waiting to become the next journal file.
pub const PREPARED: &str = "prepared.tmp";
/// A journal file being zero-filled.
pub const PREPARING: &str = "preparing.tmp";

/// "The channel file of `id` holds `bytes` at `offset`".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Part<'a> {
    pub id: &'a str,
    pub offset: u64,
    pub bytes: &'a [u8],
}

/// One journal entry: writes to one channel file, or to several (a publish) that
/// replay all or none, since one checksum covers them.
#[derive(Debug, PartialEq, Eq)]
pub struct Entry<'a> {
    /// The entry's LSN xor its file's salt ([`FileHeader::tag_at`]): tells a current
    /// entry from one left in a recycled file by its previous use.
    pub tag: u64,
    pub parts: Vec<Part<'a>>,
}

impl Entry<'_> {
    /// The entry a clean close writes last: nothing follows it.
    pub fn end(tag: u64) -> Entry<'static> {
        Entry {
            tag,
            parts: Vec::new(),
        }
    }

    /// Whether this is the end entry of a clean close.
    pub fn is_end(&self) -> bool {
        self.parts.is_empty()
    }

    /// Appends this entry, framed, to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        record::encode_with(out, |b| {
            b.extend_from_slice(&self.tag.to_le_bytes());
            if self.parts.is_empty() {
                b.push(KIND_END);
                return;
            }
            if let [part] = self.parts.as_slice() {
                b.push(KIND_CHANNEL_WRITE);
                b.push(part.id.len() as u8);
                b.extend_from_slice(part.id.as_bytes());
                b.extend_from_slice(&part.offset.to_le_bytes());
                b.extend_from_slice(part.bytes);
                return;
            }
            b.push(KIND_CHANNEL_WRITES);
            let count = u16::try_from(self.parts.len()).expect("at most 65,535 channels");
            b.extend_from_slice(&count.to_le_bytes());
            for part in &self.parts {
                b.push(part.id.len() as u8);
                b.extend_from_slice(part.id.as_bytes());
                b.extend_from_slice(&part.offset.to_le_bytes());
                b.extend_from_slice(&(part.bytes.len() as u32).to_le_bytes());
                b.extend_from_slice(part.bytes);
            }
        })
    }

    pub fn parse(body: &[u8]) -> Result<Entry<'_>, &'static str> {
        let mut r = Reader::new(body);
        let bad = "truncated journal entry";
        let tag = r.u64().ok_or(bad)?;
        let parts = match r.u8().ok_or(bad)? {
            KIND_CHANNEL_WRITE => {
                let (id, offset) = part_head(&mut r)?;
                vec![Part {
                    id,
                    offset,
                    bytes: r.rest(),
                }]
            }
            KIND_CHANNEL_WRITES => {
                let count = r.u16().ok_or(bad)?;
                let mut parts = Vec::with_capacity(count as usize);
                for _ in 0..count {
                    let (id, offset) = part_head(&mut r)?;
                    let len = r.u32().ok_or(bad)? as usize;
                    let bytes = r.bytes(len).ok_or(bad)?;
                    parts.push(Part { id, offset, bytes });
                }
                if !r.rest().is_empty() {
                    return Err("trailing bytes in a journal entry");
                }
                parts
            }
            KIND_END => Vec::new(),
            _ => return Err("unknown journal entry kind"),
        };
        Ok(Entry { tag, parts })
    }
}

/// A part's channel id and offset.
fn part_head<'a>(r: &mut Reader<'a>) -> Result<(&'a str, u64), &'static str> {
    let bad = "truncated journal entry";
    let id_len = r.u8().ok_or(bad)? as usize;
    let id =
        std::str::from_utf8(r.bytes(id_len).ok_or(bad)?).map_err(|_| "channel id is not UTF-8")?;
    ChannelId::new(id).map_err(|_| "invalid channel id in journal")?;
    Ok((id, r.u64().ok_or(bad)?))
}

/// The framed size of an entry for `id` carrying `bytes_len` bytes.
#[cfg(test)]
fn entry_bytes(id: &ChannelId, bytes_len: usize) -> usize {
    record::FRAME_BYTES + 8 + 1 + 1 + id.as_str().len() + 8 + bytes_len
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

/// What a journal file's header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileHeader {
    /// The LSN of the file's first entry.
    pub lsn: u64,
    /// Drawn at random when the file is started. Mixed into every entry's tag, so no
    /// bytes the file held before — even ones a client chose, inside a message — can
    /// pass for a current entry.
    pub salt: u64,
}

impl FileHeader {
    fn encode(&self) -> Vec<u8> {
        let mut header = Vec::with_capacity(HEADER_BYTES as usize);
        header.extend_from_slice(MAGIC);
        header.extend_from_slice(&VERSION.to_le_bytes());
        header.extend_from_slice(&0u32.to_le_bytes());
        header.extend_from_slice(&self.lsn.to_le_bytes());
        header.extend_from_slice(&self.salt.to_le_bytes());
        let crc = header_crc(&header);
        header[12..16].copy_from_slice(&crc.to_le_bytes());
        header
    }

    /// Checks a journal file's header.
    pub fn read(file: &dyn StorageFile) -> Result<FileHeader, &'static str> {
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
        if r.u32() != Some(header_crc(&buf)) {
            return Err("journal header checksum mismatch");
        }
        Ok(FileHeader {
            lsn: r.u64().unwrap(),
            salt: r.u64().unwrap(),
        })
    }

    /// The LSN of the entry at `offset` in the file.
    pub fn lsn_at(&self, offset: u64) -> u64 {
        self.lsn + (offset - HEADER_BYTES)
    }

    /// The tag a current entry at `offset` carries.
    pub fn tag_at(&self, offset: u64) -> u64 {
        self.lsn_at(offset) ^ self.salt
    }
}

/// CRC32C of a header's bytes, its own field (bytes 12..16) left out.
fn header_crc(header: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(&header[..12]), &header[16..])
}

/// Appends to the current journal file.
pub struct JournalWriter {
    file: Arc<dyn StorageFile>,
    header: FileHeader,
    /// Offset in the file where the next entry goes.
    end: u64,
}

impl JournalWriter {
    /// Starts a new, empty journal file at `lsn` and makes it durable. It is the
    /// prepared file (§3.1) when one is ready: overwriting allocated blocks keeps the
    /// file's size fixed, so each fdatasync writes the data and no inode.
    pub fn create(storage: &dyn Storage, dir: &Path, lsn: u64) -> io::Result<Self> {
        let path = dir.join(file_name(lsn));
        let prepared = dir.join(PREPARED);
        let header = FileHeader {
            lsn,
            salt: getrandom::u64().map_err(io::Error::other)?,
        };
        let encoded = header.encode();
        let file = match storage.open(&prepared, OpenMode::ReadWrite) {
            Ok(file) => {
                file.write_all_at(&encoded, 0)?;
                file.sync_data()?;
                storage.rename(&prepared, &path)?;
                file
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let file = storage.open(&path, OpenMode::CreateReadWrite)?;
                file.set_len(0)?;
                file.write_all_at(&encoded, 0)?;
                file.sync_data()?;
                file
            }
            Err(e) => return Err(e),
        };
        storage.sync_dir(dir)?;
        Ok(JournalWriter {
            file,
            header,
            end: HEADER_BYTES,
        })
    }

    /// The tag of an entry placed `buffered` bytes after the next entry's place.
    pub fn tag_after(&self, buffered: usize) -> u64 {
        self.header.tag_at(self.end + buffered as u64)
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
        self.header.lsn_at(self.end)
    }

    /// Bytes of entries in the current file.
    pub fn entry_bytes(&self) -> u64 {
        self.end - HEADER_BYTES
    }
}

/// Zero-fills the next journal file (`entry_bytes` of room after the header), syncs
/// it and names it [`PREPARED`], unless one is ready already. Returns whether it did.
pub fn prepare(storage: &dyn Storage, dir: &Path, entry_bytes: u64) -> io::Result<bool> {
    let prepared = dir.join(PREPARED);
    if storage.stat(&prepared)?.is_some() {
        return Ok(false);
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
    storage.sync_dir(dir)?;
    Ok(true)
}

/// Probe bytes at an entry's start: its frame and its tag.
const PROBE_BYTES: usize = record::FRAME_BYTES + 8;

/// Where a journal file's entries stop at `offset` (the first place without a current
/// entry, §3.1), decides whether the bytes from there are a loss to report: returns the
/// end of the range to report, or `None` for a clean end. Reported are
/// - everything to the end of the file when a current entry follows (damage, or a torn
///   group whose later pages reached the disk);
/// - a torn current entry, known by a non-zero length and its tag: its declared extent.
///
/// Anything else (zeros, bytes of the file's previous use, a torn entry cut before the
/// end of its tag) is unused room.
pub fn lost_after(
    file: &dyn StorageFile,
    header: &FileHeader,
    offset: u64,
    len: u64,
) -> io::Result<Option<u64>> {
    if find_current_entry(file, header, offset + 1, len)?.is_some() {
        return Ok(Some(len));
    }
    if offset + PROBE_BYTES as u64 > len {
        return Ok(None);
    }
    let mut probe = [0u8; PROBE_BYTES];
    file.read_exact_at(&mut probe, offset)?;
    let body_len = u32::from_le_bytes(probe[..4].try_into().unwrap());
    let tag = u64::from_le_bytes(probe[record::FRAME_BYTES..].try_into().unwrap());
    if body_len == 0 || tag != header.tag_at(offset) {
        return Ok(None);
    }
    let declared_end = offset + (record::FRAME_BYTES as u64 + body_len as u64);
    Ok(Some(if body_len as usize > record::BODY_BYTES_MAX {
        len
    } else {
        declared_end.min(len)
    }))
}

/// The offset of the first current entry (§3.1) in `[start, end)`, searching at every byte.
fn find_current_entry(
    file: &dyn StorageFile,
    header: &FileHeader,
    start: u64,
    end: u64,
) -> io::Result<Option<u64>> {
    // The tag sits right after the frame; check it before the checksum. A tag fits
    // the place i bytes into the window when (tag ^ salt) - i is the LSN of the
    // window's start: one load, xor, subtract and compare per byte (a whole unused
    // 64 MiB file is searched at every open, so this loop must be tight).
    let mut buf = vec![0u8; 1 << 20];
    let mut at = start;
    while at + PROBE_BYTES as u64 <= end {
        let n = ((end - at) as usize).min(buf.len());
        file.read_exact_at(&mut buf[..n], at)?;
        let window_lsn = header.lsn_at(at);
        let tags = buf[record::FRAME_BYTES..n]
            .windows(8)
            .take(n - PROBE_BYTES + 1);
        for (i, tag) in tags.enumerate() {
            let lsn = u64::from_le_bytes(tag.try_into().unwrap()) ^ header.salt;
            if lsn.wrapping_sub(i as u64) == window_lsn
                && is_current_at(file, header, at + i as u64, end)?
            {
                return Ok(Some(at + i as u64));
            }
        }
        // The next window starts where a probe no longer fit in this one.
        at += (n - PROBE_BYTES + 1) as u64;
    }
    Ok(None)
}

fn is_current_at(
    file: &dyn StorageFile,
    header: &FileHeader,
    offset: u64,
    end: u64,
) -> io::Result<bool> {
    let mut frame = [0u8; record::FRAME_BYTES];
    file.read_exact_at(&mut frame, offset)?;
    let body_len = u32::from_le_bytes(frame[..4].try_into().unwrap()) as usize;
    let framed_len = (record::FRAME_BYTES + body_len) as u64;
    if body_len > record::BODY_BYTES_MAX || offset + framed_len > end {
        return Ok(false);
    }
    let mut framed = vec![0u8; framed_len as usize];
    file.read_exact_at(&mut framed, offset)?;
    Ok(match record::decode(&framed) {
        record::Decoded::Record { body, .. } => {
            Entry::parse(body).is_ok_and(|e| e.tag == header.tag_at(offset))
        }
        _ => false,
    })
}

/// Retires the journal file at `path`, whose entries are all durable elsewhere: it
/// becomes the next prepared file when none is waiting and it has room for
/// `entry_bytes` of entries (§3.1 recycling); otherwise it is renamed `*.retired`,
/// for [`delete_retired`] to delete in the background (unlinking a 64 MiB file takes
/// tens of milliseconds, which an open should not wait for). The caller fsyncs `dir`.
/// Returns whether the file was recycled.
pub fn retire(
    storage: &dyn Storage,
    dir: &Path,
    path: &Path,
    entry_bytes: u64,
) -> io::Result<bool> {
    let prepared = dir.join(PREPARED);
    let recycle = storage.stat(&prepared)?.is_none()
        && storage
            .stat(path)?
            .is_some_and(|stat| stat.len >= HEADER_BYTES + entry_bytes);
    if recycle {
        storage.rename(path, &prepared)?;
    } else {
        storage.rename(path, &crate::storage::with_suffix(path, RETIRED_SUFFIX))?;
    }
    Ok(recycle)
}

/// Deletes the retired journal files in `dir` (never replayed: their names no longer
/// end in `.wal`) and fsyncs it. Returns how many there were.
pub fn delete_retired(storage: &dyn Storage, dir: &Path) -> io::Result<usize> {
    let mut deleted = 0;
    for name in storage.list_dir(dir)? {
        if name.ends_with(RETIRED_SUFFIX) {
            storage.remove_file(&dir.join(name))?;
            deleted += 1;
        }
    }
    if deleted > 0 {
        storage.sync_dir(dir)?;
    }
    Ok(deleted)
}

/// An LSN above every LSN an entry in `prepared.tmp` could carry: a recycled file keeps
/// its last use's header until it is started again. 0 when there is none (or no
/// readable header: a zero-filled file holds no entries).
pub fn prepared_lsn_bound(storage: &dyn Storage, dir: &Path) -> io::Result<u64> {
    let file = match storage.open(&dir.join(PREPARED), OpenMode::Read) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    let len = file.len()?;
    Ok(match FileHeader::read(&*file) {
        Ok(header) if len >= HEADER_BYTES => header.lsn_at(len),
        _ => 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_round_trips() {
        let id = ChannelId::new("abc").unwrap();
        let mut out = Vec::new();
        let one = Part {
            id: id.as_str(),
            offset: 77,
            bytes: b"payload",
        };
        Entry {
            tag: 1234,
            parts: vec![one],
        }
        .encode_into(&mut out);
        assert_eq!(out.len(), entry_bytes(&id, 7));
        let record::Decoded::Record { body, .. } = record::decode(&out) else {
            panic!("not a record")
        };
        let entry = Entry::parse(body).unwrap();
        assert_eq!((entry.tag, entry.parts), (1234, vec![one]));
    }

    #[test]
    fn a_group_entry_round_trips() {
        let parts = vec![
            Part {
                id: "abc",
                offset: 77,
                bytes: b"payload",
            },
            Part {
                id: "defg",
                offset: 0,
                bytes: b"",
            },
            Part {
                id: "h",
                offset: 9,
                bytes: b"xyz",
            },
        ];
        let mut out = Vec::new();
        Entry {
            tag: 5,
            parts: parts.clone(),
        }
        .encode_into(&mut out);
        let record::Decoded::Record { body, .. } = record::decode(&out) else {
            panic!("not a record")
        };
        let entry = Entry::parse(body).unwrap();
        assert_eq!((entry.tag, entry.parts), (5, parts));
    }
}
