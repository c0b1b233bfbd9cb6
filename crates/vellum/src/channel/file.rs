//! The channel file format (docs/format.md §2): a header, then framed records —
//! messages, metadata lines and archive markers.

use super::id::ChannelId;
use crate::record::{self, Reader};
pub use crate::record::{Cursor, Step};
use crate::storage::StorageFile;
use crate::store::MsgId;
use std::io;

const MAGIC: &[u8; 8] = b"VELLUMCH";
pub const FORMAT_VERSION: u32 = 1;

const KIND_MESSAGE: u8 = 1;
const KIND_METADATA: u8 = 2;
const KIND_ARCHIVED: u8 = 3;
const KIND_RESTORED: u8 = 4;
const KIND_STORED: u8 = 5;
const KIND_CRYPTPAD: u8 = 6;

/// The longest message key.
pub const KEY_BYTES_MAX: usize = 64;

/// Bytes of the header before the id: magic, version, length, epoch, first_seq,
/// next_seq_min, created_ms, expire_ms, id length.
const FIXED_BYTES: usize = 8 + 4 + 4 + 8 + 8 + 8 + 8 + 8 + 2;

/// A channel file's header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub epoch: u64,
    /// The lowest seq a read may ask for (raised by clear and trim).
    pub first_seq: u64,
    /// The next append gets at least this seq, whatever messages the file holds: a
    /// rewrite records the channel's next seq here, so deleting the last message never
    /// lets its seq be used again.
    pub next_seq_min: u64,
    pub created_ms: u64,
    pub expire_ms: u64,
    pub id: ChannelId,
}

impl Header {
    pub fn encode(&self) -> Vec<u8> {
        let id = self.id.as_str().as_bytes();
        let len = FIXED_BYTES + id.len() + 4;
        let mut out = Vec::with_capacity(len);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        out.extend_from_slice(&(len as u32).to_le_bytes());
        out.extend_from_slice(&self.epoch.to_le_bytes());
        out.extend_from_slice(&self.first_seq.to_le_bytes());
        out.extend_from_slice(&self.next_seq_min.to_le_bytes());
        out.extend_from_slice(&self.created_ms.to_le_bytes());
        out.extend_from_slice(&self.expire_ms.to_le_bytes());
        out.extend_from_slice(&(id.len() as u16).to_le_bytes());
        out.extend_from_slice(id);
        let crc = crc32c::crc32c(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }

    /// Reads and checks the header at the start of `file`; returns it and its length.
    pub fn read(file: &dyn StorageFile) -> Result<(Header, u64), HeaderError> {
        let mut fixed = [0u8; FIXED_BYTES];
        file.read_exact_at(&mut fixed, 0)
            .map_err(HeaderError::from_io)?;
        if &fixed[0..8] != MAGIC {
            return Err(HeaderError::Invalid("bad magic"));
        }
        let mut r = Reader::new(&fixed[8..]);
        let version = r.u32().unwrap();
        if version != FORMAT_VERSION {
            return Err(HeaderError::Invalid("unsupported format version"));
        }
        let len = r.u32().unwrap() as usize;
        let id_len = u16::from_le_bytes([fixed[FIXED_BYTES - 2], fixed[FIXED_BYTES - 1]]) as usize;
        if len != FIXED_BYTES + id_len + 4 {
            return Err(HeaderError::Invalid("inconsistent header length"));
        }
        let mut whole = vec![0u8; len];
        file.read_exact_at(&mut whole, 0)
            .map_err(HeaderError::from_io)?;
        let stored_crc = u32::from_le_bytes(whole[len - 4..].try_into().unwrap());
        if crc32c::crc32c(&whole[..len - 4]) != stored_crc {
            return Err(HeaderError::Invalid("header checksum mismatch"));
        }
        let mut r = Reader::new(&whole[16..]);
        let epoch = r.u64().unwrap();
        let first_seq = r.u64().unwrap();
        let next_seq_min = r.u64().unwrap();
        let created_ms = r.u64().unwrap();
        let expire_ms = r.u64().unwrap();
        let _ = r.u16();
        let id = std::str::from_utf8(r.bytes(id_len).unwrap())
            .ok()
            .and_then(|s| ChannelId::new(s).ok())
            .ok_or(HeaderError::Invalid("header holds an invalid channel id"))?;
        let header = Header {
            epoch,
            first_seq,
            next_seq_min,
            created_ms,
            expire_ms,
            id,
        };
        Ok((header, len as u64))
    }
}

/// Why a channel file's header could not be read.
#[derive(Debug)]
pub enum HeaderError {
    /// The file is shorter than its header: a creation that never became durable.
    Short,
    Invalid(&'static str),
    Io(io::Error),
}

impl HeaderError {
    /// The error for a header of `path` that must be read: an I/O failure stays an
    /// I/O failure (not a claim of damage), anything else is corruption.
    pub fn into_error(self, path: &std::path::Path) -> crate::error::Error {
        match self {
            HeaderError::Io(source) => crate::error::Error::Io {
                context: format!("reading the header of {}", path.display()),
                source,
            },
            HeaderError::Short => crate::error::Error::Corrupted {
                path: path.to_path_buf(),
                offset: 0,
                reason: "file shorter than its header".into(),
            },
            HeaderError::Invalid(reason) => crate::error::Error::Corrupted {
                path: path.to_path_buf(),
                offset: 0,
                reason: format!("bad channel header: {reason}"),
            },
        }
    }

    fn from_io(e: io::Error) -> Self {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            HeaderError::Short
        } else {
            HeaderError::Io(e)
        }
    }
}

/// One record of a channel file, borrowed from the cursor's buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Body<'a> {
    Message {
        seq: u64,
        time_ms: u64,
        key: &'a [u8],
        data: &'a [u8],
    },
    /// A message whose body lives in the message store under `id` (docs/format.md §7.7).
    Stored {
        seq: u64,
        time_ms: u64,
        key: StoredKey<'a>,
        id: MsgId,
    },
    /// A CryptPad metadata line: a JSON object (state) or `["CMD", args, time]`.
    Metadata { time_ms: u64, line: &'a [u8] },
    /// The channel was archived for this reason.
    Archived { time_ms: u64, reason: &'a str },
    /// The channel was restored from the archive.
    Restored { time_ms: u64 },
    /// Part of an imported CryptPad channel that is neither a message nor a metadata
    /// line (docs/format.md §8.2): kept so that an export gives the files back exactly.
    CryptPad {
        time_ms: u64,
        part: CryptPadPart,
        bytes: &'a [u8],
    },
}

/// What a CryptPad record (kind 6) holds (docs/format.md §8.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CryptPadPart {
    /// The channel log's legacy metadata first line, which CryptPad folds.
    LegacyFolded = 1,
    /// A legacy metadata first line CryptPad does not read: the dedicated log starts
    /// with a state object.
    LegacyIgnored = 2,
    /// The channel log's bytes after its last newline; none when the file was empty.
    LogTail = 3,
    /// The dedicated metadata log's bytes after its last newline; none when it was empty.
    MetadataTail = 4,
    /// The bytes of the channel's `.ndjson.offset` hint.
    OffsetHint = 5,
    /// The fingerprint of the files the channel was imported from.
    Origin = 6,
}

impl CryptPadPart {
    fn from_byte(byte: u8) -> Option<Self> {
        use CryptPadPart::*;
        [
            LegacyFolded,
            LegacyIgnored,
            LogTail,
            MetadataTail,
            OffsetHint,
            Origin,
        ]
        .into_iter()
        .find(|part| *part as u8 == byte)
    }
}

impl<'a> Body<'a> {
    /// Whether a record body is a message (inline or stored), without parsing it.
    pub fn is_message(body: &[u8]) -> bool {
        matches!(body.first(), Some(&KIND_MESSAGE | &KIND_STORED))
    }

    /// A message's seq and key, inline or stored.
    pub fn seq_and_key(&self) -> Option<(u64, std::borrow::Cow<'a, [u8]>)> {
        match *self {
            Body::Message { seq, key, .. } => Some((seq, key.into())),
            Body::Stored { seq, key, .. } => Some((seq, key.to_vec().into())),
            _ => None,
        }
    }

    pub fn parse(body: &'a [u8]) -> Result<Body<'a>, &'static str> {
        let mut r = Reader::new(body);
        let bad = "truncated record body";
        match r.u8().ok_or(bad)? {
            kind @ (KIND_MESSAGE | KIND_STORED) => {
                let seq = r.u64().ok_or(bad)?;
                let time_ms = r.u64().ok_or(bad)?;
                let key_form = r.u8().ok_or(bad)?;
                if kind == KIND_STORED && key_form == KEY_HEX_DIGEST {
                    let digest = r.bytes(HEX_DIGEST_BYTES).ok_or(bad)?;
                    return stored(seq, time_ms, StoredKey::HexDigest(digest), r);
                }
                let key_len = key_form as usize;
                if key_len > KEY_BYTES_MAX {
                    return Err("key longer than 64 bytes");
                }
                let key = r.bytes(key_len).ok_or(bad)?;
                if kind == KIND_MESSAGE {
                    return Ok(Body::Message {
                        seq,
                        time_ms,
                        key,
                        data: r.rest(),
                    });
                }
                stored(seq, time_ms, StoredKey::Raw(key), r)
            }
            KIND_METADATA => Ok(Body::Metadata {
                time_ms: r.u64().ok_or(bad)?,
                line: r.rest(),
            }),
            KIND_ARCHIVED => {
                let time_ms = r.u64().ok_or(bad)?;
                let reason =
                    std::str::from_utf8(r.rest()).map_err(|_| "archive reason is not UTF-8")?;
                Ok(Body::Archived { time_ms, reason })
            }
            KIND_RESTORED => {
                let time_ms = r.u64().ok_or(bad)?;
                if !r.rest().is_empty() {
                    return Err("trailing bytes in a restored record");
                }
                Ok(Body::Restored { time_ms })
            }
            KIND_CRYPTPAD => {
                let time_ms = r.u64().ok_or(bad)?;
                let part = CryptPadPart::from_byte(r.u8().ok_or(bad)?)
                    .ok_or("unknown CryptPad record part")?;
                Ok(Body::CryptPad {
                    time_ms,
                    part,
                    bytes: r.rest(),
                })
            }
            _ => Err("unknown record kind"),
        }
    }

    /// Appends this record, framed, to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        record::encode_with(out, |b| match *self {
            Body::Message {
                seq,
                time_ms,
                key,
                data,
            } => {
                assert!(key.len() <= KEY_BYTES_MAX);
                b.push(KIND_MESSAGE);
                b.extend_from_slice(&seq.to_le_bytes());
                b.extend_from_slice(&time_ms.to_le_bytes());
                b.push(key.len() as u8);
                b.extend_from_slice(key);
                b.extend_from_slice(data);
            }
            Body::Stored {
                seq,
                time_ms,
                key,
                id,
            } => {
                b.push(KIND_STORED);
                b.extend_from_slice(&seq.to_le_bytes());
                b.extend_from_slice(&time_ms.to_le_bytes());
                match key {
                    StoredKey::Raw(key) => {
                        assert!(key.len() <= KEY_BYTES_MAX);
                        b.push(key.len() as u8);
                        b.extend_from_slice(key);
                    }
                    StoredKey::HexDigest(digest) => {
                        b.push(KEY_HEX_DIGEST);
                        b.extend_from_slice(digest);
                    }
                }
                b.extend_from_slice(&id.0);
            }
            Body::Metadata { time_ms, line } => {
                b.push(KIND_METADATA);
                b.extend_from_slice(&time_ms.to_le_bytes());
                b.extend_from_slice(line);
            }
            Body::Restored { time_ms } => {
                b.push(KIND_RESTORED);
                b.extend_from_slice(&time_ms.to_le_bytes());
            }
            Body::Archived { time_ms, reason } => {
                b.push(KIND_ARCHIVED);
                b.extend_from_slice(&time_ms.to_le_bytes());
                b.extend_from_slice(reason.as_bytes());
            }
            Body::CryptPad {
                time_ms,
                part,
                bytes,
            } => {
                b.push(KIND_CRYPTPAD);
                b.extend_from_slice(&time_ms.to_le_bytes());
                b.push(part as u8);
                b.extend_from_slice(bytes);
            }
        })
    }
}

/// The framed size of a message record.
pub fn message_record_bytes(key_len: usize, data_len: usize) -> usize {
    record::FRAME_BYTES + 1 + 8 + 8 + 1 + key_len + data_len
}

/// The framed size of a stored message's record (its body in the message store), at most.
pub fn stored_record_bytes(key_len: usize) -> usize {
    message_record_bytes(key_len, MsgId::BYTES)
}

/// A stored record's key-length byte saying the key is 32 lowercase hex digits (a
/// content key), kept as the 16 bytes they spell: 16 bytes less per reference.
const KEY_HEX_DIGEST: u8 = 0x80;
const HEX_DIGEST_BYTES: usize = 16;
const HEX: &[u8; 16] = b"0123456789abcdef";

/// A stored message's key as its record keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoredKey<'a> {
    Raw(&'a [u8]),
    /// The 16 bytes whose lowercase hex is the key.
    HexDigest(&'a [u8]),
}

impl<'a> StoredKey<'a> {
    /// The compact form of `key` for `buf`-backed storage: hex digests shrink to their bytes.
    pub fn of(key: &'a [u8], buf: &'a mut [u8; HEX_DIGEST_BYTES]) -> StoredKey<'a> {
        let nibble = |c: u8| HEX.iter().position(|&h| h == c).map(|n| n as u8);
        if key.len() == 2 * HEX_DIGEST_BYTES
            && key
                .chunks(2)
                .enumerate()
                .all(|(i, pair)| match (nibble(pair[0]), nibble(pair[1])) {
                    (Some(hi), Some(lo)) => {
                        buf[i] = hi << 4 | lo;
                        true
                    }
                    _ => false,
                })
        {
            return StoredKey::HexDigest(buf);
        }
        StoredKey::Raw(key)
    }

    /// The key as users see it.
    pub fn to_vec(self) -> Vec<u8> {
        match self {
            StoredKey::Raw(key) => key.to_vec(),
            StoredKey::HexDigest(digest) => hex(digest),
        }
    }
}

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len() * 2);
    for byte in bytes {
        out.push(HEX[usize::from(byte >> 4)]);
        out.push(HEX[usize::from(byte & 0xf)]);
    }
    out
}

fn stored<'a>(
    seq: u64,
    time_ms: u64,
    key: StoredKey<'a>,
    mut r: Reader<'a>,
) -> Result<Body<'a>, &'static str> {
    let id = MsgId(
        r.bytes(MsgId::BYTES)
            .ok_or("truncated record body")?
            .try_into()
            .unwrap(),
    );
    if !r.rest().is_empty() {
        return Err("trailing bytes in a stored message record");
    }
    Ok(Body::Stored {
        seq,
        time_ms,
        key,
        id,
    })
}

/// Reads only the key of the message record at `offset` (never its data): the key
/// index keeps hashes, and a candidate is confirmed against the key on disk.
pub fn read_message_key(file: &dyn StorageFile, offset: u64) -> io::Result<Vec<u8>> {
    let key_at = offset + record::FRAME_BYTES as u64 + 1 + 8 + 8;
    let mut buf = [0u8; 1 + KEY_BYTES_MAX];
    let mut got = 0;
    while got < buf.len() {
        match file.read_at(&mut buf[got..], key_at + got as u64)? {
            0 => break,
            n => got += n,
        }
    }
    if got > HEX_DIGEST_BYTES && buf[0] == KEY_HEX_DIGEST {
        return Ok(hex(&buf[1..1 + HEX_DIGEST_BYTES]));
    }
    let key_len = buf[0] as usize;
    if got == 0 || key_len > KEY_BYTES_MAX || 1 + key_len > got {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "message key unreadable",
        ));
    }
    Ok(buf[1..1 + key_len].to_vec())
}

#[cfg(test)]
mod tests {
    //! Format fixtures: the exact bytes of version 1, so a change to the format is a
    //! deliberate, versioned act and never an accident.
    use super::*;

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn header_v1_bytes_are_fixed() {
        let header = Header {
            epoch: 0x0102_0304_0506_0708,
            first_seq: 9,
            next_seq_min: 11,
            created_ms: 1_700_000_000_000,
            expire_ms: 0,
            id: ChannelId::new("ab").unwrap(),
        };
        let bytes = header.encode();
        assert_eq!(
            hex(&bytes),
            concat!(
                "56454c4c554d4348", // VELLUMCH
                "01000000",         // version 1
                "40000000",         // header length 64
                "0807060504030201", // epoch
                "0900000000000000", // first_seq
                "0b00000000000000", // next_seq_min
                "0068e5cf8b010000", // created_ms
                "0000000000000000", // expire_ms
                "0200",             // id length
                "6162",             // "ab"
                "759bc5a9",         // crc32c
            )
        );
        let file = crate::storage::SimStorage::new();
        let path = std::path::Path::new("/h");
        let f =
            crate::storage::Storage::open(&file, path, crate::storage::OpenMode::CreateReadWrite)
                .unwrap();
        f.write_all_at(&bytes, 0).unwrap();
        assert_eq!(Header::read(&*f).unwrap(), (header, 64));
    }

    #[test]
    fn message_record_v1_bytes_are_fixed() {
        let mut out = Vec::new();
        Body::Message {
            seq: 7,
            time_ms: 1,
            key: b"k",
            data: b"hi",
        }
        .encode_into(&mut out);
        assert_eq!(out.len(), message_record_bytes(1, 2));
        assert_eq!(
            hex(&out),
            concat!(
                "15000000",         // body length 21
                "ac8e0d5b",         // crc32c of the body
                "01",               // kind: message
                "0700000000000000", // seq
                "0100000000000000", // time_ms
                "01",               // key length
                "6b",               // key
                "6869",             // data
            )
        );
        let record::Decoded::Record { body, .. } = record::decode(&out) else {
            panic!("not a record")
        };
        assert_eq!(
            Body::parse(body).unwrap(),
            Body::Message {
                seq: 7,
                time_ms: 1,
                key: b"k",
                data: b"hi"
            }
        );
    }

    #[test]
    fn cryptpad_record_bytes_are_fixed() {
        let mut out = Vec::new();
        Body::CryptPad {
            time_ms: 2,
            part: CryptPadPart::LegacyFolded,
            bytes: b"{}",
        }
        .encode_into(&mut out);
        assert_eq!(
            hex(&out),
            concat!(
                "0c000000",         // body length 12
                "88e110da",         // crc32c of the body
                "06",               // kind: CryptPad
                "0200000000000000", // time_ms
                "01",               // part: legacy metadata line, folded
                "7b7d",             // "{}"
            )
        );
        let mut unknown = out[8..].to_vec();
        unknown[9] = 7;
        assert_eq!(Body::parse(&unknown), Err("unknown CryptPad record part"));
    }

    #[test]
    fn metadata_and_archived_records_round_trip() {
        for body in [
            Body::Metadata {
                time_ms: 5,
                line: br#"{"owners":[]}"#,
            },
            Body::Archived {
                time_ms: 6,
                reason: "EXPIRED",
            },
            Body::Restored { time_ms: 7 },
            Body::CryptPad {
                time_ms: 8,
                part: CryptPadPart::LogTail,
                bytes: b"[0,null,\"MSG\"",
            },
            Body::CryptPad {
                time_ms: 9,
                part: CryptPadPart::MetadataTail,
                bytes: b"",
            },
        ] {
            let mut out = Vec::new();
            body.encode_into(&mut out);
            let record::Decoded::Record { body: raw, .. } = record::decode(&out) else {
                panic!("not a record")
            };
            assert_eq!(Body::parse(raw).unwrap(), body);
            assert!(!Body::is_message(raw));
        }
    }

    #[test]
    fn a_restored_record_with_trailing_bytes_is_damaged() {
        let mut out = Vec::new();
        Body::Restored { time_ms: 7 }.encode_into(&mut out);
        let mut raw = out[record::FRAME_BYTES..].to_vec();
        raw.push(0);
        assert_eq!(
            Body::parse(&raw),
            Err("trailing bytes in a restored record")
        );
    }
}
