//! Channel ids: validation and where a channel lives on disk.

use std::fmt;
use std::path::{Path, PathBuf};

/// The longest channel id.
pub const CHANNEL_ID_BYTES_MAX: usize = 128;

/// A validated channel id: 1–128 characters of `[A-Za-z0-9_.=+-]`, not starting with `.`.
///
/// Every CryptPad id (`^[A-Za-z0-9=+-]{32,49}$`) is one. Neither `/` nor a leading `.`
/// can appear, so an id never names a path outside its shard directory.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChannelId(Box<str>);

/// Why a string is not a channel id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidId {
    #[error("a channel id must not be empty")]
    Empty,
    #[error("a channel id is at most {CHANNEL_ID_BYTES_MAX} characters (got {0})")]
    TooLong(usize),
    #[error("a channel id must not start with '.'")]
    LeadingDot,
    #[error("a channel id may hold only A-Z a-z 0-9 _ . = + - (found {0:?})")]
    BadCharacter(char),
}

impl ChannelId {
    pub fn new(id: &str) -> Result<Self, InvalidId> {
        if id.is_empty() {
            return Err(InvalidId::Empty);
        }
        if id.len() > CHANNEL_ID_BYTES_MAX {
            return Err(InvalidId::TooLong(id.len()));
        }
        if id.starts_with('.') {
            return Err(InvalidId::LeadingDot);
        }
        if let Some(c) = id
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '=' | '+' | '-')))
        {
            return Err(InvalidId::BadCharacter(c));
        }
        Ok(ChannelId(id.into()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The shard directory name: the first two characters, as CryptPad shards.
    pub fn shard(&self) -> &str {
        &self.0[..self.0.len().min(2)]
    }

    /// `<root>/<shard>/<id>.vlog`.
    pub fn file_in(&self, root: &Path) -> PathBuf {
        root.join(self.shard())
            .join(format!("{}{FILE_SUFFIX}", self.0))
    }
}

/// The suffix of every channel file.
pub const FILE_SUFFIX: &str = ".vlog";

/// The channel id a file name in a shard directory belongs to, if it is a channel file.
pub fn id_of_file_name(name: &str) -> Option<ChannelId> {
    ChannelId::new(name.strip_suffix(FILE_SUFFIX)?).ok()
}

impl fmt::Display for ChannelId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for ChannelId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ChannelId({})", self.0)
    }
}

impl TryFrom<&str> for ChannelId {
    type Error = InvalidId;
    fn try_from(id: &str) -> Result<Self, InvalidId> {
        ChannelId::new(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cryptpad_ids_are_valid_and_keep_their_case() {
        for id in [
            "058d0b4fbac9c3791d53a72402b11503",
            "AbCdEfGhIjKlMnOpQrStUvWxYz0123456789+-==",
            "0123456789abcdef0123456789abcdef0123456789abcdef0",
        ] {
            assert_eq!(ChannelId::new(id).unwrap().as_str(), id);
        }
        assert_eq!(ChannelId::new("AbC").unwrap().shard(), "Ab");
    }

    #[test]
    fn ids_that_could_escape_the_directory_are_refused() {
        assert_eq!(ChannelId::new(""), Err(InvalidId::Empty));
        assert_eq!(ChannelId::new(".."), Err(InvalidId::LeadingDot));
        assert_eq!(ChannelId::new(".hidden"), Err(InvalidId::LeadingDot));
        assert_eq!(ChannelId::new("a/b"), Err(InvalidId::BadCharacter('/')));
        assert_eq!(ChannelId::new("a\0b"), Err(InvalidId::BadCharacter('\0')));
        assert_eq!(ChannelId::new("é"), Err(InvalidId::BadCharacter('é')));
        assert_eq!(
            ChannelId::new(&"a".repeat(129)),
            Err(InvalidId::TooLong(129))
        );
    }

    #[test]
    fn file_names_map_back_to_ids() {
        let id = ChannelId::new("a.vlog").unwrap();
        let path = id.file_in(Path::new("/d"));
        assert_eq!(path, Path::new("/d/a./a.vlog.vlog"));
        let name = path.file_name().unwrap().to_str().unwrap();
        assert_eq!(id_of_file_name(name), Some(id));
        assert_eq!(id_of_file_name("x.vlog.tmp"), None);
    }
}
