//! The segment file format (docs/format.md §7.1): a header, then records framed as
//! everywhere else, each body the message id followed by its payload.

use super::MsgId;
use crate::record::{self, Reader};
use crate::storage::{Storage, StorageFile};
use std::io;
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 8] = b"VELLUMSG";
pub const VERSION: u32 = 1;
pub const HEADER_BYTES: u64 = 32;
const SEGMENT_SUFFIX: &str = ".seg";
const COMPACTING_SUFFIX: &str = ".compacting";

/// Framing plus the id in front of every payload.
pub const RECORD_OVERHEAD: usize = record::FRAME_BYTES + MsgId::BYTES;

pub fn header(number: u32) -> Vec<u8> {
    let mut header = Vec::with_capacity(HEADER_BYTES as usize);
    header.extend_from_slice(MAGIC);
    header.extend_from_slice(&VERSION.to_le_bytes());
    header.extend_from_slice(&0u32.to_le_bytes());
    header.extend_from_slice(&u64::from(number).to_le_bytes());
    header.extend_from_slice(&0u64.to_le_bytes());
    header
}

/// Checks a segment's header against the number its name gives.
pub fn check_header(file: &dyn StorageFile, number: u32) -> Result<(), &'static str> {
    let mut buf = [0u8; HEADER_BYTES as usize];
    file.read_exact_at(&mut buf, 0)
        .map_err(|_| "segment header missing")?;
    if &buf[..8] != MAGIC {
        return Err("bad segment magic");
    }
    let mut r = Reader::new(&buf[8..]);
    if r.u32() != Some(VERSION) {
        return Err("unsupported segment version");
    }
    let _reserved = r.u32();
    if r.u64() != Some(u64::from(number)) {
        return Err("segment header names another segment");
    }
    Ok(())
}

/// Appends the framed record of `id` with `payload` to `out`.
pub fn encode_record(out: &mut Vec<u8>, id: &MsgId, payload: &[u8]) {
    record::encode_with(out, |b| {
        b.extend_from_slice(&id.0);
        b.extend_from_slice(payload);
    })
}

/// Splits a record body into its id and payload.
pub fn parse_body(body: &[u8]) -> Option<(MsgId, &[u8])> {
    let id = body.get(..MsgId::BYTES)?;
    Some((MsgId(id.try_into().unwrap()), &body[MsgId::BYTES..]))
}

/// Why a stored record could not be returned.
#[derive(Debug)]
pub enum ReadError {
    Io(io::Error),
    Damaged(&'static str),
}

/// Decodes the framed record `framed` and checks that it is `id`'s; returns its payload.
pub fn check_record(framed: &[u8], id: &MsgId) -> Result<Vec<u8>, &'static str> {
    match record::decode(framed) {
        record::Decoded::Record { body, framed_len } if framed_len == framed.len() => {
            match parse_body(body) {
                Some((found, payload)) if found == *id => Ok(payload.to_vec()),
                Some(_) => Err("the record there belongs to another message"),
                None => Err("record too short for a message"),
            }
        }
        record::Decoded::Record { .. } => Err("record size differs from the index"),
        record::Decoded::Incomplete { .. } => Err("record cut short"),
        record::Decoded::Damaged(reason) => Err(reason),
    }
}

/// Reads and checks the record of `id` at `offset` (framed `size` bytes) of `file`.
pub fn read_record(
    file: &dyn StorageFile,
    offset: u64,
    size: u32,
    id: &MsgId,
) -> Result<Vec<u8>, ReadError> {
    let mut framed = vec![0u8; size as usize];
    file.read_exact_at(&mut framed, offset)
        .map_err(ReadError::Io)?;
    check_record(&framed, id).map_err(ReadError::Damaged)
}

pub fn segment_name(number: u32) -> String {
    format!("{number:010}{SEGMENT_SUFFIX}")
}

pub fn compacting_name(number: u32) -> String {
    format!("{number:010}{COMPACTING_SUFFIX}")
}

/// What a store directory holds, by kind.
#[derive(Debug, Default)]
pub struct Listing {
    /// Segments by number, ascending.
    pub segments: Vec<(u32, PathBuf)>,
    /// Unfinished compaction outputs.
    pub compacting: Vec<PathBuf>,
}

pub fn list(storage: &dyn Storage, dir: &Path) -> io::Result<Listing> {
    let mut listing = Listing::default();
    for name in storage.list_dir(dir)? {
        if let Some(n) = name.strip_suffix(SEGMENT_SUFFIX)
            && let Ok(number) = n.parse::<u32>()
        {
            listing.segments.push((number, dir.join(&name)));
        } else if name.ends_with(COMPACTING_SUFFIX) {
            listing.compacting.push(dir.join(&name));
        }
    }
    listing.segments.sort();
    Ok(listing)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_is_checked_against_its_id() {
        let id = MsgId([7; 16]);
        let mut out = Vec::new();
        encode_record(&mut out, &id, b"payload");
        assert_eq!(out.len(), RECORD_OVERHEAD + 7);
        assert_eq!(check_record(&out, &id).unwrap(), b"payload");
        assert!(check_record(&out, &MsgId([8; 16])).is_err());
        out[20] ^= 1;
        assert_eq!(check_record(&out, &id), Err("checksum mismatch"));
    }
}
