//! Exporting a store to CryptPad's layout (docs/format.md §8.5): every channel file's
//! records, in order, turned back into the lines of `<id>.ndjson` and
//! `<id>.metadata.ndjson` (and the offset hint and placeholder), so that an imported
//! channel comes back byte for byte.

use super::import::trim_copy_id;
use super::layout::{FileKind, path_of};
use super::records::for_each_record;
use super::report::{ExportProgress, ExportReport};
use crate::channel::file::{Body, CryptPadPart};
use crate::channel::id::{ChannelId, id_of_file_name};
use crate::channel::log::Presence;
use crate::engine::{Inner, Vellum};
use crate::error::{Error, IoContext, Result};
use crate::storage::{OpenMode, StorageFile};
use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Bytes buffered per output file.
const WRITE_BUFFER_BYTES: usize = 256 * 1024;

/// Writes every live channel of `store` under `out` in CryptPad's layout and, with
/// `archive_out`, every archived channel and newest pre-trim copy under it (their
/// placeholders under `out`). Each target must be absent or empty.
pub fn export_cryptpad(
    store: &Vellum,
    out: &Path,
    archive_out: Option<&Path>,
    progress: &dyn Fn(ExportProgress),
) -> Result<ExportReport> {
    let inner = store.inner();
    prepare(out)?;
    if let Some(archive_out) = archive_out {
        prepare(archive_out)?;
        let (a, b) = (canonical(out)?, canonical(archive_out)?);
        if a.starts_with(&b) || b.starts_with(&a) {
            return Err(Error::Io {
                context: format!(
                    "exporting to {} and {}: one tree would hold the other",
                    out.display(),
                    archive_out.display()
                ),
                source: io::ErrorKind::InvalidInput.into(),
            });
        }
    }
    let mut exporter = Exporter {
        inner,
        report: ExportReport::default(),
        progress,
        dirs: BTreeSet::new(),
    };
    for shard in shard_dirs(inner, &inner.layout.channels)? {
        for name in names_in(inner, &shard)? {
            if let Some(id) = id_of_file_name(&name) {
                exporter.live(&id, &shard.join(&name), out)?;
            }
        }
        exporter.sync_dirs()?;
    }
    if let Some(archive_out) = archive_out {
        for shard in shard_dirs(inner, &inner.layout.archive)? {
            for name in names_in(inner, &shard)? {
                if let Some(id) = id_of_file_name(&name) {
                    exporter.archived(&id, &shard.join(&name), out, archive_out)?;
                }
            }
            exporter.sync_dirs()?;
        }
        for shard in shard_dirs(inner, &inner.layout.trimmed)? {
            for (id, name) in newest_trim_copies(names_in(inner, &shard)?) {
                exporter.trim_copy(&id, &shard.join(name), archive_out)?;
            }
            exporter.sync_dirs()?;
        }
    }
    for root in [Some(out), archive_out].into_iter().flatten() {
        sync_dir(root)?;
    }
    Ok(exporter.report)
}

/// What `Exporter::channel` did.
enum Written {
    /// Written; the reason of its last archive marker, if no restore followed it.
    Done { reason: Option<String> },
    /// Not written: it cannot be CryptPad lines (reported in `skipped`).
    Skipped,
}

struct Exporter<'a> {
    inner: &'a Inner,
    report: ExportReport,
    progress: &'a dyn Fn(ExportProgress),
    /// Directories that gained entries since they were last synced.
    dirs: BTreeSet<PathBuf>,
}

impl Exporter<'_> {
    fn live(&mut self, id: &ChannelId, path: &Path, out: &Path) -> Result<()> {
        if !self.exportable(id, path) {
            return Ok(());
        }
        // A consistent snapshot of the committed records, as a read takes.
        let (file, len) = {
            let channel = self.inner.cache.get(id);
            let _task = channel.lane.unordered();
            let state = self.inner.loaded(&channel)?;
            match &state.presence {
                Presence::Live(live) => (live.snapshot(), live.len()),
                // Removed or archived since the directory was listed.
                _ => return Ok(()),
            }
        };
        if let Written::Skipped = self.channel(id, file, len, path, out)? {
            return Ok(());
        }
        self.report.channels += 1;
        self.advanced();
        Ok(())
    }

    fn archived(
        &mut self,
        id: &ChannelId,
        path: &Path,
        out: &Path,
        archive_out: &Path,
    ) -> Result<()> {
        if !self.exportable(id, path) {
            return Ok(());
        }
        let Some((file, len)) = open_quietly(self.inner, path)? else {
            return Ok(()); // Restored or removed since the directory was listed.
        };
        let reason = match self.channel(id, file, len, path, archive_out)? {
            Written::Skipped => return Ok(()),
            Written::Done { reason } => reason,
        };
        if let Some(reason) = reason
            && !reason.is_empty()
        {
            // CryptPad writes a placeholder only for a reason, in the live tree.
            let mut placeholder = OutFile::new(path_of(out, id, FileKind::Placeholder));
            placeholder.raw(reason.as_bytes(), &mut self.dirs)?;
            self.report.bytes += placeholder.finish()?;
        }
        self.report.archived += 1;
        self.advanced();
        Ok(())
    }

    fn trim_copy(&mut self, id: &ChannelId, path: &Path, archive_out: &Path) -> Result<()> {
        if !self.exportable(id, path) {
            return Ok(());
        }
        let archived = id.file_in(&self.inner.layout.archive);
        let taken = self
            .inner
            .storage
            .stat(&archived)
            .context(|| format!("stat of {}", archived.display()))?;
        if taken.is_some() {
            self.report.skipped.push(
                path.to_path_buf(),
                "a pre-trim copy of a channel that is also archived: the archived channel takes its place",
            );
            return Ok(());
        }
        let Some((file, len)) = open_quietly(self.inner, path)? else {
            return Ok(()); // Deleted by retention since the directory was listed.
        };
        if let Written::Skipped = self.channel(id, file, len, path, archive_out)? {
            return Ok(());
        }
        self.report.trim_copies += 1;
        self.advanced();
        Ok(())
    }

    /// An id ending in `.metadata` would name its log like another channel's metadata log.
    fn exportable(&mut self, id: &ChannelId, path: &Path) -> bool {
        let ok = !id.as_str().ends_with(".metadata");
        if !ok {
            self.report.skipped.push(
                path.to_path_buf(),
                "an id ending in .metadata: its log would be read back as another channel's metadata log",
            );
        }
        ok
    }

    /// Writes the CryptPad files of one channel file under `root`; returns the reason
    /// of its last archive marker, if no restore followed it. A channel holding a
    /// message with a newline cannot be written as CryptPad's one line per message:
    /// its files are removed again and it is reported skipped (`Written::Skipped`).
    fn channel(
        &mut self,
        id: &ChannelId,
        file: Arc<dyn StorageFile>,
        len: u64,
        path: &Path,
        root: &Path,
    ) -> Result<Written> {
        let mut log = OutFile::new(path_of(root, id, FileKind::Log));
        let mut metadata = OutFile::new(path_of(root, id, FileKind::Metadata));
        let mut hint = OutFile::new(path_of(root, id, FileKind::OffsetHint));
        let mut reason = None;
        let dirs = &mut self.dirs;
        let store = &self.inner.store;
        let mut messages = 0;
        let mut multiline = None;
        for_each_record(file, len, path, |body| {
            match body {
                Body::Message { seq, data, .. } => {
                    if data.contains(&b'\n') {
                        multiline = Some(seq);
                        return Ok(ControlFlow::Break(()));
                    }
                    messages += 1;
                    log.line(data, dirs)?;
                }
                Body::Stored { seq, id, .. } => {
                    let data = store.read(&id)?;
                    if data.contains(&b'\n') {
                        multiline = Some(seq);
                        return Ok(ControlFlow::Break(()));
                    }
                    messages += 1;
                    log.line(&data, dirs)?;
                }
                Body::Metadata { line, .. } => metadata.line(line, dirs)?,
                Body::CryptPad { part, bytes, .. } => match part {
                    CryptPadPart::LegacyFolded | CryptPadPart::LegacyIgnored => {
                        log.line(bytes, dirs)?
                    }
                    CryptPadPart::LogTail => log.tail(bytes, dirs)?,
                    CryptPadPart::MetadataTail => metadata.tail(bytes, dirs)?,
                    CryptPadPart::OffsetHint => hint.raw(bytes, dirs)?,
                    CryptPadPart::Origin => {}
                },
                Body::Archived { reason: r, .. } => reason = Some(r.to_string()),
                Body::Restored { .. } => reason = None,
            }
            Ok(ControlFlow::Continue(()))
        })?;
        if let Some(seq) = multiline {
            for file in [log, metadata, hint] {
                file.discard()?;
            }
            self.report.skipped.push(
                path.to_path_buf(),
                format!("message seq {seq} holds a newline, which CryptPad's one-line-per-message log cannot"),
            );
            return Ok(Written::Skipped);
        }
        self.report.messages += messages;
        for file in [log, metadata, hint] {
            self.report.bytes += file.finish()?;
        }
        Ok(Written::Done { reason })
    }

    fn advanced(&self) {
        (self.progress)(ExportProgress {
            channels: self.report.channels + self.report.archived + self.report.trim_copies,
            bytes: self.report.bytes,
        });
    }

    fn sync_dirs(&mut self) -> Result<()> {
        for dir in std::mem::take(&mut self.dirs) {
            sync_dir(&dir)?;
        }
        Ok(())
    }
}

/// One CryptPad file being written, created at its first byte (or first empty tail).
struct OutFile {
    path: PathBuf,
    file: Option<BufWriter<File>>,
    /// A non-empty tail was written and another line follows: it needs its `\n` first.
    newline_owed: bool,
    bytes: u64,
}

impl OutFile {
    fn new(path: PathBuf) -> Self {
        OutFile {
            path,
            file: None,
            newline_owed: false,
            bytes: 0,
        }
    }

    /// A line, and its `\n`.
    fn line(&mut self, bytes: &[u8], dirs: &mut BTreeSet<PathBuf>) -> Result<()> {
        if std::mem::take(&mut self.newline_owed) {
            self.write(b"\n", dirs)?;
        }
        self.write(bytes, dirs)?;
        self.write(b"\n", dirs)
    }

    /// A tail: bytes without a `\n` (none: the file exists, empty).
    fn tail(&mut self, bytes: &[u8], dirs: &mut BTreeSet<PathBuf>) -> Result<()> {
        if bytes.is_empty() {
            return self.write(b"", dirs);
        }
        if self.newline_owed {
            self.write(b"\n", dirs)?;
        }
        self.write(bytes, dirs)?;
        self.newline_owed = true;
        Ok(())
    }

    /// Bytes as they are (an offset hint, a placeholder).
    fn raw(&mut self, bytes: &[u8], dirs: &mut BTreeSet<PathBuf>) -> Result<()> {
        self.write(bytes, dirs)
    }

    fn write(&mut self, bytes: &[u8], dirs: &mut BTreeSet<PathBuf>) -> Result<()> {
        let context = || format!("writing {}", self.path.display());
        let file = match &mut self.file {
            Some(file) => file,
            None => {
                let dir = self.path.parent().expect("a shard directory");
                std::fs::create_dir_all(dir).context(context)?;
                dirs.insert(dir.to_path_buf());
                if let Some(root) = dir.parent() {
                    dirs.insert(root.to_path_buf());
                }
                // Never over another file: the target was empty, so a clash is a bug or a race.
                let file = File::create_new(&self.path).context(context)?;
                self.file
                    .insert(BufWriter::with_capacity(WRITE_BUFFER_BYTES, file))
            }
        };
        file.write_all(bytes).context(context)?;
        self.bytes += bytes.len() as u64;
        Ok(())
    }

    /// Flushes and fsyncs the file, if it was created; returns its bytes.
    /// Removes the file again, if it was made.
    fn discard(self) -> Result<()> {
        if self.file.is_some() {
            drop(self.file);
            std::fs::remove_file(&self.path)
                .context(|| format!("removing {}", self.path.display()))?;
        }
        Ok(())
    }

    fn finish(self) -> Result<u64> {
        if let Some(file) = self.file {
            let context = || format!("writing {}", self.path.display());
            let file = file
                .into_inner()
                .map_err(|e| e.into_error())
                .context(context)?;
            file.sync_all().context(context)?;
        }
        Ok(self.bytes)
    }
}

/// Creates `dir` if it is absent; refuses it if it holds anything.
fn prepare(dir: &Path) -> Result<()> {
    let context = || format!("preparing {}", dir.display());
    match std::fs::read_dir(dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(Error::ExportTargetNotEmpty {
                    path: dir.to_path_buf(),
                });
            }
            Ok(())
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            std::fs::create_dir_all(dir).context(context)?;
            if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
                sync_dir(parent)?;
            }
            Ok(())
        }
        Err(e) => Err(e).context(context),
    }
}

fn canonical(dir: &Path) -> Result<PathBuf> {
    dir.canonicalize()
        .context(|| format!("resolving {}", dir.display()))
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .context(|| format!("syncing {}", dir.display()))
}

/// The shard directories under `root`.
fn shard_dirs(inner: &Inner, root: &Path) -> Result<Vec<PathBuf>> {
    let shards = inner
        .storage
        .list_dir(root)
        .context(|| format!("listing {}", root.display()))?;
    Ok(shards.into_iter().map(|shard| root.join(shard)).collect())
}

/// The names in shard directory `dir`: one shard in memory at a time.
fn names_in(inner: &Inner, dir: &Path) -> Result<Vec<String>> {
    match inner.storage.list_dir(dir) {
        Ok(names) => Ok(names),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e).context(|| format!("listing {}", dir.display())),
    }
}

/// For each id among pre-trim copy names, the newest copy (the highest epoch): the one
/// CryptPad's archive would hold, each trim overwriting the last.
fn newest_trim_copies(names: Vec<String>) -> Vec<(ChannelId, String)> {
    let mut newest: BTreeMap<ChannelId, (u64, String)> = BTreeMap::new();
    for name in names {
        let Some(id) = trim_copy_id(&name).and_then(|id| ChannelId::new(id).ok()) else {
            continue;
        };
        let epoch = name
            .strip_suffix(".vlog")
            .and_then(|stem| stem.rsplit_once('.'))
            .and_then(|(_, epoch)| epoch.parse::<u64>().ok())
            .unwrap_or(0);
        let slot = newest.entry(id).or_insert((epoch, name.clone()));
        if epoch > slot.0 {
            *slot = (epoch, name);
        }
    }
    newest
        .into_iter()
        .map(|(id, (_, name))| (id, name))
        .collect()
}

/// Opens a channel file that is not loaded (archived, a pre-trim copy) without
/// touching its access time; `None` when it is gone.
fn open_quietly(inner: &Inner, path: &Path) -> Result<Option<(Arc<dyn StorageFile>, u64)>> {
    let context = || format!("opening {}", path.display());
    let file = match inner.storage.open(path, OpenMode::ReadQuietly) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).context(context),
    };
    let len = file.len().context(context)?;
    Ok(Some((file, len)))
}
