//! Reading a channel's history: a snapshot of the committed prefix, streamed from
//! the file in large reads, each record's checksum verified before it is returned.

use super::file::{Body, Cursor, Step};
use super::id::ChannelId;
use super::log::{Channel, Live, Presence};
use crate::error::{Error, Result};
use crate::store::MessageStore;
use std::ops::ControlFlow;
use std::path::PathBuf;
use std::sync::Arc;

/// Where a message sits: only valid in the epoch (file version) it was issued in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Position {
    pub epoch: u64,
    pub offset: u64,
}

/// Where a read starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadFrom {
    /// The oldest message.
    Start,
    /// The first message whose seq is ≥ this one.
    Seq(u64),
    /// The first message with this key, inclusive (CryptPad's `lastKnownHash`).
    Key(Vec<u8>),
    /// The last N messages.
    Last(usize),
    /// The message at this position, inclusive.
    Position(Position),
}

/// A read: where it starts, where it stops, and how many messages at most.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadRequest {
    pub from: ReadFrom,
    /// Stop after the message with this seq (inclusive).
    pub to_seq: Option<u64>,
    pub limit: Option<usize>,
}

impl ReadRequest {
    pub fn all() -> Self {
        ReadRequest::from(ReadFrom::Start)
    }
}

impl From<ReadFrom> for ReadRequest {
    fn from(from: ReadFrom) -> Self {
        ReadRequest {
            from,
            to_seq: None,
            limit: None,
        }
    }
}

/// One message as read, borrowed from the reader's buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MessageRef<'a> {
    pub seq: u64,
    pub key: &'a [u8],
    pub time_ms: u64,
    pub position: Position,
    pub data: &'a [u8],
}

/// One message as read, owned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub seq: u64,
    pub key: Vec<u8>,
    pub time_ms: u64,
    pub position: Position,
    pub data: Vec<u8>,
}

impl From<MessageRef<'_>> for Message {
    fn from(m: MessageRef<'_>) -> Self {
        Message {
            seq: m.seq,
            key: m.key.to_vec(),
            time_ms: m.time_ms,
            position: m.position,
            data: m.data.to_vec(),
        }
    }
}

/// A stream of messages from a consistent snapshot: appends made after the read
/// began are not seen, and a rewrite that replaces the file does not disturb it.
/// Dropping it aborts the read.
pub struct History {
    channel: ChannelId,
    /// The channel itself, to tell a body released by a rewrite from a lost one.
    owner: Arc<Channel>,
    /// The channel's file, named in errors.
    path: PathBuf,
    epoch: u64,
    cursor: Option<Cursor>,
    remaining: usize,
    finished: bool,
    /// Where stored messages' bodies are read from, into `body` (their keys into `key`).
    store: Arc<MessageStore>,
    body: Vec<u8>,
    key: Vec<u8>,
}

/// Resolves `request` against a live channel's committed state.
pub(crate) fn plan(
    id: &ChannelId,
    owner: Arc<Channel>,
    path: PathBuf,
    live: &Live,
    request: &ReadRequest,
    store: Arc<MessageStore>,
) -> Result<History> {
    let index = &live.index;
    let start = match &request.from {
        ReadFrom::Start => 0,
        ReadFrom::Seq(seq) => {
            if *seq < live.header.first_seq {
                return Err(Error::Trimmed {
                    channel: id.clone(),
                    requested: *seq,
                    first_seq: live.header.first_seq,
                });
            }
            index.position_of_seq_at_least(*seq)
        }
        ReadFrom::Key(key) => find_key(id, live, key)?,
        ReadFrom::Last(n) => index.len().saturating_sub(*n),
        ReadFrom::Position(position) => {
            if position.epoch != live.header.epoch {
                return Err(Error::StalePosition {
                    channel: id.clone(),
                });
            }
            index
                .position_of_offset(position.offset)
                .ok_or_else(|| Error::StalePosition {
                    channel: id.clone(),
                })?
        }
    };
    let mut stop = index.len();
    if let Some(to) = request.to_seq {
        stop = stop.min(index.position_of_seq_at_least(to.saturating_add(1)));
    }
    if let Some(limit) = request.limit {
        stop = stop.min(start.saturating_add(limit));
    }
    let remaining = stop.saturating_sub(start);
    let cursor = match index.get(start) {
        Some(first) if remaining > 0 => {
            let end = index.get(stop).map_or(live.len(), |e| e.offset);
            Some(Cursor::new(live.snapshot(), first.offset, end))
        }
        _ => None,
    };
    Ok(History {
        channel: id.clone(),
        owner,
        path,
        epoch: live.header.epoch,
        cursor,
        remaining,
        finished: false,
        store,
        body: Vec::new(),
        key: Vec::new(),
    })
}

/// The position in the index of the first message with `key`, confirmed on disk.
pub(crate) fn find_key(id: &ChannelId, live: &Live, key: &[u8]) -> Result<usize> {
    let not_found = || Error::KeyNotFound {
        channel: id.clone(),
    };
    let mut candidates = live.index.candidates(live.index.key_hash(key)).peekable();
    if candidates.peek().is_none() {
        return Err(not_found());
    }
    let committed = live.snapshot();
    for pos in candidates {
        let entry = live.index.get(pos).expect("candidate in range");
        let on_disk =
            super::file::read_message_key(&*committed, entry.offset).map_err(|e| Error::Io {
                context: format!("reading a key of channel {id}"),
                source: e,
            })?;
        if on_disk == key {
            return Ok(pos);
        }
    }
    Err(not_found())
}

impl History {
    /// How many messages are left to read.
    pub fn remaining(&self) -> usize {
        self.remaining
    }

    /// Calls `visit` with each message, without copying it; `Break` stops early.
    pub fn for_each_ref(
        mut self,
        mut visit: impl FnMut(MessageRef<'_>) -> ControlFlow<()>,
    ) -> Result<()> {
        while let Some(message) = self.next_ref()? {
            if visit(message).is_break() {
                break;
            }
        }
        Ok(())
    }

    fn next_ref(&mut self) -> Result<Option<MessageRef<'_>>> {
        let History {
            channel,
            owner,
            path,
            epoch,
            cursor,
            remaining,
            finished,
            store,
            body: stored_body,
            key: stored_key,
            ..
        } = self;
        if *remaining == 0 || *finished {
            return Ok(None);
        }
        let Some(cursor) = cursor.as_mut() else {
            return Ok(None);
        };
        let corrupted = |offset, reason: &str| Error::Corrupted {
            path: path.clone(),
            offset,
            reason: reason.into(),
        };
        loop {
            let step = cursor.next().map_err(|e| Error::Io {
                context: format!("reading channel {channel}"),
                source: e,
            })?;
            match step {
                // Metadata and archive records sit between messages: skip them.
                Step::Record { body, .. } if !Body::is_message(cursor.body(body.clone())) => {}
                Step::Record { offset, body } => {
                    *remaining -= 1;
                    let (seq, time_ms, key, data) = match Body::parse(cursor.body(body)) {
                        Ok(Body::Message {
                            seq,
                            time_ms,
                            key,
                            data,
                        }) => (seq, time_ms, key, data),
                        Ok(Body::Stored {
                            seq,
                            time_ms,
                            key,
                            id,
                        }) => {
                            *stored_key = key.to_vec();
                            *stored_body = match store.read(&id) {
                                Ok(data) => data,
                                // Released by a rewrite that ran while this snapshot
                                // was read; or, if the channel is still in this
                                // epoch, lost to damage the store's recovery reported.
                                Err(Error::UnknownMessage { .. }) => {
                                    *finished = true;
                                    if current_epoch(owner) == Some(*epoch) {
                                        return Err(corrupted(
                                            offset,
                                            &format!(
                                                "its stored body {id} is missing from the message store (lost to damage; see the store's recovery report)"
                                            ),
                                        ));
                                    }
                                    return Err(Error::StalePosition {
                                        channel: channel.clone(),
                                    });
                                }
                                Err(e) => {
                                    *finished = true;
                                    return Err(e);
                                }
                            };
                            (seq, time_ms, stored_key.as_slice(), stored_body.as_slice())
                        }
                        _ => {
                            *finished = true;
                            return Err(corrupted(offset, "malformed message record"));
                        }
                    };
                    let position = Position {
                        epoch: *epoch,
                        offset,
                    };
                    return Ok(Some(MessageRef {
                        seq,
                        key,
                        time_ms,
                        position,
                        data,
                    }));
                }
                Step::End => {
                    *finished = true;
                    return Err(corrupted(
                        cursor.position(),
                        "file ends before its committed length",
                    ));
                }
                Step::Damaged { offset, reason } => {
                    *finished = true;
                    return Err(corrupted(offset, reason));
                }
            }
        }
    }
}

/// The epoch of `channel`'s live file, if it is loaded and its state free to look at
/// (`try_lock`: a reader may run while its caller holds the state).
fn current_epoch(channel: &Channel) -> Option<u64> {
    match &channel.state.try_lock()?.presence {
        Presence::Live(live) => Some(live.header.epoch),
        _ => None,
    }
}

impl Iterator for History {
    type Item = Result<Message>;

    fn next(&mut self) -> Option<Self::Item> {
        match self.next_ref() {
            Ok(Some(message)) => Some(Ok(message.into())),
            Ok(None) => None,
            Err(e) => Some(Err(e)),
        }
    }
}
