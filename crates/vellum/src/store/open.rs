//! Opening a message store (docs/format.md §7.5–7.6): load the snapshot when it can be
//! trusted, else scan the segments and take the reference counts from the clients.

use super::MsgId;
use super::index::{Entry, Index};
use super::segment::{self, HEADER_BYTES};
use super::snapshot;
use super::state::{Segment, State};
use crate::error::{IoContext, Result};
use crate::lost::{LostRange, save_range};
use crate::record::{self, Cursor, Step};
use crate::storage::{OpenMode, Storage, StorageFile};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

/// The store's clients: what they reference, asked after an unclean shutdown (the
/// seed's "generator of ref-count deltas"). Removes are not logged, so this is the
/// only truth about counts after a crash: a store opened with an empty source (no
/// clients) keeps nothing it finds, since it cannot tell a removed message from a
/// live one.
pub trait RefSource {
    /// Calls `add(id, count)` for the references the clients hold. An id may come
    /// several times; its counts add up.
    fn references(&self, add: &mut dyn FnMut(MsgId, u32)) -> Result<()>;
}

impl RefSource for &[(MsgId, u32)] {
    fn references(&self, add: &mut dyn FnMut(MsgId, u32)) -> Result<()> {
        for (id, count) in self.iter() {
            add(*id, *count);
        }
        Ok(())
    }
}

impl RefSource for Vec<(MsgId, u32)> {
    fn references(&self, add: &mut dyn FnMut(MsgId, u32)) -> Result<()> {
        self.as_slice().references(add)
    }
}

impl<F: Fn(&mut dyn FnMut(MsgId, u32)) -> Result<()>> RefSource for F {
    fn references(&self, add: &mut dyn FnMut(MsgId, u32)) -> Result<()> {
        self(add)
    }
}

/// The most missing ids listed by name in a report (all are counted).
const MISSING_LISTED_MAX: usize = 1000;

/// What opening the store found and did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoreRecovery {
    /// The snapshot was loaded; nothing was scanned.
    pub clean: bool,
    /// Why the snapshot was not used, on the dirty path.
    pub dirty_reason: Option<String>,
    pub segments_scanned: usize,
    pub records_scanned: u64,
    /// Torn tails cut off segments (writes that never completed).
    pub torn_tails: Vec<LostRange>,
    /// Damaged ranges inside segments, saved to `lost+found/`.
    pub lost: Vec<LostRange>,
    /// Referenced ids no segment holds (the first ones; see `missing_count`).
    pub missing: Vec<MsgId>,
    pub missing_count: u64,
    /// Scanned records no client references: garbage from now on.
    pub unreferenced: u64,
    /// Unfinished compaction outputs and snapshot files deleted.
    pub leftovers_removed: usize,
}

pub fn open(
    storage: &dyn Storage,
    dir: &Path,
    refs: &dyn RefSource,
    open_segments_max: usize,
) -> Result<(State, StoreRecovery)> {
    let mut report = StoreRecovery::default();
    let lost_found = dir.join("lost+found");
    crate::storage::create_dir_durably(storage, &lost_found)
        .context(|| format!("creating {}", lost_found.display()))?;
    let listing = segment::list(storage, dir).context(|| format!("listing {}", dir.display()))?;
    for path in &listing.compacting {
        remove(storage, path)?;
        report.leftovers_removed += 1;
    }
    let tmp = dir.join(snapshot::TMP_NAME);
    if storage
        .stat(&tmp)
        .context(|| "statting the snapshot".into())?
        .is_some()
    {
        remove(storage, &tmp)?;
        report.leftovers_removed += 1;
    }
    let state = match snapshot::load(storage, dir, &listing)? {
        Ok(loaded) => {
            report.clean = true;
            let mut segments = BTreeMap::new();
            for (number, path) in &listing.segments {
                let summary = &loaded.segments[number];
                segments.insert(
                    *number,
                    segment_summary(path, summary.file_bytes, summary.valid_bytes),
                );
            }
            State::new(
                loaded.index,
                segments,
                loaded.next_number,
                open_segments_max,
            )
        }
        Err(reason) => {
            report.dirty_reason = Some(reason.to_string());
            dirty(
                storage,
                &lost_found,
                &listing,
                refs,
                open_segments_max,
                &mut report,
            )?
        }
    };
    // From here on a crash must never meet this snapshot again.
    let snapshot_path = dir.join(snapshot::NAME);
    if storage
        .stat(&snapshot_path)
        .context(|| "statting the snapshot".into())?
        .is_some()
    {
        remove(storage, &snapshot_path)?;
    }
    storage
        .sync_dir(dir)
        .context(|| format!("syncing {}", dir.display()))?;
    Ok((state, report))
}

fn remove(storage: &dyn Storage, path: &Path) -> Result<()> {
    storage
        .remove_file(path)
        .context(|| format!("removing {}", path.display()))
}

/// A segment as the open found it; its file is opened when first read.
fn segment_summary(path: &Path, file_bytes: u64, valid_bytes: u64) -> Segment {
    Segment {
        path: path.to_path_buf(),
        file_bytes,
        valid_bytes,
        flushed_bytes: file_bytes,
        lsn_base: None,
    }
}

/// What scanning one segment found.
#[derive(Default)]
struct Scan {
    /// (id, offset, framed size), in file order.
    records: Vec<(MsgId, u32, u32)>,
    /// The file's length after any torn tail was cut; `None` when the file was set aside.
    file_bytes: Option<u64>,
    torn: Option<LostRange>,
    lost: Vec<LostRange>,
}

/// The dirty path (§7.6).
fn dirty(
    storage: &dyn Storage,
    lost_found: &Path,
    listing: &segment::Listing,
    refs: &dyn RefSource,
    open_segments_max: usize,
    report: &mut StoreRecovery,
) -> Result<State> {
    // The references come first: the scan resyncs after damage on referenced ids.
    let mut wanted: HashMap<MsgId, u32> = HashMap::new();
    refs.references(&mut |id, count| {
        let refs = wanted.entry(id).or_default();
        *refs = refs.saturating_add(count);
    })?;
    wanted.retain(|_, count| *count > 0);
    let scans = scan_all(storage, lost_found, &listing.segments, &wanted)?;
    let mut index = Index::with_capacity(wanted.len());
    let mut valid: HashMap<u32, u64> = HashMap::new();
    for ((number, _), scan) in listing.segments.iter().zip(&scans) {
        report.segments_scanned += 1;
        report.records_scanned += scan.records.len() as u64;
        for &(id, offset, size) in &scan.records {
            // The first intact copy claims the id's references; later copies (left by
            // a compaction) and unreferenced records are garbage.
            match wanted.remove(&id) {
                Some(refs) => {
                    index.insert(Entry {
                        id,
                        segment: *number,
                        offset,
                        size,
                        refs,
                    });
                    *valid.entry(*number).or_default() += u64::from(size);
                }
                None => report.unreferenced += 1,
            }
        }
    }
    // What no segment held.
    report.missing_count = wanted.len() as u64;
    report.missing = wanted.into_keys().collect();
    report.missing.sort();
    report.missing.truncate(MISSING_LISTED_MAX);
    let mut segments = BTreeMap::new();
    let mut next_number = 1;
    for ((number, path), scan) in listing.segments.iter().zip(scans) {
        next_number = next_number.max(number + 1);
        report.torn_tails.extend(scan.torn);
        report.lost.extend(scan.lost);
        let Some(file_bytes) = scan.file_bytes else {
            continue;
        };
        let valid_bytes = valid.get(number).copied().unwrap_or(0);
        segments.insert(*number, segment_summary(path, file_bytes, valid_bytes));
    }
    Ok(State::new(index, segments, next_number, open_segments_max))
}

/// Scans every segment, on two threads: one segment is read at a time per thread.
fn scan_all(
    storage: &dyn Storage,
    lost_found: &Path,
    segments: &[(u32, PathBuf)],
    referenced: &HashMap<MsgId, u32>,
) -> Result<Vec<Scan>> {
    let next = AtomicUsize::new(0);
    let results: Vec<std::sync::Mutex<Option<Result<Scan>>>> = segments
        .iter()
        .map(|_| std::sync::Mutex::new(None))
        .collect();
    let workers = 2.min(segments.len());
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some((number, path)) = segments.get(i) else {
                        return;
                    };
                    let result = scan(storage, lost_found, *number, path, referenced);
                    let failed = result.is_err();
                    *results[i].lock().unwrap() = Some(result);
                    if failed {
                        // Stop handing out work; the error fails the open.
                        next.store(segments.len(), Ordering::Relaxed);
                    }
                }
            });
        }
    });
    let mut scans = Vec::with_capacity(segments.len());
    for (result, (_, path)) in results.into_iter().zip(segments) {
        match result.into_inner().unwrap() {
            Some(result) => scans.push(result?),
            None => {
                return Err(crate::Error::Io {
                    context: format!("scanning {}", path.display()),
                    source: std::io::Error::other("scan abandoned after another segment failed"),
                });
            }
        }
    }
    Ok(scans)
}

/// Scans one segment: keeps its intact records, sets damage aside up to the next intact
/// record, cuts the segment at damage nothing intact follows (a torn tail).
/// An I/O error fails the scan; it never truncates anything.
fn scan(
    storage: &dyn Storage,
    lost_found: &Path,
    number: u32,
    path: &Path,
    referenced: &HashMap<MsgId, u32>,
) -> Result<Scan> {
    let file = storage
        .open(path, OpenMode::ReadWrite)
        .context(|| format!("opening {}", path.display()))?;
    let len = file
        .len()
        .context(|| format!("sizing {}", path.display()))?;
    let mut out = Scan::default();
    let lose = |start: u64, end: u64, reason: &str| -> Result<LostRange> {
        let saved = save_range(storage, lost_found, path, &*file, start, end)
            .context(|| format!("saving damaged bytes of {}", path.display()))?;
        tracing::warn!(path = %path.display(), start, end, reason, "damaged segment bytes set aside");
        Ok(LostRange {
            path: path.to_path_buf(),
            start,
            end,
            reason: reason.to_string(),
            saved_as: Some(saved),
        })
    };
    let mut start = HEADER_BYTES;
    if let Err(reason) = segment::check_header(&*file, number) {
        // A damaged header over intact records (bit rot) loses only itself; a segment
        // whose creation never became durable holds nothing that was confirmed.
        let next = next_intact_record(&*file, 0, len, referenced)
            .context(|| format!("reading {}", path.display()))?;
        let Some(next) = next else {
            if len > 0 {
                out.lost.push(lose(0, len, reason)?);
            }
            remove(storage, path)?;
            return Ok(out);
        };
        out.lost.push(lose(0, next, reason)?);
        start = next;
    }
    'walk: loop {
        let mut cursor = Cursor::new(file.clone(), start, len);
        loop {
            let step = cursor
                .next()
                .context(|| format!("reading {}", path.display()))?;
            match step {
                Step::Record { offset, body } => {
                    match segment::parse_body(cursor.body(body.clone())) {
                        Some((id, _)) => {
                            out.records.push((
                                id,
                                offset as u32,
                                (body.len() + record::FRAME_BYTES) as u32,
                            ));
                        }
                        None => {
                            let end = offset + (body.len() + record::FRAME_BYTES) as u64;
                            out.lost
                                .push(lose(offset, end, "record too short for a message")?);
                            start = end;
                            continue 'walk;
                        }
                    }
                }
                Step::End => break 'walk,
                Step::Damaged { offset, reason } => {
                    match next_intact_record(&*file, offset, len, referenced)
                        .context(|| format!("reading {}", path.display()))?
                    {
                        Some(next) => {
                            out.lost.push(lose(offset, next, reason)?);
                            start = next;
                            continue 'walk;
                        }
                        None => {
                            out.torn = Some(lose(offset, len, reason)?);
                            file.set_len(offset)
                                .and_then(|()| file.sync_data())
                                .context(|| format!("truncating {}", path.display()))?;
                            out.file_bytes = Some(offset);
                            return Ok(out);
                        }
                    }
                }
            }
        }
    }
    out.file_bytes = Some(len);
    Ok(out)
}

/// Where the first intact record after the damage at `offset` starts (§7.6): the first
/// offset, searched at every byte, holding an intact record of a referenced id — stray
/// bytes would have to fake a checksum *and* name a referenced id to be taken for one —
/// or, at the end the damaged record's length declares, any intact record (the length
/// held; the damage was in the body). Never the declared end alone: a damaged length
/// that happens to land on a later record must not skip the intact ones before it.
/// `None` when nothing intact follows.
fn next_intact_record(
    file: &dyn StorageFile,
    offset: u64,
    len: u64,
    referenced: &HashMap<MsgId, u32>,
) -> std::io::Result<Option<u64>> {
    let declared_end = plausible_length(file, offset, len)?
        .map(|body_len| offset + record::FRAME_BYTES as u64 + u64::from(body_len));
    const PROBE: usize = record::FRAME_BYTES + MsgId::BYTES;
    let mut buf = vec![0u8; 1 << 20];
    let mut at = offset + 1;
    while at + PROBE as u64 <= len {
        let n = ((len - at) as usize).min(buf.len());
        file.read_exact_at(&mut buf[..n], at)?;
        for i in 0..=n - PROBE {
            let candidate = at + i as u64;
            let body_len = u32::from_le_bytes(buf[i..i + 4].try_into().unwrap());
            if !fits(candidate, body_len, len) {
                continue;
            }
            let id = MsgId(buf[i + record::FRAME_BYTES..i + PROBE].try_into().unwrap());
            let wanted = referenced.contains_key(&id) || Some(candidate) == declared_end;
            if wanted && intact_record_at(file, candidate, len)?.is_some() {
                return Ok(Some(candidate));
            }
        }
        // The next window starts where a probe no longer fit in this one.
        at += (n - PROBE + 1) as u64;
    }
    Ok(None)
}

/// Whether a record of `body_len` bytes at `offset` could hold a message and fit in `len`.
fn fits(offset: u64, body_len: u32, len: u64) -> bool {
    let body_len = body_len as usize;
    (MsgId::BYTES..=record::BODY_BYTES_MAX).contains(&body_len)
        && offset + (record::FRAME_BYTES + body_len) as u64 <= len
}

/// The body length the frame at `offset` declares, when it could hold a message.
fn plausible_length(file: &dyn StorageFile, offset: u64, len: u64) -> std::io::Result<Option<u32>> {
    let mut frame = [0u8; record::FRAME_BYTES];
    if offset + frame.len() as u64 > len {
        return Ok(None);
    }
    file.read_exact_at(&mut frame, offset)?;
    let body_len = u32::from_le_bytes(frame[..4].try_into().unwrap());
    Ok(fits(offset, body_len, len).then_some(body_len))
}

/// The id of the intact message record at `offset`, if one is there.
fn intact_record_at(
    file: &dyn StorageFile,
    offset: u64,
    len: u64,
) -> std::io::Result<Option<MsgId>> {
    let Some(body_len) = plausible_length(file, offset, len)? else {
        return Ok(None);
    };
    let mut framed = vec![0u8; record::FRAME_BYTES + body_len as usize];
    file.read_exact_at(&mut framed, offset)?;
    Ok(match record::decode(&framed) {
        record::Decoded::Record { body, .. } => segment::parse_body(body).map(|(id, _)| id),
        _ => None,
    })
}
