//! The clean-close snapshot (docs/format.md §7.5): index and file summary in one
//! checksummed file, trusted only when it matches the segments exactly.

use super::MsgId;
use super::Shared;
use super::index::{Entry, Index};
use super::segment::{self, Listing};
use crate::error::{IoContext, Result};
use crate::record::Reader;
use crate::storage::{OpenMode, Storage};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

const MAGIC: &[u8; 8] = b"VELLUMSS";
const VERSION: u32 = 1;
pub const NAME: &str = "snapshot";
pub const TMP_NAME: &str = "snapshot.tmp";
const SEGMENT_BYTES: usize = 4 + 8 + 8;
const ENTRY_BYTES: usize = 16 + 4 + 4 + 4 + 4;

/// A segment as the snapshot describes it.
pub struct SegmentSummary {
    pub file_bytes: u64,
    pub valid_bytes: u64,
}

pub struct Loaded {
    pub index: Index,
    pub segments: BTreeMap<u32, SegmentSummary>,
    pub next_number: u32,
}

/// Writes the snapshot of a store whose flusher and compactor have stopped. A
/// poisoned store writes none: its next open takes the dirty path.
pub fn write_at_close(shared: &Shared) -> Result<()> {
    let state = shared.state.lock();
    if state.poisoned.is_some() {
        return Ok(());
    }
    debug_assert!(state.buffer.is_empty() && state.in_flight.is_empty());
    let out = encode(
        state.next_number,
        state
            .segments
            .iter()
            .map(|(number, s)| (*number, s.file_bytes, s.valid_bytes)),
        state.index.len(),
        state.index.iter(),
    );
    drop(state);

    let storage = &*shared.storage;
    let tmp = shared.dir.join(TMP_NAME);
    let file = storage
        .open(&tmp, OpenMode::CreateReadWrite)
        .context(|| format!("creating {}", tmp.display()))?;
    file.set_len(0)
        .and_then(|()| file.write_all_at(&out, 0))
        .and_then(|()| file.sync_data())
        .context(|| format!("writing {}", tmp.display()))?;
    storage
        .rename(&tmp, &shared.dir.join(NAME))
        .and_then(|()| storage.sync_dir(&shared.dir))
        .context(|| format!("installing {}", tmp.display()))
}

/// The snapshot's bytes (§7.5): segments as (number, file bytes, valid bytes), then
/// `entry_count` index entries.
fn encode<'a>(
    next_number: u32,
    segments: impl ExactSizeIterator<Item = (u32, u64, u64)>,
    entry_count: usize,
    entries: impl Iterator<Item = &'a Entry>,
) -> Vec<u8> {
    let mut out =
        Vec::with_capacity(64 + segments.len() * SEGMENT_BYTES + entry_count * ENTRY_BYTES);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&u64::from(next_number).to_le_bytes());
    out.extend_from_slice(&(segments.len() as u32).to_le_bytes());
    for (number, file_bytes, valid_bytes) in segments {
        out.extend_from_slice(&number.to_le_bytes());
        out.extend_from_slice(&file_bytes.to_le_bytes());
        out.extend_from_slice(&valid_bytes.to_le_bytes());
    }
    out.extend_from_slice(&(entry_count as u64).to_le_bytes());
    for e in entries {
        out.extend_from_slice(&e.id.0);
        for field in [e.segment, e.offset, e.size, e.refs] {
            out.extend_from_slice(&field.to_le_bytes());
        }
    }
    out.extend_from_slice(&crc32c::crc32c(&out).to_le_bytes());
    out
}

/// Loads the snapshot when it is intact and describes exactly the segments in
/// `listing`; `None` sends the open down the dirty path, with the reason.
pub fn load(
    storage: &dyn Storage,
    dir: &Path,
    listing: &Listing,
) -> Result<Result<Loaded, &'static str>> {
    let path = dir.join(NAME);
    let file = match storage.open(&path, OpenMode::Read) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Err("no snapshot")),
        Err(e) => return Err(e).context(|| format!("opening {}", path.display())),
    };
    let len = file
        .len()
        .context(|| format!("sizing {}", path.display()))?;
    let mut bytes = vec![0u8; len as usize];
    file.read_exact_at(&mut bytes, 0)
        .context(|| format!("reading {}", path.display()))?;
    let loaded = match decode(&bytes) {
        Ok(loaded) => loaded,
        Err(reason) => return Ok(Err(reason)),
    };
    // Exactly the listed segments, each exactly as long as it was at close.
    if loaded.segments.len() != listing.segments.len() {
        return Ok(Err("the segments differ from the snapshot's"));
    }
    for (number, seg_path) in &listing.segments {
        let Some(summary) = loaded.segments.get(number) else {
            return Ok(Err("a segment the snapshot does not list"));
        };
        let actual = storage
            .stat(seg_path)
            .context(|| format!("sizing {}", seg_path.display()))?
            .map(|s| s.len);
        if actual != Some(summary.file_bytes) {
            return Ok(Err("a segment's length differs from the snapshot's"));
        }
    }
    Ok(Ok(loaded))
}

fn decode(bytes: &[u8]) -> Result<Loaded, &'static str> {
    let truncated = "snapshot truncated";
    if bytes.len() < 4 {
        return Err(truncated);
    }
    let (body, crc) = bytes.split_at(bytes.len() - 4);
    if crc32c::crc32c(body) != u32::from_le_bytes(crc.try_into().unwrap()) {
        return Err("snapshot checksum mismatch");
    }
    if body.len() < 8 || &body[..8] != MAGIC {
        return Err("bad snapshot magic");
    }
    let mut r = Reader::new(&body[8..]);
    if r.u32() != Some(VERSION) {
        return Err("unsupported snapshot version");
    }
    r.u32().ok_or(truncated)?;
    let next_number = u32::try_from(r.u64().ok_or(truncated)?).map_err(|_| "bad segment number")?;
    let segment_count = r.u32().ok_or(truncated)? as usize;
    if segment_count.saturating_mul(SEGMENT_BYTES) > body.len() {
        return Err(truncated);
    }
    let mut segments = BTreeMap::new();
    for _ in 0..segment_count {
        let number = r.u32().ok_or(truncated)?;
        let file_bytes = r.u64().ok_or(truncated)?;
        let valid_bytes = r.u64().ok_or(truncated)?;
        if number >= next_number || valid_bytes > file_bytes {
            return Err("inconsistent segment summary");
        }
        let summary = SegmentSummary {
            file_bytes,
            valid_bytes,
        };
        if segments.insert(number, summary).is_some() {
            return Err("a segment listed twice");
        }
    }
    let entries = r.u64().ok_or(truncated)? as usize;
    if entries.saturating_mul(ENTRY_BYTES) > body.len() {
        return Err(truncated);
    }
    let mut index = Index::with_capacity(entries);
    // Per-segment sums over a million entries: a hash map, not a tree.
    let mut valid: HashMap<u32, u64> = HashMap::new();
    for _ in 0..entries {
        let id = MsgId(r.bytes(16).ok_or(truncated)?.try_into().unwrap());
        let entry = Entry {
            id,
            segment: r.u32().ok_or(truncated)?,
            offset: r.u32().ok_or(truncated)?,
            size: r.u32().ok_or(truncated)?,
            refs: r.u32().ok_or(truncated)?,
        };
        let Some(summary) = segments.get(&entry.segment) else {
            return Err("an entry names a segment the snapshot does not list");
        };
        if entry.refs == 0
            || u64::from(entry.offset) < segment::HEADER_BYTES
            || (entry.size as usize) < segment::RECORD_OVERHEAD
            || u64::from(entry.offset) + u64::from(entry.size) > summary.file_bytes
        {
            return Err("inconsistent index entry");
        }
        *valid.entry(entry.segment).or_default() += u64::from(entry.size);
        if !index.insert_new(entry) {
            return Err("an id indexed twice");
        }
    }
    if !r.rest().is_empty() {
        return Err("trailing bytes in the snapshot");
    }
    for (number, summary) in &segments {
        if valid.get(number).copied().unwrap_or(0) != summary.valid_bytes {
            return Err("a segment's valid bytes differ from its entries'");
        }
    }
    Ok(Loaded {
        index,
        segments,
        next_number,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: u8, offset: u32) -> Entry {
        Entry {
            id: MsgId([id; 16]),
            segment: 1,
            offset,
            size: 40,
            refs: 1,
        }
    }

    fn snapshot(segments: &[(u32, u64, u64)], entries: &[Entry]) -> Vec<u8> {
        encode(3, segments.iter().copied(), entries.len(), entries.iter())
    }

    #[test]
    fn a_consistent_snapshot_decodes() {
        let entries = [entry(1, 32), entry(2, 72)];
        let loaded = decode(&snapshot(&[(1, 112, 80)], &entries)).unwrap();
        assert_eq!(loaded.index.len(), 2);
        assert_eq!(loaded.index.get(&MsgId([2; 16])), Some(&entries[1]));
    }

    #[test]
    fn a_checksummed_but_inconsistent_snapshot_is_refused() {
        let cases: [(&str, Vec<u8>); 4] = [
            (
                "an id indexed twice",
                snapshot(&[(1, 112, 80)], &[entry(1, 32), entry(1, 72)]),
            ),
            (
                "a segment listed twice",
                snapshot(&[(1, 112, 40), (1, 112, 40)], &[entry(1, 32)]),
            ),
            (
                "inconsistent index entry",
                snapshot(&[(1, 112, 40)], &[entry(1, 0)]),
            ),
            (
                "inconsistent index entry",
                snapshot(
                    &[(1, 112, 8)],
                    &[Entry {
                        size: 8,
                        ..entry(1, 32)
                    }],
                ),
            ),
        ];
        for (reason, bytes) in cases {
            assert_eq!(decode(&bytes).err(), Some(reason));
        }
    }
}
