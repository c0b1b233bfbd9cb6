//! Builds one imported channel's `.vlog` file in `tmp/` (docs/format.md §8.3): one
//! record per line of its CryptPad files, in their order, then the offset hint, the
//! origin and the archive reason; the header last, once the metadata fold is known.
//! Nothing names the file until the importer renames it into place.

use super::confirms::Confirms;
use super::fingerprint::{FINGERPRINT_BYTES, Fingerprint};
use super::lines::{Line, LineReader, read_small};
use super::message::{ChannelLine, command_time, inspect};
use crate::channel::file::{Body, CryptPadPart, Header, StoredKey};
use crate::channel::id::ChannelId;
use crate::channel::metadata::{MetadataFold, parse_line};
use crate::engine::{Inner, content_key, system_ms};
use crate::error::{IoContext, Result};
use crate::storage::{OpenMode, StorageFile};
use crate::store::MsgId;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Bytes of records buffered before each write of the file being built.
const WRITE_CHUNK_BYTES: usize = 1 << 20;

/// How often, in source bytes, a long file reports progress.
const PROGRESS_BYTES: u64 = 1 << 20;

/// Where an imported channel goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Destination {
    /// A live channel (`channels/`): from the live tree.
    Live,
    /// An archived channel (`archive/`): from the archive tree.
    Archived,
    /// A pre-trim copy (`trimmed/`): from the archive tree, when the live tree holds
    /// the same id (CryptPad's trim copies the pre-trim files into the archive).
    TrimCopy,
}

/// An archived channel's placeholder, attached to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placeholder {
    pub reason: String,
    pub modified_ms: u64,
}

/// One channel to import: its files and where it goes.
#[derive(Debug, Clone)]
pub struct Source {
    pub id: ChannelId,
    pub log: Option<PathBuf>,
    pub metadata: Option<PathBuf>,
    pub offset_hint: Option<PathBuf>,
    pub placeholder: Option<Placeholder>,
    pub destination: Destination,
}

/// What building one channel found.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    pub messages: u64,
    /// Messages whose bodies went to the message store.
    pub stored: u64,
    pub metadata_lines: u64,
    /// Lines keyed by the content hash: not CryptPad messages, or hashes too long for a key.
    pub keyed_by_hash: u64,
    /// Bytes of the source files (logs and offset hint; a placeholder is not counted).
    pub bytes: u64,
}

/// A channel file built in `tmp/`, complete and synced, its bodies confirmed by the store.
pub struct Built {
    pub tmp: PathBuf,
    pub epoch: u64,
    /// The store references the file holds, one per stored record.
    pub stored: Vec<MsgId>,
    pub counts: Counts,
}

/// Reads every file of `source` (refusing a line over `max` bytes) and returns the
/// fingerprint an import of it records, and its bytes.
pub fn scan(
    source: &Source,
    max: usize,
    progress: &mut dyn FnMut(u64),
) -> Result<([u8; FINGERPRINT_BYTES], u64)> {
    let mut fingerprint = Fingerprint::new();
    let mut bytes = 0;
    for path in [&source.log, &source.metadata] {
        each_line(path.as_deref(), max, &mut fingerprint, |line| {
            let before = bytes;
            bytes += line_bytes(line);
            if bytes / PROGRESS_BYTES != before / PROGRESS_BYTES {
                progress(bytes);
            }
            Ok(())
        })?;
    }
    let hint = source
        .offset_hint
        .as_deref()
        .map(|path| read_small(path, max))
        .transpose()?;
    fingerprint.file(hint.as_deref());
    bytes += hint.map_or(0, |hint| hint.len() as u64);
    fingerprint.file(source.placeholder.as_ref().map(|p| p.reason.as_bytes()));
    Ok((fingerprint.finish(), bytes))
}

/// Builds the channel file of `source` in `tmp/`. On failure nothing is left: the
/// temporary file is deleted and the store references taken are released.
pub fn build(inner: &Inner, source: &Source, progress: &mut dyn FnMut(u64)) -> Result<Built> {
    let epoch = inner.new_epoch(0);
    let tmp = inner
        .layout
        .tmp
        .join(format!("{}.{epoch}.import.vlog", source.id));
    let context = || format!("building {}", tmp.display());
    let file = inner
        .storage
        .open(&tmp, OpenMode::CreateReadWrite)
        .context(context)?;
    file.set_len(0).context(context)?;
    let mut builder = Builder {
        inner,
        output: Output {
            file,
            path: tmp.clone(),
            buf: Vec::new(),
            at: 0,
        },
        confirms: Confirms::default(),
        stored: Vec::new(),
        counts: Counts::default(),
        progress,
    };
    match builder.run(source, epoch) {
        Ok(()) => Ok(Built {
            tmp,
            epoch,
            stored: builder.stored,
            counts: builder.counts,
        }),
        Err(e) => {
            // Whatever the store confirms later, nothing will reference it.
            let _ = builder.confirms.wait();
            drop(builder.output);
            let _ = inner.storage.remove_file(&tmp);
            inner.release(builder.stored);
            Err(e)
        }
    }
}

struct Builder<'a> {
    inner: &'a Inner,
    output: Output,
    confirms: Confirms,
    stored: Vec<MsgId>,
    counts: Counts,
    progress: &'a mut dyn FnMut(u64),
}

impl Builder<'_> {
    fn run(&mut self, source: &Source, epoch: u64) -> Result<()> {
        let max = self.inner.options.message_bytes_max;
        let header = |created_ms, expire_ms| Header {
            epoch,
            first_seq: 0,
            next_seq_min: 0,
            created_ms,
            expire_ms,
            id: source.id.clone(),
        };
        // Records start after the header, whose length depends only on the id.
        self.output.at = header(0, 0).encode().len() as u64;
        let mut fingerprint = Fingerprint::new();
        let mut fold = MetadataFold::new();
        let legacy_folded = match &source.metadata {
            Some(path) => legacy_line_is_read(path, max)?,
            None => true,
        };
        let log_ms = modified_ms(source.log.as_deref())?;
        let metadata_ms = modified_ms(source.metadata.as_deref())?;
        let mut first_message_ms = None;

        let mut seen_text = false;
        let mut any_line = false;
        each_line(source.log.as_deref(), max, &mut fingerprint, |line| {
            any_line = true;
            self.count_bytes(line);
            if !line.terminated {
                return self
                    .output
                    .push(cryptpad(log_ms, CryptPadPart::LogTail, line.bytes));
            }
            let parsed = inspect(line.bytes);
            // CryptPad's legacy metadata: the first non-empty line, when it is an object.
            let first_text = !seen_text && !line.bytes.is_empty();
            seen_text |= first_text;
            let (key, time_ms) = match parsed {
                ChannelLine::Object if first_text => {
                    let part = if legacy_folded {
                        let _ = fold.feed_channel_first_line(line.bytes);
                        CryptPadPart::LegacyFolded
                    } else {
                        CryptPadPart::LegacyIgnored
                    };
                    return self.output.push(cryptpad(log_ms, part, line.bytes));
                }
                ChannelLine::Object => (None, None),
                ChannelLine::Other { key, time_ms } => (key, time_ms),
            };
            let time_ms = time_ms.unwrap_or(log_ms);
            first_message_ms.get_or_insert(time_ms);
            self.message(source.destination, line.bytes, key, time_ms)
        })?;
        if source.log.is_some() && !any_line {
            // An empty log: the tail of no bytes says the file existed.
            self.output
                .push(cryptpad(log_ms, CryptPadPart::LogTail, b""))?;
        }

        let mut any_line = false;
        each_line(source.metadata.as_deref(), max, &mut fingerprint, |line| {
            any_line = true;
            self.count_bytes(line);
            if !line.terminated {
                return self.output.push(cryptpad(
                    metadata_ms,
                    CryptPadPart::MetadataTail,
                    line.bytes,
                ));
            }
            // A line the fold rejects is kept all the same, as CryptPad keeps it.
            let _ = fold.feed(line.bytes);
            self.counts.metadata_lines += 1;
            self.output.push(Body::Metadata {
                time_ms: command_time(line.bytes).unwrap_or(metadata_ms),
                line: line.bytes,
            })
        })?;
        if source.metadata.is_some() && !any_line {
            self.output
                .push(cryptpad(metadata_ms, CryptPadPart::MetadataTail, b""))?;
        }

        let hint = match &source.offset_hint {
            Some(path) => Some((read_small(path, max)?, modified_ms(Some(path))?)),
            None => None,
        };
        fingerprint.file(hint.as_ref().map(|(bytes, _)| bytes.as_slice()));
        if let Some((bytes, time_ms)) = &hint {
            self.counts.bytes += bytes.len() as u64;
            self.output
                .push(cryptpad(*time_ms, CryptPadPart::OffsetHint, bytes))?;
        }
        let placeholder = source.placeholder.as_ref();
        fingerprint.file(placeholder.map(|p| p.reason.as_bytes()));
        self.output.push(cryptpad(
            crate::engine::now_ms(),
            CryptPadPart::Origin,
            &fingerprint.finish(),
        ))?;
        if let Some(placeholder) = placeholder {
            self.output.push(Body::Archived {
                time_ms: placeholder.modified_ms,
                reason: &placeholder.reason,
            })?;
        }

        let metadata = fold.finish();
        let created_ms = metadata
            .created_ms()
            .or(first_message_ms)
            .unwrap_or(log_ms.max(metadata_ms));
        // 0 means "never" in the header; an expiry at the epoch is already past.
        let expire_ms = metadata.expire_ms().map_or(0, |ms| ms.max(1));
        self.output
            .finish(&header(created_ms, expire_ms).encode())?;
        self.confirms.wait()
    }

    /// One message: inline, or for a live channel from `embed_bytes_max` bytes on, in
    /// the message store (queued now, confirmed before the file is made visible).
    fn message(
        &mut self,
        destination: Destination,
        data: &[u8],
        key: Option<Vec<u8>>,
        time_ms: u64,
    ) -> Result<()> {
        let key = key.unwrap_or_else(|| {
            self.counts.keyed_by_hash += 1;
            content_key(data)
        });
        let seq = self.counts.messages;
        self.counts.messages += 1;
        if destination == Destination::Live && data.len() >= self.inner.options.embed_bytes_max {
            let id = MsgId::random()?;
            self.confirms.write(&self.inner.store, id, data)?;
            self.stored.push(id);
            self.counts.stored += 1;
            let mut digest = [0u8; 16];
            return self.output.push(Body::Stored {
                seq,
                time_ms,
                key: StoredKey::of(&key, &mut digest),
                id,
            });
        }
        self.output.push(Body::Message {
            seq,
            time_ms,
            key: &key,
            data,
        })
    }

    fn count_bytes(&mut self, line: &Line<'_>) {
        let before = self.counts.bytes;
        self.counts.bytes += line_bytes(line);
        if self.counts.bytes / PROGRESS_BYTES != before / PROGRESS_BYTES {
            (self.progress)(self.counts.bytes);
        }
    }
}

fn cryptpad(time_ms: u64, part: CryptPadPart, bytes: &[u8]) -> Body<'_> {
    Body::CryptPad {
        time_ms,
        part,
        bytes,
    }
}

/// The file being built: records buffered, then written in large pieces.
struct Output {
    file: Arc<dyn StorageFile>,
    path: PathBuf,
    buf: Vec<u8>,
    /// Where the buffer goes in the file.
    at: u64,
}

impl Output {
    fn push(&mut self, body: Body<'_>) -> Result<()> {
        body.encode_into(&mut self.buf);
        if self.buf.len() >= WRITE_CHUNK_BYTES {
            self.write_buffer()?;
        }
        Ok(())
    }

    fn write_buffer(&mut self) -> Result<()> {
        self.file
            .write_all_at(&self.buf, self.at)
            .context(|| format!("writing {}", self.path.display()))?;
        self.at += self.buf.len() as u64;
        self.buf.clear();
        Ok(())
    }

    /// Writes what is buffered and the header, then makes the file durable.
    fn finish(&mut self, header: &[u8]) -> Result<()> {
        self.write_buffer()?;
        let context = || format!("writing {}", self.path.display());
        self.file.write_all_at(header, 0).context(context)?;
        self.file.sync_data().context(context)
    }
}

/// Feeds every line of the file at `path` (if any) to the fingerprint, then to `each`.
fn each_line(
    path: Option<&Path>,
    max: usize,
    fingerprint: &mut Fingerprint,
    mut each: impl FnMut(&Line<'_>) -> Result<()>,
) -> Result<()> {
    let Some(path) = path else {
        fingerprint.absent();
        return Ok(());
    };
    fingerprint.begin_file();
    let mut reader = LineReader::open(path, max)?;
    while let Some(line) = reader.next_line()? {
        fingerprint.line(&line);
        each(&line)?;
    }
    fingerprint.end_file();
    Ok(())
}

fn line_bytes(line: &Line<'_>) -> u64 {
    line.bytes.len() as u64 + u64::from(line.terminated)
}

/// Whether CryptPad's `readMetadata` reads the channel log's first line, given the
/// dedicated log at `path`: only when the log's first line that parses is a command,
/// or none does (`channel_line_needed`, over the lines CryptPad reads: terminated ones).
fn legacy_line_is_read(path: &Path, max: usize) -> Result<bool> {
    let mut reader = LineReader::open(path, max)?;
    while let Some(line) = reader.next_line()? {
        if !line.terminated {
            break;
        }
        if let Ok(value) = parse_line(line.bytes) {
            return Ok(value.is_array());
        }
    }
    Ok(true)
}

/// The file's modification time in Unix ms; 0 without a file.
pub fn modified_ms(path: Option<&Path>) -> Result<u64> {
    let Some(path) = path else { return Ok(0) };
    let meta = std::fs::metadata(path).context(|| format!("stat of {}", path.display()))?;
    let modified = meta
        .modified()
        .context(|| format!("modification time of {}", path.display()))?;
    Ok(system_ms(modified))
}
