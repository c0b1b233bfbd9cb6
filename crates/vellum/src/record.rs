//! Record framing: `len u32 | crc32c u32 | body`, shared by channel files and the journal.
//!
//! The checksum covers the body, so a record is either returned whole and intact or
//! reported as damaged; a reader never guesses where the next record starts.

use crate::storage::StorageFile;
use std::io;
use std::ops::Range;
use std::sync::Arc;

/// Bytes of framing before a record's body.
pub const FRAME_BYTES: usize = 8;
/// The largest body a record may declare. Bounds the memory a damaged length field can make us allocate.
pub const BODY_BYTES_MAX: usize = 16 * 1024 * 1024 + 1024;

/// Appends one framed record holding `body` to `out`.
#[cfg(test)]
fn encode_into(out: &mut Vec<u8>, body: &[u8]) {
    assert!(body.len() <= BODY_BYTES_MAX, "record body over the limit");
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32c::crc32c(body).to_le_bytes());
    out.extend_from_slice(body);
}

/// Appends a framed record whose body is written by `write_body`, without an intermediate buffer.
pub fn encode_with(out: &mut Vec<u8>, write_body: impl FnOnce(&mut Vec<u8>)) {
    let start = out.len();
    out.extend_from_slice(&[0u8; FRAME_BYTES]);
    write_body(out);
    let body_len = out.len() - start - FRAME_BYTES;
    assert!(body_len <= BODY_BYTES_MAX, "record body over the limit");
    let crc = crc32c::crc32c(&out[start + FRAME_BYTES..]);
    out[start..start + 4].copy_from_slice(&(body_len as u32).to_le_bytes());
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// What decoding the bytes at some offset found.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded<'a> {
    /// A whole, intact record: its body and its total framed length.
    Record { body: &'a [u8], framed_len: usize },
    /// The buffer ends before the record does: read more (or, at end of file, a torn tail).
    Incomplete { framed_len: Option<usize> },
    /// The bytes are not an intact record.
    Damaged(&'static str),
}

/// Decodes the record at the start of `buf`.
pub fn decode(buf: &[u8]) -> Decoded<'_> {
    if buf.len() < FRAME_BYTES {
        return Decoded::Incomplete { framed_len: None };
    }
    let len = u32::from_le_bytes(buf[0..4].try_into().unwrap()) as usize;
    if len == 0 {
        return Decoded::Damaged("zero-length record");
    }
    if len > BODY_BYTES_MAX {
        return Decoded::Damaged("record length over the limit");
    }
    let framed_len = FRAME_BYTES + len;
    if buf.len() < framed_len {
        return Decoded::Incomplete {
            framed_len: Some(framed_len),
        };
    }
    let crc = u32::from_le_bytes(buf[4..8].try_into().unwrap());
    let body = &buf[FRAME_BYTES..framed_len];
    if crc32c::crc32c(body) != crc {
        return Decoded::Damaged("checksum mismatch");
    }
    Decoded::Record { body, framed_len }
}

/// A little-endian cursor over a record body.
pub struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf }
    }
    pub fn u8(&mut self) -> Option<u8> {
        let (&b, rest) = self.buf.split_first()?;
        self.buf = rest;
        Some(b)
    }
    pub fn u16(&mut self) -> Option<u16> {
        self.bytes(2)
            .map(|b| u16::from_le_bytes(b.try_into().unwrap()))
    }
    pub fn u32(&mut self) -> Option<u32> {
        self.bytes(4)
            .map(|b| u32::from_le_bytes(b.try_into().unwrap()))
    }
    pub fn u64(&mut self) -> Option<u64> {
        self.bytes(8)
            .map(|b| u64::from_le_bytes(b.try_into().unwrap()))
    }
    pub fn bytes(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.buf.len() < n {
            return None;
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Some(head)
    }
    pub fn rest(self) -> &'a [u8] {
        self.buf
    }
}

/// What the cursor found next.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// An intact record at `offset`; its body is `cursor.body(range)`.
    Record { offset: u64, body: Range<usize> },
    /// The end was reached cleanly.
    End,
    /// The bytes at `offset` are not an intact record (damage, or a torn tail).
    Damaged { offset: u64, reason: &'static str },
}

const CHUNK_BYTES: usize = 256 * 1024;

/// Walks the records of a file between two offsets with large positional reads.
pub struct Cursor {
    file: Arc<dyn StorageFile>,
    /// File offset of `buf[lo]`.
    pos: u64,
    end: u64,
    buf: Vec<u8>,
    lo: usize,
    hi: usize,
}

impl Cursor {
    pub fn new(file: Arc<dyn StorageFile>, start: u64, end: u64) -> Self {
        Cursor {
            file,
            pos: start,
            end,
            buf: Vec::new(),
            lo: 0,
            hi: 0,
        }
    }

    /// The offset of the next record.
    pub fn position(&self) -> u64 {
        self.pos
    }

    pub fn body(&self, range: Range<usize>) -> &[u8] {
        &self.buf[range]
    }

    /// The whole framed record (length and checksum included) whose body is `body`.
    pub fn framed(&self, body: Range<usize>) -> &[u8] {
        &self.buf[body.start - FRAME_BYTES..body.end]
    }

    pub fn next(&mut self) -> io::Result<Step> {
        loop {
            match decode(&self.buf[self.lo..self.hi]) {
                Decoded::Record { framed_len, .. } => {
                    let offset = self.pos;
                    let body = self.lo + FRAME_BYTES..self.lo + framed_len;
                    self.lo += framed_len;
                    self.pos += framed_len as u64;
                    return Ok(Step::Record { offset, body });
                }
                Decoded::Damaged(reason) => {
                    return Ok(Step::Damaged {
                        offset: self.pos,
                        reason,
                    });
                }
                Decoded::Incomplete { framed_len } => {
                    let buffered_end = self.pos + (self.hi - self.lo) as u64;
                    if buffered_end >= self.end {
                        return Ok(if self.hi == self.lo {
                            Step::End
                        } else {
                            Step::Damaged {
                                offset: self.pos,
                                reason: "record cut short (torn tail)",
                            }
                        });
                    }
                    self.refill(framed_len.unwrap_or(0), buffered_end)?;
                }
            }
        }
    }

    fn refill(&mut self, need: usize, buffered_end: u64) -> io::Result<()> {
        self.buf.copy_within(self.lo..self.hi, 0);
        self.hi -= self.lo;
        self.lo = 0;
        let want = need.max(CHUNK_BYTES).max(self.hi + 1);
        if self.buf.len() < want {
            self.buf.resize(want, 0);
        }
        let room = (self.buf.len() - self.hi) as u64;
        let to_read = room.min(self.end - buffered_end) as usize;
        let n = self
            .file
            .read_at(&mut self.buf[self.hi..self.hi + to_read], buffered_end)?;
        if n == 0 {
            // The file is shorter than `end`: treat what we have as the end.
            self.end = buffered_end;
        }
        self.hi += n;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_round_trips() {
        let mut out = Vec::new();
        encode_into(&mut out, b"hello");
        match decode(&out) {
            Decoded::Record { body, framed_len } => {
                assert_eq!(body, b"hello");
                assert_eq!(framed_len, out.len());
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn encode_with_matches_encode_into() {
        let (mut a, mut b) = (Vec::new(), Vec::new());
        encode_into(&mut a, b"abc");
        encode_with(&mut b, |out| out.extend_from_slice(b"abc"));
        assert_eq!(a, b);
    }

    #[test]
    fn every_truncation_is_incomplete_and_every_bit_flip_is_detected() {
        let mut out = Vec::new();
        encode_into(&mut out, b"some message body");
        for cut in 0..out.len() {
            assert!(
                matches!(decode(&out[..cut]), Decoded::Incomplete { .. }),
                "cut {cut}"
            );
        }
        for byte in 0..out.len() {
            for bit in 0..8 {
                let mut bad = out.clone();
                bad[byte] ^= 1 << bit;
                assert!(
                    !matches!(decode(&bad), Decoded::Record { body, .. } if body == b"some message body"),
                    "flip {byte}.{bit} went unnoticed"
                );
            }
        }
    }
}
