//! Opening a data directory (docs/format.md §3.4): clear unfinished rewrites, replay
//! the journal into the channel files, make them durable, start a fresh journal.

use crate::channel::file::{Cursor, Header, Step};
use crate::channel::id::ChannelId;
use crate::error::{IoContext, Result};
use crate::journal::{self, Entry, FileHeader, JournalWriter, Part};
use crate::layout::Layout;
use crate::lost::{LostRange, save_range};
use crate::storage::{OpenMode, Storage, StorageFile};
use std::collections::{HashMap, HashSet};
use std::io;
use std::path::PathBuf;
use std::sync::Arc;

/// What opening the directory found and did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Journal entries written again into channel files (0 after a clean close).
    pub entries_replayed: u64,
    /// Channel files the replay wrote to.
    pub channels_replayed: usize,
    /// Unfinished rewrites removed from `tmp/`.
    pub temp_files_removed: usize,
    /// Damaged ranges found, with where their bytes were saved.
    pub lost: Vec<LostRange>,
    /// Pre-trim copies of trims that never completed, deleted.
    pub interrupted_trim_copies_removed: usize,
}

/// Opens the directory; replay keeps at most `open_files_max` channel files open.
/// `journal_bytes_max` sizes the journal files worth recycling.
pub fn recover(
    storage: &dyn Storage,
    layout: &Layout,
    open_files_max: usize,
    journal_bytes_max: u64,
) -> Result<(RecoveryReport, JournalWriter)> {
    let mut report = RecoveryReport::default();
    // A process that died without a power loss leaves writes and directory entries in
    // the page cache that were never made durable. Recovery must not build on them
    // (nor show them, then lose them to a later power loss): make them durable first.
    storage
        .sync_filesystem(&layout.root)
        .context(|| format!("syncing the filesystem of {}", layout.root.display()))?;
    for dir in layout.directories() {
        storage
            .create_dir_all(dir)
            .context(|| format!("creating {}", dir.display()))?;
    }
    storage
        .sync_dir(&layout.root)
        .context(|| format!("syncing {}", layout.root.display()))?;
    for name in storage
        .list_dir(&layout.tmp)
        .context(|| "listing tmp/".into())?
    {
        storage
            .remove_file(&layout.tmp.join(&name))
            .context(|| format!("removing tmp/{name}"))?;
        report.temp_files_removed += 1;
    }

    let files =
        journal::list_files(storage, &layout.journal).context(|| "listing the journal".into())?;
    let mut replay = Replay {
        storage,
        layout,
        open: HashMap::new(),
        open_max: open_files_max.max(1),
        touched: HashSet::new(),
        dirs: HashSet::new(),
    };
    // The new journal starts past every LSN any file here could hold, current or left
    // from an earlier use, so no old entry can ever pass for a current one (§3.4).
    let mut next_lsn = journal::prepared_lsn_bound(storage, &layout.journal)
        .context(|| "reading journal/prepared.tmp".into())?;
    for (lsn, path) in &files {
        let file = storage
            .open(path, OpenMode::Read)
            .context(|| format!("opening {}", path.display()))?;
        let len = file
            .len()
            .context(|| format!("sizing {}", path.display()))?;
        next_lsn = next_lsn.max(lsn + len.saturating_sub(journal::HEADER_BYTES));
        let header = match FileHeader::read(&*file) {
            Ok(header) if header.lsn == *lsn => header,
            Ok(header) => {
                // A retired file renamed for recycling, then started anew, with neither
                // rename durable yet: it was never in use under its new name, so it
                // holds no acknowledged entry (docs/format.md §3.4).
                tracing::info!(path = %path.display(), header_lsn = header.lsn, "journal file caught between names; nothing to replay");
                continue;
            }
            Err(_) => {
                // A journal file whose creation never became durable holds nothing acknowledged.
                lose(
                    storage,
                    layout,
                    &mut report,
                    path,
                    &*file,
                    0,
                    len,
                    "bad journal header",
                )?;
                continue;
            }
        };
        let mut cursor = Cursor::new(file.clone(), journal::HEADER_BYTES, len);
        loop {
            let (offset, reason) = match cursor
                .next()
                .context(|| format!("reading {}", path.display()))?
            {
                Step::Record { body, offset } => match Entry::parse(cursor.body(body)) {
                    // A clean close ended the journal here.
                    Ok(entry) if entry.tag == header.tag_at(offset) && entry.is_end() => break,
                    Ok(entry) if entry.tag == header.tag_at(offset) => {
                        for part in &entry.parts {
                            replay
                                .apply(part)
                                .context(|| format!("replaying into channel {}", part.id))?;
                        }
                        report.entries_replayed += 1;
                        continue;
                    }
                    Ok(_) => (offset, "journal entry left from the file's previous use"),
                    Err(reason) => (offset, reason),
                },
                Step::End => break,
                Step::Damaged { offset, reason } => (offset, reason),
            };
            // The entries end here; what follows is unused room or a loss (§3.1).
            let lost_end = journal::lost_after(&*file, &header, offset, len)
                .context(|| format!("reading {}", path.display()))?;
            if let Some(end) = lost_end {
                lose(
                    storage,
                    layout,
                    &mut report,
                    path,
                    &*file,
                    offset,
                    end,
                    reason,
                )?;
            }
            break;
        }
    }
    report.channels_replayed = replay.touched.len();
    replay
        .make_durable()
        .context(|| "syncing replayed channel files".into())?;

    // Everything the journal said is now durable in the channel files: retire it, then
    // start a new one (possibly under the same name as an old, empty one).
    for (_, path) in &files {
        journal::retire(storage, &layout.journal, path, journal_bytes_max)
            .context(|| format!("retiring {}", path.display()))?;
    }
    storage
        .sync_dir(&layout.journal)
        .context(|| "syncing journal/".into())?;
    let journal = JournalWriter::create(storage, &layout.journal, next_lsn)
        .context(|| "starting the journal".into())?;
    report.interrupted_trim_copies_removed = remove_interrupted_trim_copies(storage, layout)?;
    Ok((report, journal))
}

/// Deletes the pre-trim copies of trims that never completed. A copy is a hard link
/// to the live file made just before the trimmed file replaces it; a crash (or a
/// failure) in between leaves both names on one file, and later appends would land
/// in the copy too — making it count stored-message references it never took. Such
/// a copy is named with the live file's own epoch; a completed trim gave the live
/// file a new one.
fn remove_interrupted_trim_copies(storage: &dyn Storage, layout: &Layout) -> Result<usize> {
    let mut removed = 0;
    let shards = storage
        .list_dir(&layout.trimmed)
        .context(|| "listing trimmed/".into())?;
    for shard in shards {
        let dir = layout.trimmed.join(&shard);
        let names = storage
            .list_dir(&dir)
            .context(|| format!("listing {}", dir.display()))?;
        for name in names {
            let Some((id, epoch)) = name
                .strip_suffix(".vlog")
                .and_then(|rest| rest.rsplit_once('.'))
                .and_then(|(id, epoch)| {
                    Some((ChannelId::new(id).ok()?, epoch.parse::<u64>().ok()?))
                })
            else {
                continue;
            };
            let live = id.file_in(&layout.channels);
            let file = match storage.open(&live, OpenMode::ReadQuietly) {
                Ok(file) => file,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e).context(|| format!("opening {}", live.display())),
            };
            if let Ok((header, _)) = Header::read(&*file)
                && header.epoch == epoch
            {
                let copy = dir.join(&name);
                storage
                    .remove_file(&copy)
                    .and_then(|()| storage.sync_dir(&dir))
                    .context(|| format!("removing {}", copy.display()))?;
                removed += 1;
            }
        }
    }
    Ok(removed)
}

#[allow(clippy::too_many_arguments)]
fn lose(
    storage: &dyn Storage,
    layout: &Layout,
    report: &mut RecoveryReport,
    path: &std::path::Path,
    file: &dyn StorageFile,
    start: u64,
    end: u64,
    reason: &str,
) -> Result<()> {
    if start >= end {
        return Ok(());
    }
    let saved_as = save_range(storage, &layout.lost_found, path, file, start, end)
        .context(|| format!("saving the damaged tail of {}", path.display()))?;
    tracing::warn!(path = %path.display(), start, end, reason, "journal tail not replayed");
    report.lost.push(LostRange {
        path: path.to_path_buf(),
        start,
        end,
        reason: reason.to_string(),
        saved_as: Some(saved_as),
    });
    Ok(())
}

struct Replay<'a> {
    storage: &'a dyn Storage,
    layout: &'a Layout,
    open: HashMap<String, Arc<dyn StorageFile>>,
    open_max: usize,
    touched: HashSet<ChannelId>,
    dirs: HashSet<PathBuf>,
}

impl Replay<'_> {
    fn apply(&mut self, entry: &Part<'_>) -> io::Result<()> {
        let file = match self.open.get(entry.id) {
            Some(file) => file.clone(),
            None => {
                let id = ChannelId::new(entry.id)
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
                let shard = self.layout.channels.join(id.shard());
                if self.storage.stat(&shard)?.is_none() {
                    self.storage.create_dir_all(&shard)?;
                }
                // Synced even when the shard was there already: a process that died
                // (without a power loss) can leave a directory entry that was never
                // made durable, and the journal that vouched for it is retired next.
                self.dirs.insert(self.layout.channels.clone());
                self.dirs.insert(shard);
                if self.open.len() >= self.open_max {
                    self.open.clear();
                }
                let file = self.storage.open(
                    &id.file_in(&self.layout.channels),
                    OpenMode::CreateReadWrite,
                )?;
                self.open.insert(entry.id.to_string(), file.clone());
                self.touched.insert(id);
                file
            }
        };
        file.write_all_at(entry.bytes, entry.offset)
    }

    fn make_durable(&mut self) -> io::Result<()> {
        self.open.clear();
        for id in &self.touched {
            self.storage
                .open(&id.file_in(&self.layout.channels), OpenMode::ReadQuietly)?
                .sync_data()?;
        }
        for dir in &self.dirs {
            self.storage.sync_dir(dir)?;
        }
        Ok(())
    }
}
