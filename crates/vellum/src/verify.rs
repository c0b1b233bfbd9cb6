//! `verify`: reads every record the data directory's files hold and checks it — every
//! channel file (live, archived, pre-trim copies) record by record with each stored
//! body it references fetched and checked, every message of the message store, and
//! the store's reference counts against the channel files. Files are opened quietly,
//! so a verify does not count as use for inactivity eviction. It changes nothing;
//! damage is reported, not repaired (the next open sets damaged ranges aside, as
//! always). It starts with a checkpoint, so every acknowledged write is in its file.

use crate::channel::file::{Body, Cursor, Header, Step};
use crate::channel::refs::for_each_channel_file;
use crate::engine::{ReferenceCheck, Vellum};
use crate::error::{Error, IoContext, Result};
use crate::lost::LostRange;
use crate::storage::OpenMode;
use std::path::{Path, PathBuf};

/// One damaged place found by `verify`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damage {
    pub path: PathBuf,
    pub offset: u64,
    pub reason: String,
}

/// What `verify` read and found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VerifyReport {
    pub live_channels: u64,
    /// Archived channels and pre-trim copies.
    pub archived_files: u64,
    /// Messages read from channel files (live and archived).
    pub messages: u64,
    /// Messages read from the message store.
    pub store_messages: u64,
    /// Damage found now.
    pub damage: Vec<Damage>,
    /// Ranges set aside in `lost+found/` since this store was opened (at open or later).
    pub lost_ranges: Vec<LostRange>,
    pub references: ReferenceCheck,
}

impl VerifyReport {
    /// Nothing damaged, nothing set aside, no stored body missing or undercounted.
    pub fn is_clean(&self) -> bool {
        self.damage.is_empty() && self.lost_ranges.is_empty() && self.references.is_safe()
    }
}

/// What `verify` is doing, for progress reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VerifyStep {
    /// One more channel file read.
    ChannelFile,
    /// The message store's walk begins, over this many messages.
    StoreStart { messages: u64 },
    /// One more store message read.
    StoreMessage,
}

impl Vellum {
    /// Reads and checks everything (see the module comment). Safe while the store
    /// serves: a record being appended as it is read is not taken for damage.
    pub fn verify(&self, progress: &mut dyn FnMut(VerifyStep)) -> Result<VerifyReport> {
        let mut report = VerifyReport::default();
        // Put every acknowledged write into its channel file first, so that the files
        // hold everything. A poisoned store cannot: check what its files hold.
        match self.checkpoint() {
            Ok(()) | Err(Error::Poisoned { .. }) => {}
            Err(e) => return Err(e),
        }
        let (storage, layout) = (&*self.inner().storage, &self.inner().layout);
        for (tree, appends) in [
            (&layout.channels, Appends::Possible),
            (&layout.archive, Appends::None),
            (&layout.trimmed, Appends::None),
        ] {
            for_each_channel_file(storage, tree, &mut |path| {
                match appends {
                    Appends::Possible => report.live_channels += 1,
                    Appends::None => report.archived_files += 1,
                }
                progress(VerifyStep::ChannelFile);
                self.verify_file(path, appends, &mut report)
            })?;
        }
        let store = &self.inner().store;
        let ids = store.ids();
        progress(VerifyStep::StoreStart {
            messages: ids.len() as u64,
        });
        for id in ids {
            progress(VerifyStep::StoreMessage);
            match store.read(&id) {
                Ok(_) => report.store_messages += 1,
                // Removed since the walk began.
                Err(Error::UnknownMessage { .. }) => {}
                Err(e) => note(&mut report, e)?,
            }
        }
        report.references = self.check_references()?;
        report.lost_ranges = self.lost_ranges();
        Ok(report)
    }

    /// Checks one channel file: its header, every record, every stored body it
    /// references. It is opened quietly (no access time: a scan is not use).
    fn verify_file(&self, path: &Path, appends: Appends, report: &mut VerifyReport) -> Result<()> {
        let inner = self.inner();
        let context = || format!("reading {}", path.display());
        let file = match inner.storage.open(path, OpenMode::ReadQuietly) {
            Ok(file) => file,
            // Removed or restored since it was listed.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e).context(context),
        };
        let damaged = |offset: u64, reason: String| Damage {
            path: path.to_path_buf(),
            offset,
            reason,
        };
        let header_len = match Header::read(&*file) {
            Ok((_, len)) => len,
            Err(e) => {
                report.damage.push(damaged(0, format!("header: {e:?}")));
                return Ok(());
            }
        };
        let len = file.len().context(context)?;
        let mut cursor = Cursor::new(file, header_len, len);
        loop {
            match cursor.next().context(context)? {
                Step::End => return Ok(()),
                Step::Damaged { offset, reason } => {
                    // A live channel's tail may be being written right now: a record
                    // cut short where the file has grown since is that, not damage.
                    let grew = appends == Appends::Possible
                        && inner
                            .storage
                            .open(path, OpenMode::ReadQuietly)
                            .and_then(|f| f.len())
                            .is_ok_and(|now| now > len);
                    if !grew {
                        report.damage.push(damaged(offset, reason.to_string()));
                    }
                    return Ok(());
                }
                Step::Record { offset, body } => match Body::parse(cursor.body(body)) {
                    Err(reason) => report.damage.push(damaged(offset, reason.to_string())),
                    Ok(Body::Stored { id, .. }) => {
                        report.messages += 1;
                        if let Err(e) = inner.store.read(&id) {
                            report
                                .damage
                                .push(damaged(offset, format!("stored body {id}: {e}")));
                        }
                    }
                    Ok(body) if body.seq_and_key().is_some() => report.messages += 1,
                    Ok(_) => {}
                },
            }
        }
    }
}

/// Whether a file may be appended to while it is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Appends {
    /// A live channel's file.
    Possible,
    /// An archived channel or a pre-trim copy.
    None,
}

/// Records corruption as damage; any other error ends the walk.
fn note(report: &mut VerifyReport, e: Error) -> Result<()> {
    match e {
        Error::Corrupted {
            path,
            offset,
            reason,
        } => {
            report.damage.push(Damage {
                path,
                offset,
                reason,
            });
            Ok(())
        }
        e => Err(e),
    }
}
