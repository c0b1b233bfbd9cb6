//! Expiry, inactivity eviction and archive retention (CryptPad's eviction): a pass
//! over the data directory that archives expired and inactive channels and deletes
//! archived channels and pre-trim copies past the retention age.

use crate::channel::file::Header;
use crate::channel::id::id_of_file_name;
use crate::channel::rewrite;
use crate::engine::{Inner, live_or_error, system_ms};
use crate::error::{Error, IoContext, Result};
use crate::storage::OpenMode;
use std::path::Path;

/// What one pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct EvictionReport {
    /// Archived because their metadata's `expire` time passed (reason `EXPIRED`).
    pub expired: u64,
    /// Archived after `inactive_after` without writes or reads (reason `INACTIVE`).
    pub inactive: u64,
    /// Archived channels deleted after `archive_retention`.
    pub archives_deleted: u64,
    /// Pre-trim copies deleted after `archive_retention`.
    pub trim_copies_deleted: u64,
}

pub(crate) fn run_once(inner: &Inner, now_ms: u64) -> Result<EvictionReport> {
    let mut report = EvictionReport::default();
    let eviction = inner.options.eviction.unwrap_or_default();
    let inactive_ms = eviction.inactive_after.map(|d| d.as_millis() as u64);
    let retention_ms = eviction.archive_retention.map(|d| d.as_millis() as u64);

    for_each_file(inner, &inner.layout.channels, |path, name| {
        let Some(id) = id_of_file_name(name) else {
            return Ok(());
        };
        let Ok(file) = inner.storage.open(path, OpenMode::ReadQuietly) else {
            return Ok(()); // Removed meanwhile.
        };
        let Ok((header, _)) = Header::read(&*file) else {
            return Ok(()); // Reported when the channel is loaded.
        };
        // The reason, and the last use it was judged by (none for an expiry).
        let (reason, last_use) = if header.expire_ms != 0 && header.expire_ms <= now_ms {
            ("EXPIRED", u64::MAX)
        } else if let Some(limit) = inactive_ms {
            let stat = inner
                .storage
                .stat(path)
                .context(|| format!("stat of {}", path.display()))?;
            let cached = inner
                .cache
                .peek(&id)
                .map_or(0, |c| c.state.lock().last_access_ms);
            let last = stat.map_or(0, |s| system_ms(s.modified).max(system_ms(s.accessed)));
            if last.max(cached).saturating_add(limit) > now_ms {
                return Ok(());
            }
            ("INACTIVE", last.max(cached))
        } else {
            return Ok(());
        };
        // Judged inactive, but used since (by a write or read racing the pass): keep it.
        let archived = inner.exclusive(
            &id,
            |id, state| {
                live_or_error(id, state)?;
                Ok(state.last_access_ms <= last_use)
            },
            |inner, id, state, still_unused| match still_unused {
                true => rewrite::archive(inner, id, state, reason).map(|()| true),
                false => Ok(false),
            },
        );
        match archived {
            Ok(false) => {}
            Ok(true) if reason == "EXPIRED" => report.expired += 1,
            Ok(true) => report.inactive += 1,
            Err(Error::NotFound { .. } | Error::Archived { .. }) => {}
            Err(e) => return Err(e),
        }
        Ok(())
    })?;

    let Some(retention_ms) = retention_ms else {
        return Ok(report);
    };
    let old = |path: &Path| -> Result<bool> {
        let stat = inner
            .storage
            .stat(path)
            .context(|| format!("stat of {}", path.display()))?;
        Ok(stat.is_some_and(|s| system_ms(s.modified).saturating_add(retention_ms) <= now_ms))
    };
    for_each_file(inner, &inner.layout.archive, |path, name| {
        let Some(id) = id_of_file_name(name) else {
            return Ok(());
        };
        if !old(path)? {
            return Ok(());
        }
        match inner.remove_archived(&id) {
            Ok(()) => report.archives_deleted += 1,
            // Restored or removed since the directory was listed.
            Err(Error::NotArchived { .. }) => {}
            Err(e) => return Err(e),
        }
        Ok(())
    })?;
    for_each_file(inner, &inner.layout.trimmed, |path, _| {
        if old(path)? {
            rewrite::delete_file(inner, path)?;
            report.trim_copies_deleted += 1;
        }
        Ok(())
    })?;
    Ok(report)
}

/// Calls `f(path, name)` for every file in the shard directories under `root`.
fn for_each_file(
    inner: &Inner,
    root: &Path,
    mut f: impl FnMut(&Path, &str) -> Result<()>,
) -> Result<()> {
    let shards = inner
        .storage
        .list_dir(root)
        .context(|| format!("listing {}", root.display()))?;
    for shard in shards {
        let dir = root.join(&shard);
        let names = match inner.storage.list_dir(&dir) {
            Ok(names) => names,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e).context(|| format!("listing {}", dir.display())),
        };
        for name in names {
            f(&dir.join(&name), &name)?;
        }
    }
    Ok(())
}
