//! What an import or an export reports: as it goes (for a progress bar) and at the end.

use std::path::PathBuf;

/// The most skipped files a report lists by name; the rest are only counted.
pub const SKIPPED_LISTED_MAX: usize = 1000;

/// A file left out, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    pub path: PathBuf,
    pub reason: String,
}

/// The files left out: the first [`SKIPPED_LISTED_MAX`] by name, all of them counted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SkippedFiles {
    pub listed: Vec<Skipped>,
    pub total: u64,
}

impl SkippedFiles {
    pub fn push(&mut self, path: PathBuf, reason: impl Into<String>) {
        self.total += 1;
        if self.listed.len() < SKIPPED_LISTED_MAX {
            self.listed.push(Skipped {
                path,
                reason: reason.into(),
            });
        }
    }
}

/// Which pass of an import is running.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImportPhase {
    /// Reading every file and checking it can be imported; nothing is changed yet.
    Checking,
    /// Building and placing channels.
    Importing,
}

/// Where an import is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImportProgress {
    pub phase: ImportPhase,
    /// Channels done in this phase.
    pub channels: u64,
    /// Source bytes read in this phase.
    pub bytes: u64,
    /// Source bytes the import reads: known once checking is done (0 before).
    pub bytes_total: u64,
}

/// What an import did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImportReport {
    /// Live channels imported.
    pub channels: u64,
    /// Archived channels imported (from the archive tree).
    pub archived: u64,
    /// Pre-trim copies imported (archive-tree copies of channels the live tree holds).
    pub trim_copies: u64,
    /// Channels an earlier run imported from the same files, left as they are.
    pub already_imported: u64,
    pub messages: u64,
    /// Messages whose bodies went to the message store (`embed_bytes_max` and more).
    pub stored_messages: u64,
    pub metadata_lines: u64,
    /// Lines keyed by their content hash, not CryptPad's: not `MSG` lines, or lines
    /// whose hash is longer than a key (64 bytes).
    pub keyed_by_hash: u64,
    /// Bytes of the source files imported.
    pub bytes: u64,
    pub skipped: SkippedFiles,
}

/// Where an export is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExportProgress {
    /// Channel files (live, archived, pre-trim copies) exported so far.
    pub channels: u64,
    /// Bytes written so far.
    pub bytes: u64,
}

/// What an export did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExportReport {
    pub channels: u64,
    pub archived: u64,
    pub trim_copies: u64,
    pub messages: u64,
    /// Bytes written.
    pub bytes: u64,
    /// Channels left out, and why (their channel file is named).
    pub skipped: SkippedFiles,
}
