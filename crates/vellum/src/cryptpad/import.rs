//! Importing a CryptPad datastore (docs/format.md §8.4): a check pass that reads every
//! file and changes nothing, then channel by channel, a file built in `tmp/` and renamed
//! into place — each channel appears whole or not at all, and a re-run after a crash
//! skips the channels already imported (their origin matches the files).

use super::builder::{self, Built, Destination, Placeholder, Source};
use super::fingerprint::FINGERPRINT_BYTES;
use super::layout::{self, FileKind, Group, Other};
use super::lines::read_small;
use super::records::origin_of;
use super::report::{ImportPhase, ImportProgress, ImportReport};
use crate::channel::id::ChannelId;
use crate::channel::log::Presence;
use crate::engine::{Inner, Vellum};
use crate::error::{Error, IoContext, Result};
use std::path::{Path, PathBuf};

/// Imports the CryptPad datastore at `datastore` (the live tree: `<xx>/<id>.ndjson` …)
/// and, if given, its archive tree (`<archiveRoot>/datastore`, the same layout) into
/// `store`. Refuses, changing nothing, a bad channel file name, an unreadable file, a
/// line over `message_bytes_max`, or an id the store already holds that was not
/// imported from the same files. `progress` is called as the work advances.
pub fn import_cryptpad(
    store: &Vellum,
    datastore: &Path,
    archive: Option<&Path>,
    progress: &dyn Fn(ImportProgress),
) -> Result<ImportReport> {
    let inner = store.inner();
    let trees = Trees {
        live: datastore,
        archive,
    };
    let max = inner.options.message_bytes_max;

    // 1. Check: every file read, every id checked against the store; nothing written.
    let mut at = ImportProgress {
        phase: ImportPhase::Checking,
        channels: 0,
        bytes: 0,
        bytes_total: 0,
    };
    trees.walk(max, &mut |item| {
        let Item::Channel(source) = item else {
            return Ok(());
        };
        let before = at.bytes;
        let (fingerprint, bytes) = builder::scan(&source, max, &mut |done| {
            progress(ImportProgress {
                bytes: before + done,
                ..at
            })
        })?;
        if let Existing::Conflict(e) = existing(inner, &source, || Ok(fingerprint))? {
            return Err(e);
        }
        at.channels += 1;
        at.bytes += bytes;
        progress(at);
        Ok(())
    })?;

    // 2. Import, channel by channel.
    let mut report = ImportReport::default();
    let mut at = ImportProgress {
        phase: ImportPhase::Importing,
        channels: 0,
        bytes: 0,
        bytes_total: at.bytes,
    };
    progress(at);
    trees.walk(max, &mut |item| {
        let source = match item {
            Item::Channel(source) => source,
            Item::Skipped(Other { path, reason }) => {
                report.skipped.push(path, reason);
                return Ok(());
            }
        };
        let before = at.bytes;
        // Read only when the id is taken: to tell an earlier run's channel from another.
        let mut scanned = 0;
        let existing = existing(inner, &source, || {
            let (fingerprint, bytes) = builder::scan(&source, max, &mut |_| {})?;
            scanned = bytes;
            Ok(fingerprint)
        })?;
        match existing {
            Existing::None => {
                let built = builder::build(inner, &source, &mut |done| {
                    progress(ImportProgress {
                        bytes: before + done,
                        ..at
                    })
                })?;
                let counts = built.counts;
                place(inner, &source, built)?;
                match source.destination {
                    Destination::Live => report.channels += 1,
                    Destination::Archived => report.archived += 1,
                    Destination::TrimCopy => report.trim_copies += 1,
                }
                report.messages += counts.messages;
                report.stored_messages += counts.stored;
                report.metadata_lines += counts.metadata_lines;
                report.keyed_by_hash += counts.keyed_by_hash;
                report.bytes += counts.bytes;
                at.bytes += counts.bytes;
            }
            Existing::Imported => {
                report.already_imported += 1;
                at.bytes += scanned;
            }
            // Appeared since the check (another writer in this process).
            Existing::Conflict(e) => return Err(e),
        }
        at.channels += 1;
        progress(at);
        Ok(())
    })?;
    Ok(report)
}

/// What the store already holds for a channel about to be imported.
enum Existing {
    None,
    /// The same id with an origin equal to the files' fingerprint: an earlier run's work.
    Imported,
    /// Something else the import must not overwrite.
    Conflict(Error),
}

/// Looks for `source.id` where the import would put it, and for a live or archived
/// channel also where it would conflict. `fingerprint` is computed only when needed.
fn existing(
    inner: &Inner,
    source: &Source,
    fingerprint: impl FnOnce() -> Result<[u8; FINGERPRINT_BYTES]>,
) -> Result<Existing> {
    let id = &source.id;
    let (path, conflict) = match source.destination {
        Destination::TrimCopy => {
            let fingerprint = fingerprint()?;
            for path in trim_copies_of(inner, id)? {
                if origin_of(inner, &path)? == Some(fingerprint) {
                    return Ok(Existing::Imported);
                }
            }
            return Ok(Existing::None);
        }
        Destination::Live | Destination::Archived => {
            let channel = inner.cache.get(id);
            let state = inner.loaded(&channel)?;
            match &state.presence {
                Presence::Missing { archived: None } => return Ok(Existing::None),
                Presence::Live(_) => (
                    id.file_in(&inner.layout.channels),
                    Error::AlreadyExists {
                        channel: id.clone(),
                    },
                ),
                Presence::Missing {
                    archived: Some(reason),
                } => (
                    id.file_in(&inner.layout.archive),
                    Error::Archived {
                        channel: id.clone(),
                        reason: reason.clone(),
                    },
                ),
                Presence::Unloaded => unreachable!("state is loaded"),
            }
        }
    };
    if origin_of(inner, &path)? == Some(fingerprint()?) {
        return Ok(Existing::Imported);
    }
    Ok(Existing::Conflict(conflict))
}

/// The pre-trim copies of `id`: `trimmed/<xx>/<id>.<epoch>.vlog`.
fn trim_copies_of(inner: &Inner, id: &ChannelId) -> Result<Vec<PathBuf>> {
    let dir = inner.layout.trimmed.join(id.shard());
    let names = match inner.storage.list_dir(&dir) {
        Ok(names) => names,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).context(|| format!("listing {}", dir.display())),
    };
    Ok(names
        .into_iter()
        .filter(|name| trim_copy_id(name) == Some(id.as_str()))
        .map(|name| dir.join(name))
        .collect())
}

/// The id a pre-trim copy's file name `<id>.<epoch>.vlog` belongs to.
pub(super) fn trim_copy_id(name: &str) -> Option<&str> {
    let (id, epoch) = name.strip_suffix(".vlog")?.rsplit_once('.')?;
    epoch.bytes().all(|b| b.is_ascii_digit()).then_some(id)
}

/// Makes a built channel visible with one rename (docs/format.md §8.4 step 3). The
/// store references it holds are released when, and only when, the rename never ran.
fn place(inner: &Inner, source: &Source, built: Built) -> Result<()> {
    let id = &source.id;
    let mut renamed = false;
    let placed = match source.destination {
        Destination::TrimCopy => {
            let target = inner
                .layout
                .trimmed
                .join(id.shard())
                .join(format!("{id}.{}.vlog", built.epoch));
            rename_durably(inner, &built.tmp, &target, &mut renamed)
        }
        Destination::Live | Destination::Archived => {
            let root = match source.destination {
                Destination::Live => &inner.layout.channels,
                _ => &inner.layout.archive,
            };
            inner.exclusive(
                id,
                |id, state| match &state.presence {
                    Presence::Missing { archived: None } => Ok(()),
                    Presence::Missing {
                        archived: Some(reason),
                    } => Err(Error::Archived {
                        channel: id.clone(),
                        reason: reason.clone(),
                    }),
                    _ => Err(Error::AlreadyExists {
                        channel: id.clone(),
                    }),
                },
                |inner, id, state, ()| {
                    rename_durably(inner, &built.tmp, &id.file_in(root), &mut renamed)?;
                    // Read from the file at its next use.
                    state.presence = Presence::Unloaded;
                    Ok(())
                },
            )
        }
    };
    if placed.is_err() && !renamed {
        let _ = inner.storage.remove_file(&built.tmp);
        inner.release(built.stored);
    }
    placed
}

/// Renames `tmp` to `target` (creating its shard directory durably) and syncs the
/// directory. `renamed` is set once the rename has run: from then on the file may be
/// visible, so the references it holds must be kept whatever happens.
fn rename_durably(inner: &Inner, tmp: &Path, target: &Path, renamed: &mut bool) -> Result<()> {
    let dir = target.parent().expect("a shard directory");
    crate::storage::create_dir_durably(&*inner.storage, dir)
        .context(|| format!("creating {}", dir.display()))?;
    inner
        .storage
        .rename(tmp, target)
        .context(|| format!("renaming {} to {}", tmp.display(), target.display()))?;
    *renamed = true;
    inner
        .storage
        .sync_dir(dir)
        .context(|| format!("syncing {}", dir.display()))
}

/// The two trees of a CryptPad datastore.
struct Trees<'a> {
    live: &'a Path,
    archive: Option<&'a Path>,
}

/// What a walk of the trees meets.
enum Item {
    Channel(Source),
    Skipped(Other),
}

impl Trees<'_> {
    /// Calls `each` for every channel to import and every file left out, the live tree
    /// first, one shard directory in memory at a time. The same trees always give the
    /// same items in the same order.
    fn walk(&self, max: usize, each: &mut dyn FnMut(Item) -> Result<()>) -> Result<()> {
        let trees = [(self.live, true)]
            .into_iter()
            .chain(self.archive.map(|archive| (archive, false)));
        for (root, live) in trees {
            let (shards, others) = layout::shards(root)?;
            for other in others {
                each(Item::Skipped(other))?;
            }
            for shard in shards {
                let (groups, others) = layout::read_shard(root, &shard)?;
                for other in others {
                    each(Item::Skipped(other))?;
                }
                for group in groups {
                    if live {
                        self.plan_live(&group, each)?;
                    } else {
                        self.plan_archived(&group, max, each)?;
                    }
                }
            }
        }
        Ok(())
    }

    fn plan_live(&self, group: &Group, each: &mut dyn FnMut(Item) -> Result<()>) -> Result<()> {
        if group.has_channel() {
            each(Item::Channel(source(group, Destination::Live, None)))?;
        } else if let Some(path) = group.get(FileKind::OffsetHint) {
            each(skipped(
                path,
                "an offset hint without a channel log or metadata log",
            ))?;
        }
        if let Some(path) = group.get(FileKind::Placeholder) {
            // It goes with the archive tree's copy, unless that copy is a pre-trim one.
            let archived = match self.archive {
                Some(archive) => !group.has_channel() && has_channel(archive, &group.id)?,
                None => false,
            };
            if !archived {
                each(skipped(
                    path,
                    "a placeholder of no channel imported as archived",
                ))?;
            }
        }
        Ok(())
    }

    fn plan_archived(
        &self,
        group: &Group,
        max: usize,
        each: &mut dyn FnMut(Item) -> Result<()>,
    ) -> Result<()> {
        if let Some(path) = group.get(FileKind::Placeholder) {
            each(skipped(
                path,
                "a placeholder in the archive tree (CryptPad keeps them in the live tree)",
            ))?;
        }
        if !group.has_channel() {
            if let Some(path) = group.get(FileKind::OffsetHint) {
                each(skipped(
                    path,
                    "an offset hint without a channel log or metadata log",
                ))?;
            }
            return Ok(());
        }
        if has_channel(self.live, &group.id)? {
            return each(Item::Channel(source(group, Destination::TrimCopy, None)));
        }
        let path = layout::path_of(self.live, &group.id, FileKind::Placeholder);
        let placeholder = match exists(&path)? {
            false => None,
            true => {
                let bytes = read_small(&path, max)?;
                match String::from_utf8(bytes) {
                    Ok(reason) if !reason.is_empty() => Some(Placeholder {
                        reason,
                        modified_ms: builder::modified_ms(Some(&path))?,
                    }),
                    _ => {
                        each(skipped(&path, "a placeholder that is empty or not UTF-8"))?;
                        None
                    }
                }
            }
        };
        each(Item::Channel(source(
            group,
            Destination::Archived,
            placeholder,
        )))
    }
}

fn source(group: &Group, destination: Destination, placeholder: Option<Placeholder>) -> Source {
    let path = |kind| group.get(kind).map(Path::to_path_buf);
    Source {
        id: group.id.clone(),
        log: path(FileKind::Log),
        metadata: path(FileKind::Metadata),
        offset_hint: path(FileKind::OffsetHint),
        placeholder,
        destination,
    }
}

fn skipped(path: &Path, reason: &'static str) -> Item {
    Item::Skipped(Other {
        path: path.to_path_buf(),
        reason,
    })
}

/// Whether the tree at `root` holds a channel log or a metadata log of `id`.
fn has_channel(root: &Path, id: &ChannelId) -> Result<bool> {
    Ok(exists(&layout::path_of(root, id, FileKind::Log))?
        || exists(&layout::path_of(root, id, FileKind::Metadata))?)
}

fn exists(path: &Path) -> Result<bool> {
    path.try_exists()
        .context(|| format!("stat of {}", path.display()))
}
