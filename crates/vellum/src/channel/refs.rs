//! Channel files as the message store's clients (docs/format.md §7.7): every stored
//! message record in `channels/`, `archive/` and `trimmed/` holds one reference.

use super::file::{Body, Cursor, Header, HeaderError, Step};
use super::id::FILE_SUFFIX;
use crate::error::{IoContext, Result};
use crate::layout::Layout;
use crate::storage::{OpenMode, Storage};
use crate::store::MsgId;
use std::path::Path;

/// Calls `add(id, 1)` for every stored message record of every channel file: the
/// references the store rebuilds its counts from after an unclean shutdown.
pub fn for_each_reference(
    storage: &dyn Storage,
    layout: &Layout,
    add: &mut dyn FnMut(MsgId, u32),
) -> Result<()> {
    for tree in [&layout.channels, &layout.archive, &layout.trimmed] {
        for_each_channel_file(storage, tree, &mut |path| {
            for id in stored_ids(storage, path)? {
                add(id, 1);
            }
            Ok(())
        })?;
    }
    Ok(())
}

/// Calls `visit` with the path of every channel file under `tree`
/// (`<tree>/<shard>/<id>.vlog`), listing one shard directory at a time.
pub fn for_each_channel_file(
    storage: &dyn Storage,
    tree: &Path,
    visit: &mut dyn FnMut(&Path) -> Result<()>,
) -> Result<()> {
    let shards = storage
        .list_dir(tree)
        .context(|| format!("listing {}", tree.display()))?;
    for shard in shards {
        let dir = tree.join(&shard);
        let names = storage
            .list_dir(&dir)
            .context(|| format!("listing {}", dir.display()))?;
        for name in names.iter().filter(|n| n.ends_with(FILE_SUFFIX)) {
            visit(&dir.join(name))?;
        }
    }
    Ok(())
}

/// The ids of the stored message records in the channel file at `path`, up to its
/// first damaged record (a damaged file is quarantined when it is loaded; what it
/// references past the damage is then gone with it).
pub fn stored_ids(storage: &dyn Storage, path: &Path) -> Result<Vec<MsgId>> {
    let context = || format!("reading {}", path.display());
    let file = match storage.open(path, OpenMode::ReadQuietly) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).context(context),
    };
    let header_len = match Header::read(&*file) {
        Ok((_, header_len)) => header_len,
        // A file that failed to read is not a file without references.
        Err(HeaderError::Io(e)) => return Err(e).context(context),
        Err(HeaderError::Short | HeaderError::Invalid(_)) => return Ok(Vec::new()),
    };
    let len = file.len().context(context)?;
    let mut ids = Vec::new();
    let mut cursor = Cursor::new(file, header_len, len);
    while let Step::Record { body, .. } = cursor.next().context(context)? {
        if let Ok(Body::Stored { id, .. }) = Body::parse(cursor.body(body)) {
            ids.push(id);
        }
    }
    Ok(ids)
}
