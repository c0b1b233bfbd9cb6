//! Where everything lives in a data directory (docs/format.md §1).

use std::path::{Path, PathBuf};

#[derive(Debug, Clone)]
pub struct Layout {
    pub root: PathBuf,
    pub channels: PathBuf,
    pub archive: PathBuf,
    pub trimmed: PathBuf,
    pub journal: PathBuf,
    pub lost_found: PathBuf,
    /// Rewrites build their new files here, then rename them into place.
    pub tmp: PathBuf,
    pub lock: PathBuf,
    /// The message store (docs/format.md §7), with its own lock and lost+found.
    pub store: PathBuf,
}

impl Layout {
    pub fn new(root: &Path) -> Self {
        Layout {
            root: root.to_path_buf(),
            channels: root.join("channels"),
            archive: root.join("archive"),
            trimmed: root.join("trimmed"),
            journal: root.join("journal"),
            lost_found: root.join("lost+found"),
            tmp: root.join("tmp"),
            lock: root.join("LOCK"),
            store: root.join("store"),
        }
    }

    /// The top-level directories, created (and made durable) when a directory is opened.
    pub fn directories(&self) -> [&Path; 6] {
        [
            &self.channels,
            &self.archive,
            &self.trimmed,
            &self.journal,
            &self.lost_found,
            &self.tmp,
        ]
    }
}
