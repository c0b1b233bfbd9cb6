//! A CryptPad datastore's layout (reference/cryptpad-store.md §1.2):
//! `<root>/<xx>/<id>.ndjson` and its siblings, named, and walked one shard directory
//! at a time so that a datastore of millions of channels is never listed whole.

use crate::channel::id::ChannelId;
use crate::error::{Error, IoContext, Result};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The files CryptPad keeps per channel that an import carries over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    /// `<id>.ndjson`: the channel log.
    Log,
    /// `<id>.metadata.ndjson`: the dedicated metadata log.
    Metadata,
    /// `<id>.ndjson.offset`: the advisory index hint.
    OffsetHint,
    /// `<id>.ndjson.placeholder`: the reason an archived channel was archived.
    Placeholder,
}

impl FileKind {
    pub fn suffix(self) -> &'static str {
        match self {
            FileKind::Log => ".ndjson",
            FileKind::Metadata => ".metadata.ndjson",
            FileKind::OffsetHint => ".ndjson.offset",
            FileKind::Placeholder => ".ndjson.placeholder",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// `<root>/<xx>/<id><suffix>`: where CryptPad keeps that file of `id`.
pub fn path_of(root: &Path, id: &ChannelId, kind: FileKind) -> PathBuf {
    root.join(id.shard()).join(format!("{id}{}", kind.suffix()))
}

/// The scratch file of an interrupted CryptPad trim or line deletion.
const TEMP_SUFFIX: &str = ".ndjson.temp";

/// What a name in a shard directory is: a channel's file (with its id), or something
/// an import skips (with why).
#[derive(Debug, PartialEq, Eq)]
pub enum Name<'a> {
    Channel(&'a str, FileKind),
    Other(&'static str),
}

pub fn classify(name: &str) -> Name<'_> {
    // Longest suffixes first: `x.metadata.ndjson` is the metadata log of `x`.
    for kind in [
        FileKind::Metadata,
        FileKind::OffsetHint,
        FileKind::Placeholder,
        FileKind::Log,
    ] {
        if let Some(id) = name.strip_suffix(kind.suffix()) {
            return Name::Channel(id, kind);
        }
    }
    if name.ends_with(TEMP_SUFFIX) {
        return Name::Other("the scratch file of an interrupted CryptPad trim");
    }
    Name::Other("not a CryptPad channel file")
}

/// The files of one id found in one shard directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    pub id: ChannelId,
    files: [Option<PathBuf>; 4],
}

impl Group {
    pub fn get(&self, kind: FileKind) -> Option<&Path> {
        self.files[kind.index()].as_deref()
    }

    /// Whether the id has a channel here: a log or a metadata log.
    pub fn has_channel(&self) -> bool {
        self.get(FileKind::Log).is_some() || self.get(FileKind::Metadata).is_some()
    }
}

/// An entry an import does not carry over, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Other {
    pub path: PathBuf,
    pub reason: &'static str,
}

/// The shard directory names under `root` (sorted), and the entries there that are not
/// directories.
pub fn shards(root: &Path) -> Result<(Vec<String>, Vec<Other>)> {
    let mut dirs = Vec::new();
    let mut others = Vec::new();
    for (name, path, is_dir) in entries(root)? {
        match (is_dir, name) {
            (true, Some(name)) => dirs.push(name),
            (true, None) => others.push(Other {
                path,
                reason: "a directory whose name is not UTF-8",
            }),
            (false, _) => others.push(Other {
                path,
                reason: "not a shard directory",
            }),
        }
    }
    Ok((dirs, others))
}

/// The groups of shard directory `root/shard`, in id order, and its other entries. A
/// channel file whose name holds no valid id, or whose id belongs in another shard
/// directory, is refused: it is channel data an import cannot place.
pub fn read_shard(root: &Path, shard: &str) -> Result<(Vec<Group>, Vec<Other>)> {
    let dir = root.join(shard);
    let mut groups: BTreeMap<ChannelId, Group> = BTreeMap::new();
    let mut others = Vec::new();
    for (name, path, is_dir) in entries(&dir)? {
        let Some(name) = name else {
            others.push(Other {
                path,
                reason: "a name that is not UTF-8",
            });
            continue;
        };
        let (id, kind) = match classify(&name) {
            Name::Channel(id, kind) => (id, kind),
            Name::Other(reason) => {
                others.push(Other {
                    path,
                    reason: if is_dir {
                        "a directory inside a shard directory"
                    } else {
                        reason
                    },
                });
                continue;
            }
        };
        let id = ChannelId::new(id).map_err(|e| Error::ImportBadName {
            path: path.clone(),
            reason: format!("the file name holds no valid channel id ({e})"),
        })?;
        if id.shard() != shard {
            return Err(Error::ImportBadName {
                reason: format!(
                    "channel {id} belongs in shard directory {:?}, not {shard:?}",
                    id.shard()
                ),
                path,
            });
        }
        let group = groups.entry(id.clone()).or_insert_with(|| Group {
            id,
            files: Default::default(),
        });
        group.files[kind.index()] = Some(path);
    }
    Ok((groups.into_values().collect(), others))
}

/// The entries of `dir`, sorted by name: name (when UTF-8), path, is a directory.
fn entries(dir: &Path) -> Result<Vec<(Option<String>, PathBuf, bool)>> {
    let context = || format!("listing {}", dir.display());
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).context(context)? {
        let entry = entry.context(context)?;
        let is_dir = entry.file_type().context(context)?.is_dir();
        out.push((entry.file_name().into_string().ok(), entry.path(), is_dir));
    }
    out.sort_by(|a, b| a.1.cmp(&b.1));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_classified_longest_suffix_first() {
        assert_eq!(classify("abc.ndjson"), Name::Channel("abc", FileKind::Log));
        assert_eq!(
            classify("abc.metadata.ndjson"),
            Name::Channel("abc", FileKind::Metadata)
        );
        assert_eq!(
            classify("abc.ndjson.offset"),
            Name::Channel("abc", FileKind::OffsetHint)
        );
        assert_eq!(
            classify("abc.ndjson.placeholder"),
            Name::Channel("abc", FileKind::Placeholder)
        );
        assert!(matches!(classify("abc.ndjson.temp"), Name::Other(_)));
        assert!(matches!(classify(".DS_Store"), Name::Other(_)));
    }

    #[test]
    fn a_file_in_the_wrong_shard_or_with_a_bad_id_is_refused() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir(root.path().join("ab")).unwrap();
        std::fs::write(root.path().join("ab/abc.ndjson"), b"").unwrap();
        std::fs::write(root.path().join("ab/abc.ndjson.offset"), b"").unwrap();
        std::fs::write(root.path().join("ab/notes.txt"), b"").unwrap();
        let (groups, others) = read_shard(root.path(), "ab").unwrap();
        assert_eq!(groups.len(), 1);
        assert!(groups[0].get(FileKind::OffsetHint).is_some());
        assert!(groups[0].get(FileKind::Metadata).is_none());
        assert_eq!(others.len(), 1);

        std::fs::write(root.path().join("ab/xyz.ndjson"), b"").unwrap();
        assert!(matches!(
            read_shard(root.path(), "ab"),
            Err(Error::ImportBadName { .. })
        ));
        std::fs::remove_file(root.path().join("ab/xyz.ndjson")).unwrap();
        std::fs::write(root.path().join("ab/ab$c.metadata.ndjson"), b"").unwrap();
        assert!(matches!(
            read_shard(root.path(), "ab"),
            Err(Error::ImportBadName { .. })
        ));
    }
}
