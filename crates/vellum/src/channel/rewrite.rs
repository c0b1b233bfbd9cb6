//! Rewrites (docs/format.md §4): clear, trim, delete, remove, archive, restore.
//! Each runs alone on its channel after a checkpoint, and is crash-atomic: the new
//! file is complete and synced before one rename puts it in place.

use super::file::{Body, Cursor, Header, Step};
use super::id::ChannelId;
use super::log::{Live, Presence, State, archived_reason, quarantine};
use super::refs;
use crate::engine::{ChannelInfo, Inner, now_ms, system_ms};
use crate::error::{Error, IoContext, Result};
use crate::storage::OpenMode;
use crate::store::MsgId;
use std::io;
use std::path::Path;

/// Bytes buffered before each write of a rewritten file.
const WRITE_CHUNK_BYTES: usize = 1 << 20;

/// Creates `dir` (a shard directory) if it is missing, durably.
fn ensure_dir(inner: &Inner, dir: &Path) -> Result<()> {
    crate::storage::create_dir_durably(&*inner.storage, dir)
        .context(|| format!("creating {}", dir.display()))
}

/// Keeps the current file as `trimmed/<xx>/<id>.<epoch>.vlog` (a hard link; a copy
/// where links are impossible). The file is already durable: a checkpoint just ran.
/// The copy is a client of the message store like the live file: its stored messages
/// gain a reference first (a crash after that only leaks until the next recount).
pub fn backup(inner: &Inner, id: &ChannelId, live: &Live) -> Result<Backup> {
    let layout = &inner.layout;
    let references = refs::stored_ids(&*inner.storage, &id.file_in(&layout.channels))?;
    inner.add_references(&references)?;
    let shard = layout.trimmed.join(id.shard());
    ensure_dir(inner, &shard)?;
    let target = shard.join(format!("{id}.{}.vlog", live.header.epoch));
    let source = id.file_in(&layout.channels);
    let linked = inner.storage.hard_link(&source, &target);
    match linked {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(_) => copy_file(inner, &source, &target, live.len())?,
    }
    inner
        .storage
        .sync_dir(&shard)
        .context(|| format!("syncing {}", shard.display()))?;
    Ok(Backup {
        path: target,
        references,
    })
}

/// A pre-trim copy just made, and the references it took.
pub struct Backup {
    path: std::path::PathBuf,
    references: Vec<MsgId>,
}

/// Deletes a pre-trim copy whose trim failed, giving its references back. Best
/// effort: a copy left behind is deleted at the next open (it carries the live
/// file's epoch) and its references recounted.
pub fn discard_backup(inner: &Inner, backup: Backup) {
    let removed = inner
        .storage
        .remove_file(&backup.path)
        .and_then(|()| inner.storage.sync_dir(backup.path.parent().expect("shard")));
    match removed {
        Ok(()) => inner.release(backup.references),
        Err(e) => {
            tracing::warn!(error = %e, path = %backup.path.display(), "removing the copy of a failed trim")
        }
    }
}

fn copy_file(inner: &Inner, source: &Path, target: &Path, len: u64) -> Result<()> {
    let tmp = inner
        .layout
        .tmp
        .join(target.file_name().expect("a file name"));
    let context = || format!("copying {} to {}", source.display(), target.display());
    let from = inner
        .storage
        .open(source, OpenMode::Read)
        .context(context)?;
    let to = inner
        .storage
        .open(&tmp, OpenMode::CreateReadWrite)
        .context(context)?;
    to.set_len(0).context(context)?;
    crate::storage::copy_range(&*from, 0, len, &*to).context(context)?;
    to.sync_data().context(context)?;
    inner.storage.rename(&tmp, target).context(context)
}

/// What a rewrite does with the bodies of the stored messages it keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bodies {
    /// Their records keep referring to the message store.
    Referenced,
    /// Their bodies are copied in from the store (an archive is self-contained).
    Inline,
}

/// Replaces the channel's file with one holding its folded metadata and the messages
/// whose index position `keep` accepts, under a new epoch; then reloads the state.
/// Returns the store ids the file no longer references (the stored messages it
/// dropped, and with `Bodies::Inline` those it inlined), for the caller to release.
pub fn rewrite(
    inner: &Inner,
    id: &ChannelId,
    state: &mut State,
    keep: impl Fn(usize) -> bool,
    first_seq: u64,
    bodies: Bodies,
) -> Result<Vec<MsgId>> {
    let Presence::Live(live) = &state.presence else {
        unreachable!("rewrite of a live channel")
    };
    assert!(
        live.tail.is_empty(),
        "the checkpoint before a rewrite writes the tail"
    );
    let layout = &inner.layout;
    let path = id.file_in(&layout.channels);
    let header = Header {
        epoch: inner.new_epoch(live.header.epoch),
        first_seq,
        next_seq_min: live.next_seq,
        ..live.header.clone()
    };
    let tmp = layout.tmp.join(format!("{id}.{}.vlog", header.epoch));
    let context = || format!("rewriting channel {id}");
    let out = inner
        .storage
        .open(&tmp, OpenMode::CreateReadWrite)
        .context(context)?;
    out.set_len(0).context(context)?;
    let mut buf = header.encode();
    Body::Metadata {
        time_ms: now_ms(),
        line: &live.metadata.to_json(),
    }
    .encode_into(&mut buf);
    let mut written = 0u64;
    let mut dropped = Vec::new();
    if let (Some(file), Some(first)) = (&live.file, live.index.get(0)) {
        let mut cursor = Cursor::new(file.file.clone(), first.offset, live.len());
        let mut pos = 0;
        loop {
            match cursor.next().context(context)? {
                Step::Record { body, .. } => {
                    if Body::is_message(cursor.body(body.clone())) {
                        let stored = match Body::parse(cursor.body(body.clone())) {
                            Ok(Body::Stored {
                                seq,
                                time_ms,
                                key,
                                id,
                            }) => Some((seq, time_ms, key.to_vec(), id)),
                            _ => None,
                        };
                        match stored {
                            Some((seq, time_ms, key, id))
                                if keep(pos) && bodies == Bodies::Inline =>
                            {
                                let data = match inner.store.read(&id) {
                                    Ok(data) => data,
                                    Err(e) => {
                                        let _ = inner.storage.remove_file(&tmp);
                                        return Err(e);
                                    }
                                };
                                Body::Message {
                                    seq,
                                    time_ms,
                                    key: &key,
                                    data: &data,
                                }
                                .encode_into(&mut buf);
                                dropped.push(id);
                            }
                            _ if keep(pos) => buf.extend_from_slice(cursor.framed(body)),
                            Some((.., id)) => dropped.push(id),
                            None => {}
                        }
                        pos += 1;
                    }
                }
                Step::End => break,
                Step::Damaged { offset, reason } => {
                    let _ = inner.storage.remove_file(&tmp);
                    return Err(Error::Corrupted {
                        path,
                        offset,
                        reason: reason.into(),
                    });
                }
            }
            if buf.len() >= WRITE_CHUNK_BYTES {
                out.write_all_at(&buf, written).context(context)?;
                written += buf.len() as u64;
                buf.clear();
            }
        }
    }
    out.write_all_at(&buf, written).context(context)?;
    out.sync_data().context(context)?;
    drop(out);
    inner.storage.rename(&tmp, &path).context(context)?;
    sync_parent(inner, &path)?;
    inner.reload(id, state)?;
    Ok(dropped)
}

fn sync_parent(inner: &Inner, path: &Path) -> Result<()> {
    let dir = path.parent().expect("files live in shard directories");
    inner
        .storage
        .sync_dir(dir)
        .context(|| format!("syncing {}", dir.display()))
}

/// Unlinks the live file; a later append starts a fresh channel. Its stored messages'
/// references are released once the unlink is durable.
pub fn remove(inner: &Inner, id: &ChannelId, state: &mut State) -> Result<()> {
    let path = id.file_in(&inner.layout.channels);
    let references = refs::stored_ids(&*inner.storage, &path)?;
    inner
        .storage
        .remove_file(&path)
        .context(|| format!("removing channel {id}"))?;
    sync_parent(inner, &path)?;
    inner.release(references);
    state.presence = Presence::Missing {
        archived: archived_reason(id, &inner.load_context())?,
    };
    Ok(())
}

/// Marks the file with the reason, then moves it into the archive (replacing an older
/// archived copy). A file holding stored messages is first rewritten with their bodies
/// inline, so an archived channel is self-contained; their references are released.
pub fn archive(inner: &Inner, id: &ChannelId, state: &mut State, reason: &str) -> Result<()> {
    if !refs::stored_ids(&*inner.storage, &id.file_in(&inner.layout.channels))?.is_empty() {
        let Presence::Live(live) = &state.presence else {
            unreachable!("archive of a live channel")
        };
        let first_seq = live.header.first_seq;
        let inlined = rewrite(inner, id, state, |_| true, first_seq, Bodies::Inline)?;
        inner.release(inlined);
    }
    let Presence::Live(live) = &state.presence else {
        unreachable!("archive of a live channel")
    };
    assert!(
        live.tail.is_empty(),
        "the checkpoint before an archive writes the tail"
    );
    let layout = &inner.layout;
    let context = || format!("archiving channel {id}");
    if let Some(file) = &live.file {
        let mut marker = Vec::new();
        Body::Archived {
            time_ms: now_ms(),
            reason,
        }
        .encode_into(&mut marker);
        file.file
            .write_all_at(&marker, live.len())
            .context(context)?;
        file.file.sync_data().context(context)?;
    }
    let from = id.file_in(&layout.channels);
    let to = id.file_in(&layout.archive);
    ensure_dir(inner, to.parent().expect("shard"))?;
    inner.storage.rename(&from, &to).context(context)?;
    sync_parent(inner, &to)?;
    sync_parent(inner, &from)?;
    state.presence = Presence::Missing {
        archived: Some(reason.to_string()),
    };
    Ok(())
}

/// Moves an archived channel back to the live tree (the caller checked there is one
/// and no live channel).
pub fn restore(inner: &Inner, id: &ChannelId, state: &mut State) -> Result<()> {
    let layout = &inner.layout;
    let from = id.file_in(&layout.archive);
    let to = id.file_in(&layout.channels);
    let context = || format!("restoring channel {id}");
    // The marker tells recovery which way an interrupted move was going. It goes right
    // after the last intact record: an earlier restore that failed may have left part
    // of its marker behind (archived files are not repaired when the store opens).
    let file = inner
        .storage
        .open(&from, OpenMode::ReadWrite)
        .context(context)?;
    let (_, header_len) = Header::read(&*file).map_err(|e| e.into_error(&from))?;
    let len = file.len().context(context)?;
    let mut cursor = Cursor::new(file.clone(), header_len, len);
    let end = loop {
        match cursor.next().context(context)? {
            Step::Record { .. } => {}
            Step::End => break len,
            Step::Damaged { offset, reason } => {
                quarantine(&inner.load_context(), &from, &*file, offset, len, reason)?;
                break offset;
            }
        }
    };
    let mut marker = Vec::new();
    Body::Restored { time_ms: now_ms() }.encode_into(&mut marker);
    file.write_all_at(&marker, end)
        .and_then(|()| file.set_len(end + marker.len() as u64))
        .and_then(|()| file.sync_data())
        .context(context)?;
    drop(file);
    ensure_dir(inner, to.parent().expect("shard"))?;
    inner.storage.rename(&from, &to).context(context)?;
    sync_parent(inner, &to)?;
    sync_parent(inner, &from)?;
    inner.reload(id, state)
}

/// Deletes an archived channel (the caller checked there is one).
pub fn remove_archived(inner: &Inner, id: &ChannelId, state: &mut State) -> Result<()> {
    let path = id.file_in(&inner.layout.archive);
    delete_file(inner, &path)?;
    state.presence = Presence::Missing { archived: None };
    Ok(())
}

/// Deletes a channel file nothing else names (an archived one, a pre-trim copy) and
/// releases its stored messages' references once the deletion is durable.
pub fn delete_file(inner: &Inner, path: &Path) -> Result<()> {
    let references = refs::stored_ids(&*inner.storage, path)?;
    inner
        .storage
        .remove_file(path)
        .context(|| format!("removing {}", path.display()))?;
    sync_parent(inner, path)?;
    inner.release(references);
    Ok(())
}

/// Counts the messages of a channel file that is not loaded (an archived one).
pub fn summarize(inner: &Inner, path: &Path, id: &ChannelId) -> Result<ChannelInfo> {
    let context = || format!("reading {}", path.display());
    let file = inner
        .storage
        .open(path, OpenMode::ReadQuietly)
        .context(context)?;
    let (header, header_len) = Header::read(&*file).map_err(|e| e.into_error(path))?;
    let len = file.len().context(context)?;
    let mut messages = 0;
    let mut next_seq = header.first_seq;
    let mut cursor = Cursor::new(file, header_len, len);
    while let Step::Record { body, .. } = cursor.next().context(context)? {
        if let Some((seq, _)) = Body::parse(cursor.body(body))
            .ok()
            .and_then(|b| b.seq_and_key())
        {
            messages += 1;
            next_seq = seq + 1;
        }
    }
    let next_seq = next_seq.max(header.next_seq_min);
    let stat = inner.storage.stat(path).context(context)?;
    let (modified_ms, accessed_ms) =
        stat.map_or((0, 0), |s| (system_ms(s.modified), system_ms(s.accessed)));
    Ok(ChannelInfo {
        id: id.clone(),
        size_bytes: len,
        messages,
        first_seq: header.first_seq,
        next_seq,
        created_ms: header.created_ms,
        modified_ms,
        accessed_ms,
        archived: None,
    })
}
